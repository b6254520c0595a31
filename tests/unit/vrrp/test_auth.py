"""Authenticated adverts (vrrp/auth.py): keepalived's published vectors byte for byte
(test/auth_hmac_test.c, draft-cassen-vrrp-auth-hmac appendix), each reject reason from a
crafted packet in keepalived's receive order, replay inside and after the window, and
clock steps on both sides. Pure: the wall clock is an argument."""

from __future__ import annotations

import ipaddress
import time

import pytest

from hadirector.model import AntiReplay, AuthKey, AuthMode, VrrpAuth
from hadirector.vrrp.auth import (
    MCAST_SENDERS, TRAILER_LEN, AdvertAuth, Trailer, clock_seq, default_window, seq_after, sign,
)
from hadirector.vrrp.codec import MCAST_V4, Advert, Reject, decode, encode

ip = ipaddress.ip_address
KEY = bytes(range(32))                   # keepalived's vector key 00..1f
OTHER_KEY = bytes(range(100, 132))
SEQ = 0x6800000080000000                 # the vectors' sequence: sec 0x68000000, subsec 0x8000

IPV4_VEC = bytes.fromhex("3133c80100644402c0000264" "010100006800000080000000"
                         "1b84bc4e8e43892dc6d98448f8ee2265")
IPV6_VEC = bytes.fromhex("3133c8010064a2e9" "fe800000000000000000000000000100"
                         "010100006800000080000000" "c8c56146ebfd66ee10ec4d8186461b78")

SRC4, SRC6 = ip("198.51.100.10"), ip("fe80::10")
PEER = ip("198.51.100.20")
NOW = float(SEQ >> 32) + 0.5             # a wall clock at the vectors' timestamp


def settings(mode=AuthMode.ENFORCE, keys=((1, KEY),), active=1, anti=AntiReplay.TIME,
             window=None) -> VrrpAuth:
    return VrrpAuth(keys=tuple(AuthKey(i, f"/etc/hadirector/key-{i}", k) for i, k in keys),
                    active_key=active, mode=mode, anti_replay=anti, time_window=window)


def auth(family=4, vrid=51, peers=(), **kw) -> AdvertAuth:
    return AdvertAuth(settings(**kw), family=family, version=3, vrid=vrid, advert_interval=1.0,
                      unicast_peers=peers)


def advert4(priority=200) -> Advert:
    return Advert(version=3, vrid=51, priority=priority, max_advert_int=1.0,
                  addresses=(ip("192.0.2.100"),), family=4)


def signed4(a: AdvertAuth, wall: float, src=SRC4, priority=200) -> tuple[bytes, bytes]:
    """(pdu, trailer) of a fresh advert signed by ``a`` at ``wall``."""
    pdu = encode(advert4(priority), src, MCAST_V4)
    return pdu, a.sign(pdu, src, wall)


# --- keepalived's vectors ----------------------------------------------------------------


def test_ipv4_vector_trailer_is_reproduced_byte_for_byte():
    pdu = IPV4_VEC[:12]                  # its checksum is the RFC 9568 message-only one
    trailer = sign(KEY, 1, SEQ, pdu, family=4, version=3, vrid=51, src=SRC4)
    assert pdu + trailer == IPV4_VEC


def test_ipv4_vector_hmac_ignores_the_checksum_our_encoder_writes():
    # Our v3 IPv4 checksum includes the RFC 5798 5.2.8 pseudo-header; the HMAC reads the
    # field as zero, so the trailer is the vector's whatever the checksum convention.
    pdu = encode(advert4(), SRC4, MCAST_V4)
    assert pdu[:6] + pdu[8:] == IPV4_VEC[:6] + IPV4_VEC[8:12]
    assert sign(KEY, 1, SEQ, pdu, family=4, version=3, vrid=51, src=SRC4) == IPV4_VEC[12:]


def test_ipv6_vector_wire_image_is_reproduced_byte_for_byte_checksum_included():
    adv = Advert(version=3, vrid=51, priority=200, max_advert_int=1.0,
                 addresses=(ip("fe80::100"),), family=6)
    dst = ip("fe80::20")
    pdu = encode(adv, SRC6, dst)
    trailer = sign(KEY, 1, SEQ, pdu, family=6, version=3, vrid=51, src=SRC6)
    # The IPv6 checksum covers the trailer, as the kernel's IPV6_CHECKSUM does.
    assert encode(adv, SRC6, dst, trailer) == IPV6_VEC


@pytest.mark.parametrize("vector,family,src,mlen", [(IPV4_VEC, 4, SRC4, 12), (IPV6_VEC, 6, SRC6, 24)])
def test_vectors_verify_in_monotonic_mode(vector, family, src, mlen):
    a = auth(family=family, anti=AntiReplay.MONOTONIC)
    assert a.verify(vector[:mlen], vector[mlen:], src, wall=time.time()) is None


def test_ipv6_vector_decodes_with_its_trailer_and_checksum():
    adv = decode(IPV6_VEC, src=SRC6, dst=ip("fe80::20"), ttl=255, family=6, trailer_len=TRAILER_LEN)
    assert isinstance(adv, Advert) and adv.priority == 200 and adv.trailer == IPV6_VEC[24:]


def test_a_trailer_without_auth_configured_is_a_bad_length_as_in_older_keepalived():
    assert decode(IPV6_VEC, src=SRC6, dst=ip("fe80::20"), ttl=255, family=6) is Reject.BAD_LENGTH


# keepalived's mutation table: one flipped byte of the IPv6 image each.
MUTATIONS = [
    ("tampered priority", 2, Reject.AUTH_BAD_HMAC),
    ("tampered advert interval", 5, Reject.AUTH_BAD_HMAC),
    ("tampered checksum", 6, None),                       # read as zero by the HMAC
    ("tampered vip", 8 + 15, Reject.AUTH_BAD_HMAC),
    ("unsupported ext type", 24 + 0, Reject.AUTH_MALFORMED),
    ("unknown key id", 24 + 1, Reject.AUTH_UNKNOWN_KEY),
    ("nonzero reserved", 24 + 2, Reject.AUTH_MALFORMED),
    ("tampered seconds", 24 + 4, Reject.AUTH_BAD_HMAC),
    ("tampered counter", 24 + 10, Reject.AUTH_BAD_HMAC),
    ("tampered hmac", 24 + 12, Reject.AUTH_BAD_HMAC),
]


@pytest.mark.parametrize("what,offset,expected", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_one_flipped_byte_of_the_ipv6_vector_gives_keepaliveds_outcome(what, offset, expected):
    img = bytearray(IPV6_VEC)
    img[offset] ^= 0x01
    a = auth(family=6, anti=AntiReplay.MONOTONIC)
    assert a.verify(bytes(img[:24]), bytes(img[24:]), SRC6, wall=NOW) is expected


def test_the_pseudo_header_binds_the_source_address_and_the_vrid():
    assert auth(family=6, anti=AntiReplay.MONOTONIC).verify(
        IPV6_VEC[:24], IPV6_VEC[24:], ip("fe80::20"), wall=NOW) is Reject.AUTH_BAD_HMAC
    assert auth(family=6, vrid=52, anti=AntiReplay.MONOTONIC).verify(
        IPV6_VEC[:24], IPV6_VEC[24:], SRC6, wall=NOW) is Reject.AUTH_BAD_HMAC


# --- every reject reason, in keepalived's order -------------------------------------------


def test_enforce_rejects_an_advert_without_trailer():
    assert auth().verify(encode(advert4(), SRC4, MCAST_V4), None, SRC4, wall=NOW) is Reject.AUTH_MISSING


@pytest.mark.parametrize("mode", [AuthMode.PERMISSIVE, AuthMode.RECEIVE_ONLY])
def test_migration_modes_accept_an_advert_without_trailer(mode):
    assert auth(mode=mode).verify(encode(advert4(), SRC4, MCAST_V4), None, SRC4, wall=NOW) is None


@pytest.mark.parametrize("mode", list(AuthMode))
def test_every_mode_rejects_a_trailer_that_does_not_verify(mode):
    pdu, trailer = signed4(auth(keys=((1, OTHER_KEY),)), NOW)
    assert auth(mode=mode).verify(pdu, trailer, SRC4, wall=NOW) is Reject.AUTH_BAD_HMAC


def test_malformed_is_decided_before_stale():
    pdu, trailer = signed4(auth(), NOW - 1000)
    bad = bytes([2]) + trailer[1:]
    assert auth().verify(pdu, bad, SRC4, wall=NOW) is Reject.AUTH_MALFORMED


def test_stale_is_decided_before_the_key_and_the_hmac():
    # Unknown key, garbage HMAC, but outside the window: no digest is computed.
    trailer = Trailer(key_id=9, seq=clock_seq(NOW - 100), mac=b"x" * 16).pack()
    assert auth().verify(encode(advert4(), SRC4, MCAST_V4), trailer, SRC4, wall=NOW) is Reject.AUTH_STALE


def test_a_timestamp_ahead_of_the_window_is_stale_too():
    pdu, trailer = signed4(auth(), NOW + 100)
    assert auth().verify(pdu, trailer, SRC4, wall=NOW) is Reject.AUTH_STALE


def test_unknown_key_id():
    pdu, trailer = signed4(auth(keys=((7, KEY),), active=7), NOW)
    assert auth().verify(pdu, trailer, SRC4, wall=NOW) is Reject.AUTH_UNKNOWN_KEY


def test_a_replay_of_a_captured_genuine_advert_inside_the_window_is_rejected():
    sender, receiver = auth(), auth()
    pdu, trailer = signed4(sender, NOW)
    assert receiver.verify(pdu, trailer, SRC4, wall=NOW) is None
    assert receiver.verify(pdu, trailer, SRC4, wall=NOW + 1) is Reject.AUTH_REPLAY


def test_a_replay_after_the_window_is_stale_before_any_digest():
    sender, receiver = auth(), auth()
    pdu, trailer = signed4(sender, NOW)
    assert receiver.verify(pdu, trailer, SRC4, wall=NOW) is None
    assert receiver.verify(pdu, trailer, SRC4, wall=NOW + 6) is Reject.AUTH_STALE


def test_an_older_advert_from_the_same_sender_is_a_replay():
    sender, receiver = auth(), auth()
    old = signed4(sender, NOW)
    new = signed4(sender, NOW + 1)
    assert receiver.verify(*new, SRC4, wall=NOW + 1) is None
    assert receiver.verify(*old, SRC4, wall=NOW + 1) is Reject.AUTH_REPLAY


def test_adverts_signed_within_one_clock_tick_still_grow():
    sender, receiver = auth(), auth()
    for _ in range(3):
        assert receiver.verify(*signed4(sender, NOW), SRC4, wall=NOW) is None


def test_one_signed_advert_copied_to_two_peers_verifies_at_each():
    pdu, trailer = signed4(auth(), NOW)
    assert auth().verify(pdu, trailer, SRC4, wall=NOW) is None
    assert auth().verify(pdu, trailer, SRC4, wall=NOW) is None


def test_receive_only_sends_no_trailer():
    assert auth(mode=AuthMode.RECEIVE_ONLY).sign(encode(advert4(), SRC4, MCAST_V4), SRC4, NOW) == b""


def test_the_active_key_signs_and_every_configured_key_verifies():
    both = ((1, KEY), (2, OTHER_KEY))
    by_key_2 = auth(keys=both, active=2)
    pdu, trailer = signed4(by_key_2, NOW)
    assert trailer[1] == 2
    assert auth(keys=both, active=1).verify(pdu, trailer, SRC4, wall=NOW) is None
    assert auth(keys=((1, KEY),)).verify(pdu, trailer, SRC4, wall=NOW) is Reject.AUTH_UNKNOWN_KEY


# --- per-sender state ----------------------------------------------------------------------


def test_unicast_keeps_replay_state_for_configured_peers_only():
    a = auth(peers=(PEER,))
    pdu, trailer = signed4(auth(), NOW, src=SRC4)
    assert a.verify(pdu, trailer, SRC4, wall=NOW) is Reject.UNKNOWN_PEER
    pdu, trailer = signed4(auth(), NOW, src=PEER)
    assert a.verify(pdu, trailer, PEER, wall=NOW) is None


def test_multicast_slots_are_filled_only_after_the_hmac_verifies():
    a = auth()
    for i in range(10):
        forged = signed4(auth(keys=((1, OTHER_KEY),)), NOW, src=ip(f"198.51.100.{100 + i}"))
        assert a.verify(*forged, ip(f"198.51.100.{100 + i}"), wall=NOW) is Reject.AUTH_BAD_HMAC
    assert a.replay_senders() == ()
    assert a.verify(*signed4(auth(), NOW), SRC4, wall=NOW) is None
    assert a.replay_senders() == (SRC4,)


def test_multicast_evicts_the_least_recently_used_sender():
    a = auth()
    senders = [ip(f"198.51.100.{100 + i}") for i in range(MCAST_SENDERS + 1)]
    signer = auth()
    for s in senders:
        assert a.verify(*signed4(signer, NOW, src=s), s, wall=NOW) is None
    assert a.replay_senders() == tuple(senders[1:])


# --- clocks ---------------------------------------------------------------------------------


def test_default_window_is_three_intervals_at_least_five_seconds_at_most_300():
    assert default_window(0.01) == 5 and default_window(1) == 5
    assert default_window(2) == 6 and default_window(40.95) == 123 and default_window(255) == 300


def test_sender_sequence_is_max_of_clock_and_last_plus_one():
    a = auth()
    first = a.next_seq(NOW)
    assert a.next_seq(NOW) == first + 1              # same tick
    assert a.next_seq(NOW + 1) == clock_seq(NOW + 1)  # the clock moved on


def test_sender_clock_stepped_back_within_the_window_keeps_growing():
    a = auth(window=5)
    ahead = a.next_seq(NOW)
    assert a.next_seq(NOW - 3) == ahead + 1


def test_sender_clock_stepped_back_beyond_the_window_restarts_from_the_clock():
    a = auth(window=5)
    a.next_seq(NOW + 3600)
    assert a.next_seq(NOW) == clock_seq(NOW)


def test_monotonic_sender_keeps_strict_growth_after_a_clock_step():
    a = auth(anti=AntiReplay.MONOTONIC)
    ahead = a.next_seq(NOW + 3600)
    assert a.next_seq(NOW) == ahead + 1


def test_receiver_recovers_from_a_peer_clock_step_back_beyond_the_window():
    # The peer ran an hour ahead, then its clock was corrected: its mark expires.
    receiver = auth(anti=AntiReplay.TIME, window=5)
    assert receiver.verify(*signed4(auth(), NOW), SRC4, wall=NOW) is None
    later = NOW + 3600                   # the receiver's clock caught up much later
    assert receiver.verify(*signed4(auth(), later), SRC4, wall=later) is None


def test_receiver_clock_step_within_the_window_still_accepts_and_still_rejects_replays():
    sender, receiver = auth(window=5), auth(window=5)
    first = signed4(sender, NOW)
    assert receiver.verify(*first, SRC4, wall=NOW) is None
    second = signed4(sender, NOW + 1)
    assert receiver.verify(*second, SRC4, wall=NOW - 3) is None      # our clock stepped back 4 s
    assert receiver.verify(*first, SRC4, wall=NOW - 3) is Reject.AUTH_REPLAY


def test_receiver_clock_step_beyond_the_window_rejects_as_stale():
    pdu, trailer = signed4(auth(window=5), NOW)
    assert auth(window=5).verify(pdu, trailer, SRC4, wall=NOW + 7) is Reject.AUTH_STALE
    assert auth(window=5).verify(pdu, trailer, SRC4, wall=NOW - 7) is Reject.AUTH_STALE


def test_monotonic_mode_keeps_its_mark_and_ignores_the_timestamp():
    receiver = auth(anti=AntiReplay.MONOTONIC)
    sender = auth(anti=AntiReplay.MONOTONIC)
    ahead = signed4(sender, NOW + 7200)
    assert receiver.verify(*ahead, SRC4, wall=NOW) is None
    assert receiver.verify(*signed4(auth(anti=AntiReplay.MONOTONIC), NOW), SRC4, wall=NOW) \
        is Reject.AUTH_REPLAY


def test_serial_arithmetic_orders_across_the_64_bit_wrap():
    assert seq_after(0, (1 << 64) - 1)
    assert not seq_after((1 << 64) - 1, 0)
    assert not seq_after(5, 5)


def test_reconfigured_state_keeps_the_send_sequence_and_the_replay_marks():
    sender, receiver = auth(), auth()
    pdu, trailer = signed4(sender, NOW)
    assert receiver.verify(pdu, trailer, SRC4, wall=NOW) is None
    both = settings(keys=((1, KEY), (2, OTHER_KEY)), active=2)
    receiver2 = receiver.reconfigured(both, advert_interval=1.0)
    assert receiver2.verify(pdu, trailer, SRC4, wall=NOW) is Reject.AUTH_REPLAY
    sender2 = sender.reconfigured(both, advert_interval=1.0)
    assert sender2.next_seq(NOW) > sender.send_seq - 1


def test_secret_never_appears_in_the_settings_repr():
    assert KEY.hex() not in repr(settings()) and repr(KEY) not in repr(settings())


def test_decode_and_verify_never_raise_and_accept_nothing_but_the_genuine_advert():
    import random

    rng = random.Random(1982)
    sender = auth()
    seeds = []
    for prio in (0, 100, 254):
        pdu, trailer = signed4(sender, NOW, priority=prio)
        seeds.append(encode(advert4(prio), SRC4, MCAST_V4, trailer))
    for i in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data) + 1)]
        out = decode(bytes(data), src=SRC4, dst=MCAST_V4, ttl=255, family=4, trailer_len=TRAILER_LEN)
        assert isinstance(out, (Advert, Reject))
        if isinstance(out, Advert):
            pdu = bytes(data[: len(data) - len(out.trailer)])
            verdict = auth().verify(pdu, out.trailer or None, SRC4, wall=NOW)
            assert verdict is None or isinstance(verdict, Reject)
            if verdict is None:
                # Only an untouched PDU and signature pass (the checksum field aside).
                assert any(bytes(data[:6]) + bytes(data[8:]) == s[:6] + s[8:] for s in seeds)
    # Trailers of any length straight into verify: malformed, never an exception.
    for n in (0, 1, 27, 29, 100):
        assert auth().verify(b"\x31" * 12, b"\x01" * n, SRC4, wall=NOW) in (Reject.AUTH_MALFORMED,
                                                                            Reject.AUTH_MISSING)


def test_vrrpv2_signed_advert_round_trips_with_the_trailer_after_the_auth_data():
    adv = Advert(version=2, vrid=51, priority=200, max_advert_int=1.0, addresses=(ip("192.0.2.100"),), family=4)
    a = AdvertAuth(settings(), family=4, version=2, vrid=51, advert_interval=1.0)
    pdu = encode(adv, SRC4, MCAST_V4)
    wire = encode(adv, SRC4, MCAST_V4, a.sign(pdu, SRC4, NOW))
    assert len(wire) == 8 + 4 + 8 + TRAILER_LEN and wire[:20] == pdu     # v2 checksum: the PDU only
    out = decode(wire, src=SRC4, dst=MCAST_V4, ttl=255, family=4, trailer_len=TRAILER_LEN)
    assert out == adv and len(out.trailer) == TRAILER_LEN
    receiver = AdvertAuth(settings(), family=4, version=2, vrid=51, advert_interval=1.0)
    assert receiver.verify(wire[:20], out.trailer, SRC4, wall=NOW) is None
