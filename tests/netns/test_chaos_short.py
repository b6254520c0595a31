"""A short seeded chaos run (bench/chaos.py) in CI: ten faults of different kinds, one
after another, on one VRRP-only director pair in host namespaces, with client traffic
across each; every invariant of lab/invariants.py must hold after every fault.

The seed is fixed so a failure reproduces: ``python -m bench.chaos --mode vrrp --faults 10
--seed 184 --impls hadirector`` runs the same sequence (and keepalived beside it). The
100-fault soak with IPVS and connection sync is the benchmark (bench/README.md).
Without sch_netem on this host, the netem faults are left to the kernel lab.
"""

from __future__ import annotations

import os

import pytest

from bench import chaos

pairlab = chaos.pairlab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SEED = 184          # ten different kinds, power-off and restart mid-takeover among them
FAULTS = 10


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    lab = pairlab.Lab(mode="vrrp", results=tmp_path_factory.mktemp("chaos"), prefix=f"cs{os.getpid()}")
    adv, startup, slack = chaos.MODES["vrrp"]
    seq = chaos.plan(SEED, FAULTS, chaos.kinds_for("vrrp", netem_ok=False))
    try:
        lab.up()
        for d in lab.directors:
            d.nofile = 1024
            d.start()
        recs = chaos.run_sequence(lab, seq, adv=adv, startup=startup, slack=slack, settle=1.0)
    finally:
        with chaos.contextlib.suppress(Exception):
            chaos.faults.heal_all(lab)
        lab.down()
    print(chaos.table({"seed": SEED, "n_faults": FAULTS, "mode": "vrrp", "records": recs}))
    return recs


def test_the_same_seed_gives_the_same_sequence():
    kinds = chaos.kinds_for("vrrp", netem_ok=False)
    assert chaos.plan(SEED, FAULTS, kinds) == chaos.plan(SEED, FAULTS, kinds)
    assert len({f.kind for f in chaos.plan(SEED, FAULTS, kinds)}) == FAULTS


def test_every_fault_of_a_seeded_sequence_leaves_every_invariant_held(records):
    assert [r["n"] for r in records] == list(range(1, FAULTS + 1))
    bad = [(r["label"], r["violations"]) for r in records if r.get("violations") or r.get("error")]
    assert bad == [], "\n".join(f"{label}: {v}" for label, v in bad)


def test_the_pair_converges_after_every_fault_within_its_bound(records):
    late = [(r["label"], c, b) for r in records for c, b in zip(r.get("converge_all", []), r.get("bounds", []))
            if c > b]
    assert late == []
