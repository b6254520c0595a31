"""Two real ``hadirector run`` agents on a namespace LAN elect one master (RFC 5798 6.4).

Each agent runs in its own namespace, with advert_interval 0.1 s to keep the tests
fast; a third namespace plays a client. Ownership of the VIP is read with ``ip addr``
in each namespace; timings come from the agents' JSON log timestamps (same host clock)
and from the test's own clock around signals.
"""

from __future__ import annotations

import signal
import time

import pytest

from hadirector.vrrp.timers import master_down_interval, skew_time

from lab.agents import holders, ts, wait_for, wait_holder
from lab.agents import elect as ve_elect
from lab.lan import Lan, sh

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("el", nodes=3, net=10)]

ADVERT = 0.1
HIGH, LOW = 150, 100
# Scheduling slack on a shared 2-core machine: process wake-up, netlink, log write.
MARGIN = 0.4
START_TIMEOUT = 15.0


def elect(lan, a1, a2) -> None:
    ve_elect(lan, a1, a2, START_TIMEOUT)


def test_higher_priority_becomes_the_only_master_and_holds_the_vip(lan, agents):  # RFC 5798 6.4.2
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)
    # Stable: still one master, still one holder, after a few dozen adverts.
    time.sleep(1.0)
    assert (a1.role(), a2.role()) == ("MASTER", "BACKUP")
    assert holders(lan, lan.vip4(), (1, 2)) == [1]
    assert a2.state()["instances"]["vi_1"]["master"] == str(lan.ip4(1))
    changed = a1.events("vrrp.role_changed")[-1]
    assert changed["new"] == "MASTER" and changed["vrid"] == 51 and changed["priority"] == HIGH
    assert changed["reason"] in ("master_down_timer", "preempted", "higher_priority_received")


def test_backup_takes_over_within_master_down_interval_after_kill_9(lan, agents):  # RFC 5798 6.4.2
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)
    killed_at = time.time()
    a1.kill()
    bound = master_down_interval(LOW, ADVERT)
    wait_for(lambda: lan.has_ip(2, lan.vip4()), bound + MARGIN + 1.0, what="VIP on node 2")
    added = a2.events("vrrp.vips_added")[-1]
    gap = ts(added) - killed_at
    assert gap <= bound + MARGIN, f"takeover {gap:.3f}s after kill -9, bound {bound:.3f}s"
    took = a2.events("vrrp.role_changed")[-1]
    assert took["new"] == "MASTER" and took["reason"] == "master_down_timer"


def test_restarted_agent_releases_the_vip_its_killed_predecessor_left(lan, agents):
    # kernel-lab.md: a SIGKILLed agent leaves its VIP; the next agent must not keep it
    # while the peer is master (two owners). With preempt it takes the VIP back cleanly.
    a1, a2 = agents(lan, 1, priority=HIGH, preempt=False), agents(lan, 2, priority=LOW, preempt=False)
    elect(lan, a1, a2)
    a1.kill()
    wait_for(lambda: lan.has_ip(2, lan.vip4()), 3.0, what="VIP on node 2")
    assert lan.has_ip(1, lan.vip4()), "the killed agent's VIP is expected to linger"
    a1.start()
    wait_for(lambda: a1.role() == "BACKUP", START_TIMEOUT, what="restarted node 1 in BACKUP")
    assert holders(lan, lan.vip4(), (1, 2)) == [2]
    assert a1.events("vrrp.stale_vip_removed"), a1.log_text()[-2000:]


def test_backup_takes_over_after_skew_time_on_sigterm(lan, agents):  # RFC 5798 6.4.3
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)
    a1.signal(signal.SIGTERM)
    assert a1.proc.wait(10) == 0
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    stop = a1.events("agent.stop_requested")[-1]
    added = a2.events("vrrp.vips_added")[-1]
    gap = ts(added) - ts(stop)
    bound = skew_time(LOW, ADVERT)
    assert gap <= bound + MARGIN, f"takeover {gap:.3f}s after SIGTERM, skew_time {bound:.3f}s"
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"
    # The stopped agent removed its VIP and said so.
    assert a1.events("vrrp.vips_removed")[-1]["reason"] == "shutdown"


def test_returning_higher_priority_node_preempts(lan, agents):  # RFC 5798 6.4.2 (Preempt_Mode)
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)
    a1.stop()
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    a1.start()
    wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP", START_TIMEOUT,
             what="node 1 MASTER again")
    wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=2)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "higher_priority_received"


def test_returning_higher_priority_node_does_not_preempt_with_nopreempt(lan, agents):
    a1 = agents(lan, 1, priority=HIGH, preempt=False)
    a2 = agents(lan, 2, priority=LOW, preempt=False)
    elect(lan, a1, a2)
    a1.stop()
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    a1.start()
    wait_for(lambda: a1.role() == "BACKUP", START_TIMEOUT, what="node 1 BACKUP")
    # Well past Master_Down_Interval: it would have preempted by now.
    time.sleep(5 * master_down_interval(HIGH, ADVERT))
    assert (a1.role(), a2.role()) == ("BACKUP", "MASTER")
    assert holders(lan, lan.vip4(), (1, 2)) == [2]


def _mac(lan: Lan, i: int) -> str:
    return sh("cat", "/sys/class/net/eth0/address", ns=lan.ns(i)).stdout.strip()


def test_client_cache_follows_the_vip_through_gratuitous_arp(lan, agents):  # RFC 5798 6.4.2
    a1, a2 = agents(lan, 1, priority=HIGH), agents(lan, 2, priority=LOW)
    elect(lan, a1, a2)
    sh("ping", "-c1", "-W2", str(lan.vip4()), ns=lan.ns(3))

    def neigh() -> str:
        return sh("ip", "neigh", "show", str(lan.vip4()), "dev", "eth0", ns=lan.ns(3)).stdout

    assert _mac(lan, 1) in neigh()
    a1.stop()
    # No traffic from the client in between: only the GARP can move the entry.
    wait_for(lambda: _mac(lan, 2) in neigh(), 3.0, what=f"client's entry to move (now {neigh()!r})")
    # Logged once the burst is out (3 packets, 10 ms apart): the first one moved the entry.
    wait_for(lambda: a2.events("vrrp.garp_sent"), 1.0, what="node 2's vrrp.garp_sent")


def test_unicast_peers_elect_and_fail_over(lan, agents):
    ip1, ip2 = lan.ip4(1), lan.ip4(2)
    a1 = agents(lan, 1, priority=HIGH, unicast_src=ip1, unicast_peers=(ip2,))
    a2 = agents(lan, 2, priority=LOW, unicast_src=ip2, unicast_peers=(ip1,))
    elect(lan, a1, a2)
    # The backup follows node 1's unicast adverts (it learnt the master from them).
    wait_for(lambda: a2.state()["instances"]["vi_1"]["master"] == str(ip1), 2.0,
             what="node 2 following node 1")
    a1.signal(signal.SIGTERM)
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"


def test_ipv6_pair_elects_and_fails_over(lan, agents):  # RFC 5798 5.1.2
    a1 = agents(lan, 1, priority=HIGH, family=6)
    a2 = agents(lan, 2, priority=LOW, family=6)
    a1.start()
    a2.start()
    wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP", START_TIMEOUT,
             what="IPv6: node 1 MASTER")
    wait_holder(lan, lan.vip6(), (1, 2), expect=1, timeout=2)
    a1.signal(signal.SIGTERM)
    wait_holder(lan, lan.vip6(), (1, 2), expect=2, timeout=3)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"
