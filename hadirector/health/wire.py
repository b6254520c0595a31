"""What the agent and its checker worker say over a pipe (sans-IO): frames, targets, diffs.

Theory of operation
-------------------
The agent's health runner can run its TCP and plain-HTTP checks in a worker process
(``python -m hadirector.health.worker``, a ``checkloop.CheckLoop``): the agent writes
targets to the worker's stdin, the worker writes batches to its stdout. Both ways a
message is one *frame*: a 4-byte big-endian length, then that many bytes of a JSON
object whose ``"t"`` names the message. A frame is at most ``MAX_FRAME`` bytes; a
longer length, a body that is not JSON or not an object of a known type, or a field of
the wrong type is a ``FrameError`` naming the frame and the field -- the reader keeps
no partial state past it (the stream is unusable and the side reading it says why).

Agent -> worker:

* ``{"t": "put", "targets": [...]}``: targets to add, or to replace when their id is
  known (``WireTarget``; ``diff`` computes what a reload sends). ``state`` is the
  agent's state of the target: a new (or restarted) worker starts it there, so a
  worker restart changes no state.
* ``{"t": "remove", "ids": [...]}``.
* ``{"t": "seed", "id": ..., "gen": ..., "state": ...}``: ``HealthPolicy.seed`` (a
  state found in the kernel, for a target with no result yet).

Worker -> agent, one ``{"t": "batch", ...}`` per run of its loop with something in it
(``Batch``): the transitions (id, gen, new state, reason, latency, count, age), the
count of results by kind, inconclusive results by reason (with one target id each, for
the log line), the latency of each conclusive result, how late the checks started
(counts per ``LATE_STEP``), and every ``ROWS_EVERY`` seconds the per-target counters of
the targets checked since (``Row``). Times are ages,
seconds before the frame was written: the reader puts them on its own clock.

Nothing here reads a clock or touches a descriptor.
"""

from __future__ import annotations

import json
import math
import struct
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from hadirector.api.metrics import DEFAULT_LATENCY_BUCKETS
from hadirector.model import HealthCheck, HealthState, HttpProbe, StatusRange, TcpProbe

# A frame's body, bytes. Senders split long lists (``CHUNK`` items a frame) to stay
# far below it: a target is ~300 bytes, a row ~100.
MAX_FRAME = 1 << 20
CHUNK = 1000
# A batch's lateness (check start - its deadline) is counted in steps of this (seconds).
LATE_STEP = 0.0001
# Probe latencies travel as counts per bucket of the agent's histogram (and their sum):
# every latency as a number cost the agent ~40 bytecodes per check to check and observe,
# the most of its share under emulation (the kernel lab, issue 13).
LATENCY_BOUNDS = DEFAULT_LATENCY_BUCKETS


def latency_counts(latencies: Iterable[float]) -> tuple[tuple[int, ...], float]:
    """``latencies`` as (count per bucket of ``LATENCY_BOUNDS``, then over the last; sum)."""
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    total = 0.0
    bounds = LATENCY_BOUNDS
    for x in latencies:
        counts[bisect_left(bounds, x)] += 1     # "le" buckets, as Histogram.observe
        total += x
    return tuple(counts), total
HEADER = struct.Struct(">I")

_STATES = {s.value: s for s in HealthState}


class FrameError(ValueError):
    """A frame that cannot be read or written; the message names the frame and field."""


# --- frames ------------------------------------------------------------------------


def encode(msg: Mapping[str, Any]) -> bytes:
    """One frame: the length, then ``msg`` as compact JSON. ``FrameError`` when it
    exceeds ``MAX_FRAME`` or holds what JSON cannot (NaN, an object)."""
    try:
        body = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise FrameError(f"cannot encode a {msg.get('t')!r} frame: {exc}") from None
    if len(body) > MAX_FRAME:
        raise FrameError(f"a {msg.get('t')!r} frame of {len(body)} bytes exceeds the limit of {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Bytes in (``feed``), messages out; keeps the partial frame between feeds."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.frames = 0                 # frames read so far (named in errors)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > self._max:
                buf.clear()
                raise FrameError(f"frame {self.frames + 1}: length {n} exceeds the limit of {self._max} bytes")
            if len(buf) - pos - HEADER.size < n:
                break
            body = bytes(buf[pos + HEADER.size:pos + HEADER.size + n])
            pos += HEADER.size + n
            self.frames += 1
            try:
                msg = json.loads(body)
            except (UnicodeDecodeError, ValueError) as exc:
                buf.clear()
                raise FrameError(f"frame {self.frames}: not JSON ({exc})") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                buf.clear()
                raise FrameError(f"frame {self.frames}: not an object with a string 't'")
            out.append(msg)
        del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (at EOF: a truncated frame)."""
        return len(self._buf)


# --- field checks (a bad frame names its field) ------------------------------------


def _need(msg: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    v = msg.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise FrameError(f"{where}: {key!r} is {type(v).__name__}, not {_names(kind)}")
    return v


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _number(msg: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> float | None:
    v = msg.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise FrameError(f"{where}: {key!r} is {v!r}, not a number >= 0")
    return float(v)


def _state(v: Any, where: str) -> HealthState:
    s = _STATES.get(v) if isinstance(v, str) else None
    if s is None:
        raise FrameError(f"{where}: state {v!r} is not one of {', '.join(_STATES)}")
    return s


# --- targets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireTarget:
    """One TCP or plain-HTTP check as the worker needs it: addresses as text, the
    check's timing and rise/fall, the agent's state of it. ``gen`` is the runner's
    probe generation: a result of an older one is stale."""

    id: int
    gen: int
    kind: str                       # "tcp" | "http"
    address: str
    port: int
    timeout: float
    interval: float
    rise: int
    fall: int
    initial: str
    state: str                      # the agent's state when sent
    jitter: float = 0.0
    retry_delay: float | None = None
    bind_to: str | None = None
    path: str = "/"
    status: tuple[tuple[int, int], ...] = ((200, 200),)
    body_regex: str | None = None
    digest: str | None = None
    host: str | None = None

    def same_but_state(self, other: WireTarget) -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in _COMPARED)

    def to_json(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _FIELDS}
        d["status"] = [list(r) for r in self.status]
        return d

    @classmethod
    def from_json(cls, d: Any, where: str) -> WireTarget:
        if not isinstance(d, dict):
            raise FrameError(f"{where}: a target is {type(d).__name__}, not an object")
        w = f"{where}, target {d.get('id')!r}"
        kind = d.get("kind")
        if kind not in ("tcp", "http"):
            raise FrameError(f"{w}: kind {kind!r} is not tcp or http")
        status = _need(d, "status", list, w)
        ranges = []
        for r in status:
            if (not isinstance(r, list) or len(r) != 2
                    or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 999 for c in r)):
                raise FrameError(f"{w}: status range {r!r} is not [low, high] of codes 100-999")
            ranges.append((r[0], r[1]))
        port = _need(d, "port", int, w)
        if not 0 < port < 65536:
            raise FrameError(f"{w}: port {port} is not 1-65535")
        rise, fall = _need(d, "rise", int, w), _need(d, "fall", int, w)
        if rise < 1 or fall < 1:
            raise FrameError(f"{w}: rise {rise} / fall {fall} below 1")
        _state(d.get("initial"), w)
        _state(d.get("state"), w)
        return cls(
            id=_need(d, "id", int, w), gen=_need(d, "gen", int, w), kind=kind,
            address=_need(d, "address", str, w), port=port,
            timeout=_number(d, "timeout", w), interval=_number(d, "interval", w),
            rise=rise, fall=fall, initial=d["initial"], state=d["state"],
            jitter=_number(d, "jitter", w), retry_delay=_number(d, "retry_delay", w, optional=True),
            bind_to=_need(d, "bind_to", (str, type(None)), w), path=_need(d, "path", str, w),
            status=tuple(ranges), body_regex=_need(d, "body_regex", (str, type(None)), w),
            digest=_need(d, "digest", (str, type(None)), w), host=_need(d, "host", (str, type(None)), w),
        )

    def check(self) -> HealthCheck:
        """The model's check again (the probes and the policy read that)."""
        probe = TcpProbe() if self.kind == "tcp" else HttpProbe(
            path=self.path, status_codes=tuple(StatusRange(lo, hi) for lo, hi in self.status),
            body_regex=self.body_regex, digest=self.digest, host=self.host)
        return HealthCheck(probe, interval=self.interval, timeout=self.timeout, rise=self.rise,
                           fall=self.fall, initial=_STATES[self.initial], jitter=self.jitter,
                           retry_delay=self.retry_delay, bind_to=self.bind_to)

    def probe_identity(self) -> tuple:
        """What decides what a check observes (a change resets its counts)."""
        return tuple(getattr(self, f) for f in _PROBE)


_FIELDS = tuple(f.name for f in fields(WireTarget))
_COMPARED = tuple(f for f in _FIELDS if f != "state")
_PROBE = ("gen", "kind", "address", "port", "timeout", "bind_to", "path", "status", "body_regex",
          "digest", "host")


def runs_in_worker(check: HealthCheck | None) -> bool:
    """TCP and plain HTTP: the checks a ``CheckLoop`` runs (HTTPS, scripts, dns, udp,
    ping and smtp stay on the agent's asyncio runner)."""
    if check is None:
        return False
    probe = check.probe
    return isinstance(probe, TcpProbe) or isinstance(probe, HttpProbe) and not probe.tls


def wire_target(id: int, gen: int, check: HealthCheck, address: str, port: int,
                state: HealthState) -> WireTarget:
    """``check`` of one target (``runs_in_worker``) as the worker gets it."""
    probe = check.probe
    http = probe if isinstance(probe, HttpProbe) else HttpProbe()
    return WireTarget(
        id=id, gen=gen, kind="http" if isinstance(probe, HttpProbe) else "tcp", address=address,
        port=port, timeout=check.timeout, interval=check.interval, rise=check.rise, fall=check.fall,
        initial=check.initial.value, state=state.value, jitter=check.jitter,
        retry_delay=check.retry_delay, bind_to=None if check.bind_to is None else str(check.bind_to),
        path=http.path, status=tuple((r.low, r.high) for r in http.status_codes),
        body_regex=http.body_regex, digest=http.digest, host=http.host)


def diff(old: Mapping[int, WireTarget], new: Mapping[int, WireTarget]) -> tuple[list[WireTarget], list[int]]:
    """What a reload sends: the targets new or changed (``put``; a state alone is not a
    change: the worker's is newer), and the ids gone (``remove``)."""
    put = [t for i, t in new.items() if (o := old.get(i)) is None or not o.same_but_state(t)]
    gone = [i for i in old if i not in new]
    return put, gone


def put_frames(targets: list[WireTarget]) -> list[bytes]:
    return [encode({"t": "put", "targets": [t.to_json() for t in targets[i:i + CHUNK]]})
            for i in range(0, len(targets), CHUNK)]


def remove_frames(ids: list[int]) -> list[bytes]:
    return [encode({"t": "remove", "ids": ids[i:i + CHUNK]}) for i in range(0, len(ids), CHUNK)]


def seed_frame(id: int, gen: int, state: HealthState) -> bytes:
    return encode({"t": "seed", "id": id, "gen": gen, "state": state.value})


# --- batches (worker -> agent) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireTransition:
    id: int
    gen: int
    new: HealthState
    reason: str
    latency: float
    count: int
    age: float                      # seconds before the frame was written


@dataclass(frozen=True, slots=True)
class Row:
    """One target's counters (``ServerHealth``) and its last result."""

    id: int
    gen: int
    checks: int
    successes: int
    failures: int
    inconclusive: int
    ok: bool                        # the last result
    detail: str
    elapsed: float
    last_inconclusive: bool
    age: float                      # of the last result
    next_in: float | None           # seconds to its next check; None: running


@dataclass(frozen=True, slots=True)
class Batch:
    transitions: tuple[WireTransition, ...] = ()
    kinds: Mapping[str, int] | None = None          # results by kind (ok, fail, ...)
    inconclusive: Mapping[str, tuple[int, int]] | None = None   # reason -> (count, an id)
    latency: tuple[int, ...] = ()                   # of the conclusive results: ``latency_counts``
    latency_sum: float = 0.0                        # seconds
    rows: tuple[Row, ...] = ()
    late: Mapping[int, int] | None = None           # lateness // LATE_STEP -> checks started

    def frames(self) -> list[bytes]:
        """This batch as frames: the rows beyond ``CHUNK`` go in further ones."""
        msg = {
            "t": "batch",
            "tr": [[t.id, t.gen, t.new.value, t.reason, round(t.latency, 6), t.count, round(t.age, 6)]
                   for t in self.transitions],
            "kinds": dict(self.kinds or {}),
            "inc": {r: list(v) for r, v in (self.inconclusive or {}).items()},
            "lat": list(self.latency),
            "lsum": round(self.latency_sum, 6),
            "rows": [_row_json(r) for r in self.rows[:CHUNK]],
            "late": {str(k): n for k, n in (self.late or {}).items()},
        }
        out = [encode(msg)]
        for i in range(CHUNK, len(self.rows), CHUNK):
            out.append(encode({"t": "batch", "tr": [], "kinds": {}, "inc": {}, "lat": [], "lsum": 0.0, "late": {},
                               "rows": [_row_json(r) for r in self.rows[i:i + CHUNK]]}))
        return out

    @classmethod
    def from_json(cls, msg: Mapping[str, Any], where: str = "batch") -> Batch:
        trs = []
        for t in _need(msg, "tr", list, where):
            if not isinstance(t, list) or len(t) != 7:
                raise FrameError(f"{where}: transition {t!r} is not a list of 7")
            id_, gen, new, reason, latency, count, age = t
            w = f"{where}, transition of {id_!r}"
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (id_, gen, count)):
                raise FrameError(f"{w}: id, gen and count must be integers")
            if not isinstance(reason, str):
                raise FrameError(f"{w}: reason {reason!r} is not a string")
            trs.append(WireTransition(id_, gen, _state(new, w), reason,
                                      _number({"latency": latency}, "latency", w),
                                      count, _number({"age": age}, "age", w)))
        kinds = _need(msg, "kinds", dict, where)
        for k, n in kinds.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise FrameError(f"{where}: count of {k!r} is {n!r}, not an integer >= 0")
        inc = {}
        for reason, v in _need(msg, "inc", dict, where).items():
            if (not isinstance(v, list) or len(v) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
                raise FrameError(f"{where}: inconclusive {reason!r} is {v!r}, not [count, id]")
            inc[reason] = (v[0], v[1])
        lat = _need(msg, "lat", list, where)
        if lat and (len(lat) != len(LATENCY_BOUNDS) + 1
                    or not all(type(n) is int and n >= 0 for n in lat)):
            raise FrameError(f"{where}: latency counts {lat!r} are not {len(LATENCY_BOUNDS) + 1}"
                             " integers >= 0")
        lsum = _number(msg, "lsum", where)
        rows = tuple(_row(r, where) for r in _need(msg, "rows", list, where))
        late = {}
        for k, n in _need(msg, "late", dict, where).items():
            if not k.isdigit() or not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise FrameError(f"{where}: lateness {k!r}: {n!r} is not a step and a count >= 0")
            late[int(k)] = n
        return cls(tuple(trs), kinds, inc, tuple(lat), float(lsum), rows, late)


def _row_json(r: Row) -> list:
    return [r.id, r.gen, r.checks, r.successes, r.failures, r.inconclusive, r.ok, r.detail,
            round(r.elapsed, 6), r.last_inconclusive, round(r.age, 6),
            None if r.next_in is None else round(r.next_in, 6)]


_NUM = (int, float)
_INF = math.inf


def _row(r: Any, where: str) -> Row:
    # Once per target and second from the worker: checked with ``type`` (no bool is an
    # int here) and no call per field.
    if type(r) is not list or len(r) != 12:
        raise FrameError(f"{where}: row {r!r} is not a list of 12")
    i, gen, checks, ups, downs, inc, ok, detail, elapsed, last_inc, age, next_in = r
    if not (type(i) is int and type(gen) is int and type(checks) is int and type(ups) is int
            and type(downs) is int and type(inc) is int and min(i, gen, checks, ups, downs, inc) >= 0):
        raise FrameError(f"{where}, row of {i!r}: id, gen and counters must be integers >= 0")
    if type(ok) is not bool or type(last_inc) is not bool or type(detail) is not str:
        raise FrameError(f"{where}, row of {i!r}: ok, detail or inconclusive of the wrong type")
    if (type(elapsed) not in _NUM or type(age) not in _NUM or not (0 <= elapsed < _INF and 0 <= age < _INF)
            or next_in is not None and (type(next_in) not in _NUM or not 0 <= next_in < _INF)):
        raise FrameError(f"{where}, row of {i!r}: elapsed, age or next_in is not a number >= 0")
    return Row(i, gen, checks, ups, downs, inc, ok, detail, float(elapsed), last_inc, float(age),
               None if next_in is None else float(next_in))
