"""Live reload and the status API of real ``hadirector run`` agents in namespaces.

Two agents on a namespace LAN (area prefix "rl", addresses 10.236.<net>.0/24) elect a
master; then the master is SIGHUPed with an unchanged, an invalid and a growing config,
and stopped while a reload waits on a file that never arrives.
The oracles are outside the agent:

* ``VipEvents`` (lab/vipwatch.py) reads every change of the VIP on each node from the
  kernel's address events, queued in its netlink socket as they happen: a flap of
  any length is seen, however long this test process was starved, and a lost event is
  an error, not a clean window;
* VRRP transitions from both agents' JSON logs (``vrrp.role_changed``) and their
  state.json;
* the API (``/status``, ``/metrics``, ``hadirector status``) compared with ``ip addr``.

VRRP-only configs: no IPVS is needed, these run on the host kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hadirector.exitcodes import ExitCode

from lab.agents import AgentProc, holders, instance_config, wait_for, wait_holder
from lab.lan import Lan, sh
from lab.processes import children
from lab.vipwatch import VipEvents

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ADVERT = 0.1
HIGH, LOW = 150, 100
START_TIMEOUT = 20.0
# The CLI of this checkout (the venv's entry point may import another one).
HADIRECTOR_CLI = ("env", f"PYTHONPATH={Path(__file__).resolve().parents[2]}", sys.executable,
                  "-m", "hadirector.cli")


@pytest.fixture
def lan():
    lab = Lan("rl", nodes=2, net=1, area="rl", subnet=236)
    try:
        yield lab.up()
    finally:
        lab.down()


@contextlib.contextmanager
def running_pair(lan, tmp_path, advert: float = ADVERT):
    """Node 1 (priority 150) MASTER, node 2 (100) BACKUP, both serving the API on
    127.0.0.1:9110 of their own namespace; both stopped on exit."""
    api = {"api": {"listen": "127.0.0.1:9110"}}
    a1 = AgentProc(lan, 1, tmp_path, [instance_config(lan, priority=HIGH, advert=advert)], dict(api))
    a2 = AgentProc(lan, 2, tmp_path, [instance_config(lan, priority=LOW, advert=advert)], dict(api))
    try:
        a1.start()
        a2.start()
        wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP", START_TIMEOUT,
                 what="node 1 MASTER, node 2 BACKUP")
        wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=3)
        wait_for(lambda: api_get(a1, "/healthz") == "ok\n" and api_get(a2, "/healthz") == "ok\n",
                 START_TIMEOUT, interval=0.2, what="both APIs up")
        yield a1, a2
    finally:
        a1.stop()
        a2.stop()


@pytest.fixture
def pair(lan, tmp_path):
    with running_pair(lan, tmp_path) as agents:
        yield agents


def api_get(agent: AgentProc, path: str) -> str | None:
    r = sh("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:9110{path}", ns=agent.ns, check=False)
    return r.stdout if r.returncode == 0 else None


def status(agent: AgentProc) -> dict:
    body = api_get(agent, "/status")
    assert body is not None, agent.log_text()[-2000:]
    return json.loads(body)


def transitions(agent: AgentProc, instance: str = "vi_1") -> list[tuple[str, str, str]]:
    return [(e["old"], e["new"], e["reason"]) for e in agent.events("vrrp.role_changed")
            if e.get("instance") == instance]


def sighup_and_wait(agent: AgentProc, event: str, timeout: float = 15.0) -> dict:
    before = len(agent.events(event))
    agent.signal(signal.SIGHUP)
    wait_for(lambda: len(agent.events(event)) > before, timeout, interval=0.05,
             what=f"{event} after SIGHUP")
    return agent.events(event)[-1]


def rewrite(agent: AgentProc, **changes) -> None:
    """Write the agent's config file again, with ``changes`` to the top-level keys."""
    agent.extra_config.update(changes)
    agent.write_config()


def assert_vip_steady(w1: VipEvents, w2: VipEvents) -> None:
    """The master (w1) held the VIP all through the watch and the backup (w2) never had
    it: the kernel recorded no deletion on the first and no event at all on the second."""
    for w in (w1, w2):
        assert w.error is None, w.error
    assert w1.held_at_start and w1.held_at_end, "the master did not hold the VIP"
    assert "deleted" not in w1.events, f"the master's VIP flapped during the reload: {w1.events}"
    assert (w2.held_at_start, w2.events, w2.held_at_end) == (False, [], False), \
        f"the backup added the VIP during the reload: {w2.events}"


def test_reload_with_an_unchanged_config_keeps_the_master_and_its_vip(lan, pair):
    a1, a2 = pair
    t1, t2 = transitions(a1), transitions(a2)
    since = status(a1)["vrrp_instances"][0]["since"]
    with VipEvents(a1.ns, lan.vip4()) as w1, VipEvents(a2.ns, lan.vip4()) as w2:
        a1.write_config()                 # same content, rewritten
        done = sighup_and_wait(a1, "agent.reloaded")
        time.sleep(1.0)                   # ten advert intervals after the reload
    assert done["generation"] == 2 and done["unchanged"] == ["vi_1"] and done["reason"] == "unchanged"
    assert_vip_steady(w1, w2)
    assert transitions(a1) == t1 and transitions(a2) == t2, "no VRRP transition on either node"
    s = status(a1)
    assert s["node"]["config_generation"] == 2
    assert s["reloads"]["count"] == 1 and s["reloads"]["last_ok"] is True
    inst = s["vrrp_instances"][0]
    assert inst["state"] == "MASTER" and inst["since"] == pytest.approx(since, abs=0.01)
    assert a1.state()["config_generation"] == 2 and a1.role() == "MASTER"


def test_an_invalid_config_is_refused_and_everything_keeps_running(lan, pair):
    a1, a2 = pair
    t1, t2 = transitions(a1), transitions(a2)
    good = a1.config_path.read_text()
    with VipEvents(a1.ns, lan.vip4()) as w1, VipEvents(a2.ns, lan.vip4()) as w2:
        a1.config_path.write_text(good.replace("vrid: 51", "vrid: 300"))
        failed = sighup_and_wait(a1, "agent.reload_failed")
        time.sleep(1.0)
    assert failed["reason"] == "invalid_config"
    assert f"{a1.config_path}:" in failed["detail"] and "vrid" in failed["detail"]
    assert a1.alive() and a2.alive()
    assert_vip_steady(w1, w2)
    assert transitions(a1) == t1 and transitions(a2) == t2
    s = status(a1)
    assert s["node"]["config_generation"] == 1
    assert (s["reloads"]["count"], s["reloads"]["failures"], s["reloads"]["last_ok"]) == (1, 1, False)
    assert "vrid" in s["reloads"]["last_error"]
    # The CLI says the same, and exits with the config-invalid code for a refused reload.
    r = sh(*HADIRECTOR_CLI, "reload", "-c", str(a1.config_path), ns=a1.ns, check=False)
    assert r.returncode == ExitCode.CONFIG_INVALID and "refused" in (r.stdout + r.stderr)
    a1.config_path.write_text(good)
    r = sh(*HADIRECTOR_CLI, "reload", "-c", str(a1.config_path), ns=a1.ns, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert status(a1)["node"]["config_generation"] == 2
    assert transitions(a1) == t1


def test_an_added_instance_starts_while_the_running_one_stays_master(lan, pair):
    a1, a2 = pair
    t1, t2 = transitions(a1), transitions(a2)
    vip2 = lan.vip4(101)
    second = instance_config(lan, name="vi_2", vrid=52, priority=HIGH, advert=ADVERT)
    second["virtual_ips"] = [str(vip2)]
    with VipEvents(a1.ns, lan.vip4()) as w1, VipEvents(a2.ns, lan.vip4()) as w2:
        a1.instances.append(second)
        a1.write_config()
        done = sighup_and_wait(a1, "agent.reloaded")
        wait_for(lambda: a1.role("vi_2") == "MASTER", 5.0, what="vi_2 MASTER on node 1")
        wait_for(lambda: lan.has_ip(1, vip2), 3.0, what=f"{vip2} on node 1")
        time.sleep(0.5)
    assert done["added"] == ["vi_2"] and done["unchanged"] == ["vi_1"]
    assert_vip_steady(w1, w2)
    assert transitions(a1) == t1 and transitions(a2) == t2, "vi_1 never moved"
    assert [t[1] for t in transitions(a1, "vi_2")] == ["BACKUP", "MASTER"]
    names = {i["name"]: i for i in status(a1)["vrrp_instances"]}
    assert names["vi_2"]["state"] == "MASTER" and names["vi_2"]["virtual_ips"] == [f"{vip2}/32"]
    assert holders(lan, vip2, (1, 2)) == [1]


def test_status_metrics_and_the_cli_report_what_the_namespaces_show(lan, pair):
    from prometheus_client.parser import text_string_to_metric_families

    a1, a2 = pair
    for agent, node, role in ((a1, 1, "MASTER"), (a2, 2, "BACKUP")):
        s = status(agent)
        (inst,) = s["vrrp_instances"]
        assert inst["name"] == "vi_1" and inst["vrid"] == 51 and inst["state"] == role
        assert inst["master_address"] == str(lan.ip4(1)), "both agree who is master"
        assert inst["virtual_ips"] == [f"{lan.vip4()}/32"]
        assert lan.has_ip(node, lan.vip4()) is (role == "MASTER"), "status matches ip addr"
        assert s["node"]["router_id"] == f"n{node}" and s["node"]["pid"] == agent.proc.pid
        assert inst["priority"] == (HIGH if node == 1 else LOW)

        families = {f.name: f for f in text_string_to_metric_families(api_get(agent, "/metrics"))}
        states = {smp.labels["state"]: smp.value for smp in families["hadirector_vrrp_state"].samples
                  if smp.labels["vrrp_instance"] == "vi_1"}
        assert states[role] == 1.0 and sum(states.values()) == 1.0
        (sent,) = [smp.value for smp in families["hadirector_vrrp_adverts_sent"].samples
                   if smp.name.endswith("_total")]
        (trans,) = [smp.value for smp in families["hadirector_vrrp_transitions"].samples
                    if smp.name.endswith("_total")]
        after = status(agent)["vrrp_instances"][0]
        # Counters only grow: the master keeps sending, a backup sends nothing.
        assert sent == after["adverts_sent"] if role == "BACKUP" else 0 < sent <= after["adverts_sent"]
        assert trans == after["transitions"] >= 1
        assert families["hadirector_config_generation"].samples[0].value == 1.0

        out = sh(*HADIRECTOR_CLI, "status", "-c", str(agent.config_path), ns=agent.ns).stdout
        row = next(line for line in out.splitlines() if line.strip().startswith("vi_1"))
        assert role in row and str(lan.ip4(1)) in row, out
        raw = json.loads(sh(*HADIRECTOR_CLI, "status", "--json", "-c", str(agent.config_path),
                            ns=agent.ns).stdout)
        assert raw["vrrp_instances"][0]["state"] == role
    # After a takeover the API follows the namespaces.
    a1.signal(signal.SIGTERM)
    assert a1.proc.wait(10) == 0
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=5)
    wait_for(lambda: status(a2)["vrrp_instances"][0]["state"] == "MASTER", 5.0, what="status MASTER")
    s = status(a2)["vrrp_instances"][0]
    assert s["master_address"] == str(lan.ip4(2)) and s["reason"] == "priority_zero_received"


def test_a_stop_while_a_reload_waits_on_its_file_ends_the_read_and_fails_over_at_once(lan, pair):
    # A file that never arrives (a FIFO no one writes, as on a hung file system): the
    # reader would wait out its wall-clock bound, and the stop waited for the reload.
    a1, a2 = pair
    a1.config_path.unlink()
    os.mkfifo(a1.config_path)
    a1.signal(signal.SIGHUP)
    # ``ip netns exec`` execs the agent: its pid is the agent's.
    wait_for(lambda: children(a1.proc.pid), 10.0, what="the config reader forked")
    (reader,) = children(a1.proc.pid)
    a1.signal(signal.SIGTERM)
    assert a1.proc.wait(20) == 0, "the stop waited for the read"
    failed = a1.events("agent.reload_failed")[-1]
    assert (failed["reason"], failed["detail"]) == ("not_running", "the agent is stopping")
    assert a1.events("agent.reload_lock_timeout") == []
    assert not Path(f"/proc/{reader}").exists(), "the reader was killed and reaped"
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"
