"""What ``hadirector run`` checks and does before the agent proper starts.

* ``missing_capabilities``: the agent needs CAP_NET_ADMIN (VIPs, IPVS, sysctls) and
  CAP_NET_RAW (the VRRP socket, GARP); without them it would fail half-way, after
  taking the lock and maybe removing addresses. Read from /proc/self/status, so a
  root whose bounding set lacks them is refused too.
* ``release_stale_vips``: a kill -9'd predecessor leaves its VIPs on the interfaces,
  and while the peer has taken over, two nodes answer for them. They go first,
  before the slow imports and the event loop (keepalived removes them 0.04 s after
  it starts), with one blocking netlink request each (``net.rtnl``). Only after the
  lock is held: then no other agent in this namespace can have added them.
  Address owners (priority 255) are left alone: the VIP is their real address.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from hadirector.model import Config     # stdlib only: no pyroute2 yet
from hadirector.net import rtnl

# linux/capability.h
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
REQUIRED = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_NET_RAW": CAP_NET_RAW}
PRIORITY_OWNER = 255     # vrrp.machine's; not imported to keep this light


def effective_capabilities(status_text: str) -> int:
    """The ``CapEff:`` mask of a /proc/PID/status text (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def missing_capabilities(cap_eff: int) -> tuple[str, ...]:
    return tuple(name for name, bit in REQUIRED.items() if not cap_eff >> bit & 1)


def own_missing_capabilities() -> tuple[str, ...]:
    try:
        with open("/proc/self/status") as f:
            return missing_capabilities(effective_capabilities(f.read()))
    except OSError:
        return ()      # no /proc: let the first privileged call say so


@dataclass(frozen=True)
class StaleVip:
    """One configured VIP found on its interface at start-up (``error``: not removed)."""

    instance: str
    vrid: int
    interface: str
    vip: str
    error: str | None = None


def release_stale_vips(config: Config) -> list[StaleVip]:
    """Remove every configured VIP of a non-owner instance that is on its interface.

    Returns what it found, for the caller to log once logging is set up (structlog's
    import alone costs more than all of this). A missing interface is skipped (the
    agent's start reports it); a refusal is returned with its error (the agent's own
    start-up release tries again).
    """
    found = []
    for inst in config.vrrp_instances:
        if inst.priority == PRIORITY_OWNER or not inst.virtual_ips:
            continue
        try:
            index = socket.if_nametoindex(inst.interface)
        except OSError:
            continue
        for vip in inst.virtual_ips:
            try:
                if rtnl.remove_address(index, vip):
                    found.append(StaleVip(inst.name, inst.vrid, inst.interface, str(vip)))
            except OSError as e:
                found.append(StaleVip(inst.name, inst.vrid, inst.interface, str(vip),
                                      error=e.strerror or str(e)))
    return found


def log_stale_vips(found: list[StaleVip], log) -> None:
    for s in found:
        if s.error is None:
            log.warning("vrrp.stale_vip_removed", instance=s.instance, vrid=s.vrid, vip=s.vip,
                        interface=s.interface, reason="left_by_previous_agent")
        else:
            log.warning("vrrp.stale_vip_remove_failed", instance=s.instance, vrid=s.vrid,
                        vip=s.vip, interface=s.interface, reason=s.error)
