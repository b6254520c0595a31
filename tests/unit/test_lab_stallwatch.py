"""lab/stallwatch.py: the soak's record of what a guest that stopped printing was doing."""

from __future__ import annotations

import time

from lab import stallwatch

TOP = """top - 16:04:46 up 13:09,  0 user,  load average: 2.18, 3.01, 3.08
  PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND
    7 root      20   0       0      0      0 S  99.0   0.0   0:01.00 old-sample

top - 16:04:48 up 13:09,  0 user,  load average: 2.18, 3.01, 3.08
Threads: 123 total,   3 running, 120 sleeping,   0 stopped,   0 zombie

  PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND
31689 root      20   0 3924156   1.6g  75132 R  35.3   6.6   6:52.61 qemu-system-x86
31688 root      20   0 3924156   1.6g  75132 R  28.4   6.6   6:17.87 qemu-system-x86
   14 root      20   0       0      0      0 S   0.5   0.0   0:18.43 ksoftirqd/0
"""


def test_the_busiest_threads_are_read_from_tops_last_sample_only():
    assert stallwatch.busiest(TOP, n=2) == [31689, 31688]
    assert 7 not in stallwatch.busiest(TOP)


def test_a_snapshot_names_the_busy_threads_the_harness_stacks_and_the_kernel_log():
    snap = stallwatch.snapshot()
    for section in ("loadavg", "--- top -H", "--- this harness's Python threads ---", "--- dmesg"):
        assert section in snap
    assert "test_a_snapshot_names_the_busy_threads" in snap      # this very thread's stack


def test_the_file_keeps_the_last_snapshots_while_the_run_goes_on(tmp_path, monkeypatch):
    n = iter(range(1000))
    monkeypatch.setattr(stallwatch, "snapshot", lambda: f"snap {next(n)}")
    path = tmp_path / "stall.txt"

    def kept() -> list[str]:
        return [line for line in path.read_text().splitlines() if line.startswith("snap ")] if path.exists() else []

    watch = stallwatch.StallWatch(path, every=0.01).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "snap 5" not in kept():
        time.sleep(0.01)
    watch.stop()
    assert len(kept()) == stallwatch.KEEP and "snap 0" not in kept()
