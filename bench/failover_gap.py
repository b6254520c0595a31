#!/usr/bin/env python3
"""Failover gap of hadirector and keepalived, measured the same way in the same run.

For each implementation x advert interval x stop mode, a pair (priority 150 master,
priority 100 backup) runs in two namespaces on a bridge; tcpdump in the switch
namespace timestamps every VRRP packet. The gap is

    last advert of the old master  ->  first advert of the new master

(for a graceful stop the last advert is the priority-0 one). It is printed beside the
RFC 5798 bound: Master_Down_Interval for kill -9, Skew_Time for a graceful stop (6.1,
6.4.2), both for the backup's priority 100.

Usage (root; namespaces only, no other traffic):
    .venv/bin/python -m bench.failover_gap [--runs 3] [--adverts 1,0.1] [--impl hadirector,keepalived]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hadirector.vrrp.timers import master_down_interval, skew_time
from lab.agents import (
    AgentProc, KeepalivedProc, failover_packets, gap, gap_runs, instance_config, keepalived_conf,
    remove_vip_leftovers, wait_for,
)
from lab.lan import Lan

HIGH, LOW = 150, 100
MAX_RUNS = 10
VERBOSE = False


def make_pair(impl: str, lan: Lan, workdir: Path, adv: float):
    if impl == "hadirector":
        n1 = AgentProc(lan, 1, workdir, [instance_config(lan, priority=HIGH, advert=adv)])
        n2 = AgentProc(lan, 2, workdir, [instance_config(lan, priority=LOW, advert=adv)])
    else:
        conf = lambda node, prio: keepalived_conf(  # noqa: E731
            router_id=f"k{node}", vrid=51, priority=prio, advert=adv, vip=str(lan.vip4()))
        n1 = KeepalivedProc(lan, 1, workdir, conf(1, HIGH))
        n2 = KeepalivedProc(lan, 2, workdir, conf(2, LOW))
    return n1, n2


def following(node) -> bool:
    if isinstance(node, AgentProc):
        inst = node.state().get("instances", {}).get("vi_1", {})
        return inst.get("state") == "BACKUP" and bool(inst.get("master"))
    return "Entering BACKUP STATE" in node.log_text(since_start=True)


def one_run(impl: str, lan: Lan, workdir: Path, adv: float, mode: str) -> float | None:
    n1, n2 = make_pair(impl, lan, workdir, adv)
    try:
        n1.start()
        wait_for(lambda: lan.has_ip(1, lan.vip4()), 20 + 4 * adv, interval=0.05, what="node 1 master")
        n2.start()
        # Node 2 has started and is following node 1's adverts.
        wait_for(lambda: following(n2), 20, interval=0.05, what="node 2 backup")
        time.sleep(3 * adv)
        if lan.has_ip(2, lan.vip4()):
            raise RuntimeError("node 2 took the VIP while node 1 was master")
        packets = failover_packets(lan, n1, adv, mode)
        if VERBOSE:
            t0 = packets[0][0] if packets else 0
            for p in packets:
                print(f"    {p[0] - t0:9.4f} {p[1]:>12} prio {p[2]}", file=sys.stderr)
        return gap(packets, str(lan.ip4(1)), str(lan.ip4(2)))
    finally:
        n1.stop()
        n2.stop()
        if mode == "kill":
            n1.kill()
        remove_vip_leftovers(lan)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--adverts", default="1,0.1")
    ap.add_argument("--impl", default="hadirector,keepalived")
    ap.add_argument("--modes", default="kill,graceful")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each packet timeline")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    runs = max(1, min(args.runs, MAX_RUNS))
    adverts = [float(a) for a in args.adverts.split(",")]
    impls = args.impl.split(",")
    modes = args.modes.split(",")
    for tool in ("tcpdump", "keepalived"):
        if tool in ("keepalived",) and "keepalived" not in impls:
            continue
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"failover_gap: {tool} is not installed", file=sys.stderr)
            return 2

    workdir = Path(tempfile.mkdtemp(prefix="ve-bench-"))
    lan = Lan("bn", nodes=2, net=40)
    results: dict[tuple[str, float, str], list[float | None]] = {}
    try:
        lan.up()
        for adv in adverts:
            for mode in modes:
                for impl in impls:
                    results[(impl, adv, mode)] = gap_runs(
                        f"{impl:<11} advert {adv:g}s {mode:<8}", runs,
                        lambda: one_run(impl, lan, workdir, adv, mode))
    finally:
        lan.down()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("Failover gap: last advert of the old master -> first advert of the new one")
    print("(tcpdump on the bridge; backup priority 100; ms; RFC 5798 bound for the backup)")
    print()
    header = f"{'advert':>7} {'stop':<9} {'RFC bound':>10}  {'impl':<11} {'runs':>4} {'min':>8} {'median':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for adv in adverts:
        for mode in modes:
            bound = master_down_interval(LOW, adv) if mode == "kill" else skew_time(LOW, adv)
            label = "kill -9" if mode == "kill" else "SIGTERM"
            for impl in impls:
                vals = [v * 1000 for v in results[(impl, adv, mode)] if v is not None]
                missing = len(results[(impl, adv, mode)]) - len(vals)
                if vals:
                    cells = f"{min(vals):8.1f} {statistics.median(vals):8.1f} {max(vals):8.1f}"
                else:
                    cells = f"{'n/a':>8} {'n/a':>8} {'n/a':>8}"
                note = f"  ({missing} run(s) unmeasured)" if missing else ""
                print(f"{adv:>6g}s {label:<9} {bound * 1000:>8.1f}ms  {impl:<11} {len(vals):>4} {cells}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
