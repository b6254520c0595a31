"""The agent's HTTP status and metrics server (aiohttp).

Theory of operation: the server holds no state of its own. It is given two callables
by the agent: ``snapshot()`` (synchronous, called on the event loop, returns a
consistent ``Snapshot``) and ``reload()`` (a coroutine that reloads the config and
returns a ``ReloadResult``). Every GET is a pure rendering of one snapshot; the only
request with an effect is ``POST /reload``.

Endpoints:

* ``GET /status``  — the snapshot as JSON (``Snapshot.to_dict()``);
* ``GET /metrics`` — Prometheus text format 0.0.4;
* ``GET /healthz`` — 200 ``ok`` when the agent's loop is alive. The handler runs on
  the agent's event loop, so being answered at all proves the loop turns; calling
  ``snapshot()`` also proves the agent's state is readable. 503 otherwise.
* ``POST /reload`` — runs ``reload()``; 200 with the result when applied, 422 when
  refused (the running config is kept), 500 if the reload itself crashed.

Why ``/reload`` is loopback-only: the API has no authentication, so the one
state-changing request is accepted only over a loopback connection (both ends
loopback — a 0.0.0.0 listener still refuses it from the network), and never from a
browser (a request carrying ``Origin`` is refused, which stops a web page the
operator visits from POSTing to 127.0.0.1:9110 — simple cross-site POSTs need no
CORS preflight).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from hadirector.api import metrics
from hadirector.api.snapshot import ReloadResult, Snapshot, to_jsonable
from hadirector.model import ApiSettings

log = structlog.get_logger("hadirector.api")

SnapshotFn = Callable[[], Snapshot]
ReloadFn = Callable[[], Awaitable[ReloadResult]]


def _is_loopback(sockaddr: object) -> bool:
    if not isinstance(sockaddr, tuple) or not sockaddr:
        return False
    try:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", status=status,
                        content_type="application/json")


class ApiServer:
    def __init__(self, host: str, port: int, snapshot: SnapshotFn, reload: ReloadFn) -> None:
        self.host = host
        self.port = port            # 0 = ephemeral; the bound port is here after start()
        self._snapshot = snapshot
        self._reload = reload
        self._reload_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_settings(cls, settings: ApiSettings, snapshot: SnapshotFn,
                      reload: ReloadFn) -> ApiServer:
        """The server the config's ``api`` section asks for (the caller checks
        ``settings.enabled``)."""
        return cls(settings.listen_host, settings.listen_port, snapshot, reload)

    # --- lifecycle -----------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/status", self._handle_status)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_post("/reload", self._handle_reload)
        return app

    async def start(self) -> None:
        # No access log: Prometheus scrapes every few seconds would drown the
        # agent's own events; reload requests are logged by the handler.
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = _bound_port(runner, self.port)
        log.info("api.started", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()
        log.info("api.stopped", host=self.host, port=self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- handlers -----------------------------------------------------------------

    def _take_snapshot(self) -> Snapshot | web.Response:
        try:
            return self._snapshot()
        except Exception as e:  # the agent's bug must not take the API down
            log.exception("api.snapshot_failed", reason=type(e).__name__)
            return _json({"error": f"snapshot failed: {type(e).__name__}: {e}"}, status=503)

    async def _handle_status(self, request: web.Request) -> web.Response:
        snap = self._take_snapshot()
        if isinstance(snap, web.Response):
            return snap
        return _json(snap.to_dict())

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        snap = self._take_snapshot()
        if isinstance(snap, web.Response):
            return snap
        return web.Response(body=metrics.render(snap).encode(),
                            headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        snap = self._take_snapshot()
        if isinstance(snap, web.Response):
            return web.Response(text="snapshot failed\n", status=503)
        return web.Response(text="ok\n")

    async def _handle_reload(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        local = request.transport.get_extra_info("sockname") if request.transport else None
        reason = ""
        if not (_is_loopback(peer) and _is_loopback(local)):
            reason = "not_loopback"
        elif "Origin" in request.headers:
            reason = "browser_origin"
        if reason:
            log.warning("api.reload_refused", reason=reason, peer=str(peer))
            return _json({"error": f"reload refused: {reason.replace('_', ' ')}",
                          "reason": reason}, status=403)
        log.info("api.reload_requested", peer=str(peer))
        # One reload at a time: a second request waits and then reloads again, so it
        # always sees a config read after it was sent.
        async with self._reload_lock:
            try:
                result = await self._reload()
            except Exception as e:
                log.exception("api.reload_failed", reason=type(e).__name__)
                return _json({"error": f"reload crashed: {type(e).__name__}: {e}"}, status=500)
        return _json(to_jsonable(result), status=200 if result.ok else 422)


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return fallback
