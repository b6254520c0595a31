"""A local user floods the agent's API: the director keeps working (issue 9, fault 4).

A real agent (``tests/netns/fake_ipvs_agent.py``: the real agent with a fake IPVS table, so
its TCP health checks run on a host without ip_vs) runs in namespace n1 with a
descriptor limit of 1024 *soft and hard* (``prlimit``), as on a host without the unit's
``LimitNOFILE``: raising the soft limit cannot help, only the API's own bounds can. Its
real server is a TCP listener in namespace n2. The flood is ``api_flood.py`` run as
``nobody`` (``setpriv``) inside n1: 1,100 slowloris connections to 127.0.0.1:9110,
reopened as soon as the agent drops them, for a bounded time.

Oracles from outside the agent: curl, ``hadirector reload`` over the control socket,
the agent's descriptor count in /proc, its JSON log, the flood client's own counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from hadirector.api.listener import BoundedListener
from hadirector.api.server import MAX_CONNECTIONS
from hadirector.exitcodes import ExitCode

ACCEPT_BATCH = BoundedListener.__init__.__kwdefaults__["accept_batch"]

from lab.agents import ROOT, AgentProc, instance_config, wait_for
from lab.lan import Lan, sh
from lab.users import NOBODY_RUNNING_OUR_CODE

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NOBODY = list(NOBODY_RUNNING_OUR_CODE)        # runs hadirector and the flooder: see lab.users
HADIRECTOR = [sys.executable, "-m", "hadirector.cli"]
FLOOD = str(Path(__file__).with_name("api_flood.py"))
NOFILE = 1024
FLOOD_CONNECTIONS = 1100
FLOOD_SECONDS = 15.0
HEALTHZ_DEADLINE = 5.0      # s: curl --max-time for one /healthz during the flood
RS_PORT = 8080


class FloodedAgent(AgentProc):
    """The agent under ``prlimit --nofile=1024:1024``, wired with a fake IPVS."""

    def start(self) -> "FloodedAgent":
        self.write_config()
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "prlimit", f"--nofile={NOFILE}:{NOFILE}",
             sys.executable, "-m", "tests.netns.fake_ipvs_agent", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()
        return self

    @property
    def pid(self) -> int:
        # ``ip netns exec`` and ``prlimit`` both exec: the pid is the agent's.
        assert self.proc is not None
        return self.proc.pid

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def curl(ns: str, path: str, *args: str, timeout: float = HEALTHZ_DEADLINE,
         user: list[str] | None = None) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = subprocess.run(["ip", "netns", "exec", ns, *(user or []), "curl", "-s", "-m", str(timeout),
                        "-w", "\n%{http_code}", *args, f"http://127.0.0.1:9110{path}"],
                       capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body, time.monotonic() - t0


def status(agent: FloodedAgent) -> dict:
    code, body, _ = curl(agent.ns, "/status")
    assert code == 200, agent.log_text()[-2000:]
    return json.loads(body)


def metrics(agent: FloodedAgent) -> dict[tuple, float]:
    """The agent's /metrics as {(name, (label, value), ...): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    code, body, _ = curl(agent.ns, "/metrics")
    assert code == 200, body[-2000:]
    return {(s.name, *sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def api_counter(m: dict, name: str, **labels: str) -> float:
    """``hadirector_api_<name>`` summed over the series matching ``labels``."""
    full = f"hadirector_api_{name}"
    return sum(v for (n, *lbl), v in m.items()
               if n == full and all((k, w) in lbl for k, w in labels.items()))


def rs_health(agent: FloodedAgent) -> str:
    (vs,) = status(agent)["virtual_services"]
    (rs,) = vs["real_servers"]
    return rs["health"]


@pytest.fixture(scope="module")
def lab():
    lan = Lan("af", nodes=2, net=70, area="rl", subnet=236)
    # A short state dir that `nobody` may traverse: the socket's own mode is the barrier.
    state = Path(tempfile.mkdtemp(prefix="hd-af-", dir="/tmp"))
    state.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix="hd-af-work-"))
    rs = None
    agent = peer = None
    try:
        lan.up()
        rs = subprocess.Popen(
            ["ip", "netns", "exec", lan.ns(2), sys.executable, "-c",
             "import socket\n"
             f"s = socket.create_server(('{lan.ip4(2)}', {RS_PORT}), backlog=512)\n"
             "while True:\n    c, _ = s.accept(); c.close()\n"])
        cfg = {
            "api": {"listen": "127.0.0.1:9110"},
            "lvs": {"program": "always", "on_shutdown": "keep"},
            "virtual_services": [{
                "name": "web", "address": str(lan.vip4()), "port": RS_PORT, "scheduler": "rr",
                "forward": "dr",
                "check": {"type": "tcp", "interval": "0.5s", "timeout": "2s", "rise": 1, "fall": 2},
                "real_servers": [{"address": str(lan.ip4(2))}],
            }],
        }
        agent = FloodedAgent(lan, 1, work, [instance_config(lan, priority=150, advert=0.2)], cfg)
        agent.state_dir = state
        agent.start()
        wait_for(lambda: agent.role() == "MASTER", 20, interval=0.1, what="MASTER")
        # A backup peer: if the flood delayed the master's adverts by ~0.7 s (3 advert
        # intervals and the skew time), it would take over.
        peer = AgentProc(lan, 2, work, [instance_config(lan, priority=100, advert=0.2)])
        peer.start()
        wait_for(lambda: peer.role() == "BACKUP", 20, interval=0.1, what="the peer BACKUP")
        wait_for(lambda: curl(agent.ns, "/healthz", timeout=2)[0] == 200, 20, interval=0.2,
                 what="the API up")
        wait_for(lambda: rs_health(agent) == "up", 20, interval=0.2, what="the real server UP")
        yield lan, agent, peer
    finally:
        for a in (agent, peer):
            if a is not None:
                a.stop()
        if rs is not None:
            rs.kill()
            rs.wait(5)
        lan.down()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def control_path(agent: FloodedAgent) -> Path:
    return Path(agent.state_dir) / "control.sock"


def reload_cli(agent: FloodedAgent, *extra: str, user: list[str] | None = None):
    return subprocess.run(["ip", "netns", "exec", agent.ns, *(user or []), *HADIRECTOR, "reload",
                           "--socket", str(control_path(agent)), *extra],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))


def test_nobody_cannot_reload_over_http_nor_over_the_control_socket(lab):
    lan, agent, peer = lab
    before = len(agent.events("agent.reloaded"))
    refused = api_counter(metrics(agent), "requests_refused_total", listener="http", reason="http_not_allowed")
    code, body, _ = curl(agent.ns, "/reload", "-X", "POST", user=NOBODY)
    assert code == 403
    assert "hadirector reload" in json.loads(body)["error"]
    st = os.stat(control_path(agent))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    r = reload_cli(agent, user=NOBODY)
    assert r.returncode == ExitCode.NO_PRIVILEGE, r.stdout + r.stderr
    assert "permission denied" in r.stderr and "needs root" in r.stderr
    assert len(agent.events("agent.reloaded")) == before, "nobody reloaded the agent"
    # Counted: /metrics and /status say how many reloads HTTP refused.
    assert api_counter(metrics(agent), "requests_refused_total", listener="http",
                       reason="http_not_allowed") == refused + 1
    assert status(agent)["api"]["http"]["refused"]["http_not_allowed"] == refused + 1
    # Root can.
    r = reload_cli(agent)
    assert r.returncode == 0 and "reload applied" in r.stdout, r.stdout + r.stderr
    assert len(agent.events("agent.reloaded")) == before + 1


def test_a_burst_of_200_reloads_from_root_applies_only_a_few(lab):
    lan, agent, peer = lab
    time.sleep(2.5)                  # let the bucket refill after the previous test
    before = len(agent.events("agent.reloaded"))
    m0 = metrics(agent)
    answers: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        try:
            s.connect(str(control_path(agent)))
        except OSError:          # the listen backlog full (EAGAIN): never reached the agent
            s.close()
            with lock:
                answers.append("not_connected")
            return
        try:
            s.sendall(b"reload\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError:          # closed at capacity, with our line unread: a reset
            data = b""
        finally:
            s.close()
        reason = "closed" if not data else json.loads(data).get("reason", "applied")
        with lock:
            answers.append(reason)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    applied = len(agent.events("agent.reloaded")) - before
    counts = {r: answers.count(r) for r in set(answers)}
    print(f"200 reload requests in {elapsed:.2f}s: {counts}; applied {applied}")
    assert len(answers) == 200, counts
    assert answers.count("rate_limited") > 0, counts
    # Burst 2, then 1 per second.
    assert 1 <= applied <= 2 + int(elapsed) + 1, (applied, elapsed, counts)
    assert applied == answers.count("applied")
    assert set(answers) <= {"applied", "rate_limited", "closed", "not_connected"}, counts
    # The control socket's counters in /metrics tell the same story.
    m1 = metrics(agent)
    delta = lambda name, **lbl: api_counter(m1, name, **lbl) - api_counter(m0, name, **lbl)  # noqa: E731
    assert delta("requests_refused_total", listener="control", reason="rate_limited") == \
        answers.count("rate_limited"), counts
    assert delta("connections_dropped_total", listener="control", reason="at_capacity") == \
        answers.count("closed"), counts
    assert delta("connections_accepted_total", listener="control") == 200 - answers.count("not_connected")


def test_a_nobody_flood_of_1100_idle_connections_does_not_starve_the_agent(lab):
    lan, agent, peer = lab
    time.sleep(2.5)                  # the reload bucket refills
    log_bytes = agent.log_path.stat().st_size
    roles = len(agent.events("vrrp.role_changed")) + len(peer.events("vrrp.role_changed"))
    downs = len(agent.events("health.server_down"))
    reloads = len(agent.events("agent.reloaded"))
    fds_before = agent.fds()
    m0 = metrics(agent)

    flood = subprocess.Popen(
        ["ip", "netns", "exec", agent.ns, *NOBODY, sys.executable, FLOOD, "--port", "9110",
         "--connections", str(FLOOD_CONNECTIONS), "--duration", str(FLOOD_SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    healthz: list[tuple[int, float]] = []
    health: list[str] = []
    max_fds = 0
    try:
        time.sleep(2.0)              # the flood is at full strength
        assert flood.poll() is None, flood.communicate()
        r = reload_cli(agent)        # root reloads over the control socket
        assert r.returncode == 0 and "reload applied" in r.stdout, r.stdout + r.stderr
        sighup_before = len(agent.events("agent.reloaded"))
        agent.signal(signal.SIGHUP)  # and SIGHUP still works
        wait_for(lambda: len(agent.events("agent.reloaded")) > sighup_before, 10, interval=0.1,
                 what="a SIGHUP reload during the flood")
        while flood.poll() is None:
            code, body, took = curl(agent.ns, "/healthz")
            healthz.append((code, took))
            health.append(rs_health(agent))
            max_fds = max(max_fds, agent.fds())
            time.sleep(0.2)
        out, err = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.communicate()
    stats = json.loads(out.strip().splitlines()[-1])
    print(f"flood: {stats}; healthz: {healthz}; agent fds max {max_fds} (before {fds_before})")
    assert stats["uid"] == 65534 and stats["peak_open"] >= FLOOD_CONNECTIONS, (stats, err)
    assert stats["closed_by_server"] > FLOOD_CONNECTIONS, "the agent shed the idle connections"
    assert len(healthz) >= 5 and all(code == 200 for code, _ in healthz), healthz
    assert set(health) == {"up"}, health
    # Beyond what it held before: the API's 64 connections, one accept batch (accepted
    # before the oldest idle ones are dropped), and this agent's one TCP health check
    # in flight.
    assert max_fds <= fds_before + MAX_CONNECTIONS + ACCEPT_BATCH + 1, \
        "the API stayed within its share of descriptors"
    assert len(agent.events("health.server_down")) == downs
    assert len(agent.events("vrrp.role_changed")) + len(peer.events("vrrp.role_changed")) == roles, \
        "VRRP never noticed the flood: the master's adverts kept the peer BACKUP"
    assert len(agent.events("agent.reloaded")) == reloads + 2
    # The log stays small: one line per interval about the dropped connections.
    with open(agent.log_path, "rb") as f:
        f.seek(log_bytes)
        new = f.read().decode(errors="replace")
    assert "Traceback" not in new and "Too many open files" not in new
    dropped = [json.loads(line) for line in new.splitlines() if "api.connections_dropped" in line]
    assert 1 <= len(dropped) <= FLOOD_SECONDS / 10 + 3, dropped
    assert len(new) < 20_000, f"{len(new)} bytes of log during the flood"

    # /metrics counts what the listener shed (and /status agrees): every connection the
    # flood saw closed was one the agent dropped at capacity or past the header timeout.
    m1 = metrics(agent)
    delta = lambda name, **lbl: api_counter(m1, name, **lbl) - api_counter(m0, name, **lbl)  # noqa: E731
    dropped = delta("connections_dropped_total", listener="http")
    assert dropped >= stats["closed_by_server"], (dropped, stats)
    assert delta("connections_dropped_total", listener="http", reason="at_capacity") > 0
    assert delta("connections_accepted_total", listener="http") >= FLOOD_CONNECTIONS
    print(f"/metrics: http dropped {dropped:.0f} "
          f"({ {r: delta('connections_dropped_total', listener='http', reason=r) for r in ('at_capacity', 'header_timeout', 'all_busy')} }), "
          f"accept failures {delta('accept_failures_total', listener='http'):.0f}, "
          f"pauses {delta('accept_pauses_total', listener='http'):.0f}")
    http = status(agent)["api"]["http"]
    assert sum(http["dropped"].values()) == api_counter(metrics(agent), "connections_dropped_total",
                                                        listener="http")

    # Afterwards everything is normal: fast answers, no leftover connections.
    code, body, took = curl(agent.ns, "/healthz")
    assert (code, body) == (200, "ok\n") and took < 1.0
    wait_for(lambda: agent.fds() <= fds_before + 2, 15, interval=0.2,
             what="the flood's connections closed in the agent")
    assert rs_health(agent) == "up" and agent.role() == "MASTER" and peer.role() == "BACKUP"
    r = reload_cli(agent)
    assert r.returncode == 0, r.stdout + r.stderr
