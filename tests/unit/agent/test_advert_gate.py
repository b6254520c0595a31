"""``AdvertGate`` on its own: no loop, no socket; the wall clock and ``now`` set by hand."""

from __future__ import annotations

import dataclasses
import time

from structlog.testing import capture_logs

from hadirector.agent.advert_auth import AdvertGate
from hadirector.agent.vrrp_driver import DropLog
from hadirector.logging import get_logger
from hadirector.model import AuthMode
from hadirector.vrrp.auth import TRAILER_LEN
from hadirector.vrrp.codec import Reject, decode, encode

from .test_vrrp_driver_auth import ME, PEER, Peer, advert, auth, inst

WALL = 1_800_000_000.0


def gate(instance, wall=WALL) -> AdvertGate:
    return AdvertGate(instance, wall_clock=lambda: wall, drops=DropLog(10.0), log=get_logger("test"))


def received(payload: bytes):
    return decode(payload, src=PEER, dst=ME, ttl=255, family=4, trailer_len=TRAILER_LEN)


def test_without_auth_the_gate_admits_everything_and_signs_nothing():
    g = gate(inst(auth=None))
    adv = advert(200)
    assert g.trailer_len == 0 and g.sign(adv, ME, PEER) == (b"", b"")
    assert g.admit(encode(adv, PEER, ME), adv, PEER, now=0.0) is None
    assert (g.verified, g.unsigned_accepted) == (0, 0)


def test_a_signed_advert_is_admitted_and_counted_and_its_replay_refused():
    g = gate(inst(), wall=time.time())         # the peer signs with time.time()
    payload = Peer(auth()).payload(200, ME)
    assert g.admit(payload, received(payload), PEER, now=0.0) is None
    assert g.admit(payload, received(payload), PEER, now=0.1) is Reject.AUTH_REPLAY
    assert (g.verified, g.unsigned_accepted) == (1, 0)


def test_the_signature_is_made_once_over_the_pdu_for_the_first_destination():
    g = gate(inst())
    adv = advert(100)
    pdu, trailer = g.sign(adv, ME, PEER)
    assert pdu == encode(adv, ME, PEER) and len(trailer) == TRAILER_LEN
    assert gate(inst(auth=auth(AuthMode.RECEIVE_ONLY))).sign(adv, ME, PEER) == (b"", b"")


def test_a_reload_that_changes_auth_swaps_it_and_logs_the_new_mode_never_a_secret():
    old = inst()
    g = gate(old)
    before = g.auth
    new = dataclasses.replace(old, auth=auth(AuthMode.PERMISSIVE))
    with capture_logs() as logs:
        g.reconfigure(old, old)                 # unchanged: nothing to do
        assert g.auth is before
        g.reconfigure(old, new)
    assert g.auth is not None and g.auth is not before and g.auth.config.mode is AuthMode.PERMISSIVE
    [e] = logs
    assert (e["event"], e["mode"], e["key_ids"], e["reason"]) == ("vrrp.auth_reconfigured", "permissive", [1], "reload")
    assert not any(isinstance(v, bytes) for v in e.values())
