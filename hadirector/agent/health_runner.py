"""Runs every configured health check: the asyncio shell around ``hadirector.health``.

Theory of operation
-------------------
The decisions are made elsewhere and written once: ``CheckSchedule`` says when each
target's next check is due, ``HealthPolicy`` turns results into transitions (rise/fall),
the probes in ``health.probes`` do the I/O. This shell only wires them:

* one timer (``loop.call_later``) armed for the schedule's earliest deadline; when it
  fires, every due check starts as its own task, so a hanging server ties up only its
  own task, never the timer or the other checks;
* at most ``max_concurrency`` probes run at once (sockets, processes) and at most
  ``max_rate`` start per second (a token bucket): due checks beyond that wait in a FIFO
  -- no task exists for a check that is not running. The rate cap keeps the event loop,
  which VRRP shares, from being saturated by a large or misconfigured fleet: checks
  then run late (``snapshot().queued`` grows) instead of adverts. The schedule bounds
  each target (at most once per interval, never two at a time);
* when a probe returns, its result goes to the policy; a transition is logged once
  (``health.server_up`` / ``health.server_down``) and handed synchronously to
  ``on_transition(service_key, rs_key, new_state)`` so the IPVS layer can apply it in
  the same loop turn;
* ``update_config`` diffs old and new targets: unchanged checks keep state, counters and
  deadlines; a changed probe keeps the state but restarts its counts; removed targets
  are forgotten and their in-flight results ignored.

Targets are ``(VirtualService.key, RealServer.key)``. Sorry servers are tracked too
(always UP unless they have a check) but the IPVS layer decides when they are used.

Times: ``clock`` is monotonic seconds (default ``time.monotonic``, the same clock as the
asyncio loop). ``snapshot()`` converts to Unix seconds for operators.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import structlog

from hadirector.api.metrics import Histogram
from hadirector.api.snapshot import CheckResult, HealthTotals
from hadirector.health.policy import (
    HealthPolicy,
    HealthState,
    ProbeResult,
    ServerKey,
    ServiceKey,
    Target,
    Transition,
)
from hadirector.health.probes import HttpClients, run_check
from hadirector.health.schedule import CheckSchedule
from hadirector.model import Config, HealthCheck, IPAddress, RealServer, VirtualService, format_endpoint

OnTransition = Callable[[ServiceKey, ServerKey, HealthState], None]
# probe(check, address as text, port, shared HTTP clients) -> result
ProbeFn = Callable[[HealthCheck, str, int, HttpClients | None], Awaitable[ProbeResult]]

log = structlog.get_logger("hadirector.health")

DEFAULT_MAX_CONCURRENCY = 512
# Checks started per second. A TCP probe costs ~0.25 ms of CPU and an HTTP one ~0.9 ms
# (bench/health_checks.py), so this keeps checks to roughly half a core at most.
DEFAULT_MAX_RATE = 2000.0

@dataclass(frozen=True, slots=True)
class _Spec:
    """What to check for one target, as the current config says."""

    service: VirtualService
    server: RealServer
    check: HealthCheck | None
    address: IPAddress          # where the probe goes (check.address or the server's)
    port: int                   # check.port, else the server's, else the service's
    sorry: bool
    gen: int                    # bumps when the probe changes: older results are stale
    host: str = ""              # str(address), formatted once rather than per check

    @property
    def probe_identity(self) -> tuple | None:
        """Everything that decides what a probe observes (not when, not rise/fall)."""
        if self.check is None:
            return None
        return (self.check.probe, self.check.bind_to, self.check.timeout, self.address, self.port)

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.server.address, self.server.port)


@dataclass(slots=True, eq=False)
class _Slot:
    """A target's runtime handle. The schedule and the queue key on ``id`` (an int):
    hashing ``(service key, server key)`` tuples of ``ipaddress`` objects dominated the
    per-check cost at 10,000 targets."""

    id: int
    target: Target
    spec: _Spec


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


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    servers: tuple[ServerStatus, ...]
    totals: HealthTotals
    in_flight: int              # probes running now
    queued: int                 # due, waiting for a free slot (max_concurrency)
    scheduled: int


def _result_kind(result: ProbeResult) -> str:
    if result.ok:
        return "ok"
    if result.detail == "timeout":
        return "timeout"
    if result.detail.startswith("error:"):
        return "error"
    return "fail"


def _targets(config: Config) -> Iterator[tuple[Target, VirtualService, RealServer, bool]]:
    for vs in config.virtual_services:
        seen = set()
        for rs in vs.real_servers:
            seen.add(rs.key)
            yield (vs.key, rs.key), vs, rs, False
        if vs.sorry_server is not None and vs.sorry_server.key not in seen:
            yield (vs.key, vs.sorry_server.key), vs, vs.sorry_server, True


class HealthRunner:
    """Checks every real server of ``config``; reports transitions.

    Also the health view of the IPVS layer: ``state(service_key, rs_key)`` and
    ``ipvs_health(vs, rs)`` (the ``ipvs.table.HealthView`` signature).
    """

    def __init__(self, config: Config, on_transition: OnTransition | None = None,
                 clock: Callable[[], float] | None = None, *,
                 max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 max_rate: float | None = DEFAULT_MAX_RATE, seed: int | None = None,
                 probe: ProbeFn = run_check, wall_clock: Callable[[], float] = time.time,
                 warmup: float = 0.0) -> None:
        self._on_transition = on_transition
        self._clock = clock or time.monotonic
        self._wall = wall_clock
        self._probe = probe
        self._policy = HealthPolicy()
        self._schedule = CheckSchedule(seed)
        self._slots: dict[Target, _Slot] = {}
        self._by_id: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._gen = itertools.count(1)
        self._max_running = max(1, max_concurrency)
        # Token bucket: ``max_rate`` tokens a second, bursts of a tenth of a second.
        self._rate = max_rate if max_rate and max_rate > 0 else None
        self._burst = max(1.0, (self._rate or 0) / 10)
        self._tokens = self._burst
        self._tokens_at = self._clock()
        self._pump_timer: asyncio.TimerHandle | None = None
        self._queue: collections.deque[tuple[_Slot, _Spec]] = collections.deque()
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clients: HttpClients | None = None
        self._running = False
        self._kinds: collections.Counter[str] = collections.Counter()
        self._latency = Histogram()
        self._warmup = warmup        # spread first checks of new targets over this long
        self.config = config
        self._apply(config, self._clock())

    # --- health view -------------------------------------------------------------

    def state(self, service_key: ServiceKey, rs_key: ServerKey) -> HealthState:
        return self._policy.state(service_key, rs_key)

    def seed(self, service_key: ServiceKey, rs_key: ServerKey, state: HealthState) -> bool:
        """See ``HealthPolicy.seed``: a known state for a target with no result yet."""
        return self._policy.seed((service_key, rs_key), state, self._clock())

    def ipvs_health(self, vs: VirtualService, rs: RealServer) -> HealthState:
        """``ipvs.table.HealthView``: pass ``runner.ipvs_health`` to ``desired_table``."""
        return self._policy.state(vs.key, rs.key)

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._clients = HttpClients()
        self._running = True
        self._arm()

    async def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        # Queued and cancelled checks count as finished, so a later start() finds
        # every target scheduled again.
        now = self._clock()
        for slot, _spec in self._queue:
            self._schedule.finished(slot.id, now)
        self._queue.clear()
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._clients is not None:
            await self._clients.close()
            self._clients = None

    async def __aenter__(self) -> HealthRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- reload ------------------------------------------------------------------

    def update_config(self, new_config: Config) -> None:
        """Switch to ``new_config``, keeping the state of every check that stayed."""
        self._apply(new_config, self._clock())
        self.config = new_config
        if self._running:
            self._arm()

    def _apply(self, config: Config, now: float) -> None:
        wanted: dict[Target, _Spec] = {}
        for target, vs, rs, sorry in _targets(config):
            check = rs.check
            address = (check.address if check and check.address else None) or rs.address
            port = (check.port if check and check.port else None) or rs.port
            wanted[target] = _Spec(vs, rs, check, address, port, sorry, 0, str(address))

        for target in [t for t in self._slots if t not in wanted]:
            slot = self._slots.pop(target)
            del self._by_id[slot.id]
            self._policy.forget(target)
            self._schedule.remove(slot.id)

        for target, spec in wanted.items():
            slot = self._slots.get(target)
            if slot is None:
                slot = _Slot(next(self._ids), target, _replace_gen(spec, next(self._gen)))
                self._slots[target] = self._by_id[slot.id] = slot
                self._policy.track(target, spec.check, now)
                if spec.check is not None:
                    self._schedule.add(slot.id, spec.check, now, self._warmup)
                continue
            old = slot.spec
            if old.probe_identity == spec.probe_identity:
                slot.spec = _replace_gen(spec, old.gen)
                if spec.check is not None and spec.check != old.check:
                    self._policy.retune(target, spec.check, now)
                    self._schedule.retune(slot.id, spec.check, now)
                continue
            # The probe changed: results of the old one (maybe in flight) are stale.
            slot.spec = spec = _replace_gen(spec, next(self._gen))
            self._schedule.remove(slot.id)
            transition = self._policy.retune(target, spec.check, now, reset=True)
            if spec.check is not None:
                self._schedule.add(slot.id, spec.check, now)
            log.info("health.check_replaced", service=spec.service.name, server=spec.endpoint,
                     state=self._policy.state(*target).value)
            if transition is not None:
                self._report(spec, transition)

    # --- the timer and the checks ------------------------------------------------

    def _arm(self) -> None:
        deadline = self._schedule.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= deadline:
            return                       # fires earlier; it re-arms then
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        due_at = self._timer_at
        self._timer = self._timer_at = None
        if not self._running:
            return
        # The loop may fire a hair early (its clock resolution): the armed deadline is
        # due by definition.
        now = max(self._clock(), due_at or 0.0)
        by_id = self._by_id
        for sid in self._schedule.pop_due(now):
            slot = by_id[sid]
            self._queue.append((slot, slot.spec))
        self._pump()
        self._arm()

    def _pump(self) -> None:
        """Start queued checks while fewer than ``max_concurrency`` run and the rate
        allows; if only the rate holds them back, come back when a token is due."""
        queue, loop = self._queue, None
        while queue and len(self._tasks) < self._max_running:
            slot, spec = queue[0]
            if slot.spec.gen != spec.gen or self._by_id.get(slot.id) is not slot:
                queue.popleft()              # removed or re-probed while queued
                continue
            if self._rate is not None and not self._take_token():
                if self._pump_timer is None:
                    wait = (1.0 - self._tokens) / self._rate
                    self._pump_timer = asyncio.get_running_loop().call_later(wait, self._pump_later)
                return
            queue.popleft()
            loop = loop or asyncio.get_running_loop()
            task = loop.create_task(self._run(slot, spec))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _take_token(self) -> bool:
        now = self._clock()
        assert self._rate is not None
        self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _pump_later(self) -> None:
        self._pump_timer = None
        if self._running:
            self._pump()

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._running:
            self._pump()

    async def _run(self, slot: _Slot, spec: _Spec) -> None:
        assert spec.check is not None
        try:
            result = await self._probe(spec.check, spec.host, spec.port, self._clients)
        except asyncio.CancelledError:
            if slot.spec.gen == spec.gen and self._by_id.get(slot.id) is slot:
                self._schedule.finished(slot.id, self._clock())
            raise
        except Exception as exc:     # a probe must not raise; if one does, it failed
            result = ProbeResult(False, f"error: {type(exc).__name__}: {exc}", 0.0)
        self._complete(slot, spec, result)

    def _complete(self, slot: _Slot, spec: _Spec, result: ProbeResult) -> None:
        if slot.spec.gen != spec.gen or self._by_id.get(slot.id) is not slot:
            return                           # removed or re-probed while it ran
        now = self._clock()
        self._kinds[_result_kind(result)] += 1
        self._latency.observe(result.elapsed)
        transition = self._policy.record(slot.target, result, now)
        retry = False
        if not result.ok:
            health = self._policy.get(slot.target)
            retry = health is not None and health.state is not HealthState.DOWN
        self._schedule.finished(slot.id, now, retry=retry)
        if transition is not None:
            self._report(slot.spec, transition)
        if self._running:
            self._arm()

    def _report(self, spec: _Spec, t: Transition) -> None:
        event = "health.server_up" if t.new is HealthState.UP else "health.server_down"
        log.info(event, service=spec.service.name, server=spec.endpoint, old=t.old.value,
                 new=t.new.value, reason=t.reason, latency=round(t.latency, 6), count=t.count)
        if self._on_transition is not None:
            try:
                self._on_transition(t.service_key, t.rs_key, t.new)
            except Exception as exc:
                log.exception("health.callback_failed", service=spec.service.name,
                              server=spec.endpoint, reason=f"{type(exc).__name__}: {exc}")

    # --- status ------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        now, wall = self._clock(), self._wall()

        def to_wall(t: float | None) -> float | None:
            return None if t is None else wall - (now - t)

        rows = []
        for target, slot in self._slots.items():
            spec = slot.spec
            h = self._policy.get(target)
            if h is None:
                continue
            last = None
            if h.last is not None:
                last = CheckResult(h.last.ok, h.last.detail, h.last.elapsed, to_wall(h.last_at))
            deadline = self._schedule.deadline(slot.id)
            rows.append(ServerStatus(
                service=spec.service.name, service_key=target[0], rs_key=target[1],
                server=spec.endpoint, sorry=spec.sorry, checked=h.checked, state=h.state,
                since=to_wall(h.changed_at), rise=h.rise, fall=h.fall, successes=h.successes,
                failures=h.failures, checks=h.checks, transitions=h.transitions, last=last,
                next_check_in=None if deadline is None else max(0.0, deadline - now),
            ))
        totals = HealthTotals(checks=dict(self._kinds), latency=self._latency.snapshot())
        return HealthSnapshot(tuple(rows), totals, len(self._tasks), len(self._queue),
                              len(self._schedule))


def _replace_gen(spec: _Spec, gen: int) -> _Spec:
    return _Spec(spec.service, spec.server, spec.check, spec.address, spec.port, spec.sorry, gen,
                 spec.host)
