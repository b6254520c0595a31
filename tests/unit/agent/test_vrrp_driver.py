"""The VRRP driver: packets in, one timer, actions out (real event loop, fake socket)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress

import pytest
from structlog.testing import capture_logs

from hadirector.agent.vrrp_driver import UNKNOWN_PEER, DropLog, VrrpDriver
from hadirector.model import VrrpInstance
from hadirector.vrrp.codec import Advert, Reject
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .fakes import FakeTransport

ME = ipaddress.IPv4Address("10.0.0.1")
PEER = ipaddress.IPv4Address("10.0.0.2")
VIP = ipaddress.ip_interface("10.0.0.100/32")
ADV = 0.05


def inst(**kw) -> VrrpInstance:
    base = dict(name="vi_1", interface="eth0", vrid=51, priority=100, advert_interval=ADV,
                virtual_ips=(VIP,))
    base.update(kw)
    return VrrpInstance(**base)


def advert(priority: int, vrid: int = 51) -> Advert:
    return Advert(version=3, vrid=vrid, priority=priority, max_advert_int=ADV,
                  addresses=(VIP.ip,), family=4)


def make(instance=None, transport=None):
    changes = []
    t = transport or FakeTransport()
    d = VrrpDriver(instance or inst(), transport=t, primary_address=ME,
                   on_role_changed=lambda drv, ch: changes.append(ch))
    return d, t, changes


async def test_backup_becomes_master_after_master_down_interval_and_advertises():  # RFC 5798 6.4.2
    d, t, changes = make()
    d.start()
    assert d.state is State.BACKUP
    await t.until(lambda: d.state is State.MASTER, master_down_interval(100, ADV) + 0.03, "the takeover")
    assert d.state is State.MASTER
    assert [(c.old, c.new, c.reason) for c in changes] == [
        (State.INITIALIZE, State.BACKUP, "startup"),
        (State.BACKUP, State.MASTER, "master_down_timer"),
    ]
    await t.until(lambda: len(t.sent) >= 3, 3 * ADV, "three adverts")
    sent = t.sent_adverts()
    assert len(sent) >= 3 and all(a.priority == 100 and a.vrid == 51 for a in sent)
    # The checksum was computed for the destination it went to (decode verified it).
    assert {dst for _, dst, _ in t.sent} == {t.group}
    d.close()


async def test_one_timer_rearmed_from_get_timer_after_each_input():
    d, t, _ = make()
    d.start()
    for _ in range(5):
        t.deliver_advert(advert(200), PEER)
        await t.read_all(0.01)
        assert d._timer is not None and d._timer.when() == d.machine.get_timer()
    assert d.state is State.BACKUP
    assert d.machine.master_address == PEER
    d.close()


async def test_higher_priority_adverts_keep_a_backup_backup():  # RFC 5798 6.4.2
    d, t, changes = make()
    d.start()
    for _ in range(10):
        t.deliver_advert(advert(200), PEER)
        await asyncio.sleep(ADV)
    assert d.state is State.BACKUP
    assert [c.new for c in changes] == [State.BACKUP]
    d.close()


async def test_rejects_are_counted_and_logged_once_per_reason_per_interval():
    d, t, _ = make()
    d.start()
    with capture_logs() as logs:
        for _ in range(20):
            t.deliver_advert(advert(255), PEER, ttl=64)          # BAD_TTL
            t.deliver_v4(b"\x31\x33", PEER)                       # TRUNCATED
            t.deliver_advert(advert(255, vrid=52), PEER)          # VRID_MISMATCH (machine)
        await t.read_all(0.05)
    assert d.rejected == {"bad_ttl": 20, "truncated": 20, "vrid_mismatch": 20}
    rejected = [e for e in logs if e["event"] == "vrrp.advert_rejected"]
    assert sorted(e["reason"] for e in rejected) == ["bad_ttl", "truncated", "vrid_mismatch"]
    levels = {e["reason"]: e["log_level"] for e in rejected}
    assert levels == {"bad_ttl": "warning", "truncated": "warning", "vrid_mismatch": "debug"}
    assert d.state is State.BACKUP
    d.close()


def test_drop_log_reports_what_it_suppressed():
    dl = DropLog(interval=10)
    assert dl.admit("bad_ttl", 0.0) == 0
    assert dl.admit("bad_ttl", 1.0) is None
    assert dl.admit("bad_ttl", 9.9) is None
    assert dl.admit("other", 5.0) == 0
    assert dl.admit("bad_ttl", 10.0) == 2


async def test_unicast_mode_ignores_senders_that_are_not_peers():
    t = FakeTransport(peers=(PEER,))
    d, t, _ = make(inst(unicast_peers=(PEER,)), t)
    d.start()
    t.deliver_advert(advert(200), "10.0.0.9", dst=ME)
    await t.read_all(0.01)
    assert d.rejected == {UNKNOWN_PEER: 1}
    assert d.machine.master_address is None
    t.deliver_advert(advert(200), PEER, dst=ME)
    await t.read_all(0.01)
    assert d.machine.master_address == PEER
    d.close()


async def test_shutdown_of_a_master_sends_priority_zero_and_reports_the_change():  # RFC 5798 6.4.3
    d, t, changes = make(inst(priority=255))     # address owner: master at once
    d.start()
    assert d.state is State.MASTER
    d.shutdown()
    assert t.sent_adverts()[-1].priority == 0
    assert changes[-1].new is State.INITIALIZE and changes[-1].reason == "shutdown"
    d.close()
    assert t.closed


async def test_send_errors_are_counted_not_raised():
    t = FakeTransport()
    t.fail_with = OSError(errno.ENETDOWN, "Network is down")
    d, t, _ = make(inst(priority=255), t)
    with capture_logs() as logs:
        d.start()
        await t.until(lambda: d.send_errors >= 2, 3 * ADV, "two failed sends")
    assert d.state is State.MASTER
    assert d.send_errors >= 2
    assert [e["reason"] for e in logs if e["event"] == "vrrp.advert_send_failed"] == ["ENETDOWN"]
    d.close()


async def test_fault_from_a_tracker_steps_down_with_priority_zero():
    d, t, changes = make(inst(priority=255))
    d.start()
    d.set_fault(True, "track_interface:eth0")
    assert d.state is State.FAULT
    assert t.sent_adverts()[-1].priority == 0
    assert d.machine.get_timer() is None and d._timer is None
    d.close()
