"""``hadirector run`` with a stateful fake IPVS, for API tests on a host without IPVS.

Everything else is the real agent (VRRP on a veth, real TCP health probes, the real
API and control socket); only the kernel IPVS table is ``FakeIpvs``, so health checks
run where the host kernel has no ip_vs. Same wiring as ``hadirector.agent.cli``::

    python -m tests.netns.api_agent -c agent.yaml
"""

from __future__ import annotations

import argparse
import asyncio

from hadirector.agent.agent import Agent
from hadirector.agent.lvs import LvsController
from hadirector.agent.status import ApiComponent
from hadirector.config import load_config
from hadirector.kernel.fake import FakeIpvs
from hadirector.logging import configure_logging, get_logger


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    args = p.parse_args()
    config = load_config(args.config)
    configure_logging("json")
    log = get_logger("hadirector.agent")

    async def run() -> int:
        agent = Agent(config, log=log)
        lvs = LvsController(config, backend=FakeIpvs())
        agent.components.append(lvs)
        agent.components.append(ApiComponent(lvs))
        return await agent.run()

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
