"""``hadirector run -c FILE [--log-format json|console] [--log-level LEVEL]``."""

from __future__ import annotations

import argparse
import asyncio
import sys


def add_arguments_run(parser: argparse.ArgumentParser) -> None:
    from hadirector.cli import DEFAULT_CONFIG

    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML config file")
    parser.add_argument("--log-format", choices=("console", "json"), default=None,
                        help="override node.log_format")
    parser.add_argument("--log-level", default="info",
                        help="debug, info, warning, error (default info)")


def cmd_run(args: argparse.Namespace) -> int:
    from hadirector.config import ConfigError, load_config
    from hadirector.logging import configure_logging, get_logger

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"hadirector run: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"hadirector run: cannot read {args.config}: {e.strerror or e}", file=sys.stderr)
        return 2
    configure_logging(args.log_format or config.node.log_format, level=args.log_level)
    log = get_logger("hadirector.agent")

    from hadirector.agent.agent import Agent, AgentError

    from hadirector.agent.lvs import LvsController
    from hadirector.agent.status import ApiComponent

    async def main() -> int:
        agent = Agent(config, log=log)
        # Always present: idle (no IPVS netlink) until the config has LVS parts, so a
        # reload can add the first virtual service.
        lvs = LvsController(config)
        agent.components.append(lvs)
        agent.components.append(ApiComponent(lvs))
        return await agent.run()

    try:
        return asyncio.run(main())
    except AgentError as e:
        log.error("agent.start_failed", reason=str(e))
        return 1
