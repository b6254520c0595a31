"""Link flaps on a real pair of ``hadirector run`` agents (issue 9, fault 1).

Two nodes on a ``lab.lan`` LAN, priorities 200 and 100. The master's link is flapped
the realistic way, by cutting its cable at the switch (``p1`` down: eth0 loses
carrier), and also by ``ip link set eth0 down`` inside the node. An instance's own
interface is tracked with weight 0, so link down means FAULT (keepalived's
track_interface); link up means BACKUP, then MASTER again if its priority and preempt
say so (RFC 5798 6.4.2: a backup with preempt discards adverts of lower priority, so
its Master_Down_Timer fires).

Who holds the VIP is read with ``ip addr`` in the namespaces, not from the agents;
the timing bounds come from the agent's own JSON log timestamps (one host clock).
Before the fix the director stayed in FAULT forever after the first flap.
"""

from __future__ import annotations

import signal
import time

import pytest

from hadirector.vrrp.timers import master_down_interval

from lab.agents import (
    AgentProc, KeepalivedProc, holders, instance_config, keepalived_conf, ts,
    wait_for, wait_holder,
)
from lab.agents import elect as ve_elect
from lab.lan import Lan, sh

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("lf", nodes=2, net=41)]

ADVERT = 0.1
HIGH, LOW = 200, 100
# Scheduling slack on a shared 2-core machine: process wake-up, netlink, log write.
MARGIN = 1.0
START_TIMEOUT = 15.0
STABLE = 1.5            # seconds the end state must hold: many Master_Down_Intervals


def elect(lan, a1, a2) -> None:
    ve_elect(lan, a1, a2, START_TIMEOUT)


def set_link(lan: Lan, node: int, up: bool, how: str) -> None:
    if how == "carrier":
        lan.set_port(node, up)                  # the cable, at the switch
    else:
        sh("ip", "link", "set", "eth0", "up" if up else "down", ns=lan.ns(node))


def link_changes(a: AgentProc, up: bool) -> list[dict]:
    return [e for e in a.events("track.link_changed") if e["interface"] == "eth0" and e["up"] is up]


def roles(a: AgentProc) -> list[tuple[str, str, str]]:
    return [(e["old"], e["new"], e["reason"]) for e in a.events("vrrp.role_changed")]


def assert_holds(lan, a_holder: AgentProc, a_other: AgentProc, holder: int, seconds: float) -> None:
    """For ``seconds``: one MASTER, one BACKUP, and only the master's node has the VIP."""
    other = 2 if holder == 1 else 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert holders(lan, lan.vip4(), (1, 2)) == [holder], f"VIP holders {holders(lan, lan.vip4(), (1, 2))}"
        assert (a_holder.role(), a_other.role()) == ("MASTER", "BACKUP"), \
            f"node {holder}: {a_holder.role()}, node {other}: {a_other.role()}"
        time.sleep(0.05)


def preempted_in_time(a1: AgentProc) -> float:
    """Seconds from node 1's last link-up to its BACKUP -> MASTER (agent log clock)."""
    up = ts(link_changes(a1, True)[-1])
    master = [e for e in a1.events("vrrp.role_changed") if e["new"] == "MASTER" and ts(e) >= up]
    assert master, f"no MASTER after the link came back: {roles(a1)}"
    took = ts(master[0]) - up
    assert took <= master_down_interval(HIGH, ADVERT) + MARGIN, f"preempted {took:.2f}s after link up"
    return took


@pytest.mark.parametrize("how", ["carrier", "admin"])
def test_master_faults_on_a_two_second_link_loss_and_preempts_back_when_it_returns(lan, agents, how):
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)

    set_link(lan, 1, False, how)
    cut = time.monotonic()
    wait_for(lambda: a1.role() == "FAULT", 2, what="node 1 FAULT")
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=master_down_interval(LOW, ADVERT) + MARGIN)
    # The VIP is added before state.json is rewritten (same role-change callback), so the
    # file may lag the address by a write.
    wait_for(lambda: a2.role() == "MASTER", MARGIN, what="node 2 MASTER in state.json")
    time.sleep(max(0.0, cut + 2.0 - time.monotonic()))
    assert a1.role() == "FAULT" and holders(lan, lan.vip4(), (1, 2)) == [2]

    set_link(lan, 1, True, how)
    wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=master_down_interval(HIGH, ADVERT) + 2 * MARGIN)
    assert_holds(lan, a1, a2, holder=1, seconds=STABLE)
    preempted_in_time(a1)
    # The whole story, each step with its cause.
    assert [(e["old"], e["new"], e["reason"], e["detail"]) for e in a1.events("vrrp.role_changed")][-3:] == [
        ("MASTER", "FAULT", "fault", "track_interface:eth0"),
        ("FAULT", "BACKUP", "fault_cleared", "track_interface:eth0"),
        ("BACKUP", "MASTER", "preempted", None)]
    assert len(link_changes(a1, False)) == 1 and len(link_changes(a1, True)) == 1
    assert not a1.events("track.link_watch_failed")


def flap(lan: Lan, node: int, times: int, period: float) -> None:
    """``times`` cable cuts in ``times * period`` seconds: down half the period, up half."""
    for _ in range(times):
        lan.set_port(node, False)
        time.sleep(period / 2)
        lan.set_port(node, True)
        time.sleep(period / 2)


def test_twenty_flaps_in_ten_seconds_end_with_the_higher_priority_master_holding_the_vip(lan, agents):
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)

    flap(lan, 1, times=20, period=0.5)
    wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=master_down_interval(HIGH, ADVERT) + 2 * MARGIN)
    assert_holds(lan, a1, a2, holder=1, seconds=STABLE)
    preempted_in_time(a1)
    # Every flap was heard, down and up (events are milliseconds apart from each other
    # at most; the flaps are 0.25 s apart).
    assert len(link_changes(a1, False)) == 20 and len(link_changes(a1, True)) == 20
    assert roles(a1)[-1][:2] == ("BACKUP", "MASTER")
    assert not a1.events("track.link_watch_failed")


def test_twenty_flaps_without_preempt_leave_the_returning_node_backup_without_the_vip(lan, agents):
    a1 = agents(lan, 1, priority=HIGH, preempt=False)
    a2 = agents(lan, 2, priority=LOW, preempt=False)
    elect(lan, a1, a2)

    flap(lan, 1, times=20, period=0.5)
    # The peer took over at the first flap and keeps the VIP; node 1 is back in BACKUP
    # (not FAULT) and does not preempt (RFC 5798 6.4.2, Preempt_Mode False).
    wait_for(lambda: a1.role() == "BACKUP", 2, what="node 1 BACKUP after the last flap")
    assert_holds(lan, a2, a1, holder=2, seconds=STABLE)
    assert len(link_changes(a1, False)) == 20 and len(link_changes(a1, True)) == 20
    first_fault = next(i for i, r in enumerate(roles(a1)) if r[1] == "FAULT")
    assert all(new != "MASTER" for _old, new, _why in roles(a1)[first_fault:])
    assert [r[:2] for r in roles(a2)] == [("INIT", "BACKUP"), ("BACKUP", "MASTER")]


def test_link_tracking_survives_reloads_unchanged_and_with_new_track_interfaces(lan, agents):
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)

    def reload_and_wait(generation: int) -> None:
        a1.signal(signal.SIGHUP)
        wait_for(lambda: any(e["generation"] == generation for e in a1.events("agent.reloaded")), 10,
                 what=f"reload to generation {generation}")

    def one_flap(n: int) -> None:
        lan.set_port(1, False)
        wait_for(lambda: a1.role() == "FAULT", 2, what="node 1 FAULT")
        wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=master_down_interval(LOW, ADVERT) + MARGIN)
        lan.set_port(1, True)
        wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=master_down_interval(HIGH, ADVERT) + 2 * MARGIN)
        assert_holds(lan, a1, a2, holder=1, seconds=0.5)
        assert len(link_changes(a1, True)) == n

    reload_and_wait(2)              # unchanged config: the running tracker is kept
    one_flap(1)
    # Bindings changed: the tracker is replaced by a new one, which must follow too.
    a1.instances[0]["track_interfaces"] = [{"name": "lo", "weight": -10}]
    a1.write_config()
    reload_and_wait(3)
    one_flap(2)
    assert not a1.events("track.link_watch_failed")


def test_with_keepalived_as_the_peer_a_flapped_master_takes_the_vip_back(lan, tmp_path):
    # keepalived 2.2.7 as the backup: it takes over on the cut and yields to our
    # higher-priority advert once the link is back.
    a1 = AgentProc(lan, 1, tmp_path, [instance_config(lan, priority=HIGH, advert=ADVERT)])
    ka = KeepalivedProc(lan, 2, tmp_path, keepalived_conf(
        router_id="ka2", vrid=51, priority=LOW, advert=ADVERT, vip=str(lan.vip4())))
    try:
        a1.start()
        wait_for(lambda: a1.role() == "MASTER", START_TIMEOUT, what="node 1 MASTER")
        ka.start()
        wait_for(lambda: "Entering BACKUP STATE" in ka.log_text(), START_TIMEOUT, what="keepalived BACKUP")
        wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=2)

        lan.set_port(1, False)
        wait_for(lambda: a1.role() == "FAULT", 2, what="node 1 FAULT")
        wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=master_down_interval(LOW, ADVERT) + MARGIN)
        time.sleep(2.0)
        lan.set_port(1, True)
        wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=master_down_interval(HIGH, ADVERT) + 2 * MARGIN)
        end = time.monotonic() + STABLE
        while time.monotonic() < end:
            assert holders(lan, lan.vip4(), (1, 2)) == [1] and a1.role() == "MASTER"
            time.sleep(0.05)
        preempted_in_time(a1)
        log = ka.log_text()
        assert log.count("Entering MASTER STATE") == 1 and log.count("Entering BACKUP STATE") >= 2
    finally:
        a1.stop()
        ka.stop()
