"""agent.started's startup_s: seconds since the process was exec'd, read from /proc."""

from __future__ import annotations

import subprocess
import sys

from lab import ROOT


def test_startup_s_counts_from_the_exec_of_the_process_not_from_the_import():
    # A process that idles 0.5 s before it imports the agent still says >= 0.5 s.
    code = ("import time; time.sleep(0.5); "
            "from hadirector.agent.agent import since_exec; print(since_exec())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60, check=True)
    seconds = float(out.stdout)
    assert 0.5 <= seconds < 60
