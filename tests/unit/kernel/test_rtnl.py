"""The inline VIP add's netlink message, byte for byte against pyroute2's encoding
(the kernel accepting it is tests/netns/test_net_primitives.py)."""

from __future__ import annotations

import errno
import ipaddress
import struct

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

import pytest

from hadirector.kernel.rtnl import NLMSG_ERROR, ack_errno, addr_add_message


def pyroute2_message(seq, family, prefixlen, flags, index, attrs) -> bytes:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["flags"], msg["scope"], msg["index"] = family, prefixlen, flags, 0, index
    msg["attrs"] = attrs
    msg["header"]["type"] = RTM_NEWADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def test_ipv4_vip_with_a_keepalived_style_label_matches_pyroute2():
    vip = ipaddress.ip_interface("10.250.0.100/24")
    ours = addr_add_message(7, 3, vip, label="eth0:v51")
    theirs = pyroute2_message(7, 2, 24, 0, 3, [("IFA_LOCAL", "10.250.0.100"), ("IFA_ADDRESS", "10.250.0.100"),
                                               ("IFA_LABEL", "eth0:v51")])
    assert ours == theirs


def test_ipv6_vip_skips_dad_and_matches_pyroute2():
    vip = ipaddress.ip_interface("fd00::64/128")
    ours = addr_add_message(9, 4, vip, label="ignored-for-v6")
    theirs = pyroute2_message(9, 10, 128, 0x02, 4, [("IFA_LOCAL", "fd00::64"), ("IFA_ADDRESS", "fd00::64")])
    assert ours == theirs


def _error(seq: int, code: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 36, 20, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, seq, 0) + body


def test_the_acknowledgement_for_our_sequence_number_gives_the_errno():
    assert ack_errno(_error(5, 0), 5) == 0
    assert ack_errno(_error(4, errno.EPERM) + _error(5, errno.EEXIST), 5) == errno.EEXIST


def test_a_reply_without_our_acknowledgement_is_a_protocol_error():
    with pytest.raises(OSError) as e:
        ack_errno(_error(4, 0), 5)
    assert e.value.errno == errno.EPROTO


def test_the_start_up_vip_removal_matches_pyroute2s_delete():
    from pyroute2.netlink.rtnl import RTM_DELADDR

    from hadirector.kernel.rtnl import addr_del_message

    for vip, family in ((ipaddress.ip_interface("10.250.0.100/32"), 2),
                        (ipaddress.ip_interface("fd00::64/128"), 10)):
        msg = ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["flags"], msg["scope"], msg["index"] = (
            family, vip.network.prefixlen, 0, 0, 3)
        msg["attrs"] = [("IFA_LOCAL", str(vip.ip)), ("IFA_ADDRESS", str(vip.ip))]
        msg["header"]["type"] = RTM_DELADDR
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        msg["header"]["sequence_number"] = 11
        msg["header"]["pid"] = 0
        msg.encode()
        assert addr_del_message(11, 3, vip) == bytes(msg.data)


@pytest.mark.parametrize("text", ["10.250.0.100/32", "10.250.0.100/24", "10.250.0.100",
                                  "fd00::64/128", "fd00::64/64", "fe80::1"])
def test_the_recorded_prefix_text_builds_the_same_delete_as_the_address_object(text):
    # The start-up release parses the record with inet_pton, before ipaddress is imported.
    from hadirector.kernel.rtnl import addr_del_message, parse_prefix, prefix_del_message

    assert prefix_del_message(11, 3, *parse_prefix(text)) == \
        addr_del_message(11, 3, ipaddress.ip_interface(text))


@pytest.mark.parametrize("text", ["10.0.0.1/33", "fd00::1/129", "10.0.0/32", "nope", "10.0.0.1/x"])
def test_a_damaged_recorded_prefix_is_a_value_error(text):
    from hadirector.kernel.rtnl import parse_prefix

    with pytest.raises(ValueError):
        parse_prefix(text)


# --- the address dump (AddressManager reads it without pyroute2) -----------------------


def _newaddr(seq, family, prefixlen, flags, scope, index, attrs, kind=RTM_NEWADDR) -> bytes:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["flags"], msg["scope"], msg["index"] = family, prefixlen, flags, scope, index
    msg["attrs"] = attrs
    msg["header"]["type"] = kind
    msg["header"]["flags"] = 0x2          # NLM_F_MULTI, as in a dump
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def _done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, 3, 0x2, seq, 0) + struct.pack("=i", 0)


def test_the_dump_request_matches_pyroute2s_getaddr_dump():
    from pyroute2.netlink import NLM_F_DUMP
    from pyroute2.netlink.rtnl import RTM_GETADDR

    from hadirector.kernel.rtnl import getaddr_dump_request

    msg = ifaddrmsg()
    msg["family"] = 10
    msg["header"]["type"] = RTM_GETADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 12
    msg["header"]["pid"] = 0
    msg.encode()
    assert getaddr_dump_request(12, 10) == bytes(msg.data)


def test_dumped_addresses_keep_kernel_order_and_prefer_the_32_bit_flags():
    from hadirector.kernel.rtnl import parse_addresses

    data = (_newaddr(5, 2, 24, 0, 0, 3, [("IFA_ADDRESS", "10.250.0.1"), ("IFA_LOCAL", "10.250.0.1"),
                                         ("IFA_LABEL", "eth0")])
            # a secondary: flags in the 8-bit field only
            + _newaddr(5, 2, 32, 0x01, 0, 3, [("IFA_LOCAL", "10.250.0.100"), ("IFA_LABEL", "eth0:v1")])
            # IFA_FLAGS carries bits above 8 (0x200 noprefixroute) and wins over the header
            + _newaddr(5, 10, 64, 0x80, 253, 3, [("IFA_ADDRESS", "fe80::1"), ("IFA_FLAGS", 0x280)])
            + _done(5))
    got = parse_addresses(data)
    assert got == [
        (3, 2, ipaddress.ip_address("10.250.0.1").packed, 24, 0, 0),
        (3, 2, ipaddress.ip_address("10.250.0.100").packed, 32, 0x01, 0),
        (3, 10, ipaddress.ip_address("fe80::1").packed, 64, 0x280, 253),
    ]


def test_a_point_to_point_address_is_its_peer_as_ip_addr_shows_it():
    from hadirector.kernel.rtnl import parse_addresses

    data = _newaddr(5, 2, 32, 0, 0, 4, [("IFA_LOCAL", "10.0.0.1"), ("IFA_ADDRESS", "10.0.0.2")])
    assert parse_addresses(data)[0][2] == ipaddress.ip_address("10.0.0.2").packed


def test_a_cut_dump_datagram_keeps_the_whole_messages_before_the_cut():
    from hadirector.kernel.rtnl import parse_addresses

    one = _newaddr(5, 2, 24, 0, 0, 3, [("IFA_ADDRESS", "10.250.0.1")])
    two = _newaddr(5, 2, 24, 0, 0, 3, [("IFA_ADDRESS", "10.250.0.2")])
    assert [a[2] for a in parse_addresses(one + two[:-6])] == [ipaddress.ip_address("10.250.0.1").packed]


def test_the_dump_ends_at_our_done_and_a_refusal_is_its_errno():
    from hadirector.kernel.rtnl import dump_ended

    assert not dump_ended(_newaddr(5, 2, 24, 0, 0, 3, [("IFA_ADDRESS", "10.250.0.1")]), 5)
    assert not dump_ended(_done(4), 5)
    assert dump_ended(_newaddr(5, 2, 24, 0, 0, 3, [("IFA_ADDRESS", "10.250.0.1")]) + _done(5), 5)
    with pytest.raises(OSError) as e:
        dump_ended(_error(5, errno.EBUSY), 5)
    assert e.value.errno == errno.EBUSY
