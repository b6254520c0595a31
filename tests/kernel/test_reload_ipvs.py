"""Live reload of a director with IPVS virtual services, under client traffic.

One ``hadirector run`` agent (no peer: it becomes MASTER) directs LVS-DR traffic in a
namespace LAN (area prefix "rl", 10.236.60.0/24):

    n1 director (10.236.60.1, VIP .100 on eth0 while MASTER)
    n2..n4 real servers rs1..rs3 (VIP on lo, arp_ignore/arp_announce; HTTP :80 and
           a line echo :9000 from lab/realserver.py)
    n5 client (lab/client.py: short HTTP requests + long-lived echo connections)

Oracles: ``ipvsadm -Ln`` before/after, the agent's ``ipvs.table_changed writes=N
reason=reload`` log lines (every netlink write the reconciler makes is counted there),
``vrrp.role_changed`` (none after the start-up election) and the client's summary.

Runs in the kernel lab (QEMU, TCG): Python is 10-20x slower there, so waits are
generous and the agent is started once for the module. Every test starts by putting
the base config back in force.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.agents import AgentProc, instance_config, wait_for
from lab.lan import Lan, dr_real_server, sh

pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab"
DIRECTOR, RS, CLIENT = 1, (2, 3, 4), 5
START_TIMEOUT = 180.0        # agent start-up under TCG
RELOAD_TIMEOUT = 60.0
RELOADS = 100


def service(name: str, lan: Lan, port: int, weights: dict[int, int]) -> dict:
    return {
        "name": name, "address": str(lan.vip4()), "port": port, "scheduler": "rr",
        "forward": "dr",
        "check": {"type": "tcp", "interval": "1s", "timeout": "3s", "rise": 1, "fall": 3},
        "real_servers": [{"address": str(lan.ip4(n)), "weight": w} for n, w in weights.items()],
    }


def base_services(lan: Lan) -> dict:
    return {
        "lvs": {"program": "always", "on_shutdown": "keep"},
        "virtual_services": [service("web", lan, 80, {2: 1, 3: 1, 4: 1}),
                             service("echo", lan, 9000, {2: 1, 3: 1, 4: 1})],
    }


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lan = Lan("kr", nodes=5, net=60, area="rl", subnet=236)
        self.servers: list[subprocess.Popen] = []
        self.agent: AgentProc | None = None

    def up(self) -> "Lab":
        lan = self.lan.up()
        for n in RS:
            ns = lan.ns(n)
            dr_real_server(ns, lan.vip4())
            log = open(self.tmp / f"rs{n}.log", "ab")
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(LAB / "realserver.py"), f"rs{n - 1}",
                 "--state-dir", str(self.tmp)], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        return self

    def start_agent(self) -> AgentProc:
        lan = self.lan
        inst = instance_config(lan, advert=1.0, priority=150)
        inst["garp"] = {"count": 3, "interval": 0.01, "repeat_delay": 0}
        extra = {"api": {"listen": "127.0.0.1:9110"}, **base_services(lan)}
        self.agent = AgentProc(lan, DIRECTOR, self.tmp, [inst], extra).start()
        wait_for(lambda: self.agent.role() == "MASTER", START_TIMEOUT, interval=0.2,
                 what="director MASTER")
        wait_for(lambda: self.dests() == 6, START_TIMEOUT, interval=0.5,
                 what="all six real servers programmed")
        return self.agent

    def down(self) -> None:
        if self.agent is not None:
            self.agent.stop(timeout=60)
        for p in self.servers:
            p.terminate()
        for p in self.servers:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.lan.down()

    # --- views -------------------------------------------------------------------

    def ipvsadm(self) -> list[str]:
        out = sh("ipvsadm", "-Ln", ns=self.lan.ns(DIRECTOR)).stdout
        # Connection counters move with traffic; the table is the first 4 columns.
        return [" ".join(line.split()[:4]) for line in out.splitlines()]

    def dests(self) -> int:
        return sum(1 for line in self.ipvsadm() if line.startswith("-> ") and "10.236." in line)

    def events(self, name: str) -> list[dict]:
        """The agent's events of that name, over all its runs (one AgentProc, one log)."""
        assert self.agent is not None
        return self.agent.events(name)

    def log(self) -> list[dict]:
        assert self.agent is not None
        return self.agent.log_events()

    def reload_writes(self) -> list[int]:
        return [e["writes"] for e in self.events("ipvs.table_changed") if e.get("reason") == "reload"]

    def transitions(self) -> list[dict]:
        return self.events("vrrp.role_changed")

    def reload(self, *, expect: str = "agent.reloaded", **changes) -> dict:
        """Rewrite the config with ``changes`` to its top-level keys, SIGHUP, wait."""
        agent = self.agent
        assert agent is not None
        agent.extra_config.update(changes)
        agent.write_config()
        before = len(self.events(expect))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: len(self.events(expect)) > before, RELOAD_TIMEOUT, interval=0.05,
                 what=f"{expect} after SIGHUP")
        return self.events(expect)[-1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("rl-kernel"))
    try:
        lab.up()
        lab.start_agent()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def base(lab):
    """The base config in force, and the election over (one MASTER transition)."""
    lab.reload(**base_services(lab.lan))
    wait_for(lambda: lab.dests() == 6, 60, interval=0.5, what="base table")
    assert [e["new"] for e in lab.transitions()] == ["BACKUP", "MASTER"]
    return lab


def test_a_good_reload_writes_only_what_changed(base):
    lab = base
    before_table, before_writes = lab.ipvsadm(), len(lab.reload_writes())
    svc = base_services(lab.lan)
    # web: rs2 weight 1 -> 3 (one edit); echo: rs3 removed (one delete).
    svc["virtual_services"][0] = service("web", lab.lan, 80, {2: 1, 3: 3, 4: 1})
    svc["virtual_services"][1] = service("echo", lab.lan, 9000, {2: 1, 3: 1})
    done = lab.reload(**svc)
    assert done["lvs"] == ["virtual_service web: changed (real_servers)",
                           "virtual_service echo: changed (real_servers)"]
    assert done["unchanged"] == ["vi_1"]
    assert lab.reload_writes()[before_writes:] == [2], "one edit and one delete"
    after_table = lab.ipvsadm()
    vip = lab.lan.vip4()
    rs2, rs3 = lab.lan.ip4(3), lab.lan.ip4(4)
    removed = sorted(set(before_table) - set(after_table))
    added = sorted(set(after_table) - set(before_table))
    assert added == [f"-> {rs2}:80 Route 3"], (before_table, after_table)
    assert sorted(removed) == sorted([f"-> {rs2}:80 Route 1", f"-> {rs3}:9000 Route 1"])
    assert f"TCP {vip}:9000 rr" in after_table
    # An unchanged reload writes nothing at all.
    same = lab.reload()
    assert same["reason"] == "unchanged" and lab.reload_writes()[before_writes:] == [2]
    assert lab.ipvsadm() == after_table
    assert [e["new"] for e in lab.transitions()] == ["BACKUP", "MASTER"], "no VRRP transition"


def test_a_bad_reload_keeps_the_table_and_the_config(base):
    lab = base
    agent = lab.agent
    table, writes = lab.ipvsadm(), len(lab.reload_writes())
    svc = base_services(lab.lan)
    svc["virtual_services"][0]["scheduler"] = "no-such-scheduler"
    failed = lab.reload(expect="agent.reload_failed", **svc)
    assert failed["reason"] == "invalid_config" and "scheduler" in failed["detail"]
    assert f"{agent.config_path}:" in failed["detail"]
    time.sleep(2.0)
    assert lab.ipvsadm() == table and len(lab.reload_writes()) == writes
    assert agent.alive() and agent.role() == "MASTER"
    assert [e["new"] for e in lab.transitions()] == ["BACKUP", "MASTER"]
    status = json.loads(sh("curl", "-sf", "--max-time", "20", "http://127.0.0.1:9110/status",
                           ns=agent.ns).stdout)
    assert status["reloads"]["last_ok"] is False
    assert {s["name"]: s["in_kernel"] for s in status["virtual_services"]} == {"web": True, "echo": True}


@pytest.mark.lab_seconds(70)     # 52-75 s: a reload is a fork of the agent (config/worker.py)
def test_a_hundred_reloads_under_client_traffic_lose_no_request_and_no_connection(base, tmp_path):
    lab = base
    lan = lab.lan
    out, stop, ready = tmp_path / "client.json", tmp_path / "stop", tmp_path / "ready"
    client = subprocess.Popen(
        ["ip", "netns", "exec", lan.ns(CLIENT), sys.executable, str(LAB / "client.py"),
         "--vip", str(lan.vip4()), "--rate", "10", "--timeout", "5", "--long", "6",
         "--ping", "0.5", "--long-timeout", "20", "--duration", "1500",
         "--stop-file", str(stop), "--ready-file", str(ready), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(ready.exists, 120, interval=0.2, what="client connections open")
        writes = len(lab.reload_writes())
        started = time.monotonic()
        for i in range(RELOADS):
            # Alternate one real server's weight: every reload is a real change, and
            # the minimal change is exactly one IPVS edit.
            svc = base_services(lan)
            if i % 2 == 0:
                svc["virtual_services"][0] = service("web", lan, 80, {2: 1, 3: 2, 4: 1})
            lab.reload(**svc)
            assert time.monotonic() - started < 1200, f"only {i} reloads in 1200 s"
        elapsed = time.monotonic() - started
        time.sleep(2.0)
    finally:
        stop.touch()
        try:
            client.wait(120)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
    summary = json.loads(out.read_text())
    print(f"{RELOADS} reloads in {elapsed:.1f} s; client: {summary['ok']}/{summary['requests']} ok, "
          f"long-lived {summary['long_survived']}/{summary['long_opened']}, max gap {summary['max_gap']:.2f} s")
    assert summary["failed"] == 0, summary["failures"][:10]
    assert summary["ok"] >= 50
    assert summary["long_opened"] == summary["long_requested"] == 6
    assert summary["long_survived"] == 6, summary["long_lost"]
    assert lab.reload_writes()[writes:] == [1] * RELOADS, "one IPVS edit per reload"
    assert [e["new"] for e in lab.transitions()] == ["BACKUP", "MASTER"], "no VRRP transition"
    assert len(lab.events("agent.reloaded")) >= RELOADS


def test_sigterm_keeps_or_removes_the_ipvs_entries_as_lvs_on_shutdown_says(base):
    lab = base
    agent = lab.agent
    table = lab.ipvsadm()
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(60) == 0
    assert not lab.lan.has_ip(DIRECTOR, lab.lan.vip4()), "the VIP is released"
    assert lab.ipvsadm() == table, "on_shutdown: keep leaves the table in the kernel"
    # A restarted agent with the same config finds its table and writes nothing.
    agent.start()
    wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, interval=0.2, what="MASTER again")

    def restarted() -> bool:
        # agent.started follows MASTER once the components have started: seconds under
        # emulation on a loaded machine (3 s were not always enough).
        log = lab.log()
        stops = [i for i, e in enumerate(log) if e.get("event") == "agent.stopped"]
        return any(e.get("event") == "agent.started" for e in log[stops[-1] + 1:])
    wait_for(restarted, START_TIMEOUT, interval=0.5, what="agent.started again")
    time.sleep(3.0)                   # anything it would write late comes within this
    # Everything the second run logged (its start-up sync and election come before its
    # agent.started line: the LVS component starts after the machines).
    log = lab.log()
    stops = [i for i, e in enumerate(log) if e.get("event") == "agent.stopped"]
    after_restart = log[stops[-1] + 1:]
    assert any(e.get("event") == "agent.started" for e in after_restart)
    assert [e for e in after_restart if e.get("event") == "ipvs.table_changed"] == [], \
        "a restart with an unchanged config writes nothing"
    assert [e["new"] for e in after_restart if e.get("event") == "vrrp.role_changed"] == ["BACKUP", "MASTER"]
    lab.reload(lvs={"program": "always", "on_shutdown": "remove"})
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(60) == 0
    assert not [line for line in lab.ipvsadm() if str(lab.lan.vip4()) in line], \
        "on_shutdown: remove deletes our services"


def test_a_reload_adds_the_first_virtual_service_to_an_agent_started_without_any(lab):
    # Runs after the SIGTERM test: no agent, and on_shutdown: remove left no table.
    agent = lab.agent
    assert agent.proc.poll() is not None
    agent.extra_config = {"api": {"listen": "127.0.0.1:9110"}}      # VRRP only
    agent.start()
    wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, interval=0.2, what="MASTER, VRRP only")
    wait_for(lambda: lab.events("ipvs.idle"), 30, interval=0.2, what="the LVS side idle")
    assert lab.dests() == 0
    done = lab.reload(**base_services(lab.lan))
    assert done["reason"] == "applied"
    wait_for(lambda: lab.dests() == 6, 60, interval=0.5, what="the reloaded table programmed")
