"""hadirector and keepalived 2.2.7 (Debian) as one VRRP pair, v3 and v2, both ways round.

Node 1 runs ``hadirector run``, node 2 ``/usr/sbin/keepalived -P`` (VRRP only), each in
its own namespace on one bridge. Who holds the VIP is read with ``ip addr`` in both
namespaces; takeover gaps come from packet timestamps (tcpdump on the bridge: last
advert of the old master -> first advert of the new one) and are bounded by the RFC
timers plus a scheduling margin.
"""

from __future__ import annotations

import signal
import time

import pytest

from hadirector.vrrp.timers import master_down_interval, skew_time

from lab.agents import (
    AgentProc, Capture, KeepalivedProc, gap, holders, instance_config, keepalived_conf, wait_for,
    wait_holder,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("ka", nodes=2, net=20)]

HIGH, LOW = 150, 100
MARGIN = 0.25
START_TIMEOUT = 15.0


def advert_for(version: int) -> float:
    # VRRPv2 carries whole seconds (RFC 3768 5.3.7); v3 centiseconds.
    return 1.0 if version == 2 else 0.1


@pytest.fixture
def pair(lan, tmp_path):
    made: list = []

    def make(version: int, agent_priority: int, keepalived_priority: int):
        adv = advert_for(version)
        agent = AgentProc(lan, 1, tmp_path, [instance_config(
            lan, priority=agent_priority, advert=adv, version=version)])
        ka = KeepalivedProc(lan, 2, tmp_path, keepalived_conf(
            router_id="ka2", vrid=51, priority=keepalived_priority, advert=adv,
            vip=str(lan.vip4()), version=version))
        made.extend([agent, ka])
        return agent, ka

    try:
        yield make
    finally:
        for p in made:
            p.stop()


@pytest.mark.parametrize("version", [3, 2])
def test_hadirector_master_fails_over_to_keepalived_and_takes_back(lan, pair, version):
    adv = advert_for(version)
    agent, ka = pair(version, HIGH, LOW)
    agent.start()
    wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, what="hadirector MASTER")
    ka.start()
    # keepalived joins as backup and stays there.
    time.sleep(4 * adv + 1.0)
    assert holders(lan, lan.vip4(), (1, 2)) == [1], ka.log_text()[-2000:]
    assert agent.role() == "MASTER"
    assert ka.proc.poll() is None

    # Graceful stop: priority 0, keepalived answers after its Skew_Time.
    cap = Capture(lan)
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=5)
    packets = cap.stop()
    assert (packets and [p for p in packets if p[1] == str(lan.ip4(1))][-1][2] == 0), packets
    took = gap(packets, str(lan.ip4(1)), str(lan.ip4(2)))
    assert took is not None and took <= skew_time(LOW, adv, version=version) + MARGIN, took

    # hadirector returns with the higher priority and preempts keepalived.
    agent.start()
    wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT + 4 * adv, what="hadirector MASTER again")
    wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=3)
    assert agent.events("vrrp.role_changed")[-1]["reason"] == "preempted"


@pytest.mark.parametrize("version", [3, 2])
def test_keepalived_master_fails_over_to_hadirector_and_takes_back(lan, pair, version):
    adv = advert_for(version)
    agent, ka = pair(version, LOW, HIGH)
    ka.start()
    wait_for(lambda: lan.has_ip(2, lan.vip4()), START_TIMEOUT + 4 * adv, what="keepalived MASTER")
    agent.start()
    wait_for(lambda: agent.state().get("instances", {}).get("vi_1", {}).get("master") == str(lan.ip4(2)),
             START_TIMEOUT, what="hadirector following keepalived")
    time.sleep(4 * adv)
    assert agent.role() == "BACKUP"
    assert holders(lan, lan.vip4(), (1, 2)) == [2]

    # kill -9: no priority-0 advert; hadirector waits Master_Down_Interval. keepalived
    # leaves its VIP behind like any killed process, so only node 1 is checked.
    cap = Capture(lan)
    time.sleep(2.5 * adv)      # the capture must hold keepalived's last advert
    ka.kill()
    wait_for(lambda: lan.has_ip(1, lan.vip4()), master_down_interval(LOW, adv, version=version) + 3,
             what="VIP on hadirector")
    took = gap(cap.stop(), str(lan.ip4(2)), str(lan.ip4(1)))
    assert took is not None and took <= master_down_interval(LOW, adv, version=version) + MARGIN, took
    assert agent.events("vrrp.role_changed")[-1]["reason"] == "master_down_timer"

    # keepalived restarts (it removes its stale VIP at start-up) and preempts us.
    ka.start()
    wait_for(lambda: agent.role() == "BACKUP", START_TIMEOUT + 4 * adv, what="hadirector BACKUP again")
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3 * adv + 2)
    assert agent.events("vrrp.role_changed")[-1]["reason"] == "higher_priority_received"
