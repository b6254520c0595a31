"""The one spawn helper against real processes: a hung child is killed at its timeout and
reaped, a child that called setsid dies with it, a cancellation in the middle of a spawn
neither hangs the loop nor leaves a process, and asyncio.run's clean-up does not hang on
a spawn it cancels (CPython 3.11's subprocess transport does)."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hadirector.kernel import spawn
from lab.processes import alive

ROOT = Path(__file__).resolve().parents[3]
SLACK = 1.5     # seconds of scheduling delay a loaded 2-core machine may add


def state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:][:1].decode()


def children(marker: str) -> list[int]:
    """Our child processes (zombies too) whose command line holds ``marker``."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = stat[stat.rindex(b")") + 2:].split()[1].decode()
        if ppid == me and marker.encode() in cmdline:
            out.append(int(name))
    return out


async def wait_for_file(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        await asyncio.sleep(0.02)
    return int(path.read_text())


async def test_a_child_that_exits_gives_its_code_and_bounded_output():
    done = await spawn.run(["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"], 5.0, output_limit=8)
    assert done == spawn.Finished(3, b"hello\noo", "exited")


async def test_output_is_dropped_unless_asked_for():
    done = await spawn.run(["/bin/echo", "hello"], 5.0)
    assert done == spawn.Finished(0, b"", "exited")


async def test_a_child_killed_by_a_signal_of_its_own_reports_it():
    done = await spawn.run(["/bin/sh", "-c", "kill -TERM $$"], 5.0)
    assert (done.returncode, done.outcome) == (-15, "exited")


async def test_a_hung_child_is_killed_at_its_timeout_and_reaped(tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    done = await spawn.run(["/bin/sh", "-c", f"echo $$ > {pidfile}; echo started; exec sleep 300"], 1.0,
                           output_limit=100)
    took = time.monotonic() - t0
    assert done == spawn.Finished(None, b"started\n", "timeout")
    assert 1.0 <= took < 1.0 + SLACK, took
    assert state(int(pidfile.read_text())) is None          # killed and reaped: no zombie


async def test_the_timeout_kills_a_child_that_called_setsid_and_a_double_fork_orphan(tmp_path):
    script = (f"setsid sleep 300 & echo $! > {tmp_path}/setsid_child; "
              f"(setsid sleep 301 & echo $! > {tmp_path}/orphan); exec sleep 302")
    done = await spawn.run(["/bin/sh", "-c", script], 1.5)
    assert done.outcome == "timeout"
    pids = {n: int((tmp_path / n).read_text()) for n in ("setsid_child", "orphan")}
    assert {n: p for n, p in pids.items() if alive(p)} == {}


async def test_a_normal_exit_leaves_a_daemon_it_started_running(tmp_path):
    # keepalived semantics: only a timeout, a stop or a cancellation kills the tree; a
    # daemon holding the output pipe delays the result by the output grace at most.
    t0 = time.monotonic()
    done = await spawn.run(["/bin/sh", "-c", f"setsid sleep 300 & echo $! > {tmp_path}/d; echo ok"], 5.0,
                           output_limit=100)
    assert (done.returncode, done.output) == (0, b"ok\n")
    assert time.monotonic() - t0 < spawn.OUTPUT_GRACE + SLACK
    daemon = int((tmp_path / "d").read_text())
    try:
        assert alive(daemon)
    finally:
        os.kill(daemon, 9)


async def test_a_stop_kills_the_child_before_its_timeout(tmp_path):
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    t0 = time.monotonic()
    done = await spawn.run(["/bin/sleep", "300"], 30.0, stop=stop)
    assert (done.returncode, done.outcome) == (None, "stopped")
    assert time.monotonic() - t0 < 0.3 + SLACK


async def test_a_child_that_cannot_start_raises_its_oserror(tmp_path):
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(FileNotFoundError):
        await spawn.run([str(tmp_path / "missing")], 5.0)
    with pytest.raises(PermissionError):
        await spawn.run([str(plain)], 5.0)


async def test_a_cancellation_kills_and_reaps_the_running_child(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(spawn.run(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], 30.0))
    pid = await wait_for_file(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state(pid) is None


async def test_a_cancellation_in_the_middle_of_a_spawn_leaves_no_process_and_no_hang():
    # Cancel after 0..4 loop turns: before, during and just after the thread's spawn.
    marker = f"{random.randrange(10**6)}.{os.getpid()}"       # sleep's argument names our children
    rng = random.Random(11)
    for _ in range(40):
        task = asyncio.create_task(spawn.run(["/bin/sleep", marker], 30.0))
        for _ in range(rng.randrange(5)):
            await asyncio.sleep(0)
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10.0)
        assert done, "the cancelled spawn hung"
        assert task.cancelled()
    assert children(marker) == []       # every child killed and reaped: not even a zombie


async def test_a_second_cancellation_during_the_kill_still_reaps_the_child(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(spawn.run(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], 30.0))
    pid = await wait_for_file(pidfile)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task], timeout=10.0)
    assert task.cancelled() and state(pid) is None


async def test_without_a_pidfd_the_child_is_waited_for_in_a_thread(monkeypatch, tmp_path):
    # An old kernel (ENOSYS) or a seccomp profile (EPERM) refuses pidfd_open.
    def refused(pid, flags=0):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(spawn.os, "pidfd_open", refused)
    assert await spawn.run(["/bin/sh", "-c", "echo hi; exit 4"], 5.0, output_limit=10) == \
        spawn.Finished(4, b"hi\n", "exited")
    pidfile = tmp_path / "pid"
    done = await spawn.run(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], 0.5)
    assert done.outcome == "timeout" and state(int(pidfile.read_text())) is None


ASYNCIO_RUN = """
    import asyncio, sys
    from hadirector.kernel import spawn

    async def main(turns):
        # An agent failing just after start: a script's spawn is under way when
        # main() returns, and asyncio.run cancels it in its clean-up.
        asyncio.get_running_loop().create_task(spawn.run(["/bin/sleep", sys.argv[1]], 30.0))
        for _ in range(turns):
            await asyncio.sleep(0)

    for i in range(30):
        asyncio.run(main(i % 4))
    print("done")
"""


def test_asyncio_run_cleaning_up_a_spawn_it_cancelled_neither_hangs_nor_leaves_the_child():
    marker = f"{random.randrange(10**6)}.{os.getpid()}"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(ASYNCIO_RUN), marker], capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert (res.returncode, res.stdout.strip()) == (0, "done"), res.stderr
    assert time.monotonic() - t0 < 30
    leftovers = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert leftovers == ""
