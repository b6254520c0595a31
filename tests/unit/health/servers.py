"""Local servers a health check can be pointed at, each told how to misbehave.

Everything listens on 127.0.0.x loopback addresses with kernel-chosen ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from dataclasses import dataclass, field

from aiohttp import web


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def blackhole_listener(host: str = "127.0.0.1"):
    """A listener whose accept queue is full: further SYNs are dropped, so a connect
    hangs (what a server stuck in userspace looks like from outside)."""
    lsock = socket.socket()
    lsock.bind((host, 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    filler = socket.create_connection((host, port))     # fills the one-slot queue
    try:
        yield port
    finally:
        filler.close()
        lsock.close()


@contextlib.asynccontextmanager
async def silent_server(host: str = "127.0.0.1"):
    """Accepts connections, reads, never answers (an HTTP server that hangs)."""
    writers = []

    async def handle(reader, writer):
        writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(handle, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


@dataclass
class Behaviour:
    """What the HTTP test server does; tests change it while it runs."""

    status: int = 200
    body: bytes = b"<html>ok: all systems nominal</html>"
    delay: float = 0.0
    hits: int = 0
    hosts: list = field(default_factory=list)
    stop: object = None             # async callable: close the listener (connections refused)

    @property
    def md5(self) -> str:
        return hashlib.md5(self.body).hexdigest()


@contextlib.asynccontextmanager
async def http_server(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None,
                      behaviour: Behaviour | None = None):
    b = behaviour or Behaviour()

    async def handler(request: web.Request) -> web.Response:
        b.hits += 1
        b.hosts.append(request.headers.get("Host"))
        if b.delay:
            await asyncio.sleep(b.delay)
        return web.Response(status=b.status, body=b.body, content_type="text/html")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    stopped = False

    async def stop():
        nonlocal stopped
        if not stopped:
            stopped = True
            await runner.cleanup()

    b.stop = stop
    try:
        yield port, b
    finally:
        await stop()
