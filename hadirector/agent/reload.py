"""What a reload changes: a pure diff of the running and the new ``Config``.

Theory of operation
-------------------
``plan_reload(old, new)`` compares two validated configs (frozen dataclasses, so
``==`` is a deep comparison) and returns a ``ReloadPlan``; the agent applies it
(``Agent.reload_async``). Nothing here touches the agent or the kernel, so every
decision is a unit test away.

VRRP instances are matched by name:

* unchanged: the machine, its state, timers and the VIPs stay exactly as they are
  (no election, no transition, no GARP);
* updated in place: only fields the machine adopts without a new identity changed
  (``IN_PLACE_FIELDS``: priority, preempt, intervals, notify, garp, tracking) —
  ``VrrpMachine.reconfigure`` takes them and a master advertises a new priority at
  once, as it would for a tracker's priority delta;
* restarted: interface, VRID, version, VIPs, unicast settings, or a move into or out
  of address-owner priority 255 changed. The old machine shuts down gracefully
  (priority 0 if master, RFC 5798 6.4.3), its VIPs go, and a new one starts;
* added / removed.

Sync groups, track scripts and LVS are listed by name with what changed; the agent
rebuilds the first two only where needed and hands LVS to ``LvsController.update_config``
(which diffs again, at the level of kernel entries).

``node`` and ``api`` settings cannot change under a running agent (its state
directory, its log format, its listening socket): they are listed in
``needs_restart`` and the agent keeps the running values in force
(``in_force(new)``), rather than ignoring them silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hadirector.model import Config, VrrpInstance
from hadirector.vrrp.machine import PRIORITY_OWNER

# VrrpInstance fields a running machine adopts (VrrpMachine.reconfigure), marked LIVE
# where the model declares them; any other change restarts the instance.
IN_PLACE_FIELDS = frozenset(f.name for f in dataclasses.fields(VrrpInstance)
                            if f.metadata.get("reload") == "live")


@dataclass(frozen=True)
class InstanceChange:
    name: str
    fields: tuple[str, ...]          # VrrpInstance fields that differ, in model order
    restart: bool                    # False: updated in place

    def describe(self) -> str:
        how = "restarted" if self.restart else "updated in place"
        return f"vrrp_instance {self.name}: {how} ({', '.join(self.fields)})"


@dataclass(frozen=True)
class ReloadPlan:
    unchanged: tuple[str, ...] = ()
    updated: tuple[InstanceChange, ...] = ()     # in place
    restarted: tuple[InstanceChange, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    sync_groups: tuple[str, ...] = ()            # "name: added|removed|members|notify"
    track_scripts: tuple[str, ...] = ()          # "name: added|removed|changed"
    lvs: tuple[str, ...] = ()                    # what changed under lvs / virtual_services
    needs_restart: tuple[str, ...] = ()          # "node.state_dir: a -> b"

    @property
    def vrrp_changed(self) -> bool:
        return bool(self.updated or self.restarted or self.added or self.removed)

    @property
    def empty(self) -> bool:
        return not (self.vrrp_changed or self.sync_groups or self.track_scripts or self.lvs
                    or self.needs_restart)

    @property
    def changes(self) -> tuple[str, ...]:
        """One line per change, for ``ReloadResult.changes`` and the log."""
        out = [c.describe() for c in self.updated + self.restarted]
        out += [f"vrrp_instance {n}: added" for n in self.added]
        out += [f"vrrp_instance {n}: removed" for n in self.removed]
        out += [f"sync_group {g}" for g in self.sync_groups]
        out += [f"track_script {s}" for s in self.track_scripts]
        out += list(self.lvs)
        out += [f"{n} (needs restart, not applied)" for n in self.needs_restart]
        return tuple(out)


def instance_change(old: VrrpInstance, new: VrrpInstance) -> InstanceChange | None:
    """None when equal; otherwise which fields differ and whether that needs a restart."""
    if old == new:
        return None
    fields = tuple(f.name for f in dataclasses.fields(VrrpInstance)
                   if getattr(old, f.name) != getattr(new, f.name))
    restart = any(f not in IN_PLACE_FIELDS for f in fields) or (
        (old.priority == PRIORITY_OWNER) != (new.priority == PRIORITY_OWNER))
    return InstanceChange(new.name, fields, restart)


def _by_name(items) -> dict:
    return {i.name: i for i in items}


def _named_diff(old_items, new_items, describe) -> tuple[str, ...]:
    old, new = _by_name(old_items), _by_name(new_items)
    out = [f"{n}: added" for n in new if n not in old]
    out += [f"{n}: removed" for n in old if n not in new]
    out += [f"{n}: {describe(old[n], new[n])}" for n in new if n in old and old[n] != new[n]]
    return tuple(out)


def _group_change(old, new) -> str:
    parts = []
    if old.instances != new.instances:
        parts.append("members")
    if old.notify != new.notify:
        parts.append("notify")
    return "changed (" + ", ".join(parts) + ")"


def _script_change(old, new) -> str:
    fields = [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]
    return "changed (" + ", ".join(fields) + ")"


def _service_change(old, new) -> str:
    fields = [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]
    return "changed (" + ", ".join(fields) + ")"


def lvs_changes(old: Config, new: Config) -> tuple[str, ...]:
    out = []
    for f in dataclasses.fields(old.lvs):
        a, b = getattr(old.lvs, f.name), getattr(new.lvs, f.name)
        if a != b:
            out.append(f"lvs.{f.name}: changed")
    out += [f"virtual_service {line}" for line in
            _named_diff(old.virtual_services, new.virtual_services, _service_change)]
    return tuple(out)


def needs_restart(old: Config, new: Config) -> tuple[str, ...]:
    out = []
    for section in ("node", "api"):
        a, b = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                va = va.value if hasattr(va, "value") else va
                vb = vb.value if hasattr(vb, "value") else vb
                out.append(f"{section}.{f.name}: {va} -> {vb}")
    return tuple(out)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    old_i, new_i = _by_name(old.vrrp_instances), _by_name(new.vrrp_instances)
    unchanged, updated, restarted = [], [], []
    for name, inst in new_i.items():
        if name not in old_i:
            continue
        change = instance_change(old_i[name], inst)
        if change is None:
            unchanged.append(name)
        elif change.restart:
            restarted.append(change)
        else:
            updated.append(change)
    return ReloadPlan(
        unchanged=tuple(unchanged),
        updated=tuple(updated),
        restarted=tuple(restarted),
        added=tuple(n for n in new_i if n not in old_i),
        removed=tuple(n for n in old_i if n not in new_i),
        sync_groups=_named_diff(old.sync_groups, new.sync_groups, _group_change),
        track_scripts=_named_diff(old.track_scripts, new.track_scripts, _script_change),
        lvs=lvs_changes(old, new),
        needs_restart=needs_restart(old, new),
    )


def in_force(old: Config, new: Config) -> Config:
    """The config the agent runs after a reload: ``new``, but with the running ``node``
    and ``api`` settings (those need a restart; ``plan.needs_restart`` says which)."""
    return dataclasses.replace(new, node=old.node, api=old.api)
