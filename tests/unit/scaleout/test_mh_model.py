"""The model of the kernel's mh scheduler (lab/mh.py) that the kernel-lab scale-out tests
use to pick client ports; tests/kernel/test_scaleout_traffic.py checks it against IPVS."""

from __future__ import annotations

import collections

from lab import mh

SERVERS = ["10.245.2.21", "10.245.2.22", "10.245.2.23"]


def choices(dests, ports=range(40000, 42000)):
    table = mh.lookup_table(dests)
    return {p: mh.schedule(dests, table, "10.245.1.2", p) for p in ports}


def test_equal_weights_share_the_table_evenly():
    table = mh.lookup_table([mh.Dest(a, 80) for a in SERVERS])
    assert sorted(collections.Counter(table).values()) == [1364, 1364, 1365]


def test_weight_0_keeps_every_slot_and_falls_back_only_for_its_own_flows():
    before = choices([mh.Dest(a, 80) for a in SERVERS])
    after = choices([mh.Dest(a, 80, weight=0 if a == SERVERS[2] else 1) for a in SERVERS])
    assert {p for p in before if before[p] != after[p]} == {p for p in before if before[p] == SERVERS[2]}
    assert SERVERS[2] not in after.values()


def test_added_at_weight_0_it_has_no_slots_like_a_deleted_one():
    added_at_0 = choices([mh.Dest(a, 80, weight=0 if a == SERVERS[2] else 1,
                                  last_weight=0 if a == SERVERS[2] else 1) for a in SERVERS])
    assert added_at_0 == choices([mh.Dest(a, 80) for a in SERVERS[:2]])


def test_another_list_order_changes_some_choices():
    forward = choices([mh.Dest(a, 80) for a in SERVERS], range(10000, 30000))
    backward = choices([mh.Dest(a, 80) for a in reversed(SERVERS)], range(10000, 30000))
    moved = sum(forward[p] != backward[p] for p in forward)
    assert 0 < moved < len(forward) // 100
