"""FakeIpvs keeps state and refuses what the kernel refuses, with the kernel's errno
(net/netfilter/ipvs/ip_vs_ctl.c); the kernel-lab tests hold it to the real thing."""

import errno

import pytest

from hadirector import model
from hadirector.ipvs.backend import DaemonState, IpvsError
from hadirector.kernel.fake import FakeIpvs
from hadirector.ipvs.planner import AddDest, AddService, DelDest, DelService, EditDest, EditService
from hadirector.ipvs.table import FWD_MASQ, FWD_TUNNEL, TUN_GUE, DestEntry, DestKey, ServiceEntry, ServiceKey

SVC = ServiceEntry(ServiceKey.inet("tcp", "10.244.0.100", 80), "rr")
RS = DestEntry(DestKey("10.244.1.1", 80))


def refused(fake, op) -> int:
    with pytest.raises(IpvsError) as e:
        fake.apply(op)
    return e.value.errno


def test_adding_a_service_twice_is_eexist():
    f = FakeIpvs()
    f.apply(AddService(SVC))
    assert refused(f, AddService(SVC)) == errno.EEXIST


def test_unknown_scheduler_is_enoent_like_a_missing_module():
    assert refused(FakeIpvs(), AddService(ServiceEntry(SVC.key, "nosuch"))) == errno.ENOENT


def test_commands_on_a_missing_service_are_esrch():
    f = FakeIpvs()
    for op in (EditService(SVC), DelService(SVC.key), AddDest(SVC.key, RS), DelDest(SVC.key, RS.key)):
        assert refused(f, op) == errno.ESRCH


def test_real_server_twice_is_eexist_and_missing_one_is_enoent():
    f = FakeIpvs()
    f.apply(AddService(SVC))
    f.apply(AddDest(SVC.key, RS))
    assert refused(f, AddDest(SVC.key, RS)) == errno.EEXIST
    other = DestEntry(DestKey("10.244.1.2", 80))
    assert refused(f, EditDest(SVC.key, other)) == errno.ENOENT
    assert refused(f, DelDest(SVC.key, other.key)) == errno.ENOENT


def test_threshold_order_and_gue_port_and_family_are_checked():
    f = FakeIpvs()
    f.apply(AddService(SVC))
    assert refused(f, AddDest(SVC.key, DestEntry(DestKey("10.244.1.3", 80), u_threshold=1, l_threshold=2))) == errno.ERANGE
    assert refused(f, AddDest(SVC.key, DestEntry(DestKey("10.244.1.4", 80), fwd=FWD_TUNNEL, tun_type=TUN_GUE))) == errno.EINVAL
    v6 = DestEntry(DestKey("fd00:244::4", 80), family=6, fwd=FWD_MASQ)
    assert refused(f, AddDest(SVC.key, v6)) == errno.EINVAL
    f.apply(AddDest(SVC.key, DestEntry(DestKey("fd00:244::4", 80), family=6, fwd=FWD_TUNNEL)))


def test_error_message_names_the_entry_and_the_field():
    f = FakeIpvs()
    f.apply(AddService(SVC))
    with pytest.raises(IpvsError) as e:
        f.apply(AddDest(SVC.key, DestEntry(DestKey("10.244.1.3", 80), u_threshold=10, l_threshold=50)))
    assert "10.244.1.3:80" in str(e.value) and "tcp 10.244.0.100:80" in str(e.value)
    assert "lower threshold 50 is above upper threshold 10" in str(e.value)
    assert "ERANGE" in str(e.value)


def test_refused_write_changes_nothing():
    f = FakeIpvs()
    f.apply(AddService(SVC))
    before = f.dump()
    refused(f, AddService(SVC))
    assert f.dump() == before and len(f.writes) == 1


def test_sync_daemon_start_twice_eexist_stop_missing_esrch():
    f = FakeIpvs(interfaces={"iv0"})
    cfg = model.SyncDaemon(interface="iv0", syncid=7)
    f.start_daemon("master", cfg)
    with pytest.raises(IpvsError) as e:
        f.start_daemon(DaemonState.MASTER, cfg)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(IpvsError) as e:
        f.stop_daemon("backup")
    assert e.value.errno == errno.ESRCH
    with pytest.raises(IpvsError) as e:
        f.start_daemon("backup", model.SyncDaemon(interface="nope"))
    assert e.value.errno == errno.ENODEV
    (d,) = f.daemons()
    assert (d.state, d.interface, d.syncid, d.port, d.ttl, d.mcast_group) == (DaemonState.MASTER, "iv0", 7, 8848, 1, "224.0.0.81")
    f.stop_daemon("master")
    assert f.daemons() == []
