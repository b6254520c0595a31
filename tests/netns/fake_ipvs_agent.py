"""``hadirector run`` with a stateful fake IPVS, for the host namespaces (this host's
kernel has no IPVS).

Everything else is the real agent: VRRP on a veth, real health probes, the real API and
control socket. Only the kernel IPVS table is ``FakeIpvs``, so health checks and the API
run where the host kernel has no ip_vs (the IPVS half is the kernel lab's). Same wiring
as ``hadirector.agent.cli``::

    python -m tests.netns.fake_ipvs_agent -c agent.yaml               # API tests
    python -m tests.netns.fake_ipvs_agent -c agent.yaml --scale-out   # a scale-out director

``--scale-out`` adds the scale-out component (the announce gate, the routes in the
kernel table over netlink, the flush at start and stop, birdc reads); its net.ipv4.vs
sysctls are files in the state directory.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from hadirector.agent.agent import Agent
from hadirector.agent.lvs import LvsController
from hadirector.agent.scaleout import ScaleOutComponent
from hadirector.agent.api_component import ApiComponent
from hadirector.config import load_config
from hadirector.kernel.fake import FakeIpvs
from hadirector.kernel.sysctl import SCALE_OUT_SYSCTLS
from hadirector.logging import configure_logging, get_logger


def fake_vs_sysctls(state_dir: str) -> Path:
    """The net.ipv4.vs sysctls scale-out sets, as files reading 0 (no IPVS module here)."""
    root = Path(state_dir) / "vs-sysctl"
    root.mkdir(parents=True, exist_ok=True)
    for name, _ in SCALE_OUT_SYSCTLS:
        (root / name).write_text("0\n")
    return root


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--scale-out", action="store_true", help="add the scale-out component")
    args = p.parse_args()
    config = load_config(args.config)
    configure_logging("json")
    log = get_logger("hadirector.agent")
    vs_sysctl = fake_vs_sysctls(config.node.state_dir) if args.scale_out else None

    async def run() -> int:
        agent = Agent(config, log=log)
        lvs = LvsController(config, backend=FakeIpvs())
        agent.components += [lvs, ApiComponent(lvs)]
        if vs_sysctl is not None:
            agent.components.append(ScaleOutComponent(lvs, sysctl_root=vs_sysctl))
        return await agent.run()

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
