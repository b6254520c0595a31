"""The agent wiring with fakes at every I/O edge (addresses, sockets, GARP, links).

The tests wait on conditions (``Rig.until``: the fakes and a role subscriber pulse on
every change), not for fixed times; only the peer's advert interval and the checks that
nothing happens for a while still let real time pass."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time

import pytest

from hadirector.agent.agent import Agent, AgentError, RoleEvent
from hadirector.kernel.fake import FakeAddresses, FakeLinkWatcher
from hadirector.model import Config, GarpSettings, NodeSettings, SyncGroup, VrrpInstance
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .fakes import FakeAnnouncer, FakeTransport, Pulse

ADV = 0.05
VIP = ipaddress.ip_interface("10.0.0.100/32")
VIP2 = ipaddress.ip_interface("10.0.0.101/32")
TAKEOVER = master_down_interval(100, ADV) + 0.05     # RFC 5798 6.4.2, and a margin


def inst(name="vi_1", vrid=51, vip=VIP, **kw) -> VrrpInstance:
    return VrrpInstance(name=name, interface="eth0", vrid=vrid, priority=100, advert_interval=ADV,
                        virtual_ips=(vip,), garp=GarpSettings(count=2, repeat_delay=0), **kw)


def config(tmp_path, *instances, groups=()) -> Config:
    return Config(node=NodeSettings(router_id="t", state_dir=str(tmp_path)),
                  vrrp_instances=tuple(instances), sync_groups=tuple(groups))


class Rig:
    def __init__(self, tmp_path, *instances, groups=(), addresses=None):
        self.pulse = Pulse()
        self.addresses = addresses or FakeAddresses()
        self.addresses.on_change = self.pulse.fire
        self.transports: dict[str, FakeTransport] = {}
        self.announcers: dict[str, FakeAnnouncer] = {}
        FakeLinkWatcher.instances.clear()

        def transport(i):
            self.transports[i.name] = FakeTransport()
            self.transports[i.name].on_change = self.pulse.fire
            return self.transports[i.name]

        def announcer(ifname):
            self.announcers[ifname] = FakeAnnouncer(ifname)
            self.announcers[ifname].on_change = self.pulse.fire
            return self.announcers[ifname]

        self.agent = Agent(config(tmp_path, *instances, groups=groups), addresses=self.addresses,
                           transport_factory=transport, announcer_factory=announcer,
                           link_watcher_factory=FakeLinkWatcher)
        self.agent.on_role_changed.append(self.pulse.fire)

    def state(self, name="vi_1") -> State:
        return self.agent.runtimes[name].driver.state

    def garps(self) -> list:
        return self.announcers["eth0"].announced if "eth0" in self.announcers else []

    async def until(self, pred, what: str = "", timeout: float = 5.0) -> None:
        await self.pulse.until(pred, timeout, what)

    async def master(self, *names: str, garps: int | None = None, within: float = TAKEOVER) -> None:
        """Until every instance in ``names`` (default vi_1) is MASTER (its own timer:
        Master_Down_Interval, RFC 5798 6.4.2) and, given ``garps``, that many GARP
        packets went out; ``within`` seconds (the time the tests allowed with a sleep)."""
        names = names or ("vi_1",)
        await self.until(lambda: all(self.state(n) is State.MASTER for n in names)
                         and (garps is None or len(self.garps()) >= garps),
                         f"{names} MASTER" + (f" and {garps} GARP packets" if garps else ""), within)


async def settle(seconds: float) -> None:
    """Let real time pass: only where the test is about time passing (a peer's adverts,
    nothing happening for a while)."""
    await asyncio.sleep(seconds)


async def test_the_vip_and_first_garp_go_out_in_the_same_loop_turn_as_the_master_advert(tmp_path):
    # RFC 5798 6.4.2: the advert, the gratuitous ARP and owning the VIP are one step;
    # subscribers run synchronously in the turn that sent the advert.
    rig = Rig(tmp_path, inst())
    seen = []
    rig.agent.on_role_changed.append(lambda e: seen.append(
        (e.new, rig.addresses.has("eth0", VIP.ip), list(rig.announcers.get("eth0").announced)
         if "eth0" in rig.announcers else [], len(rig.transports["vi_1"].sent_adverts()))))
    await rig.agent.start()
    await rig.master(garps=2)
    assert seen[-1] == (State.MASTER, True, [VIP.ip], 1)
    assert rig.announcers["eth0"].announced == [VIP.ip, VIP.ip], "the burst still has count=2 packets"
    await rig.agent.stop()


async def test_when_the_inline_vip_add_fails_the_worker_adds_it(tmp_path, capsys):
    rig = Rig(tmp_path, inst())
    rig.addresses.fail_adds = 1          # the inline add only
    await rig.agent.start()
    await rig.master(garps=2)
    await rig.until(lambda: rig.addresses.has("eth0", VIP.ip), "the worker's add")
    assert rig.state() is State.MASTER and rig.addresses.has("eth0", VIP.ip)
    assert rig.announcers["eth0"].announced == [VIP.ip, VIP.ip]
    await rig.agent.stop()
    assert "vrrp.vips_add_deferred" in capsys.readouterr().out


async def test_stop_sends_priority_zero_and_drops_the_vip_before_any_component_stops(tmp_path):
    # RFC 5798 6.4.3: the backup's takeover waits for our priority-0 advert; health
    # checks and sync daemons can wind down after it.
    rig = Rig(tmp_path, inst())
    seen = []

    class Slow:
        async def start(self, agent):
            pass

        async def stop(self, agent):
            seen.append((rig.transports["vi_1"].sent_adverts()[-1].priority, rig.addresses.has("eth0", VIP.ip)))
            await asyncio.sleep(0.2)

    rig.agent.components.append(Slow())
    await rig.agent.start()
    await rig.master()
    assert rig.state() is State.MASTER
    await rig.agent.stop()
    assert seen == [(0, False)]


async def test_lone_agent_becomes_master_adds_vip_and_sends_garp(tmp_path):  # RFC 5798 6.4.2
    rig = Rig(tmp_path, inst())
    events: list[RoleEvent] = []
    rig.agent.on_role_changed.append(events.append)
    await rig.agent.start()
    await rig.master(garps=2)
    assert rig.state() is State.MASTER
    assert rig.addresses.has("eth0", VIP.ip)
    assert rig.announcers["eth0"].announced == [VIP.ip, VIP.ip]    # count=2
    assert [(e.old, e.new) for e in events] == [(State.INITIALIZE, State.BACKUP),
                                                (State.BACKUP, State.MASTER)]
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["instances"]["vi_1"]["state"] == "MASTER"
    assert saved["instances"]["vi_1"]["holds_vips"] is True
    await rig.agent.stop()
    assert not rig.addresses.has("eth0", VIP.ip)
    assert rig.transports["vi_1"].sent_adverts()[-1].priority == 0
    assert json.loads((tmp_path / "state.json").read_text())["instances"]["vi_1"]["state"] == "INIT"


async def test_start_removes_vips_a_dead_predecessor_left(tmp_path):
    addrs = FakeAddresses()
    addrs.addrs["eth0"].append(VIP)
    rig = Rig(tmp_path, inst(), addresses=addrs)
    await rig.agent.start()
    assert addrs.log == [("del", str(VIP))]
    assert rig.state() is State.BACKUP
    await rig.agent.stop()


async def test_backup_following_a_master_never_adds_the_vip(tmp_path):
    from hadirector.vrrp.codec import Advert
    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    t = rig.transports["vi_1"]
    for _ in range(8):
        t.deliver_advert(Advert(3, 51, 200, ADV, (VIP.ip,), 4), "10.0.0.2")
        await settle(ADV)
    assert rig.state() is State.BACKUP
    assert rig.addresses.log == []
    await rig.agent.stop()


async def test_link_down_faults_the_instance_and_releases_the_vip(tmp_path):
    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    await rig.master()
    assert rig.state() is State.MASTER
    FakeLinkWatcher.instances[-1].push("eth0", up=False)
    await rig.until(lambda: rig.state() is State.FAULT and not rig.addresses.has("eth0", VIP.ip),
                    "FAULT and the VIP released", timeout=0.05)
    assert rig.state() is State.FAULT
    assert not rig.addresses.has("eth0", VIP.ip)
    FakeLinkWatcher.instances[-1].push("eth0", up=True)
    await rig.until(lambda: rig.state() is not State.FAULT, "out of FAULT", timeout=0.02)
    assert rig.state() is State.BACKUP
    await rig.agent.stop()


async def test_sync_group_member_fault_takes_the_whole_group_down(tmp_path):
    group = SyncGroup("g", ("vi_1", "vi_2"))
    rig = Rig(tmp_path, inst(), inst("vi_2", vrid=52, vip=VIP2), groups=(group,))
    await rig.agent.start()
    await rig.master("vi_1", "vi_2")
    assert (rig.state("vi_1"), rig.state("vi_2")) == (State.MASTER, State.MASTER)
    rig.agent.set_fault("vi_1", True, "track_script:chk")
    await rig.until(lambda: not rig.addresses.has("eth0", VIP.ip) and not rig.addresses.has("eth0", VIP2.ip),
                    "both VIPs released", timeout=0.05)
    assert (rig.state("vi_1"), rig.state("vi_2")) == (State.FAULT, State.FAULT)
    assert not rig.addresses.has("eth0", VIP.ip) and not rig.addresses.has("eth0", VIP2.ip)
    assert rig.agent.snapshot()["groups"] == {"g": "FAULT"}
    await rig.agent.stop()


async def test_no_source_address_is_a_start_error(tmp_path):
    addrs = FakeAddresses(addrs={"eth0": []})
    rig = Rig(tmp_path, inst(), addresses=addrs)
    with pytest.raises(AgentError, match="no IPv4 address"):
        await rig.agent.start()


async def test_sighup_reload_applies_a_good_file_and_refuses_a_bad_one(tmp_path):
    from dataclasses import replace

    from structlog.testing import capture_logs

    path = tmp_path / "hadirector.yaml"
    path.write_text(
        "node: {router_id: t, state_dir: %s}\n"
        "vrrp_instances:\n"
        "  - {name: vi_1, interface: eth0, vrid: 51, advert_interval: 0.05, virtual_ips: [10.0.0.100]}\n"
        % tmp_path)
    rig = Rig(tmp_path, inst())
    rig.agent.config = replace(rig.agent.config, source=str(path))
    await rig.agent.start()
    driver = rig.agent.runtimes["vi_1"].driver
    with capture_logs() as logs:
        await rig.agent.reload()
        path.write_text("vrrp_instances: [{name: vi_1}]\n")
        await rig.agent.reload()
    assert [e["event"] for e in logs if e["event"].startswith("agent.")] == [
        "agent.reloaded", "agent.reload_failed"]
    assert [e["reason"] for e in logs if e["event"] == "agent.reload_failed"] == ["invalid_config"]
    assert rig.agent.runtimes["vi_1"].driver is driver, "garp/VIP-prefix changes are applied in place"
    # The lone instance may take over meanwhile (its own timer), never restart.
    assert {e["reason"] for e in logs if e["event"] == "vrrp.role_changed"} <= {"master_down_timer"}
    await rig.agent.stop()


async def test_status_shows_a_running_preemption_hold_in_wall_clock_time(tmp_path):
    from hadirector.agent.status import vrrp_status
    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    try:
        assert vrrp_status(rig.agent)[0].preempt_held_until is None
        rig.agent.runtimes["vi_1"].driver.hold_preemption(10.0)
        held = vrrp_status(rig.agent)[0].preempt_held_until
        assert held is not None and abs(held - (time.time() + 10.0)) < 0.5
    finally:
        await rig.agent.stop()


async def test_reject_counters_reach_state_json_without_a_state_change(tmp_path):
    # Rejected packets change no role and no view: only the throttled refresh (at most
    # once per STATE_REFRESH) writes them.
    from hadirector.agent.agent import STATE_REFRESH
    rig = Rig(tmp_path, inst())
    write = rig.agent.write_state

    def write_state() -> None:
        write()
        rig.pulse.fire()

    rig.agent.write_state = write_state
    await rig.agent.start()
    await rig.master(garps=2)
    assert rig.state() is State.MASTER
    state = tmp_path / "state.json"
    assert json.loads(state.read_text())["instances"]["vi_1"]["rejected"] == {}
    t = rig.transports["vi_1"]
    driver = rig.agent.runtimes["vi_1"].driver
    for batch in range(1, 21):          # in batches: the fake's socketpair is finite
        for _ in range(100):
            t.deliver_v4(b"\x31\x33", "10.0.0.9")            # truncated
        await rig.until(lambda: driver.rejected.get("truncated", 0) == 100 * batch, "the batch read")
    shown: dict = {}

    def shown_rejected() -> bool:
        # All of them: a refresh may fall between two batches and show part.
        shown.update(json.loads(state.read_text())["instances"]["vi_1"])
        return shown["rejected"].get("truncated") == 2000

    await rig.until(shown_rejected, "the throttled refresh", timeout=STATE_REFRESH + 2)
    assert shown["rejected"] == {"truncated": 2000}
    assert (shown["state"], rig.agent.runtimes["vi_1"].driver.machine.counters.became_master) == (
        "MASTER", 1)
    await rig.agent.stop()


async def test_status_held_vips_follow_the_address_on_the_interface_not_the_role(tmp_path):
    from hadirector.agent.status import vrrp_status
    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    (st,) = vrrp_status(rig.agent)
    assert st.held_vips == () and not rig.addresses.has("eth0", VIP.ip)
    await rig.master(garps=2)
    (st,) = vrrp_status(rig.agent)
    assert st.state.value == "MASTER" and st.held_vips == (str(VIP),)
    assert rig.addresses.has("eth0", VIP.ip)
    await rig.agent.stop()
    (st,) = vrrp_status(rig.agent)
    assert st.held_vips == () and not rig.addresses.has("eth0", VIP.ip)


async def test_the_garp_rounds_repeat_and_refresh_run_on_the_directors_timer(tmp_path, capsys):
    # The core schedules the rounds (tests/unit/director/test_garp.py); here the one
    # call_at of the agent sends them and logs each burst once, after its last round.
    from dataclasses import replace
    garp = GarpSettings(count=2, interval=0.01, repeat_delay=0.05, refresh=0.1)
    rig = Rig(tmp_path, replace(inst(), garp=garp))
    await rig.agent.start()
    await rig.master(garps=6, within=master_down_interval(100, ADV) + 0.25)
    assert rig.state() is State.MASTER
    sent = len(rig.announcers["eth0"].announced)
    assert sent >= 6, "takeover, repeat and at least one refresh burst of 2"
    await rig.agent.stop()
    await settle(0.15)
    assert len(rig.announcers["eth0"].announced) == sent, "no round after the stop"
    out = capsys.readouterr().out
    for reason in ("takeover", "repeat", "refresh"):
        assert f"packets=2 reason={reason}" in out, reason
