"""The reconciler's promises, held against FakeIpvs (on the host) and the kernel's IPVS
(in the kernel lab, in a fresh namespace): the same tests, the same assertions.

A difference between the two parameters is a bug in the fake (it must fail like the
kernel) or in the netlink encoding (it must read back what it wrote).
"""

from __future__ import annotations

import errno

import pytest

from hadirector import model
from hadirector.kernel.fake import FakeIpvs
from hadirector.kernel.ownership import OwnedStore
from hadirector.ipvs.planner import AddService, DelDest, EditDest
from hadirector.kernel.reconcile import Reconciler
from hadirector.ipvs.table import (
    DestKey, ServiceEntry, ServiceKey, desired_service, desired_table,
)
from hadirector.model import HealthState
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy, health_from_mapping

from lab.ipvs_netns import IpvsNetns, kernel_schedulers

WEB = ServiceKey.inet("tcp", "10.244.0.100", 80)


@pytest.fixture(params=["fake", pytest.param("kernel", marks=pytest.mark.kernel)])
def backend(request):
    if request.param == "fake":
        yield FakeIpvs()
        return
    with IpvsNetns("rc") as ns:
        b = ns.ipvs()
        b.ns = ns
        try:
            yield b
        finally:
            b.close()


def add_by_hand(backend, key: ServiceKey, dest: str) -> None:
    """A service an operator made with ipvsadm (the fake: the same entry, directly)."""
    if isinstance(backend, FakeIpvs):
        from hadirector.ipvs.planner import AddDest
        from hadirector.ipvs.table import DestEntry
        backend.apply(AddService(ServiceEntry(key, "rr")))
        backend.apply(AddDest(key, DestEntry(DestKey(dest, key.port))))
    else:
        vip = f"{key.address}:{key.port}"
        backend.ns.run("ipvsadm", "-A", "-t", vip, "-s", "rr")
        backend.ns.run("ipvsadm", "-a", "-t", vip, "-r", f"{dest}:{key.port}", "-m")


def test_sync_from_empty_programs_the_table_and_reads_back_equal(backend):
    desired = desired_table(sc.config(sc.web(3), sc.vs("dns", port=53, protocol=model.Protocol.UDP,
                                                       real_servers=(sc.rs("10.244.1.9", 53),))), all_healthy)
    report = Reconciler(backend).sync(desired)
    assert report.ok and len(report.applied) == 6
    assert backend.dump() == desired


def test_second_sync_writes_nothing(backend):
    desired = desired_table(sc.config(sc.web(3)), all_healthy)
    r = Reconciler(backend)
    r.sync(desired)
    assert r.sync(desired).applied == []


def test_restart_with_unchanged_config_writes_nothing(backend, tmp_path):
    desired = desired_table(sc.config(sc.web(3)), all_healthy)
    Reconciler(backend, OwnedStore.in_state_dir(tmp_path)).sync(desired)
    restarted = Reconciler(backend, OwnedStore.in_state_dir(tmp_path))
    assert restarted.sync(desired).planned == []


def test_one_weight_change_is_one_edit(backend):
    cfg = sc.config(sc.web(3))
    r = Reconciler(backend)
    r.sync(desired_table(cfg, all_healthy))
    report = r.sync(desired_table(sc.with_weight(cfg, "web", "10.244.1.2", 9), all_healthy))
    assert [type(op) for op in report.applied] == [EditDest]
    assert backend.dump().dests[WEB][DestKey("10.244.1.2", 80)].weight == 9


def test_entries_made_by_hand_are_left_alone(backend):
    foreign = ServiceKey.inet("tcp", "10.244.0.7", 22)
    add_by_hand(backend, foreign, "10.244.5.5")
    r = Reconciler(backend)
    r.sync(desired_table(sc.config(sc.web(2)), all_healthy))
    r.sync(desired_table(sc.config(), all_healthy))          # we now want nothing at all
    table = backend.dump()
    assert set(table.services) == {foreign}
    assert set(table.dests[foreign]) == {DestKey("10.244.5.5", 22)}


def test_removing_a_real_server_from_one_service_touches_no_other(backend):
    a = sc.web(3)
    b = sc.vs("api", port=8443, real_servers=tuple(sc.rs(f"10.244.1.{i}", 8443) for i in (1, 2, 3)))
    cfg = sc.config(a, b)
    r = Reconciler(backend)
    r.sync(desired_table(cfg, all_healthy))
    report = r.sync(desired_table(sc.without_rs(cfg, "web", "10.244.1.2"), all_healthy))
    assert report.applied == [DelDest(WEB, DestKey("10.244.1.2", 80), 4)]
    assert len(backend.dump().dests[ServiceKey.of(b)]) == 3


def test_refused_operations_are_reported_and_the_rest_converges(backend):
    broken_sched = sc.vs("broken", port=81, scheduler="nosuch", real_servers=(sc.rs("10.244.1.1", 81),))
    bad_thresholds = sc.vs("thresh", port=82, real_servers=(
        sc.rs("10.244.1.1", 82, upper_threshold=10, lower_threshold=50), sc.rs("10.244.1.2", 82)))
    cfg = sc.config(sc.web(2), broken_sched, bad_thresholds)
    desired = desired_table(cfg, all_healthy)
    report = Reconciler(backend).sync(desired)
    failures = {(type(f.op).__name__, str(f.op.service), f.errno) for f in report.errors}
    assert failures == {
        ("AddService", "tcp 10.244.0.100:81", errno.ENOENT),      # no ip_vs_nosuch module
        ("AddDest", "tcp 10.244.0.100:82", errno.ERANGE),          # lower above upper
    }
    assert [str(op.entry.key) for op in report.skipped] == ["10.244.1.1:81"]
    table = backend.dump()
    assert table.dests[WEB] == desired.dests[WEB]
    assert set(table.dests[ServiceKey.of(bad_thresholds)]) == {DestKey("10.244.1.2", 82)}
    assert any("lower threshold 50 is above upper threshold 10" in f.message for f in report.errors)


def test_restarted_agent_removes_what_its_dead_predecessor_owned(backend, tmp_path):
    old = sc.config(sc.web(2), sc.vs("old", port=8080, real_servers=(sc.rs("10.244.1.1", 8080),)))
    Reconciler(backend, OwnedStore.in_state_dir(tmp_path)).sync(desired_table(old, all_healthy))
    foreign = ServiceKey.inet("tcp", "10.244.0.7", 22)
    add_by_hand(backend, foreign, "10.244.5.5")
    # the agent died; its successor has a config without "old"
    successor = Reconciler(backend, OwnedStore.in_state_dir(tmp_path))
    successor.sync(desired_table(sc.config(sc.web(2)), all_healthy))
    assert set(backend.dump().services) == {WEB, foreign}


def test_update_service_converges_one_service_without_a_full_dump(backend):
    v = sc.web(3)
    other = sc.vs("api", port=8443, real_servers=(sc.rs("10.244.1.1", 8443),))
    r = Reconciler(backend)
    r.sync(desired_table(sc.config(v, other), all_healthy))
    down = health_from_mapping({("web", rs.key): HealthState.UP for rs in v.real_servers}
                               | {("web", v.real_servers[0].key): HealthState.DOWN})
    svc, dests, _ = desired_service(v, down)
    if isinstance(backend, FakeIpvs):
        dumps = backend.dumps
    report = r.update_service(WEB, (svc, dests))
    assert report.applied == [DelDest(WEB, DestKey("10.244.1.1", 80), 4)]
    if isinstance(backend, FakeIpvs):
        assert backend.dumps == dumps          # no full-table dump on this path
    assert len(backend.dump().dests[ServiceKey.of(other)]) == 1


def test_every_field_reads_back_as_written(backend):
    """All schedulers, IPv4 and IPv6, fwmark, persistence, flags, forwarding methods,
    tunnel types and thresholds: what we write is what a dump returns."""
    schedulers = model.SCHEDULERS if isinstance(backend, FakeIpvs) else sorted(kernel_schedulers())
    assert len(schedulers) >= 13
    desired = desired_table(sc.every_field(schedulers), all_healthy)
    report = Reconciler(backend).sync(desired)
    assert report.errors == []
    assert backend.dump() == desired


def test_edits_in_place_keep_the_service_and_read_back(backend):
    cfg = sc.config(sc.web(2, scheduler="rr"))
    r = Reconciler(backend)
    r.sync(desired_table(cfg, all_healthy))
    edited = sc.config(sc.web(2, scheduler="sh", scheduler_flags=("sh-port",), persistence_timeout=60))
    report = r.sync(desired_table(edited, all_healthy))
    assert [type(op).__name__ for op in report.applied] == ["EditService"]
    assert backend.dump() == desired_table(edited, all_healthy)
