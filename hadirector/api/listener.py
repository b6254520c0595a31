"""An accept loop that a local user cannot use to starve the agent (asyncio shell).

Theory of operation: asyncio's own server accepts up to 100 connections per loop turn,
never refuses one, has no deadline for a client that sends nothing, and on EMFILE logs
a traceback for every failed ``accept()`` of the batch. 1,100 idle connections from an
unprivileged user therefore used to take every descriptor of the agent (health checks
and reloads then failed with EMFILE) and write 30 MB of tracebacks.

``BoundedListener`` owns a listening socket and does the accepting itself:

* at most ``max_connections`` connections at once. When full, a new connection takes
  the place of the one that has waited longest without a request in progress
  (``limits.Waiting``): an idle slowloris connection is shed, a real client whose
  request is being answered is not; if every connection is busy the new one is closed
  (with ``shed_oldest=False``, the new one is always the one closed);
* deadlines (``limits.expired``): a connection must complete its request headers within
  ``header_timeout`` of being accepted (trickling bytes does not extend it), may stay
  idle between requests for ``idle_timeout``, and a request (with its response) may
  take ``request_timeout``. One ``call_at`` timer, re-armed at the earliest deadline;
* with ``request_end`` (``b"\r\n\r\n"`` for HTTP) the listener reads each new
  connection's request head itself, into a buffer of at most ``HEAD_BYTES``, and only a
  connection that completes it gets a transport and a protocol (which receive the
  buffered bytes first). A slowloris connection therefore costs a socket and a few
  bytes, never an HTTP parser: shedding it is a ``close()``, so the agent gets through a
  flood's accept queue fast enough to reach a real client in it. A connection counts as
  busy from the moment its head is complete, before the protocol's handler runs
  (several loop turns, in which a flood could otherwise shed it); later requests on a
  kept-alive connection are seen in the bytes its protocol receives;
* at most ``accept_batch`` accepts per readiness event, so the loop keeps turning for
  VRRP and health checks during a flood;
* an accept that fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses
  accepting for ``pause`` seconds (Linux keeps reporting the socket readable), and every
  accept failure and every shed or expired connection is counted and logged once per
  ``report_interval`` (``api.accept_failed``, ``api.connections_dropped``, with the
  count and the reason), never once per event.

The protocol layered on top (aiohttp's request handler, the control protocol) reports
``request_started`` / ``request_finished`` with its transport.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hadirector.api.limits import BUSY, IDLE, NEW, ConnView, Throttle, Waiting, expired

# Accept errors that mean "no descriptor / no memory right now": retrying at once
# fails again (and Linux keeps the socket readable), so accepting pauses.
EXHAUSTION = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_nofile_limit() -> tuple[int, int, int, str]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft limit, 1024, is
    for select()-era programs; the agent uses epoll). Returns (old soft, new soft,
    hard, reason); reason is "" when raised or already at the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == target:
        return soft, soft, hard, ""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        return soft, soft, hard, f"{type(e).__name__}: {e}"
    return soft, target, hard, ""


@dataclass(eq=False)
class _Conn:
    sock: socket.socket | None
    state: str
    since: float
    transport: asyncio.BaseTransport | None = None
    dropped: bool = False
    head: bytes | None = None   # with request_end: read so far, before a transport exists
    reading: bool = False       # the listener itself is reading the head
    tail: bytes = b""           # the last bytes received, to find a request end split across reads

    def view(self) -> ConnView["_Conn"]:
        return ConnView(self, self.state, self.since)


class _Watched(asyncio.Protocol):
    """The connection's own protocol, given the bytes the listener read before it
    existed (``prefix``), then every byte it receives, shown to the listener first
    (``seen``); ``lost`` tells the listener the connection is gone. Every callback a
    transport makes is passed on unchanged."""

    def __init__(self, inner: asyncio.Protocol, seen: Callable[[bytes], None] | None,
                 lost: Callable[[], None], prefix: bytes) -> None:
        self.inner, self.seen, self.lost, self.prefix = inner, seen, lost, prefix

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        if self.prefix:
            prefix, self.prefix = self.prefix, b""
            self.inner.data_received(prefix)

    def data_received(self, data: bytes) -> None:
        if self.seen is not None:
            self.seen(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


# The most the listener reads of a request head itself: a longer head is handed to the
# protocol unfinished (aiohttp's own limits then apply), as a connection that is not busy.
HEAD_BYTES = 8192


class BoundedListener:
    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol], *,
                 log: Any, area: str = "api", max_connections: int = 64,
                 header_timeout: float = 5.0, idle_timeout: float = 5.0,
                 request_timeout: float = 10.0, accept_batch: int = 8, pause: float = 1.0,
                 report_interval: float = 10.0, shed_oldest: bool = True,
                 request_end: bytes | None = None) -> None:
        self.sock = sock
        self._factory = protocol_factory
        self.log = log
        self.area = area
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.accept_batch = accept_batch
        self.pause = pause
        self.shed_oldest = shed_oldest
        self.request_end = request_end
        self._conns: set[_Conn] = set()
        self._waiting: Waiting[_Conn] = Waiting()
        self._by_transport: dict[asyncio.BaseTransport, _Conn] = {}
        self._tasks: set[asyncio.Task] = set()
        self._accept_errors = Throttle(report_interval)
        self._drops = Throttle(report_interval)
        self._timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self.accepted = 0               # counters for status, metrics and tests
        self.dropped: dict[str, int] = {}
        self.accept_failures: dict[str, int] = {}
        self.pauses = 0                 # accepting paused for lack of descriptors / memory

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._start_reading()

    async def close(self) -> None:
        if self._loop is None:
            return
        self._stop_reading()
        for handle in (self._timer, self._resume):
            if handle is not None:
                handle.cancel()
        self._timer = self._resume = None
        self.sock.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in list(self._conns):
            self._close(c)
        self._conns.clear()
        self._by_transport.clear()
        self._flush_reports(force=True)
        self._loop = None

    @property
    def connections(self) -> int:
        return len([c for c in self._conns if not self._is_closed(c)])

    # --- hooks for the protocol -------------------------------------------------------

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        self._set_state(transport, BUSY)

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        self._set_state(transport, IDLE)

    def _set_state(self, transport: asyncio.BaseTransport | None, state: str) -> None:
        conn = self._by_transport.get(transport) if transport is not None else None
        if conn is None or self._loop is None:
            return
        self._enter(conn, state, self._loop.time())
        self._arm()

    def _enter(self, conn: _Conn, state: str, now: float) -> None:
        conn.state, conn.since = state, now
        self._waiting.enter(conn, state, now)

    # --- accepting --------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and self._loop is not None:
            self._loop.add_reader(self.sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for _ in range(self.accept_batch):
            try:
                conn_sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                reason = errno.errorcode.get(e.errno or 0, type(e).__name__)
                self.accept_failures[reason] = self.accept_failures.get(reason, 0) + 1
                self._report(self._accept_errors.note(reason, now), "api.accept_failed")
                if e.errno in EXHAUSTION:
                    self.pauses += 1
                    self._stop_reading()
                    self._resume = self._loop.call_later(self.pause, self._resume_reading)
                    break
                continue        # ECONNABORTED and the like: that client is gone
            self.accepted += 1
            # Its own time, not the batch's: the oldest of a batch is shed first.
            self._admit(conn_sock, self._loop.time())
        self._arm()

    def _resume_reading(self) -> None:
        self._resume = None
        self._start_reading()

    def _admit(self, conn_sock: socket.socket, now: float) -> None:
        # O(1) per connection: a flood brings thousands a second, all through here.
        if len(self._conns) >= self.max_connections:
            victim = self._waiting.oldest() if self.shed_oldest else None
            if victim is None:
                conn_sock.close()
                self._note_drop("all_busy" if self.shed_oldest else "at_capacity", now)
                return
            self._drop(victim, "at_capacity", now)
        conn = _Conn(sock=conn_sock, state=NEW, since=now)
        self._conns.add(conn)
        self._waiting.enter(conn, NEW, now, silent=self.request_end is not None)
        if self.request_end is None:
            self._start_wiring(conn)
            return
        conn_sock.setblocking(False)
        conn.head = b""
        if not self._read_head(conn):       # its request is often queued already
            self._loop.add_reader(conn_sock.fileno(), self._on_head, conn)
            conn.reading = True

    def _on_head(self, conn: _Conn) -> None:
        if self._read_head(conn):
            self._stop_head(conn)

    def _stop_head(self, conn: _Conn) -> None:
        if conn.reading and conn.sock is not None and self._loop is not None:
            self._loop.remove_reader(conn.sock.fileno())
        conn.reading = False

    def _read_head(self, conn: _Conn) -> bool:
        """Reads what the client sent; True once the connection leaves the head phase
        (its head is complete or too long, and it is being wired; or it is gone)."""
        sock, end = conn.sock, self.request_end
        assert sock is not None and conn.head is not None and end is not None and self._loop
        try:
            data = sock.recv(HEAD_BYTES - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:                        # closed (or reset) before finishing a request
            self._stop_head(conn)
            sock.close()
            conn.sock, conn.dropped = None, True
            self._forget(conn)
            return True
        if not conn.head:                   # its first bytes: no longer silent
            self._waiting.enter(conn, NEW, conn.since)
        conn.head += data
        if end in conn.head:
            self._enter(conn, BUSY, self._loop.time())
        elif len(conn.head) < HEAD_BYTES:
            return False
        else:
            conn.tail = conn.head[-(len(end) - 1):] if len(end) > 1 else b""
        self._stop_head(conn)
        self._start_wiring(conn)
        self._arm()
        return True

    def _start_wiring(self, conn: _Conn) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._wire(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wire(self, conn: _Conn) -> None:
        sock = conn.sock
        assert sock is not None and self._loop is not None
        try:
            sock.setblocking(False)
            prefix, conn.head = conn.head or b"", None
            seen = (lambda data: self._seen(conn, data)) if self.request_end is not None else None
            transport, _ = await self._loop.connect_accepted_socket(
                lambda: _Watched(self._factory(), seen, lambda: self._forget(conn), prefix),
                sock=sock)
        except asyncio.CancelledError:
            sock.close()        # closing: asyncio closes a half-made transport itself
            raise
        except (OSError, RuntimeError) as e:
            sock.close()
            self._forget(conn)
            self._note_drop(f"setup_failed_{type(e).__name__}", self._loop.time())
            return
        conn.sock = None
        conn.transport = transport
        if conn.dropped:
            transport.abort()
            return
        self._by_transport[transport] = conn
        self._arm()             # its deadline counts from the accept

    def _seen(self, conn: _Conn, data: bytes) -> None:
        end = self.request_end
        assert end is not None
        if conn.state == BUSY:
            return
        window = conn.tail + data
        conn.tail = window[-(len(end) - 1):] if len(end) > 1 else b""
        if end in window and self._loop is not None:
            conn.tail = b""
            self._enter(conn, BUSY, self._loop.time())
            self._arm()

    # --- shedding and deadlines ---------------------------------------------------------

    @staticmethod
    def _is_closed(c: _Conn) -> bool:
        return c.dropped or (c.transport is not None and c.transport.is_closing())

    def _prune(self) -> None:
        for c in [c for c in self._conns if self._is_closed(c)]:
            self._forget(c)

    def _forget(self, c: _Conn) -> None:
        self._conns.discard(c)
        self._waiting.leave(c)
        if c.transport is not None:
            self._by_transport.pop(c.transport, None)

    def _close(self, c: _Conn) -> None:
        c.dropped = True
        if c.transport is not None:
            c.transport.abort()
        elif c.reading:                     # still reading its head: a bare socket
            self._stop_head(c)
            assert c.sock is not None
            c.sock.close()
            c.sock = None
        # Before its transport exists the socket belongs to _wire, which sees
        # ``dropped`` and aborts the transport it gets.

    def _drop(self, c: _Conn, reason: str, now: float) -> None:
        self._close(c)
        self._forget(c)
        self._note_drop(reason, now)

    def _note_drop(self, reason: str, now: float) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._report(self._drops.note(reason, now), "api.connections_dropped")

    def _arm(self) -> None:
        """One timer at the earliest deadline (a connection's, or a pending report's)."""
        if self._loop is None:
            return
        limit = {NEW: self.header_timeout, IDLE: self.idle_timeout, BUSY: self.request_timeout}
        due = [c.since + limit[c.state] for c in self._conns if c.transport is not None or c.reading]
        due += [d for d in (self._accept_errors.next_due(), self._drops.next_due()) if d is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due:
            self._timer = self._loop.call_at(min(due), self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        self._prune()
        views = [c.view() for c in self._conns if c.transport is not None or c.reading]
        for conn, reason in expired(views, now, header_timeout=self.header_timeout,
                                    idle_timeout=self.idle_timeout,
                                    request_timeout=self.request_timeout):
            self._drop(conn, reason, now)
        self._flush_reports()
        self._arm()

    # --- reporting ----------------------------------------------------------------------

    def _flush_reports(self, force: bool = False) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        for throttle, event in ((self._accept_errors, "api.accept_failed"),
                                (self._drops, "api.connections_dropped")):
            self._report(throttle.drain(now) if force else throttle.flush(now), event)

    def _report(self, report, event: str) -> None:
        if report is None:
            return
        reason = max(report.counts, key=report.counts.get)
        fields = dict(listener=self.area, count=report.total, reason=reason,
                      counts=report.counts, seconds=round(report.since, 1),
                      connections=len(self._conns), max_connections=self.max_connections)
        if event == "api.accept_failed":
            self.log.warning(event, **fields)
        else:
            self.log.info(event, **fields)
