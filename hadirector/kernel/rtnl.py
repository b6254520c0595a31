"""One blocking rtnetlink request: add an address, acknowledged in microseconds.

The transition to MASTER adds the VIPs with this, in the same event-loop turn that
sends the first advert (RFC 5798 6.4.1 / 6.4.2: the new master sends its advert and
its gratuitous ARP and starts accepting packets for the VIPs as one step). Going
through the async client instead meant a worker task, a lock and pyroute2's reply
matching first: 0.1-0.4 s, seconds under load, during which the backup had stopped
answering and the new master could not yet. ``remove_address`` is the same kind of
request for the start-up release of a dead predecessor's VIPs, which runs before the
agent has imported pyroute2 or started an event loop. Everything else about addresses
(removal while running, verification) stays with ``addresses.AddressManager``.

``addr_add_message`` / ``addr_del_message`` are pure (tested against pyroute2's
encoding); ``add_address`` / ``remove_address`` do the socket. ``getaddr_dump_request``,
``parse_addresses`` and ``dump_ended`` are the pure halves of the address dump that
``AddressManager`` reads through the event loop (so the agent needs no pyroute2 unless
it programs IPVS: its import is ~10 MB and ~0.1 s of start-up). The netlink framing
(header, attributes, acknowledgements) is ``nlmsg``'s.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from hadirector.kernel import nlmsg
from hadirector.kernel.nlmsg import (  # noqa: F401 - names this module has always offered
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    ack_errno, dump_ended,
)

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:       # annotations only: the start-up release imports this first thing
    import ipaddress

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0

_IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
_attr = nlmsg.attr


def addr_add_message(seq: int, ifindex: int,
                     vip: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                     label: str | None = None) -> bytes:
    """RTM_NEWADDR with CREATE|EXCL|ACK, as ``ip addr add VIP dev IF [label L]`` sends it
    (IPv6 with IFA_F_NODAD: a VIP moving between directors must not wait for DAD)."""
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if vip.version == 6 else 0
    body = _IFADDRMSG.pack(family, vip.network.prefixlen, flags, RT_SCOPE_UNIVERSE, ifindex)
    packed = vip.ip.packed
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    if label and vip.version == 4:
        body += _attr(IFA_LABEL, label.encode() + b"\0")
    return nlmsg.message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE, seq, body)


def addr_del_message(seq: int, ifindex: int,
                     vip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bytes:
    """RTM_DELADDR with ACK, as ``ip addr del VIP/PREFIX dev IF`` sends it."""
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    return prefix_del_message(seq, ifindex, family, vip.ip.packed, vip.network.prefixlen)


def prefix_del_message(seq: int, ifindex: int, family: int, packed: bytes, prefixlen: int) -> bytes:
    """``addr_del_message`` from the address's bytes (no ipaddress objects)."""
    body = _IFADDRMSG.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return nlmsg.message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def add_address(ifindex: int, vip: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                label: str | None = None, timeout: float = 1.0) -> bool:
    """Add ``vip``; True if added, False if it was already there. OSError otherwise."""
    seq = _seq()
    code = _request(addr_add_message(seq, ifindex, vip, label), seq, timeout)
    if code == 0:
        return True
    if code == errno.EEXIST:
        return False
    raise OSError(code, os.strerror(code))


def remove_address(ifindex: int, vip: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                   timeout: float = 1.0) -> bool:
    """Remove ``vip``; True if removed, False if it was not there (or the interface is
    gone). OSError otherwise."""
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    return remove_prefix(ifindex, family, vip.ip.packed, vip.network.prefixlen, timeout)


def parse_prefix(text: str) -> tuple[int, bytes, int]:
    """``"10.0.0.1/32"`` -> (AF_INET, its 4 bytes, 32); ValueError if it is not one.
    (``socket.inet_pton``: the start-up release runs before ipaddress is imported.)"""
    address, slash, length = text.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        packed = socket.inet_pton(family, address)
    except OSError:
        raise ValueError(f"not an IP address: {address!r}") from None
    bits = len(packed) * 8
    prefixlen = int(length) if slash else bits
    if not 0 <= prefixlen <= bits:
        raise ValueError(f"prefix length {prefixlen} out of range in {text!r}")
    return family, packed, prefixlen


def remove_prefix(ifindex: int, family: int, packed: bytes, prefixlen: int,
                  timeout: float = 1.0) -> bool:
    """``remove_address`` from ``parse_prefix``'s parts."""
    seq = _seq()
    code = _request(prefix_del_message(seq, ifindex, family, packed, prefixlen), seq, timeout)
    if code == 0:
        return True
    if code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
        return False
    raise OSError(code, os.strerror(code))


def getaddr_dump_request(seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """RTM_GETADDR with NLM_F_DUMP, as ``ip addr show`` sends it."""
    return nlmsg.message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, _IFADDRMSG.pack(family, 0, 0, 0, 0))


def parse_addresses(data: bytes) -> list[tuple[int, int, bytes, int, int, int]]:
    """The RTM_NEWADDR messages in one dump datagram, each as (ifindex, family, address
    bytes, prefix length, flags, scope), in kernel order. The address is IFA_ADDRESS,
    else IFA_LOCAL (the peer address of a point-to-point link is IFA_ADDRESS, as
    ``ip addr`` shows it); the flags are IFA_FLAGS (32 bits) when the kernel sends them,
    else the message's 8-bit ifa_flags. A damaged message ends the datagram."""
    out = []
    for kind, _flags, _seq_, _pid, body, end in nlmsg.messages(data):
        if kind != RTM_NEWADDR or body + _IFADDRMSG.size > end:
            continue
        family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(data, body)
        attrs = nlmsg.attributes(data, body + _IFADDRMSG.size, end)
        address = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
        if address is not None:
            extended = attrs.get(IFA_FLAGS)
            if extended is not None and len(extended) == 4:
                flags = struct.unpack("=I", extended)[0] or flags
            out.append((index, family, address, prefixlen, flags, scope))
    return out


def _seq() -> int:
    return int.from_bytes(os.urandom(4), "little") or 1


def _request(message: bytes, seq: int, timeout: float) -> int:
    """Send one request on a fresh socket; the errno of its acknowledgement."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        s.send(message)
        while True:
            try:
                code = ack_errno(s.recv(65536), seq)
            except OSError as e:
                if e.errno == errno.EPROTO:
                    continue        # not our acknowledgement (nothing else is subscribed)
                raise
            return code
