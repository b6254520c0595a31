"""``load_config_in_worker``: the agent's reload reads the file in a child process
(no GIL shared with the event loop) and gets back exactly what ``load_config`` gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadirector.config import ConfigError, load_config
from hadirector.config import worker
from hadirector.config.worker import load_config_in_worker

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


def test_a_reader_that_outlives_its_timeout_is_stopped_and_the_file_refused():
    path = ROOT / "etc" / "primary.yaml"
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(path, timeout=0.001)     # not even the interpreter starts in 1 ms
    assert [str(i) for i in info.value.issues] == [f"{path}: reading took longer than 0.001 s; the reader was stopped"]


def test_a_reader_that_fails_is_a_refusal_not_a_crash(monkeypatch):
    monkeypatch.setattr(worker.sys, "executable", "/bin/false")
    with pytest.raises(ConfigError) as info:
        load_config_in_worker(ROOT / "etc" / "primary.yaml")
    assert info.value.issues[0].message == "the config reader failed (exit 1)"
