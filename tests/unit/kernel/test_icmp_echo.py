"""ICMP / ICMPv6 echo packets of the ping probe (RFC 792, RFC 4443 4.1-4.2)."""

from __future__ import annotations

import struct

from hadirector.kernel.icmp import echo_request, parse_echo_reply
from hadirector.vrrp.codec import checksum


def test_echo_request_v4_carries_a_valid_checksum():  # RFC 792: checksum over the ICMP message
    pkt = echo_request(4, 0x1234, 7, b"payload!")
    assert pkt[:2] == b"\x08\x00" and struct.unpack("!HH", pkt[4:8]) == (0x1234, 7)
    assert checksum(pkt) == 0


def test_echo_request_v6_leaves_the_checksum_to_the_kernel():  # RFC 4443 2.3: pseudo-header
    pkt = echo_request(6, 1, 2, b"x")
    assert pkt == bytes([128, 0, 0, 0, 0, 1, 0, 2]) + b"x"


def test_echo_reply_is_parsed_from_a_raw_v4_packet_after_its_ip_header():
    icmp = struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7) + b"data"
    ip = bytes([0x46]) + bytes(23)                    # IHL 6: a 24-byte header with options
    assert parse_echo_reply(4, ip + icmp, raw=True) == (0x1234, 7, b"data")
    assert parse_echo_reply(4, icmp, raw=False) == (0x1234, 7, b"data")   # a ping socket's


def test_anything_but_an_echo_reply_is_ignored():
    unreachable = struct.pack("!BBHHH", 3, 1, 0, 0, 0)
    assert parse_echo_reply(4, unreachable, raw=False) is None
    assert parse_echo_reply(6, struct.pack("!BBHHH", 135, 0, 0, 0, 0), raw=True) is None   # NS
    assert parse_echo_reply(6, struct.pack("!BBHHH", 129, 0, 0, 9, 1), raw=True) == (9, 1, b"")
    assert parse_echo_reply(4, b"\x45" + bytes(10), raw=True) is None
    assert parse_echo_reply(4, b"\x00\x00", raw=False) is None
