"""The policy and the schedule are sans-IO: no clock, no sockets, no event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import hadirector.health.checkloop as checkloop
import hadirector.health.policy as policy
import hadirector.health.schedule as schedule

FORBIDDEN = {"asyncio", "socket", "time", "subprocess", "aiohttp", "structlog", "os", "select"}


def imported_modules(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_policy_and_schedule_import_no_io_and_no_clock():
    for module in (policy, schedule):
        assert imported_modules(module) & FORBIDDEN == set(), module.__name__


def test_the_checker_loop_runs_without_asyncio():
    # It runs in the worker process, which has no event loop to offer.
    assert "asyncio" not in imported_modules(checkloop)
