"""The timeline's VIP sampler (lab/vipwatch.py) against real namespaces: it reads
each namespace's addresses through a netlink socket made there, sees a VIP come and go,
and keeps working when every process of a namespace is gone and its link deleted (a
kill -9 or a power-off in the pair lab)."""

from __future__ import annotations

import os
import time

import pytest

from lab import vipwatch
from lab.lan import sh

pytestmark = pytest.mark.netns
VIP = "10.236.0.100"


@pytest.fixture
def two_namespaces():
    names = [f"vw{os.getpid() % 100000}{c}" for c in "ab"]
    try:
        for i, ns in enumerate(names):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
            sh("ip", "-n", ns, "addr", "add", f"10.236.0.{i + 2}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in names:
            sh("ip", "netns", "del", ns, check=False)


def test_the_watch_sees_the_vip_move_between_namespaces_and_records_only_changes(two_namespaces):
    a, b = two_namespaces
    watch = vipwatch.VipWatch({"dir1": a, "dir2": b}, VIP, interval=0.02)
    assert watch.sample() == ()
    watch.start()
    try:
        sh("ip", "-n", a, "addr", "add", f"{VIP}/24", "dev", "eth0")
        time.sleep(0.3)
        sh("ip", "-n", a, "addr", "del", f"{VIP}/24", "dev", "eth0")
        sh("ip", "-n", b, "addr", "add", f"{VIP}/24", "dev", "eth0")
        time.sleep(0.3)
        # Both at once (a kill -9 leaves the VIP in the dead director's kernel).
        sh("ip", "-n", a, "addr", "add", f"{VIP}/24", "dev", "eth0")
        time.sleep(0.3)
        # A power-off: the link goes, and the VIP with it.
        sh("ip", "-n", a, "link", "del", "eth0")
        time.sleep(0.3)
    finally:
        samples = watch.stop()
    seen = [h for _, h in samples]
    # Between the del and the add a sample may catch nobody; the rest is exact.
    assert [h for h in seen if h != ()] == [("dir1",), ("dir2",), ("dir1", "dir2"), ("dir2",)], samples
    assert seen[0] == ()
    assert all(x != y for x, y in zip(seen, seen[1:])), "one record per change"
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert watch.errors == 0


def test_the_watch_leaves_no_process_in_the_namespaces(two_namespaces):
    watch = vipwatch.VipWatch({"dir1": two_namespaces[0]}, VIP).start()
    try:
        assert sh("ip", "netns", "pids", two_namespaces[0]).stdout.split() == []
    finally:
        watch.stop()
