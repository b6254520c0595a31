"""``hadirector check`` (validate a config file, like ``keepalived -t``) and
``hadirector config --effective`` (print it with every default resolved, like
``keepalived -d``).

Exit codes (``hadirector/exitcodes.py``): 0 valid; 3 (``CONFIG_INVALID``, what
``run`` and a refused ``reload`` exit with for the same file) for errors, and for
warnings under ``--strict``; 6 (``START_FAILED``, what ``run`` exits with when the host
is not ready) when ``--host`` finds this host unready for a valid config.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import DEFAULT_CONFIG
from ..exitcodes import ExitCode
from .errors import ConfigError, ConfigIssue
from .loader import Loaded, load


def add_arguments_check(p: argparse.ArgumentParser) -> None:
    p.description = ("Validate a config file and exit, like keepalived -t. Errors and warnings name "
                     "file:line:column and the key; warnings are printed as 'warning: ...' and do not "
                     "fail the check unless --strict.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file to check")
    p.add_argument("--host", action="store_true",
                   help="also check this host: the interfaces exist, the source addresses are "
                        "configured here, IPVS is available when virtual services are configured")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 3)")


def add_arguments_config(p: argparse.ArgumentParser) -> None:
    p.description = ("Print the config with every default resolved, as YAML that itself passes "
                     "hadirector check (like keepalived -d). Warnings go to stderr.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file to read")
    p.add_argument("--effective", action="store_true", required=True,
                   help="the effective config: every key, defaults included")


def _load(path: str) -> Loaded | None:
    """The loaded config, or None after printing every error (file:line:column: key:
    message; the first 100, and the count of all) on stderr."""
    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        n = e.count
        shown = f" (the first {len(e.issues)} shown)" if e.unlisted else ""
        print(f"{path}: {n} error{'s' if n != 1 else ''}{shown}, config not valid", file=sys.stderr)
        return None


def _print(issues: list[ConfigIssue] | tuple[ConfigIssue, ...], kind: str) -> None:
    for issue in issues:
        print(f"{kind}: {issue}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 and print a one-line summary when the file is valid; otherwise print every
    problem on stderr and exit with the code ``run`` would exit with."""
    loaded = _load(args.config)
    if loaded is None:
        return ExitCode.CONFIG_INVALID
    config = loaded.config
    warnings = list(loaded.warnings)
    host_errors: list[ConfigIssue] = []
    if getattr(args, "host", False):
        from hadirector.agent.hostcheck import host_problems, read_host_facts

        host_errors, host_warnings = host_problems(loaded, read_host_facts(config))
        warnings += host_warnings
    _print(host_errors, "error")
    _print(warnings, "warning")
    strict = getattr(args, "strict", False)
    if host_errors or (warnings and strict):
        parts = []
        if host_errors:
            parts.append(_count(len(host_errors), "host error"))
        if warnings:
            parts.append(_count(len(warnings), "warning") + (" (--strict: errors)" if strict else ""))
        print(f"{args.config}: {', '.join(parts)}, "
              f"{'config not valid' if warnings and strict else 'this host is not ready'}", file=sys.stderr)
        return ExitCode.CONFIG_INVALID if warnings and strict else ExitCode.START_FAILED
    n_rs = sum(len(vs.real_servers) for vs in config.virtual_services)
    note = f", {_count(len(warnings), 'warning')}" if warnings else ""
    print(f"config OK{' on this host' if getattr(args, 'host', False) else ''}: "
          f"{_count(len(config.vrrp_instances), 'vrrp instance')}, "
          f"{_count(len(config.virtual_services), 'virtual service')}, {_count(n_rs, 'real server')}{note}")
    return ExitCode.OK


def cmd_config(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return ExitCode.CONFIG_INVALID
    from .effective import effective_yaml

    _print(loaded.warnings, "warning")
    sys.stdout.write(effective_yaml(loaded.config))
    return ExitCode.OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
