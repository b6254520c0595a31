"""The node's trackers (``track.py``: track_interface and track_script) across start,
stop and reload, for the supervisor.

A reload rebuilds a tracker only where its inputs changed. The effects of bindings that
are gone (or changed weight) are withdrawn first; the new interface tracker reads every
link again and reports what holds now (idempotent); an unchanged script keeps its
rise/fall state and new users get its verdict at once. Link-watch counters outlive the
trackers they came from.
"""

from __future__ import annotations

from typing import Any, Callable, Container

from hadirector.model import Config

from .track import InterfaceTracker, ScriptTracker, TrackSink, apply_script, interface_bindings


class Trackers:
    def __init__(self, sink: TrackSink, *, addresses, running: Callable[[], Container[str]],
                 watcher_factory: Callable[[set[str]], Any] | None = None) -> None:
        self.sink = sink
        self._addresses = addresses
        self._running = running              # the instances that run now
        self._watcher_factory = watcher_factory
        self.interfaces: InterfaceTracker | None = None
        self.scripts: ScriptTracker | None = None

    async def start_interfaces(self, config: Config) -> None:
        # Before the machines start: a link that is already down puts the instance
        # straight into FAULT instead of a brief BACKUP -> MASTER.
        self.interfaces = InterfaceTracker(config.vrrp_instances, self.sink, addresses=self._addresses,
                                           watcher_factory=self._watcher_factory)
        await self.interfaces.start()

    def start_scripts(self, config: Config) -> None:
        self.scripts = ScriptTracker(config.track_scripts, config.vrrp_instances, self.sink)
        self.scripts.start()

    async def stop(self) -> None:
        if self.scripts is not None:
            await self.scripts.stop()
        if self.interfaces is not None:
            await self.interfaces.stop()

    def link_watch_counts(self) -> dict[str, int]:
        """Link watcher overruns, resyncs, resubscribes and restarts since start."""
        return self.interfaces.counts() if self.interfaces is not None else {}

    async def reload(self, old: Config, new: Config, created: set[str]) -> None:
        await self._reload_interfaces(old, new, created)
        await self._reload_scripts(old, new, created)

    async def _reload_interfaces(self, old: Config, new: Config, created: set[str]) -> None:
        old_b, new_b = interface_bindings(old.vrrp_instances), interface_bindings(new.vrrp_instances)
        if old_b == new_b and not created and self.interfaces is not None:
            return
        running = self._running()
        for ifname, binds in old_b.items():
            for b in binds:
                if b.instance in created or b.instance not in running:
                    continue
                if b in new_b.get(ifname, []):
                    continue
                reason = f"track_interface:{ifname}"
                if b.weight == 0:
                    self.sink.set_fault(b.instance, False, reason)
                else:
                    self.sink.set_priority_delta(b.instance, 0, reason)
        totals = None
        if self.interfaces is not None:
            await self.interfaces.stop()
            totals = self.interfaces.totals      # counters outlive the tracker
        self.interfaces = InterfaceTracker(new.vrrp_instances, self.sink, addresses=self._addresses,
                                           watcher_factory=self._watcher_factory, totals=totals)
        await self.interfaces.start()

    async def _reload_scripts(self, old: Config, new: Config, created: set[str]) -> None:
        def used(config: Config) -> tuple[dict, dict]:
            users: dict[str, list[str]] = {}
            for inst in config.vrrp_instances:
                for name in inst.track_scripts:
                    users.setdefault(name, []).append(inst.name)
            return {s.name: s for s in config.track_scripts if s.name in users}, users

        old_s, old_users = used(old)
        new_s, new_users = used(new)
        touched = any(i in created for users in new_users.values() for i in users)
        tracker = self.scripts
        if old_s == new_s and old_users == new_users and not touched and tracker is not None:
            return
        kept = {n for n in new_s if old_s.get(n) == new_s[n]}
        running = self._running()
        for name, script in old_s.items():
            for inst in old_users[name]:
                if inst in created or inst not in running:
                    continue
                if name in kept and inst in new_users.get(name, []):
                    continue
                reason = f"track_script:{name}"
                if script.weight == 0:
                    self.sink.set_fault(inst, False, reason)
                else:
                    self.sink.set_priority_delta(inst, 0, reason)
        if tracker is not None:
            await tracker.stop()
        fresh = ScriptTracker(new.track_scripts, new.vrrp_instances, self.sink)
        for name in kept:
            if tracker is None or name not in tracker.health:
                continue
            # An unchanged script keeps its rise/fall state; new users get its verdict now.
            fresh.health[name] = tracker.health[name]
            targets = [i for i in new_users[name]
                       if i in created or i not in old_users.get(name, [])]
            apply_script(self.sink, targets, new_s[name], fresh.health[name].state)
        self.scripts = fresh
        fresh.start()
