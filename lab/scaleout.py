"""The scale-out lab: an ECMP router running BIRD and N directors, each with its own
BIRD, peering eBGP with BFD (shared/scale-out.md 3a, 3b). Two sizes from one builder:

* host namespaces (no IPVS needed; tests/netns/test_scaleout_bgp.py, bench/scale_out.py):
  the router and the directors only, agents with a fake IPVS or none;
* the full lab in the kernel lab (IPVS; tests/kernel/test_scaleout_lab.py and
  ``./run demo --mode scale-out``, lab/scaleout_demo.py): ``real_servers=3,
  client=True`` adds DR real servers on the directors' LAN and a client behind the
  router, and ``joiners=1`` a director the router already peers with, to join later.

Topology (``tag`` keeps parallel runs apart; namespaces are ``<tag>rt``, ``<tag>d1``,
``<tag>r1``, ``<tag>cl``)::

    cl: eth0 10.<net>.1.2/24 ---- veth ---- rt: cl 10.<net>.1.1/24
    rt: bridge br0 10.<net>.0.1/24 ---- veth pN ---- dN: eth0 10.<net>.0.1N/24 (AS 6500N)
                                   ---- veth rN ---- rN: eth0 10.<net>.0.2N/24, VIP on lo
        BIRD AS 65000, merge paths (ECMP), BFD 100 ms x 3,
        fib_multipath_hash_policy=3 + hash fields 0x0037 (a veth lab: policy 1 reuses the
        sending socket's random hash, 3.a "Lab pitfall")

The client reaches the VIP through the router's ECMP route; the director that gets a
packet forwards it (IPVS DR) to a real server on br0, which answers the client straight
through the router. Directors and real servers hold the VIP on ``lo`` with
``arp_ignore=1`` / ``arp_announce=2`` (the agent adds the directors' own).

Each director's BIRD runs with the config ``hadirector bird-config`` renders from that
director's YAML; the router's is written here. Every BIRD has its own control socket
(-s) and pid file (-P) in the lab's work directory; ``down()`` kills them, deletes the
veths (``ip netns del`` returns before the kernel is done with them, kernel-lab.md) and
removes the namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from lab import ROOT
from lab.netns import sh, terminate

ROUTER_AS = 65000
VIP = "10.100.0.1"
HOLD_DOWN = 1.0


def router_config(lab: "ScaleOutLab") -> str:
    peers = "\n".join(f"protocol bgp d{i} from dir {{ neighbor {lab.director_ip(i)} as {lab.director_as(i)}; }}"
                      for i in range(1, lab.directors + lab.joiners + 1))
    # debug: session and BFD changes in BIRD's log (bird-rt.log), so a director the
    # router dropped outside an event (a starved guest) shows up in the report.
    return f"""\
router id {lab.router_ip};
debug protocols {{ states, events }};
protocol device {{ }}
protocol kernel {{
  merge paths on limit 16;
  ipv4 {{ import none; export all; }};
}}
protocol bfd {{ interface "br0" {{ interval 100 ms; multiplier 3; }}; }}
template bgp dir {{
  local {lab.router_ip} as {ROUTER_AS};
  hold time 9; connect delay time 1; connect retry time 2; error wait time 2, 20;
  bfd on;
  ipv4 {{ import all; export none; }};
}}
{peers}
"""


DR_ARP = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
          "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_announce=2")


@dataclass
class ScaleOutLab:
    tag: str
    workdir: Path
    directors: int = 3
    net: int = 61
    joiners: int = 0            # directors the router peers with from the start, made by add_director later
    real_servers: int = 0       # DR real servers on br0 (needs IPVS on the directors: the kernel lab)
    client: bool = False        # a client namespace behind the router
    # SCHED_FIFO priority for every BIRD (chrt -f), or None: in an emulated guest the
    # agents' Python start-ups starve a nice-0 BIRD past BFD's 300 ms and the router
    # drops live directors (seen in the kernel lab: BGP "Cease" from BFD-down on join).
    bird_priority: int | None = None
    birds: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def router(self) -> str:
        return f"{self.tag}rt"

    def ns(self, i: int) -> str:
        return f"{self.tag}d{i}"

    def rs_ns(self, i: int) -> str:
        return f"{self.tag}r{i}"

    @property
    def client_ns(self) -> str:
        return f"{self.tag}cl"

    @property
    def router_ip(self) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.0.1")

    def director_ip(self, i: int) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.0.{10 + i}")

    def rs_ip(self, i: int) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.0.{20 + i}")

    @property
    def client_ip(self) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.1.2")

    @staticmethod
    def director_as(i: int) -> int:
        return ROUTER_AS + i

    def up(self) -> "ScaleOutLab":
        self.workdir.mkdir(parents=True, exist_ok=True)
        rt = self.router
        sh("ip", "netns", "add", rt)
        sh("ip", "link", "set", "lo", "up", ns=rt)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=rt)
        sh("ip", "addr", "add", f"{self.router_ip}/24", "dev", "br0", ns=rt)
        sh("ip", "link", "set", "br0", "up", ns=rt)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "3"),
                           ("net.ipv4.fib_multipath_hash_fields", "0x0037")):
            sh("sysctl", "-qw", f"{key}={value}", ns=rt)
        for i in range(1, self.directors + 1):
            self.add_director(i)
        for i in range(1, self.real_servers + 1):
            self.add_real_server(i)
        if self.client:
            self.add_client()
        return self

    def _attach(self, ns: str, port: str, address, vip_on_lo: bool) -> None:
        """A veth from ``ns`` (eth0, ``address``/24) to the router's bridge (``port``)."""
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", port, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", port, "master", "br0", ns=self.router)
        sh("ip", "link", "set", port, "up", ns=self.router)
        sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        if vip_on_lo:
            # DR: the VIP is local (IPVS sees its packets; a real server accepts them)
            # but never answered for on the LAN.
            sh("sysctl", "-qw", *DR_ARP, ns=ns)

    def add_director(self, i: int) -> None:
        self._attach(self.ns(i), f"p{i}", self.director_ip(i), vip_on_lo=self.real_servers > 0)
        if self.real_servers:
            # A route back to the clients, or reverse-path filtering drops their packets.
            sh("ip", "route", "add", "default", "via", str(self.router_ip), ns=self.ns(i))

    def add_real_server(self, i: int) -> None:
        ns = self.rs_ns(i)
        self._attach(ns, f"r{i}", self.rs_ip(i), vip_on_lo=True)
        sh("ip", "addr", "add", f"{VIP}/32", "dev", "lo", ns=ns)
        # DR: the answer goes straight to the client, through the router.
        sh("ip", "route", "add", "default", "via", str(self.router_ip), ns=ns)

    def add_client(self) -> None:
        cl, rt = self.client_ns, self.router
        sh("ip", "netns", "add", cl)
        sh("ip", "link", "set", "lo", "up", ns=cl)
        sh("ip", "link", "add", "cl", "netns", rt, "type", "veth", "peer", "name", "eth0", "netns", cl)
        sh("ip", "addr", "add", f"10.{self.net}.1.1/24", "dev", "cl", ns=rt)
        sh("ip", "link", "set", "cl", "up", ns=rt)
        sh("ip", "addr", "add", f"{self.client_ip}/24", "dev", "eth0", ns=cl)
        sh("ip", "link", "set", "eth0", "up", ns=cl)
        sh("ip", "route", "add", "default", "via", f"10.{self.net}.1.1", ns=cl)

    # --- BIRD -------------------------------------------------------------------------

    def socket(self, name: str) -> Path:
        return self.workdir / f"bird-{name}.ctl"

    def start_bird(self, ns: str, name: str, config_text: str) -> subprocess.Popen:
        conf = self.workdir / f"bird-{name}.conf"
        log_path = self.workdir / f"bird-{name}.log"
        # BIRD logs to syslog by default: none in the kernel lab (lines end on the console,
        # untimed). Its own file keeps session and BFD changes, timed, beside the agents' logs.
        conf.write_text(f'log "{log_path}" all;\n' + config_text)
        check = sh("bird", "-p", "-c", str(conf), ns=ns, check=False, timeout=20)
        if check.returncode != 0:
            raise RuntimeError(f"bird -p {conf}: {check.stderr.strip() or check.stdout.strip()}")
        log = open(log_path, "ab")
        rt = ["chrt", "-f", str(self.bird_priority)] if self.bird_priority is not None else []
        # -f: foreground, so the Popen is BIRD itself (kill -9 in tests hits it; chrt execs it).
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *rt, "bird", "-f", "-c", str(conf), "-s", str(self.socket(name)),
             "-P", str(self.workdir / f"bird-{name}.pid")], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.birds[name] = proc
        return proc

    def start_router_bird(self) -> subprocess.Popen:
        return self.start_bird(self.router, "rt", router_config(self))

    def birdc(self, name: str, *command: str, ns: str | None = None) -> str:
        return sh("birdc", "-s", str(self.socket(name)), *command, check=False, timeout=10).stdout

    def kill_bird(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.birds.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    # --- the router's FIB -------------------------------------------------------------

    def next_hops(self, vip) -> set[str]:
        """The router's next hops for ``vip`` (its FIB, as the kernel forwards)."""
        out = sh("ip", "-4", "route", "show", f"{vip}/32", ns=self.router, check=False).stdout
        hops = set()
        for line in out.splitlines():
            words = line.split()
            if "via" in words:
                hops.add(words[words.index("via") + 1])
        return hops

    def wait_next_hops(self, vip, want: set[str], timeout: float) -> float:
        """Seconds until the router's next hops for ``vip`` are exactly ``want``."""
        t0 = time.monotonic()
        while True:
            have = self.next_hops(vip)
            if have == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"router next hops for {vip}: {sorted(have)}, wanted {sorted(want)} "
                                     f"within {timeout} s")
            time.sleep(0.02)

    def flow_map(self, sports, dport: int = 80, vip=VIP) -> dict[int, str]:
        """Which director the router sends each client flow ``(client_ip, sport) -> vip:dport``
        to now (``ip route get ... iif cl ipproto tcp``, one ``ip -batch``): with hash
        policy 3 that is where the packets go (shared/scale-out.md 3a: 300 of 300)."""
        sports = list(sports)
        batch = "".join(f"route get {vip} from {self.client_ip} iif cl ipproto tcp sport {p} dport {dport}\n"
                        for p in sports)
        out = sh("ip", "-force", "-batch", "-", ns=self.router, input=batch, check=False).stdout
        hops = parse_route_get(out, vip)
        if len(hops) != len(sports):
            raise RuntimeError(f"ip route get answered {len(hops)} of {len(sports)} flows: {out[-500:]}")
        return dict(zip(sports, hops))

    def pin(self, i: int | None, vip=VIP) -> None:
        """Send every flow to director ``i`` alone (a metric-1 route beside BIRD's ECMP
        route of metric 32, which stays), or back to ECMP with ``None``."""
        if i is None:
            sh("ip", "route", "del", f"{vip}/32", "metric", "1", ns=self.router, check=False)
        else:
            sh("ip", "route", "replace", f"{vip}/32", "via", str(self.director_ip(i)), "metric", "1",
               ns=self.router)

    def down(self) -> None:
        for name in list(self.birds):
            self.kill_bird(name)
        links = [f"p{i}" for i in range(1, self.directors + self.joiners + 2)]
        links += [f"r{i}" for i in range(1, self.real_servers + 1)] + (["cl"] if self.client else [])
        for link in links:
            sh("ip", "link", "del", link, ns=self.router, check=False)
        for i in range(1, self.directors + self.joiners + 2):
            sh("ip", "netns", "del", self.ns(i), check=False)
        for i in range(1, self.real_servers + 1):
            sh("ip", "netns", "del", self.rs_ns(i), check=False)
        if self.client:
            sh("ip", "netns", "del", self.client_ns, check=False)
        sh("ip", "netns", "del", self.router, check=False)


class RouteWatch:
    """The router's FIB changes for ``vip`` as they happen: ``ip monitor route`` in the
    router's namespace, each message stamped with ``time.monotonic()`` as it arrives (a
    reader thread; ``ip`` flushes every message), so a change is timed to the
    millisecond without polling. ``feed`` is the parser (tests drive it directly); a
    pin's metric-1 route is left out."""

    def __init__(self, vip=VIP) -> None:
        self.vip = str(vip)
        self.changes: list[tuple[float, bool, set[str]]] = []   # (time, deleted, next hops)
        self._current: tuple[float, bool, set[str]] | None = None
        self._lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def start(self, ns: str) -> "RouteWatch":
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ip", "monitor", "route"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.feed(line, time.monotonic())

    def feed(self, line: str, t: float) -> None:
        words = line.split()
        with self._lock:
            if line[:1].isspace():            # a multipath route's "nexthop via ..." lines
                if self._current is not None and "via" in words:
                    self._current[2].add(words[words.index("via") + 1])
                return
            self._current = None
            deleted = words[:1] == ["Deleted"]
            words = words[1:] if deleted else words
            if not words or words[0] not in (self.vip, f"{self.vip}/32"):
                return
            if "metric" in words and words[words.index("metric") + 1] == "1":
                return                          # a pin (ScaleOutLab.pin), not BIRD's route
            hops = {words[words.index("via") + 1]} if "via" in words else set()
            self._current = (t, deleted, hops)
            self.changes.append(self._current)

    def first(self, since: float, want: set[str]) -> float | None:
        """When the route first had exactly the next hops ``want`` at or after ``since``."""
        with self._lock:
            for t, deleted, hops in self.changes:
                if t >= since and not deleted and hops == want:
                    return t
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def parse_route_get(text: str, vip) -> list[str | None]:
    """The next hop of each answer in ``ip -batch`` output of ``route get`` (an answer
    starts with the VIP; its ``cache ...`` continuation lines are skipped); ``None`` for
    an answer without ``via`` (no route)."""
    hops: list[str | None] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == str(vip):
            hops.append(words[words.index("via") + 1] if "via" in words else None)
    return hops


@dataclass(frozen=True)
class SessionDrop:
    at: datetime                 # BIRD's log clock (local time, ms)
    peer: str                    # the router's protocol name: d1, d2 ...
    reason: str                  # "BFD session down", "Received: Cease", "Connection closed" ...


def session_drops(text: str) -> list[SessionDrop]:
    """Each time an established BGP session of the router went down, from its BIRD log
    (``debug protocols { states, events }``; lines ``DATE TIME <CLASS> NAME: MESSAGE``):
    a protocol that was ``up`` changing state to ``stop``; the reason is its last
    ``BFD session down`` / ``Connection closed`` / ``Received: ...`` / ``Error: ...`` line
    before that."""
    drops: list[SessionDrop] = []
    up: set[str] = set()
    why: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split(" ", 3)
        if len(words) < 4 or not words[2].startswith("<"):
            continue
        name, _, message = words[3].partition(": ")
        if message in ("BFD session down", "Connection closed") or message.startswith(("Received: ", "Error: ")):
            why[name] = message
        elif message == "State changed to up":
            up.add(name)
            why.pop(name, None)
        elif message == "State changed to stop" and name in up:
            up.discard(name)
            try:
                at = datetime.strptime(f"{words[0]} {words[1]}", "%Y-%m-%d %H:%M:%S.%f")
            except ValueError:
                continue
            drops.append(SessionDrop(at, name, why.pop(name, "unknown")))
    return drops


def exec_stop_post(unit: Path = ROOT / "systemd" / "hadirector.service") -> list[str]:
    """The ``hadirector`` arguments of the unit's ``ExecStopPost=`` (what systemd runs
    after the agent stops, a crash or kill -9 included), less its ``-c CONFIG``: the lab
    runs exactly that, with the director's own config."""
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStopPost="):
            argv = line.partition("=")[2].lstrip("-@:+!").split()
            if argv and argv[0].endswith("/hadirector"):
                args = argv[1:]
                if "-c" in args:
                    k = args.index("-c")
                    del args[k:k + 2]
                return args
    raise ValueError(f"{unit}: no ExecStopPost= running hadirector")


class Director:
    """One scale-out director of the lab: its config, its BIRD (config from
    ``hadirector bird-config``) and its agent: the real ``hadirector run``
    (``real_agent``; with no IPVS on this host it announces nothing) or
    ``tests.netns.fake_ipvs_agent`` (the real agent with a stateful fake IPVS).

    Health, by default: a script check per real server that passes while the file
    ``healthy`` exists. In the full lab (``lab.real_servers``) the real servers are the
    lab's and ``check`` is usually a TCP check of them."""

    def __init__(self, lab: ScaleOutLab, i: int, real_agent: bool = False, *, check: dict | None = None,
                 hold_down: float = HOLD_DOWN, drain_grace: float = 1.0, api: bool = True) -> None:
        self.lab, self.i, self.real_agent = lab, i, real_agent
        self.hold_down, self.drain_grace, self.api = hold_down, drain_grace, api
        self.dir = lab.workdir / f"d{i}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.healthy = self.dir / "healthy"
        self.healthy.touch()
        self.check = check or {"type": "script", "command": ["test", "-e", str(self.healthy)], "interval": 0.2,
                               "timeout": 1, "rise": 1, "fall": 1}
        self.config = self.dir / "agent.yaml"
        self.log = self.dir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.config.write_text(yaml.safe_dump(self.config_data(), sort_keys=False))

    @property
    def name(self) -> str:
        return f"d{self.i}"

    @property
    def ns(self) -> str:
        return self.lab.ns(self.i)

    @property
    def ip(self) -> str:
        return str(self.lab.director_ip(self.i))

    def config_data(self) -> dict:
        real_servers = [str(self.lab.rs_ip(k)) for k in range(1, self.lab.real_servers + 1)] \
            or ["10.2.0.11", "10.2.0.12"]
        return {
            "node": {"router_id": f"d{self.i}", "state_dir": str(self.dir / "state"), "log_format": "json"},
            # In the director's own namespace; the control socket (drain) is served either way.
            "api": {"listen": "127.0.0.1:9141"} if self.api else {"enabled": False},
            "virtual_services": [{
                "name": "web", "address": VIP, "port": 80, "scheduler": "mh",
                "scheduler_flags": ["mh-fallback", "mh-port"], "forward": "dr", "check": self.check,
                "real_servers": [{"address": a} for a in real_servers],
            }],
            "scale_out": {
                "services": ["web"], "local_as": self.lab.director_as(self.i),
                "peers": [{"address": str(self.lab.router_ip), "asn": 65000}],
                "router_id": self.ip, "hold_down": self.hold_down, "drain_grace": self.drain_grace,
                "bird_socket": str(self.lab.socket(f"d{self.i}")),
            },
        }

    def hadirector(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``hadirector ARGS -c CONFIG`` in the director's namespace (this checkout's code)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "hadirector.cli", *args,
                               "-c", str(self.config)], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=str(ROOT))

    def start_bird(self) -> None:
        rendered = sh(sys.executable, "-m", "hadirector.cli", "bird-config", "-c", str(self.config),
                      timeout=120).stdout      # a Python start-up: seconds in an emulated guest
        self.lab.start_bird(self.ns, f"d{self.i}", rendered)

    def start_agent(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        argv = ["-m", "hadirector.cli", "run", "-c", str(self.config), "--log-format", "json"] if self.real_agent \
            else ["-m", "tests.netns.fake_ipvs_agent", "-c", str(self.config), "--scale-out"]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, *argv],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()

    def stop_agent(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout=15, sig=sig)
        self.proc = None
        return code

    def status(self) -> str:
        """``hadirector status`` in the director's namespace (its API)."""
        return sh(sys.executable, "-m", "hadirector.cli", "status", "-c", str(self.config), ns=self.ns,
                  check=False, timeout=30).stdout

    def gate_routes(self) -> str:
        return sh("ip", "route", "show", "table", "201", ns=self.ns, check=False).stdout.strip()

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else ():
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event") == name:
                    out.append(e)
        return out
