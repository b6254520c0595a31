"""keepalived-compatible notify scripts: argv, ordering, timeouts, never blocking."""

from __future__ import annotations

import asyncio
import sys

from structlog.testing import capture_logs

from hadirector.agent.notify import Notifier, argv_for, run_script
from hadirector.model import NotifyScripts

PY = sys.executable


def test_notify_gets_keepalived_arguments_appended_after_the_state_script():
    s = NotifyScripts(master=("/bin/m",), backup=("/bin/b", "x"), notify=("/bin/n", "--flag"))
    assert argv_for("INSTANCE", "vi_1", "MASTER", 150, s) == [
        ("/bin/m",), ("/bin/n", "--flag", "INSTANCE", "vi_1", "MASTER", "150")]
    assert argv_for("INSTANCE", "vi_1", "BACKUP", 100, s) == [
        ("/bin/b", "x"), ("/bin/n", "--flag", "INSTANCE", "vi_1", "BACKUP", "100")]


def test_stopping_instance_runs_stop_scripts_with_keepalived_state_word():
    s = NotifyScripts(stop=("/bin/s",), notify=("/bin/n",))
    # The machine's INITIALIZE after shutdown is keepalived's STOP.
    assert argv_for("INSTANCE", "vi_1", "INIT", 100, s) == [("/bin/s",), ("/bin/n", "INSTANCE", "vi_1", "STOP", "100")]
    assert argv_for("GROUP", "g", "FAULT", 0, NotifyScripts()) == []


async def test_scripts_run_in_order_of_changes_without_blocking_the_caller(tmp_path):
    out = tmp_path / "out"
    # Appends two of keepalived's arguments (name, state) after a delay: a later,
    # faster script must still run after it. sh, not Python: the earlier script must
    # finish within the supersede grace even on a loaded machine.
    script = ["/bin/sh", "-c", 'sleep "$1"; echo "$4 $5" >> "$2"', "notify"]
    n = Notifier()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n.state_changed("INSTANCE", "vi_1", "MASTER", 150,
                    NotifyScripts(notify=tuple(script + ["0.3", str(out)])))
    n.state_changed("INSTANCE", "vi_1", "BACKUP", 100,
                    NotifyScripts(notify=tuple(script + ["0", str(out)])))
    assert loop.time() - t0 < 0.05          # returned at once
    await n.drain(timeout=10)
    assert out.read_text().splitlines() == ["vi_1 MASTER", "vi_1 BACKUP"]


async def test_a_hung_script_is_killed_at_its_timeout_and_logged():
    with capture_logs() as logs:
        # sh, not Python: it must print before the timeout even on a loaded machine.
        run = await run_script(("/bin/sh", "-c", "echo started; exec sleep 30"), 0.3)
    assert run.reason == "timeout" and run.returncode is None
    assert run.output == "started"
    n = Notifier()
    with capture_logs() as logs:
        n.state_changed("INSTANCE", "vi_1", "FAULT", 100,
                        NotifyScripts(fault=(PY, "-c", "import sys; print('bad'); sys.exit(3)")))
        await n.drain(timeout=10)
    failed = [e for e in logs if e["event"] == "notify.script_failed"]
    assert failed and failed[0]["reason"] == "exit 3" and failed[0]["output"] == "bad"


async def test_missing_script_is_reported_not_raised():
    run = await run_script(("/nonexistent/notify",), 1.0)
    assert run.reason == "not found"
