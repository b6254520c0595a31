"""structlog setup: one call at start-up, then ``get_logger(name)`` everywhere.

Events are named ``area.past_tense_verb`` with stable keys and a ``reason``; this
module only decides how they are rendered: ISO-8601 UTC timestamps, a console
renderer (coloured on a TTY) for people, one JSON object per line for collectors.
``HADIRECTOR_LOG_FORMAT=json|console|journal`` wins over the configured format, so a
unit file can switch to JSON without editing the config.

Under systemd (``JOURNAL_STREAM`` names the device and inode of our stderr, see
systemd.exec(5)), or with the ``journal`` format, every line starts with its syslog
priority as sd-daemon(3) defines it (``<3>`` error, ``<4>`` warning, ``<6>`` info,
``<7>`` debug), which journald strips and stores, so ``journalctl -p err`` finds the
errors; ``journal`` itself is the console layout without colours. Library logs (stdlib
``logging``) get the same prefix. Each event is written once: structlog prints its
own lines, stdlib logging has the one root handler set here.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

from .model import LogFormat

ENV_FORMAT = "HADIRECTOR_LOG_FORMAT"
# sd-daemon(3) / syslog(3) priorities
PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "notice": 5, "info": 6,
            "debug": 7}


def journal_stream(stream: Any, environ: dict[str, str] | None = None) -> bool:
    """Is ``stream`` the journal? ``JOURNAL_STREAM=<dev>:<inode>`` is set by systemd for
    the service's stderr and inherited by every child, so it counts only when it names
    this very stream (systemd.exec(5))."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):
        return False


_prefixed = False      # set by configure_logging


def priority_prefix(level: str) -> str:
    """``<3>`` ... for a plain line written beside the log (a start failure's one line)
    when the log carries priorities, else ''."""
    return f"<{PRIORITY.get(level, 6)}>" if _prefixed else ""


class _Prefixed:
    """A structlog renderer whose every output line starts with the event's priority."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, method: str, event_dict: dict) -> str:
        prefix = f"<{PRIORITY.get(event_dict.get('level', method), 6)}>"
        text = self.inner(logger, method, event_dict)
        return "\n".join(prefix + line for line in text.split("\n"))


class _PrefixedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelname.lower(), 6)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


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
        raise ValueError(f"unknown log format {chosen!r}; expected console, json or journal") from None
    stream = stream or sys.stderr
    lvl = _level(level)
    prefixed = fmt is LogFormat.JOURNAL or journal_stream(stream)
    global _prefixed
    _prefixed = prefixed

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt is LogFormat.JSON:
        processors.append(structlog.processors.format_exc_info)
        renderer: Any = structlog.processors.JSONRenderer()
    else:
        isatty = getattr(stream, "isatty", lambda: False)()
        renderer = structlog.dev.ConsoleRenderer(colors=isatty and not prefixed)
    processors.append(_Prefixed(renderer) if prefixed else renderer)
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
    if prefixed:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_PrefixedFormatter(handler.formatter._fmt if handler.formatter else None))
    return fmt


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``logger_name=name``; lazy, so it may be
    created at import time, before ``configure_logging``."""
    # "logger_name" as in structlog's stdlib integration ("logger" is taken).
    return structlog.get_logger(logger_name=name)
