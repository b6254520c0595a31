"""The kernel's IPVS connection-sync daemon, run as the LVS side's leader role asks.

``SyncDaemonSwitch`` executes ``director.lvs.SetSyncDaemon`` (the decision of *which*
role is the pure ``LvsRole``'s): it reads the daemons the kernel runs, applies
``ipvs.syncd.plan_daemons`` (stops first, then at most one start: a killed
predecessor's daemon is cleaned up, not met with EEXIST) and remembers the role it last
made run (``role``, for status). ``tune`` writes ``net.ipv4.vs.sync_refresh_period`` and
``sync_threshold`` (``kernel/sysctl.py``).

A refusal of one action, or of the tuning, is logged with the kernel's reason and
changes nothing else. Losing IPVS altogether while reading the daemons
(``IpvsUnavailable``) is raised: the controller owns the backend and the fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hadirector import model
from hadirector.ipvs import syncd
from hadirector.ipvs.backend import DaemonState, IpvsError, IpvsUnavailable
from hadirector.kernel import sysctl
from hadirector.logging import get_logger

log = get_logger("hadirector.lvs")


class SyncDaemonSwitch:
    def __init__(self, sysctl_root: Path = sysctl.VS_SYSCTL) -> None:
        self.sysctl_root = sysctl_root
        self.role: DaemonState | None = None    # what we last made the kernel run; None: none

    def switch(self, backend: Any, want: DaemonState | None, cfg: model.SyncDaemon, reason: str,
               only_matching: bool = False) -> bool:
        """Make the kernel run only ``want`` (None: no daemon) as ``cfg``. ``only_matching``:
        leave alone daemons that ``cfg`` did not describe. Returns True when a backup
        daemon was started: it knows only what the master sends from now on, so the
        caller holds preemption while it catches up. Raises ``IpvsUnavailable``."""
        try:
            actual = backend.daemons()
        except IpvsUnavailable:
            raise
        except IpvsError as e:
            log.error("ipvs.sync_daemon_failed", action="read", reason=str(e))
            return False
        if only_matching:
            actual = [d for d in actual if syncd.matches(d, cfg)]
        started_backup = False
        # plan_daemons puts its one start last, so the caller's hold follows it as before.
        for action in syncd.plan_daemons(actual, want, cfg if want else None):
            try:
                if isinstance(action, syncd.StartDaemon):
                    backend.start_daemon(action.state, cfg)
                else:
                    backend.stop_daemon(action.state)
            except IpvsError as e:
                log.error("ipvs.sync_daemon_failed", action=str(action), interface=cfg.interface,
                          syncid=cfg.syncid, reason=str(e))
                continue
            log.info("ipvs.sync_daemon_switched", action=str(action), interface=cfg.interface,
                     syncid=cfg.syncid, reason=reason)
            if action == syncd.StartDaemon(DaemonState.BACKUP):
                started_backup = True
        self.role = want
        return started_backup

    def tune(self, cfg: model.SyncDaemon | None, reason: str) -> None:
        """The sync sysctls from ``cfg`` (nothing without a refresh_period). A failure is
        logged and changes nothing else."""
        try:
            changes = sysctl.apply_sync_tuning(cfg, self.sysctl_root)
        except sysctl.SysctlError as e:
            log.error("ipvs.sync_tuning_failed", reason=str(e))
            return
        for c in changes:
            log.info("ipvs.sync_tuned", sysctl=f"net.ipv4.vs.{c.name}", old=c.old, new=c.new, reason=reason)
