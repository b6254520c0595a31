"""Sync groups: instances that fail over together (keepalived ``vrrp_sync_group``).

Theory of operation: ``SyncGroupPolicy`` is pure; the agent routes two kinds of input
through it and applies the orders it returns to the member machines:

* faults of members — instead of ``machine.set_fault(...)`` the agent calls
  ``policy.set_fault(member, fault, reason)`` and applies every returned ``SetFault``.
  The group is faulted while any member has a fault of its own; then every other member
  carries the fault ``"sync_group:<name>"`` too, and loses it when the last own fault
  clears. (Keyed faults in the machine make this composable with a member's own.)
* role changes — for each ``RoleChanged`` a member emits, the agent calls
  ``policy.role_changed(member, change)`` and applies every returned ``ForceState``
  with ``machine.force_state``: a member that became MASTER pulls the others from
  BACKUP to MASTER; a member that dropped from MASTER to BACKUP pushes the others from
  MASTER to BACKUP. Changes forced by the group (reason ``sync_group``) and FAULT
  changes are not propagated again, so one input never cascades.

Known difference from keepalived 2.x: keepalived also holds a member whose
Master_Down_Timer fires in BACKUP until every member wants MASTER; here that member
becomes MASTER and pulls the others. With consistent priorities (track scripts applied
to every member) both behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.model import SyncGroup
from hadirector.vrrp.machine import Reason, RoleChanged, State


@dataclass(frozen=True)
class SetFault:
    """Apply ``machines[instance].set_fault(fault, reason, now)``."""

    instance: str
    fault: bool
    reason: str


@dataclass(frozen=True)
class ForceState:
    """Apply ``machines[instance].force_state(state, reason, now)``."""

    instance: str
    state: State
    reason: str = Reason.SYNC_GROUP


Order = SetFault | ForceState


class SyncGroupPolicy:
    def __init__(self, group: SyncGroup):
        self.group = group
        self.fault_reason = f"sync_group:{group.name}"
        self._own_faults: dict[str, set[str]] = {name: set() for name in group.instances}

    @property
    def faulted(self) -> bool:
        """True while some member has a fault of its own."""
        return any(self._own_faults.values())

    def faulted_members(self) -> list[str]:
        return [m for m, f in self._own_faults.items() if f]

    def set_fault(self, member: str, fault: bool, reason: str) -> list[Order]:
        """A member's own fault ``reason`` was set or cleared; returns the orders."""
        if member not in self._own_faults:
            raise KeyError(f"{member} is not in sync group {self.group.name}")
        was = self.faulted
        own = self._own_faults[member]
        if fault:
            own.add(reason)
        else:
            own.discard(reason)
        orders: list[Order] = [SetFault(member, fault, reason)]
        if was != self.faulted:
            orders += [SetFault(m, self.faulted, self.fault_reason)
                       for m in self.group.instances if m != member]
        return orders

    def role_changed(self, member: str, change: RoleChanged) -> list[Order]:
        """A member changed role; returns the transitions forced on the others."""
        if member not in self._own_faults or change.reason == Reason.SYNC_GROUP:
            return []
        others = [m for m in self.group.instances if m != member]
        if change.new is State.MASTER:
            return [ForceState(m, State.MASTER) for m in others]
        if change.new is State.BACKUP and change.old is State.MASTER:
            return [ForceState(m, State.BACKUP) for m in others]
        return []
