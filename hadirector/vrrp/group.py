"""Sync groups: instances that fail over together (keepalived ``vrrp_sync_group``).

Theory of operation: ``SyncGroupPolicy`` is pure; the agent routes two kinds of input
through it and applies the orders it returns to the member machines:

* faults of members — instead of ``machine.set_fault(...)`` the agent calls
  ``policy.set_fault(member, fault, reason)`` and applies every returned ``SetFault``.
  The group is faulted while any member has a fault of its own; then every member that
  some *other* member's fault affects carries the fault ``"sync_group:<name>"`` too.
  This is level-triggered: after each input the group fault each member should carry is
  recomputed and only the differences are ordered, so overlapping faults clear in any
  order. (Keyed faults in the machine make this composable with a member's own.)
* wishes — member machines are built with ``sync_group=True``, so a member whose
  Master_Down_Timer fires stays BACKUP and emits ``MasterWish``. The agent passes it to
  ``policy.master_wish(member, wish)``; once every member is MASTER or wishes to be,
  the orders move them all to MASTER together (keepalived 2.x: "only sync to master if
  everyone wants to, i.e. prefer backup state to avoid thrashing"). A member whose
  peer still advertises a higher priority never wishes, so the group stays where it is
  instead of flapping between two nodes whose members' priorities disagree.
* role changes — for each ``RoleChanged`` a member emits, the agent calls
  ``policy.role_changed(member, change)`` and applies every returned ``ForceState``
  with ``machine.force_state``: a member that became MASTER (an address owner, or the
  group's own order) pulls the others from BACKUP to MASTER; a member that dropped from
  MASTER to BACKUP pushes the others from MASTER to BACKUP. Changes forced by the group
  (reason ``sync_group``) and FAULT changes are not propagated again, so one input
  never cascades.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.model import SyncGroup
from hadirector.vrrp.machine import MasterWish, Reason, RoleChanged, State


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
        self._states: dict[str, State] = {name: State.INITIALIZE for name in group.instances}
        self._wishes: dict[str, bool] = {name: False for name in group.instances}
        self._carries: dict[str, bool] = {name: False for name in group.instances}

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
        own = self._own_faults[member]
        if fault:
            own.add(reason)
        else:
            own.discard(reason)
        orders: list[Order] = [SetFault(member, fault, reason)]
        for m in self.group.instances:
            carries = any(f for other, f in self._own_faults.items() if other != m)
            if carries != self._carries[m]:
                self._carries[m] = carries
                orders.append(SetFault(m, carries, self.fault_reason))
        return orders

    def master_wish(self, member: str, wish: MasterWish) -> list[Order]:
        """A member's MasterWish; returns the orders that move the whole group to MASTER
        once every member is MASTER or wishes to be, else none."""
        if member not in self._wishes:
            return []
        self._wishes[member] = wish.wants
        if not wish.wants or not all(
            self._wishes[m] or self._states[m] is State.MASTER for m in self.group.instances
        ):
            return []
        return [ForceState(m, State.MASTER, wish.reason if m == member else Reason.SYNC_GROUP)
                for m in self.group.instances if self._states[m] is not State.MASTER]

    def role_changed(self, member: str, change: RoleChanged) -> list[Order]:
        """A member changed role; returns the transitions forced on the others."""
        if member not in self._own_faults:
            return []
        self._states[member] = change.new
        self._wishes[member] = False          # the machine forgets its wish on any transition
        if change.reason == Reason.SYNC_GROUP:
            return []
        others = [m for m in self.group.instances if m != member]
        if change.new is State.MASTER:
            return [ForceState(m, State.MASTER) for m in others]
        if change.new is State.BACKUP and change.old is State.MASTER:
            return [ForceState(m, State.BACKUP) for m in others]
        return []
