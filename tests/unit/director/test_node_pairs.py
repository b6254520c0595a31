"""The director over real VRRP machines: the order the agent executes effects in, and
two nodes on FakeLink (one VIP holder after a partition heals; sync groups move whole)."""

from __future__ import annotations

import ipaddress

from hadirector.director.effects import (
    AddVips, Announce, ForceState, GroupChanged, Notify, PublishRole, RecordStatus, RemoveVips,
)
from hadirector.model import GarpSettings, SyncGroup, VrrpInstance
from hadirector.vrrp.machine import State

from .helpers import Node, NodeLink, config

VIP1 = ipaddress.ip_interface("10.0.0.100/32")
VIP2 = ipaddress.ip_interface("10.0.0.101/32")


def inst(name="vi_1", vrid=51, vip=VIP1, priority=100) -> VrrpInstance:
    return VrrpInstance(name=name, interface="eth0", vrid=vrid, priority=priority,
                        advert_interval=1.0, virtual_ips=(vip,), garp=GarpSettings(count=2))


def test_on_master_of_the_leader_the_effects_are_vips_then_announce_then_notify_then_sync_master():
    # The order the agent and the LVS side execute in: reachable first (RFC 5798 6.4.2),
    # then the scripts and the state file, then the sync daemon (a subscriber).
    from dataclasses import replace

    from hadirector.director.lvs import SetSyncDaemon
    from hadirector.model import LvsSettings, ProgramMode, SyncDaemon
    cfg = replace(config(inst(), inst("vi_2", 52, VIP2)),
                  lvs=LvsSettings(program=ProgramMode.MASTER_ONLY, sync_daemon=SyncDaemon("eth0", 7)))
    node = Node(cfg, "10.0.0.1")
    node.start()
    node.done.clear()
    node.now = node.machines["vi_1"].get_timer()    # Master_Down_Timer
    node.machines["vi_1"].handle_timer(node.now)
    node.drain("vi_1")
    assert [type(e).__name__ for e in node.done] == [
        "AddVips", "Announce", "Notify", "PublishRole", "ProgramServices", "SetSyncDaemon"]
    assert node.done[-1] == SetSyncDaemon(State.MASTER, "vrrp:MASTER")
    node.done.clear()
    node.machines["vi_2"].handle_timer(node.machines["vi_2"].get_timer())
    node.drain("vi_2")
    assert [type(e).__name__ for e in node.done] == [
        "AddVips", "Announce", "Notify", "PublishRole"], "not the leader: no LVS effect"


def test_a_forced_members_effects_run_before_the_rest_of_the_forcing_members():
    # The agent applies an order at once: the forced member's VIPs, the group's report
    # and its scripts come before the forcing member's own scripts.
    node = Node(config(inst(priority=255), inst("vi_2", 52, VIP2),
                       groups=(SyncGroup("g", ("vi_1", "vi_2")),)), "10.0.0.1")
    node.start("vi_2")
    node.done.clear()
    node.start("vi_1")          # the address owner goes straight to MASTER
    assert [(type(e).__name__, getattr(e, "instance", getattr(e, "name", None))) for e in node.done] == [
        ("AddVips", "vi_1"), ("Announce", "vi_1"), ("ForceState", "vi_2"),
        ("AddVips", "vi_2"), ("Announce", "vi_2"), ("GroupChanged", None), ("Notify", "g"),
        ("Notify", "vi_2"), ("PublishRole", "vi_2"),
        ("Notify", "vi_1"), ("PublishRole", "vi_1"),
    ]
    assert node.done[2] == ForceState("vi_2", State.MASTER)
    assert node.done[5] == GroupChanged("g", State.MASTER)
    assert node.holding == {"vi_1", "vi_2"}


def test_one_vip_holder_after_a_partition_heals_and_the_winner_reannounces():
    a = Node(config(inst(priority=200)), "10.0.0.1")
    b = Node(config(inst(priority=100)), "10.0.0.2")
    link = NodeLink.of(a, b)
    link.start()
    link.run_for(5)
    assert link.holders() == [(0, "vi_1")]
    link.partition()
    link.run_for(5)
    assert link.holders() == [(0, "vi_1"), (1, "vi_1")], "split brain while cut off"
    a.done.clear()
    b.done.clear()
    link.heal()
    link.run_for(5)
    assert link.holders() == [(0, "vi_1")]
    assert RemoveVips("vi_1") in b.done
    # Whoever of the two heard the other first, the winner re-announces the VIPs with a
    # whole GARP burst (vrrp Reannounce), so the LAN ends pointing at it.
    assert Announce("vi_1", "lower_priority_master_heard", 0, 2) in a.done
    assert not any(isinstance(e, (AddVips, RemoveVips)) for e in a.done)


def test_a_sync_group_whose_members_prefer_different_nodes_settles_on_one_node():
    # keepalived 2.x: the group moves only when every member wants MASTER, so it does
    # not hand its VIPs back and forth between the nodes.
    group = SyncGroup("g", ("vi_1", "vi_2"))
    a = Node(config(inst(priority=200), inst("vi_2", 52, VIP2, priority=100), groups=(group,)),
             "10.0.0.1")
    b = Node(config(inst(priority=100), inst("vi_2", 52, VIP2, priority=200), groups=(group,)),
             "10.0.0.2")
    link = NodeLink.of(a, b)
    link.start()
    link.run_for(30)
    holders = link.holders()
    assert holders in ([(0, "vi_1"), (0, "vi_2")], [(1, "vi_1"), (1, "vi_2")]), holders
    before = len(a.done) + len(b.done)
    link.run_for(30)
    assert len(a.done) + len(b.done) == before, "no flapping"


def test_a_fault_of_one_member_moves_the_whole_group_to_the_peer():
    group = SyncGroup("g", ("vi_1", "vi_2"))
    a = Node(config(inst(priority=200), inst("vi_2", 52, VIP2, priority=200), groups=(group,)),
             "10.0.0.1")
    b = Node(config(inst(), inst("vi_2", 52, VIP2), groups=(group,)), "10.0.0.2")
    link = NodeLink.of(a, b)
    link.start()
    link.run_for(10)
    assert link.holders() == [(0, "vi_1"), (0, "vi_2")]
    a.set_fault("vi_2", True, "track_interface:eth1")
    link.flush()
    link.run_for(10)
    assert link.holders() == [(1, "vi_1"), (1, "vi_2")]
    assert {n: m.state for n, m in a.machines.items()} == {"vi_1": State.FAULT, "vi_2": State.FAULT}
    assert a.director.group_states() == {"g": "FAULT"}
    assert Notify("GROUP", "g", "FAULT", 0, group.notify) in a.done
    assert RecordStatus() in a.done and any(isinstance(e, PublishRole) for e in b.done)
