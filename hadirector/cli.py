"""Command line: argument parsing and wiring only.

Each subcommand lives in the package that owns the concern and is imported lazily,
so `hadirector check` does not pay for pyroute2 or aiohttp.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hadirector.exitcodes import ExitCode

DEFAULT_CONFIG = "/etc/hadirector/hadirector.yaml"

# subcommand -> (module, function, help). The function takes the parsed args and
# returns the process exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check": ("hadirector.config.cli", "cmd_check", "validate a config file and exit (like keepalived -t)"),
    "run": ("hadirector.agent.cli", "cmd_run", "run the director agent"),
    "ipvs": ("hadirector.ipvs.cli", "cmd_ipvs", "print the live IPVS table like ipvsadm -Ln, with health"),
    "status": ("hadirector.api.cli", "cmd_status", "print the running agent's status"),
    "reload": ("hadirector.api.cli", "cmd_reload", "ask the running agent to reload its config"),
    "import-keepalived": ("hadirector.config.keepalived", "cmd_import", "convert a keepalived.conf to hadirector YAML"),
    "kernel-lab": ("hadirector.kernellab.cli", "cmd_kernel_lab", "run a command in a QEMU kernel that has IPVS"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, import just that subcommand's module (start-up time
    matters: under the kernel lab's emulation every import costs seconds)."""
    parser = argparse.ArgumentParser(prog="hadirector", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, func, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_target=(module, func))
        if only is not None and name != only:
            continue
        add_args = getattr(_maybe_import(module), "add_arguments_" + func.removeprefix("cmd_"), None)
        if add_args is not None:
            add_args(p)
        else:
            p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    return parser


def _maybe_import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    module, func = args._target
    mod = _maybe_import(module)
    if mod is None or not hasattr(mod, func):
        print(f"hadirector {args.command}: not available in this build", file=sys.stderr)
        return ExitCode.USAGE
    return int(getattr(mod, func)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
