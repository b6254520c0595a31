"""hadirector.logging: structlog with ISO timestamps; JSON lines for collectors."""

from __future__ import annotations

import io
import logging
import json
import os
import re

import pytest
import structlog

from hadirector.logging import configure_logging, get_logger, journal_stream
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


def test_journal_format_prefixes_every_line_with_its_sd_daemon_priority():
    out = io.StringIO()
    assert configure_logging("journal", "debug", stream=out) is LogFormat.JOURNAL
    log = get_logger("t")
    log.debug("health.checked")
    log.info("agent.started")
    log.warning("config.warned", reason="config_warning")
    log.error("agent.start_failed", reason="invalid_config")
    log.critical("agent.crashed")
    logging.getLogger("aiohttp.server").error("library trouble")
    lines = out.getvalue().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    assert "agent.start_failed" in lines[3] and "library trouble" in lines[5]
    assert "\x1b[" not in out.getvalue()


def test_a_multi_line_event_carries_the_priority_on_every_line():
    out = io.StringIO()
    configure_logging("journal", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").error("agent.crashed", exc_info=True)
    lines = out.getvalue().splitlines()
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)


def test_journal_stream_turns_priorities_on_only_for_the_stream_it_names(tmp_path, monkeypatch):
    with open(tmp_path / "journal", "w") as journal, open(tmp_path / "other", "w") as other:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal_stream(journal) and not journal_stream(other)
        configure_logging("json", stream=journal)
        get_logger("t").warning("config.warned")
        configure_logging("json", stream=other)        # a child whose stderr went elsewhere
        get_logger("t").warning("config.warned")
    line = (tmp_path / "journal").read_text()
    assert line.startswith("<4>{") and json.loads(line[3:])["event"] == "config.warned"
    assert (tmp_path / "other").read_text().startswith("{")


def test_each_event_is_written_once_even_when_configured_again():
    out = io.StringIO()
    configure_logging("journal", stream=out)
    configure_logging("journal", stream=out)        # a reload configures again
    get_logger("t").info("agent.started")
    logging.getLogger("pyroute2").warning("x")
    assert len(out.getvalue().splitlines()) == 2
