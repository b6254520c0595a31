"""The namespace LANs of the labs: one builder, two layouts.

A LAN is a "switch" namespace holding a bridge per segment, and node namespaces, each
cabled to it by a veth pair created straight into both namespaces (``cable``), so
nothing ever appears in the host namespace and parallel runs cannot collide on
interface names. Teardown deletes the veths explicitly before the namespaces: ``ip
netns del`` returns before the kernel has destroyed a namespace and an immediate
rebuild then fails with "File exists" (kernel-lab.md).

``Lan``: the VRRP tests', benchmark's and demo's switched LAN of N nodes.

    <prefix>-sw    "switch": bridge br0 (stp_state 0, mcast_snooping 0), ports p1..pN
    <prefix>-n1..  nodes: eth0 = 10.<subnet>.<net>.<i>/24 and fd00:<subnet>::<net>:<i>/64

  Names start with the area (default "ve"; the reload tests use "rl" with subnet 236)
  plus the pid, so two test processes never share a namespace.

``up(mode, prefix)`` / ``down``: the reference director-pair layout (``lab.pairlab``).
One LAN joins a client, two directors and three real servers:

    DR:   client 10.250.0.10 ── br ── dir1 .2, dir2 .3 (VIP .100 on the master)
                                  └── rs1..3 .11-.13 (VIP on lo, arp_ignore/announce)
    NAT:  the same front LAN; a second bridge for the back LAN 10.251.0.0/24 where
          rs1..3 (.11-.13) route via the floating gateway 10.251.0.1 held by the master.
    VRRP: client and the two directors only, no IPVS: each director serves the VIP's
          ports itself (the fault lab on a host whose kernel has no IPVS).

  Namespaces are named ``PREFIX-NAME``; ``prefix=`` (default "pl") lets a test run use
  its own, e.g. with its pid, so parallel runs never collide. ``up()`` is idempotent
  against leftovers of a crashed run (it tears them down first).

    .venv/bin/python -m lab.lan up|down [--mode dr|nat|vrrp] [--prefix pl]
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass, field

from lab.netns import sh
from lab.progress import ProgressLine, wait_for

__all__ = ["Lan", "sh", "Topology", "Node", "up", "down", "build", "attach", "links",
           "dr_real_server"]


# --- the builder both layouts use ----------------------------------------------------


def add_switch(name: str, bridges: tuple[str, ...], forward_delay_0: bool = False) -> None:
    """The switch namespace with its bridges (no STP, no multicast snooping: VRRP
    adverts and GARPs reach every port at once)."""
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)
    for br in bridges:
        delay = ("forward_delay", "0") if forward_delay_0 else ()
        sh("ip", "link", "add", br, "type", "bridge", "stp_state", "0", "mcast_snooping", "0", *delay,
           ns=name)
        sh("ip", "link", "set", br, "up", ns=name)


def add_node(name: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)


def cable(switch: str, bridge: str, port: str, node: str, ifname: str) -> None:
    """A veth pair created straight into both namespaces: ``port`` on ``bridge`` in the
    switch (up), ``ifname`` in the node (still down: the caller addresses it first)."""
    sh("ip", "link", "add", port, "netns", switch, "type", "veth", "peer", "name", ifname, "netns", node)
    sh("ip", "link", "set", port, "master", bridge, "up", ns=switch)


@dataclass
class Lan:
    tag: str                       # short, unique per test: "el", "ka", "ho" ...
    nodes: int = 2
    net: int = 1                   # third octet of 10.<subnet>.<net>.0/24
    area: str = "ve"               # namespace name prefix, before the pid
    subnet: int = 234              # second octet of the addresses (fd00:<subnet>:: for IPv6)
    prefix: str = field(init=False)
    is_up: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.prefix = f"{self.area}{os.getpid() % 100000}{self.tag}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def ns(self, i: int) -> str:
        """Namespace of node i (1-based)."""
        return f"{self.prefix}-n{i}"

    def ip4(self, i: int) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"10.{self.subnet}.{self.net}.{i}")

    def ip6(self, i: int) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(f"fd00:{self.subnet}::{self.net}:{i}")

    def vip4(self, host: int = 100) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"10.{self.subnet}.{self.net}.{host}")

    def vip6(self, host: int = 100) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(f"fd00:{self.subnet}::{self.net}:{host:x}")

    def up(self) -> "Lan":
        self.down()  # leftovers of a crashed run with the same pid (unlikely) go first
        self.is_up = True
        add_switch(self.switch, ("br0",), forward_delay_0=True)
        for i in range(1, self.nodes + 1):
            node = self.ns(i)
            add_node(node)
            cable(self.switch, "br0", f"p{i}", node, "eth0")
            # No DAD on the lab's own addresses: the link-local source VRRPv3/IPv6
            # needs must be usable at once.
            sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", ns=node)
            sh("ip", "addr", "add", f"{self.ip4(i)}/24", "dev", "eth0", ns=node)
            sh("ip", "addr", "add", f"{self.ip6(i)}/64", "dev", "eth0", "nodad", ns=node)
            sh("ip", "link", "set", "eth0", "up", ns=node)
        self._wait_link_local()
        return self

    def _wait_link_local(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for i in range(1, self.nodes + 1):
            while time.monotonic() < deadline:
                out = sh("ip", "-6", "addr", "show", "dev", "eth0", "scope", "link", ns=self.ns(i)).stdout
                if "fe80" in out and "tentative" not in out:
                    break
                time.sleep(0.05)

    def down(self) -> None:
        existing = set(sh("ip", "netns", "list", check=False).stdout.split())
        if self.switch in existing:
            for i in range(1, self.nodes + 1):
                sh("ip", "link", "del", f"p{i}", ns=self.switch, check=False)
        for name in [self.switch] + [self.ns(i) for i in range(1, self.nodes + 1)]:
            if name in existing:
                sh("ip", "netns", "del", name, check=False)
        self.is_up = False

    def set_port(self, i: int, up: bool) -> None:
        """Cut or restore node i's cable at the switch (its eth0 loses carrier)."""
        sh("ip", "link", "set", f"p{i}", "up" if up else "down", ns=self.switch)

    def addresses(self, i: int) -> str:
        return sh("ip", "-o", "addr", "show", "dev", "eth0", ns=self.ns(i)).stdout

    def has_ip(self, i: int, ip) -> bool:
        return f" {ip}/" in self.addresses(i)

    def __enter__(self) -> "Lan":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


# --- the director-pair layout ------------------------------------------------------------

PREFIX = "pl"
FRONT_NET = "10.250.0"
BACK_NET = "10.251.0"
VIP = f"{FRONT_NET}.100"
BACK_GW = f"{BACK_NET}.1"


MODES = ("dr", "nat", "vrrp")


@dataclass(frozen=True)
class Node:
    name: str                      # short name: client, dir1, rs2 ...
    front: str | None              # address on the front LAN
    back: str | None = None        # address on the back LAN (NAT mode)
    prefix: str = PREFIX

    @property
    def ns(self) -> str:
        return f"{self.prefix}-{self.name}"


@dataclass
class Topology:
    mode: str = "dr"               # "dr", "nat" or "vrrp"
    nodes: list[Node] = field(default_factory=list)
    prefix: str = PREFIX

    @property
    def switch(self) -> str:
        return switch_ns(self.prefix)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def real_servers(self) -> list[Node]:
        return [n for n in self.nodes if n.name.startswith("rs")]


def build(mode: str = "dr", prefix: str = PREFIX) -> Topology:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    nat = mode == "nat"
    nodes = [
        Node("client", f"{FRONT_NET}.10", prefix=prefix),
        Node("dir1", f"{FRONT_NET}.2", f"{BACK_NET}.2" if nat else None, prefix=prefix),
        Node("dir2", f"{FRONT_NET}.3", f"{BACK_NET}.3" if nat else None, prefix=prefix),
    ]
    for i in (1, 2, 3) if mode != "vrrp" else ():
        if nat:
            nodes.append(Node(f"rs{i}", None, f"{BACK_NET}.1{i}", prefix=prefix))
        else:
            nodes.append(Node(f"rs{i}", f"{FRONT_NET}.1{i}", prefix=prefix))
    return Topology(mode, nodes, prefix)


def sysctl(ns: str, key: str, value: str | int) -> None:
    sh("sysctl", "-qw", f"{key}={value}", ns=ns)


def switch_ns(prefix: str = PREFIX) -> str:
    return f"{prefix}-sw"


SWITCH = switch_ns()


def _veth_names(node: Node, lan: str) -> tuple[str, str]:
    # Interface names are at most 15 bytes; the switch side carries the node name.
    # Inside a node the first LAN it is on is eth0, the second eth1.
    inner = "eth1" if (lan == "b" and node.front is not None) else "eth0"
    return (f"{lan}-{node.name}", inner)


def up(mode: str = "dr", prefix: str = PREFIX) -> Topology:
    topo = build(mode, prefix)
    down(quiet=True, prefix=prefix)
    add_switch(topo.switch, tuple(f"br-{lan}" for lan in ["f"] + (["b"] if mode == "nat" else [])))
    for node in topo.nodes:
        add_node(node.ns)
        attach(topo, node)
        _role_setup(topo, node)
    return topo


def links(topo: Topology, node: Node) -> list[tuple[str, str]]:
    """(switch-side, node-side) veth names of ``node``, front LAN first."""
    return [_veth_names(node, lan) for lan, addr in (("f", node.front), ("b", node.back))
            if addr is not None]


def attach(topo: Topology, node: Node) -> None:
    """Cable ``node`` to its LAN(s): veth pair, bridge port, address, link up — what
    ``up`` does for each node, and what a powered-off node gets back on power-on."""
    for lan, addr in (("f", node.front), ("b", node.back)):
        if addr is None:
            continue
        outer, inner = _veth_names(node, lan)
        cable(topo.switch, f"br-{lan}", outer, node.ns, inner)
        sh("ip", "addr", "add", f"{addr}/24", "dev", inner, ns=node.ns)
        sh("ip", "link", "set", inner, "up", ns=node.ns)


def dr_real_server(ns: str, vip) -> None:
    """LVS-DR: the VIP on lo of real server ``ns`` (its eth0), never announced or
    answered by it (arp_ignore 1, arp_announce 2), so only the director owns it on the LAN."""
    sh("ip", "addr", "add", f"{vip}/32", "dev", "lo", ns=ns)
    for dev in ("all", "eth0"):
        sysctl(ns, f"net.ipv4.conf.{dev}.arp_ignore", 1)
        sysctl(ns, f"net.ipv4.conf.{dev}.arp_announce", 2)


def _role_setup(topo: Topology, node: Node) -> None:
    if node.name.startswith("dir"):
        sysctl(node.ns, "net.ipv4.ip_forward", 1)
        # A director must not answer ARP for addresses it doesn't hold on that link.
        sysctl(node.ns, "net.ipv4.conf.all.arp_ignore", 1)
    elif node.name.startswith("rs"):
        if topo.mode == "dr":
            dr_real_server(node.ns, VIP)
        else:
            sh("ip", "route", "add", "default", "via", BACK_GW, ns=node.ns)


def down(quiet: bool = False, prefix: str = PREFIX) -> None:
    """Remove every namespace and link of the lab, veths first (see module doc)."""
    listed = sh("ip", "netns", "list", check=False).stdout.split("\n")
    ours = [line.split()[0] for line in listed if line.startswith(f"{prefix}-")]
    switch = switch_ns(prefix)
    if switch in ours:
        found = sh("ip", "-o", "link", "show", ns=switch, check=False).stdout.splitlines()
        for line in found:
            name = line.split(":")[1].strip().split("@")[0]
            if name != "lo":
                sh("ip", "link", "del", name, ns=switch, check=False)
    for ns in ours:
        # Kill whatever still runs in it (agents, servers, tcpdump).
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        sh("ip", "netns", "del", ns, check=False)
    # Wait until the kernel has really let go of the names.
    left: list[str] = []

    def gone() -> bool:
        left[:] = [l for l in sh("ip", "netns", "list", check=False).stdout.split("\n") if l.startswith(f"{prefix}-")]
        return not left

    try:
        wait_for("the kernel to let go of the lab's namespaces", gone, 30, step=0.1, out=ProgressLine(prefix="[lab] "))
    except TimeoutError:
        if not quiet:
            raise RuntimeError(f"namespaces still present after teardown: {left}") from None


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="bring the director-pair LAN up or down")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--mode", choices=MODES, default="dr")
    p.add_argument("--prefix", default=PREFIX, help="namespace name prefix (default %(default)s)")
    a = p.parse_args()
    if a.action == "up":
        t = up(a.mode, a.prefix)
        for n in t.nodes:
            print(f"{n.ns:10} front={n.front} back={n.back}")
    else:
        down(prefix=a.prefix)
