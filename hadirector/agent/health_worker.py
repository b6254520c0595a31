"""The checker worker process seen from the agent: started, fed, read, restarted.

Theory of operation
-------------------
With ``health: {engine: worker}`` the health runner is a ``WorkerHealthRunner``: a
``HealthRunner`` whose TCP and plain-HTTP targets (``wire.runs_in_worker``) are not
scheduled on its loop but handed to ``CheckWorker``, which runs them in
``python -m hadirector.health.worker`` (a ``CheckLoop``, health/worker.py) and hands
each batch it writes back (``WorkerTargets.on_batch``): the transitions go through the
runner's policy records and are logged and reported as its own checks' (``health.
server_up`` / ``server_down``, ``on_transition``); the counters and last results of
the status come every ``wire.ROWS_EVERY`` seconds. The other probes (HTTPS, scripts,
dns, udp, ping, smtp) stay on the runner's asyncio path.

* The process: ``subprocess.Popen`` of this interpreter in its own session (no signal
  meant for the agent's terminal), with pipes. The pipes are non-blocking descriptors on
  the agent's loop (``add_reader`` / ``add_writer``), the exit is seen on a pidfd: no
  thread, no asyncio subprocess transport (kernel/spawn.py says why not), no task.
* In: on every start the whole target set (``put``, each with the agent's state of it,
  so a new worker carries on where the dead one stopped); on a reload only the
  difference (``wire.diff``); a seed as it happens. Written through a buffer: a worker
  that stops reading costs memory, never the agent's loop.
* Out: frames read as they come (``wire.FrameReader``); stderr lines are logged
  (``health.worker_said``), the last one is the exit's reason.
* A worker that writes nothing for ``HUNG_AFTER`` seconds (it writes at least once a
  second, ``worker.ROWS_EVERY``) is taken for hung and killed. Until its first frame
  (written once its imports are done) it has ``START_WAIT``: a loaded or emulated
  machine took 5 s to start one, and a start timed as a hang was killed and restarted
  for ever (the kernel lab, issue 13).
* A worker that exits while it should run -- killed, crashed, a bad frame, hung -- is logged
  (``health.worker_exited`` with its code and reason) and started again after a backoff
  (``RESTART_BACKOFF``; reset once a worker ran ``STABLE`` seconds). Meanwhile its
  targets keep their last state: nothing is marked down because the checker died; their
  checks resume with the new worker.
* ``stop()`` closes the worker's stdin (it exits at EOF), waits ``STOP_WAIT`` for it,
  then kills it.
* The status (``CheckWorker.status``, in ``HealthTotals.worker``): pid, starts, restarts
  and the last exit's reason -- the ``health.worker_*`` log lines, for /status, /metrics
  and ``hadirector status``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hadirector

from typing import TYPE_CHECKING

import structlog

from hadirector.health.policy import HealthPolicy, HealthState, ProbeResult, ServerKey, ServiceKey, Target, Transition
from hadirector.health.schedule import CheckSchedule
from hadirector.health.wire import (
    Batch, FrameError, FrameReader, WireTarget, diff, put_frames, remove_frames, runs_in_worker, seed_frame,
    wire_target,
)
from hadirector.ipvs.availability import Backoff
from hadirector.model import Config, HealthEngine

from .health_report import HealthSnapshot, server_rows
from .health_runner import HealthRunner, _Slot

if TYPE_CHECKING:
    from hadirector.api.snapshot import HealthWorkerStatus

    from .health_report import CheckTotals, Reporter

log = structlog.get_logger("hadirector.health")

RESTART_BACKOFF = Backoff(first=0.2, factor=2.0, cap=10.0)
STABLE = 30.0           # a worker that ran this long resets the backoff
STOP_WAIT = 2.0
HUNG_AFTER = 5.0        # seconds without a frame from a worker: it is killed
START_WAIT = 60.0       # seconds from its start to its first frame, at most
_READ = 1 << 16
_STDERR_KEPT = 2048     # bytes of a worker's stderr line kept for the exit reason
WORKER_ARGV = (sys.executable, "-m", "hadirector.health.worker")


def _worker_env() -> dict[str, str]:
    """The agent's environment, with the agent's own package first on the path: the
    worker runs the same code as the agent, wherever it was imported from."""
    root = str(Path(hadirector.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class WorkerHealthRunner(HealthRunner):
    """A ``HealthRunner`` whose TCP and plain-HTTP checks run in a checker worker
    (``worker``); every other check runs here, as in the base class."""

    def __init__(self, config: Config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.worker = WorkerTargets(self._slots, self._by_id, self._policy, self._report, self._totals,
                                    self._clock, self._warmup)

    def _prepare_run(self, slot: _Slot) -> None:
        slot.worker = runs_in_worker(slot.spec.check)
        if slot.worker:
            slot.run = None                 # nothing starts here: the base never schedules it
            return
        super()._prepare_run(slot)

    def seed(self, service_key: ServiceKey, rs_key: ServerKey, state: HealthState) -> bool:
        seeded = super().seed(service_key, rs_key, state)
        if seeded:
            self.worker.seeded(self._slots[(service_key, rs_key)], state)
        return seeded

    async def start(self) -> None:
        await super().start()
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        await super().stop()

    def update_config(self, new_config: Config) -> None:
        super().update_config(new_config)
        self.worker.update()

    def snapshot(self) -> HealthSnapshot:
        now, wall = self._clock(), self._wall()
        rows = server_rows(self._slots.values(), self._policy, self.worker.deadlines(self._schedule), now, wall)
        totals = self._totals.totals(HealthEngine.WORKER, self.worker.process.status(now, wall))
        return HealthSnapshot(rows, totals, len(self._tasks) + len(self._inflight),
                              len(self._queue), len(self._schedule) + self.worker.count())


class WorkerTargets:
    """The runner's side of its worker targets (``_Slot.worker``): what to send, and what
    a batch changes in the runner's policy records, totals and status.

    A transition goes through the record (``ServerHealth.adopt``) and the runner's
    ``Reporter`` -- the same log line and ``on_transition`` as a check of the runner's
    own; a transition or row of a removed target or an older probe (``gen``) is
    dropped; counters and the last result come with the rows."""

    def __init__(self, slots: dict[Target, _Slot], by_id: dict[int, _Slot], policy: HealthPolicy,
                 report: Reporter, totals: CheckTotals, clock: Callable[[], float], warmup: float = 0.0) -> None:
        self._slots, self._by_id, self._policy = slots, by_id, policy
        self._report, self._totals = report, totals
        self._due: dict[int, float | None] = {}     # slot id -> its next check, the worker's word
        self.process = CheckWorker(self.targets, self.on_batch, clock, warmup=warmup)

    async def start(self) -> None:
        await self.process.start()

    async def stop(self) -> None:
        await self.process.stop()

    def update(self) -> None:
        """After the runner applied a reload."""
        by_id = self._by_id
        for sid in [i for i in self._due if i not in by_id or not by_id[i].worker]:
            del self._due[sid]
        self.process.update()

    def seeded(self, slot: _Slot, state: HealthState) -> None:
        if slot.worker:
            self.process.seed(slot.id, slot.spec.gen, state)

    def targets(self) -> dict[int, WireTarget]:
        state = self._policy.state
        return {slot.id: wire_target(slot.id, slot.spec.gen, slot.spec.check, slot.spec.host, slot.spec.port,
                                     state(*slot.target))
                for slot in self._slots.values() if slot.worker}

    def count(self) -> int:
        return sum(1 for s in self._slots.values() if s.worker)

    def deadlines(self, schedule: CheckSchedule) -> _Deadlines:
        return _Deadlines(schedule, self._due)

    def _live(self, sid: int, gen: int) -> _Slot | None:
        slot = self._by_id.get(sid)
        if slot is None or not slot.worker or slot.spec.gen != gen or slot.health is None:
            return None
        return slot

    def on_batch(self, batch: Batch, now: float) -> None:
        for t in batch.transitions:
            slot = self._live(t.id, t.gen)
            if slot is None:
                continue
            h = slot.health
            transition = Transition(slot.target, h.state, t.new, t.reason, t.latency, now - t.age, t.count)
            if h.adopt(transition):
                self._report.transition(slot.spec, transition)
        totals = self._totals
        totals.add(batch.kinds or {}, batch.latency, batch.latency_sum)
        for reason, (n, sid) in (batch.inconclusive or {}).items():
            slot = self._by_id.get(sid)
            if slot is not None:
                totals.note_inconclusive(slot, ProbeResult(False, reason, 0.0, inconclusive=True), now, n)
            else:
                totals.inconclusive[reason] += n
        for r in batch.rows:
            slot = self._live(r.id, r.gen)
            if slot is None:
                continue
            h = slot.health
            h.checks, h.successes, h.failures, h.inconclusive = r.checks, r.successes, r.failures, r.inconclusive
            h.last = ProbeResult(r.ok, r.detail, r.elapsed, inconclusive=r.last_inconclusive)
            h.last_at = now - r.age
            self._due[r.id] = None if r.next_in is None else now + r.next_in


class _Deadlines:
    """``server_rows``' view of when each check is due: the schedule's, and for the
    worker's targets the worker's last word."""

    def __init__(self, schedule: CheckSchedule, due: dict[int, float | None]) -> None:
        self._schedule, self._due = schedule, due

    def deadline(self, sid: int) -> float | None:
        if sid in self._due:
            return self._due[sid]
        return self._schedule.deadline(sid)


class CheckWorker:
    """One worker process at a time for the runner's worker targets.

    ``targets()`` is the runner's current set (id -> ``WireTarget``); ``on_batch`` gets
    each batch with the agent's ``now``. ``argv`` is the command (tests may point it
    elsewhere)."""

    def __init__(self, targets: Callable[[], dict[int, WireTarget]],
                 on_batch: Callable[[Batch, float], None], clock: Callable[[], float], *,
                 argv: tuple[str, ...] = WORKER_ARGV, backoff: Backoff = RESTART_BACKOFF,
                 warmup: float = 0.0, hung_after: float = HUNG_AFTER,
                 start_wait: float = START_WAIT) -> None:
        self._targets = targets
        self._on_batch = on_batch
        self._clock = clock
        self._argv = argv + (("--warmup", repr(warmup)) if warmup > 0 and argv == WORKER_ARGV else ())
        self._backoff = backoff
        self._running = False
        self._proc: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._in = self._out = self._err = -1
        self._outbuf = bytearray()
        self._reader = FrameReader()
        self._errline = bytearray()
        self._last_said = ""
        self._bad: str | None = None
        self._out_done = True               # no output to read (none yet, EOF, a bad frame)
        self._sent: dict[int, WireTarget] = {}
        self._started_at = 0.0
        self._failures = 0
        self._restart: asyncio.TimerHandle | None = None
        self._hung_after = hung_after
        self._start_wait = start_wait
        self._last_frame = 0.0
        self._heard = False                 # a frame from this worker yet
        self._watchdog: asyncio.TimerHandle | None = None
        self._on_exit: Callable[[], object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.starts = 0                  # workers started (status, tests)
        self.exits: collections.deque[str] = collections.deque(maxlen=8)   # reasons, newest last
        self._changed_at: float | None = None   # the last start or death (the status' since)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def status(self, now: float, wall: float) -> HealthWorkerStatus:
        """What an operator sees of the worker; ``now`` is its clock at Unix time ``wall``."""
        from hadirector.api.snapshot import HealthWorkerStatus   # on a status read only

        at = self._changed_at
        return HealthWorkerStatus(running=self._proc is not None, pid=self.pid, starts=self.starts,
                                  restarts=max(0, self.starts - 1), last_exit=self.exits[-1] if self.exits else None,
                                  since=None if at is None else wall - (now - at))

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._spawn()

    async def stop(self) -> None:
        self._running = False
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        proc = self._proc
        if proc is None:
            return
        self._close_in()
        exited = asyncio.get_running_loop().create_future()
        self._on_exit = lambda: exited.done() or exited.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_WAIT)
        except asyncio.TimeoutError:
            _kill(proc)
            await exited
        except asyncio.CancelledError:
            _kill(proc)
            self._reap()
            raise

    # --- in ----------------------------------------------------------------------

    def update(self) -> None:
        """The runner's targets changed (a reload): send the difference."""
        if self._proc is None or self._in < 0:
            return                          # the next worker gets the whole set
        new = self._targets()
        put, gone = diff(self._sent, new)
        self._sent = new
        for frame in remove_frames(gone) + put_frames(put):
            self._send(frame)

    def seed(self, id: int, gen: int, state: HealthState) -> None:
        if self._proc is not None and self._in >= 0 and id in self._sent:
            self._send(seed_frame(id, gen, state))

    def _send(self, frame: bytes) -> None:
        if not self._outbuf:
            self._loop.add_writer(self._in, self._flush)
        self._outbuf += frame

    def _flush(self) -> None:
        try:
            n = os.write(self._in, self._outbuf)
        except BlockingIOError:
            return
        except OSError:                     # the worker is gone: its exit says why
            self._close_in()
            return
        del self._outbuf[:n]
        if not self._outbuf:
            self._loop.remove_writer(self._in)

    def _close_in(self) -> None:
        if self._in >= 0:
            if self._outbuf:
                self._loop.remove_writer(self._in)
                self._outbuf.clear()
            os.close(self._in)
            self._in = -1

    # --- the process -------------------------------------------------------------

    def _spawn(self) -> None:
        self._restart = None
        if not self._running:
            return
        loop = self._loop
        fds: list[int] = []
        try:
            for _ in range(3):
                fds += os.pipe2(os.O_CLOEXEC)
            in_r, in_w, out_r, out_w, err_r, err_w = fds
            proc = subprocess.Popen(self._argv, stdin=in_r, stdout=out_w, stderr=err_w,
                                    start_new_session=True, close_fds=True, env=_worker_env())
        except OSError as exc:              # out of descriptors or processes: try again later
            for fd in fds:
                os.close(fd)
            self._failures += 1
            delay = self._backoff.delay(self._failures)
            reason = f"could not start: {exc}"
            self.exits.append(reason)
            self._changed_at = self._clock()
            log.warning("health.worker_exited", pid=None, code=None, restart_in=delay, reason=reason)
            self._restart = loop.call_later(delay, self._spawn)
            return
        for fd in (in_r, out_w, err_w):     # the child's ends
            os.close(fd)
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            pidfd = None                    # no pidfd: the exit is seen as EOF on its stdout
        self._proc, self._pidfd = proc, pidfd
        self._in, self._out, self._err = in_w, out_r, err_r
        for fd in (self._in, self._out, self._err):
            os.set_blocking(fd, False)
        self._reader = FrameReader()
        self._out_done = False
        self._errline.clear()
        self._last_said, self._bad = "", None
        self._started_at = self._last_frame = self._changed_at = self._clock()
        self._heard = False
        self._watchdog = loop.call_later(min(self._hung_after, self._start_wait) / 2, self._watch)
        self._on_exit = None
        self.starts += 1
        loop.add_reader(self._out, self._read_out)
        loop.add_reader(self._err, self._read_err)
        if pidfd is not None:
            loop.add_reader(pidfd, self._exited)
        self._sent = self._targets()
        log.info("health.worker_started", pid=proc.pid, targets=len(self._sent),
                 reason="first" if self.starts == 1 else "restart")
        for frame in put_frames(list(self._sent.values())):
            self._send(frame)

    def _watch(self) -> None:
        self._watchdog = None
        if self._proc is None:
            return
        silent = self._clock() - self._last_frame
        limit = self._hung_after if self._heard else self._start_wait
        if silent > limit and self._bad is None:
            since = "" if self._heard else " (none since it started)"
            self._bad = f"hung: no frame for {silent:.1f} s{since}"
            _kill(self._proc)
            return
        self._watchdog = self._loop.call_later(min(self._hung_after, limit) / 2, self._watch)

    def _read_out(self) -> bool:
        """Read and apply what the worker wrote; True if something was read (there may
        be more), False at EAGAIN, EOF or after a bad frame."""
        if self._out_done:
            return False
        try:
            data = os.read(self._out, _READ)
        except BlockingIOError:
            return False
        except OSError as exc:
            data, self._bad = b"", self._bad or f"reading its output: {exc}"
        if not data:
            self._out_done = True
            self._loop.remove_reader(self._out)
            if self._pidfd is None and self._proc is not None:
                self._exited()              # no pidfd: EOF is the exit (wait() blocks briefly)
            return False
        try:
            batches = []
            for m in self._reader.feed(data):
                if m["t"] != "batch":
                    raise FrameError(f"frame {self._reader.frames}: unknown message type {m['t']!r}")
                batches.append(Batch.from_json(m, f"frame {self._reader.frames}"))
        except FrameError as exc:
            # The stream cannot be trusted past a bad frame: this worker is done.
            self._bad = f"bad frame from the worker: {exc}"
            self._out_done = True
            self._loop.remove_reader(self._out)
            _kill(self._proc)
            return False
        now = self._last_frame = self._clock()
        self._heard = True
        for b in batches:
            self._on_batch(b, now)
        return True

    def _read_err(self) -> None:
        try:
            data = os.read(self._err, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._err)
            return
        buf = self._errline
        buf += data
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest[-_STDERR_KEPT:]
        for line in lines:
            text = line.decode(errors="replace").strip()[:_STDERR_KEPT]
            if text:
                self._last_said = text
                log.warning("health.worker_said", pid=self.pid, line=text)

    def _exited(self) -> None:
        # What it wrote before it died still counts (a transition decided just before a
        # crash), and so do its last words.
        while self._read_out():
            pass
        self._read_err()
        proc = self._proc
        code = self._reap()
        on_exit, self._on_exit = self._on_exit, None
        if not self._running:
            if on_exit is not None:
                on_exit()
            return
        if code is not None and code < 0:
            reason = f"killed by {signal.Signals(-code).name}"
        else:
            reason = f"exit {code}"
        said = self._bad or self._last_said
        if said:
            reason = f"{reason}: {said}"
        now = self._clock()
        self._failures = 1 if now - self._started_at >= STABLE else self._failures + 1
        delay = self._backoff.delay(self._failures)
        self.exits.append(reason)
        self._changed_at = now
        log.warning("health.worker_exited", pid=proc.pid if proc else None, code=code,
                    restart_in=delay, reason=reason)
        self._restart = self._loop.call_later(delay, self._spawn)

    def _reap(self) -> int | None:
        """Close every descriptor of the worker and collect its exit code."""
        loop, proc = self._loop, self._proc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._close_in()
        for fd in (self._out, self._err, self._pidfd):
            if fd is not None and fd >= 0:
                loop.remove_reader(fd)
                os.close(fd)
        self._out = self._err = -1
        self._pidfd = None
        self._proc = None
        if proc is None:
            return None
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return proc.wait()


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        proc.kill()
    except OSError:
        pass
