"""plan(actual, desired, owned): the shortest, owner-respecting difference (pure)."""

from dataclasses import replace

from hadirector.ipvs.planner import (
    AddDest, AddService, DelDest, DelService, EditDest, EditService, apply_to_table, plan,
)
from hadirector.ipvs.table import (
    FWD_LOCAL, FWD_ROUTE, DestEntry, DestKey, ServiceEntry, ServiceKey, Table, desired_table,
)
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy

WEB = ServiceKey.inet("tcp", "10.244.0.100", 80)


def run(actual: Table, ops) -> Table:
    t = actual.copy()
    for op in ops:
        apply_to_table(t, op)
    return t


def test_from_empty_adds_each_service_then_its_real_servers():
    desired = desired_table(sc.config(sc.web(2)), all_healthy)
    ops = plan(Table(), desired, set())
    assert [type(o) for o in ops] == [AddService, AddDest, AddDest]


def test_applying_the_plan_converges_and_a_second_plan_is_empty():
    desired = desired_table(sc.config(sc.web(3), sc.vs("dns", port=53, real_servers=(sc.rs("10.244.1.9", 53),))), all_healthy)
    after = run(Table(), plan(Table(), desired, set()))
    assert after == desired
    assert plan(after, desired, set(desired.services)) == []


def test_one_weight_change_is_one_edit():
    cfg = sc.config(sc.web(3))
    before = desired_table(cfg, all_healthy)
    after = desired_table(sc.with_weight(cfg, "web", "10.244.1.2", 7), all_healthy)
    ops = plan(before, after, set(before.services))
    assert ops == [EditDest(WEB, after.dests[WEB][DestKey("10.244.1.2", 80)], ("weight",))]


def test_service_field_changes_are_edited_in_place_not_recreated():
    before = desired_table(sc.config(sc.web(2, scheduler="rr")), all_healthy)
    after = desired_table(sc.config(sc.web(2, scheduler="wlc", persistence_timeout=60)), all_healthy)
    (op,) = plan(before, after, set(before.services))
    assert isinstance(op, EditService)
    assert op.fields == ("scheduler", "flags", "timeout")


def test_forwarding_method_change_is_an_edit():
    before = desired_table(sc.config(sc.web(1)), all_healthy)
    d = before.dests[WEB][DestKey("10.244.1.1", 80)]
    after = before.copy()
    after.dests[WEB][d.key] = replace(d, fwd=FWD_ROUTE)
    assert plan(before, after, {WEB}) == [EditDest(WEB, after.dests[WEB][d.key], ("fwd",))]


def test_kernel_reported_local_forwarding_matches_any_desired_method():
    desired = desired_table(sc.config(sc.web(1)), all_healthy)
    actual = desired.copy()
    d = actual.dests[WEB][DestKey("10.244.1.1", 80)]
    actual.dests[WEB][d.key] = replace(d, fwd=FWD_LOCAL)
    assert plan(actual, desired, {WEB}) == []


def test_foreign_services_are_never_touched():
    desired = desired_table(sc.config(sc.web(2)), all_healthy)
    actual = desired.copy()
    foreign = ServiceEntry(ServiceKey.inet("tcp", "10.244.0.7", 22), "rr")
    actual.add(foreign, [DestEntry(DestKey("10.244.5.5", 22))])
    assert plan(actual, desired, {WEB}) == []


def test_owned_service_no_longer_desired_is_deleted_whole():
    desired = desired_table(sc.config(sc.web(2)), all_healthy)
    actual = desired.copy()
    stale = ServiceKey.inet("tcp", "10.244.0.100", 8080)
    actual.add(ServiceEntry(stale, "rr"), [DestEntry(DestKey("10.244.1.1", 8080))])
    assert plan(actual, desired, {WEB, stale}) == [DelService(stale)]


def test_removing_a_real_server_from_one_service_touches_no_other_service():
    a = sc.web(3)
    b = sc.vs("api", port=8443, real_servers=a.real_servers)
    cfg = sc.config(a, b)
    before = desired_table(cfg, all_healthy)
    after = desired_table(sc.without_rs(cfg, "web", "10.244.1.2"), all_healthy)
    ops = plan(before, after, set(before.services))
    assert ops == [DelDest(WEB, DestKey("10.244.1.2", 80), 4)]


def test_hand_added_real_server_in_an_owned_service_is_drift_and_removed():
    desired = desired_table(sc.config(sc.web(1)), all_healthy)
    actual = desired.copy()
    actual.dests[WEB][DestKey("10.244.7.7", 80)] = DestEntry(DestKey("10.244.7.7", 80))
    assert plan(actual, desired, {WEB}) == [DelDest(WEB, DestKey("10.244.7.7", 80), 4)]


def test_declared_service_made_by_hand_is_adopted_without_recreating_it():
    desired = desired_table(sc.config(sc.web(2)), all_healthy)
    actual = Table()
    actual.add(desired.services[WEB], [])      # same service, made by ipvsadm, empty
    ops = plan(actual, desired, set())
    assert [type(o) for o in ops] == [AddDest, AddDest]


def test_plan_is_deterministic():
    desired = desired_table(sc.config(*(sc.vs(f"s{i}", port=1000 + i, real_servers=(sc.rs("10.244.1.1", 80),))
                                        for i in range(20))), all_healthy)
    assert plan(Table(), desired, set()) == plan(Table(), desired, set())
    keys = [o.service for o in plan(Table(), desired, set()) if isinstance(o, AddService)]
    assert keys == sorted(keys)


def test_same_config_on_restart_plans_nothing():
    cfg = sc.many(20, 5)
    kernel = run(Table(), plan(Table(), desired_table(cfg, all_healthy), set()))
    assert plan(kernel, desired_table(cfg, all_healthy), set()) == []
