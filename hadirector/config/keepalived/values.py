"""Reading keepalived values: numbers, addresses, a statement's arguments and script
commands (keepalived's word splitting, and when a command needs a shell)."""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any, Callable

from .lex import Note, Severity, Stmt


class Bad(Exception):
    """A value that cannot be converted; the statement is skipped with this reason."""


def num(value: float) -> int | float:
    """Durations as plain numbers: 6 rather than 6.0, but 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else round(float(value), 6)


def floating(s: str, what: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise Bad(f"{what} '{s}' is not a number") from None
    if v < 0:
        raise Bad(f"{what} '{s}' is negative")
    return v


def integer(s: str, what: str, lo: int | None = None, hi: int | None = None) -> int:
    try:
        v = int(s, 10)
    except ValueError:
        raise Bad(f"{what} '{s}' is not an integer") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Bad(f"{what} {v} out of range [{lo}, {hi}]")
    return v


def address(s: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        raise Bad(f"{what} '{s}' is not an IP address") from None


def arg(stmt: Stmt, i: int = 0) -> str:
    if len(stmt.args) <= i:
        raise Bad(f"{stmt.keyword} needs a value")
    return stmt.args[i]


_SHELL_CHARS = re.compile(r"[<>|&;$`*?()]")
# Syntax that bash runs and Debian's /bin/sh (dash) does not: /dev/tcp and /dev/udp
# redirections, [[ ]], $'..' strings, arrays, `function f`, `source`, here-strings,
# &> redirection, process substitution, {a..b} sequences.
_BASHISMS = re.compile(
    r"/dev/(?:tcp|udp)/|\[\[|\$'|\b[A-Za-z_]\w*=\(|\$\{\w+\[|(?:^|[\s;&|(])function\s+\w"
    r"|(?:^|[\s;&|(])source\s|<<<|&>|[<>]\(|\{\w+\.\.\w+\}")


def _unquoted(text: str) -> str:
    """``text`` without its quoted parts and backslash escapes: what a shell would
    read as syntax."""
    return re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"|\\.", " ", text)


def shell_for(text: str) -> str:
    """The shell a command line needs: /bin/bash for bash syntax, else /bin/sh."""
    return "/bin/bash" if _BASHISMS.search(text) else "/bin/sh"


def command(stmt: Stmt, notes: list[Note], user_words: bool = True) -> list[str]:
    """A keepalived script string -> argv. keepalived splits its first argument into
    words honouring quotes and backslashes and execs it without a shell
    (set_script_params_array); for notify/quorum scripts further words name the user
    (and group) to run it as, for ``script``/``misc_path`` they are ignored.

    A command starting with ``</`` is the one keepalived runs with ``system()``, i.e.
    ``/bin/sh -c`` (check_script_secure: "checking for a file being openable"). It, and
    any command with shell syntax outside quotes, becomes ``SHELL -c TEXT``: with
    ``/bin/bash`` when it uses bash syntax (``</dev/tcp/...``), because /bin/sh is dash
    on Debian, which has no /dev/tcp: there the check would always fail."""
    text = arg(stmt)
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise Bad(f"{stmt.keyword}: cannot split '{text}' into words ({e})") from None
    if not argv:
        raise Bad(f"{stmt.keyword} is empty")
    if len(stmt.args) > 1 and not user_words:
        notes.append(Note(stmt.where, f"{stmt.keyword}: '{' '.join(stmt.args[1:])}' after the "
                                      f"command is ignored (as by keepalived); quote the whole "
                                      f"command line", Severity.INFO))
    elif len(stmt.args) > 1:
        notes.append(Note(stmt.where, f"{stmt.keyword}: running as user "
                                      f"'{' '.join(stmt.args[1:])}' not supported, runs as the "
                                      f"agent's user (root)", Severity.CHANGED))
    by_system = re.match(r"<[ \t]*/", text) is not None
    bare = _unquoted(text)
    if not by_system and not _SHELL_CHARS.search(bare) and not _BASHISMS.search(bare):
        return argv
    shell = shell_for(text)
    if by_system and shell == "/bin/sh":
        notes.append(Note(stmt.where, f"{stmt.keyword}: '{text}' runs under /bin/sh -c, as "
                                      f"keepalived runs a command starting with '</'",
                          Severity.INFO))
    elif by_system:
        notes.append(Note(stmt.where, f"{stmt.keyword}: '{text}' converted to /bin/bash -c: "
                                      f"keepalived runs it with /bin/sh -c, which on Debian is "
                                      f"dash, where /dev/tcp does not exist and the check always "
                                      f"fails", Severity.CHANGED))
    else:
        notes.append(Note(stmt.where, f"{stmt.keyword}: '{text}' has shell syntax; converted "
                                      f"to {shell} -c (keepalived execs it without a shell, "
                                      f"passing the operators as arguments)", Severity.CHANGED))
    return [shell, "-c", text]




# --- handler tables -----------------------------------------------------------------

# A keyword's handler: (converter, the block being read, the statement). Each block
# (global_defs, vrrp_instance, virtual_server, ...) has a flat table keyword -> handler,
# as keepalived's own parser has (vrrp_parser.c init_vrrp_keywords).
Handler = Callable[[Any, Any, Stmt], None]


def put(key: str, conv: Callable[[Stmt], Any]) -> Handler:
    """A handler that stores ``conv(stmt)`` in the block's ``st[key]``."""
    def handler(cv: Any, block: Any, x: Stmt) -> None:
        block.st[key] = conv(x)
    handler.__name__ = f"put_{key}"
    return handler
