"""Which kernel sync daemons should run, as a pure decision.

The node that is VRRP MASTER runs the IPVS connection-sync daemon as *master* (it
multicasts its connection table); every other node runs it as *backup* (it receives and
installs those connections), so that established connections survive a failover. This
is keepalived's ``lvs_sync_daemon`` behaviour, switched on every VRRP transition.

``plan_daemons(actual, role, cfg)`` compares what the kernel runs with what the role
wants and returns the stops and starts, stops first. It also cleans up after a killed
predecessor: a kernel daemon keeps running when the agent that started it dies, and
starting the same state again fails with EEXIST.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector import model
from hadirector.ipvs.backend import DaemonEntry, DaemonState


@dataclass(frozen=True)
class StartDaemon:
    state: DaemonState

    def __str__(self) -> str:
        return f"start {self.state.name.lower()}"


@dataclass(frozen=True)
class StopDaemon:
    state: DaemonState

    def __str__(self) -> str:
        return f"stop {self.state.name.lower()}"


DaemonAction = StartDaemon | StopDaemon


def matches(entry: DaemonEntry, cfg: model.SyncDaemon) -> bool:
    """Does a running daemon already do what ``cfg`` asks? (Only what the kernel
    reports back reliably: interface and syncid; the rest has kernel defaults.)"""
    return entry.interface == cfg.interface and entry.syncid == cfg.syncid


def plan_daemons(actual: list[DaemonEntry], want: DaemonState | None,
                 cfg: model.SyncDaemon | None) -> list[DaemonAction]:
    """Stops, then at most one start, that turn ``actual`` into "only ``want`` runs,
    configured as ``cfg``". ``want=None`` or ``cfg=None``: no daemon at all."""
    stops: list[DaemonAction] = []
    keep = False
    for entry in actual:
        if cfg is not None and entry.state is want and matches(entry, cfg):
            keep = True
        else:
            stops.append(StopDaemon(entry.state))
    starts: list[DaemonAction] = []
    if cfg is not None and want is not None and not keep:
        starts.append(StartDaemon(want))
    return stops + starts
