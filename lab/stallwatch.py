"""What a long lab run's machine was doing, written down every minute.

Two 100-fault chaos soaks (sessions 6 and 7) had their emulated guest stop printing in
the middle of a ``restart_during_takeover`` fault, with both vCPUs busy and nothing on
the console for as long as anyone waited. From the host nothing more can be seen. So a
run that may hang keeps a ``StallWatch``: a daemon thread that, every ``every``
seconds, rewrites a file in the run's results directory (a read-write share, readable
from the host while the guest runs) with the busiest threads and their kernel wait
channels, the kernel stacks of the busiest processes, the harness's own Python stacks
(where it waits) and the kernel log's tail. The last few snapshots are kept, so the file
shows the minute before a hang as well as the hang, as long as the thread still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

KEEP = 4                        # snapshots kept in the file (the newest last)


def _run(*argv: str, timeout: float = 20.0) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({' '.join(argv)}: {e})\n"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"({path}: {e.strerror})\n"


def busiest(top_text: str, n: int = 4) -> list[int]:
    """The pids of the ``n`` busiest threads in ``top -b -H``'s last iteration."""
    pids: list[int] = []
    last = top_text.rsplit("\ntop - ", 1)[-1]
    in_rows = False
    for line in last.splitlines():
        words = line.split()
        if words[:1] == ["PID"]:
            in_rows = True
            continue
        if in_rows and words and words[0].isdigit():
            pids.append(int(words[0]))
            if len(pids) == n:
                break
    return pids


def snapshot() -> str:
    """One look at the machine (a few seconds of work, most of it top's sampling)."""
    top = _run("top", "-b", "-H", "-n", "2", "-d", "2", "-w", "200")
    parts = [f"===== {time.strftime('%H:%M:%S')} loadavg {_read('/proc/loadavg').strip()}",
             "--- top -H (second sample) ---", "top - " + top.rsplit("\ntop - ", 1)[-1][:6000]]
    for tid in busiest(top):
        parts += [f"--- thread {tid}: {_read(f'/proc/{tid}/comm').strip()} "
                  f"wchan {_read(f'/proc/{tid}/wchan').strip()} ---",
                  _read(f"/proc/{tid}/stack")[:2000]]
    parts.append("--- this harness's Python threads ---")
    for ident, frame in sys._current_frames().items():
        parts.append(f"thread {ident}:\n" + "".join(traceback.format_stack(frame, limit=8)))
    parts += ["--- dmesg (tail) ---", _run("dmesg", "-T")[-4000:]]
    return "\n".join(parts)


class StallWatch:
    """Every ``every`` s, the last ``KEEP`` snapshots into ``path`` (atomically)."""

    def __init__(self, path: Path, every: float = 60.0) -> None:
        self.path = path
        self.every = every
        self.snaps: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stall-watch", daemon=True)

    def start(self) -> StallWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.snaps = (self.snaps + [snapshot()])[-KEEP:]
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("\n\n".join(self.snaps) + "\n")
                os.replace(tmp, self.path)
            except Exception as e:  # noqa: BLE001 - a diagnostic must not end the run
                print(f"stall-watch: {type(e).__name__}: {e}", file=sys.stderr)
