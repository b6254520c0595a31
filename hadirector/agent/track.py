"""track_interface and track_script: turn link state and script results into faults and
priority deltas for the VRRP machines (keepalived semantics).

Theory of operation: trackers hold no VRRP policy. They report to a ``TrackSink`` (the
agent), keyed by a stable reason string, and the agent routes that to the machine —
through the sync-group policy when the instance is in a group:

* ``track_interface:<ifname>``
    weight 0: link down -> ``set_fault(True)``; link up -> ``set_fault(False)``.
    weight < 0: link down -> priority delta ``weight``; up -> 0.
    weight > 0: link up -> priority delta ``+weight``; down -> 0.
  An instance's own interface is always tracked with weight 0 (no link, no VRRP)
  unless it is listed explicitly with a weight.
* ``track_script:<name>``: the script runs every ``interval`` (argv, no shell, with a
  timeout); rise/fall is counted by ``health.policy.ServerHealth`` (the one place
  rise/fall lives). weight 0: DOWN -> fault. weight < 0: DOWN -> delta ``weight``.
  weight > 0: UP -> delta ``+weight``. Before its first result a script changes nothing.

Only transitions are reported, so a machine sees one call per change, not per check.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hadirector.model import HealthState, TrackScript, VrrpInstance

from hadirector.logging import get_logger

if TYPE_CHECKING:
    from hadirector.health.policy import ProbeResult


class TrackSink(Protocol):
    def set_fault(self, instance: str, fault: bool, reason: str) -> None: ...
    def set_priority_delta(self, instance: str, delta: int, reason: str) -> None: ...


@dataclass(frozen=True)
class Binding:
    instance: str
    weight: int


def interface_bindings(instances: tuple[VrrpInstance, ...]) -> dict[str, list[Binding]]:
    """interface name -> who tracks it with which weight (pure)."""
    out: dict[str, list[Binding]] = {}
    for inst in instances:
        explicit = {t.name: t.weight for t in inst.track_interfaces}
        explicit.setdefault(inst.interface, 0)
        for name, weight in explicit.items():
            out.setdefault(name, []).append(Binding(inst.name, weight))
    return out


def apply_link(sink: TrackSink, bindings: list[Binding], ifname: str, up: bool) -> None:
    """Report one link state to every instance tracking it (idempotent)."""
    reason = f"track_interface:{ifname}"
    for b in bindings:
        if b.weight == 0:
            sink.set_fault(b.instance, not up, reason)
        elif b.weight < 0:
            sink.set_priority_delta(b.instance, 0 if up else b.weight, reason)
        else:
            sink.set_priority_delta(b.instance, b.weight if up else 0, reason)


def apply_script(sink: TrackSink, instances: list[str], script: TrackScript, state: HealthState) -> None:
    reason = f"track_script:{script.name}"
    if state is HealthState.UNKNOWN:
        return
    up = state is HealthState.UP
    for name in instances:
        if script.weight == 0:
            sink.set_fault(name, not up, reason)
        elif script.weight < 0:
            sink.set_priority_delta(name, 0 if up else script.weight, reason)
        else:
            sink.set_priority_delta(name, script.weight if up else 0, reason)


class LinkWatchTotals:
    """Counters over every link watcher the agent has run, for status and metrics: a
    restart (or a reload) replaces the watcher, never the totals."""

    FIELDS = ("overruns", "resyncs", "resubscribes", "restarts")

    def __init__(self) -> None:
        self.overruns = self.resyncs = self.resubscribes = self.restarts = 0

    def bank(self, watcher) -> None:
        """Add a watcher's own counters (it is being dropped)."""
        for name, value in _watcher_counts(watcher).items():
            setattr(self, name, getattr(self, name) + value)


def _watcher_counts(watcher) -> dict[str, int]:
    table = getattr(watcher, "table", None)
    return {"overruns": getattr(table, "overruns", 0), "resyncs": getattr(watcher, "resyncs", 0),
            "resubscribes": getattr(watcher, "resubscribes", 0)}


class InterfaceTracker:
    """Follows RTM_NEWLINK events for every tracked interface, for the agent's whole life.

    The watcher re-subscribes by itself after socket errors and resyncs after an
    overrun; this class is the last line: if following it ends or raises for any
    reason, that is logged (``track.link_watch_failed``) and a new watcher is started
    after a short backoff, and every link is read again, so a fault or priority delta
    can never be left stale by a dead watcher (issue 9: FAULT forever after a flap)."""

    RESTART_MIN, RESTART_MAX = 0.1, 5.0   # seconds between watcher restarts
    HEALTHY_AFTER = 30.0                  # a watcher that ran this long resets the backoff

    def __init__(self, instances: tuple[VrrpInstance, ...], sink: TrackSink, log=None,
                 *, addresses=None, watcher_factory=None,
                 totals: LinkWatchTotals | None = None) -> None:
        self.bindings = interface_bindings(instances)
        self.sink = sink
        self._addresses = addresses              # AddressManager (or a fake)
        self._watcher_factory = watcher_factory  # names -> LinkWatcher (or a fake)
        self.log = log or get_logger("hadirector.track")
        self.links: dict[str, bool] = {}
        self.restarts = 0
        self.totals = totals if totals is not None else LinkWatchTotals()
        self._task: asyncio.Task | None = None
        self._watcher = None

    async def start(self) -> None:
        if not self.bindings:
            return
        if self._watcher_factory is None or self._addresses is None:
            from hadirector.kernel.addresses import AddressManager, LinkWatcher
            self._watcher_factory = self._watcher_factory or LinkWatcher
            self._addresses = self._addresses or AddressManager()
        # Subscribe first, then read the current state: a change in between is then
        # seen as an event instead of being lost.
        await self._subscribe()
        await self._read_links(initial=True)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _subscribe(self) -> None:
        watcher = self._watcher_factory(set(self.bindings))
        await watcher.__aenter__()
        self._watcher = watcher

    async def _read_links(self, initial: bool = False) -> None:
        for name in self.bindings:
            st = await self._addresses.link_state(name)
            self._update(name, st.up, initial=initial)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.RESTART_MIN
        while True:
            started = loop.time()
            try:
                if self._watcher is None:
                    await self._subscribe()
                    # Events were missed while no watcher ran: read every link again.
                    await self._read_links()
                    self.restarts += 1
                    self.totals.restarts += 1
                    self.log.info("track.link_watch_restarted", interfaces=sorted(self.bindings),
                                  reason="watcher_failed", restarts=self.restarts)
                async for st in self._watcher.events():
                    self._update(st.name, st.up)
                reason = "events_ended"         # a watcher's stream must never end
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, links must stay followed
                reason = f"{type(e).__name__}: {e}"
            if loop.time() - started >= self.HEALTHY_AFTER:
                delay = self.RESTART_MIN
            self.log.error("track.link_watch_failed", interfaces=sorted(self.bindings),
                           reason=reason, retry_in=delay)
            self._close_watcher()
            await asyncio.sleep(delay)          # a runner, not protocol code
            delay = min(delay * 2, self.RESTART_MAX)

    def _update(self, name: str, up: bool, initial: bool = False) -> None:
        if self.links.get(name) == up:
            return
        self.links[name] = up
        if not initial or not up:
            self.log.info("track.link_changed", interface=name, up=up,
                          reason="link_up" if up else "link_down")
        apply_link(self.sink, self.bindings[name], name, up)

    def counts(self) -> dict[str, int]:
        """The totals, the running watcher's counters included."""
        live = _watcher_counts(self._watcher) if self._watcher is not None else {}
        return {f: getattr(self.totals, f) + live.get(f, 0) for f in LinkWatchTotals.FIELDS}

    def _close_watcher(self) -> None:
        if self._watcher is not None:
            self.totals.bank(self._watcher)
            try:
                self._watcher.close()
            except Exception as e:  # noqa: BLE001 - a broken watcher is being dropped anyway
                self.log.warning("track.link_watch_close_failed", reason=str(e))
            self._watcher = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._close_watcher()


class ScriptTracker:
    """Runs every track_script that some instance uses, each on its own schedule."""

    def __init__(self, scripts: tuple[TrackScript, ...], instances: tuple[VrrpInstance, ...],
                 sink: TrackSink, log=None, probe=None) -> None:
        self.sink = sink
        self.log = log or get_logger("hadirector.track")
        self.users: dict[str, list[str]] = {}
        for inst in instances:
            for name in inst.track_scripts:
                self.users.setdefault(name, []).append(inst.name)
        self.scripts = {s.name: s for s in scripts if s.name in self.users}
        self.health = {}
        if self.scripts:
            # Here, not at the top: the interface tracker (this module) runs before the
            # machines start, and INIT -> BACKUP need not wait for the health package.
            from hadirector.health.policy import ServerHealth

            self.health = {
                name: ServerHealth(rise=s.rise, fall=s.fall, state=HealthState.UNKNOWN)
                for name, s in self.scripts.items()
            }
        self._probe = probe
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for script in self.scripts.values():
            self._tasks.append(loop.create_task(self._run(script)))

    async def _run(self, script: TrackScript) -> None:
        probe = self._probe
        if probe is None:
            from hadirector.health.probes import script_probe as probe
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            result = await probe(script.command, script.timeout)
            self.record(script.name, result, loop.time())
            # Start-to-start interval; a runner, not protocol code, so a sleep is fine.
            await asyncio.sleep(max(0.0, script.interval - (loop.time() - started)))

    def record(self, name: str, result: ProbeResult, now: float) -> None:
        script = self.scripts[name]
        tr = self.health[name].apply(("track_script", name), result, now)
        if tr is None:
            return
        self.log.info("track.script_changed", script=name, old=tr.old.value, new=tr.new.value,
                      reason=tr.reason, count=tr.count)
        apply_script(self.sink, self.users[name], script, tr.new)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
