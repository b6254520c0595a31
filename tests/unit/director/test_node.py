"""The director core: role changes, faults and wishes in, effects out, in order.

Each test is one rule of the node-level policy; no event loop, no sleeps. The order of
the effects is the order in which the agent executes them.
"""

from __future__ import annotations

import ipaddress

from hadirector.director.effects import (
    AddVips, Announce, ForceState, GroupChanged, Notify, PublishRole, RecordStatus, RemoveVips,
    SetFault, SetPriorityDelta,
)
from hadirector.director.node import Director
from hadirector.model import (
    Config, GarpSettings, NodeSettings, NotifyScripts, SyncGroup, VrrpInstance,
)
from hadirector.vrrp.machine import MasterWish, Reason, RoleChanged, State

B, M, F, I = State.BACKUP, State.MASTER, State.FAULT, State.INITIALIZE
VIP1 = ipaddress.ip_interface("10.0.0.100/32")
VIP2 = ipaddress.ip_interface("10.0.0.101/32")
TO_MASTER = NotifyScripts(master=("/bin/to-master",))
GROUP_NOTIFY = NotifyScripts(notify=("/bin/group",))


def inst(name="vi_1", vrid=51, vips=(VIP1,), garp=GarpSettings(count=2), priority=100,
         **kw) -> VrrpInstance:
    return VrrpInstance(name=name, interface="eth0", vrid=vrid, priority=priority, virtual_ips=vips,
                        garp=garp, notify=TO_MASTER, **kw)


def config(*instances, groups=()) -> Config:
    return Config(node=NodeSettings(router_id="t"), vrrp_instances=tuple(instances),
                  sync_groups=tuple(groups))


def director(*instances, groups=(), states=None) -> Director:
    d = Director(config(*instances, groups=groups))
    for i in instances:
        d.attach(i.name, (states or {}).get(i.name, I))
    return d


def pair() -> Director:
    return director(inst(), inst("vi_2", 52, (VIP2,)),
                    groups=(SyncGroup("g", ("vi_1", "vi_2"), notify=GROUP_NOTIFY),),
                    states={"vi_1": B, "vi_2": B})


def test_on_master_the_effects_are_vips_then_announce_then_notify_then_publish():
    # RFC 5798 6.4.2: owning the VIP and the first gratuitous ARP go with the first
    # master advert; the scripts and the LVS side come after (the state file is the
    # shell's, written once after the whole change).
    d = director(inst(), states={"vi_1": B})
    change = RoleChanged(B, M, Reason.MASTER_DOWN_TIMER)
    d.role_changed("vi_1", change, priority=100, now=3.6)
    assert d.effects() == [
        AddVips("vi_1"),
        Announce("vi_1", "takeover", 0, 2, inline=True),
        Notify("INSTANCE", "vi_1", "MASTER", 100, TO_MASTER),
        PublishRole("vi_1", change, 100, 3.6),
    ]
    assert d.effects() == [], "effects are drained once"
    assert d.state("vi_1") is M


def test_leaving_master_removes_the_vips_before_the_scripts_run():
    d = director(inst(), states={"vi_1": M})
    change = RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED)
    d.role_changed("vi_1", change, priority=100, now=9.0)
    assert d.effects() == [
        RemoveVips("vi_1"),
        Notify("INSTANCE", "vi_1", "BACKUP", 100, TO_MASTER),
        PublishRole("vi_1", change, 100, 9.0),
    ]


def test_a_master_without_vips_or_without_garp_still_wants_its_vips_but_announces_nothing():
    for i in (inst(vips=()), inst(garp=GarpSettings(count=0))):
        d = director(i, states={"vi_1": B})
        d.role_changed("vi_1", RoleChanged(B, M, Reason.MASTER_DOWN_TIMER), priority=100, now=1.0)
        kinds = [type(e) for e in d.effects()]
        assert kinds == [AddVips, Notify, PublishRole]


def test_a_stopping_node_still_releases_vips_and_runs_stop_scripts_but_publishes_nothing():
    # The shutdown's own transitions: the components (LVS) are stopping too.
    d = director(inst(), states={"vi_1": M})
    d.stopping()
    d.role_changed("vi_1", RoleChanged(M, I, Reason.SHUTDOWN), priority=100, now=5.0)
    assert d.effects() == [RemoveVips("vi_1"), Notify("INSTANCE", "vi_1", "INIT", 100, TO_MASTER)]


def test_a_group_member_taking_over_forces_the_others_and_the_group_reports_when_they_agree():
    d = pair()
    first = RoleChanged(B, M, Reason.OWNER)
    d.role_changed("vi_1", first, priority=255, now=1.0)
    assert d.effects() == [
        AddVips("vi_1"), Announce("vi_1", "takeover", 0, 2, inline=True),
        ForceState("vi_2", M, Reason.SYNC_GROUP),          # members in transit: no group change yet
        Notify("INSTANCE", "vi_1", "MASTER", 255, TO_MASTER),
        PublishRole("vi_1", first, 255, 1.0),
    ]
    forced = RoleChanged(B, M, Reason.SYNC_GROUP)
    d.role_changed("vi_2", forced, priority=100, now=1.0)
    assert d.effects() == [
        AddVips("vi_2"), Announce("vi_2", "takeover", 0, 2, inline=True),    # a forced change forces nobody
        GroupChanged("g", M), Notify("GROUP", "g", "MASTER", 0, GROUP_NOTIFY),
        Notify("INSTANCE", "vi_2", "MASTER", 100, TO_MASTER),
        PublishRole("vi_2", forced, 100, 1.0),
    ]
    assert d.group_states() == {"g": "MASTER"}


def test_a_member_stepping_down_pushes_the_others_back_to_backup():
    d = pair()
    for name in ("vi_1", "vi_2"):
        d.role_changed(name, RoleChanged(B, M, Reason.SYNC_GROUP), priority=100, now=1.0)
    d.effects()
    d.role_changed("vi_2", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED), priority=100, now=2.0)
    assert ForceState("vi_1", B, Reason.SYNC_GROUP) in d.effects()


def test_the_group_moves_to_master_only_once_every_member_wishes_it():
    # keepalived 2.x: "only sync to master if everyone wants to".
    d = pair()
    d.master_wish("vi_1", MasterWish(True, Reason.MASTER_DOWN_TIMER), now=3.0)
    assert d.effects() == []
    d.master_wish("vi_2", MasterWish(True, Reason.PRIORITY_ZERO_RECEIVED), now=3.1)
    assert d.effects() == [ForceState("vi_1", M, Reason.SYNC_GROUP),
                           ForceState("vi_2", M, Reason.PRIORITY_ZERO_RECEIVED)]


def test_a_fault_of_a_group_member_faults_the_others_and_the_group_reports_fault():
    d = pair()
    d.set_fault("vi_1", True, "track_interface:eth1", now=4.0)
    assert d.effects() == [SetFault("vi_1", True, "track_interface:eth1"),
                           SetFault("vi_2", True, "sync_group:g"), RecordStatus()]
    # The first member in FAULT is enough for the group's state.
    d.role_changed("vi_1", RoleChanged(B, F, Reason.FAULT), priority=100, now=4.0)
    out = d.effects()
    assert out[:3] == [RemoveVips("vi_1"), GroupChanged("g", F),
                       Notify("GROUP", "g", "FAULT", 0, GROUP_NOTIFY)]
    d.role_changed("vi_2", RoleChanged(B, F, Reason.FAULT), priority=100, now=4.0)
    assert GroupChanged("g", F) not in d.effects(), "reported once"
    d.set_fault("vi_1", False, "track_interface:eth1", now=5.0)
    assert d.effects() == [SetFault("vi_1", False, "track_interface:eth1"),
                           SetFault("vi_2", False, "sync_group:g"), RecordStatus()]


def test_a_fault_of_a_lone_instance_goes_to_its_own_machine_only():
    d = director(inst(), inst("vi_2", 52, (VIP2,)), states={"vi_1": B, "vi_2": B})
    d.set_fault("vi_1", True, "ipvs_unavailable", now=1.0)
    assert d.effects() == [SetFault("vi_1", True, "ipvs_unavailable"), RecordStatus()]


def test_inputs_for_an_instance_without_a_driver_change_nothing():
    d = director(inst(), groups=(SyncGroup("g", ("vi_1", "vi_2")),), states={"vi_1": B})
    d.set_fault("vi_2", True, "track_script:chk", now=1.0)
    d.set_priority_delta("vi_2", -20, "track_script:chk", now=1.0)
    d.reannounce("vi_2", now=1.0)
    assert d.effects() == []
    d.detach("vi_1")
    d.set_fault("vi_1", True, "track_script:chk", now=1.0)
    assert d.effects() == []


def test_a_priority_delta_goes_to_the_instance_machine():
    d = director(inst(), states={"vi_1": M})
    d.set_priority_delta("vi_1", -20, "track_script:chk", now=1.0)
    assert d.effects() == [SetPriorityDelta("vi_1", -20, "track_script:chk")]


def test_a_lower_priority_master_heard_is_answered_with_a_whole_garp_burst_while_master():
    # vrrp Reannounce (keepalived garp_lower_prio_repeat): neighbours that followed the
    # other router come back to us.
    d = director(inst(), states={"vi_1": M})
    d.reannounce("vi_1", now=2.0)
    assert d.effects() == [Announce("vi_1", "lower_priority_master_heard", 0, 2),
                           Announce("vi_1", "lower_priority_master_heard", 1, 2)]
    d.role_changed("vi_1", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED), priority=100, now=2.1)
    d.effects()
    d.reannounce("vi_1", now=2.2)
    assert d.effects() == [], "a backup announces nothing"


def test_a_reload_rebuilds_a_changed_group_from_live_states_and_own_faults_only():
    d = director(inst(), inst("vi_2", 52, (VIP2,)), inst("vi_3", 53, ()),
                 groups=(SyncGroup("g", ("vi_1", "vi_2")),),
                 states={"vi_1": B, "vi_2": B, "vi_3": M})
    d.set_fault("vi_1", True, "track_interface:eth1", now=1.0)
    d.effects()
    new = config(inst(), inst("vi_2", 52, (VIP2,)), inst("vi_3", 53, ()),
                 groups=(SyncGroup("g", ("vi_2", "vi_3")),))
    # vi_1 carries its own fault; vi_2 the old group's. The new group {vi_2, vi_3} has no
    # member with a fault of its own, so vi_2's group fault goes and nothing is forced.
    d.reconfigure(new, faults={"vi_1": frozenset({"track_interface:eth1"}),
                               "vi_2": frozenset({"sync_group:g"}), "vi_3": frozenset()}, now=2.0)
    assert d.effects() == [SetFault("vi_2", False, "sync_group:g")]
    assert (d.in_sync_group("vi_1"), d.in_sync_group("vi_3")) == (False, True)
    # The new policy knows vi_3 is MASTER: vi_2 wishing is enough to move vi_2.
    d.master_wish("vi_2", MasterWish(True, Reason.MASTER_DOWN_TIMER), now=3.0)
    assert d.effects() == [ForceState("vi_2", M, Reason.MASTER_DOWN_TIMER)]


def test_a_reload_keeps_the_policy_of_a_group_whose_members_did_not_change():
    d = pair()
    d.set_fault("vi_1", True, "track_interface:eth1", now=1.0)
    d.effects()
    renamed_scripts = SyncGroup("g", ("vi_1", "vi_2"), notify=NotifyScripts(master=("/bin/x",)))
    d.reconfigure(config(inst(), inst("vi_2", 52, (VIP2,)), groups=(renamed_scripts,)),
                  faults={"vi_1": frozenset({"track_interface:eth1"}),
                          "vi_2": frozenset({"sync_group:g"})}, now=2.0)
    assert d.effects() == [], "the group fault still holds"
    d.set_fault("vi_1", False, "track_interface:eth1", now=3.0)
    assert SetFault("vi_2", False, "sync_group:g") in d.effects()


def test_a_group_that_went_away_clears_the_fault_it_put_on_its_members():
    d = pair()
    d.reconfigure(config(inst(), inst("vi_2", 52, (VIP2,))),
                  faults={"vi_1": frozenset({"track_interface:eth1"}),
                          "vi_2": frozenset({"sync_group:g"})}, now=2.0)
    assert d.effects() == [SetFault("vi_2", False, "sync_group:g")]
    assert not d.in_sync_group("vi_1") and d.group_states() == {}
