"""``hadirector run`` of a scale-out director with a stateful fake IPVS, for the host
namespaces (this host's kernel has no IPVS).

Everything else is the real agent: the script health checks, the announce gate, the
routes in the kernel table over netlink, the flush at start and stop, birdc reads. Only
the IPVS table is ``FakeIpvs`` and the net.ipv4.vs sysctls are files in the state
directory (the IPVS half is the kernel lab's). Same wiring as ``hadirector.agent.cli``::

    python -m tests.netns.scaleout_agent -c agent.yaml
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from hadirector.agent.agent import Agent
from hadirector.agent.lvs import LvsController
from hadirector.agent.scaleout import ScaleOutComponent
from hadirector.agent.status import ApiComponent
from hadirector.config import load_config
from hadirector.kernel.fake import FakeIpvs
from hadirector.kernel.sysctl import SCALE_OUT_SYSCTLS
from hadirector.logging import configure_logging, get_logger


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    args = p.parse_args()
    config = load_config(args.config)
    configure_logging("json")
    log = get_logger("hadirector.agent")
    vs_sysctl = Path(config.node.state_dir) / "vs-sysctl"
    vs_sysctl.mkdir(parents=True, exist_ok=True)
    for name, _ in SCALE_OUT_SYSCTLS:
        (vs_sysctl / name).write_text("0\n")

    async def run() -> int:
        agent = Agent(config, log=log)
        lvs = LvsController(config, backend=FakeIpvs())
        agent.components += [lvs, ApiComponent(lvs), ScaleOutComponent(lvs, sysctl_root=vs_sysctl)]
        return await agent.run()

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
