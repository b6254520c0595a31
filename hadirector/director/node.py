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

and the shell pulls ``effects()`` and executes them in order, and calls
``handle_timer(now)`` at ``next_deadline()`` (one timer). What it decides:

* on MASTER: ``AddVips`` then ``Announce`` (the first GARP round goes with the first
  master advert, RFC 5798 6.4.2); on any other state ``RemoveVips``;
* GARP as deadlines: the takeover burst's other rounds ``garp.interval`` apart, a
  repeat burst ``garp.repeat_delay`` after it, then a burst every ``garp.refresh``
  while MASTER. Leaving MASTER cancels them. If the VIPs could not be added with the
  advert (``vips_deferred``), the shell's retry reports ``vips_added`` and the whole
  takeover burst starts then. A lower-priority master heard (``reannounce``) gets one
  whole burst of its own, which runs to its end, and one more burst an advert interval
  after it while still MASTER (the peer's takeover GARPs may cross ours);
* sync groups (``vrrp.group.SyncGroupPolicy``): a member's role change, wish or fault is
  routed through its group's policy and the orders (``ForceState``/``SetFault``) are
  effects; when the members agree on a state (or one is in FAULT) the group's
  ``GroupChanged`` and GROUP notify follow;
* the INSTANCE notify scripts, then ``PublishRole`` to the role subscribers (not while
  stopping: the shutdown's own transitions reach nobody). state.json is the shell's,
  written once after the whole change (the machine's view-changed hook).

Executing ``ForceState``/``SetFault`` makes the member's machine change role, which
comes back here as ``role_changed`` *while the shell is still executing* the effects
of the first change: the shell drains and executes the new effects at once (nested),
so a forced member's VIPs and scripts come before the rest of the forcing member's
effects, exactly as when the agent applied the orders itself. The member states used
for a group's aggregate are the ones reported here, which equal the machines' states
whenever they are read.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from hadirector.model import Config, SyncGroup
from hadirector.vrrp.group import SyncGroupPolicy
from hadirector.vrrp.machine import MasterWish, Reason, RoleChanged, State

from .effects import (
    AddVips, Announce, Effect, GroupChanged, Notify, PublishRole, RecordStatus,
    RemoveVips, SetFault, SetPriorityDelta,
)

GROUP_FAULT_PREFIX = "sync_group:"      # SyncGroupPolicy.fault_reason
TAKEOVER, REPEAT, REFRESH = "takeover", "repeat", "refresh"
REANNOUNCE = "lower_priority_master_heard"


@dataclass(frozen=True, order=True)
class _Round:
    """One scheduled GARP round. ``epoch`` ties it to one MASTER period of the instance
    (None: a re-announce burst, which runs to its end)."""

    at: float
    seq: int
    instance: str = field(compare=False)
    reason: str = field(compare=False)
    round: int = field(compare=False)
    rounds: int = field(compare=False)
    epoch: int | None = field(compare=False)


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
        self._rounds: list[_Round] = []            # heap: GARP rounds by deadline
        self._seq = 0
        self._epoch: dict[str, int] = {}           # +1 whenever an instance's bursts stop
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

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must be called next, or None."""
        return self._rounds[0].at if self._rounds else None

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
        self._drop(lambda r: r.instance == instance)

    def stopping(self) -> None:
        """The node is stopping: role changes are no longer published."""
        self._stopping = True

    def role_changed(self, instance: str, change: RoleChanged, *, priority: int, now: float) -> None:
        """``instance``'s machine changed role; ``priority`` is its effective priority."""
        if instance in self._states:
            self._states[instance] = change.new
        inst = self._instances.get(instance)
        out = self._effects
        self._stop_bursts(instance)
        if change.new is State.MASTER:
            out.append(AddVips(instance))
            if inst is not None and inst.virtual_ips and inst.garp.count > 0:
                out.append(Announce(instance, TAKEOVER, 0, inst.garp.count, inline=True))
                self._burst(instance, TAKEOVER, now, first=1)
        else:
            out.append(RemoveVips(instance))
        policy = self._group_of.get(instance)
        if policy is not None:
            out.extend(policy.role_changed(instance, change))
            self._group_changed(policy.group)
        if inst is not None:
            out.append(Notify("INSTANCE", instance, change.new.value, priority, inst.notify))
        # No RecordStatus: state.json is written once per role change, by the machine's
        # view-changed hook after all of this (and the subscribers) ran.
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
            self._burst(instance, REANNOUNCE, now)
            self._due(now)

    def vips_deferred(self, instance: str, now: float) -> None:
        """The VIPs could not be added with the master advert: no GARP for them until
        ``vips_added``."""
        self._stop_bursts(instance)

    def vips_added(self, instance: str, now: float) -> None:
        """The shell's retry added the VIPs late: the whole takeover burst starts now."""
        if self._states.get(instance) is State.MASTER:
            self._stop_bursts(instance)
            self._burst(instance, TAKEOVER, now)
            self._due(now)

    def announce_failed(self, effect: Announce, now: float) -> None:
        """Sending a round failed (the shell logged why): the rest of that burst is
        dropped and what follows it is scheduled from now. A failed inline round is
        sent again as a whole burst."""
        # A failed re-announce round drops every re-announce round of the instance
        # (its follow-up too); the follow-up is then rescheduled from now.
        epoch = None if effect.reason == REANNOUNCE else self._epoch.get(effect.instance, 0)
        self._drop(lambda r: r.instance == effect.instance and r.reason == effect.reason
                   and (r.epoch == epoch or effect.reason == REANNOUNCE))
        if effect.inline:
            self._burst(effect.instance, TAKEOVER, now)
        else:
            self._after_burst(effect.instance, effect.reason, now, epoch)

    def handle_timer(self, now: float) -> None:
        """Emit every GARP round whose deadline has passed; early or twice is harmless."""
        self._due(now)

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

    def _burst(self, instance: str, reason: str, start: float, first: int = 0,
               follow_up: bool = False) -> None:
        """Schedule rounds ``first``.. of a burst: round n at ``start + n * interval``.
        A re-announce burst runs to its end (epoch None) unless it is the ``follow_up``,
        which leaving MASTER cancels like any other."""
        inst = self._instances.get(instance)
        if inst is None or not inst.virtual_ips or inst.garp.count <= 0:
            return
        epoch = self._epoch.get(instance, 0) if (reason != REANNOUNCE or follow_up) else None
        g = inst.garp
        for n in range(first, g.count):
            self._seq += 1
            heapq.heappush(self._rounds, _Round(start + n * g.interval, self._seq, instance,
                                                reason, n, g.count, epoch))
        if first >= g.count:
            self._after_burst(instance, reason, start, epoch)

    def _after_burst(self, instance: str, reason: str, now: float, epoch: int | None) -> None:
        """What follows a burst that ended at ``now``: the repeat after the takeover
        burst, then a refresh every ``garp.refresh`` (keepalived garp_master_repeat /
        garp_master_refresh). After a re-announce burst, one follow-up burst an advert
        interval later: the peer we answered sent its own takeover GARPs with the advert
        we heard, and under load they can reach the LAN after ours; by the follow-up it
        has heard our advert and stepped down, so the LAN ends pointing at us
        (keepalived repeats after garp_lower_prio_delay for the same reason)."""
        inst = self._instances.get(instance)
        if inst is None:
            return
        if reason == REANNOUNCE:
            if epoch is None and self._states.get(instance) is State.MASTER:
                self._burst(instance, REANNOUNCE, now + inst.advert_interval, follow_up=True)
            return
        g = inst.garp
        if reason == TAKEOVER and g.repeat_delay > 0:
            self._burst(instance, REPEAT, now + g.repeat_delay)
        elif g.refresh > 0:
            self._burst(instance, REFRESH, now + g.refresh)

    def _due(self, now: float) -> None:
        while self._rounds and self._rounds[0].at <= now:
            r = heapq.heappop(self._rounds)
            if r.epoch is not None and r.epoch != self._epoch.get(r.instance, 0):
                continue
            self._effects.append(Announce(r.instance, r.reason, r.round, r.rounds))
            if r.round == r.rounds - 1:
                self._after_burst(r.instance, r.reason, r.at, r.epoch)

    def _stop_bursts(self, instance: str) -> None:
        self._epoch[instance] = self._epoch.get(instance, 0) + 1
        self._drop(lambda r: r.instance == instance and r.epoch is not None)

    def _drop(self, which) -> None:
        kept = [r for r in self._rounds if not which(r)]
        if len(kept) != len(self._rounds):
            heapq.heapify(kept)
            self._rounds = kept

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
