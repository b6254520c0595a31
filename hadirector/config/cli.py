"""``hadirector check``: validate a config file and exit, like ``keepalived -t``."""

from __future__ import annotations

import argparse
import sys

from ..cli import DEFAULT_CONFIG
from ..exitcodes import ExitCode
from .errors import ConfigError
from .loader import load_config


def add_arguments_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                   help=f"config file to check (default: {DEFAULT_CONFIG})")


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 and print a one-line summary when the file is valid; otherwise print
    every problem (file:line:column: key.path: message; the first 100, and the
    count of all) on stderr and exit ``CONFIG_INVALID`` (3), the code
    ``hadirector run`` exits with for the same file."""
    try:
        config = load_config(args.config)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        n = e.count
        shown = f" (the first {len(e.issues)} shown)" if e.unlisted else ""
        print(f"{args.config}: {n} error{'s' if n != 1 else ''}{shown}, config not valid", file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    n_rs = sum(len(vs.real_servers) for vs in config.virtual_services)
    print(f"config OK: {_count(len(config.vrrp_instances), 'vrrp instance')}, "
          f"{_count(len(config.virtual_services), 'virtual service')}, {_count(n_rs, 'real server')}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
