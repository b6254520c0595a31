#!/usr/bin/env python3
"""Director-pair failover benchmark: hadirector beside keepalived, same lab, same run.

For each advert interval x implementation the director-pair lab (netns-lab/, LVS-DR by
default) comes up once with both directors; then, for each stop mode, ``--cycles`` times:

    client A starts (short HTTP requests at --rate/s, --longs long-lived echo
    connections), settle -> stop the primary dir1 (SIGTERM, or kill -9 of every
    process in its namespace) -> dir2 takes the VIP -> settle -> client A's summary
    client B starts -> dir1 starts again -> it preempts the VIP back -> settle ->
    client B's summary

Per failover it records the service gap (the client's longest stretch without a
successful request), failed short requests, long-lived connections that survived (x of
y), and the takeover time: from the stop to dir2's first VRRP advert, timestamped by
tcpdump on the bridge (same clock as the stop). Client B gives the same for the
preemption back. Both implementations see the same topology, real servers, client and
stop procedure; their configs are etc/lab/<mode>/dir?.yaml and
etc/lab/keepalived/<mode>/dir?.conf (bench/README.md lists the setup differences).

This kernel has no IPVS, so by default the script boots the kernel lab once and runs
itself there with --inside (results on a read-write share), then prints the table:

    .venv/bin/python -m bench.pair_failover [--cycles 10] [--adverts 1,0.1]
        [--impls hadirector,keepalived] [--stops kill,term] [--mode dr]
    .venv/bin/python -m bench.pair_failover --cycles 2          # quick check
    .venv/bin/python -m bench.pair_failover --table FILE.json   # table of a past run

Everything is bounded: every wait has a timeout, the client stops by itself, the lab
boot has --timeout. Traffic goes only to addresses inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from lab import ROOT, lan, pairlab, progress

LAB_DIR = ROOT / "lab"

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
DEFAULT_OUT = ROOT / "results" / "pair-bench"
SNAPSHOT_BASE = Path("/var/tmp/hadirector-pair-bench")   # not /tmp: the lab mounts its own
DIR1_IP, DIR2_IP = f"{lan.FRONT_NET}.2", f"{lan.FRONT_NET}.3"
FRONT_VRID = 51

# Bounds. Agent start-up under the lab's TCG emulation takes tens of seconds.
BRINGUP_TIMEOUT = 480.0      # seen: ~290 s on a host shared with three other lab boots
TAKEOVER_TIMEOUT = 30.0
TAKEBACK_TIMEOUT = 480.0
GRACEFUL_EXIT_TIMEOUT = 30.0
CLIENT_READY_TIMEOUT = 60.0
CLIENT_MAX_DURATION = 600.0


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the lab side --------------------------------------------------------------------


_DEST = re.compile(r"^\s+->\s+[0-9A-F]{8}:[0-9A-F]{4}\s+\S+\s+(\d+)", re.M)


def dests_up(d: pairlab.Director) -> int:
    """Real servers with weight > 0 in the director's IPVS table (both services)."""
    return sum(1 for w in _DEST.findall(d.ipvs_table()) if int(w) > 0)


def echo_conns(d: pairlab.Director) -> set[str]:
    """Established connections to the echo service (the long-lived ones) in the
    director's IPVS connection table, synced or its own, as "client-ip:port" keys."""
    out = lan.sh("cat", "/proc/net/ip_vs_conn", ns=d.ns, check=False).stdout
    keys = set()
    for line in out.splitlines():
        f = line.split()   # Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires ...
        if len(f) >= 8 and f[0] == "TCP" and f[4] == "2328" and f[7] == "ESTABLISHED":
            keys.add(f"{f[1]}:{f[2]}")
    return keys


def wait_for(what: str, cond, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``cond()``; says what it waits for every few seconds (stderr)."""
    return progress.wait_for(what, cond, timeout, step=step, out=progress.ProgressLine(prefix="[bench] "))


class Client:
    """lab/client.py in the client namespace, its output in a file (pairlab's
    start_client prints progress lines, which over an hour-long run is noise)."""

    def __init__(self, results: Path, rate: float, longs: int, timeout: float, ping: float) -> None:
        self.results, self.rate, self.longs = results, rate, longs
        self.timeout, self.ping = timeout, ping
        self.proc: subprocess.Popen | None = None
        self.n = 0

    def start(self) -> None:
        self.n += 1
        for name in ("client.stop", "client.ready", "client.json"):
            (self.results / name).unlink(missing_ok=True)
        log = open(self.results / "client.log", "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"{lan.PREFIX}-client", PY, str(LAB_DIR / "client.py"),
             "--vip", lan.VIP, "--rate", str(self.rate), "--long", str(self.longs),
             "--timeout", str(self.timeout), "--ping", str(self.ping),
             "--duration", str(CLIENT_MAX_DURATION),
             "--stop-file", str(self.results / "client.stop"),
             "--ready-file", str(self.results / "client.ready"),
             "--out", str(self.results / "client.json")],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for("client connections", lambda: (self.results / "client.ready").exists(),
                 CLIENT_READY_TIMEOUT, step=0.1)

    def stop(self) -> dict:
        assert self.proc is not None
        (self.results / "client.stop").touch()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.proc = None
        return json.loads((self.results / "client.json").read_text())

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


class Capture:
    """tcpdump on the front bridge: every VRRP packet, kernel-timestamped (time.time()'s
    clock), line-buffered into a file that is parsed after each step."""

    LINE = re.compile(r"^(\d+\.\d+) IP (\S+) > 224\.0\.0\.18: VRRPv\d, Advertisement, vrid (\d+), prio (\d+)")

    def __init__(self, path: Path) -> None:
        self.path = path
        out = open(path, "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lan.SWITCH, "tcpdump", "-i", "br-f", "-n", "-tt", "-l", "-p",
             "-s", "128", "ip proto 112"], stdout=out, stderr=subprocess.DEVNULL)
        out.close()

    def adverts(self, since: float, until: float = math.inf) -> list[tuple[float, str, int]]:
        """(time, source, priority) of the front instance's adverts in [since, until]."""
        out = []
        for line in self.path.read_text().splitlines():
            m = self.LINE.match(line)
            if m and int(m.group(3)) == FRONT_VRID:
                t = float(m.group(1))
                if since <= t <= until:
                    out.append((t, m.group(2), int(m.group(4))))
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.terminate()
            self.proc.wait(timeout=10)


def stop_primary(d: pairlab.Director, how: str) -> float:
    """Stop dir1 the way the bench does for both implementations; return the wall time
    of the signal (kill: ``Director.kill_all``, every process of its namespace)."""
    assert d.proc is not None
    if how == "kill":
        return d.kill_all()
    t = time.time()
    d.proc.send_signal(signal.SIGTERM)
    return t


def reap(d: pairlab.Director, timeout: float) -> float | None:
    """Wait for the stopped director's process to exit; kill it if it does not."""
    if d.proc is None:
        return 0.0
    start = time.monotonic()
    try:
        d.proc.wait(timeout=timeout)
        took = time.monotonic() - start
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
        took = None
    d.proc = None
    return took


def summarize_client(c: dict) -> dict:
    keep = ("duration", "requests", "ok", "failed", "failure_reasons", "max_gap", "max_gap_done",
            "long_requested",
            "long_opened", "long_survived", "long_lost", "served_by")
    out = {k: c.get(k) for k in keep}
    out["failures"] = c.get("failures", [])[:50]
    return out


class Case:
    """One implementation at one advert interval: one lab bring-up, many cycles."""

    def __init__(self, impl: str, advert: float, mode: str, results: Path, a: argparse.Namespace) -> None:
        self.impl, self.advert, self.mode, self.settle = impl, advert, mode, a.settle
        self.results = results
        self.lab = pairlab.Lab(mode=mode, director=impl, results=results, advert_interval=advert)
        self.client = Client(results, a.rate, a.longs, a.req_timeout, a.ping)
        self.cap: Capture | None = None

    @property
    def dirs(self) -> tuple[pairlab.Director, pairlab.Director]:
        return self.lab.directors[0], self.lab.directors[1]

    def ready(self) -> bool:
        d1, d2 = self.dirs
        return d1.holds_vip() and not d2.holds_vip() and dests_up(d1) >= 6 and dests_up(d2) >= 6

    def up(self) -> float:
        start = time.monotonic()
        self.lab.up()
        self.cap = Capture(self.results / "vrrp.txt")
        d1, d2 = self.dirs
        d1.start()
        d2.start()
        wait_for("dir1 master and both IPVS tables programmed", self.ready, BRINGUP_TIMEOUT, step=0.2)
        took = time.monotonic() - start
        say(f"{self.impl} advert {self.advert:g}s: lab up, dir1 master, both programmed after {took:.1f}s")
        return took

    def down(self) -> None:
        self.client.kill()
        if self.cap:
            self.cap.stop()
        self.lab.down()

    def recover(self) -> None:
        """After a failed cycle: restart both directors from scratch (bounded)."""
        self.client.kill()
        d1, d2 = self.dirs
        for d in (d1, d2):
            if d.proc is not None:
                stop_primary(d, "kill")
                reap(d, 10)
        # kill -9 leaves VIPs behind; the restarted agents must cope, as after any crash.
        d1.start()
        d2.start()
        wait_for("recovery: dir1 master and both programmed", self.ready, BRINGUP_TIMEOUT, step=0.2)

    def cycle(self, how: str, n: int) -> dict:
        d1, d2 = self.dirs
        rec: dict = {"impl": self.impl, "advert": self.advert, "stop": how, "cycle": n, "mode": self.mode}
        # Steady state first: dir1 master, dir2 following, every real server up on both.
        wait_for("steady state", self.ready, 120, step=0.2)
        t_ready = time.time()

        # --- failover ---
        self.client.start()
        time.sleep(self.settle)
        rec["synced_before"] = d2.sync_conns()
        t_stop = stop_primary(d1, how)
        wait_for("dir2 to take over the VIP", d2.holds_vip, TAKEOVER_TIMEOUT, step=0.02)
        rec["takeover_poll_s"] = time.time() - t_stop   # coarse: forks `ip addr` under TCG
        time.sleep(self.settle)
        rec["failover"] = summarize_client(self.client.stop())
        rec["stop_exit_s"] = reap(d1, GRACEFUL_EXIT_TIMEOUT)   # None: SIGTERM did not end it
        assert self.cap is not None
        adv = self.cap.adverts(t_ready - 1)
        steady = [a for a in adv if a[0] < t_stop]
        rec["steady_dir2_adverts"] = sum(1 for a in steady if a[1] == DIR2_IP)
        d1_times = [a[0] for a in steady if a[1] == DIR1_IP]
        rec["steady_dir1_max_interval"] = max((b - a for a, b in zip(d1_times, d1_times[1:])), default=None)
        new = [a for a in adv if a[0] >= t_stop and a[1] == DIR2_IP]
        old = [a for a in adv if a[1] == DIR1_IP and a[0] <= t_stop + 5]
        rec["takeover_s"] = new[0][0] - t_stop if new else None
        rec["prio0_sent"] = any(a[2] == 0 and a[0] >= t_stop for a in old)
        rec["vrrp_gap_s"] = (new[0][0] - old[-1][0]) if new and old else None

        # --- preemption back ---
        old_keys = echo_conns(d2)
        self.client.start()
        # Client B's long-lived connections, as dir2 (master) sees them.
        new_keys = echo_conns(d2) - old_keys
        rec["dir2_knew_before_restart"] = len(new_keys)
        t_restart = time.time()
        d1.start()
        # Does the restarted dir1 know the connections opened through dir2 (IPVS sync,
        # backup daemon) by the time it takes the VIP back? Sampled while waiting.
        knew: dict = {}

        def back() -> bool:
            n = len(echo_conns(d1) & new_keys)
            held = d1.holds_vip() and not d2.holds_vip()
            knew["after" if held else "before"] = n
            return held

        took = wait_for("dir1 to take the VIP back", back, TAKEBACK_TIMEOUT, step=0.1)
        rec["takeback_poll_s"] = took
        rec["dir1_knew_before_takeback"] = knew.get("before")
        rec["dir1_knew_at_takeback"] = knew.get("after")
        time.sleep(self.settle)
        rec["takeback"] = summarize_client(self.client.stop())
        back = [a for a in self.cap.adverts(t_restart) if a[1] == DIR1_IP and a[2] > 0]
        rec["takeback_s"] = back[0][0] - t_restart if back else None
        f = rec["failover"]
        say(f"{self.impl} adv {self.advert:g}s {how} #{n}: takeover {_s(rec['takeover_s'])}, "
            f"gap {f['max_gap']:.2f}s, failed {f['failed']}/{f['requests']}, "
            f"long {f['long_survived']}/{f['long_requested']} (synced {rec['synced_before']}); "
            f"back after {took:.1f}s: gap {rec['takeback']['max_gap']:.2f}s, "
            f"long {rec['takeback']['long_survived']}/{rec['takeback']['long_requested']}")
        return rec


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def run_inside(a: argparse.Namespace) -> int:
    if not Path("/proc/net/ip_vs").exists():
        subprocess.run(["modprobe", "-q", "ip_vs"], check=False)
    if not Path("/proc/net/ip_vs").exists():
        print("no IPVS in this kernel: run without --inside (boots the kernel lab)", file=sys.stderr)
        return 2
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_json = out_dir / "pair_failover.json"
    doc: dict = {"started": time.time(), "commit": a.commit, "args": {k: v for k, v in vars(a).items()},
                 "cases": [], "records": [], "finished": False}

    def save() -> None:
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(out_json)

    save()
    for advert in a.adverts:
        for impl in a.impls:
            case = Case(impl, advert, a.mode, out_dir / f"{impl}-{advert:g}", a)
            info: dict = {"impl": impl, "advert": advert, "errors": []}
            doc["cases"].append(info)
            try:
                info["bringup_s"] = case.up()
                for how in a.stops:
                    failures = 0
                    for n in range(1, a.cycles + 1):
                        try:
                            doc["records"].append(case.cycle(how, n))
                        except Exception as exc:   # noqa: BLE001 -- record it, recover, go on
                            failures += 1
                            msg = f"{how} #{n}: {type(exc).__name__}: {exc}"
                            say(f"{impl} advert {advert:g}s: cycle failed: {msg}")
                            info["errors"].append(msg)
                            if failures > 2:
                                raise RuntimeError(f"{failures} failed cycles, giving up this case") from exc
                            case.recover()
                        save()
            except Exception as exc:   # noqa: BLE001
                info["errors"].append(f"case aborted: {type(exc).__name__}: {exc}")
                say(f"{impl} advert {advert:g}s aborted: {exc}")
                traceback.print_exc()
            finally:
                case.down()
                save()
    doc["finished"] = True
    doc["ended"] = time.time()
    save()
    print(table(doc))
    return 0


# --- the table -----------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def table(doc: dict) -> str:
    recs = doc["records"]
    keys: list[tuple] = []
    for r in recs:
        k = (r["impl"], r["stop"], r["advert"])
        if k not in keys:
            keys.append(k)
    keys.sort(key=lambda k: (-k[2], k[1], k[0]))
    hdr = (f"{'impl':<10} {'stop':<4} {'advert':>6} {'n':>2} | {'gap med':>7} {'max':>5} | "
           f"{'done-gap med':>12} {'max':>5} | {'failed':>6} {'med':>4} {'of':>5} | {'long-lived':>10} | "
           f"{'takeover med':>12} {'max':>5} {'vrrp':>5} || {'back gap':>8} {'max':>5} {'failed':>6} {'long-lived':>10}")
    lines = [hdr, "-" * len(hdr)]
    for impl, stop, adv in keys:
        rs = [r for r in recs if (r["impl"], r["stop"], r["advert"]) == (impl, stop, adv)]
        f = [r["failover"] for r in rs]
        b = [r["takeback"] for r in rs]
        gaps = [x["max_gap"] for x in f]
        dgaps = [x["max_gap_done"] for x in f if x.get("max_gap_done") is not None]
        fails = [x["failed"] for x in f]
        tk = [r["takeover_s"] for r in rs if r.get("takeover_s") is not None]
        bg = [x["max_gap"] for x in b]
        vg = [r["vrrp_gap_s"] for r in rs if r.get("vrrp_gap_s") is not None]
        lines.append(
            f"{impl:<10} {stop:<4} {adv:>5g}s {len(rs):>2} | {_med(gaps):>6.2f}s {max(gaps):>5.2f} | "
            f"{_med(dgaps):>11.2f}s {max(dgaps, default=math.nan):>5.2f} | "
            f"{sum(fails):>6} {_med(fails):>4g} {sum(x['requests'] for x in f):>5} | "
            f"{sum(x['long_survived'] for x in f):>4}/{sum(x['long_requested'] for x in f):<5} | "
            f"{_med(tk):>11.2f}s {max(tk, default=math.nan):>5.2f} {_med(vg):>5.2f} || "
            f"{_med(bg):>7.2f}s {max(bg):>5.2f} {sum(x['failed'] for x in b):>6} "
            f"{sum(x['long_survived'] for x in b):>4}/{sum(x['long_requested'] for x in b):<5}")
    notes = []
    for c in doc.get("cases", []):
        extra = []
        if c.get("bringup_s") is not None:
            extra.append(f"bring-up {c['bringup_s']:.0f}s")
        rs = [r for r in recs if (r["impl"], r["advert"]) == (c["impl"], c["advert"])]
        tb = [r["takeback_s"] for r in rs if r.get("takeback_s") is not None]
        if tb:
            extra.append(f"restart -> VIP back median {_med(tb):.1f}s")
        knew = [r["dir1_knew_before_takeback"] for r in rs if r.get("dir1_knew_before_takeback") is not None]
        if knew:
            extra.append(f"echo connections the restarted dir1 knew just before taking the VIP back: "
                         f"{sum(knew)} (of {sum(r['takeback']['long_opened'] for r in rs)} opened through dir2)")
        soft = sum(1 for r in rs if r["stop"] == "kill" and r.get("prio0_sent"))
        if soft:
            extra.append(f"{soft} kill cycles where dir1 still sent a priority-0 advert (not a clean crash)")
        flaps = sum(r.get("steady_dir2_adverts", 0) for r in rs)
        if flaps:
            extra.append(f"{flaps} dir2 adverts while dir1 was master")
        lost: dict = {}
        for r in rs:
            for part in ("failover", "takeback"):
                for _, _, why in r[part]["long_lost"]:
                    key = f"{part}: {why.split(':')[0]}"
                    lost[key] = lost.get(key, 0) + 1
        if lost:
            extra.append("long-lived lost: " + ", ".join(f"{k} x{v}" for k, v in sorted(lost.items())))
        for part in ("failover", "takeback"):
            reasons: dict = {}
            for r in rs:
                for k, v in (r[part].get("failure_reasons") or {}).items():
                    reasons[k] = reasons.get(k, 0) + v
            if reasons:
                extra.append(f"{part} request failures: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
        for e in c.get("errors", []):
            extra.append(f"ERROR {e}")
        notes.append(f"  {c['impl']} advert {c['advert']:g}s: " + "; ".join(extra or ["-"]))
    a = doc.get("args", {})
    legend = (
        f"gap = the client's longest stretch without a successful short request ({a.get('rate', 10):g}/s, "
        f"timeout {a.get('req_timeout', 2):g} s), by request start;\n"
        "  done-gap = the same by completion (a request started in the outage and saved by a SYN "
        "retransmission does not hide it);\n"
        "  window: from a settle before the stop to a settle after the takeover. failed = short "
        "requests failed in it (total, median per failover, of all sent);\n"
        "  long-lived = echo connections alive at its end, summed over the failovers; takeover = "
        "stop -> dir2's first VRRP advert (tcpdump on the bridge);\n"
        "  vrrp = median of dir1's last advert (priority 0 on SIGTERM) -> dir2's first, the RFC 5798 "
        "failover time;\n"
        "  back = a second client while dir1 restarts and preempts the VIP back.")
    head = f"commit {doc.get('commit', '?')}, mode {a.get('mode', 'dr')}"
    return head + "\n" + "\n".join(lines) + "\n" + legend + "\nper case:\n" + "\n".join(notes)


# --- outside: boot the lab -----------------------------------------------------------


def snapshot() -> tuple[Path, str]:
    """The committed tree at HEAD, unpacked beside the work tree: the run takes up to an
    hour and other engineers edit the work tree meanwhile (each director restart would
    import whatever is on disk then). The venv is shared through a symlink."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = SNAPSHOT_BASE / sha
    if not (dest / "bench" / "pair_failover.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        (dest / ".venv").symlink_to(ROOT / ".venv")
        # The lab's root is read-only: without .pyc files every agent start under
        # emulation would compile the whole package again.
        subprocess.run([PY, "-m", "compileall", "-q", str(dest / "hadirector"), str(dest / "lab"),
                        str(dest / "bench")], check=True)
    return dest, sha


def run_outside(a: argparse.Namespace, argv: list[str]) -> int:
    out_dir = Path(a.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    src, sha = (ROOT, "work tree") if a.live else snapshot()
    say(f"running {'the work tree' if a.live else f'a snapshot of commit {sha} in {src}'}")
    inner = [PY, "-m", "bench.pair_failover", "--inside", *argv, "--out", str(out_dir),
             "--commit", sha]
    if Path("/proc/net/ip_vs").exists():
        rc = subprocess.run(inner, cwd=src).returncode
    else:
        ncycles = a.cycles * len(a.stops)
        # Seen on a host shared with other lab boots: ~4 min per hadirector cycle (agent
        # start-up under emulation), ~1.5 min per keepalived cycle.
        per_impl = {"hadirector": 480 + ncycles * 300, "keepalived": 240 + ncycles * 150}
        timeout = a.timeout or 120 + len(a.adverts) * sum(per_impl.get(i, 200) for i in a.impls)
        rc = run_in_kernel_lab(inner, timeout, out_dir, src)
    return rc | print_results(out_dir / "pair_failover.json", table)


def run_in_kernel_lab(inner: list[str], timeout: float, out_dir: Path, src: Path) -> int:
    """``inner`` in one kernel-lab boot, ``out_dir`` shared read-write (the benches'
    results come back there)."""
    say(f"this kernel has no IPVS: booting the kernel lab (timeout {timeout:.0f}s); "
        f"progress below, results in {out_dir}")
    return subprocess.run([PY, "-m", "lab.kernel", "--timeout", str(timeout),
                           "--mem", "2048", "--rw", str(out_dir), "--", *inner], cwd=src).returncode


def print_results(js: Path, table: Callable[[dict], str]) -> int:
    """Print a bench's table from its JSON, partial or whole; 0 (the run's own status
    is the caller's)."""
    if js.exists():
        doc = json.loads(js.read_text())
        if doc["records"]:
            print()
            print(table(doc))
        if not doc.get("finished"):
            print("(the run did not finish: partial results)")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=10, help="failovers per stop mode and case (default 10)")
    p.add_argument("--adverts", default="1,0.1", help="advert intervals, seconds (default 1,0.1)")
    p.add_argument("--impls", default="hadirector,keepalived")
    p.add_argument("--stops", default="kill,term")
    p.add_argument("--mode", choices=["dr", "nat"], default="dr")
    # The client load of lab/pairlab.py: under emulation a heavier one starves the
    # client itself and it reports its own slowness as failures.
    p.add_argument("--rate", type=float, default=10.0, help="short requests per second (default 10)")
    p.add_argument("--req-timeout", type=float, default=2.0, help="short request timeout (default 2 s)")
    p.add_argument("--longs", type=int, default=10, help="long-lived connections per client")
    p.add_argument("--ping", type=float, default=0.5, help="long-lived echo period (default 0.5 s)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the stop and after takeover")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results directory (JSON, logs, captures)")
    p.add_argument("--timeout", type=float, default=None, help="kernel-lab timeout (default: estimated)")
    p.add_argument("--inside", action="store_true", help="run here (a kernel with IPVS)")
    p.add_argument("--live", action="store_true",
                   help="run the work tree as it is, not a snapshot of the last commit")
    p.add_argument("--commit", default="work tree", help=argparse.SUPPRESS)
    p.add_argument("--table", metavar="JSON", nargs="+",
                   help="only print the table of results files (several runs are pooled)")
    a = p.parse_args(argv)
    a.adverts = [float(x) for x in a.adverts.split(",")]
    a.impls = [x for x in a.impls.split(",") if x]
    a.stops = [x for x in a.stops.split(",") if x]
    if not 1 <= a.cycles <= 100:
        p.error("--cycles must be 1..100")
    for s in a.stops:
        if s not in ("kill", "term"):
            p.error(f"unknown stop mode {s}")
    for i in a.impls:
        if i not in ("hadirector", "keepalived"):
            p.error(f"unknown implementation {i}")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.table:
        docs = [json.loads(Path(f).read_text()) for f in a.table]
        pooled = {**docs[0], "commit": ", ".join(sorted({str(d.get("commit")) for d in docs})),
                  "records": [r for d in docs for r in d["records"]],
                  "cases": [c for d in docs for c in d.get("cases", [])]}
        print(table(pooled))
        return 0
    if a.inside:
        return run_inside(a)
    return run_outside(a, [x for x in argv if x != "--inside"])


if __name__ == "__main__":
    sys.exit(main())
