"""Child processes for the agent's scripts (notify, script checks, quorum scripts),
spawned so that no cancellation can hang the agent and no timeout leaves a process behind.

Theory of operation:

* Spawned in a worker thread with ``subprocess.Popen``, not with asyncio's subprocess
  transport. In CPython 3.11 a task cancelled while ``create_subprocess_exec`` connects
  the child's pipes leaves the transport waiting for ever, in its clean-up, for pipes
  that never connect: an agent stopping at that moment hung in ``asyncio.run``. A spawn
  in a thread has no such half state: the awaiting task waits for the thread's answer
  through any cancellation (a spawn takes milliseconds), so the child is always known,
  then killed and reaped before the cancellation goes on. The fork also leaves the
  event loop free for the VRRP timers meanwhile.
* Waited for through a pidfd (Linux 5.3) on the event loop: no child watcher, no thread
  per running child (a thread per child only where pidfd_open is refused).
* Its own session (``setsid``: its process group, and no signal meant for the agent's
  terminal), and a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)`` in the child before
  exec), so the orphans of its descendants are re-parented to it and not to init. On a
  timeout, a stop or a cancellation its whole tree is killed (``kill_tree``): the child
  is stopped first (SIGSTOP: it can neither exit and let its orphans go to init, nor
  reap them), every descendant found through ``/proc/<pid>/stat`` parent links is
  SIGKILLed until no new one appears, then the child and its group. So a descendant
  that called ``setsid`` (or double-forked into its own session) does not survive the
  timeout, as it did with keepalived's killpg (issue 9). Why the child and not the agent
  is the subreaper: a subreaper agent would adopt every orphan of every script, which
  nothing here waits for; a shell reaps any child it adopts. A cgroup would be the other
  way to find the tree, but needs a delegated, writable cgroup v2 hierarchy, which
  neither every host nor every container has.
* On a normal exit nothing is killed: a script may start a daemon on purpose
  (keepalived leaves those alone too).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

OUTPUT_GRACE = 0.5      # seconds the output may still come after the child exited
KILL_PASSES = 64        # /proc scans per kill before giving up on a fork storm
KILL_WAIT = 2.0         # seconds a kill waits for the killed processes to be gone
PR_SET_CHILD_SUBREAPER = 36     # <linux/prctl.h>, Linux >= 3.4
_READ = 65536


@dataclass(frozen=True)
class Finished:
    """How a child ended. ``returncode`` is None when it was killed at its timeout or
    stop (negative: it died of that signal on its own); ``output`` is the first
    ``output_limit`` bytes of its stdout and stderr; ``outcome`` is ``"exited"``,
    ``"timeout"`` or ``"stopped"``."""

    returncode: int | None
    output: bytes
    outcome: str


async def run(argv: Sequence[str], timeout: float, *, stop: asyncio.Event | None = None,
              output_limit: int = 0, output_grace: float = OUTPUT_GRACE) -> Finished:
    """Run ``argv`` (no shell, stdin from /dev/null) until it exits, ``timeout`` seconds
    from now pass, or ``stop`` is set; on the last two its tree is killed and reaped.
    Output is kept only with ``output_limit`` > 0 (else it goes to /dev/null: a pipe held
    open by a daemon the child left would otherwise look like output still coming).

    Raises the OSError of a child that could not start (FileNotFoundError,
    PermissionError, EAGAIN, EMFILE ...); a cancellation kills and reaps the child
    first, then propagates."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    child = await _spawn(loop, tuple(argv), output_limit)
    try:
        outcome = await child.finish(deadline, stop, output_grace)
    except BaseException:
        await child.close()
        raise
    if await child.close():         # cancelled while its tree was being killed
        raise asyncio.CancelledError
    code = child.proc.returncode if outcome == "exited" else None
    return Finished(code, b"".join(child.chunks), outcome)


async def _uncancelled(fut: asyncio.Future) -> bool:
    """Wait for ``fut`` (a spawn or a kill in a thread: short) however often the task is
    cancelled meanwhile; True if it was, for the caller to go on with the cancellation."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            pass
    return cancelled


async def _spawn(loop: asyncio.AbstractEventLoop, argv: tuple[str, ...], output_limit: int) -> _Child:
    started = loop.run_in_executor(None, _start, argv, output_limit > 0)
    if await _uncancelled(started):
        if started.exception() is None:
            proc, pidfd = started.result()
            await _uncancelled(loop.run_in_executor(None, _kill_and_reap, proc))
            _close_fds(proc, pidfd)
        raise asyncio.CancelledError
    proc, pidfd = started.result()          # raises the spawn's OSError
    try:
        return _Child(loop, proc, pidfd, output_limit)
    except BaseException:                   # no reader for the pidfd or the pipe
        await _uncancelled(loop.run_in_executor(None, _kill_and_reap, proc))
        _close_fds(proc, pidfd)
        raise


def _start(argv: tuple[str, ...], capture: bool) -> tuple[subprocess.Popen, int | None]:
    """In a worker thread: the child and its pidfd (None where the kernel refuses one)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
                            close_fds=True, start_new_session=True, preexec_fn=_subreaper_preexec())
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):   # an old kernel, or seccomp's answer
            return proc, None
        _kill_and_reap(proc)                         # EMFILE ...: the caller reports it
        _close_fds(proc, None)
        raise
    return proc, pidfd


def _kill_and_reap(proc: subprocess.Popen) -> None:
    """Blocking: kill the child's tree, then reap the child."""
    if proc.poll() is None:
        kill_tree(proc.pid)
    proc.wait()


def _close_fds(proc: subprocess.Popen, pidfd: int | None) -> None:
    if proc.stdout is not None:
        proc.stdout.close()
    if pidfd is not None:
        os.close(pidfd)


class _Child:
    """A started child: its exit (pidfd readable, or a thread's wait) and its output."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen,
                 pidfd: int | None, output_limit: int) -> None:
        self.loop, self.proc, self.pidfd, self.limit = loop, proc, pidfd, output_limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.readers: list[int] = []
        self.eof: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future = loop.create_future()
        try:
            if pidfd is not None:
                loop.add_reader(pidfd, self._on_exit)
                self.readers.append(pidfd)
            if proc.stdout is not None:
                fd = proc.stdout.fileno()
                os.set_blocking(fd, False)
                loop.add_reader(fd, self._on_output, fd)
                self.readers.append(fd)
            else:
                self.eof.set_result(None)
        except BaseException:
            for fd in self.readers:
                loop.remove_reader(fd)
            raise
        if pidfd is None:
            self.exited = loop.run_in_executor(None, proc.wait)

    def _on_exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        if not self.exited.done():
            self.exited.set_result(None)

    def _on_output(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(fd)
            if not self.eof.done():
                self.eof.set_result(None)
            return
        if self.size < self.limit:
            self.chunks.append(data[: self.limit - self.size])
        self.size += len(data)

    async def finish(self, deadline: float, stop: asyncio.Event | None, grace: float) -> str:
        """Wait for the exit, the deadline or ``stop``; the outcome's name."""
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            await asyncio.wait([self.exited] + ([stopper] if stopper else []),
                               timeout=max(0.0, deadline - self.loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopper is not None:
                stopper.cancel()
        if not self.exited.done():
            return "stopped" if stop is not None and stop.is_set() else "timeout"
        self.proc.wait()                  # exited: reaps at once
        # A daemon the child started may hold the pipe open for ever: once the child
        # itself has exited, its output gets only a short grace period.
        if not self.eof.done():
            await asyncio.wait([self.eof], timeout=grace)
        return "exited"

    async def close(self) -> bool:
        """Kill and reap the tree if the child still runs; release the descriptors.
        True if a cancellation arrived meanwhile."""
        cancelled = False
        if self.proc.returncode is None:
            # In a thread: a /proc scan takes milliseconds per hundred processes, and
            # the event loop is sending adverts meanwhile.
            cancelled = await _uncancelled(self.loop.run_in_executor(None, _kill_and_reap, self.proc))
        if self.pidfd is None:
            await _uncancelled(self.exited)     # the waiting thread: the child is reaped
        elif not self.exited.done():
            self.exited.cancel()
        for fd in self.readers:
            self.loop.remove_reader(fd)
        _close_fds(self.proc, self.pidfd)
        return cancelled


_prctl = None


def _subreaper_preexec():
    """The preexec_fn that makes the child a child subreaper, or None where prctl is
    missing (the tree is then followed only while its parents live). The ctypes
    function is looked up here, in the parent: the child after fork only calls it."""
    global _prctl
    if _prctl is None:
        import ctypes       # here: an agent that runs no script never loads it

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
    """SIGKILL ``root`` (a child subreaper) and every process below it, and wait (up to
    KILL_WAIT) until they are gone, so that the next script never starts beside a dying
    one; returns how many descendants were killed. Blocking (one /proc scan per pass,
    passes only while new processes turn up): run it off the event loop."""
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
        os.killpg(root, signal.SIGKILL)   # its own group too
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
