"""The sync tuning written to net.ipv4.vs.*: pure decision, then files (a tmp tree here;
/proc/sys/net/ipv4/vs in the kernel lab)."""

from __future__ import annotations

import pytest

from hadirector import model
from hadirector.kernel.sysctl import SysctlChange, SysctlError, apply_sync_tuning, sync_tuning

KERNEL_DEFAULTS = {"sync_refresh_period": "0\n", "sync_threshold": "3\t50\n"}


def daemon(**kw) -> model.SyncDaemon:
    return model.SyncDaemon(interface="eth0", **kw)


def test_without_refresh_period_the_kernels_settings_are_left_alone():
    assert sync_tuning(daemon(), KERNEL_DEFAULTS) == []
    assert sync_tuning(None, KERNEL_DEFAULTS) == []


def test_refresh_period_sets_the_period_and_turns_off_the_every_50_packets_rule():
    assert sync_tuning(daemon(refresh_period=2), KERNEL_DEFAULTS) == [
        SysctlChange("sync_refresh_period", "0", "2"),
        SysctlChange("sync_threshold", "3 50", "3 0"),
    ]


def test_the_operators_threshold_is_kept_and_nothing_is_written_twice():
    assert sync_tuning(daemon(refresh_period=2), {"sync_refresh_period": "2\n", "sync_threshold": "5\t0\n"}) == []
    assert sync_tuning(daemon(refresh_period=2), {"sync_refresh_period": "2", "sync_threshold": "5 20"}) == [
        SysctlChange("sync_threshold", "5 20", "5 0")]


def test_apply_writes_the_files(tmp_path):
    for name, text in KERNEL_DEFAULTS.items():
        (tmp_path / name).write_text(text)
    changes = apply_sync_tuning(daemon(refresh_period=3), tmp_path)
    assert [c.name for c in changes] == ["sync_refresh_period", "sync_threshold"]
    assert (tmp_path / "sync_refresh_period").read_text() == "3\n"
    assert (tmp_path / "sync_threshold").read_text() == "3 0\n"
    assert apply_sync_tuning(daemon(refresh_period=3), tmp_path) == []


def test_a_missing_ip_vs_sysctl_tree_is_a_clear_error_naming_the_file(tmp_path):
    with pytest.raises(SysctlError, match=r"cannot read .*/nope/sync_refresh_period.*ip_vs module"):
        apply_sync_tuning(daemon(refresh_period=3), tmp_path / "nope")


def test_an_unreadable_threshold_is_an_error_and_nothing_is_written(tmp_path):
    (tmp_path / "sync_refresh_period").write_text("0\n")
    (tmp_path / "sync_threshold").write_text("garbage\n")
    with pytest.raises(SysctlError, match="sync_threshold: unexpected"):
        apply_sync_tuning(daemon(refresh_period=3), tmp_path)
    assert (tmp_path / "sync_refresh_period").read_text() == "0\n"


def test_catch_up_defaults_to_twice_the_refresh_period():
    assert daemon().preempt_hold == 0.0
    assert daemon(refresh_period=2).preempt_hold == 4.0
    assert daemon(refresh_period=2, catch_up=1.5).preempt_hold == 1.5
