"""Shared helpers for the import-keepalived tests."""

from __future__ import annotations

import textwrap

from hadirector.config import parse_config
from hadirector.config.keepalived import Conversion, convert_text
from hadirector.model import Config


def convert(text: str, **kw) -> Conversion:
    kw.setdefault("router_id", "lb1")
    return convert_text(textwrap.dedent(text), "keepalived.conf", **kw)


def load(conv: Conversion) -> Config:
    """The converted YAML must load with hadirector's own loader."""
    return parse_config(conv.to_yaml(), "converted.yaml")


def notes(conv: Conversion, skipped: bool | None = None) -> list[str]:
    return [str(n) for n in conv.notes if skipped is None or n.skipped == skipped]


def only(items: list):
    assert len(items) == 1, items
    return items[0]
