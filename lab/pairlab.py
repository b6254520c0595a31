"""The director-pair lab: bring up the topology, start both directors, run client
traffic, stop the primary, take it back, and report what the clients saw: a text report
and a failover timeline picture (timeline.py), ``failover-report.txt`` and
``failover-timeline.svg`` in the results directory.

    python -m lab.pairlab demo [--mode dr|nat] [--stop term|kill|poweroff|all] [--director hadirector|keepalived]

Needs a kernel with IPVS: run it directly on such a host, or through `netns-lab/demo`,
which boots the kernel lab when this kernel has none. Mode "vrrp" (``Lab(mode="vrrp")``,
used by the fault lab) needs no IPVS: the directors run VRRP only and each serves the
VIP's ports itself, so a client reaching the VIP reaches whoever holds it. The lab's namespaces, processes
and links are all removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lab import ROOT, lan, timeline, vipwatch
from lab.netns import terminate
from lab.progress import ProgressLine
from lab.progress import wait_for as _wait_for

LAB = Path(__file__).resolve().parent
PYTHON = os.environ.get("HADIRECTOR_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():
    PYTHON = sys.executable


def say(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


@dataclass
class Director:
    name: str            # dir1 / dir2
    config: Path
    log: Path
    kind: str = "hadirector"
    proc: subprocess.Popen | None = None
    starts: int = 0
    prefix: str = lan.PREFIX
    run_dir: Path = Path("/run/hadirector-lab")   # keepalived's pid files go under it
    service: subprocess.Popen | None = None        # vrrp mode: the VIP's HTTP/echo server
    nofile: int | None = None   # the agent's soft RLIMIT_NOFILE (systemd's default is 1024)
    _addresses: vipwatch.AddressReader | None = field(default=None, repr=False, compare=False)

    @property
    def ns(self) -> str:
        return f"{self.prefix}-{self.name}"

    def start_service(self, state_dir: Path) -> None:
        """The HTTP (:80) and echo (:9000) server a vrrp-mode director answers the VIP
        with (realserver.py under the director's name), bound to the wildcard address so
        it serves the VIP whenever this director holds it."""
        self.service = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, str(LAB / "realserver.py"), self.name,
             "--state-dir", str(state_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.starts += 1
        log = open(self.log, "a")
        log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n")
        log.flush()
        if self.kind == "hadirector":
            argv = [PYTHON, "-m", "hadirector.cli", "run", "-c", str(self.config), "--log-format", "json"]
        else:
            pid_dir = self.run_dir / self.name
            pid_dir.mkdir(parents=True, exist_ok=True)
            # A kill -9'd predecessor's pid files may name zombies (nothing reaps them
            # in the lab), and keepalived refuses to start while they "run".
            for stale in pid_dir.glob("*.pid"):
                stale.unlink()
            # Kernel tuning keepalived has no keyword for (the YAML's
            # sync_daemon.refresh_period), as "! sysctl NAME=VALUE" lines in its config.
            tuning = re.findall(r"(?m)^\s*! sysctl (\S+=.*?)\s*$", self.config.read_text())
            if tuning:
                lan.sh("modprobe", "ip_vs", check=False)   # net.ipv4.vs.* exists only then
            for setting in tuning:
                lan.sh("sysctl", "-qw", setting, ns=self.ns)
            # --dont-release-ipvs is the YAML's `lvs.on_shutdown: keep`; keepalived
            # only has it as a command-line option.
            # --no-syslog: with no syslog daemon in the lab, keepalived's syslog lines
            # would land on the console on top of the log file.
            argv = ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                    "--dont-release-ipvs",
                    "-f", str(self.config), "-p", str(pid_dir / "keepalived.pid"),
                    "-r", str(pid_dir / "vrrp.pid"), "-c", str(pid_dir / "checkers.pid")]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            preexec_fn=self._limits if self.nofile is not None else None,
        )

    def _limits(self) -> None:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    def kill_all(self) -> float:
        """kill -9 of the director: every process in its namespace at once (keepalived
        is a parent with VRRP and checker children; killing only the parent is not a
        crash). SIGSTOP all first, so no child reacts to its parent's death (keepalived's
        children get SIGTERM then and would send a priority-0 advert). The pids are
        listed before the clock is read, so the returned wall time is the kill itself."""
        pids = lan.sh("ip", "netns", "pids", self.ns, check=False).stdout.split()
        t = time.time()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), sig)
        for p in (self.proc, self.service):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        return t

    def stop(self, how: str) -> None:
        if self.proc is None:
            return
        if how == "kill":
            self.kill_all()
        terminate(self.proc)        # after kill_all: only reaps it
        self.proc = None

    def holds_vip(self) -> bool:
        """Asked over a netlink socket made once in the director's namespace, not by
        forking ``ip addr``: the fault lab's invariants poll this every 20-50 ms, and
        the forks took most of a vCPU of the emulated guest -- from the agents the lab
        measures (a restarted agent's start-up was slowed by its observer)."""
        try:
            if self._addresses is None:
                self._addresses = vipwatch.AddressReader(self.ns)
            return lan.VIP in self._addresses.addresses()
        except OSError:
            self.close_reader()         # not there (yet): ask ip, as before
            out = lan.sh("ip", "-o", "addr", "show", ns=self.ns, check=False).stdout
            return f" {lan.VIP}/" in out

    def close_reader(self) -> None:
        """Close the netlink socket: it holds the namespace alive after ``ip netns del``."""
        if self._addresses is not None:
            self._addresses.close()
            self._addresses = None

    def ipvs_table(self) -> str:
        return lan.sh("cat", "/proc/net/ip_vs", ns=self.ns, check=False).stdout

    def sync_conns(self) -> int:
        out = lan.sh("ipvsadm", "-Lnc", ns=self.ns, check=False).stdout
        return sum(1 for line in out.splitlines() if "ESTABLISHED" in line)


@dataclass
class Lab:
    mode: str = "dr"
    director: str = "hadirector"
    results: Path = Path("/run/hadirector-lab")
    directors: list[Director] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)
    clients: dict[str, subprocess.Popen] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    t0: float = 0.0
    advert_interval: float | None = None   # override the configs' advert interval
    prefix: str = lan.PREFIX          # namespace names; a test run passes its own
    topo: lan.Topology | None = None
    marks: list[dict] = field(default_factory=list)   # every mark with both clocks
    watch: vipwatch.VipWatch | None = None           # run_failover's VIP sampler

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def mark(self, what: str, **fields) -> dict:
        """Record an event with the wall clock (what agent logs carry) and the monotonic
        clock (what the client report carries); returns the record."""
        mono, wall = time.monotonic(), time.time()
        self.events.append((mono - self.t0, what))
        rec = {"what": what, "wall": wall, "mono": mono, **fields}
        self.marks.append(rec)
        say(what)
        return rec

    @property
    def state_base(self) -> Path:
        """Where this run's agents keep their state: local to the machine, never the
        results directory. In the kernel lab that is a 9p share, and the 6.12 guest's
        9p read of a state.json that the agent replaced meanwhile (rename) can retry
        forever (netfs_retry_reads, seen spinning in two soaks); a unix socket cannot
        live there either (the control socket failed with ENXIO)."""
        return Path("/run/hadirector-lab") / self.prefix

    def config_for(self, name: str) -> Path:
        if self.director == "hadirector":
            path = ROOT / "etc" / "lab" / self.mode / f"{name}.yaml"
        else:
            path = ROOT / "etc" / "lab" / "keepalived" / self.mode / f"{name}.conf"
        own_dirs = self.prefix != lan.PREFIX
        if self.advert_interval is None and not own_dirs:
            return path
        # The same node config with another advert interval, or (a run with its own
        # namespace prefix, which may run beside another) its own state directory.
        text = path.read_text()
        if self.director == "hadirector":
            if self.advert_interval is not None:
                text = re.sub(r"(?m)^(\s*advert_interval:).*$", rf"\g<1> {self.advert_interval}", text)
            if own_dirs:
                text = re.sub(r"(?m)^(\s*state_dir:)\s*\S+", rf"\g<1> {self.state_base / name}", text)
        elif self.advert_interval is not None:
            text = re.sub(r"(?m)^(\s*advert_int)\s+\S+", rf"\g<1> {self.advert_interval}", text)
        out = self.results / f"{name}-{self.advert_interval or 'cfg'}{path.suffix}"
        out.write_text(text)
        return out

    def up(self) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        for f in self.results.glob("*"):
            if f.is_file():
                f.unlink()
        self.t0 = time.monotonic()
        (Path("/run/hadirector-lab")).mkdir(parents=True, exist_ok=True)
        self.topo = lan.up(self.mode, self.prefix)
        rss = [n.name for n in self.topo.real_servers]
        say(f"topology up ({self.mode.upper()}): client, dir1, dir2"
            + (f", {rss[0]}-{rss[-1]}" if rss else ", no real servers (VRRP only)"))
        for rs in rss:
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(rs), sys.executable,
                 str(LAB / "realserver.py"), rs, "--state-dir", str(self.results)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        self.directors = [
            Director(n, self.config_for(n), self.results / f"{n}.log", kind=self.director,
                     prefix=self.prefix,
                     run_dir=self.results if self.prefix != lan.PREFIX else Path("/run/hadirector-lab"))
            for n in ("dir1", "dir2")
        ]
        if self.mode == "vrrp":
            for d in self.directors:
                d.start_service(self.results)

    def director_named(self, name: str) -> Director:
        return next(d for d in self.directors if d.name == name)

    def down(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        for d in self.directors:
            with contextlib.suppress(Exception):
                d.stop("term")
            d.close_reader()
        services = [d.service for d in self.directors if d.service is not None]
        for p in self.servers + services + list(self.clients.values()):
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(timeout=5)
        lan.down(quiet=True, prefix=self.prefix)
        if self.prefix != lan.PREFIX:
            # The agents' last state.json beside their logs, then their private state gone.
            for d in self.directors:
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.state_base / d.name / "state.json", self.results / f"{d.name}-state.json")
            shutil.rmtree(self.state_base, ignore_errors=True)

    def master(self) -> str | None:
        holders = [d.name for d in self.directors if d.holds_vip()]
        return ",".join(holders) if holders else None

    def wait_for(self, what: str, cond, timeout: float) -> float:
        """Seconds until ``cond()``; says what it waits for every few seconds (stderr)."""
        return _wait_for(what, cond, timeout, out=ProgressLine(prefix="[lab] "))

    def start_client(self, duration: float, rate: float, longs: int, name: str = "client") -> None:
        """A client process in the client namespace; its files are ``<name>.*`` in the
        results directory. Returns once its long-lived connections are open."""
        for suffix in ("ready", "stop", "json"):
            (self.results / f"{name}.{suffix}").unlink(missing_ok=True)
        # Modest load: under the kernel lab's emulation every Python process competes
        # for two emulated CPUs, and a starved client would report its own slowness.
        self.clients[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, str(LAB / "client.py"),
             "--vip", lan.VIP, "--rate", str(rate), "--long", str(longs),
             "--timeout", "2", "--ping", "0.5",
             "--duration", str(duration), "--stop-file", str(self.results / f"{name}.stop"),
             "--ready-file", str(self.results / f"{name}.ready"),
             "--out", str(self.results / f"{name}.json"), "--progress", "--label", name],
        )
        self.wait_for(f"{name} connections", lambda: (self.results / f"{name}.ready").exists(), 60)

    def stop_client(self, name: str = "client") -> dict:
        (self.results / f"{name}.stop").touch()
        proc = self.clients.pop(name)
        proc.wait(timeout=60)
        return json.loads((self.results / f"{name}.json").read_text())


# How run_failover stops the primary: "term" and "kill" stop its director (kill: every
# process of its namespace), "poweroff" the whole node (faults.power_off).
STOPS = {"term": "SIGTERM", "kill": "kill -9", "poweroff": "power-off"}


def run_failover(lab: Lab, *, stop: str, settle: float = 3.0, takeback: bool = True,
                 rate: float = 10.0, longs: int = 10, outage_longs: int = 0,
                 during_backup: Callable[[Lab], dict] | None = None) -> dict:
    """One full cycle: both directors up, traffic, primary stopped, primary back.

    ``outage_longs`` long-lived connections are opened while dir2 is master (a second
    client); whether they survive the primary's return is ``report["outage"]``.

    ``during_backup(lab)`` runs while dir2 is master (e.g. a real server failure) and
    its dict joins the report. ``report["times"]`` holds the monotonic time of each
    step, on the same clock as the client's ``t0``, so tests can place every failed
    request relative to the failover.
    """
    dir1, dir2 = lab.directors
    times: dict[str, float] = {}
    # Both start together (agent start-up under emulation is the slow part); dir1
    # wins on priority, immediately or by preemption. A lab left running by a previous
    # cycle is reused as it is.
    for d in (dir1, dir2):
        if d.proc is None or d.proc.poll() is not None:
            d.start()
    log_from = dir1.log.stat().st_size if dir1.log.exists() else 0
    # Generous bounds: under the kernel lab's emulation, Python start-up alone takes
    # seconds; VRRP timers, once running, are on time.
    lab.wait_for("dir1 to be master and both IPVS tables programmed",
                 lambda: dir1.holds_vip() and not dir2.holds_vip()
                 and all(d.ipvs_table().count("->") >= 6 for d in lab.directors), 600)
    lab.mark(f"dir1 is master, both directors programmed ({lab.director})")
    # Who has the VIP, every 50 ms, for the timeline picture.
    watch = lab.watch = vipwatch.VipWatch({d.name: d.ns for d in lab.directors}, lan.VIP).start()
    lab.start_client(duration=900, rate=rate, longs=longs)
    lab.mark(f"client running: {rate:g} requests/s, {longs} long-lived connections")
    time.sleep(settle)
    synced = dir2.sync_conns()
    lab.mark(f"standby dir2 knows {synced} established connections through sync")
    lab.mark(f"stopping primary dir1 ({STOPS[stop]})")
    times["stop"] = time.monotonic()
    # kill -9 leaves dir1's VIP and IPVS table in its kernel (nobody removes them);
    # dir2's gratuitous ARP is what moves the clients over, and dir1's restarted agent
    # must clean up what its predecessor left. A power-off takes the kernel too: from
    # that instant nothing reaches or leaves dir1.
    if stop == "poweroff":
        from lab import faults   # here: faults imports this module
        faults.power_off(lab, "dir1")
    else:
        dir1.stop(stop)
    took = lab.wait_for("dir2 to take over the VIP", dir2.holds_vip, 30)
    times["takeover"] = time.monotonic()
    lab.mark(f"dir2 holds the VIP {took:.2f}s after the stop")
    time.sleep(settle)
    report: dict = {"stop": stop, "takeover_s": took, "synced_before": synced}
    if outage_longs and takeback:
        lab.start_client(duration=900, rate=0, longs=outage_longs, name="outage")
        lab.mark(f"{outage_longs} more long-lived connections opened while dir2 is master")
    if during_backup is not None:
        report.update(during_backup(lab))
    if takeback:
        lab.mark("starting dir1 again (preempt takes the VIP back)")
        times["restart"] = time.monotonic()
        if stop == "poweroff":
            from lab import faults
            faults.power_on(lab, "dir1")
        if dir1.proc is None:
            dir1.start()
        back = lab.wait_for("dir1 to take the VIP back",
                            lambda: dir1.holds_vip() and not dir2.holds_vip(), 600)
        times["takeback"] = time.monotonic()
        lab.mark(f"dir1 holds the VIP again {back:.2f}s after its start")
        report["takeback_s"] = back
        time.sleep(settle)
    if "outage" in lab.clients:
        o = lab.stop_client("outage")
        report["outage"] = {k: o[k] for k in ("long_requested", "long_opened", "long_survived",
                                              "long_lost", "long_servers", "t0", "timeline")}
    summary = lab.stop_client()
    report["vip_samples"] = watch.stop()
    report.update(summary)
    report["master_now"] = lab.master()
    # dir1's log of this cycle: its stop and its restart with the same config.
    with open(dir1.log) as f:
        f.seek(log_from)
        report["dir1_log"] = f.read()
    report["dir2_log"] = dir2.log.read_text()
    report["times"] = times
    # Agent logs carry wall-clock timestamps; this converts them to the monotonic clock.
    report["wall_minus_mono"] = time.time() - time.monotonic()
    report["t_stop"] = times["stop"] - lab.t0
    return report


def fail_real_server(lab: Lab, name: str = "rs2", hold: float = 12.0) -> dict:
    """Make one real server answer HTTP 500 for ``hold`` seconds, then heal it."""
    flag = lab.results / f"{name}.fail"
    lab.mark(f"{name} starts answering HTTP 500")
    t_fail = time.monotonic()
    flag.touch()
    time.sleep(hold)
    flag.unlink()
    lab.mark(f"{name} healthy again")
    time.sleep(3.0)
    return {"rs_failed": name, "rs_fail_at": t_fail, "rs_heal_at": t_fail + hold}


def format_report(r: dict) -> str:
    w = 34
    out = [""]
    out.append("=" * 64)
    out.append(f" failover report ({r['stop']})")
    out.append("=" * 64)
    rows = [
        ("time without service (longest gap)", f"{r['max_gap']:.2f} s"),
        ("backup took the VIP after", f"{r['takeover_s']:.2f} s"),
        ("short requests failed", f"{r['failed']} of {r['requests']}"
         + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(r["failure_reasons"].items())) + ")"
            if r.get("failure_reasons") else "")),
        ("long-lived connections survived", f"{r['long_survived']} of {r['long_requested']}"),
        ("requests served by", ", ".join(f"{k} {v}" for k, v in sorted(r["served_by"].items()))),
        ("master now", r["master_now"] or "nobody"),
    ]
    if "takeback_s" in r:
        rows.insert(2, ("primary took it back after", f"{r['takeback_s']:.2f} s"))
    if "outage" in r:
        o = r["outage"]
        rows.insert(-2, ("opened during outage, survived", f"{o['long_survived']} of {o['long_requested']}"
                                                           " (through the takeback)"))
    for k, v in rows:
        out.append(f" {k:<{w}} {v}")
    for t, server, why in r["long_lost"][:10]:
        out.append(f"   lost at {t:6.2f}s on {server}: {why}")
    for t, server, why in r.get("outage", {}).get("long_lost", [])[:10]:
        out.append(f"   outage connection lost at {t:6.2f}s (its own clock) on {server}: {why}")
    out.append("=" * 64)
    return "\n".join(out)


def print_report(r: dict) -> None:
    print(format_report(r))


def failover_timeline(reports: list[dict], title: str) -> timeline.Timeline:
    """The timeline picture's record of run_failover reports, one cycle each."""
    return timeline.Timeline(title, tuple(
        timeline.cycle_from_report(r, f"cycle {n}: {STOPS[r['stop']]} of dir1") for n, r in enumerate(reports, 1)))


def write_results(results: Path, reports: list[dict], title: str) -> tuple[Path, Path]:
    """The text report and the failover timeline picture, side by side in ``results``
    (and the picture's record, to draw it again: python -m lab.timeline FILE.json)."""
    text, svg = results / "failover-report.txt", results / "failover-timeline.svg"
    text.write_text("".join(format_report(r) + "\n" for r in reports))
    record = failover_timeline(reports, title)
    svg.with_suffix(".json").write_text(timeline.to_json(record))
    svg.write_text(timeline.render_svg(record))
    return text, svg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.pairlab", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["demo", "up", "down"])
    p.add_argument("--mode", choices=["dr", "nat"], default="dr")
    p.add_argument("--stop", choices=[*STOPS, "both", "all"], default="both",
                   help="both: term then kill; all: term, kill, poweroff")
    p.add_argument("--director", choices=["hadirector", "keepalived"], default="hadirector")
    p.add_argument("--results", default="/run/hadirector-lab")
    p.add_argument("--json", help="also write the reports here")
    a = p.parse_args(argv)
    lab = Lab(mode=a.mode, director=a.director, results=Path(a.results))
    if a.action == "down":
        lan.down()
        return 0
    if a.action == "up":
        lab.up()
        return 0
    reports = []
    try:
        lab.up()
        for how in {"both": ["term", "kill"], "all": list(STOPS)}.get(a.stop, [a.stop]):
            reports.append(run_failover(lab, stop=how, outage_longs=10))
            print_report(reports[-1])
    except BaseException:
        for d in lab.directors:
            if d.log.exists():
                print(f"--- last lines of {d.log} ---", file=sys.stderr)
                print("\n".join(d.log.read_text().splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        lab.down()
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1))
    text, svg = write_results(lab.results, reports, f"hadirector pair lab: failover timeline "
                                                     f"({a.mode.upper()}, {a.director})")
    print(f"\nreport: {text}\nfailover timeline (SVG, open it in a browser): {svg}")
    ok = all(r["long_survived"] == r["long_requested"] and r["master_now"] == "dir1"
             and r["outage"]["long_survived"] == r["outage"]["long_requested"] for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
