"""bench/scale_out.py's per-event table on recorded data: the new-flow spread and its
deviation from 1/N, the goals of issue 14 per kind of event, the rows from the
scale-out lab's events, the backend event and bench/pair_failover's keepalived pair;
and the glue of ``--kernel-lab`` with its labs replaced (the labs themselves run only in
the bench and in tests/kernel/test_scaleout_lab.py): the spread taken after each event
over the directors the router then has, a failed part recorded while the next runs,
one JSON and one printout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import bench.scale_out as so
from bench.scale_out import (GOALS, SPREAD_PORT0, Row, SpreadRun, deviation, event_table, full_report, judge, parse,
                             rows_from_backend, rows_from_events, rows_from_pair)
from lab.scaleout_demo import PORT0, EventResult, ScaleOutRun

# The demo report of a quiet machine (60 long-lived connections), as kernel_lab_inside
# records it; the spreads are the report's (3 directors: 16/20/24, 4: 17/13/15/15).
THREE = {"d1": 16, "d2": 20, "d3": 24}
FOUR = {"d1": 17, "d2": 13, "d3": 15, "d4": 15}
TWO = {"d1": 31, "d2": 29}


def event(name: str, detection: float | None, *, leaves: bool = False, stall: float = 0.1,
          broken: dict | None = None) -> dict:
    return {"event": name, "established": 60, "broken": broken or {}, "moved": 20, "detection": detection,
            "detection_note": "", "stall": stall, "leaves": leaves}


LAB = {
    "events": [
        event("same backend through d1, d2, d3 alone in turn", None),
        event("silent failure of d3 (nftables drops everything)", 0.679, leaves=True, stall=0.430),
        event("d3 heard again (rejoins)", 1.711),
        event("agent kill -9 on d2", 4.523, leaves=True),
        event("d2 agent restarted (rejoins after its hold-down)", 12.3),
        event("clean stop of d1 (SIGTERM)", 0.035, leaves=True),
        event("d1 restarted (rejoins after its hold-down)", 10.2),
        event("d4 joins (a 4th director)", 16.3),
    ],
    "kinds": {"same backend through d1, d2, d3 alone in turn": "same",
              "silent failure of d3 (nftables drops everything)": "silent", "d3 heard again (rejoins)": "rejoin",
              "agent kill -9 on d2": "kill", "d2 agent restarted (rejoins after its hold-down)": "rejoin",
              "clean stop of d1 (SIGTERM)": "drain", "d1 restarted (rejoins after its hold-down)": "rejoin",
              "d4 joins (a 4th director)": "join"},
    "new_flow_spreads": {"same backend through d1, d2, d3 alone in turn": THREE,
                         "silent failure of d3 (nftables drops everything)": TWO,
                         "d3 heard again (rejoins)": THREE, "agent kill -9 on d2": TWO,
                         "d2 agent restarted (rejoins after its hold-down)": THREE,
                         "clean stop of d1 (SIGTERM)": TWO, "d1 restarted (rejoins after its hold-down)": THREE,
                         "d4 joins (a 4th director)": FOUR},
}


def pair_record(takeover: float, opened: int = 10, survived: int = 10, gap: float = 1.2, stop: str = "kill",
                impl: str = "keepalived") -> dict:
    return {"impl": impl, "advert": 1.0, "stop": stop, "takeover_s": takeover,
            "failover": {"long_opened": opened, "long_survived": survived, "max_gap": gap}}


def test_spread_deviation_is_the_largest_distance_from_one_nth_in_percent_of_it():
    assert deviation(THREE) == 20.0            # 16 and 24 of 60: 1/3 -20 % and +20 %
    assert deviation(FOUR) == 13.3             # 17 and 13 of 60: 1/4 +-13.3 %
    assert deviation({"d1": 200, "d2": 200, "d3": 200}) == 0.0
    assert deviation({"d1": 0, "d2": 10}) == 100.0, "a director without new flows is 100 % off"
    assert deviation({"d1": 0, "d2": 0}) is None and deviation({}) is None


def test_a_spread_exactly_at_twenty_percent_meets_the_goal_and_one_past_it_does_not():
    assert judge(Row("x", "join", 60, 0, 1.0, THREE)) == (True, "yes")
    assert judge(Row("x", "join", 61, 0, 1.0, {"d1": 16, "d2": 20, "d3": 25})) == (False, "no: spread 23 % > 20 %")


def test_a_silent_failure_must_leave_the_fib_within_400_ms_and_a_drain_within_50_ms():
    assert judge(Row("s", "silent", 60, 0, 0.400, TWO))[0] is True
    assert judge(Row("s", "silent", 60, 0, 0.679, TWO)) == (False, "no: 679 ms > 400 ms")
    assert judge(Row("d", "drain", 60, 0, 0.035, TWO))[0] is True
    assert judge(Row("d", "drain", 60, 0, 0.051, TWO)) == (False, "no: 51 ms > 50 ms")
    assert judge(Row("d", "drain", 60, 0, None, TWO)) == (False, "no: not timed")


def test_a_kill_or_a_join_has_no_time_goal_but_must_break_nothing():
    assert judge(Row("k", "kill", 60, 0, 4.523, TWO))[0] is True
    assert judge(Row("j", "join", 60, 0, 16.3, FOUR))[0] is True
    assert judge(Row("k", "kill", 60, 2, 0.1, TWO)) == (False, "no: 2 broken")


def test_every_miss_is_named_and_a_negative_control_is_not_judged():
    assert judge(Row("s", "silent", 60, 3, 0.5, {"d1": 10, "d2": 50})) == (
        False, "no: 3 broken, 500 ms > 400 ms, spread 66.7 % > 20 %")
    assert judge(Row("c", "control", 2009, 8, None, THREE)) == (None, "negative control (breaks by design)")


def test_the_recorded_demo_gives_one_row_per_event_with_its_kind_time_and_spread():
    rows = rows_from_events(LAB)
    assert [r.kind for r in rows] == ["same", "silent", "rejoin", "kill", "rejoin", "drain", "rejoin", "join"]
    silent = rows[1]
    assert (silent.established, silent.broken, silent.leaves, silent.spread) == (60, 0, 0.679, TWO)
    assert silent.note == "stall 430 ms", "a leaving director's row says the longest stall of a line"
    assert rows[2].note == "", "a join stalls nothing"
    assert rows[0].leaves is None
    assert [judge(r)[0] for r in rows] == [True, False, True, True, True, True, True, True]
    broken = dict(LAB, events=[event("agent kill -9 on d2", 0.3, leaves=True, broken={"40001": "EOF"})])
    assert rows_from_events(broken)[0].broken == 1


def test_the_backend_event_judges_hadirectors_weight_zero_and_shows_deleting_as_the_control():
    rows = rows_from_backend([
        {"how": "weight 0 (hadirector)", "connections": 3000, "opened": 3000, "live": 2014, "moved_live": 990,
         "broken_live": 0, "with_rs1": 986, "spread": [996, 1035, 969]},
        {"how": "deleted (negative control)", "connections": 3000, "opened": 3000, "live": 2009,
         "moved_live": 1044, "broken_live": 8, "with_rs1": 991, "spread": [978, 1021, 1001]}])
    assert [(r.kind, r.established, r.broken) for r in rows] == [("backend", 2014, 0), ("control", 2009, 8)]
    assert rows[0].spread == {"d1": 996, "d2": 1035, "d3": 969}
    assert judge(rows[0]) == (True, "yes") and judge(rows[1])[0] is None


def test_the_keepalived_pair_row_sums_lost_connections_and_takes_the_median_takeover_of_its_kills():
    doc = {"records": [pair_record(3.7, gap=1.0), pair_record(3.9, survived=9, gap=1.4), pair_record(3.8),
                       pair_record(0.1, stop="term")]}
    [row] = rows_from_pair(doc)
    assert row.kind == "pair-kill" and row.established == 30 and row.broken == 1
    assert row.leaves == pytest.approx(3.8) and row.note == "max 3.90 s; service gap median 1.20 s"
    assert "3 runs" in row.event and "keepalived" in row.event
    assert judge(row) == (False, "no: 1 broken, 3.80 s > 400 ms"), "a killed master is a silent failure"
    assert rows_from_pair({"records": []}) == []


def test_the_table_reads_n_active_directors_beside_an_active_standby_pair():
    pair = rows_from_pair({"records": [pair_record(3.7)]})
    text = event_table([("3-4 active directors", rows_from_events(LAB)), ("keepalived pair", pair)])
    lines = text.splitlines()
    assert lines[0] == ("| event | broken of established | time until traffic leaves | new-flow spread per director "
                        "(max deviation from 1/N) | goal met? |")
    assert "| **3-4 active directors** | | | | |" in lines
    assert ("| silent failure of d3 (nftables drops everything) | 0 of 60 | 679 ms (stall 430 ms) | d1 31, d2 29 "
            "(max 3.3 % off 1/2) | no: 679 ms > 400 ms |") in lines
    assert ("| clean stop of d1 (SIGTERM) | 0 of 60 | 35 ms (stall 100 ms) | d1 31, d2 29 (max 3.3 % off 1/2) "
            "| yes |") in lines
    assert ("| d3 heard again (rejoins) | 0 of 60 | joins after 1.71 s | d1 16, d2 20, d3 24 (max 20 % off 1/3) "
            "| yes |") in lines
    assert ("| d4 joins (a 4th director) | 0 of 60 | joins after 16.3 s | d1 17, d2 13, d3 15, d4 15 "
            "(max 13.3 % off 1/4) | yes |") in lines
    assert ("| same backend through d1, d2, d3 alone in turn | 0 of 60 | - | d1 16, d2 20, d3 24 (max 20 % off 1/3) "
            "| yes |") in lines
    assert lines[-1].endswith("| 0 of 10 | takeover median 3.70 s (max 3.70 s; service gap median 1.20 s) | "
                              "1 active director (the standby takes none) | no: 3.70 s > 400 ms |")


# --- the kernel-lab part's glue and the one printout -------------------------------------------


def test_after_each_event_the_new_flows_are_counted_over_the_directors_the_router_then_has(tmp_path, monkeypatch):
    run = SpreadRun(tmp_path, new_flows=6)
    run.directors = {i: SimpleNamespace(ip=f"10.63.0.1{i}", name=f"d{i}") for i in (1, 2, 3)}
    asked: list[list[int]] = []

    def flow_map(ports):
        asked.append(list(ports))
        return {p: ("10.63.0.11", "10.63.0.12")[p % 2] for p in asked[-1]}

    monkeypatch.setattr(run.lab, "flow_map", flow_map)
    monkeypatch.setattr(run, "announced", lambda: {"10.63.0.11", "10.63.0.12"})
    failed = EventResult("silent failure of d3", 60, {}, 20, 0.3, leaves=True)
    back = EventResult("d3 heard again (rejoins)", 60, {}, 20, 1.7)

    def silent_failure(self, i):
        assert i == 3
        return [self.event(failed.event, None, set(), leaves=True), self.event(back.event, None, set(), leaves=False)]

    monkeypatch.setattr(ScaleOutRun, "event", lambda self, name, *a, **kw: failed if name == failed.event else back)
    monkeypatch.setattr(ScaleOutRun, "silent_failure", silent_failure)
    assert run.silent_failure(3) == [failed, back]
    assert asked[0] == list(range(SPREAD_PORT0, SPREAD_PORT0 + 6)) and SPREAD_PORT0 + 6 <= PORT0
    assert run.new_spreads == {failed.event: {"d1": 3, "d2": 3}, back.event: {"d1": 3, "d2": 3}}, \
        "d3 is not announced: it is no director of these new flows"
    assert run.kinds == {failed.event: "silent", back.event: "rejoin"}
    with pytest.raises(ValueError, match="new flows: 20001"):
        SpreadRun(tmp_path, new_flows=20001)


def test_one_printout_puts_every_table_under_one_header_with_commit_load_and_goals():
    doc = {"commit": "36cc2d9", "started": 1796659200.0, "ended": 1796659200.0 + 25 * 60, "cpus": 2,
           "load_start": [0.5, 0.4, 0.3], "load_end": [1.25, 1.0, 0.75],
           "host": {"drain (control socket)": [5.0, 6.0, 11.0], "agent SIGTERM (withdraw first)": [4.0, 5.0, 30.0],
                    "silent director (nftables drop), BFD 100 ms x 3": [227.0, 266.0, 412.0]},
           "anchor": [{"event": "edge director of 3 drained (next hop 3 of 3)", "connections": 150, "broken": 68,
                       "on_it": 42, "broken_survivors": 26, "spread": [42, 49, 59]}],
           "kernel_lab": {"scale_out": dict(LAB, events=[dict(e, detection_note="kill -9, then withdraw, Python "
                                                              "start-up included") if "kill" in e["event"] else e
                                                          for e in LAB["events"]], connections=60, new_flows=600,
                                            unexpected_session_drops=["15:34:58.001 d1 (Received: Cease) during x"]),
                          "backend": [{"how": "weight 0 (hadirector)", "connections": 3000, "opened": 3000,
                                       "live": 2014, "moved_live": 990, "broken_live": 0, "with_rs1": 986,
                                       "spread": [996, 1035, 969]}],
                          "pair": {"args": {"longs": 10}, "records": [pair_record(3.7)]}, "errors": ["pair: boom"],
                          "finished": True},
           "errors": []}
    text = full_report(doc)
    lines = text.splitlines()
    assert lines[0] == "hadirector scale-out benchmark (issue 14): commit 36cc2d9, 2026-12-07 16:00 UTC, 25 min"
    assert lines[1] == "machine: 2 CPUs; load average (1, 5, 15 min) at start 0.50 0.40 0.30, at end 1.25 1.00 0.75"
    assert lines[2] == f"goals: {GOALS}"
    assert text.count("| event | broken of established |") == 1, "one per-event table"
    assert "a backend fails while flows move (rs1 dies" in text and "keepalived pair (active/standby" in text
    assert "one client with 10 long-lived connections a run" in text
    table_end = lines.index("| **keepalived active/standby pair (bench/pair_failover, DR, sync daemon, one client with "
                            "10 long-lived connections a run)** | | | | |") + 2
    assert lines[table_end] == "", "a note right under a markdown table would read as one of its rows"
    assert "goal: drain (control socket): slowest of 3 11 ms <= 50 ms: met" in lines
    assert "goal: silent director (nftables drop), BFD 100 ms x 3: slowest of 3 412 ms <= 400 ms: NOT met" in lines
    assert "goal: agent SIGTERM (withdraw first): slowest of 3 30 ms <= 50 ms: met" in lines
    assert "| edge director of 3 drained (next hop 3 of 3) | 68 of 150 | 42 | 26 | 42 / 49 / 59 |" in lines
    assert "ERROR (kernel lab) pair: boom" in lines
    assert "time of agent kill -9 on d2: kill -9, then withdraw, Python start-up included" in lines
    assert any(line.startswith("BGP sessions of live directors the router dropped: 1") for line in lines)
    assert [line for line in lines if line.startswith("## ")] == [
        "## Per event: N active directors beside an active/standby pair (kernel lab: QEMU TCG, so times are an "
        "emulated guest's; the host's are in the control-plane table)",
        "## Control plane on this host (host namespaces, real BIRD and agents, fake IPVS): from the cause to the "
        "router's FIB without the director",
        "## The naive anchor: directors that terminate TCP themselves behind the same router",
        "## A backend fails while flows move: details"]


def test_a_partial_run_says_so_and_keeps_what_it_has():
    text = full_report({"commit": "x", "started": 0.0, "kernel_lab": {"scale_out": None, "errors": [],
                                                                       "finished": False},
                        "errors": ["host: RuntimeError: lab"]})
    assert "(did not finish)" in text.splitlines()[0]
    assert "the kernel-lab part did not finish: partial results" in text
    assert "ERROR host: RuntimeError: lab" in text


def test_the_options_refuse_new_flows_that_would_reach_the_long_lived_ports():
    assert parse(["--kernel-lab"]).new_flows == 1200
    with pytest.raises(SystemExit):
        parse(["--kernel-lab", "--new-flows", "20001"])


def test_a_kernel_lab_part_that_fails_is_recorded_and_the_next_part_runs(tmp_path, monkeypatch):
    ran = []

    def events(out, connections, new_flows):
        ran.append(("scale_out", connections, new_flows))
        return dict(LAB, connections=connections, new_flows=new_flows, unexpected_session_drops=[],
                    error="TimeoutError: connections [40001] answered no line for 40 s")

    def backend(connections):
        ran.append(("backend", connections))
        raise RuntimeError("no IPVS")

    monkeypatch.setattr(so, "scale_out_events", events)
    monkeypatch.setattr(so, "backend_fails", backend)
    monkeypatch.setattr(so, "pair_run", lambda out, cycles, adverts, commit: ran.append(("pair", cycles, adverts,
                                                                                         commit)) or {"records": []})
    a = parse(["--kernel-lab-inside", "--out", str(tmp_path), "--pair-cycles", "2", "--commit", "abc1234"])
    assert so.kernel_lab_inside(a) == 0
    assert ran == [("scale_out", 60, 1200), ("backend", 3000), ("pair", 2, "1", "abc1234")]
    doc = json.loads((tmp_path / so.LAB_JSON).read_text())
    assert doc["finished"] and doc["commit"] == "abc1234" and doc["backend"] is None and doc["pair"] == {"records": []}
    assert doc["errors"] == ["scale_out: the lab stopped early: TimeoutError: connections [40001] answered no line "
                             "for 40 s", "backend: RuntimeError: no IPVS"]
    assert "| agent kill -9 on d2 | 0 of 60 |" in full_report({"commit": "x", "started": 0.0, "kernel_lab": doc})


def test_one_run_writes_the_json_and_prints_every_part_even_after_a_failed_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(so, "run", lambda runs: {"drain (control socket)": [5.0] * runs})
    monkeypatch.setattr(so, "anchor", lambda connections: (_ for _ in ()).throw(RuntimeError("no BIRD")))
    monkeypatch.setattr(so, "kernel_lab", lambda a, out, commit: {"scale_out": dict(LAB, connections=60,
                                                                                   new_flows=600),
                                                                   "errors": [], "finished": True})
    assert so.one_run(parse(["--kernel-lab", "--runs", "2", "--out", str(tmp_path)])) == 1
    doc = json.loads((tmp_path / "scale_out.json").read_text())
    assert doc["host"] == {"drain (control socket)": [5.0, 5.0]} and doc["errors"] == ["anchor: RuntimeError: no BIRD"]
    assert len(doc["load_start"]) == 3 and len(doc["load_end"]) == 3 and doc["ended"] >= doc["started"]
    printed = capsys.readouterr().out
    assert "hadirector scale-out benchmark (issue 14): commit " in printed
    assert "| d4 joins (a 4th director) | 0 of 60 |" in printed and "ERROR anchor: RuntimeError: no BIRD" in printed
    assert so.main(["--table", str(tmp_path / "scale_out.json")]) == 0
    assert capsys.readouterr().out == full_report(doc) + "\n"
