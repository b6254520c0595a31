"""``hadirector run``'s start-up checks and exit codes: the pure parts.

The real processes (not root, a second agent, a bad option, a missing interface)
are tests/netns/test_single_agent.py.
"""

from __future__ import annotations

import pytest

from hadirector.agent.cli import usage_problem
from hadirector.agent.preflight import effective_capabilities, missing_capabilities
from hadirector.cli import build_parser
from hadirector.exitcodes import DESCRIPTIONS, FINAL, ExitCode, epilog

# /proc/self/status of root (every capability) and of `setpriv --reuid=65534`.
ROOT_STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n"
NOBODY_STATUS = "Name:\tpython\nCapEff:\t0000000000000000\n"
# The shipped unit's bounding set: CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
UNIT_CAPS = (1 << 12) | (1 << 13)


def test_every_exit_code_is_distinct_and_described():
    codes = [int(c) for c in ExitCode]
    assert codes == sorted(set(codes)) == list(range(len(codes)))
    assert set(DESCRIPTIONS) == set(ExitCode)
    assert ExitCode.OK == 0 and ExitCode.USAGE == 2     # the conventions argparse and shells use


def test_the_final_codes_are_the_ones_a_restart_cannot_cure():
    assert set(FINAL) == {ExitCode.USAGE, ExitCode.CONFIG_INVALID, ExitCode.ALREADY_RUNNING,
                          ExitCode.NO_PRIVILEGE}


def test_run_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        build_parser("run").parse_args(["run", "--help"])
    out = capsys.readouterr().out
    assert epilog() in out
    for code in ExitCode:
        assert f"  {int(code)}  {DESCRIPTIONS[code]}" in out


@pytest.mark.parametrize("status, missing", [
    (ROOT_STATUS, ()),
    (NOBODY_STATUS, ("CAP_NET_ADMIN", "CAP_NET_RAW")),
    (f"CapEff:\t{UNIT_CAPS:016x}\n", ()),
    (f"CapEff:\t{1 << 12:016x}\n", ("CAP_NET_RAW",)),
    ("Name:\tno caps line\n", ("CAP_NET_ADMIN", "CAP_NET_RAW")),
], ids=["root", "nobody", "unit_bounding_set", "net_admin_only", "no_line"])
def test_the_agent_needs_net_admin_and_net_raw(status, missing):
    assert missing_capabilities(effective_capabilities(status)) == missing


@pytest.mark.parametrize("fmt, level, env, reason", [
    (None, "info", None, None),
    ("json", "DEBUG", "console", None),
    (None, "warn", "JSON", None),
    (None, "loud", None, "invalid_log_level"),
    (None, "10", None, "invalid_log_level"),
    ("xml", "info", None, "invalid_log_format"),
    (None, "info", "yaml", "invalid_log_format"),
])
def test_log_options_are_checked_before_anything_starts(fmt, level, env, reason):
    problem = usage_problem(fmt, level, env)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and (problem.code, problem.reason) == (ExitCode.USAGE, reason)


def test_the_usage_message_names_the_bad_value_and_where_it_came_from():
    assert "HADIRECTOR_LOG_FORMAT='yaml'" in usage_problem(None, "info", "yaml").message
    assert "--log-level 'loud'" in usage_problem(None, "loud", None).message
