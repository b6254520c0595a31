"""bench/scale_out.py's per-event table on recorded data: the new-flow spread and its
deviation from 1/N, the goals of issue 14 per kind of event, the rows from the
scale-out lab's events, the backend event and bench/pair_failover's keepalived pair."""

from __future__ import annotations

import pytest

from bench.scale_out import (Row, deviation, event_table, judge, rows_from_backend, rows_from_events,
                             rows_from_pair)

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
    assert "| clean stop of d1 (SIGTERM) | 0 of 60 | 35 ms (stall 100 ms) | d1 31, d2 29 (max 3.3 % off 1/2) | yes |" in lines
    assert "| d3 heard again (rejoins) | 0 of 60 | joins after 1.71 s | d1 16, d2 20, d3 24 (max 20 % off 1/3) | yes |" \
        in lines
    assert ("| d4 joins (a 4th director) | 0 of 60 | joins after 16.3 s | d1 17, d2 13, d3 15, d4 15 "
            "(max 13.3 % off 1/4) | yes |") in lines
    assert ("| same backend through d1, d2, d3 alone in turn | 0 of 60 | - | d1 16, d2 20, d3 24 (max 20 % off 1/3) "
            "| yes |") in lines
    assert lines[-1].endswith("| 0 of 10 | takeover median 3.70 s (max 3.70 s; service gap median 1.20 s) | "
                              "1 active director (the standby takes none) | no: 3.70 s > 400 ms |")
