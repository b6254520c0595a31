"""A throw-away LAN of network namespaces for the VRRP tests, benchmark and demo.

    <prefix>-sw    "switch": bridge br0 (stp_state 0, mcast_snooping 0), ports p1..pN
    <prefix>-n1..  nodes: eth0 = 10.<subnet>.<net>.<i>/24 and fd00:<subnet>::<net>:<i>/64

Every veth is created inside the switch namespace and its peer moved straight into
the node namespace, so nothing ever appears in the host namespace and parallel runs
cannot collide on interface names. ``down()`` deletes the veths explicitly before the
namespaces: ``ip netns del`` returns before the kernel has destroyed a namespace
(kernel-lab.md). Names start with the area (default "ve"; the reload tests use "rl"
with subnet 236) plus the pid, so two test processes never share a namespace.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field

from lab.netns import sh

__all__ = ["Lan", "sh"]


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
        sh("ip", "netns", "add", self.switch)
        sw = self.switch
        sh("ip", "link", "set", "lo", "up", ns=sw)
        sh("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0",
           "forward_delay", "0", ns=sw)
        sh("ip", "link", "set", "br0", "up", ns=sw)
        for i in range(1, self.nodes + 1):
            node = self.ns(i)
            sh("ip", "netns", "add", node)
            sh("ip", "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", node, ns=sw)
            sh("ip", "link", "set", f"p{i}", "master", "br0", "up", ns=sw)
            sh("ip", "link", "set", "lo", "up", ns=node)
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
