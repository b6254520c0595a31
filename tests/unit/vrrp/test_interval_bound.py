"""The bound on an adopted Master_Adver_Interval (RFC 5798 6.4.2 / 6.4.3 set it from the
master's advert; ``timers.bounded_adver_interval`` keeps it within 4x of ours).

Fake clock; our configured interval is 1 s unless said otherwise, priority 100.
"""

from __future__ import annotations

import pytest

from hadirector.vrrp.machine import IntervalBounded, Reason, RoleChanged, State, VrrpMachine
from hadirector.vrrp.timers import INTERVAL_BOUND_FACTOR, bounded_adver_interval, master_down_interval

from .helpers import FakeLink, advert, instance, ip

ME = ip("10.233.0.2")
PEER = ip("10.233.0.3")
SPOOFER = ip("10.233.0.66")
B, M = State.BACKUP, State.MASTER


def backup(now: float = 0.0, **kw) -> VrrpMachine:
    m = VrrpMachine(instance(**kw), primary_address=ME)
    m.start(now)
    m.actions()
    return m


def master(**kw) -> VrrpMachine:
    m = backup(**kw)
    m.handle_timer(m.get_timer())
    assert m.state is M
    m.actions()
    return m


def test_bound_is_a_factor_four_window_around_the_configured_interval():
    assert INTERVAL_BOUND_FACTOR == 4
    assert bounded_adver_interval(40.95, 1.0) == 4.0
    assert bounded_adver_interval(0.01, 1.0) == 0.25
    assert bounded_adver_interval(4.0, 1.0) == 4.0          # the edges are inside
    assert bounded_adver_interval(0.25, 1.0) == 0.25
    assert bounded_adver_interval(2.5, 1.0) == 2.5


def test_a_master_within_the_bound_is_followed_without_a_takeover():  # RFC 5798 6.1
    # Clamped at 4x ours, Master_Down_Interval still exceeds a real master's interval
    # up to 12x ours: a master advertising (and sending) every 10 s is never declared down.
    assert master_down_interval(254, bounded_adver_interval(12.0, 1.0)) > 12.0
    slow = VrrpMachine(instance(priority=200, advert_interval=10.0), primary_address=PEER)
    fast = VrrpMachine(instance(priority=100, advert_interval=1.0), primary_address=ME)
    link = FakeLink([slow, fast])
    link.start(slow)
    link.run_until(40.0)                  # slow is MASTER, sending every 10 s
    link.start(fast)
    link.run_until(200.0)
    assert (slow.state, fast.state) == (M, B)
    assert fast.master_adver_interval == 4.0


def test_backup_clamps_a_huge_advertised_interval_and_reports_it():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200, interval=40.95), SPOOFER, 1.0)
    assert m.master_adver_interval == 4.0
    assert m.get_timer() == pytest.approx(1.0 + master_down_interval(100, 4.0))
    assert m.actions() == [IntervalBounded(SPOOFER, advertised=40.95, used=4.0, configured=1.0)]
    assert m.counters.interval_bounded == 1


def test_backup_clamps_a_tiny_advertised_interval_and_reports_it():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200, interval=0.01), PEER, 1.0)
    assert m.master_adver_interval == 0.25
    assert m.actions() == [IntervalBounded(PEER, advertised=0.01, used=0.25, configured=1.0)]


def test_an_interval_within_the_bound_is_adopted_as_is_and_not_reported():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200, interval=3.0), PEER, 1.0)
    assert m.master_adver_interval == 3.0
    assert m.actions() == []
    assert m.counters.interval_bounded == 0


def test_master_stepping_down_clamps_the_new_masters_interval():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(255, interval=40.95), SPOOFER, 10.0)
    assert m.state is B
    assert m.master_adver_interval == 4.0
    assert m.get_timer() == pytest.approx(10.0 + master_down_interval(100, 4.0))
    assert IntervalBounded(SPOOFER, advertised=40.95, used=4.0, configured=1.0) in m.actions()


def test_one_spoofed_huge_interval_advert_costs_one_bounded_master_down_interval():  # RFC 5798 6.4.3
    # The pair at 0.1 s; one advert at priority 255 with 40.95 s from a third address.
    # Unbounded, both would wait 3 x 40.95 s + skew (~140 s) with nobody holding the VIP.
    hi = VrrpMachine(instance(priority=150, advert_interval=0.1), primary_address=PEER)
    lo = VrrpMachine(instance(priority=100, advert_interval=0.1), primary_address=ME)
    link = FakeLink([hi, lo])
    link.start()
    link.run_until(5.0)
    assert (hi.state, lo.state) == (M, B)
    for m in (hi, lo):
        m.receive_advert(advert(255, interval=40.95), SPOOFER, 5.0)
    link.flush()
    # hi steps down and, with one advert at 150 (there were two masters), resets lo to
    # follow it at the pair's own 0.1 s: lo, not the spoofer's bound, decides the gap.
    assert (hi.state, lo.state) == (B, B)
    link.run_until(5.0 + master_down_interval(100, 0.1))
    assert (hi.state, lo.state) == (B, M)
    assert link.events[-1][2] == RoleChanged(B, M, Reason.MASTER_DOWN_TIMER)
    # hi's own Master_Down_Interval is bounded (0.4 s adopted, not 40.95 s); it then
    # preempts the lower-priority master.
    link.run_until(5.0 + master_down_interval(150, 0.4))
    assert (hi.state, lo.state) == (M, B)
    assert [e[2].reason for e in link.events[-2:]] == [Reason.PREEMPTED, Reason.HIGHER_PRIORITY_RECEIVED]
    link.run_until(20.0)
    assert link.masters() == [hi] and lo.master_adver_interval == pytest.approx(0.1)


def test_v2_never_adopts_so_is_never_bounded():  # RFC 3768 7.1 drops the mismatch instead
    m = backup(version=2)
    m.receive_advert(advert(200, version=2, interval=40.95), PEER, 1.0)
    assert m.actions() == []
    assert m.master_adver_interval == 1.0
