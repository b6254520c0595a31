"""The agent's HTTP status and metrics server (aiohttp): read-only.

Theory of operation: the server holds no state of its own. It is given
``snapshot()`` (synchronous, called on the event loop, returns a consistent
``Snapshot``); every GET is a pure rendering of one snapshot.

Endpoints:

* ``GET /status``  — the snapshot as JSON (``Snapshot.to_dict()``);
* ``GET /metrics`` — Prometheus text format 0.0.4, rendered in slices with the loop
  turning between them (``metrics.Renderer``);
* ``GET /healthz`` — 200 ``ok`` when the agent's loop is alive. The handler runs on
  the agent's event loop, so being answered at all proves the loop turns; calling
  ``snapshot()`` also proves the agent's state is readable. 503 otherwise.
* ``POST /reload`` — refused (403): HTTP has no idea who is asking, and any local
  user can reach 127.0.0.1. Reloads go over the root-only control socket
  (``api/control.py``, used by ``hadirector reload``) or SIGHUP.

Any local user can still connect, so the server must not be a way to starve the
agent: connections are accepted by a ``BoundedListener`` (``api/listener.py``) — a
cap on concurrent connections (idle ones are shed first), header, idle and request
deadlines, accept errors logged once per interval. Each request marks its connection
busy for the listener through a middleware.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import structlog
from aiohttp import web

from hadirector.api import metrics
from hadirector.api.limits import Throttle
from hadirector.api.listener import BoundedListener
from hadirector.api.snapshot import Snapshot
from hadirector.model import ApiSettings

log = structlog.get_logger("hadirector.api")

SnapshotFn = Callable[[], Snapshot]

MAX_CONNECTIONS = 64        # a scrape, an operator and a load balancer need a handful
HEADER_TIMEOUT = 5.0        # s from accept to complete request headers
IDLE_TIMEOUT = 5.0          # s of keep-alive between requests
REQUEST_TIMEOUT = 10.0      # s for one request and its response
BACKLOG = 4096             # clamped to net.core.somaxconn; see listen_socket()
RELOAD_HINT = "run `hadirector reload` as root (control socket), or send SIGHUP"


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", status=status,
                        content_type="application/json")


# TCP_DEFER_ACCEPT (tcp(7)), seconds: the kernel hands the agent a connection only once
# its first bytes arrived. A client that connects and sends nothing costs the agent no
# descriptor and no slot, and a real client is accepted with its request already there,
# so it is busy from the accept and never shed for a flood's newer connections (a client
# accepted before its request arrived could be, on a loaded host: seen in the flood test).
DEFER_ACCEPT = 5


def listen_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (SO_REUSEADDR; IPv6 only for an
    IPv6 address, as asyncio does; TCP_DEFER_ACCEPT)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.create_server(addr, family=family, backlog=backlog)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT)
    sock.setblocking(False)
    return sock


class ApiServer:
    def __init__(self, host: str, port: int, snapshot: SnapshotFn, *,
                 max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, request_timeout: float = REQUEST_TIMEOUT,
                 control_path: str | None = None) -> None:
        self.host = host
        self.port = port            # 0 = ephemeral; the bound port is here after start()
        self._snapshot = snapshot
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.control_path = control_path
        self._runner: web.AppRunner | None = None
        self.listener: BoundedListener | None = None
        self._refusals = Throttle(10.0)
        self.refused: dict[str, int] = {}   # requests refused, by reason (status, metrics)

    @classmethod
    def from_settings(cls, settings: ApiSettings, snapshot: SnapshotFn, **limits) -> ApiServer:
        """The server the config's ``api`` section asks for (the caller checks
        ``settings.enabled``)."""
        return cls(settings.listen_host, settings.listen_port, snapshot, **limits)

    # --- lifecycle -----------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._track])
        app.router.add_get("/status", self._handle_status)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_post("/reload", self._handle_reload)
        return app

    async def start(self) -> None:
        # No access log: Prometheus scrapes every few seconds would drown the
        # agent's own events. aiohttp's keep-alive timer matches the listener's.
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                               keepalive_timeout=self.idle_timeout)
        await runner.setup()
        try:
            sock = listen_socket(self.host, self.port)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        self.listener = BoundedListener(
            sock, runner.server, log=log, area="http", max_connections=self.max_connections,
            header_timeout=self.header_timeout, idle_timeout=self.idle_timeout,
            request_timeout=self.request_timeout, request_end=b"\r\n\r\n")
        self.listener.start()
        log.info("api.started", host=self.host, port=self.port,
                 max_connections=self.max_connections)

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self.listener is not None:
            await self.listener.close()
        await runner.cleanup()
        log.info("api.stopped", host=self.host, port=self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- handlers -----------------------------------------------------------------

    @web.middleware
    async def _track(self, request: web.Request, handler) -> web.StreamResponse:
        # The listener marks the connection busy (never shed for a newer one) when it
        # sees the end of the request head; it stays busy until the handler returns.
        listener = self.listener
        if listener is not None:
            listener.request_started(request.transport)
        try:
            return await handler(request)
        finally:
            if listener is not None:
                listener.request_finished(request.transport)

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
        # A big table renders in ~100 ms: in slices of ~1 ms, the event loop (VRRP
        # adverts, timers) turning between them.
        render = metrics.Renderer(snap)
        while not render.step():
            await asyncio.sleep(0)
        return web.Response(body=render.body(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        snap = self._take_snapshot()
        if isinstance(snap, web.Response):
            return web.Response(text="snapshot failed\n", status=503)
        return web.Response(text="ok\n")

    async def _handle_reload(self, request: web.Request) -> web.Response:
        # Anyone on the host can reach this port; a reload changes state, so it is
        # served only to root over the control socket. Logged once per interval:
        # a flood of refused POSTs must not flood the log either.
        self.refused["http_not_allowed"] = self.refused.get("http_not_allowed", 0) + 1
        report = self._refusals.note("http_not_allowed", asyncio.get_running_loop().time())
        if report is not None:
            log.warning("api.reload_refused", reason="http_not_allowed", count=report.total,
                        seconds=round(report.since, 1))
        where = f" ({self.control_path})" if self.control_path else ""
        return _json({"error": f"reload is not served over HTTP: {RELOAD_HINT}{where}",
                      "reason": "http_not_allowed"}, status=403)
