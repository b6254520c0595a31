"""Fakes for the agent's socket edges (the VRRP socket, the GARP announcer) that keep
state and fail like the real thing. The kernel fakes (addresses, links, IPVS) are
``hadirector.kernel.fake``, beside what they stand in for."""

from __future__ import annotations

import ipaddress
import socket
import struct

from hadirector.net.vrrp_socket import VRRP_GROUP_V4, VRRP_GROUP_V6, ReceivedPacket
from hadirector.vrrp.codec import Advert, decode, encode


def ipv4_packet(payload: bytes, src, dst, ttl: int = 255) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, ttl, 112, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return head + payload


class FakeTransport:
    """A VrrpSocket stand-in: a socketpair makes the fd readable for add_reader."""

    def __init__(self, family: int = 4, peers=()) -> None:
        self.family = family
        self.peers = tuple(peers)
        self.group = VRRP_GROUP_V4 if family == 4 else VRRP_GROUP_V6
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self.inbox: list[ReceivedPacket] = []
        self.sent: list[tuple[bytes, object, object]] = []
        self.fail_with: OSError | None = None
        self.closed = False

    def fileno(self) -> int:
        return self._r.fileno()

    def destinations(self):
        return self.peers or (self.group,)

    def deliver_v4(self, payload: bytes, src, dst=None, ttl: int = 255) -> None:
        dst = dst or self.group
        raw = ipv4_packet(payload, src, dst, ttl)
        self.inbox.append(ReceivedPacket(payload=payload, src=ipaddress.ip_address(src),
                                         dst=ipaddress.ip_address(dst), ttl=ttl, ip_packet=raw))
        self._w.send(b"x")

    def deliver_advert(self, adv: Advert, src, dst=None, ttl: int = 255) -> None:
        dst = dst or self.group
        self.deliver_v4(encode(adv, ipaddress.ip_address(src), ipaddress.ip_address(dst)), src, dst, ttl)

    def recv(self):
        try:
            self._r.recv(1)
        except BlockingIOError:
            pass
        return self.inbox.pop(0) if self.inbox else None

    def send_to(self, payload: bytes, dst, src=None) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((payload, dst, src))

    def sent_adverts(self) -> list[Advert]:
        out = []
        for payload, dst, src in self.sent:
            adv = decode(payload, src=src, dst=dst, ttl=255, family=self.family)
            assert isinstance(adv, Advert), adv
            out.append(adv)
        return out

    def close(self) -> None:
        self.closed = True
        self._r.close()
        self._w.close()


class FakeAnnouncer:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.announced: list = []

    def announce(self, ips) -> int:
        self.announced.extend(ips)
        return len(ips)

    def close(self) -> None:
        pass
