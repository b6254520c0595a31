"""UDP health probe, keepalived's UDP_CHECK (check_udp.c), and the one datagram exchange
the DNS probe shares.

A connected UDP socket sends one datagram and waits for one that ``accept`` takes. The
kernel reports an ICMP port unreachable for a connected socket as ECONNREFUSED on the
next receive: that is "refused", the one sign of a dead UDP service that needs no
reply. Without ``require_reply``, silence until the timeout counts as up (keepalived:
``udp_socket_state`` returns success on a read timeout unless a reply is required); a
reply before then ends the check at once. With it, a reply must come in time and, with
``reply_regex``, match (a bytes regex: ``\\xNN`` stands for any byte).

A server's kernel rate-limits its port unreachables per destination (Linux: a burst of
6, then one a second; ``net.ipv4.icmp_ratelimit``, ``icmp_ratemask``). One it holds back
is silence here, as in keepalived: a dead service on a server that more checks ask than
that can pass unless ``require_reply`` is set (or the server's limit lifted).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import Callable

from hadirector.health.errors import LOCAL_REASONS, failure_reason
from hadirector.health.policy import ProbeResult
from hadirector.model import IPAddress, UdpProbe

MAX_DATAGRAM = 65535


async def exchange(addr: IPAddress | str, port: int, payload: bytes, timeout: float,
                   bind_to: IPAddress | str | None,
                   accept: Callable[[bytes], bool] = lambda data: True,
                   ) -> tuple[bytes | None, str | None, float]:
    """Send ``payload`` to ``addr:port``; return ``(reply, None, elapsed)`` for the first
    datagram ``accept`` takes, or ``(None, reason, elapsed)``: "timeout", "refused",
    "unreachable", ... Never raises but for cancellation."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    host = str(addr)
    sock: socket.socket | None = None
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if bind_to is not None:
            sock.bind((str(bind_to), 0))
        async with asyncio.timeout(timeout):
            sock.connect((host, port))        # UDP: no handshake; it only fixes the peer
            await loop.sock_sendall(sock, payload)
            while True:
                data = await loop.sock_recv(sock, MAX_DATAGRAM)
                if accept(data):
                    return data, None, loop.time() - start
    except Exception as exc:    # timeout, OSError, or a probe bug: a reason, never raised
        return None, failure_reason(exc), loop.time() - start
    finally:
        if sock is not None:
            sock.close()


@functools.lru_cache(maxsize=256)
def _reply_regex(pattern: str) -> re.Pattern[bytes]:
    # latin-1 keeps every character of the pattern one byte, so "\xde" matches 0xde.
    return re.compile(pattern.encode("latin-1", "backslashreplace"))


async def udp_probe(addr: IPAddress | str, port: int, probe: UdpProbe, timeout: float,
                    bind_to: IPAddress | str | None = None) -> ProbeResult:
    """Send ``probe.payload``; see the module doc for what counts as up."""
    reply, reason, elapsed = await exchange(addr, port, probe.payload, timeout, bind_to)
    if reply is None:
        if reason == "timeout" and not probe.require_reply:
            return ProbeResult(True, "no reply", elapsed)
        return ProbeResult(False, reason or "no reply", elapsed, inconclusive=reason in LOCAL_REASONS)
    if probe.reply_regex is not None and not _reply_regex(probe.reply_regex).search(reply):
        return ProbeResult(False, "reply mismatch", elapsed)
    return ProbeResult(True, "reply", elapsed)
