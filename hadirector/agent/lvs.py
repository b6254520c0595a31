"""The LVS side of the agent: health results and VRRP roles in, kernel IPVS writes out.

Theory of operation
-------------------
``LvsController`` is an agent component (``start(agent)`` / ``stop(agent)``). It owns
the IPVS ``Reconciler`` and connects it to the health checks and the VRRP roles. The
decisions are sans-IO, in ``director/lvs.py`` (``LvsRole``: the leader, the sync daemon
role, master_only, the preemption hold, quorum scripts, a reload's daemon changes;
``kernel_health``: the seed at start); the controller executes their effects with
three helpers: ``health_checks.HealthChecks`` (the runner's lifecycle),
``ipvs_access.IpvsAccess`` (open, loss, retry and the ``ipvs_unavailable`` fault) and
``sync_daemon.SyncDaemonSwitch`` (the kernel's sync daemons and sysctls).

* start: one full ``sync`` of the desired table (a restart with an unchanged config
  reads the kernel and writes nothing; a dead predecessor's leftovers that we own are
  reconciled, not flushed). Real servers with a check are not programmed before their
  first result (``desired_table`` leaves UNKNOWN out).
* a health transition recomputes the desired entries of *that* virtual service and
  converges only it (``Reconciler.update_service``), synchronously, in the same loop
  turn that reported the transition: no full re-sync, no waiting.
* VRRP: the *leader* instance (``lvs.sync_daemon.follow_instance``, else the first
  instance) decides the node's LVS role. MASTER runs the sync daemon as master, any
  other state as backup (``ipvs.syncd.plan_daemons``). With ``lvs.program:
  master_only`` the table is programmed only while MASTER and removed otherwise;
  with ``always`` (default) both nodes keep it, so a takeover needs only the VIP.
* sync catch-up: with ``sync_daemon.refresh_period`` the kernel re-sends active
  connections by time (``kernel/sysctl.py``); each time a *backup* daemon starts, the
  followed instances hold off preempting a live master for ``catch_up`` seconds, so a
  returning primary takes the VIP back only once it knows the connections opened while
  it was away.
* stop: the health runner stops; with ``lvs.on_shutdown: remove`` our services are
  deleted (others' entries stay); the sync daemons are stopped.
* no IPVS (``ipvs/availability.py``): when IPVS cannot be opened or read at all (no
  ip_vs in the kernel, the module unloaded later), the followed instances are put in
  FAULT with reason ``ipvs_unavailable`` through the agent's ``set_fault`` (sync groups
  follow), so this director never holds a VIP it cannot forward, and the agent keeps
  running. Opening is retried with backoff (1 s doubling to 30 s, one timer); when it
  succeeds the table is programmed and the sync daemon started as usual, and only then
  is the fault cleared, so the instance elects with a ready table. ``prepare`` runs
  this first thing (the agent calls it): before the VRRP machines start on a kernel
  whose generic netlink controller has no "IPVS" (agent/cli.py asks), so a director
  without IPVS starts straight in FAULT instead of passing through BACKUP; otherwise
  once they run, with every takeover held until it has reported (agent.py,
  "Start-up order"), so the master-down wait and this work overlap.

Kernel errors never escape into the event loop: the reconciler reports them per entry
and the rest of the table converges (a refusal of one entry, e.g. EINVAL for one
service, is not "unavailable"); a sync-daemon refusal is logged with its errno.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hadirector import model
from hadirector.kernel import spawn
from hadirector.agent.health_checks import HealthChecks
from hadirector.agent.ipvs_access import IpvsAccess
from hadirector.agent.sync_daemon import SyncDaemonSwitch
from hadirector.agent.vrrp_side import VrrpSide
from hadirector.director.lvs import (
    HoldPreemption, LvsEffect, LvsRole, ProgramServices, RunCommand, SetSyncDaemon, StopSyncDaemons,
    TuneSync, followed_instances, kernel_health, leader_instance, needs_ipvs,
)
from hadirector.health.policy import HealthState
from hadirector.kernel import sysctl
from hadirector.ipvs.availability import Backoff, IpvsAvailability
from hadirector.ipvs.backend import DaemonState, IpvsError, IpvsUnavailable
from hadirector.kernel.ownership import OwnedStore
from hadirector.kernel.reconcile import Reconciler, SyncReport
from hadirector.ipvs.table import ServiceKey, Table, desired_service, desired_table, scale_out_names
from hadirector.logging import get_logger
from hadirector.vrrp.machine import State

log = get_logger("hadirector.lvs")

if TYPE_CHECKING:       # imported on demand (agent/health_checks.py): annotations only
    from hadirector.agent.health_runner import HealthRunner


def _default_backend():
    from hadirector.kernel.ipvs import IpvsNetlink
    return IpvsNetlink()


__all__ = ["LvsController", "followed_instances", "leader_instance", "needs_ipvs"]


class LvsController:
    def __init__(self, config: model.Config, *, backend: Any = None,
                 backend_factory: Callable[[], Any] | None = None,
                 sysctl_root: Path = sysctl.VS_SYSCTL, backoff: Backoff = Backoff(),
                 **health_options: Any) -> None:
        """``backend``: an open backend to use (tests: the fake, or the kernel's opened in
        a namespace); else ``backend_factory`` opens one (default: the kernel's netlink)
        at start and at every retry. ``health_options`` go to ``HealthRunner`` (tests
        pass ``probe=`` and clocks)."""
        self.config = config
        if backend_factory is None:
            backend_factory = (lambda: backend) if backend is not None else _default_backend
        # Opening, losing and retrying IPVS, and the ipvs_unavailable fault meanwhile.
        self.ipvs = IpvsAccess(backend_factory, close_on_loss=backend is None, backoff=backoff,
                               config=lambda: self.config, reopen=self._open_ipvs,
                               unusable=self._unavailable)
        self.syncd = SyncDaemonSwitch(sysctl_root)
        self._prepared = False
        # No health runner on a VRRP-only node (nothing to check); a reload that adds
        # the first virtual service builds and starts it.
        self.checks = HealthChecks(config, self._on_health, health_options)
        self.reconciler: Reconciler | None = None
        # The decisions (leader, sync daemon role, master_only, preemption hold, quorum
        # scripts) are the pure ``LvsRole``'s; this class executes its effects.
        self.policy = LvsRole(config)
        self.quorum: dict[ServiceKey, bool] = {}
        self.writes = 0                 # netlink writes applied (status, tests)
        self.errors = 0
        self.last_sync: float | None = None
        self._services: dict[tuple, model.VirtualService] = {}
        # The VRRP side (vrrp_side.VrrpSide), set by prepare(): roles, preemption holds,
        # faults; a reload may change the leader.
        self._agent: VrrpSide | None = None
        # Called (no arguments) after a health change was applied and when IPVS became
        # available or unavailable: the scale-out announce gate follows both.
        self.listeners: list[Callable[[], None]] = []
        self._index(config)

    def _index(self, config: model.Config) -> None:
        self._services = {vs.key: vs for vs in config.virtual_services}

    @property
    def health(self) -> HealthRunner | None:
        return self.checks.runner

    @property
    def availability(self) -> IpvsAvailability:
        return self.ipvs.availability

    @property
    def sync_role(self) -> DaemonState | None:
        """The sync daemon role we last made the kernel run (None: none)."""
        return self.syncd.role

    # --- component lifecycle -----------------------------------------------------------

    def prepare(self, agent) -> None:
        """Before any takeover: open IPVS and converge, or set the ``ipvs_unavailable``
        fault (before the machines start it is only recorded, like a link already
        down, and the followed instances start in FAULT). Idempotent."""
        if self._prepared:
            return
        self._prepared = True
        if agent is not None:
            self._agent = self.ipvs.vrrp = agent
            agent.on_role_changed.append(self._on_role)
            state = self._leader_state(agent, self.config)
            if state is not None:
                self.policy.role = state
        if needs_ipvs(self.config):
            self._open_ipvs(reason="startup")
        else:
            # Nothing to program: do not even open IPVS netlink (a VRRP-only node may
            # run on a kernel without ip_vs). A reload that adds LVS config opens it.
            log.info("ipvs.idle", reason="no virtual services and no sync daemon in the config")

    async def start(self, agent) -> None:
        self.prepare(agent)       # an agent that did not call it before the machines
        await self.checks.start()

    def _open_ipvs(self, reason: str) -> SyncReport | None:
        """Open the backend and converge: seed health from the kernel, one full sync,
        sync tuning, sync daemon; then clear an ``ipvs_unavailable`` fault. When IPVS
        cannot be opened or read, fault the followed instances and schedule a retry
        (never raises for that)."""
        try:
            actual = self.ipvs.open()
        except IpvsError as e:
            # Not only IpvsUnavailable: a table that cannot be read cannot be planned.
            self._unavailable(e)
            return None
        self.reconciler = Reconciler(self.ipvs.backend, OwnedStore.in_state_dir(self.config.node.state_dir))
        self._seed_from_kernel(actual)
        report = self.sync_table(reason=reason, actual=actual)
        if self.ipvs.backend is not None:
            self.syncd.tune(self.config.lvs.sync_daemon, reason=reason)
            self._switch_daemon(reason=reason)
        if self.ipvs.backend is None:     # lost again while converging: the retry is armed
            return report
        self.ipvs.opened(trigger=reason)
        self._tell_listeners()
        return report

    def _unavailable(self, e: IpvsError) -> None:
        """IPVS cannot be used: forget the table and the daemon, fault, retry."""
        self.reconciler = None
        self.syncd.role = None
        self.ipvs.lost(e)
        self._tell_listeners()

    async def stop(self, agent) -> None:
        # The agent has already sent priority 0 and released the VIPs, and no longer
        # passes on the role changes of its own shutdown; unsubscribe all the same.
        if agent is not None and self._on_role in agent.on_role_changed:
            agent.on_role_changed.remove(self._on_role)
        self.ipvs.cancel_retry()
        await self.checks.stop()
        if self.reconciler is None:
            return
        if self.config.lvs.on_shutdown is model.ShutdownAction.REMOVE:
            self._record(self.reconciler.sync(Table()), reason="shutdown_remove")
        self._apply_daemons(None, reason="shutdown")
        if hasattr(self.ipvs.backend, "close"):
            self.ipvs.backend.close()

    # --- the table ---------------------------------------------------------------------

    def _seed_from_kernel(self, actual: Table) -> None:
        """Take the kernel's table as the last known health of each real server
        (``director.lvs.kernel_health``: a restart must not drop what is programmed)."""
        seeded = sum(self.checks.seed(vs_key, rs_key, state)
                     for vs_key, rs_key, state in kernel_health(self.config, actual))
        if seeded:
            log.info("ipvs.health_seeded", servers=seeded, reason="found_in_kernel")

    @property
    def role(self) -> State:
        """The leader instance's role, as the LVS side follows it."""
        return self.policy.role

    @property
    def programming(self) -> bool:
        return self.policy.programming

    def desired(self) -> Table:
        if not self.programming:
            return Table()
        table = desired_table(self.config, self.checks.ipvs_health, self.quorum, self.checks.ipvs_weight)
        self.quorum.update(table.quorum)
        return table

    def sync_table(self, reason: str, actual: Table | None = None) -> SyncReport | None:
        if self.reconciler is None:
            return None
        try:
            report = self.reconciler.sync(self.desired(), actual)
        except IpvsUnavailable as e:
            self._unavailable(e)
            return None
        except IpvsError as e:   # the dump itself failed: nothing was written
            log.error("ipvs.sync_failed", reason=str(e), trigger=reason)
            self.errors += 1
            return None
        self._record(report, reason=reason)
        return report

    def _record(self, report: SyncReport, reason: str) -> None:
        self.writes += len(report.applied)
        self.errors += len(report.errors)
        self.last_sync = time.time()
        if report.applied or report.errors:
            log.info("ipvs.table_changed", writes=len(report.applied), failed=len(report.errors),
                     reason=reason)

    def _on_health(self, service_key: tuple, rs_key: tuple, state: HealthState) -> None:
        """A real server changed health: converge its virtual service, now."""
        vs = self._services.get(service_key)
        if vs is None or self.reconciler is None or not self.programming:
            return
        key = ServiceKey.of(vs)
        svc, dests, quorum = desired_service(vs, self.checks.ipvs_health, self.quorum.get(key),
                                             self.checks.ipvs_weight,
                                             scale_out=vs.name in scale_out_names(self.config))
        before = self.quorum.get(key)
        if quorum is not None:
            self.quorum[key] = quorum
            if before is not None and quorum != before:
                log.warning("ipvs.quorum_changed", service=vs.name, up=quorum,
                            reason="healthy_weight_below_quorum" if not quorum else "quorum_regained")
            self._execute(self.policy.quorum_changed(vs, before, quorum))
        try:
            report = self.reconciler.update_service(key, (svc, dests))
        except IpvsUnavailable as e:
            self._unavailable(e)
            return
        except IpvsError as e:   # the dump itself failed
            log.error("ipvs.update_failed", service=vs.name, reason=str(e))
            self.errors += 1
            return
        self._record(report, reason=f"health:{state.value}")
        self._tell_listeners()

    def _tell_listeners(self) -> None:
        for listener in list(self.listeners):
            listener()

    # --- VRRP roles -------------------------------------------------------------------

    def _on_role(self, event) -> None:
        self._execute(self.policy.role_changed(event.instance.name, event.new))

    def _execute(self, effects: list[LvsEffect]) -> None:
        for effect in effects:
            if isinstance(effect, ProgramServices):
                self.sync_table(reason=effect.reason)
            elif isinstance(effect, SetSyncDaemon):
                self._apply_daemons(DaemonState.MASTER if effect.role is State.MASTER
                                    else DaemonState.BACKUP, effect.reason)
            elif isinstance(effect, HoldPreemption):
                self._hold_preemption(effect)
            elif isinstance(effect, RunCommand):
                _run_quorum_script(effect)
            elif isinstance(effect, TuneSync):
                self.syncd.tune(self.config.lvs.sync_daemon, reason=effect.reason)
            elif isinstance(effect, StopSyncDaemons):
                self._apply_daemons(None, effect.reason, cfg=effect.cfg, only_matching=True)

    def _switch_daemon(self, reason: str) -> None:
        self._execute(self.policy.sync_daemon(reason))

    @staticmethod
    def _leader_state(agent: VrrpSide | None, config: model.Config) -> State | None:
        leader = leader_instance(config)
        return agent.roles().get(leader) if (agent is not None and leader) else None

    def _apply_daemons(self, want: DaemonState | None, reason: str,
                       cfg: model.SyncDaemon | None = None, only_matching: bool = False) -> None:
        """Make the kernel run only ``want`` (None: no daemon) as ``cfg`` (default: the
        config's). ``only_matching``: leave alone daemons that ``cfg`` did not describe."""
        cfg = cfg or self.config.lvs.sync_daemon
        if cfg is None or self.ipvs.backend is None:
            return
        try:
            started_backup = self.syncd.switch(self.ipvs.backend, want, cfg, reason, only_matching)
        except IpvsUnavailable as e:
            self._unavailable(e)
            return
        if started_backup:
            self._execute(self.policy.backup_daemon_started(
                self._agent.roles() if self._agent is not None else None))

    def _hold_preemption(self, effect: HoldPreemption) -> None:
        for name in effect.instances:
            self._agent.hold_preemption(name, effect.seconds)
        log.info("vrrp.preemption_held", instances=list(effect.instances), seconds=effect.seconds,
                 reason=effect.reason)

    # --- reload ----------------------------------------------------------------------

    def update_config(self, new: model.Config) -> SyncReport | None:
        """Apply a new config: health keeps unchanged checks' state; the table converges
        with the fewest writes; the sync daemon is restarted only if its settings changed."""
        old = self.config
        self.config = new
        self._index(new)
        self.checks.update_config(new)
        role = self.role
        # Another instance may now decide the LVS role: then take its current state.
        self.policy.reconfigure(new, self._leader_state(self._agent, new))
        self.ipvs.reconfigure()       # no IPVS needed any more: nothing to retry, no fault to hold
        if not needs_ipvs(new) and self.reconciler is None:
            return None
        if self.reconciler is None:
            # Started idle, or IPVS unavailable: the reload tries to open it now. A
            # failure keeps the backoff going and moves the fault to the instances the
            # new config follows; a success clears it.
            return self._open_ipvs(reason="reload")
        report = self.sync_table(reason="reload")
        self._execute(self.policy.reloaded(old, role))
        return report


QUORUM_SCRIPT_TIMEOUT = 30.0      # seconds; then its process tree is killed
QUORUM_OUTPUT_LIMIT = 4096        # bytes of its output kept for the log
_quorum_runs: set[asyncio.Task] = set()     # the loop keeps only weak references


def _run_quorum_script(effect: RunCommand) -> asyncio.Task:
    """keepalived's quorum_up / quorum_down: in the background, no shell, at most
    QUORUM_SCRIPT_TIMEOUT (``spawn.run``: killed with its whole tree after that)."""
    async def run() -> None:
        try:
            done = await spawn.run(effect.argv, QUORUM_SCRIPT_TIMEOUT, output_limit=QUORUM_OUTPUT_LIMIT)
        except OSError as e:
            log.warning("ipvs.quorum_script_failed", service=effect.service, argv=list(effect.argv),
                        reason=str(e))
            return
        output = done.output.decode(errors="replace").strip() or None
        if done.outcome == "exited" and done.returncode == 0:
            log.info("ipvs.quorum_script_finished", service=effect.service, argv=list(effect.argv),
                     output=output, reason=effect.reason)
            return
        code = done.returncode
        reason = "timeout" if code is None else f"exit {code}" if code >= 0 else f"signal {-code}"
        log.warning("ipvs.quorum_script_failed", service=effect.service, argv=list(effect.argv),
                    output=output, reason=reason)

    task = asyncio.get_running_loop().create_task(run())
    _quorum_runs.add(task)
    task.add_done_callback(_quorum_runs.discard)
    return task
