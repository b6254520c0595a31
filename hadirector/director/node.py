"""The director's node-level policy, with no I/O: VRRP role changes in, effects out.

Theory of operation
-------------------
``Director`` has the VRRP machine's shape one level up (aioquic's connection). Every
input carries the time and only records and decides:

    d.attach("vi_1", State.INITIALIZE)           a driver for vi_1 runs
    d.role_changed("vi_1", RoleChanged(...), priority=100, now=3.6)
    d.master_wish("vi_1", MasterWish(True, ...), now=...)     sync-group members only
    d.reannounce("vi_1", now=...)                a lower-priority master was heard
    d.set_fault("vi_1", True, "track_interface:eth0", now=...)
    d.set_priority_delta("vi_1", -20, "track_script:chk", now=...)
    d.reconfigure(config, faults={...}, now=...) a reload: sync groups rebuilt where needed
    d.detach("vi_1") / d.stopping()

and the shell pulls ``effects()`` and executes them in order. What it decides:

* on MASTER: ``AddVips`` then ``Announce`` (the first GARP round goes with the first
  master advert, RFC 5798 6.4.2); on any other state ``RemoveVips``;
* sync groups (``vrrp.group.SyncGroupPolicy``): a member's role change, wish or fault is
  routed through its group's policy and the orders (``ForceState``/``SetFault``) are
  effects; when the members agree on a state (or one is in FAULT) the group's
  ``GroupChanged`` and GROUP notify follow;
* the INSTANCE notify scripts, then ``RecordStatus``, then ``PublishRole`` to the role
  subscribers (not while stopping: the shutdown's own transitions reach nobody).

Executing ``ForceState``/``SetFault`` makes the member's machine change role, which
comes back here as ``role_changed`` *while the shell is still executing* the effects
of the first change: the shell drains and executes the new effects at once (nested),
so a forced member's VIPs and scripts come before the rest of the forcing member's
effects, exactly as when the agent applied the orders itself. The member states used
for a group's aggregate are the ones reported here, which equal the machines' states
whenever they are read.
"""

from __future__ import annotations

from hadirector.model import Config, SyncGroup
from hadirector.vrrp.group import SyncGroupPolicy
from hadirector.vrrp.machine import MasterWish, Reason, RoleChanged, State

from .effects import (
    AddVips, Announce, Effect, GroupChanged, Notify, PublishRole, RecordStatus,
    RemoveVips, SetFault, SetPriorityDelta,
)

GROUP_FAULT_PREFIX = "sync_group:"      # SyncGroupPolicy.fault_reason


class Director:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._instances = {i.name: i for i in config.vrrp_instances}
        self.groups: dict[str, SyncGroupPolicy] = {}
        self._group_of: dict[str, SyncGroupPolicy] = {}
        self._group_state: dict[str, State] = {}
        self._states: dict[str, State] = {}        # attached instances: their last role
        self._effects: list[Effect] = []
        self._stopping = False
        for g in config.sync_groups:
            policy = SyncGroupPolicy(g)
            self.groups[g.name] = policy
            for member in g.instances:
                self._group_of[member] = policy

    # --- read-only view -------------------------------------------------------------

    def in_sync_group(self, instance: str) -> bool:
        return instance in self._group_of

    def group_states(self) -> dict[str, str]:
        """Each sync group's last reported state (``State`` value), for status."""
        return {name: state.value for name, state in self._group_state.items()}

    def state(self, instance: str) -> State | None:
        return self._states.get(instance)

    def effects(self) -> list[Effect]:
        """Everything to do since the last call, in order; then cleared."""
        out, self._effects = self._effects, []
        return out

    # --- inputs ---------------------------------------------------------------------

    def attach(self, instance: str, state: State = State.INITIALIZE) -> None:
        """A driver for ``instance`` runs (its machine is in ``state``)."""
        self._states[instance] = state

    def detach(self, instance: str) -> None:
        """The driver of ``instance`` is gone (a reload retired it)."""
        self._states.pop(instance, None)

    def stopping(self) -> None:
        """The node is stopping: role changes are no longer published."""
        self._stopping = True

    def role_changed(self, instance: str, change: RoleChanged, *, priority: int, now: float) -> None:
        """``instance``'s machine changed role; ``priority`` is its effective priority."""
        if instance in self._states:
            self._states[instance] = change.new
        inst = self._instances.get(instance)
        out = self._effects
        if change.new is State.MASTER:
            out.append(AddVips(instance))
            if inst is not None and inst.virtual_ips and inst.garp.count > 0:
                out.append(Announce(instance, "takeover"))
        else:
            out.append(RemoveVips(instance))
        policy = self._group_of.get(instance)
        if policy is not None:
            out.extend(policy.role_changed(instance, change))
            self._group_changed(policy.group)
        if inst is not None:
            out.append(Notify("INSTANCE", instance, change.new.value, priority, inst.notify))
        out.append(RecordStatus())
        if not self._stopping:
            out.append(PublishRole(instance, change, priority, now))

    def master_wish(self, instance: str, wish: MasterWish, now: float) -> None:
        """A sync-group member's ``MasterWish``: the group moves once all wish it."""
        policy = self._group_of.get(instance)
        if policy is not None:
            self._effects.extend(policy.master_wish(instance, wish))

    def reannounce(self, instance: str, now: float) -> None:
        """The machine heard a lower-priority master (``Reannounce``): while MASTER, one
        GARP burst so neighbours that followed the other router come back to us."""
        if self._states.get(instance) is State.MASTER:
            self._effects.append(Announce(instance, "lower_priority_master_heard", whole_burst=True))

    def set_fault(self, instance: str, fault: bool, reason: str, now: float) -> None:
        """A tracker (or the LVS side) sets or clears the fault ``reason``; a sync-group
        member's fault goes through the group (the others carry ``sync_group:<name>``)."""
        if instance not in self._states:
            return
        policy = self._group_of.get(instance)
        if policy is None:
            self._effects.append(SetFault(instance, fault, reason))
        else:
            self._effects.extend(policy.set_fault(instance, fault, reason))
        self._effects.append(RecordStatus())

    def set_priority_delta(self, instance: str, delta: int, reason: str, now: float) -> None:
        if instance in self._states:
            self._effects.append(SetPriorityDelta(instance, delta, reason))

    def reconfigure(self, config: Config, faults: dict[str, frozenset[str]], now: float) -> None:
        """A reload: adopt ``config``. Sync groups whose membership is unchanged keep
        their policy (only notify scripts may differ); the others are rebuilt and seeded
        with the live members' states (reason ``sync_group``: no orders) and their own
        faults (``faults``: each attached machine's fault reasons), whose orders fault
        the group as usual. Group faults that no longer hold are cleared."""
        old_groups = {g.name: g for g in self.config.sync_groups}
        self.config = config
        self._instances = {i.name: i for i in config.vrrp_instances}
        groups: dict[str, SyncGroupPolicy] = {}
        fresh: list[SyncGroupPolicy] = []
        for g in config.sync_groups:
            policy = self.groups.get(g.name)
            prev = old_groups.get(g.name)
            if policy is not None and prev is not None and prev.instances == g.instances:
                policy.group = g          # notify scripts only: nothing to rebuild
            else:
                policy = SyncGroupPolicy(g)
                fresh.append(policy)
            groups[g.name] = policy
        self.groups = groups
        self._group_of = {m: p for p in groups.values() for m in p.group.instances}
        self._group_state = {k: v for k, v in self._group_state.items()
                             if k in groups and groups[k] not in fresh}
        for policy in fresh:
            for m in policy.group.instances:
                if m in self._states:
                    policy.role_changed(m, RoleChanged(State.INITIALIZE, self._states[m],
                                                       Reason.SYNC_GROUP))
            for m in policy.group.instances:
                if m not in self._states:
                    continue
                for reason in sorted(faults.get(m, ())):
                    if not reason.startswith(GROUP_FAULT_PREFIX):
                        self._effects.extend(policy.set_fault(m, True, reason))
        # Group faults that no longer hold (the group went away or is no longer faulted).
        for name in self._states:
            policy = self._group_of.get(name)
            for reason in sorted(faults.get(name, ())):
                if reason.startswith(GROUP_FAULT_PREFIX) and not (
                        policy is not None and reason == policy.fault_reason and policy.faulted):
                    self._effects.append(SetFault(name, False, reason))

    # --- decisions ------------------------------------------------------------------

    def _group_changed(self, group: SyncGroup) -> None:
        states = {self._states[m] for m in group.instances if m in self._states}
        if State.FAULT in states:
            agg = State.FAULT
        elif len(states) == 1:
            agg = next(iter(states))
        else:
            return   # members in transit: report when they agree
        if self._group_state.get(group.name) is agg:
            return
        self._group_state[group.name] = agg
        self._effects.append(GroupChanged(group.name, agg))
        self._effects.append(Notify("GROUP", group.name, agg.value, 0, group.notify))
