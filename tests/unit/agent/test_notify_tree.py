"""Notify scripts against real processes: a timed-out or superseded script dies with its
whole process tree (children that called setsid, double-forked orphans), and a hung
script holds the next state's scripts for SUPERSEDE_GRACE, not for its timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from structlog.testing import capture_logs

from hadirector.agent.notify import SUPERSEDE_GRACE, Notifier, run_script
from hadirector.model import NotifyScripts
from lab.processes import alive

# The script records its own pid, a direct child put in its own session with setsid,
# and a grandchild whose parent (a subshell) exits at once, so that it is orphaned in
# its own session too; then it hangs.
ESCAPING = ("echo $$ > {d}/script; "
            "setsid sleep 300 & echo $! > {d}/setsid_child; "
            "(setsid sleep 301 & echo $! > {d}/orphan); "
            "echo started; exec sleep 302")


def pids(d: Path, *names: str) -> dict[str, int]:
    return {n: int((d / n).read_text()) for n in names}


async def wait_files(d: Path, *names: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all((d / n).exists() and (d / n).read_text().strip() for n in names):
        assert time.monotonic() < deadline, f"script never wrote {names}"
        await asyncio.sleep(0.02)


async def test_timeout_kills_children_that_called_setsid_and_orphans(tmp_path):
    # 3 s: time enough for the script to start its children on a loaded machine.
    run = await run_script(("/bin/sh", "-c", ESCAPING.format(d=tmp_path)), 3.0)
    assert (run.reason, run.output) == ("timeout", "started")
    procs = pids(tmp_path, "script", "setsid_child", "orphan")
    still = {n: p for n, p in procs.items() if alive(p)}
    assert still == {}, f"survived the timeout: {still}"


async def test_a_normal_exit_leaves_a_started_daemon_running(tmp_path):
    # keepalived semantics: only a timeout (or a supersede) kills the tree.
    run = await run_script(("/bin/sh", "-c", f"setsid sleep 300 & echo $! > {tmp_path}/d"), 5.0)
    assert run.reason == "exit 0"
    daemon = int((tmp_path / "d").read_text())
    try:
        assert alive(daemon)
    finally:
        os.kill(daemon, signal.SIGKILL)


async def test_a_hung_script_is_superseded_by_the_next_state_and_dies_with_its_tree(tmp_path):
    order = tmp_path / "order"
    hung = NotifyScripts(master=("/bin/sh", "-c", f"echo master >> {order}; "
                                 + ESCAPING.format(d=tmp_path)), timeout=10.0)
    then = NotifyScripts(backup=("/bin/sh", "-c", f"echo backup >> {order}"), timeout=10.0)
    n = Notifier()
    with capture_logs() as logs:
        n.state_changed("INSTANCE", "vi_1", "MASTER", 150, hung)
        await wait_files(tmp_path, "script", "setsid_child", "orphan")
        t0 = time.monotonic()
        n.state_changed("INSTANCE", "vi_1", "BACKUP", 100, then)
        await n.drain(timeout=20)
        elapsed = time.monotonic() - t0
    # In order, and the next state's script ran after the grace, well before the
    # hung script's own 10 s timeout.
    assert order.read_text().split() == ["master", "backup"]
    assert SUPERSEDE_GRACE <= elapsed < 5.0, elapsed
    runs = [(e["state"], e["reason"]) for e in logs if e["event"].startswith("notify.script_")]
    assert runs == [("MASTER", "superseded"), ("BACKUP", "exit 0")]
    procs = pids(tmp_path, "script", "setsid_child", "orphan")
    assert {n: p for n, p in procs.items() if alive(p)} == {}


async def test_a_script_that_finishes_within_the_grace_is_not_killed(tmp_path):
    order = tmp_path / "order"
    slow = NotifyScripts(master=("/bin/sh", "-c", f"sleep 0.2; echo master >> {order}"))
    then = NotifyScripts(backup=("/bin/sh", "-c", f"echo backup >> {order}"))
    n = Notifier()
    with capture_logs() as logs:
        n.state_changed("INSTANCE", "vi_1", "MASTER", 150, slow)
        n.state_changed("INSTANCE", "vi_1", "BACKUP", 100, then)
        await n.drain(timeout=20)
    assert order.read_text().split() == ["master", "backup"]
    assert [e["reason"] for e in logs if e["event"].startswith("notify.script_")] == [
        "exit 0", "exit 0"]


async def test_a_script_running_alone_keeps_its_whole_timeout(tmp_path):
    # Superseding needs a newer change: with none waiting, the hung script runs to its
    # timeout (here longer than the grace) before it is killed.
    n = Notifier(supersede_grace=0.1)
    with capture_logs() as logs:
        t0 = time.monotonic()
        n.state_changed("INSTANCE", "vi_1", "FAULT", 100,
                        NotifyScripts(fault=("/bin/sh", "-c", "exec sleep 30"), timeout=1.0))
        await n.drain(timeout=20)
    assert time.monotonic() - t0 >= 1.0
    assert [e["reason"] for e in logs if e["event"] == "notify.script_failed"] == ["timeout"]


async def test_draining_at_exit_kills_a_hung_tree(tmp_path):
    n = Notifier()
    n.state_changed("INSTANCE", "vi_1", "MASTER", 150,
                    NotifyScripts(master=("/bin/sh", "-c", ESCAPING.format(d=tmp_path)), timeout=30))
    await wait_files(tmp_path, "script", "setsid_child", "orphan")
    await n.drain(timeout=0.2)
    procs = pids(tmp_path, "script", "setsid_child", "orphan")
    assert {n: p for n, p in procs.items() if alive(p)} == {}
