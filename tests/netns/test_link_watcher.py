"""``LinkWatcher`` against real rtnetlink: a node namespace of ``lab.lan``, its eth0's
cable cut and restored at the switch (carrier loss, the realistic fault) or set down
from inside (admin down).

The test's event-loop thread enters the node namespace for the whole test (setns is
per thread), so the watcher's netlink sockets belong to that namespace, as they do in
an agent started with ``ip netns exec``. ``ip`` commands name their namespace
explicitly and do not depend on the thread's.

Issue 9: the watcher used to read one netlink batch and stop, so a director stayed in
FAULT forever after a link flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess

import pytest

from hadirector.kernel.addresses import LinkState, LinkWatcher

from lab.netns import inside

from lab.lan import Lan, sh

pytestmark = [pytest.mark.netns, pytest.mark.lan("lw", nodes=1, net=40)]

WAIT = 5.0      # seconds for one event to arrive; they take milliseconds


class RecordingLog:
    """A structlog stand-in that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **kw: self.records.append((level, event, kw))

    def events(self, name: str) -> list[dict]:
        return [kw for _level, event, kw in self.records if event == name]


class Follower:
    """Iterates ``watcher.events()`` in a task, as ``InterfaceTracker`` does."""

    def __init__(self, watcher: LinkWatcher) -> None:
        self.watcher = watcher
        self.seen: list[LinkState] = []
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for st in self.watcher.events():
            self.seen.append(st)
            self._changed.set()

    def last(self, name: str = "eth0") -> LinkState | None:
        return next((s for s in reversed(self.seen) if s.name == name), None)

    async def wait(self, predicate, what: str, timeout: float = WAIT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            assert not self.task.done(), f"the watcher stopped: {self.task!r}"
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; seen {self.seen[-5:]}")
            # Woken by each report; polled too, for conditions that are not reports.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.02))

    async def wait_up(self, up: bool, name: str = "eth0") -> None:
        await self.wait(lambda: (st := self.last(name)) is not None and st.exists and st.up == up,
                        f"{name} reported {'up' if up else 'down'}")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def kernel_says_up(lan: Lan, ifname: str = "eth0") -> bool:
    flags = sh("ip", "-o", "link", "show", "dev", ifname, ns=lan.ns(1)).stdout.split("<", 1)[1].split(">")[0]
    return "UP" in flags.split(",") and "NO-CARRIER" not in flags.split(",")


async def test_watcher_reports_every_one_of_fifty_carrier_flaps_in_a_row(lan):
    with inside(lan.ns(1)):
        async with LinkWatcher({"eth0"}) as watcher:
            f = Follower(watcher)
            try:
                await f.wait_up(True)          # the initial dump: eth0 is up
                for _ in range(50):
                    lan.set_port(1, False)     # the cable is cut at the switch
                    await f.wait_up(False)
                    lan.set_port(1, True)
                    await f.wait_up(True)
            finally:
                await f.stop()
    eth0 = [st.up for st in f.seen if st.name == "eth0"]
    # Only changes are reported: initial up, then exactly one report per transition.
    assert eth0 == [True] + [False, True] * 50
    assert watcher.table.overruns == 0 and watcher.resubscribes == 0


async def test_watcher_reports_admin_down_and_up_from_inside_the_node(lan):
    with inside(lan.ns(1)):
        async with LinkWatcher({"eth0"}) as watcher:
            f = Follower(watcher)
            try:
                await f.wait_up(True)
                for _ in range(10):
                    sh("ip", "link", "set", "eth0", "down", ns=lan.ns(1))
                    await f.wait_up(False)
                    sh("ip", "link", "set", "eth0", "up", ns=lan.ns(1))
                    await f.wait_up(True)
            finally:
                await f.stop()
    assert [st.up for st in f.seen] == [True] + [False, True] * 10


async def test_an_overrun_is_followed_by_a_resync_that_reports_the_final_true_state(lan):
    node = lan.ns(1)
    # A second watched link, deleted while the events are being lost: only the
    # resync's dump can tell that it is gone.
    sh("ip", "link", "add", "lwa", "type", "veth", "peer", "name", "lwb", ns=node)
    sh("ip", "link", "set", "lwa", "up", ns=node)
    sh("ip", "link", "set", "lwb", "up", ns=node)
    log = RecordingLog()
    with inside(node):
        # SO_RCVBUF 1: the kernel raises it to its minimum (a few KiB), room for a
        # couple of link messages.
        async with LinkWatcher({"eth0", "lwa"}, rcvbuf=1, log=log) as watcher:
            f = Follower(watcher)
            try:
                await f.wait_up(True)
                await f.wait_up(True, "lwa")
                # A burst while the event loop is blocked (subprocess.run, not awaited):
                # nobody reads, the queue fills and the kernel drops the rest. Admin
                # flaps of eth0 (a message each), then the cable cut (final: down)
                # and lwa deleted.
                burst = "".join("link set eth0 down\nlink set eth0 up\n" for _ in range(30))
                subprocess.run(["ip", "-n", node, "-batch", "-"], input=burst, text=True,
                               check=True, capture_output=True, timeout=30)
                lan.set_port(1, False)
                sh("ip", "link", "del", "lwa", ns=node)
                assert not kernel_says_up(lan)
                await f.wait(lambda: watcher.table.overruns >= 1, "an overrun")
                await f.wait_up(False)
                await f.wait(lambda: (st := f.last("lwa")) is not None and not st.exists, "lwa gone")
                await f.wait(lambda: log.events("net.link_state_resynced"), "the resync logged")
                # Still following after the overrun: the cable back, eth0 up again.
                lan.set_port(1, True)
                await f.wait_up(True)
            finally:
                await f.stop()
    assert log.events("net.link_events_lost")[0]["reason"] == "netlink_overrun"
    resynced = log.events("net.link_state_resynced")
    assert resynced and {r["reason"] for r in resynced} == {"overrun"}
    assert watcher.table.resyncs >= 2                # the initial dump and the resync
    assert watcher.resubscribes == 0                 # an overrun keeps the socket
    assert f.last("lwa") == LinkState("lwa", 0, up=False, exists=False)


class FailingOnceWatcher(LinkWatcher):
    """The real watcher, with one receive failing on request (no kernel error can be
    provoked on a netlink socket at will but the overrun)."""

    RETRY_MIN = 1.0     # a window in which the link changes with no socket at all

    fail_next = False

    async def _recv(self) -> bytes:
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.EIO, "injected receive failure")
        return await super()._recv()


async def test_a_failed_socket_is_replaced_and_changes_made_meanwhile_are_reported(lan):
    log = RecordingLog()
    with inside(lan.ns(1)):
        async with FailingOnceWatcher({"eth0"}, log=log) as watcher:
            f = Follower(watcher)
            try:
                await f.wait_up(True)
                watcher.fail_next = True
                lan.set_port(1, False)          # wakes the pending receive...
                await f.wait_up(False)          # ...which reports, and the next one fails
                await f.wait(lambda: watcher._sock is None, "the socket dropped")
                lan.set_port(1, True)           # while no socket listens
                await f.wait_up(True)           # learnt from the new socket's dump
                lan.set_port(1, False)          # and events flow on the new socket
                await f.wait_up(False)
            finally:
                await f.stop()
    assert watcher.resubscribes == 1
    failed = log.events("net.link_watch_failed")
    assert len(failed) == 1 and "injected receive failure" in failed[0]["reason"]
    assert log.events("net.link_watch_resubscribed")[0]["count"] == 1


def scrape(lan: Lan, path: str) -> str:
    return sh("curl", "-s", "-m", "5", f"http://127.0.0.1:9110{path}", ns=lan.ns(1)).stdout


def api_answers(lan: Lan) -> bool:
    """/healthz says ok; False while nothing listens yet (curl exits 7)."""
    try:
        return scrape(lan, "/healthz") == "ok\n"
    except subprocess.CalledProcessError as e:
        if e.returncode == 7:
            return False
        raise


def link_watch_metrics(lan: Lan) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name: s.value for fam in text_string_to_metric_families(scrape(lan, "/metrics"))
            for s in fam.samples if s.name.startswith("hadirector_link_watch_")}


def test_a_real_agents_overrun_and_resync_are_counted_in_its_status_and_metrics(lan, tmp_path):
    # The real agent this time: stopped (SIGSTOP) while its eth0 flaps 300 times and
    # then loses its carrier, its netlink queue overflows; resumed, it must resync to
    # FAULT, count the overrun and the resync, and report them over HTTP.
    import json
    import os
    import signal

    from lab.agents import AgentProc, instance_config, wait_for

    agent = AgentProc(lan, 1, tmp_path, [instance_config(lan, priority=150, advert=0.1)],
                      {"api": {"enabled": True, "listen": "127.0.0.1:9110"}})
    try:
        agent.start()
        wait_for(lambda: agent.role() == "MASTER", 15, what="MASTER")
        # The API's aiohttp loads on a worker thread: it may listen after MASTER.
        wait_for(lambda: api_answers(lan), 15, what="the API up")
        assert link_watch_metrics(lan) == {
            "hadirector_link_watch_overruns_total": 0, "hadirector_link_watch_resyncs_total": 0,
            "hadirector_link_watch_resubscribes_total": 0, "hadirector_link_watch_restarts_total": 0}
        burst = "".join("link set eth0 down\nlink set eth0 up\n" for _ in range(300))
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            subprocess.run(["ip", "-n", lan.ns(1), "-batch", "-"], input=burst, text=True,
                           check=True, capture_output=True, timeout=60)
            lan.set_port(1, False)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        wait_for(lambda: agent.role() == "FAULT", 15, what="FAULT after the resync")
        counted = link_watch_metrics(lan)
        assert counted["hadirector_link_watch_overruns_total"] >= 1, counted
        assert counted["hadirector_link_watch_resyncs_total"] >= 1, counted
        assert counted["hadirector_link_watch_resubscribes_total"] == 0, counted   # same socket
        resynced = agent.events("net.link_state_resynced")
        assert counted["hadirector_link_watch_resyncs_total"] == len(resynced)
        status = json.loads(scrape(lan, "/status"))["link_watch"]
        assert status["overruns"] == counted["hadirector_link_watch_overruns_total"]
        assert status["resyncs"] == counted["hadirector_link_watch_resyncs_total"]
        lan.set_port(1, True)
        wait_for(lambda: agent.role() == "MASTER", 15, what="MASTER again with the carrier")
    finally:
        agent.stop()
