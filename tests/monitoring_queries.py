"""What the shipped monitoring files query: the metric names and label selectors of the
Prometheus rules and the Grafana dashboard in monitoring/, and the names a /metrics body
exports. Shared by tests/unit/api/test_monitoring_rules.py (a rendered snapshot) and
tests/netns/test_monitoring_scrape.py (real agents' scrapes)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hadirector.api.snapshot import HealthState as Health, SyncRole, VrrpState

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
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
