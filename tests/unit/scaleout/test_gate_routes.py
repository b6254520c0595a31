"""The gate route messages (kernel/gate_routes.py) byte for byte as iproute2 would build
them, and the dump parser on a message built the same way."""

from __future__ import annotations

import ipaddress
import socket
import struct

from hadirector.kernel import rtnl
from hadirector.kernel.gate_routes import (
    RT_SCOPE_LINK, RTM_DELROUTE, RTM_NEWROUTE, getroute_dump_request, parse_routes, route_message,
)

VIP = ipaddress.ip_address("10.100.0.1")


def test_an_announce_is_a_host_route_on_lo_in_the_agents_table_with_its_protocol():
    msg = route_message(RTM_NEWROUTE, 7, VIP, table=201, proto=201, oif=1)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), RTM_NEWROUTE, 7)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    family, dst_len, _, _, table, proto, scope, rtype, _ = struct.unpack_from("=BBBBBBBBI", msg, 16)
    assert (family, dst_len, table, proto, scope, rtype) == (socket.AF_INET, 32, 201, 201, RT_SCOPE_LINK, 1)
    assert rtnl._attr(1, VIP.packed) in msg and rtnl._attr(15, struct.pack("=I", 201)) in msg


def test_a_table_id_past_255_goes_in_rta_table_only_and_a_withdraw_asks_no_create():
    msg = route_message(RTM_DELROUTE, 8, ipaddress.ip_address("2001:db8::1"), table=70000, proto=201, oif=1)
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", msg)
    assert kind == RTM_DELROUTE and flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    family, dst_len, _, _, table, *_ = struct.unpack_from("=BBBBBBBBI", msg, 16)
    assert (family, dst_len, table) == (socket.AF_INET6, 128, 0)
    assert rtnl._attr(15, struct.pack("=I", 70000)) in msg


def test_the_dump_parser_reads_back_what_the_codec_wrote_as_a_kernel_reply():
    msg = bytearray(route_message(RTM_NEWROUTE, 9, VIP, table=300, proto=99, oif=1))
    two = bytes(msg) + bytes(route_message(RTM_NEWROUTE, 9, ipaddress.ip_address("10.0.0.2"), 201, 4, 1, 0))
    assert parse_routes(two) == [(socket.AF_INET, 32, 300, 99, RT_SCOPE_LINK, VIP.packed),
                                 (socket.AF_INET, 32, 201, 4, 0, bytes([10, 0, 0, 2]))]
    assert struct.unpack_from("=IHHII", getroute_dump_request(3, socket.AF_INET))[1] == 26
