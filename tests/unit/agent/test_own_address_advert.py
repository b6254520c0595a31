"""Adverts for our VRID from our own source address, and VIPs the agent did not add.

Two agents on one director (or an address conflict, or a forgery) show up as adverts
from our own address: they are dropped, logged as an error at a bounded rate and
counted; and a VIP that was already on the interface when we became master is never
removed by us (real event loop, fake socket and addresses).
"""

from __future__ import annotations

import asyncio
import dataclasses

from structlog.testing import capture_logs

from hadirector.kernel.fake import FakeAddresses
from hadirector.vrrp.codec import Reject
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .test_agent import ADV, VIP, Rig, inst
from .test_vrrp_driver import ME, PEER, advert, make


async def test_an_advert_from_our_own_address_is_dropped_logged_once_and_counted():  # RFC 5798 6.4.3
    d, t, changes = make()
    d.start()
    await t.until(lambda: d.state is State.MASTER, master_down_interval(100, 0.05) + 0.03, "the takeover")
    assert d.state is State.MASTER
    with capture_logs() as logs:
        for _ in range(5):
            t.deliver_advert(advert(255), ME)       # would make a master step down
            await t.read_all(0.005)
    assert d.state is State.MASTER and changes[-1].new is State.MASTER
    seen = [e for e in logs if e["event"] == "vrrp.own_address_advert_received"]
    assert len(seen) == 1
    assert seen[0]["log_level"] == "error"
    assert (seen[0]["src"], seen[0]["priority"], seen[0]["reason"]) == (str(ME), 255, "own_source_address")
    assert d.rejected == {Reject.OWN_ADVERT.value: 5}        # status / metrics: adverts_invalid
    assert d.machine.counters.adverts_received == 0           # never reached the machine
    d.close()


async def test_a_backup_ignores_its_own_address_and_still_takes_over():  # RFC 5798 6.4.2
    # Accepted, it would restart the Master_Down_Timer forever: no takeover at all.
    d, t, _ = make()
    d.start()
    for _ in range(int(master_down_interval(100, 0.05) / 0.02) + 5):
        t.deliver_advert(advert(200), ME)
        await asyncio.sleep(0.02)
    assert d.state is State.MASTER
    d.close()


async def test_other_vrids_from_our_address_are_not_ours_to_report():
    d, t, _ = make()
    d.start()
    with capture_logs() as logs:
        t.deliver_advert(advert(200, vrid=52), ME)
        t.deliver_advert(advert(200), PEER)
        await t.read_all(0.01)
    assert not [e for e in logs if e["event"] == "vrrp.own_address_advert_received"]
    assert d.machine.master_address == PEER
    d.close()


async def test_a_vip_that_was_already_there_is_left_in_place(tmp_path):
    rig = Rig(tmp_path, inst())
    await rig.agent.start()                 # releases a dead predecessor's VIPs (none)
    rig.addresses.addrs["eth0"].append(VIP)  # then someone else adds it
    with capture_logs() as logs:
        await rig.master()
        assert rig.state() is State.MASTER
        await rig.agent.stop()
    assert rig.addresses.has("eth0", VIP.ip), "not ours: never removed"
    assert ("del", str(VIP)) not in rig.addresses.log
    events = {e["event"]: e for e in logs}
    assert events["vrrp.vips_already_present"]["vips"] == [str(VIP)]
    assert events["vrrp.vips_left_in_place"]["reason"] == "not_added_by_this_agent"
    assert "vrrp.vips_removed" not in events


async def test_the_vip_the_agent_added_goes_on_every_release(tmp_path):
    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    await rig.master(garps=2)
    assert rig.addresses.log == [("add", str(VIP))]
    rig.agent.set_fault("vi_1", True, "test")          # MASTER -> FAULT releases it
    await rig.until(lambda: not rig.addresses.has("eth0", VIP.ip), "the VIP released", 0.05)
    assert not rig.addresses.has("eth0", VIP.ip)
    rig.agent.set_fault("vi_1", False, "test")
    await rig.until(lambda: rig.state() is State.MASTER and rig.addresses.has("eth0", VIP.ip),
                    "MASTER again with the VIP", master_down_interval(100, ADV) + 0.05)
    assert rig.state() is State.MASTER and rig.addresses.has("eth0", VIP.ip)
    await rig.agent.stop()
    assert rig.addresses.log == [("add", str(VIP)), ("del", str(VIP))] * 2


async def test_an_address_owner_never_removes_its_own_address(tmp_path):  # RFC 5798 6.1
    # Priority 255: the VIP is the interface's real address, there before we start.
    addrs = FakeAddresses()
    addrs.addrs["eth0"].append(VIP)
    rig = Rig(tmp_path, dataclasses.replace(inst(), priority=255), addresses=addrs)
    with capture_logs() as logs:
        await rig.agent.start()
        await rig.master(garps=2, within=0.05)       # an owner is MASTER at once (RFC 5798 6.4.1)
        assert rig.state() is State.MASTER
        await rig.agent.stop()
    assert rig.addresses.has("eth0", VIP.ip) and rig.addresses.log == []
    assert not [e for e in logs if e["event"].startswith("vrrp.vips_")]
