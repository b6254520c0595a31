"""The reload of a running agent, for the supervisor (``agent.Agent.reload_async``).

Read the file off the loop (``config.worker``: a child process, so the VRRP drivers keep
sending adverts), refuse a bad one with its file:line message and change nothing, log a
good one's warnings (``config.warned``, as at start-up), diff it (``reload.plan_reload``,
pure) and apply it in two phases: *prepare* (what can fail: the source address of every
new driver) touches nothing; *commit* (``_apply``) retires, updates in place, rebuilds
sync groups and trackers where their inputs changed, starts new drivers and hands the
config to the components. One reload at a time (``lock``; the stop waits for it too,
after ending a read in progress: ``stop_reading``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import TYPE_CHECKING

from hadirector.model import Config, IPAddress

from . import heap

if TYPE_CHECKING:
    from hadirector.api.snapshot import ReloadResult

    from .agent import Agent
    from .reload import ReloadPlan


class Reloader:
    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.lock = asyncio.Lock()
        self._stop_reading = threading.Event()   # read by the reader's thread

    def stop_reading(self) -> None:
        """End a read in progress and any later one: the agent is stopping, and its
        priority-0 adverts must not wait for a slow file (the reload is refused)."""
        self._stop_reading.set()

    async def reload_async(self, trigger: str = "api") -> ReloadResult:
        """Re-read ``config.source``; refuse it (nothing changes) or apply it as a diff.

        One reload at a time: a second request waits, then reads the file again.
        """
        from hadirector.api.snapshot import ReloadResult

        agent = self.agent
        if agent._stopped:
            return self._refused(trigger, "not_running", ("the agent is stopping",), time.monotonic())
        async with self.lock:
            t0 = time.monotonic()
            try:
                result = await self._reload(trigger, t0)
            except Exception as e:  # noqa: BLE001 - a reload bug must not kill the director
                agent.log.exception("agent.reload_failed", source=agent.config.source,
                                    reason="apply_crashed", detail=f"{type(e).__name__}: {e}",
                                    trigger=trigger)
                result = ReloadResult(ok=False, generation=agent.generation,
                                      message=f"reload crashed while applying: {type(e).__name__}: {e}",
                                      errors=(f"{type(e).__name__}: {e}",),
                                      duration=time.monotonic() - t0)
            for comp in agent.components:
                record = getattr(comp, "record_reload", None)
                if record is not None:
                    try:
                        record(result)
                    except Exception as e:  # noqa: BLE001
                        agent.log.error("agent.component_reload_failed", component=repr(comp),
                                        reason=str(e))
            return result

    async def _reload(self, trigger: str, t0: float) -> ReloadResult:
        from hadirector.api.snapshot import ReloadResult

        from hadirector.config import ConfigError
        from hadirector.config.worker import ReadCancelled, load_in_worker

        from .agent import AgentError

        agent = self.agent
        source = agent.config.source
        try:
            # Off the loop and out of our GIL: reading is bounded (config.compose) but
            # not free, and the VRRP drivers must keep sending adverts meanwhile.
            loaded, warnings = await asyncio.to_thread(load_in_worker, source, cancel=self._stop_reading)
        except ReadCancelled:
            return self._refused(trigger, "not_running", ("the agent is stopping",), t0)
        except ConfigError as e:
            # The loader reports a file it cannot read as an issue at line 0.
            unreadable = all(i.line == 0 and "cannot read" in i.message for i in e.issues)
            return self._refused(trigger, "unreadable" if unreadable else "invalid_config",
                                 tuple(str(i) for i in e.issues), t0)
        except OSError as e:
            return self._refused(trigger, "unreadable", (f"{source}: {e.strerror or e}",), t0)
        for w in warnings:      # valid, so applied; as at start-up (agent/cli.py)
            agent.log.warning("config.warned", file=w.source, line=w.line, column=w.column, key=w.path,
                              detail=w.message, reason="config_warning")
        if not agent.started and not agent._stopped:
            # A SIGHUP while the components still start (seconds on a loaded or emulated
            # machine, after the election) is applied once they have, not refused and lost.
            agent.log.info("agent.reload_deferred", reason="starting", trigger=trigger)
            await agent._settled.wait()
        if not agent.started or agent._stopped:
            return self._refused(trigger, "not_running", ("the agent is not running",), t0)
        old = agent.config
        # Imported on the first reload: start-up (INIT -> BACKUP) need not wait for it.
        from .reload import in_force, plan_reload

        plan = plan_reload(old, loaded)
        new = in_force(old, loaded)
        by_name = {i.name: i for i in new.vrrp_instances}
        # Prepare: everything that can fail, before anything changes.
        primaries: dict[str, IPAddress] = {}
        try:
            for name in plan.added + tuple(c.name for c in plan.restarted):
                primaries[name] = await agent._source_address(by_name[name])
        except AgentError as e:
            return self._refused(trigger, "cannot_apply", (str(e),), t0)
        # Commit.
        notes = await self._apply(plan, old, new, primaries)
        agent.generation += 1
        changes = plan.changes + tuple(notes)
        if plan.needs_restart:
            message = (f"applied generation {agent.generation}; needs a restart to take effect: "
                       + ", ".join(plan.needs_restart))
        elif not changes:
            message = f"applied generation {agent.generation}: no changes"
        else:
            message = f"applied generation {agent.generation}: {len(changes)} change(s)"
        duration = time.monotonic() - t0
        agent.log.info("agent.reloaded", generation=agent.generation, trigger=trigger,
                       reason="applied" if changes else "unchanged",
                       unchanged=list(plan.unchanged),
                       updated=[c.name for c in plan.updated],
                       restarted=[c.name for c in plan.restarted],
                       added=list(plan.added), removed=list(plan.removed),
                       sync_groups=list(plan.sync_groups), track_scripts=list(plan.track_scripts),
                       lvs=list(plan.lvs), needs_restart=list(plan.needs_restart),
                       notes=list(notes), duration_ms=round(duration * 1000, 1))
        agent.write_state()
        heap.settle()
        return ReloadResult(ok=True, generation=agent.generation, message=message,
                            changes=changes, duration=duration)

    def _refused(self, trigger: str, reason: str, errors: tuple[str, ...], t0: float) -> ReloadResult:
        from hadirector.api.snapshot import ReloadResult

        agent = self.agent
        agent.log.error("agent.reload_failed", source=agent.config.source, reason=reason,
                        detail="\n".join(errors), trigger=trigger, generation=agent.generation)
        return ReloadResult(ok=False, generation=agent.generation,
                            message=f"reload refused ({reason.replace('_', ' ')}); "
                                    f"still running generation {agent.generation}",
                            errors=errors, duration=time.monotonic() - t0)

    async def _apply(self, plan: ReloadPlan, old: Config, new: Config,
                     primaries: dict[str, IPAddress]) -> list[str]:
        """Commit a plan. Returns notes for the result (fallbacks, component errors)."""
        notes: list[str] = []
        by_name = {i.name: i for i in new.vrrp_instances}
        restart = [c.name for c in plan.restarted]
        agent, ex = self.agent, self.agent.executor
        # 1. Retire what goes away first: priority 0 lets the peer take over at once
        #    (RFC 5798 6.4.3) and a VIP leaves before another instance may add it.
        for name in plan.removed + tuple(restart):
            await ex.retire(name, reason="reload_removed" if name in plan.removed else "reload_restart")
        agent.config = new
        # 2. In place: the machine keeps state and timers (no transition, no VIP change).
        for change in plan.updated:
            rt = ex.runtimes[change.name]
            inst = by_name[change.name]
            before = rt.driver.machine.effective_priority
            if rt.driver.reconfigure(inst):
                rt.instance = inst
                after = rt.driver.machine.effective_priority
                if before != after:
                    agent.log.info("vrrp.priority_changed", instance=inst.name, vrid=inst.vrid,
                                   old=before, new=after, reason="reload")
                continue
            # The machine refused (it should not, given the plan): restart it instead.
            notes.append(f"vrrp_instance {change.name}: restarted (machine refused in-place update)")
            primaries[change.name] = rt.driver.primary_address
            await ex.retire(change.name, reason="reload_restart")
            restart.append(change.name)
        # 3. Sync groups: rebuilt only where membership changed; seeded with live states.
        ex.reconfigure(new)
        # 4. New drivers (not started: trackers report first, as at start-up).
        created = [n for n in by_name if n not in ex.runtimes]
        for name in created:
            ex.add(by_name[name], primaries[name])
        # Insertion order = config order, for status and state.json.
        ordered = {n: ex.runtimes[n] for n in by_name}
        ex.runtimes.clear()
        ex.runtimes.update(ordered)
        for name, rt in ex.runtimes.items():
            rt.driver.machine.sync_group = ex.director.in_sync_group(name)
        # 5. Trackers.
        await agent.trackers.reload(old, new, set(created))
        # 6. Start the new machines.
        for name in created:
            ex.runtimes[name].driver.start()
        # 7. Components (LVS): level-triggered, an unchanged config writes nothing.
        for comp in agent.components:
            update = getattr(comp, "update_config", None)
            if update is None:
                continue
            try:
                res = update(new)
                if inspect.isawaitable(res):
                    res = await res
            except Exception as e:  # noqa: BLE001 - VRRP is applied; report, keep going
                agent.log.error("agent.component_reload_failed", component=type(comp).__name__,
                                reason=str(e))
                notes.append(f"{type(comp).__name__}: update failed: {e}")
                continue
            writes = len(getattr(res, "applied", ()) or ())
            if writes:
                notes.append(f"{type(comp).__name__}: {writes} kernel write(s)")
        return notes
