"""The agent's control socket: state-changing requests, for root only (asyncio shell).

Theory of operation: the HTTP API is read-only, because anyone on the host can reach
127.0.0.1 and HTTP cannot tell who is asking. A reload goes over a unix socket,
``<state_dir>/control.sock``:

* the socket file is owned by the agent (root) and has mode 0600, so only root can
  connect. It is bound in a fresh 0700 directory, chmod'ed, then renamed into place,
  so there is never a moment when it exists with looser permissions;
* each connection's peer credentials (SO_PEERCRED, taken by the kernel at connect())
  are checked as well: only uid 0 and the agent's own uid are served (defence in depth
  against a wrong mode, e.g. a hand-made bind mount or a later chmod);
* reloads are rate limited (``limits.TokenBucket``: a burst of ``burst``, then ``rate``
  per second); the excess is refused with the time to wait, and the agent's own reload
  lock serialises the rest;
* connections go through a ``BoundedListener`` too (few at once, short deadlines).

Protocol: the client sends one line (``reload``), the agent answers with one JSON
object and closes. A reload answers ``ReloadResult`` as JSON (``ok`` present); any
refusal answers ``{"error": ..., "reason": ...}`` with reason ``not_root``,
``rate_limited`` (plus ``retry_after`` seconds), ``unknown_command``, ``bad_request``
or ``crashed``.

Start-up leaves a live agent's socket alone: if ``control.sock`` answers a connect,
another agent is serving it and this one does not take it over (``api.control_failed
reason=in_use``); a stale file (nothing listening) is replaced.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from hadirector.api.limits import Throttle, TokenBucket
from hadirector.api.listener import BoundedListener
from hadirector.api.snapshot import ReloadResult, to_jsonable

log = structlog.get_logger("hadirector.api")

ReloadFn = Callable[[], Awaitable[ReloadResult]]

SOCKET_NAME = "control.sock"
MAX_LINE = 256
MAX_CONNECTIONS = 8
REQUEST_DEADLINE = 2.0          # s to send the command line
RELOAD_DEADLINE = 120.0         # s for a reload to finish before the connection is cut
RELOAD_RATE = 1.0               # reloads per second, sustained
RELOAD_BURST = 2
# sockaddr_un.sun_path is 108 bytes, with the terminating NUL.
SUN_PATH_MAX = 107


class ControlError(Exception):
    """The control socket cannot be set up; ``reason`` is a stable log key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the kernel recorded it."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_private(path: str) -> tuple[socket.socket, int]:
    """A listening unix socket at ``path`` with mode 0600, never visible with looser
    permissions. Returns the socket and the file's inode (to remove only our own)."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise ControlError("path_too_long",
                           f"{path}: {len(os.fsencode(path))} bytes, a unix socket path "
                           f"allows {SUN_PATH_MAX}; use a shorter node.state_dir")
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o750, exist_ok=True)
    if os.path.lexists(path):
        if _in_use(path):
            raise ControlError("in_use", f"{path}: another agent is serving it")
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ControlError("not_a_socket", f"{path}: exists and is not a socket")
    tmpdir = tempfile.mkdtemp(prefix=".c", dir=parent)      # mode 0700; short: sun_path
    tmp = os.path.join(tmpdir, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(tmp)) > SUN_PATH_MAX:
            raise ControlError("path_too_long", f"{tmp}: too long for a unix socket path; "
                                                f"use a shorter node.state_dir")
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        sock.listen(16)
        os.rename(tmp, path)         # atomic: replaces a stale socket file
        ino = os.lstat(path).st_ino
    except BaseException:
        sock.close()
        raise
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    sock.setblocking(False)
    return sock, ino


class ControlServer:
    def __init__(self, path: str, reload: ReloadFn, *,
                 allowed_uids: frozenset[int] | None = None,
                 limiter: TokenBucket | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 commands: dict[str, Callable[[], dict]] | None = None) -> None:
        self.path = path
        self._reload = reload
        # Other state-changing commands (a scale-out director's drain / undrain): one
        # line in, the function's dict out; same root-only socket, same limits.
        self.commands = dict(commands or {})
        self.allowed_uids = (allowed_uids if allowed_uids is not None
                             else frozenset({0, os.geteuid()}))
        self.limiter = limiter or TokenBucket(rate=RELOAD_RATE, burst=RELOAD_BURST)
        self.max_connections = max_connections
        self.listener: BoundedListener | None = None
        self._ino: int | None = None
        self._refused = Throttle(10.0)
        self._tasks: set[asyncio.Task] = set()
        self.applied = 0            # counters for status and tests
        self.refused: dict[str, int] = {}

    async def start(self) -> None:
        sock, self._ino = bind_private(self.path)
        self.listener = BoundedListener(
            sock, lambda: _ControlProtocol(self), log=log, area="control",
            max_connections=self.max_connections, header_timeout=REQUEST_DEADLINE,
            idle_timeout=REQUEST_DEADLINE, request_timeout=RELOAD_DEADLINE,
            shed_oldest=False)
        self.listener.start()
        log.info("api.control_started", path=self.path, mode="0600",
                 allowed_uids=sorted(self.allowed_uids))

    async def stop(self) -> None:
        if self.listener is None:
            return
        listener, self.listener = self.listener, None
        await listener.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if os.lstat(self.path).st_ino == self._ino:   # still ours, not a successor's
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        log.info("api.control_stopped", path=self.path)

    # --- requests ----------------------------------------------------------------------

    def refuse(self, reason: str, **fields: Any) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        report = self._refused.note(reason, asyncio.get_running_loop().time())
        if report is not None:
            log.warning("api.control_refused", reason=reason, count=report.total,
                        counts=report.counts, seconds=round(report.since, 1), **fields)

    async def handle(self, command: str, peer: tuple[int, int, int]) -> dict:
        pid, uid, _ = peer
        if command in self.commands:
            log.info("api.command_requested", command=command, via="control", peer_pid=pid, peer_uid=uid)
            return self.commands[command]()
        if command != "reload":
            self.refuse("unknown_command", peer_pid=pid, peer_uid=uid)
            known = ", ".join(["reload", *self.commands])
            return {"error": f"unknown command {command[:40]!r} (known: {known})",
                    "reason": "unknown_command"}
        wait = self.limiter.take(asyncio.get_running_loop().time())
        if wait > 0:
            self.refuse("rate_limited", peer_pid=pid, peer_uid=uid)
            return {"error": f"reload rate limited: at most {RELOAD_BURST} at once and "
                             f"{RELOAD_RATE:g} per second; retry in {wait:.1f}s",
                    "reason": "rate_limited", "retry_after": round(wait, 3)}
        log.info("api.reload_requested", via="control", peer_pid=pid, peer_uid=uid)
        try:
            result = await self._reload()
        except Exception as e:  # noqa: BLE001 - the agent's bug must not take the socket down
            log.exception("api.reload_failed", reason=type(e).__name__)
            return {"error": f"reload crashed: {type(e).__name__}: {e}", "reason": "crashed"}
        self.applied += 1 if result.ok else 0
        return to_jsonable(result)


class _ControlProtocol(asyncio.Protocol):
    """One command line in, one JSON line out, then close."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = (0, -1, -1)
        self.buf = b""
        self.done = False
        self.refusal: dict | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # A refusal is answered once the request line is in: closing with the
        # client's line unread would reset the connection and lose the answer.
        try:
            self.peer = peer_credentials(transport.get_extra_info("socket"))
        except OSError as e:
            self.refusal = {"error": f"cannot read peer credentials: {e.strerror}",
                            "reason": "bad_request"}
            return
        pid, uid, _ = self.peer
        if uid not in self.server.allowed_uids:
            self.server.refuse("not_root", peer_pid=pid, peer_uid=uid)
            self.refusal = {"error": f"permission denied: the control socket serves root only "
                                     f"(you are uid {uid})", "reason": "not_root"}

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        line, nl, _ = self.buf.partition(b"\n")
        if not nl:
            if len(self.buf) > MAX_LINE:
                self.server.refuse("bad_request", peer_uid=self.peer[1])
                self._reply({"error": "request line too long", "reason": "bad_request"})
            return
        if self.refusal is not None:
            self._reply(self.refusal)
            return
        self.done = True
        listener = self.server.listener
        if listener is not None:
            listener.request_started(self.transport)
        task = asyncio.get_running_loop().create_task(
            self.server.handle(line.decode("utf-8", "replace").strip(), self.peer))
        self.server._tasks.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task) -> None:
        self.server._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        self._reply(task.result() if exc is None else
                    {"error": f"{type(exc).__name__}: {exc}", "reason": "crashed"})

    def eof_received(self) -> bool:
        return True     # keep the write side open for the answer

    def _reply(self, answer: dict) -> None:
        self.done = True
        t = self.transport
        if t is None or t.is_closing():
            return
        try:
            t.write(json.dumps(answer).encode() + b"\n")
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise
        t.close()
