"""Run real ``hadirector run`` processes (and keepalived) inside ``lab.lan`` namespaces.

Used by the election, interop and hostile-advert tests, the failover benchmark and
the election demo. An agent's state is read from its ``state_dir/state.json`` (written
on every change) and its JSON log; VIP ownership from ``ip addr`` in its namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from lab import progress

from lab import ROOT
from lab.lan import Lan, sh
from lab.netns import terminate

HADIRECTOR = [sys.executable, "-m", "hadirector.cli"]


def instance_config(
    lan: Lan,
    *,
    name: str = "vi_1",
    vrid: int = 51,
    priority: int = 100,
    advert: float = 0.1,
    version: int = 3,
    family: int = 4,
    preempt: bool = True,
    unicast_src=None,
    unicast_peers=(),
    extra: dict | None = None,
) -> dict:
    vip = lan.vip4() if family == 4 else lan.vip6()
    inst = {
        "name": name,
        "interface": "eth0",
        "vrid": vrid,
        "priority": priority,
        "version": version,
        "advert_interval": advert,
        "virtual_ips": [f"{vip}/{vip.max_prefixlen}"],     # a host address, said so (no config.warned)
        "preempt": preempt,
        # Fast GARP so tests see it; no repeat to keep logs small.
        "garp": {"count": 3, "interval": 0.01, "repeat_delay": 0},
    }
    if unicast_src is not None:
        inst["unicast_src"] = str(unicast_src)
    if unicast_peers:
        inst["unicast_peers"] = [str(p) for p in unicast_peers]
    if extra:
        inst.update(extra)
    return inst


def auth_config(workdir: Path, *, mode: str = "enforce", keys=(1,), active: int | None = None,
                **extra) -> dict:
    """An instance's ``auth`` mapping; key ``i`` is a fixed 32-byte secret written (once,
    mode 0600, keepalived's hex: format) to ``workdir/vrrp-key-i``."""
    out = []
    for i in keys:
        path = workdir / f"vrrp-key-{i}"
        if not path.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            path.write_text("hex:" + bytes((i * 37 + j) % 256 for j in range(32)).hex() + "\n")
            path.chmod(0o600)
        out.append({"id": i, "secret_file": str(path)})
    return {"mode": mode, "keys": out, "active_key": active if active is not None else keys[0], **extra}


@dataclass
class AgentProc:
    lan: Lan
    node: int
    workdir: Path
    instances: list[dict]
    extra_config: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    state_dir: Path = field(init=False)
    config_path: Path = field(init=False)
    # The log's events read so far, and by name: a test polls them many times a second,
    # and parsing the whole log each time competed with the agents for the kernel lab's
    # emulated CPUs (the log is appended to, never rewritten).
    _log_read: int = field(default=0, init=False, repr=False)
    _log_events: list = field(default_factory=list, init=False, repr=False)
    _by_name: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"agent-n{self.node}.log"
        self.state_dir = self.workdir / f"state-n{self.node}"
        self.config_path = self.workdir / f"agent-n{self.node}.yaml"

    @property
    def ns(self) -> str:
        return self.lan.ns(self.node)

    def write_config(self) -> None:
        cfg = {
            "node": {"router_id": f"n{self.node}", "state_dir": str(self.state_dir), "log_format": "json"},
            "api": {"enabled": False},
            "vrrp_instances": self.instances,
        }
        cfg.update(self.extra_config)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def start(self) -> "AgentProc":
        self.write_config()
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *HADIRECTOR, "run", "-c", str(self.config_path),
             "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        # ``ip netns exec`` execs the command: the pid is the agent itself.
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        return terminate(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def state(self) -> dict:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def role(self, instance: str = "vi_1") -> str | None:
        return self.state().get("instances", {}).get(instance, {}).get("state")

    def _read_log(self) -> None:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_read)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1            # a line still being written: next time
        self._log_read += end
        for line in data[:end].decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self._log_events.append(event)
                self._by_name.setdefault(event.get("event"), []).append(event)

    def log_events(self) -> list[dict]:
        self._read_log()
        return list(self._log_events)

    def events(self, name: str) -> list[dict]:
        self._read_log()
        return list(self._by_name.get(name, ()))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def ts(event: dict) -> float:
    """An agent log event's wall time (its ISO timestamp)."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def agent_factory(workdir: Path, advert: float):
    """``make(lan, node, **instance_config kw)`` -> an AgentProc with one instance at
    ``advert``; every agent made is stopped on exit. Tests wrap it in their fixture."""
    started: list[AgentProc] = []

    def make(lan: Lan, node: int, workdir_name: str = "", **kw) -> AgentProc:
        kw.setdefault("advert", advert)
        a = AgentProc(lan, node, workdir / workdir_name if workdir_name else workdir,
                      [instance_config(lan, **kw)])
        started.append(a)
        return a

    try:
        yield make
    finally:
        for a in started:
            a.stop()


def elect(lan: Lan, a1: "AgentProc", a2: "AgentProc", timeout: float) -> None:
    """Node 1 first, then node 2: node 1 MASTER holding the VIP, node 2 BACKUP (with
    nopreempt whoever is master first stays master, so the order matters)."""
    a1.start()
    wait_for(lambda: a1.role() == "MASTER", timeout, what="node 1 MASTER")
    a2.start()
    wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP", timeout,
             what="node 1 MASTER, node 2 BACKUP")
    wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=2)


def start_following(a1: "AgentProc", a2: "AgentProc", timeout: float) -> None:
    """Node 1 first until MASTER, then node 2 until BACKUP and following a master (its
    state names one); unlike ``elect``, VIP ownership is left to the caller."""
    a1.start()
    wait_for(lambda: a1.role() == "MASTER", timeout, what="node 1 MASTER")
    a2.start()
    wait_for(lambda: a2.role() == "BACKUP" and a2.state()["instances"]["vi_1"]["master"],
             timeout, what="node 2 BACKUP following node 1")


def wait_for(predicate, timeout: float, interval: float = 0.01, what: str = "condition"):
    """``predicate()``'s first true value; a wait past a few seconds says what it waits
    for (the labs' shared helper); AssertionError after ``timeout``."""
    value = []

    def cond():
        value[:] = [predicate()]
        return value[0]

    try:
        progress.wait_for(what, cond, timeout, step=interval, out=progress.ProgressLine(prefix="[test] "))
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None
    return value[0]


def holders(lan: Lan, ip, nodes) -> list[int]:
    """Which of ``nodes`` have ``ip`` on eth0 right now."""
    return [i for i in nodes if lan.has_ip(i, ip)]


def wait_holder(lan: Lan, ip, nodes, expect: int, timeout: float, interval: float = 0.01) -> float:
    """Poll every ``interval`` until exactly ``expect`` holds ``ip``; returns the time."""
    wait_for(lambda: holders(lan, ip, nodes) == [expect], timeout, interval,
             what=f"{ip} held by node {expect} only (now: {holders(lan, ip, nodes)})")
    return time.monotonic()


# --- keepalived ---------------------------------------------------------------------


def keepalived_conf(*, router_id: str, vrid: int, priority: int, advert: float, vip: str,
                    version: int = 3, preempt: bool = True, name: str = "VI_1",
                    unicast_src=None, unicast_peers=()) -> str:
    lines = [
        "global_defs {",
        f"  router_id {router_id}",
        f"  vrrp_version {version}",
        "  vrrp_garp_master_delay 0",
        "  vrrp_garp_master_repeat 1",
        "  enable_script_security",
        "}",
        f"vrrp_instance {name} {{",
        "  state BACKUP",
        "  interface eth0",
        f"  virtual_router_id {vrid}",
        f"  priority {priority}",
        f"  advert_int {advert:g}",
    ]
    if not preempt:
        lines.append("  nopreempt")
    if unicast_src is not None:
        lines.append(f"  unicast_src_ip {unicast_src}")
    if unicast_peers:
        lines.append("  unicast_peer {")
        lines += [f"    {p}" for p in unicast_peers]
        lines.append("  }")
    lines += [
        "  virtual_ipaddress {",
        f"    {vip}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class KeepalivedProc:
    lan: Lan
    node: int
    workdir: Path
    conf: str
    proc: subprocess.Popen | None = None

    @property
    def ns(self) -> str:
        return self.lan.ns(self.node)

    def start(self) -> "KeepalivedProc":
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"keepalived-n{self.node}.conf"
        conf.write_text(self.conf)
        log_path = self.workdir / f"keepalived-n{self.node}.log"
        self._log_offset = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")
        pid_dir = self.workdir / f"ka-run-n{self.node}"
        pid_dir.mkdir(exist_ok=True)
        # A killed predecessor's pid files name processes that may linger as zombies
        # (PID 1 in a container need not reap them): keepalived would refuse to start.
        for stale in pid_dir.glob("*.pid"):
            stale.unlink()
        # -n: stay in the foreground (so the Popen is keepalived itself); -P: VRRP only;
        # -R: no respawn (a kill -9 of the VRRP child must stay a dead node);
        # pid files in the test's directory so parallel runs do not collide.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/sbin/keepalived", "-n", "-l", "-D", "-P", "-R",
             "-f", str(conf),
             "-p", str(pid_dir / "keepalived.pid"), "-r", str(pid_dir / "vrrp.pid"),
             "--no-syslog", "--log-console"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def vrrp_child_pid(self) -> int | None:
        path = self.workdir / f"ka-run-n{self.node}" / "vrrp.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL keepalived and its VRRP child (killing the parent alone leaves it)."""
        # The VRRP child first: killed parent-first, the child would be told to stop
        # and leave gracefully (priority 0), which is not what kill -9 means.
        child = self.vrrp_child_pid()
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self, since_start: bool = False) -> str:
        """The log (appended across restarts); ``since_start``: this run's part only."""
        try:
            data = (self.workdir / f"keepalived-n{self.node}.log").read_bytes()
        except OSError:
            return ""
        if since_start:
            data = data[getattr(self, "_log_offset", 0):]
        return data.decode(errors="replace")


# --- packet timestamps ----------------------------------------------------------------

_VRRP_LINE = re.compile(r"^(\d+\.\d+) IP (\S+) > (\S+): VRRPv(\d), Advertisement, vrid (\d+), prio (\d+)")


class Capture:
    """tcpdump on the switch's bridge: every VRRP packet with its kernel timestamp."""

    def __init__(self, lan: Lan) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lan.switch, "tcpdump", "-i", "br0", "-n", "-tt", "-l",
             "--immediate-mode", "-U", "ip", "proto", "112"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        # "listening on br0 ..." on stderr once the capture is armed.
        line = ""
        for _ in range(5):
            line = self.proc.stderr.readline()
            if "listening" in line:
                return
            if not line:
                break
        self.proc.kill()
        raise RuntimeError(f"tcpdump did not start: {line}")

    def stop(self) -> list[tuple[float, str, int]]:
        """(time, source address, priority) of every advert seen."""
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        packets = []
        for line in out.splitlines():
            m = _VRRP_LINE.match(line)
            if m:
                packets.append((float(m.group(1)), m.group(2), int(m.group(6))))
        return packets


def gap(packets, old: str, new: str) -> float | None:
    """Last advert from ``old`` before the first (non-zero) one from ``new`` -> that one."""
    first_new = next((i for i, p in enumerate(packets) if p[1] == new and p[2] > 0), None)
    if first_new is None:
        return None
    olds = [p for p in packets[:first_new] if p[1] == old]
    if not olds:
        return None
    return packets[first_new][0] - olds[-1][0]


def gap_runs(label: str, runs: int, one_run) -> list[float | None]:
    """``one_run()`` (a failover gap in seconds, or None) ``runs`` times, each shown on
    stderr as it comes: the benchmarks' progress."""
    gaps = []
    for r in range(runs):
        g = one_run()
        gaps.append(g)
        shown = f"{g * 1000:.1f} ms" if g is not None else "n/a"
        print(f"  {label} run {r + 1}: {shown}", file=sys.stderr, flush=True)
    return gaps


def failover_packets(lan: Lan, master, adv: float, mode: str) -> list[tuple[float, str, int]]:
    """The adverts on the bridge around a failover: node 1 (``master``, node 2 following
    it) is stopped by ``mode`` ("kill": kill -9, else SIGTERM) 2.5 advert intervals
    into the capture, which runs on until 2.5 intervals after node 2 holds the VIP."""
    cap = Capture(lan)
    time.sleep(2.5 * adv)
    if mode == "kill":
        master.kill()
    else:
        master.signal(signal.SIGTERM)
    wait_for(lambda: lan.has_ip(2, lan.vip4()), 10 + 5 * adv, interval=0.01, what="node 2 master")
    time.sleep(2.5 * adv)
    return cap.stop()


def remove_vip_leftovers(lan: Lan, nodes=(1, 2)) -> None:
    """A killed node leaves its VIP (that is what kill -9 means): clean up between runs."""
    for i in nodes:
        sh("ip", "addr", "del", f"{lan.vip4()}/32", "dev", "eth0", ns=lan.ns(i), check=False)
