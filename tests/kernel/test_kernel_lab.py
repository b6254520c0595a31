"""The kernel lab gives kernel tests what they need: IPVS with every scheduler, veth,
bridge, module auto-loading, and pyroute2's IPVS client working against it.

On this machine these run inside the QEMU lab (one boot for all kernel tests); on a
host whose kernel has IPVS they run directly. Namespaces and links use the prefix "kl"
and addresses in 10.250.0.0/16, and are removed by the fixtures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from lab.kernel import IPVS_SCHEDULERS
from lab.netns import sh

pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.slow]


class Netns:
    """A namespace named kl<pid><tag>, loopback up; links added through ``ip()`` are
    deleted before the namespace (``ip netns del`` returns before the kernel is done)."""

    def __init__(self, tag: str) -> None:
        self.name = f"kl{os.getpid() % 100000}{tag}"
        self.links: list[str] = []

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "-n", self.name, *args, check=check)

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout)

    def add_link(self, name: str, *spec: str) -> None:
        self.ip("link", "add", name, *spec)
        self.links.append(name)

    def __enter__(self) -> Netns:
        sh("ip", "netns", "add", self.name)
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        for link in reversed(self.links):
            self.ip("link", "del", link, check=False)
        sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def ns() -> Iterator[Netns]:
    """One namespace with kl-d0 (a dummy) up at 10.250.0.1/24, so IPVS accepts real
    servers in 10.250.0.0/24 (it checks that a destination's address is routable)."""
    with Netns("a") as n:
        n.add_link("kl-d0", "type", "dummy")
        n.ip("addr", "add", "10.250.0.1/24", "dev", "kl-d0")
        n.ip("link", "set", "kl-d0", "up")
        yield n


def test_the_kernel_has_ipvs():
    assert os.path.exists("/proc/net/ip_vs")
    with open("/proc/net/ip_vs") as fh:
        assert fh.readline().startswith("IP Virtual Server version")


def test_ipvs_and_network_modules_are_loaded_up_front():
    with open("/proc/modules") as fh:
        loaded = {line.split()[0] for line in fh}
    builtin = set()
    if os.path.exists(f"/sys/module"):
        builtin = {m for m in ("veth", "bridge", "ipip", "nf_conntrack") if os.path.isdir(f"/sys/module/{m}")}
    expected = {"ip_vs", "nf_conntrack", "veth", "bridge", "ipip"}
    expected |= {f"ip_vs_{s}" for s in IPVS_SCHEDULERS}
    assert expected - loaded - builtin == set()


def test_the_kernel_is_new_enough_for_every_scheduler():
    # ip_vs_twos arrived in Linux 6.2; the lab runs bookworm-backports' 6.12 for it.
    # (On the 6.1 fallback this fails, as it should: twos cannot be tested there.)
    assert tuple(map(int, os.uname().release.split(".")[:2])) >= (6, 2), os.uname().release


@pytest.mark.parametrize("scheduler", IPVS_SCHEDULERS)
def test_a_service_can_use_each_scheduler(ns, scheduler):
    vip = "10.250.0.10:80"
    add = ns.run("ipvsadm", "-A", "-t", vip, "-s", scheduler, check=False)
    assert add.returncode == 0, add.stderr
    ns.run("ipvsadm", "-a", "-t", vip, "-r", "10.250.0.20:80", "-m", "-w", "3")
    table = ns.run("ipvsadm", "-Ln").stdout
    assert re.search(rf"TCP\s+{re.escape(vip)}\s+{scheduler}\b", table), table
    assert re.search(r"->\s+10\.250\.0\.20:80\s+Masq\s+3\b", table), table


def test_the_kernel_loads_modules_on_demand(ns):
    # vxlan is not loaded up front: creating one makes the kernel call modprobe.
    ns.add_link("kl-vx", "type", "vxlan", "id", "42", "dstport", "4789", "local", "10.250.0.1")
    assert os.path.isdir("/sys/module/vxlan")


def test_modprobe_finds_the_lab_kernel_modules():
    result = sh("modprobe", "-v", "nlmon", check=False)
    assert result.returncode == 0, result.stderr
    assert os.path.isdir("/sys/module/nlmon")


def test_veth_pairs_through_a_bridge_carry_traffic():
    with Netns("b") as br, Netns("x") as left, Netns("y") as right:
        br.add_link("kl-br", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        br.ip("link", "set", "kl-br", "up")
        for host, addr in ((left, "10.250.1.1/24"), (right, "10.250.1.2/24")):
            port = f"kl-p{host.name[-1]}"
            br.add_link(port, "type", "veth", "peer", "name", "kl-e0", "netns", host.name)
            br.ip("link", "set", port, "master", "kl-br", "up")
            host.ip("addr", "add", addr, "dev", "kl-e0")
            host.ip("link", "set", "kl-e0", "up")
        ping = left.run("ping", "-c", "2", "-i", "0.2", "-W", "5", "10.250.1.2", check=False, timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr


def test_pyroute2_ipvs_adds_a_service_and_a_destination(ns):
    # A separate interpreter inside the namespace: a netlink socket belongs to the
    # namespace it was opened in.
    script = textwrap.dedent(
        """
        from pyroute2 import IPVS, IPVSService, IPVSDest
        ipvs = IPVS()
        svc = IPVSService(addr="10.250.0.11", port=8080, protocol=6, sched_name="rr")
        ipvs.service("add", service=svc)
        ipvs.dest("add", service=svc, dest=IPVSDest(addr="10.250.0.21", port=8080, fwd_method=0))
        print("ok")
        """
    )
    result = ns.run(sys.executable, "-c", script, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    table = ns.run("ipvsadm", "-Ln").stdout
    assert re.search(r"TCP\s+10\.250\.0\.11:8080\s+rr", table), table
    assert re.search(r"->\s+10\.250\.0\.21:8080\s+Masq\b", table), table
