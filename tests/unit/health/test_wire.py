"""The agent <-> checker worker wire (health/wire.py): frames, targets, diffs, batches.

Pure: bytes in, messages out; no process, no clock.
"""

from __future__ import annotations

import json
import struct

import pytest

from hadirector.health.wire import (
    CHUNK, LATENCY_BOUNDS, MAX_FRAME, Batch, FrameError, FrameReader, Row, WireTarget, WireTransition, diff, encode,
    latency_counts, put_frames, runs_in_worker, wire_target,
)
from hadirector.model import HealthCheck, HealthState, HttpProbe, ScriptProbe, StatusRange, TcpProbe

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN


def raw(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def target(i: int = 1, **kw) -> WireTarget:
    check = kw.pop("check", HealthCheck(TcpProbe(), interval=1.0, timeout=0.5))
    return wire_target(i, kw.pop("gen", 1), check, kw.pop("address", "127.0.0.1"), kw.pop("port", 80),
                       kw.pop("state", UNKNOWN))


# --- frames --------------------------------------------------------------------------


def test_a_frame_split_anywhere_is_read_whole_once_complete():
    data = encode({"t": "seed", "id": 1}) + encode({"t": "remove", "ids": [2, 3]})
    for cut in range(len(data) + 1):
        r = FrameReader()
        got = r.feed(data[:cut]) + r.feed(data[cut:])
        assert got == [{"t": "seed", "id": 1}, {"t": "remove", "ids": [2, 3]}], cut
        assert r.pending == 0


def test_a_length_over_the_limit_is_refused_before_its_body_is_read():
    r = FrameReader()
    with pytest.raises(FrameError, match=rf"frame 1: length {MAX_FRAME + 1} exceeds the limit"):
        r.feed(struct.pack(">I", MAX_FRAME + 1))


@pytest.mark.parametrize("body, match", [
    (b"{not json", r"frame 1: not JSON"),
    (b"\xff\xfe", r"frame 1: not JSON"),
    (b"[1, 2]", r"frame 1: not an object with a string 't'"),
    (b'{"x": 1}', r"frame 1: not an object with a string 't'"),
])
def test_a_body_that_is_not_a_typed_object_is_refused_naming_the_frame(body, match):
    r = FrameReader()
    r.feed(encode({"t": "seed"}))
    with pytest.raises(FrameError, match=match.replace("frame 1", "frame 2")):
        r.feed(raw(body))


def test_encoding_a_frame_over_the_limit_is_refused():
    with pytest.raises(FrameError, match=r"'put' frame of \d+ bytes exceeds the limit"):
        encode({"t": "put", "x": "a" * MAX_FRAME})


def test_encoding_nan_is_refused():
    with pytest.raises(FrameError, match="cannot encode a 'batch' frame"):
        encode({"t": "batch", "lat": [float("nan")]})


# --- targets -------------------------------------------------------------------------


def test_tcp_and_plain_http_run_in_the_worker_and_nothing_else_does():
    assert runs_in_worker(HealthCheck(TcpProbe()))
    assert runs_in_worker(HealthCheck(HttpProbe()))
    assert not runs_in_worker(HealthCheck(HttpProbe(tls=True)))
    assert not runs_in_worker(HealthCheck(ScriptProbe(("true",))))
    assert not runs_in_worker(None)


def test_an_http_target_survives_the_wire_and_gives_back_its_check():
    check = HealthCheck(HttpProbe(path="/h", status_codes=(StatusRange(200, 299), StatusRange(301, 301)),
                                  body_regex="ok", digest="abc", host="h.example"),
                        interval=2.0, timeout=1.5, rise=3, fall=4, initial=UP, jitter=0.1, retry_delay=0.5)
    t = target(7, check=check, gen=3, port=8080, state=DOWN)
    back = WireTarget.from_json(json.loads(json.dumps(t.to_json())), "test")
    assert back == t
    assert back.check() == check
    assert back.state == "down"


@pytest.mark.parametrize("field, value, match", [
    ("kind", "dns", r"target 1: kind 'dns' is not tcp or http"),
    ("port", 0, r"target 1: port 0 is not 1-65535"),
    ("port", "80", r"target 1: 'port' is str, not int"),
    ("timeout", -1, r"target 1: 'timeout' is -1, not a number >= 0"),
    ("rise", 0, r"target 1: rise 0 / fall 1 below 1"),
    ("state", "sideways", r"target 1: state 'sideways' is not one of up, down, unknown"),
    ("status", [[200]], r"target 1: status range \[200\] is not \[low, high\]"),
    ("id", True, r"'id' is bool, not int"),
])
def test_a_bad_target_field_is_refused_naming_the_target_and_field(field, value, match):
    d = target(1, check=HealthCheck(TcpProbe(), fall=1)).to_json()
    d[field] = value
    with pytest.raises(FrameError, match=match):
        WireTarget.from_json(d, "a 'put' frame")


def test_diff_sends_new_and_changed_targets_and_removes_the_gone_ones():
    a, b, c = target(1), target(2), target(3)
    old = {1: a, 2: b, 3: c}
    b2 = target(2, port=81)
    d = target(4)
    put, gone = diff(old, {1: a, 2: b2, 4: d})
    assert put == [b2, d]
    assert gone == [3]


def test_diff_does_not_resend_a_target_whose_only_change_is_its_state():
    a = target(1, state=UNKNOWN)
    assert diff({1: a}, {1: target(1, state=UP)}) == ([], [])


def test_diff_of_equal_sets_is_empty_and_a_timing_change_is_sent():
    a = target(1)
    assert diff({1: a}, {1: a}) == ([], [])
    slower = target(1, check=HealthCheck(TcpProbe(), interval=9.0, timeout=0.5))
    assert diff({1: a}, {1: slower}) == ([slower], [])


def test_many_targets_go_in_frames_of_at_most_chunk_each_all_under_the_limit():
    targets = [target(i) for i in range(2 * CHUNK + 1)]
    frames = put_frames(targets)
    assert len(frames) == 3
    r = FrameReader()
    got = [WireTarget.from_json(d, "t") for f in frames for m in r.feed(f) for d in m["targets"]]
    assert got == targets
    assert all(len(f) <= MAX_FRAME for f in frames)


# --- batches -------------------------------------------------------------------------


def test_a_batch_survives_the_wire():
    b = Batch((WireTransition(3, 2, DOWN, "refused", 0.000123, 3, 0.004),),
              {"ok": 5, "fail": 3}, {"emfile": (4, 9)}, *latency_counts((0.001, 0.002, 30.0)),
              (Row(3, 2, 10, 0, 3, 4, False, "refused", 0.0001, False, 0.004, 0.9),
               Row(9, 1, 1, 1, 0, 4, False, "emfile", 0.0, True, 0.1, None)), {0: 7, 12: 1})
    r = FrameReader()
    (msg,) = [m for f in b.frames() for m in r.feed(f)]
    assert Batch.from_json(msg) == b


def test_latencies_are_counted_in_the_agents_histogram_buckets_le_as_observe_does():
    from hadirector.api.metrics import Histogram
    values = (0.0005, 0.0006, 0.001, 0.3, 10.0, 11.0)
    h, merged = Histogram(), Histogram()
    for x in values:
        h.observe(x)
    merged.merge(*latency_counts(values))
    assert merged.snapshot() == h.snapshot()
    counts, total = latency_counts(values)
    assert counts[0] == 1 and counts[-1] == 1 and total == sum(values)


def test_a_batch_with_more_rows_than_a_chunk_goes_in_several_frames():
    rows = tuple(Row(i, 1, 1, 1, 0, 0, True, "connected", 0.0, False, 0.0, 1.0) for i in range(CHUNK + 5))
    frames = Batch(kinds={"ok": 1}, rows=rows).frames()
    assert len(frames) == 2
    r = FrameReader()
    got = [Batch.from_json(m) for f in frames for m in r.feed(f)]
    assert sum(len(b.rows) for b in got) == CHUNK + 5
    assert got[0].kinds == {"ok": 1} and got[1].kinds == {}


@pytest.mark.parametrize("patch, match", [
    ({"tr": [[1, 1, "up", "x", 0.1, 1]]}, r"transition .* is not a list of 7"),
    ({"tr": [[1, 1, "left", "x", 0.1, 1, 0.0]]}, r"transition of 1: state 'left'"),
    ({"kinds": {"ok": -1}}, r"count of 'ok' is -1"),
    ({"inc": {"emfile": 3}}, r"inconclusive 'emfile' is 3, not \[count, id\]"),
    ({"lat": ["fast"] * (len(LATENCY_BOUNDS) + 1)}, r"latency counts \['fast', .* are not 15 integers >= 0"),
    ({"lat": [1, 2]}, r"latency counts \[1, 2\] are not 15 integers >= 0"),
    ({"lat": [0] * len(LATENCY_BOUNDS) + [-1]}, r"latency counts .* are not 15 integers >= 0"),
    ({"lsum": -1.0}, r"'lsum' is -1.0, not a number >= 0"),
    ({"rows": [[1, 1, 1]]}, r"row \[1, 1, 1\] is not a list of 12"),
    ({"rows": None}, r"'rows' is NoneType, not list"),
    ({"late": {"-1": 2}}, r"lateness '-1': 2 is not a step and a count"),
])
def test_a_bad_batch_is_refused_naming_the_field(patch, match):
    msg = {"t": "batch", "tr": [], "kinds": {}, "inc": {}, "lat": [], "lsum": 0.0, "rows": [], "late": {}, **patch}
    with pytest.raises(FrameError, match=match):
        Batch.from_json(msg)
