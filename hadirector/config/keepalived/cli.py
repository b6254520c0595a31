"""``hadirector import-keepalived``: the command line of the converter (see ``convert``)."""

from __future__ import annotations

import argparse
import sys

from hadirector.exitcodes import ExitCode

from .convert import convert_file
from .lex import KeepalivedSyntaxError, Severity


def add_arguments_import(parser: argparse.ArgumentParser) -> None:
    # The exit code table itself is the command line's (hadirector/exitcodes.py).
    parser.description = (
        "Convert a keepalived.conf (and what it includes) to hadirector YAML. Every note "
        "on stderr has a severity: 'info' (equivalent), 'changed' (hadirector behaves "
        "differently) or 'lost' (not converted). The YAML is written even when something "
        f"was lost, for review; then the exit status is {int(ExitCode.CONVERSION_LOST)} "
        f"unless --allow-loss. It is {int(ExitCode.CONFIG_INVALID)} when keepalived.conf is "
        f"unreadable or not well-formed (unbalanced braces, a missing include: nothing is "
        f"converted) or the result does not load.")
    parser.add_argument("input", metavar="keepalived.conf", help="the keepalived configuration")
    parser.add_argument("-o", "--output", metavar="out.yaml",
                        help="write the YAML here instead of standard output")
    parser.add_argument("--config-id", metavar="ID",
                        help="keep '@ID' conditional lines, like keepalived -i ID (keepalived's "
                             "default is the host name)")
    parser.add_argument("--router-id", metavar="NAME",
                        help="this node's router_id (default: global_defs' router_id; without "
                             "one, node.router_id is left out and each director uses its own "
                             "host name, as keepalived does)")
    parser.add_argument("--allow-loss", action="store_true",
                        help="exit 0 even when some settings were lost (not converted)")


def cmd_import(args: argparse.Namespace) -> int:
    prog = "hadirector import-keepalived"
    try:
        conv = convert_file(args.input, config_id=getattr(args, "config_id", None),
                            router_id=getattr(args, "router_id", None))
    except OSError as e:
        print(f"{prog}: {args.input}: {e.strerror}", file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    except KeepalivedSyntaxError as e:
        for where, message in e.errors:
            print(f"error: {where}: {message}", file=sys.stderr)
        print(f"{prog}: {args.input} is not well-formed; nothing converted", file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    for n in conv.notes:
        print(str(n), file=sys.stderr)
    text = conv.to_yaml()
    status = ExitCode.OK
    lost = conv.lost
    if lost and not getattr(args, "allow_loss", False):
        status = ExitCode.CONVERSION_LOST
    error = _validate(text, args.output or "<converted>")
    if error:
        print(f"{prog}: the converted configuration does not load: {error}", file=sys.stderr)
        status = ExitCode.CONFIG_INVALID
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    counts = {sev: sum(n.severity is sev for n in conv.notes) for sev in Severity}
    summary = ", ".join(f"{counts[sev]} {sev.value}" for sev in Severity)
    where = f" to {args.output}" if args.output else " to standard output"
    if lost and status == ExitCode.CONVERSION_LOST:
        print(f"{prog}: {summary}; written{where} for review, but {len(lost)} setting(s) "
              f"not converted (--allow-loss accepts that)", file=sys.stderr)
    else:
        print(f"{prog}: {summary}; written{where}", file=sys.stderr)
    return status


def _validate(text: str, source: str) -> str | None:
    """Load the result with hadirector's own config loader, when it is available."""
    try:
        from hadirector.config import parse_config  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        parse_config(text, source)
    except Exception as e:  # noqa: BLE001 - any loader error is reported, not raised
        return str(e)
    return None
