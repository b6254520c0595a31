#!/usr/bin/env python3
"""What signed adverts (``auth``, issue 12) cost: CPU per advert and failover gap, with
and without auth, measured the same way in the same run.

1. Per operation, in this process: encode/decode of one advert, and the HMAC sign /
   verify that ``auth`` adds (``vrrp/auth.py``), in microseconds.
2. Per advert, in real agents: a pair in namespaces at a 10 ms advert interval; the
   master's CPU time (utime + stime from /proc) over a window divided by the adverts it
   sent, the backup's by the adverts it received (counters from /status).
3. The failover gap (tcpdump on the bridge: last advert of the old master -> first of
   the new one) for kill -9 and SIGTERM, with auth enforce and without.

Usage (root; namespaces only):
    .venv/bin/python -m bench.auth [--window 10] [--runs 3] [--advert 0.1]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from hadirector.model import AuthKey, VrrpAuth
from hadirector.vrrp.auth import TRAILER_LEN, AdvertAuth
from hadirector.vrrp.codec import MCAST_V4, Advert, decode, encode
from hadirector.vrrp.timers import master_down_interval, skew_time
from lab.agents import (
    AgentProc, auth_config, failover_packets, gap, gap_runs, instance_config, remove_vip_leftovers,
    wait_for,
)
from lab.lan import Lan, sh

HIGH, LOW = 150, 100
CPU_ADVERT = 0.01
API_PORT = 9110
TICK = 100.0          # USER_HZ: /proc/<pid>/stat times are in 1/100 s


def micro() -> list[tuple[str, float]]:
    src = ipaddress.IPv4Address("10.0.0.1")
    adv = Advert(version=3, vrid=51, priority=100, max_advert_int=CPU_ADVERT,
                 addresses=(ipaddress.IPv4Address("10.0.0.100"),), family=4)
    settings = VrrpAuth(keys=(AuthKey(1, "-", bytes(range(32))),), active_key=1)
    signer = AdvertAuth(settings, family=4, version=3, vrid=51, advert_interval=CPU_ADVERT)
    pdu = encode(adv, src, MCAST_V4)
    wall = time.time()
    wire = encode(adv, src, MCAST_V4, signer.sign(pdu, src, wall))
    trailer = wire[-TRAILER_LEN:]

    n = 20000
    receivers: list = []

    def fresh_receivers():
        # One receiver per call: the replay mark must not refuse the same advert again.
        receivers[:] = [AdvertAuth(settings, family=4, version=3, vrid=51, advert_interval=CPU_ADVERT)
                        for _ in range(n)]

    def verify():
        receivers.pop().verify(pdu, trailer, src, wall)

    cases = [
        ("encode one advert (no auth)", lambda: encode(adv, src, MCAST_V4), None),
        ("decode one advert (no auth)", lambda: decode(pdu, src=src, dst=MCAST_V4, ttl=255, family=4), None),
        ("sign: sequence + HMAC-SHA256 (auth adds, per advert sent)",
         lambda: signer.sign(pdu, src, wall), None),
        ("verify: window, key, HMAC, replay (auth adds, per advert received)", verify, fresh_receivers),
    ]
    out = []
    for name, fn, setup in cases:
        times = []
        for _ in range(5):
            if setup is not None:
                setup()
            times.append(timeit.timeit(fn, number=n))
        out.append((name, min(times) / n * 1e6))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK     # utime, stime


def status(agent: AgentProc) -> dict:
    code = (f"import urllib.request; print(urllib.request.urlopen("
            f"'http://127.0.0.1:{API_PORT}/status', timeout=5).read().decode())")
    out = sh("ip", "netns", "exec", agent.ns, sys.executable, "-c", code).stdout
    return json.loads(out)


def counters(agent: AgentProc) -> tuple[int, int]:
    v = status(agent)["vrrp_instances"][0]
    return v["adverts_sent"], v["adverts_received"]


def pair(lan: Lan, workdir: Path, adv: float, signed: bool, api: bool = False):
    extra = {"auth": auth_config(workdir)} if signed else None
    nodes = []
    for node, prio in ((1, HIGH), (2, LOW)):
        a = AgentProc(lan, node, workdir / ("signed" if signed else "plain"),
                      [instance_config(lan, priority=prio, advert=adv, extra=extra)])
        if api:
            a.extra_config["api"] = {"listen": f"127.0.0.1:{API_PORT}"}
        nodes.append(a)
    return nodes


def elect(lan: Lan, n1: AgentProc, n2: AgentProc) -> None:
    n1.start()
    wait_for(lambda: lan.has_ip(1, lan.vip4()), 20, interval=0.05, what="node 1 master")
    n2.start()
    wait_for(lambda: n2.role() == "BACKUP" and n2.state()["instances"]["vi_1"]["master"], 20,
             interval=0.05, what="node 2 following node 1")


def cpu_run(lan: Lan, workdir: Path, signed: bool, window: float) -> tuple[float, float, int, int]:
    n1, n2 = pair(lan, workdir, CPU_ADVERT, signed, api=True)
    try:
        elect(lan, n1, n2)
        time.sleep(2.0)                                   # past start-up work
        s0, c1, c2 = counters(n1)[0], cpu_seconds(n1.proc.pid), cpu_seconds(n2.proc.pid)
        r0 = counters(n2)[1]
        time.sleep(window)
        s1, d1, d2 = counters(n1)[0], cpu_seconds(n1.proc.pid), cpu_seconds(n2.proc.pid)
        r1 = counters(n2)[1]
        sent, received = s1 - s0, r1 - r0
        return (d1 - c1) / max(sent, 1), (d2 - c2) / max(received, 1), sent, received
    finally:
        n1.stop()
        n2.stop()


def gap_run(lan: Lan, workdir: Path, adv: float, signed: bool, mode: str) -> float | None:
    n1, n2 = pair(lan, workdir, adv, signed)
    try:
        elect(lan, n1, n2)
        time.sleep(3 * adv)
        return gap(failover_packets(lan, n1, adv, mode), str(lan.ip4(1)), str(lan.ip4(2)))
    finally:
        n1.stop()
        n2.stop()
        n1.kill()
        remove_vip_leftovers(lan)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=10.0, help="seconds of CPU measurement per case")
    ap.add_argument("--runs", type=int, default=3, help="failover runs per case (at most 10)")
    ap.add_argument("--advert", type=float, default=0.1, help="advert interval of the failover runs")
    args = ap.parse_args()
    if not shutil.which("tcpdump"):
        print("bench.auth: tcpdump is not installed", file=sys.stderr)
        return 2
    runs = max(1, min(args.runs, 10))

    print("Per operation, this process (best of 5 x 20000; us)")
    print()
    for name, us in micro():
        print(f"  {us:7.2f} us  {name}")

    workdir = Path(tempfile.mkdtemp(prefix="ve-bench-auth-"))
    lan = Lan("ba", nodes=2, net=46)
    cpu: dict[bool, tuple[float, float, int, int]] = {}
    gaps: dict[tuple[bool, str], list[float | None]] = {}
    try:
        lan.up()
        for signed in (False, True):
            cpu[signed] = cpu_run(lan, workdir, signed, args.window)
            print(f"  cpu {'auth' if signed else 'plain'}: {cpu[signed]}", file=sys.stderr, flush=True)
        for mode in ("kill", "graceful"):
            for signed in (False, True):
                gaps[(signed, mode)] = gap_runs(
                    f"{'auth' if signed else 'plain'} {mode}", runs,
                    lambda: gap_run(lan, workdir, args.advert, signed, mode))
    finally:
        lan.down()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"CPU per advert, real agents at a {CPU_ADVERT * 1000:g} ms advert interval "
          f"({args.window:g} s window; /proc utime+stime at 10 ms resolution)")
    print()
    head = f"{'adverts':<8} {'master: us/advert sent':>23} {'sent':>6}  {'backup: us/advert received':>27} {'received':>8}"
    print(head)
    print("-" * len(head))
    for signed in (False, True):
        m, b, sent, received = cpu[signed]
        print(f"{'auth' if signed else 'plain':<8} {m * 1e6:>23.0f} {sent:>6}  {b * 1e6:>27.0f} {received:>8}")
    print()
    print(f"Failover gap at a {args.advert:g} s advert interval: last advert of the old master -> first "
          "of the new one (tcpdump on the bridge; ms)")
    print()
    head = f"{'stop':<8} {'RFC bound':>10}  {'adverts':<7} {'runs':>4} {'min':>8} {'median':>8} {'max':>8}"
    print(head)
    print("-" * len(head))
    for mode in ("kill", "graceful"):
        bound = master_down_interval(LOW, args.advert) if mode == "kill" else skew_time(LOW, args.advert)
        for signed in (False, True):
            vals = [v * 1000 for v in gaps[(signed, mode)] if v is not None]
            cells = (f"{min(vals):8.1f} {statistics.median(vals):8.1f} {max(vals):8.1f}" if vals
                     else f"{'n/a':>8} {'n/a':>8} {'n/a':>8}")
            print(f"{'kill -9' if mode == 'kill' else 'SIGTERM':<8} {bound * 1000:>8.1f}ms  "
                  f"{'auth' if signed else 'plain':<7} {len(vals):>4} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
