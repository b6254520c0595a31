"""Signed adverts (``auth``, issue 12) between two real agents in namespaces.

A pair with ``mode: enforce`` elects and fails over (kill -9, SIGTERM) as without auth;
a third namespace that sends valid-looking priority-254 and priority-0 adverts --
unsigned, signed with a wrong key, spoofing the master's address, and a captured
genuine advert replayed -- changes nothing; the migration modes behave as specified;
and the rollout (none -> receive_only -> permissive -> enforce) and a key rotation
(add key 2, switch active_key, drop key 1) run over reloads with zero role changes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hadirector.vrrp.timers import master_down_interval, skew_time

from lab.agents import ROOT, auth_config, holders, instance_config, ts, wait_for, wait_holder
from lab.agents import elect as ve_elect

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("au", nodes=3, net=32)]

ADVERT = 0.1
HIGH, LOW = 150, 100
MARGIN = 0.4                 # scheduling slack on a shared 2-core machine
START_TIMEOUT = 15.0
AUTH_REASONS = {"auth_missing", "auth_malformed", "stale", "unknown_key", "bad_hmac", "replay"}


def signed_pair(lan, agents, tmp_path, mode="enforce", **kw):
    a1 = agents(lan, 1, priority=HIGH, extra={"auth": auth_config(tmp_path, mode=mode)}, **kw)
    a2 = agents(lan, 2, priority=LOW, extra={"auth": auth_config(tmp_path, mode=mode)}, **kw)
    ve_elect(lan, a1, a2, START_TIMEOUT)
    return a1, a2


def follows(a2, lan) -> bool:
    inst = a2.state()["instances"]["vi_1"]
    return inst["master"] == str(lan.ip4(1)) and inst["auth_verified"] > 0


def auth_rejects(agent) -> dict:
    return {k: v for k, v in agent.state()["instances"]["vi_1"]["rejected"].items() if k in AUTH_REASONS}


def test_enforce_pair_elects_and_fails_over_on_kill_9(lan, agents, tmp_path):  # RFC 5798 6.4.2
    a1, a2 = signed_pair(lan, agents, tmp_path)
    wait_for(lambda: follows(a2, lan), 2.0, what="node 2 following node 1's signed adverts")
    assert auth_rejects(a2) == {}
    killed_at = time.time()
    a1.kill()
    bound = master_down_interval(LOW, ADVERT)
    wait_for(lambda: lan.has_ip(2, lan.vip4()), bound + MARGIN + 1.0, what="VIP on node 2")
    gap = ts(a2.events("vrrp.vips_added")[-1]) - killed_at
    assert gap <= bound + MARGIN, f"takeover {gap:.3f}s after kill -9, bound {bound:.3f}s"
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "master_down_timer"


def test_enforce_pair_fails_over_on_sigterm_by_a_signed_priority_zero_advert(lan, agents, tmp_path):
    # RFC 5798 6.4.3: the leaving master's priority-0 advert is signed like the others.
    a1, a2 = signed_pair(lan, agents, tmp_path)
    wait_for(lambda: follows(a2, lan), 2.0, what="node 2 following node 1's signed adverts")
    a1.signal(signal.SIGTERM)
    assert a1.proc.wait(10) == 0
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    gap = ts(a2.events("vrrp.vips_added")[-1]) - ts(a1.events("agent.stop_requested")[-1])
    assert gap <= skew_time(LOW, ADVERT) + MARGIN, f"takeover {gap:.3f}s after SIGTERM"
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"
    assert auth_rejects(a2) == {}


def test_unicast_enforce_pair_fails_over(lan, agents, tmp_path):
    ip1, ip2 = lan.ip4(1), lan.ip4(2)
    a1 = agents(lan, 1, priority=HIGH, unicast_src=ip1, unicast_peers=(ip2,),
                extra={"auth": auth_config(tmp_path)})
    a2 = agents(lan, 2, priority=LOW, unicast_src=ip2, unicast_peers=(ip1,),
                extra={"auth": auth_config(tmp_path)})
    ve_elect(lan, a1, a2, START_TIMEOUT)
    wait_for(lambda: follows(a2, lan), 2.0, what="node 2 following node 1's signed unicast adverts")
    a1.signal(signal.SIGTERM)
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"


def test_ipv6_enforce_pair_elects_and_fails_over(lan, agents, tmp_path):  # RFC 5798 5.1.2
    a1 = agents(lan, 1, priority=HIGH, family=6, extra={"auth": auth_config(tmp_path)})
    a2 = agents(lan, 2, priority=LOW, family=6, extra={"auth": auth_config(tmp_path)})
    a1.start()
    a2.start()
    wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP"
             and a2.state()["instances"]["vi_1"]["auth_verified"] > 0, START_TIMEOUT,
             what="IPv6: node 1 MASTER, node 2 verifying its adverts")
    wait_holder(lan, lan.vip6(), (1, 2), expect=1, timeout=2)
    a1.signal(signal.SIGTERM)
    wait_holder(lan, lan.vip6(), (1, 2), expect=2, timeout=3)
    assert a2.events("vrrp.role_changed")[-1]["reason"] == "priority_zero_received"
    assert auth_rejects(a2) == {}


INTRUDER = r"""
import ipaddress, socket, struct, sys, time
from hadirector.model import AuthKey, VrrpAuth
from hadirector.vrrp.auth import AdvertAuth
from hadirector.vrrp.codec import Advert, encode

me, master, vip = (ipaddress.IPv4Address(a) for a in sys.argv[1:4])
duration = float(sys.argv[4])
group = ipaddress.IPv4Address("224.0.0.18")
wrong = AdvertAuth(VrrpAuth(keys=(AuthKey(1, "-", bytes(range(200, 232))),), active_key=1),
                   family=4, version=3, vrid=51, advert_interval=0.1)

tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
tx.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

def send_ip(packet):
    tx.sendto(packet, (str(group), 0))

def send(payload, src):
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, 255, 112, 0,
                       src.packed, group.packed)
    send_ip(head + payload)

# A genuine signed advert of the master, captured off the LAN, to replay later.
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
              struct.pack("=4s4si", group.packed, b"\0" * 4, socket.if_nametoindex("eth0")))
rx.settimeout(3.0)
while True:
    captured = rx.recv(2048)
    if captured[12:16] == master.packed:
        break
print("captured", len(captured), flush=True)

sent = 0
end = time.monotonic() + duration
while time.monotonic() < end:
    for src in (me, master):                 # our own address, and the master's, spoofed
        for prio in (254, 0):                # take the VIP from the master / make the backup take it
            adv = Advert(version=3, vrid=51, priority=prio, max_advert_int=0.1, addresses=(vip,), family=4)
            pdu = encode(adv, src, group)
            send(pdu, src)                                                     # unsigned
            send(encode(adv, src, group, wrong.sign(pdu, src, time.time())), src)  # wrong key
            sent += 2
    send_ip(captured)                        # a replay of the genuine one
    sent += 1
    time.sleep(0.02)
print("sent", sent, flush=True)
"""


@pytest.mark.parametrize("mode", ["enforce", "permissive"])
def test_a_third_host_cannot_take_the_vip_unsigned_wrongly_signed_spoofed_or_replayed(
        lan, agents, tmp_path, mode):
    a1, a2 = signed_pair(lan, agents, tmp_path, mode=mode)
    wait_for(lambda: follows(a2, lan), 2.0, what="node 2 following node 1's signed adverts")
    before = [len(a.events("vrrp.role_changed")) for a in (a1, a2)]
    prog = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(INTRUDER)
    res = subprocess.run(["ip", "netns", "exec", lan.ns(3), sys.executable, "-c", prog,
                          str(lan.ip4(3)), str(lan.ip4(1)), str(lan.vip4()), "2.0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    time.sleep(1.0)          # past Master_Down_Interval and Skew_Time: an accepted one shows by now
    if mode == "permissive":
        # Permissive accepts unsigned adverts by design (a migration step): the forged
        # unsigned ones get through. Only the signed-but-wrong and replayed ones are refused.
        assert auth_rejects(a2).keys() >= {"bad_hmac", "replay"}, a2.state()["instances"]["vi_1"]
        return
    assert a1.alive() and a2.alive()
    assert (a1.role(), a2.role()) == ("MASTER", "BACKUP")
    assert holders(lan, lan.vip4(), (1, 2)) == [1]
    assert [len(a.events("vrrp.role_changed")) for a in (a1, a2)] == before
    assert a2.state()["instances"]["vi_1"]["master"] == str(lan.ip4(1))
    assert auth_rejects(a2).keys() >= {"auth_missing", "bad_hmac", "replay"}, auth_rejects(a2)
    assert auth_rejects(a1).keys() >= {"auth_missing", "bad_hmac"}, auth_rejects(a1)
    # Logged with the source, at a bounded rate: one line per reason in this short run.
    rejected = [e for e in a2.events("vrrp.advert_rejected") if e["reason"] in AUTH_REASONS]
    assert {e["reason"] for e in rejected} >= {"auth_missing", "bad_hmac", "replay"}
    assert len(rejected) == len({e["reason"] for e in rejected})
    # The sources the intruder used: its own, and the master's it spoofed.
    assert {e["src"] for e in rejected} <= {str(lan.ip4(3)), str(lan.ip4(1))}
    assert [e["src"] for e in rejected if e["reason"] == "replay"] == [str(lan.ip4(1))]


def test_receive_only_verifies_what_comes_and_permissive_accepts_unsigned(lan, agents, tmp_path):
    # Node 1 permissive (signs, accepts unsigned), node 2 receive_only (sends unsigned,
    # verifies a trailer that comes): the two halves of a rollout step.
    a1 = agents(lan, 1, priority=HIGH, extra={"auth": auth_config(tmp_path, mode="permissive")})
    a2 = agents(lan, 2, priority=LOW, extra={"auth": auth_config(tmp_path, mode="receive_only")})
    ve_elect(lan, a1, a2, START_TIMEOUT)
    wait_for(lambda: follows(a2, lan), 2.0, what="receive_only node 2 verifying node 1's signatures")
    a1.stop()
    wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
    a1.start()               # hears node 2's unsigned adverts, accepts them, then preempts
    wait_for(lambda: a1.role() == "MASTER" and a2.role() == "BACKUP", START_TIMEOUT,
             what="node 1 preempting again")
    assert a1.events("vrrp.role_changed")[-1]["reason"] in ("higher_priority_received", "preempted",
                                                           "master_down_timer")
    assert auth_rejects(a1) == {} and auth_rejects(a2) == {}


def reload_both(a1, a2, auth: dict | None) -> None:
    for agent in (a2, a1):
        before = len(agent.events("agent.reloaded"))
        agent.instances[0]["auth"] = auth
        agent.write_config()
        agent.signal(signal.SIGHUP)
        wait_for(lambda: len(agent.events("agent.reloaded")) > before, 15.0, interval=0.05,
                 what=f"node {agent.node} reloaded")
        done = agent.events("agent.reloaded")[-1]
        assert done["restarted"] == [] and done["updated"] == ["vi_1"], done


def test_rollout_and_key_rotation_over_reloads_change_no_role(lan, agents, tmp_path):
    a1 = agents(lan, 1, priority=HIGH)
    a2 = agents(lan, 2, priority=LOW)
    ve_elect(lan, a1, a2, START_TIMEOUT)
    before = [len(a.events("vrrp.role_changed")) for a in (a1, a2)]
    steps = [
        auth_config(tmp_path, mode="receive_only"),
        auth_config(tmp_path, mode="permissive"),
        auth_config(tmp_path, mode="enforce"),
        auth_config(tmp_path, keys=(1, 2), active=1),      # key 2 added on both
        auth_config(tmp_path, keys=(1, 2), active=2),      # both sign with key 2
        auth_config(tmp_path, keys=(2,), active=2),        # key 1 removed
    ]
    for step in steps:
        reload_both(a1, a2, step)
        # Longer than Master_Down_Interval and more than the state file's refresh: an
        # advert node 2 refused (unsigned in enforce, a key it lacks, a bad signature)
        # would show as a reject count or as node 2 taking over.
        time.sleep(max(1.5, 3 * master_down_interval(LOW, ADVERT)))
        assert (a1.role(), a2.role()) == ("MASTER", "BACKUP"), step
        assert holders(lan, lan.vip4(), (1, 2)) == [1]
        assert auth_rejects(a1) == {} and auth_rejects(a2) == {}, step
    assert [len(a.events("vrrp.role_changed")) for a in (a1, a2)] == before
    last = a2.events("vrrp.auth_reconfigured")[-1]
    assert (last["mode"], last["active_key"], last["key_ids"]) == ("enforce", 2, [2])
    assert "secret" not in a2.log_text()
    # A reload naming a key file that is too short is refused, and the running keys stay.
    short = tmp_path / "short-key"
    short.write_text("hex:" + "ab" * 8)
    short.chmod(0o600)
    before_fail = len(a2.events("agent.reload_failed"))
    a2.instances[0]["auth"] = {"mode": "enforce", "keys": [{"id": 3, "secret_file": str(short)}]}
    a2.write_config()
    a2.signal(signal.SIGHUP)
    wait_for(lambda: len(a2.events("agent.reload_failed")) > before_fail, 15.0, interval=0.05,
             what="node 2 refusing the reload")
    failed = a2.events("agent.reload_failed")[-1]
    assert "holds a 8-byte key" in str(failed) and "abab" not in a2.log_text()
    time.sleep(max(1.5, 3 * master_down_interval(LOW, ADVERT)))
    assert (a1.role(), a2.role()) == ("MASTER", "BACKUP") and auth_rejects(a2) == {}
    # Still a working pair, on key 2 only.
    a1.kill()               # (kill -9 leaves node 1's VIP behind: only node 2's is checked)
    wait_for(lambda: lan.has_ip(2, lan.vip4()), master_down_interval(LOW, ADVERT) + 2, what="VIP on node 2")


def test_multicast_peers_allow_list_drops_a_third_host_and_counts_it(lan, agents):
    # Without signatures, peers: stops a third source address (not a spoof of the peer's).
    a1 = agents(lan, 1, priority=HIGH, extra={"peers": [str(lan.ip4(2))]})
    a2 = agents(lan, 2, priority=LOW, extra={"peers": [str(lan.ip4(1))]})
    ve_elect(lan, a1, a2, START_TIMEOUT)
    before = [len(a.events("vrrp.role_changed")) for a in (a1, a2)]
    prog = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(INTRUDER)
    # The intruder's spoofed-master packets still pass an allow-list: send only its own.
    prog = prog.replace("for src in (me, master):", "for src in (me,):")
    res = subprocess.run(["ip", "netns", "exec", lan.ns(3), sys.executable, "-c", prog,
                          str(lan.ip4(3)), str(lan.ip4(1)), str(lan.vip4()), "1.0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    time.sleep(1.0)
    assert [len(a.events("vrrp.role_changed")) for a in (a1, a2)] == before
    assert holders(lan, lan.vip4(), (1, 2)) == [1]
    assert a1.state()["instances"]["vi_1"]["rejected"].get("unknown_peer", 0) > 0
    [logged] = [e for e in a1.events("vrrp.advert_rejected") if e["reason"] == "unknown_peer"]
    assert logged["src"] == str(lan.ip4(3))


def test_receive_only_pairs_with_keepalived_2_2_7_which_has_no_auth_hmac(lan, tmp_path):
    # The first rollout step is safe beside a keepalived without auth_hmac: nothing is
    # signed. (From permissive on, keepalived 2.2.7 refuses our adverts as too long, as
    # any keepalived before 2.4.2 does: roll out only once both nodes run hadirector or
    # keepalived >= 2.4.2.)
    from lab.agents import AgentProc, KeepalivedProc, keepalived_conf

    agent = AgentProc(lan, 1, tmp_path, [instance_config(
        lan, priority=HIGH, advert=ADVERT, extra={"auth": auth_config(tmp_path, mode="receive_only")})])
    ka = KeepalivedProc(lan, 2, tmp_path, keepalived_conf(
        router_id="ka2", vrid=51, priority=LOW, advert=ADVERT, vip=str(lan.vip4())))
    try:
        agent.start()
        wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, what="hadirector MASTER")
        ka.start()
        time.sleep(4 * ADVERT + 1.0)
        assert holders(lan, lan.vip4(), (1, 2)) == [1], ka.log_text()[-2000:]
        agent.signal(signal.SIGTERM)
        wait_holder(lan, lan.vip4(), (1, 2), expect=2, timeout=3)
        agent.start()        # accepts keepalived's unsigned adverts, then preempts
        wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, what="hadirector MASTER again")
        wait_holder(lan, lan.vip4(), (1, 2), expect=1, timeout=3)
        assert auth_rejects(agent) == {}
        assert agent.state()["instances"]["vi_1"]["rejected"].get("bad_length", 0) == 0
    finally:
        agent.stop()
        ka.stop()
