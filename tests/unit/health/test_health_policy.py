"""Rise/fall policy: specification by example, with ``now`` set by hand."""

from __future__ import annotations

import ipaddress
import random

import pytest

from hadirector.health.policy import HealthPolicy, HealthState, ProbeResult, Transition
from hadirector.model import HealthCheck, InitialHealth, TcpProbe

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN
SVC = ("tcp", ipaddress.ip_address("192.0.2.10"), 80)
RS = (ipaddress.ip_address("10.0.0.1"), 80)
T = (SVC, RS)

OK = ProbeResult(True, "connected", 0.002)
REFUSED = ProbeResult(False, "refused", 0.001)
TIMEOUT = ProbeResult(False, "timeout", 3.0)


def policy(rise=2, fall=3, initial=InitialHealth.UNKNOWN) -> HealthPolicy:
    p = HealthPolicy()
    p.track(T, HealthCheck(TcpProbe(), rise=rise, fall=fall, initial=initial), now=0.0)
    return p


def feed(p: HealthPolicy, results, start=1.0) -> list[Transition]:
    out = []
    for i, r in enumerate(results):
        t = p.record(T, r, now=start + i)
        if t is not None:
            out.append(t)
    return out


def test_unknown_server_takes_the_state_of_its_first_success_at_once():
    p = policy(rise=5)
    assert p.state(*T) is UNKNOWN
    [t] = feed(p, [OK])
    assert (t.old, t.new, t.reason, t.latency, t.at, t.count) == (UNKNOWN, UP, "connected", 0.002, 1.0, 1)
    assert p.state(SVC, RS) is UP


def test_unknown_server_takes_the_state_of_its_first_failure_at_once():
    p = policy(fall=5)
    [t] = feed(p, [REFUSED])
    assert (t.old, t.new, t.reason) == (UNKNOWN, DOWN, "refused")


def test_up_server_goes_down_only_after_fall_consecutive_failures():
    p = policy(fall=3, initial=InitialHealth.UP)
    assert feed(p, [REFUSED, REFUSED]) == []
    assert p.state(*T) is UP
    [t] = feed(p, [TIMEOUT], start=10)
    assert (t.old, t.new, t.reason, t.latency, t.count) == (UP, DOWN, "timeout", 3.0, 3)


def test_a_success_resets_the_failure_count():
    p = policy(fall=3, initial=InitialHealth.UP)
    assert feed(p, [REFUSED, REFUSED, OK, REFUSED, REFUSED]) == []
    assert p.state(*T) is UP
    assert p.get(T).failures == 2


def test_down_server_comes_up_only_after_rise_consecutive_successes():
    p = policy(rise=2, initial=InitialHealth.DOWN)
    assert feed(p, [OK]) == []
    assert feed(p, [REFUSED, OK]) == []
    [t] = feed(p, [OK])
    assert (t.old, t.new, t.count) == (DOWN, UP, 2)


def test_initial_up_server_reports_nothing_while_it_stays_up():
    p = policy(initial=InitialHealth.UP)
    assert feed(p, [OK] * 10) == []


def test_server_without_a_check_is_always_up_and_ignores_results():
    p = HealthPolicy()
    p.track(T, None, now=0.0)
    assert p.state(*T) is UP
    assert p.record(T, REFUSED, now=1.0) is None
    assert p.state(*T) is UP


def test_unknown_target_reads_unknown_and_its_results_are_ignored():
    p = HealthPolicy()
    assert p.state(SVC, RS) is UNKNOWN
    assert p.record(T, OK, now=1.0) is None     # removed by a reload mid-probe


def test_retune_keeps_state_and_counters_and_applies_new_thresholds_to_the_next_result():
    p = policy(fall=5, initial=InitialHealth.UP)
    feed(p, [REFUSED, REFUSED])
    assert p.retune(T, HealthCheck(TcpProbe(), rise=2, fall=2), now=4.0) is None
    assert p.state(*T) is UP and p.get(T).failures == 2
    [t] = feed(p, [REFUSED], start=5)
    assert (t.new, t.count) == (DOWN, 3)


def test_counters_and_last_result_are_kept_for_status():
    p = policy(initial=InitialHealth.UP)
    feed(p, [OK, REFUSED])
    h = p.get(T)
    assert (h.checks, h.successes, h.failures, h.last, h.last_at) == (2, 0, 1, REFUSED, 2.0)


@pytest.mark.parametrize("seed", range(40))
def test_flapping_server_changes_state_no_faster_than_rise_and_fall_allow(seed):
    rng = random.Random(seed)
    rise, fall = rng.randint(1, 4), rng.randint(1, 4)
    initial = rng.choice(list(InitialHealth))
    p = policy(rise=rise, fall=fall, initial=initial)
    p_ok = rng.random()
    results = [OK if rng.random() < p_ok else REFUSED for _ in range(300)]
    transitions = []
    for i, r in enumerate(results):
        t = p.record(T, r, now=float(i))
        if t is not None:
            transitions.append((i, t))

    prev = initial.value
    for i, t in transitions:
        # Only changes are reported, and they chain.
        assert t.old.value == prev and t.new is not t.old
        prev = t.new.value
        # Each change is backed by enough consecutive identical results, except the
        # first result of an UNKNOWN server, which decides at once.
        need = 1 if t.old is UNKNOWN else (rise if t.new is UP else fall)
        window = results[i - need + 1 : i + 1]
        assert len(window) == need and all(r.ok == (t.new is UP) for r in window)
        assert t.count >= need
    # And the end state agrees with the last run of results.
    assert p.state(*T).value == prev
    bound = 1 + len(results) // min(rise, fall)
    assert len(transitions) <= bound


def test_constant_flapping_with_rise_and_fall_above_one_never_changes_state():
    p = policy(rise=2, fall=2, initial=InitialHealth.UP)
    assert feed(p, [REFUSED, OK] * 50) == []


def test_retune_with_a_new_probe_keeps_the_state_but_restarts_the_counts():
    p = policy(fall=2, initial=InitialHealth.UP)
    feed(p, [REFUSED])
    assert p.retune(T, HealthCheck(TcpProbe(), fall=2), now=5.0, reset=True) is None
    assert p.state(*T) is UP
    assert feed(p, [REFUSED], start=6) == []       # one failure of the new probe, not two
    [t] = feed(p, [REFUSED], start=7)
    assert t.new is DOWN


def test_removing_the_check_makes_a_down_server_up_with_a_reason():
    p = policy(initial=InitialHealth.DOWN)
    t = p.retune(T, None, now=3.0)
    assert (t.old, t.new, t.reason, t.at) == (DOWN, UP, "check removed", 3.0)
    assert p.record(T, REFUSED, now=4.0) is None and p.state(*T) is UP


def test_adding_a_check_to_an_unchecked_server_keeps_it_up_until_fall_failures():
    p = HealthPolicy()
    p.track(T, None, now=0.0)
    p.retune(T, HealthCheck(TcpProbe(), fall=2), now=1.0)
    assert feed(p, [REFUSED], start=2) == []
    [t] = feed(p, [REFUSED], start=3)
    assert (t.old, t.new) == (UP, DOWN)


def test_a_seeded_target_starts_up_and_needs_fall_failures_to_go_down():
    from hadirector.health.policy import HealthPolicy, HealthState, ProbeResult
    from hadirector.model import HealthCheck, TcpProbe

    p = HealthPolicy()
    t = ("svc", "rs")
    p.track(t, HealthCheck(TcpProbe(), rise=2, fall=2), now=0.0)
    assert p.seed(t, HealthState.UP, now=0.0)
    assert p.record(t, ProbeResult(False, "timeout", 2.0), now=1.0) is None
    assert p.record(t, ProbeResult(False, "timeout", 2.0), now=2.0).new is HealthState.DOWN
    assert not p.seed(t, HealthState.UP, now=3.0), "only before the first result"


# --- inconclusive results (the director could not run the probe) -----------------------

EMFILE = ProbeResult(False, "emfile", 0.0001, inconclusive=True)


def test_inconclusive_results_never_take_an_up_server_down():
    p = policy(fall=1, initial=InitialHealth.UP)
    assert feed(p, [EMFILE] * 50) == []
    assert p.state(*T) is UP
    h = p.get(T)
    assert (h.inconclusive, h.checks, h.failures, h.last) == (50, 0, 0, EMFILE)


def test_inconclusive_results_never_bring_a_down_server_up():
    p = policy(rise=1, initial=InitialHealth.DOWN)
    assert feed(p, [EMFILE] * 5) == []
    assert p.state(*T) is DOWN


def test_an_unknown_server_stays_unknown_while_its_results_are_inconclusive():
    p = policy()
    assert feed(p, [EMFILE, EMFILE]) == []
    assert p.state(*T) is UNKNOWN
    [t] = feed(p, [OK], start=5)
    assert (t.old, t.new) == (UNKNOWN, UP)


def test_an_inconclusive_result_neither_breaks_nor_extends_a_failure_streak():
    p = policy(fall=3, initial=InitialHealth.UP)
    assert feed(p, [REFUSED, EMFILE, REFUSED]) == []
    assert p.get(T).failures == 2
    [t] = feed(p, [EMFILE, REFUSED], start=10)
    assert (t.new, t.count, t.reason) == (DOWN, 3, "refused")


def test_an_inconclusive_result_neither_breaks_nor_extends_a_success_streak():
    p = policy(rise=2, initial=InitialHealth.DOWN)
    assert feed(p, [OK, EMFILE]) == []
    assert p.get(T).successes == 1
    [t] = feed(p, [OK], start=10)
    assert (t.new, t.count) == (UP, 2)


def test_a_target_with_only_inconclusive_results_can_still_be_seeded():
    p = policy()
    feed(p, [EMFILE])
    assert p.seed(T, UP, now=2.0)
    assert p.state(*T) is UP
