"""The agent's long-lived objects leave the collector's full passes after a config load,
and nothing frozen outlives the next load (``agent/heap.py``, issue 13)."""

from __future__ import annotations

import gc
import weakref

import pytest

from hadirector.agent import heap

from .test_reload_agent import VI_1, masters, yaml_text


class Node:
    def __init__(self) -> None:
        self.peer = self              # a cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def normal_collector():
    heap.release()
    yield
    heap.release()


def test_the_survivors_of_the_next_full_collection_are_frozen_and_nothing_before():
    kept = Node()
    heap.settle()
    assert heap.pending() and gc.get_freeze_count() == 0      # no pause of its own
    gc.collect(0)
    assert heap.pending(), "a young collection is not a full one"
    gc.collect()
    assert not heap.pending() and gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects()), "out of every generation a pass walks"
    made_after = Node()
    before = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() == before, "only the first full pass after settle freezes"
    del made_after


def test_garbage_from_before_a_settle_is_collected_not_frozen():
    dropped = Node()
    ref = weakref.ref(dropped)
    del dropped
    heap.settle()
    gc.collect()
    assert ref() is None


def test_what_the_last_load_froze_and_a_reload_dropped_is_collected_after_the_next_settle():
    old = Node()
    ref = weakref.ref(old)
    heap.settle()
    gc.collect()                                    # ``old`` is frozen now
    del old
    gc.collect()
    assert ref() is not None, "frozen: the full pass did not look at it"
    heap.settle()                                   # the reload
    gc.collect()
    assert ref() is None


def test_release_restores_the_normal_collector():
    heap.settle()
    gc.collect()
    heap.release()
    assert gc.get_freeze_count() == 0 and not heap.pending()
    assert heap._after_collection not in gc.callbacks


async def test_the_agent_settles_after_start_and_each_reload_and_releases_at_stop(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle"))
    monkeypatch.setattr(heap, "release", lambda: calls.append("release"))
    rig = await masters(tmp_path, VI_1)
    assert calls == ["settle"]
    result, _logs = await rig.reload(yaml_text(tmp_path, VI_1))
    assert result.ok and calls == ["settle", "settle"]
    refused, _logs = await rig.reload("not: [valid")
    assert not refused.ok and calls == ["settle", "settle"], "a refused reload loaded nothing"
    await rig.agent.stop()
    assert calls == ["settle", "settle", "release"]
