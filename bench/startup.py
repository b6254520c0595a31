#!/usr/bin/env python3
"""Start-up time and idle memory of hadirector and keepalived, in the same run.

One lone node (no peer) in a namespace LAN (lab/lan.py), one VRRP instance
at priority 100 with one VIP, equivalent configs (lab.agents.instance_config and
keepalived_conf). Per run, for each implementation in turn:

    exec -> BACKUP   the process's own "entered BACKUP" log line: hadirector's
                     vrrp.role_changed INIT -> BACKUP, keepalived's "Entering BACKUP
                     STATE"; each line is stamped when this script reads it from the
                     process's stdout pipe (the agent and keepalived write unbuffered),
                     on the same monotonic clock that stamped the exec;
    exec -> MASTER   the VIP appearing on eth0 with no peer (``ip monitor address`` in
                     the node's namespace, started before the exec); it includes the
                     RFC 5798 Master_Down_Interval (3 x advert + skew), the same for both;
    idle PSS         after ``--idle`` seconds as MASTER, Pss of /proc/PID/smaps_rollup
                     summed over the process and all its descendants (keepalived -P:
                     the parent and its VRRP child).

The tree is byte-compiled first (``compileall``), as an installed package is.
Rows: ``hadirector`` is the test labs' config (api disabled); ``hadirector+api`` the
default config (status/metrics API on 127.0.0.1:9110 in the namespace).

Usage (root):
    .venv/bin/python -m bench.startup [--runs 5] [--advert 0.1] [--idle 5] [--impls ...]
    .venv/bin/python -m bench.startup --baseline de7f8dd      # + that commit's rows, same run
    .venv/bin/python -m bench.startup --kernel-lab [--runs 3]     # the same in the QEMU lab
    .venv/bin/python -m bench.startup --layout installed     # hadirector without .venv's editable finder
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from lab.agents import instance_config, keepalived_conf
from lab.lan import Lan

ROOT = Path(__file__).resolve().parents[1]

PY = sys.executable
IMPLS = ("hadirector", "hadirector+api", "keepalived")


class Stamped:
    """A process's stdout, each line stamped with time.monotonic() when read."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            now = time.monotonic()
            with self._cond:
                self.lines.append((now, raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()

    def wait(self, match, timeout: float) -> float | None:
        """The stamp of the first line for which ``match(line)`` holds, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, line in self.lines:
                    if match(line):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


def hadirector_backup(line: str) -> bool:
    if '"vrrp.role_changed"' not in line:
        return False
    ev = json.loads(line)
    return ev.get("old") == "INIT" and ev.get("new") == "BACKUP"


def keepalived_backup(line: str) -> bool:
    return "Entering BACKUP STATE" in line


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def pss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def command(impl: str, lan: Lan, work: Path, advert: float,
            trees: dict[str, Path], python: str = PY) -> tuple[list[str], dict, Path]:
    ns = ["ip", "netns", "exec", lan.ns(1)]
    if impl.startswith("hadirector"):
        kind, _, _commit = impl.partition("@")
        cfg = {
            "node": {"router_id": "n1", "state_dir": str(work / "state"), "log_format": "json"},
            "vrrp_instances": [instance_config(lan, priority=100, advert=advert)],
        }
        if kind == "hadirector":
            cfg["api"] = {"enabled": False}
        path = work / "hadirector.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        tree = trees.get(impl, ROOT)
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
        # cwd too: ``python -m`` puts it first on sys.path.
        return [*ns, python, "-m", "hadirector.cli", "run", "-c", str(path), "--log-format", "json"], env, tree
    conf = work / "keepalived.conf"
    conf.write_text(keepalived_conf(router_id="k1", vrid=51, priority=100, advert=advert,
                                    vip=str(lan.vip4())))
    run = work / "ka-run"
    run.mkdir(exist_ok=True)
    for stale in run.glob("*.pid"):
        stale.unlink()
    # As lab.agents.KeepalivedProc: foreground, VRRP only, no respawn.
    return [*ns, "/usr/sbin/keepalived", "-n", "-l", "-D", "-P", "-R", "-f", str(conf),
            "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"),
            "--no-syslog", "--log-console"], dict(os.environ), ROOT


def one_run(impl: str, lan: Lan, work: Path, advert: float, idle: float, trees: dict[str, Path],
            python: str = PY) -> dict:
    vip = str(lan.vip4())
    mon = subprocess.Popen(["ip", "-n", lan.ns(1), "monitor", "address", "dev", "eth0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    mon_lines = Stamped(mon)
    time.sleep(0.3)                      # ip monitor has subscribed
    argv, env, cwd = command(impl, lan, work, advert, trees, python)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(cwd))
    out = Stamped(proc)
    try:
        backup = out.wait(hadirector_backup if impl.startswith("hadirector") else keepalived_backup, 120)
        master = mon_lines.wait(lambda line: f"inet {vip}/" in line and "Deleted" not in line, 120)
        if master is None:
            raise RuntimeError(f"{impl}: no VIP within 120 s:\n" + "\n".join(l for _, l in out.lines[-20:]))
        time.sleep(idle)
        pids = tree(proc.pid)
        pss = pss_kib(pids)
        return {"impl": impl, "backup": None if backup is None else backup - t0,
                "master": master - t0, "pss_kib": pss, "procs": len(pids)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            for p in tree(proc.pid):
                os.kill(p, signal.SIGKILL)
            proc.wait(5)
        mon.kill()
        mon.wait()
        subprocess.run(["ip", "-n", lan.ns(1), "addr", "del", f"{vip}/32", "dev", "eth0"],
                       capture_output=True)


def stats(values: list[float]) -> str:
    if not values:
        return f"{'n/a':>22}"
    return f"{statistics.median(values):6.3f} {min(values):6.3f} {max(values):6.3f}   "


def table(doc: dict) -> str:
    impls = doc["impls"]
    by = {i: [r for r in doc["records"] if r["impl"] == i] for i in impls}
    lines = [
        f"where: {doc['where']}, advert {doc['advert']:g} s, {doc['runs']} runs, idle {doc['idle']:g} s, "
        f"commit {doc['commit']}",
        f"{'impl':<24} | {'exec -> BACKUP s':^22} | {'exec -> MASTER (VIP) s':^22} | {'idle PSS MB':^20} | procs",
        f"{'':<24} | {'median    min    max':^22} | {'median    min    max':^22} | {'median   min   max':^20} |",
        "-" * 105,
    ]
    for i in impls:
        rs = by[i]
        pss = [r["pss_kib"] / 1024 for r in rs]
        p = (f"{statistics.median(pss):6.1f} {min(pss):5.1f} {max(pss):5.1f}  " if pss else "n/a")
        lines.append(f"{i:<24} | {stats([r['backup'] for r in rs if r['backup'] is not None])} | "
                     f"{stats([r['master'] for r in rs])} | {p:^20} | {rs[0]['procs'] if rs else ''}")
    return "\n".join(lines)


def commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "?") + ("+dirty" if dirty else "")


def run_here(a: argparse.Namespace) -> int:
    if "keepalived" in a.impls and not Path("/usr/sbin/keepalived").exists():
        print("startup: /usr/sbin/keepalived is not installed", file=sys.stderr)
        return 2
    # As installed (a package compiles its modules): without .pyc files, e.g. under
    # PYTHONDONTWRITEBYTECODE, every start would compile the modules it imports. (In the
    # kernel lab, the outer run compiled them: the lab's root is read-only.)
    if not a.inside:
        compile_tree(ROOT)
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    trees = {}
    prepared = dict(x.split(":", 1) for x in a.baseline_tree)
    for commit_ in a.baseline + list(prepared):
        tree = Path(prepared[commit_]) if commit_ in prepared else export(commit_, work)
        for kind in ("hadirector", "hadirector+api"):
            if kind in a.impls:
                a.impls.insert(a.impls.index(kind), f"{kind}@{commit_}")
                trees[f"{kind}@{commit_}"] = tree
    python = PY
    if a.layout == "installed":
        # The package's layout (a venv whose site-packages has no .pth), not .venv's
        # editable install, whose finder runs at every start (bench/startup_floor.py).
        from bench.startup_floor import installed_layout

        python = str(installed_layout(work, getattr(sys, "_base_executable", sys.executable)))
    lan = Lan("su", nodes=1, net=61)
    where = "kernel lab (QEMU TCG)" if a.inside else "host namespaces"
    if a.layout == "installed":
        where += ", installed layout"
    doc = {"where": where, "advert": a.advert, "runs": a.runs, "idle": a.idle,
           "commit": a.commit or commit(), "impls": a.impls, "records": []}
    try:
        lan.up()
        # Interleaved, so a load change on the shared host hits every implementation.
        for n in range(a.runs):
            for impl in a.impls:
                (work / impl).mkdir(parents=True, exist_ok=True)
                r = one_run(impl, lan, work / impl, a.advert, a.idle, trees, python)
                doc["records"].append(r)
                b = f"{r['backup']:.3f}" if r["backup"] is not None else "n/a"
                print(f"  run {n + 1} {impl:<24} backup {b} s  master {r['master']:.3f} s  "
                      f"pss {r['pss_kib'] / 1024:.1f} MB ({r['procs']} procs)", file=sys.stderr, flush=True)
                if a.json:
                    Path(a.json).write_text(json.dumps(doc, indent=1))
    finally:
        lan.down()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(doc))
    return 0


def compile_tree(tree: Path) -> None:
    subprocess.run([PY, "-m", "compileall", "-q", str(tree / "hadirector")], check=True)


def export(commit_: str, work: Path) -> Path:
    """``commit_``'s hadirector package, unpacked and compiled under ``work``."""
    dest = work / f"tree-{commit_}"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit_, "hadirector"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    compile_tree(dest)
    return dest


def run_kernel_lab(a: argparse.Namespace, argv: list[str]) -> int:
    out = Path(tempfile.mkdtemp(prefix="startup-kl-", dir=str(ROOT / "results") if (ROOT / "results").is_dir()
                                else None))
    compile_tree(ROOT)  # the lab's root is read-only: no .pyc could be written there
    js = out / "startup.json"
    # Baseline trees are exported here: the lab has no git.
    trees = [f"--baseline-tree={c}:{export(c, out)}" for c in a.baseline]
    inner = [PY, "-m", "bench.startup", "--inside", "--json", str(js), "--commit", commit(),
             *trees, *strip(argv, "--kernel-lab", "--baseline")]
    timeout = 300 + a.runs * len(a.impls) * (120 + a.idle)
    rc = subprocess.run([PY, "-m", "lab.kernel", "--timeout", str(int(timeout)),
                         "--mem", "1024", "--rw", str(out), "--", *inner], cwd=ROOT).returncode
    if js.exists():
        print()
        print(table(json.loads(js.read_text())))
    return rc


def strip(argv: list[str], flag: str, valued: str) -> list[str]:
    """``argv`` without ``flag`` and without ``valued`` and its value."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == flag or x.startswith(valued + "="):
            continue
        elif x == valued:
            skip = True
        else:
            out.append(x)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--advert", type=float, default=0.1, help="advert interval, seconds (default 0.1)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds as MASTER before PSS is read")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--kernel-lab", action="store_true", help="run the bench inside the QEMU kernel lab")
    p.add_argument("--layout", choices=("dev", "installed"), default="dev",
                   help="hadirector's interpreter: .venv's python (its editable install's finder runs at "
                        "every start), or a venv laid out as the Debian package's, without it")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--baseline", action="append", default=[], metavar="COMMIT",
                   help="also run this commit's hadirector (before/after in one run; repeatable)")
    p.add_argument("--baseline-tree", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the records here too")
    p.add_argument("--commit", help=argparse.SUPPRESS)
    p.add_argument("--table", metavar="JSON", help="only print the table of a --json file")
    a = p.parse_args(argv)
    a.impls = [i for i in a.impls.split(",") if i]
    for i in a.impls:
        if i.partition("@")[0] not in IMPLS:
            p.error(f"unknown implementation {i}")
    if not 1 <= a.runs <= 50:
        p.error("--runs must be 1..50")
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return 0
    if a.kernel_lab:
        return run_kernel_lab(a, argv)
    return run_here(a)


if __name__ == "__main__":
    sys.exit(main())
