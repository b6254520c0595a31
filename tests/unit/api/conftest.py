"""A fake agent for the API tests: one realistic snapshot and scripted reloads."""

from __future__ import annotations

import dataclasses

import pytest
import structlog.testing

from hadirector.api.metrics import Histogram
from hadirector.api.snapshot import (
    CheckResult,
    HealthEngine,
    HealthTotals,
    HealthWorkerStatus,
    HealthState as Health,
    Stats,
    KernelSyncDaemon,
    NodeStatus,
    RealServerStatus,
    ReloadStatus,
    Snapshot,
    SyncDaemonStatus,
    SyncRole,
    VirtualServiceStatus,
    VrrpInstanceStatus,
    VrrpState,
)

NOW = 1_700_000_000.0


def make_snapshot() -> Snapshot:
    hist = Histogram((0.001, 0.01, 0.1, 1.0))
    for latency in (0.0004, 0.0009, 0.003, 0.05, 2.0):
        hist.observe(latency)
    web = VirtualServiceStatus(
        name="web",
        key="TCP 10.0.0.100:80",
        scheduler="wlc",
        quorum_up=True,
        stats=Stats(conns=120, inpkts=3400, outpkts=3100, inbytes=220_000,
                           outbytes=4_500_000, cps=3),
        real_servers=(
            RealServerStatus(
                address="10.0.1.1", port=80, forward="nat", health=Health.UP,
                health_since=NOW - 312, weight=10, kernel_weight=10,
                last_check=CheckResult(ok=True, detail="HTTP 200", latency=0.0012,
                                       at=NOW - 2),
                active_conns=4, inactive_conns=7,
                stats=Stats(conns=80, inpkts=2000, outpkts=1900, inbytes=150_000,
                                   outbytes=3_000_000),
            ),
            RealServerStatus(
                address="10.0.1.2", port=80, forward="nat", health=Health.DOWN,
                health_since=NOW - 45, weight=10, kernel_weight=None,
                last_check=CheckResult(ok=False, detail="connection refused",
                                       latency=0.0003, at=NOW - 1),
            ),
        ),
    )
    dns = VirtualServiceStatus(
        name="dns-v6",
        key="UDP [2001:db8::53]:53",
        scheduler="rr",
        quorum_up=False,
        persistence_timeout=300,
        real_servers=(
            RealServerStatus(address="2001:db8:1::1", port=53, forward="dr",
                             health=Health.UNKNOWN, health_since=None, weight=1,
                             kernel_weight=None),
        ),
    )
    mark = VirtualServiceStatus(name="marked", key="FWM 5", scheduler="sh", quorum_up=True,
                                in_kernel=False)
    return Snapshot(
        node=NodeStatus(router_id="lb1", config_path="/etc/hadirector/hadirector.yaml",
                        pid=4242, started_at=NOW - 3725, config_loaded_at=NOW - 600,
                        config_generation=3, version="0.1.0"),
        generated_at=NOW,
        vrrp_instances=(
            VrrpInstanceStatus(
                name="VI_1", vrid=51, interface="eth0", version=3, state=VrrpState.MASTER,
                priority=150, effective_priority=150, master_address="192.0.2.1",
                since=NOW - 312, reason="master_down_timer", transitions=2,
                adverts_sent=310, adverts_received=12,
                adverts_invalid={"bad_ttl": 3, "bad_checksum": 1},
                virtual_ips=("10.0.0.100/24",), held_vips=("10.0.0.100/24",),
            ),
            VrrpInstanceStatus(
                name="VI_6", vrid=52, interface="eth1", version=2, state=VrrpState.BACKUP,
                priority=100, effective_priority=80, master_address="192.0.2.2",
                since=NOW - 3700, reason="higher_priority_advert", transitions=1,
                adverts_sent=0, adverts_received=3700, virtual_ips=("10.0.6.1/32",),
            ),
        ),
        virtual_services=(web, dns, mark),
        sync_daemon=SyncDaemonStatus(
            configured=True, desired_role=SyncRole.MASTER, interface="eth1", syncid=7,
            follow_instance="VI_1",
            kernel=(KernelSyncDaemon(role=SyncRole.MASTER, interface="eth1", syncid=7),),
        ),
        health=HealthTotals(checks={"ok": 4, "fail": 1}, latency=hist.snapshot(), engine=HealthEngine.ASYNCIO),
        reloads=ReloadStatus(count=3, failures=1, last_ok=True, last_at=NOW - 600),
    )


def make_big_snapshot(services: int, servers: int) -> Snapshot:
    """make_snapshot() with ``services`` copies of its "web" service, ``servers`` real
    servers each."""
    base = make_snapshot()
    web = base.virtual_services[0]
    rs = web.real_servers[0]
    return dataclasses.replace(base, virtual_services=tuple(
        dataclasses.replace(web, name=f"svc{i}", real_servers=tuple(
            dataclasses.replace(rs, address=f"10.1.{i}.{j}") for j in range(servers)))
        for i in range(services)))


@pytest.fixture
def big_snapshot():
    return make_big_snapshot


def make_worker_snapshot(snap: Snapshot, **worker) -> Snapshot:
    """``snap`` on a director with ``health: {engine: worker}`` whose checker worker is
    ``HealthWorkerStatus(**worker)`` (by default running as pid 4300, started 600 s ago)."""
    w = HealthWorkerStatus(**{"running": True, "pid": 4300, "starts": 1, "since": NOW - 600, **worker})
    return dataclasses.replace(snap, health=dataclasses.replace(snap.health, engine=HealthEngine.WORKER, worker=w))


@pytest.fixture
def worker_snapshot():
    return make_worker_snapshot


@pytest.fixture
def snapshot() -> Snapshot:
    return make_snapshot()


@pytest.fixture(autouse=True)
def logs():
    """The API's structlog events, captured (and kept off stdout, where the CLI's
    output is asserted)."""
    with structlog.testing.capture_logs() as captured:
        yield captured
