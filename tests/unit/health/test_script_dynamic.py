"""A dynamic script check (keepalived's misc_dynamic, check_misc.c): exit 0 is up at the
configured weight, 1 is down, 2-255 is up with weight = code - 2 (issue 13)."""

from __future__ import annotations

import pytest

from hadirector.health.policy import HealthPolicy, HealthState, ProbeResult
from hadirector.health.probes import run_check, script_probe
from hadirector.model import HealthCheck, ScriptProbe


@pytest.mark.parametrize("code, ok, weight", [
    (0, True, None), (1, False, None), (2, True, 0), (7, True, 5), (255, True, 253),
])
async def test_dynamic_script_exit_code_sets_health_and_weight(code, ok, weight):
    r = await script_probe(["/bin/sh", "-c", f"exit {code}"], timeout=5.0, dynamic=True)
    assert (r.ok, r.detail, r.weight) == (ok, f"exit {code}", weight)


async def test_a_plain_script_check_is_down_on_any_exit_but_zero():
    r = await script_probe(["/bin/sh", "-c", "exit 7"], timeout=5.0)
    assert (r.ok, r.weight) == (False, None)


async def test_run_check_passes_dynamic_through():
    check = HealthCheck(ScriptProbe(("/bin/sh", "-c", "exit 12"), dynamic=True), timeout=5.0)
    r = await run_check(check, None, 0)
    assert (r.ok, r.weight) == (True, 10)


def test_policy_keeps_the_weight_of_the_last_ok_result_and_drops_it_when_the_probe_changes():
    p = HealthPolicy()
    check = HealthCheck(ScriptProbe(("x",), dynamic=True), rise=1, fall=1)
    p.track(("vs", "rs"), check, now=0.0)
    p.record(("vs", "rs"), ProbeResult(True, "exit 7", 0.0, weight=5), now=1.0)
    assert (p.state("vs", "rs"), p.weight("vs", "rs")) == (HealthState.UP, 5)
    # A weight change on an UP server is not a transition (the runner reports it apart).
    assert p.record(("vs", "rs"), ProbeResult(True, "exit 4", 0.0, weight=2), now=2.0) is None
    assert p.weight("vs", "rs") == 2
    p.record(("vs", "rs"), ProbeResult(True, "exit 0", 0.0), now=3.0)
    assert p.weight("vs", "rs") is None                      # back to the configured weight
    p.record(("vs", "rs"), ProbeResult(True, "exit 9", 0.0, weight=7), now=4.0)
    p.retune(("vs", "rs"), check, now=5.0, reset=True)
    assert p.weight("vs", "rs") is None
    assert p.weight("other", "rs") is None
