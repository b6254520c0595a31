"""keepalived-compatible notify scripts, run without blocking the VRRP machines.

Theory of operation: on every state change of an instance (or a sync group) the agent
calls ``Notifier.state_changed(kind, name, state, priority, scripts)``. That queues, for
one background task per instance/group, the state's own script (``notify_master`` /
``_backup`` / ``_fault`` / ``_stop``) and the generic ``notify`` script with keepalived's
four arguments appended:

    <notify argv...> INSTANCE|GROUP <name> <MASTER|BACKUP|FAULT|STOP> <priority>

No shell is involved (argv lists, as configured). Output (bounded) and the exit status
are logged as ``notify.script_finished`` / ``notify.script_failed``. The call returns at
once: a slow or hung script never delays a failover.

Order: scripts of one instance run one at a time, in the order of the changes, and
every change's scripts run (a "BACKUP" script overtaking a "MASTER" one would leave the
wrong state behind; a generic ``notify`` script may be counting transitions). But a
newer state supersedes a running older script, so that a hung script cannot hold the
next state's scripts for its whole timeout (10 s by default): a script that is running
while a newer change waits gets ``SUPERSEDE_GRACE`` (1 s, or its own timeout if that
comes first) from the moment both are true to finish on its own; then it is killed like
a timed-out script and logged with reason ``superseded``. So after one hung script the
next state's scripts start at most ``SUPERSEDE_GRACE`` (plus the kill) after the change.

Killing a script kills its whole process tree, not only its process group: a child that
called ``setsid`` (or double-forked into its own session) would otherwise survive the
timeout, as it did with keepalived's killpg. Each script is made a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)`` in the child before exec), so the orphans of its
descendants are re-parented to the script and not to init; at the kill the script is
stopped first (SIGSTOP: it can neither exit and let its orphans go to init, nor reap
them), every descendant found through ``/proc/<pid>/stat`` parent links is SIGKILLed
until no new one appears, then the script. Why the script and not the agent is the
subreaper: a subreaper agent would also adopt the orphans of health-check scripts and
``ip`` commands, which asyncio (waiting for the pids it spawned only) would leave as
zombies, or race if reaped by hand; a shell reaps any child it adopts. A cgroup would be
the other way to find the tree, but needs a delegated, writable cgroup v2 hierarchy,
which neither every host nor every container has. On a normal exit nothing is killed:
a script may start a daemon on purpose (keepalived leaves those alone too).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from dataclasses import dataclass, field

from hadirector.model import NotifyScripts

from hadirector.logging import get_logger

OUTPUT_LIMIT = 4096     # bytes of stdout+stderr kept for the log
SUPERSEDE_GRACE = 1.0   # seconds a superseded running script may still finish in
KILL_PASSES = 64        # /proc scans per kill before giving up on a fork storm
KILL_WAIT = 2.0         # seconds a kill waits for the killed processes to be gone
PR_SET_CHILD_SUBREAPER = 36     # <linux/prctl.h>, Linux >= 3.4

# Our machine states (vrrp.machine.State values) -> keepalived's notify state words.
STATE_WORDS = {"MASTER": "MASTER", "BACKUP": "BACKUP", "FAULT": "FAULT", "INIT": "STOP", "STOP": "STOP"}


@dataclass(frozen=True)
class ScriptRun:
    argv: tuple[str, ...]
    returncode: int | None      # None: timed out / could not start
    output: str
    reason: str                 # "exit 0", "exit 3", "timeout", "superseded", "not found" ...


def argv_for(kind: str, name: str, state: str, priority: int, scripts: NotifyScripts) -> list[tuple[str, ...]]:
    """The command lines to run for one change, in order (pure; unit-tested)."""
    word = STATE_WORDS.get(state, state)
    out: list[tuple[str, ...]] = []
    specific = {"MASTER": scripts.master, "BACKUP": scripts.backup,
                "FAULT": scripts.fault, "STOP": scripts.stop}.get(word, ())
    if specific:
        out.append(tuple(specific))
    if scripts.notify:
        out.append(tuple(scripts.notify) + (kind, name, word, str(priority)))
    return out


async def run_script(argv: tuple[str, ...], timeout: float,
                     stop: asyncio.Event | None = None) -> ScriptRun:
    """Run one script to completion, timeout or ``stop`` (set: superseded); never raises
    (except cancellation). On timeout, stop or cancellation its whole process tree is
    killed (see the module docstring)."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitProtocol(loop), *argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, close_fds=True, preexec_fn=_subreaper_preexec())
    except FileNotFoundError:
        return ScriptRun(argv, None, "", "not found")
    except PermissionError:
        return ScriptRun(argv, None, "", "permission denied")
    except OSError as e:
        return ScriptRun(argv, None, "", f"error: {e.strerror or e}")
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    chunks: list[bytes] = []
    size = 0

    async def read_output() -> None:
        nonlocal size
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(4096):
            if size < OUTPUT_LIMIT:
                chunks.append(chunk[: OUTPUT_LIMIT - size])
            size += len(chunk)

    reader = asyncio.ensure_future(read_output())
    waiter = protocol.exited
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        await asyncio.wait([waiter] + ([stopper] if stopper else []), timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            await _kill(proc.pid)
            await asyncio.shield(waiter)
            reason = "superseded" if stop is not None and stop.is_set() else "timeout"
            return ScriptRun(argv, None, _text(chunks), reason)
        code = waiter.result()
        # A background grandchild may hold the pipe open for ever: once the script
        # itself has exited, its output gets only a short grace period.
        await asyncio.wait([reader], timeout=0.5)
    except asyncio.CancelledError:
        await _kill(proc.pid)
        await asyncio.shield(waiter)
        raise
    finally:
        reader.cancel()
        if stopper is not None:
            stopper.cancel()
        if waiter.done():
            # A daemon the script started may hold the output pipe: close our end now
            # rather than when the transport is garbage-collected.
            transport.close()
    reason = f"exit {code}" if code >= 0 else f"signal {-code}"
    return ScriptRun(argv, code, _text(chunks), reason)


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for ``create_subprocess_exec``, plus ``exited``: a future set
    when the process itself exits. ``Process.wait()`` (Python 3.11) also waits until
    every pipe is closed, so a daemon the script started, holding its stdout, would
    make a finished script look hung until its timeout."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited: asyncio.Future[int] = loop.create_future()

    def process_exited(self) -> None:
        transport = self._transport        # the parent class may drop it
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(transport.get_returncode())


async def _kill(pid: int) -> None:
    # In a thread: a /proc scan takes milliseconds per hundred processes, and the
    # event loop is sending adverts meanwhile. Shielded: a second cancellation must
    # not leave the tree half killed.
    await asyncio.shield(asyncio.to_thread(kill_tree, pid))


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode(errors="replace").strip()


_prctl = None


def _subreaper_preexec():
    """The preexec_fn that makes the script a child subreaper, or None where prctl is
    missing (the tree is then followed only while its parents live). The ctypes
    function is looked up here, in the parent: the child after fork only calls it."""
    global _prctl
    if _prctl is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).prctl
            fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
            fn.restype = ctypes.c_int
            _prctl = fn
        except (OSError, AttributeError):
            _prctl = False
    if not _prctl:
        return None
    prctl = _prctl

    def preexec() -> None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)     # failure: best effort, as above
    return preexec


def _process_table() -> dict[int, list[int]]:
    """Live (non-zombie) processes by parent pid, from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue                                   # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(root: int) -> list[int]:
    """Live processes below ``root`` by parent links, parents before children."""
    table = _process_table()
    out: list[int] = []
    todo = [root]
    while todo:
        for child in table.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(root: int) -> int:
    """SIGKILL ``root`` (a script, subreaper) and every process below it, and wait
    (up to KILL_WAIT) until they are gone, so that the next script never starts beside
    a dying one; returns how many descendants were killed. Blocking (one /proc scan per
    pass, passes only while new processes turn up): run it off the event loop."""
    _signal(root, signal.SIGSTOP)        # cannot exit (orphans to init) nor reap now
    killed: set[int] = set()
    for _ in range(KILL_PASSES):
        new = [p for p in descendants(root) if p not in killed]
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGKILL)
        killed.update(new)
    _signal(root, signal.SIGKILL)
    try:
        os.killpg(root, signal.SIGKILL)   # the script's own group, as before
    except (ProcessLookupError, PermissionError):
        pass
    # SIGKILL takes effect when the victim is next scheduled: on a loaded host, later.
    deadline = time.monotonic() + KILL_WAIT
    while any(_running(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(killed)


def _running(pid: int) -> bool:
    """Not gone and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(eq=False)
class _Change:
    """One state change's scripts, waiting or running."""

    state: str
    commands: list[tuple[str, ...]]
    timeout: float


@dataclass(eq=False)
class _Queue:
    """Per instance/group: the changes whose scripts have yet to run, and the stop of
    the script running now (set by the supersede timer)."""

    worker: asyncio.Task | None = None
    waiting: list[_Change] = field(default_factory=list)
    stop: asyncio.Event | None = None
    running_timeout: float = 0.0
    kill_timer: asyncio.TimerHandle | None = None


class Notifier:
    """Runs notify scripts as background tasks: in order per instance/group, a newer
    state superseding a running older script (see the module docstring)."""

    def __init__(self, log=None, supersede_grace: float = SUPERSEDE_GRACE) -> None:
        self.log = log or get_logger("hadirector.notify")
        self.supersede_grace = supersede_grace
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._tasks: set[asyncio.Task] = set()
        self.runs: list[ScriptRun] = []          # recent results (bounded), for tests/status

    def state_changed(self, kind: str, name: str, state: str, priority: int,
                      scripts: NotifyScripts) -> asyncio.Task | None:
        commands = argv_for(kind, name, state, priority, scripts)
        if not commands:
            return None
        key = (kind, name)
        q = self._queues.setdefault(key, _Queue())
        q.waiting.append(_Change(state, commands, scripts.timeout))
        self._arm_supersede(q)
        if q.worker is None:
            q.worker = asyncio.get_running_loop().create_task(self._work(key, q))
            self._tasks.add(q.worker)
            q.worker.add_done_callback(self._tasks.discard)
        return q.worker

    def _arm_supersede(self, q: _Queue) -> None:
        # A script runs and a newer change waits: the script's grace starts now.
        if q.stop is None or not q.waiting or q.kill_timer is not None:
            return
        grace = min(self.supersede_grace, q.running_timeout)
        q.kill_timer = asyncio.get_running_loop().call_later(grace, q.stop.set)

    async def _work(self, key: tuple[str, str], q: _Queue) -> None:
        kind, name = key
        try:
            while q.waiting:
                change = q.waiting.pop(0)
                for argv in change.commands:
                    q.stop, q.running_timeout = asyncio.Event(), change.timeout
                    self._arm_supersede(q)
                    try:
                        run = await run_script(argv, change.timeout, q.stop)
                    finally:
                        if q.kill_timer is not None:
                            q.kill_timer.cancel()
                        q.stop = q.kill_timer = None
                    self._finished(kind, name, change, run)
        finally:
            q.worker = None
            if self._queues.get(key) is q:
                del self._queues[key]

    def _finished(self, kind: str, name: str, change: _Change, run: ScriptRun) -> None:
        self.runs = (self.runs + [run])[-32:]
        fields = dict(kind=kind.lower(), name=name, state=STATE_WORDS.get(change.state, change.state),
                      argv=list(run.argv), reason=run.reason, output=run.output or None)
        if run.returncode == 0:
            self.log.info("notify.script_finished", **fields)
        else:
            self.log.warning("notify.script_failed", **fields)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for running scripts, e.g. notify_stop before exiting."""
        pending = list(self._tasks)
        if not pending:
            return
        done, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=1.0)
