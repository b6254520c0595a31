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
* ``HealthRunner`` with ``TcpProbe`` (or ``HttpProbe(path="/health")``), ``interval 1``,
  ``timeout 2``, ``warmup 1``.

It reports checks per second (counted by the servers, so the same yardstick for both)
and CPU seconds per wall second of the checker processes (/proc/<pid>/stat). Under the
lab's TCG emulation CPU-bound work is 10-20x slower than on the host, equally for both;
compare the two rows with each other, not with bench/health_checks.py on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from bench import health_checks as hc

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
        c0, a0, t0 = hc.proc_cpu(checker) + hc.proc_cpu(proc.pid), accepted.value, time.monotonic()
        time.sleep(duration)
        c1, a1, t1 = hc.proc_cpu(checker) + hc.proc_cpu(proc.pid), accepted.value, time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = t1 - t0
    return {"rate": (a1 - a0) / wall, "cpu": (c1 - c0) / wall}


def run_ours(eps, accepted, duration, interval, timeout, kind="tcp") -> dict:
    a0 = accepted.value
    res = asyncio.run(hc.measure(eps, kind, duration, interval, timeout, 512))
    return {"rate": res["rate"], "cpu": res["cpu"] / res["wall"], "p50": res["p50"], "p99": res["p99"],
            "late_p99": res["late_p99"], "fail": res["fail"], "accepted": accepted.value - a0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000")
    ap.add_argument("--kinds", default="tcp,http")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
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
          f" {os.cpu_count()} CPUs, kernel {os.uname().release}, {kv}", flush=True)
    header = f"{'checker':12} {'kind':5} {'servers':>7} {'want/s':>7} {'got/s':>7} {'cpu s/s':>7} {'us/chk':>7}  notes"
    print(header)
    print("-" * (len(header) + 20), flush=True)
    import multiprocessing
    for kind in args.kinds.split(","):
        for n in [int(s) for s in args.sizes.split(",")]:
            eps = hc.endpoints(n)
            accepted = multiprocessing.get_context("fork").Value("q", 0)
            procs, stop = hc.start_servers(eps, kind, 2, accepted)
            try:
                rows = [("keepalived", run_keepalived(eps, accepted, args.duration, args.interval,
                                                      args.timeout, kind)),
                        ("hadirector", run_ours(eps, accepted, args.duration, args.interval,
                                                args.timeout, kind))]
            finally:
                hc.stop_servers(procs, stop)
            for name, r in rows:
                notes = ""
                if "p50" in r:
                    notes = (f"probe p50 {r['p50'] * 1e3:.1f} ms, p99 {r['p99'] * 1e3:.1f} ms,"
                             f" late p99 {r['late_p99'] * 1e3:.0f} ms, failed {r['fail']}")
                print(f"{name:12} {kind:5} {n:>7} {n / args.interval:>7.0f} {r['rate']:>7.0f} {r['cpu']:>7.2f} "
                      f"{r['cpu'] / max(r['rate'], 1e-9) * 1e6:>7.0f}  {notes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
