"""YAML text -> PyYAML node graph, with the work of reading it bounded.

Theory of operation: composing does not expand aliases (an alias is the anchored node
itself, shared), but everything after it does: the converters in ``fields`` walk
values and apply merge keys (``<<: *a``) once per reference, so 600 bytes of nested
``<<: [*a, *a, ...]`` cost 10^7 steps ("billion laughs"). So while composing we
measure each anchored node as if every alias in it were expanded (nodes, and nesting
depth), and charge that at each alias. Past ``MAX_NODES`` or ``MAX_DEPTH`` the file is
refused at the alias (or node) that crossed the limit, before any converter runs;
below them the converters' work is linear in ``MAX_NODES``. The depth limit also
keeps merge chains and deep nesting far from Python's recursion limit.

The file size is limited before parsing (``MAX_FILE_BYTES``), so composing is bounded
too. The limits are far above any real config: 12,000 real servers in ~850 KB are
~90,000 nodes, nested 8 deep.

Plain scalars are typed like YAML 1.2's core schema (``CoreResolver``), not like
PyYAML's YAML 1.1: ``true``/``false``, decimal integers, decimal floats and null. A
plain scalar that YAML 1.1 and 1.2 read differently, or that only one of them reads as
a number -- ``yes``/``no``/``on``/``off``/``y``/``n``, ``0x1F``, ``0b101``, ``0o17``,
``010``, ``1_000``, ``1:30`` (base 60: 90) -- gets the tag ``YAML11`` and is refused by
the converters with what to write instead (``yaml11_hint``): a config must not mean
one thing to us and another to the next tool that reads it.
"""

from __future__ import annotations

import re

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import Node

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64


_TAG = "tag:yaml.org,2002:"
# Not a YAML tag anyone writes: a plain scalar whose meaning depends on the YAML version.
YAML11 = "tag:hadirector,2026:yaml11"

_YAML11_BOOL = {w: v for v, words in ((True, "yes Yes YES on On ON y Y"), (False, "no No NO off Off OFF n N"))
                for w in words.split()}
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")


class CoreResolver(yaml.resolver.BaseResolver):
    """Implicit tags of YAML 1.2's core schema, plus ``YAML11`` for the surprises."""


for _tag, _rx, _first in (
    (_TAG + "bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    (_TAG + "int", r"[-+]?(?:0|[1-9][0-9]*)", "-+0123456789"),
    (_TAG + "float", r"[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)"
                     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
    (_TAG + "null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    (_TAG + "merge", r"<<", "<"),
    (YAML11, "|".join(_YAML11_BOOL) + r"|[-+]?0[bB][0-9_]*|[-+]?0[xX][0-9a-fA-F_]*|[-+]?0[oO][0-9_]*"
             r"|[-+]?0[0-9_]+(?:\.[0-9_]*)?|[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?"
             r"|[-+]?[0-9]*\.[0-9]*_[0-9_]*|" + _SEXAGESIMAL.pattern, "-+0123456789.yYnNoO"),
):
    CoreResolver.add_implicit_resolver(_tag, re.compile(f"^(?:{_rx})$"), list(_first))


def yaml11_hint(text: str) -> str:
    """How a ``YAML11`` scalar is shown after 'got': what it may mean and what to write."""
    quote = f"or \"{text}\" in quotes for text"
    if text in _YAML11_BOOL:
        value = str(_YAML11_BOOL[text]).lower()
        return f"{text}, which YAML 1.1 reads as {value} and YAML 1.2 as text: write {value}, {quote}"
    digits = text.replace("_", "")
    sign, body = (digits[0], digits[1:]) if digits[:1] in "+-" else ("", digits)
    lower = body.lower()
    try:
        if lower.startswith(("0x", "0b", "0o")):
            base = {"x": (16, "hexadecimal"), "b": (2, "binary"), "o": (8, "octal")}[lower[1]]
            value = int(sign + body[2:], base[0])
            return f"{text}, {'an' if base[1][0] == 'o' else 'a'} {base[1]} number: write {value} (in decimal), {quote}"
        if _SEXAGESIMAL.fullmatch(text):
            value = 0.0
            for part in body.split(":"):
                value = value * 60 + float(part)
            shown = f"{sign}{value:g}"
            return f"{text}, which YAML 1.1 reads as {shown} (base 60) and YAML 1.2 as text: write {shown}, {quote}"
        if "_" in text:
            return f"{text}, which YAML 1.1 reads as {sign}{body} and YAML 1.2 as text: write {sign}{body}, {quote}"
        if body.startswith("0") and "." not in body:
            decimal = int(body)
            try:
                octal = f"octal {sign}{int(body, 8)}"
            except ValueError:
                octal = "text"
            return (f"{text}, which YAML 1.1 reads as {octal} and YAML 1.2 as {sign}{decimal}: "
                    f"write the number without the leading zero, {quote}")
    except ValueError:
        pass
    return f"{text}, which YAML 1.1 and YAML 1.2 read differently: write a decimal number, {quote}"


class TooComplex(Exception):
    """The document crosses a limit; ``mark`` is where (the alias that crossed it)."""

    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class BoundedComposer(Composer):
    """PyYAML's composer, counting the document as it would be with aliases expanded."""

    def __init__(self) -> None:
        super().__init__()
        self.expanded = 0                            # nodes so far, aliases expanded
        self._measure: dict[Node, tuple[int, int]] = {}   # anchored node -> (nodes, depth)
        self._child_depth = [0]                      # deepest child of each open node

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            # An anchor still open here is a recursive alias: ``fields`` refuses to
            # follow it, so it costs one node.
            nodes, depth = self._measure.get(node, (1, 1))
            self._count(nodes, event.start_mark, "alias/merge expansion exceeds")
            self._nest(depth, event.start_mark)
            return node
        if len(self._child_depth) > MAX_DEPTH:
            raise TooComplex(event.start_mark, f"config too complex: nested more than {MAX_DEPTH} levels deep")
        self._count(1, event.start_mark, "more than")
        before = self.expanded
        self._child_depth.append(0)
        node = super().compose_node(parent, index)
        depth = 1 + self._child_depth.pop()
        self._nest(depth, event.start_mark)
        if getattr(event, "anchor", None) is not None:
            self._measure[node] = (self.expanded - before + 1, depth)
        return node

    def _count(self, nodes: int, mark: yaml.Mark, what: str) -> None:
        self.expanded += nodes
        if self.expanded > MAX_NODES:
            raise TooComplex(mark, f"config too complex: {what} {MAX_NODES} nodes")

    def _nest(self, depth: int, mark: yaml.Mark) -> None:
        """A child ``depth`` levels deep (aliases expanded) under the open nodes."""
        self._child_depth[-1] = max(self._child_depth[-1], depth)
        if len(self._child_depth) - 1 + depth > MAX_DEPTH:
            raise TooComplex(mark, f"config too complex: alias/merge expansion nests more than "
                                   f"{MAX_DEPTH} levels deep")


if getattr(yaml, "__with_libyaml__", False):
    from yaml.cyaml import CParser

    class BoundedLoader(BoundedComposer, CParser, yaml.constructor.SafeConstructor, CoreResolver):
        """libyaml parses (fast, with line/column marks); composing is the Python
        composer above, since libyaml's cannot be told to count."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            CoreResolver.__init__(self)
            BoundedComposer.__init__(self)
else:  # pragma: no cover - PyYAML built without libyaml
    class BoundedLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, BoundedComposer,  # type: ignore[no-redef]
                        yaml.constructor.SafeConstructor, CoreResolver):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            BoundedComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            CoreResolver.__init__(self)


def compose(text: str) -> Node | None:
    """``yaml.compose`` under the limits; raises ``TooComplex`` or ``yaml.YAMLError``."""
    return yaml.compose(text, Loader=BoundedLoader)
