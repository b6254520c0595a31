"""What ``hadirector run`` checks and does before the agent proper starts.

* ``missing_capabilities``: the agent needs CAP_NET_ADMIN (VIPs, IPVS, sysctls) and
  CAP_NET_RAW (the VRRP socket, GARP); without them it would fail half-way, after
  taking the lock and maybe removing addresses. Read from /proc/self/status, so a
  root whose bounding set lacks them is refused too.
* ``release_recorded_vips``: a kill -9'd predecessor leaves its VIPs on the
  interfaces, and while the peer has taken over, two nodes answer for them. They go
  first, before the config is read and before the slow imports (keepalived removes
  them ~0.02 s after it starts), with one blocking netlink request each
  (``kernel.rtnl``). Only the VIPs the predecessor recorded as added by itself
  (``vip_record``), and only after the lock is held: then no other agent in this
  namespace can have added them. (The agent's own start-up then releases any
  configured VIP still present, e.g. one added by hand, as keepalived does.)
"""

from __future__ import annotations

import socket
from collections import namedtuple

from hadirector.agent.vip_record import VipRecord   # stdlib only: no pyroute2 yet

# linux/capability.h
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
REQUIRED = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_NET_RAW": CAP_NET_RAW}


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


# One recorded VIP found on its interface at start-up (``error``: not removed). A
# namedtuple, not a dataclass: see lock.Holder (start-up cost).
StaleVip = namedtuple("StaleVip", "instance vrid interface vip error", defaults=(None,))


def release_recorded_vips(record: VipRecord) -> list[StaleVip]:
    """Remove every VIP the predecessor recorded that is still on its interface, then
    the record. Returns what it removed or failed to, for the caller to log once
    logging is set up (structlog's import alone costs more than all of this). A
    recorded interface that is gone or was re-created (another index) is skipped:
    its addresses went with it.
    """
    recorded = record.read()
    if not recorded:
        record.write([])       # none, or another (dead) namespace's: not ours to apply
        return []
    from hadirector.kernel import rtnl

    found = []
    for r in recorded:
        try:
            index = socket.if_nametoindex(r.interface)
        except OSError:
            continue
        if r.ifindex and index != r.ifindex:
            continue
        try:
            if rtnl.remove_prefix(index, *rtnl.parse_prefix(r.vip)):
                found.append(StaleVip(r.instance, r.vrid, r.interface, r.vip))
        except (OSError, ValueError) as e:
            found.append(StaleVip(r.instance, r.vrid, r.interface, r.vip,
                                  error=getattr(e, "strerror", None) or str(e)))
    record.write([])
    return found


def log_stale_vips(found: list[StaleVip], log) -> None:
    for s in found:
        if s.error is None:
            log.warning("vrrp.stale_vip_removed", instance=s.instance, vrid=s.vrid, vip=s.vip,
                        interface=s.interface, reason="left_by_previous_agent")
        else:
            log.warning("vrrp.stale_vip_remove_failed", instance=s.instance, vrid=s.vrid,
                        vip=s.vip, interface=s.interface, reason=s.error)
