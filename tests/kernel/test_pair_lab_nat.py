"""The director pair in LVS-NAT (etc/lab/nat/): the real servers route their replies
through a floating gateway on the back LAN, so the front VIP and that gateway move
together (one sync group) and the sync daemon follows the group. A kill -9 cycle and a
power-off cycle, each with connections opened during the outage; the DR module covers
the rest in detail.

Needs IPVS: runs inside the kernel lab on this machine, directly on a host with IPVS.
"""

from __future__ import annotations

import pytest

from tests.kernel.pair_checks import (
    assert_outage_connections_survived, events, explain, failover_windows, failures_outside, mono, pairlab,
)

# lab_seconds: about what each test keeps a lab guest busy (lab/kernel/README.md)
pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.lab_seconds(45)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab for both scenarios: agent start-up is the slow part under emulation."""
    lab = pairlab.Lab(mode="nat", results=tmp_path_factory.mktemp("pairlab-nat"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _run(lab, stop: str) -> dict:
    report = pairlab.run_failover(lab, stop=stop, outage_longs=10)
    pairlab.print_report(report)
    return report


@pytest.fixture(scope="module")
def killed(lab) -> dict:
    return _run(lab, "kill")


@pytest.fixture(scope="module")
def powered_off(lab, killed) -> dict:
    """Power-off of the primary node: both its links (front and back LAN) and every
    process go at one instant; it comes back with an empty kernel."""
    return _run(lab, "poweroff")


def test_nat_kill_9_the_backup_takes_the_vip_and_the_gateway_together(killed):
    roles = events(killed["dir2_log"], "vrrp.role_changed")
    masters = {e["instance"] for e in roles if e["new"] == "MASTER"}
    assert masters == {"VI_FRONT", "VI_BACK"}
    assert killed["master_now"] == "dir1"


def test_nat_kill_9_every_long_lived_connection_survives(killed):
    assert killed["long_opened"] == 10
    assert killed["long_survived"] == 10, killed["long_lost"]


def test_nat_kill_9_short_requests_fail_only_inside_the_failover_gap(killed):
    outside = failures_outside(killed, failover_windows(killed))
    assert outside == [], explain(killed, outside)


def test_nat_the_returning_primary_keeps_the_connections_opened_while_it_was_down(killed):
    assert_outage_connections_survived(killed)


def test_nat_power_off_the_backup_takes_the_vip_and_the_gateway_together(powered_off):
    second = powered_off["dir2_log"].split("===== start #")[-1]
    stop = powered_off["times"]["stop"]
    masters = {e["instance"] for e in events(second, "vrrp.role_changed")
               if e["new"] == "MASTER" and mono(powered_off, e) >= stop}
    assert masters == {"VI_FRONT", "VI_BACK"}
    assert powered_off["takeover_s"] < 3 * 1.0 + 1.0 + 1.5, "master down interval plus a margin"
    assert powered_off["master_now"] == "dir1"


def test_nat_power_off_every_long_lived_connection_survives(powered_off):
    assert powered_off["long_opened"] == 10
    assert powered_off["long_survived"] == 10, powered_off["long_lost"]


def test_nat_power_off_short_requests_fail_only_inside_the_failover_gap(powered_off):
    outside = failures_outside(powered_off, failover_windows(powered_off))
    assert outside == [], explain(powered_off, outside)


def test_nat_power_off_the_returning_primary_keeps_the_connections_opened_while_it_was_down(powered_off):
    assert_outage_connections_survived(powered_off)
