"""What the director core asks the shell to do (``Director.effects()``).

Frozen values, executed in the order they come out; each names the instance it is for
and the shell ignores one for an instance it no longer runs. ``ForceState`` and
``SetFault`` are the sync-group orders of ``hadirector.vrrp.group``, re-used as they
are: one vocabulary for "apply this to that member's machine".
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.model import NotifyScripts
from hadirector.vrrp.group import ForceState, SetFault
from hadirector.vrrp.machine import RoleChanged, State

__all__ = ["AddVips", "RemoveVips", "Announce", "ForceState", "SetFault", "SetPriorityDelta",
           "Notify", "GroupChanged", "RecordStatus", "PublishRole", "Effect"]


@dataclass(frozen=True)
class AddVips:
    """The instance became MASTER: add its VIPs now, in the loop turn of the first master
    advert (RFC 5798 6.4.2), and keep them while it stays MASTER (the shell retries a
    refused add). Emitted even for an instance without VIPs: "want" is what matters."""

    instance: str


@dataclass(frozen=True)
class RemoveVips:
    """The instance left MASTER: remove the VIPs this agent added (only those)."""

    instance: str


@dataclass(frozen=True)
class Announce:
    """One round of gratuitous ARP / unsolicited NA for the instance's VIPs (RFC 5798
    6.4.1/6.4.2): round ``round`` of a burst of ``rounds`` (``garp.count``) named
    ``reason`` (takeover, repeat, refresh, lower_priority_master_heard). The core emits
    each round at its deadline; the shell reports a failed round (``announce_failed``).
    ``inline``: the first takeover round, sent beside the first master advert and only
    if the VIPs were added with it."""

    instance: str
    reason: str
    round: int = 0
    rounds: int = 1
    inline: bool = False


@dataclass(frozen=True)
class SetPriorityDelta:
    """A tracker's priority delta for the instance's machine (0 removes it)."""

    instance: str
    delta: int
    reason: str


@dataclass(frozen=True)
class Notify:
    """keepalived notify scripts for one change (``agent.notify.Notifier.state_changed``):
    ``kind`` is INSTANCE or GROUP, ``state`` a ``State`` value. The Notifier keeps each
    instance's scripts in order and lets a newer state supersede a hung script."""

    kind: str
    name: str
    state: str
    priority: int
    scripts: NotifyScripts


@dataclass(frozen=True)
class GroupChanged:
    """A sync group's members agree on a new state (or one is in FAULT): log it."""

    group: str
    state: State


@dataclass(frozen=True)
class RecordStatus:
    """What a status reader sees changed: rewrite the state file."""


@dataclass(frozen=True)
class PublishRole:
    """Tell the role subscribers (the LVS side) about a role change. ``at`` is the
    ``now`` the change came in with; not emitted once the node is stopping."""

    instance: str
    change: RoleChanged
    priority: int
    at: float


Effect = (AddVips | RemoveVips | Announce | ForceState | SetFault | SetPriorityDelta | Notify
          | GroupChanged | RecordStatus | PublishRole)
