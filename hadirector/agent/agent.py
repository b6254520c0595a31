"""The agent process, its supervisor: start, stop, signals and the reload commit.

Theory of operation
-------------------
``Agent(config)`` wires the node's parts and runs their life cycle; it decides nothing
about VRRP roles itself:

* ``executor.Executor`` owns one ``VrrpDriver`` per instance and runs the effects of the
  sans-IO director core (``hadirector.director.node.Director``): VIPs, GARP, sync-group
  orders, notify scripts, role subscribers, with one re-armed timer (aioquic's
  ``transmit()`` one level up). Its module docstring tells what one role change does;
* ``vips.VipPath`` is the one VIP path (ownership, the record for the next agent, GARP);
* ``trackers.Trackers`` (``track.py``) report faults and priority deltas to the
  executor, which routes them through the director core (and a sync group);
* components (the LVS side, the API) get this object as a ``vrrp_side.VrrpSide``:
  ``roles()``, ``hold_preemption()``, ``set_fault()``, ``instance_views()`` and
  ``on_role_changed``; nothing else reaches into the instance runtimes.

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
file:line message) and nothing changes; a good one's warnings are logged
(``config.warned``, as at start-up). It is diffed against the running config
(``reload.plan_reload``, pure) and applied in two phases: *prepare* (what can fail: the
source address of every new driver) touches nothing; *commit* retires removed and
restarted instances gracefully (priority 0 if master, VIPs released), updates changed
ones in place (``VrrpMachine.reconfigure``: no transition), rebuilds only the sync
groups and trackers whose inputs changed (keeping script health), starts the new
drivers and hands the config to every component with ``update_config``
(``LvsController``: minimal IPVS writes). Unchanged instances are not touched at all.
Every attempt, applied or refused, goes to each component's ``record_reload``.
``node``/``api`` changes need a restart: they are reported and not applied.

Hooks for other concerns (the integrator adds them): ``on_role_changed`` (subscribers)
and ``components`` (objects with ``async start(agent)`` / ``async stop(agent)``,
started after the drivers and stopped before them). ``snapshot()`` is the read-only
view for ``state.json``.

Start-up order: the trackers, then the components that must report before the machines
start (``components``: a host without IPVS faults the LVS side's instances, which start
straight in FAULT), then the machines, held (``VrrpMachine.hold_takeover``), then the
components the integrator left to ``build_components`` (built, and prepared, once the
machines run: importing and opening the IPVS side is a large part of an emulated
guest's start-up, and the RFC 5798 6.4.1 master-down wait runs meanwhile), then the
release. No instance becomes master before every component has been prepared.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from hadirector.model import Config, IPAddress, VrrpInstance
from hadirector.vrrp.machine import State

from . import heap
from .executor import Executor, InstanceRuntime
from .notify import Notifier
from .reloader import Reloader
from .sdnotify import SystemdNotifier
from .trackers import Trackers
from .vips import VipPath
from .vrrp_side import InstanceView, RoleEvent, RoleSubscriber

from hadirector.logging import get_logger

if TYPE_CHECKING:
    from hadirector.api.snapshot import ReloadResult

__all__ = ["Agent", "AgentError", "Component", "InstanceRuntime", "RoleEvent", "RoleSubscriber",
           "STATE_REFRESH"]

STATE_REFRESH = 1.0     # seconds: how late state.json may show reject counters


def since_exec() -> float | None:
    """Seconds since this process was exec'd (/proc/self/stat starttime, 10 ms ticks, on
    the boot-time clock): how long a (re)started director took to come up."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])          # field 22 of proc(5); the split starts at field 3
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


class AgentError(Exception):
    """The agent cannot start (no such interface, no source address ...)."""

    def __init__(self, message: str, reason: str = "start_failed") -> None:
        super().__init__(message)
        self.reason = reason            # agent.start_failed's reason=


class Component(Protocol):
    async def start(self, agent: "Agent") -> None: ...
    async def stop(self, agent: "Agent") -> None: ...


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
        self.log = log or get_logger("hadirector.agent")
        self.systemd = systemd or SystemdNotifier()
        self.notifier = Notifier()
        self.on_role_changed: list[RoleSubscriber] = []
        self.components: list[Component] = []
        # Components built once the machines run (see "Start-up order"); None: all are
        # in ``components`` already.
        self.build_components: Callable[[], list[Component]] | None = None
        # write_state late-bound: tests (and a future state view) may replace it.
        self.vips = VipPath(log=self.log, addresses=addresses, announcer_factory=announcer_factory,
                            vip_record=vip_record, write_state=lambda: self._record_status())
        self.executor = Executor(config, log=self.log, vips=self.vips, notifier=self.notifier,
                                 subscribers=self.on_role_changed, write_state=lambda: self._record_status(),
                                 spawn=self._spawn, transport_factory=transport_factory)
        self.trackers = Trackers(self.executor, addresses=self.vips.addresses,
                                 running=lambda: self.executor.runtimes.keys(),
                                 watcher_factory=link_watcher_factory)
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._watchdog: asyncio.Task | None = None
        self.started = False
        self._stopped = False
        self._settled = asyncio.Event()     # set once started, or stopping: a reload waits for it
        # state.json is written from the machines' start on (see _record_status).
        self._writes_state = False
        self.state_path = os.path.join(config.node.state_dir, "state.json")
        self.generation = 1                 # +1 per applied reload
        self.reloader = Reloader(self)

    @property
    def runtimes(self) -> dict[str, InstanceRuntime]:
        """The executor's instance runtimes (the VRRP shell's own; tests read them)."""
        return self.executor.runtimes

    @property
    def addresses(self):
        return self.vips.addresses

    @property
    def vip_record(self):
        """vip_record.VipRecord: the VIPs we added, for the next agent after a kill -9."""
        return self.vips.vip_record

    @vip_record.setter
    def vip_record(self, record) -> None:
        self.vips.vip_record = record

    # --- vrrp_side.VrrpSide: what components may ask -----------------------------------

    def roles(self) -> dict[str, State]:
        return self.executor.roles()

    def hold_preemption(self, instance: str, seconds: float) -> None:
        self.executor.hold_preemption(instance, seconds)

    def set_fault(self, instance: str, fault: bool, reason: str) -> None:     # TrackSink too
        self.executor.set_fault(instance, fault, reason)

    def set_priority_delta(self, instance: str, delta: int, reason: str) -> None:  # TrackSink
        self.executor.set_priority_delta(instance, delta, reason)

    def instance_views(self) -> tuple[InstanceView, ...]:
        return self.executor.instance_views()

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
        await self.vips.release_stale(instances)
        for inst in instances:
            self.executor.add(inst, primaries[inst.name])
        # Trackers before the machines start: a link that is already down puts the
        # instance straight into FAULT instead of a brief BACKUP -> MASTER.
        await self.trackers.start_interfaces(self.config)
        # Components that can fault instances (the LVS side: no IPVS) report before the
        # machines start too; ``start`` follows once the machines run.
        self._prepare_components()
        runtimes = list(self.executor.runtimes.values())
        self._writes_state = True
        for rt in runtimes:
            rt.driver.hold_takeover(True)
            rt.driver.start()
        if self.build_components is not None:
            build, self.build_components = self.build_components, None
            self.components.extend(build())
            self._prepare_components()
        for rt in runtimes:
            rt.driver.hold_takeover(False)
        self.trackers.start_scripts(self.config)
        for comp in self.components:
            await comp.start(self)
        self.started = True
        self._settled.set()
        heap.settle()        # what the config built lives on: out of the GC's full passes
        self.write_state()
        self._spawn(self._refresh_state_loop(), "state_refresh")
        self.systemd.ready(status=f"{len(self.executor.runtimes)} VRRP instance(s)")
        if self.systemd.watchdog_interval:
            self._watchdog = loop.create_task(self._watchdog_loop(self.systemd.watchdog_interval))
        import hadirector

        self.log.info("agent.started", version=hadirector.__version__, instances=[i.name for i in instances],
                      router_id=self.config.node.router_id, pid=os.getpid(), startup_s=since_exec())

    def _prepare_components(self) -> None:
        for comp in self.components:
            prepare = getattr(comp, "prepare", None)
            if prepare is not None:
                prepare(self)            # idempotent

    async def stop(self) -> None:
        if self._stopped or (not self.executor.runtimes and not self.started):
            return
        self._stopped = True
        self._settled.set()
        self._writes_state = True
        self.executor.stopping()
        self.systemd.stopping()
        self.log.info("agent.stopping", reason=self._stop_reason or "stop")
        # A reload in flight finishes first (it may be starting drivers), unless it is
        # still reading the file: that read ends now. Later ones are refused
        # (not_running). Bounded: a stuck reload must not block the stop.
        self.reloader.stop_reading()
        try:
            await asyncio.wait_for(self.reloader.lock.acquire(), 30)
        except asyncio.TimeoutError:
            self.log.error("agent.reload_lock_timeout", reason="stopping_anyway")
        # Priority 0 first (RFC 5798 6.4.3), then the VIPs (Executor.shutdown).
        # Subscribers (the LVS side) no longer hear role changes from here on.
        await self.executor.shutdown()
        # Then trackers and components (health checks, sync daemons, IPVS, API).
        await self.trackers.stop()
        for comp in reversed(self.components):
            try:
                await comp.stop(self)
            except Exception as e:  # noqa: BLE001 - one component must not stop the rest
                self.log.error("agent.component_stop_failed", component=repr(comp), reason=str(e))
        for rt in self.executor.runtimes.values():
            rt.driver.close()
        self.vips.close_announcers()
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
        heap.release()
        self.log.info("agent.stopped", reason=self._stop_reason or "stop")

    def reload(self, trigger: str = "sighup") -> asyncio.Task:
        """SIGHUP: run ``reload_async`` as a task (a signal handler cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload_async(trigger=trigger),
                                                      name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reload_async(self, trigger: str = "api") -> ReloadResult:
        """Re-read ``config.source``; refuse it (nothing changes) or apply it as a diff
        (``reloader.Reloader``). One reload at a time."""
        return await self.reloader.reload_async(trigger)

    async def _refresh_state_loop(self) -> None:
        """Rejected packets change no state, so nothing else rewrites state.json for
        them: write it at most once per STATE_REFRESH while reject counters move."""
        written = self.executor.reject_counts()
        while True:
            await asyncio.sleep(STATE_REFRESH)
            counts = self.executor.reject_counts()
            if counts != written:
                written = counts
                self.write_state()

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.systemd.watchdog()
            await asyncio.sleep(interval)

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

    # --- state ---------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """state.json: a view of the status snapshot's VRRP part (api.snapshot.state_file)."""
        from hadirector.agent.status import vrrp_snapshot
        from hadirector.api.snapshot import state_file

        return state_file(vrrp_snapshot(self))

    def group_states(self) -> dict[str, str]:
        """Each sync group's last reported state, by name (for the status snapshot)."""
        return self.executor.director.group_states()

    def link_watch_counts(self) -> dict[str, int]:
        """Link watcher overruns, resyncs, resubscribes and restarts since start."""
        return self.trackers.link_watch_counts()

    def _record_status(self) -> None:
        """The executor's and the VIP path's state.json writes. None before the machines
        start: every instance is INIT until then, and the first write imports the status
        model (~15 % of start-up), which would delay the INIT -> BACKUP transition (a
        link tracker's first reading asks for one)."""
        if self._writes_state:
            self.write_state()

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
