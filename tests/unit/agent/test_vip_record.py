"""The record of the VIPs an agent added, read by the next agent before its config.

Pure encode/decode, real files in a temporary directory, and the agent (fake
addresses) writing it as it adds and removes VIPs.
"""

from __future__ import annotations

import os

from hadirector.agent.vip_record import RecordedVip, VipRecord, decode, encode, record_path
from hadirector.vrrp.machine import State

from .test_agent import VIP, Rig, inst

A = RecordedVip("eth0", 2, "10.0.0.100/32", "vi_1", 51)
B = RecordedVip("eth1", 3, "2001:db8::1/128", "vi_6", 52)


def test_a_record_reads_back_what_was_written():
    assert decode(encode([B, A, A], cookie=7, pid=1), cookie=7) == [A, B]


def test_a_record_of_another_namespace_is_ignored():
    # The inode in the file name can be reused by a later namespace; the cookie cannot.
    assert decode(encode([A], cookie=7, pid=1), cookie=8) == []


def test_a_damaged_record_is_ignored():
    for text in ("", "{", "[]", '{"version": 1, "netns_cookie": 7}', '{"version": 9, "netns_cookie": 7, "vips": []}',
                 '{"version": 1, "netns_cookie": 7, "vips": [{"interface": "eth0"}]}'):
        assert decode(text, cookie=7) == [], text


def test_the_record_is_replaced_whole_and_removed_when_empty(tmp_path):
    path = record_path(str(tmp_path), 4026531840)
    assert path == f"{tmp_path}/net-4026531840.vips"
    rec = VipRecord(path, cookie=7)
    assert rec.read() == []
    assert rec.write([A]) is True
    assert rec.write([A]) is False            # unchanged: no write on the takeover path
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert VipRecord(path, cookie=7).read() == [A]
    rec.write([A, B])
    assert VipRecord(path, cookie=7).read() == [A, B]
    assert sorted(os.listdir(tmp_path)) == ["net-4026531840.vips"]    # no temporary left
    rec.write([])
    assert not os.path.exists(path)


async def test_the_agent_records_a_vip_before_adding_it_and_forgets_it_once_removed(tmp_path):
    rec = VipRecord(str(tmp_path / "net-1.vips"), cookie=None)
    rig = Rig(tmp_path, inst())
    rig.agent.vip_record = rec
    seen_on_add = []
    add = rig.addresses.add_vip

    def add_vip(interface, vip, label=None):
        seen_on_add.append([r.vip for r in VipRecord(rec.path, None).read()])
        return add(interface, vip, label)

    rig.addresses.add_vip = add_vip
    await rig.agent.start()
    await rig.master(garps=2)
    assert rig.state() is State.MASTER
    assert seen_on_add == [[str(VIP)]], "recorded before the kernel had it"
    [r] = rec.read()
    assert (r.interface, r.vip, r.instance, r.vrid) == ("eth0", str(VIP), "vi_1", inst().vrid)
    rig.agent.set_fault("vi_1", True, "test")          # MASTER -> FAULT releases it
    await rig.until(lambda: not rig.addresses.has("eth0", VIP.ip), "the VIP released", 0.05)
    assert rec.read() == [] and not os.path.exists(rec.path)
    await rig.agent.stop()


async def test_a_vip_that_was_already_there_is_not_recorded_as_ours(tmp_path):
    rec = VipRecord(str(tmp_path / "net-1.vips"), cookie=None)
    rig = Rig(tmp_path, inst())
    rig.agent.vip_record = rec
    await rig.agent.start()
    rig.addresses.addrs["eth0"].append(VIP)            # someone else's
    await rig.master(garps=2)
    assert rig.state() is State.MASTER
    assert rec.read() == []
    await rig.agent.stop()
    assert rig.addresses.has("eth0", VIP.ip)


async def test_an_address_owner_never_records_its_own_address(tmp_path):  # RFC 5798 6.1
    import dataclasses

    from hadirector.kernel.fake import FakeAddresses

    addrs = FakeAddresses()
    addrs.addrs["eth0"].append(VIP)                    # its real address, there before we start
    rec = VipRecord(str(tmp_path / "net-1.vips"), cookie=None)
    writes = []
    write = rec.write
    rec.write = lambda vips: writes.append(sorted(vips)) or write(vips)
    rig = Rig(tmp_path, dataclasses.replace(inst(), priority=255), addresses=addrs)
    rig.agent.vip_record = rec
    await rig.agent.start()
    await rig.master(garps=2, within=0.05)       # an owner is MASTER at once (RFC 5798 6.4.1)
    assert rig.state() is State.MASTER
    assert rec.read() == [] and all(w == [] for w in writes), writes
    await rig.agent.stop()
    assert addrs.has("eth0", VIP.ip)
