"""Runs every configured health check: the asyncio shell around ``hadirector.health``.

Theory of operation
-------------------
The decisions are made elsewhere and written once: ``CheckSchedule`` says when each
target's next check is due, ``HealthPolicy`` turns results into transitions (rise/fall),
the probes in ``health.probes`` do the I/O. This shell only wires them:

* one timer (``loop.call_later``) armed for the schedule's earliest deadline; when it
  fires, every due check starts at once. TCP and plain-HTTP checks start through the
  target's starter (``probes.prepare_probe``, made once per target with its socket
  address and request): a callback object on a non-blocking socket, no task (a task,
  its coroutine and its future were half the CPU of a check -- issue 13), reporting to
  the target's ``_Run`` (one per target and probe generation, not one closure per
  check); the other probes (HTTPS, scripts, a ``probe=`` given by a test) run as a task
  each. Either way a hanging server ties up only its own check, never the timer or the
  other checks. Right after a batch starts, the checks that already ended (a loopback
  or local server answers inside ``connect``) are reaped in the same callback
  (``probes.reap_ready``) instead of costing one more loop iteration each;
* at most ``max_concurrency`` probes run at once (sockets, processes) and at most
  ``max_rate`` start per second (a token bucket): due checks beyond that wait in a FIFO
  -- no task exists for a check that is not running. The rate cap keeps the event loop,
  which VRRP shares, from being saturated by a large or misconfigured fleet: checks
  then run late (``snapshot().queued`` grows) instead of adverts. The schedule bounds
  each target (at most once per interval, never two at a time);
* a probe that could not run for a local reason (``ProbeResult.inconclusive``: out of
  descriptors, buffers or memory, a fork failure, a missing script) goes to the policy,
  which counts it toward neither rise nor fall; it is counted per reason for metrics and
  logged as ``health.check_inconclusive`` at most once per ``INCONCLUSIVE_LOG_EVERY``
  seconds per reason (a director out of descriptors would otherwise log thousands of
  lines a second, which needs descriptors too; ``health_report.CheckTotals``), and the
  check runs again after its normal interval;
* when a probe returns, its result goes to the policy; a transition is logged once
  (``health.server_up`` / ``health.server_down``) and handed synchronously to
  ``on_transition(service_key, rs_key, new_state)`` so the IPVS layer can apply it in
  the same loop turn (``health_report.Reporter``);
* ``update_config`` diffs old and new targets: unchanged checks keep state, counters and
  deadlines; a changed probe keeps the state but restarts its counts; removed targets
  are forgotten and their in-flight results ignored.

With ``health: {engine: worker}`` the runner is ``health_worker.WorkerHealthRunner``:
its TCP and plain-HTTP targets (``_Slot.worker``) are not scheduled here but run in a
checker process, whose transitions go through the same policy records,
``health.server_up`` / ``server_down`` lines and ``on_transition`` as this loop's own.

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

from hadirector.health.policy import (
    HealthPolicy,
    HealthState,
    ProbeResult,
    ServerHealth,
    ServerKey,
    ServiceKey,
    Target,
)
from hadirector.health.probes import HttpClients, Probe, Starter, prepare_probe, reap_ready, run_check
from hadirector.health.schedule import CheckSchedule
from hadirector.model import (
    Config, HealthCheck, HealthEngine, IPAddress, RealServer, VirtualService, format_endpoint,
)

from .health_report import CheckTotals, HealthSnapshot, OnTransition, Reporter, server_rows

# probe(check, address as text, port, shared HTTP clients) -> result
ProbeFn = Callable[[HealthCheck, str, int, HttpClients | None], Awaitable[ProbeResult]]
# prepare(check, address as text, port) -> what starts that target's checks
# (``starter.start(done)``), made once per target and probe; None when that probe has
# no callback form (then ``probe`` runs it in a task)
PrepareFn = Callable[[HealthCheck, str, int], Starter | None]

log = structlog.get_logger("hadirector.health")

DEFAULT_MAX_CONCURRENCY = 512
# Checks started per second. A TCP check costs ~60 us of CPU and a plain-HTTP one ~100 us
# on a loopback bench that bills the server's kernel half to the checker too
# (bench/health_checks.py, issue 13), so this keeps checks to half a core at most.
DEFAULT_MAX_RATE = 5000.0

@dataclass(frozen=True, slots=True)
class _Spec:
    """What to check for one target, as the current config says."""

    service: VirtualService
    server: RealServer
    check: HealthCheck | None
    address: IPAddress          # where the probe goes (check.address or the server's)
    port: int                   # check.port, else the server's, else the service's
    sorry: bool
    gen: int                    # bumps when the probe changes or the target goes: older results are stale
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
    health: ServerHealth | None = None   # the policy's record of it, kept from track()
    run: _Run | None = None              # starts and reports its callback checks
    worker: bool = False                 # checked by the checker worker, not scheduled here


class _Run:
    """One target's callback checks under one probe generation: the starter made once
    for them, and the ``done`` every one of them reports to (this object: no closure per
    check). A reload that changes the probe makes a new one, so a result of the old
    probe still in flight is told apart; ``check`` is the one running, if any."""

    __slots__ = ("runner", "slot", "spec", "starter", "check")

    def __init__(self, runner: HealthRunner, slot: _Slot, spec: _Spec, starter: Starter) -> None:
        self.runner, self.slot, self.spec, self.starter = runner, slot, spec, starter
        self.check: Probe | None = None

    def __call__(self, result: ProbeResult) -> None:
        runner = self.runner
        try:
            runner._inflight.remove(self)
        except KeyError:
            return                           # stopped meanwhile
        self.check = None
        runner._complete(self.slot, self.spec, result)
        if runner._queue and runner._running:
            runner._pump()


def _targets(config: Config) -> Iterator[tuple[Target, VirtualService, RealServer, bool]]:
    for vs in config.virtual_services:
        seen = set()
        for rs in vs.real_servers:
            seen.add(rs.key)
            yield (vs.key, rs.key), vs, rs, False
        if vs.sorry_server is not None and vs.sorry_server.key not in seen:
            yield (vs.key, vs.sorry_server.key), vs, vs.sorry_server, True


def _wanted(config: Config) -> dict[Target, _Spec]:
    """Every target of ``config`` and what to check for it (``gen`` set when tracked)."""
    wanted: dict[Target, _Spec] = {}
    for target, vs, rs, sorry in _targets(config):
        check = rs.check
        address = (check.address if check and check.address else None) or rs.address
        port = (check.port if check and check.port else None) or rs.port
        wanted[target] = _Spec(vs, rs, check, address, port, sorry, 0, str(address))
    return wanted


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
                 warmup: float = 0.0, prepare: PrepareFn | None = None, grid: float | None = None) -> None:
        self._report = Reporter(on_transition)
        self._clock = clock or time.monotonic
        self._wall = wall_clock
        self._probe = probe
        # The callback path runs the real probes; a test's fake ``probe`` is awaited.
        self._prepare = prepare if prepare is not None else (prepare_probe if probe is run_check else None)
        # callback checks in flight (from just before their start)
        self._inflight: set[_Run] = set()
        self._pumping = False
        self._policy = HealthPolicy()
        # Deadlines on the schedule's grid (``schedule.grid_for``): checks due together
        # start in one timer call, so 10,000 checks a second cost 500 of them, not 10,000.
        self._schedule = CheckSchedule(seed, grid=grid)
        self._slots: dict[Target, _Slot] = {}
        self._by_id: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._gen = itertools.count(1)
        self._max_running = max(1, max_concurrency)
        self._bucket = _Bucket(max_rate, self._clock()) if max_rate and max_rate > 0 else None
        self._pump_timer: asyncio.TimerHandle | None = None
        self._queue: collections.deque[tuple[_Slot, _Spec]] = collections.deque()
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clients: HttpClients | None = None
        self._running = False
        self._totals = CheckTotals(self._policy)
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

    def ipvs_weight(self, vs: VirtualService, rs: RealServer) -> int | None:
        """``ipvs.table.WeightView``: a dynamic script check's weight, else None."""
        return self._policy.weight(vs.key, rs.key)

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
        inflight, self._inflight = list(self._inflight), set()
        for run in inflight:
            check, run.check = run.check, None
            if check is not None:
                check.cancel()
            if run.slot.spec.gen == run.spec.gen:          # not removed or re-probed meanwhile
                self._schedule.finished(run.slot.id, now)
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
        wanted = _wanted(config)
        for target in [t for t in self._slots if t not in wanted]:
            slot = self._slots.pop(target)
            del self._by_id[slot.id]
            slot.spec = _replace_gen(slot.spec, next(self._gen))   # what it queued or runs: stale
            self._policy.forget(target)
            self._schedule.remove(slot.id)

        for target, spec in wanted.items():
            slot = self._slots.get(target)
            if slot is None:
                slot = _Slot(next(self._ids), target, _replace_gen(spec, next(self._gen)))
                self._slots[target] = self._by_id[slot.id] = slot
                slot.health = self._policy.track(target, spec.check, now)
                self._prepare_run(slot)
                if spec.check is not None and not slot.worker:
                    self._schedule.add(slot.id, spec.check, now, self._warmup)
                continue
            old = slot.spec
            if old.probe_identity == spec.probe_identity:
                slot.spec = _replace_gen(spec, old.gen)
                if spec.check is not None and spec.check != old.check:
                    self._policy.retune(target, spec.check, now)
                    if not slot.worker:
                        self._schedule.retune(slot.id, spec.check, now)
                continue
            # The probe changed: results of the old one (maybe in flight) are stale.
            slot.spec = spec = _replace_gen(spec, next(self._gen))
            self._prepare_run(slot)
            self._schedule.remove(slot.id)
            transition = self._policy.retune(target, spec.check, now, reset=True)
            if spec.check is not None and not slot.worker:
                self._schedule.add(slot.id, spec.check, now)
            log.info("health.check_replaced", service=spec.service.name, server=spec.endpoint,
                     state=self._policy.state(*target).value)
            if transition is not None:
                self._report.transition(spec, transition)

    def _prepare_run(self, slot: _Slot) -> None:
        """The callback path of ``slot``'s current probe, if it has one."""
        spec, slot.run = slot.spec, None
        if spec.check is None or self._prepare is None:
            return
        try:
            starter = self._prepare(spec.check, spec.host, spec.port)
        except Exception as exc:         # a bad target is a failed check, not a failed load
            starter = _Broken(f"error: {type(exc).__name__}: {exc}")
        if starter is not None:
            slot.run = _Run(self, slot, spec, starter)

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
        self._timer = None
        if not self._running:
            self._timer_at = None
            return
        # The loop may fire a hair early (its clock resolution): the armed deadline is
        # due by definition.
        now = max(self._clock(), due_at or 0.0)
        by_id = self._by_id
        for sid in self._schedule.pop_due(now):
            slot = by_id[sid]
            self._queue.append((slot, slot.spec))
        # ``_timer_at`` keeps saying ``due_at`` while the checks start, so one that ends
        # at once (refused, EMFILE) does not re-arm, and scan the schedule, per check:
        # this re-arms once, after all of them.
        self._pump()
        self._timer_at = None
        self._arm()

    def _pump(self) -> None:
        """Start queued checks while fewer than ``max_concurrency`` run and the rate
        allows; if only the rate holds them back, come back when a token is due."""
        if self._pumping:
            return                           # a check that finished while starting
        self._pumping = True
        try:
            self._pump_queue()
        finally:
            self._pumping = False
        if self._inflight:                   # ended while starting: report now (Poller.reap)
            reap_ready()

    def _pump_queue(self) -> None:
        queue, loop, inflight, tasks = self._queue, None, self._inflight, self._tasks
        max_running, bucket, clock = self._max_running, self._bucket, self._clock
        while queue and len(tasks) + len(inflight) < max_running:
            slot, spec = queue[0]
            if slot.spec.gen != spec.gen:
                queue.popleft()              # removed or re-probed while queued
                continue
            if bucket is not None and not bucket.take(clock()):
                if self._pump_timer is None:
                    self._pump_timer = asyncio.get_running_loop().call_later(bucket.wait(), self._pump_later)
                return
            queue.popleft()
            run = slot.run
            if run is not None:
                inflight.add(run)            # counts toward max_concurrency from now
                try:
                    check = run.starter.start(run)
                except Exception as exc:     # a probe must not raise; if one does, it failed
                    run(ProbeResult(False, f"error: {type(exc).__name__}: {exc}", 0.0))
                    continue
                if run in inflight:          # not finished already (refused at once, EMFILE)
                    run.check = check
                continue
            loop = loop or asyncio.get_running_loop()
            task = loop.create_task(self._run(slot, spec))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

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
            if slot.spec.gen == spec.gen:    # not removed or re-probed meanwhile
                self._schedule.finished(slot.id, self._clock())
            raise
        except Exception as exc:     # a probe must not raise; if one does, it failed
            result = ProbeResult(False, f"error: {type(exc).__name__}: {exc}", 0.0)
        self._complete(slot, spec, result)

    def _complete(self, slot: _Slot, spec: _Spec, result: ProbeResult) -> None:
        if slot.spec.gen != spec.gen:
            return                           # removed or re-probed while it ran
        now = self._clock()
        self._totals.count(result)
        # ``HealthPolicy.record`` without its lookup (hashing ipaddress keys cost more than rise/fall).
        health = slot.health
        weight_before = health.weight if health is not None else None
        transition = health.apply(slot.target, result, now) if health is not None and health.checked else None
        retry = False
        if result.inconclusive:
            self._totals.note_inconclusive(slot, result, now)
        elif not result.ok:
            retry = health is not None and health.state is not HealthState.DOWN
        deadline = self._schedule.finished(slot.id, now, retry)
        if transition is not None:
            self._report.transition(slot.spec, transition)
        elif (result.ok and health is not None and health.weight != weight_before
              and health.state is HealthState.UP):
            self._report.weight(slot, weight_before, result)
        if self._running and (self._timer_at is None or deadline is None or deadline < self._timer_at):
            self._arm()

    # --- status ------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        now = self._clock()
        rows = server_rows(self._slots.values(), self._policy, self._schedule, now, self._wall())
        return HealthSnapshot(rows, self._totals.totals(HealthEngine.ASYNCIO),
                              len(self._tasks) + len(self._inflight), len(self._queue), len(self._schedule))


class _Bucket:
    """Token bucket for check starts: ``rate`` tokens a second, bursts of a tenth of a
    second (at least one)."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = self.tokens = max(1.0, rate / 10)
        self.at = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.at) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def wait(self) -> float:
        """Seconds until the next token."""
        return (1.0 - self.tokens) / self.rate


class _Broken:
    """A target whose starter could not be made: each check fails with that reason."""

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def start(self, done: Callable[[ProbeResult], None]) -> _Broken:
        done(ProbeResult(False, self.detail, 0.0))
        return self

    def cancel(self) -> None:
        pass


def _replace_gen(spec: _Spec, gen: int) -> _Spec:
    return _Spec(spec.service, spec.server, spec.check, spec.address, spec.port, spec.sorry, gen,
                 spec.host)
