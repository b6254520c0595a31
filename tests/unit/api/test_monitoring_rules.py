"""monitoring/: the Prometheus alerting rules and the Grafana dashboard that ship.

The rules pass ``promtool check rules`` and their recorded-series tests
(``promtool test rules``); every metric name the rules and the dashboard query is one
that /metrics exports, and every label they select on is one that metric carries.
promtool comes from Debian's ``prometheus`` package (debian-packages.txt; ``./run
tests`` installs it): without it these tests fail, they are not skipped.
tests/netns/test_monitoring_scrape.py holds the rules against real agents' scrapes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import pytest
import yaml

from hadirector.api.metrics import render
from hadirector.api.snapshot import IpvsAvailabilityStatus, ScaleOutStatus, ScaleOutVip, VrrpAuthStatus
from tests.monitoring_queries import (
    DASHBOARD, ENUM_LABELS, PROMETHEUS_OWN, RULES, RULES_TEST, TARGET_LABELS, dashboard_exprs,
    exported, metric_names, promtool, rule_exprs, selectors,
)

@pytest.fixture
def metrics_text(snapshot, worker_snapshot) -> str:
    # The realistic snapshot, on a director whose config needs IPVS (so the availability
    # gauge is there too).
    snap = dataclasses.replace(snapshot, ipvs=IpvsAvailabilityStatus(needed=True, available=True))
    # ... and a scale-out section (a scale-out director exports these beside the rest).
    snap = dataclasses.replace(snap, scale_out=ScaleOutStatus(
        table=201, vips=(ScaleOutVip("203.0.113.10", True),), digests={"web": "aaaaaaaaaaaa"},
        sysctls={"sloppy_tcp": "1"}))
    # ... and signed adverts on one instance, and inconclusive probes (issues 12, 13).
    auth = VrrpAuthStatus(mode="enforce", active_key=1, key_ids=(1,), anti_replay="time", time_window=5,
                          verified=10, rejected={"bad_hmac": 1})
    snap = dataclasses.replace(snap, vrrp_instances=(
        dataclasses.replace(snap.vrrp_instances[0], auth=auth), *snap.vrrp_instances[1:]),
        health=dataclasses.replace(snap.health, inconclusive={"emfile": 2}))
    # ... and the checker worker of health: {engine: worker}, restarted once.
    snap = worker_snapshot(snap, starts=2, restarts=1, last_exit="killed by SIGKILL")
    return render(snap)


def test_promtool_accepts_the_rules():
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_the_rules_raise_the_expected_alerts_on_recorded_series():
    res = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], capture_output=True,
                         text=True, timeout=120, cwd=RULES_TEST.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_rule_has_a_severity_a_summary_and_a_description():
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "HadirectorVipHeldByNoDirector", "HadirectorVipHeldByTwoDirectors",
        "HadirectorInstanceFault", "HadirectorSyncDaemonDown", "HadirectorServiceQuorumLost",
        "HadirectorInvalidAdverts", "HadirectorUnauthenticatedAdverts",
        "HadirectorReloadRefused", "HadirectorDown", "HadirectorHealthWorkerRestarting",
        "HadirectorHealthWorkerDown"}
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_the_dashboard_is_valid_json_with_unique_panel_ids_and_a_datasource_variable():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "job", "instance"]
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]


def test_the_name_extraction_finds_what_an_expression_queries():
    assert metric_names('sum by (vip) (hadirector_vrrp_vip_held{job="$job"}) == 0') == {
        "hadirector_vrrp_vip_held"}
    assert metric_names('(a_b{role!="none"} == 1) unless on (job, instance, role) (c_d == 1)') == {
        "a_b", "c_d"}
    assert metric_names('histogram_quantile(0.5, sum by (instance, le) (rate(x_bucket[$__rate_interval])))') == {
        "x_bucket"}
    assert metric_names("time() - hadirector_start_time_seconds{} * 1000") == {
        "hadirector_start_time_seconds"}
    assert metric_names('label_values(hadirector_build_info{job="$job"}, instance)') == {
        "hadirector_build_info"}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_queried_is_exported_with_the_labels_selected(source, metrics_text):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    names = exported(metrics_text)
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric names found"
    unknown = used - set(names) - PROMETHEUS_OWN
    assert not unknown, f"{source} query metrics /metrics does not export: {sorted(unknown)}"
    for expr in exprs:
        for metric, matchers in selectors(expr):
            if metric in PROMETHEUS_OWN:
                continue
            for label, op, value in matchers:
                assert label in names[metric] | TARGET_LABELS, (metric, label, expr)
                if label in ENUM_LABELS and op in ("=", "!="):
                    assert value in ENUM_LABELS[label], (metric, label, value)


def test_the_dashboard_covers_every_alerting_metric():
    in_rules = set().union(*(metric_names(e) for e in rule_exprs())) - PROMETHEUS_OWN
    in_dashboard = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert in_rules <= in_dashboard, sorted(in_rules - in_dashboard)


def test_the_dashboard_charts_signed_adverts_and_inconclusive_probes_by_labels_they_carry(metrics_text):
    names = exported(metrics_text)
    charted = {"hadirector_vrrp_auth_verified_total", "hadirector_vrrp_auth_unsigned_accepted_total",
               "hadirector_vrrp_auth_rejected_total", "hadirector_health_checks_inconclusive_total"}
    exprs = [e for e in dashboard_exprs() if metric_names(e) & charted]
    assert set().union(*(metric_names(e) for e in exprs)) >= charted
    for expr in exprs:
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            for metric in metric_names(expr) & charted:
                labels = {label.strip() for label in grouping.split(",")}
                assert labels <= names[metric] | TARGET_LABELS, (metric, labels, expr)
    assert any('reason' in e for e in exprs if "auth_rejected" in e)
    assert any('reason' in e for e in exprs if "inconclusive" in e)
