"""The one-agent-per-namespace lock, on real abstract unix sockets (no root needed).

Each test uses its own name, so a real agent on this host, or a parallel test run,
is never in the way. Two namespaces holding the same name is tests/netns
(test_single_agent.py: two agents in two namespaces both run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hadirector.agent.lock import LOCK_NAME, AgentLock, AlreadyRunning, Holder, holder_of

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def name() -> str:
    return f"hadirector-test/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def holder_process(name):
    """Another process holding the lock, as a running agent would."""
    prog = ("import sys, time\n"
            "from hadirector.agent.lock import AgentLock\n"
            f"lock = AgentLock({name!r}).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait(10)


def test_the_lock_name_is_abstract_and_names_the_project():
    assert LOCK_NAME.startswith("hadirector")
    with AgentLock(f"{LOCK_NAME}-probe-{uuid.uuid4().hex[:8]}") as lock:
        # Abstract: no file appears anywhere (and a kill -9 leaves none behind).
        assert lock.held and not Path(lock.name).exists()


def test_a_second_lock_fails_and_names_the_holders_pid(name, holder_process):
    with pytest.raises(AlreadyRunning) as e:
        AgentLock(name).acquire()
    assert e.value.holder == Holder(pid=holder_process.pid, uid=os.getuid())
    assert f"pid {holder_process.pid}" in str(e.value)
    assert "one agent per network namespace" in str(e.value)


def test_the_lock_is_free_the_moment_its_holder_is_killed(name, holder_process):
    holder_process.send_signal(signal.SIGKILL)
    holder_process.wait(10)
    with AgentLock(name) as lock:
        assert lock.held


def test_closing_the_lock_frees_it(name):
    first = AgentLock(name).acquire()
    with pytest.raises(AlreadyRunning) as e:
        AgentLock(name).acquire()
    assert e.value.holder.pid == os.getpid()
    first.close()
    assert holder_of(name) is None
    AgentLock(name).acquire().close()


def test_the_holder_drains_the_questions_so_the_backlog_never_fills(name):
    with AgentLock(name) as lock:
        for _ in range(50):                # far more than the backlog of 8
            assert holder_of(name) == Holder(os.getpid(), os.getuid())
            assert lock.accept_pending() == 1
        assert lock.accept_pending() == 0


def test_a_holder_that_is_asked_nothing_is_still_reported():
    assert Holder().describe() == "another agent"
    assert Holder(42, 0).describe() == "pid 42"
    assert Holder(42, 1000).describe() == "pid 42 (uid 1000)"   # a squatter, not root
