"""The driver with ``auth``: adverts verified before the machine sees them, signed once per
advert, counted and logged per reason with the source; a reload swaps keys and mode
without touching the machine (real event loop, fake socket)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time

from structlog.testing import capture_logs

from hadirector.agent.vrrp_driver import VrrpDriver
from hadirector.model import AuthKey, AuthMode, VrrpAuth, VrrpInstance
from hadirector.vrrp.auth import TRAILER_LEN, AdvertAuth
from hadirector.vrrp.codec import Advert, decode, encode
from hadirector.vrrp.machine import State

from .fakes import FakeTransport

ME = ipaddress.IPv4Address("10.0.0.1")
PEER = ipaddress.IPv4Address("10.0.0.2")
INTRUDER = ipaddress.IPv4Address("10.0.0.66")
VIP = ipaddress.ip_interface("10.0.0.100/32")
ADV = 0.05
K1, K2 = bytes(range(32)), bytes(range(50, 90))


def auth(mode=AuthMode.ENFORCE, keys=((1, K1),), active=1) -> VrrpAuth:
    return VrrpAuth(keys=tuple(AuthKey(i, f"/k{i}", k) for i, k in keys), active_key=active, mode=mode)


def inst(**kw) -> VrrpInstance:
    base = dict(name="vi_1", interface="eth0", vrid=51, priority=100, advert_interval=ADV,
                virtual_ips=(VIP,), auth=auth())
    base.update(kw)
    return VrrpInstance(**base)


def advert(priority: int) -> Advert:
    return Advert(version=3, vrid=51, priority=priority, max_advert_int=ADV, addresses=(VIP.ip,), family=4)


class Peer:
    """A signing peer: what the other director would send."""

    def __init__(self, settings: VrrpAuth, src=PEER) -> None:
        self.src = src
        self.auth = AdvertAuth(settings, family=4, version=3, vrid=51, advert_interval=ADV)

    def payload(self, priority: int, dst) -> bytes:
        adv = advert(priority)
        pdu = encode(adv, self.src, dst)
        return encode(adv, self.src, dst, self.auth.sign(pdu, self.src, time.time()))


def make(instance=None):
    changes = []
    t = FakeTransport()
    d = VrrpDriver(instance or inst(), transport=t, primary_address=ME,
                   on_role_changed=lambda drv, ch: changes.append(ch))
    return d, t, changes


async def test_enforce_drops_unsigned_and_wrongly_signed_adverts_before_the_machine():
    d, t, _ = make()
    d.start()
    with capture_logs() as logs:
        t.deliver_advert(advert(254), INTRUDER)
        t.deliver_v4(Peer(auth(keys=((1, K2),)), INTRUDER).payload(254, t.group), INTRUDER)
        t.deliver_v4(Peer(auth(keys=((1, K2),))).payload(254, t.group), PEER)   # spoofed peer address
        await asyncio.sleep(0.02)
    assert d.machine.counters.adverts_received == 0 and d.machine.master_address is None
    assert d.rejected == {"auth_missing": 1, "bad_hmac": 2}
    rejected = [e for e in logs if e["event"] == "vrrp.advert_rejected"]
    assert [(e["reason"], e["src"], e["log_level"]) for e in rejected] == [
        ("auth_missing", str(INTRUDER), "warning"), ("bad_hmac", str(INTRUDER), "warning")]
    d.close()


async def test_a_signed_peer_advert_reaches_the_machine_and_a_replay_does_not():
    d, t, _ = make()
    d.start()
    payload = Peer(auth()).payload(200, t.group)
    t.deliver_v4(payload, PEER)
    t.deliver_v4(payload, PEER)
    await asyncio.sleep(0.02)
    assert d.machine.counters.adverts_received == 1 and d.machine.master_address == PEER
    assert d.gate.verified == 1 and d.rejected == {"replay": 1}
    d.close()


async def test_adverts_sent_carry_one_trailer_that_a_peer_verifies():
    d, t, _ = make()
    d.start()
    await asyncio.sleep(5 * ADV)
    assert d.state is State.MASTER
    peer = AdvertAuth(auth(), family=4, version=3, vrid=51, advert_interval=ADV)
    payloads = [p for p, _, _ in t.sent]
    assert payloads and all(len(p) == 8 + 4 + TRAILER_LEN for p in payloads)
    for p in payloads:
        adv = decode(p, src=ME, dst=t.group, ttl=255, family=4, trailer_len=TRAILER_LEN)
        assert peer.verify(p[:-TRAILER_LEN], adv.trailer, ME, time.time()) is None
    d.close()


async def test_receive_only_sends_unsigned_and_accepts_unsigned():
    d, t, _ = make(inst(auth=auth(AuthMode.RECEIVE_ONLY)))
    d.start()
    t.deliver_advert(advert(200), PEER)
    await asyncio.sleep(0.02)
    assert d.machine.master_address == PEER and d.gate.unsigned_accepted == 1
    d.close()
    d2, t2, _ = make(inst(auth=auth(AuthMode.RECEIVE_ONLY)))
    d2.start()
    await asyncio.sleep(5 * ADV)
    assert d2.state is State.MASTER and all(len(p) == 12 for p, _, _ in t2.sent)
    d2.close()


async def test_multicast_peers_allow_list_drops_other_sources_and_counts_them():
    d, t, _ = make(inst(auth=None, peers=(PEER,)))
    d.start()
    t.deliver_advert(advert(254), INTRUDER)
    t.deliver_advert(advert(200), PEER)
    await asyncio.sleep(0.02)
    assert d.rejected == {"unknown_peer": 1} and d.machine.master_address == PEER
    d.close()


async def test_reload_swaps_keys_and_mode_without_a_role_change():
    d, t, changes = make(inst(auth=auth(AuthMode.RECEIVE_ONLY)))
    d.start()
    await asyncio.sleep(5 * ADV)
    assert d.state is State.MASTER
    machine, before = d.machine, list(changes)
    for step in (auth(AuthMode.PERMISSIVE), auth(), auth(keys=((1, K1), (2, K2)), active=1),
                 auth(keys=((1, K1), (2, K2)), active=2), auth(keys=((2, K2),), active=2)):
        with capture_logs() as logs:
            assert d.reconfigure(dataclasses.replace(d.instance, auth=step))
        assert [e["mode"] for e in logs if e["event"] == "vrrp.auth_reconfigured"] == [step.mode.value]
        assert all("secret" not in str(e) and K1.hex() not in str(e) for e in logs)
        await asyncio.sleep(2 * ADV)
    assert d.machine is machine and changes == before and d.state is State.MASTER
    last = t.sent[-1][0]
    assert len(last) == 12 + TRAILER_LEN and last[12 + 1] == 2          # signed with key 2
    d.close()


async def test_a_peer_clock_past_half_the_window_is_warned_about_once_and_still_accepted():
    changes = []
    t = FakeTransport()
    d = VrrpDriver(inst(), transport=t, primary_address=ME, wall_clock=lambda: time.time() + 3.0,
                   on_role_changed=lambda drv, ch: changes.append(ch))
    d.start()
    peer = Peer(auth())
    with capture_logs() as logs:
        for _ in range(3):
            t.deliver_v4(peer.payload(200, t.group), PEER)
            await asyncio.sleep(0.01)
    assert d.gate.verified == 3 and d.rejected == {}
    [warned] = [e for e in logs if e["event"] == "vrrp.auth_clock_skewed"]
    # Whole seconds, as on the wire: 3, or 4 when a second boundary fell in between.
    assert (warned["src"], warned["time_window"]) == (str(PEER), 5) and warned["skew"] in (3, 4)
    d.close()


async def test_a_peer_clock_beyond_the_window_is_refused_as_stale():
    t = FakeTransport()
    d = VrrpDriver(inst(), transport=t, primary_address=ME, wall_clock=lambda: time.time() + 60)
    d.start()
    t.deliver_v4(Peer(auth()).payload(200, t.group), PEER)
    await asyncio.sleep(0.02)
    assert d.rejected == {"stale": 1} and d.machine.master_address is None
    d.close()
