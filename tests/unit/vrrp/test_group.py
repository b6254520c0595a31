"""Sync groups (keepalived vrrp_sync_group): members fail over together."""

from __future__ import annotations

import ipaddress

import pytest

from hadirector.model import SyncGroup
from hadirector.vrrp.group import ForceState, SetFault, SyncGroupPolicy
from hadirector.vrrp.machine import (
    MasterWish, Reason, RoleChanged, SendAdvert, State, VrrpMachine,
)

from .helpers import FakeLink, instance, ip

B, M, F, I = State.BACKUP, State.MASTER, State.FAULT, State.INITIALIZE
GROUP = SyncGroup(name="g1", instances=("vi_1", "vi_2", "vi_3"))


def test_a_member_fault_faults_the_others_and_clearing_it_releases_them():
    p = SyncGroupPolicy(GROUP)
    assert p.set_fault("vi_1", True, "track_interface:vc0") == [
        SetFault("vi_1", True, "track_interface:vc0"),
        SetFault("vi_2", True, "sync_group:g1"),
        SetFault("vi_3", True, "sync_group:g1"),
    ]
    assert p.faulted and p.faulted_members() == ["vi_1"]
    assert p.set_fault("vi_1", False, "track_interface:vc0") == [
        SetFault("vi_1", False, "track_interface:vc0"),
        SetFault("vi_2", False, "sync_group:g1"),
        SetFault("vi_3", False, "sync_group:g1"),
    ]
    assert not p.faulted


def test_the_group_stays_faulted_until_every_members_own_fault_clears():
    p = SyncGroupPolicy(GROUP)
    p.set_fault("vi_1", True, "a")
    # vi_2's own fault now holds vi_1 in the group fault as well.
    assert p.set_fault("vi_2", True, "b") == [SetFault("vi_2", True, "b"),
                                              SetFault("vi_1", True, "sync_group:g1")]
    # vi_1's own fault clears; vi_2's still holds vi_1 and vi_3, and vi_2 is now only
    # held by its own fault.
    assert p.set_fault("vi_1", False, "a") == [SetFault("vi_1", False, "a"),
                                               SetFault("vi_2", False, "sync_group:g1")]
    orders = p.set_fault("vi_2", False, "b")
    assert SetFault("vi_1", False, "sync_group:g1") in orders
    assert SetFault("vi_3", False, "sync_group:g1") in orders


def test_a_member_becoming_master_pulls_the_others_to_master():
    p = SyncGroupPolicy(GROUP)
    assert p.role_changed("vi_2", RoleChanged(B, M, Reason.MASTER_DOWN_TIMER)) == [
        ForceState("vi_1", M), ForceState("vi_3", M)]


def test_a_master_dropping_to_backup_pushes_the_others_to_backup():
    p = SyncGroupPolicy(GROUP)
    assert p.role_changed("vi_1", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED)) == [
        ForceState("vi_2", B), ForceState("vi_3", B)]


@pytest.mark.parametrize("change", [
    RoleChanged(M, B, Reason.SYNC_GROUP),          # forced by us: never cascades
    RoleChanged(B, M, Reason.SYNC_GROUP),
    RoleChanged(I, B, Reason.STARTUP),             # nobody to push
    RoleChanged(F, B, Reason.FAULT_CLEARED),
    RoleChanged(M, F, Reason.FAULT),               # faults go through set_fault
])
def test_changes_that_are_not_propagated(change):
    assert SyncGroupPolicy(GROUP).role_changed("vi_1", change) == []


def test_the_group_goes_master_only_when_every_member_wishes_it():  # keepalived 2.x
    p = SyncGroupPolicy(GROUP)
    for m in GROUP.instances:
        p.role_changed(m, RoleChanged(I, B, Reason.STARTUP))
    assert p.master_wish("vi_1", MasterWish(True, Reason.MASTER_DOWN_TIMER)) == []
    assert p.master_wish("vi_2", MasterWish(True, Reason.PREEMPTED)) == []
    assert p.master_wish("vi_1", MasterWish(False, "master_advert_accepted")) == []
    assert p.master_wish("vi_3", MasterWish(True, Reason.MASTER_DOWN_TIMER)) == []
    assert p.master_wish("vi_1", MasterWish(True, Reason.PRIORITY_ZERO_RECEIVED)) == [
        ForceState("vi_1", M, Reason.PRIORITY_ZERO_RECEIVED),
        ForceState("vi_2", M, Reason.SYNC_GROUP),
        ForceState("vi_3", M, Reason.SYNC_GROUP),
    ]


def test_a_member_already_master_counts_as_wishing():
    p = SyncGroupPolicy(GROUP)
    p.role_changed("vi_1", RoleChanged(I, M, Reason.OWNER))
    p.role_changed("vi_2", RoleChanged(I, B, Reason.STARTUP))
    p.role_changed("vi_3", RoleChanged(I, B, Reason.STARTUP))
    p.master_wish("vi_2", MasterWish(True, Reason.MASTER_DOWN_TIMER))
    assert p.master_wish("vi_3", MasterWish(True, Reason.MASTER_DOWN_TIMER)) == [
        ForceState("vi_2", M), ForceState("vi_3", M, Reason.MASTER_DOWN_TIMER)]


def test_a_transition_forgets_the_members_wish():
    p = SyncGroupPolicy(SyncGroup(name="g", instances=("a", "b")))
    p.master_wish("a", MasterWish(True, Reason.MASTER_DOWN_TIMER))
    p.role_changed("a", RoleChanged(B, F, Reason.FAULT))
    p.role_changed("a", RoleChanged(F, B, Reason.FAULT_CLEARED))
    assert p.master_wish("b", MasterWish(True, Reason.MASTER_DOWN_TIMER)) == []


def test_unknown_member_is_an_error_for_faults_and_ignored_for_roles():
    p = SyncGroupPolicy(GROUP)
    with pytest.raises(KeyError):
        p.set_fault("nope", True, "x")
    assert p.role_changed("nope", RoleChanged(B, M, Reason.MASTER_DOWN_TIMER)) == []


# --- two nodes, two instances each, in one sync group ---------------------------------------


class Node:
    """What the agent does: route faults and role changes through the policy."""

    def __init__(self, addr, priority: int):
        vip1, vip2 = ipaddress.ip_interface("10.233.0.101/24"), ipaddress.ip_interface("10.233.0.102/24")
        self.m = {
            "vi_1": VrrpMachine(instance(name="vi_1", vrid=51, priority=priority, virtual_ips=(vip1,)),
                                primary_address=addr, sync_group=True),
            "vi_2": VrrpMachine(instance(name="vi_2", vrid=52, priority=priority, virtual_ips=(vip2,)),
                                primary_address=addr, sync_group=True),
        }
        self.policy = SyncGroupPolicy(SyncGroup(name="g", instances=("vi_1", "vi_2")))
        self.pending: dict[str, list] = {k: [] for k in self.m}

    def apply(self, order, now: float) -> None:
        m = self.m[order.instance]
        if isinstance(order, SetFault):
            m.set_fault(order.fault, order.reason, now)
        else:
            m.force_state(order.state, order.reason, now)

    def set_fault(self, member: str, fault: bool, reason: str, now: float) -> None:
        for order in self.policy.set_fault(member, fault, reason):
            self.apply(order, now)

    def states(self) -> set[State]:
        return {m.state for m in self.m.values()}


class GroupLink(FakeLink):
    """FakeLink whose flush lets each node's policy see role changes (like the agent)."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        super().__init__([m for n in nodes for m in n.m.values()])

    def flush(self) -> None:
        for _ in range(1000):
            busy = False
            for n in self.nodes:
                for name, m in n.m.items():
                    for action in m.actions():
                        busy = True
                        if isinstance(action, SendAdvert):
                            self._broadcast(m, action)
                        elif isinstance(action, RoleChanged):
                            self.events.append((self.now, f"{m.primary_address}/{name}", action))
                            for order in n.policy.role_changed(name, action):
                                n.apply(order, self.now)
                        elif isinstance(action, MasterWish):
                            for order in n.policy.master_wish(name, action):
                                n.apply(order, self.now)
            if not busy:
                return
        raise AssertionError("storm")


def test_group_members_fail_over_together_on_a_fault():
    a, b = Node(ip("10.233.0.1"), 100), Node(ip("10.233.0.2"), 90)
    link = GroupLink([a, b])
    link.start()
    link.run_until(10.0)
    assert a.states() == {M} and b.states() == {B}
    a.set_fault("vi_1", True, "track_interface:vc0", link.now)
    link.flush()
    link.run_until(11.0)
    assert a.states() == {F} and b.states() == {M}
    a.set_fault("vi_1", False, "track_interface:vc0", link.now)
    link.flush()
    link.run_until(20.0)
    assert a.states() == {M} and b.states() == {B}


def test_the_group_moves_when_every_member_is_outranked():
    a, b = Node(ip("10.233.0.1"), 100), Node(ip("10.233.0.2"), 90)
    link = GroupLink([a, b])
    link.start()
    link.run_until(10.0)
    for m in b.m.values():        # a group-wide track weight lifts both of b's members
        m.set_priority_delta(+20, "track_script:x", link.now)
    link.flush()
    link.run_until(20.0)
    assert b.states() == {M} and a.states() == {B}
    changes = [(who, ev.reason) for t, who, ev in link.events if t > 10.0]
    assert len(changes) == 4                  # each member moved exactly once


def test_the_group_does_not_flap_when_members_disagree_on_priority():  # keepalived 2.x
    a, b = Node(ip("10.233.0.1"), 100), Node(ip("10.233.0.2"), 90)
    link = GroupLink([a, b])
    link.start()
    link.run_until(10.0)
    # Only b's vi_1 outranks a; b's vi_2 still sees a's higher adverts and never
    # wishes, so b never takes the group (a lone preemption would flap forever).
    b.m["vi_1"].set_priority_delta(+20, "track_script:x", link.now)
    link.flush()
    link.run_until(60.0)
    assert a.states() == {M} and b.states() == {B}
    assert [ev for t, _, ev in link.events if t > 10.0] == []
    assert b.m["vi_1"].wants_master and not b.m["vi_2"].wants_master


def test_overlapping_member_faults_clear_in_any_order():
    # A faults, then B faults too, then A clears, then B clears: nobody may stay in
    # FAULT through a group fault left behind, and A must stay faulted while B is.
    from hadirector.model import SyncGroup
    from hadirector.vrrp.group import SetFault, SyncGroupPolicy

    p = SyncGroupPolicy(SyncGroup("G", ("A", "B")))
    group = "sync_group:G"
    carried = {"A": False, "B": False}

    def apply(orders):
        for o in orders:
            if isinstance(o, SetFault) and o.reason == group:
                carried[o.instance] = o.fault

    apply(p.set_fault("A", True, "link"))
    assert carried == {"A": False, "B": True}
    apply(p.set_fault("B", True, "link"))
    assert carried == {"A": True, "B": True}
    apply(p.set_fault("A", False, "link"))
    assert carried == {"A": True, "B": False}, "A stays faulted while B is"
    apply(p.set_fault("B", False, "link"))
    assert carried == {"A": False, "B": False}, "no group fault left behind"
