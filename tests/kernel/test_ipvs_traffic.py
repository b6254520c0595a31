"""Real traffic through a table our reconciler programmed: a client namespace connects to
the VIP, three real-server namespaces answer with their own name, and the observed spread
is the scheduler's (rr even, wrr by weight, sh sticky per source), in NAT, DR and TUN.

Topologies (one per forwarding method, all in 10.244.0.0/16, names "iv<pid>t..."):

* NAT: client 10.244.10.2 --veth-- director 10.244.10.1 (VIP 10.244.10.100) ; director
  10.244.20.1 --bridge-- real servers 10.244.20.11..13 (default route via the director).
* DR and TUN: client 10.244.20.50, director 10.244.20.1 (VIP 10.244.20.100) and real
  servers 10.244.20.11..13 on one bridge. DR real servers hold the VIP on lo with
  arp_ignore=1/arp_announce=2; TUN real servers hold it on tunl0 with rp_filter off.

Loops are bounded: 60 connections per case, each with a 3 s timeout.

Every case connects from a fresh pair of client addresses. In DR and TUN the director
sees only the client's half of each connection, so an entry stays in FIN_WAIT for two
minutes, and with the default conn_reuse_mode=1 a new SYN that happens to reuse its
source port goes to the old real server instead of being scheduled. Fresh sources keep
one case's leftovers from counting in the next. Within a case each connection has its
own source port (20000 + its number): a port the kernel picks at random for bind() can
repeat within 30 connections (~3 % a case), and that SYN would follow the old entry
instead of being scheduled, so rr or wrr would count one off.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from hadirector import model
from hadirector.kernel.reconcile import Reconciler
from hadirector.ipvs.table import desired_table
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy

from lab.ipvs_netns import IpvsNetns, inside, sh

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CONNECTIONS = 60

SERVER = r"""
import socket, sys
name = sys.argv[1].encode()
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], 80))
s.listen(256)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(name)
    finally:
        c.close()
"""

CLIENT = r"""
import json, socket, sys
vip, n, sources = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
out = []
for i in range(n):
    src = sources[i % len(sources)]
    s = socket.create_connection((vip, 80), timeout=3, source_address=(src, 20000 + i))
    try:
        out.append([src, s.recv(64).decode()])
    finally:
        s.close()
print(json.dumps(out))
"""


class Topology:
    def __init__(self, mode: model.ForwardMethod):
        self.mode = mode
        tag = {"nat": "tn", "dr": "td", "tun": "tt"}[mode.value]
        p = f"iv{os.getpid() % 100000}{tag}"
        self.sw, self.director, self.client = f"{p}sw", f"{p}d", f"{p}c"
        self.servers = [f"{p}r{i}" for i in (1, 2, 3)]
        self.rips = [f"10.244.20.{10 + i}" for i in (1, 2, 3)]
        self.vip = "10.244.10.100" if mode is model.ForwardMethod.NAT else "10.244.20.100"
        self.sources = (["10.244.10.2", "10.244.10.3"] if mode is model.ForwardMethod.NAT
                        else ["10.244.20.50", "10.244.20.51"])
        self.used_sources = 0
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []
        self.ports = 0

    def ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def port(self, node: str, ifname: str, address: str) -> None:
        """A veth from the bridge in the switch namespace to ``node``."""
        self.ports += 1
        peer = f"p{self.ports}"
        sh("ip", "-n", self.sw, "link", "add", peer, "type", "veth", "peer", "name", ifname, "netns", node)
        sh("ip", "-n", self.sw, "link", "set", peer, "master", "br0", "up")
        sh("ip", "-n", node, "addr", "add", address, "dev", ifname)
        sh("ip", "-n", node, "link", "set", ifname, "up")

    def up(self) -> None:
        nat = self.mode is model.ForwardMethod.NAT
        for n in (self.sw, self.director, self.client, *self.servers):
            self.ns(n)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        self.port(self.director, "eth1", "10.244.20.1/24")
        d = self.director
        if nat:
            sh("ip", "-n", d, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
            sh("ip", "-n", d, "addr", "add", "10.244.10.1/24", "dev", "eth0")
            sh("ip", "-n", d, "addr", "add", f"{self.vip}/32", "dev", "eth0")
            sh("ip", "-n", d, "link", "set", "eth0", "up")
            for a in self.sources:
                sh("ip", "-n", self.client, "addr", "add", f"{a}/24", "dev", "eth0")
            sh("ip", "-n", self.client, "link", "set", "eth0", "up")
            sh("ip", "-n", self.client, "route", "add", "default", "via", "10.244.10.1")
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=d)
        else:
            sh("ip", "-n", d, "addr", "add", f"{self.vip}/32", "dev", "eth1")
            self.port(self.client, "eth0", f"{self.sources[0]}/24")
            sh("ip", "-n", self.client, "addr", "add", f"{self.sources[1]}/24", "dev", "eth0")
        for name, rip in zip(self.servers, self.rips):
            self.port(name, "eth0", f"{rip}/24")
            if nat:
                sh("ip", "-n", name, "route", "add", "default", "via", "10.244.20.1")
            elif self.mode is model.ForwardMethod.DR:
                for k in ("all", "eth0"):
                    sh("sysctl", "-qw", f"net.ipv4.conf.{k}.arp_ignore=1", f"net.ipv4.conf.{k}.arp_announce=2", ns=name)
                sh("ip", "-n", name, "addr", "add", f"{self.vip}/32", "dev", "lo")
            else:
                sh("ip", "-n", name, "link", "set", "tunl0", "up")
                sh("ip", "-n", name, "addr", "add", f"{self.vip}/32", "dev", "tunl0")
                for k in ("all", "default", "tunl0", "eth0"):
                    sh("sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0", ns=name)
                for k in ("all", "eth0"):
                    sh("sysctl", "-qw", f"net.ipv4.conf.{k}.arp_ignore=1", f"net.ipv4.conf.{k}.arp_announce=2", ns=name)
        for i, name in enumerate(self.servers):
            bind = "0.0.0.0"
            proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER, f"rs{i + 1}", bind],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()

    def down(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        for name in (*self.servers, self.client, self.director):
            for ifname in ("eth0", "eth1"):
                sh("ip", "-n", name, "link", "del", ifname, check=False)
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)

    def fresh_sources(self) -> list[str]:
        """Two client addresses no earlier case has used (see the module docstring)."""
        if self.used_sources:
            prefix = "10.244.10" if self.mode is model.ForwardMethod.NAT else "10.244.20"
            base = 100 + 2 * self.used_sources
            self.sources = [f"{prefix}.{base}", f"{prefix}.{base + 1}"]
            for a in self.sources:
                sh("ip", "-n", self.client, "addr", "add", f"{a}/24", "dev", "eth0")
        self.used_sources += 1
        return self.sources

    def connect(self, n: int = CONNECTIONS) -> list[tuple[str, str]]:
        sources = self.fresh_sources()
        out = sh(sys.executable, "-c", CLIENT, self.vip, str(n), ",".join(sources), ns=self.client,
                 timeout=n * 3 + 30)
        return [tuple(x) for x in json.loads(out.stdout)]


@pytest.fixture(scope="module", params=[model.ForwardMethod.NAT, model.ForwardMethod.DR, model.ForwardMethod.TUN],
                ids=lambda m: m.value)
def lab(request):
    topo = Topology(request.param)
    try:
        topo.up()
        with inside(topo.director):
            from hadirector.kernel.ipvs import IpvsNetlink
            backend = IpvsNetlink()
        topo.reconciler = Reconciler(backend)
        yield topo
        backend.close()
    finally:
        topo.down()


def program(lab: Topology, scheduler: str, weights=(1, 1, 1)) -> None:
    vs = sc.vs("web", address=lab.vip, port=80, scheduler=scheduler, real_servers=tuple(
        sc.rs(rip, 80 if lab.mode is model.ForwardMethod.NAT else 0, weight=w, forward=lab.mode, checked=False)
        for rip, w in zip(lab.rips, weights)))
    report = lab.reconciler.sync(desired_table(sc.config(vs), all_healthy))
    assert report.errors == []


def test_rr_spreads_connections_evenly(lab):
    program(lab, "rr")
    counts = collections.Counter(name for _, name in lab.connect())
    assert counts == {"rs1": 20, "rs2": 20, "rs3": 20}


def test_wrr_spreads_connections_by_weight(lab):
    program(lab, "wrr", weights=(3, 2, 1))
    counts = collections.Counter(name for _, name in lab.connect())
    assert counts == {"rs1": 30, "rs2": 20, "rs3": 10}


def test_sh_keeps_each_source_on_one_real_server(lab):
    program(lab, "sh")
    seen = collections.defaultdict(set)
    for src, name in lab.connect():
        seen[src].add(name)
    assert set(seen) == set(lab.sources)
    assert all(len(names) == 1 for names in seen.values()), dict(seen)
