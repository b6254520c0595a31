"""The agent process: wires VRRP drivers, trackers, VIPs, GARP, notify scripts, signals.

Theory of operation
-------------------
``Agent(config)`` owns one ``VrrpDriver`` per instance. A driver reports every
``RoleChanged`` (and ``MasterWish``, ``Reannounce``) synchronously to the sans-IO
director core (``hadirector.director.node.Director``), which decides and returns effects;
``_execute`` runs them in order and re-arms one timer at the core's next deadline
(aioquic's ``transmit()`` one level up). On a role change that is

1. the VIPs (``AddVips``/``RemoveVips``): whether the instance should hold its VIPs
   (MASTER) is recorded and the instance's VIP worker woken. On MASTER they are added at
   once and the first GARP / unsolicited NA round goes out with the first advert
   (RFC 5798 6.4.1/6.4.2); the worker is level-triggered: it compares "want" with what
   it last applied and adds (retrying) or removes until they agree, so a quick
   MASTER -> BACKUP -> MASTER flap never leaves the VIPs in the wrong state. The rest
   of the burst, a repeat after ``garp.repeat_delay`` and a refresh every
   ``garp.refresh`` while master are ``Announce`` effects at the core's deadlines;
2. the sync-group orders (``ForceState``/``SetFault``, ``vrrp.group.SyncGroupPolicy``),
   applied at once: a forced member's own effects run before the rest (nested); members
   are built with ``sync_group=True`` and their ``MasterWish`` goes to the group;
3. the notify scripts (``notify.Notifier``: background tasks, never blocking);
4. ``<state_dir>/state.json`` (status, tests, the next agent's start-up);
5. every subscriber in ``on_role_changed`` gets a ``RoleEvent`` — the hook for
   the LVS side (``lvs.LvsController``: program_mode master_only, the sync daemon).

Trackers (``track.py``) report faults and priority deltas to ``set_fault`` /
``set_priority_delta``, which also go through the director core (and a sync group).

Start-up removes OUR configured VIPs from their interfaces before any machine starts:
a SIGKILLed predecessor leaves its VIP behind, and after the peer takes over two
nodes would own it (kernel-lab.md). Address owners (priority 255) are left alone: the
VIP is their real address. (``hadirector run`` has already removed the ones its
predecessor recorded as added, under the lock that proves no other agent runs here,
before reading the config: ``preflight.py``, ``vip_record.py``.) After that, the agent
removes only VIPs it added itself (``InstanceRuntime.added_vips``), and records them in
``vip_record`` before adding each, for the next agent after a kill -9.

Stop (SIGTERM/SIGINT): every machine shuts down first — a master sends priority 0 so
the backup takes over after Skew_Time (RFC 5798 6.4.3) — then the VIPs are removed,
then the components stop (health checks, sync daemons, IPVS per ``on_shutdown``, API),
notify "STOP" scripts get a bounded time to finish, and ``run()`` returns 0.

Reload (SIGHUP, or ``hadirector reload`` over the control socket): ``reload_async()``
reads and validates the file; a bad one is refused (``agent.reload_failed`` with the
file:line message) and nothing changes. A good one is diffed against the running
config (``reload.plan_reload``, pure) and applied in two phases: *prepare* (what can
fail: the source address of every new driver) touches nothing; *commit* retires
removed and restarted instances gracefully (priority 0 if master, VIPs released),
updates changed ones in place (``VrrpMachine.reconfigure``: no transition), rebuilds
only the sync groups and trackers whose inputs changed (keeping script health), starts
the new drivers and hands the config to every component with ``update_config``
(``LvsController``: minimal IPVS writes). Unchanged instances are not touched at all.
Every attempt, applied or refused, goes to each component's ``record_reload``.
``node``/``api`` changes need a restart: they are reported and not applied.

Hooks for other concerns (the integrator adds them): ``on_role_changed`` (subscribers)
and ``components`` (objects with ``async start(agent)`` / ``async stop(agent)``,
started after the drivers and stopped before them). ``snapshot()`` is the read-only
view for the status API.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from hadirector.api.snapshot import ReloadResult
from hadirector.director import effects as fx
from hadirector.director.node import Director
from hadirector.model import Config, IPAddress, IPInterface, VrrpInstance
from hadirector.vrrp.machine import PRIORITY_OWNER, RoleChanged, State

from .notify import Notifier
from .rearm import rearm
from .reload import ReloadPlan, in_force, plan_reload
from .sdnotify import SystemdNotifier
from .track import InterfaceTracker, ScriptTracker, apply_script, interface_bindings
from .vrrp_driver import VrrpDriver

from hadirector.logging import get_logger

STATE_REFRESH = 1.0     # seconds: how late state.json may show reject counters


class AgentError(Exception):
    """The agent cannot start (no such interface, no source address ...)."""

    def __init__(self, message: str, reason: str = "start_failed") -> None:
        super().__init__(message)
        self.reason = reason            # agent.start_failed's reason=


@dataclass(frozen=True)
class RoleEvent:
    """What ``on_role_changed`` subscribers get."""

    instance: VrrpInstance
    old: State
    new: State
    reason: str
    detail: str
    priority: int
    at: float            # loop.time() (monotonic)
    wall: float          # time.time()


RoleSubscriber = Callable[[RoleEvent], Awaitable[None] | None]


class Component(Protocol):
    async def start(self, agent: "Agent") -> None: ...
    async def stop(self, agent: "Agent") -> None: ...


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
    from hadirector.net.vrrp_socket import VrrpSocket
    return VrrpSocket(inst.interface, inst.family, peers=inst.unicast_peers)


def _default_addresses():
    from hadirector.kernel.addresses import AddressManager
    return AddressManager()


def _default_announcer(interface: str):
    from hadirector.net.garp import Announcer
    return Announcer(interface)


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        log=None,
        addresses=None,
        transport_factory: Callable[[VrrpInstance], Any] | None = None,
        announcer_factory: Callable[[str], Any] | None = None,
        systemd: SystemdNotifier | None = None,
        link_watcher_factory: Callable[[set[str]], Any] | None = None,
        vip_record=None,
    ) -> None:
        self.config = config
        # vip_record.VipRecord: the VIPs we added, for the next agent after a kill -9.
        self.vip_record = vip_record
        self.log = log or get_logger("hadirector.agent")
        self.addresses = addresses if addresses is not None else _default_addresses()
        self._transport_factory = transport_factory or _default_transport
        self._announcer_factory = announcer_factory or _default_announcer
        self.systemd = systemd or SystemdNotifier()
        self._link_watcher_factory = link_watcher_factory
        self.notifier = Notifier()
        self.on_role_changed: list[RoleSubscriber] = []
        self.components: list[Component] = []
        self.runtimes: dict[str, InstanceRuntime] = {}
        # The decisions (VIPs, GARP, sync groups, notify, subscribers) are the director
        # core's; this class executes its effects (``_execute``).
        self.director = Director(config)
        self._announcers: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._iface_tracker: InterfaceTracker | None = None
        self._script_tracker: ScriptTracker | None = None
        self._watchdog: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None       # the director core's deadline
        self.started = False
        self._stopped = False
        self.state_path = os.path.join(config.node.state_dir, "state.json")
        self.generation = 1                 # +1 per applied reload
        self._reload_lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload, "sighup")
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self.log.info("agent.stop_requested", reason=reason)
            self._stop.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        instances = self.config.vrrp_instances
        primaries: dict[str, IPAddress] = {}
        for inst in instances:
            primaries[inst.name] = await self._source_address(inst)
        await self._release_stale_vips(instances)
        for inst in instances:
            self.runtimes[inst.name] = self._new_runtime(inst, primaries[inst.name])
        # Trackers before the machines start: a link that is already down puts the
        # instance straight into FAULT instead of a brief BACKUP -> MASTER.
        self._iface_tracker = InterfaceTracker(instances, self, addresses=self.addresses,
                                               watcher_factory=self._link_watcher_factory)
        await self._iface_tracker.start()
        # Components that can fault instances (the LVS side: no IPVS) report before the
        # machines start too; ``start`` follows once the machines run.
        for comp in self.components:
            prepare = getattr(comp, "prepare", None)
            if prepare is not None:
                prepare(self)
        for rt in self.runtimes.values():
            rt.driver.start()
        self._script_tracker = ScriptTracker(self.config.track_scripts, instances, self)
        self._script_tracker.start()
        for comp in self.components:
            await comp.start(self)
        self.started = True
        self.write_state()
        self._spawn(self._refresh_state_loop(), "state_refresh")
        self.systemd.ready(status=f"{len(self.runtimes)} VRRP instance(s)")
        if self.systemd.watchdog_interval:
            self._watchdog = loop.create_task(self._watchdog_loop(self.systemd.watchdog_interval))
        import hadirector

        self.log.info("agent.started", version=hadirector.__version__, instances=[i.name for i in instances],
                      router_id=self.config.node.router_id, pid=os.getpid())

    async def stop(self) -> None:
        if self._stopped or (not self.runtimes and not self.started):
            return
        self._stopped = True
        self.director.stopping()
        self.systemd.stopping()
        self.log.info("agent.stopping", reason=self._stop_reason or "stop")
        # A reload in flight finishes first (it may be starting drivers); later ones
        # are refused (not_running). Bounded: a stuck reload must not block the stop.
        try:
            await asyncio.wait_for(self._reload_lock.acquire(), 30)
        except asyncio.TimeoutError:
            self.log.error("agent.reload_lock_timeout", reason="stopping_anyway")
        # Priority 0 first (RFC 5798 6.4.3): the backup takes over after Skew_Time, so
        # every millisecond spent before this is a millisecond of the failover gap.
        # Subscribers (the LVS side) no longer hear role changes from here on.
        for rt in self.runtimes.values():
            rt.driver.shutdown()
        # Then the VIPs go. The workers are cancelled before anything awaits, so none
        # is caught half-way through the shutdown's own VIP removal.
        for rt in self.runtimes.values():
            if rt.worker is not None:
                rt.worker.cancel()
        await asyncio.gather(*(rt.worker for rt in self.runtimes.values() if rt.worker),
                             return_exceptions=True)
        self._arm_timer()           # stopping: no more GARP rounds
        for rt in self.runtimes.values():
            await self._remove_vips(rt, reason="shutdown")
        # Then trackers and components (health checks, sync daemons, IPVS, API).
        if self._script_tracker is not None:
            await self._script_tracker.stop()
        if self._iface_tracker is not None:
            await self._iface_tracker.stop()
        for comp in reversed(self.components):
            try:
                await comp.stop(self)
            except Exception as e:  # noqa: BLE001 - one component must not stop the rest
                self.log.error("agent.component_stop_failed", component=repr(comp), reason=str(e))
        for rt in self.runtimes.values():
            rt.driver.close()
        for ann in self._announcers.values():
            ann.close()
        self._announcers.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.notifier.drain(timeout=max(
            [i.notify.timeout for i in self.config.vrrp_instances] + [1.0]))
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.write_state()
        if hasattr(self.addresses, "close"):
            self.addresses.close()
        self.started = False
        self.log.info("agent.stopped", reason=self._stop_reason or "stop")

    def reload(self, trigger: str = "sighup") -> asyncio.Task:
        """SIGHUP: run ``reload_async`` as a task (a signal handler cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload_async(trigger=trigger),
                                                      name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reload_async(self, trigger: str = "api") -> ReloadResult:
        """Re-read ``config.source``; refuse it (nothing changes) or apply it as a diff.

        One reload at a time: a second request waits, then reads the file again.
        """
        if self._stopped:
            return self._refused(trigger, "not_running", ("the agent is stopping",), time.monotonic())
        async with self._reload_lock:
            t0 = time.monotonic()
            try:
                result = await self._reload(trigger, t0)
            except Exception as e:  # noqa: BLE001 - a reload bug must not kill the director
                self.log.exception("agent.reload_failed", source=self.config.source,
                                   reason="apply_crashed", detail=f"{type(e).__name__}: {e}",
                                   trigger=trigger)
                result = ReloadResult(ok=False, generation=self.generation,
                                      message=f"reload crashed while applying: {type(e).__name__}: {e}",
                                      errors=(f"{type(e).__name__}: {e}",),
                                      duration=time.monotonic() - t0)
            for comp in self.components:
                record = getattr(comp, "record_reload", None)
                if record is not None:
                    try:
                        record(result)
                    except Exception as e:  # noqa: BLE001
                        self.log.error("agent.component_reload_failed", component=repr(comp),
                                       reason=str(e))
            return result

    async def _reload(self, trigger: str, t0: float) -> ReloadResult:
        from hadirector.config import ConfigError
        from hadirector.config.worker import load_config_in_worker

        source = self.config.source
        try:
            # Off the loop and out of our GIL: reading is bounded (config.compose) but
            # not free, and the VRRP drivers must keep sending adverts meanwhile.
            loaded = await asyncio.to_thread(load_config_in_worker, source)
        except ConfigError as e:
            # The loader reports a file it cannot read as an issue at line 0.
            unreadable = all(i.line == 0 and "cannot read" in i.message for i in e.issues)
            return self._refused(trigger, "unreadable" if unreadable else "invalid_config",
                                 tuple(str(i) for i in e.issues), t0)
        except OSError as e:
            return self._refused(trigger, "unreadable", (f"{source}: {e.strerror or e}",), t0)
        if not self.started or self._stopped:
            return self._refused(trigger, "not_running", ("the agent is not running",), t0)
        old = self.config
        plan = plan_reload(old, loaded)
        new = in_force(old, loaded)
        by_name = {i.name: i for i in new.vrrp_instances}
        # Prepare: everything that can fail, before anything changes.
        primaries: dict[str, IPAddress] = {}
        try:
            for name in plan.added + tuple(c.name for c in plan.restarted):
                primaries[name] = await self._source_address(by_name[name])
        except AgentError as e:
            return self._refused(trigger, "cannot_apply", (str(e),), t0)
        # Commit.
        notes = await self._apply(plan, old, new, primaries)
        self.generation += 1
        changes = plan.changes + tuple(notes)
        if plan.needs_restart:
            message = (f"applied generation {self.generation}; needs a restart to take effect: "
                       + ", ".join(plan.needs_restart))
        elif not changes:
            message = f"applied generation {self.generation}: no changes"
        else:
            message = f"applied generation {self.generation}: {len(changes)} change(s)"
        duration = time.monotonic() - t0
        self.log.info("agent.reloaded", generation=self.generation, trigger=trigger,
                      reason="applied" if changes else "unchanged",
                      unchanged=list(plan.unchanged),
                      updated=[c.name for c in plan.updated],
                      restarted=[c.name for c in plan.restarted],
                      added=list(plan.added), removed=list(plan.removed),
                      sync_groups=list(plan.sync_groups), track_scripts=list(plan.track_scripts),
                      lvs=list(plan.lvs), needs_restart=list(plan.needs_restart),
                      notes=list(notes), duration_ms=round(duration * 1000, 1))
        self.write_state()
        return ReloadResult(ok=True, generation=self.generation, message=message,
                            changes=changes, duration=duration)

    def _refused(self, trigger: str, reason: str, errors: tuple[str, ...], t0: float) -> ReloadResult:
        self.log.error("agent.reload_failed", source=self.config.source, reason=reason,
                       detail="\n".join(errors), trigger=trigger, generation=self.generation)
        return ReloadResult(ok=False, generation=self.generation,
                            message=f"reload refused ({reason.replace('_', ' ')}); "
                                    f"still running generation {self.generation}",
                            errors=errors, duration=time.monotonic() - t0)

    async def _apply(self, plan: ReloadPlan, old: Config, new: Config,
                     primaries: dict[str, IPAddress]) -> list[str]:
        """Commit a plan. Returns notes for the result (fallbacks, component errors)."""
        notes: list[str] = []
        by_name = {i.name: i for i in new.vrrp_instances}
        restart = [c.name for c in plan.restarted]
        # 1. Retire what goes away first: priority 0 lets the peer take over at once
        #    (RFC 5798 6.4.3) and a VIP leaves before another instance may add it.
        for name in plan.removed + tuple(restart):
            rt = self.runtimes[name]
            await self._retire(rt, reason="reload_removed" if name in plan.removed else "reload_restart")
            del self.runtimes[name]
            self.director.detach(name)
        self.config = new
        # 2. In place: the machine keeps state and timers (no transition, no VIP change).
        for change in plan.updated:
            rt = self.runtimes[change.name]
            inst = by_name[change.name]
            before = rt.driver.machine.effective_priority
            if rt.driver.reconfigure(inst):
                rt.instance = inst
                after = rt.driver.machine.effective_priority
                if before != after:
                    self.log.info("vrrp.priority_changed", instance=inst.name, vrid=inst.vrid,
                                  old=before, new=after, reason="reload")
                continue
            # The machine refused (it should not, given the plan): restart it instead.
            notes.append(f"vrrp_instance {change.name}: restarted (machine refused in-place update)")
            primaries[change.name] = rt.driver.primary_address
            await self._retire(rt, reason="reload_restart")
            del self.runtimes[change.name]
            self.director.detach(change.name)
            restart.append(change.name)
        # 3. Sync groups: rebuilt only where membership changed; seeded with live states.
        self.director.reconfigure(new, now=asyncio.get_running_loop().time(), faults={
            name: rt.driver.machine.faults for name, rt in self.runtimes.items()})
        self._execute()
        # 4. New drivers (not started: trackers report first, as at start-up).
        created = [n for n in by_name if n not in self.runtimes]
        for name in created:
            self.runtimes[name] = self._new_runtime(by_name[name], primaries[name])
        # Insertion order = config order, for status and state.json.
        self.runtimes = {n: self.runtimes[n] for n in by_name}
        for name, rt in self.runtimes.items():
            rt.driver.machine.sync_group = self.director.in_sync_group(name)
        # 5. Trackers.
        await self._reload_interface_tracker(old, new, set(created))
        await self._reload_script_tracker(old, new, set(created))
        # 6. Start the new machines.
        for name in created:
            self.runtimes[name].driver.start()
        # 7. Components (LVS): level-triggered, an unchanged config writes nothing.
        for comp in self.components:
            update = getattr(comp, "update_config", None)
            if update is None:
                continue
            try:
                res = update(new)
                if inspect.isawaitable(res):
                    res = await res
            except Exception as e:  # noqa: BLE001 - VRRP is applied; report, keep going
                self.log.error("agent.component_reload_failed", component=type(comp).__name__,
                               reason=str(e))
                notes.append(f"{type(comp).__name__}: update failed: {e}")
                continue
            writes = len(getattr(res, "applied", ()) or ())
            if writes:
                notes.append(f"{type(comp).__name__}: {writes} kernel write(s)")
        return notes

    async def _retire(self, rt: InstanceRuntime, reason: str) -> None:
        """Graceful end of one instance: priority 0 if master, VIPs released, socket closed."""
        rt.driver.shutdown()
        if rt.worker is not None:
            rt.worker.cancel()
            await asyncio.gather(rt.worker, return_exceptions=True)
        await self._remove_vips(rt, reason=reason)
        rt.driver.close()

    async def _reload_interface_tracker(self, old: Config, new: Config, created: set[str]) -> None:
        old_b, new_b = interface_bindings(old.vrrp_instances), interface_bindings(new.vrrp_instances)
        if old_b == new_b and not created and self._iface_tracker is not None:
            return
        # Effects of bindings that are gone (or changed weight) are withdrawn; the new
        # tracker reads every link again and reports what holds now (idempotent).
        for ifname, binds in old_b.items():
            for b in binds:
                if b.instance in created or b.instance not in self.runtimes:
                    continue
                if b in new_b.get(ifname, []):
                    continue
                reason = f"track_interface:{ifname}"
                if b.weight == 0:
                    self.set_fault(b.instance, False, reason)
                else:
                    self.set_priority_delta(b.instance, 0, reason)
        totals = None
        if self._iface_tracker is not None:
            await self._iface_tracker.stop()
            totals = self._iface_tracker.totals      # counters outlive the tracker
        self._iface_tracker = InterfaceTracker(new.vrrp_instances, self, addresses=self.addresses,
                                               watcher_factory=self._link_watcher_factory,
                                               totals=totals)
        await self._iface_tracker.start()

    async def _reload_script_tracker(self, old: Config, new: Config, created: set[str]) -> None:
        def used(config: Config) -> tuple[dict, dict]:
            users: dict[str, list[str]] = {}
            for inst in config.vrrp_instances:
                for name in inst.track_scripts:
                    users.setdefault(name, []).append(inst.name)
            return {s.name: s for s in config.track_scripts if s.name in users}, users

        old_s, old_users = used(old)
        new_s, new_users = used(new)
        touched = any(i in created for users in new_users.values() for i in users)
        tracker = self._script_tracker
        if old_s == new_s and old_users == new_users and not touched and tracker is not None:
            return
        kept = {n for n in new_s if old_s.get(n) == new_s[n]}
        for name, script in old_s.items():
            for inst in old_users[name]:
                if inst in created or inst not in self.runtimes:
                    continue
                if name in kept and inst in new_users.get(name, []):
                    continue
                reason = f"track_script:{name}"
                if script.weight == 0:
                    self.set_fault(inst, False, reason)
                else:
                    self.set_priority_delta(inst, 0, reason)
        if tracker is not None:
            await tracker.stop()
        fresh = ScriptTracker(new.track_scripts, new.vrrp_instances, self)
        for name in kept:
            if tracker is None or name not in tracker.health:
                continue
            # An unchanged script keeps its rise/fall state; new users get its verdict now.
            fresh.health[name] = tracker.health[name]
            targets = [i for i in new_users[name]
                       if i in created or i not in old_users.get(name, [])]
            apply_script(self, targets, new_s[name], fresh.health[name].state)
        self._script_tracker = fresh
        fresh.start()

    async def _refresh_state_loop(self) -> None:
        """Rejected packets change no state, so nothing else rewrites state.json for
        them: write it at most once per STATE_REFRESH while reject counters move."""
        written = self._reject_counts()
        while True:
            await asyncio.sleep(STATE_REFRESH)
            counts = self._reject_counts()
            if counts != written:
                written = counts
                self.write_state()

    def _reject_counts(self) -> tuple:
        return tuple((name, tuple(sorted(rt.driver.rejected.items())))
                     for name, rt in self.runtimes.items())

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.systemd.watchdog()
            await asyncio.sleep(interval)

    # --- start-up helpers -----------------------------------------------------------------

    def _new_runtime(self, inst: VrrpInstance, primary: IPAddress) -> InstanceRuntime:
        loop = asyncio.get_running_loop()
        driver = VrrpDriver(inst, transport=self._transport_factory(inst), primary_address=primary,
                            on_role_changed=self._role_changed,
                            on_view_changed=lambda _d: self.write_state(),
                            on_master_wish=self._master_wish,
                            on_reannounce=self._reannounce,
                            sync_group=self.director.in_sync_group(inst.name), loop=loop)
        rt = InstanceRuntime(inst, driver)
        self.director.attach(inst.name, driver.state)
        rt.worker = loop.create_task(self._vip_worker(rt), name=f"vips:{inst.name}")
        return rt

    async def _source_address(self, inst: VrrpInstance) -> IPAddress:
        if inst.unicast_src is not None:
            return inst.unicast_src
        vips = tuple(v.ip for v in inst.virtual_ips)
        try:
            addr = await self.addresses.primary_address(inst.interface, inst.family, exclude=vips)
        except Exception as e:
            raise AgentError(f"instance {inst.name}: interface {inst.interface}: {e}",
                             reason="interface_unusable") from e
        if addr is None:
            kind = "IPv4" if inst.family == 4 else "link-local IPv6"
            raise AgentError(f"instance {inst.name}: interface {inst.interface} has no {kind} "
                             "address to send adverts from (RFC 5798 5.1.1.1 / 5.1.2.1)",
                             reason="no_source_address")
        return addr

    async def _release_stale_vips(self, instances) -> None:
        for inst in instances:
            if inst.priority == PRIORITY_OWNER:
                continue
            for vip in inst.virtual_ips:
                if await self.addresses.remove_vip(inst.interface, vip):
                    self.log.warning("vrrp.stale_vip_removed", instance=inst.name, vrid=inst.vrid,
                                     vip=str(vip), interface=inst.interface,
                                     reason="left_by_previous_agent")

    # --- the director core's inputs and effects ----------------------------------------

    def _role_changed(self, driver: VrrpDriver, change: RoleChanged) -> None:
        self.director.role_changed(driver.instance.name, change,
                                   priority=driver.machine.effective_priority, now=driver.loop.time())
        self._execute()

    def _master_wish(self, driver: VrrpDriver, wish) -> None:
        self.director.master_wish(driver.instance.name, wish, now=driver.loop.time())
        self._execute()

    def _reannounce(self, driver: VrrpDriver, action) -> None:
        """A lower-priority master was heard (vrrp ``Reannounce``)."""
        self.director.reannounce(driver.instance.name, now=driver.loop.time())
        self._execute()

    def set_fault(self, instance: str, fault: bool, reason: str) -> None:     # TrackSink
        self.director.set_fault(instance, fault, reason, now=_loop_time() or 0.0)
        self._execute()

    def set_priority_delta(self, instance: str, delta: int, reason: str) -> None:  # TrackSink
        self.director.set_priority_delta(instance, delta, reason, now=_loop_time() or 0.0)
        self._execute()

    def _execute(self) -> None:
        """Run the director's pending effects in order. An order applied to a machine
        (ForceState, SetFault) may change its role, which comes back through
        ``_role_changed`` and runs that member's effects first (nested), as keepalived
        does within one sync-group transition."""
        for effect in self.director.effects():
            self._run(effect)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """One ``call_at`` at the core's next deadline (aioquic's ``transmit()``)."""
        deadline = None if self._stopped else self.director.next_deadline()
        self._timer = rearm(asyncio.get_running_loop(), self._timer, deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        deadline = self.director.next_deadline()
        # asyncio may run a handle up to one clock resolution early.
        if deadline is not None and now < deadline and deadline - now < 0.001:
            now = deadline
        self.director.handle_timer(now)
        self._execute()

    def _run(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.RecordStatus):
            self.write_state()
        elif isinstance(effect, fx.Notify):
            self.notifier_safe(effect.kind, effect.name, effect.state, effect.priority, effect.scripts)
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
                if not self._take_vips_now(rt):
                    self.director.vips_deferred(effect.instance, now=rt.driver.loop.time())
                rt.wake.set()
            elif isinstance(effect, fx.RemoveVips):
                rt.want_vips = False
                rt.wake.set()
            elif isinstance(effect, fx.Announce):
                if rt.inline_added or not effect.inline:
                    self._announce(rt, effect)
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
        for sub in list(self.on_role_changed):
            try:
                res = sub(event)
                if inspect.isawaitable(res):
                    self._spawn(res, f"subscriber:{effect.instance}")
            except Exception as e:  # noqa: BLE001 - one subscriber must not break VRRP
                self.log.error("agent.subscriber_failed", instance=effect.instance, reason=str(e))

    def notifier_safe(self, kind, name, state, priority, scripts) -> None:
        try:
            self.notifier.state_changed(kind, name, state, priority, scripts)
        except Exception as e:  # noqa: BLE001
            self.log.error("notify.start_failed", name=name, reason=str(e))

    def _set_priority_delta(self, rt: InstanceRuntime, effect: fx.SetPriorityDelta) -> None:
        before = rt.driver.machine.effective_priority
        rt.driver.set_priority_delta(effect.delta, effect.reason)
        after = rt.driver.machine.effective_priority
        if before != after:
            self.log.info("vrrp.priority_changed", instance=effect.instance, vrid=rt.instance.vrid,
                          old=before, new=after, reason=effect.reason, delta=effect.delta)
            self.write_state()

    # --- VIPs and GARP ---------------------------------------------------------------------

    async def _vip_worker(self, rt: InstanceRuntime) -> None:
        while True:
            await rt.wake.wait()
            rt.wake.clear()
            want = rt.want_vips
            try:
                if want:
                    if not rt.held_vips:      # normally added already, with the advert
                        self._add_vips(rt)
                        self.write_state()
                        self.director.vips_added(rt.instance.name, now=rt.driver.loop.time())
                        self._execute()
                else:
                    await self._remove_vips(rt, reason=rt.driver.machine.last_reason)
            except Exception as e:  # noqa: BLE001 - retry instead of dying with VIPs wrong
                self.log.error("vrrp.vips_apply_failed", instance=rt.instance.name,
                               vrid=rt.instance.vrid, want=want, reason=str(e))
                await asyncio.sleep(1.0)
                rt.wake.set()

    def _take_vips_now(self, rt: InstanceRuntime) -> bool:
        """Become reachable in the same loop turn as the first master advert: add the
        VIPs (``AddVips``); the inline ``Announce`` that follows sends one gratuitous
        ARP / NA round (RFC 5798 6.4.1/6.4.2) if they were added. False: the add failed
        and the worker's retrying path adds."""
        inst = rt.instance
        rt.inline_added = False
        if not inst.virtual_ips:
            return True
        try:
            self._add_vips(rt)
        except Exception as e:  # noqa: BLE001 - the worker retries
            self.log.warning("vrrp.vips_add_deferred", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, reason=str(e))
            return False
        rt.inline_added = True
        return True

    def _add_vips(self, rt: InstanceRuntime) -> None:
        """Add every VIP (one blocking netlink request each); raises on a refusal."""
        inst = rt.instance
        if inst.priority != PRIORITY_OWNER:            # an owner's VIP is its own address
            self._record_vips(rt, inst.virtual_ips)    # first: a kill in between leaves none unrecorded
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
        self._record_vips()         # exactly what we added: those already there are not ours
        if added:
            self.log.info("vrrp.vips_added", instance=inst.name, vrid=inst.vrid,
                          interface=inst.interface, vips=added, reason="became_master")
        if foreign:
            # Start-up released every stale VIP, so someone else put it there.
            self.log.warning("vrrp.vips_already_present", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, vips=foreign,
                             reason="not_added_by_this_agent")

    async def _remove_vips(self, rt: InstanceRuntime, reason: str) -> None:
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
        self._record_vips()
        if removed:
            self.log.info("vrrp.vips_removed", instance=inst.name, vrid=inst.vrid,
                          interface=inst.interface, vips=removed, reason=reason or "left_master")
        if rt.foreign_vips:
            self.log.warning("vrrp.vips_left_in_place", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, vips=sorted(map(str, rt.foreign_vips)),
                             reason="not_added_by_this_agent")
            rt.foreign_vips.clear()
        self.write_state()

    def _record_vips(self, rt: InstanceRuntime | None = None, pending=()) -> None:
        """Rewrite ``vip_record``: every instance's ``added_vips``, plus ``pending`` of
        ``rt`` about to be added (a no-op when nothing changed)."""
        if self.vip_record is None:
            return
        from hadirector.agent.vip_record import RecordedVip

        index: dict[str, int] = {}

        def entry(r: InstanceRuntime, vip) -> RecordedVip:
            name = r.instance.interface
            if name not in index:
                try:
                    index[name] = socket.if_nametoindex(name)
                except OSError:
                    index[name] = 0
            return RecordedVip(name, index[name], str(vip), r.instance.name, r.instance.vrid)

        vips = [entry(r, v) for r in self.runtimes.values() for v in r.added_vips]
        if rt is not None:
            vips += [entry(rt, v) for v in pending]
        try:
            self.vip_record.write(vips)
        except OSError as e:
            self.log.warning("vrrp.vip_record_failed", path=self.vip_record.path, reason=str(e))

    def _announcer(self, interface: str):
        ann = self._announcers.get(interface)
        if ann is None:
            ann = self._announcers[interface] = self._announcer_factory(interface)
        return ann

    def _announce(self, rt: InstanceRuntime, effect: fx.Announce) -> None:
        """One GARP / NA round; the burst is logged once, after its last round."""
        inst = rt.instance
        try:
            sent = self._announcer(inst.interface).announce([v.ip for v in inst.virtual_ips])
        except OSError as e:
            self.log.warning("vrrp.garp_failed", instance=inst.name, vrid=inst.vrid,
                             interface=inst.interface, reason=str(e))
            rt.burst_packets.pop(effect.reason, None)
            self.director.announce_failed(effect, now=rt.driver.loop.time())
            return
        rt.garp_sent += sent
        packets = rt.burst_packets.pop(effect.reason, 0) + sent
        if effect.round < effect.rounds - 1:
            rt.burst_packets[effect.reason] = packets
            return
        self.log.info("vrrp.garp_sent", instance=inst.name, vrid=inst.vrid,
                      interface=inst.interface, packets=packets, reason=effect.reason)

    # --- state ---------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """state.json: a view of the status snapshot's VRRP part (api.snapshot.state_file)."""
        from hadirector.agent.status import vrrp_snapshot
        from hadirector.api.snapshot import state_file

        return state_file(vrrp_snapshot(self))

    def link_watch_counts(self) -> dict[str, int]:
        """Link watcher overruns, resyncs, resubscribes and restarts since start."""
        if self._iface_tracker is None:
            return {}
        return self._iface_tracker.counts()

    def write_state(self) -> None:
        """Atomically replace state.json (rename), so readers never see half a file."""
        try:
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            tmp = f"{self.state_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.snapshot(), f, indent=1, sort_keys=True)
            os.replace(tmp, self.state_path)
        except OSError as e:
            self.log.warning("agent.state_write_failed", path=self.state_path, reason=str(e))

    def _spawn(self, aw, name: str) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("agent.subscriber_failed", task=name, reason=str(t.exception()))
        task.add_done_callback(done)


def _label(inst: VrrpInstance, index: int) -> str | None:
    from hadirector.kernel.addresses import vip_label
    return vip_label(inst.interface, f"v{inst.vrid}") if inst.virtual_ips[index].version == 4 else None


def _loop_time() -> float | None:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return None
