"""Benchmark: hadirector's health runner next to keepalived's checker, same targets.

keepalived's checker only runs with IPVS (it programs the real servers it finds up),
so this runs where IPVS exists -- on this project's machines, inside the kernel lab:

    .venv/bin/python -m lab.kernel --timeout 900 -- .venv/bin/python -m bench.health_keepalived

For each kind (``--kinds tcp,http``) and N it starts N loopback listeners (epoll server
processes that count the connections they accept; for http they answer ``200 OK``),
then runs, one after the other for ``--duration`` seconds:

* keepalived 2.x ``-C`` with one ``TCP_CHECK`` (or ``HTTP_GET`` of ``/health``, status
  200) per real server, ``delay_loop 1``, ``connect_timeout 2`` (warmup spreads first
  checks over the delay loop by default);
* ``health: {engine: worker}`` (row ``hadirector+w``): ``WorkerHealthRunner`` with the
  same targets, the checks in its worker process; CPU of both processes (the agent's
  share in the notes), lateness as the worker counts it;
* ``HealthRunner`` with ``TcpProbe`` (or ``HttpProbe(path="/health")``), ``interval 1``,
  ``timeout 2``, ``warmup 1``, twice: as the agent runs it (row ``hadirector``: nothing
  added per check, its long-lived objects frozen as ``agent/heap.py`` does), and with
  bench/health_checks.py's per-check instrumentation (row ``hadirector+i``: a closure and
  a record per check, for probe latency and start lateness; what earlier sessions'
  tables measured).

It reports checks per second (counted by the servers, so the same yardstick for all)
and CPU seconds per wall second of the checker processes (/proc/<pid>/stat for
keepalived, getrusage for ours), split into user and system time per check. Under the
lab's TCG emulation CPU-bound work is 10-20x slower than on the host, equally for both;
compare the rows with each other, not with bench/health_checks.py on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import structlog

from bench import health_checks as hc
from hadirector.agent.health_runner import HealthRunner

WORK = Path("/run/hc-bench")


def keepalived_conf(eps, interval: float, timeout: float, kind: str = "tcp") -> str:
    out = ["global_defs {\n    router_id hcbench\n}\n"]
    per_service = 1000
    for s in range(0, len(eps), per_service):
        out.append(f"virtual_server 10.200.0.1 {8000 + s // per_service} {{\n"
                   f"    delay_loop {interval:g}\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n")
        for host, port in eps[s:s + per_service]:
            if kind == "http":
                check = (f"        HTTP_GET {{\n            url {{\n                path /health\n"
                         f"                status_code 200\n            }}\n"
                         f"            connect_timeout {timeout:g}\n        }}\n")
            else:
                check = f"        TCP_CHECK {{\n            connect_timeout {timeout:g}\n        }}\n"
            out.append(f"    real_server {host} {port} {{\n        weight 1\n{check}    }}\n")
        out.append("}\n")
    return "".join(out)


def read_pid(path: Path, wait: float) -> int:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no pid in {path} after {wait}s")


def run_keepalived(eps, accepted, duration, interval, timeout, kind="tcp") -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    conf, pidf, cpidf = WORK / "keepalived.conf", WORK / "ka.pid", WORK / "ka-check.pid"
    for f in (pidf, cpidf):
        f.unlink(missing_ok=True)
    conf.write_text(keepalived_conf(eps, interval, timeout, kind))
    with open(WORK / "keepalived.log", "w") as log:
        proc = subprocess.Popen(["keepalived", "-n", "-C", "-G", "-f", str(conf), "-p", str(pidf),
                                 "-c", str(cpidf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        checker = read_pid(cpidf, 30)
        time.sleep(interval * 2.5)              # warmup spreads first checks over delay_loop
        c0, a0, t0 = _times(checker, proc.pid), accepted.value, time.monotonic()
        time.sleep(duration)
        c1, a1, t1 = _times(checker, proc.pid), accepted.value, time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = t1 - t0
    return {"rate": (a1 - a0) / wall, "user": (c1[0] - c0[0]) / wall, "sys": (c1[1] - c0[1]) / wall}


def _times(*pids: int) -> tuple[float, float]:
    times = [hc.proc_times(p) for p in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def run_ours(eps, accepted, duration, interval, timeout, kind="tcp") -> dict:
    """``HealthRunner`` as the agent runs it: no per-check instrumentation; checks counted
    by the servers (as keepalived's), failures from the runner's own totals."""
    async def measure() -> dict:
        runner = HealthRunner(hc.config_for(eps, kind, interval, timeout), None, seed=1, warmup=interval)
        if hc.heap is not None:
            hc.heap.settle()
        gc.collect()
        await runner.start()
        try:
            await asyncio.sleep(interval * 2.5)         # as keepalived's run
            k0 = dict(runner.snapshot().totals.checks)
            r0, a0, t0 = resource.getrusage(resource.RUSAGE_SELF), accepted.value, time.monotonic()
            await asyncio.sleep(duration)
            r1, a1, t1 = resource.getrusage(resource.RUSAGE_SELF), accepted.value, time.monotonic()
            k1 = dict(runner.snapshot().totals.checks)
        finally:
            await runner.stop()
            if hc.heap is not None:
                hc.heap.release()
        wall = t1 - t0
        fail = sum(v - k0.get(k, 0) for k, v in k1.items() if k != "ok")
        return {"rate": (a1 - a0) / wall, "user": (r1.ru_utime - r0.ru_utime) / wall,
                "sys": (r1.ru_stime - r0.ru_stime) / wall, "fail": fail}
    return asyncio.run(measure())


def run_worker(eps, accepted, duration, interval, timeout, kind="tcp") -> dict:
    """``health: {engine: worker}``: ``WorkerHealthRunner`` in this process (the agent's
    share), the checks in its worker process; CPU is both, checks as the servers count
    them; lateness the worker's own count."""
    res = hc.worker_run(eps, kind, duration, interval, timeout, accepted=accepted, settle=2.5)
    return {"rate": res["served"], "user": res["user"] / res["wall"], "sys": res["sys"] / res["wall"],
            "p50": res["p50"], "p99": res["p99"], "late_p99": res["late_p99"], "fail": res["fail"],
            "agent_us": res["agent_cpu"] / max(1e-9, res["served"] * res["wall"]) * 1e6}


def run_instrumented(eps, accepted, duration, interval, timeout, kind="tcp") -> dict:
    """The same with bench/health_checks.py's per-check records (latency, lateness)."""
    a0 = accepted.value
    res = asyncio.run(hc.measure(eps, kind, duration, interval, timeout, 512))
    return {"rate": res["rate"], "user": res["user"] / res["wall"], "sys": res["sys"] / res["wall"],
            "p50": res["p50"], "p99": res["p99"], "late_p99": res["late_p99"], "fail": res["fail"],
            "accepted": accepted.value - a0}


def in_child(run, *args) -> dict:
    """``run(*args)`` in a forked child: each row starts from the same small heap, where
    a second row in this process ran 2.4-2.7x the first's CPU (the earlier rows' heap)
    while keepalived starts fresh each round."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    out = ctx.SimpleQueue()

    def row() -> None:
        try:
            out.put(run(*args))
        except BaseException as exc:            # the parent must not wait for ever
            out.put({"error": f"{type(exc).__name__}: {exc}"})
            raise
    child = ctx.Process(target=row)
    child.start()
    try:
        r = out.get()
    finally:
        child.join()
    if "error" in r:
        raise RuntimeError(f"{getattr(run, '__name__', run)}: {r['error']}")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000")
    ap.add_argument("--kinds", default="tcp,http")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=1, help="run the rows this many times, interleaved")
    ap.add_argument("--impls", default="keepalived,hadirector,hadirector+w,hadirector+i",
                    help="rows to run, in this order (keepalived belongs in every run)")
    ap.add_argument("--pin", action="store_true",
                    help="the checkers (keepalived's processes; ours and the worker it starts) on the"
                         " first CPU, the loopback servers on the others, so no row shares a CPU with"
                         " the servers (unpinned, one row's CPU per check moved 2.4-2.7x between rounds)")
    args = ap.parse_args(argv)
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            ap.error("--pin needs 2 CPUs or more")
        hc.SERVER_CPUS = set(cpus[1:])
        os.sched_setaffinity(0, {cpus[0]})
    runs = {"keepalived": run_keepalived, "hadirector": run_ours, "hadirector+w": run_worker,
            "hadirector+i": run_instrumented}
    impls = args.impls.split(",")
    unknown = [i for i in impls if i not in runs]
    if unknown:
        ap.error(f"--impls: unknown {', '.join(unknown)}; known: {', '.join(runs)}")
    if not os.path.exists("/proc/net/ip_vs"):
        print("health_keepalived: this kernel has no IPVS, which keepalived's checker needs;"
              " run it in the kernel lab:\n  .venv/bin/python -m lab.kernel --timeout 900 --"
              " .venv/bin/python -m bench.health_keepalived", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    ver = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    kv = (ver.stdout + ver.stderr).splitlines()[0] if (ver.stdout + ver.stderr) else "keepalived"
    print(f"# {args.kinds} checks, interval {args.interval:g}s, timeout {args.timeout:g}s, {args.duration:g}s per run,"
          f" {os.cpu_count()} CPUs, kernel {os.uname().release}, {kv}"
          + (f"; pinned: checkers on CPU {min(os.sched_getaffinity(0))}, servers on {sorted(hc.SERVER_CPUS)}"
             if args.pin else ""), flush=True)
    header = (f"{'checker':12} {'kind':5} {'servers':>7} {'want/s':>7} {'got/s':>7} {'cpu s/s':>7} {'us/chk':>7}"
              f" {'user':>7} {'sys':>7}  notes")
    print(header)
    print("-" * (len(header) + 20), flush=True)
    import multiprocessing
    for kind in args.kinds.split(","):
        for n in [int(s) for s in args.sizes.split(",")]:
            eps = hc.endpoints(n)
            accepted = multiprocessing.get_context("fork").Value("q", 0)
            procs, stop = hc.start_servers(eps, kind, 2, accepted)
            rows = []
            try:
                for _ in range(args.rounds):        # interleaved: a slow minute hits every row
                    rows += [(name, in_child(runs[name], eps, accepted, args.duration, args.interval,
                                             args.timeout, kind))
                             for name in impls]
            finally:
                hc.stop_servers(procs, stop)
            per_check: dict[str, list[float]] = {}
            for name, r in rows:
                notes = ""
                if "p50" in r:
                    notes = (f"probe p50 {r['p50'] * 1e3:.1f} ms, p99 {r['p99'] * 1e3:.1f} ms,"
                             f" late p99 {r['late_p99'] * 1e3:.0f} ms, ")
                if "fail" in r:
                    notes += f"failed {r['fail']}"
                if "agent_us" in r:
                    notes += f", agent {r['agent_us']:.0f} us/chk"
                cpu, per = r["user"] + r["sys"], 1e6 / max(r["rate"], 1e-9)
                per_check.setdefault(name, []).append(cpu * per)
                print(f"{name:12} {kind:5} {n:>7} {n / args.interval:>7.0f} {r['rate']:>7.0f} {cpu:>7.2f} "
                      f"{cpu * per:>7.0f} {r['user'] * per:>7.0f} {r['sys'] * per:>7.0f}  {notes}", flush=True)
            if args.rounds > 1:
                base = statistics.median(per_check.get("keepalived", [float("nan")]))
                print("  median us/chk: " + ", ".join(
                    f"{name} {statistics.median(v):.0f} ({statistics.median(v) / base:.2f}x)"
                    for name, v in per_check.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
