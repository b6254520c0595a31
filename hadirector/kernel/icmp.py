"""ICMP / ICMPv6 echo: the socket the ping probe uses and the echo packets (RFC 792,
RFC 4443 4.1-4.2).

``open_echo_socket`` prefers an unprivileged ICMP socket (SOCK_DGRAM + IPPROTO_ICMP,
Linux "ping sockets"): the kernel then picks the echo identifier, fills in the
checksum, strips the IP header and hands this socket only the replies to its own
echoes. The kernel allows it only to a group in ``net.ipv4.ping_group_range`` (Debian's
default "1 0" allows nobody); otherwise it falls back to a raw socket, which the agent
may open (CAP_NET_RAW) and which sees every ICMP packet to the host, so replies are
matched on identifier, sequence and payload. ``connect()`` makes the kernel deliver
only packets from the target, on both kinds.

Packet building and parsing are pure; the socket is this module's only I/O.
"""

from __future__ import annotations

import errno
import socket
import struct

from hadirector.vrrp.codec import checksum   # RFC 1071, shared with the VRRP advert

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
_HEADER = struct.Struct("!BBHHH")         # type, code, checksum, identifier, sequence


def open_echo_socket(family: int) -> tuple[socket.socket, bool]:
    """A non-blocking ICMP socket for ``family`` and whether it is raw (see module doc)."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        raw = False
    except PermissionError:              # EACCES: not in ping_group_range
        sock = socket.socket(family, socket.SOCK_RAW, proto)
        raw = True
    except OSError as e:
        if e.errno not in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
            raise
        sock = socket.socket(family, socket.SOCK_RAW, proto)
        raw = True
    sock.setblocking(False)
    return sock, raw


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request. The ICMPv4 checksum is computed here; ICMPv6's covers a
    pseudo-header the kernel fills in (RFC 4443 2.3), and a ping socket rewrites the
    identifier and checksum anyway."""
    head = _HEADER.pack(ECHO_REQUEST[version], 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if version == 6:
        return head + payload
    return _HEADER.pack(ECHO_REQUEST[version], 0, checksum(head + payload), ident & 0xFFFF,
                        seq & 0xFFFF) + payload


def parse_echo_reply(version: int, data: bytes, raw: bool) -> tuple[int, int, bytes] | None:
    """``(identifier, sequence, payload)`` of an echo reply, or None for any other packet.
    A raw IPv4 socket delivers the IP header too; ICMPv6 and ping sockets do not."""
    if raw and version == 4:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < _HEADER.size:
        return None
    kind, code, _sum, ident, seq = _HEADER.unpack_from(data)
    if kind != ECHO_REPLY[version] or code != 0:
        return None
    return ident, seq, data[_HEADER.size:]
