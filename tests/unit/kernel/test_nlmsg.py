"""The netlink framing every kernel/ module shares: headers and attributes byte for byte
against pyroute2's encoder, damaged datagrams, acknowledgements with and without the
kernel's extended message (netlink(7))."""

from __future__ import annotations

import errno
import struct

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, nlmsg as pyroute2_nlmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from hadirector.kernel import nlmsg
from hadirector.kernel.ipvs import _ext_ack_message


def error_message(seq: int, code: int, flags: int = 0, tlvs: bytes = b"") -> bytes:
    """An NLMSG_ERROR as the kernel sends it: the errno, the request's header (capped:
    no payload echoed), then the extended-ack TLVs."""
    body = struct.pack("=i", -code) + nlmsg.HEADER.pack(36, 20, 0, seq, 0) + tlvs
    return nlmsg.HEADER.pack(nlmsg.HEADER.size + len(body), nlmsg.NLMSG_ERROR, flags, seq, 0) + body


def done_message(seq: int) -> bytes:
    return nlmsg.message(nlmsg.NLMSG_DONE, 0, seq, struct.pack("=i", 0))


def test_a_message_and_its_attributes_match_pyroute2s_encoding():
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = 2, 24, 3
    msg["attrs"] = [("IFA_LABEL", "eth0:v51")]      # 9 bytes + NUL: padded to 4
    msg["header"]["type"], msg["header"]["flags"] = 20, NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"], msg["header"]["pid"] = 7, 0
    msg.encode()
    body = struct.pack("=BBBBI", 2, 24, 0, 0, 3) + nlmsg.attr(3, b"eth0:v51\0")
    assert nlmsg.message(20, NLM_F_REQUEST | NLM_F_ACK, 7, body) == bytes(msg.data)


def test_messages_walks_a_datagram_in_order_with_each_payloads_bounds():
    first = nlmsg.message(16, nlmsg.NLM_F_MULTI, 5, b"abc")      # 19 bytes: the next starts at 20
    data = first + b"\0" + done_message(5)
    assert list(nlmsg.messages(data)) == [
        (16, nlmsg.NLM_F_MULTI, 5, 0, 16, 19),
        (nlmsg.NLMSG_DONE, 0, 5, 0, 36, 40),
    ]
    assert data[16:19] == b"abc"


@pytest.mark.parametrize("damage", ["header_cut", "length_past_the_end", "length_below_the_header"])
def test_a_damaged_message_ends_the_datagram_with_an_overrun_mark(damage):
    good = done_message(5)
    data = {"header_cut": good + good[:10],          # only the datagram's end can cut one
            "length_past_the_end": good + struct.pack("=I", 200) + good[4:] + good,
            "length_below_the_header": good + struct.pack("=I", 8) + good[4:] + good}[damage]
    kinds = [m[0] for m in nlmsg.messages(data)]
    assert kinds == [nlmsg.NLMSG_DONE, nlmsg.NLMSG_OVERRUN]
    assert list(nlmsg.messages(b"")) == []


def test_attributes_keep_the_first_of_a_type_mask_the_flags_and_stop_at_damage():
    data = nlmsg.attr(1, b"one") + nlmsg.attr(1, b"again") + nlmsg.attr(0x8002, b"nested")
    assert nlmsg.attributes(data, 0, len(data)) == {1: b"one", 0x8002: b"nested"}
    assert nlmsg.attributes(data, 0, len(data), nlmsg.NLA_TYPE_MASK) == {1: b"one", 2: b"nested"}
    cut = data + struct.pack("=HH", 40, 5) + b"short"
    assert nlmsg.attributes(cut, 0, len(cut)) == {1: b"one", 0x8002: b"nested"}


def test_the_error_of_an_acknowledgement_and_of_a_payload_too_short_to_hold_one():
    ack = error_message(5, errno.EEXIST)
    (_, _, _, _, body, end), = nlmsg.messages(ack)
    assert nlmsg.error(ack, body, end) == errno.EEXIST
    assert nlmsg.error(ack, body, body + 3) is None


def test_ack_errno_and_dump_ended_find_the_answer_to_our_request_only():
    assert nlmsg.ack_errno(error_message(4, errno.EPERM) + error_message(5, 0), 5) == 0
    with pytest.raises(OSError) as e:
        nlmsg.ack_errno(error_message(4, 0), 5)
    assert e.value.errno == errno.EPROTO
    assert not nlmsg.dump_ended(done_message(4), 5)
    assert nlmsg.dump_ended(nlmsg.message(16, 0, 5, b"") + done_message(5), 5)
    with pytest.raises(OSError) as e:
        nlmsg.dump_ended(error_message(5, errno.EBUSY), 5)
    assert e.value.errno == errno.EBUSY


def test_the_kernels_extended_ack_message_is_read_from_a_capped_error():
    tlvs = nlmsg.attr(1, b"Invalid scheduler\0") + nlmsg.attr(2, struct.pack("=I", 24))
    data = error_message(5, errno.EINVAL, nlmsg.NLM_F_CAPPED | nlmsg.NLM_F_ACK_TLVS, tlvs)
    (_, flags, _, _, body, end), = nlmsg.messages(data)
    assert _ext_ack_message(data, body, end, flags) == "Invalid scheduler"
    assert _ext_ack_message(data, body, body + 8, flags) == ""        # cut inside the echoed header


def test_pyroute2_reads_our_header_as_its_own():
    data = nlmsg.message(20, NLM_F_REQUEST, 9, b"")
    msg = pyroute2_nlmsg(data)
    msg.decode()
    assert (msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"]) == (20, 1, 9)
