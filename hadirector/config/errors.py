"""Config errors that point at the exact place in the file.

Every problem becomes a ``ConfigIssue`` (file, line, column, key path, message); one
``ConfigError`` carries all issues found in one pass, so an operator fixes a file in
one round trip instead of one error per run (``keepalived -t`` stops at the first).
"""

from __future__ import annotations

from dataclasses import dataclass

# How many issues str(ConfigError) prints; the rest are summarised in one line.
SHOWN_ISSUES = 10


@dataclass(frozen=True)
class ConfigIssue:
    source: str          # file name as given (or "<memory>")
    line: int            # 1-based; 0 = the whole file (e.g. cannot read it)
    column: int          # 1-based; 0 = unknown
    path: str            # key path like "vrrp_instances[0].priority"; "" = top level
    message: str         # what was expected and what was found

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is invalid; ``issues`` lists every problem found (at least one)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.issues = list(issues)
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [str(i) for i in self.issues[:SHOWN_ISSUES]]
        hidden = len(self.issues) - SHOWN_ISSUES
        if hidden > 0:
            lines.append(f"... and {hidden} more error{'s' if hidden > 1 else ''}")
        return "\n".join(lines)
