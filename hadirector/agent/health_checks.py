"""The health runner's lifecycle on the LVS side: built only when there is something to
check, started and stopped with the controller, and built by the reload that adds the
first virtual service.

``HealthChecks.runner`` is the ``HealthRunner`` (None on a VRRP-only node: no virtual
services, no checks, and the status shows no rows). ``ipvs_health`` / ``ipvs_weight``
are the views ``ipvs.table.desired_table`` reads; without a runner every server is
UNKNOWN, which the table never programs (and never asks: there are no services).
The runner's module (with every probe) is imported only when a runner is built: a
VRRP-only agent never pays for it (tests/unit/test_startup_imports.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

import structlog

from hadirector import model
from hadirector.model import HealthState

if TYPE_CHECKING:
    from hadirector.agent.health_runner import HealthRunner

log = structlog.get_logger("hadirector.health")


def runner_for(config: model.Config, on_transition: Callable[..., None] | None = None,
               options: dict[str, Any] | None = None) -> HealthRunner:
    """The runner of ``config``'s ``health.engine``: the asyncio ``HealthRunner``, or
    the ``WorkerHealthRunner`` (TCP and plain HTTP in a checker worker process)."""
    if config.health.engine is model.HealthEngine.WORKER:
        from hadirector.agent.health_worker import WorkerHealthRunner as runner
    else:
        from hadirector.agent.health_runner import HealthRunner as runner
    return runner(config, on_transition=on_transition, **(options or {}))


class HealthChecks:
    def __init__(self, config: model.Config, on_transition: Callable[..., None],
                 options: dict[str, Any]) -> None:
        """``options`` go to ``HealthRunner`` (tests pass ``probe=`` and clocks)."""
        self._on_transition = on_transition
        self._options = options
        self._started = False
        self._start_task: asyncio.Task | None = None
        self.runner: HealthRunner | None = None
        if config.virtual_services:
            self.runner = runner_for(config, on_transition, options)

    async def start(self) -> None:
        self._started = True
        if self.runner is not None:
            await self.runner.start()

    def update_config(self, new: model.Config) -> None:
        """Unchanged checks keep their state (``HealthRunner.update_config``); the first
        virtual service of a reload builds the runner, and starts it if we run."""
        if self.runner is not None:
            if new.health.engine is not self.runner.config.health.engine:
                # Moving checks between engines would restart their counts: not on a reload.
                log.warning("health.engine_kept", engine=self.runner.config.health.engine.value,
                            wanted=new.health.engine.value, reason="restart_required")
            self.runner.update_config(new)
        elif new.virtual_services:
            self.runner = runner_for(new, self._on_transition, self._options)
            if self._started:
                # HealthRunner.start only arms its timer: it runs before any check is due.
                self._start_task = asyncio.get_running_loop().create_task(
                    self.runner.start(), name="health_start")

    async def stop(self) -> None:
        self._started = False
        if self._start_task is not None:
            await self._start_task         # a stop right after the reload: not left running
            self._start_task = None
        if self.runner is not None:
            await self.runner.stop()

    def seed(self, service_key: tuple, rs_key: tuple, state: HealthState) -> bool:
        return self.runner.seed(service_key, rs_key, state) if self.runner is not None else False

    def ipvs_health(self, vs: model.VirtualService, rs: model.RealServer) -> HealthState:
        # No runner: no virtual services, so never asked; UNKNOWN is "not programmed".
        return self.runner.ipvs_health(vs, rs) if self.runner is not None else HealthState.UNKNOWN

    def ipvs_weight(self, vs: model.VirtualService, rs: model.RealServer) -> int | None:
        return self.runner.ipvs_weight(vs, rs) if self.runner is not None else None
