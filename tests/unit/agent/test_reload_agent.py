"""Agent.reload_async with fakes at every I/O edge: what a reload keeps and what it changes.

The agent is built from a YAML file (as in production), then the file is rewritten and
reloaded. Fakes (tests/unit/agent/fakes.py, hadirector/kernel/fake.py) keep addresses,
adverts and GARPs, so "nothing changed" is checked on what the network would have seen.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from structlog.testing import capture_logs

from hadirector.agent.agent import Agent, RoleEvent
from hadirector.config import load_config
from hadirector.kernel.fake import FakeAddresses, FakeLinkWatcher
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .fakes import FakeAnnouncer, FakeTransport, Pulse

ADV = 0.05
TAKEOVER = master_down_interval(100, ADV) + 0.1      # RFC 5798 6.4.2, and a margin

VI_1 = ("  - {name: vi_1, interface: eth0, vrid: 51, priority: 100, advert_interval: 0.05,\n"
        "     virtual_ips: [10.0.0.100/32], garp: {count: 2, repeat_delay: 0}}\n")
VI_2 = ("  - {name: vi_2, interface: eth0, vrid: 52, priority: 100, advert_interval: 0.05,\n"
        "     virtual_ips: [10.0.0.101/32], garp: {count: 2, repeat_delay: 0}}\n")


def yaml_text(tmp_path: Path, *instances: str, extra: str = "", router_id: str = "t") -> str:
    return (f"node: {{router_id: {router_id}, state_dir: {tmp_path}}}\n"
            "vrrp_instances:\n" + "".join(instances) + extra)


class Recorder:
    """A component that records what the agent hands to components on reload."""

    def __init__(self) -> None:
        self.configs = []
        self.results = []

    async def start(self, agent) -> None:
        pass

    async def stop(self, agent) -> None:
        pass

    def update_config(self, new):
        self.configs.append(new)

    def record_reload(self, result) -> None:
        self.results.append(result)


class Rig:
    def __init__(self, tmp_path: Path, text: str) -> None:
        self.path = tmp_path / "hadirector.yaml"
        self.path.write_text(text)
        self.pulse = Pulse()      # the fakes and a role subscriber fire it: Rig.until
        self.addresses = FakeAddresses(on_change=self.pulse.fire)
        self.transports: dict[str, list[FakeTransport]] = {}
        self.announcers: dict[str, FakeAnnouncer] = {}
        FakeLinkWatcher.instances.clear()

        def transport(i):
            t = FakeTransport()
            t.on_change = self.pulse.fire
            self.transports.setdefault(i.name, []).append(t)
            return t

        def announcer(ifname):
            self.announcers[ifname] = FakeAnnouncer(ifname)
            self.announcers[ifname].on_change = self.pulse.fire
            return self.announcers[ifname]

        self.agent = Agent(load_config(self.path), addresses=self.addresses,
                           transport_factory=transport, announcer_factory=announcer,
                           link_watcher_factory=FakeLinkWatcher)
        self.recorder = Recorder()
        self.agent.components.append(self.recorder)
        self.events: list[RoleEvent] = []
        self.agent.on_role_changed.append(self.events.append)
        self.agent.on_role_changed.append(self.pulse.fire)

    def state(self, name: str = "vi_1") -> State:
        return self.agent.runtimes[name].driver.state

    def adverts(self, name: str = "vi_1") -> list[int]:
        return [a.priority for a in self.transports[name][-1].sent_adverts()]

    async def until(self, pred, what: str = "", timeout: float = 5.0) -> None:
        """Until ``pred()`` holds, re-checked on every change the fakes see (no sleep)."""
        await self.pulse.until(pred, timeout, what)

    async def masters(self, *names: str) -> None:
        """Until ``names`` are MASTER (Master_Down_Interval on their own timers) and
        their takeover GARP bursts went out."""
        garps = 2 * len(names)             # garp count 2, one VIP each
        await self.until(lambda: all(self.state(n) is State.MASTER for n in names)
                         and "eth0" in self.announcers and len(self.announcers["eth0"].announced) >= garps,
                         f"{names} MASTER with their GARP bursts", TAKEOVER)

    async def reload(self, text: str):
        self.path.write_text(text)
        with capture_logs() as logs:
            result = await self.agent.reload_async()
        return result, logs


async def masters(tmp_path, *instances: str) -> Rig:
    rig = Rig(tmp_path, yaml_text(tmp_path, *instances))
    await rig.agent.start()
    await rig.masters(*rig.agent.runtimes)
    for rt in rig.agent.runtimes.values():
        assert rt.driver.state is State.MASTER
    rig.events.clear()
    rig.addresses.log.clear()
    return rig


async def test_an_invalid_config_is_refused_with_its_file_and_line_and_nothing_changes(tmp_path):
    rig = await masters(tmp_path, VI_1)
    driver = rig.agent.runtimes["vi_1"].driver
    config = rig.agent.config
    result, logs = await rig.reload(yaml_text(tmp_path, VI_1.replace("vrid: 51", "vrid: 300")))
    assert not result.ok and result.generation == 1
    assert any(f"{rig.path}:" in e and "vrid" in e for e in result.errors), result.errors
    failed = [e for e in logs if e["event"] == "agent.reload_failed"]
    assert failed and failed[0]["reason"] == "invalid_config" and str(rig.path) in failed[0]["detail"]
    assert rig.agent.config is config and rig.agent.runtimes["vi_1"].driver is driver
    assert rig.state() is State.MASTER and rig.events == [] and rig.addresses.log == []
    assert rig.recorder.results == [result] and rig.recorder.configs == []
    await rig.agent.stop()


class SlowStart(Recorder):
    """A component whose start waits for ``gate``: the agent is past its election but not
    started yet."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.starting = asyncio.Event()

    async def start(self, agent) -> None:
        self.starting.set()
        await self.gate.wait()


async def test_a_reload_during_start_up_is_applied_once_started_not_refused(tmp_path):
    rig = Rig(tmp_path, yaml_text(tmp_path, VI_1))
    slow = SlowStart()
    rig.agent.components.append(slow)
    with capture_logs() as logs:        # from the start: the agent's logger is cached on first use
        start = asyncio.create_task(rig.agent.start())
        await asyncio.wait_for(slow.starting.wait(), 5)
        rig.path.write_text(yaml_text(tmp_path, VI_1.replace("priority: 100", "priority: 120")))
        reload = asyncio.create_task(rig.agent.reload_async("sighup"))
        for _ in range(500):                # the new file read (in a thread), then it waits
            if any(e["event"] == "agent.reload_deferred" for e in logs) or reload.done():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not reload.done() and not rig.agent.started
        slow.gate.set()
        await start
        result = await asyncio.wait_for(reload, 5)
    assert result.ok and result.generation == 2, result
    assert rig.agent.config.vrrp_instances[0].priority == 120
    (deferred,) = [e for e in logs if e["event"] == "agent.reload_deferred"]
    assert (deferred["reason"], deferred["trigger"]) == ("starting", "sighup")
    await rig.agent.stop()


async def test_an_unreadable_config_is_refused(tmp_path):
    rig = await masters(tmp_path, VI_1)
    rig.path.unlink()
    result = await rig.agent.reload_async()
    assert not result.ok and "unreadable" in result.message
    assert rig.state() is State.MASTER
    await rig.agent.stop()


async def test_an_unchanged_config_keeps_the_machine_its_state_and_the_vips(tmp_path):
    rig = await masters(tmp_path, VI_1)
    driver = rig.agent.runtimes["vi_1"].driver
    since = driver.machine.since
    garps = len(rig.announcers["eth0"].announced)
    result, logs = await rig.reload(yaml_text(tmp_path, VI_1))
    sent = len(rig.adverts())
    await rig.until(lambda: len(rig.adverts()) >= sent + 4, "four more adverts")   # time for a change to show
    assert result.ok and result.generation == 2 and result.changes == ()
    assert rig.agent.runtimes["vi_1"].driver is driver and driver.machine.since == since
    assert rig.state() is State.MASTER and rig.events == []
    assert rig.addresses.log == [] and rig.addresses.has("eth0", "10.0.0.100")
    assert len(rig.announcers["eth0"].announced) == garps, "no GARP for an unchanged instance"
    assert 0 not in rig.adverts()
    reloaded = [e for e in logs if e["event"] == "agent.reloaded"]
    assert reloaded and reloaded[0]["unchanged"] == ["vi_1"] and reloaded[0]["generation"] == 2
    assert rig.recorder.results == [result] and len(rig.recorder.configs) == 1
    assert json.loads((tmp_path / "state.json").read_text())["config_generation"] == 2
    await rig.agent.stop()


async def test_a_reload_logs_the_new_configs_warnings_as_start_up_does(tmp_path):
    rig = await masters(tmp_path, VI_1)
    # A VIP without a prefix length: valid (the same /32), and one config.warned.
    result, logs = await rig.reload(yaml_text(tmp_path, VI_1.replace("10.0.0.100/32", "10.0.0.100")))
    assert result.ok and result.generation == 2 and result.changes == ()
    warned = [e for e in logs if e["event"] == "config.warned"]
    assert len(warned) == 1, warned
    w = warned[0]
    assert (w["file"], w["line"], w["key"], w["reason"]) == (
        str(rig.path), 4, "vrrp_instances[0].virtual_ips[0]", "config_warning")
    assert w["column"] > 0 and "has no prefix length" in w["detail"]
    assert rig.state() is State.MASTER and rig.addresses.log == []
    await rig.agent.stop()


async def test_a_changed_priority_is_advertised_at_once_without_a_transition(tmp_path):  # RFC 5798 6.4.3
    rig = await masters(tmp_path, VI_1)
    driver = rig.agent.runtimes["vi_1"].driver
    sent = len(rig.adverts())
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1.replace("priority: 100", "priority: 120")))
    assert result.ok and result.changes == ("vrrp_instance vi_1: updated in place (priority)",)
    assert rig.agent.runtimes["vi_1"].driver is driver
    # The file is read off the loop: adverts go on at 100 meanwhile, then 120 from the
    # apply on (sent before the reload returns, not at the next interval).
    after = rig.adverts()[sent:]
    assert 120 in after, after
    assert set(after[:after.index(120)]) <= {100} and set(after[after.index(120):]) == {120}
    assert driver.machine.effective_priority == 120 and rig.state() is State.MASTER
    assert rig.events == [] and rig.addresses.log == []
    assert rig.agent.snapshot()["instances"]["vi_1"]["configured_priority"] == 120
    await rig.agent.stop()


async def test_an_added_instance_starts_and_the_running_one_is_untouched(tmp_path):
    rig = await masters(tmp_path, VI_1)
    driver = rig.agent.runtimes["vi_1"].driver
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1, VI_2))
    assert result.ok and "vrrp_instance vi_2: added" in result.changes
    await rig.until(lambda: rig.state("vi_2") is State.MASTER and rig.addresses.has("eth0", "10.0.0.101"),
                    "the added vi_2 MASTER with its VIP", TAKEOVER)
    assert rig.state("vi_2") is State.MASTER and rig.addresses.has("eth0", "10.0.0.101")
    assert rig.agent.runtimes["vi_1"].driver is driver
    assert [(e.instance.name, e.new) for e in rig.events] == [("vi_2", State.BACKUP), ("vi_2", State.MASTER)]
    assert rig.addresses.log == [("add", "10.0.0.101/32")]
    await rig.agent.stop()


async def test_a_removed_instance_sends_priority_zero_and_releases_its_vip(tmp_path):  # RFC 5798 6.4.3
    rig = await masters(tmp_path, VI_1, VI_2)
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1))
    assert result.ok and "vrrp_instance vi_2: removed" in result.changes
    assert "vi_2" not in rig.agent.runtimes
    assert rig.adverts("vi_2")[-1] == 0 and rig.transports["vi_2"][-1].closed
    assert rig.addresses.log == [("del", "10.0.0.101/32")]
    assert [(e.instance.name, e.new) for e in rig.events] == [("vi_2", State.INITIALIZE)]
    assert rig.state("vi_1") is State.MASTER
    await rig.agent.stop()


async def test_a_changed_vip_restarts_only_that_instance(tmp_path):
    rig = await masters(tmp_path, VI_1, VI_2)
    keep = rig.agent.runtimes["vi_1"].driver
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1, VI_2.replace("10.0.0.101", "10.0.0.102")))
    assert result.ok and result.changes == ("vrrp_instance vi_2: restarted (virtual_ips)",)
    assert rig.adverts("vi_2") == [], "the new machine starts in BACKUP"
    assert rig.transports["vi_2"][0].sent_adverts()[-1].priority == 0
    await rig.until(lambda: rig.state("vi_2") is State.MASTER and len(rig.addresses.log) == 2,
                    "the new vi_2 MASTER with its VIP", TAKEOVER)
    assert rig.state("vi_2") is State.MASTER
    assert rig.addresses.log == [("del", "10.0.0.101/32"), ("add", "10.0.0.102/32")]
    assert rig.agent.runtimes["vi_1"].driver is keep and rig.state("vi_1") is State.MASTER
    await rig.agent.stop()


async def test_an_added_instance_without_a_source_address_refuses_the_whole_reload(tmp_path):
    rig = await masters(tmp_path, VI_1)
    bad = VI_2.replace("interface: eth0", "interface: eth9")
    result, logs = await rig.reload(yaml_text(tmp_path, VI_1.replace("priority: 100", "priority: 90"), bad))
    assert not result.ok and "eth9" in result.errors[0]
    assert [e["reason"] for e in logs if e["event"] == "agent.reload_failed"] == ["cannot_apply"]
    assert "vi_2" not in rig.agent.runtimes
    assert rig.agent.runtimes["vi_1"].driver.machine.effective_priority == 100, "nothing applied"
    await rig.agent.stop()


async def test_node_changes_are_reported_as_needing_a_restart_and_not_applied(tmp_path):
    rig = await masters(tmp_path, VI_1)
    rig.path.write_text(yaml_text(tmp_path, VI_1, router_id="other"))
    result = await rig.agent.reload_async()
    assert result.ok and "needs a restart" in result.message and "node.router_id" in result.message
    assert rig.agent.config.node.router_id == "t"
    assert rig.state() is State.MASTER and rig.events == []
    await rig.agent.stop()


async def test_joining_a_sync_group_keeps_both_masters_in_place(tmp_path):
    rig = await masters(tmp_path, VI_1, VI_2)
    drivers = {n: rt.driver for n, rt in rig.agent.runtimes.items()}
    group = "sync_groups:\n  - {name: g, instances: [vi_1, vi_2]}\n"
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1, VI_2, extra=group))
    assert result.ok and result.changes == ("sync_group g: added",)
    assert {n: rt.driver for n, rt in rig.agent.runtimes.items()} == drivers
    assert all(d.machine.sync_group for d in drivers.values())
    # The group works: one member's fault takes the other down.
    rig.agent.set_fault("vi_1", True, "track_script:chk")
    await rig.until(lambda: rig.state("vi_2") is State.FAULT, "vi_2 FAULT with its group", ADV)
    assert (rig.state("vi_1"), rig.state("vi_2")) == (State.FAULT, State.FAULT)
    await rig.agent.stop()


async def test_leaving_a_faulted_sync_group_clears_the_group_fault(tmp_path):
    group = "sync_groups:\n  - {name: g, instances: [vi_1, vi_2]}\n"
    rig = Rig(tmp_path, yaml_text(tmp_path, VI_1, VI_2, extra=group))
    await rig.agent.start()
    await rig.masters("vi_1", "vi_2")
    rig.agent.set_fault("vi_1", True, "track_script:chk")
    await rig.until(lambda: rig.state("vi_2") is State.FAULT, "vi_2 FAULT with its group", ADV)
    assert rig.state("vi_2") is State.FAULT
    result, _ = await rig.reload(yaml_text(tmp_path, VI_1, VI_2))
    assert result.ok
    assert rig.state("vi_1") is State.FAULT, "its own fault stays"
    await rig.until(lambda: rig.state("vi_2") is State.MASTER, "vi_2 MASTER on its own", TAKEOVER)
    assert rig.state("vi_2") is State.MASTER
    await rig.agent.stop()


async def test_sighup_runs_the_same_reload_as_a_task(tmp_path):
    rig = await masters(tmp_path, VI_1)
    rig.path.write_text(yaml_text(tmp_path, VI_1, VI_2))
    result = await rig.agent.reload(trigger="sighup")
    assert result.ok and result.generation == 2 and "vi_2" in rig.agent.runtimes
    await rig.agent.stop()


async def test_concurrent_reloads_run_one_after_the_other(tmp_path):
    rig = await masters(tmp_path, VI_1)
    rig.path.write_text(yaml_text(tmp_path, VI_1, VI_2))
    a, b = await asyncio.gather(rig.agent.reload_async(), rig.agent.reload_async())
    assert (a.generation, b.generation) == (2, 3)
    assert a.changes == ("vrrp_instance vi_2: added",) and b.changes == ()
    assert len(rig.transports["vi_2"]) == 1
    await rig.agent.stop()


LVS = """lvs: {program: always}
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


async def test_the_lvs_controller_gets_the_new_config_and_writes_only_the_difference(tmp_path):
    from hadirector.agent.lvs import LvsController
    from hadirector.agent.api_component import ApiComponent
    from hadirector.ipvs import planner
    from hadirector.kernel.fake import FakeIpvs

    rig = Rig(tmp_path, yaml_text(tmp_path, VI_1, extra=LVS))
    fake = FakeIpvs()
    lvs = LvsController(rig.agent.config, backend=fake)
    api = ApiComponent(lvs)          # not started: only its reload bookkeeping is used
    rig.agent.components[:0] = [lvs, api]
    await rig.agent.start()
    try:
        assert {str(d) for d in fake.table.dests_of(next(iter(fake.table.services)))} == {
            "10.0.0.11:80", "10.0.0.12:80"}
        before = len(fake.writes)
        same, _ = await rig.reload(yaml_text(tmp_path, VI_1, extra=LVS))
        assert same.ok and fake.writes[before:] == [], "an unchanged reload writes nothing"
        grown = LVS + "      - {address: 10.0.0.13}\n"
        result, logs = await rig.reload(yaml_text(tmp_path, VI_1, extra=grown))
        assert result.ok and "virtual_service web: changed (real_servers)" in result.changes
        assert [type(op) for op in fake.writes[before:]] == [planner.AddDest]
        assert str(fake.writes[-1].entry.key) == "10.0.0.13:80"
        assert lvs.config.virtual_services[0].real_servers[-1].address.exploded == "10.0.0.13"
        bad, _ = await rig.reload("node: {router_id: t\n")
        assert not bad.ok
        snap = api.snapshot(rig.agent)
        assert (snap.reloads.count, snap.reloads.failures, snap.reloads.last_ok) == (3, 1, False)
        assert snap.node.config_generation == 3
    finally:
        await rig.agent.stop()


async def test_a_reload_after_stop_is_refused(tmp_path):
    rig = await masters(tmp_path, VI_1)
    await rig.agent.stop()
    rig.path.write_text(yaml_text(tmp_path, VI_1, VI_2))
    result = await rig.agent.reload_async()
    assert not result.ok and "not running" in result.message
    assert "vi_2" not in rig.agent.runtimes
