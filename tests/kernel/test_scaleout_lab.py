"""The scale-out lab end to end in real IPVS: a client behind a BIRD ECMP router (merge
paths, BFD 100 ms x 3, hash policy 3), directors each running the real ``hadirector
run`` (``scale_out:``, DR, mh with mh-fallback and mh-port, TCP checks) beside its own
BIRD rendered by ``hadirector bird-config``, a 4th director that joins later, and DR real
servers answering long-lived connections with their name (lab/scaleout.py,
lab/scaleout_flows.py, the events of lab/scaleout_demo.py, as ``./run demo --mode
scale-out`` runs them).

M connections stay open through the whole file and send a line each per second; every
event below must break none of them (every real server stays alive), and must really
move flows (else it would prove nothing). A connection is broken when a line gets no
answer with the name it started with (a reset, EOF, a timeout or another server's name).

One lab for the module; the events run in sequence (each test continues from the state
the previous one left): about 3-4 minutes of lab time under TCG.
Bounds: BFD 100 ms x 3 removed a silent director in 246-386 ms on the host
(shared/scale-out.md 3a); the bound here allows for an emulated, loaded guest but stays
far below BGP's hold time (9 s) alone. A clean stop withdraws before anything else.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from lab.scaleout_demo import DRAIN_GRACE, HOLD_DOWN, ScaleOutRun

# lab_seconds: about what each test keeps a lab guest busy (lab/kernel/README.md)
pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.lab_seconds(40)]

CONNECTIONS = 45
BFD_BOUND = 1.5          # silent director -> router FIB; the hold time alone: 9 s
WITHDRAW_BOUND = 3.0     # SIGTERM -> router FIB (gate route deleted first; BIRD: 9-25 ms)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = ScaleOutRun(tmp_path_factory.mktemp("scaleout"), connections=CONNECTIONS)
    try:
        run.up()
        yield run
    finally:
        try:
            print("\n" + run.report())
        finally:
            run.down()


def no_break(result) -> None:
    assert result.broken == {}, f"{result.line}: {result.broken}"
    assert result.established >= CONNECTIONS


def log(d) -> list[dict]:
    return [json.loads(line) for line in d.log.read_text(errors="replace").splitlines() if line.startswith("{")]


def at(e: dict) -> float:
    return datetime.fromisoformat(e["timestamp"]).timestamp()


def held_down(d) -> float:
    """In the agent's last run (its log): seconds from the moment its gate could first
    have become ready -- the gate started, and every real server had its first health
    result (a restarted agent seeds them from the kernel: none) -- to the VIP's
    announcement. The gate's hold-down starts no earlier than that, so this is at least
    ``hold_down``."""
    run, started = [], False
    for e in log(d):
        if e.get("event") == "scaleout.started":
            run, started = [], True
        run.append(e)
    assert started, f"{d.name}: no scaleout.started in its log"
    announced = [at(e) for e in run if e.get("event") == "scaleout.announced"]
    assert announced, f"{d.name}: not announced in its last run"
    first: dict[str, float] = {}
    for e in run:
        if e.get("event") in ("health.server_up", "health.server_down"):
            first.setdefault(e["server"], at(e))
    ready_from = max([at(run[0]), *(t for t in first.values() if t <= announced[0])])
    return announced[0] - ready_from


def test_every_director_holds_the_same_destination_list_in_one_order(run):
    digests = run.digests()
    assert len(digests) == 3 and len(set(digests.values())) == 1, digests
    # mh spreads the M flows over all three real servers.
    assert {s.name for s in run.flows.status().values()} == {"rs1", "rs2", "rs3"}
    # and the router's hash spreads them over all three directors.
    [(_, spread)] = run.spreads
    assert all(n > 0 for n in spread.values()) and len(spread) == 3, spread


def test_the_same_backend_answers_a_flow_whichever_director_carries_it(run):
    result = run.same_backend()
    no_break(result)


def test_a_silent_director_is_removed_by_bfd_and_breaks_no_established_connection(run):
    failed, back = run.silent_failure(3)
    no_break(failed)
    assert failed.moved > 0, "the failure moved no flow"
    assert failed.detection <= BFD_BOUND, f"router dropped d3 after {failed.detection:.3f} s"
    no_break(back)
    assert back.moved > 0


def test_agent_kill_9_then_the_units_withdraw_breaks_no_established_connection(run):
    killed, back = run.agent_kill(2)
    no_break(killed)
    assert killed.moved > 0
    no_break(back)
    assert back.moved > 0
    assert held_down(run.directors[2]) >= HOLD_DOWN * 0.95, "re-announced inside the hold-down"


def test_a_clean_stop_withdraws_first_and_breaks_no_established_connection(run):
    stopped, back = run.clean_stop(1)
    no_break(stopped)
    assert stopped.moved > 0
    assert stopped.detection <= WITHDRAW_BOUND, f"router dropped d1 {stopped.detection:.3f} s after SIGTERM"
    # Withdrawn first; the agent went on (IPVS kept) for the drain grace, then stopped.
    events = log(run.directors[1])
    [i] = [k for k, e in enumerate(events) if e.get("event") == "scaleout.withdrawn" and e["reason"] == "stopping"]
    stopped_at = next(at(e) for e in events[i:] if e.get("event") == "scaleout.stopped")
    assert stopped_at - at(events[i]) >= DRAIN_GRACE * 0.95
    no_break(back)


def test_a_fourth_director_joins_after_its_hold_down_and_breaks_no_established_connection(run):
    joined = run.join(4, new_flows=CONNECTIONS)
    no_break(joined)
    assert joined.moved > 0
    assert held_down(run.directors[4]) >= HOLD_DOWN * 0.95, "announced inside the hold-down"
    # New flows reach all four directors, and every director has the same table.
    what, spread = run.spreads[-1]
    assert len(spread) == 4 and all(n > 0 for n in spread.values()), (what, spread)
    digests = run.digests()
    assert len(digests) == 4 and len(set(digests.values())) == 1, digests
