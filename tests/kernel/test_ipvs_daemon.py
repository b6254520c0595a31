"""The IPVS connection-sync daemon over netlink (IPVS_CMD_NEW/DEL/GET_DAEMON), against
the fake and the kernel alike, and read back through ``ipvsadm -L --daemon``."""

from __future__ import annotations

import errno
import ipaddress

import pytest

from hadirector import model
from hadirector.ipvs.backend import DaemonEntry, DaemonState, IpvsError
from hadirector.ipvs.cli import render_daemons
from hadirector.kernel.fake import FakeIpvs
from hadirector.ipvs.planner import AddDest, AddService
from hadirector.ipvs.table import FWD_TUNNEL, DestEntry, DestKey, ServiceEntry, ServiceKey

from lab.ipvs_netns import IpvsNetns

MASTER = model.SyncDaemon(interface="iv-a", syncid=7)
BACKUP = model.SyncDaemon(interface="iv-a", syncid=9, mcast_group=ipaddress.ip_address("224.0.0.99"),
                          port=9000, ttl=3, maxlen=1200)


@pytest.fixture(params=["fake", pytest.param("kernel", marks=pytest.mark.kernel)])
def backend(request):
    if request.param == "fake":
        yield FakeIpvs(interfaces={"lo", "iv-a", "iv-b"})
        return
    with IpvsNetns("sd") as ns:
        b = ns.ipvs()
        b.ns = ns
        try:
            yield b
        finally:
            for state in DaemonState:
                try:
                    b.stop_daemon(state)
                except IpvsError:
                    pass
            b.close()


def errno_of(fn, *args) -> int:
    with pytest.raises(IpvsError) as e:
        fn(*args)
    return e.value.errno


def test_master_and_backup_start_report_effective_settings_and_stop(backend):
    backend.start_daemon("master", MASTER)
    backend.start_daemon(DaemonState.BACKUP, BACKUP)
    assert backend.daemons() == [
        # the kernel fills in its defaults: group 224.0.0.81, port 8848, ttl 1, and a
        # maxlen from the interface MTU (1500 - IPv4 and UDP headers)
        DaemonEntry(DaemonState.MASTER, "iv-a", 7, maxlen=1472, mcast_group="224.0.0.81", port=8848, ttl=1),
        DaemonEntry(DaemonState.BACKUP, "iv-a", 9, maxlen=1200, mcast_group="224.0.0.99", port=9000, ttl=3),
    ]
    backend.stop_daemon("master")
    assert [d.state for d in backend.daemons()] == [DaemonState.BACKUP]
    backend.stop_daemon("backup")
    assert backend.daemons() == []


def test_starting_twice_is_eexist_and_stopping_a_stopped_one_is_esrch(backend):
    backend.start_daemon("master", MASTER)
    assert errno_of(backend.start_daemon, "master", MASTER) == errno.EEXIST
    assert errno_of(backend.stop_daemon, "backup") == errno.ESRCH


def test_unknown_interface_is_refused(backend):
    assert errno_of(backend.start_daemon, "master", model.SyncDaemon(interface="ivnope0")) == errno.ENODEV


def test_no_sync_daemon_while_a_real_server_crosses_families(backend):
    # the sync protocol cannot carry mixed-family connections (ip_vs_genl_new_daemon)
    svc = ServiceEntry(ServiceKey.inet("tcp", "10.244.0.100", 80), "rr")
    backend.apply(AddService(svc))
    backend.apply(AddDest(svc.key, DestEntry(DestKey("fd00:244::9", 80), family=6, fwd=FWD_TUNNEL)))
    assert errno_of(backend.start_daemon, "master", MASTER) == errno.EINVAL


@pytest.mark.kernel
def test_ipvsadm_shows_the_daemons_we_started():
    with IpvsNetns("sv") as ns:
        b = ns.ipvs()
        try:
            b.start_daemon("master", MASTER)
            b.start_daemon("backup", BACKUP)
            shown = ns.ipvsadm("-L", "--daemon")
            assert shown == render_daemons(b.daemons())
            assert shown.splitlines() == [
                "master sync daemon (mcast=iv-a, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
                "backup sync daemon (mcast=iv-a, syncid=9, maxlen=1200, group=224.0.0.99, port=9000, ttl=3)",
            ]
            b.stop_daemon("master")
            b.stop_daemon("backup")
            assert ns.ipvsadm("-L", "--daemon") == ""
        finally:
            for state in DaemonState:
                try:
                    b.stop_daemon(state)
                except IpvsError:
                    pass
            b.close()


@pytest.mark.kernel
def test_daemon_started_by_ipvsadm_reads_back_through_netlink():
    with IpvsNetns("sw") as ns:
        b = ns.ipvs()
        try:
            ns.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "iv-a", "--syncid", "5")
            (d,) = b.daemons()
            assert (d.state, d.interface, d.syncid) == (DaemonState.BACKUP, "iv-a", 5)
            b.stop_daemon("backup")
        finally:
            b.close()
