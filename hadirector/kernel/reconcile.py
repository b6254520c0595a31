"""Level-triggered IPVS sync: read the kernel, plan the difference, apply it.

``Reconciler.sync(desired)`` is safe to call at any time and any number of times; with an
unchanged desired table it reads the kernel and writes nothing. A refused operation is
logged (``ipvs.op_failed`` with the entry, errno and reason) and reported; every other
operation is still applied, so the rest of the table converges. Operations on real
servers of a service whose creation was refused are skipped, not sent to fail again.

``Reconciler.update_service(key, desired)`` is the narrow path for one health change: it
reads and plans only that service (one GET_SERVICE + one GET_DEST dump, not the whole
table), which is what a health transition on a large table should cost.

Ownership: the keys of every desired service are recorded (and persisted) before any
write, so a crash half-way still leaves them known as ours; keys of services we deleted
are forgotten after the delete succeeded.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass, field

import structlog

from hadirector.ipvs import planner
from hadirector.ipvs.backend import IpvsBackend, IpvsError
from hadirector.kernel.ownership import OwnedStore
from hadirector.ipvs.table import DestEntry, ServiceEntry, ServiceKey, Table

log = structlog.get_logger("hadirector.ipvs")


@dataclass(frozen=True)
class OpFailure:
    op: planner.Op
    errno: int
    message: str

    @property
    def errname(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno))


@dataclass
class SyncReport:
    planned: list[planner.Op] = field(default_factory=list)
    applied: list[planner.Op] = field(default_factory=list)
    errors: list[OpFailure] = field(default_factory=list)
    skipped: list[planner.Op] = field(default_factory=list)   # dests of a service not created

    @property
    def ok(self) -> bool:
        return not self.errors and not self.skipped


class Reconciler:
    def __init__(self, backend: IpvsBackend, owned_store: OwnedStore | None = None):
        self.backend = backend
        self.store = owned_store if owned_store is not None else OwnedStore(None)
        self.owned: set[ServiceKey] = self.store.load()

    # --- whole table ---

    def sync(self, desired: Table, actual: Table | None = None) -> SyncReport:
        """Converge the whole table. ``actual``: a dump the caller just read (saves a
        second read of a large table); by default the kernel is read here."""
        if actual is None:
            actual = self.backend.dump()
        ops = planner.plan(actual, desired, self.owned)
        self._own(set(desired.services))
        report = self._apply(ops)
        failed_deletes = {f.op.key for f in report.errors if isinstance(f.op, planner.DelService)}
        # Ours from now on: what we declare, plus stale services we failed to delete.
        self._set_owned(set(desired.services) | failed_deletes)
        log.info("ipvs.synced", planned=len(ops), applied=len(report.applied),
                 failed=len(report.errors), skipped=len(report.skipped),
                 services=len(desired.services),
                 reason="converged" if report.ok else "some_ops_failed")
        return report

    # --- one service ---

    def update_service(self, key: ServiceKey,
                       desired: tuple[ServiceEntry, list[DestEntry]] | None) -> SyncReport:
        """Converge one service; ``desired=None`` removes it (if ours)."""
        actual = self.backend.dump_service(key)
        want = Table()
        if desired is not None:
            svc, dests = desired
            want.add(svc, dests)
            self._own({key})
            ops = planner.plan_service(actual, want, key)
        else:
            ops = planner.plan_service(actual, want, key) if key in self.owned else []
        report = self._apply(ops)
        if desired is None and not report.errors and key in self.owned:
            self._set_owned(self.owned - {key})
        return report

    # --- internals ---

    def _apply(self, ops: list[planner.Op]) -> SyncReport:
        report = SyncReport(planned=list(ops))
        service_ops = [op for op in ops if isinstance(op, (planner.AddService, planner.EditService, planner.DelService))]
        dest_ops = [op for op in ops if not isinstance(op, (planner.AddService, planner.EditService, planner.DelService))]
        self._run(service_ops, report)
        not_created = {f.op.service for f in report.errors if isinstance(f.op, planner.AddService)}
        runnable = []
        for op in dest_ops:
            if op.service in not_created:
                report.skipped.append(op)
                log.warning("ipvs.op_skipped", op=str(op), service=str(op.service),
                            reason="service_not_created")
            else:
                runnable.append(op)
        self._run(runnable, report)
        return report

    def _run(self, ops: list[planner.Op], report: SyncReport) -> None:
        if not ops:
            return
        apply_many = getattr(self.backend, "apply_many", None)
        if apply_many is not None:
            results = apply_many(ops)
        else:
            results = []
            for op in ops:
                try:
                    self.backend.apply(op)
                    results.append(None)
                except IpvsError as e:
                    results.append(e)
        for op, err in zip(ops, results):
            if err is None:
                report.applied.append(op)
                continue
            failure = OpFailure(op, err.errno, err.message)
            report.errors.append(failure)
            log.warning("ipvs.op_failed", op=type(op).__name__, entry=_entry(op),
                        service=str(op.service), errno=failure.errname, reason=err.message)

    def _own(self, keys: set[ServiceKey]) -> None:
        if not keys <= self.owned:
            self._set_owned(self.owned | keys)

    def _set_owned(self, owned: set[ServiceKey]) -> None:
        if owned != self.owned:
            self.owned = set(owned)
            self.store.save(self.owned)


def _entry(op: planner.Op) -> str:
    if isinstance(op, (planner.AddDest, planner.EditDest)):
        return str(op.entry.key)
    if isinstance(op, planner.DelDest):
        return str(op.key)
    return str(op.service)
