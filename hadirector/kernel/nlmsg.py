"""Netlink framing, once for every kernel/ module: the message header (``struct
nlmsghdr``), attributes (``struct nlattr`` / ``rtattr``), acknowledgements
(``NLMSG_ERROR``) and the end of a dump (``NLMSG_DONE``); netlink(7),
include/uapi/linux/netlink.h.

Pure: bytes in, tuples and ints out. ``rtnl`` (addresses), ``addresses`` (link
messages), ``gate_routes`` (routes) and ``ipvs`` (generic netlink) each add only their
own family's body. Imports nothing but ``struct``, ``os`` and ``errno``: the start-up
release of a dead predecessor's VIPs reaches it through ``rtnl`` first thing.
"""

from __future__ import annotations

import errno
import os
import struct

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200          # in an acknowledgement
NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x200, 0x400, 0x300   # in a request
NLA_TYPE_MASK = 0x3FFF                                 # without NLA_F_NESTED / _NET_BYTEORDER

HEADER = struct.Struct("=IHHII")     # len, type, flags, seq, pid
ATTR = struct.Struct("=HH")          # len, type
_ERRNO = struct.Struct("=i")


def align(length: int) -> int:
    """NLMSG_ALIGN / NLA_ALIGN: messages and attributes start on 4-byte boundaries."""
    return (length + 3) & ~3


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request: the header (port id 0: the kernel fills in ours) and ``body``."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, data: bytes) -> bytes:
    """One attribute, padded to its aligned length."""
    raw = ATTR.pack(ATTR.size + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def messages(data: bytes):
    """Each message of one datagram, in order, as ``(type, flags, seq, pid, body, end)``
    with ``data[body:end]`` its payload. A damaged message (shorter than its header,
    longer than what is left, or a datagram cut inside a header) ends the datagram with
    one ``(NLMSG_OVERRUN, 0, 0, 0, offset, len(data))``: what it held is lost."""
    off, size = 0, len(data)
    while off < size:
        if off + HEADER.size > size:
            yield NLMSG_OVERRUN, 0, 0, 0, off, size
            return
        length, kind, flags, seq, pid = HEADER.unpack_from(data, off)
        if length < HEADER.size or off + length > size:
            yield NLMSG_OVERRUN, 0, 0, 0, off, size
            return
        yield kind, flags, seq, pid, off + HEADER.size, off + length
        off += align(length)


def attributes(data: bytes, start: int, end: int, mask: int = 0xFFFF) -> dict[int, bytes]:
    """The attributes in ``data[start:end]`` by type (``& mask``), the first of a type
    kept; a damaged attribute ends the list."""
    out: dict[int, bytes] = {}
    while start + ATTR.size <= end:
        alen, kind = ATTR.unpack_from(data, start)
        if alen < ATTR.size or start + alen > end:
            break
        out.setdefault(kind & mask, data[start + ATTR.size:start + alen])
        start += align(alen)
    return out


def error(data: bytes, body: int, end: int) -> int | None:
    """The positive errno of an ``NLMSG_ERROR`` (0: an acknowledgement) or of an
    ``NLMSG_DONE`` that carries one; None when the payload is too short to hold it."""
    if body + _ERRNO.size > end:
        return None
    return -_ERRNO.unpack_from(data, body)[0]


def ack_errno(reply: bytes, seq: int) -> int:
    """The errno of the NLMSG_ERROR acknowledging ``seq`` (0 = success)."""
    for kind, _flags, rseq, _pid, body, end in messages(reply):
        if kind == NLMSG_ERROR and rseq == seq:
            code = error(reply, body, end)
            if code is not None:
                return code
    raise OSError(errno.EPROTO, f"no netlink acknowledgement for request {seq}")


def dump_ended(data: bytes, seq: int) -> bool:
    """Whether this datagram ends dump ``seq`` (NLMSG_DONE); OSError with the errno when
    the kernel refused it (NLMSG_ERROR)."""
    for kind, _flags, rseq, _pid, body, end in messages(data):
        if rseq != seq:
            continue
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            code = error(data, body, end)
            if code is None:
                continue
            if code:
                raise OSError(code, os.strerror(code))
            return True
    return False
