"""A real ``hadirector run`` enters BACKUP before it imports what BACKUP does not need.

The status model behind state.json (``agent.status``, ``api.snapshot``: 34 dataclasses,
~15 % of exec -> BACKUP) used to be imported before the machines started: the link
tracker's first reading of eth0 over rtnetlink asked for a state.json write. It is
imported at the first write after INIT -> BACKUP now, and state.json is still written.
Read from the agent's own ``-X importtime`` lines (``PYTHONPROFILEIMPORTTIME``), which
CPython writes to the stderr the agent logs to, in order with the log lines.
"""

from __future__ import annotations

import json

import pytest

from lab.agents import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.lan("so", nodes=1, net=62)]

ADVERT = 0.1
START_TIMEOUT = 15.0
# Not needed before INIT -> BACKUP on a VRRP-only agent (the first two: the first
# state.json write; the others: a reload, a track script, advert auth).
LATER = ("hadirector.agent.status", "hadirector.api.snapshot", "hadirector.agent.reload",
         "hadirector.health.policy", "hadirector.vrrp.auth", "hmac")


def first_backup_and_imports(text: str) -> tuple[int, dict[str, int]]:
    """The line number of the INIT -> BACKUP event and of each module's import line."""
    backup, imported = -1, {}
    for n, line in enumerate(text.splitlines()):
        if line.startswith("import time:"):
            imported.setdefault(line.rsplit("|", 1)[1].strip(), n)
        elif backup < 0 and line.startswith("{"):
            ev = json.loads(line)
            if ev.get("event") == "vrrp.role_changed" and (ev["old"], ev["new"]) == ("INIT", "BACKUP"):
                backup = n
    return backup, imported


def test_a_real_agent_enters_backup_before_importing_the_status_model_then_writes_state_json(
        lan, agents, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    a = agents(lan, 1).start()
    wait_for(lambda: a.role() == "MASTER", START_TIMEOUT, what="node 1 MASTER in state.json")
    backup, imported = first_backup_and_imports(a.log_text())
    assert backup >= 0, a.log_text()[-2000:]
    assert "hadirector.agent.agent" in imported and imported["hadirector.agent.agent"] < backup
    assert imported["hadirector.agent.status"] > backup
    assert imported["hadirector.api.snapshot"] > backup
    assert all(imported.get(m, backup + 1) > backup for m in LATER), \
        {m: imported.get(m) for m in LATER}
    assert a.state()["instances"]["vi_1"]["state"] == "MASTER"
