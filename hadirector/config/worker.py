"""Read a config file in a child process: how the agent reads it for a reload.

Why a process and not a thread: the loader is pure Python, and a CPU-bound thread
shares the GIL with the event loop. On a busy host a 1 MiB config (~2 s of CPU, under
the node budget) read in a thread still let the backup take the VIP five times
(tests/netns/test_reload_bounded.py). The child has its own interpreter, runs at a
lower priority than the agent, and is killed past ``TIMEOUT``; its result comes back
pickled on stdout (it is our own code, run from our own interpreter).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from .. import model as m
from .errors import ConfigError, ConfigIssue, clip
from .loader import load

TIMEOUT = 30.0       # seconds; a file under the limits takes ~2 s of CPU at most
NICE = 10            # the child yields the CPU to the agent (and its VRRP adverts)
_CODE_ROOT = str(Path(__file__).resolve().parents[2])    # the child runs this same code


def load_config_in_worker(path: str | Path, timeout: float = TIMEOUT) -> m.Config:
    """``load_config(path)`` in a child process: the same Config, or the same ConfigError."""
    return load_in_worker(path, timeout)[0]


def load_in_worker(path: str | Path, timeout: float = TIMEOUT) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    """``load(path)`` in a child process: the Config and its warnings (a reload logs
    them as start-up does), or the same ConfigError."""
    source = str(path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_CODE_ROOT, os.environ.get("PYTHONPATH")])))
    try:
        r = subprocess.run([sys.executable, "-m", __name__, source], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"reading took longer than {timeout:g} s; "
                                                         "the reader was stopped")]) from None
    except OSError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"cannot read: cannot start the config reader: "
                                                         f"{e.strerror or e}")]) from None
    if r.returncode != 0 or not r.stdout:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"the config reader failed (exit {r.returncode})"
                                                         + (f": {clip(last)}" if last else ""))])
    result = pickle.loads(r.stdout)
    if result[0] == "ok":
        return result[1], result[2]
    raise ConfigError(list(result[1]), unlisted=result[2])


def main(argv: list[str]) -> int:
    try:
        os.nice(NICE)
    except OSError:
        pass
    try:
        loaded = load(argv[0])
        result: tuple = ("ok", loaded.config, loaded.warnings)
    except ConfigError as e:
        result = ("invalid", tuple(e.issues), e.unlisted)
    sys.stdout.buffer.write(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
