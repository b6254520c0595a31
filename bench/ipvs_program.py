#!/usr/bin/env python3
"""Programming a large IPVS table: hadirector's reconciler beside ipvsadm-restore.

In one kernel-lab run (the host kernel has no IPVS; the script re-runs itself in the lab
when needed), in a fresh namespace with an addressed veth:

1. ours, from empty: Reconciler.sync() of 1,000 services x 10 real servers (dump, plan,
   11,000 netlink requests in batches);
2. ours, one weight change on that table: the full level-triggered sync (dump 11,000
   entries, plan, one SET_DEST), and the narrow path update_service() (one service);
3. the table flushed, then ``ipvsadm-restore`` of the same table (the rules text is our
   render_rules(), i.e. what ``ipvsadm -Sn`` prints for it), and one weight change with
   ``ipvsadm -e``.

Every result is checked: after each step our dump must equal the desired table.
Times are wall-clock inside the guest, under TCG emulation (CPU-bound work runs 10-20x
slower than on real hardware; compare the columns, not the absolute numbers).

Usage:  .venv/bin/python -m bench.ipvs_program [--services 1000] [--dests 10]

A run on the development machine (2 cores shared with other labs; kernel 6.1.0-56, TCG):

    what                                                  seconds   writes
    ours: program from empty (Reconciler.sync)             32.474    11000
    ours: one weight change, full sync (dump+plan+1 op)    35.264        1
    ours: one weight change, update_service (1 service)     0.030        1
    ours: re-sync of the whole table, nothing to do        44.512        0
    ipvsadm-restore: program from empty                    54.833    11000
    ipvsadm -e: one weight change (one process)             0.845        1

The full sync of a large table is dominated by the dump (11,000 entries decoded in
Python); a health transition takes the update_service path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from lab import ROOT


def in_lab_or_reexec(argv: list[str]) -> None:
    from lab.kernel import host_has_ipvs, in_lab, run_in_lab
    if host_has_ipvs() or in_lab():
        return
    r = run_in_lab([sys.executable, "-m", "bench.ipvs_program", *argv], cwd=str(ROOT),
                   timeout=3000, memory_mb=2048, stream=sys.stderr)
    sys.exit(r.returncode)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--dests", type=int, default=10)
    args = p.parse_args()
    in_lab_or_reexec(sys.argv[1:])

    from hadirector.ipvs.cli import render_rules
    from hadirector.ipvs.planner import plan
    from hadirector.kernel.reconcile import Reconciler
    from hadirector.ipvs.table import DestKey, ServiceKey, Table, desired_service, desired_table
    from lab import ipvs_scenarios as sc
    from lab.ipvs_scenarios import all_healthy
    from lab.ipvs_netns import IpvsNetns

    cfg = sc.many(args.services, args.dests)
    desired = desired_table(cfg, all_healthy)
    entries = len(desired.services) + sum(len(d) for d in desired.dests.values())
    t_plan, ops = timed(lambda: plan(Table(), desired, set()))
    rules = render_rules(desired)
    # the real server whose weight changes, and the edited config
    vs0 = cfg.virtual_services[args.services // 2]
    rs0 = vs0.real_servers[0]
    cfg2 = sc.with_weight(cfg, vs0.name, str(rs0.address), rs0.weight + 7)
    desired2 = desired_table(cfg2, all_healthy)
    key0 = ServiceKey.of(vs0)
    rows = []

    with IpvsNetns("bn") as ns:
        backend = ns.ipvs()
        try:
            r = Reconciler(backend)
            t_sync, report = timed(lambda: r.sync(desired))
            assert report.ok and len(report.applied) == entries, report.errors[:3]
            t_dump, dumped = timed(backend.dump)
            assert dumped == desired
            rows.append(("ours: program from empty (Reconciler.sync)", t_sync, len(report.applied)))

            t_full, report = timed(lambda: r.sync(desired2))
            assert [type(o).__name__ for o in report.applied] == ["EditDest"]
            rows.append(("ours: one weight change, full sync (dump+plan+1 op)", t_full, 1))

            vs1 = next(v for v in cfg2.virtual_services if v.name == vs0.name)
            svc, dests, _ = desired_service(sc.with_weight(sc.config(vs1), vs0.name, str(rs0.address),
                                                           rs0.weight + 8).virtual_services[0], all_healthy)
            t_one, report = timed(lambda: r.update_service(key0, (svc, dests)))
            assert [type(o).__name__ for o in report.applied] == ["EditDest"]
            rows.append(("ours: one weight change, update_service (1 service)", t_one, 1))
            r.sync(desired2)      # back to desired2 (undo the update_service change)
            t_noop, report = timed(lambda: r.sync(desired2))
            assert report.planned == []
            rows.append(("ours: re-sync of the whole table, nothing to do", t_noop, 0))

            ns.run("ipvsadm", "-C")     # the product never flushes: the operator's tool does
            assert len(backend.dump()) == 0
            t_restore, proc = timed(lambda: subprocess.run(["ip", "netns", "exec", ns.name, "ipvsadm-restore"],
                                                          input=rules, text=True, capture_output=True))
            assert proc.returncode == 0, proc.stderr[-500:]
            assert backend.dump() == desired
            rows.append(("ipvsadm-restore: program from empty", t_restore, entries))
            port = rs0.port
            t_edit, proc = timed(lambda: subprocess.run(
                ["ip", "netns", "exec", ns.name, "ipvsadm", "-e", "-t", f"{vs0.address}:{vs0.port}",
                 "-r", f"{rs0.address}:{port}", "-m", "-w", str(rs0.weight + 7)], capture_output=True, text=True))
            assert proc.returncode == 0, proc.stderr
            assert backend.dump().dests[key0][DestKey(str(rs0.address), port)].weight == rs0.weight + 7
            rows.append(("ipvsadm -e: one weight change (one process)", t_edit, 1))
        finally:
            backend.close()

    print()
    print(f"IPVS programming, {args.services} services x {args.dests} real servers = {entries} kernel entries")
    print(f"kernel {os.uname().release}, under QEMU TCG (the kernel lab); pure planning from empty: "
          f"{t_plan * 1000:.0f} ms for {len(ops)} ops; full dump of the table: {t_dump:.2f} s")
    print()
    w = max(len(name) for name, _, _ in rows)
    print(f"{'what':<{w}}  {'seconds':>8}  {'writes':>7}  {'per write':>10}")
    for name, secs, writes in rows:
        per = f"{secs / writes * 1e6:.0f} us" if writes else "-"
        print(f"{name:<{w}}  {secs:>8.3f}  {writes:>7}  {per:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
