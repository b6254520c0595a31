"""SMTP health probe, keepalived's SMTP_CHECK (check_smtp.c): the greeting must be 220,
``EHLO helo_name`` must be answered 250 -- a server that refuses EHLO with a 5xx (an
RFC 821-only one) gets ``HELO`` instead, RFC 5321 4.1.1.1 -- then ``QUIT``.

keepalived sends HELO only; EHLO first is what every client does today, and the
fallback keeps the old servers keepalived checks passing. A reply is read to its last
line (``250-...`` continues, ``250 ...`` ends, RFC 5321 4.2.1); a line longer than
``MAX_LINE``, a reply without a code, or the server closing is a failure with that
reason. The whole dialogue runs under the one timeout.
"""

from __future__ import annotations

import asyncio

from hadirector.health.errors import failed
from hadirector.health.policy import ProbeResult
from hadirector.model import IPAddress, SmtpProbe

MAX_LINE = 1000          # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets


class _Bad(Exception):
    """The server's side of the dialogue is not SMTP; the message is the detail."""


async def _reply(reader: asyncio.StreamReader) -> int:
    """Read one (possibly multi-line) reply; return its code."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise _Bad("closed") from None
        except asyncio.LimitOverrunError:
            raise _Bad("bad reply: line too long") from None
        if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
            raise _Bad("bad reply")
        if line[3:4] != b"-":
            return int(line[:3])


async def smtp_probe(addr: IPAddress | str, port: int, probe: SmtpProbe, timeout: float,
                     bind_to: IPAddress | str | None = None) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                str(addr), port, limit=MAX_LINE,
                local_addr=None if bind_to is None else (str(bind_to), 0))
            code = await _reply(reader)
            if code != 220:
                return ProbeResult(False, f"banner {code}", loop.time() - start)
            greeting = "ehlo"
            writer.write(f"EHLO {probe.helo_name}\r\n".encode())
            code = await _reply(reader)
            if 500 <= code < 600:
                greeting = "helo"
                writer.write(f"HELO {probe.helo_name}\r\n".encode())
                code = await _reply(reader)
            if code != 250:
                return ProbeResult(False, f"{greeting} {code}", loop.time() - start)
            writer.write(b"QUIT\r\n")
            await writer.drain()
        return ProbeResult(True, f"{greeting} 250", loop.time() - start)
    except _Bad as exc:
        return ProbeResult(False, str(exc), loop.time() - start)
    except Exception as exc:    # timeout, OSError, or a probe bug: a failed check, never raised
        return failed(exc, loop.time() - start)
    finally:
        if writer is not None:
            writer.close()
