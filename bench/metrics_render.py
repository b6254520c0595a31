"""Render /metrics for a big snapshot with the agent's renderer (hadirector.api.metrics):
the whole body, the longest slice the event loop is held for (``Renderer.step``), and
what importing prometheus_client would cost the agent.

    .venv/bin/python -m bench.metrics_render [--services 100] [--servers 100]

The prometheus_client custom-collector comparison (the same families converted sample
for sample into ``Metric`` objects, rendered by ``generate_latest(registry)``) ran
against the earlier renderer: ``git show 6103bbd:bench/metrics_render.py``; its numbers
are in bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from hadirector.api import metrics
from hadirector.api.snapshot import (
    CheckResult, NodeStatus, RealServerStatus, Snapshot, Stats, VirtualServiceStatus,
    VrrpInstanceStatus,
)
from hadirector.model import HealthState, VrrpState

NOW = 1_700_000_000.0


def big_snapshot(services: int, servers: int) -> Snapshot:
    vss = []
    for i in range(services):
        rss = tuple(RealServerStatus(
            address=f"10.{i // 250}.{i % 250}.{j}", port=80, forward="nat",
            health=HealthState.UP if j % 7 else HealthState.DOWN, health_since=NOW - j,
            weight=10, kernel_weight=10 if j % 7 else None,
            last_check=CheckResult(ok=bool(j % 7), detail="HTTP 200", latency=0.001, at=NOW),
            active_conns=j, inactive_conns=2 * j,
            stats=Stats(conns=1000 * j, inpkts=10 * j, outpkts=9 * j, inbytes=100 * j, outbytes=900 * j))
            for j in range(servers))
        vss.append(VirtualServiceStatus(name=f"svc{i}", key=f"TCP 192.0.2.{i % 250}:{8000 + i}",
                                        scheduler="wlc", quorum_up=True, real_servers=rss,
                                        stats=Stats(conns=5 * i)))
    vrrp = tuple(VrrpInstanceStatus(name=f"vi_{k}", vrid=k + 1, interface="eth0", version=3,
                                    state=VrrpState.MASTER, priority=100, effective_priority=100,
                                    master_address="192.0.2.1", since=NOW, reason="",
                                    virtual_ips=(f"192.0.2.{k}/24",), held_vips=(f"192.0.2.{k}/24",))
                 for k in range(4))
    return Snapshot(node=NodeStatus(router_id="lb1", config_path="/etc/x.yaml", pid=1, started_at=NOW,
                                    config_loaded_at=NOW, version="0.1.0"),
                    generated_at=NOW, vrrp_instances=vrrp, virtual_services=tuple(vss))


def timed(fn, snap, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(snap)
        out.append(time.perf_counter() - t)
    return out


def import_ms(module: str, runs: int = 7, after: str = "") -> float:
    """Median cumulative import time (-X importtime, microseconds -> ms) of ``module``,
    imported after ``after`` (what the agent has already loaded)."""
    samples = []
    for _ in range(runs):
        code = (f"import {after}\n" if after else "") + f"import {module}"
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                             capture_output=True, text=True, check=True).stderr
        line = [ln for ln in err.splitlines() if ln.rstrip().endswith(f"| {module}")][-1]
        samples.append(int(line.split("|")[1]) / 1000)
    return statistics.median(samples)


def rss_delta_kb(module: str, after: str) -> int:
    rss = "int([ln for ln in open('/proc/self/status') if ln.startswith('VmRSS')][0].split()[1])"
    code = f"import {after}\nb = {rss}\nimport {module}\nprint({rss} - b)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)


def longest_slice(snap: Snapshot) -> tuple[float, float, int]:
    """The longest ``Renderer.step()`` (what one turn of the event loop waits for), in
    wall time and in this thread's CPU time (wall includes being preempted by other
    processes on a loaded machine), and the number of slices."""
    r = metrics.Renderer(snap)
    wall = cpu = 0.0
    n, done = 0, False
    while not done:
        t, c = time.perf_counter(), time.thread_time()
        done = r.step()
        wall = max(wall, time.perf_counter() - t)
        cpu = max(cpu, time.thread_time() - c)
        n += 1
    return wall, cpu, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    snap = big_snapshot(a.services, a.servers)
    whole = statistics.median(timed(metrics.render, snap, a.repeat)) * 1000
    slices = [longest_slice(snap) for _ in range(a.repeat)]
    wall = statistics.median(w for w, _, _ in slices) * 1000
    cpu = statistics.median(c for _, c, _ in slices) * 1000
    size = len(metrics.render(snap).encode())
    print(f"snapshot: {a.services} services x {a.servers} real servers")
    print(f"render, whole body:               median {whole:8.1f} ms  ({size} bytes)")
    print(f"render, longest slice (loop held): median {wall:7.2f} ms wall, {cpu:.2f} ms CPU"
          f"  ({slices[0][2]} slices)")
    base = "aiohttp, hadirector.api.server"
    print(f"import prometheus_client alone:                 {import_ms('prometheus_client'):6.1f} ms")
    print(f"import prometheus_client after the API server:  {import_ms('prometheus_client', after=base):6.1f} ms,"
          f" RSS +{rss_delta_kb('prometheus_client', base)} kB")


if __name__ == "__main__":
    main()
