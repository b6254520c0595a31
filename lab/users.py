"""Unprivileged local users, for tests of what they can and cannot do to an agent.

``NOBODY`` is user nobody with no capability at all. A checkout under /root (mode 0700
on Debian, where a newcomer clones as root) cannot be read by it, so a process that
must run the project's own code as nobody (the agent, ``hadirector reload``, a
flooder script) uses ``NOBODY_RUNNING_OUR_CODE``: the same user, plus
CAP_DAC_READ_SEARCH as an ambient capability — reading files and searching
directories only; no write, no network administration, not root for SO_PEERCRED.
A process that tests file permissions themselves (the lock squatter) must use
``NOBODY``: CAP_DAC_READ_SEARCH would open the root-only lock directory to it.
"""

from __future__ import annotations

NOBODY_UID = 65534

NOBODY: tuple[str, ...] = ("setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups")
NOBODY_RUNNING_OUR_CODE: tuple[str, ...] = NOBODY + (
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
