"""The mission end to end, in the director-pair lab (netns-lab/): a client, two
directors running hadirector, three real servers; stop the primary, lose nothing.

The scenarios share one lab (LVS-DR, sync daemon on, advert 1 s): SIGTERM of the
primary, kill -9 of its agent, power-off of its node. Each runs client traffic — 10 short HTTP requests a second and 10 long-lived echo connections — stops
the primary, lets the backup serve and opens 10 more long-lived connections through it,
restarts the primary (preempt takes the VIP back once its sync daemon caught up), and
records what the clients saw. The tests below each read one aspect of a scenario; the
last draws the three cycles as the demo's failover timeline picture.

Needs IPVS: runs inside the kernel lab on this machine, directly on a host with IPVS.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.kernel.pair_checks import (
    BEFORE, assert_outage_connections_survived, events, explain, failover_windows, failures_outside, mono, pairlab,
)

# lab_seconds: about what each test keeps a lab guest busy (lab/kernel/README.md)
pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.lab_seconds(30)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab for both scenarios: agent start-up is the slow part under emulation."""
    lab = pairlab.Lab(mode="dr", results=tmp_path_factory.mktemp("pairlab"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _run(lab, stop: str, **kw) -> dict:
    report = pairlab.run_failover(lab, stop=stop, **kw)
    pairlab.print_report(report)
    return report


@pytest.fixture(scope="module")
def graceful(lab) -> dict:
    """SIGTERM of the primary; a real server fails while the backup is master."""
    return _run(lab, "term", outage_longs=10,
                during_backup=lambda lab: pairlab.fail_real_server(lab, "rs2", hold=14.0))


@pytest.fixture(scope="module")
def killed(lab, graceful) -> dict:
    """kill -9 of the primary's agent (after the graceful cycle, on the same lab)."""
    return _run(lab, "kill", outage_longs=10)


@pytest.fixture(scope="module")
def powered_off(lab, killed) -> dict:
    """Power-off of the primary node (after the kill -9 cycle, on the same lab): its
    processes and links go at one instant and it comes back with an empty kernel."""
    return _run(lab, "poweroff", outage_longs=10)


# --- graceful stop ---------------------------------------------------------------------


def test_graceful_stop_the_backup_serves_the_vip(graceful):
    assert graceful["master_now"] == "dir1"
    assert graceful["takeover_s"] < 3.0, "SIGTERM sends priority 0: takeover after skew time"
    assert graceful["ok"] > 0.5 * graceful["requests"]


def test_graceful_stop_every_long_lived_connection_survives(graceful):
    assert graceful["long_opened"] == graceful["long_requested"] == 10
    assert graceful["long_survived"] == 10, graceful["long_lost"]
    assert graceful["synced_before"] >= 10, "the standby knew the connections before the stop"


def test_graceful_stop_short_requests_fail_only_inside_the_failover_gap(graceful):
    # HTTP 500s from the failing real server are the next test's business. A failure is
    # stamped with its request's start: a request sent up to the client's 2 s bound
    # before rs2 began answering 500 can get one (a CI-like run: 0.02 s before).
    stop, fail_at = graceful["times"]["stop"], graceful["rs_fail_at"]
    outside = [f for f in failures_outside(graceful, failover_windows(graceful) + [
        (fail_at, graceful["rs_heal_at"] + 2.0)])
        if not (f[1] == "status 500" and fail_at - BEFORE <= stop + f[0] < fail_at)]
    assert outside == [], explain(graceful, outside)


def test_the_new_master_takes_a_failing_real_server_out_during_traffic(graceful):
    # rs2 answers 500 from rs_fail_at; with interval 2 s, timeout 2 s and fall 2 the
    # new master must have removed it within fall x interval + timeout (+ margin).
    detection = 2 * 2.0 + 2.0 + 2.0
    late = [f for f in failures_outside(
        graceful, [(graceful["rs_fail_at"] - 1.0, graceful["rs_fail_at"] + detection)],
        reasons=["status 500"])]
    assert late == []
    downs = [e for e in events(graceful["dir2_log"], "health.server_down")
             if e["server"].startswith("10.250.0.12:80")]
    assert downs and downs[0]["reason"] == "status 500"


def test_the_returning_primary_takes_the_vip_back_without_losing_connections(graceful):
    assert "takeback_s" in graceful
    assert graceful["long_survived"] == graceful["long_requested"]
    roles = [(e["old"], e["new"]) for e in events(graceful["dir1_log"], "vrrp.role_changed")]
    assert roles[-1] == ("BACKUP", "MASTER")
    assert_outage_connections_survived(graceful)


def test_restarting_the_agent_with_an_unchanged_config_writes_nothing_to_ipvs(graceful):
    # dir1's second start found its own table in the kernel: no write, no dropped
    # connection (the long-lived connections above went through it again).
    second = graceful["dir1_log"].split("===== start #")[1]
    synced = events(second, "ipvs.synced")
    assert synced and synced[0]["applied"] == 0, synced
    assert all(e["reason"] != "health:down" for e in events(second, "ipvs.table_changed"))


# --- kill -9 ----------------------------------------------------------------------------


def test_kill_9_the_backup_serves_the_vip(killed):
    assert killed["takeover_s"] < 3 * 1.0 + 1.0 + 1.5, "master down interval plus a margin"
    assert killed["master_now"] == "dir1"


def test_kill_9_every_long_lived_connection_survives(killed):
    assert killed["long_opened"] == 10
    assert killed["long_survived"] == 10, killed["long_lost"]


def test_kill_9_short_requests_fail_only_inside_the_failover_gap(killed):
    outside = failures_outside(killed, failover_windows(killed))
    assert outside == [], explain(killed, outside)


def test_kill_9_the_returning_primary_keeps_the_connections_opened_while_it_was_down(killed):
    assert killed["master_now"] == "dir1"
    assert_outage_connections_survived(killed)


def test_kill_9_the_restarted_agent_cleans_up_its_predecessors_vip(killed):
    second = killed["dir1_log"].split("===== start #")[1]
    removed = events(second, "vrrp.stale_vip_removed")
    assert removed and removed[0]["vip"].startswith("10.250.0.100")


# --- power-off --------------------------------------------------------------------------


def test_power_off_the_backup_serves_the_vip(powered_off):
    assert powered_off["takeover_s"] < 3 * 1.0 + 1.0 + 1.5, "master down interval plus a margin"
    assert powered_off["master_now"] == "dir1"


def test_power_off_every_long_lived_connection_survives(powered_off):
    # Unlike a kill -9, dir1's kernel stops forwarding at once: the connections live on
    # only because dir2 learnt them through the sync daemon.
    assert powered_off["long_opened"] == 10
    assert powered_off["long_survived"] == 10, powered_off["long_lost"]
    assert powered_off["synced_before"] >= 10, "the standby knew the connections before the power-off"


def test_power_off_short_requests_fail_only_inside_the_failover_gap(powered_off):
    outside = failures_outside(powered_off, failover_windows(powered_off))
    assert outside == [], explain(powered_off, outside)


def test_power_off_the_returning_primary_keeps_the_connections_opened_while_it_was_down(powered_off):
    assert powered_off["master_now"] == "dir1"
    assert_outage_connections_survived(powered_off)


def test_power_off_the_returning_primary_programs_its_empty_kernel_before_it_takes_the_vip_back(
        powered_off):
    # A powered-off host comes back with no VIP and an empty IPVS table: unlike after a
    # kill -9 there is nothing stale to remove and everything to write.
    second = powered_off["dir1_log"].split("===== start #")[1]
    assert events(second, "vrrp.stale_vip_removed") == []
    synced = events(second, "ipvs.synced")
    assert synced and synced[0]["applied"] > 0, synced
    master = [e for e in events(second, "vrrp.role_changed") if e["new"] == "MASTER"]
    assert master and mono(powered_off, synced[0]) <= mono(powered_off, master[0])


# --- the failover timeline picture --------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def test_the_failover_timeline_picture_shows_each_cycle_with_its_marks(lab, graceful, killed, powered_off):
    reports = [graceful, killed, powered_off]
    _, path = pairlab.write_results(lab.results, reports, "pair lab (DR): failover timeline")
    print(f"failover timeline: {path}")
    root = ET.parse(path).getroot()
    panels = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cycle"]
    assert len(panels) == 3
    for panel in panels:
        marks = [g for g in panel.iter(f"{SVG}g") if g.get("class") == "mark"]
        assert [m.get("data-label") for m in marks] == ["stop", "takeover", "restart", "takeback"]
        assert {t.text for t in panel.iter(f"{SVG}text")} >= {"stop", "takeover", "restart", "takeback"}
        assert {el.get("class") for el in panel.iter()} >= {"requests-ok", "long-alive", "vip-dir1", "vip-dir2"}
    # What it drew was sampled in the run: dir1 had the VIP before the stop, dir2 from
    # the takeover to the restart, dir1 again after the takeback; requests went through.
    for report, cycle in zip(reports, pairlab.failover_timeline(reports, "t").cycles):
        t = {m.label: m.t for m in cycle.marks}
        span = lambda a, b: [s for s in cycle.samples if a <= s.t < b]  # noqa: E731
        assert all("dir1" in s.holders for s in span(-1.5, -0.5)), report["stop"]
        assert all("dir2" in s.holders for s in span(t["takeover"] + 0.5, t["restart"])), report["stop"]
        assert all(s.holders == ("dir1",) for s in span(t["takeback"] + 0.5, t["takeback"] + 1.5)), report["stop"]
        assert sum(s.ok for s in cycle.samples) == report["ok"]
        assert max(s.long_alive for s in cycle.samples) == cycle.long_total == 20
