"""``agent/sync_daemon.SyncDaemonSwitch`` against the stateful fake IPVS (which refuses
the way the kernel does); the kernel lab runs the same switches on real IPVS
(tests/kernel/test_ipvs_daemon.py, test_pair_lab.py)."""

from __future__ import annotations

import errno

import pytest
from structlog.testing import capture_logs

from hadirector.agent.sync_daemon import SyncDaemonSwitch
from hadirector.ipvs.backend import DaemonState, IpvsUnavailable
from hadirector.kernel.fake import FakeIpvs
from hadirector.model import SyncDaemon

CFG = SyncDaemon("eth0", 7)
MASTER, BACKUP = DaemonState.MASTER, DaemonState.BACKUP


def running(fake: FakeIpvs) -> list[DaemonState]:
    return [d.state for d in fake.daemons()]


def test_only_a_started_backup_daemon_is_reported_so_preemption_is_held_once():
    fake, switch = FakeIpvs(), SyncDaemonSwitch()
    assert switch.switch(fake, BACKUP, CFG, "startup") is True
    assert switch.switch(fake, BACKUP, CFG, "reload") is False, "already running: not started again"
    assert switch.switch(fake, MASTER, CFG, "vrrp:MASTER") is False
    assert running(fake) == [MASTER] and switch.role is MASTER


def test_no_daemon_wanted_stops_every_one_and_only_matching_spares_the_others():
    fake, switch = FakeIpvs(), SyncDaemonSwitch()
    switch.switch(fake, BACKUP, CFG, "startup")
    fake.start_daemon(MASTER, SyncDaemon("eth1", 9))         # started by someone else since
    switch.switch(fake, None, CFG, "reload", only_matching=True)
    assert running(fake) == [MASTER], "the daemon cfg did not describe stays"
    switch.switch(fake, None, CFG, "shutdown")
    assert running(fake) == [] and switch.role is None


def test_a_refused_start_is_logged_with_the_kernels_reason_and_reports_no_start():
    fake, switch = FakeIpvs(interfaces={"eth1"}), SyncDaemonSwitch()
    with capture_logs() as logs:
        assert switch.switch(fake, BACKUP, CFG, "startup") is False
    failed = [e for e in logs if e["event"] == "ipvs.sync_daemon_failed"]
    assert len(failed) == 1 and failed[0]["action"] == "start backup" and "ENODEV" in failed[0]["reason"]
    assert running(fake) == []


def test_losing_ipvs_while_reading_the_daemons_is_raised_to_the_owner_of_the_backend():
    fake, switch = FakeIpvs(), SyncDaemonSwitch()
    fake.unavailable = errno.ENOENT
    with pytest.raises(IpvsUnavailable):
        switch.switch(fake, BACKUP, CFG, "startup")
    assert switch.role is None, "nothing was made to run"


def test_tuning_writes_the_sync_sysctls_and_a_missing_one_is_logged_not_raised(tmp_path):
    (tmp_path / "sync_refresh_period").write_text("0\n")
    (tmp_path / "sync_threshold").write_text("3 50\n")
    SyncDaemonSwitch(tmp_path).tune(SyncDaemon("eth0", 7, refresh_period=5), reason="startup")
    assert (tmp_path / "sync_refresh_period").read_text().strip() == "5"
    with capture_logs() as logs:
        SyncDaemonSwitch(tmp_path / "missing").tune(SyncDaemon("eth0", 7, refresh_period=5), reason="startup")
    assert [e["event"] for e in logs] == ["ipvs.sync_tuning_failed"]
