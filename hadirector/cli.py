"""Command line: argument parsing and wiring only.

Each subcommand lives in the package that owns the concern and is imported lazily,
so `hadirector check` does not pay for pyroute2 or aiohttp.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hadirector.exitcodes import ExitCode, epilog

DEFAULT_CONFIG = "/etc/hadirector/hadirector.yaml"

# subcommand -> (module, function, help). The function takes the parsed args and
# returns the process exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check": ("hadirector.config.cli", "cmd_check", "validate a config file and exit (like keepalived -t)"),
    "config": ("hadirector.config.cli", "cmd_config", "print the config with every default resolved (like keepalived -d)"),
    "run": ("hadirector.agent.cli", "cmd_run", "run the director agent"),
    "ipvs": ("hadirector.ipvs.cli", "cmd_ipvs", "print the live IPVS table like ipvsadm -Ln, with health"),
    "status": ("hadirector.api.cli", "cmd_status", "print the running agent's status"),
    "reload": ("hadirector.api.cli", "cmd_reload", "ask the running agent to reload its config"),
    "import-keepalived": ("hadirector.config.keepalived", "cmd_import", "convert a keepalived.conf to hadirector YAML"),
    "bird-config": ("hadirector.scaleout.cli", "cmd_bird_config", "print the BIRD 2 config of a scale-out director"),
    "drain": ("hadirector.api.cli", "cmd_drain", "take a scale-out director out of the routers' ECMP set (--undo: back)"),
    "withdraw": ("hadirector.scaleout.cli", "cmd_withdraw", "withdraw every VIP a scale-out director announces (systemd ExecStopPost)"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Text with line breaks keeps its layout (the exit code table), other text is
    wrapped; every option's help ends with its default, unless the help names it
    already or there is none to name."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or "%(default)" in text or default in (None, False, argparse.SUPPRESS) \
                or default == [] or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _VersionAction(argparse.Action):
    """``--version``; the version is read only when asked (importlib.metadata is slow
    under the kernel lab's emulation)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import hadirector

        print(f"hadirector {hadirector.__version__}")
        parser.exit(ExitCode.OK)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, without side effects (the man page hadirector(8) is
    generated from it); with ``only``, import just that subcommand's module (start-up
    time matters: under the kernel lab's emulation every import costs seconds)."""
    parser = argparse.ArgumentParser(
        prog="hadirector", epilog=epilog(), formatter_class=HelpFormatter,
        description="A keepalived-style high-availability director for Linux Virtual Server (IPVS).")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, func, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           formatter_class=HelpFormatter)
        p.set_defaults(_target=(module, func))
        if only is not None and name != only:
            continue
        add_args = getattr(_maybe_import(module), "add_arguments_" + func.removeprefix("cmd_"), None)
        if add_args is not None:
            add_args(p)
        else:
            p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        # One table for every subcommand, from hadirector/exitcodes.py.
        p.epilog = p.epilog or epilog()
        p.formatter_class = HelpFormatter
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
