"""``hadirector bird-config`` and ``hadirector withdraw``: the scale-out commands.

``bird-config -c FILE`` prints the BIRD 2 config for this director (its ``scale_out``
section: peers, BFD, LB timers), for /etc/bird/bird.conf or an include.
``withdraw -c FILE`` deletes every gate route of this director (its ``scale_out.table``
routes of ``route_protocol``): the unit's ``ExecStopPost=``, which systemd runs after a
crash too, so a dead agent's VIPs leave the routers' FIBs within BGP's/BIRD's reaction
time instead of attracting flows to a director that cannot carry them.
"""

from __future__ import annotations

import argparse
import sys

from hadirector.exitcodes import ExitCode


def add_arguments_bird_config(parser: argparse.ArgumentParser) -> None:
    from hadirector.cli import DEFAULT_CONFIG

    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML config file")


add_arguments_withdraw = add_arguments_bird_config


def _load(path: str):
    from hadirector.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        return None


def cmd_bird_config(args: argparse.Namespace) -> int:
    from hadirector.scaleout import bird

    config = _load(args.config)
    if config is None:
        return ExitCode.CONFIG_INVALID
    if config.scale_out is None:
        print(f"hadirector bird-config: {args.config} has no scale_out section", file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    sys.stdout.write(bird.render(config))
    return ExitCode.OK


def cmd_withdraw(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return ExitCode.CONFIG_INVALID
    if config.scale_out is None:
        print("withdrawn: nothing (no scale_out section)")     # a VRRP director: nothing to do
        return ExitCode.OK
    from hadirector.kernel.gate_routes import GateRoutes

    so = config.scale_out
    try:
        routes = GateRoutes(so.table, so.route_protocol)
        gone = routes.flush()
        routes.close()
    except OSError as e:
        print(f"hadirector withdraw: {e}", file=sys.stderr)
        return ExitCode.START_FAILED
    names = ", ".join(sorted(map(str, gone))) or "nothing"
    print(f"withdrawn from table {so.table}: {names}")
    return ExitCode.OK
