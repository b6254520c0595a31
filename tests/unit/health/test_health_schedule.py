"""When checks are due: interval, jitter, retry delay -- one calendar queue, ``now`` by hand."""

from __future__ import annotations

import random

import pytest

from hadirector.health.schedule import CheckSchedule
from hadirector.model import HealthCheck, TcpProbe

A, B, C = ("svc", "a"), ("svc", "b"), ("svc", "c")


def check(**kw) -> HealthCheck:
    return HealthCheck(TcpProbe(), **kw)


def test_first_check_is_due_at_once_without_jitter():
    s = CheckSchedule(seed=1)
    assert s.add(A, check(interval=5), now=100.0) == 100.0
    assert s.next_deadline() == 100.0
    assert s.pop_due(100.0) == [A]


def test_next_check_is_due_one_interval_after_the_previous_one_started():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=5), now=0.0)
    assert s.pop_due(0.0) == [A]
    assert s.next_deadline() is None           # running: not due again
    assert s.finished(A, now=0.2) == 5.0       # not 5.2: one check per interval
    assert s.pop_due(4.99) == []
    assert s.pop_due(5.0) == [A]


def test_a_check_slower_than_its_interval_runs_again_when_it_ends_never_overlapping():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=1, timeout=3), now=0.0)
    s.pop_due(0.0)
    assert s.pop_due(2.0) == []                # still running
    assert s.finished(A, now=3.0) == 3.0


def test_retry_delay_applies_after_a_failure_that_has_not_brought_the_server_down():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=10, retry_delay=1), now=0.0)
    s.pop_due(0.0)
    assert s.finished(A, now=0.5, retry=True) == 1.5
    s.pop_due(1.5)
    # Once down the caller stops asking for retries: the interval applies again.
    assert s.finished(A, now=1.6, retry=False) == 11.5


def test_retry_without_retry_delay_uses_the_interval():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=10), now=0.0)
    s.pop_due(0.0)
    assert s.finished(A, now=0.5, retry=True) == 10.0


@pytest.mark.parametrize("seed", range(5))
def test_jitter_delays_every_deadline_by_at_most_jitter(seed):
    s = CheckSchedule(seed=seed)
    first = s.add(A, check(interval=2, jitter=0.5), now=0.0)
    assert 0.0 <= first <= 0.5
    delays = []
    t = first
    for _ in range(200):
        assert s.pop_due(t) == [A]
        nxt = s.finished(A, now=t + 0.01)
        delays.append(nxt - (t + 2))
        t = nxt
    assert all(0.0 <= d <= 0.5 for d in delays)
    assert max(delays) - min(delays) > 0.3     # really spread, not constant


def test_jitter_is_reproducible_with_a_seed():
    def run(seed):
        s = CheckSchedule(seed=seed)
        return [s.add((i, 0), check(jitter=1.0), now=0.0) for i in range(10)]
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_pop_due_returns_targets_in_deadline_order_and_next_deadline_is_the_earliest():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=3), now=2.0)
    s.add(B, check(interval=3), now=1.0)
    s.add(C, check(interval=3), now=5.0)
    assert s.next_deadline() == 1.0
    assert s.pop_due(2.5) == [B, A]
    assert s.next_deadline() == 5.0


def test_removed_target_is_never_due_and_its_late_result_is_ignored():
    s = CheckSchedule(seed=1)
    s.add(A, check(), now=0.0)
    s.add(B, check(), now=1.0)
    s.remove(B)
    assert s.pop_due(10.0) == [A]
    s.remove(A)
    assert s.finished(A, now=10.1) is None
    assert s.next_deadline() is None


def test_retune_to_a_shorter_interval_takes_effect_now():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=60), now=0.0)
    s.pop_due(0.0)
    s.finished(A, now=0.1)                     # next at 60
    s.retune(A, check(interval=1), now=10.0)
    assert s.next_deadline() == 10.0           # 0 + 1 is already past


def test_retune_to_a_longer_interval_waits_for_the_next_completion():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=1), now=0.0)
    s.pop_due(0.0)
    s.finished(A, now=0.1)
    s.retune(A, check(interval=60), now=0.5)
    assert s.next_deadline() == 1.0
    s.pop_due(1.0)
    assert s.finished(A, now=1.1) == 61.0


def test_many_targets_cost_one_deadline():
    s = CheckSchedule(seed=3)
    for i in range(10_000):
        s.add((i, 0), check(interval=1, jitter=1), now=0.0)
    assert 0.0 <= s.next_deadline() <= 1.0
    assert len(s.pop_due(1.0)) == 10_000


def test_warmup_spreads_first_checks_and_later_ones_stay_spread():
    s = CheckSchedule(seed=5)
    firsts = [s.add((i, 0), check(interval=1), now=0.0, warmup=1.0) for i in range(1000)]
    assert 0.0 <= min(firsts) and max(firsts) <= 1.0
    assert sum(f < 0.5 for f in firsts) in range(400, 600)
    nexts = []
    while (t := s.next_deadline()) is not None and t <= 1.0:
        for target in s.pop_due(t):
            nexts.append(s.finished(target, now=t + 0.001))
    assert sorted(nexts) == pytest.approx([f + 1.0 for f in sorted(firsts)])


def test_pop_due_takes_exactly_the_deadlines_up_to_now_in_order_whatever_the_buckets():
    # The calendar queue files deadlines in BUCKET-wide buckets: a bucket that holds
    # ``now`` gives only its rows up to ``now``, the rest stay due later.
    rng = random.Random(7)
    s = CheckSchedule(seed=1)
    deadlines = {}
    for i in range(2000):
        when = rng.choice([rng.uniform(0.0, 0.05), round(rng.uniform(0.0, 0.05), 3)])
        deadlines[i] = s.add(i, check(interval=1), now=when)
    taken = []
    now = 0.0
    while now < 0.06:
        now += rng.uniform(0.0, 0.003)
        due = s.pop_due(now)
        assert all(deadlines[t] <= now for t in due)
        assert [deadlines[t] for t in due] == sorted(deadlines[t] for t in due)
        nxt = s.next_deadline()
        assert nxt is None or nxt > now
        taken += due
    assert sorted(taken) == list(range(2000))


def test_a_target_removed_and_added_again_is_due_at_its_new_deadline_only():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=5), now=0.0)
    s.remove(A)
    s.add(A, check(interval=5), now=3.0)
    assert s.next_deadline() == 3.0
    assert s.pop_due(1.0) == []                # not at the first entry's deadline
    assert s.pop_due(3.0) == [A]
    assert s.pop_due(10.0) == []               # one row for it, not two


def test_a_target_added_again_without_remove_keeps_one_deadline():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=5), now=0.0)
    s.add(A, check(interval=5), now=2.0)
    assert s.next_deadline() == 2.0
    assert s.pop_due(2.0) == [A]
    assert s.next_deadline() is None


def test_retune_files_the_new_deadline_in_place_of_the_old_one():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=60), now=0.0)
    s.add(B, check(interval=60), now=0.0)
    s.pop_due(0.0)
    s.finished(A, now=0.1)                     # A next at 60
    s.finished(B, now=0.1)                     # B next at 60
    s.retune(A, check(interval=1), now=0.5)    # A now at 1
    assert s.pop_due(1.0) == [A]
    assert s.pop_due(60.0) == [B]              # A's old deadline is gone with it
    assert s.next_deadline() is None


def test_finished_twice_leaves_one_deadline():
    s = CheckSchedule(seed=1)
    s.add(A, check(interval=5), now=0.0)
    s.pop_due(0.0)
    assert s.finished(A, now=0.1) == 5.0
    assert s.finished(A, now=0.2) == 5.0       # as if it had ended then: one row still
    assert s.pop_due(5.0) == [A]
    assert s.pop_due(100.0) == []


def test_next_deadline_skips_buckets_emptied_by_removal():
    s = CheckSchedule(seed=1)
    s.add(A, check(), now=1.0)
    s.add(B, check(), now=2.0)
    s.remove(A)
    assert s.next_deadline() == 2.0
    assert s.pop_due(1.5) == []
    assert s.pop_due(2.0) == [B]


def test_pop_due_leaves_the_later_rows_of_the_bucket_that_holds_now():
    s = CheckSchedule(seed=1, bucket=1.0)
    s.add(A, check(), now=0.2)
    s.add(B, check(), now=0.7)
    s.add(C, check(), now=0.4)
    assert s.pop_due(0.5) == [A, C]
    assert s.next_deadline() == 0.7
    assert s.pop_due(0.7) == [B]


# -- the deadline grid (issue 13: checks due together start in one wake-up)


def test_deadlines_fall_on_the_grid_and_a_late_start_does_not_push_the_next_one_later():
    s = CheckSchedule(seed=1, grid=0.02)
    assert s.add(A, check(interval=1), now=100.013) == pytest.approx(100.02)   # the nearest point
    assert s.pop_due(100.019) == []                                              # never before it
    assert s.pop_due(100.0275) == [A]                                            # 7.5 ms late
    nxt = s.finished(A, 100.03)
    assert nxt == pytest.approx(101.02), "one interval after its grid point, not after its late start"
    assert s.pop_due(101.02) == [A]


def test_a_retry_and_a_first_check_round_to_the_nearest_point_never_more_than_half_of_it_early():
    s = CheckSchedule(seed=3, grid=0.02)
    rng = random.Random(5)
    for i in range(200):
        now = 50.0 + rng.uniform(0, 10)
        got = s.add(("t", i), check(interval=1, retry_delay=0.3), now=now)
        assert abs(got / 0.02 - round(got / 0.02)) < 1e-6 and got >= now - 0.01 - 1e-9
        s.pop_due(got)
        retry_at = s.finished(("t", i), got + 0.005, retry=True)
        assert abs(retry_at - (got + 0.305)) <= 0.01 + 1e-9


def test_the_grid_follows_the_rate_about_twenty_checks_a_point_from_2_to_20_ms():
    from hadirector.health.schedule import grid_for

    assert [grid_for(r) for r in (0, 1, 100, 1000, 5000, 10_000, 20_000)] == pytest.approx(
        [0.02, 0.02, 0.02, 0.02, 0.004, 0.002, 0.002])
    s = CheckSchedule(seed=1, grid=None)
    for i in range(100):
        s.add(("a", i), check(interval=1), now=0.0)
    assert s.grid == pytest.approx(0.02)
    for i in range(9_900):
        s.add(("b", i), check(interval=1), now=0.0)
    assert s.grid == pytest.approx(0.002)                 # 10,000 a second
    for i in range(9_900):
        s.remove(("b", i))
    assert s.grid == pytest.approx(0.02)
    s.retune(("a", 0), check(interval=0.001), now=0.0)    # 1,099 a second
    assert s.grid == pytest.approx(0.018)


def test_a_hundred_targets_spread_over_a_second_start_in_at_most_fifty_batches():
    s = CheckSchedule(seed=7, grid=None)
    for i in range(100):
        s.add(i, check(interval=1), now=0.0, warmup=1.0)
    batches = 0
    while (t := s.next_deadline()) is not None and t < 1.0:
        batches += 1
        for target in s.pop_due(t):
            s.finished(target, t + 0.001)
    assert batches <= 50
    exact = CheckSchedule(seed=7, grid=0)
    for i in range(100):
        exact.add(i, check(interval=1), now=0.0, warmup=1.0)
    assert len({exact.deadline(i) for i in range(100)}) == 100       # without a grid: one each
