"""Health probes: TCP connect, HTTP(S) GET, external script.

Each probe returns ``ProbeResult(ok, detail, elapsed)``. They hold no policy (rise/fall
lives in ``policy.py``), never raise (every failure becomes a result whose ``detail`` is
the reason: "refused", "timeout", "status 503", "body mismatch", "exit 1", ...), and
never outlive their timeout: the whole probe -- connect, TLS, request, body, process --
is bounded by one deadline. Cancellation (the runner stopping) is the one thing that
propagates.

A probe that cannot run for a local reason -- the agent out of file descriptors, socket
buffers or memory, a fork failure, a missing script -- says nothing about the server:
its result is ``inconclusive`` (the policy counts it toward neither rise nor fall).

Cost (issue 13): TCP and plain HTTP checks are callback objects (``TcpCheck``,
``HttpCheck``) on a non-blocking socket watched by one private epoll per loop
(``Poller``): no task, no future, no stream or transport. What every check of a target
shares -- address family, socket address, source, the encoded GET -- is worked out once
(``prepare_probe`` -> ``TcpTarget`` / ``HttpTarget``); ``target.start(done)`` starts one
check and calls ``done(result)`` once, unless cancelled. The runner keeps one target per
real server; the ``async`` functions (``tcp_probe``, ``http_probe``, ``run_check``) and
``start_probe`` wrap it for everyone else. Per check that leaves the system calls
keepalived makes too (socket, connect, epoll_ctl, close; SO_ERROR only when epoll flags
an error; an HTTP check's socket is edge-triggered, so no second epoll_ctl to switch
from writing to reading) and a few Python calls. The HTTP client is a minimal HTTP/1.1
GET with ``Connection: close`` -- a check must open a new connection each time, or a
server whose listener died would keep passing on an old keep-alive connection -- that
reads only as much as the verdict needs: the status line and headers, the body only for
a regex or a digest. HTTPS goes through
``loop.create_connection(ssl=...)`` and the same response reader.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import errno
import functools
import hashlib
import ipaddress
import math
import re
import select
import signal
import socket
import ssl
import weakref
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from hadirector.kernel import spawn
from hadirector.health.dns import dns_probe
from hadirector.health.errors import LOCAL_ERRNOS, errno_reason, os_reason, os_result
from hadirector.health.ping import ping_probe
from hadirector.health.policy import ProbeResult
from hadirector.health.smtp import smtp_probe
from hadirector.health.udp import udp_probe
from hadirector.model import (
    DnsProbe, HealthCheck, HttpProbe, IPAddress, PingProbe, ScriptProbe, SmtpProbe, TcpProbe, UdpProbe,
)

MAX_BODY = 4 * 1024 * 1024     # bytes read for a body regex or digest
MAX_HEAD = 64 * 1024           # status line and headers
USER_AGENT = "hadirector-healthcheck"

# Linux: bind() picks no port until connect(), so a source address shared by many
# checks does not run out of ports for one destination only.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

Done = Callable[[ProbeResult], None]


def _family(addr: IPAddress | str) -> int:
    if isinstance(addr, str):
        return socket.AF_INET6 if ":" in addr else socket.AF_INET
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


# --- TCP ------------------------------------------------------------------------------


class EpollChecks:
    """Callback checks on one private epoll, with their timeouts; no event loop.

    Its owner waits for it (``poll``, or on ``fileno()``) and hands what is ready to
    ``dispatch``, and calls ``expire`` once ``timer_at`` (the earliest timeout, or None)
    has passed: ``Poller`` does it from an asyncio loop, ``checkloop.CheckLoop`` from
    a loop of its own.
    ``loop`` is anything with ``time()`` -- the clock each check reads.

    A check registers its socket once and never unregisters it: closing the socket
    drops it from the epoll set. Timeouts are batched: checks with one timeout value
    expire in the order they started, so each value is a FIFO and only the earliest
    head needs a timer. Compared with ``add_writer`` and a timer per check this saves
    the selector's bookkeeping, two handles, a heap push and an ``epoll_ctl`` per check
    (bench/health_checks.py). A FIFO row is ``(deadline, fd)``, not the check: a
    finished check is freed at once instead of living on in the FIFO for its whole
    timeout (and into the garbage collector's oldest generation, whose full passes
    then took 15-35 ms at 6,000 targets); a row whose descriptor is gone or now belongs
    to a later check (another deadline) is stale and dropped.
    """

    def __init__(self, loop) -> None:
        self._loop = loop
        self._ep = select.epoll()          # OSError (EMFILE) before anything else is held
        self._checks: dict[int, _Check] = {}
        self._expiry: dict[float, collections.deque[tuple[float, int]]] = {}
        # The earliest timeout; inf while no check runs (``timer_at`` says None): one
        # comparison per wait for ``CheckLoop``, not two.
        self._timer_at = math.inf
        # Descriptors registered while ``Poller.dispatch`` runs: a ready event in the
        # batch being handled is for an earlier socket that had the same number.
        self._fresh: set[int] | None = None

    def fileno(self) -> int:
        return self._ep.fileno()

    def poll(self, timeout: float, max_events: int = -1) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds; the ``(fd, events)`` ready (at most
        ``max_events``; -1: epoll's default, 1,023), for ``dispatch``."""
        return self._ep.poll(timeout, max_events)

    @property
    def timer_at(self) -> float | None:
        """When the earliest running check times out (None: none runs)."""
        at = self._timer_at
        return None if at == math.inf else at

    def watch(self, check: _Check, events: int, timeout: float) -> None:
        """Watch ``check``'s socket for ``events`` (its ``_fd`` is set here) and fail it
        ``timeout`` after its start; OSError when the epoll cannot take it."""
        check._fd = fd = check._sock.fileno()
        self._ep.register(fd, events)
        self._checks[fd] = check
        if self._fresh is not None:
            self._fresh.add(fd)
        q = self._expiry.get(timeout)
        if q is None:
            q = self._expiry[timeout] = collections.deque()
        check._deadline = deadline = check._start + timeout
        q.append((deadline, fd))
        if deadline < self._timer_at:
            self._arm(deadline)

    def watch_reader(self, fd: int, events: int, handler) -> None:
        """Hand ``fd``'s events to ``handler.on_event(events, now)``, with no timeout:
        a descriptor its owner keeps open (``CheckLoop.watch_input``: the worker's
        input pipe)."""
        self._ep.register(fd, events)
        self._checks[fd] = handler

    def forget(self, fd: int) -> None:
        """The check is done with ``fd`` and closes it next (which unregisters it)."""
        self._checks.pop(fd, None)

    def dispatch(self, ready: list[tuple[int, int]], now: float) -> None:
        """Hand each ``(fd, events)`` of one ``epoll.poll`` to its check. ``now`` is one
        clock read for the batch: every event in it was ready when poll returned, so
        that is when each check ended (not after the ones handled before it).

        Its owner starts no check meanwhile (``CheckLoop`` starts them between waits),
        so every descriptor in the batch is the one that was ready; ``Poller``'s
        checks can start others from their ``done``, and its ``dispatch`` guards."""
        checks = self._checks
        for fd, events in ready:
            check = checks.get(fd)
            if check is not None:
                try:
                    check.on_event(events, now)
                except Exception as exc:   # never let one check break the loop
                    check.fail(f"error: {type(exc).__name__}: {exc}")

    def _arm(self, when: float) -> None:
        self._timer_at = when

    def expire(self, now: float) -> None:
        """Fail every check whose timeout has passed at ``now``; arm for the next."""
        self._timer_at = math.inf
        earliest = None
        checks = self._checks
        for q in self._expiry.values():
            while q:
                deadline, fd = q[0]
                check = checks.get(fd)
                if check is None or check._deadline != deadline:
                    q.popleft()            # finished (its descriptor maybe reused since)
                elif deadline <= now:
                    q.popleft()
                    check.fail("timeout")
                else:
                    break
            if q and (earliest is None or q[0][0] < earliest):
                earliest = q[0][0]
        # A check started by a ``done`` above armed for itself: keep the earlier one.
        if earliest is not None and earliest < self._timer_at:
            self._arm(earliest)

    def cancel_all(self) -> None:
        """Cancel every check still running (none of them calls its ``done``)."""
        for check in list(self._checks.values()):
            check.cancel()

    def close(self) -> None:
        self._timer_at = math.inf
        self._ep.close()


class Poller(EpollChecks):
    """Every callback check of one asyncio loop, on one private epoll.

    The loop watches only this epoll's descriptor: when any check's socket is ready the
    loop makes one call, which handles every ready check (``poll`` of up to 1,024); one
    ``loop.call_at`` is armed for the earliest timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._timer: asyncio.TimerHandle | None = None
        loop.add_reader(self._ep.fileno(), self._on_ready)

    def dispatch(self, ready: list[tuple[int, int]], now: float) -> None:
        # A check's ``done`` may start the next one (the runner's pump), on a descriptor
        # freed earlier in this batch: a ready event later in it for that number is the
        # earlier socket's, so the descriptors registered meanwhile (``_fresh``) are skipped.
        checks = self._checks
        self._fresh = fresh = set()
        try:
            for fd, events in ready:
                check = checks.get(fd)
                if check is None or fd in fresh:
                    continue
                try:
                    check.on_event(events, now)
                except Exception as exc:   # never let one check break the loop's callback
                    check.fail(f"error: {type(exc).__name__}: {exc}")
        finally:
            self._fresh = None

    def reap(self) -> None:
        """Handle now every check whose socket is ready, instead of one loop iteration
        later. The runner calls it right after starting a batch: checks that ended
        while it started (a loopback or local server answers inside ``connect``; on a
        LAN the first checks of a long batch) then cost no wake-up of their own (at 100
        loopback checks a second: 1.5 -> 0.7 asyncio iterations per check). A no-op
        inside ``_on_ready`` (a check that finishes there may start the next one)."""
        if self._fresh is None:
            try:
                self._on_ready()
            except (OSError, ValueError):
                pass        # the epoll itself failed: the loop's own call reports it

    def _on_ready(self) -> None:
        now = self._loop.time()
        self.dispatch(self._ep.poll(0), now)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.expire(self._loop.time())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._ep.fileno())
        super().close()


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


_last_poller: tuple[asyncio.AbstractEventLoop | None, Poller | None] = (None, None)


def reap_ready() -> None:
    """``Poller.reap`` for the running loop's poller, if it has one."""
    loop = asyncio.get_running_loop()
    last_loop, p = _last_poller
    if last_loop is not loop:
        p = _pollers.get(loop)
    if p is not None:
        p.reap()


def poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """The loop's poller, made on first use (the last one is cached: a weak mapping's
    lookup costs as much as a probe's bookkeeping)."""
    global _last_poller
    last_loop, p = _last_poller
    if last_loop is loop and p is not None:
        return p
    p = _pollers.get(loop)
    if p is None:
        p = _pollers[loop] = Poller(loop)
    _last_poller = (loop, p)
    return p


# A socket of the C type, non-blocking from socket(2) on: no Python wrapper object to
# build and close, and no fcntl() to clear O_NONBLOCK's opposite (issue 13: per check).
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_FAILED = select.EPOLLERR | select.EPOLLHUP
_EPOLLOUT = select.EPOLLOUT
_EPOLLIN = select.EPOLLIN
_EPOLLRDHUP = select.EPOLLRDHUP
_HTTP_EVENTS = select.EPOLLOUT | select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
_EINPROGRESS = errno.EINPROGRESS
_READ = 65536


class TcpTarget:
    """What every TCP check of one target shares, worked out once (the runner keeps one
    per target, ``prepare_probe``): address family, socket address, timeout, source."""

    __slots__ = ("family", "sockaddr", "timeout", "bind_to")
    # What ``start_on`` makes, ``check_type(checks, target, done)``: ``CheckLoop`` makes
    # it itself, one call less per check (set below, once the class exists).
    check_type: ClassVar[type[_Check]]

    def __init__(self, addr: str, port: int, timeout: float, bind_to: IPAddress | str | None) -> None:
        self.family = _family(addr)
        self.sockaddr = (addr, port)
        self.timeout = timeout
        self.bind_to = None if bind_to is None else (str(bind_to), 0)

    def start(self, done: Done) -> Probe:
        """Start one check; ``done(result)`` is called once unless it is cancelled."""
        loop = asyncio.get_running_loop()
        last_loop, p = _last_poller          # ``poller``'s cache, read here: once per check
        if last_loop is not loop or p is None:
            try:
                p = poller(loop)
            except OSError as exc:          # no descriptor for the epoll itself (EMFILE)
                done(os_result(exc, 0.0))
                return _FINISHED
        return self.check_type(p, self, done)       # ``start_on``, inlined

    def start_on(self, checks: EpollChecks, done: Done) -> Probe:
        """Start one check on ``checks`` (an asyncio loop's ``Poller``, or a
        ``checkloop.CheckLoop``'s own)."""
        return self.check_type(checks, self, done)


class _Check:
    """What ``EpollChecks`` needs of a check; the socket and ``done`` plumbing.

    Making one starts it: a non-blocking connect, then its socket on the poller's epoll
    for ``_EVENTS`` with its timeout. ``done(result)`` is called once -- maybe before the
    constructor returns (refused at once, EMFILE) -- unless ``cancel()`` comes first."""

    __slots__ = ("_poller", "_done", "_sock", "_fd", "_start", "_deadline")
    _EVENTS = _EPOLLOUT

    def __init__(self, poller: EpollChecks, target: TcpTarget, done: Done) -> None:
        # Connect and watch in one method, not three: once per check (issue 13).
        self._poller = poller
        self._done = done
        self._sock = None
        self._fd = -1
        self._start = poller._loop.time()
        try:
            self._sock = sock = _socket.socket(target.family, _STREAM)
            if target.bind_to is not None:
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind(target.bind_to)
            code = sock.connect_ex(target.sockaddr)
        except OSError as exc:
            self._finish(os_result(exc, self.elapsed))
            return
        except Exception as exc:   # never raise: a probe bug is a failed check, not a crash
            self.fail(f"error: {type(exc).__name__}: {exc}")
            return
        if code != _EINPROGRESS:
            if code:
                self._fail_errno(code)
                return
            if self._connected_at_once():
                return
        try:
            poller.watch(self, self._EVENTS, target.timeout)
        except OSError as exc:
            # Our epoll is full (max_user_watches) or out of memory: this director's
            # problem, whatever the errno.
            self._finish(ProbeResult(False, os_reason(exc), self.elapsed, inconclusive=True))

    def _connected_at_once(self) -> bool:
        """The connect completed inside ``connect()``: True when that ended the check
        (else it is watched as usual)."""
        return False

    def _error(self) -> int:
        """The socket's pending error (0: none); only asked when epoll flagged one."""
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    @property
    def elapsed(self) -> float:
        return self._poller._loop.time() - self._start

    @property
    def finished(self) -> bool:
        return self._done is None

    def _fail_errno(self, code: int) -> None:
        self._finish(ProbeResult(False, errno_reason(code), self.elapsed,
                                 inconclusive=code in LOCAL_ERRNOS))

    def fail(self, detail: str) -> None:
        self._finish(ProbeResult(False, detail, self.elapsed))

    def on_event(self, events: int, now: float) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        if self._fd >= 0:
            self._poller._checks.pop(self._fd, None)    # Poller.forget, inlined
            self._fd = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(self, result: ProbeResult) -> None:
        self._close()
        done, self._done = self._done, None
        if done is not None:
            done(result)

    def cancel(self) -> None:
        self._done = None
        self._close()


class TcpCheck(_Check):
    """Healthy when a non-blocking connect completes within the timeout. The socket is
    closed as soon as the verdict is known (a connect check sends nothing); the close is
    an orderly one (FIN), as keepalived's TCP_CHECK does: no SO_LINGER 0 reset."""

    __slots__ = ()

    def _connected_at_once(self) -> bool:
        self._finish(ProbeResult(True, "connected", self.elapsed))
        return True

    def on_event(self, events: int, now: float) -> None:
        # Writable and no error flagged is a completed connect: no SO_ERROR to fetch.
        if events & _FAILED:
            code = self._error()
            if code:
                self._fail_errno(code)
                return
        # ``_finish`` and ``_close``, inlined: once per check. An event comes only for a
        # check still watched, so its descriptor, socket and ``done`` are all there.
        del self._poller._checks[self._fd]          # Poller.forget, inlined
        self._sock.close()
        self._fd, self._sock = -1, None
        done, self._done = self._done, None
        done(ProbeResult(True, "connected", now - self._start))


async def _wait(start: Callable[[Done], object]) -> ProbeResult:
    """Await a callback probe; cancelling the caller cancels the probe."""
    fut = asyncio.get_running_loop().create_future()

    def done(result: ProbeResult) -> None:
        if not fut.done():
            fut.set_result(result)

    check = start(done)
    try:
        return await fut
    finally:
        if not fut.done():
            check.cancel()


async def tcp_probe(addr: IPAddress | str, port: int, timeout: float,
                    bind_to: IPAddress | str | None = None) -> ProbeResult:
    """Healthy when a TCP connection to ``addr:port`` completes within ``timeout``."""
    host = addr if isinstance(addr, str) else str(addr)
    return await _wait(TcpTarget(host, port, timeout, bind_to).start)


# --- HTTP -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _body_regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode())


class HttpClients:
    """What HTTP checks share: SSL contexts, one per (verify, CA file).

    Kept as an object the runner owns (create it inside the running loop; ``await
    close()`` when done) so checks do not build an SSL context each.
    """

    def __init__(self) -> None:
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}

    def ssl_context(self, verify: bool, ca_file: str | None) -> ssl.SSLContext:
        key = (verify, ca_file)
        ctx = self._contexts.get(key)
        if ctx is None:
            if verify:
                ctx = ssl.create_default_context(cafile=ca_file)
            else:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[key] = ctx
        return ctx

    async def close(self) -> None:
        self._contexts = {}


def _host_header(addr: str, port: int, tls: bool) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return host if port == (443 if tls else 80) else f"{host}:{port}"


def request_bytes(addr: str, port: int, probe: HttpProbe) -> bytes:
    """The GET a check sends. No Accept-Encoding: the body comes as is, so a digest
    matches the one keepalived's genhash computes over an unencoded response."""
    host = probe.host or _host_header(addr, port, probe.tls)
    return (f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
            f"Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1")


class _BadBody(Exception):
    pass


def _dechunk(raw: bytes) -> bytes | None:
    """The body of a complete chunked encoding, or None while incomplete.

    Raises ``_BadBody`` on a malformed one."""
    out, pos = [], 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = raw[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadBody from None
        if size < 0:
            raise _BadBody
        if size == 0:
            # Trailers (rare) end with an empty line; without any it is "0\r\n\r\n".
            return b"".join(out) if raw.find(b"\r\n\r\n", eol) >= 0 else None
        start, end = eol + 2, eol + 2 + size
        if len(raw) < end + 2:
            return None
        if raw[end:end + 2] != b"\r\n":
            raise _BadBody
        out.append(raw[start:end])
        pos = end + 2


class HttpRules:
    """What judges every response to one HTTP probe, worked out once (``HttpTarget``
    keeps one for all its checks): whether a verdict needs the body, and the verdict of
    each final status seen so far -- ``HttpProbe.accepts`` scans the configured ranges,
    a dict lookup does not (issue 13: once per check)."""

    __slots__ = ("probe", "body_needed", "statuses", "heads")

    def __init__(self, probe: HttpProbe) -> None:
        self.probe = probe
        self.body_needed = probe.body_regex is not None or probe.digest is not None
        self.statuses: dict[int, tuple[bool, str]] = {}
        # The verdict of a response that starts with these 13 bytes, a plain final
        # status line (``HTTP/1.1 200 ``) whose verdict needs no body: learnt by
        # ``HttpResponse`` from the first such response, then ``HttpCheck`` judges a
        # whole head in one read by a lookup, with no parser (issue 13: once per check).
        # At most ten versions x 1,000 statuses.
        self.heads: dict[bytes, tuple[bool, str]] = {}

    def status(self, status: int) -> tuple[bool, str]:
        """The verdict on a final ``status`` before any body is read."""
        verdict = self.statuses.get(status)
        if verdict is None:
            verdict = self.statuses[status] = (self.probe.accepts(status), f"status {status}")
        return verdict


# A status line as ``split(None, 2)`` reads it: a first word that starts with HTTP/1.,
# then a second one of exactly three digits (bytes: ASCII whitespace and digits only).
_STATUS_LINE = re.compile(rb"\s*HTTP/1\.\S*\s+(\d\d\d)(?:\s|\Z)")
# A status line ``HttpRules.heads`` may learn: exactly 13 bytes decide its status.
_PLAIN_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] [0-9]{3} ")


class HttpResponse:
    """Reads one response as it arrives (sans-IO): ``feed(data)`` and ``eof()`` return a
    ``(ok, detail)`` verdict once one is known, else None. It reads only what the
    verdict needs: the status and headers; the body only for a regex or a digest.
    ``rules``: the probe's ``HttpRules``, shared by its checks (made here if not given)."""

    __slots__ = ("_rules", "_buf", "_status", "_length", "_chunked")

    def __init__(self, probe: HttpProbe, rules: HttpRules | None = None) -> None:
        self._rules = HttpRules(probe) if rules is None else rules
        self._buf = b""
        self._status: int | None = None      # set once the head is complete
        self._length: int | None = None
        self._chunked = False

    def feed(self, data: bytes) -> tuple[bool, str] | None:
        buf = self._buf = self._buf + data
        interim = 0
        while self._status is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return (False, "bad response") if len(buf) > MAX_HEAD else None
            self._buf = buf[end + 4:]
            verdict = self._head(buf[:end])
            if verdict is not None:
                return verdict
            buf = self._buf
            interim += 1                     # a 1xx interim response: the real one follows
            if interim > 8:
                return (False, "bad response")
        return self._body(eof=False)

    def eof(self) -> tuple[bool, str]:
        if self._status is None:
            return (False, "disconnected")
        return self._body(eof=True) or (False, "bad body")

    def _head(self, head: bytes) -> tuple[bool, str] | None:
        line, _, fields = head.partition(b"\r\n")
        m = _STATUS_LINE.match(line)
        if m is None:
            return (False, "bad response")
        status = int(m[1])
        rules = self._rules
        verdict = rules.statuses.get(status)   # ``HttpRules.status``, inlined: once per check
        if verdict is None:
            if 100 <= status < 200 and status != 101:
                return None                  # interim (100 Continue, 103 Early Hints)
            verdict = rules.status(status)   # (never an interim one: that test runs once)
        self._status = status
        if not verdict[0] or not rules.body_needed:
            if _PLAIN_STATUS_LINE.match(line):
                rules.heads[line[:13]] = verdict
            return verdict
        if status == 101 or status in (204, 304):
            self._length = 0
            return None
        for line in fields.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    self._length = int(value.strip())
                except ValueError:
                    return (False, "bad response")
                if self._length < 0:
                    return (False, "bad response")
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        if self._chunked:
            self._length = None
        if self._length is not None and self._length > MAX_BODY:
            return (False, "body too large")
        return None

    def _body(self, eof: bool) -> tuple[bool, str] | None:
        buf = self._buf
        if self._chunked:
            if len(buf) > MAX_BODY + MAX_HEAD:
                return (False, "body too large")
            try:
                body = _dechunk(buf)
            except _BadBody:
                return (False, "bad body")
            if body is None:
                return (False, "bad body") if eof else None
        elif self._length is not None:
            if len(buf) < self._length:
                return (False, "bad body") if eof else None
            body = buf[:self._length]
        else:
            if len(buf) > MAX_BODY:
                return (False, "body too large")
            if not eof:
                return None
            body = buf
        if len(body) > MAX_BODY:
            return (False, "body too large")
        probe = self._rules.probe
        if probe.body_regex is not None and not _body_regex(probe.body_regex).search(body):
            return (False, "body mismatch")
        if probe.digest is not None and hashlib.md5(body).hexdigest() != probe.digest.lower():
            return (False, "digest mismatch")
        return (True, f"status {self._status}")


class HttpTarget(TcpTarget):
    """A plain-HTTP target: the TCP part plus the probe and its GET, encoded once."""

    __slots__ = ("probe", "request", "rules")

    def __init__(self, addr: str, port: int, probe: HttpProbe, timeout: float,
                 bind_to: IPAddress | str | None) -> None:
        super().__init__(addr, port, timeout, bind_to)
        self.probe = probe
        self.request = request_bytes(addr, port, probe)
        self.rules = HttpRules(probe)



class HttpCheck(_Check):
    """One plain-HTTP check: connect, send the GET once writable, read the response
    through ``HttpResponse``. HTTPS goes through ``_https``.

    The socket is watched edge-triggered for writing and reading from the start, so
    the switch from sending to reading costs no ``epoll_ctl``: an event comes when the
    connect completes and again when data, a close or an error arrives. Edge-triggered
    means each event must be acted on in full: what is readable is read until a read
    comes back short, or to the end when the event says the peer closed,
    and the event that completes the connect reads too when it already says readable
    (a server that answered or closed at once)."""

    __slots__ = ("_out", "_resp", "_rules")
    _EVENTS = _HTTP_EVENTS

    def __init__(self, poller: EpollChecks, target: HttpTarget, done: Done) -> None:
        self._resp: HttpResponse | None = None    # made by a first read the lookup cannot judge
        self._rules = target.rules
        self._out = target.request
        _Check.__init__(self, poller, target, done)

    def on_event(self, events: int, now: float) -> None:
        sock = self._sock
        out = self._out
        if out:
            if events & _FAILED:
                code = self._error()
                if code:
                    self._fail_errno(code)
                    return
            try:
                sent = sock.send(out)
            except (BlockingIOError, InterruptedError):
                return                       # room for it comes as a new event
            except OSError as exc:
                self._finish(os_result(exc, now - self._start))
                return
            self._out = out = out[sent:]
            if out or not events & _EPOLLIN:
                return                       # the rest, or the response, is a new event
        # Read, in the same method: once per check.
        while True:
            try:
                data = sock.recv(_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(os_result(exc, now - self._start))
                return
            resp = self._resp
            if resp is None:
                # A whole head in the first read, with a status line seen before: its
                # verdict by lookup (``HttpRules.heads``). Anything else: the parser.
                verdict = self._rules.heads.get(data[:13])
                if verdict is None or b"\r\n\r\n" not in data:
                    self._resp = resp = HttpResponse(self._rules.probe, self._rules)
                    verdict = resp.feed(data) if data else resp.eof()
            else:
                verdict = resp.feed(data) if data else resp.eof()
            if verdict is not None:
                # ``_finish`` and ``_close``, inlined: once per check (see TcpCheck.on_event).
                del self._poller._checks[self._fd]
                sock.close()
                self._fd, self._sock = -1, None
                done, self._done = self._done, None
                done(ProbeResult(verdict[0], verdict[1], now - self._start))
                return
            if len(data) < _READ and not events & _EPOLLRDHUP:
                return      # drained: more data, or the close, is a new edge
            # A full read, or the peer closed before this event: read on to the end
            # (eof() always decides), as no new edge would come for what is queued.


TcpTarget.check_type = TcpCheck
HttpTarget.check_type = HttpCheck


class _ResponseProtocol(asyncio.Protocol):
    """HTTPS: the same reader behind an SSL transport."""

    def __init__(self, resp: HttpResponse, request: bytes) -> None:
        self.resp, self.request = resp, request
        self.verdict: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)   # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.verdict.done():
            v = self.resp.feed(data)
            if v is not None:
                self.verdict.set_result(v)

    def eof_received(self) -> bool:
        if not self.verdict.done():
            self.verdict.set_result(self.resp.eof())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.verdict.done():
            if exc is None:
                self.verdict.set_result(self.resp.eof())
            else:
                self.verdict.set_exception(exc)


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: {exc.verify_message or 'certificate verify failed'}"
    return "tls: handshake failed"


async def _https(addr: str, port: int, probe: HttpProbe, timeout: float,
                 bind_to: IPAddress | str | None, clients: HttpClients) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    transport: asyncio.BaseTransport | None = None
    sock: socket.socket | None = None
    phase = "connect"
    try:
        ctx = clients.ssl_context(probe.verify_tls, probe.ca_file)
        sock = socket.socket(_family(addr), socket.SOCK_STREAM)
        sock.setblocking(False)
        if bind_to is not None:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((str(bind_to), 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (addr, port))
            phase = "tls"
            proto = _ResponseProtocol(HttpResponse(probe), request_bytes(addr, port, probe))
            # SNI and certificate name follow the virtual host, not the address.
            transport, _ = await loop.create_connection(
                lambda: proto, sock=sock, ssl=ctx, server_hostname=probe.host or addr,
                ssl_handshake_timeout=max(timeout, 0.001))
            sock = None                   # the transport owns it now
            phase = "http"
            ok, detail = await proto.verdict
        return ProbeResult(ok, detail, loop.time() - start)
    except TimeoutError:
        return ProbeResult(False, "timeout", loop.time() - start)
    except ssl.SSLError as exc:
        return ProbeResult(False, _tls_reason(exc), loop.time() - start)
    except OSError as exc:
        if phase == "tls" and exc.errno not in LOCAL_ERRNOS:
            return ProbeResult(False, "tls: handshake failed", loop.time() - start)
        return os_result(exc, loop.time() - start)
    except Exception as exc:
        return ProbeResult(False, f"error: {type(exc).__name__}: {exc}", loop.time() - start)
    finally:
        if transport is not None:
            transport.abort()
        if sock is not None:
            sock.close()


async def http_probe(addr: IPAddress | str, port: int, probe: HttpProbe, timeout: float,
                     bind_to: IPAddress | str | None = None,
                     clients: HttpClients | None = None) -> ProbeResult:
    """GET ``probe.path``; healthy when the status is in ``probe.status_codes`` and
    the body matches ``body_regex`` and/or ``digest`` (hex MD5, keepalived's HTTP_GET)."""
    host = str(ipaddress.ip_address(addr))
    if probe.tls:
        return await _https(host, port, probe, timeout, bind_to, clients or HttpClients())
    return await _wait(HttpTarget(host, port, probe, timeout, bind_to).start)


# --- script ---------------------------------------------------------------------------


async def script_probe(argv: Sequence[str], timeout: float, dynamic: bool = False) -> ProbeResult:
    """Run ``argv`` (no shell); healthy on exit 0. ``dynamic`` (keepalived's
    misc_dynamic): exit 2-255 is healthy too, with weight code - 2 (``result.weight``).

    ``kernel/spawn.py`` runs it: in its own session, its whole tree (children that called
    setsid too) killed and reaped on timeout or cancellation. Output goes to /dev/null:
    a pipe held open by a leftover grandchild would make a passing script look like a
    timeout.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        done = await spawn.run(argv, timeout)
    # The script did not run: this director's problem (a missing or non-executable
    # script, no process or descriptor to spare), not the server's -- inconclusive.
    except FileNotFoundError:
        return ProbeResult(False, "not found", loop.time() - start, inconclusive=True)
    except PermissionError:
        return ProbeResult(False, "permission denied", loop.time() - start, inconclusive=True)
    except OSError as exc:
        detail = "fork failed" if exc.errno == errno.EAGAIN else os_reason(exc)
        return ProbeResult(False, detail, loop.time() - start, inconclusive=True)
    except Exception as exc:
        return ProbeResult(False, f"error: {type(exc).__name__}: {exc}", loop.time() - start)
    if done.outcome == "timeout":
        return ProbeResult(False, "timeout", loop.time() - start)
    code = done.returncode
    elapsed = loop.time() - start
    if code == 0:
        return ProbeResult(True, "exit 0", elapsed)
    if dynamic and 2 <= code <= 255:
        return ProbeResult(True, f"exit {code}", elapsed, weight=code - 2)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return ProbeResult(False, f"killed by {name}", elapsed)
    return ProbeResult(False, f"exit {code}", elapsed)


# --- dispatch -------------------------------------------------------------------------


async def run_check(check: HealthCheck, addr: IPAddress, port: int,
                    clients: HttpClients | None = None) -> ProbeResult:
    """Run the probe ``check`` configures against ``addr:port``."""
    probe = check.probe
    if isinstance(probe, TcpProbe):
        return await tcp_probe(addr, port, check.timeout, check.bind_to)
    if isinstance(probe, HttpProbe):
        return await http_probe(addr, port, probe, check.timeout, check.bind_to, clients)
    if isinstance(probe, ScriptProbe):
        return await script_probe(probe.command, check.timeout, probe.dynamic)
    if isinstance(probe, DnsProbe):
        return await dns_probe(addr, port, probe, check.timeout, check.bind_to)
    if isinstance(probe, UdpProbe):
        return await udp_probe(addr, port, probe, check.timeout, check.bind_to)
    if isinstance(probe, PingProbe):
        return await ping_probe(addr, check.timeout, check.bind_to)
    if isinstance(probe, SmtpProbe):
        return await smtp_probe(addr, port, probe, check.timeout, check.bind_to)
    return ProbeResult(False, f"unsupported probe {type(probe).__name__}", 0.0)


class Probe(Protocol):
    def cancel(self) -> None: ...


class Starter(Protocol):
    def start(self, done: Done) -> Probe: ...


def prepare_probe(check: HealthCheck, addr: str, port: int) -> Starter | None:
    """What the runner keeps per target to start its check on the cheap path, worked out
    once: ``starter.start(done)`` starts one check, which calls ``done(result)`` once
    (maybe before ``start`` returns) unless ``cancel()`` is called first. None: this
    probe has no callback form (HTTPS, scripts, ...); await ``run_check`` instead."""
    probe = check.probe
    if isinstance(probe, TcpProbe):
        return TcpTarget(addr, port, check.timeout, check.bind_to)
    if isinstance(probe, HttpProbe) and not probe.tls:
        return HttpTarget(addr, port, probe, check.timeout, check.bind_to)
    return None


def start_probe(check: HealthCheck, addr: str, port: int, done: Done,
                clients: HttpClients | None = None) -> Probe | None:
    """``prepare_probe(check, addr, port).start(done)``, or None when the probe has no
    callback form (await ``run_check`` instead)."""
    target = prepare_probe(check, addr, port)
    return None if target is None else target.start(done)


class _Finished:
    """A check that ended before it started."""

    def cancel(self) -> None:
        pass


_FINISHED = _Finished()
