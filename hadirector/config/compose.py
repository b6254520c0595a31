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
"""

from __future__ import annotations

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import Node

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64


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

    class BoundedLoader(BoundedComposer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml parses (fast, with line/column marks); composing is the Python
        composer above, since libyaml's cannot be told to count."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            BoundedComposer.__init__(self)
else:  # pragma: no cover - PyYAML built without libyaml
    class BoundedLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, BoundedComposer,  # type: ignore[no-redef]
                        yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            BoundedComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def compose(text: str) -> Node | None:
    """``yaml.compose`` under the limits; raises ``TooComplex`` or ``yaml.YAMLError``."""
    return yaml.compose(text, Loader=BoundedLoader)
