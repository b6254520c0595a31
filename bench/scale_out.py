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

The default invocation (host timings, anchor, backend event) takes ~8 min: ~4 min of
host namespaces, ~15 s of anchor, ~4 min of kernel lab.

One run with every event of issue 14 (``--kernel-lab``): the host timings and the anchor
as above, then ONE kernel-lab boot (a snapshot of HEAD, as bench/pair_failover runs)
with, in turn: lab/scaleout_demo.py's event sequence (its ``ScaleOutRun``: the same
backend through each director, d3 silent and back, d2's agent kill -9 and back, d1's
clean stop and back, d4 joins; 60 long-lived connections) where after each event the
router is asked the next hop of 1200 new 5-tuples (``ip route get``, hash policy 3: where
it sends them) and they are counted per director it announces; the backend event
above; and bench/pair_failover's keepalived DR pair with the sync daemon, master killed
with -9, 5 times at a 1 s advert. Then one printout: a header (commit, load average at
start and end, the goals), one table per event -- broken of established, time until
traffic leaves, new-flow spread (max deviation from 1/N), goal met -- with the keepalived
pair's rows beside the N active directors, then the host, anchor and backend tables.
JSON, the demo's report and the agents' logs in --out (results/scale-out-bench/).

    .venv/bin/python -m bench.scale_out --kernel-lab         # ~25 min (the kernel lab bounded at 54 min)
    .venv/bin/python -m bench.scale_out --kernel-lab-only    # the kernel-lab part alone, ~20 min
    .venv/bin/python -m bench.scale_out --table results/scale-out-bench/scale_out.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hadirector.api.cli import control_request
from lab import ROOT
from lab.netns import sh
from lab.scaleout import VIP, Director, ScaleOutLab
from lab.scaleout_demo import PORT0, EventResult, ScaleOutRun, spread
from lab.scaleout_ipvs import Client, start_server

START = 60.0
# The host part's graceful events (the goal: <= GOAL_DRAIN) and its silent one (<= GOAL_SILENT).
HOST_DRAIN = ("drain (control socket)", "agent SIGTERM (withdraw first)")
HOST_SILENT = "silent director (nftables drop), BFD 100 ms x 3"
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
                measure(HOST_DRAIN[0], lambda: control_request(sock, "drain", timeout=10),
                        lambda: control_request(sock, "undrain", timeout=10))
                measure(HOST_DRAIN[1], lambda: d.proc.send_signal(signal.SIGTERM),
                        lambda: (d.proc.wait(timeout=15), d.start_agent()))
                measure("agent kill -9, then ExecStopPost withdraw",
                        lambda: (d.stop_agent(signal.SIGKILL), hadirector(d, "withdraw")),
                        d.start_agent)
                measure("BIRD kill -9", lambda: lab.kill_bird(f"d{d.i}"), d.start_bird)
                measure(HOST_SILENT,
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


# --- one table per event (pure): N active directors beside an active/standby pair ------------

# Goals from issue 14.
GOAL_BROKEN = 0            # established connections broken while their real server lives
GOAL_SILENT = 0.400        # s: a silent director out of the router's FIB (BFD 100 ms x 3)
GOAL_DRAIN = 0.050         # s: a graceful drain (withdraw) reaches the router
GOAL_SPREAD = 20.0         # %: each director's share of new flows within +-20 % of 1/N
GOALS = (f"{GOAL_BROKEN} established connections broken while their real server lives; a silent director "
         f"out of the router's FIB in <= {GOAL_SILENT * 1000:.0f} ms (BFD); a graceful drain at the router "
         f"in <= {GOAL_DRAIN * 1000:.0f} ms; each director within +-{GOAL_SPREAD:.0f} % of 1/N of new flows")

# What an event is, for its goals: a director lost without a word ("silent"; the pair's
# master killed is one too), one that withdraws first ("drain"), and the rest, whose
# only goals are 0 broken and the spread. "control" rows break by design.
TIME_GOALS = {"silent": GOAL_SILENT, "pair-kill": GOAL_SILENT, "drain": GOAL_DRAIN}
JOINING = ("join", "rejoin")


@dataclass(frozen=True)
class Row:
    """One event's line: established connections broken, the time until traffic left
    the failed director (for a join: until the router sent it flows), and how the
    router spreads new flows over the directors it has afterwards."""
    event: str
    kind: str                        # silent, drain, kill, join, rejoin, same, backend, control, pair-kill
    established: int | None
    broken: int | None
    leaves: float | None             # s
    spread: dict[str, int] = field(default_factory=dict)   # new flows per active director
    note: str = ""                   # beside the time


def fmt_s(seconds: float | None) -> str:
    """A time as a table shows it: ms below 1 s, else seconds (0.01 s below 10 s)."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def deviation(spread: dict[str, int]) -> float | None:
    """The largest distance of one director's share of new flows from 1/N, in % of
    1/N (0.1 % steps); None without flows."""
    total = sum(spread.values())
    if not spread or total == 0:
        return None
    n = len(spread)
    return round(max(abs(count * n / total - 1) for count in spread.values()) * 100, 1)


def judge(row: Row) -> tuple[bool | None, str]:
    """Whether ``row`` meets the goals that apply to its kind, and what it misses;
    None for a negative control."""
    if row.kind == "control":
        return None, "negative control (breaks by design)"
    misses = []
    if row.broken is not None and row.broken > GOAL_BROKEN:
        misses.append(f"{row.broken} broken")
    limit = TIME_GOALS.get(row.kind)
    if limit is not None:
        if row.leaves is None:
            misses.append("not timed")
        elif row.leaves > limit:
            misses.append(f"{fmt_s(row.leaves)} > {fmt_s(limit)}")
    if len(row.spread) >= 2:
        dev = deviation(row.spread)
        if dev is None:
            misses.append("no new flows counted")
        elif dev > GOAL_SPREAD:
            misses.append(f"spread {dev:g} % > {GOAL_SPREAD:g} %")
    return not misses, "yes" if not misses else "no: " + ", ".join(misses)


def rows_from_events(lab: dict) -> list[Row]:
    """The scale-out lab's events (``kernel_lab_inside``'s ``scale_out``) as rows."""
    rows = []
    for e in lab["events"]:
        kind = lab["kinds"].get(e["event"], "other")
        note = f"stall {fmt_s(e['stall'])}" if e.get("leaves") and e.get("stall") else ""
        rows.append(Row(e["event"], kind, e["established"], len(e["broken"]), e.get("detection"),
                        dict(lab["new_flow_spreads"].get(e["event"], {})), note))
    return rows


def rows_from_backend(rows: list[dict]) -> list[Row]:
    """``backend_fails``'s rows: weight 0 is hadirector's way, deleting the control."""
    out = []
    for r in rows:
        control = not r["how"].startswith("weight")
        out.append(Row(f"a backend fails while flows move (rs1 dies, the edge director leaves), taken out by "
                       f"{r['how']}: {r['moved_live']} live flows moved", "control" if control else "backend",
                       r["live"], r["broken_live"], None,
                       {f"d{i}": n for i, n in enumerate(r["spread"], 1)}))
    return out


def rows_from_pair(doc: dict) -> list[Row]:
    """bench/pair_failover's kill -9 records (one row per implementation and advert
    interval): the long-lived connections lost at the failover, and the takeover (stop
    -> the standby's first advert: until then the killed master's kernel still has the
    VIP, so traffic leaves it then), with the client's service gap beside it."""
    keys: list[tuple] = []
    for r in doc.get("records", []):
        k = (r["impl"], r["advert"])
        if r["stop"] == "kill" and k not in keys:
            keys.append(k)
    out = []
    for impl, advert in keys:
        rs = [r for r in doc["records"] if (r["impl"], r["advert"], r["stop"]) == (impl, advert, "kill")]
        opened = sum(r["failover"]["long_opened"] for r in rs)
        survived = sum(r["failover"]["long_survived"] for r in rs)
        takeovers = [r["takeover_s"] for r in rs if r.get("takeover_s") is not None]
        gaps = [r["failover"]["max_gap"] for r in rs]
        note = "; ".join(filter(None, [f"max {fmt_s(max(takeovers))}" if takeovers else "",
                                       f"service gap median {fmt_s(statistics.median(gaps))}" if gaps else ""]))
        out.append(Row(f"{impl} pair (active/standby, DR, sync daemon): master killed (kill -9), advert "
                       f"{advert:g} s, {len(rs)} runs", "pair-kill", opened, max(0, opened - survived),
                       statistics.median(takeovers) if takeovers else None, {}, note))
    return out


def _time_cell(row: Row) -> str:
    if row.leaves is None:
        return "-"
    text = fmt_s(row.leaves)
    if row.kind in JOINING:
        text = f"joins after {text}"
    elif row.kind == "pair-kill":
        text = f"takeover median {text}"
    return text + (f" ({row.note})" if row.note else "")


def _spread_cell(row: Row) -> str:
    if row.kind == "pair-kill":
        return "1 active director (the standby takes none)"
    if not row.spread:
        return "-"
    dev = deviation(row.spread)
    cells = ", ".join(f"{d} {n}" for d, n in row.spread.items())
    return cells + ("" if dev is None else f" (max {dev:g} % off 1/{len(row.spread)})")


def event_table(groups: list[tuple[str, list[Row]]]) -> str:
    """One markdown table, a heading row per group."""
    lines = ["| event | broken of established | time until traffic leaves | new-flow spread per director "
             "(max deviation from 1/N) | goal met? |", "|---|---|---|---|---|"]
    for title, rows in groups:
        lines.append(f"| **{title}** | | | | |")
        for r in rows:
            broken = "-" if r.broken is None else f"{r.broken} of {r.established}"
            lines.append(f"| {r.event} | {broken} | {_time_cell(r)} | {_spread_cell(r)} | {judge(r)[1]} |")
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


# --- the kernel-lab part: the demo's events, the backend event and the keepalived pair, one boot ---

LAB_JSON = "kernel_lab.json"
# New 5-tuples whose next hop the router is asked after each event. A fair hash puts
# Binomial(n, 1/N) on a director: at n = 600 and N = 4 the +-20 % goal is 2.8 standard
# deviations (about 2 % of runs would miss it by chance alone), at 1200 it is 4.
NEW_FLOWS = 1200
SPREAD_PORT0 = 20000          # their source ports: below the demo's long-lived ones (40000..)


class SpreadRun(ScaleOutRun):
    """lab/scaleout_demo.py's lab and events, unchanged, plus after each event the
    router's next hop for ``new_flows`` new flows (the same 5-tuples each time: client
    address, source ports SPREAD_PORT0.., the VIP, port 80), counted per director it then
    announces. With hash policy 3 ``ip route get`` gives where the router sends them
    (shared/scale-out.md 3a: 300 of 300), so no connection has to be opened -- or counted
    on a director -- to know the spread, and the long-lived ones are not disturbed."""

    def __init__(self, workdir: Path, *, new_flows: int = NEW_FLOWS, **kw) -> None:
        super().__init__(workdir, **kw)
        if not 0 < new_flows <= PORT0 - SPREAD_PORT0:
            raise ValueError(f"new flows: {new_flows} is not in 1..{PORT0 - SPREAD_PORT0}")
        self.new_flows = new_flows
        self.kinds: dict[str, str] = {}
        self.new_spreads: dict[str, dict[str, int]] = {}

    def measure_spread(self, event: str) -> dict[str, int]:
        hops = self.announced()
        route = self.lab.flow_map(range(SPREAD_PORT0, SPREAD_PORT0 + self.new_flows))
        counts = spread(route, {ip: name for ip, name in self.names().items() if ip in hops})
        self.new_spreads[event] = counts
        return counts

    def event(self, name: str, *args, **kw) -> EventResult:
        result = super().event(name, *args, **kw)
        self.measure_spread(name)
        return result

    def tag(self, results: list[EventResult], *kinds: str) -> list[EventResult]:
        for r, kind in zip(results, kinds):
            self.kinds[r.event] = kind
        return results

    def same_backend(self) -> EventResult:
        result = super().same_backend()
        self.measure_spread(result.event)
        return self.tag([result], "same")[0]

    def silent_failure(self, i: int) -> list[EventResult]:
        return self.tag(super().silent_failure(i), "silent", "rejoin")

    def agent_kill(self, i: int) -> list[EventResult]:
        return self.tag(super().agent_kill(i), "kill", "rejoin")

    def clean_stop(self, i: int) -> list[EventResult]:
        return self.tag(super().clean_stop(i), "drain", "rejoin")

    def join(self, i: int, new_flows: int) -> EventResult:
        return self.tag([super().join(i, new_flows)], "join")[0]

    def record(self) -> dict:
        return {"connections": self.connections, "new_flows": self.new_flows,
                "events": [{**asdict(r), "broken": {str(p): why for p, why in r.broken.items()}}
                           for r in self.results],
                "kinds": self.kinds, "new_flow_spreads": self.new_spreads,
                "unexpected_session_drops": [f"{d.at:%H:%M:%S.%f}"[:-3] + f" {d.peer} ({d.reason}) during {w}"
                                             for d, w, ok in self.session_drops() if not ok]}


def scale_out_events(out: Path, connections: int, new_flows: int) -> dict:
    """The demo's event sequence (``ScaleOutRun.run_all``) with the spread after each;
    its report and the agents' and BIRDs' logs go to ``out``. Raises after saving what
    it has if the lab stopped early."""
    # BIRD's and the agents' control sockets need a local filesystem (not the lab's 9p share).
    work = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    run = SpreadRun(work, connections=connections, new_flows=new_flows)
    failed = None
    try:
        run.up()
        run.run_all()
    except Exception as e:  # noqa: BLE001 - what ran is recorded; the reason goes beside it
        failed = f"{type(e).__name__}: {e}"
    finally:
        try:
            report = run.report()
            record = run.record()
        finally:
            run.down()
            logs = out / "scale-out-logs"
            logs.mkdir(exist_ok=True)
            for d in run.directors.values():
                if d.log.exists():
                    shutil.copy(d.log, logs / f"{d.name}-agent.log")
            for log in work.glob("bird-*.log"):
                shutil.copy(log, logs / log.name)
            shutil.rmtree(work, ignore_errors=True)
    (out / "scale-out-report.txt").write_text(report + (f"\nthe lab stopped early: {failed}\n" if failed else ""))
    print(report, flush=True)
    record["error"] = failed
    return record


def kernel_lab_inside(a: argparse.Namespace) -> int:
    """In a kernel with IPVS, one after another: the scale-out events, the backend
    event, bench/pair_failover's keepalived pair; ``LAB_JSON`` in ``a.out`` is rewritten
    after each, and a part that fails is recorded and the next runs."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict = {"commit": a.commit, "started": time.time(), "scale_out": None, "backend": None, "pair": None,
                 "errors": [], "finished": False}

    def save() -> None:
        tmp = out / (LAB_JSON + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(out / LAB_JSON)

    def part(name: str, fn) -> None:
        print(f"[scale-out bench] {name}", flush=True)
        try:
            doc[name] = fn()
        except Exception as e:  # noqa: BLE001 - record it, run the next part
            doc["errors"].append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        save()

    save()
    part("scale_out", lambda: scale_out_events(out, a.lab_connections, a.new_flows))
    if doc["scale_out"] and doc["scale_out"]["error"]:
        doc["errors"].append(f"scale_out: the lab stopped early: {doc['scale_out']['error']}")
    part("backend", lambda: backend_fails(a.backend_connections))
    if a.pair_cycles:
        part("pair", lambda: pair_run(out / "pair", a.pair_cycles, a.pair_adverts, a.commit))
    doc["finished"] = True
    doc["ended"] = time.time()
    save()
    return 0


def pair_run(out: Path, cycles: int, adverts: str, commit: str) -> dict:
    """bench/pair_failover's keepalived DR pair (sync daemon), kill -9 of the master,
    ``cycles`` times per advert interval, here (a kernel with IPVS); its JSON."""
    from bench import pair_failover
    pa = pair_failover.parse(["--inside", "--impls", "keepalived", "--stops", "kill", "--mode", "dr",
                              "--adverts", adverts, "--cycles", str(cycles), "--out", str(out), "--commit", commit])
    pair_failover.run_inside(pa)
    return json.loads((out / "pair_failover.json").read_text())


def lab_timeout(pair_cycles: int) -> float:
    """Bound of the kernel-lab boot: the demo's set-up (START, 600 s) and eight events,
    the backend event, and pair_failover's own estimate for keepalived (240 s + 150 s a
    cycle, seen on a shared host)."""
    return 2460.0 + 150.0 * pair_cycles


def kernel_lab(a: argparse.Namespace, out: Path, commit: str) -> dict:
    """``kernel_lab_inside`` here if this kernel has IPVS, else in one kernel-lab boot
    of a snapshot of HEAD (pair_failover's: the run is long, the work tree may change);
    its JSON."""
    from bench import pair_failover
    from lab.kernel import host_has_ipvs, in_lab, run_in_lab
    out.mkdir(parents=True, exist_ok=True)
    (out / LAB_JSON).unlink(missing_ok=True)
    inner = ["--kernel-lab-inside", "--out", str(out), "--lab-connections", str(a.lab_connections),
             "--new-flows", str(a.new_flows), "--backend-connections", str(a.backend_connections),
             "--pair-cycles", str(a.pair_cycles), "--pair-adverts", a.pair_adverts, "--commit", commit]
    if host_has_ipvs() or in_lab():
        kernel_lab_inside(parse(inner))
    else:
        src, sha = pair_failover.snapshot()
        timeout = a.lab_timeout or lab_timeout(a.pair_cycles)
        print(f"this kernel has no IPVS: the events, the backend event and the pair run in the kernel lab "
              f"(QEMU, a snapshot of {sha} in {src}, at most {timeout / 60:.0f} min)", file=sys.stderr)
        r = run_in_lab([pair_failover.PY, "-m", "bench.scale_out", *inner], cwd=str(src), timeout=timeout,
                       memory_mb=2048, rw_dir=str(out), stream=sys.stderr)
        if r.returncode != 0:
            print(f"the kernel lab exited {r.returncode}" + (" (timed out)" if r.timed_out else ""), file=sys.stderr)
    if not (out / LAB_JSON).exists():
        raise RuntimeError(f"the kernel lab left no {out / LAB_JSON}")
    return json.loads((out / LAB_JSON).read_text())


# --- one run, one printout ------------------------------------------------------------------

def host_goals(results: dict[str, list[float]]) -> list[str]:
    """The host part's time goals, judged on the slowest run."""
    lines = []
    for name, limit in [*((n, GOAL_DRAIN) for n in HOST_DRAIN), (HOST_SILENT, GOAL_SILENT)]:
        values = results.get(name)
        if values:
            worst = max(values) / 1000
            lines.append(f"goal: {name}: slowest of {len(values)} {fmt_s(worst)} <= {fmt_s(limit)}: "
                         + ("met" if worst <= limit else "NOT met"))
    return lines


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "-"


def full_report(doc: dict) -> str:
    """Every table of one run (``one_run``'s JSON) under one header."""
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(doc["started"]))
    took = f", {(doc['ended'] - doc['started']) / 60:.0f} min" if doc.get("ended") else " (did not finish)"
    lines = [f"hadirector scale-out benchmark (issue 14): commit {doc['commit']}, {started}{took}",
             f"machine: {doc.get('cpus')} CPUs; load average (1, 5, 15 min) at start {_load(doc.get('load_start'))}, "
             f"at end {_load(doc.get('load_end'))}",
             f"goals: {GOALS}"]
    lab = doc.get("kernel_lab") or {}
    if lab:
        lines += ["", "## Per event: N active directors beside an active/standby pair (kernel lab: QEMU TCG, "
                      "so times are an emulated guest's; the host's are in the control-plane table)", ""]
        groups = []
        so = lab.get("scale_out")
        if so:
            groups.append((f"hadirector scale-out, 3-4 active directors (IPVS DR mh, BIRD ECMP, BFD 100 ms x 3): "
                           f"{so['connections']} long-lived connections; spread of {so['new_flows']} new flows "
                           f"(the router's next hop per 5-tuple)", rows_from_events(so)))
        if lab.get("backend"):
            groups.append(("a backend fails while flows move (lab/scaleout_ipvs.py, 3 directors, static ECMP); "
                           "spread of the connections opened", rows_from_backend(lab["backend"])))
        if lab.get("pair"):
            longs = lab["pair"].get("args", {}).get("longs", "?")
            groups.append((f"keepalived active/standby pair (bench/pair_failover, DR, sync daemon, one client "
                           f"with {longs} long-lived connections a run)", rows_from_pair(lab["pair"])))
        notes = [f"time of {e['event']}: {e['detection_note']}" for e in (so or {}).get("events", [])
                 if e.get("detection_note")]
        drops = (so or {}).get("unexpected_session_drops") or []
        if drops:
            notes.append(f"BGP sessions of live directors the router dropped: {len(drops)} (a starved guest: BFD "
                         f"missed 300 ms; the moves and times include it): " + "; ".join(drops))
        notes += [f"ERROR (kernel lab) {e}" for e in lab.get("errors", [])]
        if not lab.get("finished"):
            notes.append("the kernel-lab part did not finish: partial results")
        # A blank line first: a line right under a markdown table would read as one of its rows.
        lines += [event_table(groups), *([""] + notes if notes else [])]
    if doc.get("host"):
        lines += ["", "## Control plane on this host (host namespaces, real BIRD and agents, fake IPVS): from the "
                      "cause to the router's FIB without the director", "", table(doc["host"]), ""]
        lines += host_goals(doc["host"])
    if doc.get("anchor"):
        lines += ["", "## The naive anchor: directors that terminate TCP themselves behind the same router", "",
                  anchor_table(doc["anchor"])]
    if lab.get("backend"):
        lines += ["", "## A backend fails while flows move: details", "", backend_table(lab["backend"])]
    lines += [f"ERROR {e}" for e in doc.get("errors", [])]
    return "\n".join(lines) + "\n"


def head_commit() -> str:
    """HEAD's short hash, marked when the work tree differs (the host part runs the
    work tree, the kernel lab a snapshot of HEAD)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes on the host)" if git("status", "--porcelain")
                                                  else "")


def one_run(a: argparse.Namespace) -> int:
    """The host part and the anchor, then the kernel-lab part; the JSON is rewritten
    after each part (a failed part is recorded and the next runs), then one printout."""
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commit = head_commit()
    doc: dict = {"commit": commit, "started": time.time(), "cpus": os.cpu_count(), "load_start": os.getloadavg(),
                 "args": vars(a), "host": None, "anchor": None, "kernel_lab": None, "errors": []}
    path = out / "scale_out.json"

    def part(name: str, fn) -> None:
        try:
            doc[name] = fn()
        except Exception as e:  # noqa: BLE001 - record it, run the next part
            doc["errors"].append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        path.write_text(json.dumps(doc, indent=1))

    if not a.kernel_lab_only:
        part("host", lambda: run(a.runs))
        part("anchor", lambda: anchor(a.connections))
    part("kernel_lab", lambda: kernel_lab(a, out, commit.split()[0]))
    doc["load_end"] = os.getloadavg()
    doc["ended"] = time.time()
    path.write_text(json.dumps(doc, indent=1))
    print("\n" + full_report(doc) + f"\nJSON: {path}")
    return 1 if doc["errors"] or (doc["kernel_lab"] or {}).get("errors") else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--connections", type=int, default=150, help="long-lived connections of the anchor")
    p.add_argument("--anchor-only", action="store_true", help="only the naive anchor, not the timings")
    p.add_argument("--backend-connections", type=int, default=3000,
                   help="long-lived connections of the backend event (kernel lab)")
    p.add_argument("--backend-only", action="store_true", help="only the backend event (kernel lab)")
    p.add_argument("--no-backend", action="store_true", help="without the backend event (no kernel-lab boot)")
    k = p.add_argument_group("one run with every event (--kernel-lab)")
    k.add_argument("--kernel-lab", action="store_true",
                   help="the host part, the anchor, then in one kernel-lab boot the scale-out events, the backend "
                        "event and the keepalived pair; one printout")
    k.add_argument("--kernel-lab-only", action="store_true", help="--kernel-lab without the host part and anchor")
    k.add_argument("--lab-connections", type=int, default=60, help="long-lived connections through the events")
    k.add_argument("--new-flows", type=int, default=NEW_FLOWS, help="new flows whose spread is taken after each event")
    k.add_argument("--pair-cycles", type=int, default=5, help="keepalived pair: kill -9 runs per advert (0: none)")
    k.add_argument("--pair-adverts", default="1", help="keepalived pair: advert intervals, s (default 1)")
    k.add_argument("--lab-timeout", type=float, default=None, help="kernel-lab bound, s (default: estimated)")
    k.add_argument("--out", default=str(ROOT / "results" / "scale-out-bench"), help="JSON, report, logs")
    k.add_argument("--table", metavar="JSON", help="only print the tables of a past run's scale_out.json")
    p.add_argument("--kernel-lab-inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--commit", default="work tree", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not 0 < a.new_flows <= PORT0 - SPREAD_PORT0:
        p.error(f"--new-flows must be 1..{PORT0 - SPREAD_PORT0}")
    if a.pair_cycles < 0:
        p.error("--pair-cycles must be 0 or more")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.table:
        print(full_report(json.loads(Path(args.table).read_text())))
        return 0
    if args.kernel_lab_inside:
        return kernel_lab_inside(args)
    if args.kernel_lab or args.kernel_lab_only:
        return one_run(args)
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
