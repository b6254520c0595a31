"""Scale-out planning (ipvs/table.py, ipvs/planner.py): every real server in one
canonical order from the first sync, weight 0 for health (never a delete), and a
membership change rebuilds the list in that order (shared/scale-out.md 1b.2, 1b.3)."""

from __future__ import annotations

import ipaddress

from hadirector import model as m
from hadirector.kernel.fake import FakeIpvs
from hadirector.ipvs.planner import AddDest, AddService, DelDest, EditDest, apply_to_table, plan
from hadirector.kernel.reconcile import Reconciler
from hadirector.ipvs.table import DestKey, Table, canonical_order, desired_service, desired_table, dest_digest

H = m.HealthState
CHECK = m.HealthCheck(m.TcpProbe())


def rs(addr: str, weight: int = 1) -> m.RealServer:
    return m.RealServer(ipaddress.ip_address(addr), weight=weight, forward=m.ForwardMethod.DR, check=CHECK)


# Config order is not address order, and string order is not numeric order.
SERVERS = (rs("10.2.0.12"), rs("10.2.0.9"), rs("10.2.0.100"), rs("10.2.0.11", weight=3))
WEB = m.VirtualService("web", address=ipaddress.ip_address("10.100.0.1"), port=80, scheduler="mh",
                       scheduler_flags=("mh-fallback", "mh-port"), real_servers=SERVERS).with_ports_resolved()
PEER = m.BgpPeer(ipaddress.ip_address("10.1.0.1"), 65000)


def config(servers=SERVERS, scale_out=True) -> m.Config:
    # Ports resolved as the loader does (port 0 -> the service's, once at load).
    vs = m.VirtualService(**{**WEB.__dict__, "real_servers": servers}).with_ports_resolved()
    so = m.ScaleOut(services=("web",), local_as=65001, peers=(PEER,)) if scale_out else None
    return m.Config(node=m.NodeSettings("d1"), virtual_services=(vs,), scale_out=so)


def health(states: dict[str, m.HealthState]):
    return lambda vs, r: states.get(str(r.address), H.UNKNOWN)


CANONICAL = ["10.2.0.9", "10.2.0.11", "10.2.0.12", "10.2.0.100"]


def addresses(dests) -> list[str]:
    return [d.key.address for d in dests]


def test_canonical_order_is_numeric_by_address_then_port():
    keys = [DestKey("10.0.0.10", 80), DestKey("10.0.0.9", 81), DestKey("10.0.0.9", 80), DestKey("::1", 80)]
    assert canonical_order(keys) == [DestKey("10.0.0.9", 80), DestKey("10.0.0.9", 81),
                                     DestKey("10.0.0.10", 80), DestKey("::1", 80)]


def test_before_any_health_result_every_real_server_is_programmed_at_weight_0_in_canonical_order():
    svc, dests, _ = desired_service(config().virtual_services[0], health({}), scale_out=True)
    assert svc.ordered
    assert addresses(dests) == CANONICAL
    assert [d.weight for d in dests] == [0, 0, 0, 0]


def test_a_down_real_server_gets_weight_0_and_stays_in_place():
    states = {"10.2.0.9": H.UP, "10.2.0.11": H.UP, "10.2.0.12": H.DOWN, "10.2.0.100": H.UP}
    _, dests, quorum = desired_service(config().virtual_services[0], health(states), scale_out=True)
    assert [(d.key.address, d.weight) for d in dests] == [
        ("10.2.0.9", 1), ("10.2.0.11", 3), ("10.2.0.12", 0), ("10.2.0.100", 1)]
    assert quorum is True


def test_the_first_sync_adds_destinations_in_canonical_order_and_health_only_edits_weights():
    ipvs = FakeIpvs()
    rec = Reconciler(ipvs)
    rec.sync(desired_table(config(), health({})))
    assert list(ipvs.dump().dests_of(next(iter(ipvs.dump().services)))) == [
        DestKey(a, 80) for a in CANONICAL]
    states = {a: H.UP for a in CANONICAL} | {"10.2.0.12": H.DOWN}
    report = rec.sync(desired_table(config(), health(states)))
    assert {type(op) for op in report.applied} == {EditDest}, "health never adds or deletes"
    key = next(iter(ipvs.dump().services))
    assert [(d.key.address, d.weight) for d in ipvs.dump().dests_of(key).values()] == [
        ("10.2.0.9", 1), ("10.2.0.11", 3), ("10.2.0.12", 0), ("10.2.0.100", 1)]
    assert rec.sync(desired_table(config(), health(states))).applied == [], "converged"


def test_without_scale_out_a_down_server_is_deleted_as_before():
    states = {a: H.UP for a in CANONICAL} | {"10.2.0.12": H.DOWN}
    t = desired_table(config(scale_out=False), health(states))
    key = next(iter(t.services))
    assert "10.2.0.12" not in addresses(t.dests_of(key).values())


def test_a_real_server_added_by_reload_rebuilds_the_list_in_canonical_order():
    states = {a: H.UP for a in CANONICAL + ["10.2.0.10"]}
    actual = desired_table(config(), health(states))
    grown = desired_table(config(servers=SERVERS + (rs("10.2.0.10"),)), health(states))
    ops = plan(actual, grown)
    key = next(iter(actual.services))
    assert ops == [*(DelDest(key, k, 4) for k in sorted(actual.dests_of(key))),
                   *(AddDest(key, d) for d in grown.dests_of(key).values())]
    for op in ops:
        apply_to_table(actual, op)
    assert addresses(actual.dests_of(key).values()) == ["10.2.0.9", "10.2.0.10", "10.2.0.11", "10.2.0.12",
                                                        "10.2.0.100"]
    assert plan(actual, grown) == []


def test_a_new_scale_out_service_is_added_with_its_destinations_in_canonical_order():
    ops = plan(Table(), desired_table(config(), health({})))
    assert isinstance(ops[0], AddService)
    assert [op.entry.key.address for op in ops[1:] if isinstance(op, AddDest)] == CANONICAL


def test_a_real_server_at_weight_0_is_added_at_its_weight_then_set_to_0_so_mh_gives_it_slots():
    # IPVS keeps the last non-zero weight (last_weight; set on add even when 0) and mh
    # gives slots by it: added at 0, a real server that is down when this director starts
    # would have no slots here but keep its slots on the directors that saw it up.
    states = {"10.2.0.9": H.UP, "10.2.0.11": H.DOWN}           # the other two: no result yet
    desired = desired_table(config(), health(states))
    ops = plan(Table(), desired)
    key = next(iter(desired.services))
    want = desired.dests_of(key)

    def at(address: str, weight: int):
        d = want[DestKey(address, 80)]
        return d.__class__(**{**d.__dict__, "weight": weight})

    assert ops[1:] == [
        AddDest(key, at("10.2.0.9", 1)),
        AddDest(key, at("10.2.0.11", 3)), EditDest(key, at("10.2.0.11", 0), ("weight",)),
        AddDest(key, at("10.2.0.12", 1)), EditDest(key, at("10.2.0.12", 0), ("weight",)),
        AddDest(key, at("10.2.0.100", 1)), EditDest(key, at("10.2.0.100", 0), ("weight",))]
    ipvs = FakeIpvs()
    rec = Reconciler(ipvs)
    assert rec.sync(desired).errors == []
    assert [(d.key.address, d.weight) for d in ipvs.dump().dests_of(key).values()] == [
        ("10.2.0.9", 1), ("10.2.0.11", 0), ("10.2.0.12", 0), ("10.2.0.100", 0)]
    assert rec.sync(desired).applied == [], "converged"
    # A reload that changes the set re-adds every one the same way.
    grown = desired_table(config(servers=SERVERS + (rs("10.2.0.10"),)), health(states))
    readded = [op for op in plan(ipvs.dump(), grown) if not isinstance(op, DelDest)]
    assert [(type(op).__name__, op.entry.key.address, op.entry.weight) for op in readded[:3]] == [
        ("AddDest", "10.2.0.9", 1), ("AddDest", "10.2.0.10", 1), ("EditDest", "10.2.0.10", 0)]


def test_the_digest_follows_order_and_weights():
    _, dests, _ = desired_service(config().virtual_services[0], health({}), scale_out=True)
    same = dest_digest(dests)
    assert dest_digest(list(dests)) == same and len(same) == 12
    assert dest_digest(list(reversed(dests))) != same
    up = [d.__class__(**{**d.__dict__, "weight": 1}) for d in dests]
    assert dest_digest(up) != same
