"""When each health check is due (sans-IO).

Theory of operation
-------------------
``CheckSchedule`` keeps one deadline per target in a calendar queue (below). The shell asks for
``next_deadline()``, arms a single timer for it, and when the timer fires takes
``pop_due(now)`` -- the targets whose checks start now. When a check completes the
shell calls ``finished(target, now, retry=...)`` and re-arms its timer. There is no
sleep per target: ten thousand targets cost one timer.

Timing rules (``HealthCheck`` fields):

* A check is due ``interval`` after the previous one *started*, so a target is checked
  once per interval however long its probe takes -- but never while its previous probe
  still runs (a check that times out after 3 s with a 1 s interval runs again at once,
  not three times over).
* ``retry_delay``: after a failure that has not (yet) brought the server down, the next
  check is due ``retry_delay`` after the failure instead -- confirm quickly, as
  keepalived's ``delay_before_retry``. Once the server is DOWN the normal interval
  applies again, so dead servers are not hammered. The caller says which case it is
  (``retry=True``); it knows the health state, the schedule does not.
* Checks of one target never overlap, so when ``timeout`` exceeds ``interval`` a hanging
  server is declared down after ``fall x timeout``, not ``fall x interval + timeout``.
* ``jitter``: every deadline (the first one too) gets a uniform random delay in
  ``[0, jitter]`` from a seeded RNG, so tests are reproducible and a fleet configured
  with one interval does not probe in lock-step.

Deadlines fall on a grid (``grid``, issue 13): each one is rounded to the nearest
multiple of it, so checks due near one another start together, in one wake-up of the
checker and, as they end together, mostly in one more. At 100 checks a second, 2 ms
apart, nearly every check cost the checker two wake-ups of its own; on a 20 ms grid
two checks share them: in the kernel lab the runner went from 1.31x keepalived's CPU
per TCP check at 100 servers to 0.54x (bench/README.md, session 11). The grid follows
the rate: ``grid_for`` keeps about ``PER_POINT`` checks per grid point, from ``BUCKET``
(high rates, where more at once would start late) up to ``GRID_MAX``. Rounding to the
nearest point, not up, keeps a check due one interval after the previous one started
on the same point however late (within half a point) it started: no drift. A check
starts at most half a point before the exact time its rules give, never before its
deadline.

Deadlines are filed in buckets ``BUCKET`` seconds wide (a calendar queue): filing one is
a dict lookup and a list append, and ``pop_due`` sorts only the few rows of each bucket
it takes, where a heap of every target cost a push and a pop of ~15 tuple comparisons
each (2.7 us per check at 20,000 targets, issue 13). The buckets themselves are in a
small heap. Deadlines stay exact and ``pop_due`` keeps deadline order; a row later than
``now`` stays filed.

Every filed row is live: it is the one row (``_Entry.row``) of a target whose check is
not running. A row leaves its bucket when ``pop_due`` takes it, and when its target is
removed or re-filed (``retune``, ``add`` again, ``finished`` twice): rare calls, which
pay a search of one bucket. So ``next_deadline`` is the earliest row of the first
bucket, and ``pop_due`` takes every row up to ``now``, neither of them checking a row
(issue 13: per check, that check was most of their cost). A bucket emptied that way
stays filed, empty, until one of them reaches it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Hashable
from dataclasses import dataclass

from hadirector.model import HealthCheck

# Any hashable names a target here; the runner uses small ints (cheap to hash).
Target = Hashable
# Width of a calendar bucket, seconds: the health runner's timer grid, so a tick takes
# about one bucket.
BUCKET = 0.002

Row = tuple[float, int, Target]       # deadline, seq (unique: ties never compare targets), target

# The deadline grid: at most this coarse (a check starts at most half of it before its
# exact time), and about this many checks per grid point at the checks' rate.
GRID_MAX = 0.020
PER_POINT = 20


def grid_for(rate: float) -> float:
    """The deadline grid for ``rate`` checks a second: a multiple of ``BUCKET`` (the
    checkers' wake-up tick) from ``BUCKET`` to ``GRID_MAX``."""
    steps = int(PER_POINT / rate / BUCKET) if rate > 0 else int(GRID_MAX / BUCKET)
    return BUCKET * max(1, min(int(round(GRID_MAX / BUCKET)), steps))


@dataclass(slots=True)
class _Entry:
    interval: float
    jitter: float
    retry_delay: float | None
    row: Row | None = None      # its next check's (deadline, ...) as filed; None while one runs
    started: float | None = None


class CheckSchedule:
    """``grid``: None follows the rate (``grid_for``), 0 keeps deadlines exact, a number
    is a fixed grid."""

    def __init__(self, seed: int | None = None, bucket: float = BUCKET, grid: float | None = 0.0) -> None:
        self._rng = random.Random(seed)
        self._width = bucket
        self._auto = grid is None
        self.grid = 0.0 if grid is None else max(0.0, grid)
        self._rate = 0.0                             # checks a second, every target at its interval
        self._buckets: dict[int, list[Row]] = {}     # bucket number -> rows, unsorted
        self._keys: list[int] = []                   # heap of the bucket numbers filed
        self._seq = itertools.count()
        self._entries: dict[Target, _Entry] = {}

    def _jitter(self, e: _Entry) -> float:
        return self._rng.uniform(0.0, e.jitter) if e.jitter > 0 else 0.0

    def _push(self, target: Target, e: _Entry, deadline: float) -> float:
        """File ``target``'s next check at ``deadline`` (on the grid), in place of its
        row if it has one."""
        grid = self.grid
        if grid:
            deadline = round(deadline / grid) * grid
        if e.row is not None:
            self._unfile(e.row)
        e.row = row = (deadline, next(self._seq), target)
        k = int(deadline // self._width)
        rows = self._buckets.get(k)
        if rows is None:
            self._buckets[k] = [row]
            heapq.heappush(self._keys, k)
        else:
            rows.append(row)
        return deadline

    def _unfile(self, row: Row) -> None:
        # Its bucket is filed: a bucket goes only once empty. An emptied one stays.
        self._buckets[int(row[0] // self._width)].remove(row)

    # --- membership --------------------------------------------------------------

    def add(self, target: Target, check: HealthCheck, now: float, warmup: float = 0.0) -> float:
        """Schedule a new target; its first check is due now (plus jitter).

        ``warmup`` (keepalived's name) delays the first check by up to that much more,
        uniformly: started together, many targets then stay spread over the interval
        instead of probing in one burst every interval.
        """
        old = self._entries.get(target)
        if old is not None and old.row is not None:
            self._unfile(old.row)               # added again: the new entry's row replaces it
        e = _Entry(check.interval, max(0.0, check.jitter), check.retry_delay)
        self._entries[target] = e
        self._rated(old, e)
        spread = self._rng.uniform(0.0, warmup) if warmup > 0 else 0.0
        return self._push(target, e, now + spread + self._jitter(e))

    def retune(self, target: Target, check: HealthCheck, now: float) -> None:
        """New timing for a known target (reload); a shorter interval takes effect now."""
        e = self._entries[target]
        shorter = check.interval < e.interval
        self._rated(e, None)
        e.interval, e.jitter, e.retry_delay = check.interval, max(0.0, check.jitter), check.retry_delay
        self._rated(None, e)
        if e.row is not None and shorter:       # not running
            base = e.started if e.started is not None else now
            self._push(target, e, min(e.row[0], max(now, base + e.interval) + self._jitter(e)))

    def remove(self, target: Target) -> None:
        e = self._entries.pop(target, None)
        if e is not None:
            self._rated(e, None)
            if e.row is not None:
                self._unfile(e.row)

    def _rated(self, gone: _Entry | None, new: _Entry | None) -> None:
        """Keep the rate (and a following grid) as targets come, go and change."""
        if gone is not None and gone.interval > 0:
            self._rate -= 1.0 / gone.interval
        if new is not None and new.interval > 0:
            self._rate += 1.0 / new.interval
        if not self._entries:
            self._rate = 0.0                    # no float residue once empty
        if self._auto:
            self.grid = grid_for(self._rate)

    def __contains__(self, target: object) -> bool:
        return target in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # --- the timer ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest deadline of a target not being checked, or None."""
        keys, buckets = self._keys, self._buckets
        while keys:
            rows = buckets[keys[0]]
            if rows:
                return min(rows)[0]             # every filed row is live
            del buckets[heapq.heappop(keys)]
        return None

    def pop_due(self, now: float) -> list[Target]:
        """Targets whose checks start now, earliest first; they count as running."""
        due: list[Target] = []
        keys, buckets, entries = self._keys, self._buckets, self._entries
        last = now // self._width
        while keys and keys[0] <= last:
            rows = buckets[keys[0]]
            if len(rows) > 1:
                rows.sort()
            before = len(due)
            for row in rows:
                if row[0] > now:                # only in the bucket that holds ``now``
                    del rows[:len(due) - before]
                    return due
                target = row[2]
                e = entries[target]             # every filed row is live
                e.row, e.started = None, now
                due.append(target)
            del buckets[heapq.heappop(keys)]
        return due

    def finished(self, target: Target, now: float, retry: bool = False) -> float | None:
        """A target's check completed at ``now``; returns its next deadline.

        Returns None for a target removed while its check ran.
        """
        e = self._entries.get(target)
        if e is None:
            return None
        if retry and e.retry_delay is not None:
            base = now + e.retry_delay
        else:
            base = (now if e.started is None else e.started) + e.interval
            if base < now:
                base = now
        if e.jitter > 0:                        # ``_jitter``, inlined: once per check
            base += self._rng.uniform(0.0, e.jitter)
        return self._push(target, e, base)      # (finished twice: its row is replaced)

    def deadline(self, target: Target) -> float | None:
        e = self._entries.get(target)
        return None if e is None or e.row is None else e.row[0]
