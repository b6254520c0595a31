"""What the rest of the node may ask of the VRRP side (Seesaw's HA -> engine shape).

The VRRP shell (``agent.py``, ``executor.py``) owns the instance runtimes: drivers,
machines, VIP workers. Other components (the LVS side, the status builder) never
touch them; the supervisor passes itself to them as a ``VrrpSide``:

* ``roles()``: the running instances and their current role, in config order (the LVS
  side's leader role and "which followed instances run");
* ``hold_preemption(instance, seconds)``: the sync daemon's catch-up hold;
* ``set_fault(instance, fault, reason)``: ``ipvs_unavailable`` (through the sync group);
* ``on_role_changed``: subscribers get a ``RoleEvent`` per role change;
* ``instance_views()``: one read-only ``InstanceView`` per running instance (status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from hadirector.model import IPAddress, VrrpInstance
from hadirector.vrrp.machine import State

if TYPE_CHECKING:
    from hadirector.vrrp.auth import AdvertAuth
    from hadirector.vrrp.machine import VrrpMachine


@dataclass(frozen=True)
class RoleEvent:
    """What ``on_role_changed`` subscribers get."""

    instance: VrrpInstance
    old: State
    new: State
    reason: str
    detail: str
    priority: int
    at: float            # loop.time() (monotonic)
    wall: float          # time.time()


RoleSubscriber = Callable[[RoleEvent], Awaitable[None] | None]


@dataclass(frozen=True)
class InstanceView:
    """One running instance as a status reader sees it. ``machine`` is the VRRP core,
    to be read only (state, counters, timers); ``rejected`` a copy of the drop counts."""

    instance: VrrpInstance
    machine: "VrrpMachine"
    primary_address: IPAddress
    rejected: dict[str, int]
    holds_vips: bool | None          # None: unknown (before the first apply)
    auth: "AdvertAuth | None" = None  # the advert signer/verifier, to be read only
    auth_verified: int = 0
    auth_unsigned_accepted: int = 0


class VrrpSide(Protocol):
    on_role_changed: list[RoleSubscriber]

    def roles(self) -> dict[str, State]: ...
    def hold_preemption(self, instance: str, seconds: float) -> None: ...
    def set_fault(self, instance: str, fault: bool, reason: str) -> None: ...
    def instance_views(self) -> tuple[InstanceView, ...]: ...
