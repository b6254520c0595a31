"""quorum_up / quorum_down scripts against real processes: run without a shell in the
background, logged with their outcome, and killed with their whole tree (a child that
called setsid too) at QUORUM_SCRIPT_TIMEOUT instead of being left running."""

from __future__ import annotations

import time

from structlog.testing import capture_logs

from hadirector.agent import lvs
from hadirector.director.lvs import RunCommand
from lab.processes import alive


async def test_a_quorum_script_runs_without_a_shell_and_is_logged(tmp_path):
    out = tmp_path / "args"
    effect = RunCommand(("/bin/sh", "-c", f'echo "$0 $1" > {out}; echo up', "$(false)", ";"), "web",
                        "quorum_regained")
    with capture_logs() as logs:
        await lvs._run_quorum_script(effect)
    assert out.read_text() == "$(false) ;\n"
    assert [(e["event"], e["service"], e["output"], e["reason"]) for e in logs] == [
        ("ipvs.quorum_script_finished", "web", "up", "quorum_regained")]


async def test_a_failing_quorum_script_is_logged_with_its_exit_status_and_output():
    effect = RunCommand(("/bin/sh", "-c", "echo no route >&2; exit 3"), "web", "healthy_weight_below_quorum")
    with capture_logs() as logs:
        await lvs._run_quorum_script(effect)
    assert [(e["event"], e["output"], e["reason"]) for e in logs] == [
        ("ipvs.quorum_script_failed", "no route", "exit 3")]


async def test_a_missing_quorum_script_is_logged_not_raised(tmp_path):
    with capture_logs() as logs:
        await lvs._run_quorum_script(RunCommand((str(tmp_path / "nope"),), "web", "quorum_regained"))
    assert [e["event"] for e in logs] == ["ipvs.quorum_script_failed"]
    assert "No such file" in logs[0]["reason"]


async def test_a_hung_quorum_script_is_killed_with_its_tree_at_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(lvs, "QUORUM_SCRIPT_TIMEOUT", 1.0)
    script = f"echo $$ > {tmp_path}/script; setsid sleep 300 & echo $! > {tmp_path}/child; exec sleep 301"
    t0 = time.monotonic()
    with capture_logs() as logs:
        await lvs._run_quorum_script(RunCommand(("/bin/sh", "-c", script), "web", "quorum_regained"))
    assert 1.0 <= time.monotonic() - t0 < 1.0 + 1.5
    assert [(e["event"], e["reason"]) for e in logs] == [("ipvs.quorum_script_failed", "timeout")]
    pids = [int((tmp_path / n).read_text()) for n in ("script", "child")]
    assert [p for p in pids if alive(p)] == []
