"""The effect executor: the director core's effects run here, and one timer is re-armed.

Theory of operation
-------------------
aioquic's ``transmit()`` one level up. ``Executor`` owns one ``InstanceRuntime`` per
running VRRP instance (its ``VrrpDriver``, VIP state and VIP worker). Every input --
a driver's ``RoleChanged`` / ``MasterWish`` / ``Reannounce``, a tracker's fault or
priority delta, the timer -- goes to the sans-IO ``Director`` with ``now=``; then
``execute()`` drains ``director.effects()`` in order and re-arms one ``call_at`` at
``director.next_deadline()``. On a role change that is

1. the VIPs (``AddVips``/``RemoveVips``): whether the instance should hold its VIPs
   (MASTER) is recorded and the instance's VIP worker woken. On MASTER they are added at
   once and the first GARP / unsolicited NA round goes out with the first advert
   (RFC 5798 6.4.1/6.4.2); the worker is level-triggered: it compares "want" with what
   it last applied and adds (retrying) or removes until they agree, so a quick
   MASTER -> BACKUP -> MASTER flap never leaves the VIPs in the wrong state. The rest
   of the burst, a repeat after ``garp.repeat_delay`` and a refresh every
   ``garp.refresh`` while master are ``Announce`` effects at the core's deadlines;
2. the sync-group orders (``ForceState``/``SetFault``, ``vrrp.group.SyncGroupPolicy``),
   applied at once: a forced member's own effects run before the rest (nested);
3. the notify scripts (``notify.Notifier``: background tasks, never blocking);
4. every subscriber in ``on_role_changed`` gets a ``RoleEvent`` -- the hook for the LVS
   side (``lvs.LvsController``: program_mode master_only, the sync daemon);
5. ``state.json``, once, by the machine's view-changed hook after all of this.

The VIP path itself (ownership, the record for the next agent, GARP) is ``vips.VipPath``.
The supervisor (``agent.Agent``) creates and retires runtimes; nothing else touches them:
other components get the narrow ``vrrp_side.VrrpSide`` (``roles``, ``hold_preemption``,
``instance_views``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hadirector.director import effects as fx
from hadirector.director.node import Director
from hadirector.model import Config, IPAddress, IPInterface, VrrpInstance
from hadirector.vrrp.machine import RoleChanged, State

from .notify import Notifier
from .rearm import rearm
from .vips import VipPath
from .vrrp_driver import VrrpDriver
from .vrrp_side import InstanceView, RoleEvent, RoleSubscriber


@dataclass
class InstanceRuntime:
    instance: VrrpInstance
    driver: VrrpDriver
    want_vips: bool = False
    held_vips: bool | None = None          # None: unknown (before the first apply)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task | None = None
    garp_sent: int = 0
    burst_packets: dict[str, int] = field(default_factory=dict)   # GARP burst in progress, by reason
    inline_added: bool = False             # the last AddVips added them inline (GARP may go)
    # The VIPs this agent added (add_vip said so) and has not removed since: the only
    # ones it removes. One that was already there (a static address, another agent)
    # is not ours to take away; ``foreign_vips`` remembers them for the log.
    added_vips: set[IPInterface] = field(default_factory=set)
    foreign_vips: set[IPInterface] = field(default_factory=set)


def _default_transport(inst: VrrpInstance):
    from hadirector.kernel.vrrp_socket import VrrpSocket
    return VrrpSocket(inst.interface, inst.family, peers=inst.unicast_peers)


class Executor:
    def __init__(self, config: Config, *, log, vips: VipPath, notifier: Notifier,
                 subscribers: list[RoleSubscriber], write_state: Callable[[], None],
                 spawn: Callable[[Any, str], None],
                 transport_factory: Callable[[VrrpInstance], Any] | None = None) -> None:
        self.log = log
        self.director = Director(config)
        self.vips = vips
        self.notifier = notifier
        self.subscribers = subscribers
        self._write_state = write_state
        self._spawn = spawn
        self._transport_factory = transport_factory or _default_transport
        self.runtimes: dict[str, InstanceRuntime] = {}
        vips.every_runtime = self.runtimes.values
        self._timer: asyncio.TimerHandle | None = None       # the director core's deadline
        self.stopped = False

    # --- runtimes (the supervisor creates and retires them) ------------------------------

    def add(self, inst: VrrpInstance, primary: IPAddress) -> InstanceRuntime:
        """A driver (not started) and a VIP worker for ``inst``."""
        loop = asyncio.get_running_loop()
        driver = VrrpDriver(inst, transport=self._transport_factory(inst), primary_address=primary,
                            on_role_changed=self._role_changed,
                            on_view_changed=lambda _d: self._write_state(),
                            on_master_wish=self._master_wish,
                            on_reannounce=self._reannounce,
                            sync_group=self.director.in_sync_group(inst.name), loop=loop)
        rt = InstanceRuntime(inst, driver)
        self.director.attach(inst.name, driver.state)
        rt.worker = loop.create_task(self._vip_worker(rt), name=f"vips:{inst.name}")
        self.runtimes[inst.name] = rt
        return rt

    async def retire(self, name: str, reason: str) -> InstanceRuntime:
        """Graceful end of one instance: priority 0 if master, VIPs released, socket
        closed; then it is forgotten (the core too)."""
        rt = self.runtimes[name]
        rt.driver.shutdown()
        if rt.worker is not None:
            rt.worker.cancel()
            await asyncio.gather(rt.worker, return_exceptions=True)
        await self.vips.remove(rt, reason=reason)
        rt.driver.close()
        del self.runtimes[name]
        self.director.detach(name)
        return rt

    def stopping(self) -> None:
        """The node is stopping: no more GARP rounds, role changes reach no subscriber."""
        self.stopped = True
        self.director.stopping()

    async def shutdown(self) -> None:
        """Priority 0 from every machine first (RFC 5798 6.4.3: the backup takes over
        after Skew_Time, so every millisecond spent before this is a millisecond of the
        failover gap); then the VIPs go. The workers are cancelled before anything
        awaits, so none is caught half-way through this removal."""
        for rt in self.runtimes.values():
            rt.driver.shutdown()
        for rt in self.runtimes.values():
            if rt.worker is not None:
                rt.worker.cancel()
        await asyncio.gather(*(rt.worker for rt in self.runtimes.values() if rt.worker),
                             return_exceptions=True)
        self._arm_timer()           # stopping: no more GARP rounds
        for rt in self.runtimes.values():
            await self.vips.remove(rt, reason="shutdown")

    # --- the director core's inputs -----------------------------------------------------

    def _role_changed(self, driver: VrrpDriver, change: RoleChanged) -> None:
        self.director.role_changed(driver.instance.name, change,
                                   priority=driver.machine.effective_priority, now=driver.loop.time())
        self.execute()

    def _master_wish(self, driver: VrrpDriver, wish) -> None:
        self.director.master_wish(driver.instance.name, wish, now=driver.loop.time())
        self.execute()

    def _reannounce(self, driver: VrrpDriver, action) -> None:
        """A lower-priority master was heard (vrrp ``Reannounce``)."""
        self.director.reannounce(driver.instance.name, now=driver.loop.time())
        self.execute()

    def set_fault(self, instance: str, fault: bool, reason: str) -> None:     # TrackSink
        self.director.set_fault(instance, fault, reason, now=_loop_time() or 0.0)
        self.execute()

    def set_priority_delta(self, instance: str, delta: int, reason: str) -> None:  # TrackSink
        self.director.set_priority_delta(instance, delta, reason, now=_loop_time() or 0.0)
        self.execute()

    def reconfigure(self, config: Config) -> None:
        """A reload: sync groups rebuilt where membership changed, seeded with live states."""
        self.director.reconfigure(config, now=asyncio.get_running_loop().time(), faults={
            name: rt.driver.machine.faults for name, rt in self.runtimes.items()})
        self.execute()

    # --- effects and the one timer --------------------------------------------------------

    def execute(self) -> None:
        """Run the director's pending effects in order. An order applied to a machine
        (ForceState, SetFault) may change its role, which comes back through
        ``_role_changed`` and runs that member's effects first (nested), as keepalived
        does within one sync-group transition."""
        for effect in self.director.effects():
            self._run(effect)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """One ``call_at`` at the core's next deadline (aioquic's ``transmit()``)."""
        deadline = None if self.stopped else self.director.next_deadline()
        self._timer = rearm(asyncio.get_running_loop(), self._timer, deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        deadline = self.director.next_deadline()
        # asyncio may run a handle up to one clock resolution early.
        if deadline is not None and now < deadline and deadline - now < 0.001:
            now = deadline
        self.director.handle_timer(now)
        self.execute()

    def _run(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.RecordStatus):
            self._write_state()
        elif isinstance(effect, fx.Notify):
            self._notify(effect)
        elif isinstance(effect, fx.PublishRole):
            self._publish(effect)
        elif isinstance(effect, fx.GroupChanged):
            self.log.info("vrrp.group_changed", group=effect.group, state=effect.state.value)
        else:
            rt = self.runtimes.get(effect.instance)
            if rt is None:
                return
            if isinstance(effect, fx.AddVips):
                rt.want_vips = True
                if not self.vips.take_now(rt):
                    self.director.vips_deferred(effect.instance, now=rt.driver.loop.time())
                rt.wake.set()
            elif isinstance(effect, fx.RemoveVips):
                rt.want_vips = False
                rt.wake.set()
            elif isinstance(effect, fx.Announce):
                if (rt.inline_added or not effect.inline) and not self.vips.announce(rt, effect):
                    self.director.announce_failed(effect, now=rt.driver.loop.time())
            elif isinstance(effect, fx.ForceState):
                rt.driver.force_state(effect.state, effect.reason)
            elif isinstance(effect, fx.SetFault):
                rt.driver.set_fault(effect.fault, effect.reason)
            elif isinstance(effect, fx.SetPriorityDelta):
                self._set_priority_delta(rt, effect)

    def _publish(self, effect: fx.PublishRole) -> None:
        rt = self.runtimes.get(effect.instance)
        if rt is None:
            return
        change = effect.change
        event = RoleEvent(rt.driver.instance, change.old, change.new, change.reason, change.detail,
                          effect.priority, effect.at, time.time())
        for sub in list(self.subscribers):
            try:
                res = sub(event)
                if inspect.isawaitable(res):
                    self._spawn(res, f"subscriber:{effect.instance}")
            except Exception as e:  # noqa: BLE001 - one subscriber must not break VRRP
                self.log.error("agent.subscriber_failed", instance=effect.instance, reason=str(e))

    def _notify(self, effect: fx.Notify) -> None:
        try:
            self.notifier.state_changed(effect.kind, effect.name, effect.state, effect.priority,
                                        effect.scripts)
        except Exception as e:  # noqa: BLE001
            self.log.error("notify.start_failed", name=effect.name, reason=str(e))

    def _set_priority_delta(self, rt: InstanceRuntime, effect: fx.SetPriorityDelta) -> None:
        before = rt.driver.machine.effective_priority
        rt.driver.set_priority_delta(effect.delta, effect.reason)
        after = rt.driver.machine.effective_priority
        if before != after:
            self.log.info("vrrp.priority_changed", instance=effect.instance, vrid=rt.instance.vrid,
                          old=before, new=after, reason=effect.reason, delta=effect.delta)
            self._write_state()

    async def _vip_worker(self, rt: InstanceRuntime) -> None:
        while True:
            await rt.wake.wait()
            rt.wake.clear()
            want = rt.want_vips
            try:
                if want:
                    if not rt.held_vips:      # normally added already, with the advert
                        self.vips.add(rt)
                        self._write_state()
                        self.director.vips_added(rt.instance.name, now=rt.driver.loop.time())
                        self.execute()
                else:
                    await self.vips.remove(rt, reason=rt.driver.machine.last_reason)
            except Exception as e:  # noqa: BLE001 - retry instead of dying with VIPs wrong
                self.log.error("vrrp.vips_apply_failed", instance=rt.instance.name,
                               vrid=rt.instance.vrid, want=want, reason=str(e))
                await asyncio.sleep(1.0)
                rt.wake.set()

    # --- read-only views (vrrp_side.VrrpSide, state.json) ---------------------------------

    def roles(self) -> dict[str, State]:
        return {name: rt.driver.state for name, rt in self.runtimes.items()}

    def hold_preemption(self, instance: str, seconds: float) -> None:
        rt = self.runtimes.get(instance)
        if rt is not None:
            rt.driver.hold_preemption(seconds)

    def instance_views(self) -> tuple[InstanceView, ...]:
        return tuple(InstanceView(rt.instance, rt.driver.machine, rt.driver.primary_address,
                                  dict(rt.driver.rejected), rt.held_vips, rt.driver.gate.auth,
                                  rt.driver.gate.verified, rt.driver.gate.unsigned_accepted)
                     for rt in self.runtimes.values())

    def reject_counts(self) -> tuple:
        return tuple((name, tuple(sorted(rt.driver.rejected.items())))
                     for name, rt in self.runtimes.items())


def _loop_time() -> float | None:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return None

