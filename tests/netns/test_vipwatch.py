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


# VipEvents: the reload tests' oracle. It must see what a sampler can miss, while its
# reader is not reading at all, and it must say so when the kernel dropped events.

def test_the_event_watch_sees_a_flap_made_while_nothing_reads_and_shorter_than_any_poll(two_namespaces):
    a, _ = two_namespaces
    sh("ip", "-n", a, "addr", "add", f"{VIP}/24", "dev", "eth0")
    with vipwatch.VipEvents(a, VIP, min_watch=0.0) as watch:
        # One `ip -batch`: deleted and added again within one process, microseconds apart.
        sh("ip", "-n", a, "-batch", "-", input=f"addr del {VIP}/24 dev eth0\naddr add {VIP}/24 dev eth0\n")
    assert watch.error is None, watch.error
    assert (watch.held_at_start, watch.events, watch.held_at_end) == (True, ["deleted", "added"], True)


def test_the_event_watch_of_an_untouched_vip_has_no_events_and_lasts_its_minimum(two_namespaces):
    a, b = two_namespaces
    sh("ip", "-n", a, "addr", "add", f"{VIP}/24", "dev", "eth0")
    start = time.monotonic()
    with vipwatch.VipEvents(a, VIP, min_watch=0.3) as held, vipwatch.VipEvents(b, VIP, min_watch=0.3) as free:
        sh("ip", "-n", a, "addr", "add", "10.236.0.99/24", "dev", "eth0")   # another address
    assert time.monotonic() - start >= 0.3
    assert (held.error, held.held_at_start, held.events, held.held_at_end) == (None, True, [], True)
    assert (free.error, free.held_at_start, free.events, free.held_at_end) == (None, False, [], False)


def test_the_event_watch_reports_events_the_kernel_dropped_instead_of_a_clean_window(two_namespaces):
    a, _ = two_namespaces
    # The smallest queue the kernel allows, and more events than it holds.
    with vipwatch.VipEvents(a, VIP, min_watch=0.0, queue_bytes=0) as watch:
        sh("ip", "-n", a, "-batch", "-", input="".join(
            f"addr add 10.236.1.{i}/24 dev eth0\n" for i in range(1, 201)))
    assert watch.error == "the kernel dropped address events: the socket's queue overflowed"
