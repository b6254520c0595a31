"""/metrics: Prometheus text format 0.0.4, checked with prometheus_client's parser and
with the format's grammar, and its values against the snapshot they came from."""

from __future__ import annotations

import dataclasses
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hadirector.api.metrics import escape_label_value, format_value, render
from hadirector.api.snapshot import (
    HealthState as Health,
    NodeStatus,
    ReloadStatus,
    Snapshot,
    VrrpState,
)


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} via prometheus_client."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    return samples[name][tuple(sorted((k, str(v)) for k, v in labels.items()))]


@pytest.fixture
def samples(snapshot):
    return parse(render(snapshot))


# --- the format itself ----------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{{_LABEL}(?:,{_LABEL})*\}})? "
                     r"(?:[-+]?[0-9.]+(?:e[-+]?[0-9]+)?|[+-]Inf|NaN)$")


def test_every_line_follows_the_0_0_4_grammar_and_families_are_contiguous(snapshot):
    text = render(snapshot)
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in typed, f"family {name} appears twice"
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, type_ = line.split()
            assert name == current, "TYPE must follow its own HELP"
            typed[name] = type_
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            # a sample belongs to the family announced last (histograms add suffixes)
            assert m.group(1) in (current, current + "_bucket", current + "_sum",
                                  current + "_count"), line
    assert all(name.startswith("hadirector_") for name in typed)
    assert all(name.endswith("_total") for name, t in typed.items() if t == "counter")


def test_no_series_is_exported_twice(snapshot):
    seen = set()
    for line in render(snapshot).splitlines():
        if not line.startswith("#"):
            series = line.rsplit(" ", 1)[0]
            assert series not in seen, series
            seen.add(series)


def test_label_values_with_quotes_backslashes_and_newlines_survive_a_scrape(snapshot):
    nasty = 'we"b\\svc\nnew'
    vs = dataclasses.replace(snapshot.virtual_services[0], name=nasty)
    snap = dataclasses.replace(snapshot, virtual_services=(vs,))
    samples = parse(render(snap))
    assert value(samples, "hadirector_ipvs_service_quorum_up", service=nasty) == 1
    assert escape_label_value(nasty) == 'we\\"b\\\\svc\\nnew'


def test_values_are_formatted_as_the_format_expects():
    assert format_value(True) == "1"
    assert format_value(7) == "7"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("nan")) == "NaN"


def test_an_agent_with_nothing_configured_still_renders_valid_metrics():
    snap = Snapshot(node=NodeStatus(router_id="lb", config_path="c", pid=1, started_at=1.0,
                                    config_loaded_at=1.0), generated_at=2.0)
    samples = parse(render(snap))
    assert samples["hadirector_health_check_duration_seconds_count"][()] == 0
    assert samples["hadirector_reloads_total"][()] == 0
    assert "hadirector_reload_last_success" not in samples   # never reloaded: unknown
    assert "hadirector_vrrp_state" not in samples


# --- values match the snapshot -------------------------------------------------------


def test_vrrp_state_is_one_series_per_state_with_exactly_one_set(samples, snapshot):
    for v in snapshot.vrrp_instances:
        ids = dict(vrrp_instance=v.name, vrid=v.vrid, interface=v.interface)
        states = {s.value: value(samples, "hadirector_vrrp_state", **ids, state=s.value)
                  for s in VrrpState}
        assert states == {s.value: float(s is v.state) for s in VrrpState}


def test_vrrp_priorities_and_counters(samples):
    vi1 = dict(vrrp_instance="VI_1", vrid=51, interface="eth0")
    vi6 = dict(vrrp_instance="VI_6", vrid=52, interface="eth1")
    assert value(samples, "hadirector_vrrp_priority", **vi6) == 100
    assert value(samples, "hadirector_vrrp_effective_priority", **vi6) == 80
    assert value(samples, "hadirector_vrrp_transitions_total", **vi1) == 2
    assert value(samples, "hadirector_vrrp_adverts_sent_total", **vi1) == 310
    assert value(samples, "hadirector_vrrp_adverts_received_total", **vi6) == 3700
    assert value(samples, "hadirector_vrrp_adverts_invalid_total", **vi1, reason="bad_ttl") == 3
    assert value(samples, "hadirector_vrrp_adverts_invalid_total",
                 **vi1, reason="bad_checksum") == 1


def test_each_configured_vip_has_a_held_gauge_set_only_where_this_director_holds_it(samples):
    vi1 = dict(vrrp_instance="VI_1", vrid=51, interface="eth0")
    vi6 = dict(vrrp_instance="VI_6", vrid=52, interface="eth1")
    assert samples["hadirector_vrrp_vip_held"] == {
        tuple(sorted({**{k: str(v) for k, v in vi1.items()}, "vip": "10.0.0.100"}.items())): 1.0,
        tuple(sorted({**{k: str(v) for k, v in vi6.items()}, "vip": "10.0.6.1"}.items())): 0.0,
    }


def test_health_check_totals_and_latency_histogram(samples, snapshot):
    assert value(samples, "hadirector_health_checks_total", result="ok") == 4
    assert value(samples, "hadirector_health_checks_total", result="fail") == 1
    h = "hadirector_health_check_duration_seconds"
    # 0.0004, 0.0009, 0.003, 0.05, 2.0 into le 0.001, 0.01, 0.1, 1.0, +Inf (cumulative)
    assert [value(samples, h + "_bucket", le=le) for le in ("0.001", "0.01", "0.1", "1.0",
                                                            "+Inf")] == [2, 3, 4, 4, 5]
    assert value(samples, h + "_count") == 5
    assert value(samples, h + "_sum") == pytest.approx(2.0543)


def test_ipvs_service_counters_by_direction(samples):
    assert value(samples, "hadirector_ipvs_service_connections_total", service="web") == 120
    assert value(samples, "hadirector_ipvs_service_packets_total",
                 service="web", direction="in") == 3400
    assert value(samples, "hadirector_ipvs_service_bytes_total",
                 service="web", direction="out") == 4_500_000
    assert value(samples, "hadirector_ipvs_service_quorum_up", service="dns-v6") == 0
    assert value(samples, "hadirector_ipvs_service_in_kernel", service="marked") == 0
    assert value(samples, "hadirector_ipvs_service_info",
                 service="web", key="TCP 10.0.0.100:80", scheduler="wlc") == 1


def test_real_server_health_weights_and_kernel_counters(samples, snapshot):
    up = dict(service="web", real_server="10.0.1.1:80")
    down = dict(service="web", real_server="10.0.1.2:80")
    v6 = dict(service="dns-v6", real_server="[2001:db8:1::1]:53")
    for ids, health in ((up, Health.UP), (down, Health.DOWN), (v6, Health.UNKNOWN)):
        got = {h.value: value(samples, "hadirector_real_server_health", **ids, state=h.value)
               for h in Health}
        assert got == {h.value: float(h is health) for h in Health}
    assert value(samples, "hadirector_real_server_weight", **down) == 10
    assert value(samples, "hadirector_ipvs_real_server_weight", **up) == 10
    assert value(samples, "hadirector_ipvs_real_server_active_connections", **up) == 4
    assert value(samples, "hadirector_ipvs_real_server_inactive_connections", **up) == 7
    assert value(samples, "hadirector_ipvs_real_server_connections_total", **up) == 80
    assert value(samples, "hadirector_ipvs_real_server_bytes_total",
                 **up, direction="out") == 3_000_000
    assert value(samples, "hadirector_real_server_last_check_duration_seconds",
                 **up) == pytest.approx(0.0012)


def test_a_real_server_not_in_the_kernel_has_no_kernel_series(samples):
    down = tuple(sorted({"service": "web", "real_server": "10.0.1.2:80"}.items()))
    for name in ("hadirector_ipvs_real_server_weight",
                 "hadirector_ipvs_real_server_connections_total",
                 "hadirector_ipvs_real_server_active_connections"):
        assert down not in samples[name], name


def test_sync_daemon_desired_role_and_kernel_daemons(samples):
    assert value(samples, "hadirector_sync_daemon_desired_role", role="master") == 1
    assert value(samples, "hadirector_sync_daemon_desired_role", role="backup") == 0
    assert value(samples, "hadirector_sync_daemon_running",
                 role="master", interface="eth1", syncid=7) == 1


def test_node_and_reload_series(samples, snapshot):
    assert value(samples, "hadirector_build_info", version="0.1.0", router_id="lb1") == 1
    assert value(samples, "hadirector_start_time_seconds") == snapshot.node.started_at
    assert value(samples, "hadirector_config_generation") == 3
    assert value(samples, "hadirector_reloads_total") == 3
    assert value(samples, "hadirector_reload_failures_total") == 1
    assert value(samples, "hadirector_reload_last_success") == 1


def test_a_refused_last_reload_shows_as_zero(snapshot):
    snap = dataclasses.replace(snapshot, reloads=ReloadStatus(count=1, failures=1,
                                                              last_ok=False, last_at=5.0))
    assert value(parse(render(snap)), "hadirector_reload_last_success") == 0


def test_link_watch_and_api_counters_have_stable_names(snapshot):
    from hadirector.api.snapshot import ApiStatus, LinkWatchStatus, ListenerStatus

    snap = dataclasses.replace(
        snapshot,
        link_watch=LinkWatchStatus(overruns=2, resyncs=3, resubscribes=1, restarts=4),
        api=ApiStatus(
            http=ListenerStatus(accepted=1200, dropped={"at_capacity": 1000, "header_timeout": 130},
                                accept_failures={"EMFILE": 5}, accept_pauses=5,
                                refused={"http_not_allowed": 1}),
            control=ListenerStatus(accepted=203, refused={"rate_limited": 190, "not_root": 1})))
    s = parse(render(snap))
    assert value(s, "hadirector_link_watch_overruns_total") == 2
    assert value(s, "hadirector_link_watch_resyncs_total") == 3
    assert value(s, "hadirector_link_watch_resubscribes_total") == 1
    assert value(s, "hadirector_link_watch_restarts_total") == 4
    assert value(s, "hadirector_api_connections_accepted_total", listener="http") == 1200
    assert value(s, "hadirector_api_connections_dropped_total", listener="http", reason="at_capacity") == 1000
    assert value(s, "hadirector_api_connections_dropped_total", listener="http", reason="header_timeout") == 130
    # Known reasons are there at 0 before they first happen (rate() sees them start).
    assert value(s, "hadirector_api_connections_dropped_total", listener="control", reason="idle_timeout") == 0
    assert value(s, "hadirector_api_accept_failures_total", listener="http", reason="EMFILE") == 5
    assert value(s, "hadirector_api_accept_failures_total", listener="control", reason="EMFILE") == 0
    assert value(s, "hadirector_api_accept_pauses_total", listener="http") == 5
    assert value(s, "hadirector_api_requests_refused_total", listener="http", reason="http_not_allowed") == 1
    assert value(s, "hadirector_api_requests_refused_total", listener="control", reason="rate_limited") == 190
    assert value(s, "hadirector_api_requests_refused_total", listener="control", reason="bad_request") == 0


def test_a_listener_that_is_not_serving_exports_no_api_series(snapshot):
    s = parse(render(snapshot))
    assert value(s, "hadirector_link_watch_overruns_total") == 0
    assert not any(name.startswith("hadirector_api_") for name in s if s[name])


def test_auth_outcomes_have_stable_names_and_no_secret(snapshot):
    from hadirector.api.snapshot import VrrpAuthStatus, to_jsonable

    auth = VrrpAuthStatus(mode="enforce", active_key=2, key_ids=(1, 2), anti_replay="time", time_window=5,
                          verified=40, unsigned_accepted=0, rejected={"bad_hmac": 3, "auth_missing": 7})
    vrrp = (dataclasses.replace(snapshot.vrrp_instances[0], auth=auth),) + snapshot.vrrp_instances[1:]
    snap = dataclasses.replace(snapshot, vrrp_instances=vrrp)
    samples = parse(render(snap))
    vi1 = dict(vrrp_instance="VI_1", vrid=51, interface="eth0")
    assert value(samples, "hadirector_vrrp_auth_verified_total", **vi1) == 40
    assert value(samples, "hadirector_vrrp_auth_unsigned_accepted_total", **vi1) == 0
    assert value(samples, "hadirector_vrrp_auth_rejected_total", **vi1, reason="bad_hmac") == 3
    assert value(samples, "hadirector_vrrp_auth_rejected_total", **vi1, reason="auth_missing") == 7
    # An instance without auth exports no auth series.
    assert all(dict(k)["vrrp_instance"] == "VI_1" for k in samples["hadirector_vrrp_auth_verified_total"])
    assert to_jsonable(auth) == {"mode": "enforce", "active_key": 2, "key_ids": [1, 2], "anti_replay": "time",
                                 "time_window": 5, "verified": 40, "unsigned_accepted": 0,
                                 "rejected": {"bad_hmac": 3, "auth_missing": 7}}


def test_inconclusive_health_checks_are_counted_by_reason(snapshot):
    health = dataclasses.replace(snapshot.health, checks={"ok": 4, "inconclusive": 3},
                                 inconclusive={"emfile": 2, "enobufs": 1})
    samples = parse(render(dataclasses.replace(snapshot, health=health)))
    assert value(samples, "hadirector_health_checks_total", result="inconclusive") == 3
    assert value(samples, "hadirector_health_checks_inconclusive_total", reason="emfile") == 2
    assert value(samples, "hadirector_health_checks_inconclusive_total", reason="enobufs") == 1


def test_the_sliced_render_is_the_whole_render_and_each_service_is_a_slice(big_snapshot):
    from hadirector.api.metrics import Renderer

    snap = big_snapshot(5, 3)
    r = Renderer(snap)
    steps = 1
    while not r.step():
        steps += 1
    assert steps > 5
    assert r.step() is True                 # done stays done
    assert r.body().decode() == render(snap)


def test_the_checker_worker_exports_its_restarts_and_whether_it_is_up(worker_snapshot, snapshot):
    running = parse(render(worker_snapshot(snapshot, starts=4, restarts=3, last_exit="exit 1: boom")))
    assert value(running, "hadirector_health_worker_restarts_total") == 3
    assert value(running, "hadirector_health_worker_up") == 1
    restarting = parse(render(worker_snapshot(snapshot, running=False, pid=None, starts=4, restarts=3)))
    assert value(restarting, "hadirector_health_worker_up") == 0


def test_without_the_worker_engine_the_worker_families_are_declared_without_samples(snapshot):
    # Declared so the shipped alert finds the name in every scrape; no series, so no
    # director without a worker looks like one with a dead worker.
    text = render(snapshot)
    assert "# TYPE hadirector_health_worker_restarts_total counter" in text
    assert "# TYPE hadirector_health_worker_up gauge" in text
    samples = parse(text)
    assert not samples.get("hadirector_health_worker_restarts_total")
    assert not samples.get("hadirector_health_worker_up")
