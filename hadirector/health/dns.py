"""DNS health probe: one query over UDP, keepalived's DNS_CHECK (check_dns.c).

Theory of operation
-------------------
The wire format (RFC 1035 4.1) is two pure functions: ``encode_query`` builds one
question with RD set, as keepalived does; ``decode_reply`` parses a reply into a
``Reply`` (id, rcode, TC bit, answer records as text) or returns the reason it is not
one ("short header", "bad name", ...) -- it never raises, whatever the bytes. The
asyncio half (``dns_probe``) sends the query on a connected UDP socket through
``udp.exchange`` and takes the first datagram that carries our id and the QR bit; other
datagrams are ignored, as keepalived ignores them (a late answer to an earlier query,
a stray packet). With ``transport: tcp`` (or when a UDP answer came truncated and the
answer regex found nothing in it) the query goes over TCP instead. Healthy: the reply's rcode is the expected one (default NOERROR) and,
with ``answer_regex``, some answer record's text matches it.

An ICMP port unreachable (nothing listens on 53) is "refused", as for TCP.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import re
import struct
from dataclasses import dataclass

from hadirector.health.errors import LOCAL_REASONS, failure_reason
from hadirector.health.policy import ProbeResult
from hadirector.health.udp import exchange
from hadirector.model import DnsProbe, IPAddress

# RFC 1035 3.2.2, RFC 3596 (AAAA), RFC 2782 (SRV), RFC 4034 (RRSIG, DNSKEY).
TYPES: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
    "SRV": 33, "RRSIG": 46, "DNSKEY": 48, "ANY": 255,
}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
# RFC 1035 4.1.1.
RCODES: dict[str, int] = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
RCODE_NAMES = {v: k for k, v in RCODES.items()}
CLASS_IN = 1
HEADER = struct.Struct("!HHHHHH")
FLAG_QR, FLAG_TC, FLAG_RD = 0x8000, 0x0200, 0x0100
MAX_POINTERS = 64            # compression pointers followed in one name (a loop guard)
MAX_REPLY = 4096             # bytes read; a UDP reply without EDNS0 is at most 512


@dataclass(frozen=True, slots=True)
class Answer:
    name: str                # "example.com." (the root: ".")
    rtype: int
    text: str                # presentation form: "192.0.2.1", "10 mail.example.com.", ...


@dataclass(frozen=True, slots=True)
class Reply:
    qid: int
    rcode: int
    truncated: bool          # TC: the answer did not fit (RFC 1035 4.1.1)
    answers: tuple[Answer, ...]

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, str(self.rcode))


# --- encoding ---------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    """``www.example.com`` (a final dot optional; ``.`` or ``""`` is the root) as labels.

    Raises ValueError for an empty label or one over 63 bytes, or a name over 255 bytes
    (the config refuses such names before they get here)."""
    out = bytearray()
    text = name.rstrip(".") if name not in (".", "") else ""
    for label in text.split(".") if text else ():
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """One question (``name``, ``qtype``, IN) with recursion desired, as keepalived sends."""
    return HEADER.pack(qid & 0xFFFF, FLAG_RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


# --- decoding ---------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: the reply is malformed; the message says where."""


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` (following compression pointers, RFC 1035 4.1.4) and the
    position after it in the record."""
    labels: list[str] = []
    end = None
    hops = 0
    while True:
        if pos >= len(data):
            raise _Bad("truncated name")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise _Bad("truncated name")
            hops += 1
            if hops > MAX_POINTERS:
                raise _Bad("name pointer loop")
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            continue
        if n & 0xC0:
            raise _Bad("bad name label")
        pos += 1
        if n == 0:
            break
        if pos + n > len(data):
            raise _Bad("truncated name")
        labels.append(data[pos:pos + n].decode("ascii", "backslashreplace"))
        pos += n
    return (".".join(labels) + "." if labels else "."), (end if end is not None else pos)


def _rdata_text(data: bytes, rtype: int, start: int, length: int) -> str:
    rdata = data[start:start + length]
    if rtype == 1 and length == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28 and length == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12):                      # NS, CNAME, PTR
        return _name(data, start)[0]
    if rtype == 15 and length >= 3:              # MX: preference, exchange
        return f"{struct.unpack_from('!H', data, start)[0]} {_name(data, start + 2)[0]}"
    if rtype == 33 and length >= 7:              # SRV: priority, weight, port, target
        prio, weight, port = struct.unpack_from("!HHH", data, start)
        return f"{prio} {weight} {port} {_name(data, start + 6)[0]}"
    if rtype == 6:                               # SOA: mname rname serial refresh retry expire minimum
        mname, pos = _name(data, start)
        rname, pos = _name(data, pos)
        if pos + 20 > start + length:
            raise _Bad("truncated SOA")
        return " ".join([mname, rname, *map(str, struct.unpack_from("!IIIII", data, pos))])
    if rtype == 16:                              # TXT: character-strings
        parts, pos = [], 0
        while pos < length:
            n = rdata[pos]
            if pos + 1 + n > length:
                raise _Bad("truncated TXT")
            parts.append(rdata[pos + 1:pos + 1 + n].decode("utf-8", "backslashreplace"))
            pos += 1 + n
        return " ".join(parts)
    return rdata.hex()


def decode_reply(data: bytes) -> Reply | str:
    """Parse a reply; a string says why ``data`` is not a well-formed DNS response."""
    if len(data) < HEADER.size:
        return "short header"
    qid, flags, qd, an, _ns, _ar = HEADER.unpack_from(data)
    if not flags & FLAG_QR:
        return "not a response"
    try:
        pos = HEADER.size
        for _ in range(qd):
            pos = _name(data, pos)[1] + 4
            if pos > len(data):
                raise _Bad("truncated question")
        answers = []
        for _ in range(an):
            owner, pos = _name(data, pos)
            if pos + 10 > len(data):
                raise _Bad("truncated record")
            rtype, _cls, _ttl, length = struct.unpack_from("!HHIH", data, pos)
            pos += 10
            if pos + length > len(data):
                raise _Bad("truncated record")
            answers.append(Answer(owner, rtype, _rdata_text(data, rtype, pos, length)))
            pos += length
    except _Bad as e:
        return str(e)
    except (ValueError, struct.error) as e:      # never raise: a bad reply is a reason
        return f"bad record: {e}"
    return Reply(qid, flags & 0x000F, bool(flags & FLAG_TC), tuple(answers))


def reply_id(data: bytes) -> int | None:
    """The id of a response, or None for what is not one (too short, a query)."""
    if len(data) < HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    return qid if flags & FLAG_QR else None


# --- the probe --------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def judge(reply: Reply, probe: DnsProbe) -> tuple[bool, str]:
    """Healthy or not, and the detail, for a reply to ``probe``'s query."""
    if reply.rcode != RCODES[probe.rcode]:
        return False, f"rcode {reply.rcode_name}"
    if probe.answer_regex is not None:
        rx = _regex(probe.answer_regex)
        if not any(rx.search(a.text) for a in reply.answers):
            return False, "answer mismatch (truncated)" if reply.truncated else "answer mismatch"
    return True, f"rcode {reply.rcode_name}"


async def tcp_exchange(addr: IPAddress | str, port: int, query: bytes, timeout: float,
                       bind_to: IPAddress | str | None) -> tuple[bytes | None, str | None, float]:
    """One query over TCP, each message behind its two-byte length (RFC 1035 4.2.2);
    ``(reply, None, elapsed)`` or ``(None, reason, elapsed)`` as ``udp.exchange``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                str(addr), port, local_addr=None if bind_to is None else (str(bind_to), 0))
            writer.write(struct.pack("!H", len(query)) + query)
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length), None, loop.time() - start
    except asyncio.IncompleteReadError:
        return None, "closed", loop.time() - start
    except Exception as exc:    # timeout, OSError, or a probe bug: a reason, never raised
        return None, failure_reason(exc), loop.time() - start
    finally:
        if writer is not None:
            writer.close()


async def dns_probe(addr: IPAddress | str, port: int, probe: DnsProbe, timeout: float,
                    bind_to: IPAddress | str | None = None) -> ProbeResult:
    """Query ``probe.name`` / ``probe.query_type`` at ``addr:port`` over UDP (or TCP).

    Over UDP, an answer the server had to truncate (TC) that does not match
    ``answer_regex`` is asked again over TCP in the time left (RFC 7766 5): the record
    sought may be in the part that did not fit."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    qid = random.getrandbits(16)
    query = encode_query(qid, probe.name, TYPES[probe.query_type])
    tcp = probe.transport == "tcp"
    if tcp:
        data, reason, _ = await tcp_exchange(addr, port, query, timeout, bind_to)
    else:
        data, reason, _ = await exchange(addr, port, query, timeout, bind_to,
                                         accept=lambda data: reply_id(data) == qid)
    while True:
        if data is None:
            return ProbeResult(False, reason or "no reply", loop.time() - start,
                               inconclusive=reason in LOCAL_REASONS)
        reply = decode_reply(data)
        if isinstance(reply, str):
            return ProbeResult(False, f"bad reply: {reply}", loop.time() - start)
        if reply.qid != qid:
            return ProbeResult(False, "bad reply: id mismatch", loop.time() - start)
        ok, detail = judge(reply, probe)
        left = timeout - (loop.time() - start)
        if ok or tcp or not reply.truncated or left <= 0:
            return ProbeResult(ok, detail, loop.time() - start)
        tcp = True
        data, reason, _ = await tcp_exchange(addr, port, query, left, bind_to)
