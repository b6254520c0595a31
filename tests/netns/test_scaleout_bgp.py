"""Scale-out directors behind a real ECMP router, on this host (no IPVS): real BIRD 2 on
the router and on each director (the director's config from ``hadirector bird-config``),
real agents with the announce gate, real routes in table 201 over netlink; only the
IPVS table is the stateful fake (``fake_ipvs_agent --scale-out``), and one test runs the real
``hadirector run``, which has no IPVS here and therefore must announce nothing.

Checked from outside: the router's FIB (``ip route show VIP``), as the kernel forwards.
Bounds: the doc measured 9-25 ms gate -> FIB and 246-386 ms for BFD 100 ms x 3
(shared/scale-out.md 3a); these tests allow for a loaded 2-core machine but stay far
below what the BGP hold time (9 s) alone would give.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from lab.netns import sh
from lab.scaleout import HOLD_DOWN, VIP, Director, ScaleOutLab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

START = 30.0            # agent + BIRD up, BGP established, hold-down passed
GATE_TO_FIB = 3.0       # a health check fails (interval 0.2 s, fall 1) -> router FIB
BFD_BOUND = 1.5         # silent director -> router FIB; the hold time alone: 9 s


@pytest.fixture
def lab(tmp_path):
    lab = ScaleOutLab(f"so{os.getpid() % 10000}", tmp_path, directors=3, net=61)
    directors: list[Director] = []
    try:
        lab.up()
        lab.start_router_bird()
        lab.directors_list = directors
        yield lab
    finally:
        for d in directors:
            d.stop_agent(signal.SIGKILL)
        lab.down()


def start_directors(lab: ScaleOutLab, count: int = 3, real_agent: bool = False) -> list[Director]:
    ds = [Director(lab, i, real_agent) for i in range(1, count + 1)]
    lab.directors_list.extend(ds)
    for d in ds:
        d.start_bird()
        d.start_agent()
    return ds


def test_three_healthy_directors_become_three_next_hops_and_a_failed_health_check_withdraws_one(lab):
    d1, d2, d3 = start_directors(lab)
    everyone = {d1.ip, d2.ip, d3.ip}
    lab.wait_next_hops(VIP, everyone, START)
    assert "10.100.0.1 dev lo proto 201" in d2.gate_routes()
    # hadirector status reads BIRD (birdc, every 2 s): the session and BFD as BIRD sees them.
    peer = "peer_" + str(lab.router_ip).replace(".", "_")
    want = (f"{VIP}: announced", f"BGP {peer}: up Established", f"BFD {lab.router_ip} on eth0: Up")
    deadline = time.monotonic() + 15
    while not all(w in (text := d1.status()) for w in want):
        assert time.monotonic() < deadline, text
        time.sleep(0.5)
    # The same destination list and weights on every director, at a glance.
    digests = {line.split()[3] for d in (d1, d2, d3) for line in d.status().splitlines()
               if line.strip().startswith("web: destinations digest")}
    assert len(digests) == 1, digests
    # Every real server of d2's checks fails: below min_healthy -> withdrawn.
    d2.healthy.unlink()
    took = lab.wait_next_hops(VIP, {d1.ip, d3.ip}, GATE_TO_FIB)
    [withdrawn] = d2.events("scaleout.withdrawn")
    assert withdrawn["reason"] == "web:below_min_healthy" and withdrawn["vip"] == VIP
    # Healthy again: back after the hold-down, not before.
    d2.healthy.touch()
    t0 = time.monotonic()
    lab.wait_next_hops(VIP, everyone, GATE_TO_FIB + HOLD_DOWN)
    assert time.monotonic() - t0 >= HOLD_DOWN * 0.9, "re-announced inside the hold-down"
    print(f"health failure -> router FIB: {took * 1000:.0f} ms")
    # The operator drains d1 (hadirector drain, over the root-only control socket).
    out = sh(sys.executable, "-m", "hadirector.cli", "drain", "-c", str(d1.config), ns=d1.ns).stdout
    assert out.strip() == f"drained: {VIP} drained"
    took = lab.wait_next_hops(VIP, {d2.ip, d3.ip}, GATE_TO_FIB)
    print(f"drain -> router FIB: {took * 1000:.0f} ms")
    sh(sys.executable, "-m", "hadirector.cli", "drain", "--undo", "-c", str(d1.config), ns=d1.ns)
    lab.wait_next_hops(VIP, everyone, GATE_TO_FIB + HOLD_DOWN)


def test_kill_9_of_the_agent_is_withdrawn_by_execstoppost_and_kill_9_of_bird_by_the_session_loss(lab):
    d1, d2, d3 = start_directors(lab)
    everyone = {d1.ip, d2.ip, d3.ip}
    lab.wait_next_hops(VIP, everyone, START)
    # kill -9 of the agent: its route stays in table 201 until the unit's
    # ExecStopPost (hadirector withdraw) runs, as systemd does after a crash.
    d1.stop_agent(signal.SIGKILL)
    assert "10.100.0.1" in d1.gate_routes()
    out = sh(sys.executable, "-m", "hadirector.cli", "withdraw", "-c", str(d1.config), ns=d1.ns).stdout
    assert out.strip() == "withdrawn from table 201: 10.100.0.1"
    took = lab.wait_next_hops(VIP, {d2.ip, d3.ip}, GATE_TO_FIB)
    print(f"agent kill -9 + withdraw -> router FIB: {took * 1000:.0f} ms")
    # The agent restarts: the gate honours the hold-down, then d1 is back.
    t0 = time.monotonic()
    d1.start_agent()
    lab.wait_next_hops(VIP, everyone, START)
    assert time.monotonic() - t0 >= HOLD_DOWN
    # kill -9 of d3's BIRD: the BGP session's TCP connection closes, the router withdraws.
    lab.kill_bird("d3")
    took = lab.wait_next_hops(VIP, {d1.ip, d2.ip}, BFD_BOUND)
    print(f"BIRD kill -9 -> router FIB: {took * 1000:.0f} ms")
    d3.start_bird()
    lab.wait_next_hops(VIP, everyone, START)


def test_a_silent_director_is_removed_by_bfd_and_a_graceful_stop_withdraws_before_tear_down(lab):
    d1, d2, d3 = start_directors(lab)
    everyone = {d1.ip, d2.ip, d3.ip}
    lab.wait_next_hops(VIP, everyone, START)
    # d3 goes silent: every packet in and out dropped (no FIN, no RST).
    sh("nft", "-f", "-", ns=d3.ns, input="table inet silent { chain cin { type filter hook input priority -300; "
       "policy drop; }; chain cout { type filter hook output priority -300; policy drop; }; }")
    took = lab.wait_next_hops(VIP, {d1.ip, d2.ip}, BFD_BOUND)
    print(f"silent director -> router FIB (BFD 100 ms x 3): {took * 1000:.0f} ms")
    sh("nft", "delete", "table", "inet", "silent", ns=d3.ns)
    # Heard again: back once BGP re-establishes (error wait time 2 s, not BIRD's 60 s).
    lab.wait_next_hops(VIP, everyone, START)
    # A graceful stop of d2: withdrawn at once, the agent exits drain_grace later.
    t0 = time.monotonic()
    d2.proc.send_signal(signal.SIGTERM)
    lab.wait_next_hops(VIP, {d1.ip, d3.ip}, GATE_TO_FIB)
    withdrawn_at = time.monotonic() - t0
    assert d2.proc.wait(timeout=15) == 0
    exited_at = time.monotonic() - t0
    assert exited_at >= 1.0 > withdrawn_at, (withdrawn_at, exited_at)
    assert d2.gate_routes() == "", "table flushed on stop"
    [w] = d2.events("scaleout.withdrawn")
    assert w["reason"] == "stopping"
    d2.proc = None


def test_a_director_that_cannot_program_ipvs_announces_nothing(lab):
    assert not os.path.exists("/proc/net/ip_vs"), "this test needs a host kernel without IPVS"
    [d1] = start_directors(lab, count=1, real_agent=True)
    # BGP comes up (BIRD is fine), yet the VIP never reaches the router.
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        assert lab.next_hops(VIP) == set(), "a director without IPVS announced the VIP"
        time.sleep(0.1)
    assert "Established" in lab.birdc("rt", "show", "protocols", "d1")
    assert d1.gate_routes() == ""
    started = d1.events("scaleout.started")
    assert started and started[0]["vips"] == [VIP]
    assert d1.events("scaleout.announced") == []
    assert d1.proc.poll() is None, "the agent keeps running (and retrying IPVS)"
