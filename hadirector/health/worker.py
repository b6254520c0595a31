"""The checker worker: ``python -m hadirector.health.worker``, a ``CheckLoop`` on a pipe.

Theory of operation
-------------------
The agent's health runner, with ``health: {engine: worker}``, starts this process and
hands it its TCP and plain-HTTP checks (agent/health_worker.py); the checks then cost
the agent no CPU, only a frame now and then. Frames (``health.wire``) come in on stdin
(targets: ``put``, ``remove``, ``seed``) and go out on stdout (``batch``).

One loop: ``CheckLoop.run`` until the next heartbeat (every ``ROWS_EVERY``), ended
early ``FLUSH`` after its first transition, once ``ENOUGH`` results are in, or when
stdin is readable (``watch_input``); then the frames read are applied, then one batch is
written if the run had results: its transitions, results by kind, their latencies as
counts per histogram bucket (``wire.latency_counts``), inconclusive ones by reason, how
late the checks started, and some targets' rows (the status's counters and last
result). So a transition reaches the agent at most
``FLUSH`` after the result that decided it, while a quiet worker writes once a
heartbeat: at 100 checks/s a batch every 20 ms cost the agent ~150 us per check in
wake-ups and decoding (bench/health_checks.py, issue 13), more than the check. Every
``ROWS_EVERY`` a batch is written even when empty: the agent takes a worker silent for
longer than ``health_worker.HUNG_AFTER`` for hung.

Rows cost the agent ~3 us each to read and apply, as much as the rest of a check's
share, so a target's row goes out within ``ROWS_EVERY`` when what an operator reads in
it changed (the last result's verdict, reason or inconclusiveness, the state), and
otherwise at most every ``REFRESH_EVERY`` (its counters and the last result's time are
that stale in the status). The rows due go out a slice per run, spread over the next
``ROWS_EVERY``: 3,000 rows at once stalled the checks ~30 ms. A slice is at least
``ROWS_SLICE`` rows (~1 ms of work), so a few hundred targets' rows go in one or two
batches, not in one per ``FLUSH`` for a second.

EOF on stdin (the agent stopped, or died) ends the worker with exit code 0. A bad frame
ends it with exit code 2 and one line on stderr saying which frame and why; the agent
logs that line and the exit, and starts a new worker. A target the loop refuses (it
cannot run here) is skipped with a line on stderr. The worker ignores SIGINT: a Ctrl-C
at the agent's terminal reaches the whole process group, and the agent stops it
through its stdin.
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import os
import signal
import sys
import time
from collections.abc import Callable

from hadirector.health.checkloop import CheckLoop, LoopTarget
from hadirector.health.policy import HealthState
from hadirector.health.wire import (
    LATE_STEP, Batch, FrameError, FrameReader, Row, WireTarget, WireTransition, latency_counts,
)

FLUSH = 0.02            # seconds: the longest a transition waits in the worker
ENOUGH = 2048           # results per batch at most (a frame of ~40 KB; the cap is 1 MiB)
ROWS_SLICE = 128        # rows per batch at least, when that many are due
ROWS_EVERY = 1.0        # seconds: a changed row goes out within this; and the heartbeat
REFRESH_EVERY = 10.0    # seconds: an unchanged row (new counters only) at most this often
_READ = 1 << 16
_STATES = {s.value: s for s in HealthState}


class BadInput(Exception):
    """A frame from the agent could not be used; the message says which and why."""


class Worker:
    """The worker's state between runs: the loop, each target's generation, the
    targets checked since the last rows, and what was read but not applied yet."""

    def __init__(self, write: Callable[[bytes], None], clock: Callable[[], float] = time.monotonic,
                 warn: Callable[[str], None] = lambda line: None, warmup: float = 0.0) -> None:
        self.loop = CheckLoop([], clock=clock, warmup=warmup)
        self.clock = clock
        self._write = write
        self._warn = warn
        self._reader = FrameReader()
        self._gens: dict[int, int] = {}
        self._inbox: list[dict] = []
        self._touched: set[int] = set()
        self._rows_due: collections.deque[int] = collections.deque()     # ids whose row goes out next
        self._rows_queued: set[int] = set()
        self._rows_per_run = 1
        self._rows_at = clock() + ROWS_EVERY
        self._refresh_at = clock() + REFRESH_EVERY
        self._shown: dict[int, tuple] = {}       # id -> what its last row said (``_look``)
        self._stale: set[int] = set()            # checked since its last row, nothing new to see
        self.eof = False

    def feed(self, data: bytes) -> None:
        """Bytes from the agent (``b""``: EOF). ``BadInput`` on a bad frame."""
        if not data:
            self.eof = True
            if self._reader.pending:
                raise BadInput(f"input ended inside a frame ({self._reader.pending} bytes of it)")
            return
        try:
            self._inbox.extend(self._reader.feed(data))
        except FrameError as exc:
            raise BadInput(str(exc)) from None

    def apply_input(self) -> None:
        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            self._apply(msg)
        if any(m["t"] != "seed" for m in inbox):
            # The targets just made live until a later put or remove: out of the
            # collector's full passes, which walked them all (4 ms at 10,000 targets,
            # issue 13's lateness tail; agent/heap.py does the same for the agent). What
            # the last freeze kept and a remove dropped is collected here, once.
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    def _apply(self, msg: dict) -> None:
        kind, where = msg["t"], f"a {msg['t']!r} frame"
        try:
            if kind == "put":
                targets = msg.get("targets")
                if not isinstance(targets, list):
                    raise FrameError(f"{where}: 'targets' is not a list")
                for d in targets:
                    self._put(WireTarget.from_json(d, where))
            elif kind == "remove":
                ids = msg.get("ids")
                if not isinstance(ids, list):
                    raise FrameError(f"{where}: 'ids' is not a list")
                for i in ids:
                    self._gens.pop(i, None)
                    self._shown.pop(i, None)
                    self._stale.discard(i)
                    self.loop.remove(i)
            elif kind == "seed":
                i, state = msg.get("id"), _STATES.get(msg.get("state"))
                if state is None:
                    raise FrameError(f"{where}: state {msg.get('state')!r} is not one of {', '.join(_STATES)}")
                if self._gens.get(i) == msg.get("gen"):
                    self.loop.seed(i, state)
            else:
                raise FrameError(f"{where}: unknown message type")
        except FrameError as exc:
            raise BadInput(str(exc)) from None

    def close(self) -> None:
        """Cancel the running checks, close the epoll, give back the frozen objects."""
        self.loop.close()
        gc.unfreeze()

    def _put(self, t: WireTarget) -> None:
        try:
            self.loop.put(LoopTarget(t.id, t.check(), t.address, t.port), _STATES[t.state])
        except ValueError as exc:
            self._warn(f"target {t.id} skipped: {exc}")
            return
        self._gens[t.id] = t.gen

    def _queue_rows(self, now: float) -> None:
        """The rows to send over the next ``ROWS_EVERY`` (see the module's docstring)."""
        loop, shown, stale = self.loop, self._shown, self._stale
        due = []
        for i in self._touched:
            if i not in loop:
                continue
            look = _look(loop.health(i))
            if shown.get(i) != look:
                due.append(i)
            else:
                stale.add(i)
        self._touched = set()
        if now >= self._refresh_at:
            self._refresh_at = now + REFRESH_EVERY
            due.extend(stale)
            stale.clear()
        queued = self._rows_queued
        self._rows_due.extend(i for i in due if i not in queued)
        queued.update(due)
        self._rows_per_run = max(ROWS_SLICE, math.ceil(len(self._rows_due) * FLUSH / ROWS_EVERY))

    def _rows(self, now: float) -> list[Row]:
        """Up to a run's share of the rows due, as the targets are now."""
        loop, gens, due, queued = self.loop, self._gens, self._rows_due, self._rows_queued
        rows: list[Row] = []
        for _ in range(min(self._rows_per_run, len(due))):
            i = due.popleft()
            queued.discard(i)
            if i not in loop:
                continue                    # removed meanwhile
            h = loop.health(i)
            last = h.last
            if last is None:
                continue
            self._shown[i] = _look(h)
            self._stale.discard(i)
            next_at = loop.due(i)
            rows.append(Row(i, gens[i], h.checks, h.successes, h.failures, h.inconclusive, last.ok,
                            last.detail, last.elapsed, last.inconclusive, max(0.0, now - (h.last_at or now)),
                            None if next_at is None else max(0.0, next_at - now)))
        return rows

    def run_until(self) -> float:
        """When the next run ends at the latest: the heartbeat, or the next ``FLUSH``
        while rows go out a slice per run."""
        if self._rows_due:
            return self.clock() + FLUSH
        return self._rows_at

    def run_once(self, until: float) -> None:
        """One run of the loop, then the batch of what it did (if anything)."""
        report = self.loop.run(until, hurry=FLUSH, enough=ENOUGH)
        now = self.clock()
        gens = self._gens
        self._touched |= report.touched
        beat = now >= self._rows_at
        if beat:
            self._rows_at = now + ROWS_EVERY
            self._queue_rows(now)
        rows = self._rows(now) if self._rows_due else []
        if not (report.completed or report.started or beat or rows or report.transitions):
            return
        transitions = tuple(
            WireTransition(t.target, gens[t.target], t.new, t.reason, t.latency, t.count, max(0.0, now - t.at))
            for t in report.transitions if t.target in gens)
        inconclusive = {r: (n, key) for r, (n, key) in report.reasons.items()}
        late = collections.Counter(int(x / LATE_STEP) for x in report.lateness)
        counts, total = latency_counts(report.latencies) if report.latencies else ((), 0.0)
        batch = Batch(transitions, dict(report.kinds), inconclusive, counts, total, tuple(rows), late)
        for frame in batch.frames():
            self._write(frame)


def _look(h) -> tuple:
    """What an operator reads in a row, besides counters and times."""
    last = h.last
    return (h.state, None if last is None else (last.ok, last.detail, last.inconclusive))


def _write_all(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    return write


def serve(infd: int = 0, outfd: int = 1, warmup: float = 0.0) -> int:
    """Run until EOF on ``infd``; the exit code. ``warmup``: spread the first check of
    each new target over that long (``CheckLoop``)."""
    warn = _stderr_line
    worker = Worker(_write_all(outfd), warn=warn, warmup=warmup)
    bad: list[str] = []

    def on_readable() -> None:
        try:
            worker.feed(os.read(infd, _READ))
        except BadInput as exc:
            bad.append(str(exc))

    worker.loop.watch_input(infd, on_readable)
    try:
        # Up: an empty batch now tells the agent so (its watchdog gives a start longer
        # than it gives a silence once the worker runs).
        for frame in Batch().frames():
            worker._write(frame)
        while True:
            if bad:
                warn(f"bad frame from the agent: {bad[0]}")
                return 2
            try:
                worker.apply_input()
            except BadInput as exc:
                warn(f"bad frame from the agent: {exc}")
                return 2
            if worker.eof:
                return 0
            worker.run_once(worker.run_until())
    except BrokenPipeError:
        return 0                        # the agent is gone: nobody to report to
    finally:
        worker.close()


def _stderr_line(line: str) -> None:
    try:
        os.write(2, (line.replace("\n", " ") + "\n").encode(errors="replace"))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ap = argparse.ArgumentParser(prog="python -m hadirector.health.worker",
                                 description="hadirector's checker worker: frames on stdin and stdout")
    ap.add_argument("--warmup", type=float, default=0.0, help="spread first checks over this long (s)")
    args = ap.parse_args(argv)
    return serve(warmup=max(0.0, args.warmup))


if __name__ == "__main__":
    sys.exit(main())
