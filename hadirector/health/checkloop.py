"""TCP and plain-HTTP checks in a loop of their own, with no asyncio (issue 13's experiment).

Theory of operation
-------------------
The question this answers: how close can a checker written in Python get to the
system-call floor of a check (bench/health_checks.py ``--floor``) once nothing but the
checks runs in its loop. It is the core of the checker worker process
(``health.worker``, the agent's ``health: {engine: worker}``), fed its targets by the
agent and sending back transitions in batches: targets come and go between runs
(``put``, ``remove``, ``seed``), and ``watch_input`` ends a run early when the agent
has written.

Nothing is written twice. ``CheckLoop`` owns:

* the checks themselves: the ``TcpCheck`` / ``HttpCheck`` objects of ``probes`` on one
  ``probes.EpollChecks`` (its epoll, the timeout FIFOs), started by each target's
  ``TcpTarget`` / ``HttpTarget`` from ``probes.prepare_probe``: the same sockets
  (``socket(2)`` with SOCK_NONBLOCK, no Python wrapper), the same verdicts
  (``HttpResponse``) and the same inconclusive errnos (EMFILE, ENFILE, ENOBUFS, ENOMEM);
* ``schedule.CheckSchedule`` for when each check is due and ``policy.HealthPolicy`` for
  rise/fall, as the health runner uses them;
* one loop: start the checks due (their deadlines on the schedule's grid, as the
  runner's, so checks due together start together), then one ``epoll_wait`` until the
  next deadline, the earliest timeout or ``until``, hand what is ready to its checks,
  fail what timed out. No event-loop iteration, task, future, timer handle or callback
  queue per check: per check that leaves the system calls and the check objects.

A check's result goes to the policy at once; a transition is kept in the run's list,
which ``run(until=)`` returns with the lateness of every check started (how long after
its schedule's deadline it started: the issue's "within 10 ms (p99)"), the results by
kind, the latency of each conclusive one, the inconclusive ones by reason and the
targets that had a result (what the worker reports).

Only TCP and plain HTTP run here (the probes with a callback form, ``prepare_probe``);
any other target is refused at construction, naming it.
"""

from __future__ import annotations

import ipaddress
import math
import select
import time
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from hadirector.health.policy import HealthPolicy, HealthState, ProbeResult, ServerHealth, Transition, result_kind
from hadirector.health.probes import EpollChecks, Probe, Starter, prepare_probe
from hadirector.health.schedule import CheckSchedule
from hadirector.model import HealthCheck, HttpProbe, TcpProbe


# Events handled per ``epoll_wait``: a bound on how long the due checks wait behind the
# ones that ended (1,023 ended checks took 40 ms to dispatch at 10,000 checks/s, 30 us
# each); the rest are read by the next wait, which returns at once. -1: epoll's 1,023.
MAX_EVENTS = -1


@dataclass(frozen=True, slots=True)
class LoopTarget:
    """One target: ``key`` names it in transitions (the runner's ``(service key, rs
    key)``); its ``check`` goes to ``address:port``."""

    key: Hashable
    check: HealthCheck
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one ``run(until=)`` did: the batch a worker would send to the agent."""

    transitions: list[Transition]
    lateness: array             # seconds from deadline to start, one per check started
    started: int                # checks started
    completed: int              # results recorded (ok, failed or inconclusive)
    failed: int                 # conclusive failures among them
    inconclusive: int           # could not run for a local reason (EMFILE, ...)
    kinds: Counter = field(default_factory=Counter)         # results by ``result_kind``
    latencies: array = field(default_factory=lambda: array("d"))   # of the conclusive ones
    reasons: dict = field(default_factory=dict)   # inconclusive: reason -> [count, a key]
    touched: set = field(default_factory=set)     # keys with a result in this run


class _Slot:
    """One target's runtime: its starter, its policy record, its next deadline; and the
    ``done`` of each of its checks (this object: no closure per check). The schedule
    files the slot itself (hashed by identity): ``pop_due`` hands back what the loop
    starts, with no lookup by key or id per check."""

    __slots__ = ("loop", "key", "target", "starter", "health", "due", "check")

    def __init__(self, loop: CheckLoop, target: LoopTarget, starter: Starter, health: ServerHealth) -> None:
        self.loop, self.key, self.target, self.starter, self.health = loop, target.key, target, starter, health
        self.due = 0.0                        # its next deadline, once filed
        self.check: Probe | None = None       # the one running, if any

    def __call__(self, result: ProbeResult) -> None:
        loop = self.loop
        now = loop._now
        self.check = None
        transition = self.health.apply(self.key, result, now)
        loop._completed += 1
        loop._touched.add(self.key)
        if result.inconclusive:
            retry = False
            loop._inconclusive += 1
            loop._kinds["inconclusive"] += 1
            seen = loop._reasons.get(result.detail)
            if seen is None:
                loop._reasons[result.detail] = [1, self.key]
            else:
                seen[0] += 1
        else:
            loop._latencies.append(result.elapsed)
            if result.ok:
                retry = False                 # counted in ``kinds`` at the run's end
            else:
                loop._kinds[result_kind(result)] += 1
                loop._failed += 1
                # The health runner's rule: confirm a failure quickly (retry_delay) until
                # the server is down; a down server is checked at its interval.
                retry = self.health.state is not HealthState.DOWN
        due = loop._schedule.finished(self, now, retry)
        if due is not None:
            self.due = due
            if due < loop._next:
                loop._next = due
        if transition is not None:
            loop._transitions.append(transition)
            hurry = loop._hurry
            if hurry is not None and now + hurry < loop._until:
                loop._until = now + hurry
        if loop._completed >= loop._enough:
            loop._until = -math.inf           # ``stop_run``, inlined


class CheckLoop:
    """Checks ``targets`` (TCP and plain HTTP) from one thread, with no event loop.

    ``clock`` is monotonic seconds (``until`` is in it); ``grid`` the schedule's
    deadline grid (None: it follows the rate, ``schedule.grid_for``; 0: exact
    deadlines); ``warmup`` spreads the first checks over that long (keepalived's name,
    as the runner's); ``seed`` the schedule's jitter; ``max_events`` the events one
    ``epoll_wait`` hands over (``MAX_EVENTS``).
    Raises ``ValueError`` naming the first target that cannot run here, and
    ``OSError`` when the epoll itself cannot be made (no descriptor for it).
    """

    def __init__(self, targets: Iterable[LoopTarget], *, clock: Callable[[], float] = time.monotonic,
                 grid: float | None = None, warmup: float = 0.0, seed: int | None = None,
                 max_events: int = MAX_EVENTS) -> None:
        self.time = clock                    # what the checks read (``EpollChecks``' loop)
        self.max_events = max_events
        self._warmup = warmup
        self._policy = HealthPolicy()
        self._schedule = CheckSchedule(seed, grid=grid)
        self._by_key: dict[Hashable, _Slot] = {}
        self._now = clock()
        starters = []
        seen: set[Hashable] = set()
        for t in targets:
            if t.key in seen:
                raise ValueError(f"target {t.key!r}: listed twice")
            seen.add(t.key)
            starters.append((t, _starter(t)))
        self._checks = EpollChecks(self)
        self._next = math.inf
        self._transitions: list[Transition] = []
        self._new_tallies()
        # When the run ends: ``run(until=)``, sooner on a transition (``hurry``), -inf
        # once it is to stop (``stop_run``). One test per wait ends it.
        self._until = -math.inf
        self._hurry: float | None = None
        self._enough = math.inf
        for t, starter in starters:
            self._add(t, starter, None)

    def _new_tallies(self) -> None:
        self._completed = self._failed = self._inconclusive = 0
        self._kinds: Counter = Counter()
        self._latencies = array("d")
        self._reasons: dict = {}
        self._touched: set = set()

    # --- membership (between runs) -------------------------------------------------

    def _add(self, t: LoopTarget, starter: Starter, state: HealthState | None) -> None:
        now = self._now = self.time()
        health = self._policy.track(t.key, t.check, now, state)
        slot = self._by_key[t.key] = _Slot(self, t, starter, health)
        slot.due = due = self._schedule.add(slot, t.check, now, self._warmup)
        if due < self._next:
            self._next = due

    def put(self, t: LoopTarget, state: HealthState | None = None) -> None:
        """Add ``t``, or apply it to the target of its key: a new probe (address, port,
        timeout, request) keeps the state and restarts the counts, a running check of
        the old one is cancelled; new timing or rise/fall keeps everything.
        ``state``: a new target starts there instead of ``check.initial``, and a new
        probe takes it (the agent dropped whatever the old probe decided after its
        reload: its state is the one that stands). Raises
        ``ValueError`` (changing nothing) for a target that cannot run here."""
        starter = _starter(t)
        slot = self._by_key.get(t.key)
        if slot is None:
            self._add(t, starter, state)
            return
        old, slot.target = slot.target, t
        now = self._now = self.time()
        if _probe_of(old) == _probe_of(t):
            if t.check != old.check:
                self._policy.retune(t.key, t.check, now)
                self._schedule.retune(slot, t.check, now)
        else:
            self._cancel(slot)
            slot.starter = starter
            self._policy.retune(t.key, t.check, now, reset=True)
            if state is not None and state is not slot.health.state:
                slot.health.state, slot.health.changed_at = state, now
            self._schedule.remove(slot)
            slot.due = self._schedule.add(slot, t.check, now)
        self._rearm()

    def remove(self, key: Hashable) -> bool:
        """Stop checking ``key`` (a running check is cancelled); False if unknown."""
        slot = self._by_key.pop(key, None)
        if slot is None:
            return False
        self._cancel(slot)
        self._schedule.remove(slot)
        self._policy.forget(key)
        self._rearm()
        return True

    def seed(self, key: Hashable, state: HealthState) -> bool:
        """``HealthPolicy.seed``: a known state for a target with no result yet."""
        return key in self._by_key and self._policy.seed(key, state, self.time())

    def _cancel(self, slot: _Slot) -> None:
        check, slot.check = slot.check, None
        if check is not None:
            check.cancel()
            self._schedule.finished(slot, self._now)

    def _rearm(self) -> None:
        deadline = self._schedule.next_deadline()
        self._next = math.inf if deadline is None else deadline

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def keys(self) -> Iterable[Hashable]:
        return self._by_key.keys()

    def due(self, key: Hashable) -> float | None:
        """When the target's next check is due (None: one runs now)."""
        return self._schedule.deadline(self._by_key[key])

    def watch_input(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable()`` when ``fd`` is readable (the agent wrote), and end
        the run then, so its caller handles the input between runs."""
        self._checks.watch_reader(fd, select.EPOLLIN, _Input(self, on_readable))

    def stop_run(self) -> None:
        """End the current ``run`` after the events in hand."""
        self._until = -math.inf

    # --- read side ---------------------------------------------------------------

    def state(self, key: Hashable) -> HealthState:
        """The target's health now (UNKNOWN before its first result)."""
        h = self._policy.get(key)
        if h is None:
            raise KeyError(f"no target {key!r} in this check loop")
        return h.state

    def health(self, key: Hashable) -> ServerHealth:
        """The policy's record of the target (counters, last result)."""
        h = self._policy.get(key)
        if h is None:
            raise KeyError(f"no target {key!r} in this check loop")
        return h

    # --- the loop ----------------------------------------------------------------

    def run(self, until: float, *, hurry: float | None = None, enough: int | None = None) -> RunReport:
        """Check until ``clock() >= until``; what happened meanwhile.

        ``hurry``: end the run that long after its first transition instead (a worker's
        transition reaches the agent within it, while quiet runs can be long: one batch,
        one wake-up of the agent, per run). ``enough``: end it once that many results
        are in (bounds a batch's size at high rates). Checks still running at the end
        go on in the next ``run`` (their results are recorded then); ``close()`` cancels
        them."""
        clock, checks, schedule = self.time, self._checks, self._schedule
        # The epoll's own ``poll``, not ``EpollChecks.poll``, and ``_timer_at``, not the
        # ``timer_at`` property: one call less each, once per wait (issue 13).
        poll, dispatch, max_events = checks._ep.poll, checks.dispatch, self.max_events
        inf = math.inf
        self._transitions = transitions = []
        self._new_tallies()
        self._until, self._hurry = until, hurry
        self._enough = math.inf if enough is None else max(1, enough)
        lateness = array("d")               # and ``started`` is its length
        late = lateness.append
        now = self._now = clock()
        while now < self._until:
            if self._next <= now:
                for slot in schedule.pop_due(now):
                    self._now = t = clock()
                    late(t - slot.due)
                    starter = slot.starter
                    try:
                        # ``starter.start_on(checks, slot)``, inlined: once per check
                        check = starter.check_type(checks, starter, slot)
                    except Exception as exc:  # a probe never raises; if one does, it failed
                        slot(ProbeResult(False, f"error: {type(exc).__name__}: {exc}", 0.0))
                        continue
                    if check._done is not None:   # not ended at once (refused, EMFILE)
                        slot.check = check
                deadline = schedule.next_deadline()
                self._next = inf if deadline is None else deadline
            # Wake at the first of: the next deadline, the earliest timeout, the run's end.
            wait = min(self._next, checks._timer_at, self._until) - clock()
            ready = poll(wait if wait > 0.0 else 0.0, max_events)
            now = self._now = clock()
            if ready:
                dispatch(ready, now)
            if checks._timer_at <= now:
                checks.expire(now)
        ok = self._completed - self._failed - self._inconclusive
        if ok:
            self._kinds["ok"] += ok               # not counted one by one: once per run
        return RunReport(transitions, lateness, len(lateness), self._completed, self._failed, self._inconclusive,
                         self._kinds, self._latencies, self._reasons, self._touched)

    def close(self) -> None:
        """Cancel the checks still running and close the epoll."""
        self._checks.cancel_all()
        self._checks.close()

    def __enter__(self) -> CheckLoop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Input:
    """``watch_input``'s entry on the epoll: readable input ends the run."""

    __slots__ = ("loop", "on_readable")

    def __init__(self, loop: CheckLoop, on_readable: Callable[[], None]) -> None:
        self.loop, self.on_readable = loop, on_readable

    def on_event(self, events: int, now: float) -> None:
        self.loop.stop_run()
        self.on_readable()

    def fail(self, detail: str) -> None:          # on_readable raised: end the run, say so
        self.loop.stop_run()
        raise RuntimeError(f"input handler failed: {detail}")

    def cancel(self) -> None:
        pass


def _probe_of(t: LoopTarget) -> tuple:
    c = t.check
    return (c.probe, c.bind_to, c.timeout, t.address, t.port)


def _starter(t: LoopTarget) -> Starter:
    probe = t.check.probe
    if not isinstance(probe, (TcpProbe, HttpProbe)) or getattr(probe, "tls", False):
        kind = "https" if isinstance(probe, HttpProbe) else type(probe).__name__
        raise ValueError(f"target {t.key!r}: a {kind} check does not run in a CheckLoop"
                         " (tcp and plain http only)")
    try:
        # An address, not a name: a name would be resolved, blocking, at every check.
        ipaddress.ip_address(t.address)
    except ValueError:
        raise ValueError(f"target {t.key!r}: address {t.address!r} is not an IP address") from None
    if not 0 < t.port < 65536:
        raise ValueError(f"target {t.key!r}: port {t.port!r} is not 1-65535")
    starter = prepare_probe(t.check, t.address, t.port)
    assert starter is not None                # tcp and plain http have a callback form
    return starter
