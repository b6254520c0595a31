"""Test helpers for the VRRP core: instance factory and a fake multi-node link.

``FakeLink`` is a LAN segment of sans-IO machines under one fake clock. Every advert a
machine emits goes through the real codec (encode with the sender's primary address,
decode with TTL 255) and is delivered, without delay, to every machine it is not cut
off from. ``run_until(t)`` fires timers in time order; ``partition()`` / ``heal()`` cut
and restore links.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hadirector.model import VrrpInstance
from hadirector.vrrp.codec import MCAST_V4, MCAST_V6, Advert, decode, encode
from hadirector.vrrp.machine import RoleChanged, SendAdvert, State, VrrpMachine

ip = ipaddress.ip_address
VIP = ipaddress.ip_interface("10.233.0.100/24")


def instance(**kw) -> VrrpInstance:
    base = dict(name="vi_1", interface="vc0", vrid=51, priority=100, advert_interval=1.0,
                virtual_ips=(VIP,))
    base.update(kw)
    return VrrpInstance(**base)


def advert(priority: int = 100, *, vrid: int = 51, version: int = 3, interval: float = 1.0,
           addresses=(VIP.ip,), family: int = 4) -> Advert:
    return Advert(version=version, vrid=vrid, priority=priority, max_advert_int=interval,
                  addresses=tuple(addresses), family=family)


@dataclass
class FakeLink:
    machines: list[VrrpMachine]
    now: float = 0.0
    cut: set[frozenset[int]] = field(default_factory=set)
    events: list[tuple[float, str, RoleChanged]] = field(default_factory=list)
    delivered: int = 0

    def name(self, m: VrrpMachine) -> str:
        return str(m.primary_address)

    def start(self, *which: VrrpMachine) -> None:
        for m in which or self.machines:
            m.start(self.now)
        self.flush()

    def partition(self, a: VrrpMachine | None = None, b: VrrpMachine | None = None) -> None:
        """Cut the link between a and b, or between everyone."""
        pairs = [(a, b)] if a is not None else [
            (x, y) for i, x in enumerate(self.machines) for y in self.machines[i + 1:]]
        for x, y in pairs:
            self.cut.add(frozenset((id(x), id(y))))

    def heal(self) -> None:
        self.cut.clear()

    def connected(self, a: VrrpMachine, b: VrrpMachine) -> bool:
        return frozenset((id(a), id(b))) not in self.cut

    def flush(self) -> None:
        """Deliver pending actions until every machine is quiet."""
        for _ in range(10_000):
            busy = False
            for m in self.machines:
                for action in m.actions():
                    busy = True
                    if isinstance(action, RoleChanged):
                        self.events.append((self.now, self.name(m), action))
                    elif isinstance(action, SendAdvert):
                        self._broadcast(m, action)
            if not busy:
                return
        raise AssertionError("adverts never quiet down: a storm")

    def _broadcast(self, sender: VrrpMachine, action: SendAdvert) -> None:
        adv = action.advert
        assert adv is not None and adv.priority == action.priority
        src = sender.primary_address
        dst = MCAST_V4 if src.version == 4 else MCAST_V6
        wire = encode(adv, src, dst)
        for m in self.machines:
            if m is sender or not self.connected(sender, m):
                continue
            got = decode(wire, src=src, dst=dst, ttl=255, family=adv.family)
            assert got == adv
            m.receive_advert(got, src, self.now)
            self.delivered += 1

    def run_until(self, t: float) -> None:
        """Advance the clock to t, firing every deadline on the way in time order."""
        for _ in range(1_000_000):
            timers = [(m.get_timer(), i) for i, m in enumerate(self.machines)
                      if m.get_timer() is not None]
            if not timers:
                break
            when, i = min(timers)
            if when > t:
                break
            self.now = max(self.now, when)
            self.machines[i].handle_timer(self.now)
            self.flush()
        self.now = t

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def masters(self) -> list[VrrpMachine]:
        return [m for m in self.machines if m.state is State.MASTER]
