"""Fakes for the agent's socket edges (the VRRP socket, the GARP announcer) that keep
state and fail like the real thing. The kernel fakes (addresses, links, IPVS) are
``hadirector.kernel.fake``, beside what they stand in for."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Callable

from hadirector.kernel.vrrp_socket import VRRP_GROUP_V4, VRRP_GROUP_V6, ReceivedPacket
from hadirector.vrrp.codec import Advert, decode, encode


def ipv4_packet(payload: bytes, src, dst, ttl: int = 255) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, ttl, 112, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return head + payload


class Pulse:
    """Deterministic waits for shell tests: the fakes (and a role subscriber) ``fire()``
    on every change they see, and ``until(pred)`` re-checks ``pred`` then, and only
    then: no fixed sleep, no polling. Time still passes for the agent's own timers (the
    VRRP machine's Master_Down_Interval), but the test waits exactly as long as needed."""

    def __init__(self) -> None:
        self._waiters: list = []

    def fire(self, *_ignored) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        import asyncio
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            f = loop.create_future()
            self._waiters.append(f)
            try:
                await asyncio.wait_for(f, max(0.0, end - loop.time()))
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}") from None


def _fire(on_change: Callable[[], None] | None) -> None:
    if on_change is not None:
        on_change()


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
        self.on_change: Callable[[], None] | None = None    # Pulse.fire: a packet sent or read
        self.pulse = Pulse()                                 # the same, for this socket alone

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
        self._changed()
        return self.inbox.pop(0) if self.inbox else None

    def _changed(self) -> None:
        self.pulse.fire()
        _fire(self.on_change)

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        """Until ``pred()`` holds, re-checked whenever this socket sends or is read."""
        await self.pulse.until(pred, timeout, what)

    async def read_all(self, timeout: float = 5.0) -> None:
        """Until the driver has read (and handled) every packet delivered so far."""
        await self.until(lambda: not self.inbox, timeout, "the delivered packets read")

    def send_to(self, payload: bytes, dst, src=None) -> None:
        if self.fail_with is not None:
            self._changed()
            raise self.fail_with
        self.sent.append((payload, dst, src))
        self._changed()

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
        self.on_change: Callable[[], None] | None = None    # Pulse.fire: a round sent

    def announce(self, ips) -> int:
        self.announced.extend(ips)
        _fire(self.on_change)
        return len(ips)

    def close(self) -> None:
        pass
