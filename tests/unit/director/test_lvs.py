"""The LVS side's decisions (``director.lvs.LvsRole``): the leader's role in, effects out."""

from __future__ import annotations

import dataclasses
import ipaddress

from hadirector.director.lvs import (
    HoldPreemption, LvsRole, ProgramServices, RunCommand, SetSyncDaemon, StopSyncDaemons, TuneSync,
    followed_instances, kernel_health, leader_instance, unavailable_faulted,
)
from hadirector.ipvs.table import DestEntry, DestKey, ServiceEntry, ServiceKey, Table
from hadirector.model import (
    Config, HealthState, LvsSettings, NodeSettings, ProgramMode, RealServer, ScaleOut, SyncDaemon,
    SyncGroup, VirtualService, VrrpInstance,
)
from hadirector.vrrp.machine import State

B, M, F, I = State.BACKUP, State.MASTER, State.FAULT, State.INITIALIZE
VIP = ipaddress.ip_interface("10.9.0.100/24")
WEB = VirtualService("web", address=VIP.ip, port=80, quorum_up=("/bin/up",), quorum_down=("/bin/down",))


def inst(name: str, vrid: int) -> VrrpInstance:
    return VrrpInstance(name=name, interface="eth0", vrid=vrid, priority=100, virtual_ips=(VIP,))


def config(program=ProgramMode.ALWAYS, sync_daemon=SyncDaemon("eth0", 7), groups=(),
           services=(WEB,), instances=("VI_1", "VI_2")) -> Config:
    return Config(node=NodeSettings(router_id="t"),
                  vrrp_instances=tuple(inst(n, 51 + i) for i, n in enumerate(instances)),
                  sync_groups=tuple(groups), virtual_services=tuple(services),
                  lvs=LvsSettings(program=program, sync_daemon=sync_daemon))


def test_on_master_of_the_leader_the_sync_daemon_becomes_master():
    r = LvsRole(config(), leader_state=B)
    assert r.role_changed("VI_1", M) == [SetSyncDaemon(M, "vrrp:MASTER")]
    assert r.role_changed("VI_1", B) == [SetSyncDaemon(B, "vrrp:BACKUP")]
    assert r.role_changed("VI_1", F) == [SetSyncDaemon(B, "vrrp:FAULT")], "any other role: backup"


def test_only_the_leaders_new_role_matters():
    r = LvsRole(config(), leader_state=B)
    assert r.role_changed("VI_2", M) == [], "not the leader"
    assert r.role_changed("VI_1", B) == [], "no change"


def test_master_only_programs_the_table_before_switching_the_daemon():
    r = LvsRole(config(program=ProgramMode.MASTER_ONLY), leader_state=B)
    assert not r.programming
    assert r.role_changed("VI_1", M) == [ProgramServices("vrrp:MASTER"), SetSyncDaemon(M, "vrrp:MASTER")]
    assert r.programming
    assert r.role_changed("VI_1", B)[0] == ProgramServices("vrrp:BACKUP")


def test_without_a_sync_daemon_a_role_change_switches_nothing():
    r = LvsRole(config(sync_daemon=None), leader_state=B)
    assert r.role_changed("VI_1", M) == []
    assert r.sync_daemon("startup") == []


def test_a_node_without_vrrp_acts_as_master_and_one_with_vrrp_starts_unknown():
    assert LvsRole(config(instances=())).role is M
    assert LvsRole(config()).role is I
    assert LvsRole(config()).sync_daemon("startup") == [SetSyncDaemon(B, "startup")]


def test_follow_instance_naming_a_sync_group_follows_every_member_led_by_the_first():
    cfg = config(sync_daemon=SyncDaemon("eth0", 7, follow_instance="g"),
                 groups=(SyncGroup("g", ("VI_2", "VI_1")),))
    assert followed_instances(cfg) == ("VI_2", "VI_1")
    assert leader_instance(cfg) == "VI_2"
    assert followed_instances(config()) == ("VI_1",), "default: the first instance"
    assert leader_instance(config(instances=())) is None


def test_a_fresh_backup_daemon_holds_preemption_of_the_followed_instances_that_run():
    # The sync daemon catches up with the master's connections first (catch_up, or
    # twice refresh_period).
    cfg = config(sync_daemon=SyncDaemon("eth0", 7, follow_instance="g", refresh_period=2),
                 groups=(SyncGroup("g", ("VI_1", "VI_2")),))
    r = LvsRole(cfg)
    assert r.backup_daemon_started({"VI_1"}) == [HoldPreemption(("VI_1",), 4.0)]
    assert r.backup_daemon_started(None) == [], "no agent: nobody to hold"
    assert LvsRole(config()).backup_daemon_started({"VI_1"}) == [], "no refresh period: no hold"


def test_quorum_scripts_run_on_a_change_of_a_known_quorum_only():
    r = LvsRole(config())
    assert r.quorum_changed(WEB, None, True) == [], "the first decision is no change"
    assert r.quorum_changed(WEB, True, True) == []
    assert r.quorum_changed(WEB, True, False) == [
        RunCommand(("/bin/down",), "web", "healthy_weight_below_quorum")]
    assert r.quorum_changed(WEB, False, True) == [RunCommand(("/bin/up",), "web", "quorum_regained")]
    assert r.quorum_changed(VirtualService("bare"), True, False) == []


def test_ipvs_unavailable_faults_the_followed_instances_while_ipvs_is_needed():
    cfg = config()
    assert unavailable_faulted(cfg, True, {"VI_1", "VI_2"}) == ("VI_1",)
    assert unavailable_faulted(cfg, True, set()) == (), "a followed instance that does not run"
    assert unavailable_faulted(cfg, False, {"VI_1"}) == ()
    idle = config(sync_daemon=None, services=())
    assert unavailable_faulted(idle, True, {"VI_1"}) == (), "a VRRP-only node needs no IPVS"


def test_a_reload_that_moves_the_leader_takes_the_new_leaders_state():
    r = LvsRole(config(), leader_state=M)
    moved = config(sync_daemon=SyncDaemon("eth0", 7, follow_instance="VI_2"))
    r.reconfigure(moved, leader_state=B)
    assert r.role is B
    r.reconfigure(moved, leader_state=None)
    assert r.role is B, "same leader: the role stays"
    r.reconfigure(config(instances=()), leader_state=None)
    assert r.role is M


def kernel_with(*dests: tuple[RealServer, int]) -> Table:
    """The kernel's table holding WEB with these real servers at these weights."""
    key = ServiceKey.of(WEB)
    return Table({key: ServiceEntry(key)},
                 {key: {DestKey.of(rs.address, rs.port): DestEntry(DestKey.of(rs.address, rs.port), weight=w)
                        for rs, w in dests}})


RS1 = RealServer(ipaddress.ip_address("10.9.1.1"), 80, weight=1)
RS2 = RealServer(ipaddress.ip_address("10.9.1.2"), 80, weight=1)


def with_servers(inhibit=False, scale_out=False) -> Config:
    vs = dataclasses.replace(WEB, real_servers=(RS1, RS2), inhibit_on_failure=inhibit)
    cfg = config(services=(vs,))
    if scale_out:
        cfg = dataclasses.replace(cfg, scale_out=ScaleOut(services=("web",), local_as=65001, peers=()))
    return cfg


def test_a_real_server_already_in_the_kernel_starts_up_and_one_absent_has_no_seed():
    cfg = with_servers()
    vs = cfg.virtual_services[0]
    assert kernel_health(cfg, kernel_with((RS1, 1))) == [(vs.key, RS1.key, HealthState.UP)]
    assert kernel_health(cfg, Table()) == [], "nothing programmed: every check decides"


def test_weight_zero_in_the_kernel_seeds_down_only_with_inhibit_on_failure():
    inhibit = with_servers(inhibit=True)
    vs = inhibit.virtual_services[0]
    assert kernel_health(inhibit, kernel_with((RS1, 0), (RS2, 3))) == [
        (vs.key, RS1.key, HealthState.DOWN), (vs.key, RS2.key, HealthState.UP)]
    plain = with_servers()
    assert kernel_health(plain, kernel_with((RS1, 0))) == [(vs.key, RS1.key, HealthState.UP)], \
        "without inhibit_on_failure weight 0 is the operator's, not a down mark"


def test_a_scale_out_server_at_weight_zero_is_left_to_its_check():
    cfg = with_servers(scale_out=True)
    vs = cfg.virtual_services[0]
    assert kernel_health(cfg, kernel_with((RS1, 0), (RS2, 1))) == [(vs.key, RS2.key, HealthState.UP)]


def test_a_reload_rewrites_the_sync_sysctls_only_when_refresh_period_changed():
    old = config(sync_daemon=SyncDaemon("eth0", 7, refresh_period=2))
    r = LvsRole(old, leader_state=B)
    r.reconfigure(old, leader_state=B)
    assert r.reloaded(old, B) == [], "nothing changed: no sysctl, no daemon restart"
    new = config(sync_daemon=SyncDaemon("eth0", 7, refresh_period=5))
    r.reconfigure(new, leader_state=B)
    assert r.reloaded(old, B) == [TuneSync("reload"), SetSyncDaemon(B, "reload")]
    fresh = LvsRole(config(sync_daemon=None), leader_state=B)
    fresh.reconfigure(new, leader_state=B)
    assert fresh.reloaded(config(sync_daemon=None), B) == [TuneSync("reload"), SetSyncDaemon(B, "reload")]


def test_a_sync_daemon_that_leaves_the_config_stops_only_the_daemons_it_described():
    old = config(sync_daemon=SyncDaemon("eth0", 7))
    r = LvsRole(old, leader_state=M)
    r.reconfigure(config(sync_daemon=None), leader_state=M)
    assert r.reloaded(old, M) == [StopSyncDaemons(SyncDaemon("eth0", 7), "reload")]


def test_a_reload_switches_the_daemon_again_when_the_leaders_role_moved():
    old = config()
    r = LvsRole(old, leader_state=M)
    moved = config(sync_daemon=SyncDaemon("eth0", 7, follow_instance="VI_2"))
    r.reconfigure(moved, leader_state=B)
    assert r.reloaded(old, M) == [SetSyncDaemon(B, "reload")]
    same = LvsRole(old, leader_state=M)
    same.reconfigure(config(sync_daemon=SyncDaemon("eth1", 7)), leader_state=M)
    assert same.reloaded(old, M) == [SetSyncDaemon(M, "reload")], "new settings: restarted"
