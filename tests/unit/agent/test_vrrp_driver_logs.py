"""What the VRRP driver logs about the adverts behind its decisions (real event loop,
fake socket): the peer of an advert-caused transition, and a bounded interval."""

from __future__ import annotations

import ipaddress

from structlog.testing import capture_logs

from hadirector.agent.vrrp_driver import VrrpDriver
from hadirector.model import VrrpInstance
from hadirector.vrrp.codec import Advert
from hadirector.vrrp.machine import State
from hadirector.vrrp.timers import master_down_interval

from .fakes import FakeTransport

ME = ipaddress.IPv4Address("10.0.0.1")
PEER = ipaddress.IPv4Address("10.0.0.2")
SPOOFER = ipaddress.IPv4Address("10.0.0.66")
VIP = ipaddress.ip_interface("10.0.0.100/32")
ADV = 0.05


def make(priority: int = 100) -> tuple[VrrpDriver, FakeTransport]:
    inst = VrrpInstance(name="vi_1", interface="eth0", vrid=51, priority=priority,
                        advert_interval=ADV, virtual_ips=(VIP,))
    t = FakeTransport()
    return VrrpDriver(inst, transport=t, primary_address=ME), t


def advert(priority: int, interval: float = ADV) -> Advert:
    return Advert(version=3, vrid=51, priority=priority, max_advert_int=interval,
                  addresses=(VIP.ip,), family=4)


def events(logs, name):
    return [e for e in logs if e["event"] == name]


async def test_stepping_down_logs_the_peer_address_and_priority():  # RFC 5798 6.4.3
    d, t = make()
    d.start()
    await t.until(lambda: d.state is State.MASTER, master_down_interval(100, ADV) + 0.03, "the takeover")
    assert d.state is State.MASTER
    with capture_logs() as logs:
        t.deliver_advert(advert(200), PEER)
        await t.read_all(0.01)
    [e] = events(logs, "vrrp.role_changed")
    assert (e["old"], e["new"], e["reason"]) == ("MASTER", "BACKUP", "higher_priority_received")
    assert (e["peer"], e["peer_priority"]) == (str(PEER), 200)
    d.close()


async def test_takeover_on_priority_zero_logs_the_leaving_master():  # RFC 5798 6.4.2
    d, t = make()
    d.start()
    t.deliver_advert(advert(200), PEER)
    await t.read_all(0.01)
    with capture_logs() as logs:
        t.deliver_advert(advert(0), PEER)
        await t.until(lambda: d.state is State.MASTER, ADV + 0.03, "the takeover after Skew_Time")   # Skew_Time < ADV
    assert d.state is State.MASTER
    [e] = events(logs, "vrrp.role_changed")
    assert (e["reason"], e["peer"], e["peer_priority"]) == ("priority_zero_received", str(PEER), 0)
    d.close()


async def test_a_timer_transition_logs_no_peer():  # RFC 5798 6.4.2
    d, t = make()
    with capture_logs() as logs:
        d.start()
        await t.until(lambda: d.state is State.MASTER, master_down_interval(100, ADV) + 0.03, "the takeover")
    takeover = [e for e in events(logs, "vrrp.role_changed") if e["new"] == "MASTER"]
    assert [(e["reason"], e["peer"], e["peer_priority"]) for e in takeover] == [
        ("master_down_timer", None, None)]
    d.close()


async def test_a_bounded_interval_is_logged_with_source_and_values_once_per_interval():
    d, t = make()
    d.start()
    with capture_logs() as logs:
        for _ in range(5):
            t.deliver_advert(advert(200, interval=40.95), SPOOFER)
        await t.read_all(0.02)
    assert d.machine.master_adver_interval == 4 * ADV
    [e] = events(logs, "vrrp.advert_interval_bounded")
    assert e["log_level"] == "warning"
    assert (e["src"], e["advertised"], e["used"], e["configured"], e["reason"]) == (
        str(SPOOFER), 40.95, 4 * ADV, ADV, "too_long")
    d.close()
