"""The agent's status/metrics API and root-only control socket, as an agent component.

Kept apart from ``status`` (which builds the snapshot) so that constructing it imports
nothing heavy: on a host without IPVS the agent builds its components before the VRRP
machines start, and elsewhere before any takeover (agent.py, "Start-up order"); a
restarted director must reach its first master-down timer, and then master, as fast
as it can.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hadirector.api import snapshot as s


class ApiComponent:
    """Agent component that serves /status, /metrics and /healthz over HTTP and reload
    over the root-only control socket (``<state_dir>/control.sock``).

    At start it raises the soft descriptor limit to the hard one and sizes the HTTP
    connection cap to a small share of it (``api.limits.connection_budget``), so no
    number of API clients can take the descriptors VRRP, health checks and notify
    scripts need. The control socket is served even with ``api.enabled: false``:
    ``hadirector reload`` is an operator's tool, like SIGHUP.
    """

    def __init__(self, lvs=None) -> None:
        self.lvs = lvs
        self.server = None
        self.control = None
        self.started_at = time.time()
        self.loaded_at = self.started_at
        self.reloads = None             # s.ReloadStatus, made with the first snapshot or reload

    def snapshot(self, agent) -> s.Snapshot:
        from hadirector.agent.status import build_snapshot

        return build_snapshot(agent, self.lvs, started_at=self.started_at, loaded_at=self.loaded_at,
                              generation=agent.generation, reloads=self._reloads(), api=self.api_status())

    def api_status(self) -> s.ApiStatus:
        from hadirector.agent.status import listener_status
        from hadirector.api import snapshot as s

        http = self.server.listener if self.server is not None else None
        control = self.control.listener if self.control is not None else None
        return s.ApiStatus(
            http=listener_status(http, self.server.refused if self.server is not None else None),
            control=listener_status(control, self.control.refused if self.control is not None else None))

    def _reloads(self) -> s.ReloadStatus:
        if self.reloads is None:
            from hadirector.api import snapshot as s

            self.reloads = s.ReloadStatus()
        return self.reloads

    def record_reload(self, result: s.ReloadResult) -> None:
        from hadirector.api import snapshot as s

        r = self._reloads()
        self.reloads = s.ReloadStatus(
            count=r.count + 1, failures=r.failures + (0 if result.ok else 1),
            last_ok=result.ok, last_at=time.time(),
            last_error=None if result.ok else (result.errors[0] if result.errors else result.message),
        )
        if result.ok:           # the generation is the agent's (Agent.generation)
            self.loaded_at = time.time()

    async def start(self, agent) -> None:
        import asyncio
        import importlib

        # The status model (~60 dataclasses), imported on a worker thread after the VRRP
        # machines started: not on the path from exec to their first timer.
        await asyncio.to_thread(importlib.import_module, "hadirector.agent.status")
        from hadirector.api.control import ControlError, ControlServer, socket_path
        from hadirector.api.limits import connection_budget
        from hadirector.api.listener import raise_nofile_limit

        old, soft, hard, why = raise_nofile_limit()
        if why:
            agent.log.warning("api.fd_limit_kept", soft=soft, hard=hard, reason=why)
        elif soft != old:
            agent.log.info("api.fd_limit_raised", old=old, soft=soft, hard=hard,
                           reason="soft_below_hard")

        async def reload() -> s.ReloadResult:
            return await agent.reload_async(trigger="control")

        path = socket_path(agent.config.node.state_dir)
        commands = {}
        for comp in getattr(agent, "components", ()):
            commands.update(getattr(comp, "control_commands", dict)())
        self.control = ControlServer(path, reload, commands=commands)
        try:
            await self.control.start()
        except (ControlError, OSError) as e:
            # Reload stays possible with SIGHUP; the director must keep running.
            reason = e.reason if isinstance(e, ControlError) else errno.errorcode.get(e.errno or 0, "error")
            agent.log.error("api.control_failed", path=path, reason=reason, detail=str(e))
            self.control = None

        settings = agent.config.api
        if not settings.enabled:
            return
        # aiohttp, only when served: ~130 modules, imported on a worker thread so the
        # loop keeps running the VRRP machines meanwhile (seconds under emulation).
        await asyncio.to_thread(importlib.import_module, "hadirector.api.server")
        from hadirector.api.server import MAX_CONNECTIONS, ApiServer

        self.server = ApiServer.from_settings(
            settings, lambda: self.snapshot(agent),
            max_connections=connection_budget(soft, MAX_CONNECTIONS),
            control_path=path if self.control is not None else None)
        try:
            await self.server.start()
        except OSError as e:
            # The API is for operators; a busy port must not stop the director.
            agent.log.error("api.start_failed", listen=f"{settings.listen_host}:{settings.listen_port}",
                            reason=str(e))
            self.server = None
            return
        agent.log.info("api.started", listen=f"{settings.listen_host}:{self.server.port}")

    async def stop(self, agent) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.control is not None:
            await self.control.stop()
            self.control = None
