"""``load_config_in_worker``: the agent's reload reads the file in a forked child
process (no GIL shared with the event loop) and gets back exactly what ``load_config``
gives; a reader that fails, hangs, spends its CPU budget or is signalled is a refused
reload, never a stuck or confused agent. A busy host is not a costly file: the budget
counts the reader's CPU, not the wall clock."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hadirector.config import ConfigError, load_config
from hadirector.config import worker
from hadirector.config.worker import ReadCancelled, load_config_in_worker, load_in_worker

ROOT = Path(__file__).resolve().parents[3]
BAD = ROOT / "tests" / "unit" / "config" / "bad"


@pytest.mark.parametrize("name", ["primary.yaml", "backup.yaml"])
def test_the_worker_returns_the_same_config_as_the_loader(name):
    path = ROOT / "etc" / name
    assert load_config_in_worker(path) == load_config(path)


@pytest.mark.parametrize("name", ["merge_key_bomb.yaml", "duplicate_vrid.yaml", "recursive_merge_key.yaml"])
def test_the_worker_raises_the_same_issues_as_the_loader(name):
    with pytest.raises(ConfigError) as here:
        load_config(BAD / name)
    with pytest.raises(ConfigError) as there:
        load_config_in_worker(BAD / name)
    assert there.value.issues == here.value.issues and str(there.value) == str(here.value)


def test_issues_past_the_first_100_are_still_counted(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"bad{i}: 1\n" for i in range(130)))
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(path)
    assert len(info.value.issues) == 100 and info.value.count == 130


def test_an_unreadable_file_is_reported_as_the_loader_does(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(tmp_path / "missing.yaml")
    assert [str(i) for i in info.value.issues] == [f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


@pytest.fixture
def forks(monkeypatch):
    """The pids of the readers forked during the test."""
    pids, real = [], os.fork

    def fork():
        pid = real()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def test_the_reader_is_another_process_at_a_lower_priority(monkeypatch):
    monkeypatch.setattr(worker, "load", lambda _: SimpleNamespace(config=(os.getpid(), os.nice(0)), warnings=()))
    pid, nice = load_config_in_worker(ROOT / "etc" / "primary.yaml")
    assert pid != os.getpid() and nice == os.nice(0) + worker.NICE


def test_a_reader_that_outlives_its_timeout_is_stopped_and_the_file_refused(monkeypatch, forks):
    monkeypatch.setattr(worker, "load", lambda _: time.sleep(60))
    path = ROOT / "etc" / "primary.yaml"
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(path, timeout=0.5)
    assert [str(i) for i in info.value.issues] == [f"{path}: reading took longer than 0.5 s; the reader was stopped"]
    assert time.monotonic() - t0 < 30
    assert len(forks) == 1 and not os.path.exists(f"/proc/{forks[0]}"), "killed and reaped"


def test_a_reader_that_raises_is_a_refusal_naming_the_error(monkeypatch, forks):
    def broken(_):
        raise RuntimeError("boom")
    monkeypatch.setattr(worker, "load", broken)
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(ROOT / "etc" / "primary.yaml")
    assert info.value.issues[0].message == "the config reader failed: RuntimeError: boom"
    assert len(forks) == 1 and not os.path.exists(f"/proc/{forks[0]}")


def test_a_reader_killed_by_a_signal_is_a_refusal_naming_the_signal(monkeypatch):
    monkeypatch.setattr(worker, "load", lambda _: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(ROOT / "etc" / "primary.yaml")
    assert info.value.issues[0].message == "the config reader failed (killed by SIGKILL)"


def test_a_sigterm_to_the_reader_ends_it_and_never_reaches_the_agents_loop(monkeypatch):
    # The agent reads from a thread beside a loop with asyncio signal handlers, whose
    # wakeup fd the child inherits. A unit stop signals every process of the unit.
    def signalled(_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    monkeypatch.setattr(worker, "load", signalled)
    seen: list[int] = []

    async def reload() -> ConfigError:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, seen.append, signal.SIGTERM)
        try:
            with pytest.raises(ConfigError) as info:
                await asyncio.to_thread(load_config_in_worker, ROOT / "etc" / "primary.yaml")
            await asyncio.sleep(0.3)        # a stray wakeup byte would be handled by now
            return info.value
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    error = asyncio.run(reload())
    assert error.issues[0].message == "the config reader failed (killed by SIGTERM)"
    assert seen == []


def spin(_):
    while True:
        pass


@pytest.fixture
def unniced(monkeypatch):
    """The reader at the test's own priority: its CPU budget is what these tests are
    about, and at nice 10 on a busy machine a budget of 1 s takes half a minute to use."""
    monkeypatch.setattr(worker, "NICE", 0)


def test_a_reader_past_its_cpu_budget_is_stopped_and_the_file_refused(monkeypatch, forks, unniced):
    monkeypatch.setattr(worker, "load", spin)
    path = ROOT / "etc" / "primary.yaml"
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(path, cpu=1)
    assert [str(i) for i in info.value.issues] == [
        f"{path}: reading used more than 1 s of CPU; the reader was stopped"]
    assert len(forks) == 1 and not os.path.exists(f"/proc/{forks[0]}"), "reaped"


def test_a_reader_deaf_to_sigxcpu_is_killed_at_the_hard_limit_and_still_named_over_budget(
        monkeypatch, unniced):
    # As a reader stuck in C code: the soft limit's handler never runs.
    def stuck(_):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXCPU})
        spin(_)
    monkeypatch.setattr(worker, "load", stuck)
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(ROOT / "etc" / "primary.yaml", cpu=1)
    assert info.value.issues[0].message == "reading used more than 1 s of CPU; the reader was stopped"


def test_a_reader_that_waits_past_its_cpu_budget_without_using_it_finishes(monkeypatch):
    # A starved reader on a busy host: wall-clock time passes, its CPU time does not.
    def starved(_):
        time.sleep(2.5)
        return SimpleNamespace(config="read", warnings=())
    monkeypatch.setattr(worker, "load", starved)
    assert load_config_in_worker(ROOT / "etc" / "primary.yaml", cpu=1) == "read"


def test_a_cancelled_read_stops_the_reader_at_once(monkeypatch, forks):
    monkeypatch.setattr(worker, "load", lambda _: time.sleep(60))
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(ReadCancelled):
        load_in_worker(ROOT / "etc" / "primary.yaml", cancel=cancel)
    assert time.monotonic() - t0 < 30, "ended by the cancel, not a timeout"
    assert len(forks) == 1 and not os.path.exists(f"/proc/{forks[0]}"), "killed and reaped"


def test_a_read_asked_for_after_the_cancel_starts_no_reader(forks):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ReadCancelled):
        load_in_worker(ROOT / "etc" / "primary.yaml", cancel=cancel)
    assert forks == []
