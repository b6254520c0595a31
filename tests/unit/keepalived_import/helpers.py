"""Shared helpers for the import-keepalived tests."""

from __future__ import annotations

import re
import textwrap

from hadirector.config import parse_config
from hadirector.config.keepalived import Conversion, convert_text
from hadirector.model import Config


def convert(text: str, **kw) -> Conversion:
    """Convert a snippet; one without a router_id of its own is converted for node
    "lb1" (as with --router-id lb1), so its notes are only about what it tests."""
    if not re.search(r"(?m)^\s*router_id\b", text):
        kw.setdefault("router_id", "lb1")
    return convert_text(textwrap.dedent(text), "keepalived.conf", **kw)


def load(conv: Conversion) -> Config:
    """The converted YAML must load with hadirector's own loader."""
    return parse_config(conv.to_yaml(), "converted.yaml")


def notes(conv: Conversion, *severities: str) -> list[str]:
    """The notes as printed (``lost: keepalived.conf:12: ...``), of these severities."""
    return [str(n) for n in conv.notes if not severities or n.severity.value in severities]


def only(items: list):
    assert len(items) == 1, items
    return items[0]
