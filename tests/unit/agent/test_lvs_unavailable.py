"""A director whose kernel has no IPVS: the followed instances go to FAULT
(``ipvs_unavailable``), the agent keeps running and retrying with backoff, and it
recovers by itself when IPVS appears.

The whole agent runs (VRRP machines, sync groups, VIP workers) with fakes at every I/O
edge; the IPVS side is the stateful FakeIpvs with ``unavailable = ENOENT``, which fails
like a kernel whose generic netlink family "IPVS" is not registered. The same
behaviour against real kernels: tests/netns/test_ipvs_unavailable.py (this host, which
has no IPVS) and tests/kernel/test_ipvs_appears.py (ip_vs loaded while the agent runs).
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from structlog.testing import capture_logs

from hadirector.agent.agent import Agent
from hadirector.agent.lvs import LvsController
from hadirector.agent.api_component import ApiComponent
from hadirector.api.cli import render_status
from hadirector.api.metrics import render as render_metrics
from hadirector.api.snapshot import Snapshot, VrrpState
from hadirector.config import load_config
from hadirector.health.policy import ProbeResult
from hadirector.ipvs import planner
from hadirector.ipvs.availability import Backoff
from hadirector.ipvs.backend import DaemonState
from hadirector.kernel.fake import FakeAddresses, FakeIpvs, FakeLinkWatcher
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .fakes import FakeAnnouncer, FakeTransport

ADV = 0.05
TAKEOVER = master_down_interval(100, ADV) + 0.1
BACKOFF = Backoff(first=0.05, factor=2.0, cap=0.2)


def instance(name: str, vrid: int, vip: str) -> str:
    return (f"  - {{name: {name}, interface: eth0, vrid: {vrid}, priority: 100, "
            f"advert_interval: {ADV}, virtual_ips: [{vip}/32], garp: {{count: 1, repeat_delay: 0}}}}\n")


LVS = """lvs:
  sync_daemon: {interface: eth0, syncid: 9%s}
virtual_services:
  - name: web
    address: 10.0.0.100
    port: 80
    scheduler: rr
    forward: dr
    real_servers:
      - {address: 10.0.0.11}
      - {address: 10.0.0.12}
"""


def yaml_text(tmp_path: Path, *, follow: str | None = None, groups: str = "", lvs: bool = True) -> str:
    text = (f"node: {{router_id: t, state_dir: {tmp_path}}}\n"
            "vrrp_instances:\n" + instance("vi_1", 51, "10.0.0.100") + instance("vi_2", 52, "10.0.0.101")
            + instance("vi_3", 53, "10.0.0.102") + groups)
    if lvs:
        text += LVS % (f", follow_instance: {follow}" if follow else "")
    return text


async def up(address, port, check, clients=None):
    return ProbeResult(True, "connected", 0.001)


class Rig:
    def __init__(self, tmp_path: Path, text: str, fake: FakeIpvs) -> None:
        self.path = tmp_path / "hadirector.yaml"
        self.path.write_text(text)
        self.addresses = FakeAddresses()
        FakeLinkWatcher.instances.clear()
        self.agent = Agent(load_config(self.path), addresses=self.addresses,
                           transport_factory=lambda i: FakeTransport(),
                           announcer_factory=FakeAnnouncer, link_watcher_factory=FakeLinkWatcher)
        self.fake = fake
        self.lvs = LvsController(self.agent.config, backend=fake, sysctl_root=tmp_path,
                                 backoff=BACKOFF, probe=up)
        self.api = ApiComponent(self.lvs)
        self.agent.components.append(self.lvs)
        self.roles: list[tuple[str, State, State, int]] = []   # (instance, old, new, services)
        self.agent.on_role_changed.append(
            lambda ev: self.roles.append((ev.instance.name, ev.old, ev.new, len(fake.table.services))))

    def state(self, name: str) -> State:
        return self.agent.runtimes[name].driver.state

    def faults(self, name: str) -> set[str]:
        return set(self.agent.runtimes[name].driver.machine.faults)

    def snapshot(self) -> Snapshot:
        return self.api.snapshot(self.agent)

    async def reload(self, text: str):
        self.path.write_text(text)
        return await self.agent.reload_async()


def no_ipvs() -> FakeIpvs:
    fake = FakeIpvs()
    fake.unavailable = errno.ENOENT
    return fake


def events(logs, name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


def masters(rig: Rig, *names: str):
    """A condition: ``names`` MASTER. The instances the LVS side does not follow elect
    on their own timers, so once they are MASTER a takeover's time has passed."""
    return lambda: all(rig.state(n) is State.MASTER for n in names)


async def wait_until(pred, timeout: float = 3.0) -> None:
    """Until ``pred()`` holds (checked every 10 ms): the tests wait on conditions, not
    for fixed times (IPVS retries and log events have no fake to pulse)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_without_ipvs_the_followed_instance_starts_in_fault_and_never_holds_its_vip(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    with capture_logs() as logs:
        await rig.agent.start()
        await wait_until(masters(rig, "vi_2", "vi_3"), timeout=TAKEOVER + 3)
        await wait_until(lambda: len(events(logs, "ipvs.retry_scheduled")) >= 4)
    try:
        # Straight to FAULT (the fault is recorded before the machine starts): no
        # BACKUP on the way, never MASTER, the VIP never added.
        assert rig.state("vi_1") is State.FAULT and rig.faults("vi_1") == {"ipvs_unavailable"}
        assert [r[:3] for r in rig.roles if r[0] == "vi_1"] == [("vi_1", State.INITIALIZE, State.FAULT)]
        assert ("add", "10.0.0.100/32") not in rig.addresses.log
        # The instances the LVS side does not follow elect as usual.
        assert rig.state("vi_2") is State.MASTER and rig.state("vi_3") is State.MASTER
        assert rig.addresses.has("eth0", "10.0.0.101")
        unavailable = events(logs, "ipvs.unavailable")
        assert len(unavailable) == 1
        assert unavailable[0]["errno"] == "ENOENT" and unavailable[0]["instances"] == ["vi_1"]
        assert unavailable[0]["fault"] == "ipvs_unavailable" and "ENOENT" in unavailable[0]["reason"]
        retries = events(logs, "ipvs.retry_scheduled")
        assert [r["delay"] for r in retries[:4]] == [0.05, 0.1, 0.2, 0.2]
        assert [r["attempt"] for r in retries[:4]] == [2, 3, 4, 5]
        assert rig.fake.writes == [] and rig.agent.started
    finally:
        await rig.agent.stop()


async def test_the_director_recovers_by_itself_when_ipvs_appears(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    await rig.agent.start()
    try:
        await wait_until(masters(rig, "vi_2", "vi_3"), timeout=TAKEOVER + 3)
        assert rig.state("vi_1") is State.FAULT
        with capture_logs() as logs:
            rig.fake.unavailable = None       # modprobe ip_vs
            await wait_until(lambda: rig.state("vi_1") is State.MASTER, timeout=BACKOFF.cap + TAKEOVER + 1)
        assert {str(k) for k in rig.fake.table.services} == {"tcp 10.0.0.100:80"}
        assert rig.faults("vi_1") == set() and rig.addresses.has("eth0", "10.0.0.100")
        # The table was programmed before the fault was cleared: the instance elects
        # with a ready table.
        cleared = [r for r in rig.roles if r[0] == "vi_1" and r[1] is State.FAULT]
        assert cleared and cleared[0][2] is State.BACKUP and cleared[0][3] == 1
        available = events(logs, "ipvs.available")
        assert len(available) == 1 and available[0]["instances"] == ["vi_1"]
        assert available[0]["reason"] == "retry" and available[0]["attempts"] >= 2
        # The sync daemon started as backup, then followed vi_1 to MASTER.
        assert [d.state for d in rig.fake.daemons()] == [DaemonState.MASTER]
        assert events(logs, "ipvs.retry_scheduled") == []
    finally:
        await rig.agent.stop()


async def test_status_shows_ipvs_unavailable_with_its_reason_and_the_fault(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    await rig.agent.start()
    try:
        await wait_until(lambda: rig.state("vi_1") is State.FAULT, timeout=0.1)
        snap = Snapshot.from_dict(rig.snapshot().to_dict())    # as the API serves it
        assert snap.ipvs.needed and snap.ipvs.available is False
        assert "ENOENT" in snap.ipvs.reason and snap.ipvs.failures >= 1
        assert snap.ipvs.next_attempt_at is not None
        vi_1 = next(v for v in snap.vrrp_instances if v.name == "vi_1")
        assert vi_1.state is VrrpState.FAULT and vi_1.faults == ("ipvs_unavailable",)
        text = render_status(snap)
        assert "IPVS UNAVAILABLE" in text and "ENOENT" in text
        assert "fault (ipvs_unavailable)" in text
        assert "hadirector_ipvs_available 0" in render_metrics(snap)
        rig.fake.unavailable = None
        await wait_until(lambda: rig.lvs.availability.available is True)
        snap = rig.snapshot()
        assert snap.ipvs.available is True and snap.ipvs.reason is None
        assert "IPVS UNAVAILABLE" not in render_status(snap)
        assert "hadirector_ipvs_available 1" in render_metrics(snap)
    finally:
        await rig.agent.stop()


async def test_a_sync_group_followed_by_the_lvs_side_goes_to_fault_as_a_whole(tmp_path):
    groups = "sync_groups:\n  - {name: G, instances: [vi_1, vi_2]}\n"
    rig = Rig(tmp_path, yaml_text(tmp_path, follow="G", groups=groups), no_ipvs())
    await rig.agent.start()
    try:
        await wait_until(masters(rig, "vi_3"), timeout=TAKEOVER + 0.1)
        assert rig.state("vi_1") is State.FAULT and rig.state("vi_2") is State.FAULT
        assert "ipvs_unavailable" in rig.faults("vi_1") and "ipvs_unavailable" in rig.faults("vi_2")
        assert rig.state("vi_3") is State.MASTER
        rig.fake.unavailable = None
        await wait_until(lambda: rig.state("vi_1") is State.MASTER and rig.state("vi_2") is State.MASTER,
                         timeout=BACKOFF.cap + TAKEOVER + 1)
        assert rig.faults("vi_1") == set() and rig.faults("vi_2") == set()
    finally:
        await rig.agent.stop()


async def test_ipvs_lost_while_running_faults_the_master_and_comes_back(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), FakeIpvs())
    await rig.agent.start()
    try:
        await wait_until(lambda: rig.state("vi_1") is State.MASTER)
        with capture_logs() as logs:
            rig.fake.unavailable = errno.ENOENT          # rmmod ip_vs
            # The next read notices: here a reload's sync (a health change would too).
            result = await rig.reload(rig.path.read_text())
            assert result.ok
            assert rig.state("vi_1") is State.FAULT
            await wait_until(lambda: not rig.addresses.has("eth0", "10.0.0.100"))
            # Two retries later (0.05 + 0.1 s) the others still run as before.
            await wait_until(lambda: len(events(logs, "ipvs.retry_scheduled")) >= 2)
            assert rig.state("vi_2") is State.MASTER and rig.agent.started
        assert len(events(logs, "ipvs.unavailable")) == 1
        rig.fake.unavailable = None
        await wait_until(lambda: rig.state("vi_1") is State.MASTER, timeout=BACKOFF.cap + TAKEOVER + 1)
    finally:
        await rig.agent.stop()


async def test_a_refused_entry_is_reported_per_entry_and_faults_nothing(tmp_path):
    fake = FakeIpvs()
    fake.fail_next(planner.AddService, errno.EINVAL)
    rig = Rig(tmp_path, yaml_text(tmp_path), fake)
    with capture_logs() as logs:
        await rig.agent.start()
        await wait_until(lambda: rig.state("vi_1") is State.MASTER)
    try:
        failed = events(logs, "ipvs.op_failed")
        assert failed and failed[0]["errno"] == "EINVAL"
        assert events(logs, "ipvs.unavailable") == [] and rig.lvs.availability.available is True
        assert rig.faults("vi_1") == set()
    finally:
        await rig.agent.stop()


async def test_a_reload_that_moves_the_lvs_role_moves_the_fault(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    await rig.agent.start()
    try:
        await wait_until(masters(rig, "vi_3"), timeout=TAKEOVER)
        assert rig.state("vi_1") is State.FAULT and rig.state("vi_3") is State.MASTER
        result = await rig.reload(yaml_text(tmp_path, follow="vi_3"))
        assert result.ok, result
        await wait_until(lambda: rig.state("vi_1") is State.MASTER, timeout=TAKEOVER + 1)
        assert rig.state("vi_3") is State.FAULT and rig.faults("vi_3") == {"ipvs_unavailable"}
        assert not rig.addresses.has("eth0", "10.0.0.102")
    finally:
        await rig.agent.stop()


async def test_a_reload_without_virtual_services_clears_the_fault_and_stops_retrying(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    await rig.agent.start()
    try:
        await wait_until(lambda: rig.state("vi_1") is State.FAULT, timeout=0.1)
        assert rig.state("vi_1") is State.FAULT
        result = await rig.reload(yaml_text(tmp_path, lvs=False))
        assert result.ok, result
        await wait_until(lambda: rig.state("vi_1") is State.MASTER, timeout=TAKEOVER + 1)
        assert rig.lvs.availability.get_timer() is None and not rig.lvs.availability.fault
        with capture_logs() as logs:
            await asyncio.sleep(0.3)
        assert events(logs, "ipvs.retry_scheduled") == []
        assert not rig.snapshot().ipvs.needed
    finally:
        await rig.agent.stop()


async def test_the_controller_alone_does_not_raise_without_ipvs(tmp_path):
    # An agent that does not call prepare() (start() does it then): still no crash.
    ctl = LvsController(load_config_text(tmp_path, yaml_text(tmp_path)), backend=no_ipvs(),
                        sysctl_root=tmp_path, backoff=BACKOFF, probe=up)
    await ctl.start(None)
    try:
        assert ctl.availability.fault and ctl.reconciler is None
        assert ctl.sync_table(reason="test") is None
    finally:
        await ctl.stop(None)
    assert not ctl.ipvs.retry_armed


def load_config_text(tmp_path: Path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


async def test_a_backend_that_opens_but_cannot_read_is_closed_before_each_retry(tmp_path):
    opened: list[FakeIpvs] = []

    class Closable(FakeIpvs):
        closed = False

        def close(self) -> None:
            self.closed = True

    def factory() -> FakeIpvs:
        b = Closable()
        b.unavailable = errno.EPERM       # the family resolves; reading needs CAP_NET_ADMIN
        opened.append(b)
        return b

    ctl = LvsController(load_config_text(tmp_path, yaml_text(tmp_path)), backend_factory=factory,
                        sysctl_root=tmp_path, backoff=BACKOFF, probe=up)
    with capture_logs() as logs:
        await ctl.start(None)
        await wait_until(lambda: len(opened) >= 3)
    await ctl.stop(None)
    assert len(opened) >= 3 and all(b.closed for b in opened)     # no socket left behind
    assert events(logs, "ipvs.unavailable")[0]["errno"] == "EPERM"


# --- the LVS side built once the machines run (agent.build_components) ------------------


def deferred(rig: Rig) -> list[dict[str, State]]:
    """Move the rig's LVS side to ``build_components``; returns the roles seen when it
    is built."""
    rig.agent.components.remove(rig.lvs)
    seen: list[dict[str, State]] = []

    def build() -> list:
        seen.append({n: rig.state(n) for n in ("vi_1", "vi_2", "vi_3")})
        return [rig.lvs]

    rig.agent.build_components = build
    return seen


async def test_built_once_the_machines_run_the_lvs_side_is_prepared_before_any_takeover(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path), FakeIpvs())
    seen = deferred(rig)
    await rig.agent.start()
    try:
        await wait_until(masters(rig, "vi_1", "vi_2", "vi_3"), timeout=TAKEOVER + 3)
        # The master-down wait ran while the LVS side was built: every machine was
        # already BACKUP then.
        assert seen == [{"vi_1": State.BACKUP, "vi_2": State.BACKUP, "vi_3": State.BACKUP}]
        assert rig.agent.components[0] is rig.lvs
        vi_1 = [(r[1], r[2], r[3]) for r in rig.roles if r[0] == "vi_1"]
        # INIT -> BACKUP before the table existed; the takeover with it programmed.
        assert vi_1 == [(State.INITIALIZE, State.BACKUP, 0), (State.BACKUP, State.MASTER, 1)]
    finally:
        await rig.agent.stop()


async def test_built_once_the_machines_run_without_ipvs_the_followed_instance_never_becomes_master(tmp_path):
    # The order the integrator chooses when the kernel seems to have IPVS (agent/cli.py);
    # if opening it then fails, the held instance goes to FAULT from BACKUP.
    rig = Rig(tmp_path, yaml_text(tmp_path), no_ipvs())
    deferred(rig)
    await rig.agent.start()
    try:
        await wait_until(masters(rig, "vi_2", "vi_3"), timeout=TAKEOVER + 3)
        assert rig.state("vi_1") is State.FAULT and rig.faults("vi_1") == {"ipvs_unavailable"}
        assert [r[1:3] for r in rig.roles if r[0] == "vi_1"] == [(State.INITIALIZE, State.BACKUP),
                                                                 (State.BACKUP, State.FAULT)]
        assert ("add", "10.0.0.100/32") not in rig.addresses.log
    finally:
        await rig.agent.stop()
