"""Config errors that point at the exact place in the file.

Every problem becomes a ``ConfigIssue`` (file, line, column, key path, message); one
``ConfigError`` carries all issues found in one pass, so an operator fixes a file in
one round trip instead of one error per run (``keepalived -t`` stops at the first).
"""

from __future__ import annotations

from dataclasses import dataclass

# How many issues str(ConfigError) prints; the rest are summarised in one line.
SHOWN_ISSUES = 10
# A value echoed in a message is cut to this many characters (a 2 MB string must not
# become a 2 MB log line); the message and key path as a whole are cut as well.
SHOWN_VALUE = 80
MAX_MESSAGE = 400
MAX_PATH = 200


def clip(text: str, limit: int = SHOWN_VALUE) -> str:
    """``text`` itself when short, else its start and its full size."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text.encode('utf-8', 'surrogatepass'))} bytes)"


def shown(value: str) -> str:
    """A string value as it appears after 'got': quoted, cut like ``clip``."""
    if len(value) <= SHOWN_VALUE:
        return repr(value)
    return f"{value[:SHOWN_VALUE]!r}… ({len(value.encode('utf-8', 'surrogatepass'))} bytes)"


@dataclass(frozen=True)
class ConfigIssue:
    source: str          # file name as given (or "<memory>")
    line: int            # 1-based; 0 = the whole file (e.g. cannot read it)
    column: int          # 1-based; 0 = unknown
    path: str            # key path like "vrrp_instances[0].priority"; "" = top level
    message: str         # what was expected and what was found

    def __post_init__(self) -> None:
        # Every message is bounded, whatever echoed a value into it (PyYAML's too).
        object.__setattr__(self, "path", clip(self.path, MAX_PATH))
        object.__setattr__(self, "message", clip(self.message, MAX_MESSAGE))

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is invalid; ``issues`` lists every problem found (at least one)."""

    def __init__(self, issues: list[ConfigIssue], unlisted: int = 0) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.issues = list(issues)
        self.unlisted = unlisted     # further issues found but not kept (see fields.MAX_ISSUES)
        super().__init__(self._render())

    @property
    def count(self) -> int:
        return len(self.issues) + self.unlisted

    def _render(self) -> str:
        lines = [str(i) for i in self.issues[:SHOWN_ISSUES]]
        hidden = self.count - len(lines)
        if hidden > 0:
            lines.append(f"... and {hidden} more error{'s' if hidden > 1 else ''}")
        return "\n".join(lines)
