"""The announce gate (``director.gate``): a VIP is announced exactly while this
director can carry every scale-out service on it, after a hold-down; withdrawn first on
stop, torn down ``drain_grace`` later. Fake clock: ``now=`` in, effects out."""

from __future__ import annotations

import ipaddress

from hadirector.director.gate import (
    Announce, AnnounceGate, ServiceView, TearDown, Withdraw, readiness, vips_of,
)
from hadirector.model import BgpPeer, ForwardMethod, RealServer, ScaleOut, VirtualService

VIP = ipaddress.ip_address("10.100.0.1")
VIP2 = ipaddress.ip_address("10.100.0.2")
PEER = BgpPeer(ipaddress.ip_address("10.1.0.1"), 65000)


def service(name: str, vip=VIP, port=80) -> VirtualService:
    return VirtualService(name, address=vip, port=port, scheduler="mh", scheduler_flags=("mh-fallback",),
                          real_servers=(RealServer(ipaddress.ip_address("10.2.0.11"), forward=ForwardMethod.DR),))


SERVICES = (service("web"), service("tls", port=443), service("api", vip=VIP2), service("other"))


def gate(hold_down=3.0, drain_grace=2.0, min_healthy=1, services=("web", "tls", "api")) -> AnnounceGate:
    so = ScaleOut(services=services, local_as=65001, peers=(PEER,), hold_down=hold_down,
                  drain_grace=drain_grace, min_healthy=min_healthy)
    return AnnounceGate(so, SERVICES)


def ready(name: str, up: int = 2) -> ServiceView:
    return ServiceView(name, programmed=True, up=up, pending=0)


ALL_READY = [ready("web"), ready("tls"), ready("api")]


def test_readiness_names_the_first_reason_a_service_cannot_be_carried():
    assert readiness(ServiceView("web", programmed=False, up=2, pending=0), 1) == "ipvs_not_programmed"
    assert readiness(ServiceView("web", programmed=True, up=2, pending=1), 1) == "health_pending"
    assert readiness(ServiceView("web", programmed=True, up=1, pending=0), 2) == "below_min_healthy"
    assert readiness(ServiceView("web", programmed=True, up=2, pending=0), 2) == ""


def test_each_vip_carries_the_scale_out_services_on_it_only():
    g = gate()
    assert vips_of(g.so, SERVICES) == {VIP: ("web", "tls"), VIP2: ("api",)}


def test_nothing_is_announced_before_the_services_state_is_known():
    g = gate(hold_down=0)
    g.handle_timer(now=0.0)
    assert g.effects() == [] and g.announced() == ()
    assert g.vips[VIP].reason == "web:no_state_yet"


def test_a_ready_vip_is_announced_only_after_the_hold_down():
    g = gate(hold_down=3.0)
    g.update(ALL_READY, now=10.0)
    assert g.effects() == [] and g.get_timer() == 13.0
    assert g.vips[VIP].reason == "hold_down"
    g.handle_timer(now=12.9)
    assert g.effects() == []
    g.handle_timer(now=13.0)
    assert g.effects() == [Announce(VIP, "hold_down_passed"), Announce(VIP2, "hold_down_passed")]
    assert g.get_timer() is None


def test_without_hold_down_a_ready_vip_is_announced_at_once():
    g = gate(hold_down=0)
    g.update(ALL_READY, now=1.0)
    assert g.effects() == [Announce(VIP, "ready"), Announce(VIP2, "ready")]


def test_a_vip_is_withdrawn_when_any_service_on_it_falls_below_min_healthy():
    g = gate(hold_down=0, min_healthy=2)
    g.update(ALL_READY, now=0.0)
    g.effects()
    g.update([ready("tls", up=1)], now=5.0)
    assert g.effects() == [Withdraw(VIP, "tls:below_min_healthy")]
    assert g.announced() == (VIP2,)


def test_ipvs_lost_withdraws_and_pending_health_keeps_it_withdrawn():
    g = gate(hold_down=0)
    g.update(ALL_READY, now=0.0)
    g.effects()
    g.update([ServiceView("api", programmed=False, up=0, pending=0)], now=1.0)
    assert g.effects() == [Withdraw(VIP2, "api:ipvs_not_programmed")]
    g.update([ServiceView("api", programmed=True, up=1, pending=1)], now=2.0)
    assert g.effects() == [] and g.vips[VIP2].reason == "api:health_pending"


def test_rejoin_after_a_withdrawal_waits_the_hold_down_again():
    g = gate(hold_down=3.0)
    g.update(ALL_READY, now=0.0)
    g.handle_timer(now=3.0)
    g.effects()
    g.update([ready("web", up=0)], now=4.0)
    assert g.effects() == [Withdraw(VIP, "web:below_min_healthy")]
    g.update([ready("web")], now=5.0)
    assert g.effects() == [] and g.get_timer() == 8.0
    # A flap inside the hold-down restarts it.
    g.update([ready("web", up=0)], now=6.0)
    g.update([ready("web")], now=7.0)
    g.handle_timer(now=8.0)
    assert g.effects() == [] and g.get_timer() == 10.0
    g.handle_timer(now=10.0)
    assert g.effects() == [Announce(VIP, "hold_down_passed")]


def test_drain_withdraws_at_once_and_undrain_honours_the_hold_down():
    g = gate(hold_down=1.0)
    g.update(ALL_READY, now=0.0)
    g.handle_timer(now=1.0)
    g.effects()
    g.drain(True, now=2.0)
    assert g.effects() == [Withdraw(VIP, "drained"), Withdraw(VIP2, "drained")]
    g.handle_timer(now=5.0)
    assert g.effects() == []
    g.drain(False, now=6.0)
    assert g.effects() == [] and g.get_timer() == 7.0
    g.handle_timer(now=7.0)
    assert g.effects() == [Announce(VIP, "hold_down_passed"), Announce(VIP2, "hold_down_passed")]


def test_stop_withdraws_first_and_tears_down_only_after_drain_grace():
    g = gate(hold_down=0, drain_grace=2.0)
    g.update(ALL_READY, now=0.0)
    g.effects()
    g.stop(now=10.0)
    assert g.effects() == [Withdraw(VIP, "stopping"), Withdraw(VIP2, "stopping")]
    assert g.get_timer() == 12.0
    g.handle_timer(now=11.9)
    assert g.effects() == []
    g.handle_timer(now=12.0)
    assert g.effects() == [TearDown()]
    g.handle_timer(now=13.0)
    g.update(ALL_READY, now=14.0)
    assert g.effects() == [] and g.get_timer() is None, "stopping: never announced again"


def test_stop_with_nothing_announced_tears_down_at_once():
    g = gate(hold_down=3.0)
    g.update(ALL_READY, now=0.0)
    g.stop(now=1.0)
    assert g.effects() == [TearDown()]
