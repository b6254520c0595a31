"""The shipped alerting rules and dashboard against what real agents export.

Two real ``hadirector run`` directors on a host kernel without IPVS (the set-up of
test_ipvs_unavailable.py): vi_1 carries a virtual service's VIP, so it is in FAULT on
both and its VIP is on no director; vi_2 (VRRP only) is MASTER on node 1, which holds
its VIP (``ip addr``). Node 1 is reloaded once. Both /metrics are scraped:

* every metric the rules and the dashboard query is in the scrapes, with the labels
  they select on where it has samples (tests/unit/api/test_monitoring_rules.py does
  the same on a rendered snapshot);
* ``hadirector_vrrp_vip_held`` agrees with ``ip addr`` on each node;
* the two scrapes, replayed to ``promtool test rules`` as two minutes of samples from
  a job "hadirector", page exactly for vi_1's VIP held by no director, vi_1 in FAULT
  on both and IPVS unavailable on both -- and not for vi_2's VIP, a second holder, the
  sync daemon or the reload.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring_queries import (
    PROMETHEUS_OWN, RULES, TARGET_LABELS, dashboard_exprs, exported, metric_names, promtool,
    rule_exprs, selectors,
)

from .test_ipvs_unavailable import API_PORT, HIGH, LOW, director_config
from lab.agents import AgentProc, holders, wait_for
from lab.lan import sh

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("mo", nodes=2, net=47)]

START_TIMEOUT = 20.0
JOB = "hadirector"


def scrape(agent: AgentProc, path: str = "/metrics") -> str | None:
    r = sh("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{API_PORT}{path}",
           ns=agent.ns, check=False)
    return r.stdout if r.returncode == 0 else None


def series(text: str, instance: str) -> list[dict]:
    """promtool input_series: every sample of a scrape, constant for two minutes."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = {**s.labels, "job": JOB, "instance": instance}
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out.append({"series": f"{s.name}{{{inner}}}", "values": f"{s.value:g}x24"})
    out.append({"series": f'up{{job="{JOB}",instance="{instance}"}}', "values": "1x24"})
    return out


def annotations(rule: dict, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with its ``{{ $labels.x }}`` filled in (the alerts
    checked here use nothing else)."""
    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return {k: fill(v) for k, v in rule["annotations"].items()}


def test_real_scrapes_export_what_the_rules_query_and_page_for_the_vip_nobody_holds(lan, tmp_path):
    assert not os.path.exists("/proc/net/ip_vs"), "this test needs a host kernel without IPVS"
    agents = []
    for n, prio in ((1, HIGH), (2, LOW)):
        instances, extra = director_config(lan, prio)
        # A sync daemon following vi_1: wanted in no role while vi_1 is in FAULT.
        extra["lvs"] = {"sync_daemon": {"interface": "eth0", "follow_instance": "vi_1"}}
        agents.append(AgentProc(lan, n, tmp_path, instances, extra))
    service_vip, vrrp_only_vip = str(lan.vip4()), str(lan.vip4(101))
    try:
        for a in agents:
            a.start()
        wait_for(lambda: holders(lan, lan.vip4(101), (1, 2)) == [1]
                 and agents[1].role("vi_2") == "BACKUP"
                 and all(a.role("vi_1") == "FAULT" for a in agents),
                 START_TIMEOUT, interval=0.05, what="vi_2 elected on node 1, vi_1 in FAULT on both")
        wait_for(lambda: all(scrape(a, "/healthz") == "ok\n" for a in agents), START_TIMEOUT,
                 interval=0.2, what="both APIs up")
        agents[0].signal(signal.SIGHUP)
        wait_for(lambda: agents[0].events("agent.reloaded"), 15.0, interval=0.1,
                 what="node 1 reloaded")
        texts = {f"n{i + 1}": scrape(a) for i, a in enumerate(agents)}
        assert all(texts.values()), "a /metrics scrape failed"
        assert holders(lan, lan.vip4(101), (1, 2)) == [1] and holders(lan, lan.vip4(), (1, 2)) == []
    finally:
        for a in agents:
            a.stop()

    # Names and labels: the union of both directors' scrapes, as Prometheus sees them.
    names: dict[str, set[str]] = {}
    for text in texts.values():
        for name, labels in exported(text).items():
            names.setdefault(name, set()).update(labels)
    for exprs in (rule_exprs(), dashboard_exprs()):
        used = set().union(*(metric_names(e) for e in exprs)) - PROMETHEUS_OWN
        assert used <= set(names), sorted(used - set(names))
        for expr in exprs:
            for metric, matchers in selectors(expr):
                # A family without samples here (no kernel IPVS: no kernel stats) has
                # its labels checked by the unit test only.
                if metric not in PROMETHEUS_OWN and names[metric]:
                    for label, _, _ in matchers:
                        assert label in names[metric] | TARGET_LABELS, (metric, label)

    # The VIP gauge says what ip addr said.
    held = {}
    for instance, text in texts.items():
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "hadirector_vrrp_vip_held":
                    held[(instance, s.labels["vip"])] = s.value
    assert held == {("n1", service_vip): 0, ("n1", vrrp_only_vip): 1,
                    ("n2", service_vip): 0, ("n2", vrrp_only_vip): 0}

    # Replay both scrapes to the rules.
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}

    def expect(alert: str, *label_sets: dict[str, str]) -> dict:
        alerts = []
        for labels in label_sets:
            full = {**labels, "severity": rules[alert]["labels"]["severity"]}
            alerts.append({"exp_labels": full, "exp_annotations": annotations(rules[alert], full)})
        return {"eval_time": "2m", "alertname": alert, "exp_alerts": alerts}

    def fault(instance: str) -> dict[str, str]:
        return {"job": JOB, "instance": instance, "vrrp_instance": "vi_1", "vrid": "51",
                "interface": "eth0", "state": "FAULT"}

    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "5s",
        "tests": [{
            "name": "two real directors without IPVS",
            "interval": "5s",
            "input_series": [s for inst, text in texts.items() for s in series(text, inst)],
            "alert_rule_test": [
                expect("HadirectorVipHeldByNoDirector", {"vip": service_vip}),
                expect("HadirectorVipHeldByTwoDirectors"),
                expect("HadirectorInstanceFault", fault("n1"), fault("n2")),
                expect("HadirectorIpvsUnavailable", {"job": JOB, "instance": "n1"},
                       {"job": JOB, "instance": "n2"}),
                expect("HadirectorSyncDaemonDown"),
                expect("HadirectorReloadRefused"),
                expect("HadirectorDown"),
                expect("HadirectorUnauthenticatedAdverts"),
            ],
        }],
    }
    path = tmp_path / "real-scrapes.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
