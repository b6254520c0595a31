"""Gratuitous ARP (IPv4) and unsolicited Neighbour Advertisements (IPv6).

Theory of operation: after a takeover the switch's MAC table and every neighbour's
ARP/ND cache still point at the old master. A burst of gratuitous ARP requests (RFC
5227 3: sender and target protocol address both the VIP) and unsolicited NAs with the
Override flag (RFC 4861 7.2.6) moves them to us (RFC 5798 6.4.2: "broadcast a
gratuitous ARP request" / "send an unsolicited ND Neighbor Advertisement").

Frames are built by hand with ``struct`` and sent on an AF_PACKET socket bound to the
interface, so they go out even if the VIP is not yet usable as an IP source. Frame
building is pure (``arp_frame``, ``na_frame``) and unit-tested; ``send_burst`` is the
only I/O and is blocking but short (a few sendto() calls per VIP); the pacing between
packets is done by the caller (asyncio) when ``interval`` > 0.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from hadirector.model import IPAddress
from hadirector.vrrp.codec import checksum   # RFC 1071, shared with the VRRP advert

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
SIOCGIFHWADDR = 0x8927
ALL_NODES = ipaddress.IPv6Address("ff02::1")
NA_FLAG_OVERRIDE = 0x20000000
NA_FLAG_ROUTER = 0x80000000


def interface_mac(interface: str) -> bytes:
    """The interface's hardware address (ioctl: works whatever /sys shows)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("256s", interface.encode()[:15])
        res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, ifreq)
    return res[18:24]


def arp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast gratuitous ARP request announcing ``ip`` at ``mac``.

    A request rather than a reply: every host processes requests, and Linux updates
    an existing neighbour entry from one even inside its locktime (it counts as garp).
    """
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,            # hardware type: Ethernet
        0x0800,       # protocol type: IPv4
        6, 4,         # hardware / protocol address lengths
        1,            # op: request
        mac, ip.packed,
        BROADCAST, ip.packed,   # RFC 5227 3: target protocol address = sender's
    )
    return eth + arp


def na_frame(mac: bytes, ip: ipaddress.IPv6Address, router: bool = False) -> bytes:
    """An unsolicited Neighbour Advertisement for ``ip`` to all-nodes (RFC 4861 4.4).

    Source is the target address itself; hop limit 255 (receivers drop anything else,
    RFC 4861 7.1.2); Override set, Solicited clear; the Target Link-Layer Address
    option carries our MAC.
    """
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    option = struct.pack("!BB6s", 2, 1, mac)             # TLLA, length in 8-octet units
    icmp = struct.pack("!BBHI16s", 136, 0, 0, flags, ip.packed) + option
    pseudo = ip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp), 58)
    csum = checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ipv6 = struct.pack(
        "!IHBB16s16s", 6 << 28, len(icmp), 58, 255, ip.packed, ALL_NODES.packed
    )
    # 33:33 + low 32 bits of the group (RFC 2464 7)
    dst_mac = b"\x33\x33" + ALL_NODES.packed[-4:]
    return dst_mac + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


def announcement(mac: bytes, ip: IPAddress) -> bytes:
    if ip.version == 4:
        return arp_frame(mac, ip)
    return na_frame(mac, ip)


class Announcer:
    """An AF_PACKET socket on one interface that sends GARP / NA frames."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.mac = interface_mac(interface)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            self._sock.bind((interface, 0))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def announce(self, ips: tuple[IPAddress, ...] | list[IPAddress]) -> int:
        """Send one announcement per address; returns how many frames went out."""
        sent = 0
        for ip in ips:
            try:
                self._sock.send(announcement(self.mac, ip))
                sent += 1
            except BlockingIOError:
                # A full qdisc is not worth blocking the event loop for; the next
                # packet of the burst (or the repeat) covers it.
                pass
        return sent

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Announcer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
