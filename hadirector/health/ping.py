"""ICMP echo health probe, keepalived's PING_CHECK (check_ping.c): healthy when an
echo reply comes back within the timeout. The socket and the packets are
``hadirector.kernel.icmp``'s; this is the asyncio half."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket

from hadirector.health.errors import failed
from hadirector.health.policy import ProbeResult
from hadirector.model import IPAddress
from hadirector.kernel.icmp import echo_request, open_echo_socket, parse_echo_reply

_SEQ = itertools.count(1)
_IDENT = os.getpid() & 0xFFFF
_PAYLOAD_LEN = 56                  # ping(8)'s default


async def ping_probe(addr: IPAddress | str, timeout: float,
                     bind_to: IPAddress | str | None = None) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    host = str(addr)
    version = 6 if ":" in host else 4
    seq = next(_SEQ) & 0xFFFF
    payload = seq.to_bytes(2, "big") + os.urandom(_PAYLOAD_LEN - 2)
    sock: socket.socket | None = None
    try:
        sock, raw = open_echo_socket(socket.AF_INET6 if version == 6 else socket.AF_INET)
        if bind_to is not None:
            sock.bind((str(bind_to), 0))
        async with asyncio.timeout(timeout):
            sock.connect((host, 0))
            await loop.sock_sendall(sock, echo_request(version, _IDENT, seq, payload))
            while True:
                got = parse_echo_reply(version, await loop.sock_recv(sock, 65535), raw)
                if got is None:
                    continue
                ident, rseq, rpayload = got
                # A ping socket's identifier is the kernel's; a raw one sees everyone's.
                if rseq == seq and rpayload == payload and (not raw or ident == _IDENT):
                    return ProbeResult(True, "echo reply", loop.time() - start)
    except Exception as exc:    # timeout, OSError, or a probe bug: a failed check, never raised
        return failed(exc, loop.time() - start)
    finally:
        if sock is not None:
            sock.close()
