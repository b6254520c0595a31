"""Read a config file in a child process: how the agent reads it for a reload.

Why a process and not a thread: the loader is pure Python, and a CPU-bound thread
shares the GIL with the event loop. On a busy host a 1 MiB config (~2 s of CPU, under
the node budget) read in a thread still let the backup take the VIP five times
(tests/netns/test_reload_bounded.py). The child runs at a lower priority than the
agent, is killed past ``TIMEOUT``, and sends its result back pickled through a pipe.

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
import selectors
import signal
import time
from pathlib import Path

from .. import model as m
from .errors import ConfigError, ConfigIssue, clip
from .loader import load

TIMEOUT = 30.0       # seconds; a file under the limits takes ~2 s of CPU at most
NICE = 10            # the child yields the CPU to the agent (and its VRRP adverts)


def load_config_in_worker(path: str | Path, timeout: float = TIMEOUT) -> m.Config:
    """``load_config(path)`` in a child process: the same Config, or the same ConfigError."""
    return load_in_worker(path, timeout)[0]


def load_in_worker(path: str | Path, timeout: float = TIMEOUT) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    """``load(path)`` in a child process: the Config and its warnings (a reload logs
    them as start-up does), or the same ConfigError. Blocks: the agent calls it from a
    thread (agent/reloader.py)."""
    source = str(path)
    try:
        ended, data = _run_child(source, timeout)
    except TimeoutError:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"reading took longer than {timeout:g} s; "
                                                         "the reader was stopped")]) from None
    except OSError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"cannot read: cannot start the config reader: "
                                                         f"{e.strerror or e}")]) from None
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


def _run_child(source: str, timeout: float) -> tuple[str, bytes]:
    """Fork a reader of ``source``: how it ended and what it wrote, or TimeoutError
    (it is killed; reaped either way)."""
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
        _child(source, w)
    os.close(w)
    chunks: list[bytes] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    os.kill(pid, signal.SIGKILL)
                    raise TimeoutError
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)       # reaped in every case: no zombie per reload
    return _ended(status), b"".join(chunks)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _child(source: str, w: int) -> None:
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
