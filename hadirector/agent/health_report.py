"""What the health runner tells others: transitions and weight changes (logged once and
handed to the IPVS layer), totals of every check (metrics), and the status rows.

``HealthRunner`` (agent/health_runner.py) decides nothing here and keeps no state here
but the counters: these are the read-out parts split from it so that the runner itself
stays the timer, the queue and the probes (issue 11: no class over ~300 lines).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from hadirector.api.metrics import Histogram
from hadirector.health.policy import (
    HealthPolicy, HealthState, ProbeResult, ServerKey, ServiceKey, Transition, result_kind,
)
from hadirector.health.schedule import CheckSchedule

if TYPE_CHECKING:
    from hadirector.api.snapshot import CheckResult, HealthTotals, HealthWorkerStatus
    from hadirector.model import HealthEngine

    from .health_runner import _Slot, _Spec

# The status model (api.snapshot) is imported where a row or a total is built, on a
# status read: not before the VRRP machines start (tests/unit/test_startup_imports.py).

OnTransition = Callable[[ServiceKey, ServerKey, HealthState], None]

log = structlog.get_logger("hadirector.health")

# health.check_inconclusive: at most one line per reason this often, with a count of the
# ones not logged.
INCONCLUSIVE_LOG_EVERY = 10.0


class Reporter:
    """Logs a transition or a weight change once and hands it to ``on_transition``; a
    callback that raises is logged, never propagated into the runner."""

    def __init__(self, on_transition: OnTransition | None) -> None:
        self.on_transition = on_transition

    def transition(self, spec: _Spec, t: Transition) -> None:
        event = "health.server_up" if t.new is HealthState.UP else "health.server_down"
        log.info(event, service=spec.service.name, server=spec.endpoint, old=t.old.value,
                 new=t.new.value, reason=t.reason, latency=round(t.latency, 6), count=t.count)
        self._hand_on(spec, t.service_key, t.rs_key, t.new)

    def weight(self, slot: _Slot, before: int | None, result: ProbeResult) -> None:
        """A dynamic check changed an UP server's weight: handed on like a transition to
        the same state, so the IPVS layer edits that one destination."""
        spec, configured = slot.spec, slot.spec.server.weight
        log.info("health.weight_changed", service=spec.service.name, server=spec.endpoint,
                 old=configured if before is None else before,
                 new=configured if result.weight is None else result.weight, reason=result.detail)
        self._hand_on(spec, slot.target[0], slot.target[1], HealthState.UP)

    def _hand_on(self, spec: _Spec, service_key: ServiceKey, rs_key: ServerKey, new: HealthState) -> None:
        if self.on_transition is None:
            return
        try:
            self.on_transition(service_key, rs_key, new)
        except Exception as exc:
            log.exception("health.callback_failed", service=spec.service.name,
                          server=spec.endpoint, reason=f"{type(exc).__name__}: {exc}")


class CheckTotals:
    """Every check's outcome by kind, the latency of those that reached a server, and
    the inconclusive ones by reason, each reason logged at a bounded rate (a director
    out of descriptors would otherwise log thousands of lines a second)."""

    def __init__(self, policy: HealthPolicy) -> None:
        self._policy = policy               # for the state in the inconclusive log line
        self.kinds: collections.Counter[str] = collections.Counter()
        self.inconclusive: collections.Counter[str] = collections.Counter()
        # reason -> (when it was last logged, inconclusive results not logged since)
        self._inconclusive_log: dict[str, tuple[float, int]] = {}
        self.latency = Histogram()

    def count(self, result: ProbeResult) -> None:
        # The common case, a conclusive ok, is counted without the call.
        self.kinds["ok" if result.ok and not result.inconclusive else result_kind(result)] += 1
        if not result.inconclusive:         # how long the server took; this did not reach it
            self.latency.observe(result.elapsed)

    def add(self, kinds: dict[str, int], latency: tuple[int, ...], latency_sum: float) -> None:
        """A checker worker's batch: results by kind, the latencies of the conclusive ones
        as counts per bucket (``wire.latency_counts``) and their sum."""
        self.kinds.update(kinds)
        if latency:
            self.latency.merge(latency, latency_sum)

    def note_inconclusive(self, slot: _Slot, result: ProbeResult, now: float, n: int = 1) -> None:
        """``n`` such results (a worker's batch counts them by reason)."""
        spec, reason = slot.spec, result.detail
        self.inconclusive[reason] += n
        logged_at, suppressed = self._inconclusive_log.get(reason, (None, 0))
        if logged_at is not None and now - logged_at < INCONCLUSIVE_LOG_EVERY:
            self._inconclusive_log[reason] = (logged_at, suppressed + n)
            return
        self._inconclusive_log[reason] = (now, n - 1)
        log.warning("health.check_inconclusive", service=spec.service.name, server=spec.endpoint,
                    reason=reason, suppressed=suppressed, total=self.inconclusive[reason],
                    state=self._policy.state(*slot.target).value)

    def totals(self, engine: HealthEngine, worker: HealthWorkerStatus | None = None) -> HealthTotals:
        """The counts, with the runner's engine and its worker's status (engine worker)."""
        from hadirector.api.snapshot import HealthTotals

        return HealthTotals(checks=dict(self.kinds), latency=self.latency.snapshot(),
                            inconclusive=dict(self.inconclusive), engine=engine, worker=worker)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One row of ``HealthRunner.snapshot()``."""

    service: str
    service_key: ServiceKey
    rs_key: ServerKey
    server: str                 # "10.0.0.1:80"
    sorry: bool
    checked: bool               # False: no check configured, always UP
    state: HealthState
    since: float | None         # Unix seconds of the last state change (or of tracking)
    rise: int
    fall: int
    successes: int              # consecutive
    failures: int               # consecutive
    checks: int
    transitions: int
    last: CheckResult | None
    next_check_in: float | None  # seconds; None while running or unchecked
    inconclusive: int = 0       # probes that could not run here (not in ``checks``)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    servers: tuple[ServerStatus, ...]
    totals: HealthTotals
    in_flight: int              # probes running now
    queued: int                 # due, waiting for a free slot (max_concurrency)
    scheduled: int


def server_rows(slots: Iterable[_Slot], policy: HealthPolicy, schedule: CheckSchedule,
                now: float, wall: float) -> tuple[ServerStatus, ...]:
    """The status of every tracked target; times in Unix seconds (``now`` is the
    runner's monotonic clock, ``wall`` the Unix time at that instant)."""

    from hadirector.api.snapshot import CheckResult

    def to_wall(t: float | None) -> float | None:
        return None if t is None else wall - (now - t)

    rows = []
    for slot in slots:
        spec, target = slot.spec, slot.target
        h = policy.get(target)
        if h is None:
            continue
        last = None
        if h.last is not None:
            last = CheckResult(h.last.ok, h.last.detail, h.last.elapsed, to_wall(h.last_at),
                               h.last.inconclusive)
        deadline = schedule.deadline(slot.id)
        rows.append(ServerStatus(
            service=spec.service.name, service_key=target[0], rs_key=target[1],
            server=spec.endpoint, sorry=spec.sorry, checked=h.checked, state=h.state,
            since=to_wall(h.changed_at), rise=h.rise, fall=h.fall, successes=h.successes,
            failures=h.failures, checks=h.checks, transitions=h.transitions, last=last,
            next_check_in=None if deadline is None else max(0.0, deadline - now),
            inconclusive=h.inconclusive,
        ))
    return tuple(rows)
