"""The LVS controller: health transitions and VRRP roles turned into IPVS writes.

Runs against the stateful FakeIpvs (kernel errors included) with fake probes; the same
wiring runs against the real kernel in tests/kernel/ and in the pair lab.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from hadirector.agent.agent import RoleEvent
from hadirector.agent.lvs import LvsController, leader_instance
from hadirector.config import parse_config
from hadirector.health.policy import ProbeResult
from hadirector.ipvs import planner
from hadirector.ipvs.backend import DaemonState
from hadirector.kernel.fake import FakeIpvs
from hadirector.vrrp.machine import State

from .fakes import Pulse

CONFIG = """
node: {{router_id: t, state_dir: {state_dir}}}
vrrp_instances:
  - {{name: VI_1, interface: eth0, vrid: 51, priority: 150, virtual_ips: [10.9.0.100/24]}}
lvs:
  program: {program}
  on_shutdown: {on_shutdown}
  sync_daemon: {{interface: eth0, syncid: 7}}
virtual_services:
  - name: web
    address: 10.9.0.100
    port: 80
    scheduler: rr
    forward: dr
    check: {{type: tcp, interval: 0.05, timeout: 0.05, rise: 1, fall: 1}}
    real_servers:
      - {{address: 10.9.0.11}}
      - {{address: 10.9.0.12}}
  - name: dns
    address: 10.9.0.100
    port: 53
    protocol: udp
    scheduler: wrr
    forward: nat
    real_servers:
      - {{address: 10.9.1.11, port: 53}}
"""


def config(tmp_path, program="always", on_shutdown="keep"):
    return parse_config(CONFIG.format(state_dir=tmp_path, program=program, on_shutdown=on_shutdown))


class Probes:
    """Fake probe: every target is up unless listed in ``down``; pulses on each result."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.pulse = Pulse()

    async def __call__(self, check, address, port, clients):
        await asyncio.sleep(0)          # a probe yields to the loop, as a real one does
        ok = str(address) not in self.down
        self.pulse.fire()
        return ProbeResult(ok, "connected" if ok else "refused", 0.001)


@dataclass
class FakeAgent:
    """A ``vrrp_side.VrrpSide`` stand-in: role events on demand; ``drivers`` (by instance
    name) have a ``state`` and record preemption holds."""

    on_role_changed: list = field(default_factory=list)
    drivers: dict = field(default_factory=dict)

    def roles(self) -> dict:
        return {name: d.state for name, d in self.drivers.items()}

    def hold_preemption(self, instance: str, seconds: float) -> None:
        self.drivers[instance].hold_preemption(seconds)

    def role(self, cfg, new: State, old: State = State.BACKUP) -> None:
        inst = cfg.vrrp_instances[0]
        ev = RoleEvent(inst, old, new, "test", "", inst.priority, 0.0, time.time())
        for sub in self.on_role_changed:
            sub(ev)


async def checked(ctl: LvsController, probes: Probes, times: int = 1, within: float = 0.4) -> None:
    """Until every checked real server of ``ctl`` has had ``times`` more results (and the
    controller applied them: the check interval is 0.05 s), within the 0.4 s these
    tests used to sleep for "a few check intervals"."""
    def counts() -> dict:
        return {(r.service_key, r.rs_key): r.checks for r in ctl.health.snapshot().servers if r.checked}

    start = counts()
    await probes.pulse.until(lambda: all(n >= start.get(k, 0) + times for k, n in counts().items()),
                             within, f"{times} more result(s) for every checked server")


def dests(fake: FakeIpvs) -> dict[str, set[str]]:
    return {str(k): {str(d) for d in fake.table.dests_of(k)} for k in fake.table.services}


async def test_checked_real_servers_are_programmed_only_after_their_first_result(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    ctl = LvsController(config(tmp_path), backend=fake, probe=probes)
    agent = FakeAgent()
    await ctl.start(agent)
    try:
        # Before any probe ran: services exist, the unchecked UDP server is in, the
        # checked TCP servers are not.
        first = dests(fake)
        assert first["tcp 10.9.0.100:80"] == set()
        assert first["udp 10.9.0.100:53"] == {"10.9.1.11:53"}
        await checked(ctl, probes)
        assert dests(fake)["tcp 10.9.0.100:80"] == {"10.9.0.11:80", "10.9.0.12:80"}
    finally:
        await ctl.stop(agent)


async def test_a_failed_server_is_removed_with_one_write_to_its_own_service_only(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    ctl = LvsController(config(tmp_path), backend=fake, probe=probes)
    agent = FakeAgent()
    await ctl.start(agent)
    try:
        await checked(ctl, probes)
        before = len(fake.writes)
        dumps_before = fake.dumps
        probes.down.add("10.9.0.12")
        await checked(ctl, probes, times=2)     # 2: one result surely probed after the change
        new = fake.writes[before:]
        assert [type(op) for op in new] == [planner.DelDest]
        assert str(new[0].service) == "tcp 10.9.0.100:80"
        assert fake.dumps == dumps_before, "a health change must not dump the whole table"
        probes.down.clear()
        await checked(ctl, probes, times=2)
        assert [type(op) for op in fake.writes[before + 1:]] == [planner.AddDest]
    finally:
        await ctl.stop(agent)


async def test_restart_with_unchanged_config_makes_zero_writes(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = config(tmp_path)
    first = LvsController(cfg, backend=fake, probe=probes)
    await first.start(FakeAgent())
    await checked(first, probes)
    await first.stop(FakeAgent())
    writes = len(fake.writes)
    # The real servers keep their kernel entries while the new agent waits for its
    # first results: unknown health is "not programmed" only for entries we would add.
    second = LvsController(cfg, backend=fake, probe=probes)
    await second.start(FakeAgent())
    await checked(second, probes)
    await second.stop(FakeAgent())
    assert fake.writes[writes:] == []


async def test_entries_made_by_hand_survive_start_and_stop(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    from hadirector.ipvs.table import DestEntry, DestKey, ServiceEntry, ServiceKey
    foreign = ServiceKey.inet("tcp", "10.9.0.200", 443)
    fake.apply(planner.AddService(ServiceEntry(foreign, "wlc", 0, 0, 32)))
    fake.apply(planner.AddDest(foreign, DestEntry(DestKey.of("10.9.0.50", 443), 4, 0, 1, 0, 0, 0, 0, 0)))
    ctl = LvsController(config(tmp_path, on_shutdown="remove"), backend=fake, probe=probes)
    await ctl.start(FakeAgent())
    await checked(ctl, probes)
    await ctl.stop(FakeAgent())
    assert set(map(str, fake.table.services)) == {"tcp 10.9.0.200:443"}, "on_shutdown remove deletes only ours"


async def test_sync_daemon_follows_the_vrrp_role(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = config(tmp_path)
    ctl = LvsController(cfg, backend=fake, probe=probes)
    agent = FakeAgent()
    await ctl.start(agent)
    try:
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
        agent.role(cfg, State.MASTER)
        assert [(d.state, d.interface, d.syncid) for d in fake.daemons()] == [(DaemonState.MASTER, "eth0", 7)]
        agent.role(cfg, State.BACKUP, old=State.MASTER)
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
    finally:
        await ctl.stop(agent)
    assert fake.daemons() == [], "a stopped agent leaves no sync daemon running"


async def test_a_master_daemon_left_by_a_killed_predecessor_is_switched_to_backup(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = config(tmp_path)
    fake.start_daemon(DaemonState.MASTER, cfg.lvs.sync_daemon)   # the dead agent's
    ctl = LvsController(cfg, backend=fake, probe=probes)
    await ctl.start(FakeAgent())
    try:
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
    finally:
        await ctl.stop(FakeAgent())


async def test_master_only_programs_while_master_and_removes_on_backup(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = config(tmp_path, program="master_only")
    ctl = LvsController(cfg, backend=fake, probe=probes)
    agent = FakeAgent()
    await ctl.start(agent)
    try:
        await checked(ctl, probes)
        assert fake.table.services == {}
        agent.role(cfg, State.MASTER)
        await checked(ctl, probes)
        assert len(fake.table.services) == 2
        assert dests(fake)["tcp 10.9.0.100:80"] == {"10.9.0.11:80", "10.9.0.12:80"}
        agent.role(cfg, State.BACKUP, old=State.MASTER)
        assert fake.table.services == {}
    finally:
        await ctl.stop(agent)


def test_the_leader_instance_is_the_followed_one_or_the_first(tmp_path):
    cfg = config(tmp_path)
    assert leader_instance(cfg) == "VI_1"


async def test_a_reload_without_the_sync_daemon_stops_the_one_it_had_started(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = config(tmp_path)
    ctl = LvsController(cfg, backend=fake, probe=probes)
    await ctl.start(FakeAgent())
    try:
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
        import dataclasses
        ctl.update_config(dataclasses.replace(cfg, lvs=dataclasses.replace(cfg.lvs, sync_daemon=None)))
        assert fake.daemons() == []
    finally:
        await ctl.stop(FakeAgent())


async def test_after_a_restart_one_failed_first_check_does_not_remove_a_server(tmp_path):
    fake, probes = FakeIpvs(), Probes()
    cfg = parse_config(CONFIG.format(state_dir=tmp_path, program="always", on_shutdown="keep")
                       .replace("rise: 1, fall: 1", "rise: 1, fall: 3"))
    first = LvsController(cfg, backend=fake, probe=probes)
    await first.start(FakeAgent())
    await checked(first, probes)
    await first.stop(FakeAgent())
    writes = len(fake.writes)
    probes.down.add("10.9.0.12")          # a slow first check after the restart
    second = LvsController(cfg, backend=fake, probe=probes)
    await second.start(FakeAgent())
    await checked(second, probes)          # one check interval: one failure
    await second.stop(FakeAgent())
    assert fake.writes[writes:] == []


class HoldRecorder:
    """Stands in for a VrrpDriver: records preemption holds."""

    def __init__(self) -> None:
        self.state = State.BACKUP
        self.holds: list[float] = []

    def hold_preemption(self, seconds: float) -> None:
        self.holds.append(seconds)


def tuned_config(tmp_path):
    text = CONFIG.format(state_dir=tmp_path, program="always", on_shutdown="keep").replace(
        "sync_daemon: {interface: eth0, syncid: 7}",
        "sync_daemon: {interface: eth0, syncid: 7, refresh_period: 2}")
    return parse_config(text)


def sysctl_tree(tmp_path):
    root = tmp_path / "vs"
    root.mkdir()
    (root / "sync_refresh_period").write_text("0\n")
    (root / "sync_threshold").write_text("3\t50\n")
    return root


async def test_refresh_period_tunes_the_kernel_and_a_fresh_backup_daemon_holds_preemption(tmp_path):
    fake, probes, root = FakeIpvs(), Probes(), sysctl_tree(tmp_path)
    cfg = tuned_config(tmp_path)
    driver = HoldRecorder()
    agent = FakeAgent(drivers={"VI_1": driver})
    ctl = LvsController(cfg, backend=fake, probe=probes, sysctl_root=root)
    await ctl.start(agent)
    try:
        assert (root / "sync_refresh_period").read_text() == "2\n"
        assert (root / "sync_threshold").read_text() == "3 0\n"
        assert driver.holds == [4.0], "catch_up defaults to twice the refresh period"
        agent.role(cfg, State.MASTER)
        assert driver.holds == [4.0], "starting the master daemon holds nothing"
        agent.role(cfg, State.BACKUP, old=State.MASTER)
        assert driver.holds == [4.0, 4.0], "a backup daemon started again catches up again"
    finally:
        await ctl.stop(agent)


async def test_a_backup_daemon_already_running_at_restart_holds_nothing(tmp_path):
    fake, probes, root = FakeIpvs(), Probes(), sysctl_tree(tmp_path)
    cfg = tuned_config(tmp_path)
    fake.start_daemon(DaemonState.BACKUP, cfg.lvs.sync_daemon)   # it has been listening all along
    driver = HoldRecorder()
    agent = FakeAgent(drivers={"VI_1": driver})
    ctl = LvsController(cfg, backend=fake, probe=probes, sysctl_root=root)
    await ctl.start(agent)
    try:
        assert driver.holds == []
    finally:
        await ctl.stop(agent)


async def test_a_sysctl_failure_is_logged_and_the_daemon_still_starts(tmp_path, capsys):
    fake, probes = FakeIpvs(), Probes()
    cfg = tuned_config(tmp_path)
    ctl = LvsController(cfg, backend=fake, probe=probes, sysctl_root=tmp_path / "missing")
    await ctl.start(FakeAgent())
    try:
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
    finally:
        await ctl.stop(FakeAgent())
    out = capsys.readouterr().out
    assert "ipvs.sync_tuning_failed" in out and "missing/sync_refresh_period" in out


async def test_an_agent_started_without_lvs_config_stays_idle_until_a_reload_adds_it(tmp_path):
    import dataclasses
    fake, probes = FakeIpvs(), Probes()
    full = config(tmp_path)
    bare = dataclasses.replace(full, virtual_services=(), lvs=dataclasses.replace(full.lvs, sync_daemon=None))
    ctl = LvsController(bare, backend=fake, probe=probes)
    await ctl.start(FakeAgent())
    try:
        assert ctl.reconciler is None and fake.table.services == {} and fake.daemons() == []
        assert ctl.health is None, "a VRRP-only node runs no health checks"
        report = ctl.update_config(full)
        assert report is not None and report.errors == []
        await checked(ctl, probes)
        assert len(fake.table.services) == 2
        assert dests(fake)["tcp 10.9.0.100:80"] == {"10.9.0.11:80", "10.9.0.12:80"}
        assert [d.state for d in fake.daemons()] == [DaemonState.BACKUP]
    finally:
        await ctl.stop(FakeAgent())


async def test_a_vrrp_only_node_builds_no_health_runner_and_reports_empty_health(tmp_path):
    import dataclasses

    from hadirector.agent.status import lvs_status
    from hadirector.api.snapshot import HealthTotals
    full = config(tmp_path)
    bare = dataclasses.replace(full, virtual_services=())
    ctl = LvsController(bare, backend=FakeIpvs(), probe=Probes())
    assert ctl.health is None
    await ctl.start(FakeAgent())
    try:
        services, _sync, totals = lvs_status(ctl, bare)
        assert services == () and totals == HealthTotals()
    finally:
        await ctl.stop(FakeAgent())
    assert ctl.health is None
