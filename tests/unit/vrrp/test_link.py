"""Several machines on a fake LAN (helpers.FakeLink): the election converges to exactly one
MASTER, survives partitions, breaks ties by address and honours preempt / nopreempt.

Adverts travel through the real codec. Clock: fake, timers fired in time order.
"""

from __future__ import annotations

import pytest

from hadirector.vrrp.machine import Reason, State, VrrpMachine

from .helpers import FakeLink, instance, ip

A_ADDR, B_ADDR, C_ADDR = ip("10.233.0.1"), ip("10.233.0.2"), ip("10.233.0.3")


def node(addr, **kw) -> VrrpMachine:
    return VrrpMachine(instance(**kw), primary_address=addr)


def assert_one_master(link: FakeLink, expected: VrrpMachine) -> None:
    assert link.masters() == [expected]
    for m in link.machines:
        if m is not expected and m.state is not State.INITIALIZE:   # not started / shut down
            assert m.state is State.BACKUP
            assert m.master_address == expected.primary_address


def test_exactly_one_master_after_convergence():  # RFC 5798 6.4
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start()
    link.run_until(30.0)
    assert_one_master(link, a)
    assert a.counters.became_master == 1 and b.counters.became_master == 0


def test_three_nodes_elect_the_highest_priority():  # RFC 5798 6.4
    a, b, c = node(A_ADDR, priority=50), node(B_ADDR, priority=200), node(C_ADDR, priority=100)
    link = FakeLink([a, b, c])
    link.start()
    link.run_until(30.0)
    assert_one_master(link, b)


def test_partition_gives_two_masters_and_healing_leaves_one():  # RFC 5798 6.4.3
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start()
    link.run_until(10.0)
    link.partition()
    link.run_until(20.0)
    assert link.masters() == [a, b]           # split brain while cut off, as VRRP must
    link.heal()
    link.run_until(22.0)                      # one advert from the higher priority suffices
    assert_one_master(link, a)
    _, who, change = link.events[-1]
    assert (who, change.new, change.reason) == (str(B_ADDR), State.BACKUP,
                                                Reason.HIGHER_PRIORITY_RECEIVED)


def test_equal_priority_tie_is_broken_by_the_higher_address():  # RFC 5798 6.4.3
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=100)
    link = FakeLink([a, b])
    link.partition()
    link.start()
    link.run_until(10.0)
    assert link.masters() == [a, b]
    link.heal()
    link.run_until(12.0)
    assert_one_master(link, b)                # 10.233.0.2 > 10.233.0.1
    assert a.last_reason == Reason.HIGHER_ADDRESS_RECEIVED


def test_equal_priority_nodes_started_together_elect_one():  # RFC 5798 6.4
    a, b = node(A_ADDR), node(B_ADDR)
    link = FakeLink([a, b])
    link.start()
    link.run_until(30.0)
    assert len(link.masters()) == 1


def test_returning_higher_priority_node_preempts():  # RFC 5798 6.4.2 Preempt_Mode
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start(b)
    link.run_until(10.0)
    assert_one_master(link, b)
    link.start(a)
    link.run_until(20.0)
    assert_one_master(link, a)
    assert a.last_reason == Reason.PREEMPTED
    assert b.last_reason == Reason.HIGHER_PRIORITY_RECEIVED


def test_nopreempt_keeps_the_lower_priority_master():  # RFC 5798 6.4.2 Preempt_Mode
    a, b = node(A_ADDR, priority=100, preempt=False), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start(b)
    link.run_until(10.0)
    link.start(a)
    link.run_until(60.0)
    assert_one_master(link, b)


def test_preempt_delay_postpones_preemption():  # keepalived preempt_delay
    a, b = node(A_ADDR, priority=100, preempt_delay=15.0), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start(b)
    link.run_until(10.0)
    link.start(a)
    link.run_until(25.0)                      # first lower advert ~t=11: delay until ~26
    assert_one_master(link, b)
    link.run_until(35.0)
    assert_one_master(link, a)
    took_over = [t for t, who, ev in link.events if who == str(A_ADDR) and ev.new is State.MASTER]
    assert 26.0 <= took_over[0] <= 26.0 + 3.61 + 1.0


def test_master_shutdown_hands_over_within_skew_time():  # RFC 5798 6.4.3 / 6.4.2
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start()
    link.run_until(10.0)
    a.shutdown(link.now)
    link.flush()
    link.run_until(10.0 + 166 / 256 + 1e-9)  # Skew_Time of priority 90
    assert_one_master(link, b)
    assert b.last_reason == Reason.PRIORITY_ZERO_RECEIVED


def test_master_fault_hands_over_and_clearing_it_takes_back():
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start()
    link.run_until(10.0)
    a.set_fault(True, "track_interface:vc0", link.now)
    link.flush()
    link.run_until(11.0)
    assert link.masters() == [b] and a.state is State.FAULT
    a.set_fault(False, "track_interface:vc0", link.now)
    link.flush()
    link.run_until(20.0)
    assert_one_master(link, a)


def test_tracked_priority_drop_moves_the_master():
    a, b = node(A_ADDR, priority=100), node(B_ADDR, priority=90)
    link = FakeLink([a, b])
    link.start()
    link.run_until(10.0)
    a.set_priority_delta(-20, "track_script:chk", link.now)
    link.flush()
    link.run_until(20.0)
    assert_one_master(link, b)
    a.set_priority_delta(0, "track_script:chk", link.now)
    link.flush()
    link.run_until(30.0)
    assert_one_master(link, a)


@pytest.mark.parametrize("seed", range(5))
def test_random_partitions_always_heal_to_the_highest_priority(seed):
    import random

    rng = random.Random(seed)
    nodes = [node(ip(f"10.233.0.{i + 1}"), priority=rng.randrange(1, 255)) for i in range(4)]
    link = FakeLink(nodes)
    link.start()
    for _ in range(6):
        link.heal()
        for _ in range(rng.randrange(0, 4)):
            x, y = rng.sample(nodes, 2)
            link.partition(x, y)
        link.run_for(rng.uniform(0.1, 8.0))
    link.heal()
    link.run_for(10.0)
    best = max(nodes, key=lambda m: (m.effective_priority, int(m.primary_address)))
    assert_one_master(link, best)
