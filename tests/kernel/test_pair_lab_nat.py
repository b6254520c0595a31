"""The director pair in LVS-NAT (etc/lab/nat/): the real servers route their replies
through a floating gateway on the back LAN, so the front VIP and that gateway move
together (one sync group) and the sync daemon follows the group. One kill -9 cycle with
connections opened during the outage; the DR module covers the rest in detail.

Needs IPVS: runs inside the kernel lab on this machine, directly on a host with IPVS.
"""

from __future__ import annotations

import pytest

from tests.kernel.pair_checks import (
    assert_outage_connections_survived, events, explain, failover_windows, failures_outside, pairlab,
)

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    lab = pairlab.Lab(mode="nat", results=tmp_path_factory.mktemp("pairlab-nat"))
    try:
        lab.up()
        report = pairlab.run_failover(lab, stop="kill", outage_longs=10)
        pairlab.print_report(report)
        return report
    finally:
        lab.down()


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
