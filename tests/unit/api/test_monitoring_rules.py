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
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hadirector.api.metrics import render
from hadirector.api.snapshot import Health, IpvsAvailabilityStatus, SyncRole, VrrpState

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
RULES = MONITORING / "prometheus" / "hadirector-rules.yaml"
RULES_TEST = MONITORING / "prometheus" / "hadirector-rules.test.yaml"
DASHBOARD = MONITORING / "grafana" / "hadirector-dashboard.json"

# Labels Prometheus adds to every scraped series, and metrics it makes itself.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_OWN = {"up"}
# Label values the rules and the dashboard may match on, from the enums they come from.
ENUM_LABELS = {"state": {s.value for s in VrrpState} | {h.value for h in Health},
               "role": {r.value for r in SyncRole}}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's 'prometheus' package "
                    "(./run tests installs everything in debian-packages.txt)")
    return path


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


_FUNCS = {"sum", "count", "max", "min", "avg", "by", "on", "unless", "and", "or", "rate",
          "increase", "changes", "histogram_quantile", "time", "label_values", "without",
          "ignoring", "humanize"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names inside {}, or range/duration literals."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    # Grafana's label_values(metric, label): the second argument is a label name.
    no_strings = re.sub(r"label_values\((.*),\s*\w+\)", r"(\1)", no_strings)
    no_selectors = re.sub(r"\{[^}]*\}", "{}", no_strings)
    no_ranges = re.sub(r"\[[^\]]*\]", "[]", no_selectors)
    no_groupings = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", " ", no_ranges)
    words = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])", no_groupings))
    calls = set(re.findall(r"\b([a-zA-Z_]\w*)\s*\(", no_groupings))
    return words - _FUNCS - calls


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) for every ``metric{...}`` in the expression."""
    out = []
    for name, body in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        out.append((name, re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body)))
    return out


def exported(text: str) -> dict[str, set[str]]:
    """{sample name: label names} of a /metrics body; families without samples (a
    configuration without IPVS still declares the IPVS ones) count with no labels."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names = [name + s for s in ("_bucket", "_sum", "_count")] if kind == "histogram" else [name]
            for n in names:
                out.setdefault(n, set())
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


@pytest.fixture
def metrics_text(snapshot) -> str:
    # The realistic snapshot, on a director whose config needs IPVS (so the availability
    # gauge is there too).
    snap = dataclasses.replace(snapshot, ipvs=IpvsAvailabilityStatus(needed=True, available=True))
    return render(snap)


def test_promtool_accepts_the_rules():
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 10 rules found" in res.stdout


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
        "HadirectorReloadRefused", "HadirectorDown"}
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
