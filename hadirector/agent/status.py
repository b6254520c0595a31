"""Build the status ``Snapshot`` (hadirector.api.snapshot) from the running agent.

One pass over the agent's runtime state inside the event loop, so the snapshot is
consistent. The IPVS part reads the kernel once (one dump) for weights and counters;
when the dump fails, the kernel columns are empty and the rest is still reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from hadirector import model
from hadirector.api import snapshot as s
from hadirector.ipvs.backend import IpvsError
from hadirector.ipvs.table import DestKey, ServiceKey, Stats, Table
from hadirector.model import HealthState, SyncRole, VrrpState
from hadirector.vrrp.auth import REJECTS as AUTH_REJECTS


def _version() -> str:
    import hadirector

    return hadirector.__version__


def wall_clock() -> tuple[Callable[[float | None], float | None], float | None]:
    """Loop time (monotonic) -> Unix seconds, against one reading of both clocks, so a
    snapshot's times agree with each other (None in, or outside a loop: None out); and
    that loop time."""
    loop_now, wall = agent_loop_time(), time.time()

    def to_wall(t: float | None) -> float | None:
        return wall - (loop_now - t) if t is not None and loop_now is not None else None

    return to_wall, loop_now


def vrrp_status(agent) -> tuple[s.VrrpInstanceStatus, ...]:
    """``agent``: a ``vrrp_side.VrrpSide`` with a ``config``."""
    to_wall, loop_now = wall_clock()
    groups = {m: g.name for g in agent.config.sync_groups for m in g.instances}
    out = []
    for view in agent.instance_views():
        name, inst, m = view.instance.name, view.instance, view.machine
        c = m.counters
        state = m.state
        master = m.master_address
        held = m.preemption_held_until
        held_until = to_wall(held) if held is not None and loop_now is not None and held > loop_now else None
        if state is VrrpState.MASTER:
            master = view.primary_address
        out.append(s.VrrpInstanceStatus(
            name=name, vrid=inst.vrid, interface=inst.interface,
            version=inst.version, state=state, priority=inst.priority,
            effective_priority=m.effective_priority,
            master_address=str(master) if master else None,
            since=to_wall(m.since) if loop_now is not None else time.time(),
            reason=m.last_reason or "",
            transitions=c.became_master + c.became_backup + c.became_fault,
            adverts_sent=c.adverts_sent, adverts_received=c.adverts_received,
            adverts_invalid=dict(view.rejected),
            virtual_ips=tuple(str(v) for v in inst.virtual_ips),
            sync_group=groups.get(name),
            preempt_held_until=held_until,
            faults=tuple(sorted(m.faults)),
            auth=auth_status(view),
            held_vips=tuple(str(v) for v in inst.virtual_ips) if view.holds_vips else (),
            priority_deltas=dict(m.priority_deltas),
        ))
    return tuple(out)


def auth_status(view) -> s.VrrpAuthStatus | None:
    auth = view.auth
    if auth is None:
        return None
    cfg = auth.config
    return s.VrrpAuthStatus(
        mode=cfg.mode.value, active_key=cfg.active_key, key_ids=tuple(k.id for k in cfg.keys),
        anti_replay=cfg.anti_replay.value, time_window=auth.window, verified=view.auth_verified,
        unsigned_accepted=view.auth_unsigned_accepted,
        rejected={r.value: view.rejected[r.value] for r in AUTH_REJECTS if r.value in view.rejected})


def vrrp_snapshot(agent) -> s.Snapshot:
    """The agent's own part of the snapshot: node, VRRP instances and sync groups; no
    kernel read, so it is cheap enough for every role change (``state.json`` is
    ``snapshot.state_file`` of it). The node's clocks are the API component's and stay 0
    here."""
    config = agent.config
    return s.Snapshot(
        node=s.NodeStatus(router_id=config.node.router_id, config_path=config.source,
                          pid=os.getpid(), started_at=0.0, config_loaded_at=0.0,
                          config_generation=agent.generation, version=_version(),
                          running=agent.started),
        generated_at=time.time(),
        vrrp_instances=vrrp_status(agent),
        sync_groups=agent.group_states(),
    )


def agent_loop_time() -> float | None:
    import asyncio
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return None


def lvs_status(lvs, config: model.Config) -> tuple[tuple[s.VirtualServiceStatus, ...], s.SyncDaemonStatus, s.HealthTotals]:
    if lvs is None:
        return (), s.SyncDaemonStatus(), s.HealthTotals()
    try:
        kernel = lvs.reconciler.backend.dump() if lvs.reconciler is not None else Table()
    except IpvsError:
        kernel = Table()
    # No health runner on a VRRP-only node (agent/lvs.py): no rows, zero totals.
    hs = lvs.health.snapshot() if lvs.health is not None else None
    rows = {(r.service_key, r.rs_key): r for r in hs.servers} if hs is not None else {}
    services = []
    for vs in config.virtual_services:
        key = ServiceKey.of(vs)
        entry = kernel.services.get(key)
        in_kernel = kernel.dests_of(key)
        rss = []
        for rs, sorry in [(r, False) for r in vs.real_servers] + (
                [(vs.sorry_server, True)] if vs.sorry_server is not None else []):
            port = rs.port
            d = in_kernel.get(DestKey.of(rs.address, port))
            row = rows.get((vs.key, rs.key))
            health = row.state if row else HealthState.UP
            rss.append(s.RealServerStatus(
                address=str(rs.address), port=port, forward=rs.forward.value,
                health=health, health_since=row.since if row else None,
                weight=rs.weight, kernel_weight=d.weight if d is not None else None,
                last_check=row.last if row else None,
                active_conns=d.active_conns if d is not None else 0,
                inactive_conns=d.inact_conns if d is not None else 0,
                stats=d.stats if d is not None else Stats(),
                sorry_server=sorry,
            ))
        services.append(s.VirtualServiceStatus(
            name=vs.name,
            key=s.service_key_text(vs.protocol.value, str(vs.address) if vs.address else None,
                                   vs.port, vs.fwmark),
            scheduler=vs.scheduler, quorum_up=lvs.quorum.get(key, True),
            in_kernel=entry is not None, persistence_timeout=vs.persistence_timeout,
            stats=entry.stats if entry is not None else Stats(),
            real_servers=tuple(rss),
        ))
    sd = config.lvs.sync_daemon
    daemons: tuple[s.KernelSyncDaemon, ...] = ()
    if lvs.reconciler is not None:
        try:
            daemons = tuple(
                s.KernelSyncDaemon(d.state, d.interface, d.syncid)
                for d in lvs.reconciler.backend.daemons())
        except IpvsError:
            pass
    role = lvs.sync_role or SyncRole.NONE
    sync = s.SyncDaemonStatus(
        configured=sd is not None, desired_role=role,
        interface=sd.interface if sd else None, syncid=sd.syncid if sd else None,
        follow_instance=sd.follow_instance if sd else None, kernel=daemons,
    )
    return tuple(services), sync, hs.totals if hs is not None else s.HealthTotals()


def ipvs_status(lvs, config: model.Config) -> s.IpvsAvailabilityStatus:
    if lvs is None:
        return s.IpvsAvailabilityStatus()
    from hadirector.agent.lvs import needs_ipvs

    av = lvs.availability
    to_wall, _ = wall_clock()
    return s.IpvsAvailabilityStatus(
        needed=needs_ipvs(config), available=av.available, reason=av.reason or None,
        since=to_wall(av.since), failures=av.failures, next_attempt_at=to_wall(av.get_timer()))


def listener_status(listener, refused: dict[str, int] | None = None) -> s.ListenerStatus | None:
    if listener is None:
        return None
    return s.ListenerStatus(accepted=listener.accepted, dropped=dict(listener.dropped),
                            accept_failures=dict(listener.accept_failures),
                            accept_pauses=listener.pauses, refused=dict(refused or {}))


def build_snapshot(agent, lvs, *, started_at: float, loaded_at: float, generation: int,
                   reloads: s.ReloadStatus, api: s.ApiStatus | None = None) -> s.Snapshot:
    config = agent.config
    services, sync, totals = lvs_status(lvs, config)
    return s.Snapshot(
        node=s.NodeStatus(router_id=config.node.router_id, config_path=config.source,
                          pid=os.getpid(), started_at=started_at, config_loaded_at=loaded_at,
                          config_generation=generation, version=_version(),
                          running=agent.started),
        generated_at=time.time(),
        vrrp_instances=vrrp_status(agent),
        sync_groups=agent.group_states(),
        virtual_services=services,
        sync_daemon=sync,
        health=totals,
        reloads=reloads,
        ipvs=ipvs_status(lvs, config),
        link_watch=s.LinkWatchStatus(**getattr(agent, "link_watch_counts", dict)()),
        api=api or s.ApiStatus(),
        scale_out=next((c.scale_out_status() for c in getattr(agent, "components", ())
                        if hasattr(c, "scale_out_status")), None),
    )
