"""The checker worker's loop in this process (``health.worker.Worker``): frames in, real
checks against real loopback listeners, the batches it writes read back.

Rows: a row goes out within ``ROWS_EVERY`` when what it shows changed, otherwise at
most every ``REFRESH_EVERY``; the rows due are spread over runs.
"""

from __future__ import annotations

import socket
import time

import pytest

import hadirector.health.worker as worker_module
from hadirector.health.wire import Batch, FrameReader, put_frames, remove_frames, wire_target
from hadirector.health.worker import BadInput, Worker
from hadirector.model import HealthCheck, HealthState, TcpProbe

from .servers import closed_port

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN


@pytest.fixture
def fast_rows(monkeypatch):
    monkeypatch.setattr(worker_module, "ROWS_EVERY", 0.1)
    # Well past the first test's first 0.5 s: under load its refresh came early enough
    # (0.6 s after the worker was made) to send a second row inside them.
    monkeypatch.setattr(worker_module, "REFRESH_EVERY", 1.2)


class Out:
    def __init__(self):
        self.reader = FrameReader()
        self.batches: list[Batch] = []

    def __call__(self, frame: bytes) -> None:
        self.batches += [Batch.from_json(m) for m in self.reader.feed(frame)]

    def rows(self, i):
        return [r for b in self.batches for r in b.rows if r.id == i]


def tcp(interval=0.02):
    return HealthCheck(TcpProbe(), interval=interval, timeout=0.5, rise=1, fall=1)


def run(w: Worker, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        w.apply_input()
        w.run_once(min(end, time.monotonic() + worker_module.FLUSH))


def test_a_healthy_targets_row_goes_out_when_it_first_shows_something_then_only_at_refresh(fast_rows):
    out = Out()
    with socket.create_server(("127.0.0.1", 0)) as srv:
        w = Worker(out)
        for f in put_frames([wire_target(1, 1, tcp(), "127.0.0.1", srv.getsockname()[1], UNKNOWN)]):
            w.feed(f)
        try:
            run(w, 0.5)                 # first result at once: one row; nothing new after it
            assert len(out.rows(1)) == 1
            first = out.rows(1)[0]
            run(w, 1.0)                 # past REFRESH_EVERY: the counters again
        finally:
            w.close()
    rows = out.rows(1)
    assert len(rows) == 2
    assert rows[1].checks > first.checks and rows[1].ok and rows[1].detail == "connected"


def test_a_new_verdict_goes_out_within_rows_every(fast_rows):
    out = Out()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    w = Worker(out)
    for f in put_frames([wire_target(1, 1, tcp(), "127.0.0.1", port, UNKNOWN)]):
        w.feed(f)
    try:
        # Up first (one check, at once on a quiet machine; a loaded one may take longer
        # than any fixed wait, and the first verdict would then be the refusal).
        end = time.monotonic() + 10.0
        while not any(r.detail == "connected" for r in out.rows(1)):
            assert time.monotonic() < end, "the target never came up"
            run(w, 0.02)
        srv.close()                     # refused from now on
        t0 = time.monotonic()
        while not any(r.detail == "refused" for r in out.rows(1)):
            # ROWS_EVERY and slack for a loaded machine, still short of REFRESH_EVERY.
            assert time.monotonic() - t0 < 0.1 + 1.0, "no row for the new verdict"
            run(w, 0.02)
    finally:
        w.close()
    up, down = [t for b in out.batches for t in b.transitions]
    assert (up.new, down.id, down.new, down.reason) == (UP, 1, DOWN, "refused")


def test_rows_due_are_spread_over_runs_not_written_in_one(fast_rows):
    out = Out()
    port = closed_port()
    w = Worker(out)
    targets = [wire_target(i, 1, tcp(interval=0.05), "127.0.0.1", port, UNKNOWN) for i in range(300)]
    for f in put_frames(targets):
        w.feed(f)
    try:
        end = time.monotonic() + 5.0            # bounded; ~0.3 s on a quiet machine
        while sum(len(b.rows) for b in out.batches) < 300 and time.monotonic() < end:
            run(w, 0.1)
    finally:
        w.close()
    per_batch = [len(b.rows) for b in out.batches if b.rows]
    assert sum(per_batch) >= 300 and max(per_batch) < 300


def test_a_removed_target_sends_no_more_rows_nor_transitions(fast_rows):
    out = Out()
    port = closed_port()
    w = Worker(out)
    for f in put_frames([wire_target(1, 1, tcp(), "127.0.0.1", port, UNKNOWN)]):
        w.feed(f)
    try:
        run(w, 0.3)
        for f in remove_frames([1]):
            w.feed(f)
        run(w, 0.02)
        n = len(out.batches)
        run(w, 0.8)
    finally:
        w.close()
    assert all(not b.rows and not b.transitions and not b.kinds for b in out.batches[n:])
    assert len(out.batches) > n                     # the heartbeat goes on


def test_a_frame_cut_at_eof_is_refused_saying_so():
    w = Worker(lambda frame: None)
    (f,) = put_frames([wire_target(1, 1, tcp(), "127.0.0.1", 80, UNKNOWN)])
    try:
        w.feed(f[:10])
        with pytest.raises(BadInput, match=r"input ended inside a frame \(10 bytes of it\)"):
            w.feed(b"")
    finally:
        w.close()
