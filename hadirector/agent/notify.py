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
timeout, as it did with keepalived's killpg. ``kernel/spawn.py`` runs every script of the
agent that way (and safely against a cancellation mid-spawn); on a normal exit nothing
is killed: a script may start a daemon on purpose (keepalived leaves those alone too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hadirector.kernel import spawn
from hadirector.model import NotifyScripts

from hadirector.logging import get_logger

OUTPUT_LIMIT = 4096     # bytes of stdout+stderr kept for the log
SUPERSEDE_GRACE = 1.0   # seconds a superseded running script may still finish in

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
    killed (``spawn.run``)."""
    try:
        done = await spawn.run(argv, timeout, stop=stop, output_limit=OUTPUT_LIMIT)
    except FileNotFoundError:
        return ScriptRun(argv, None, "", "not found")
    except PermissionError:
        return ScriptRun(argv, None, "", "permission denied")
    except OSError as e:
        return ScriptRun(argv, None, "", f"error: {e.strerror or e}")
    output = done.output.decode(errors="replace").strip()
    if done.outcome != "exited":
        return ScriptRun(argv, None, output, "superseded" if done.outcome == "stopped" else "timeout")
    code = done.returncode
    reason = f"exit {code}" if code >= 0 else f"signal {-code}"
    return ScriptRun(argv, code, output, reason)


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
