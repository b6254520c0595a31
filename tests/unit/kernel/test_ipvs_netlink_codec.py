"""The netlink encoding, checked on the host (no IPVS needed): what we encode decodes to
the same entry, with the kernel's byte layouts (ip_vs_ctl.c ip_vs_genl_parse_*)."""

import errno
import os
import struct

import pytest
from hadirector.ipvs import planner
from hadirector.ipvs.backend import IpvsUnavailable
from hadirector.kernel.ipvs import (
    IPVS_SCHEMA, GenlSocket, IpvsMsg, IpvsNetlink, decode_dest, decode_reply, decode_service, encode_request,
    op_request,
)
from hadirector.ipvs.table import (
    FWD_TUNNEL, SVC_F_PERSISTENT, SVC_F_SCHED2, TUN_FLAG_REMCSUM, TUN_GUE, DestEntry, DestKey, ServiceEntry,
    ServiceKey,
)


def roundtrip(op):
    """Encode with our struct codec, decode with it: (command, attributes)."""
    cmd, attrs = op_request(op)
    data = encode_request(42, cmd, attrs, 5, 1)
    return cmd, decode_reply(data)


def pyroute2_encoding(op) -> bytes:
    cmd, attrs = op_request(op)
    m = IpvsMsg()
    m["cmd"], m["version"], m["attrs"] = cmd, 1, attrs
    m["header"]["type"], m["header"]["flags"], m["header"]["sequence_number"] = 42, 5, 1
    m.encode()
    return bytes(m.data)


OPS = [
    planner.AddService(ServiceEntry(ServiceKey.inet("tcp", "10.244.0.100", 80), "rr")),
    planner.EditService(ServiceEntry(ServiceKey.inet("udp", "fd00:244::100", 53), "sh", 0x11, 300, 64)),
    planner.DelService(ServiceKey.mark(6, 8)),
    planner.AddDest(ServiceKey.mark(4, 7), DestEntry(DestKey("10.244.1.1", 0), 4, 3, 5, 10, 2)),
    planner.EditDest(ServiceKey.inet("tcp", "10.244.0.1", 8000),
                     DestEntry(DestKey("fd00:244::9", 8000), 6, FWD_TUNNEL, 3, 100, 10, TUN_GUE, 6080, TUN_FLAG_REMCSUM)),
    planner.DelDest(ServiceKey.inet("sctp", "10.244.0.1", 3868), DestKey("10.244.1.3", 3868), 4),
]


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_struct_codec_writes_the_bytes_pyroute2_writes(op):
    cmd, attrs = op_request(op)
    assert encode_request(42, cmd, attrs, 5, 1) == pyroute2_encoding(op)


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_struct_codec_reads_what_pyroute2_reads(op):
    ours = decode_reply(pyroute2_encoding(op))
    theirs = IpvsMsg(pyroute2_encoding(op))
    theirs.decode()
    for top in ("IPVS_CMD_ATTR_SERVICE", "IPVS_CMD_ATTR_DEST"):
        t = theirs.get_attr(top)
        if t is None:
            assert top not in ours
            continue
        assert {k: v for k, v in ours[top].items()} == {k: v for k, v in t["attrs"]}


@pytest.mark.parametrize("entry", [
    ServiceEntry(ServiceKey.inet("tcp", "10.244.0.100", 80), "rr"),
    ServiceEntry(ServiceKey.inet("udp", "fd00:244::100", 53), "sh", SVC_F_PERSISTENT | SVC_F_SCHED2, 300, 64),
    ServiceEntry(ServiceKey.mark(4, 7), "wlc", SVC_F_PERSISTENT, 60, 24),
    ServiceEntry(ServiceKey.mark(6, 8), "mh", 0, 0, 128),
])
def test_service_encodes_and_decodes_to_itself(entry):
    cmd, d = roundtrip(planner.AddService(entry))
    assert cmd == 1   # IPVS_CMD_NEW_SERVICE
    assert decode_service(d.get_attr("IPVS_CMD_ATTR_SERVICE")) == entry


def test_netmask_is_mask_bytes_for_ipv4_and_a_host_order_prefix_for_ipv6():
    _, v4 = roundtrip(planner.AddService(ServiceEntry(ServiceKey.inet("tcp", "10.244.0.1", 1), netmask=24)))
    assert v4.get_attr("IPVS_CMD_ATTR_SERVICE").get_attr("IPVS_SVC_ATTR_NETMASK") == b"\xff\xff\xff\x00"
    _, v6 = roundtrip(planner.AddService(ServiceEntry(ServiceKey.inet("tcp", "fd00:244::1", 1), netmask=64)))
    assert v6.get_attr("IPVS_CMD_ATTR_SERVICE").get_attr("IPVS_SVC_ATTR_NETMASK") == struct.pack("=I", 64)


def test_addresses_go_as_16_bytes_like_union_nf_inet_addr():
    _, d = roundtrip(planner.AddService(ServiceEntry(ServiceKey.inet("tcp", "10.244.0.1", 1))))
    assert d.get_attr("IPVS_CMD_ATTR_SERVICE").get_attr("IPVS_SVC_ATTR_ADDR") == bytes([10, 244, 0, 1]) + bytes(12)


def test_tunnel_dest_encodes_port_big_endian_and_decodes_to_itself():
    dest = DestEntry(DestKey("fd00:244::9", 8000), 6, FWD_TUNNEL, 3, 100, 10, TUN_GUE, 6080, TUN_FLAG_REMCSUM)
    cmd, d = roundtrip(planner.EditDest(ServiceKey.inet("tcp", "10.244.0.1", 8000), dest))
    assert cmd == 6   # IPVS_CMD_SET_DEST, not pyroute2's "update" (which sends DEL)
    nla = d.get_attr("IPVS_CMD_ATTR_DEST")
    assert decode_dest(nla, 4) == dest
    assert nla["IPVS_DEST_ATTR_TUN_PORT"] == 6080
    data = encode_request(42, *op_request(planner.EditDest(ServiceKey.inet("tcp", "10.244.0.1", 8000), dest)), 5, 1)
    assert struct.pack(">H", 6080) in data


def test_delete_sends_only_the_keys():
    _, d = roundtrip(planner.DelDest(ServiceKey.mark(4, 5), DestKey("10.244.1.1", 0), 4))
    assert list(d.get_attr("IPVS_CMD_ATTR_DEST")) == [
        "IPVS_DEST_ATTR_ADDR", "IPVS_DEST_ATTR_PORT", "IPVS_DEST_ATTR_ADDR_FAMILY"]


def test_generic_netlink_socket_resolves_a_family_on_this_kernel():
    sock = GenlSocket("nlctrl", IPVS_SCHEMA)
    try:
        assert sock.family_id == 16       # GENL_ID_CTRL
    finally:
        sock.close()


def test_missing_ipvs_is_a_clear_error():
    if os.path.exists("/proc/net/ip_vs"):
        IpvsNetlink().close()
        return
    # "Unavailable", not the refusal of one entry: the agent retries instead of dying.
    with pytest.raises(IpvsUnavailable, match="generic netlink family 'IPVS' is not registered") as e:
        IpvsNetlink()
    assert e.value.errno == errno.ENOENT
    assert "ENOENT" in str(e.value) and "ip_vs module" in str(e.value)
