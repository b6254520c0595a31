"""Typed converters from YAML nodes to values that remember where each value came from.

Theory of operation: PyYAML *composes* the text into a node tree (each node has a
``start_mark`` with line and column) and we never let it construct Python objects for
mappings, so every key and value keeps its position and duplicate keys stay visible.
Small converters -- ``integer(1, 255)``, ``duration(gt=0)``, ``enum_of(Protocol)``,
``seq(item)``, ``record(SPEC)`` -- turn a node into a value, or record a ``ConfigIssue``
at that node and raise ``Invalid``. A failed field does not stop its siblings, so one
pass reports many mistakes. A ``Record`` is the table for one dataclass: its fields
(YAML key -> converter -> dataclass attribute, with the words of the man page) and an
optional ``finish`` hook for the checks that need several fields at once.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .compose import YAML11, yaml11_hint
from .errors import ConfigIssue, clip, shown

Conv = Callable[["Ctx", Node, str], Any]
Pair = tuple[Node, Node]          # (key node, value node)

_TAG = "tag:yaml.org,2002:"
_CTOR = yaml.constructor.SafeConstructor()
# Issues kept per parse; past it they are only counted (a file of 100,000 unknown keys
# must not become 100,000 lines in a reload's log event).
MAX_ISSUES = 100


class Invalid(Exception):
    """A problem was recorded in the Ctx; the caller only has to mark itself failed."""


class Ctx:
    """One parse: the file name, the issues found so far, where each record came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[ConfigIssue] = []
        # Valid but probably not what was meant; ``hadirector check --strict`` refuses them.
        self.warnings: list[ConfigIssue] = []
        self._seen: set[tuple[int, int, str]] = set()
        self._views: dict[int, View] = {}
        self._carried: list[object] = []
        self.error_count = 0       # every error() call, including deduplicated ones
        self.unlisted = 0          # distinct issues past MAX_ISSUES, counted only

    def error(self, node: Node | None, path: str, message: str) -> None:
        self.error_count += 1
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (0, 0)
        # A service-level default check is converted once per real server that
        # inherits it; report each problem at its place only once.
        if (line, col, message) in self._seen:
            return
        self._seen.add((line, col, message))
        if len(self.issues) >= MAX_ISSUES:
            self.unlisted += 1
            return
        self.issues.append(ConfigIssue(self.source, line, col, path, message))

    @property
    def full(self) -> bool:
        """No more issues are kept: callers may skip building costly messages."""
        return len(self.issues) >= MAX_ISSUES

    def warn(self, node: Node | None, path: str, message: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (0, 0)
        issue = ConfigIssue(self.source, line, col, path, message)
        # A service's check is converted once per real server that inherits it.
        if issue not in self.warnings and len(self.warnings) < MAX_ISSUES:
            self.warnings.append(issue)

    def fail(self, node: Node | None, path: str, message: str) -> NoReturn:
        self.error(node, path, message)
        raise Invalid

    def replay(self, errors: int) -> NoReturn:
        """Fail again like a conversion that failed before, without reporting its
        issues twice (they are counted, so the enclosing record fails too)."""
        self.error_count += max(errors, 1)
        raise Invalid

    def remember(self, obj: object, view: View) -> None:
        self._views[id(obj)] = view

    def view(self, obj: object) -> View:
        """The View (nodes and path) a record object was built from."""
        return self._views[id(obj)]

    def carry(self, old: object, new: object) -> None:
        """``new`` (a copy of ``old`` made after parsing, e.g. with ports resolved) was
        written where ``old`` was. ``old`` is kept alive: views are keyed by id(), and a
        freed object's id can be reused by another."""
        if new is not old and id(old) in self._views:
            self._views[id(new)] = self._views[id(old)]
            self._carried.append(old)


def described(conv: Conv, doc: str, **parts: Any) -> Conv:
    """Attach what a converter accepts, in words (``conv.doc``), and the converters or
    record it is built from (``spec``, ``item``, ``inner``): the config man page is
    generated from these (hadirector/manpages.py), so it cannot drift from the checks."""
    conv.doc = doc                       # type: ignore[attr-defined]
    for name, value in parts.items():
        setattr(conv, name, value)
    return conv


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = clip(key)
    return f"{path}.{key}" if path else key


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def scalar_value(ctx: Ctx, node: Node, path: str) -> Any:
    if not isinstance(node, ScalarNode):
        ctx.fail(node, path, f"expected a single value, got {describe(node)}")
    ctor = _CTOR.yaml_constructors.get(node.tag)
    if ctor is None:
        ctx.fail(node, path, f"unsupported YAML tag {clip(node.tag)}")
    try:
        return ctor(_CTOR, node)
    except (yaml.YAMLError, ValueError) as e:
        ctx.fail(node, path, f"cannot read value {shown(node.value)}: {clip(str(e))}")


def describe(node: Node) -> str:
    """How a found value is shown after 'got': 300, 'abc', true, null, a list, a mapping."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _TAG + "str":
        return shown(node.value)
    if node.tag == _TAG + "null":
        return "null"
    if node.tag == YAML11:
        return yaml11_hint(clip(node.value))
    if not node.tag.startswith(_TAG):
        return f"{shown(node.value)} tagged {clip(node.tag)}"
    return clip(str(node.value))


def family_name(version: int) -> str:
    return f"IPv{version}"


# --- mappings ---------------------------------------------------------------------


def mapping_pairs(ctx: Ctx, node: Node, path: str, _merging: tuple[Node, ...] = ()) -> dict[str, Pair]:
    """The keys of a mapping node, with YAML merge keys (<<) applied.

    Merged keys have lower precedence than the mapping's own keys (YAML merge key
    spec); a key given twice in the same mapping is an error, not a silent override.
    Bad keys are reported and skipped (the caller sees ctx.error_count grow), so the
    other keys of the mapping are still checked.
    """
    if not isinstance(node, MappingNode):
        ctx.fail(node, path, f"expected a mapping, got {describe(node)}")
    if node.tag != _TAG + "map":
        ctx.fail(node, path, f"unsupported YAML tag {clip(node.tag)}")
    merged: dict[str, Pair] = {}
    own: dict[str, Pair] = {}
    for k, v in node.value:
        if k.tag == _TAG + "merge":
            sources = v.value if isinstance(v, SequenceNode) else [v]
            for src in sources:
                if src is node or src in _merging:
                    ctx.error(src, path, "a mapping cannot merge itself (<<: recursive alias)")
                    continue
                try:
                    for name, pair in mapping_pairs(ctx, src, path, (*_merging, node)).items():
                        merged.setdefault(name, pair)
                except Invalid:
                    pass
            continue
        if not isinstance(k, ScalarNode) or k.tag != _TAG + "str":
            ctx.error(k, path, f"keys must be strings, got {describe(k)}")
            continue
        if k.value in own:
            first = own[k.value][0].start_mark.line + 1
            ctx.error(k, join(path, k.value), f"duplicate key (first given at line {first})")
            continue
        own[k.value] = (k, v)
    return {**merged, **own}


@dataclass(frozen=True)
class KeyDoc:
    """What a key means, in words, and what keepalived calls it: hadirector.yaml(5)
    (hadirector/manpages.py) takes everything else -- type, range, default -- from the
    converter and the model."""

    text: str                       # one or two sentences, plain text
    keepalived: str | None          # the keepalived.conf keyword(s), or None
    type: str | None = None         # only where the converter cannot say it itself
    default: str | None = None      # only where the model's default is not the story


@dataclass(frozen=True)
class Field:
    """One key: its converter, the model attribute it sets and its words -- the one
    declaration a new config key needs beside its model field."""

    key: str                       # the YAML key
    conv: Conv
    attr: str | None = ""          # dataclass attribute; "" = same as key; None = not passed
    required: bool = False
    doc: KeyDoc | None = None      # the man page's words (tests/unit/test_manpages.py needs them)


@dataclass(frozen=True)
class Record:
    cls: Callable[..., Any] | None        # None: the record returns its kwargs dict
    fields: tuple[Field, ...]
    # finish(ctx, view, kwargs) runs after all fields converted; it may adjust kwargs
    # and report cross-field problems (ctx.error / view.fail).
    finish: Callable[[Ctx, View, dict[str, Any]], None] | None = None
    # Keys an operator coming from keepalived might write -> a hint naming ours.
    hints: dict[str, str] = field(default_factory=dict)
    # prepare(pairs) -> {key: converter} replaces converters whose work depends on
    # sibling keys (a service's real servers inherit its forward and check).
    prepare: Callable[[dict[str, Pair]], dict[str, Conv]] | None = None
    # Keys starting with this are ignored (a home for YAML anchors, as "x-" in compose).
    ignore_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {f.key: f for f in self.fields})


class View:
    """Where a record came from: its mapping node, its path and its key/value nodes."""

    def __init__(self, ctx: Ctx, node: Node, path: str, pairs: dict[str, Pair]) -> None:
        self.ctx, self.node, self.path, self.pairs = ctx, node, path, pairs

    def has(self, key: str) -> bool:
        return key in self.pairs

    def value_node(self, key: str) -> Node:
        """The value node of ``key``, or the mapping itself when the key is absent."""
        return self.pairs[key][1] if key in self.pairs else self.node

    def item_node(self, key: str, index: int) -> Node:
        node = self.value_node(key)
        if isinstance(node, SequenceNode) and index < len(node.value):
            return node.value[index]
        return node

    def key_path(self, key: str, index: int | None = None) -> str:
        path = join(self.path, key)
        return path if index is None else join(path, index)

    def error(self, key: str, message: str, index: int | None = None) -> None:
        node = self.value_node(key) if index is None else self.item_node(key, index)
        self.ctx.error(node, self.key_path(key, index), message)

    def fail(self, key: str, message: str, index: int | None = None) -> NoReturn:
        self.error(key, message, index)
        raise Invalid

    def warn(self, key: str, message: str, index: int | None = None) -> None:
        node = self.value_node(key) if index is None else self.item_node(key, index)
        self.ctx.warn(node, self.key_path(key, index), message)


def unknown_key_message(name: str, spec: Record) -> str:
    if name in spec.hints:
        return f"unknown key ({spec.hints[name]})"
    import difflib          # here: only a config with a mistake needs it (agent start-up)

    close = difflib.get_close_matches(name, list(spec.by_key), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return "unknown key; expected one of " + ", ".join(sorted(spec.by_key))


def record(spec: Record, inherit: dict[str, Pair] | None = None, partial: bool = False,
           nullable: bool = False) -> Conv:
    """Convert a mapping with ``spec``. ``inherit``: pairs taken from elsewhere (e.g. a
    virtual service's defaults for its real servers), overridden by the mapping's own.
    ``partial``: run ``finish`` even when some fields failed (for the top level, so
    that reference checks still run on the sections that are valid). ``nullable``: an
    empty value (a section whose keys are all commented out) means all defaults."""

    def conv(ctx: Ctx, node: Node, path: str) -> Any:
        start = ctx.error_count      # any error below this point fails this record
        pairs = {} if nullable and is_null(node) else mapping_pairs(ctx, node, path)
        if inherit:
            pairs = {**inherit, **pairs}
        convs = spec.prepare(pairs) if spec.prepare is not None else {}
        kw: dict[str, Any] = {}
        for name, (k, v) in pairs.items():
            f = spec.by_key.get(name)
            if f is None and spec.ignore_prefix and name.startswith(spec.ignore_prefix):
                continue
            if f is None:
                # difflib costs ~50 us a key: only for the issues that are kept.
                ctx.error(k, join(path, name), "unknown key" if ctx.full else unknown_key_message(name, spec))
                continue
            try:
                value = convs.get(name, f.conv)(ctx, v, join(path, name))
            except Invalid:
                continue
            if f.attr is not None:
                kw[f.attr or f.key] = value
        for f in spec.fields:
            if f.required and f.key not in pairs:
                ctx.error(node, join(path, f.key), "missing required key")
        view = View(ctx, node, path, pairs)
        if ctx.error_count > start and not partial:
            raise Invalid
        if spec.finish is not None:
            spec.finish(ctx, view, kw)
        if ctx.error_count > start:
            raise Invalid
        obj = kw if spec.cls is None else spec.cls(**kw)
        ctx.remember(obj, view)
        return obj

    return described(conv, "a mapping", spec=spec)


# --- lists and optional values ------------------------------------------------------


def seq(item: Conv, min_len: int = 0, what: str = "item") -> Conv:
    """A YAML list -> tuple. An empty value (``key:`` with nothing) is an empty list."""

    def conv(ctx: Ctx, node: Node, path: str) -> tuple:
        if is_null(node):
            items: list[Node] = []
        elif isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
            items = node.value
        else:
            ctx.fail(node, path, f"expected a list, got {describe(node)}")
        if len(items) < min_len:
            ctx.fail(node, path, f"expected at least {min_len} {what}{'s' if min_len > 1 else ''}")
        out = []
        failed = False
        for i, n in enumerate(items):
            try:
                out.append(item(ctx, n, join(path, i)))
            except Invalid:
                failed = True
        if failed:
            raise Invalid
        return tuple(out)

    least = f" (at least {min_len})" if min_len else ""
    return described(conv, f"a list{least} of: {getattr(item, 'doc', 'values')}", item=item)


def optional(inner: Conv) -> Conv:
    """null -> None, anything else goes to ``inner``."""

    def conv(ctx: Ctx, node: Node, path: str) -> Any:
        return None if is_null(node) else inner(ctx, node, path)

    return described(conv, f"{getattr(inner, 'doc', 'a value')}, or null", inner=inner)


def one_of_shapes(scalar: Conv, mapping: Conv) -> Conv:
    """A value given either as a single scalar (short form) or as a mapping."""

    def conv(ctx: Ctx, node: Node, path: str) -> Any:
        return mapping(ctx, node, path) if isinstance(node, MappingNode) else scalar(ctx, node, path)

    return described(conv, f"{getattr(scalar, 'doc', 'a value')}, or a mapping", inner=mapping)


# --- scalars ------------------------------------------------------------------------


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")     # YAML 1.2 core: no leading zeros
_QUOTE_HINT = "a string; remove the quotes"
_PLAIN_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _quoted(node: Node, pattern: re.Pattern[str] | tuple[str, ...]) -> bool:
    """A quoted scalar whose text would be the wanted number or boolean unquoted."""
    if not (isinstance(node, ScalarNode) and node.tag == _TAG + "str" and node.style in ("'", '"')):
        return False
    return node.value in pattern if isinstance(pattern, tuple) else bool(pattern.fullmatch(node.value))


def integer(lo: int | None = None, hi: int | None = None) -> Conv:
    expected = "expected an integer" + _range_text(lo, hi)

    def conv(ctx: Ctx, node: Node, path: str) -> int:
        if _quoted(node, _DECIMAL):
            # priority: "100" -- refused (a string is not guessed into a number), saying why.
            ctx.fail(node, path, f"{expected}, got {shown(node.value)}, {_QUOTE_HINT}")
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "int":
            ctx.fail(node, path, f"{expected}, got {describe(node)}")
        if not _DECIMAL.fullmatch(node.value):
            # !!int 0x1F or !!int 1:30: YAML 1.1's readings, refused like plain ones.
            ctx.fail(node, path, f"{expected} in decimal, got {shown(node.value)}")
        value = scalar_value(ctx, node, path)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            ctx.fail(node, path, f"{expected}, got {value}")
        return value

    return described(conv, expected.removeprefix("expected "))


_BOOL_WORDS = ("true", "True", "TRUE", "false", "False", "FALSE")


def boolean() -> Conv:
    def conv(ctx: Ctx, node: Node, path: str) -> bool:
        if _quoted(node, _BOOL_WORDS):
            ctx.fail(node, path, f"expected true or false, got {shown(node.value)}, {_QUOTE_HINT}")
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "bool":
            ctx.fail(node, path, f"expected true or false, got {describe(node)}")
        if node.value not in _BOOL_WORDS:
            # !!bool yes: YAML 1.1's reading, refused like a plain one.
            ctx.fail(node, path, f"expected true or false, got {shown(node.value)}")
        return node.value.lower() == "true"

    return described(conv, "true or false")


_QUOTABLE = (_TAG + "int", _TAG + "float", _TAG + "bool")


def string(pattern: str | None = None, what: str = "a non-empty string") -> Conv:
    """A string. Numbers are not silently turned into strings (quote them)."""
    rx = re.compile(pattern) if pattern else None

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        if isinstance(node, ScalarNode) and node.tag in _QUOTABLE:
            # e.g. `interface: on` or `router_id: 1` -- YAML read a bool or a number.
            ctx.fail(node, path, f"expected {what}, got {describe(node)} (quote it to make it a string)")
        if isinstance(node, ScalarNode) and node.tag == YAML11:
            ctx.fail(node, path, f"expected {what}, got {describe(node)}")
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "str" or not node.value:
            ctx.fail(node, path, f"expected {what}, got {describe(node)}")
        if rx is not None and not rx.fullmatch(node.value):
            ctx.fail(node, path, f"expected {what}, got {shown(node.value)}")
        return node.value

    return described(conv, what)


# Linux's dev_valid_name(): IFNAMSIZ is 16 with the NUL; isspace() of the kernel's
# ctype table, which counts 0xA0 (a byte of UTF-8 "à", for one) as a space.
IFNAMSIZ = 16
_KERNEL_SPACE = frozenset(b" \t\n\v\f\r\xa0")


def interface_problem(name: str) -> str | None:
    """Why no Linux kernel accepts ``name`` as an interface name; None when one does."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        return "an interface name cannot be empty"
    if len(raw) >= IFNAMSIZ:
        return f"{len(raw)} bytes long; Linux interface names have at most {IFNAMSIZ - 1}"
    if name in (".", ".."):
        return f"{name!r} is not a valid interface name"
    bad = sorted({chr(b) for b in raw if b in _KERNEL_SPACE or b in b"/:\0"})
    if bad:
        return "Linux interface names cannot contain " + ", ".join(
            {"\0": "NUL", " ": "spaces", "/": "'/'", ":": "':'"}.get(c, repr(c)) for c in bad)
    return None


def interface_name() -> Conv:
    """A network interface name the kernel would accept (checked here, not at start)."""
    as_string = string(what="an interface name")

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str" and not node.value:
            ctx.fail(node, path, "expected an interface name, got an empty string")
        name = as_string(ctx, node, path)
        problem = interface_problem(name)
        if problem is not None:
            ctx.fail(node, path, f"interface {shown(name)}: {problem}")
        return name

    return described(conv, "an interface name (at most 15 bytes; no spaces, '/' or ':')")


def choice(values: tuple[str, ...], what: str = "value", aliases: dict[str, str] | None = None) -> Conv:
    """One of a fixed set of strings; the message lists the valid ones."""
    aliases = aliases or {}

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        text = node.value if isinstance(node, ScalarNode) and node.tag == _TAG + "str" else None
        if text in values:
            return text
        if text in aliases:
            return aliases[text]
        got = f"unknown {what} {shown(text)}" if text is not None else f"got {describe(node)}"
        valid = ", ".join(values) + (f" (or {', '.join(aliases)})" if aliases else "")
        ctx.fail(node, path, f"{got}; expected one of {valid}")

    return described(conv, "one of " + ", ".join(values) + (f" (also: {', '.join(aliases)})" if aliases else ""))


def enum_of(cls: type[enum.Enum], aliases: dict[str, enum.Enum] | None = None, what: str = "value") -> Conv:
    """An enum by value; ``aliases`` are other spellings (keepalived's, ipvsadm's)."""
    by_text: dict[str, enum.Enum] = {m.value: m for m in cls}
    names = tuple(by_text)
    extra = {k: v.value for k, v in (aliases or {}).items()}
    pick = choice(names, what, extra)

    def conv(ctx: Ctx, node: Node, path: str) -> enum.Enum:
        return by_text[pick(ctx, node, path)]

    return described(conv, pick.doc)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)")
_UNIT = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
DURATION_HELP = 'seconds, or a string like "100ms", "2.5s", "1m"'


def parse_duration(text: str) -> Decimal | None:
    """'100ms' -> 0.1, '1m30s' -> 90, '2.5' -> 2.5; None when it is not a duration."""
    text = text.strip()
    try:
        return Decimal(text) if text and text[0] in "0123456789.+-" and text[-1].isdigit() else _parts(text)
    except InvalidOperation:
        return None


def _parts(text: str) -> Decimal | None:
    pos, total = 0, Decimal(0)
    for m in _DURATION_PART.finditer(text):
        if text[pos:m.start()].strip():
            return None
        total += Decimal(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total if pos and not text[pos:].strip() else None


def duration(gt: float | None = None, ge: float | None = None, le: float | None = None) -> Conv:
    """Seconds as a float, from a number or a string with units."""
    bounds = []
    if gt is not None:
        bounds.append(f"> {gt:g}")
    if ge is not None:
        bounds.append(f">= {ge:g}")
    if le is not None:
        bounds.append(f"<= {le:g} s")
    expected = "expected a duration" + (" " + " and ".join(bounds) if bounds else "")

    def conv(ctx: Ctx, node: Node, path: str) -> float:
        value: Decimal | None = None
        if isinstance(node, ScalarNode) and node.tag in (_TAG + "int", _TAG + "float"):
            value = Decimal(str(scalar_value(ctx, node, path)))
        elif isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            value = parse_duration(node.value)
            if value is not None and _quoted(node, _PLAIN_NUMBER):
                # Valid ("2" is 2 s), but a number in quotes is usually a slip: say so.
                ctx.warn(node, path, f"{shown(node.value)} is {_QUOTE_HINT} (or give a unit: "
                                     f"\"{node.value}s\")")
        if value is None or not value.is_finite():
            ctx.fail(node, path, f"{expected} ({DURATION_HELP}), got {describe(node)}")
        if (gt is not None and value <= Decimal(str(gt))) or (ge is not None and value < Decimal(str(ge))) \
                or (le is not None and value > Decimal(str(le))):
            ctx.fail(node, path, f"{expected}, got {describe(node)}")
        return float(value)

    return described(conv, expected.removeprefix("expected ") + f" ({DURATION_HELP})")


def whole_seconds(lo: int, hi: int) -> Conv:
    """An integer number of seconds, written as a number or a duration string."""
    as_duration = duration(ge=lo, le=hi)

    def conv(ctx: Ctx, node: Node, path: str) -> int:
        value = as_duration(ctx, node, path)
        if value != int(value):
            ctx.fail(node, path, f"expected whole seconds {lo}..{hi}, got {describe(node)}")
        return int(value)

    return described(conv, f"whole seconds {lo}..{hi} (a number, or a duration like \"30s\", \"1m\")")


def ip_address(multicast: bool | None = None) -> Conv:
    def conv(ctx: Ctx, node: Node, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        text = node.value if isinstance(node, ScalarNode) and node.tag == _TAG + "str" else None
        try:
            addr = ipaddress.ip_address(text) if text is not None else None
        except ValueError:
            addr = None
        if addr is None:
            ctx.fail(node, path, f"expected an IPv4 or IPv6 address, got {describe(node)}")
        if multicast is not None and addr.is_multicast != multicast:
            ctx.fail(node, path, f"expected a {'multicast' if multicast else 'unicast'} address, got {addr}")
        return addr

    kind = {None: "", True: "multicast ", False: "unicast "}[multicast]
    return described(conv, f"a {kind}IPv4 or IPv6 address")


def ip_interface() -> Conv:
    """'192.0.2.10/24' -> IPv4Interface; without a prefix: a host address (/32, /128)."""

    def conv(ctx: Ctx, node: Node, path: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        text = node.value if isinstance(node, ScalarNode) and node.tag == _TAG + "str" else None
        try:
            iface = ipaddress.ip_interface(text) if text is not None else None
        except ValueError:
            iface = None
        if iface is None:
            ctx.fail(node, path, f"expected an IP address with an optional /prefix, got {describe(node)}")
        return iface

    return described(conv, "an IP address with an optional /prefix (none: a host address)")


def command() -> Conv:
    """argv as a list, or a string split like a shell would (shlex) -- never run by one."""

    def conv(ctx: Ctx, node: Node, path: str) -> tuple[str, ...]:
        if isinstance(node, SequenceNode):
            argv = []
            for i, n in enumerate(node.value):
                if not isinstance(n, ScalarNode) or is_null(n):
                    ctx.fail(n, join(path, i), f"expected a command argument, got {describe(n)}")
                argv.append(n.value)
        elif isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            try:
                argv = shlex.split(node.value)
            except ValueError as e:
                ctx.fail(node, path, f"cannot split command {shown(node.value)}: {e}")
        else:
            ctx.fail(node, path, f"expected a command (a list of arguments or a string), got {describe(node)}")
        if not argv or not argv[0]:
            ctx.fail(node, path, "expected a command, got an empty one")
        return tuple(argv)

    return described(conv, "a command: a list of arguments, or a string split like a shell would (never run by one)")


def regex() -> Conv:
    def conv(ctx: Ctx, node: Node, path: str) -> str:
        text = string(what="a regular expression")(ctx, node, path)
        try:
            re.compile(text)
        except re.error as e:
            ctx.fail(node, path, f"invalid regular expression {shown(text)}: {e}")
        return text

    return described(conv, "a regular expression (Python re)")
