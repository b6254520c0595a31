"""The one VIP path of the executor: add, remove, record and announce an instance's VIPs.

Every call is about one ``InstanceRuntime`` (``executor.py``) and decides nothing: when
to add, remove or announce is the director core's (``AddVips``, ``RemoveVips``,
``Announce``). What this keeps:

* ownership: the agent removes only the VIPs it added itself (``added_vips``: ``add_vip``
  said it added them); one that was already there (a static address, another agent) is
  not ours to take away, and is logged once (``foreign_vips``);
* ``vip_record``: every VIP is recorded *before* it is added, so a kill -9 in between
  leaves none unrecorded for the next agent (``preflight.py``); afterwards the record
  is exactly what we added;
* start-up releases OUR configured VIPs that a SIGKILLed predecessor left (not an
  address owner's: priority 255 makes the VIP its real address);
* GARP / unsolicited NA rounds (RFC 5798 6.4.1/6.4.2), one announcer per interface; a
  burst is logged once, after its last round.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable, Iterable

from hadirector.director import effects as fx
from hadirector.model import VrrpInstance
from hadirector.vrrp.machine import PRIORITY_OWNER

if TYPE_CHECKING:
    from .executor import InstanceRuntime


def _default_addresses():
    from hadirector.kernel.addresses import AddressManager
    return AddressManager()


def _default_announcer(interface: str):
    from hadirector.kernel.garp import Announcer
    return Announcer(interface)


class VipPath:
    def __init__(self, *, log, addresses=None, announcer_factory: Callable[[str], Any] | None = None,
                 vip_record=None, write_state: Callable[[], None] = lambda: None) -> None:
        self.log = log
        self.addresses = addresses if addresses is not None else _default_addresses()
        self._announcer_factory = announcer_factory or _default_announcer
        # vip_record.VipRecord: the VIPs we added, for the next agent after a kill -9.
        self.vip_record = vip_record
        self._write_state = write_state
        self._announcers: dict[str, Any] = {}
        # Every runtime of the node (the executor sets it): the record lists them all.
        self.every_runtime: Callable[[], Iterable["InstanceRuntime"]] = lambda: ()

    def take_now(self, rt: "InstanceRuntime") -> bool:
        """Become reachable in the same loop turn as the first master advert: add the
        VIPs (``AddVips``); the inline ``Announce`` that follows sends one gratuitous
        ARP / NA round (RFC 5798 6.4.1/6.4.2) if they were added. False: the add failed
        and the worker's retrying path adds."""
        inst = rt.instance
        rt.inline_added = False
        if not inst.virtual_ips:
            return True
        try:
            self.add(rt)
        except Exception as e:  # noqa: BLE001 - the worker retries
            self.log.warning("vrrp.vips_add_deferred", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, reason=str(e))
            return False
        rt.inline_added = True
        return True

    def add(self, rt: "InstanceRuntime") -> None:
        """Add every VIP (one blocking netlink request each); raises on a refusal."""
        inst = rt.instance
        if inst.priority != PRIORITY_OWNER:            # an owner's VIP is its own address
            self.record(rt, inst.virtual_ips)          # first: a kill in between leaves none unrecorded
        added, foreign = [], []
        for i, vip in enumerate(inst.virtual_ips):
            if self.addresses.add_vip(inst.interface, vip, label=_label(inst, i)):
                rt.added_vips.add(vip)
                added.append(str(vip))
            elif (vip not in rt.added_vips and vip not in rt.foreign_vips
                  and inst.priority != PRIORITY_OWNER):     # an owner's VIP is its own address
                rt.foreign_vips.add(vip)
                foreign.append(str(vip))
        rt.held_vips = True
        self.record()         # exactly what we added: those already there are not ours
        if added:
            self.log.info("vrrp.vips_added", instance=inst.name, vrid=inst.vrid,
                          interface=inst.interface, vips=added, reason="became_master")
        if foreign:
            # Start-up released every stale VIP, so someone else put it there.
            self.log.warning("vrrp.vips_already_present", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, vips=foreign,
                             reason="not_added_by_this_agent")

    async def remove(self, rt: "InstanceRuntime", reason: str) -> None:
        inst = rt.instance
        removed = []
        for vip in inst.virtual_ips:
            if vip not in rt.added_vips:
                continue        # never added by us: not ours to remove
            try:
                if await self.addresses.remove_vip(inst.interface, vip):
                    removed.append(str(vip))
                rt.added_vips.discard(vip)
            except Exception as e:  # noqa: BLE001 - try every VIP
                self.log.error("vrrp.vip_remove_failed", instance=inst.name, vip=str(vip),
                               reason=str(e))
        rt.held_vips = False
        self.record()
        if removed:
            self.log.info("vrrp.vips_removed", instance=inst.name, vrid=inst.vrid,
                          interface=inst.interface, vips=removed, reason=reason or "left_master")
        if rt.foreign_vips:
            self.log.warning("vrrp.vips_left_in_place", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, vips=sorted(map(str, rt.foreign_vips)),
                             reason="not_added_by_this_agent")
            rt.foreign_vips.clear()
        self._write_state()

    def record(self, rt: "InstanceRuntime | None" = None, pending=()) -> None:
        """Rewrite ``vip_record``: every instance's ``added_vips``, plus ``pending`` of
        ``rt`` about to be added (a no-op when nothing changed)."""
        if self.vip_record is None:
            return
        from hadirector.agent.vip_record import RecordedVip

        index: dict[str, int] = {}

        def entry(r: "InstanceRuntime", vip) -> RecordedVip:
            name = r.instance.interface
            if name not in index:
                try:
                    index[name] = socket.if_nametoindex(name)
                except OSError:
                    index[name] = 0
            return RecordedVip(name, index[name], str(vip), r.instance.name, r.instance.vrid)

        vips = [entry(r, v) for r in self.every_runtime() for v in r.added_vips]
        if rt is not None:
            vips += [entry(rt, v) for v in pending]
        try:
            self.vip_record.write(vips)
        except OSError as e:
            self.log.warning("vrrp.vip_record_failed", path=self.vip_record.path, reason=str(e))

    async def release_stale(self, instances: Iterable[VrrpInstance]) -> None:
        """Start-up: remove OUR configured VIPs a killed predecessor left behind."""
        for inst in instances:
            if inst.priority == PRIORITY_OWNER:
                continue
            for vip in inst.virtual_ips:
                if await self.addresses.remove_vip(inst.interface, vip):
                    self.log.warning("vrrp.stale_vip_removed", instance=inst.name, vrid=inst.vrid,
                                     vip=str(vip), interface=inst.interface,
                                     reason="left_by_previous_agent")

    def announce(self, rt: "InstanceRuntime", effect: fx.Announce) -> bool:
        """One GARP / NA round; the burst is logged once, after its last round. False:
        sending failed (logged); the caller tells the director core."""
        inst = rt.instance
        try:
            sent = self._announcer(inst.interface).announce([v.ip for v in inst.virtual_ips])
        except OSError as e:
            self.log.warning("vrrp.garp_failed", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, reason=str(e))
            rt.burst_packets.pop(effect.reason, None)
            return False
        rt.garp_sent += sent
        packets = rt.burst_packets.pop(effect.reason, 0) + sent
        if effect.round < effect.rounds - 1:
            rt.burst_packets[effect.reason] = packets
            return True
        self.log.info("vrrp.garp_sent", instance=inst.name, vrid=inst.vrid,
                      interface=inst.interface, packets=packets, reason=effect.reason)
        return True

    def _announcer(self, interface: str):
        ann = self._announcers.get(interface)
        if ann is None:
            ann = self._announcers[interface] = self._announcer_factory(interface)
        return ann

    def close_announcers(self) -> None:
        for ann in self._announcers.values():
            ann.close()
        self._announcers.clear()


def _label(inst: VrrpInstance, index: int) -> str | None:
    from hadirector.kernel.addresses import vip_label
    return vip_label(inst.interface, f"v{inst.vrid}") if inst.virtual_ips[index].version == 4 else None
