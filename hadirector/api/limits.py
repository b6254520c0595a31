"""Pure limits for the local API: how often to log, how often to reload, who to shed.

No I/O and no clock: every call takes ``now`` (seconds, any monotonic origin), so the
tests drive them with a fake clock.

* ``Throttle`` turns a stream of identical failures (a refused accept, a refused
  request) into one report per interval carrying the count: a flood of 68,000
  connection attempts becomes a handful of log lines, not 68,000 tracebacks.
* ``TokenBucket`` bounds state-changing requests (reload): ``burst`` at once, then
  ``rate`` per second; a refusal says how long to wait.
* ``Waiting`` says which connection to drop when the HTTP side is full: the one that
  has waited longest without a request in progress. A slowloris connection never
  completes its headers, so it is always a candidate, while a real client whose
  request is being answered is never cut off. It answers in O(1): during a flood it is
  asked once per accepted connection.
* ``connection_budget`` is how many connections the API may hold given the process's
  file-descriptor limit, so the API can never take the descriptors that VRRP, health
  checks and notify scripts need.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# --- log throttling -------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What happened since the last report: ``counts`` per reason, over ``since`` s."""

    counts: dict[str, int]
    since: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Throttle:
    """At most one report per ``interval``; the first event is reported at once.

    ``note(reason, now)`` returns a ``Report`` when one is due (the first event after a
    quiet interval, or when ``interval`` has passed since the last report), else None
    and the event is counted. ``flush(now)`` returns what is still counted once the
    interval has passed (call it from a timer so a burst's tail is reported too).
    """

    interval: float = 10.0
    _pending: dict[str, int] = field(default_factory=dict)
    _last: float | None = None

    def note(self, reason: str, now: float) -> Report | None:
        self._pending[reason] = self._pending.get(reason, 0) + 1
        return self.flush(now)

    def flush(self, now: float) -> Report | None:
        if not self._pending:
            return None
        if self._last is not None and now - self._last < self.interval:
            return None
        report = Report(dict(self._pending), 0.0 if self._last is None else now - self._last)
        self._pending.clear()
        self._last = now
        return report

    def drain(self, now: float) -> Report | None:
        """Whatever is counted, due or not (at shutdown)."""
        if not self._pending:
            return None
        self._last, last = now, self._last
        report = Report(dict(self._pending), 0.0 if last is None else now - last)
        self._pending.clear()
        return report

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def next_due(self) -> float | None:
        """When ``flush`` can next report the pending count (None: nothing pending)."""
        if not self._pending:
            return None
        return self._last + self.interval if self._last is not None else 0.0


# --- rate limiting ----------------------------------------------------------------------


@dataclass
class TokenBucket:
    """``burst`` requests at once, refilled at ``rate`` per second.

    ``take(now)`` returns 0.0 and spends a token when one is there, else the number of
    seconds until the next token (nothing is spent).
    """

    rate: float = 1.0
    burst: int = 2
    _tokens: float | None = None
    _at: float = 0.0

    def take(self, now: float) -> float:
        if self._tokens is None:
            self._tokens, self._at = float(self.burst), now
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


# --- connection admission ----------------------------------------------------------------

C = TypeVar("C")


NEW, BUSY, IDLE = "new", "busy", "idle"


@dataclass(frozen=True)
class ConnView(Generic[C]):
    """A connection as the admission policy sees it: ``NEW`` (accepted, no complete
    request yet), ``BUSY`` (a request is being handled) or ``IDLE`` (between requests);
    ``since`` is when it entered that state."""

    key: C
    state: str
    since: float


class Waiting(Generic[C]):
    """The connections without a request in progress, in the order to shed them.

    First the longest-waiting of those that began a request and stopped (a slowloris
    sends a few header bytes and never finishes) or sit idle between requests; only
    then one that has sent nothing yet (``silent``): a real client's request is often
    a moment behind its connect, and under a flood 64 newer connections can arrive in
    that moment. A flood that sends nothing at all is still shed oldest first.

    ``enter`` is called whenever a connection changes state and when a silent one
    sends its first bytes, ``leave`` when it closes; the order within each group is the
    order of entering it. ``oldest`` is the one to drop for a new one when full (None
    if every connection is busy). O(1) each: during a flood it is asked once per
    accepted connection."""

    def __init__(self) -> None:
        self._talked: OrderedDict[C, float] = OrderedDict()
        self._silent: OrderedDict[C, float] = OrderedDict()

    def enter(self, key: C, state: str, since: float, *, silent: bool = False) -> None:
        self.leave(key)
        if state != BUSY:
            (self._silent if silent else self._talked)[key] = since

    def leave(self, key: C) -> None:
        self._talked.pop(key, None)
        self._silent.pop(key, None)

    def oldest(self) -> C | None:
        for group in (self._talked, self._silent):
            if group:
                return next(iter(group))
        return None

    def __len__(self) -> int:
        return len(self._talked) + len(self._silent)


def expired(conns: Iterable[ConnView[C]], now: float, *, header_timeout: float,
            idle_timeout: float, request_timeout: float) -> list[tuple[C, str]]:
    """Connections past their deadline, with the reason: ``header_timeout`` for one
    that has not completed a request since it was accepted (however slowly it
    trickles bytes), ``idle_timeout`` between requests, ``request_timeout`` for a
    request (or its response) that takes too long."""
    limit = {NEW: header_timeout, IDLE: idle_timeout, BUSY: request_timeout}
    reason = {NEW: "header_timeout", IDLE: "idle_timeout", BUSY: "request_timeout"}
    return [(c.key, reason[c.state]) for c in conns if now - c.since >= limit[c.state]]


# Of the process's descriptors, the API may use at most this share; the rest is kept
# for what must never fail (VRRP and GARP sockets, health-check probes, netlink, notify
# and check scripts' pipes).
API_FD_SHARE = 16


def connection_budget(nofile_soft: int, wanted: int) -> int:
    """How many concurrent HTTP connections to allow: ``wanted``, but never more than
    1/API_FD_SHARE of the descriptor limit (and at least 4, so status still works on
    a tiny limit)."""
    return max(4, min(wanted, nofile_soft // API_FD_SHARE))
