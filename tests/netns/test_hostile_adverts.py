"""Malformed and hostile adverts at a running pair change nothing (RFC 5798 7.1).

A third namespace sends, with its own raw IP_HDRINCL socket, adverts that would make
the backup take over (priority 255, or priority 0 "master leaving") if they were
accepted — but each has one thing wrong — plus truncated packets, random bytes and a
bounded flood. The pair must keep its roles, the agents must keep running, and each
decode rejection must be logged at a bounded rate. The same runs with signed adverts
(``auth: enforce``): malformed packets are refused by the codec before any digest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from lab.agents import AgentProc, ROOT, auth_config, holders, instance_config, start_following

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("ho", nodes=3, net=30)]

ADVERT = 0.1

SENDER = r"""
import ipaddress, os, random, socket, struct, sys, time
from hadirector.vrrp.codec import Advert, encode

src = ipaddress.IPv4Address(sys.argv[1])
group = ipaddress.IPv4Address("224.0.0.18")
backup = ipaddress.IPv4Address(sys.argv[2])
vip = ipaddress.IPv4Address(sys.argv[3])
flood = int(sys.argv[4])

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

def ip_packet(payload, dst, ttl=255, proto=112):
    # The kernel fills in the header checksum and total length for IP_HDRINCL.
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, proto, 0,
                       src.packed, dst.packed)
    return head + payload

def send(payload, dst=group, **kw):
    s.sendto(ip_packet(payload, dst, **kw), (str(dst), 0))

def advert(priority=255, vrid=51, version=3, dst=group, interval=0.1):
    a = Advert(version=version, vrid=vrid, priority=priority,
               max_advert_int=interval if version == 3 else 1.0, addresses=(vip,), family=4)
    return encode(a, src, dst)

def flip_checksum(p):
    return p[:6] + bytes([p[6] ^ 0xFF, p[7]]) + p[8:]

rng = random.Random(5798)
cases = {
    "bad_ttl": lambda: send(advert(255), ttl=1),
    "bad_ttl_zero_priority": lambda: send(advert(0), ttl=64),
    "bad_checksum": lambda: send(flip_checksum(advert(255))),
    "bad_checksum_zero_priority": lambda: send(flip_checksum(advert(0))),
    "wrong_vrid": lambda: send(advert(255, vrid=52)),
    "v2_at_v3": lambda: send(advert(255, version=2)),
    "truncated": lambda: send(advert(255)[:5]),
    "count_lies": lambda: send(advert(255)[:3] + b"\x09" + advert(255)[4:]),
    "trailing_junk": lambda: send(advert(255) + b"\0" * 7),
    "bad_type": lambda: send(bytes([0x32]) + advert(255)[1:]),
    "unicast_bad_checksum": lambda: send(flip_checksum(advert(0, dst=backup)), dst=backup),
    "empty": lambda: send(b""),
}
for name, fn in cases.items():
    for _ in range(3):
        fn()
    print("sent", name, flush=True)
    time.sleep(0.05)
# A bounded flood of random bytes (and random-but-plausible headers).
end = time.monotonic() + 3.0
sent = 0
while sent < flood and time.monotonic() < end:
    n = rng.randrange(0, 80)
    payload = bytes(rng.randrange(256) for _ in range(n))
    if rng.random() < 0.5 and n >= 8:
        payload = bytes([0x31, 51]) + payload[2:]     # v3, our VRID, then garbage
    send(payload)
    sent += 1
print("flood", sent, flush=True)
"""


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "auth_enforce"])
def test_hostile_adverts_change_no_state_and_are_logged_at_a_bounded_rate(lan, tmp_path, signed):
    extra = {"auth": auth_config(tmp_path)} if signed else None
    a1 = AgentProc(lan, 1, tmp_path, [instance_config(lan, priority=150, advert=ADVERT, extra=extra)])
    a2 = AgentProc(lan, 2, tmp_path, [instance_config(lan, priority=100, advert=ADVERT, extra=extra)])
    try:
        start_following(a1, a2, 15)
        before = [len(a.events("vrrp.role_changed")) for a in (a1, a2)]

        prog = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(SENDER)
        res = subprocess.run(
            ["ip", "netns", "exec", lan.ns(3), sys.executable, "-c", prog,
             str(lan.ip4(3)), str(lan.ip4(2)), str(lan.vip4()), "3000"],
            capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "flood" in res.stdout
        # Longer than Master_Down_Interval and Skew_Time: a wrongly accepted advert
        # would have shown by now.
        time.sleep(1.0)

        assert a1.alive() and a2.alive()
        assert (a1.role(), a2.role()) == ("MASTER", "BACKUP")
        assert holders(lan, lan.vip4(), (1, 2)) == [1]
        assert [len(a.events("vrrp.role_changed")) for a in (a1, a2)] == before
        assert a2.state()["instances"]["vi_1"]["master"] == str(lan.ip4(1))

        # state.json shows the rejects although no state changed (a throttled refresh,
        # at most once per second), all of them: the same counts as the final write
        # at exit (the flood is over: nothing arrives after this).
        time.sleep(1.5)
        shown = [a.state()["instances"]["vi_1"]["rejected"] for a in (a1, a2)]
        for counts in shown:
            assert {"bad_ttl", "bad_checksum", "truncated", "bad_type"} <= set(counts), counts

        for agent in (a1, a2):
            rejected = agent.events("vrrp.advert_rejected")
            reasons = {e["reason"] for e in rejected}
            assert {"bad_ttl", "bad_checksum", "truncated", "bad_length", "bad_type"} <= reasons, reasons
            # Bounded: one line per reason per 10 s (the whole run is well under 10 s).
            assert len(rejected) == len(reasons), [e["reason"] for e in rejected]
        # Drops kept the agents responsive: they still exit cleanly.
        assert a2.stop() == 0 and a1.stop() == 0
        assert [a.state()["instances"]["vi_1"]["rejected"] for a in (a1, a2)] == shown
    finally:
        a1.stop()
        a2.stop()
