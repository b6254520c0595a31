"""The LVS side's decisions, with no I/O: which VRRP instance leads, what its role means
for the sync daemon and the table, when preemption waits, when quorum scripts run and
which instances carry the ``ipvs_unavailable`` fault.

``LvsRole`` follows the *leader* instance (``lvs.sync_daemon.follow_instance``, else the
first instance) and returns effects that ``agent.lvs.LvsController`` executes against
the kernel (Seesaw's shape: HA says "I am master", the engine acts):

    r.role_changed("vi_1", State.MASTER)  -> [ProgramServices("vrrp:MASTER")]   (master_only)
                                             + [SetSyncDaemon(State.MASTER, "vrrp:MASTER")]
    r.backup_daemon_started(running)      -> [HoldPreemption(followed, catch_up)]
    r.quorum_changed(vs, before, now_up)  -> [RunCommand(quorum_up|down)]
    r.reloaded(old_config, role_before)   -> [TuneSync] + [StopSyncDaemons | SetSyncDaemon]

``kernel_health(config, actual)`` reads the last known health of each real server from
the kernel's table at start (what a restart must not undo).
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.ipvs.table import DestKey, ServiceKey, Table, scale_out_names
from hadirector.model import Config, HealthState, ProgramMode, SyncDaemon, VirtualService, needs_ipvs
from hadirector.vrrp.machine import State


@dataclass(frozen=True)
class SetSyncDaemon:
    """Run the IPVS sync daemon as master (``role`` MASTER) or backup (BACKUP)."""

    role: State
    reason: str


@dataclass(frozen=True)
class ProgramServices:
    """Converge the whole IPVS table (``lvs.program: master_only`` follows the role)."""

    reason: str


@dataclass(frozen=True)
class HoldPreemption:
    """Do not preempt a live lower-priority master for ``seconds`` (these instances)."""

    instances: tuple[str, ...]
    seconds: float
    reason: str = "sync_daemon_catch_up"


@dataclass(frozen=True)
class RunCommand:
    """Run ``argv`` (no shell) in the background; ``service`` names what it is for."""

    argv: tuple[str, ...]
    service: str
    reason: str


@dataclass(frozen=True)
class TuneSync:
    """Write the sync sysctls (``refresh_period``, threshold) from the config."""

    reason: str


@dataclass(frozen=True)
class StopSyncDaemons:
    """Stop the kernel's sync daemons that ``cfg`` describes, and only those."""

    cfg: SyncDaemon
    reason: str


LvsEffect = SetSyncDaemon | ProgramServices | HoldPreemption | RunCommand | TuneSync | StopSyncDaemons


def followed_instances(config: Config) -> tuple[str, ...]:
    """The instances the LVS role follows: ``lvs.sync_daemon.follow_instance`` (every
    member when it names a sync group), else the first instance."""
    sd = config.lvs.sync_daemon
    follow = sd.follow_instance if sd is not None else None
    if follow is not None:
        for group in config.sync_groups:
            if group.name == follow:
                return tuple(group.instances)
        return (follow,)
    return (config.vrrp_instances[0].name,) if config.vrrp_instances else ()


def leader_instance(config: Config) -> str | None:
    """The VRRP instance whose role is the node's LVS role."""
    names = followed_instances(config)
    return names[0] if names else None


def unavailable_faulted(config: Config, fault: bool, running) -> tuple[str, ...]:
    """The instances the ``ipvs_unavailable`` fault applies to: the followed ones that
    run (``running``: a container of names, or None for "all"), while IPVS is needed
    and unavailable (``fault``)."""
    if not (fault and needs_ipvs(config)):
        return ()
    names = followed_instances(config)
    if running is not None:
        names = tuple(n for n in names if n in running)
    return names


def kernel_health(config: Config, actual: Table) -> list[tuple[tuple, tuple, HealthState]]:
    """``(service key, real server key, state)`` for each real server already in the
    kernel's table ``actual``: its last known health.

    A real server with no check result yet is not *added*; but one that a previous agent
    (a restart, a crash) already programmed must not be *removed* either, or a restart
    would drop its connections. Such a server starts UP in the health policy (or DOWN, at
    weight 0 with inhibit_on_failure), so rise/fall apply from there: a restart with an
    unchanged config writes nothing, and one slow first check does not take a server out.
    """
    out: list[tuple[tuple, tuple, HealthState]] = []
    scaled = scale_out_names(config)
    for vs in config.virtual_services:
        in_kernel = actual.dests_of(ServiceKey.of(vs))
        for rs in vs.real_servers:
            d = in_kernel.get(DestKey.of(rs.address, rs.port))
            if d is None:
                continue
            if d.weight == 0 and vs.name in scaled:
                continue      # scale-out: weight 0 is down or not yet checked; the check decides
            down = d.weight == 0 and rs.weight > 0 and vs.inhibit_on_failure
            out.append((vs.key, rs.key, HealthState.DOWN if down else HealthState.UP))
    return out


class LvsRole:
    def __init__(self, config: Config, leader_state: State | None = None) -> None:
        self.config = config
        self.role = self._initial(config, leader_state)

    @staticmethod
    def _initial(config: Config, leader_state: State | None) -> State:
        # No VRRP at all: the node is a lone director and acts as master.
        if leader_state is not None:
            return leader_state
        return State.INITIALIZE if config.vrrp_instances else State.MASTER

    @property
    def programming(self) -> bool:
        """Is the table programmed now? ``always``, or ``master_only`` while MASTER."""
        if self.config.lvs.program is ProgramMode.ALWAYS:
            return True
        return self.role is State.MASTER

    def sync_daemon(self, reason: str) -> list[LvsEffect]:
        """The daemon the current role wants (none without a sync_daemon config)."""
        if self.config.lvs.sync_daemon is None:
            return []
        want = State.MASTER if self.role is State.MASTER else State.BACKUP
        return [SetSyncDaemon(want, reason)]

    def role_changed(self, instance: str, new: State) -> list[LvsEffect]:
        """A VRRP role change; only the leader's matters, and only a new role."""
        if instance != leader_instance(self.config):
            return []
        old, self.role = self.role, new
        if old is new:
            return []
        reason = f"vrrp:{new.value}"
        out: list[LvsEffect] = []
        if self.config.lvs.program is ProgramMode.MASTER_ONLY:
            out.append(ProgramServices(reason))
        return out + self.sync_daemon(reason)

    def backup_daemon_started(self, running) -> list[LvsEffect]:
        """A backup sync daemon just started: it knows only what the master sends from
        now on, and with refresh_period the master re-sends every active connection
        within that period. Taking the VIP back before then would drop the connections
        opened while this node was away, so preemption waits (``preempt_hold``)."""
        cfg = self.config.lvs.sync_daemon
        hold = cfg.preempt_hold if cfg is not None else 0
        if hold <= 0 or running is None:
            return []
        names = tuple(n for n in followed_instances(self.config) if n in running)
        return [HoldPreemption(names, hold)]

    def quorum_changed(self, vs: VirtualService, before: bool | None,
                       up: bool | None) -> list[LvsEffect]:
        """keepalived quorum_up / quorum_down: run on a change of a known quorum only."""
        if up is None or before is None or up == before:
            return []
        argv = vs.quorum_up if up else vs.quorum_down
        if not argv:
            return []
        return [RunCommand(tuple(argv), vs.name, "quorum_regained" if up else "healthy_weight_below_quorum")]

    def reconfigure(self, new: Config, leader_state: State | None) -> None:
        """A reload: when another instance now leads, take its current state
        (``leader_state``, None when it does not run)."""
        old = self.config
        self.config = new
        if leader_instance(new) != leader_instance(old):
            self.role = leader_state if leader_state is not None else (
                State.MASTER if not new.vrrp_instances else State.INITIALIZE)

    def reloaded(self, old: Config, role_before: State) -> list[LvsEffect]:
        """After ``reconfigure``, with IPVS open and the table converged: the sysctls are
        rewritten only when ``refresh_period`` changed; a sync daemon that left the config
        stops the daemons it had us start (not others'); the daemon is switched again
        only when its settings or the leader's role changed (``role_before``)."""
        before, after = old.lvs.sync_daemon, self.config.lvs.sync_daemon
        out: list[LvsEffect] = []
        if after is not None and (before is None or before.refresh_period != after.refresh_period):
            out.append(TuneSync("reload"))
        if before is not None and after is None:
            out.append(StopSyncDaemons(before, "reload"))
        elif before != after or role_before is not self.role:
            out += self.sync_daemon("reload")
        return out
