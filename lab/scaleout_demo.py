"""The scale-out lab end to end, with IPVS: ``./run demo --mode scale-out`` and
tests/kernel/test_scaleout_lab.py run the same events through ``ScaleOutRun``.

    python -m lab.scaleout_demo [--results DIR] [--connections 60]      (needs IPVS)
    ./run demo --mode scale-out                                          (any kernel: the kernel lab)

The lab (lab/scaleout.py, ``real_servers=3, client=True, joiners=1``): a client behind a
router running BIRD with ECMP (merge paths, BFD 100 ms x 3, hash policy 3); directors
d1-d3, each the real ``hadirector run`` (``scale_out:``, DR, ``mh`` with mh-fallback and
mh-port, TCP checks of the real servers) beside its own BIRD rendered by ``hadirector
bird-config``; three DR real servers answering long-lived connections with their name
(lab/scaleout_flows.py). M connections are opened through the ECMP route and send a line
each per second throughout; then, one after another:

1. every flow is carried by d1 alone, then d2, then d3 (a metric-1 route on the router):
   the same real server answers it through each director;
2. d3 fails silently (nftables drops everything on it): BFD takes it out of the router's
   FIB; then it is heard again and rejoins;
3. d2's agent is killed with -9, and ``hadirector withdraw`` runs as the unit's
   ``ExecStopPost=`` would: the gate route goes, BIRD withdraws; then the agent restarts
   and rejoins after its hold-down;
4. d1 stops cleanly (SIGTERM): withdraw, drain grace, tear-down; then it restarts;
5. d4 joins (namespace, BIRD, agent): announced after its hold-down; new flows spread
   over four directors.

Per event: established connections broken (out of those alive before it; every real
server stays alive, so the goal is 0), flows the router moved, the time from the cause
until the router's FIB has the new set of directors (for a failure: until traffic leaves
the failed director), and the longest stall of a line. Then every BGP session the router
dropped (its BIRD log): only the silenced director's is expected; any other means BFD's
300 ms was missed because the emulated guest was starved (a loaded host), and the run's
flow moves and timings include that. Exit 0 only if nothing broke.
Needs a kernel with IPVS (netns-lab/demo boots the kernel lab when this one has none).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lab.netns import sh
from lab.progress import ProgressLine
from lab.progress import wait_for as _wait_for
from lab.scaleout import VIP, Director, RouteWatch, ScaleOutLab, SessionDrop, exec_stop_post, session_drops
from lab.scaleout_flows import Flows, FlowState, start_servers

CONNECTIONS = 60
PORT0 = 40000                 # client source ports PORT0.. (flow_map needs them known)
INTERVAL = 1.0                # a line per connection per second
# TCP checks: a real server is marked down only after 3 failed checks of 2 s, so a busy
# emulated guest does not fake a backend failure (out of scope here: every backend lives).
CHECK = {"type": "tcp", "interval": 1, "timeout": 2, "rise": 1, "fall": 3}
HOLD_DOWN = 2.0
DRAIN_GRACE = 1.0
START = 600.0                 # agents + BIRD up, BGP established, hold-down passed (TCG: pairlab allows 600 s too)
MOVE = 30.0                   # a failure -> the router's FIB (bounded by BGP's hold time 9 s)
BIRD_PRIORITY = 50            # BIRD's BFD (100 ms x 3) ahead of the agents' Python start-ups in the guest
SETTLE = 40.0                 # every live connection has answered twice on its new path
SILENT = ("table inet silent { chain cin { type filter hook input priority -300; policy drop; }; "
          "chain cout { type filter hook output priority -300; policy drop; }; }")


def say(msg: str) -> None:
    print(f"[scale-out] {msg}", flush=True)


# --- pure: one event's account, and the report ---------------------------------------------


@dataclass(frozen=True)
class EventResult:
    event: str
    established: int               # connections alive when the event began (M)
    broken: dict[int, str]         # port -> why, of those M
    moved: int                     # flows the router sends to another director afterwards
    detection: float | None        # s from the cause until the router's FIB had the new set
    detection_note: str = ""       # what the cause included
    stall: float = 0.0             # longest wait of a line for its answer (s)
    leaves: bool = False           # a director left the ECMP set (detection: traffic left it)

    @property
    def line(self) -> str:
        return f"{self.event}: broken: {len(self.broken)} of {self.established} established connections"


def account(event: str, before: dict[int, FlowState], after: dict[int, FlowState],
            route_before: dict[int, str], route_after: dict[int, str], *, detection: float | None = None,
            detection_note: str = "", stall: float = 0.0, leaves: bool = False) -> EventResult:
    """The event's result from the client's view before and after it and the router's
    flow maps: a connection alive before and broken after broke in this event."""
    alive = [p for p, s in before.items() if s.broken is None]
    broken = {p: after[p].broken or "gone" for p in alive if p not in after or after[p].broken is not None}
    moved = sum(1 for p in alive if p in route_before and route_before[p] != route_after.get(p))
    return EventResult(event, len(alive), broken, moved, detection, detection_note, stall, leaves)


def spread(route: dict[int, str], names: dict[str, str]) -> dict[str, int]:
    """Flows per director name (every director in ``names`` listed, 0 if none)."""
    count = collections.Counter(names.get(hop, str(hop)) for hop in route.values())
    return {name: count.get(name, 0) for name in sorted(names.values())}


@dataclass(frozen=True)
class Window:
    """When something ran (BIRD's log clock: local wall time) and which director's
    session the router is expected to drop meanwhile (a silent failure), if any."""
    name: str
    start: datetime
    end: datetime
    drops: str | None = None


def classify_drops(drops: list[SessionDrop], windows: list[Window]) -> list[tuple[SessionDrop, str, bool]]:
    """Each session drop with what ran when it happened ("between events" if nothing)
    and whether that was expected: only the silently failed director's, during its
    failure. Any other means the router dropped a live director."""
    out = []
    for drop in drops:
        w = next((w for w in windows if w.start <= drop.at <= w.end), None)
        out.append((drop, w.name if w else "between events", w is not None and w.drops == drop.peer))
    return out


def format_report(results: list[EventResult], *, connections: int, digests: dict[str, str],
                  spreads: list[tuple[str, dict[str, int]]], backends: dict[str, int] | None = None,
                  sessions: list[tuple[SessionDrop, str, bool]] | None = None) -> str:
    same = len(set(digests.values())) == 1
    lines = [
        "hadirector scale-out lab: directors behind a BIRD ECMP router (BFD 100 ms x 3), IPVS DR, "
        "mh + mh-fallback + mh-port, sloppy_tcp; DR real servers alive throughout",
        f"{connections} long-lived connections, one line each per {INTERVAL:g} s"
        + ("; real servers (mh): " + ", ".join(f"{b} {n}" for b, n in sorted(backends.items())) if backends else ""),
        "destination lists (kernel order, weights): "
        + (f"identical on {' '.join(sorted(digests))}" if same else f"DIFFER: {digests}"),
        "",
    ]
    for r in results:
        lines.append(r.line)
        detail = [f"moved {r.moved} of {r.established} flows"]
        if r.detection is not None:
            detail.append(f"router's FIB changed {fmt_s(r.detection)} after the cause"
                          + (f" ({r.detection_note})" if r.detection_note else ""))
        detail.append(f"longest stall of a line {fmt_s(r.stall)}")
        lines.append("    " + "; ".join(detail))
        for port, why in sorted(r.broken.items()):
            lines.append(f"    broken: client port {port}: {why}")
    lines += ["", "detection (from the cause until traffic leaves the director: its next hop leaves the "
                  "router's FIB, timed by ip monitor):"]
    lines += [f"    {r.event}: {fmt_s(r.detection)}" + (f" ({r.detection_note})" if r.detection_note else "")
              for r in results if r.leaves and r.detection is not None]
    lines += ["", "new-flow spread per director (the router's ECMP hash of each new connection):"]
    lines += [f"    {what}: " + ", ".join(f"{d} {n}" for d, n in counts.items()) for what, counts in spreads]
    if sessions is not None:
        unexpected = [d for d, _, ok in sessions if not ok]
        lines += ["", f"BGP sessions the router dropped (its BIRD log): {len(sessions)}, unexpected: {len(unexpected)}"]
        lines += [f"    {d.at:%H:%M:%S.%f}"[:-3] + f" {d.peer} ({d.reason}) during {during}"
                  + ("" if ok else ": UNEXPECTED") for d, during, ok in sessions]
        if unexpected:
            lines.append("    a live director dropped: BFD (100 ms x 3) missed 300 ms, the guest was starved; "
                         "flows moved and timings include it")
    total = sum(len(r.broken) for r in results)
    lines += ["", f"result: {total} established connections broken (goal: 0 while their real server lives)"
              + ("" if same else "; destination lists differ between directors")]
    return "\n".join(lines) + "\n"


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def ipvs_dests(text: str) -> list[tuple[str, str]]:
    """``ipvsadm -Ln -t VIP:80`` -> [(real server, weight)] in the kernel's order."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["->"] and ":" in words[1] and words[1][0].isdigit():
            out.append((words[1], words[3]))
    return out


# --- the run ----------------------------------------------------------------------------------


class Primed:
    """A command started ahead and blocked reading its stdin (``nft -f -``), so an event's
    cause is the input handed to it, not a fork, an exec and a netns switch too: those
    take up to seconds in an emulated, busy guest and are no part of the fault."""

    def __init__(self, argv: list[str], exe: str, timeout: float = 60.0) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + timeout
        while not self.waiting(exe):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.proc.kill()
                raise RuntimeError(f"{' '.join(argv)}: never waited for its input "
                                   f"(exit {self.proc.wait()}: {self.proc.stdout.read().strip()})")
            time.sleep(0.05)

    def waiting(self, exe: str) -> bool:
        """``exe`` itself (``ip netns exec`` execs it in the same process), asleep in a read."""
        pid = self.proc.pid
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) != exe:
                return False
            stat = Path(f"/proc/{pid}/stat").read_text()
            wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
        except OSError:
            return False
        # wchan: pipe_read (6.12), anon_pipe_read (6.18); "0" where it is hidden.
        return stat.rpartition(")")[2].split()[0] == "S" and ("pipe_read" in wchan or wchan in ("0", ""))

    def fire(self, text: str) -> None:
        out, _ = self.proc.communicate(text, timeout=60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)}: exit {self.proc.returncode}: {out.strip()}")


class ScaleOutRun:
    """The full lab and its events, in order; each event method returns (and records)
    an ``EventResult``."""

    def __init__(self, workdir: Path, *, connections: int = CONNECTIONS, net: int = 63,
                 tag: str | None = None, out: ProgressLine | None = None) -> None:
        self.lab = ScaleOutLab(tag or f"sl{os.getpid() % 10000}", workdir, directors=3, net=net, joiners=1,
                               real_servers=3, client=True, bird_priority=BIRD_PRIORITY)
        self.connections = connections
        self.directors: dict[int, Director] = {}
        self.servers = None
        self.flows: Flows | None = None
        self.watch = RouteWatch(VIP)
        self.results: list[EventResult] = []
        self.spreads: list[tuple[str, dict[str, int]]] = []
        self.final_digests: dict[str, str] = {}
        self.windows: list[Window] = []
        self.backends: dict[str, int] = {}
        self.out = out or ProgressLine(prefix="[scale-out] ")
        self.next_port = PORT0

    # --- set-up -----------------------------------------------------------------------

    def names(self) -> dict[str, str]:
        return {d.ip: d.name for d in self.directors.values()}

    def announced(self) -> set[str]:
        return self.lab.next_hops(VIP)

    def wait(self, what: str, cond: Callable[[], object], timeout: float, step: float = 0.1) -> float:
        # Each poll forks ``ip`` (costly in an emulated guest): the polls only decide
        # when to go on; RouteWatch times the changes.
        return _wait_for(what, cond, timeout, step=step, out=self.out)

    def director(self, i: int) -> Director:
        d = Director(self.lab, i, real_agent=True, check=CHECK, hold_down=HOLD_DOWN, drain_grace=DRAIN_GRACE,
                     api=False)
        self.directors[i] = d
        return d

    @contextlib.contextmanager
    def window(self, name: str, drops: str | None = None) -> Iterator[None]:
        """Record when ``name`` ran (for the router's session drops), even if it failed."""
        start = datetime.now()
        try:
            yield
        finally:
            self.windows.append(Window(name, start, datetime.now(), drops))

    def up(self) -> None:
        with self.window("set-up"):
            self._up()

    def _up(self) -> None:
        lab = self.lab
        say(f"lab: router, {lab.directors} directors (+{lab.joiners} to join), {lab.real_servers} real servers, "
            f"a client (namespaces {lab.tag}*)")
        lab.up()
        self.watch.start(lab.router)
        self.servers = start_servers(80, {lab.rs_ns(i): f"rs{i}" for i in range(1, lab.real_servers + 1)})
        lab.start_router_bird()
        ds = [self.director(i) for i in range(1, lab.directors + 1)]
        for d in ds:             # agents first: their start-up is the slow part
            d.start_agent()
        for d in ds:
            d.start_bird()
        want = {d.ip for d in ds}
        took = self.wait(f"{len(ds)} directors announced (agents up, IPVS programmed, hold-down {HOLD_DOWN:g} s)",
                         lambda: self.announced() == want, START, step=0.5)
        say(f"{len(ds)} directors in the router's FIB after {took:.1f} s")
        self.flows = Flows(lab.client_ns, VIP, str(lab.client_ip))
        opened = self.open(self.connections)
        self.flows.start(INTERVAL)
        self.spreads.append((f"{len(ds)} directors, {len(opened)} connections", spread(lab.flow_map(opened),
                                                                                         self.names())))
        self.backends = dict(collections.Counter(opened.values()))
        say(f"{len(opened)} connections open, served by {dict(sorted(self.backends.items()))}")

    def open(self, n: int) -> dict[int, str]:
        opened = self.flows.open(n, self.next_port)
        self.next_port += n
        bad = {p: name for p, name in opened.items() if name.startswith("broken")}
        if bad:
            raise RuntimeError(f"{len(bad)} of {n} connections did not open: {bad}")
        return opened

    def digests(self) -> dict[str, str]:
        """Each running director's destination list for the VIP, kernel order and weights."""
        out = {}
        for d in self.directors.values():
            text = sh("ipvsadm", "-Ln", "-t", f"{VIP}:80", ns=d.ns, check=False).stdout
            out[d.name] = " ".join(f"{a}={w}" for a, w in ipvs_dests(text)) or "(no service)"
        return out

    def down(self) -> None:
        if self.flows is not None:
            self.flows.close()
        for d in self.directors.values():
            d.stop_agent(signal.SIGKILL)
        if self.servers is not None:
            self.servers.kill()
            self.servers.wait(timeout=10)
        self.watch.stop()
        self.lab.down()

    # --- one event ----------------------------------------------------------------------

    def settle(self, since: dict[int, FlowState], stall: list[float]) -> dict[int, FlowState]:
        """Wait until every connection alive in ``since`` has answered two more lines (or
        broke): its flow has taken its new path. ``stall`` collects the longest stall."""
        end = time.monotonic() + SETTLE
        while True:
            now = self.flows.status()
            stall.append(max((s.stall for s in now.values() if s.broken is None), default=0.0))
            if all(now[p].broken is not None or now[p].answers >= s.answers + 2
                   for p, s in since.items() if s.broken is None):
                return now
            if time.monotonic() > end:
                slow = [p for p, s in since.items() if s.broken is None and now[p].answers < s.answers + 2]
                raise TimeoutError(f"connections {slow} answered no line for {SETTLE:g} s")
            time.sleep(0.25)

    def event(self, name: str, cause: Callable[[], object], want: set[str], *, leaves: bool,
              note: str = "", drops: str | None = None) -> EventResult:
        with self.window(name, drops):
            return self._event(name, cause, want, leaves=leaves, note=note)

    def _event(self, name: str, cause: Callable[[], object], want: set[str], *, leaves: bool,
               note: str) -> EventResult:
        """Run ``cause``; wait until the router's next hops are ``want`` (the detection
        time: from the cause's start to the FIB change as ``ip monitor`` saw it), then
        until every live flow answers on its new path."""
        say(f"event: {name}")
        stall: list[float] = []
        before = self.flows.status()
        alive = [p for p, s in before.items() if s.broken is None]
        route_before = self.lab.flow_map(alive)
        t0 = time.monotonic()
        cause()
        # A director leaving: within BGP's hold time at worst; one joining: agent start-up.
        self.wait(f"the router's next hops to be {sorted(want)} ({name})", lambda: self.announced() == want,
                  MOVE if leaves else START, step=0.1 if leaves else 0.25)
        polled = time.monotonic() - t0
        seen = self.watch.first(t0, want)
        detection = seen - t0 if seen is not None else polled
        if seen is None:
            note += (", " if note else "") + "polled: ip monitor saw no such change"
        mark = self.flows.status()
        stall.append(max((s.stall for s in mark.values() if s.broken is None), default=0.0))
        after = self.settle(mark, stall)
        route_after = self.lab.flow_map(alive)
        result = account(name, before, after, route_before, route_after, detection=detection,
                         detection_note=note, stall=max(stall), leaves=leaves)
        self.results.append(result)
        say(result.line + f" (moved {result.moved}; detection {fmt_s(detection)}; stall {fmt_s(result.stall)})")
        return result

    def hops(self, *, without: int | None = None, adding: int | None = None) -> set[str]:
        have = {d.ip for d in self.directors.values()}
        if without is not None:
            have.discard(self.directors[without].ip)
        if adding is not None:
            have.add(str(self.lab.director_ip(adding)))
        return have

    # --- the events ---------------------------------------------------------------------------

    def same_backend(self) -> EventResult:
        """Every flow carried by each director alone in turn (d1, d2, d3): the same real
        server must answer it through each (mh in one canonical order everywhere)."""
        ds = sorted(self.directors)
        say(f"event: every flow through {', '.join(f'd{i}' for i in ds)} alone in turn")
        name = f"same backend through {', '.join(f'd{i}' for i in ds)} alone in turn"
        before = self.flows.status()
        stall: list[float] = []
        now = before
        with self.window(name):
            for i in ds:
                self.lab.pin(i)
                now = self.settle(now, stall)
            self.lab.pin(None)
            after = self.settle(now, stall)
        # Moved: every flow, to each director but the one that carried it before.
        everywhere = {p: "all" for p in before}
        result = account(name, before, after, {p: "one" for p in before}, everywhere, stall=max(stall))
        self.results.append(result)
        say(result.line)
        return result

    def silent_failure(self, i: int) -> list[EventResult]:
        d = self.directors[i]
        nft = Primed(["ip", "netns", "exec", d.ns, "nft", "-f", "-"], "nft")
        failed = self.event(f"silent failure of {d.name} (nftables drops everything)",
                            lambda: nft.fire(SILENT), self.hops(without=i), leaves=True,
                            note="BFD 100 ms x 3; from the ruleset handed to a running nft", drops=d.name)
        back = self.event(f"{d.name} heard again (rejoins)",
                          lambda: sh("nft", "delete", "table", "inet", "silent", ns=d.ns), self.hops(),
                          leaves=False, note="BGP error wait 2 s, then established")
        return [failed, back]

    def agent_kill(self, i: int) -> list[EventResult]:
        d = self.directors[i]

        def kill_then_withdraw() -> None:
            d.proc.kill()
            d.proc.wait(timeout=30)
            d.proc = None
            # What the unit's ExecStopPost= runs after the crash (systemd/hadirector.service).
            r = d.hadirector(*exec_stop_post())
            if r.returncode != 0 or "withdrawn from table 201" not in r.stdout:
                raise RuntimeError(f"hadirector withdraw: exit {r.returncode}: {r.stdout} {r.stderr}")

        killed = self.event(f"agent kill -9 on {d.name}", kill_then_withdraw, self.hops(without=i), leaves=True,
                            note="kill -9, then `hadirector withdraw` as ExecStopPost=, Python start-up included")
        back = self.event(f"{d.name} agent restarted (rejoins after its hold-down)", d.start_agent, self.hops(),
                          leaves=False, note=f"agent start-up + hold-down {HOLD_DOWN:g} s")
        return [killed, back]

    def clean_stop(self, i: int) -> list[EventResult]:
        d = self.directors[i]
        proc = d.proc
        stopped = self.event(f"clean stop of {d.name} (SIGTERM)", lambda: proc.send_signal(signal.SIGTERM),
                             self.hops(without=i), leaves=True, note="withdrawn first, torn down after the grace")
        code = proc.wait(timeout=60)
        d.proc = None
        if code != 0:
            raise RuntimeError(f"{d.name}'s agent exited {code} on SIGTERM")
        if d.gate_routes():
            raise RuntimeError(f"{d.name}'s gate table is not empty after a clean stop: {d.gate_routes()}")
        back = self.event(f"{d.name} restarted (rejoins after its hold-down)", d.start_agent, self.hops(),
                          leaves=False, note=f"agent start-up + hold-down {HOLD_DOWN:g} s")
        return [stopped, back]

    def join(self, i: int, new_flows: int) -> EventResult:
        lab = self.lab

        def start() -> None:
            lab.add_director(i)
            d = self.director(i)
            d.start_agent()
            d.start_bird()

        joined = self.event(f"d{i} joins (a {len(self.directors) + 1}th director)", start, self.hops(adding=i),
                            leaves=False, note=f"agent start-up + hold-down {HOLD_DOWN:g} s")
        opened = self.open(new_flows)
        self.flows.start(INTERVAL)
        self.spreads.append((f"{len(self.directors)} directors, {len(opened)} new connections",
                             spread(lab.flow_map(opened), self.names())))
        return joined

    def run_all(self) -> list[EventResult]:
        self.same_backend()
        self.silent_failure(3)
        self.agent_kill(2)
        self.clean_stop(1)
        self.join(4, new_flows=self.connections)
        return self.results

    def session_drops(self) -> list[tuple[SessionDrop, str, bool]]:
        log = self.lab.workdir / "bird-rt.log"
        return classify_drops(session_drops(log.read_text(errors="replace")), self.windows) if log.exists() else []

    def report(self) -> str:
        self.final_digests = self.digests()
        return format_report(self.results, connections=self.connections, digests=self.final_digests,
                             spreads=self.spreads, backends=self.backends, sessions=self.session_drops())

    @property
    def ok(self) -> bool:
        return all(not r.broken for r in self.results) and len(set(self.final_digests.values())) == 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.scaleout_demo", description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["scale-out"], default="scale-out", help="netns-lab/demo's choice of lab")
    p.add_argument("--results", default="results/lab", help="the report and the agents' logs go here")
    p.add_argument("--connections", type=int, default=CONNECTIONS)
    a = p.parse_args(argv)
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    if not os.path.exists("/proc/net/ip_vs"):
        print("lab.scaleout_demo needs a kernel with IPVS: run it through netns-lab/demo --mode scale-out",
              file=sys.stderr)
        return 6
    # BIRD's and the agents' control sockets need a local filesystem (not the lab's 9p share).
    work = Path(tempfile.mkdtemp(prefix="scaleout-"))
    run = ScaleOutRun(work, connections=a.connections)
    failed = None
    try:
        run.up()
        run.run_all()
    except Exception as e:  # noqa: BLE001 - the report so far, then the reason, not a traceback
        failed = f"{type(e).__name__}: {e}"
        for d in run.directors.values():
            if d.log.exists():
                print(f"--- last lines of {d.name}'s agent log ---", file=sys.stderr)
                print("\n".join(d.log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
    finally:
        try:
            report = run.report()
        finally:
            run.down()
            logs = {f"{d.name}-agent.log": d.log for d in run.directors.values()}
            logs.update({log.name: log for log in work.glob("bird-*.log")})
            for name, log in logs.items():
                if log.exists():
                    shutil.copy(log, results / f"scale-out-{name}")
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        report += f"\nthe lab stopped early: {failed}\n"
    path = results / "scale-out-report.txt"
    path.write_text(report)
    print("\n" + report + f"report: {path}")
    return 0 if run.ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
