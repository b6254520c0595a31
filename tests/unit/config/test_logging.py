"""hadirector.logging: structlog with ISO timestamps; JSON lines for collectors."""

from __future__ import annotations

import io
import logging
import json
import re

import pytest
import structlog

from hadirector.logging import configure_logging, get_logger
from hadirector.model import LogFormat


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    monkeypatch.delenv("HADIRECTOR_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_format_writes_one_object_per_event_with_iso_utc_timestamp():
    out = io.StringIO()
    log = get_logger("hadirector.vrrp")     # created before configuration, as at import time
    assert configure_logging("json", "info", stream=out) is LogFormat.JSON
    log.info("vrrp.role_changed", vrid=51, old="BACKUP", new="MASTER", reason="master_down_timer")
    record = json.loads(out.getvalue())
    assert record == {"event": "vrrp.role_changed", "level": "info", "logger_name": "hadirector.vrrp",
                      "vrid": 51, "old": "BACKUP", "new": "MASTER", "reason": "master_down_timer",
                      "timestamp": record["timestamp"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["timestamp"])


def test_events_below_the_level_are_dropped():
    out = io.StringIO()
    configure_logging(LogFormat.JSON, "warning", stream=out)
    get_logger("t").info("health.checked")
    get_logger("t").warning("health.failed", reason="timeout")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["health.failed"]


def test_console_format_is_one_readable_line_without_colours_off_a_tty():
    out = io.StringIO()
    configure_logging("console", "debug", stream=out)
    get_logger("hadirector.ipvs").debug("ipvs.service_added", service="tcp/192.0.2.1:80")
    line = out.getvalue()
    assert "\x1b[" not in line
    assert "ipvs.service_added" in line and "service=tcp/192.0.2.1:80" in line


def test_environment_overrides_the_configured_format(monkeypatch):
    monkeypatch.setenv("HADIRECTOR_LOG_FORMAT", "json")
    out = io.StringIO()
    assert configure_logging(LogFormat.CONSOLE, stream=out) is LogFormat.JSON
    get_logger("t").info("agent.started")
    assert json.loads(out.getvalue())["event"] == "agent.started"


def test_unknown_format_or_level_is_refused():
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("json", "loud")
