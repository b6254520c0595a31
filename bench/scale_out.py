"""Scale-out control plane on this host: how fast a director leaves the router's FIB.

    .venv/bin/python -m bench.scale_out              # 5 runs per event, ~3 min
    .venv/bin/python -m bench.scale_out --runs 2

The lab of tests/netns/test_scaleout_bgp.py (lab/scaleout.py): a router namespace with
BIRD 2 (ECMP, merge paths, BFD 100 ms x 3) and three directors, each with its own BIRD
(config from ``hadirector bird-config``) and the real agent with a stateful fake IPVS
(this host has no IPVS; the data-plane half -- 0 broken connections when flows move --
is tests/kernel/test_scaleout_traffic.py's). Per event, the time from the cause to the
router's FIB losing that director's next hop (``ip route show VIP`` polled every 20 ms,
so +-20 ms; a cause that is a command -- ``hadirector drain``, ``withdraw`` -- counts its
own Python start-up, as an operator or systemd would see it), then the director is brought back and the next run starts from 3 next hops.

Goals from issue 14: graceful drain <= 50 ms to the router, silent failure <= 400 ms
with BFD.

Then, in the same run, the naive anchor (shared/scale-out.md 3a): the same router and
BGP, but the directors terminate TCP themselves (a server on each, as MetalLB or
kube-proxy nodes do); long-lived connections are opened through the ECMP route, one
director is drained, and every connection is asked for a line: a flow the router moved
to another director finds no socket there and is reset. hadirector's side of that row
(IPVS mh + sloppy_tcp: 0 broken) needs IPVS: tests/kernel/test_scaleout_traffic.py.
The anchor's servers and client are lab/scaleout_ipvs.py's.

Last, the event "a backend fails while flows move", in real IPVS (lab/scaleout_ipvs.py
in one kernel-lab boot, a few minutes): long-lived connections over three directors,
one real server dies and is taken out on every director -- at weight 0 as hadirector
does, and deleted as the negative control -- while the edge director leaves the ECMP
set; the connections to live real servers that broke.

    .venv/bin/python -m bench.scale_out --anchor-only        # the anchor alone, ~1 min
    .venv/bin/python -m bench.scale_out --backend-only       # the backend event alone
    .venv/bin/python -m bench.scale_out --no-backend         # no kernel-lab boot
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hadirector.api.cli import control_request
from lab import ROOT
from lab.netns import sh
from lab.scaleout import VIP, Director, ScaleOutLab
from lab.scaleout_ipvs import Client, start_server

START = 60.0
SILENT = ("table inet silent { chain cin { type filter hook input priority -300; policy drop; }; "
          "chain cout { type filter hook output priority -300; policy drop; }; }")


def hadirector(d: Director, *args: str) -> None:
    sh(sys.executable, "-m", "hadirector.cli", *args, "-c", str(d.config), ns=d.ns)


def run(runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        lab = ScaleOutLab(f"bs{os.getpid() % 10000}", Path(tmp), directors=3, net=62)
        ds: list[Director] = []
        try:
            lab.up()
            lab.start_router_bird()
            ds = [Director(lab, i) for i in (1, 2, 3)]
            for d in ds:
                d.start_bird()
                d.start_agent()
            everyone = {d.ip for d in ds}
            lab.wait_next_hops(VIP, everyone, START)
            d = ds[1]                      # the middle one: a cause on d2 only
            rest = everyone - {d.ip}

            def measure(name: str, cause, restore) -> None:
                t0 = time.monotonic()
                cause()
                lab.wait_next_hops(VIP, rest, 30.0)
                results.setdefault(name, []).append((time.monotonic() - t0) * 1000)
                restore()
                lab.wait_next_hops(VIP, everyone, START)

            for _ in range(runs):
                measure("health check fails (interval 0.2 s, fall 1)", lambda: d.healthy.unlink(),
                        lambda: d.healthy.touch())
                # The drain command as the agent gets it (without the CLI's start-up).
                sock = str(d.dir / "state" / "control.sock")
                measure("drain (control socket)", lambda: control_request(sock, "drain", timeout=10),
                        lambda: control_request(sock, "undrain", timeout=10))
                measure("agent SIGTERM (withdraw first)", lambda: d.proc.send_signal(signal.SIGTERM),
                        lambda: (d.proc.wait(timeout=15), d.start_agent()))
                measure("agent kill -9, then ExecStopPost withdraw",
                        lambda: (d.stop_agent(signal.SIGKILL), hadirector(d, "withdraw")),
                        d.start_agent)
                measure("BIRD kill -9", lambda: lab.kill_bird(f"d{d.i}"), d.start_bird)
                measure("silent director (nftables drop), BFD 100 ms x 3",
                        lambda: sh("nft", "-f", "-", ns=d.ns, input=SILENT),
                        lambda: sh("nft", "delete", "table", "inet", "silent", ns=d.ns))
        finally:
            for x in ds:
                x.stop_agent(signal.SIGKILL)
            lab.down()
    return results


def route_order(lab: ScaleOutLab) -> list[str]:
    """The router's next hops for the VIP in the order of its multipath route (the
    order hash-threshold splits the hash space in)."""
    words = sh("ip", "-4", "route", "show", f"{VIP}/32", ns=lab.router).stdout.split()
    return [words[i + 1] for i, w in enumerate(words) if w == "via"]


def anchor(connections: int) -> list[dict]:
    """Directors that terminate TCP themselves behind the same ECMP router: per drained
    director (an edge next hop, then the middle one), the connections broken."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-anchor-") as tmp:
        lab = ScaleOutLab(f"ba{os.getpid() % 10000}", Path(tmp), directors=3, net=63)
        cl, me, gw = f"{lab.tag}cl", f"10.{lab.net}.9.2", f"10.{lab.net}.9.1"
        ds: list[Director] = []
        procs: list[subprocess.Popen] = []
        try:
            lab.up()
            sh("ip", "netns", "add", cl)
            sh("ip", "link", "set", "lo", "up", ns=cl)
            sh("ip", "link", "add", "cl0", "netns", lab.router, "type", "veth", "peer", "name", "eth0", "netns", cl)
            sh("ip", "addr", "add", f"{gw}/24", "dev", "cl0", ns=lab.router)
            sh("ip", "link", "set", "cl0", "up", ns=lab.router)
            sh("ip", "addr", "add", f"{me}/24", "dev", "eth0", ns=cl)
            sh("ip", "link", "set", "eth0", "up", ns=cl)
            sh("ip", "route", "add", "default", "via", gw, ns=cl)
            lab.start_router_bird()
            ds = [Director(lab, i) for i in (1, 2, 3)]
            for d in ds:
                sh("ip", "route", "add", "default", "via", str(lab.router_ip), ns=d.ns)
                procs.append(start_server(d.ns, d.ip))
                d.start_bird()
                d.start_agent()
            everyone = {d.ip for d in ds}
            lab.wait_next_hops(VIP, everyone, START)
            order = route_order(lab)
            client = Client(cl, VIP, me, timeout=5)
            procs.append(client.proc)
            ask = client.ask

            for place, ip, port0 in (("edge", order[-1], 40000), ("middle", order[1], 41000)):
                d = next(x for x in ds if x.ip == ip)
                opened = ask(f"open {connections} {port0}")
                sock = str(d.dir / "state" / "control.sock")
                control_request(sock, "drain", timeout=10)
                lab.wait_next_hops(VIP, everyone - {ip}, 30.0)
                after = ask("ping")
                lost = [p for p, name in after.items() if name != opened[p]]
                rows.append({
                    "event": f"{place} director of 3 drained (next hop {order.index(ip) + 1} of 3)",
                    "connections": connections,
                    "broken": len(lost),
                    "on_it": sum(opened[p] == ip for p in opened),
                    "broken_survivors": sum(opened[p] != ip for p in lost),
                    "spread": sorted(collections.Counter(opened.values()).values()),
                })
                ask("close")
                control_request(sock, "undrain", timeout=10)
                lab.wait_next_hops(VIP, everyone, START)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)
            for x in ds:
                x.stop_agent(signal.SIGKILL)
            lab.down()
            sh("ip", "netns", "del", cl, check=False)
    return rows


def anchor_table(rows: list[dict]) -> str:
    lines = ["| event | directors terminate TCP (anchor): broken | of them on the drained one | "
             "moved between survivors | new-flow spread |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['event']} | {r['broken']} of {r['connections']} | {r['on_it']} | "
                     f"{r['broken_survivors']} | {' / '.join(map(str, r['spread']))} |")
    return "\n".join(lines)


def table(results: dict[str, list[float]]) -> str:
    lines = ["| event (on 1 of 3 directors) | runs | min ms | median ms | max ms |", "|---|---|---|---|---|"]
    for name, values in results.items():
        lines.append(f"| {name} | {len(values)} | {min(values):.0f} | {statistics.median(values):.0f} | "
                     f"{max(values):.0f} |")
    return "\n".join(lines)


ROWS_MARK = "scale-out backend rows: "


def backend_fails(connections: int) -> list[dict]:
    """A backend fails while flows move, in real IPVS (lab/scaleout_ipvs.py; needs the
    kernel lab): ``connections`` long-lived connections over the three directors (ECMP),
    rs1 dies, every director takes it out -- as hadirector does (weight 0, through its
    planner and reconciler) or, as the negative control, by deleting it -- and the edge
    director leaves the ECMP set, so the router moves about half the flows; then a line
    on every connection. Movers and the spread come from the directors' connection
    entries (``ipvsadm -Lnc``)."""
    from hadirector.model import HealthState
    from lab.scaleout_ipvs import DIRECTORS, ScaleOutIpvsLab
    from lab.scaleout_ipvs import VIP as IPVS_VIP

    rows: list[dict] = []
    lab = ScaleOutIpvsLab(f"bk{os.getpid() % 10000}")
    try:
        lab.up()
        rs1 = lab.address_of["rs1"]

        def rs1_down(vs, rs) -> HealthState:
            return HealthState.DOWN if str(rs.address) == rs1 else HealthState.UP

        for how, port0 in (("weight 0 (hadirector)", 46000), ("deleted (negative control)", 50000)):
            lab.program("mh")
            client = lab.client()
            try:
                lab.route_via(*DIRECTORS)
                opened = client.open(connections, port0)
                ok = {p for p, name in opened.items() if not name.startswith("broken")}
                before = [set(lab.chosen(d)) & ok for d in range(3)]
                lab.stop_server(0)
                if how.startswith("weight"):
                    lab.set_health(rs1_down)
                else:
                    for d in range(3):
                        lab.ipvsadm(d, "-d", "-t", f"{IPVS_VIP}:80", "-r", f"{rs1}:80")
                lab.route_via(*DIRECTORS[:2])          # the edge next hop leaves
                answers = client.ping()
                moved = set().union(*((set(lab.chosen(d)) & ok) - before[d] for d in range(2)))
                live = {p for p in ok if opened[p] != "rs1"}
                lost = [p for p in live if answers.get(p, opened[p]) != opened[p]]
                rows.append({"how": how, "connections": connections, "opened": len(ok), "live": len(live),
                             "moved_live": len(moved & live), "broken_live": len(lost),
                             "with_rs1": len(ok - live), "spread": [len(b) for b in before]})
            finally:
                client.close()
                lab.start_server(0)
    finally:
        lab.down()
    return rows


def backend_rows(connections: int) -> list[dict]:
    """``backend_fails`` here if this kernel has IPVS, else in one kernel-lab boot."""
    from lab.kernel import host_has_ipvs, in_lab, run_in_lab
    if host_has_ipvs() or in_lab():
        return backend_fails(connections)
    print("this kernel has no IPVS: the backend event runs in the kernel lab (QEMU, minutes)", file=sys.stderr)
    r = run_in_lab([sys.executable, "-m", "bench.scale_out", "--backend-only", "--backend-connections",
                    str(connections)], cwd=str(ROOT), timeout=3000, memory_mb=2048, stream=sys.stderr)
    for line in r.output.splitlines():
        if line.startswith(ROWS_MARK):
            return json.loads(line[len(ROWS_MARK):])
    raise RuntimeError(f"kernel lab exited {r.returncode} without the backend rows")


def backend_table(rows: list[dict]) -> str:
    lines = ["| event (kernel lab: IPVS mh, 3 DR directors, 3 real servers) | failed backend taken out by | "
             "live connections | of them moved to another director | broken to live backends | lost with the "
             "failed backend | new-flow spread |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| a backend fails while flows move (rs1 dies, the edge director leaves) | {r['how']} | "
                     f"{r['live']} of {r['connections']} | {r['moved_live']} | {r['broken_live']} of {r['live']} | "
                     f"{r['with_rs1']} | {' / '.join(map(str, r['spread']))} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--connections", type=int, default=150, help="long-lived connections of the anchor")
    p.add_argument("--anchor-only", action="store_true", help="only the naive anchor, not the timings")
    p.add_argument("--backend-connections", type=int, default=3000,
                   help="long-lived connections of the backend event (kernel lab)")
    p.add_argument("--backend-only", action="store_true", help="only the backend event (kernel lab)")
    p.add_argument("--no-backend", action="store_true", help="without the backend event (no kernel-lab boot)")
    args = p.parse_args()
    if args.backend_only:
        from lab.kernel import in_lab
        rows = backend_rows(args.backend_connections)
        if in_lab():                # for the run outside that booted the lab
            print(ROWS_MARK + json.dumps(rows), flush=True)
        print(backend_table(rows))
        return 0
    if not args.anchor_only:
        print(table(run(args.runs)))
        print()
    print(anchor_table(anchor(args.connections)))
    if not (args.anchor_only or args.no_backend):
        print()
        print(backend_table(backend_rows(args.backend_connections)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
