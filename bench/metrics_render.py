"""Render /metrics for a big snapshot: the hand-written renderer (hadirector.api.metrics)
against prometheus_client's custom-collector API on a registry instance, and what
importing prometheus_client costs the agent.

    .venv/bin/python bench/metrics_render.py [--services 100] [--servers 100]

The collector side converts the same families, sample for sample, into prometheus_client
``Metric`` objects in ``collect()`` and renders them with ``generate_latest(registry)``;
so it measures what the library adds (objects per sample, its formatting), not a
different set of metrics.
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


def build_families(snap: Snapshot) -> metrics._Exposition:
    """The part both renderers share: walking the snapshot into families of samples."""
    ex = metrics._Exposition()
    for part in (metrics._node, metrics._vrrp, metrics._ipvs, metrics._sync_daemon,
                 metrics._health, metrics._reloads, metrics._link_watch, metrics._api):
        part(ex, snap)
    return ex


def collector_render(snap: Snapshot) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric

    class SnapshotCollector:
        def collect(self):
            ex = build_families(snap)
            for fam in ex._families.values():
                name = fam.name[:-len("_total")] if fam.type == "counter" else fam.name
                m = Metric(name, fam.help, fam.type)
                for sample_name, labels, value in fam.samples:
                    m.add_sample(sample_name, dict(labels), float(value))
                yield m

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector())
    return generate_latest(registry)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    snap = big_snapshot(a.services, a.servers)
    build = statistics.median(timed(build_families, snap, a.repeat))
    hand = timed(metrics.render, snap, a.repeat)
    lib = timed(collector_render, snap, a.repeat)
    size_hand = len(metrics.render(snap).encode())
    size_lib = len(collector_render(snap))
    print(f"snapshot: {a.services} services x {a.servers} real servers")
    hand_ms, lib_ms, build_ms = statistics.median(hand) * 1000, statistics.median(lib) * 1000, build * 1000
    print(f"walk the snapshot into families (shared):   {build_ms:8.1f} ms")
    print(f"render, hand-written:          median {hand_ms:8.1f} ms, of which text {hand_ms - build_ms:8.1f} ms"
          f"  ({size_hand} bytes)")
    print(f"render, prometheus_client:     median {lib_ms:8.1f} ms, of which text {lib_ms - build_ms:8.1f} ms"
          f"  ({size_lib} bytes)")
    base = "aiohttp, hadirector.api.server"
    print(f"import prometheus_client alone:                 {import_ms('prometheus_client'):6.1f} ms")
    print(f"import prometheus_client after the API server:  {import_ms('prometheus_client', after=base):6.1f} ms,"
          f" RSS +{rss_delta_kb('prometheus_client', base)} kB")


if __name__ == "__main__":
    main()
