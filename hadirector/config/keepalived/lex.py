"""keepalived.conf syntax: the lexer (includes, comments, ``@id`` lines, ``$NAME``
definitions) and the parser (tokens -> a tree of ``Stmt``), with file:line positions.

1. **Lexer** (``Lexer``): reads the file and everything it ``include``s (globs with
   ``{a,b}`` braces, relative to the including file's directory, as keepalived does by
   ``chdir``-ing there), drops comments the way keepalived's ``decomment()`` does (``#``
   or ``!`` anywhere outside double quotes, ``\\#`` escapes one, a trailing ``\\``
   continues the line), keeps ``@id`` / ``@^id`` conditional lines for the chosen
   config id, substitutes simple ``$NAME=value`` definitions, and yields tokens
   (words, quoted strings, ``{``, ``}``, end of line) that each know their file:line.
2. **Parser** (``parse``): tokens -> a tree of ``Stmt(words, where, block)``. A ``{``
   belongs to the statement before it, on the same line or on the next one.

A file keepalived would not read as written -- an unbalanced brace (a file cut short),
an ``include`` of a file that does not exist, an include loop -- is reported in
``Lexer.errors`` / ``parse``'s ``errors`` and never converts into a smaller config.
"""

from __future__ import annotations

import enum
import glob
import os
import re
from dataclasses import dataclass

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
class Token:
    kind: str
    text: str
    where: Where



class Lexer:
    def __init__(self, notes: list[Note], config_id: str | None) -> None:
        self.notes = notes
        self.errors: list[tuple[Where, str]] = []
        self.config_id = config_id
        self.defs: dict[str, str] = {}
        self._open: list[str] = []

    def lex_file(self, path: str, display: str, depth: int = 0,
                 included_at: Where | None = None) -> list[Token]:
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

    def lex_text(self, text: str, display: str, base_dir: str, depth: int = 0) -> list[Token]:
        tokens: list[Token] = []
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
            tokens.append(Token(_EOL, "", where))
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
                 depth: int) -> list[Token]:
        """keepalived's rules (lib/parser.c open_and_check_glob): a pattern with a
        wildcard may match nothing; a plain file name (or a ``{a,b}`` alternative without
        a wildcard) that does not exist is a missing file. A missing file is an error
        here, not a quietly smaller config."""
        if depth >= _MAX_INCLUDE_DEPTH:
            self.errors.append((where, f"include nested more than {_MAX_INCLUDE_DEPTH} deep"))
            return []
        if not args:
            self.errors.append((where, "include without a file name"))
        out: list[Token] = []
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


def _split_line(line: str, where: Where, notes: list[Note]) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c in "{}":
            tokens.append(Token(_OPEN if c == "{" else _CLOSE, c, where))
            i += 1
        elif c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                notes.append(Note(where, "unterminated quote, closed at end of line",
                                  Severity.CHANGED))
                end = n
            tokens.append(Token(_WORD, line[i + 1:end], where))
            i = end + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            tokens.append(Token(_WORD, line[i:j], where))
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


def parse(tokens: list[Token], notes: list[Note],
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
