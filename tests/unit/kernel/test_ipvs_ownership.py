"""The owned set survives a restart and is replaced atomically."""

import json

from hadirector.kernel.ownership import OwnedStore
from hadirector.ipvs.table import ServiceKey

KEYS = {ServiceKey.inet("tcp", "10.244.0.100", 80), ServiceKey.mark(6, 9)}


def test_saved_set_loads_back_in_a_new_store(tmp_path):
    OwnedStore.in_state_dir(tmp_path).save(KEYS)
    assert OwnedStore.in_state_dir(tmp_path).load() == KEYS


def test_missing_file_is_an_empty_set(tmp_path):
    assert OwnedStore.in_state_dir(tmp_path / "nothing-yet").load() == set()


def test_save_replaces_by_rename_and_leaves_no_temporary_files(tmp_path):
    store = OwnedStore.in_state_dir(tmp_path)
    store.save(KEYS)
    inode = store.path.stat().st_ino
    store.save(set())
    assert store.path.stat().st_ino != inode          # a new file renamed over the old
    assert [p.name for p in tmp_path.iterdir()] == ["ipvs-owned.json"]
    assert json.loads(store.path.read_text()) == {"format": 1, "services": []}


def test_memory_store_for_tests_and_cli():
    s = OwnedStore(None)
    s.save(KEYS)
    assert s.load() == KEYS
