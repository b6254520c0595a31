"""keepalived-compatible notify scripts, run without blocking the VRRP machines.

Theory of operation: on every state change of an instance (or a sync group) the agent
calls ``Notifier.state_changed(kind, name, state, priority, scripts)``. That starts, as
asyncio tasks, the state's own script (``notify_master`` / ``_backup`` / ``_fault`` /
``_stop``) and the generic ``notify`` script with keepalived's four arguments appended:

    <notify argv...> INSTANCE|GROUP <name> <MASTER|BACKUP|FAULT|STOP> <priority>

No shell is involved (argv lists, as configured). Each script runs in its own session
with a timeout; on timeout the whole process group is killed. Output (bounded) and the
exit status are logged as ``notify.script_finished`` / ``notify.script_failed``. The
call returns at once: a slow or hung script never delays a failover.

Scripts of one instance run in the order the changes happened: a script for a later
change starts only after the earlier one has finished (keepalived runs them in order
too; a "BACKUP" script overtaking a "MASTER" one would leave the wrong state behind).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

from hadirector.model import NotifyScripts

from hadirector.logging import get_logger

OUTPUT_LIMIT = 4096     # bytes of stdout+stderr kept for the log

# Our machine states (vrrp.machine.State values) -> keepalived's notify state words.
STATE_WORDS = {"MASTER": "MASTER", "BACKUP": "BACKUP", "FAULT": "FAULT", "INIT": "STOP", "STOP": "STOP"}


@dataclass(frozen=True)
class ScriptRun:
    argv: tuple[str, ...]
    returncode: int | None      # None: timed out / could not start
    output: str
    reason: str                 # "exit 0", "exit 3", "timeout", "not found" ...


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


async def run_script(argv: tuple[str, ...], timeout: float) -> ScriptRun:
    """Run one script to completion or timeout; never raises (except cancellation)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, close_fds=True)
    except FileNotFoundError:
        return ScriptRun(argv, None, "", "not found")
    except PermissionError:
        return ScriptRun(argv, None, "", "permission denied")
    except OSError as e:
        return ScriptRun(argv, None, "", f"error: {e.strerror or e}")
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
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()
        # A background grandchild may hold the pipe open for ever: once the script
        # itself has exited, its output gets only a short grace period.
        await asyncio.wait([reader], timeout=0.5)
    except TimeoutError:
        _kill_group(proc.pid)
        await asyncio.shield(proc.wait())
        return ScriptRun(argv, None, _text(chunks), "timeout")
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await asyncio.shield(proc.wait())
        raise
    finally:
        reader.cancel()
    reason = f"exit {code}" if code >= 0 else f"signal {-code}"
    return ScriptRun(argv, code, _text(chunks), reason)


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode(errors="replace").strip()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Notifier:
    """Starts notify scripts as background tasks, serialised per instance/group."""

    def __init__(self, log=None) -> None:
        self.log = log or get_logger("hadirector.notify")
        self._chains: dict[tuple[str, str], asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self.runs: list[ScriptRun] = []          # recent results (bounded), for tests/status

    def state_changed(self, kind: str, name: str, state: str, priority: int,
                      scripts: NotifyScripts) -> asyncio.Task | None:
        commands = argv_for(kind, name, state, priority, scripts)
        if not commands:
            return None
        key = (kind, name)
        previous = self._chains.get(key)
        task = asyncio.get_running_loop().create_task(
            self._run_chain(previous, commands, scripts.timeout, kind, name, state))
        self._chains[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._done(key))
        return task

    def _done(self, key):
        def callback(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            if self._chains.get(key) is task:
                del self._chains[key]
        return callback

    async def _run_chain(self, previous, commands, timeout, kind, name, state) -> None:
        if previous is not None:
            try:
                await asyncio.shield(previous)
            except Exception:  # noqa: BLE001 - a failed earlier script must not block this one
                pass
        for argv in commands:
            run = await run_script(argv, timeout)
            self.runs = (self.runs + [run])[-32:]
            fields = dict(kind=kind.lower(), name=name, state=STATE_WORDS.get(state, state),
                          argv=list(argv), reason=run.reason, output=run.output or None)
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
