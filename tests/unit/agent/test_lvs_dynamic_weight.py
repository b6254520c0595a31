"""A dynamic script check (keepalived's misc_dynamic) sets the real server's IPVS weight
with one edit of that destination, through the same planner path as any health change
(issue 13). Runs against the stateful FakeIpvs; the kernel lab runs the real one."""

from __future__ import annotations

import asyncio

from hadirector.agent.lvs import LvsController
from hadirector.config import parse_config
from hadirector.health.policy import ProbeResult
from hadirector.ipvs import planner
from hadirector.kernel.fake import FakeIpvs
from hadirector.ipvs.table import desired_service
from hadirector.model import HealthState

from .fakes import Pulse
from .test_lvs_controller import FakeAgent, checked

CONFIG = """
node: {{router_id: t, state_dir: {state_dir}}}
lvs: {{program: always}}
virtual_services:
  - name: web
    address: 10.9.0.100
    port: 80
    scheduler: wrr
    forward: dr
    quorum: 10
    check: {{type: script, command: /bin/true, dynamic: true, interval: 0.05, timeout: 1, rise: 1, fall: 1}}
    real_servers:
      - {{address: 10.9.0.11, weight: 10}}
      - {{address: 10.9.0.12, weight: 10}}
"""


class ExitCodes:
    """Fake script probe: each address exits with the code given (0 by default)."""

    def __init__(self) -> None:
        self.code: dict[str, int] = {}
        self.pulse = Pulse()

    async def __call__(self, check, address, port, clients):
        await asyncio.sleep(0)
        code = self.code.get(str(address), 0)
        self.pulse.fire()
        ok = code == 0 or 2 <= code <= 255
        return ProbeResult(ok, f"exit {code}", 0.001, weight=code - 2 if code >= 2 else None)


def weights(fake: FakeIpvs) -> dict[str, int]:
    return {str(k): d.weight for svc in fake.table.services for k, d in fake.table.dests_of(svc).items()}


async def test_exit_code_sets_the_weight_with_one_edit_of_that_destination(tmp_path):
    fake, probes = FakeIpvs(), ExitCodes()
    ctl = LvsController(parse_config(CONFIG.format(state_dir=tmp_path)), backend=fake, probe=probes)
    agent = FakeAgent()
    await ctl.start(agent)
    try:
        await checked(ctl, probes, times=3)
        assert weights(fake) == {"10.9.0.11:80": 10, "10.9.0.12:80": 10}
        before, dumps = len(fake.writes), fake.dumps
        probes.code["10.9.0.12"] = 7                        # weight 5
        await checked(ctl, probes, times=3)
        new = fake.writes[before:]
        assert [type(op) for op in new] == [planner.EditDest]
        assert weights(fake) == {"10.9.0.11:80": 10, "10.9.0.12:80": 5}
        assert fake.dumps == dumps, "a weight change must not dump the whole table"
        probes.code["10.9.0.12"] = 0                        # back to the configured weight
        await checked(ctl, probes, times=3)
        assert [type(op) for op in fake.writes[before + 1:]] == [planner.EditDest]
        assert weights(fake)["10.9.0.12:80"] == 10
        probes.code["10.9.0.12"] = 1                        # down: removed
        await checked(ctl, probes, times=3)
        assert "10.9.0.12:80" not in weights(fake)
    finally:
        await ctl.stop(agent)


def test_quorum_counts_the_dynamic_weight_like_keepalived():
    cfg = parse_config(CONFIG.format(state_dir="/tmp"))
    vs = cfg.virtual_services[0]
    up = lambda vs, rs: HealthState.UP  # noqa: E731
    _svc, dests, quorum = desired_service(vs, up, None, lambda vs, rs: 2)
    assert [d.weight for d in dests] == [2, 2]
    assert quorum is False                                   # 2 + 2 < quorum 10
    _svc, dests, quorum = desired_service(vs, up, None, lambda vs, rs: None)
    assert ([d.weight for d in dests], quorum) == ([10, 10], True)
