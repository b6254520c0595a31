"""The scale-out shell (agent/scaleout.py) against fakes that keep state like the kernel:
routes in a table, a fake LVS side whose IPVS and health the test sets. The real
netlink and BIRD are in tests/netns/test_scaleout_bgp.py."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from hadirector import model as m
from hadirector.agent import scaleout as so_mod
from hadirector.agent.scaleout import ScaleOutComponent
from hadirector.kernel.fake import FakeIpvs
from hadirector.kernel.reconcile import Reconciler
from hadirector.kernel.sysctl import SCALE_OUT_SYSCTLS
from hadirector.ipvs.table import desired_table

VIP = ipaddress.ip_address("10.100.0.1")
CHECK = m.HealthCheck(m.TcpProbe())
WEB = m.VirtualService("web", address=VIP, port=80, scheduler="mh", scheduler_flags=("mh-fallback",),
                       real_servers=tuple(m.RealServer(ipaddress.ip_address(a), forward=m.ForwardMethod.DR,
                                                       check=CHECK) for a in ("10.2.0.12", "10.2.0.11")))


class FakeRoutes:
    tables: dict[int, dict] = {}

    def __init__(self, table: int, proto: int) -> None:
        self.table, self.proto = table, proto
        self.routes = FakeRoutes.tables.setdefault(table, {})
        self.lo: set = set()

    def add(self, vip):
        self.routes[vip] = self.proto

    def delete(self, vip, scope=0):
        self.routes.pop(vip, None)

    def announced(self):
        return {v for v, p in self.routes.items() if p == self.proto}

    def flush(self):
        gone = self.announced()
        for v in gone:
            del self.routes[v]
        return gone

    def bind_vip(self, vip):
        new = vip not in self.lo
        self.lo.add(vip)
        return new

    def close(self):
        pass


class FakeHealth:
    def __init__(self) -> None:
        self.states: dict = {}

    def ipvs_health(self, vs, rs):
        return self.states.get(str(rs.address), m.HealthState.UNKNOWN)


class FakeLvs:
    def __init__(self, config: m.Config) -> None:
        self.config = config
        self.listeners: list = []
        self.health = FakeHealth()
        self.ipvs = FakeIpvs()
        self.reconciler = None
        self.programming = True

    def program(self) -> None:
        self.reconciler = Reconciler(self.ipvs)
        self.reconciler.sync(desired_table(self.config, self.health.ipvs_health))
        self.changed()

    def set_health(self, **states) -> None:
        self.health.states.update({k.replace("_", "."): v for k, v in states.items()})
        if self.reconciler is not None:
            self.reconciler.sync(desired_table(self.config, self.health.ipvs_health))
        self.changed()

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener()


def config(hold_down=0.0, drain_grace=0.2) -> m.Config:
    so = m.ScaleOut(services=("web",), local_as=65001, hold_down=hold_down, drain_grace=drain_grace,
                    peers=(m.BgpPeer(ipaddress.ip_address("10.1.0.1"), 65000),), bird_socket="/nonexistent")
    return m.Config(node=m.NodeSettings("d1", state_dir=STATE["dir"]), virtual_services=(WEB,), scale_out=so)


STATE = {"dir": "/nonexistent"}


@pytest.fixture(autouse=True)
def state_dir(tmp_path):
    STATE["dir"] = str(tmp_path / "state")
    yield STATE["dir"]
    STATE["dir"] = "/nonexistent"


@pytest.fixture
def sysctl_dir(tmp_path):
    for name, _ in SCALE_OUT_SYSCTLS:
        (tmp_path / name).write_text("0\n")
    return tmp_path


@pytest.fixture(autouse=True)
def fresh_tables():
    FakeRoutes.tables = {}


UP, DOWN = m.HealthState.UP, m.HealthState.DOWN


async def started(sysctl_dir, cfg: m.Config | None = None) -> tuple[FakeLvs, ScaleOutComponent]:
    """The component started over a fake LVS (nothing programmed, health unknown)."""
    lvs = FakeLvs(cfg or config())
    comp = ScaleOutComponent(lvs, routes_factory=FakeRoutes, sysctl_root=sysctl_dir)
    await comp.start(None)
    return lvs, comp


def serve(lvs: FakeLvs) -> None:
    """IPVS programmed and both real servers up: all the gate waits for."""
    lvs.program()
    lvs.set_health(**{"10_2_0_11": UP, "10_2_0_12": UP})


def test_start_flushes_a_predecessors_routes_and_announces_only_once_ipvs_and_health_are_there(sysctl_dir):
    async def run():
        FakeRoutes.tables[201] = {ipaddress.ip_address("10.100.0.9"): 201, ipaddress.ip_address("10.9.9.9"): 4}
        lvs, comp = await started(sysctl_dir)
        assert comp.routes.announced() == set(), "stale route flushed, nothing announced yet"
        assert ipaddress.ip_address("10.9.9.9") in comp.routes.routes, "not ours: left alone"
        assert comp.routes.lo == {VIP}
        assert comp.status()["vips"] == {str(VIP): {"announced": False, "reason": "web:ipvs_not_programmed"}}
        lvs.program()
        assert comp.status()["vips"][str(VIP)]["reason"] == "web:health_pending"
        assert comp.status()["sysctls"] == {"sloppy_tcp": "1", "sloppy_sctp": "1", "schedule_icmp": "1"}
        lvs.set_health(**{"10_2_0_11": UP, "10_2_0_12": DOWN})
        assert comp.routes.announced() == {VIP}
        status = comp.status()
        assert status["vips"][str(VIP)] == {"announced": True, "reason": ""}
        assert len(status["digests"]["web"]) == 12 and status["gate_changes"] == 1
        await comp.stop(None)

    asyncio.run(run())


def test_losing_ipvs_withdraws_at_once(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir)
        serve(lvs)
        assert comp.routes.announced() == {VIP}
        lvs.reconciler = None
        lvs.changed()
        assert comp.routes.announced() == set()
        await comp.stop(None)

    asyncio.run(run())


def test_the_hold_down_runs_on_the_loops_timer(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir, config(hold_down=0.3))
        serve(lvs)
        t0 = time.monotonic()
        while not comp.routes.announced():
            assert time.monotonic() - t0 < 3, "never announced"
            await asyncio.sleep(0.01)
        assert time.monotonic() - t0 >= 0.25
        await comp.stop(None)

    asyncio.run(run())


def test_stop_withdraws_first_and_returns_only_after_drain_grace(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir, config(drain_grace=0.3))
        serve(lvs)
        routes = comp.routes
        t0 = time.monotonic()
        stopping = asyncio.ensure_future(comp.stop(None))
        await asyncio.sleep(0.05)
        assert routes.announced() == set() and not stopping.done(), "withdrawn, not yet torn down"
        await stopping
        assert time.monotonic() - t0 >= 0.28
        assert comp.gate.vips[VIP].reason == "stopping"

    asyncio.run(run())


def test_drain_withdraws_and_undrain_announces_again(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir)
        serve(lvs)
        comp.drain(True)
        assert comp.routes.announced() == set() and comp.status()["drained"]
        comp.drain(False)
        assert comp.routes.announced() == {VIP}
        await comp.stop(None)

    asyncio.run(run())


def test_a_missing_birdc_is_reported_and_changes_nothing_else(sysctl_dir, monkeypatch):
    monkeypatch.setattr(so_mod.shutil, "which", lambda name: None)

    async def run():
        lvs, comp = await started(sysctl_dir)
        await comp.read_bird()
        assert comp.status()["bird_error"] == "birdc not installed" and comp.status()["bgp"] == []
        await comp.stop(None)

    asyncio.run(run())


def test_an_unreachable_bird_is_reported(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir)
        await comp.read_bird()
        assert "nonexistent" in comp.status()["bird_error"] or "connect" in comp.status()["bird_error"].lower()
        await comp.stop(None)

    asyncio.run(run())


def test_status_metrics_and_the_status_text_show_the_gate_digest_and_sysctl_drift(sysctl_dir):
    from hadirector.agent.status import build_snapshot
    from hadirector.api import metrics
    from hadirector.api.cli import render_status
    from hadirector.api.snapshot import ReloadStatus, Snapshot

    class Agent:                       # the supervisor as build_snapshot reads it
        def __init__(self, cfg, comps):
            self.config, self.components = cfg, comps

        started = True

        def instance_views(self):
            return ()

        def group_states(self):
            return {}

    async def run():
        lvs, comp = await started(sysctl_dir)
        serve(lvs)
        (sysctl_dir / "sloppy_tcp").write_text("0\n")        # someone turned it off
        from hadirector.agent.lvs import LvsController

        real_lvs = LvsController(lvs.config, backend=FakeIpvs())
        snap = build_snapshot(Agent(lvs.config, [comp]), real_lvs, started_at=0.0, loaded_at=0.0,
                              generation=1, reloads=ReloadStatus())
        await comp.stop(None)
        return snap

    snap = asyncio.run(run())
    so = snap.scale_out
    assert so.vips[0].announced and so.sysctl_drift == ("sloppy_tcp",)
    assert Snapshot.from_dict(snap.to_dict()) == snap
    text = metrics.render(snap)
    assert 'hadirector_scale_out_vip_announced{vip="10.100.0.1"} 1' in text
    assert 'hadirector_scale_out_sysctl_drift{sysctl="sloppy_tcp"} 1' in text
    assert f'hadirector_scale_out_service_digest_info{{service="web",digest="{so.digests["web"]}"}} 1' in text
    assert "hadirector_scale_out_bird_reachable 0" in text
    status = render_status(snap)
    assert "10.100.0.1: announced" in status and "SYSCTL DRIFT: net.ipv4.vs.sloppy_tcp=0" in status


def test_the_control_socket_commands_drain_and_undrain_answer_with_each_vips_state(sysctl_dir):
    async def run():
        lvs, comp = await started(sysctl_dir)
        serve(lvs)
        commands = comp.control_commands()
        assert commands["drain"]() == {"ok": True, "drained": True, "vips": {str(VIP): "drained"}}
        assert commands["undrain"]() == {"ok": True, "drained": False, "vips": {str(VIP): "announced"}}
        await comp.stop(None)

    asyncio.run(run())


def test_a_reload_keeps_an_announced_vip_and_withdraws_one_no_longer_listed(sysctl_dir):
    vip2 = ipaddress.ip_address("10.100.0.2")
    api = m.VirtualService("api", address=vip2, port=80, scheduler="mh", scheduler_flags=("mh-fallback",),
                           real_servers=WEB.real_servers)

    def with_services(services, names):
        base = config()
        so = m.ScaleOut(**{**base.scale_out.__dict__, "services": names})
        return m.Config(node=base.node, virtual_services=services, scale_out=so)

    async def run():
        lvs, comp = await started(sysctl_dir, with_services((WEB, api), ("web", "api")))
        serve(lvs)
        assert comp.routes.announced() == {VIP, vip2}
        changes = comp.gate_changes
        new = with_services((WEB, api), ("web",))
        lvs.config = new
        comp.update_config(new)
        assert comp.routes.announced() == {VIP}
        assert comp.gate_changes == changes + 1, "only the withdrawal: web stayed announced"
        await comp.stop(None)

    asyncio.run(run())


def test_a_drain_outlives_a_restart_until_undone(sysctl_dir, state_dir):
    async def run(undo: bool = False):
        lvs, comp = await started(sysctl_dir)
        serve(lvs)
        announced = comp.routes.announced()
        if undo:
            comp.drain(False)
        else:
            comp.drain(True)
        after = comp.routes.announced()
        await comp.stop(None)
        return announced, after

    assert asyncio.run(run()) == ({VIP}, set())
    assert asyncio.run(run(undo=True)) == (set(), {VIP}), "still drained after the restart, until undone"
    assert asyncio.run(run(undo=True))[0] == {VIP}


# An error right after start: asyncio.run cancels every task, the BIRD poll among them,
# possibly while it spawns birdc. On CPython 3.11 a task cancelled inside
# asyncio.create_subprocess_exec waited forever for pipes that never connected, and
# asyncio.run never returned. Run in a child process against a real spawned "birdc" (a
# script that answers after 1 s), so a hang is a timeout here, not a stuck test run.
AFTER_START = """
import asyncio, sys
from pathlib import Path
from tests.unit.scaleout import test_scaleout_component as t
from hadirector.agent.scaleout import ScaleOutComponent

t.STATE["dir"] = sys.argv[1] + "/state"
sysctls, mark, when = Path(sys.argv[1]) / "sysctl", Path(sys.argv[1]) / "birdc-started", sys.argv[2]

async def run():
    comp = ScaleOutComponent(t.FakeLvs(t.config()), routes_factory=t.FakeRoutes, sysctl_root=sysctls)
    await comp.start(None)
    while when == "birdc_running" and not mark.exists():
        await asyncio.sleep(0.01)
    raise RuntimeError("failed right after start")

asyncio.run(run())
"""


@pytest.mark.parametrize("when", ["at_once", "birdc_running"])
def test_an_error_right_after_start_ends_the_event_loop_while_birdc_is_read(tmp_path, when):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    (tmp_path / "sysctl").mkdir()
    for name, _ in SCALE_OUT_SYSCTLS:
        (tmp_path / "sysctl" / name).write_text("0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    birdc = bin_dir / "birdc"
    birdc.write_text(f"#!/bin/sh\ntouch {tmp_path}/birdc-started\nsleep 1\necho 'BIRD 2.0.12 ready.'\n")
    birdc.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", AFTER_START, str(tmp_path), when], env=env, cwd=root,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"asyncio.run did not return within 60 s of an error after start ({when}): {e.stderr or ''}")
    took = time.monotonic() - t0
    assert r.returncode == 1 and "RuntimeError: failed right after start" in r.stderr, r.stderr
    assert (tmp_path / "birdc-started").exists(), "the poll never ran birdc: the test proves nothing"
    print(f"{when}: asyncio.run returned after {took:.1f} s")


def test_a_birdc_that_never_answers_is_killed_and_reported_and_stop_does_not_wait_for_it(
        tmp_path, sysctl_dir, monkeypatch):
    import os

    birdc = tmp_path / "birdc"
    birdc.write_text(f"#!/bin/sh\necho $$ >> {tmp_path}/birdc.pids\nexec sleep 30\n")
    birdc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    def pids() -> list[int]:
        path = tmp_path / "birdc.pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    async def run():
        lvs = FakeLvs(config(drain_grace=0.0))
        comp = ScaleOutComponent(lvs, routes_factory=FakeRoutes, sysctl_root=sysctl_dir)
        await comp.start(None)             # its poll reads BIRD too, beside the read below
        t0 = time.monotonic()
        await comp.read_bird()
        took = time.monotonic() - t0
        assert comp.status()["bird_error"] == "birdc -s /nonexistent: no answer within 2 s", comp.status()
        assert so_mod.BIRDC_TIMEOUT <= took < so_mod.BIRDC_TIMEOUT + 3, took
        started = pids()
        deadline = time.monotonic() + 1.0
        while any(os.path.exists(f"/proc/{p}") for p in started):
            assert time.monotonic() < deadline, f"birdc not killed after its timeout: {started}"
            await asyncio.sleep(0.01)
        while len(pids()) == len(started):  # the poll's next read is in flight now
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await comp.stop(None)
        return time.monotonic() - t0

    took = asyncio.run(run())
    assert took < 1.0, f"stop waited {took:.2f} s for an in-flight birdc"
