"""The advert codec: golden vectors (scapy, real keepalived 2.2.7), RFC 5798 7.1 receive
checks, and a fuzz loop proving decode() never raises."""

from __future__ import annotations

import ipaddress
import json
import random
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3

from hadirector.vrrp.codec import (
    AUTH_SIMPLE_TEXT, Advert, IpPacket, Reject, checksum, decode, encode, parse_ip_packet,
)

ip = ipaddress.ip_address
SRC4, DST4 = ip("10.233.0.2"), ip("224.0.0.18")
SRC6, DST6 = ip("fe80::2"), ip("ff02::12")
FIXTURES = Path(__file__).parent / "fixtures"


def v3_ipv4(**kw) -> Advert:
    base = dict(version=3, vrid=51, priority=100, max_advert_int=1.0,
                addresses=(ip("10.233.0.51"), ip("10.233.0.151")), family=4)
    return Advert(**{**base, **kw})


def v3_ipv6(**kw) -> Advert:
    base = dict(version=3, vrid=54, priority=120, max_advert_int=0.35,
                addresses=(ip("fe80::54"), ip("fd00:233::54")), family=6)
    return Advert(**{**base, **kw})


def v2_ipv4(**kw) -> Advert:
    base = dict(version=2, vrid=52, priority=150, max_advert_int=2.0,
                addresses=(ip("10.233.0.52"),), family=4)
    return Advert(**{**base, **kw})


def dec4(payload: bytes, ttl: int | None = 255, **kw):
    return decode(payload, src=SRC4, dst=DST4, ttl=ttl, family=4, **kw)


# --- round trips and scapy golden vectors -------------------------------------------


@pytest.mark.parametrize("adv,src,dst", [
    (v3_ipv4(), SRC4, DST4),
    (v3_ipv4(priority=0, max_advert_int=40.95, addresses=()), SRC4, DST4),
    (v3_ipv4(max_advert_int=0.01), SRC4, ip("10.233.0.3")),      # unicast peer
    (v3_ipv6(), SRC6, DST6),
    (v2_ipv4(), SRC4, DST4),
    (v2_ipv4(auth_type=AUTH_SIMPLE_TEXT, auth_data=b"hunter2"), SRC4, DST4),
    (v2_ipv4(priority=255, max_advert_int=255.0), SRC4, DST4),
], ids=["v3-ipv4", "v3-ipv4-limits", "v3-ipv4-unicast", "v3-ipv6", "v2", "v2-auth", "v2-limits"])
def test_encode_then_decode_round_trips(adv, src, dst):
    payload = encode(adv, src, dst)
    assert decode(payload, src=src, dst=dst, ttl=255, family=adv.family) == adv


def test_v3_ipv4_matches_scapy_bytes_and_decodes_to_the_same_advert():  # RFC 5798 5.1
    pkt = IP(src=str(SRC4), dst=str(DST4), ttl=255) / VRRPv3(
        vrid=51, priority=100, adv=100, addrlist=["10.233.0.51", "10.233.0.151"])
    wire = bytes(pkt)[20:]
    assert encode(v3_ipv4(), SRC4, DST4) == wire
    assert dec4(wire) == v3_ipv4()


def test_v3_ipv6_matches_scapy_bytes_and_decodes_to_the_same_advert():  # RFC 5798 5.1
    pkt = IPv6(src=str(SRC6), dst=str(DST6), hlim=255) / VRRPv3(
        vrid=54, priority=120, adv=35, addrlist=["fe80::54", "fd00:233::54"])
    wire = bytes(pkt)[40:]
    assert encode(v3_ipv6(), SRC6, DST6) == wire
    assert decode(wire, src=SRC6, dst=DST6, ttl=255, family=6) == v3_ipv6()


def test_v2_matches_scapy_bytes_and_decodes_to_the_same_advert():  # RFC 3768 5.1
    pkt = IP(src=str(SRC4), dst=str(DST4), ttl=255) / VRRP(
        vrid=52, priority=150, adv=2, addrlist=["10.233.0.52"])
    wire = bytes(pkt)[20:]
    assert encode(v2_ipv4(), SRC4, DST4) == wire
    assert dec4(wire) == v2_ipv4()


def test_v2_simple_text_auth_matches_scapy():  # RFC 2338 5.3.6.2
    pw = int.from_bytes(b"hunter2\x00", "big")
    pkt = IP(src=str(SRC4), dst=str(DST4), ttl=255) / VRRP(
        vrid=52, priority=150, adv=2, authtype=1, addrlist=["10.233.0.52"],
        auth1=pw >> 32, auth2=pw & 0xFFFFFFFF)
    wire = bytes(pkt)[20:]
    adv = v2_ipv4(auth_type=AUTH_SIMPLE_TEXT, auth_data=b"hunter2")
    assert encode(adv, SRC4, DST4) == wire
    assert dec4(wire) == adv
    assert dec4(wire, auth=b"hunter2") == adv
    assert dec4(wire, auth=b"hunter3") is Reject.AUTH_MISMATCH


def test_v3_checksum_covers_the_pseudo_header():  # RFC 5798 5.2.8
    payload = encode(v3_ipv4(), SRC4, DST4)
    assert decode(payload, src=SRC4, dst=ip("10.233.0.9"), ttl=255, family=4) is Reject.BAD_CHECKSUM
    assert decode(payload, src=ip("10.233.0.9"), dst=DST4, ttl=255, family=4) is Reject.BAD_CHECKSUM


def test_v2_checksum_covers_the_message_only():  # RFC 3768 5.3.8
    payload = encode(v2_ipv4(), SRC4, DST4)
    assert checksum(payload) == 0
    assert decode(payload, src=ip("10.233.0.9"), dst=ip("10.233.0.10"), ttl=255, family=4) == v2_ipv4()


def test_encode_refuses_adverts_no_wire_format_can_carry():
    with pytest.raises(ValueError):
        encode(v2_ipv4(max_advert_int=1.5), SRC4, DST4)     # v2 is whole seconds
    with pytest.raises(ValueError):
        encode(v3_ipv4(max_advert_int=41.0), SRC4, DST4)    # 12 bits of centiseconds
    with pytest.raises(ValueError):
        encode(v3_ipv4(), None, None)                        # v3 needs the pseudo-header
    with pytest.raises(ValueError):
        encode(v2_ipv4(family=6, addresses=(ip("fd00::1"),)))  # v2 is IPv4 only
    with pytest.raises(ValueError):
        encode(v3_ipv4(addresses=(ip("fd00::1"),)), SRC4, DST4)  # family mismatch


# --- packets captured from keepalived 2.2.7 (fixtures/capture_keepalived.sh) -----------

KEEPALIVED = [json.loads(line) for line in (FIXTURES / "keepalived-2.2.7.jsonl").read_text().splitlines()]
EXPECTED = {   # the instances configured in capture_keepalived.sh
    "V2": dict(version=2, vrid=51, max_advert_int=1.0, family=4,
               addresses=(ip("10.233.0.51"), ip("10.233.0.151"))),
    "V2AUTH": dict(version=2, vrid=52, max_advert_int=2.0, family=4, addresses=(ip("10.233.0.52"),),
                   auth_type=AUTH_SIMPLE_TEXT, auth_data=b"hunter2"),
    "V3": dict(version=3, vrid=53, max_advert_int=0.5, family=4, addresses=(ip("10.233.0.53"),)),
    "V3V6": dict(version=3, vrid=54, max_advert_int=1.0, family=6,
                 addresses=(ip("fe80::54"), ip("fd00:233::54"))),
}


def split_captured(raw: bytes):
    """IPv4 goes through parse_ip_packet as from a raw socket; IPv6 sockets return only
    the payload, with the hop limit as ancillary data."""
    if raw[0] >> 4 == 4:
        pkt = parse_ip_packet(raw)
        assert isinstance(pkt, IpPacket)
        return pkt.src, pkt.dst, pkt.ttl, pkt.payload, 4
    return ipaddress.IPv6Address(raw[8:24]), ipaddress.IPv6Address(raw[24:40]), raw[7], raw[40:], 6


def test_fixtures_cover_every_captured_kind():
    kinds = {(p["instance"], p["priority"] == 0) for p in KEEPALIVED}
    assert kinds == {(name, zero) for name in EXPECTED for zero in (False, True)}


@pytest.mark.parametrize("captured", KEEPALIVED,
                         ids=[f"{p['instance']}-prio{p['priority']}" for p in KEEPALIVED])
def test_keepalived_adverts_decode_and_reencode_byte_for_byte(captured):
    src, dst, ttl, payload, family = split_captured(bytes.fromhex(captured["ip_hex"]))
    adv = decode(payload, src=src, dst=dst, ttl=ttl, family=family)
    assert adv == Advert(priority=captured["priority"], **EXPECTED[captured["instance"]])
    assert encode(adv, src, dst) == payload


# --- RFC 5798 7.1 receive checks --------------------------------------------------------


def test_rejects_ttl_other_than_255():  # RFC 5798 7.1
    payload = encode(v3_ipv4(), SRC4, DST4)
    assert dec4(payload, ttl=254) is Reject.BAD_TTL
    assert dec4(payload, ttl=1) is Reject.BAD_TTL
    assert dec4(payload, ttl=None) == v3_ipv4()   # caller could not learn it


def test_rejects_unknown_version():  # RFC 5798 7.1
    payload = bytearray(encode(v3_ipv4(), SRC4, DST4))
    payload[0] = 0x41
    assert dec4(bytes(payload)) is Reject.BAD_VERSION


def test_rejects_v2_over_ipv6():  # RFC 3768 is IPv4 only
    payload = encode(v2_ipv4(), SRC4, DST4)
    assert decode(payload, src=SRC6, dst=DST6, ttl=255, family=6) is Reject.BAD_VERSION


def test_rejects_type_other_than_advertisement():  # RFC 5798 5.2.2
    payload = bytearray(encode(v3_ipv4(), SRC4, DST4))
    payload[0] = 0x32
    assert dec4(bytes(payload)) is Reject.BAD_TYPE


def test_rejects_bad_checksum():  # RFC 5798 7.1
    payload = bytearray(encode(v3_ipv4(), SRC4, DST4))
    payload[2] ^= 0x01     # priority changed in flight
    assert dec4(bytes(payload)) is Reject.BAD_CHECKSUM
    v2 = bytearray(encode(v2_ipv4(), SRC4, DST4))
    v2[-1] ^= 0x80
    assert dec4(bytes(v2)) is Reject.BAD_CHECKSUM


def test_rejects_truncated_packets():  # RFC 5798 7.1 "complete VRRP packet"
    payload = encode(v3_ipv4(), SRC4, DST4)
    for n in range(len(payload)):
        assert dec4(payload[:n]) is Reject.TRUNCATED, n


def test_rejects_count_inconsistent_with_length():  # RFC 5798 5.2.5
    payload = bytearray(encode(v3_ipv4(), SRC4, DST4))
    payload[3] = 3         # claims three addresses, carries two
    assert dec4(bytes(payload)) is Reject.TRUNCATED
    payload[3] = 1         # claims one, carries two
    assert dec4(bytes(payload)) is Reject.BAD_LENGTH
    assert dec4(encode(v3_ipv4(), SRC4, DST4) + b"\x00\x00\x00\x00") is Reject.BAD_LENGTH


def test_rejects_zero_advert_interval():
    def with_interval_zero(p: bytes) -> bytes:
        body = p[:4] + b"\x00\x00" + b"\x00\x00" + p[8:]
        return body[:6] + struct.pack("!H", checksum(_pseudo(body))) + body[8:]

    def _pseudo(body: bytes) -> bytes:
        return SRC4.packed + DST4.packed + struct.pack("!BBH", 0, 112, len(body)) + body

    assert dec4(with_interval_zero(encode(v3_ipv4(), SRC4, DST4))) is Reject.BAD_INTERVAL


def test_rejects_v2_ipsec_ah_auth_type():  # RFC 3768 removed type 2
    payload = bytearray(encode(v2_ipv4(), SRC4, DST4))
    payload[4] = 2
    payload[6:8] = b"\x00\x00"
    payload[6:8] = struct.pack("!H", checksum(bytes(payload)))
    assert dec4(bytes(payload)) is Reject.BAD_AUTH_TYPE


def test_decode_never_raises_on_random_or_mutated_bytes():
    rng = random.Random(5798)
    seeds = [encode(v3_ipv4(), SRC4, DST4), encode(v2_ipv4(), SRC4, DST4),
             encode(v3_ipv6(), SRC6, DST6)]
    for i in range(3000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(len(data) + 1)])
        family = rng.choice((4, 6))
        src, dst = (SRC4, DST4) if family == 4 else (SRC6, DST6)
        out = decode(data, src=src, dst=dst, ttl=rng.choice((255, 64, None)), family=family)
        assert isinstance(out, (Advert, Reject))
        assert isinstance(parse_ip_packet(data), (IpPacket, Reject))
    # nonsense arguments too: the contract is "never raises"
    assert isinstance(decode(b"\x31" * 12, src=None, dst=None, ttl=255, family=4), Reject)
    assert isinstance(decode(None, src=SRC4, dst=DST4, ttl=255, family=4), Reject)
    assert isinstance(parse_ip_packet(None), Reject)


# --- IPv4 header parsing -------------------------------------------------------------------


def test_parse_ip_packet_skips_options_and_trailing_padding():
    payload = encode(v3_ipv4(), SRC4, DST4)
    pkt = IP(src=str(SRC4), dst=str(DST4), ttl=255, proto=112,
             options=[b"\x94\x04\x00\x00"]) / payload    # Router Alert, IHL = 6
    raw = bytes(pkt) + b"\x00" * 6                        # Ethernet minimum-size padding
    assert raw[0] & 0x0F == 6
    assert parse_ip_packet(raw) == IpPacket(SRC4, DST4, 255, payload)


def test_parse_ip_packet_rejects_what_is_not_vrrp_over_ipv4():
    payload = encode(v3_ipv4(), SRC4, DST4)
    good = bytes(IP(src=str(SRC4), dst=str(DST4), ttl=255, proto=112) / payload)
    assert parse_ip_packet(good[:19]) is Reject.TRUNCATED
    assert parse_ip_packet(b"\x60" + good[1:]) is Reject.BAD_IP_HEADER      # IPv6
    assert parse_ip_packet(b"\x44" + good[1:]) is Reject.BAD_IP_HEADER      # IHL 4
    assert parse_ip_packet(good[:-1]) is Reject.BAD_LENGTH                  # total > data
    assert parse_ip_packet(bytes(IP(proto=17) / payload)) is Reject.BAD_PROTOCOL
