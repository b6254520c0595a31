"""IpvsAvailability: the retry schedule and the fault decision, with a fake clock."""

from __future__ import annotations

import pytest

from hadirector.ipvs.availability import (
    Backoff,
    BecameAvailable,
    BecameUnavailable,
    IpvsAvailability,
    RetryScheduled,
    fault_changes,
)

NO_IPVS = "open IPVS generic netlink: ENOENT (No such file or directory): the kernel has no IPVS"


def test_retries_back_off_from_one_second_doubling_to_thirty():
    b = Backoff()
    assert [b.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert b.delay(10_000) == 30          # days of failures: still the cap, no overflow
    with pytest.raises(ValueError):
        b.delay(0)


def test_nothing_is_due_and_nothing_is_faulted_before_the_first_attempt():
    a = IpvsAvailability()
    assert a.available is None and not a.fault
    assert a.get_timer() is None and not a.due(now=1e9) and a.events() == []


def test_the_first_failure_faults_and_schedules_a_retry_one_second_later():
    a = IpvsAvailability()
    a.failed(NO_IPVS, now=100.0)
    assert a.fault and a.available is False and a.since == 100.0
    assert a.get_timer() == 101.0
    assert not a.due(now=100.99) and a.due(now=101.0)
    assert a.events() == [BecameUnavailable(NO_IPVS, 1), RetryScheduled(2, 1.0, 101.0, NO_IPVS)]
    assert a.events() == []               # events are handed out once


def test_each_failed_retry_schedules_the_next_and_reports_unavailable_only_once():
    a = IpvsAvailability()
    now = 0.0
    a.failed(NO_IPVS, now=now)
    a.events()
    delays = []
    for _ in range(6):
        now = a.get_timer()
        a.failed(NO_IPVS, now=now)
        evs = a.events()
        assert [type(e) for e in evs] == [RetryScheduled]
        delays.append(evs[0].delay)
    assert delays == [2, 4, 8, 16, 30, 30]
    assert a.failures == 7 and a.since == 0.0


def test_a_failure_for_another_reason_is_reported_again():
    a = IpvsAvailability()
    a.failed(NO_IPVS, now=0.0)
    a.events()
    other = "dump services: EPERM (Operation not permitted): needs root or CAP_NET_ADMIN"
    a.failed(other, now=1.0)
    assert a.events() == [BecameUnavailable(other, 2), RetryScheduled(3, 2.0, 3.0, other)]
    assert a.since == 0.0                 # unavailable since the first failure


def test_success_clears_the_fault_reports_the_downtime_and_starts_the_schedule_over():
    a = IpvsAvailability()
    a.failed(NO_IPVS, now=10.0)
    a.failed(NO_IPVS, now=11.0)
    a.failed(NO_IPVS, now=13.0)
    a.events()
    a.succeeded(now=17.5)
    assert not a.fault and a.available is True and a.get_timer() is None and a.reason == ""
    assert a.events() == [BecameAvailable(attempts=4, unavailable_for=7.5)]
    a.failed(NO_IPVS, now=100.0)          # lost later: one second again, not the old delay
    assert a.get_timer() == 101.0


def test_a_first_success_is_available_with_no_downtime_and_a_second_is_silent():
    a = IpvsAvailability()
    a.succeeded(now=5.0)
    assert a.events() == [BecameAvailable(attempts=1, unavailable_for=None)]
    a.succeeded(now=6.0)
    assert a.events() == [] and a.since == 5.0


def test_forget_drops_the_fault_and_the_retry():
    a = IpvsAvailability()
    a.failed(NO_IPVS, now=0.0)
    a.forget()
    assert not a.fault and a.available is None and a.get_timer() is None and a.failures == 0


def test_fault_changes_clear_the_old_followers_first_and_reassert_the_wanted_ones():
    assert fault_changes((), ("vi_1",)) == [("vi_1", True)]
    assert fault_changes(("vi_1",), ()) == [("vi_1", False)]
    # A reload moved the LVS role to vi_2: vi_1 is freed before vi_2 is faulted.
    assert fault_changes(("vi_1",), ("vi_2",)) == [("vi_1", False), ("vi_2", True)]
    # Still wanted: asserted again (idempotent), so an instance that a reload restarted
    # with a fresh machine gets its fault back.
    assert fault_changes(("vi_1", "vi_2"), ("vi_2", "vi_3")) == [
        ("vi_1", False), ("vi_2", True), ("vi_3", True)]
