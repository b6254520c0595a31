"""Read a config file in a child process: how the agent reads it for a reload.

Why a process and not a thread: the loader is pure Python, and a CPU-bound thread
shares the GIL with the event loop. On a busy host a 1 MiB config (~2 s of CPU, under
the node budget) read in a thread still let the backup take the VIP five times
(tests/netns/test_reload_bounded.py). The child runs at a lower priority than the
agent and sends its result back pickled through a pipe.

Its bounds: ``CPU_BUDGET`` seconds of CPU (RLIMIT_CPU), because a costly file is a
matter of the CPU it takes, not of how busy the host is: at nice 10, beside one
CPU-bound process at nice -5 per core, a 15,000-server file's read took more than 30 s
and was refused under a wall-clock bound. ``TIMEOUT`` of wall-clock time is only for a
reader that waits and never ends (a hung file system). And ``cancel``: the agent's
stop ends a read at once instead of waiting for it (agent/reloader.py).

Why a fork and not a fresh interpreter: the agent has already imported everything the
loader needs. A new interpreter importing it again took 0.24 s per reload on a host
and ~6 s under the kernel lab's emulation, against 0.02 s and 0.3 s for a fork. The
child runs only the loader (imported at the top of this module, before any fork),
pickles, writes and leaves with ``os._exit``: no at-exit handler, no flush of the
agent's buffers, nothing done to the sockets or the event loop it inherited. The
agent's other threads are its executor's (imports, spawns, this read): a lock one of
them held at the fork stays held in the child, and the child takes none of theirs (it
logs nothing; CPython resets the import lock after a fork).
"""

from __future__ import annotations

import os
import pickle
import resource
import selectors
import signal
import threading
import time
from pathlib import Path

from .. import model as m
from .errors import ConfigError, ConfigIssue, clip
from .loader import load

CPU_BUDGET = 30      # seconds of CPU (whole: RLIMIT_CPU); a file under the limits takes ~2 s
TIMEOUT = 120.0      # seconds of wall-clock time: a reader that waits on a hung file system
NICE = 10            # the child yields the CPU to the agent (and its VRRP adverts)
CANCEL_POLL = 0.1    # seconds: how soon a cancel is seen
_OVER_BUDGET = 3     # the child's exit code at SIGXCPU


class ReadCancelled(Exception):
    """The read was stopped by its ``cancel`` event (the agent is stopping)."""


def load_config_in_worker(path: str | Path, timeout: float = TIMEOUT, cpu: int = CPU_BUDGET) -> m.Config:
    """``load_config(path)`` in a child process: the same Config, or the same ConfigError."""
    return load_in_worker(path, timeout, cpu)[0]


def load_in_worker(path: str | Path, timeout: float = TIMEOUT, cpu: int = CPU_BUDGET,
                   cancel: threading.Event | None = None) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    """``load(path)`` in a child process: the Config and its warnings (a reload logs
    them as start-up does), or the same ConfigError; ReadCancelled once ``cancel`` is
    set. Blocks: the agent calls it from a thread (agent/reloader.py)."""
    source = str(path)
    try:
        ended, data, cpu_used = _run_child(source, timeout, cpu, cancel)
    except TimeoutError:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"reading took longer than {timeout:g} s; "
                                                         "the reader was stopped")]) from None
    except OSError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"cannot read: cannot start the config reader: "
                                                         f"{e.strerror or e}")]) from None
    # SIGXCPU at the soft limit ends a reader in Python at once; one stuck in C code is
    # killed by the hard limit a second later.
    if ended == f"exit {_OVER_BUDGET}" or (ended == "killed by SIGKILL" and cpu_used >= cpu):
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"reading used more than {cpu} s of CPU; "
                                                         "the reader was stopped")])
    try:
        result = pickle.loads(data)
    except Exception:  # noqa: BLE001  (nothing or half of it written: the child died first)
        result = ("died", ended)
    if result[0] == "ok":
        return result[1], result[2]
    if result[0] == "invalid":
        raise ConfigError(list(result[1]), unlisted=result[2])
    why = f": {clip(result[1])}" if result[0] == "crashed" else f" ({result[1]})"
    raise ConfigError([ConfigIssue(source, 0, 0, "", f"the config reader failed{why}")])


def _run_child(source: str, timeout: float, cpu: int,
               cancel: threading.Event | None) -> tuple[str, bytes, float]:
    """Fork a reader of ``source``: how it ended, what it wrote and the CPU seconds it
    used; or TimeoutError / ReadCancelled (it is killed; reaped in every case)."""
    if cancel is not None and cancel.is_set():
        raise ReadCancelled
    deadline = time.monotonic() + timeout
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:            # the child: never returns
        os.close(r)
        _child(source, w, cpu)
    os.close(w)
    chunks: list[bytes] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ)
            while True:
                if cancel is not None and cancel.is_set():
                    os.kill(pid, signal.SIGKILL)
                    raise ReadCancelled
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    raise TimeoutError
                if not sel.select(left if cancel is None else min(left, CANCEL_POLL)):
                    continue
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        _, status, usage = os.wait4(pid, 0)     # reaped in every case: no zombie per reload
    return _ended(status), b"".join(chunks), usage.ru_utime + usage.ru_stime


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _child(source: str, w: int, cpu: int) -> None:
    code = 0
    try:
        # Signals: asyncio's handlers only write the signal's number to a wakeup fd this
        # child shares with the agent's loop, so a SIGTERM sent to the whole unit would
        # reach the agent twice. Here a signal ends the reader as it ends any process.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.nice(NICE)
        except OSError:
            pass
        # The CPU budget: SIGXCPU at ``cpu`` s, SIGKILL one second later. A fork starts
        # at zero CPU time, whatever the agent had used.
        signal.signal(signal.SIGXCPU, lambda *_: os._exit(_OVER_BUDGET))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            loaded = load(source)
            result: tuple = ("ok", loaded.config, loaded.warnings)
        except ConfigError as e:
            result = ("invalid", tuple(e.issues), e.unlisted)
        except BaseException as e:  # noqa: BLE001  (reported to the agent, never raised in a copy of it)
            result = ("crashed", f"{type(e).__name__}: {e}")
        data = memoryview(pickle.dumps(result))
        while data:
            data = data[os.write(w, data):]
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)
