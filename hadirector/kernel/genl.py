"""Generic netlink's controller: is a family registered? (genetlink(7);
include/uapi/linux/genetlink.h.)

One ``CTRL_CMD_GETFAMILY`` by name on a plain AF_NETLINK socket, through ``nlmsg``:
no pyroute2. The agent asks it for "IPVS" before its VRRP machines start, to choose
the order of its start-up (agent/cli.py): asking costs a millisecond, importing and
opening the IPVS backend a large part of an emulated guest's start-up. The kernel
loads a missing family's module on this request when it can (``request_module``), as
it does for pyroute2's lookup.
"""

from __future__ import annotations

import errno
import socket
import struct

from hadirector.kernel import nlmsg

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
GENL_HEADER = struct.Struct("=BBH")     # cmd, version, reserved
_U16 = struct.Struct("=H")


def getfamily_request(name: str, seq: int) -> bytes:
    body = GENL_HEADER.pack(CTRL_CMD_GETFAMILY, 1, 0) + nlmsg.attr(CTRL_ATTR_FAMILY_NAME,
                                                                    name.encode() + b"\0")
    return nlmsg.message(GENL_ID_CTRL, nlmsg.NLM_F_REQUEST, seq, body)


def parse_family_id(reply: bytes, seq: int) -> int | None:
    """The family id in the controller's answer to ``seq``; None for ENOENT (no such
    family); OSError for any other refusal or an answer without an id."""
    for kind, _flags, rseq, _pid, body, end in nlmsg.messages(reply):
        if rseq != seq:
            continue
        if kind == nlmsg.NLMSG_ERROR:
            code = nlmsg.error(reply, body, end)
            if code == errno.ENOENT:
                return None
            if code:
                raise OSError(code, f"generic netlink controller: {errno.errorcode.get(code, code)}")
        elif kind == GENL_ID_CTRL:
            attrs = nlmsg.attributes(reply, body + GENL_HEADER.size, end)
            raw = attrs.get(CTRL_ATTR_FAMILY_ID)
            if raw is not None and len(raw) >= _U16.size:
                return _U16.unpack_from(raw)[0]
    raise OSError(errno.EPROTO, "generic netlink controller: no family id in the answer")


def family_id(name: str, timeout: float = 2.0) -> int | None:
    """The id of the generic netlink family ``name``, None when the kernel has none;
    OSError when the controller cannot be asked."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        s.send(getfamily_request(name, 1))
        return parse_family_id(s.recv(65536), 1)
