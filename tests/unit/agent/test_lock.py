"""The one-agent-per-namespace lock: real flock on files in a private directory, real
abstract unix sockets as the beacon (no root needed).

Each test uses its own directory and beacon name, so a real agent on this host, or a
parallel test run, is never in the way. Two namespaces, a squatter as ``nobody`` and a
real agent are tests/netns (test_single_agent.py).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hadirector.agent.lock import (
    BEACON_NAME,
    LOCK_DIR,
    AgentLock,
    AlreadyRunning,
    Holder,
    LockUnusable,
    holder_of,
    netns_inode,
    private_dir,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def beacon() -> str:
    return f"hadirector-test/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def lockdir(tmp_path) -> str:
    return str(tmp_path / "run" / "locks")


@pytest.fixture
def holder_process(lockdir, beacon):
    """Another process holding the lock, as a running agent would."""
    prog = ("import sys, time\n"
            "from hadirector.agent.lock import AgentLock\n"
            f"lock = AgentLock({lockdir!r}, {beacon!r}).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait(10)


def test_the_lock_is_a_file_named_by_the_network_namespace_in_a_private_directory(lockdir, beacon):
    assert LOCK_DIR == "/run/hadirector/locks" and BEACON_NAME == "hadirector/agent"
    with AgentLock(lockdir, beacon) as lock:
        assert lock.path == f"{lockdir}/net-{netns_inode()}.lock"
        assert netns_inode() == os.stat("/proc/self/ns/net").st_ino
        assert stat.S_IMODE(os.stat(lockdir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
        assert Path(lock.path).read_text() == f"{os.getpid()}\n"
        # The beacon answers with our credentials.
        assert holder_of(beacon) == Holder(os.getpid(), os.getuid())
        assert lock.squatter is None


def test_a_second_lock_fails_and_names_the_holders_pid(lockdir, beacon, holder_process):
    with pytest.raises(AlreadyRunning) as e:
        AgentLock(lockdir, beacon).acquire()
    assert e.value.holder.pid == holder_process.pid
    assert f"pid {holder_process.pid}" in str(e.value)
    assert "one agent per network namespace" in str(e.value)


def test_the_lock_is_free_the_moment_its_holder_is_killed(lockdir, beacon, holder_process):
    holder_process.send_signal(signal.SIGKILL)
    holder_process.wait(10)
    with AgentLock(lockdir, beacon) as lock:       # the file is still there; the flock is not
        assert lock.held and Path(lock.path).read_text() == f"{os.getpid()}\n"


def test_closing_the_lock_frees_it_and_forgets_the_pid(lockdir, beacon):
    first = AgentLock(lockdir, beacon).acquire()
    with pytest.raises(AlreadyRunning) as e:
        AgentLock(lockdir, None).acquire()
    assert e.value.holder.pid == os.getpid()
    first.close()
    assert Path(first.path).read_text() == ""
    assert holder_of(beacon) is None
    AgentLock(lockdir, beacon).acquire().close()


def test_two_namespaces_are_two_locks(lockdir, beacon):
    # Two inodes: two directors. (The beacon is per namespace in reality; one here.)
    with AgentLock(lockdir, beacon, netns=11), AgentLock(lockdir, None, netns=12):
        pass


def test_the_lock_descriptor_is_not_inherited_by_children(lockdir, beacon):
    # A notify script that outlives the agent must not keep the lock.
    with AgentLock(lockdir, beacon) as lock:
        fds = subprocess.run([sys.executable, "-c", "import os; print(os.listdir('/proc/self/fd'))"],
                             capture_output=True, text=True, close_fds=False).stdout
        assert str(lock._fd) not in eval(fds)


def test_a_beacon_name_taken_first_is_reported_and_the_lock_still_taken(lockdir, beacon):
    # Not root-owned here (or ourselves): a squatter. The lock is the file, never the name.
    squat = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squat.bind(b"\0" + beacon.encode())
    squat.listen(0)
    try:
        with AgentLock(lockdir, beacon) as lock:
            assert lock.held and lock.fileno() is None
            assert lock.squatter is not None
    finally:
        squat.close()


def test_asking_a_squatter_that_never_accepts_does_not_block(beacon):
    squat = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squat.bind(b"\0" + beacon.encode())
    squat.listen(0)
    fillers = []
    try:
        for _ in range(4):          # fill the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(b"\0" + beacon.encode())
            except BlockingIOError:
                pass
            fillers.append(s)
        t0 = time.monotonic()
        assert holder_of(beacon) == Holder()
        assert time.monotonic() - t0 < 0.1
    finally:
        for s in fillers:
            s.close()
        squat.close()


def test_the_holder_drains_the_questions_so_the_backlog_never_fills(lockdir, beacon):
    with AgentLock(lockdir, beacon) as lock:
        for _ in range(50):                # far more than the backlog of 8
            assert holder_of(beacon) == Holder(os.getpid(), os.getuid())
            assert lock.accept_pending() == 1
        assert lock.accept_pending() == 0


def test_a_lock_directory_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockUnusable, match="not a directory"):
        private_dir(str(tmp_path / "locks"))


def test_a_lock_directory_under_a_parent_others_can_write_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)              # not sticky: anyone could rename our directory away
    with pytest.raises(LockUnusable, match="writable by group or others"):
        private_dir(str(loose / "locks"))


def test_a_loose_mode_on_our_own_lock_directory_is_mended(tmp_path):
    d = tmp_path / "locks"
    d.mkdir()
    d.chmod(0o755)
    private_dir(str(d))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_a_holder_that_cannot_be_named_is_still_reported():
    assert Holder().describe() == "another agent"
    assert Holder(42, 0).describe() == "pid 42"
    assert Holder(42, 1000).describe() == "pid 42 (uid 1000)"


def test_a_beacon_held_by_another_process_of_our_uid_refuses_even_with_the_flock_ours(
        tmp_path, lockdir, beacon, holder_process):
    # The holder's lock file is elsewhere (its directory removed and re-made, or another
    # mount namespace's /run): the flock here is free, the beacon tells.
    with pytest.raises(AlreadyRunning) as e:
        AgentLock(str(tmp_path / "other-run" / "locks"), beacon).acquire()
    assert e.value.holder == Holder(holder_process.pid, os.getuid())
    assert e.value.name == f"@{beacon}"
