"""The netlink encoding, checked on the host (no IPVS needed): what we encode decodes to
the same entry, with the kernel's byte layouts (ip_vs_ctl.c ip_vs_genl_parse_*)."""

import os
import struct

import pytest
from hadirector.ipvs import planner
from hadirector.ipvs.netlink import GenlSocket, IpvsMsg, IpvsNetlink, decode_dest, decode_service, op_request
from hadirector.ipvs.table import (
    FWD_TUNNEL, SVC_F_PERSISTENT, SVC_F_SCHED2, TUN_FLAG_REMCSUM, TUN_GUE, DestEntry, DestKey, ServiceEntry,
    ServiceKey,
)


def roundtrip(op):
    cmd, attrs = op_request(op)
    m = IpvsMsg()
    m["cmd"], m["version"], m["attrs"] = cmd, 1, attrs
    m["header"]["type"] = 42
    m.encode()
    d = IpvsMsg(m.data)
    d.decode()
    return cmd, d


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
    assert dict(nla["attrs"])["IPVS_DEST_ATTR_TUN_PORT"] == 6080


def test_delete_sends_only_the_keys():
    _, d = roundtrip(planner.DelDest(ServiceKey.mark(4, 5), DestKey("10.244.1.1", 0), 4))
    names = [n for n, _ in d.get_attr("IPVS_CMD_ATTR_DEST")["attrs"]]
    assert names == ["IPVS_DEST_ATTR_ADDR", "IPVS_DEST_ATTR_PORT", "IPVS_DEST_ATTR_ADDR_FAMILY"]


def test_generic_netlink_socket_resolves_a_family_on_this_kernel():
    from pyroute2.netlink import ctrlmsg   # noqa: the codec test may import pyroute2
    sock = GenlSocket("nlctrl", ctrlmsg)
    try:
        assert sock.family_id == 16       # GENL_ID_CTRL
    finally:
        sock.close()


def test_missing_ipvs_is_a_clear_error():
    if os.path.exists("/proc/net/ip_vs"):
        IpvsNetlink().close()
        return
    with pytest.raises(FileNotFoundError, match="is the ip_vs module loaded"):
        IpvsNetlink()
