"""Convert a keepalived.conf into hadirector YAML (``hadirector import-keepalived``).

Theory of operation: three small passes, each with one job.

1. **Lexer** (``_Lexer``): reads the file and everything it ``include``s (globs with
   ``{a,b}`` braces, relative to the including file's directory, as keepalived does by
   ``chdir``-ing there), drops comments the way keepalived's ``decomment()`` does (``#``
   or ``!`` anywhere outside double quotes, ``\\#`` escapes one, a trailing ``\\``
   continues the line), keeps ``@id`` / ``@^id`` conditional lines for the chosen
   config id, substitutes simple ``$NAME=value`` definitions, and yields tokens
   (words, quoted strings, ``{``, ``}``, end of line) that each know their file:line.
2. **Parser** (``_parse``): tokens -> a tree of ``Stmt(words, where, block)``. A ``{``
   belongs to the statement before it, on the same line or on the next one.
3. **Converter** (``_Converter``): walks the tree with keepalived's *effective*
   defaults (not ours) and produces a plain dict whose keys are the field names of
   ``hadirector.model`` (see its docstring), plus a list of ``Note``s, each with a
   ``Severity``: ``info`` (converted to the equivalent, e.g. a keepalived rule
   applied), ``changed`` (hadirector behaves differently) or ``lost`` (not converted).
   ``import-keepalived`` exits ``CONVERSION_LOST`` when anything is lost, unless
   ``--allow-loss``.

A file keepalived would not read as written -- an unbalanced brace (a file cut short),
an ``include`` of a file that does not exist, an include loop -- raises
``KeepalivedSyntaxError`` naming file:line: it never converts into a smaller config.

The output spells out keepalived's defaults wherever they differ from hadirector's,
so the converted director behaves like the keepalived it replaces:

* VRRP version 2 for IPv4 instances unless ``vrrp_version``/``version`` says 3 (IPv6
  instances default to 3) -- a pair can be migrated one node at a time.
* A ``state MASTER`` instance without ``priority`` gets 255 (keepalived's rule in
  ``vrrp_complete_instance``); ``accept_mode`` is on unless ``vrrp_strict``/``no_accept``.
* Checkers: ``delay_loop`` 60 s, ``connect_timeout`` 5 s, ``rise`` 1 (one success
  brings a server up) and ``fall = retry + 1``: keepalived declares a server down only
  after the first failure *and* ``retry`` retries ``delay_before_retry`` apart
  (``tcp_epilog`` in check_tcp.c), which is what ``fall`` + ``retry_delay`` model.
  Default ``retry`` is 1 (TCP/HTTP) or 0 (MISC); default ``delay_before_retry`` is 3 s
  for HTTP/SSL_GET and 1 s otherwise. HTTP status codes default to 200-299.
* SSL_GET does not verify the server certificate in keepalived: ``verify_tls: false``.
* keepalived removes the virtual servers it created when it stops, so
  ``lvs.on_shutdown: remove``; it programs IPVS on both nodes: ``lvs.program: always``.

* ``nopreempt`` and ``preempt_delay`` as keepalived really runs them (both cleared
  for an initial state MASTER, nopreempt at priority 255, preempt_delay with nopreempt
  or strict mode).
* The router_id names one node: ``--router-id``, else global_defs', else left out so
  that each director uses its own host name at run time (never the converting host's).
* A command keepalived hands to ``system()`` (``</...``) or one with shell syntax runs
  under ``/bin/bash -c`` when it uses bash syntax (``</dev/tcp/...``): /bin/sh is dash
  on Debian.

Deliberate differences: a real server without ``alpha`` starts *up* in keepalived;
the converted file leaves ``initial`` at hadirector's default (unknown: programmed
after its first check passes), which avoids sending traffic to a dead server. And
keepalived spreads the first checks over ``delay_loop`` by default (``warmup``);
hadirector starts them at once, and an explicit ``warmup`` becomes ``jitter``.
"""

from __future__ import annotations

import functools

import argparse
import copy
import enum
import glob
import ipaddress
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

from hadirector.exitcodes import ExitCode
from hadirector.model import SCHEDULERS

__all__ = [
    "Conversion", "KeepalivedSyntaxError", "Note", "Severity", "Where", "convert_text",
    "convert_file", "shell_for",
    "add_arguments_import", "cmd_import",
]

# --- positions and notes ------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Severity(enum.Enum):
    """How far the converted director is from the keepalived it replaces."""

    INFO = "info"          # equivalent: hadirector does what keepalived does
    CHANGED = "changed"    # converted, but hadirector behaves differently (read why)
    LOST = "lost"          # not converted: the setting has no effect in hadirector


@dataclass(frozen=True)
class Note:
    """Something the operator must know about the conversion, e.g.
    ``lost: keepalived.conf:42: PING_CHECK ... is not converted``."""

    where: Where | None
    message: str
    severity: Severity = Severity.LOST

    def __str__(self) -> str:
        at = f"{self.where}: " if self.where else ""
        return f"{self.severity.value}: {at}{self.message}"


class KeepalivedSyntaxError(Exception):
    """The file cannot be read as keepalived would read it (an unbalanced brace, an
    include that does not exist ...): nothing is converted. ``errors`` are
    (where, message) pairs, in file order."""

    def __init__(self, errors: list[tuple[Where, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{w}: {m}" for w, m in errors))


# --- lexer --------------------------------------------------------------------------

_WORD, _OPEN, _CLOSE, _EOL = "word", "{", "}", "eol"
_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    where: Where



def _put_in(target: dict[str, Any], key: str, conv: Callable[[Stmt], Any]) -> Callable[[Stmt], None]:
    """A statement handler that stores ``conv(stmt)`` under ``key``."""
    def handle(x: Stmt) -> None:
        target[key] = conv(x)
    return handle


def _set_on(target: Any, attr: str, conv: Callable[[Stmt], Any]) -> Callable[[Stmt], None]:
    """A statement handler that sets ``target.attr`` to ``conv(stmt)``."""
    def handle(x: Stmt) -> None:
        setattr(target, attr, conv(x))
    return handle

class _Lexer:
    def __init__(self, notes: list[Note], config_id: str | None) -> None:
        self.notes = notes
        self.errors: list[tuple[Where, str]] = []
        self.config_id = config_id
        self.defs: dict[str, str] = {}
        self._open: list[str] = []

    def lex_file(self, path: str, display: str, depth: int = 0,
                 included_at: Where | None = None) -> list[_Token]:
        real = os.path.realpath(path)
        if real in self._open:
            assert included_at is not None
            self.errors.append((included_at, f"include {display}: include loop (that file is "
                                             f"already being read)"))
            return []
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self._open.append(real)
        try:
            return self.lex_text(text, display, os.path.dirname(path) or ".", depth)
        finally:
            self._open.pop()

    def lex_text(self, text: str, display: str, base_dir: str, depth: int = 0) -> list[_Token]:
        tokens: list[_Token] = []
        pending = ""          # a line continued with a trailing backslash
        pending_line = 0
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line, continued = _decomment(raw)
            if pending:
                line, lineno = pending + " " + line, pending_line
            if continued:
                if not pending:
                    pending_line = lineno
                pending = line
                continue
            pending = ""
            where = Where(display, lineno)
            line = self._conditional(line, where)
            if line is None:
                continue
            if self._definition(line, where):
                continue
            line = self._substitute(line)
            m = re.match(r"include(?:\s+(.*))?$", line)
            if m:
                # Not tokenized: '{a,b}' in an include is a glob brace, not a block.
                args = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', m.group(1) or "")]
                tokens.extend(self._include(args, base_dir, where, depth))
                continue
            words = _split_line(line, where, self.notes)
            tokens.extend(words)
            tokens.append(_Token(_EOL, "", where))
        return tokens

    def _conditional(self, line: str, where: Where) -> str | None:
        """keepalived's ``-i ID``: ``@ID line`` is read only for ID, ``@^ID`` for all others."""
        stripped = line.lstrip()
        if not stripped.startswith("@"):
            return line
        parts = stripped[1:].split(None, 1)
        tag = parts[0] if parts else ""
        rest = parts[1].strip() if len(parts) > 1 else ""
        negate = tag.startswith("^")
        ident = tag[1:] if negate else tag
        keep = (ident != self.config_id) if negate else (ident == self.config_id)
        if keep:
            return rest
        if self.config_id is None and not negate:
            # keepalived's config id defaults to the host name, so on a director this
            # line may well be read.
            self.notes.append(Note(where, f"line only for config id '{ident}' not converted "
                                          f"(keepalived -i, default the host name; choose one "
                                          f"with --config-id)"))
        return None

    def _definition(self, line: str, where: Where) -> bool:
        m = re.match(r"\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", line)
        if not m:
            return False
        self.defs[m.group(1)] = m.group(2).strip()
        return True

    def _substitute(self, line: str) -> str:
        if "$" not in line or not self.defs:
            return line

        def repl(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            return self.defs.get(name, m.group(0))

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, line)

    def _include(self, args: list[str], base_dir: str, where: Where,
                 depth: int) -> list[_Token]:
        """keepalived's rules (lib/parser.c open_and_check_glob): a pattern with a
        wildcard may match nothing; a plain file name (or a ``{a,b}`` alternative without
        a wildcard) that does not exist is a missing file. A missing file is an error
        here, not a quietly smaller config."""
        if depth >= _MAX_INCLUDE_DEPTH:
            self.errors.append((where, f"include nested more than {_MAX_INCLUDE_DEPTH} deep"))
            return []
        if not args:
            self.errors.append((where, "include without a file name"))
        out: list[_Token] = []
        for arg in args:
            pattern = arg if os.path.isabs(arg) else os.path.join(base_dir, arg)
            paths: list[str] = []
            for p in _brace_expand(pattern):
                if glob.has_magic(p):
                    paths.extend(sorted(glob.glob(p)))
                elif os.path.exists(p):
                    paths.append(p)
                else:
                    self.errors.append((where, f"include {arg}: {_display_path(p)} does not exist"))
            if not paths and glob.has_magic(pattern):
                self.notes.append(Note(where, f"include {arg}: no file matches, nothing read "
                                              f"(keepalived reads nothing either)", Severity.INFO))
            for p in paths:
                if os.path.isdir(p):
                    continue
                try:
                    out.extend(self.lex_file(p, _display_path(p), depth + 1, where))
                except OSError as e:
                    self.errors.append((where, f"include {_display_path(p)}: {e.strerror}"))
        return out


def _display_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _decomment(line: str) -> tuple[str, bool]:
    """Drop a comment as keepalived's ``decomment()`` does. Returns (text, continued)."""
    out: list[str] = []
    quote = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == '"':
            quote = not quote
        elif c == "\\":
            if i + 1 == len(line):
                return "".join(out).rstrip(), True
            if not quote and line[i + 1] in "#!":
                out.append(line[i + 1])
                i += 2
                continue
            out.append(c)
            out.append(line[i + 1])
            i += 2
            continue
        elif not quote and c in "#!":
            break
        out.append(c)
        i += 1
    return "".join(out).strip(), False


def _split_line(line: str, where: Where, notes: list[Note]) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c in "{}":
            tokens.append(_Token(_OPEN if c == "{" else _CLOSE, c, where))
            i += 1
        elif c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                notes.append(Note(where, "unterminated quote, closed at end of line",
                                  Severity.CHANGED))
                end = n
            tokens.append(_Token(_WORD, line[i + 1:end], where))
            i = end + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            tokens.append(_Token(_WORD, line[i:j], where))
            i = j
    return tokens


def _brace_expand(pattern: str) -> list[str]:
    """``a{b,c}d`` -> [abd, acd] (glob(3) GLOB_BRACE, which keepalived uses)."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m or "," not in m.group(1):
        return [pattern]
    head, tail = pattern[:m.start()], pattern[m.end():]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_brace_expand(head + alt + tail))
    return out


# --- parser -------------------------------------------------------------------------


@dataclass
class Stmt:
    words: list[str]
    where: Where
    block: list["Stmt"] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def args(self) -> list[str]:
        return self.words[1:]


def _parse(tokens: list[_Token], notes: list[Note],
           errors: list[tuple[Where, str]]) -> list[Stmt]:
    """Unbalanced braces go to ``errors``: a file cut short (a ``{`` never closed) or
    an extra ``}`` must not convert into a quietly smaller config."""
    pos = 0
    n = len(tokens)

    def block(nested: bool, opened_at: Where | None) -> list[Stmt]:
        nonlocal pos
        stmts: list[Stmt] = []
        while pos < n:
            t = tokens[pos]
            if t.kind == _EOL:
                pos += 1
                continue
            if t.kind == _CLOSE:
                pos += 1
                if nested:
                    return stmts
                errors.append((t.where, "'}' without a matching '{'"))
                continue
            if t.kind == _OPEN:
                # A block with no keyword: keepalived ignores it, and so do we.
                pos += 1
                block(True, t.where)
                notes.append(Note(t.where, "block without a keyword, not converted (keepalived "
                                           "ignores it too)", Severity.INFO))
                continue
            words: list[str] = []
            where = t.where
            while pos < n and tokens[pos].kind == _WORD:
                words.append(tokens[pos].text)
                pos += 1
            look = pos
            while look < n and tokens[look].kind == _EOL:
                look += 1
            sub = None
            if look < n and tokens[look].kind == _OPEN:
                pos = look + 1
                sub = block(True, tokens[look].where)
            stmts.append(Stmt(words, where, sub))
        if nested:
            end = tokens[-1].where if tokens else opened_at
            errors.append((opened_at, f"'{{' is never closed (the input ends at {end} inside "
                                      f"this block: a truncated file or a missing '}}')"))
        return stmts

    return block(False, None)


# --- helpers for values -------------------------------------------------------------


class _Bad(Exception):
    """A value that cannot be converted; the statement is skipped with this reason."""


def _num(value: float) -> int | float:
    """Durations as plain numbers: 6 rather than 6.0, but 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else round(float(value), 6)


def _float(s: str, what: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise _Bad(f"{what} '{s}' is not a number") from None
    if v < 0:
        raise _Bad(f"{what} '{s}' is negative")
    return v


def _int(s: str, what: str, lo: int | None = None, hi: int | None = None) -> int:
    try:
        v = int(s, 10)
    except ValueError:
        raise _Bad(f"{what} '{s}' is not an integer") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _Bad(f"{what} {v} out of range [{lo}, {hi}]")
    return v


def _addr(s: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        raise _Bad(f"{what} '{s}' is not an IP address") from None


def _arg(stmt: Stmt, i: int = 0) -> str:
    if len(stmt.args) <= i:
        raise _Bad(f"{stmt.keyword} needs a value")
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


def _command(stmt: Stmt, notes: list[Note], user_words: bool = True) -> list[str]:
    """A keepalived script string -> argv. keepalived splits its first argument into
    words honouring quotes and backslashes and execs it without a shell
    (set_script_params_array); for notify/quorum scripts further words name the user
    (and group) to run it as, for ``script``/``misc_path`` they are ignored.

    A command starting with ``</`` is the one keepalived runs with ``system()``, i.e.
    ``/bin/sh -c`` (check_script_secure: "checking for a file being openable"). It, and
    any command with shell syntax outside quotes, becomes ``SHELL -c TEXT``: with
    ``/bin/bash`` when it uses bash syntax (``</dev/tcp/...``), because /bin/sh is dash
    on Debian, which has no /dev/tcp: there the check would always fail."""
    text = _arg(stmt)
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise _Bad(f"{stmt.keyword}: cannot split '{text}' into words ({e})") from None
    if not argv:
        raise _Bad(f"{stmt.keyword} is empty")
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


# --- converter ----------------------------------------------------------------------

_EMAIL_KEYWORDS = {
    "notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout",
    "smtp_helo_name", "smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker", "no_email_faults",
}
# keepalived checkers hadirector has no probe for (yet: the health issue, 13, adds
# them) -> what the note calls the missing probe.
_UNSUPPORTED_CHECKERS = {
    "SMTP_CHECK": "SMTP", "DNS_CHECK": "DNS", "UDP_CHECK": "UDP", "PING_CHECK": "ICMP ping",
    "BFD_CHECK": "BFD", "FILE_CHECK": "file",
}
_FORWARD = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_KA_DEFAULT_DELAY_LOOP = 60.0
_KA_DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass
class _Garp:
    delay: float = 5.0       # garp_master_delay
    repeat: int = 5          # garp_master_repeat
    refresh: float = 0.0     # garp_master_refresh
    interval: float = 0.0    # garp_interval (IPv4)
    gna_interval: float = 0.0  # gna_interval (IPv6)


@dataclass
class _CheckDefaults:
    """Checker settings inherited virtual_server -> real_server -> checker."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    alpha: bool | None = None
    virtualhost: str | None = None
    warmup: float | None = None

    def child(self) -> "_CheckDefaults":
        return _CheckDefaults(**self.__dict__)


@dataclass
class Conversion:
    """The result: ``data`` (the YAML document as a dict) and ``notes``."""

    data: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    source: str = "keepalived.conf"

    @property
    def lost(self) -> list[Note]:
        """What was not converted: ``import-keepalived`` fails unless --allow-loss."""
        return [n for n in self.notes if n.severity is Severity.LOST]

    def to_yaml(self) -> str:
        head = [f"# hadirector configuration converted from {self.source}",
                "# by `hadirector import-keepalived`. Review the notes below before use."]
        if self.notes:
            head.append("#")
            head.append("# lost: not converted; changed: behaves differently; info: equivalent")
            head.extend(f"#   {n}" for n in self.notes)
        body = yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None, width=100)
        return "\n".join(head) + "\n\n" + body


class _Converter:
    def __init__(self, notes: list[Note], router_id: str | None) -> None:
        self.notes = notes
        self.router_id_chosen = router_id     # --router-id: this node's, whatever the file says
        self.router_id: str | None = None
        self.router_id_where: Where | None = None
        self.vrrp_version = 2
        self.strict = False
        self.garp = _Garp()
        self.sync_daemon: dict[str, Any] | None = None
        self.sync_daemon_where: Where | None = None
        self.scripts: dict[str, dict[str, Any]] = {}
        self.script_copies: dict[str, dict[str, Any]] = {}
        self.instances: list[dict[str, Any]] = []
        self.instance_stmts: list[Stmt] = []
        self.sync_groups: list[dict[str, Any]] = []
        self.vsgroups: dict[str, list[tuple[Stmt, list[str]]]] = {}
        self.vs_stmts: list[Stmt] = []
        self.services: list[dict[str, Any]] = []

    # -- notes

    def skip(self, stmt: Stmt, why: str | None = None) -> None:
        """``lost``: the statement is not converted."""
        self.notes.append(Note(stmt.where, why or f"{stmt.keyword} not supported, skipped"))

    def change(self, where: Where | None, message: str) -> None:
        """``changed``: converted, but hadirector behaves differently."""
        self.notes.append(Note(where, message, Severity.CHANGED))

    def _warmup(self, defaults: "_CheckDefaults") -> Callable[[Stmt], None]:
        """keepalived's ``warmup`` delays only the first check by a random [0, N] s
        (register_checkers_thread); hadirector's nearest setting is the check
        ``jitter``, which delays every check that way."""
        def handle(x: Stmt) -> None:
            v = _float(_arg(x), "warmup")
            defaults.warmup = v
            if v > 0:
                self.change(x.where, f"warmup {v:g}: converted to the check jitter, which "
                                     f"delays every check (not only the first, as keepalived "
                                     f"does) by up to {v:g}s, so checks come on average "
                                     f"{v / 2:g}s further apart")
        return handle

    def info(self, where: Where | None, message: str) -> None:
        """``info``: converted to the equivalent (a keepalived rule or default applied)."""
        self.notes.append(Note(where, message, Severity.INFO))

    def each(self, stmts: Iterable[Stmt], handlers: dict[str, Callable[[Stmt], None]],
             context: str = "") -> None:
        """Run the handler of each statement; unknown keywords and bad values are noted."""
        for s in stmts:
            if not s.words:
                continue
            h = handlers.get(s.keyword)
            if h is None:
                where = f" in {context}" if context else ""
                if s.keyword in _EMAIL_KEYWORDS:
                    self.skip(s, f"{s.keyword}: e-mail alerts not supported, skipped")
                else:
                    self.skip(s, f"{s.keyword}{where} not supported, skipped")
                continue
            try:
                h(s)
            except _Bad as e:
                self.skip(s, f"{e}; {s.keyword} skipped")

    # -- top level

    def run(self, tree: list[Stmt]) -> dict[str, Any]:
        # Globals first: they are defaults for everything else, wherever they appear.
        for s in tree:
            if s.keyword == "global_defs":
                self.each(s.block or [], self._global_handlers(), "global_defs")
        for s in tree:
            kw = s.keyword
            if kw == "global_defs":
                continue
            if kw in ("vrrp_instance", "vrrp_script", "vrrp_sync_group", "virtual_server_group",
                      "virtual_server") and (s.block is None or not s.args):
                self.skip(s, f"{kw} needs a name and a {{ block }}, skipped")
                continue
            if kw == "vrrp_script":
                self._script(s)
            elif kw == "vrrp_instance":
                self.instance_stmts.append(s)
            elif kw == "vrrp_sync_group":
                self._sync_group(s)
            elif kw == "virtual_server_group":
                self._vsgroup(s)
            elif kw == "virtual_server":
                self.vs_stmts.append(s)
            elif kw:
                self.skip(s)
        for s in self.instance_stmts:
            try:
                self.instances.append(self._instance(s))
            except _Bad as e:
                self.skip(s, f"vrrp_instance {s.args[0]}: {e}; instance skipped")
        for s in self.vs_stmts:
            self.services.extend(self._virtual_server(s))
        self._finish_sync_daemon()
        self._check_references()
        return self._document()

    def _document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        # The router_id names one node: never the converting machine's host name.
        chosen = self.router_id_chosen
        if chosen is not None:
            if self.router_id is not None and self.router_id != chosen:
                self.info(self.router_id_where, f"router_id {self.router_id}: replaced by "
                                                f"--router-id {chosen}")
            doc["node"] = {"router_id": chosen}
        elif self.router_id is not None:
            doc["node"] = {"router_id": self.router_id}
        else:
            self.info(None, "global_defs has no router_id: node.router_id is left out, so each "
                            "director uses its own host name at run time, as keepalived does "
                            "(--router-id NAME sets one)")
        if self.instances:
            doc["vrrp_instances"] = self.instances
        if self.sync_groups:
            doc["sync_groups"] = self.sync_groups
        scripts = list(self.scripts.values()) + list(self.script_copies.values())
        if scripts:
            doc["track_scripts"] = scripts
        if self.services or self.sync_daemon:
            lvs: dict[str, Any] = {"program": "always", "on_shutdown": "remove"}
            if self.sync_daemon:
                lvs["sync_daemon"] = self.sync_daemon
            doc["lvs"] = lvs
        if self.services:
            doc["virtual_services"] = self.services
        return doc

    # -- global_defs

    def _global_handlers(self) -> dict[str, Callable[[Stmt], None]]:
        def router_id(s: Stmt) -> None:
            self.router_id = _arg(s)
            self.router_id_where = s.where

        def version(s: Stmt) -> None:
            self.vrrp_version = _int(_arg(s), "vrrp_version", 2, 3)

        def strict(s: Stmt) -> None:
            self.strict = True
            self.change(s.where, "vrrp_strict: its extra checks are not done; only its "
                                 "effect on accept_mode (off) is kept")

        def garp(attr: str, conv: Callable[[str, str], Any]) -> Callable[[Stmt], None]:
            def h(s: Stmt) -> None:
                setattr(self.garp, attr, conv(_arg(s), s.keyword))
            return h

        def flush(s: Stmt) -> None:
            self.change(s.where, "lvs_flush: hadirector never flushes IPVS, it removes only "
                                 "the entries it owns")

        def flush_on_stop(s: Stmt) -> None:
            self.change(s.where, f"{s.keyword}: on_shutdown is 'remove', which removes only "
                                 f"hadirector's own entries, not the whole table")

        return {
            "router_id": router_id,
            "vrrp_version": version,
            "vrrp_strict": strict,
            "vrrp_garp_master_delay": garp("delay", _float),
            "vrrp_garp_master_repeat": garp("repeat", lambda v, w: _int(v, w, 1)),
            "vrrp_garp_master_refresh": garp("refresh", _float),
            "vrrp_garp_interval": garp("interval", _float),
            "vrrp_gna_interval": garp("gna_interval", _float),
            "lvs_sync_daemon": self._lvs_sync_daemon,
            "lvs_flush": flush,
            "lvs_flush_onstop": flush_on_stop,
            "lvs_flush_on_stop": flush_on_stop,
        }

    def _lvs_sync_daemon(self, s: Stmt) -> None:
        """``lvs_sync_daemon IFACE [INSTANCE | inst NAME] [id N] [maxlen N] [port N]
        [ttl N] [group IP]`` (global_parser.c lvs_syncd_handler)."""
        if self.sync_daemon is not None:
            raise _Bad("lvs_sync_daemon given twice")
        sd: dict[str, Any] = {"interface": _arg(s)}
        args = s.args
        i = 1
        while i < len(args):
            key = args[i]
            val = args[i + 1] if i + 1 < len(args) else None
            if key in ("inst", "id", "maxlen", "port", "ttl", "group") and val is None:
                raise _Bad(f"lvs_sync_daemon {key} needs a value")
            if key == "inst":
                sd["follow_instance"] = val
            elif key == "id":
                sd["syncid"] = _int(val, "lvs_sync_daemon id", 0, 255)
            elif key == "maxlen":
                sd["maxlen"] = _int(val, "lvs_sync_daemon maxlen", 1, 65535 - 28)
            elif key == "port":
                sd["port"] = _int(val, "lvs_sync_daemon port", 1, 65535)
            elif key == "ttl":
                sd["ttl"] = _int(val, "lvs_sync_daemon ttl", 1, 255)
            elif key == "group":
                group = _addr(val, "lvs_sync_daemon group")
                if not group.is_multicast:
                    raise _Bad(f"lvs_sync_daemon group {val} is not multicast")
                sd["mcast_group"] = str(group)
            elif i == 1:        # old syntax: IFACE INSTANCE [SYNCID]
                sd["follow_instance"] = key
                i += 1
                continue
            elif i == 2 and key.isdigit():
                sd["syncid"] = _int(key, "lvs_sync_daemon syncid", 0, 255)
                i += 1
                continue
            else:
                raise _Bad(f"lvs_sync_daemon option '{key}' unknown")
            i += 2
        self.sync_daemon, self.sync_daemon_where = sd, s.where

    def _finish_sync_daemon(self) -> None:
        """keepalived's syncid defaults to the vrid of the instance the daemon follows."""
        sd = self.sync_daemon
        if sd is None:
            return
        follow = sd.get("follow_instance")
        if follow is None:
            self.change(self.sync_daemon_where, "lvs_sync_daemon follows no VRRP instance: "
                                                "it runs as master and backup all the time")
        elif "syncid" not in sd:
            inst = next((i for i in self.instances if i["name"] == follow), None)
            if inst is not None:
                sd["syncid"] = inst["vrid"]
        ordered = {k: sd[k] for k in ("interface", "syncid", "follow_instance", "mcast_group",
                                      "port", "ttl", "maxlen") if k in sd}
        self.sync_daemon = ordered

    # -- vrrp_script

    def _script(self, s: Stmt) -> None:
        name = s.args[0]
        d: dict[str, Any] = {"name": name}
        timeout: list[float] = []

        def script(x: Stmt) -> None:
            d["command"] = _command(x, self.notes, user_words=False)

        def interval(x: Stmt) -> None:
            d["interval"] = _num(_float(_arg(x), "interval"))

        def tmo(x: Stmt) -> None:
            timeout.append(_float(_arg(x), "timeout"))

        def weight(x: Stmt) -> None:
            d["weight"] = _int(_arg(x), "weight", -253, 253)
            if len(x.args) > 1:
                self.skip(x, f"weight {' '.join(x.args[1:])}: 'reverse' not supported, skipped "
                             f"(weight kept as {d['weight']})")

        def count(key: str) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                d[key] = _int(_arg(x), key, 1)
            return h

        self.each(s.block or [], {"script": script, "interval": interval, "timeout": tmo,
                                  "weight": weight, "rise": count("rise"),
                                  "fall": count("fall")}, f"vrrp_script {name}")
        if "command" not in d:
            self.skip(s, f"vrrp_script {name} has no script, skipped")
            return
        if name in self.scripts:
            self.skip(s, f"vrrp_script {name} defined twice; the second is skipped")
            return
        # keepalived: interval 1 s; timeout 0 means "the interval"; rise/fall 1; weight 0.
        d.setdefault("interval", 1)
        d["timeout"] = _num(timeout[0]) if timeout and timeout[0] > 0 else d["interval"]
        d.setdefault("weight", 0)
        d.setdefault("rise", 1)
        d.setdefault("fall", 1)
        self.scripts[name] = {k: d[k] for k in ("name", "command", "interval", "timeout",
                                               "weight", "rise", "fall")}

    # -- vrrp_instance

    def _instance(self, s: Stmt) -> dict[str, Any]:
        name = s.args[0]
        st: dict[str, Any] = {}
        vips: list[tuple[Stmt, ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = []
        peers: list[str] = []
        tifs: list[dict[str, Any]] = []
        tscripts: list[str] = []
        notify: dict[str, list[str]] = {}
        garp = _Garp(**self.garp.__dict__)
        ctx = f"vrrp_instance {name}"

        def put(key: str, conv: Callable[[Stmt], Any]) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                st[key] = conv(x)
            return h

        def state(x: Stmt) -> None:
            v = _arg(x).upper()
            if v not in ("MASTER", "BACKUP"):
                raise _Bad(f"state '{x.args[0]}' unknown")
            st["state"] = v
            if v == "MASTER":
                self.change(x.where, "state MASTER: keepalived starts as master at once; "
                                     "hadirector starts as backup and elects by priority")

        def vip_block(excluded: bool) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                if excluded:
                    self.change(x.where, "virtual_ipaddress_excluded: merged into virtual_ips, "
                                         "so they are also listed in adverts")
                for item in x.block or []:
                    try:
                        vips.append((item, self._vip(item, st.get("interface"))))
                    except _Bad as e:
                        self.skip(item, f"{e}; address skipped")
            return h

        def peer_block(x: Stmt) -> None:
            for item in x.block or []:
                try:
                    peers.append(str(_addr(item.keyword, "unicast_peer")))
                except _Bad as e:
                    self.skip(item, f"{e}; peer skipped")
                    continue
                if len(item.words) > 1:
                    self.skip(item, f"unicast_peer options '{' '.join(item.args)}' not "
                                    f"supported, skipped")

        def track_if(x: Stmt) -> None:
            for item in x.block or []:
                t: dict[str, Any] = {"name": item.keyword, "weight": 0}
                if len(item.args) >= 2 and item.args[0] == "weight":
                    try:
                        t["weight"] = _int(item.args[1], "weight", -254, 254)
                    except _Bad as e:
                        self.skip(item, f"{e}; track_interface skipped")
                        continue
                    if len(item.args) > 2:
                        self.skip(item, f"track_interface '{' '.join(item.args[2:])}' not "
                                        f"supported, skipped")
                elif item.args:
                    self.skip(item, f"track_interface options '{' '.join(item.args)}' not "
                                    f"supported, skipped")
                tifs.append(t)

        def track_script(x: Stmt) -> None:
            for item in x.block or []:
                tscripts.append(self._track_script_ref(item))

        def notify_h(key: str) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                notify[key] = _command(x, self.notes)
            return h

        def garp_h(attr: str, conv: Callable[[str, str], Any]) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                setattr(garp, attr, conv(_arg(x), x.keyword))
            return h

        def flag(key: str, value: Any) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                st[key] = value
            return h

        def auth(x: Stmt) -> None:
            self.skip(x, "authentication not supported (RFC 5798 removed it), skipped; a "
                         "keepalived peer with auth_type set will ignore our adverts")

        def syncd_if(x: Stmt) -> None:
            if self.sync_daemon is None:
                self.sync_daemon = {"interface": _arg(x), "follow_instance": name}
                self.sync_daemon_where = x.where
            else:
                self.skip(x, "lvs_sync_daemon_interface: a sync daemon is already set, skipped")

        handlers: dict[str, Callable[[Stmt], None]] = {
            "state": state,
            "interface": put("interface", lambda x: _arg(x)),
            "virtual_router_id": put("vrid", lambda x: _int(_arg(x), "virtual_router_id", 1, 255)),
            "priority": put("priority", lambda x: _int(_arg(x), "priority", 1, 255)),
            "advert_int": put("advert_interval", lambda x: _float(_arg(x), "advert_int")),
            "version": put("version", lambda x: _int(_arg(x), "version", 2, 3)),
            "virtual_ipaddress": vip_block(False),
            "virtual_ipaddress_excluded": vip_block(True),
            "nopreempt": flag("preempt", False),
            "preempt": flag("preempt", True),
            "preempt_delay": put("preempt_delay", lambda x: _float(_arg(x), "preempt_delay")),
            "accept": flag("accept", True),
            "no_accept": flag("accept", False),
            "strict_mode": put("strict", lambda x: (x.args or ["on"])[0] in ("on", "true", "yes")),
            "unicast_src_ip": put("unicast_src", lambda x: str(_addr(_arg(x), "unicast_src_ip"))),
            "unicast_peer": peer_block,
            "track_interface": track_if,
            "track_script": track_script,
            "notify_master": notify_h("master"),
            "notify_backup": notify_h("backup"),
            "notify_fault": notify_h("fault"),
            "notify_stop": notify_h("stop"),
            "notify": notify_h("notify"),
            "garp_master_delay": garp_h("delay", _float),
            "garp_master_repeat": garp_h("repeat", lambda v, w: _int(v, w, 1)),
            "garp_master_refresh": garp_h("refresh", _float),
            "garp_interval": garp_h("interval", _float),
            "gna_interval": garp_h("gna_interval", _float),
            "authentication": auth,
            "lvs_sync_daemon_interface": syncd_if,
        }
        # 'interface' must be known before VIPs are read (for the dev check), whatever
        # the order in the file.
        block = s.block or []
        self.each([x for x in block if x.keyword == "interface"], handlers, ctx)
        self.each([x for x in block if x.keyword != "interface"], handlers, ctx)

        if "interface" not in st:
            raise _Bad("no interface")
        if "vrid" not in st:
            raise _Bad("no virtual_router_id")

        families = {v.version for _, v in vips}
        if len(families) > 1:
            first = vips[0][1].version
            for item, v in vips:
                if v.version != first:
                    self.skip(item, f"{v} is IPv{v.version} but the instance is IPv{first}; "
                                    f"address skipped")
            vips = [(i, v) for i, v in vips if v.version == first]
        seen: set = set()
        unique = []
        for item, v in vips:
            if v.ip in seen:
                self.skip(item, f"{v.ip} is listed twice in vrrp_instance {name}; the second "
                                f"entry is skipped")
                continue
            seen.add(v.ip)
            unique.append((item, v))
        vips = unique
        if not vips:
            raise _Bad("no virtual_ipaddress (hadirector needs at least one)")
        family = vips[0][1].version
        version = st.get("version", 3 if family == 6 else self.vrrp_version)
        if version == 2 and family == 6:
            self.info(s.where, f"vrrp_instance {name}: IPv6 needs VRRP version 3; using 3 "
                               f"(as keepalived does)")
            version = 3

        priority = st.get("priority")
        if priority is None:
            # vrrp_complete_instance: no priority -> 255 for state MASTER, else 100.
            priority = 255 if st.get("state") == "MASTER" else 100
            if priority == 255:
                self.info(s.where, f"vrrp_instance {name}: state MASTER without priority "
                                   f"means priority 255 (address owner) in keepalived")
        advert = self._advert(st.get("advert_interval", 1.0), version, name, s.where)
        strict = st.get("strict", self.strict)
        accept = st.get("accept", True if priority == 255 else not strict)
        preempt, preempt_delay = self._preempt_rules(s, st, priority, strict)

        d: dict[str, Any] = {
            "name": name,
            "interface": st["interface"],
            "vrid": st["vrid"],
            "priority": priority,
            "version": version,
            "advert_interval": _num(advert),
            "virtual_ips": [str(v) for _, v in vips],
            "preempt": preempt,
        }
        if preempt_delay:
            d["preempt_delay"] = _num(preempt_delay)
        d["accept_mode"] = accept
        if "unicast_src" in st:
            d["unicast_src"] = st["unicast_src"]
        if peers:
            d["unicast_peers"] = peers
        if tifs:
            d["track_interfaces"] = tifs
        if tscripts:
            d["track_scripts"] = tscripts
        if notify:
            d["notify"] = notify
        garp_interval = garp.gna_interval if family == 6 else garp.interval
        if garp_interval > 1:
            self.change(s.where, f"vrrp_instance {name}: garp interval {garp_interval:g}s "
                                 f"shortened to hadirector's maximum, 1s")
            garp_interval = 1.0
        d["garp"] = {
            "count": garp.repeat,
            "interval": _num(garp_interval),
            "repeat_delay": _num(garp.delay),
            "refresh": _num(garp.refresh),
        }
        return d

    def _preempt_rules(self, s: Stmt, st: dict[str, Any], priority: int,
                       strict: bool) -> tuple[bool, float]:
        """nopreempt and preempt_delay as keepalived really runs them
        (vrrp_complete_instance, 2.2.7): both are cleared for an instance whose initial
        state is MASTER (``state MASTER``, or no state and priority 255; strict mode
        forces the state to match the priority), nopreempt is cleared at priority 255,
        and preempt_delay is cleared with nopreempt or strict mode."""
        name = s.args[0]
        block = s.block or []
        nopreempt_at = next((x.where for x in block if x.keyword == "nopreempt"), s.where)
        delay_at = next((x.where for x in block if x.keyword == "preempt_delay"), s.where)
        preempt = st.get("preempt", True)
        delay = st.get("preempt_delay", 0.0)
        initial = st.get("state") or ("MASTER" if priority == 255 else "BACKUP")
        if strict and (initial == "MASTER") != (priority == 255):
            initial = "MASTER" if priority == 255 else "BACKUP"
        why = ""
        if not preempt and priority == 255:
            why = "priority 255 (address owner)"
        elif not preempt and initial == "MASTER":
            why = "initial state MASTER"
        if why:
            preempt = True
            self.info(nopreempt_at, f"vrrp_instance {name}: nopreempt is ignored by keepalived "
                                    f"with {why}; converted as preempt: true")
        if delay:
            why = ("initial state MASTER" if initial == "MASTER" else
                   "strict mode" if strict else "nopreempt" if not preempt else "")
            if why:
                self.info(delay_at, f"vrrp_instance {name}: preempt_delay is ignored by "
                                    f"keepalived with {why}; not converted")
                delay = 0.0
        return preempt, delay

    def _advert(self, advert: float, version: int, name: str, where: Where) -> float:
        """Round the advert interval as keepalived does (vrrp_complete_instance): whole
        seconds 1..255 for VRRPv2 (RFC 3768 5.3.7), centiseconds up to 40.95 s for v3
        (RFC 5798 5.2.7)."""
        if version == 2:
            rounded = float(min(max(int(advert + 0.5), 1), 255))
        else:
            rounded = min(max(int(advert * 100 + 0.5), 1), 4095) / 100
        if abs(rounded - advert) > 1e-9:
            self.info(where, f"vrrp_instance {name}: advert_int {advert:g} is not valid for "
                               f"VRRPv{version}; rounded to {rounded:g} as keepalived does")
        return rounded

    def _vip(self, item: Stmt, interface: str | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """``ADDR[/PREFIX] [dev IF] [label L] [scope S] [brd B] ...``; no prefix = host."""
        text = item.keyword
        try:
            vip = ipaddress.ip_interface(text)
        except ValueError:
            raise _Bad(f"virtual address '{text}' is not an address") from None
        if "/" not in text:  # keepalived: /32 for IPv4, /128 for IPv6 (vrrp_ipaddress.c)
            vip = ipaddress.ip_interface(f"{vip.ip}/{vip.max_prefixlen}")
        opts = item.args
        i = 0
        while i < len(opts):
            key = opts[i]
            val = opts[i + 1] if i + 1 < len(opts) else None
            if key == "dev" and val is not None:
                if val != interface:
                    self.skip(item, f"{vip} dev {val}: hadirector adds every VIP on the "
                                    f"instance interface ({interface}); dev skipped")
                i += 2
            elif key in ("label", "scope", "brd", "broadcast", "metric", "preferred_lft",
                         "valid_lft") and val is not None:
                self.skip(item, f"{vip} {key} {val} not supported, skipped")
                i += 2
            else:
                self.skip(item, f"{vip} option '{key}' not supported, skipped")
                i += 1
        return vip

    def _track_script_ref(self, item: Stmt) -> str:
        """``NAME [weight N]``. A per-instance weight override becomes a copy of the
        script with that weight: hadirector keeps one weight per script."""
        name = item.keyword
        if len(item.args) >= 2 and item.args[0] == "weight":
            try:
                w = _int(item.args[1], "weight", -253, 253)
            except _Bad as e:
                self.skip(item, f"{e}; weight override skipped")
                return name
            base = self.scripts.get(name)
            if base is None or base["weight"] == w:
                return name
            copy_name = f"{name}_weight_{w}".replace("-", "minus_")
            if copy_name not in self.script_copies:
                self.script_copies[copy_name] = {**base, "name": copy_name, "weight": w}
            self.info(item.where, f"track_script {name} weight {w}: hadirector has one weight "
                                    f"per script; using a copy named {copy_name}")
            return copy_name
        if item.args:
            self.skip(item, f"track_script options '{' '.join(item.args)}' not supported, skipped")
        return name

    # -- vrrp_sync_group

    def _sync_group(self, s: Stmt) -> None:
        name = s.args[0]
        members: list[str] = []
        notify: dict[str, list[str]] = {}

        def group(x: Stmt) -> None:
            members.extend(i.keyword for i in x.block or [] if i.words)
            for i in x.block or []:
                if i.args:
                    self.skip(i, f"'{' '.join(i.args)}' after {i.keyword} not supported, skipped")

        def notify_h(key: str) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                notify[key] = _command(x, self.notes)
            return h

        handlers = {"group": group, "notify_master": notify_h("master"),
                    "notify_backup": notify_h("backup"), "notify_fault": notify_h("fault"),
                    "notify_stop": notify_h("stop"), "notify": notify_h("notify")}
        rest: list[Stmt] = []
        for x in s.block or []:
            # Old syntax: instance names listed directly in the sync group.
            if x.keyword not in handlers and x.block is None and not x.args and \
                    x.keyword not in ("smtp_alert", "global_tracking", "notify_priority_changes"):
                members.append(x.keyword)
            else:
                rest.append(x)
        self.each(rest, handlers, f"vrrp_sync_group {name}")
        d: dict[str, Any] = {"name": name, "instances": members}
        if notify:
            d["notify"] = notify
        self.sync_groups.append(d)

    def _check_references(self) -> None:
        inst_names = {i["name"] for i in self.instances}
        for g in self.sync_groups:
            missing = [m for m in g["instances"] if m not in inst_names]
            if missing:
                self.info(None, f"vrrp_sync_group {g['name']}: instance(s) "
                                f"{', '.join(missing)} not defined; removed from the group "
                                f"(keepalived ignores them too)")
                g["instances"] = [m for m in g["instances"] if m in inst_names]
        self.sync_groups = [g for g in self.sync_groups if g["instances"]]
        known = set(self.scripts) | set(self.script_copies)
        for inst in self.instances:
            ts = inst.get("track_scripts")
            if not ts:
                continue
            missing = [t for t in ts if t not in known]
            if missing:
                self.info(None, f"vrrp_instance {inst['name']}: track_script "
                                f"{', '.join(missing)} not defined; removed (keepalived "
                                f"ignores it too)")
                inst["track_scripts"] = [t for t in ts if t in known]
                if not inst["track_scripts"]:
                    del inst["track_scripts"]
        sd = self.sync_daemon
        if sd and sd.get("follow_instance") and sd["follow_instance"] not in inst_names:
            self.change(self.sync_daemon_where, f"lvs_sync_daemon: instance "
                                                f"{sd['follow_instance']} not defined")

    # -- virtual_server_group

    def _vsgroup(self, s: Stmt) -> None:
        name = s.args[0]
        entries: list[tuple[Stmt, list[str]]] = []
        for item in s.block or []:
            if item.words:
                entries.append((item, item.words))
        self.vsgroups[name] = entries

    def _expand_vsg_entry(self, item: Stmt) -> list[tuple[str, Any, int, int | None]]:
        """-> [(kind, address-or-None, port, fwmark-or-None)] for one group line:
        ``IP[-LAST|-IP|/PREFIX] [PORT]`` or ``fwmark N [inet|inet6]`` (alloc_vsg_entry)."""
        w = item.words
        if w[0] == "fwmark":
            mark = _int(_arg(item), "fwmark", 0, 2**32 - 1)
            fam = 6 if len(w) > 2 and w[2] == "inet6" else 4 if len(w) > 2 else None
            return [("fwmark", fam, 0, mark)]
        port = _int(w[1], "port", 0, 65535) if len(w) > 1 else 0
        text = w[0]
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError as e:
                raise _Bad(f"'{text}': {e}") from None
            addrs: list[Any] = list(net) if net.num_addresses <= 1024 else []
            if not addrs:
                raise _Bad(f"'{text}' expands to {net.num_addresses} services (limit 1024)")
            return [("addr", a, port, None) for a in addrs]
        if "-" in text:
            start_s, end_s = text.split("-", 1)
            start = _addr(start_s, "range start")
            if (start.version == 4 and "." in end_s) or (start.version == 6 and ":" in end_s):
                end = _addr(end_s, "range end")
            else:
                base = 16 if start.version == 6 else 10
                try:
                    last = int(end_s, base)
                except ValueError:
                    raise _Bad(f"range end '{end_s}' is not a number") from None
                # keepalived replaces the last octet (IPv4) or last 16-bit group (IPv6, hex).
                mask = 0xFF if start.version == 4 else 0xFFFF
                if last > mask:
                    raise _Bad(f"range end '{end_s}' too large")
                end = ipaddress.ip_address((int(start) & ~mask) | last)
            if int(end) < int(start):
                raise _Bad(f"range '{text}' ends before it starts")
            if int(end) - int(start) >= 1024:
                raise _Bad(f"range '{text}' expands to more than 1024 services")
            return [("addr", ipaddress.ip_address(a), port, None)
                    for a in range(int(start), int(end) + 1)]
        return [("addr", _addr(text, "address"), port, None)]

    # -- virtual_server

    def _virtual_server(self, s: Stmt) -> list[dict[str, Any]]:
        a = s.args
        keys: list[tuple[str, Any, int, int | None]] = []
        label = " ".join(a)
        try:
            if a[0] == "group":
                gname = _arg(s, 1)
                if gname not in self.vsgroups:
                    raise _Bad(f"virtual_server_group {gname} not defined")
                for item, _ in self.vsgroups[gname]:
                    try:
                        keys.extend(self._expand_vsg_entry(item))
                    except _Bad as e:
                        self.skip(item, f"{e}; group entry skipped")
                prefix = gname + "/"
            elif a[0] == "fwmark":
                keys.append(("fwmark", None, 0, _int(_arg(s, 1), "fwmark", 0, 2**32 - 1)))
                prefix = ""
            else:
                port = _int(a[1], "port", 0, 65535) if len(a) > 1 else 0
                keys.append(("addr", _addr(a[0], "virtual_server address"), port, None))
                prefix = ""
        except _Bad as e:
            self.skip(s, f"virtual_server {label}: {e}; skipped")
            return []

        base = self._vs_settings(s)
        if base is None:
            return []
        out: list[dict[str, Any]] = []
        for kind, addr_or_fam, port, mark in keys:
            d: dict[str, Any] = {}
            proto = base["protocol"]
            if kind == "fwmark":
                fam = addr_or_fam or base["family_hint"]
                name = f"{prefix}fwmark/{mark}" + (f"/ipv{fam}" if prefix and addr_or_fam else "")
                d["name"] = name
                d["fwmark"] = mark
                d["family"] = fam
                if base["protocol_set"]:
                    self.info(s.where, f"virtual_server {name}: protocol is ignored for "
                                         f"fwmark services (as in keepalived)")
            else:
                host = str(addr_or_fam) if addr_or_fam.version == 4 else f"[{addr_or_fam}]"
                name = f"{prefix}{proto}/{host}:{port}"
                d["name"] = name
                d["protocol"] = proto
                d["address"] = str(addr_or_fam)
                d["port"] = port
            d.update(copy.deepcopy(base["fields"]))
            proto_eff = "fwmark" if kind == "fwmark" else proto
            if d.get("one_packet") and proto_eff != "udp":
                del d["one_packet"]
                self.skip(s, f"virtual_server {name}: ops applies to UDP services only, skipped")
            family = d.get("family") or addr_or_fam.version
            keep = []
            for rs in d["real_servers"]:
                # IPVS crosses address families only by tunnelling (as keepalived checks).
                if ipaddress.ip_address(rs["address"]).version != family and rs["forward"] != "tun":
                    self.skip(s, f"virtual_server {name}: real server {rs['address']} is not "
                                 f"IPv{family} and not tunnelled; skipped for this service")
                else:
                    keep.append(rs)
            d["real_servers"] = keep
            if not port:
                for rs in d["real_servers"]:
                    chk = rs.get("check")
                    if chk and chk["type"] != "script" and not chk.get("port") and not rs["port"]:
                        del rs["check"]
                        self.skip(s, f"virtual_server {name}: the {chk['type']} check of real "
                                     f"server {rs['address']} has no port (give connect_port); "
                                     f"check skipped, server always up")
            if any(x["name"] == name for x in self.services + out):
                self.skip(s, f"virtual_server {name} defined twice; the second is skipped")
                continue
            out.append(d)
        return out

    def _vs_settings(self, s: Stmt) -> dict[str, Any] | None:
        st: dict[str, Any] = {}
        flags: list[tuple[Stmt, str]] = []
        defaults = _CheckDefaults()
        rs_stmts: list[Stmt] = []
        sorry: dict[str, Any] = {}
        ctx = f"virtual_server {' '.join(s.args)}"

        put = functools.partial(_put_in, st)
        dflt = functools.partial(_set_on, defaults)

        def sched(x: Stmt) -> None:
            v = _arg(x)
            if v not in SCHEDULERS:
                raise _Bad(f"scheduler '{v}' unknown")
            st["scheduler"] = v

        def proto(x: Stmt) -> None:
            v = _arg(x).upper()
            if v not in _PROTOCOLS:
                raise _Bad(f"protocol '{x.args[0]}' unknown")
            st["protocol"] = _PROTOCOLS[v]

        def pto(x: Stmt) -> None:
            # Without a value keepalived uses IPVS's default, 360 s.
            st["persistence_timeout"] = _int(x.args[0], "persistence_timeout", 1) if x.args else 360

        def pgr(x: Stmt) -> None:
            v = _arg(x)
            try:
                if v.isdigit():
                    _int(v, "persistence_granularity", 1, 128)
                else:
                    ipaddress.IPv4Address(v)
            except (ValueError, _Bad):
                raise _Bad(f"persistence_granularity '{v}' is neither a netmask nor a prefix length") from None
            st["persistence_netmask"] = v

        def sorry_server(x: Stmt) -> None:
            sorry["address"] = str(_addr(_arg(x), "sorry_server"))
            sorry["port"] = _int(x.args[1], "port", 0, 65535) if len(x.args) > 1 else 0
            sorry["where"] = x.where

        def sorry_method(x: Stmt) -> None:
            sorry["forward"] = self._forward(x)

        def ip_family(x: Stmt) -> None:
            v = _arg(x)
            if v not in ("inet", "inet6"):
                raise _Bad(f"ip_family '{v}' unknown")
            st["family"] = 4 if v == "inet" else 6

        def alpha(x: Stmt) -> None:
            defaults.alpha = True

        def omega(x: Stmt) -> None:
            self.skip(x, "omega: quorum_down is not run on shutdown; skipped")

        handlers: dict[str, Callable[[Stmt], None]] = {
            "delay_loop": dflt("delay_loop", lambda x: _float(_arg(x), "delay_loop")),
            "connect_timeout": dflt("connect_timeout", lambda x: _float(_arg(x), "connect_timeout")),
            "retry": dflt("retry", lambda x: _int(_arg(x), "retry", 0)),
            "delay_before_retry": dflt("delay_before_retry",
                                       lambda x: _float(_arg(x), "delay_before_retry")),
            "virtualhost": dflt("virtualhost", lambda x: _arg(x)),
            "warmup": self._warmup(defaults),
            "inhibit_on_failure": put("inhibit", lambda x: True),
            "lb_algo": sched,
            "lvs_sched": sched,
            "lb_kind": put("forward", self._forward),
            "lvs_method": put("forward", self._forward),
            "persistence_timeout": pto,
            "persistence_granularity": pgr,
            "protocol": proto,
            "ops": put("one_packet", lambda x: True),
            "quorum": put("quorum", lambda x: _int(_arg(x), "quorum", 1)),
            "hysteresis": put("quorum_hysteresis", lambda x: _int(_arg(x), "hysteresis", 0)),
            "quorum_up": put("quorum_up", lambda x: _command(x, self.notes)),
            "quorum_down": put("quorum_down", lambda x: _command(x, self.notes)),
            "weight": put("weight", lambda x: _int(_arg(x), "weight", 1, 65535)),
            "sorry_server": sorry_server,
            "sorry_server_lvs_method": sorry_method,
            "ip_family": ip_family,
            "alpha": alpha,
            "omega": omega,
            "real_server": rs_stmts.append,
        }
        for f in ("hashed", "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback",
                  "mh-port", "mh-fallback"):
            handlers[f] = lambda x: flags.append((x, x.keyword))

        def lvs_flags(x: Stmt) -> None:
            # One line listing several flags, as ipvsadm -b takes them.
            for f in x.args:
                if f == "ops":
                    st["one_packet"] = True
                else:
                    flags.append((x, f))

        handlers["lvs_flags"] = lvs_flags
        self.each(s.block or [], handlers, ctx)

        scheduler = st.get("scheduler")
        if scheduler is None:
            scheduler = "wlc"
            self.info(s.where, f"{ctx}: no lb_algo; keepalived's default 'wlc' used")
        sched_flags = self._sched_flags(flags, scheduler)
        forward = st.get("forward")

        fields: dict[str, Any] = {"scheduler": scheduler}
        if sched_flags:
            fields["scheduler_flags"] = sched_flags
        if "persistence_timeout" in st:
            fields["persistence_timeout"] = st["persistence_timeout"]
        if "persistence_netmask" in st:
            fields["persistence_netmask"] = st["persistence_netmask"]
        if st.get("one_packet"):
            fields["one_packet"] = True

        servers: list[dict[str, Any]] = []
        rs_inhibit: list[bool] = []
        families: set[int] = set()
        for r in rs_stmts:
            try:
                rs, inhibit = self._real_server(r, defaults, forward, st.get("weight", 1), ctx)
            except _Bad as e:
                self.skip(r, f"real_server {' '.join(r.args)}: {e}; skipped")
                continue
            key = (rs["address"], rs["port"])
            if any((x["address"], x["port"]) == key for x in servers):
                self.skip(r, f"real_server {' '.join(r.args)} given twice; the second is skipped")
                continue
            families.add(ipaddress.ip_address(rs["address"]).version)
            servers.append(rs)
            rs_inhibit.append(inhibit if inhibit is not None else st.get("inhibit", False))
        fields["real_servers"] = servers
        if not servers:
            self.info(s.where, f"{ctx} has no real servers")
        if sorry:
            ss = {"address": sorry["address"], "port": sorry["port"], "weight": 1}
            ss.update(sorry.get("forward") or forward or {"forward": "nat"})
            fields["sorry_server"] = ss
        inhibit = any(rs_inhibit)
        if inhibit and not all(rs_inhibit):
            self.change(s.where, f"{ctx}: inhibit_on_failure set on some real servers only; "
                                 f"hadirector applies it to the whole service")
        if inhibit:
            fields["inhibit_on_failure"] = True
        fields["quorum"] = st.get("quorum", 1)
        if st.get("quorum_hysteresis"):
            fields["quorum_hysteresis"] = st["quorum_hysteresis"]
        if "quorum_up" in st:
            fields["quorum_up"] = st["quorum_up"]
        if "quorum_down" in st:
            fields["quorum_down"] = st["quorum_down"]
        family_hint = st.get("family") or (families.pop() if len(families) == 1 else 4)
        return {"protocol": st.get("protocol", "tcp"), "protocol_set": "protocol" in st,
                "family_hint": family_hint, "fields": fields}

    def _sched_flags(self, flags: list[tuple[Stmt, str]], scheduler: str) -> list[str]:
        out: list[str] = []
        # IP_VS_SVC_F_SCHED1 is sh/mh-fallback, SCHED2 sh/mh-port (include/uapi ip_vs.h).
        numbered = {"flag-1": "fallback", "flag-2": "port"}
        for stmt, f in flags:
            if f in numbered and scheduler in ("sh", "mh"):
                f = f"{scheduler}-{numbered[f]}"
            if f in ("sh-port", "sh-fallback", "mh-port", "mh-fallback"):
                if not f.startswith(scheduler + "-"):
                    self.info(stmt.where, f"{f} applies only to the {f[:2]} scheduler, not "
                                          f"{scheduler}; skipped (keepalived ignores it too)")
                elif f not in out:
                    out.append(f)
            else:
                self.skip(stmt, f"{f} not supported for scheduler {scheduler}, skipped")
        return out

    def _forward(self, x: Stmt) -> dict[str, Any]:
        """``NAT|DR|TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum]``
        (svr_forwarding_handler) -> forward and, for TUN, the tunnel fields."""
        v = _arg(x).upper()
        if v not in _FORWARD:
            raise _Bad(f"forwarding method '{x.args[0]}' unknown")
        out: dict[str, Any] = {"forward": _FORWARD[v]}
        opts = x.args[1:]
        if opts and v != "TUN":
            raise _Bad(f"options '{' '.join(opts)}' only apply to TUN")
        i = 0
        while i < len(opts):
            key = opts[i]
            if key in ("type", "port") and i + 1 >= len(opts):
                raise _Bad(f"{key} needs a value")
            if key == "type":
                if opts[i + 1] not in ("ipip", "gue", "gre"):
                    raise _Bad(f"tunnel type '{opts[i + 1]}' unknown")
                out["tunnel_type"] = opts[i + 1]
                i += 2
            elif key == "port":
                out["tunnel_port"] = _int(opts[i + 1], "tunnel port", 1, 65535)
                i += 2
            elif key in ("nocsum", "csum", "remcsum"):
                out["tunnel_checksum"] = key
                i += 1
            else:
                raise _Bad(f"option '{key}' unknown")
        ttype = out.get("tunnel_type", "ipip")
        if ttype != "gue":
            out.pop("tunnel_port", None)
        if ttype == "ipip":
            out.pop("tunnel_checksum", None)
        if ttype == "gue" and "tunnel_port" not in out:
            raise _Bad("a gue tunnel needs 'port N'")
        return out

    def _real_server(self, r: Stmt, vs_defaults: _CheckDefaults, vs_forward: dict[str, Any] | None,
                     vs_weight: int, vs_ctx: str = "") -> tuple[dict[str, Any], bool | None]:
        addr = _addr(_arg(r), "real_server address")
        port = _int(r.args[1], "port", 0, 65535) if len(r.args) > 1 else 0
        defaults = vs_defaults.child()
        st: dict[str, Any] = {}
        checkers: list[Stmt] = []
        ctx = f"real_server {' '.join(r.args)}"

        put = functools.partial(_put_in, st)
        dflt = functools.partial(_set_on, defaults)

        def alpha(x: Stmt) -> None:
            defaults.alpha = True

        def notify_updown(x: Stmt) -> None:
            self.skip(x, f"{x.keyword}: real server notify scripts not supported, skipped")

        handlers: dict[str, Callable[[Stmt], None]] = {
            "weight": put("weight", lambda x: _int(_arg(x), "weight", 0, 65535)),
            "lvs_method": put("forward", self._forward),
            "uthreshold": put("upper_threshold", lambda x: _int(_arg(x), "uthreshold", 0)),
            "lthreshold": put("lower_threshold", lambda x: _int(_arg(x), "lthreshold", 0)),
            "inhibit_on_failure": put("inhibit", lambda x: True),
            "notify_up": notify_updown,
            "notify_down": notify_updown,
            "alpha": alpha,
            "retry": dflt("retry", lambda x: _int(_arg(x), "retry", 0)),
            "delay_before_retry": dflt("delay_before_retry",
                                       lambda x: _float(_arg(x), "delay_before_retry")),
            "connect_timeout": dflt("connect_timeout", lambda x: _float(_arg(x), "connect_timeout")),
            "delay_loop": dflt("delay_loop", lambda x: _float(_arg(x), "delay_loop")),
            "virtualhost": dflt("virtualhost", lambda x: _arg(x)),
            "warmup": self._warmup(defaults),
        }
        for c in ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK") + tuple(_UNSUPPORTED_CHECKERS):
            handlers[c] = checkers.append
        self.each(r.block or [], handlers, ctx)

        rs: dict[str, Any] = {
            "address": str(addr),
            "port": port,
            "weight": st.get("weight", vs_weight),
        }
        rs.update(st.get("forward") or vs_forward or {"forward": "nat"})
        if st.get("upper_threshold"):
            rs["upper_threshold"] = st["upper_threshold"]
        if st.get("lower_threshold"):
            rs["lower_threshold"] = st["lower_threshold"]

        check = None
        for c in checkers:
            if c.keyword in _UNSUPPORTED_CHECKERS:
                self.skip(c, f"{c.keyword} of {ctx} in {vs_ctx} is not converted: hadirector "
                             f"has no {_UNSUPPORTED_CHECKERS[c.keyword]} probe yet (issue 13)")
                continue
            if check is not None:
                self.skip(c, f"{c.keyword}: hadirector runs one check per real server; "
                             f"this second checker is skipped")
                continue
            try:
                check = self._checker(c, defaults)
            except _Bad as e:
                self.skip(c, f"{c.keyword}: {e}; checker skipped")
        if check is not None:
            rs["check"] = check
        elif checkers:
            self.skip(r, f"{ctx} in {vs_ctx}: no convertible checker, so it has no health "
                         f"check: always considered up")
        return rs, st.get("inhibit")

    def _checker(self, c: Stmt, rs_defaults: _CheckDefaults) -> dict[str, Any]:
        kind = c.keyword
        dfl = rs_defaults.child()
        st: dict[str, Any] = {}
        urls: list[Stmt] = []

        def put(key: str, conv: Callable[[Stmt], Any]) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                st[key] = conv(x)
            return h

        def dflt(attr: str, conv: Callable[[Stmt], Any]) -> Callable[[Stmt], None]:
            def h(x: Stmt) -> None:
                setattr(dfl, attr, conv(x))
            return h

        def alpha(x: Stmt) -> None:
            v = (x.args or ["yes"])[0].lower()
            dfl.alpha = v not in ("no", "off", "false", "0")

        handlers: dict[str, Callable[[Stmt], None]] = {
            "connect_ip": put("address", lambda x: str(_addr(_arg(x), "connect_ip"))),
            "connect_port": put("port", lambda x: _int(_arg(x), "connect_port", 1, 65535)),
            "bindto": put("bind_to", lambda x: str(_addr(_arg(x), "bindto"))),
            "connect_timeout": dflt("connect_timeout", lambda x: _float(_arg(x), "connect_timeout")),
            "retry": dflt("retry", lambda x: _int(_arg(x), "retry", 0)),
            "delay_before_retry": dflt("delay_before_retry",
                                       lambda x: _float(_arg(x), "delay_before_retry")),
            "delay_loop": dflt("delay_loop", lambda x: _float(_arg(x), "delay_loop")),
            "warmup": self._warmup(dfl),
            "alpha": alpha,
        }
        if kind in ("HTTP_GET", "SSL_GET"):
            handlers.update({
                "nb_get_retry": dflt("retry", lambda x: _int(_arg(x), "nb_get_retry", 0)),
                "virtualhost": dflt("virtualhost", lambda x: _arg(x)),
                "url": urls.append,
            })
        elif kind == "MISC_CHECK":
            handlers = {k: v for k, v in handlers.items()
                        if k not in ("connect_ip", "connect_port", "bindto", "connect_timeout")}
            handlers.update({
                "misc_path": put("command", lambda x: _command(x, self.notes, user_words=False)),
                "misc_timeout": put("misc_timeout", lambda x: _float(_arg(x), "misc_timeout")),
                "misc_dynamic": lambda x: self.skip(
                    x, "misc_dynamic: setting the weight from the exit code is not supported; "
                       "exit 0 = up, anything else = down"),
            })
        self.each(c.block or [], handlers, kind)

        # keepalived defaults (check_data.c, check_http.c, check_misc.c)
        delay_loop = dfl.delay_loop if dfl.delay_loop is not None else _KA_DEFAULT_DELAY_LOOP
        retry = dfl.retry if dfl.retry is not None else (0 if kind == "MISC_CHECK" else 1)
        dbr = dfl.delay_before_retry
        if dbr is None:
            dbr = 3.0 if kind in ("HTTP_GET", "SSL_GET") else 1.0

        out: dict[str, Any] = {}
        if kind == "TCP_CHECK":
            out["type"] = "tcp"
        elif kind in ("HTTP_GET", "SSL_GET"):
            out["type"] = "https" if kind == "SSL_GET" else "http"
        else:
            out["type"] = "script"
            if "command" not in st:
                raise _Bad("no misc_path")
            out["command"] = st["command"]

        if kind == "MISC_CHECK":
            # misc_timeout defaults to delay_loop (check_misc.c).
            timeout = st.get("misc_timeout") or delay_loop
        else:
            timeout = dfl.connect_timeout if dfl.connect_timeout is not None \
                else _KA_DEFAULT_CONNECT_TIMEOUT
        out["interval"] = _num(delay_loop)
        out["timeout"] = _num(timeout)
        out["rise"] = 1
        out["fall"] = retry + 1
        if retry:
            out["retry_delay"] = _num(dbr)
        if dfl.alpha:
            out["initial"] = "down"
        if dfl.warmup:
            out["jitter"] = _num(dfl.warmup)
        for k in ("bind_to", "address", "port"):
            if k in st:
                out[k] = st[k]

        if kind in ("HTTP_GET", "SSL_GET"):
            if not urls:
                raise _Bad("no url")
            out.update(self._url(urls[0], dfl.virtualhost))
            for extra in urls[1:]:
                path = next((u.args[0] for u in extra.block or [] if u.keyword == "path" and u.args), "?")
                self.skip(extra, f"url {path}: hadirector checks one URL per real server; "
                                 f"skipped (only {out['path']} is checked)")
            if kind == "SSL_GET":
                out["verify_tls"] = False
        return out

    def _url(self, u: Stmt, virtualhost: str | None) -> dict[str, Any]:
        st: dict[str, Any] = {}
        codes: list[int] = []

        def status(x: Stmt) -> None:
            for part in x.args:
                lo_s, _, hi_s = part.partition("-")
                lo = _int(lo_s, "status_code", 100, 599)
                hi = _int(hi_s, "status_code", 100, 599) if hi_s else lo
                if hi < lo:
                    raise _Bad(f"status_code range '{part}' is empty")
                codes.extend(c for c in range(lo, hi + 1) if c not in codes)
                if hi > lo:
                    self.info(x.where, f"status_code {part}: written out as its {hi - lo + 1} "
                                       f"codes (hadirector lists single codes; the same codes "
                                       f"pass)")

        def digest(x: Stmt) -> None:
            v = _arg(x).lower()
            if not re.fullmatch(r"[0-9a-f]{32}", v):
                raise _Bad(f"digest '{x.args[0]}' is not an MD5 hex digest")
            st["digest"] = v

        self.each(u.block or [], {
            "path": lambda x: st.__setitem__("path", _arg(x)),
            "digest": digest,
            "status_code": status,
            "virtualhost": lambda x: st.__setitem__("host", _arg(x)),
            "regex": lambda x: st.__setitem__("body_regex", _arg(x)),
        }, "url")
        if "path" not in st:
            raise _Bad("url has no path")
        out: dict[str, Any] = {"path": st["path"]}
        # No status_code: keepalived accepts any 2xx (HTTP_DEFAULT_STATUS_CODE_MIN..MAX).
        out["status_codes"] = sorted(codes) if codes else list(range(200, 300))
        if "digest" in st:
            out["digest"] = st["digest"]
        if "body_regex" in st:
            out["body_regex"] = st["body_regex"]
        host = st.get("host") or virtualhost
        if host:
            out["host"] = host
        return out


# --- public API ---------------------------------------------------------------------


def convert_text(text: str, source: str = "keepalived.conf", *, base_dir: str = ".",
                 config_id: str | None = None, router_id: str | None = None) -> Conversion:
    """Convert keepalived.conf text. ``source`` names it in notes; ``include``s are
    resolved relative to ``base_dir``. ``router_id`` is this node's (--router-id): it
    replaces global_defs' router_id. Raises ``KeepalivedSyntaxError``."""
    notes: list[Note] = []
    lexer = _Lexer(notes, config_id)
    return _convert(lexer, lexer.lex_text(text, source, base_dir), notes, router_id, source)


def convert_file(path: str, *, config_id: str | None = None,
                 router_id: str | None = None, display: str | None = None) -> Conversion:
    """Convert a keepalived.conf file (and whatever it includes). Raises
    ``KeepalivedSyntaxError``, or ``OSError`` when ``path`` cannot be read."""
    notes: list[Note] = []
    lexer = _Lexer(notes, config_id)
    shown = display or path
    return _convert(lexer, lexer.lex_file(path, shown), notes, router_id, shown)


def _convert(lexer: _Lexer, tokens: list[_Token], notes: list[Note], router_id: str | None,
             source: str) -> Conversion:
    errors = lexer.errors
    tree = _parse(tokens, notes, errors)
    if not errors and not any(s.words for s in tree):
        # A file emptied or cut to its comments would convert to a director that does
        # nothing, and exit 0.
        errors.append((Where(source, 1), "no keepalived configuration in it (an empty file, "
                                         "or only comments)"))
    if errors:
        raise KeepalivedSyntaxError(errors)
    data = _Converter(notes, router_id).run(tree)
    return Conversion(data=data, notes=notes, source=source)


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
