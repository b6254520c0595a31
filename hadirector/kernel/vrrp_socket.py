"""Raw VRRP sockets (IP protocol 112), IPv4 and IPv6.

Theory of operation: one ``VrrpSocket`` per VRRP instance. It is bound to the
instance's interface (SO_BINDTODEVICE) so adverts heard on another link never reach
the machine, joins the VRRP group on that interface only, and sends with TTL / hop
limit 255 because receivers drop anything else (RFC 5798 5.1.1.3, 5.1.2.3: the TTL
check is what keeps VRRP link-local). Multicast loop is off: our own adverts must not
come back as a "peer" advert.

Receiving keeps what the codec needs to validate a packet:

* IPv4: the kernel hands a raw socket the whole datagram including the IP header, so
  the TTL and the addresses (for the checksum pseudo-header, RFC 5798 5.2.8) come
  from the header itself.
* IPv6: raw sockets never see the IPv6 header; the hop limit and the destination
  come as ancillary data (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO, RFC 3542).

No asyncio here: the socket is non-blocking, and the driver wires ``fileno()`` to
``loop.add_reader`` (CPython's ``create_datagram_endpoint`` refuses raw sockets).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from hadirector.model import IPAddress
from hadirector.vrrp.codec import MCAST_V4, MCAST_V6, PROTO_VRRP, VRRP_TTL

# The protocol's constants are the codec's (RFC 5798 5.1.1.2, 5.1.2.2, 5.2.3, 5.2.4).
IPPROTO_VRRP = PROTO_VRRP
VRRP_GROUP_V4 = MCAST_V4
VRRP_GROUP_V6 = MCAST_V6

# Not every CPython build exports these; the values are Linux's uapi.
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IPV6_MULTICAST_ALL = 29
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)

_RECV_BUF = 4096  # adverts are < 1 KiB even with 255 addresses (v3, IPv4: 1028 + header)
_CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20) + 64


@dataclass(frozen=True)
class ReceivedPacket:
    """One datagram as the kernel delivered it, with what validation needs.

    ``payload`` is the VRRP message (after the IP header); ``ip_packet`` is the whole
    IPv4 datagram (None for IPv6, where the header is not visible to raw sockets).
    """

    payload: bytes
    src: IPAddress
    dst: IPAddress | None
    ttl: int | None
    ip_packet: bytes | None = None


class VrrpSocket:
    """A raw protocol-112 socket on one interface.

    ``peers`` switches to unicast mode (keepalived's ``unicast_peer``): adverts go to
    each peer instead of the group, and the group is not joined.
    """

    def __init__(
        self,
        interface: str,
        family: int = 4,
        *,
        peers: tuple[IPAddress, ...] = (),
    ) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        self.interface = interface
        self.family = family
        self.peers = tuple(peers)
        self.group: IPAddress = VRRP_GROUP_V4 if family == 4 else VRRP_GROUP_V6
        self.ifindex = socket.if_nametoindex(interface)
        self._sock = self._open()

    # --- setup --------------------------------------------------------------------

    def _open(self) -> socket.socket:
        af = socket.AF_INET if self.family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            if self.family == 4:
                self._setup_v4(sock)
            else:
                self._setup_v6(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _setup_v4(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        # Without this Linux delivers every group joined by any socket on the host.
        sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        mreqn = struct.pack("=4s4si", self.group.packed, b"\0" * 4, self.ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        if not self.peers:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)

    def _setup_v6(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        if not self.peers:
            mreq = struct.pack("=16sI", self.group.packed, self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    # --- I/O ----------------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def destinations(self) -> tuple[IPAddress, ...]:
        return self.peers or (self.group,)

    def send_to(self, payload: bytes, dst: IPAddress, src: IPAddress | None = None) -> None:
        """Send one VRRP message to ``dst`` (the group or one unicast peer).

        The v3 checksum covers a pseudo-header with both addresses (RFC 5798 5.2.8),
        so each destination gets its own encoding and ``src`` pins the source to the
        address the codec used (IP_PKTINFO / IPV6_PKTINFO). Without ``src`` the kernel
        chooses: the primary IPv4 address, or the link-local address for ff02::12
        (RFC 5798 5.1.2.1). Errors (ENETDOWN on a cut link ...) are raised.
        """
        ancillary = [self._pktinfo(src)] if src is not None else []
        if self.family == 4:
            self._sock.sendmsg([payload], ancillary, 0, (str(dst), 0))
        else:
            scope = self.ifindex if dst.is_link_local or dst.is_multicast else 0
            self._sock.sendmsg([payload], ancillary, 0, (str(dst), 0, 0, scope))

    def _pktinfo(self, src: IPAddress) -> tuple[int, int, bytes]:
        if self.family == 4:
            # struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
            data = struct.pack("=i4s4s", self.ifindex, src.packed, b"\0" * 4)
            return (socket.IPPROTO_IP, _IP_PKTINFO, data)
        # struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
        data = struct.pack("=16sI", src.packed, self.ifindex)
        return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data)

    def recv(self) -> ReceivedPacket | None:
        """Read one datagram; None when nothing is waiting (non-blocking)."""
        try:
            data, ancdata, _flags, addr = self._sock.recvmsg(_RECV_BUF, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return None
        if self.family == 4:
            return _parse_v4(data)
        return _parse_v6(data, ancdata, addr)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "VrrpSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse_v4(data: bytes) -> ReceivedPacket:
    # The kernel only delivers well-formed IPv4 headers to raw sockets, but the
    # header length still comes from the wire: stay defensive.
    if len(data) < 20:
        return ReceivedPacket(payload=b"", src=ipaddress.IPv4Address(0), dst=None, ttl=None, ip_packet=data)
    ihl = (data[0] & 0x0F) * 4
    return ReceivedPacket(
        payload=data[ihl:],
        src=ipaddress.IPv4Address(data[12:16]),
        dst=ipaddress.IPv4Address(data[16:20]),
        ttl=data[8],
        ip_packet=data,
    )


def _parse_v6(data: bytes, ancdata, addr) -> ReceivedPacket:
    ttl = None
    dst = None
    for level, kind, value in ancdata:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
            ttl = struct.unpack("=i", value[:4])[0]
        elif kind == socket.IPV6_PKTINFO and len(value) >= 16:
            dst = ipaddress.IPv6Address(value[:16])
    src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
    return ReceivedPacket(payload=data, src=src, dst=dst, ttl=ttl, ip_packet=None)
