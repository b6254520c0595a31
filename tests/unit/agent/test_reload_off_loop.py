"""A reload reads the config file off the event loop: the VRRP drivers keep sending
adverts while it loads (issue 9, fault 3: a 7 s load on the loop let the backup take
the VIPs while the master still held them)."""

from __future__ import annotations

import asyncio
import threading

import hadirector.config.worker

from .test_reload_agent import VI_1, masters, yaml_text


async def test_the_master_keeps_advertising_while_a_reload_loads_the_config(tmp_path, monkeypatch):
    rig = await masters(tmp_path, VI_1)
    real_load = hadirector.config.worker.load_in_worker
    loading, release = threading.Event(), threading.Event()
    loaded_on = []

    def slow_load(path, **kwargs):
        loaded_on.append(threading.current_thread())
        loading.set()
        # On the loop this would wait for itself: the adverts below could not be sent.
        assert release.wait(10), "the loop never saw adverts while the config loaded"
        return real_load(path, **kwargs)

    monkeypatch.setattr(hadirector.config.worker, "load_in_worker", slow_load)
    rig.path.write_text(yaml_text(tmp_path, VI_1))
    reload = asyncio.create_task(rig.agent.reload_async())
    await asyncio.wait_for(asyncio.to_thread(loading.wait, 10), 10)
    sent = len(rig.adverts())

    await rig.until(lambda: len(rig.adverts()) >= sent + 3, "three adverts while the config loads")
    assert not reload.done()
    release.set()
    result = await reload
    assert result.ok and result.generation == 2, result
    assert loaded_on and loaded_on[0] is not threading.main_thread()
    assert rig.events == [] and rig.addresses.log == [], "no transition, no VIP change"
    await rig.agent.stop()
