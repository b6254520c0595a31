"""kernel/genl.py's controller question, on recorded shapes of the kernel's answers.
The real controllers: tests/netns/test_genl_host.py (this host: no IPVS) and
tests/kernel/test_check_host_ipvs.py (the kernel lab: IPVS registered)."""

from __future__ import annotations

import errno
import struct

import pytest

from hadirector.kernel import genl, nlmsg


def error_reply(seq: int, code: int) -> bytes:
    # NLMSG_ERROR: the negative errno, then the request's header (not read).
    return nlmsg.message(nlmsg.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + b"\0" * 16)


def family_reply(seq: int, family: int, name: str) -> bytes:
    body = (genl.GENL_HEADER.pack(1, 2, 0)                                 # CTRL_CMD_NEWFAMILY
            + nlmsg.attr(genl.CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
            + nlmsg.attr(genl.CTRL_ATTR_FAMILY_ID, struct.pack("=H", family)))
    return nlmsg.message(genl.GENL_ID_CTRL, 0, seq, body)


def test_the_request_asks_the_controller_for_the_family_by_its_nul_terminated_name():
    req = genl.getfamily_request("IPVS", 7)
    length, kind, flags, seq, _pid = nlmsg.HEADER.unpack_from(req)
    assert (length, kind, flags, seq) == (len(req), genl.GENL_ID_CTRL, nlmsg.NLM_F_REQUEST, 7)
    cmd, _version, _ = genl.GENL_HEADER.unpack_from(req, nlmsg.HEADER.size)
    assert cmd == genl.CTRL_CMD_GETFAMILY
    attrs = nlmsg.attributes(req, nlmsg.HEADER.size + genl.GENL_HEADER.size, len(req))
    assert attrs == {genl.CTRL_ATTR_FAMILY_NAME: b"IPVS\0"}


def test_a_registered_family_answers_with_its_id():
    assert genl.parse_family_id(family_reply(3, 37, "IPVS"), 3) == 37


def test_enoent_means_the_kernel_has_no_such_family():
    assert genl.parse_family_id(error_reply(3, errno.ENOENT), 3) is None


def test_any_other_refusal_or_an_answer_without_an_id_is_an_error():
    with pytest.raises(OSError) as e:
        genl.parse_family_id(error_reply(3, errno.EPERM), 3)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        genl.parse_family_id(family_reply(4, 37, "IPVS"), 3)       # another request's answer
    assert e.value.errno == errno.EPROTO
