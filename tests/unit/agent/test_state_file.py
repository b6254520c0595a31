"""state.json is one view of the agent's state, written once per role change, after
everything that role change does (VIPs, notify, subscribers such as the sync daemon)."""

from __future__ import annotations

import json

from hadirector.vrrp.machine import State

from .test_agent import Rig, inst


async def test_state_json_is_written_once_per_role_change_after_the_subscribers_ran(tmp_path):
    rig = Rig(tmp_path, inst())
    seen: list[tuple[str, str]] = []
    rig.agent.on_role_changed.append(lambda e: seen.append(("subscriber", e.new.value)))
    write = rig.agent.write_state

    def recording_write() -> None:
        write()
        saved = json.loads((tmp_path / "state.json").read_text())
        seen.append(("state.json", saved["instances"]["vi_1"]["state"]))

    rig.agent.write_state = recording_write
    await rig.agent.start()
    await rig.master()          # Master_Down_Interval on the machine's own timer
    assert rig.agent.runtimes["vi_1"].driver.state is State.MASTER
    # Start-up writes its own (BACKUP, then running); the takeover is one write, after
    # the subscribers (the LVS side switches the sync daemon there).
    takeover = seen[seen.index(("subscriber", "BACKUP")) + 1:]
    takeover = [e for e in takeover if e != ("state.json", "BACKUP")]
    assert takeover == [("subscriber", "MASTER"), ("state.json", "MASTER")]
    await rig.agent.stop()


async def test_state_json_is_the_vrrp_part_of_the_status_snapshot_the_api_serves(tmp_path):
    from hadirector.agent.api_component import ApiComponent
    from hadirector.api.snapshot import Snapshot, state_file

    rig = Rig(tmp_path, inst())
    await rig.agent.start()
    await rig.master()          # Master_Down_Interval on the machine's own timer
    try:
        rig.agent.write_state()             # now: the counters have moved since the takeover
        saved = json.loads((tmp_path / "state.json").read_text())
        served = Snapshot.from_dict(ApiComponent().snapshot(rig.agent).to_dict())   # as /status
        view = state_file(served)
        # Both are one model: equal but for the instant each read the clocks at.
        for d in (saved, view):
            for i in d["instances"].values():
                assert abs(i.pop("since") - served.vrrp_instances[0].since) < 1.0
        assert saved == view
        v = saved["instances"]["vi_1"]
        assert (v["state"], v["holds_vips"], v["master"], saved["running"]) == (
            "MASTER", True, served.vrrp_instances[0].master_address, True)
    finally:
        await rig.agent.stop()
