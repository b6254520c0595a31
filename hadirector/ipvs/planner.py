"""The pure difference between the kernel's IPVS table and the one we want.

Theory of operation (kube-proxy's level-triggered sync, pkg/proxy/ipvs/proxier.go):
``plan(actual, desired, owned)`` returns the shortest list of kernel operations that turns
``actual`` into ``desired`` without touching anything we do not own:

* a service in ``desired`` is ours by declaration; one in ``actual`` only is deleted when
  its key is in ``owned`` (we or a dead predecessor made it) and left alone otherwise;
* every field IPVS can edit in place (SET_SERVICE: scheduler, flags, timeout, netmask,
  persistence engine; SET_DEST: forwarding method, weight, thresholds, tunnel settings) is
  changed with one Edit, never delete+add, so connections and counters survive;
* within a service we own, every destination is ours (a hand-added real server in a
  service our config declares is drift, as in kube-proxy);
* the result is ordered deterministically (by key), deletes of stale services first, and
  applying it makes ``plan`` return ``[]``;
* a scale-out service (``ServiceEntry.ordered``) gets its destinations in the desired
  list's (canonical) order, and is never given a destination at the end of a list
  that others on other directors hold elsewhere: when its set of destinations changes
  (a reload added or removed a real server), all of them are deleted and re-added in
  that order in one batch (a re-added destination comes back from the kernel's trash
  with its connections). Health never changes the set, only weights. A destination
  added while it is at weight 0 (no health result yet, or down) is added at its
  configured weight and set to 0 right after: IPVS keeps the last non-zero weight
  (``last_weight``) and ``mh`` gives slots by it, so one *added* at 0 would get no
  slots, and a director started while a real server is down would hold another
  lookup table than the directors that saw it up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from hadirector.ipvs.table import DestEntry, DestKey, ServiceEntry, ServiceKey, Table


@dataclass(frozen=True)
class AddService:
    entry: ServiceEntry

    @property
    def service(self) -> ServiceKey:
        return self.entry.key

    def __str__(self) -> str:
        return f"add service {self.entry.key} ({self.entry.scheduler})"


@dataclass(frozen=True)
class EditService:
    entry: ServiceEntry
    fields: tuple[str, ...] = ()

    @property
    def service(self) -> ServiceKey:
        return self.entry.key

    def __str__(self) -> str:
        return f"edit service {self.entry.key} ({', '.join(self.fields)})"


@dataclass(frozen=True)
class DelService:
    key: ServiceKey

    @property
    def service(self) -> ServiceKey:
        return self.key

    def __str__(self) -> str:
        return f"delete service {self.key}"


@dataclass(frozen=True)
class AddDest:
    service: ServiceKey
    entry: DestEntry

    def __str__(self) -> str:
        return f"add real server {self.entry.key} to {self.service} (weight {self.entry.weight})"


@dataclass(frozen=True)
class EditDest:
    service: ServiceKey
    entry: DestEntry
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"edit real server {self.entry.key} of {self.service} ({', '.join(self.fields)})"


@dataclass(frozen=True)
class DelDest:
    service: ServiceKey
    key: DestKey
    family: int = 4

    def __str__(self) -> str:
        return f"delete real server {self.key} from {self.service}"


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest


def plan(actual: Table, desired: Table, owned: Iterable[ServiceKey] = ()) -> list[Op]:
    owned = set(owned)
    ops: list[Op] = []
    for key in sorted(actual.services):
        if key not in desired.services and key in owned:
            ops.append(DelService(key))
    for key in sorted(desired.services):
        ops.extend(plan_service(actual, desired, key))
    return ops


def plan_service(actual: Table, desired: Table, key: ServiceKey) -> list[Op]:
    """Operations for one service we declare (used alone for a single health change)."""
    want = desired.services.get(key)
    have = actual.services.get(key)
    if want is None:
        return [DelService(key)] if have is not None else []
    ops: list[Op] = []
    if have is None:
        ops.append(AddService(want))
    else:
        changed = have.diff(want)
        if changed:
            ops.append(EditService(want, changed))
    have_dests = actual.dests_of(key) if have is not None else {}
    want_dests = desired.dests_of(key)
    if want.ordered:
        return ops + _plan_ordered(key, have_dests, want_dests)
    for dkey in sorted(have_dests):
        if dkey not in want_dests:
            ops.append(DelDest(key, dkey, have_dests[dkey].family))
    for dkey in sorted(want_dests):
        wd = want_dests[dkey]
        hd = have_dests.get(dkey)
        if hd is None:
            ops.append(AddDest(key, wd))
        else:
            changed = hd.diff(wd)
            if changed:
                ops.append(EditDest(key, wd, changed))
    return ops


def _plan_ordered(key: ServiceKey, have: dict[DestKey, DestEntry],
                  want: dict[DestKey, DestEntry]) -> list[Op]:
    """Destinations of a scale-out service: ``want`` is in canonical order."""
    if have and set(have) != set(want):
        return [*(DelDest(key, k, have[k].family) for k in sorted(have)),
                *(op for d in want.values() for op in _add_ordered(key, d))]
    ops: list[Op] = []
    for dkey, wd in want.items():
        hd = have.get(dkey)
        if hd is None:
            ops += _add_ordered(key, wd)
        elif hd.diff(wd):
            ops.append(EditDest(key, wd, hd.diff(wd)))
    return ops


def _add_ordered(key: ServiceKey, d: DestEntry) -> list[Op]:
    # Added at 0, a destination's last_weight would be 0 and mh would give it no slots.
    if d.weight == 0 and d.last_weight > 0:
        return [AddDest(key, replace(d, weight=d.last_weight)), EditDest(key, d, ("weight",))]
    return [AddDest(key, d)]


def apply_to_table(table: Table, op: Op) -> None:
    """What ``op`` does to a table: the fake's semantics and the reconciler's bookkeeping
    (no error checks; the fake checks before calling this)."""
    if isinstance(op, AddService):
        table.services[op.entry.key] = op.entry
        table.dests.setdefault(op.entry.key, {})
    elif isinstance(op, EditService):
        table.services[op.entry.key] = op.entry
    elif isinstance(op, DelService):
        table.services.pop(op.key, None)
        table.dests.pop(op.key, None)
    elif isinstance(op, (AddDest, EditDest)):
        table.dests.setdefault(op.service, {})[op.entry.key] = op.entry
    elif isinstance(op, DelDest):
        table.dests.get(op.service, {}).pop(op.key, None)
    else:  # pragma: no cover
        raise TypeError(op)
