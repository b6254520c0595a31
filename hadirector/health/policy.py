"""Rise/fall health policy for real servers, written once (sans-IO).

Theory of operation
-------------------
A *target* is one real server of one virtual service: ``(service_key, rs_key)``, the
same keys ``VirtualService.key`` and ``RealServer.key`` give, so the IPVS layer can ask
about exactly the entries it programs. The same real server in two services is two
targets with two independent states (their checks may differ).

Each target has a ``ServerHealth``: a state (UNKNOWN, UP, DOWN) and counters of
consecutive successes and failures. Probe results go in through
``HealthPolicy.record(target, result, now)``; what comes out is a ``Transition`` when,
and only when, the state changes:

* a failure makes an UP (or UNKNOWN) target DOWN after ``fall`` consecutive failures;
* a success makes a DOWN (or UNKNOWN) target UP after ``rise`` consecutive successes;
* an UNKNOWN target (``initial: unknown``) takes the state of its first result at once:
  nothing is programmed for it before then, so there is nothing to protect by waiting;
* an *inconclusive* result (the probe could not run for a local reason: the agent out of
  file descriptors or memory, a fork failure, a missing script) says nothing about the
  server: it is counted, and leaves the state and both streaks as they were -- a
  director short of descriptors must not take healthy servers out of IPVS.

This is the only place rise/fall is counted (Seesaw's healthcheck/core.go does the same;
keepalived repeats it in every checker). Probes hold no policy; the runner holds no
policy; consumers see transitions, never raw results.

``HealthPolicy.state(service_key, rs_key)`` is the read side the IPVS layer uses to
compute its desired table (through ``ipvs.table.HealthView``). Real servers without a check are always UP; a key the
policy has never heard of is UNKNOWN, which the reconciler treats as "not programmed".

Nothing here reads a clock, sleeps or touches a socket: ``now`` comes in with each
call. The scheduling half (when the next check is due) is ``schedule.CheckSchedule``;
the per-service quorum (with hysteresis) lives once, in ``hadirector.ipvs.table``
(``quorum_state``), because it decides which destinations the table holds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hadirector.model import HealthCheck, HealthState

ServiceKey = Hashable
ServerKey = Hashable
Target = tuple[ServiceKey, ServerKey]


class ProbeResult(NamedTuple):
    """What a probe saw. ``detail`` is short and stable ("refused", "timeout",
    "status 503", "body mismatch", "exit 1"): it becomes a transition's reason.

    A named tuple, not a frozen dataclass: as immutable and typed, and one is made per
    check, where the dataclass's ``__init__`` ran an ``object.__setattr__`` per field
    (issue 13: 43 of a TCP check's ~900 bytecodes)."""

    ok: bool
    detail: str
    elapsed: float
    # A dynamic script check's weight for an ok result (keepalived's misc_dynamic: exit
    # code - 2); None: the configured weight.
    weight: int | None = None
    # True: the probe could not run for a local reason ("emfile", "enobufs", "fork
    # failed", "not found" for a script): it counts toward neither rise nor fall.
    inconclusive: bool = False


def result_kind(result: ProbeResult) -> str:
    """The outcome's name in the metrics: ok, fail, timeout, error or inconclusive."""
    if result.inconclusive:
        return "inconclusive"
    if result.ok:
        return "ok"
    if result.detail == "timeout":
        return "timeout"
    if result.detail.startswith("error:"):
        return "error"
    return "fail"


@dataclass(frozen=True, slots=True)
class Transition:
    target: Target
    old: HealthState
    new: HealthState
    reason: str          # detail of the result that decided it
    latency: float       # elapsed time of that probe, seconds
    at: float            # ``now`` of the deciding record() call
    count: int           # consecutive results that led here (1 for a first result)

    @property
    def service_key(self) -> ServiceKey:
        return self.target[0]

    @property
    def rs_key(self) -> ServerKey:
        return self.target[1]


@dataclass(slots=True)
class ServerHealth:
    """Runtime health of one target. Mutable; owned by ``HealthPolicy``."""

    rise: int
    fall: int
    state: HealthState
    successes: int = 0          # consecutive, reset by a failure
    failures: int = 0           # consecutive, reset by a success
    checks: int = 0             # conclusive results recorded since tracking began
    inconclusive: int = 0       # inconclusive results (not in ``checks``)
    transitions: int = 0
    last: ProbeResult | None = None
    last_at: float | None = None
    changed_at: float | None = None
    checked: bool = True        # False: no health check configured, always UP
    weight: int | None = None   # from the last ok result (dynamic script); None: configured

    def apply(self, target: Target, result: ProbeResult, now: float) -> Transition | None:
        self.last = result
        self.last_at = now
        if result.inconclusive:
            # Neither a success nor a failure: the streaks stand, so "fail, EMFILE, fail,
            # fail" with fall 3 goes down at the third real failure, not the second.
            self.inconclusive += 1
            return None
        self.checks += 1
        if result.ok:
            self.weight = result.weight
            self.successes += 1
            self.failures = 0
            if self.state is HealthState.UP:
                return None
            if self.state is HealthState.DOWN and self.successes < self.rise:
                return None
            return self._change(target, HealthState.UP, result, now, self.successes)
        self.failures += 1
        self.successes = 0
        if self.state is HealthState.DOWN:
            return None
        if self.state is HealthState.UP and self.failures < self.fall:
            return None
        return self._change(target, HealthState.DOWN, result, now, self.failures)

    def adopt(self, t: Transition) -> bool:
        """Take a transition decided by rise/fall elsewhere -- the checker worker's own
        policy (health/worker.py) counted it; this record follows for the IPVS layer.
        False (and nothing changed) when the state is already ``t.new``."""
        if t.new is self.state:
            return False
        self.state = t.new
        self.changed_at = t.at
        self.transitions += 1
        return True

    def _change(self, target: Target, new: HealthState, result: ProbeResult, now: float,
                count: int) -> Transition:
        old, self.state = self.state, new
        self.changed_at = now
        self.transitions += 1
        return Transition(target, old, new, result.detail, result.elapsed, now, count)


class HealthPolicy:
    """Rise/fall state for every target."""

    def __init__(self) -> None:
        self._servers: dict[Target, ServerHealth] = {}

    # --- membership (config load and reload) -------------------------------------

    def track(self, target: Target, check: HealthCheck | None, now: float,
              state: HealthState | None = None) -> ServerHealth:
        """Start tracking ``target`` in its initial state (or always UP without a check).

        ``state``: start there instead of ``check.initial`` (a restarted checker worker
        carries on from the state the agent kept meanwhile). Re-tracking a known target
        resets it; use ``retune`` to keep its state.
        """
        if check is None:
            h = ServerHealth(rise=1, fall=1, state=HealthState.UP, checked=False, changed_at=now)
        else:
            h = ServerHealth(rise=max(1, check.rise), fall=max(1, check.fall),
                             state=check.initial if state is None else state, changed_at=now)
        self._servers[target] = h
        return h

    def retune(self, target: Target, check: HealthCheck | None, now: float,
               reset: bool = False) -> Transition | None:
        """Apply a reloaded check to a known target, keeping its state.

        ``reset``: the probe itself changed (kind, path, address, ...), so its counters
        no longer mean anything and start again; the state stands until the new probe
        earns a change by rise/fall, so a reload never pulls a healthy server on its
        own. Only removing the check changes state here (to UP: "always healthy").
        """
        h = self._servers[target]
        if check is None:
            h.checked, h.rise, h.fall = False, 1, 1
            h.successes = h.failures = 0
            if h.state is HealthState.UP:
                return None
            return h._change(target, HealthState.UP, ProbeResult(True, "check removed", 0.0), now, 0)
        h.rise, h.fall = max(1, check.rise), max(1, check.fall)
        if reset or not h.checked:
            h.successes = h.failures = 0
            h.weight = None
        h.checked = True
        return None

    def seed(self, target: Target, state: HealthState, now: float) -> bool:
        """Start a target that has no result yet from a known state instead of UNKNOWN
        (a restarted agent finds its real servers already in the kernel): from there
        rise/fall apply as usual, so one failed first check does not take it out."""
        h = self._servers.get(target)
        if h is None or not h.checked or h.checks or h.state is not HealthState.UNKNOWN:
            return False
        h.state = state
        h.changed_at = now
        return True

    def forget(self, target: Target) -> None:
        self._servers.pop(target, None)

    # --- inputs ------------------------------------------------------------------

    def record(self, target: Target, result: ProbeResult, now: float) -> Transition | None:
        """Feed one probe result; returns the transition it causes, if any."""
        h = self._servers.get(target)
        if h is None or not h.checked:
            # A result for a target removed by a reload while its probe ran: ignore.
            return None
        return h.apply(target, result, now)

    # --- read side ---------------------------------------------------------------

    def state(self, service_key: ServiceKey, rs_key: ServerKey) -> HealthState:
        h = self._servers.get((service_key, rs_key))
        return HealthState.UNKNOWN if h is None else h.state

    def weight(self, service_key: ServiceKey, rs_key: ServerKey) -> int | None:
        """The weight a dynamic check last reported; None: the configured one."""
        h = self._servers.get((service_key, rs_key))
        return None if h is None else h.weight

    def get(self, target: Target) -> ServerHealth | None:
        return self._servers.get(target)

    def __contains__(self, target: object) -> bool:
        return target in self._servers

    def __len__(self) -> int:
        return len(self._servers)

    def items(self) -> Iterator[tuple[Target, ServerHealth]]:
        return iter(self._servers.items())
