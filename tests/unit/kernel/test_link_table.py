"""Link tracking's pure parts: the netlink link messages (against pyroute2's encoding)
and ``LinkTable``, which turns broadcasts and resync dumps into changes. The watcher on
a real kernel (flaps, overrun, a replaced socket) is tests/netns/test_link_watcher.py."""

from __future__ import annotations

import errno
import socket

from pyroute2.netlink import NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from hadirector.kernel.addresses import (
    IFF_RUNNING, IFF_UP, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN, RTM_DELLINK, RTM_GETLINK,
    RTM_NEWLINK, DumpFailed, LinkMessage, LinkState, LinkTable, Resynced,
    getlink_dump_request, parse_link_messages,
)

UP = IFF_UP | IFF_RUNNING
NO_CARRIER = IFF_UP
PORT = 4242                      # our socket's netlink port id


def pyroute2_link(kind, index, name, flags, seq=0, pid=0, nl_flags=0) -> bytes:
    msg = ifinfmsg()
    msg["family"], msg["index"], msg["flags"], msg["change"] = socket.AF_UNSPEC, index, flags, 0xFFFFFFFF
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", 1500)] if name else [("IFLA_MTU", 1500)]
    msg["header"]["type"] = kind
    msg["header"]["flags"] = nl_flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data)


def new(name, index=2, flags=UP, seq=0, portid=0, nl_flags=0):
    return LinkMessage(RTM_NEWLINK, seq, portid, nl_flags, index, name, flags)


def dump(seq, *links, intr=False):
    """A dump's replies (``(name, index, flags)``) and its NLMSG_DONE."""
    nl = NLM_F_MULTI | (NLM_F_DUMP_INTR if intr else 0)
    return [new(n, i, f, seq=seq, portid=PORT, nl_flags=nl) for n, i, f in links] + [
        LinkMessage(NLMSG_DONE, seq, PORT, NLM_F_MULTI)]


def started(names=("eth0",), *links):
    """A table whose first dump found ``links``."""
    t = LinkTable(set(names))
    assert t.wants_dump
    t.begin_dump(1, PORT)
    t.feed(dump(1, *links))
    return t


# --- messages ---------------------------------------------------------------------------


def test_broadcasts_decoded_as_pyroute2_encodes_them_several_per_datagram():
    data = (pyroute2_link(RTM_NEWLINK, 2, "eth0", UP)
            + pyroute2_link(RTM_NEWLINK, 3, "eth1", NO_CARRIER)
            + pyroute2_link(RTM_DELLINK, 4, "veth9", 0))
    assert parse_link_messages(data) == [
        LinkMessage(RTM_NEWLINK, 0, 0, 0, 2, "eth0", UP),
        LinkMessage(RTM_NEWLINK, 0, 0, 0, 3, "eth1", NO_CARRIER),
        LinkMessage(RTM_DELLINK, 0, 0, 0, 4, "veth9", 0),
    ]


def test_dump_request_is_an_rtm_getlink_dump_as_pyroute2_encodes_it():
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["header"]["type"] = RTM_GETLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 77
    msg["header"]["pid"] = 0
    msg.encode()
    assert getlink_dump_request(77) == bytes(msg.data)


def test_a_truncated_or_malformed_datagram_yields_what_precedes_the_damage_and_a_loss_mark():
    good = pyroute2_link(RTM_NEWLINK, 2, "eth0", UP)
    lost = LinkMessage(NLMSG_OVERRUN, 0, 0)
    assert parse_link_messages(good + good[:20]) == parse_link_messages(good) + [lost]
    assert parse_link_messages(good + good[:8]) == parse_link_messages(good) + [lost]
    bad_length = bytearray(good)
    bad_length[0:4] = (4).to_bytes(4, "little")        # shorter than a header
    assert parse_link_messages(bytes(bad_length) + good) == [lost]
    assert parse_link_messages(b"") == []


def test_a_link_without_a_name_attribute_has_name_none():
    assert parse_link_messages(pyroute2_link(RTM_NEWLINK, 5, None, UP))[0].name is None


def test_nlmsg_error_carries_a_positive_errno():
    import struct
    body = struct.pack("=i", -errno.EBUSY) + getlink_dump_request(9)[:16]
    data = struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, 9, PORT) + body
    assert parse_link_messages(data) == [LinkMessage(NLMSG_ERROR, 9, PORT, 0, error=errno.EBUSY)]


# --- the table ------------------------------------------------------------------------


def test_first_dump_reports_every_watched_link_and_ignores_others():
    t = LinkTable({"eth0", "eth1"})
    t.begin_dump(1, PORT)
    out = t.feed(dump(1, ("lo", 1, UP), ("eth0", 2, UP), ("eth1", 3, NO_CARRIER)))
    assert out == [LinkState("eth0", 2, up=True), LinkState("eth1", 3, up=False),
                   Resynced("subscribed", 2)]
    assert not t.wants_dump


def test_only_changes_are_reported_however_many_messages_say_the_same():
    t = started(("eth0",), ("eth0", 2, UP))
    assert t.feed([new("eth0"), new("eth0")]) == []
    assert t.feed([new("eth0", flags=NO_CARRIER), new("eth0", flags=0)]) == [LinkState("eth0", 2, up=False)]
    assert t.feed([new("eth0", flags=UP)]) == [LinkState("eth0", 2, up=True)]


def test_link_needs_admin_up_and_carrier_to_be_up():
    t = started(("eth0",), ("eth0", 2, UP))
    assert t.feed([new("eth0", flags=IFF_RUNNING)]) == [LinkState("eth0", 2, up=False)]


def test_deleted_link_is_reported_gone_and_a_new_one_with_the_name_is_followed():
    t = started(("eth0",), ("eth0", 2, UP))
    assert t.feed([LinkMessage(RTM_DELLINK, 0, 0, 0, 2, "eth0", 0)]) == [
        LinkState("eth0", 2, up=False, exists=False)]
    assert t.feed([new("eth0", index=9)]) == [LinkState("eth0", 9, up=True)]


def test_a_watched_link_renamed_away_is_gone():
    t = started(("eth0",), ("eth0", 2, UP))
    assert t.feed([new("wan0", index=2)]) == [LinkState("eth0", 2, up=False, exists=False)]
    assert t.feed([new("wan0", index=2, flags=0)]) == []


def test_overrun_asks_for_a_dump_whose_result_reports_only_what_differs():
    t = started(("eth0", "eth1"), ("eth0", 2, UP), ("eth1", 3, UP))
    t.overrun()
    assert t.wants_dump and t.overruns == 1
    t.begin_dump(2, PORT)
    assert not t.wants_dump
    out = t.feed(dump(2, ("eth0", 2, UP), ("eth1", 3, NO_CARRIER)))
    assert out == [LinkState("eth1", 3, up=False), Resynced("overrun", 1)]
    assert t.resyncs == 2


def test_a_watched_name_missing_from_the_dump_is_gone():
    t = started(("eth0", "eth1"), ("eth0", 2, UP), ("eth1", 3, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    assert t.feed(dump(2, ("eth0", 2, UP))) == [
        LinkState("eth1", 0, up=False, exists=False), Resynced("overrun", 1)]


def test_broadcasts_during_a_dump_apply_in_order_and_count_as_seen():
    # eth1 is created after its place in the dump went by: its broadcast, read between
    # two dump messages, must not be undone by the dump's end ("not in the dump").
    t = started(("eth0", "eth1"), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    replies = dump(2, ("eth0", 2, UP))
    out = t.feed([replies[0], new("eth1", index=3), new("eth0", flags=NO_CARRIER), replies[1]])
    assert out == [LinkState("eth1", 3, up=True), LinkState("eth0", 2, up=False), Resynced("overrun", 2)]


def test_an_overrun_during_a_dump_asks_for_another_when_it_ends():
    t = started(("eth0",), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    t.overrun()                     # the kernel refuses a second dump while one runs
    assert not t.wants_dump
    t.feed(dump(2, ("eth0", 2, UP)))
    assert t.wants_dump


def test_an_interrupted_dump_is_done_again():
    t = started(("eth0",), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    t.feed(dump(2, ("eth0", 2, UP), intr=True))
    assert t.wants_dump
    t.begin_dump(3, PORT)
    assert t.feed(dump(3, ("eth0", 2, UP))) == [Resynced("dump_interrupted", 0)]


def test_done_of_someone_elses_dump_is_ignored():
    t = started(("eth0",), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    assert t.feed([LinkMessage(NLMSG_DONE, 2, PORT + 1, NLM_F_MULTI),
                   LinkMessage(NLMSG_DONE, 1, PORT, NLM_F_MULTI)]) == []
    assert t.dump_seq == 2


def test_a_refused_dump_is_reported_and_wanted_again():
    t = started(("eth0",), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    out = t.feed([LinkMessage(NLMSG_ERROR, 2, PORT, 0, error=errno.EBUSY)])
    assert out == [DumpFailed(errno.EBUSY)]
    assert t.wants_dump


def test_a_new_socket_forgets_its_dump_and_wants_one():
    t = started(("eth0",), ("eth0", 2, UP))
    t.overrun()
    t.begin_dump(2, PORT)
    t.resubscribed()
    assert t.wants_dump and t.dump_seq is None
    t.begin_dump(1, PORT + 1)
    # Only what changed while no socket listened is reported.
    assert t.feed([new("eth0", flags=NO_CARRIER, seq=1, portid=PORT + 1),
                   LinkMessage(NLMSG_DONE, 1, PORT + 1, NLM_F_MULTI)]) == [
        LinkState("eth0", 2, up=False), Resynced("subscribed", 1)]


def test_a_damaged_datagram_counts_as_an_overrun():
    t = started(("eth0",), ("eth0", 2, UP))
    assert t.feed(parse_link_messages(pyroute2_link(RTM_NEWLINK, 2, "eth0", 0)[:30])) == []
    assert t.wants_dump and t.overruns == 1
