"""The snapshot schema is the contract between agent and API: these tests hold its
JSON form stable and tolerant of version skew."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hadirector.api.metrics import Histogram
from hadirector.api.snapshot import (
    SCHEMA_VERSION,
    HealthState as Health,
    HistogramSnapshot,
    ReloadResult,
    Snapshot,
    VrrpState,
    format_endpoint,
    from_jsonable,
    service_key_text,
    to_jsonable,
)


def test_snapshot_round_trips_through_json_unchanged(snapshot):
    text = json.dumps(snapshot.to_dict())
    assert Snapshot.from_dict(json.loads(text)) == snapshot


def test_json_uses_plain_values_for_enums_and_lists_for_tuples(snapshot):
    d = snapshot.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["vrrp_instances"][0]["state"] == "MASTER"
    assert d["vrrp_instances"][0]["adverts_invalid"] == {"bad_ttl": 3, "bad_checksum": 1}
    rs = d["virtual_services"][0]["real_servers"]
    assert [r["health"] for r in rs] == ["up", "down"]
    assert rs[1]["kernel_weight"] is None
    assert d["health"]["latency"]["buckets"][0] == [0.001, 2]
    assert d["sync_daemon"]["kernel"] == [{"role": "master", "interface": "eth1", "syncid": 7}]


def test_from_dict_ignores_keys_a_newer_agent_added(snapshot):
    d = snapshot.to_dict()
    d["future_section"] = {"x": 1}
    d["vrrp_instances"][0]["future_field"] = "y"
    assert Snapshot.from_dict(d) == snapshot


def test_from_dict_fills_defaults_for_keys_an_older_agent_did_not_send(snapshot):
    d = snapshot.to_dict()
    for key in ("sync_daemon", "health", "reloads", "schema_version"):
        del d[key]
    del d["virtual_services"][0]["real_servers"][0]["stats"]
    snap = Snapshot.from_dict(d)
    assert snap.sync_daemon.configured is False
    assert snap.virtual_services[0].real_servers[0].stats.conns == 0
    assert snap.vrrp_instances == snapshot.vrrp_instances


def test_from_dict_names_the_missing_required_key(snapshot):
    d = snapshot.to_dict()
    del d["vrrp_instances"][1]["vrid"]
    with pytest.raises(ValueError, match=r"vrrp_instances\[1\]: missing key 'vrid'"):
        Snapshot.from_dict(d)


def test_from_dict_rejects_an_unknown_state_with_its_path(snapshot):
    d = snapshot.to_dict()
    d["vrrp_instances"][0]["state"] = "LEADER"
    with pytest.raises(ValueError, match=r"vrrp_instances\[0\]\.state"):
        Snapshot.from_dict(d)


def test_integer_times_are_accepted_as_float_seconds(snapshot):
    d = snapshot.to_dict()
    d["generated_at"] = 1_700_000_000
    assert Snapshot.from_dict(d).generated_at == 1_700_000_000.0


def test_reload_result_round_trips():
    r = ReloadResult(ok=False, generation=3, message="config invalid",
                     errors=("hadirector.yaml:12: vrrp_instances[0].vrid: must be 1..255",))
    assert from_jsonable(ReloadResult, json.loads(json.dumps(to_jsonable(r)))) == r


def test_every_schema_field_is_documented_by_a_type_hint():
    # from_dict is driven by the hints; a field typed with something exotic would break
    # the CLI only at run time, so exercise the converter over every dataclass here.
    def walk(cls, seen):
        if cls in seen or not dataclasses.is_dataclass(cls):
            return
        seen.add(cls)
        import typing
        for hint in typing.get_type_hints(cls).values():
            for arg in (hint, *typing.get_args(hint)):
                for inner in (arg, *typing.get_args(arg)):
                    walk(inner, seen)
    seen: set = set()
    walk(Snapshot, seen)
    assert {c.__name__ for c in seen} >= {
        "NodeStatus", "VrrpInstanceStatus", "VirtualServiceStatus", "RealServerStatus",
        "Stats", "CheckResult", "SyncDaemonStatus", "KernelSyncDaemon",
        "HealthTotals", "HistogramSnapshot", "ReloadStatus"}


def test_service_key_text_matches_ipvsadm_spelling():
    import ipaddress
    assert service_key_text("tcp", "10.0.0.1", 80) == "TCP 10.0.0.1:80"
    assert service_key_text("udp", str(ipaddress.ip_address("2001:db8::1")), 53) == \
        "UDP [2001:db8::1]:53"
    assert service_key_text(None, None, 0, fwmark=5) == "FWM 5"
    assert format_endpoint("2001:db8::2", 0) == "[2001:db8::2]:0"


def test_histogram_puts_a_value_equal_to_a_bound_in_that_bucket():
    # Prometheus buckets are cumulative and "le": less than or equal.
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 3.0):
        h.observe(v)
    assert h.snapshot() == HistogramSnapshot(buckets=((0.1, 1), (1.0, 3)), count=4, sum=4.6)


def test_histogram_refuses_unsorted_bounds():
    with pytest.raises(ValueError):
        Histogram((1.0, 0.1))


def test_enum_values_are_the_spellings_operators_see():
    assert [s.value for s in VrrpState] == ["INIT", "BACKUP", "MASTER", "FAULT"]
    assert [h.value for h in Health] == ["up", "down", "unknown"]


def test_link_watch_and_api_counters_survive_json_and_an_older_agent_omits_them():
    from hadirector.api.snapshot import (ApiStatus, LinkWatchStatus, ListenerStatus, NodeStatus,
                                         Snapshot)

    node = NodeStatus(router_id="r", config_path="/c", pid=1, started_at=1.0, config_loaded_at=1.0)
    snap = Snapshot(node=node, generated_at=2.0,
                    link_watch=LinkWatchStatus(overruns=1, resyncs=1),
                    api=ApiStatus(http=ListenerStatus(accepted=3, dropped={"at_capacity": 2})))
    assert Snapshot.from_dict(snap.to_dict()) == snap
    older = snap.to_dict()
    del older["link_watch"], older["api"]
    assert Snapshot.from_dict(older) == Snapshot(node=node, generated_at=2.0)


def test_the_health_engine_and_the_checker_worker_survive_json(worker_snapshot, snapshot):
    from hadirector.api.snapshot import HealthEngine, HealthWorkerStatus

    snap = worker_snapshot(snapshot, pid=None, running=False, starts=3, restarts=2,
                           last_exit="killed by SIGKILL", since=1_700_000_000.0 - 2)
    d = json.loads(json.dumps(snap.to_dict()))
    assert d["health"]["engine"] == "worker"
    assert d["health"]["worker"] == {"running": False, "pid": None, "starts": 3, "restarts": 2,
                                     "last_exit": "killed by SIGKILL", "since": 1_699_999_998.0}
    assert Snapshot.from_dict(d) == snap
    assert snapshot.to_dict()["health"]["engine"] == "asyncio"
    assert snapshot.to_dict()["health"]["worker"] is None        # the asyncio engine has none
    assert HealthWorkerStatus(running=True).restarts == 0


def test_an_older_agent_without_the_health_engine_reads_as_unknown_with_no_worker(snapshot):
    d = snapshot.to_dict()
    del d["health"]["engine"], d["health"]["worker"]
    health = Snapshot.from_dict(d).health
    assert health.engine is None and health.worker is None
    assert health.checks == snapshot.health.checks
