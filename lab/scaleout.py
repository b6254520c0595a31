"""The scale-out lab in host namespaces (no IPVS needed): an ECMP router running BIRD and
N directors, each with its own BIRD, peering eBGP with BFD (shared/scale-out.md 3a).

Topology (``tag`` keeps parallel runs apart; namespaces are ``<tag>rt``, ``<tag>d1``...)::

    rt: bridge br0 10.<net>.0.1/24 ---- veth ---- dN: eth0 10.<net>.0.1N/24 (AS 6500N)
        BIRD AS 65000, merge paths (ECMP), BFD 100 ms x 3,
        fib_multipath_hash_policy=3 + hash fields 0x0037 (a veth lab: policy 1 reuses the
        sending socket's random hash, 3.a "Lab pitfall")

Each director's BIRD runs with the config ``hadirector bird-config`` renders from that
director's YAML; the router's is written here. Every BIRD has its own control socket
(-s) and pid file (-P) in the lab's work directory; ``down()`` kills them and removes the
namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab import ROOT
from lab.netns import sh, terminate

ROUTER_AS = 65000
VIP = "10.100.0.1"
HOLD_DOWN = 1.0


def router_config(lab: "ScaleOutLab") -> str:
    peers = "\n".join(f"protocol bgp d{i} from dir {{ neighbor {lab.director_ip(i)} as {lab.director_as(i)}; }}"
                      for i in range(1, lab.directors + 1))
    return f"""\
router id {lab.router_ip};
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


@dataclass
class ScaleOutLab:
    tag: str
    workdir: Path
    directors: int = 3
    net: int = 61
    birds: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def router(self) -> str:
        return f"{self.tag}rt"

    def ns(self, i: int) -> str:
        return f"{self.tag}d{i}"

    @property
    def router_ip(self) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.0.1")

    def director_ip(self, i: int) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(f"10.{self.net}.0.{10 + i}")

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
        return self

    def add_director(self, i: int) -> None:
        d, port = self.ns(i), f"p{i}"
        sh("ip", "netns", "add", d)
        sh("ip", "link", "set", "lo", "up", ns=d)
        sh("ip", "link", "add", port, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", d)
        sh("ip", "link", "set", port, "master", "br0", ns=self.router)
        sh("ip", "link", "set", port, "up", ns=self.router)
        sh("ip", "addr", "add", f"{self.director_ip(i)}/24", "dev", "eth0", ns=d)
        sh("ip", "link", "set", "eth0", "up", ns=d)

    # --- BIRD -------------------------------------------------------------------------

    def socket(self, name: str) -> Path:
        return self.workdir / f"bird-{name}.ctl"

    def start_bird(self, ns: str, name: str, config_text: str) -> subprocess.Popen:
        conf = self.workdir / f"bird-{name}.conf"
        conf.write_text(config_text)
        check = sh("bird", "-p", "-c", str(conf), ns=ns, check=False, timeout=20)
        if check.returncode != 0:
            raise RuntimeError(f"bird -p {conf}: {check.stderr.strip() or check.stdout.strip()}")
        log = open(self.workdir / f"bird-{name}.log", "ab")
        # -f: foreground, so the Popen is BIRD itself (kill -9 in tests hits it).
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bird", "-f", "-c", str(conf), "-s", str(self.socket(name)),
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

    def down(self) -> None:
        for name in list(self.birds):
            self.kill_bird(name)
        for i in range(1, self.directors + 2):
            sh("ip", "netns", "del", self.ns(i), check=False)
        sh("ip", "netns", "del", self.router, check=False)


class Director:
    """One scale-out director of the lab: its config, its BIRD (config from
    ``hadirector bird-config``) and its agent: the real ``hadirector run``
    (``real_agent``, which has no IPVS on this host) or ``tests.netns.fake_ipvs_agent``
    (the real agent with a stateful fake IPVS). Health: a script check per real server
    that passes while the file ``healthy`` exists."""

    def __init__(self, lab: ScaleOutLab, i: int, real_agent: bool = False) -> None:
        self.lab, self.i, self.real_agent = lab, i, real_agent
        self.dir = lab.workdir / f"d{i}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.healthy = self.dir / "healthy"
        self.healthy.touch()
        self.config = self.dir / "agent.yaml"
        self.log = self.dir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.config.write_text(yaml.safe_dump(self.config_data(), sort_keys=False))

    @property
    def ns(self) -> str:
        return self.lab.ns(self.i)

    @property
    def ip(self) -> str:
        return str(self.lab.director_ip(self.i))

    def config_data(self) -> dict:
        check = {"type": "script", "command": ["test", "-e", str(self.healthy)], "interval": 0.2,
                 "timeout": 1, "rise": 1, "fall": 1}
        return {
            "node": {"router_id": f"d{self.i}", "state_dir": str(self.dir / "state"), "log_format": "json"},
            "api": {"listen": "127.0.0.1:9141"},       # in the director's own namespace
            "virtual_services": [{
                "name": "web", "address": VIP, "port": 80, "scheduler": "mh",
                "scheduler_flags": ["mh-fallback", "mh-port"], "forward": "dr", "check": check,
                "real_servers": [{"address": "10.2.0.11"}, {"address": "10.2.0.12"}],
            }],
            "scale_out": {
                "services": ["web"], "local_as": self.lab.director_as(self.i),
                "peers": [{"address": str(self.lab.router_ip), "asn": 65000}],
                "router_id": self.ip, "hold_down": HOLD_DOWN, "drain_grace": 1.0,
                "bird_socket": str(self.lab.socket(f"d{self.i}")),
            },
        }

    def start_bird(self) -> None:
        rendered = sh(sys.executable, "-m", "hadirector.cli", "bird-config", "-c", str(self.config)).stdout
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
