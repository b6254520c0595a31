"""structlog setup: one call at start-up, then ``get_logger(name)`` everywhere.

Events are named ``area.past_tense_verb`` with stable keys and a ``reason``; this
module only decides how they are rendered: ISO-8601 UTC timestamps, a console
renderer (coloured on a TTY) for people, one JSON object per line for collectors.
``HADIRECTOR_LOG_FORMAT=json|console`` wins over the configured format, so a unit
file can switch to JSON without editing the config.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

from .model import LogFormat

ENV_FORMAT = "HADIRECTOR_LOG_FORMAT"


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; expected debug, info, warning, error or critical")
    return value


def configure_logging(fmt: LogFormat | str | None = None, level: int | str = "info",
                      stream: TextIO | None = None) -> LogFormat:
    """Configure structlog (and stdlib logging of libraries) for the process.

    Returns the format actually used (the environment may override ``fmt``).
    """
    chosen = os.environ.get(ENV_FORMAT) or fmt or LogFormat.CONSOLE
    try:
        fmt = LogFormat(chosen.lower() if isinstance(chosen, str) else chosen)
    except ValueError:
        raise ValueError(f"unknown log format {chosen!r}; expected console or json") from None
    stream = stream or sys.stderr
    lvl = _level(level)

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt is LogFormat.JSON:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        isatty = getattr(stream, "isatty", lambda: False)()
        processors.append(structlog.dev.ConsoleRenderer(colors=isatty))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        # Not cached: tests and reloads may configure again.
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, pyroute2) log through stdlib logging; keep their chatter
    # to warnings unless we are debugging.
    logging.basicConfig(stream=stream, level=max(lvl, logging.WARNING) if lvl > logging.DEBUG else lvl,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    return fmt


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``logger_name=name``; lazy, so it may be
    created at import time, before ``configure_logging``."""
    # "logger_name" as in structlog's stdlib integration ("logger" is taken).
    return structlog.get_logger(logger_name=name)
