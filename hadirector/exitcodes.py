"""Exit codes of ``hadirector`` commands: one per kind of failure, so that systemd
(``RestartPreventExitStatus=``), scripts and operators can tell them apart.

A code is *final* when restarting the same command on the same host cannot succeed
until a person changes something (the config, the command line, the privileges, or
the other agent that is running): the unit does not restart on those. The others
(``START_FAILED``: an interface not there yet, a socket the kernel refused;
``INTERNAL_ERROR``: a bug) may go away by themselves, and the unit restarts.

stdlib only: ``hadirector/cli.py`` and the shipped unit's test read this table.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1      # an unexpected exception: a bug (also Python's own code for one)
    USAGE = 2               # bad command line or environment (argparse also exits 2)
    CONFIG_INVALID = 3      # the config file is unreadable or not valid
    ALREADY_RUNNING = 4     # another agent holds this network namespace's lock
    NO_PRIVILEGE = 5        # needs root, or CAP_NET_ADMIN and CAP_NET_RAW
    START_FAILED = 6        # the host is not ready: no such interface, no source address ...
    NOT_RUNNING = 7         # status/reload: no agent answers (not running, or not reachable)
    CONVERSION_LOST = 8     # import-keepalived: some settings were not converted (--allow-loss)


# The unit's RestartPreventExitStatus= lists exactly these.
FINAL = (ExitCode.USAGE, ExitCode.CONFIG_INVALID, ExitCode.ALREADY_RUNNING, ExitCode.NO_PRIVILEGE)

DESCRIPTIONS: dict[ExitCode, str] = {
    ExitCode.OK: "success (run: stopped cleanly; check: config valid)",
    ExitCode.INTERNAL_ERROR: "unexpected error (a bug) or answer from the agent; restarted",
    ExitCode.USAGE: "bad command line or HADIRECTOR_LOG_FORMAT; final",
    ExitCode.CONFIG_INVALID: "config unreadable or invalid (check --strict: warnings too); final",
    ExitCode.ALREADY_RUNNING: "another agent runs in this network namespace; final",
    ExitCode.NO_PRIVILEGE: "needs root, or CAP_NET_ADMIN and CAP_NET_RAW; final",
    ExitCode.START_FAILED: "host not ready: no such interface, no source address, no IPVS; restarted",
    ExitCode.NOT_RUNNING: "status, reload: no agent answers (not running or not reachable)",
    ExitCode.CONVERSION_LOST: "import-keepalived: some settings not converted (see 'lost:' notes; --allow-loss)",
}


def epilog() -> str:
    """The table for ``--help``."""
    lines = ["exit codes (the same in every command; final: the unit does not restart):"]
    lines += [f"  {int(code)}  {DESCRIPTIONS[code]}" for code in ExitCode]
    return "\n".join(lines)
