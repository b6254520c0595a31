"""``health: {engine: worker}`` through a real agent: its checker worker process checks
real servers in another namespace, survives a SIGKILL, follows a reload (issue 13).

A real agent (``tests/netns/fake_ipvs_agent.py``: the real agent with a fake IPVS table,
so its checks run on a host without ip_vs) in namespace n1; in n2 a TCP listener and a
plain HTTP server (``python -m http.server``). Oracles from outside the agent: /status
and /metrics over curl, ``hadirector status``, the agent's JSON log, the process table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from lab.agents import ROOT, AgentProc, instance_config, wait_for
from lab.lan import Lan

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HADIRECTOR = [sys.executable, "-m", "hadirector.cli"]
TCP_PORT, HTTP_PORT = 8080, 8081
INTERVAL, TIMEOUT, FALL = 0.3, 1.0, 2
SLACK = 3.0


class WorkerAgent(AgentProc):
    """The agent with a fake IPVS and its API on 127.0.0.1:9110 of its namespace."""

    def start(self) -> "WorkerAgent":
        self.write_config()
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.netns.fake_ipvs_agent",
             "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()
        return self

    def api(self, path: str) -> str:
        r = subprocess.run(["ip", "netns", "exec", self.ns, "curl", "-s", "-m", "5",
                            f"http://127.0.0.1:9110{path}"], capture_output=True, text=True, timeout=15)
        return r.stdout

    def servers(self) -> dict[str, str]:
        text = self.api("/status")
        if not text:
            return {}
        (vs,) = json.loads(text)["virtual_services"]
        return {f'{rs["address"]}:{rs["port"]}': rs["health"] for rs in vs["real_servers"]}

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", "hadirector.health.worker"],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


def services(lan: Lan, *ports: int) -> dict:
    servers = []
    for port in ports:
        check = ({"type": "tcp"} if port == TCP_PORT else {"type": "http", "path": "/"})
        check.update(interval=f"{INTERVAL}s", timeout=f"{TIMEOUT}s", rise=1, fall=FALL)
        servers.append({"address": str(lan.ip4(2)), "port": port, "check": check})
    return {
        "api": {"listen": "127.0.0.1:9110"},
        "health": {"engine": "worker"},
        "lvs": {"program": "always", "on_shutdown": "keep"},
        "virtual_services": [{"name": "web", "address": str(lan.vip4()), "port": 80, "scheduler": "rr",
                              "forward": "nat", "real_servers": servers}],
    }


@pytest.fixture(scope="module")
def lab():
    lan = Lan("hw", nodes=2, net=72, area="hw", subnet=238)
    work = Path(tempfile.mkdtemp(prefix="hd-hw-"))
    procs: list[subprocess.Popen] = []
    agent = None
    try:
        lan.up()
        ip = str(lan.ip4(2))
        tcp = subprocess.Popen(
            ["ip", "netns", "exec", lan.ns(2), sys.executable, "-c",
             "import socket\n"
             f"s = socket.create_server(('{ip}', {TCP_PORT}), backlog=512)\n"
             "while True:\n    c, _ = s.accept(); c.close()\n"])
        http = subprocess.Popen(
            ["ip", "netns", "exec", lan.ns(2), sys.executable, "-m", "http.server", str(HTTP_PORT),
             "--bind", ip, "--directory", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs += [tcp, http]
        agent = WorkerAgent(lan, 1, work, [instance_config(lan, priority=150, advert=0.2)],
                            services(lan, TCP_PORT, HTTP_PORT))
        agent.start()
        yield lan, agent, tcp
    finally:
        if agent is not None:
            agent.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        lan.down()
        shutil.rmtree(work, ignore_errors=True)


def test_worker_engine_through_a_real_agent(lab):
    lan, agent, tcp = lab
    ip = str(lan.ip4(2))
    tcp_rs, http_rs = f"{ip}:{TCP_PORT}", f"{ip}:{HTTP_PORT}"

    # Up, checked by the worker (a child of the agent), logged as the runner logs.
    wait_for(lambda: agent.servers() == {tcp_rs: "up", http_rs: "up"}, 30, interval=0.2,
             what="both real servers UP")
    (first,) = agent.worker_pids()
    assert [e["reason"] for e in agent.events("health.worker_started")] == ["first"]
    assert {e["server"] for e in agent.events("health.server_up")} == {tcp_rs, http_rs}

    # The worker is killed: logged, restarted; nothing goes down meanwhile.
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: agent.worker_pids() not in ([], [first]), 10, interval=0.05, what="a new worker")
    (exited,) = agent.events("health.worker_exited")
    assert exited["pid"] == first and exited["reason"] == "killed by SIGKILL"
    end = time.monotonic() + FALL * INTERVAL + TIMEOUT + 1.0
    while time.monotonic() < end:                 # longer than a server takes to fail
        assert agent.servers() == {tcp_rs: "up", http_rs: "up"}
        time.sleep(0.1)
    assert agent.events("health.server_down") == []

    # The operator sees it: /status, /metrics and `hadirector status`.
    (second,) = agent.worker_pids()
    health = json.loads(agent.api("/status"))["health"]
    w = health["worker"]
    assert health["engine"] == "worker"
    assert (w["running"], w["pid"], w["starts"], w["restarts"], w["last_exit"]) == (
        True, second, 2, 1, "killed by SIGKILL")
    samples = agent.api("/metrics").splitlines()
    assert "hadirector_health_worker_restarts_total 1" in samples and "hadirector_health_worker_up 1" in samples
    r = subprocess.run(["ip", "netns", "exec", agent.ns, *HADIRECTOR, "status", "--url", "http://127.0.0.1:9110"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"  checker worker: pid {second}, up " in r.stdout
    assert "; 1 restart(s), last exit: killed by SIGKILL" in r.stdout

    # The new worker checks: the TCP server stops, it goes down within fall x interval + timeout.
    tcp.kill()
    tcp.wait(5)
    t0 = time.monotonic()
    wait_for(lambda: agent.servers().get(tcp_rs) == "down", FALL * INTERVAL + TIMEOUT + SLACK,
             interval=0.05, what="the TCP server DOWN")
    assert time.monotonic() - t0 <= FALL * INTERVAL + TIMEOUT + SLACK
    (down,) = agent.events("health.server_down")
    assert (down["server"], down["reason"]) == (tcp_rs, "refused")

    # A reload that removes a server: the same worker, told the difference.
    agent.extra_config = services(lan, HTTP_PORT)
    agent.write_config()
    r = subprocess.run(["ip", "netns", "exec", agent.ns, *HADIRECTOR, "reload", "--socket",
                        str(Path(agent.state_dir) / "control.sock")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: agent.servers() == {http_rs: "up"}, 10, interval=0.1, what="the reload applied")
    assert agent.worker_pids() == [second]
    assert len(agent.events("health.worker_started")) == 2

    # Stopped with the agent: no worker left behind.
    agent.stop()
    assert not Path(f"/proc/{second}").exists()
