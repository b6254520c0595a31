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

from hadirector.model import Config, IPInterface     # stdlib only: no pyroute2 yet
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


# --- hadirector check --host: is this host ready for this config? ---------------------------


@dataclass(frozen=True)
class HostFacts:
    """What ``check --host`` reads from this host (``read_host_facts``)."""

    # interface -> its (address, IFA flags)
    interfaces: dict[str, tuple[tuple[IPInterface, int], ...]]
    ipvs_problem: str | None = None       # why IPVS cannot be used; None: it can (or not asked)


def read_host_facts(config: Config) -> HostFacts:
    import asyncio

    from hadirector.ipvs.availability import probe
    from hadirector.net.addresses import AddressManager

    async def dump() -> dict:
        manager = AddressManager()
        try:
            return await manager.host_addresses()
        finally:
            manager.close()

    interfaces = {name: tuple(addrs) for name, addrs in asyncio.run(dump()).items()}
    needs_ipvs = bool(config.virtual_services) or config.lvs.sync_daemon is not None
    return HostFacts(interfaces, probe() if needs_ipvs else None)


IFA_F_SECONDARY = 0x01      # net.addresses'; not imported (pyroute2)
IFA_F_TENTATIVE = 0x40


def host_problems(loaded, facts: HostFacts) -> tuple[list, list]:
    """(errors, warnings) of running ``loaded`` (a ``config.loader.Loaded``) on the host
    ``facts`` describes, each a ConfigIssue at the key concerned. Errors are what makes
    ``hadirector run`` fail to start (a missing interface, no source address) or what
    leaves it unable to do its work (no IPVS for the virtual services)."""
    config: Config = loaded.config
    errors, warnings = [], []
    where: dict = {}          # address -> interfaces carrying it
    for name, addrs in facts.interfaces.items():
        for iface, _flags in addrs:
            where.setdefault(iface.ip, []).append(name)

    def exists(obj, key, name, index=None, what="interface") -> bool:
        if name in facts.interfaces:
            return True
        errors.append(loaded.issue(obj, key, f"no {what} {name!r} on this host", index))
        return False

    for inst in config.vrrp_instances:
        if exists(inst, "interface", inst.interface):
            _source_problem(loaded, inst, facts, where, errors, warnings)
        for i, track in enumerate(inst.track_interfaces):
            exists(inst, "track_interfaces", track.name, i, "tracked interface")
        for i, peer in enumerate(inst.unicast_peers):
            if peer in where and peer != inst.unicast_src:
                warnings.append(loaded.issue(inst, "unicast_peers", f"{peer} is an address of this host "
                                             f"({', '.join(where[peer])}); list only the other director(s)", i))
    daemon = config.lvs.sync_daemon
    if daemon is not None:
        exists(daemon, "interface", daemon.interface, what="sync daemon interface")
    for vs in config.virtual_services:
        for rs in (*vs.real_servers, vs.sorry_server):
            check = rs.check if rs is not None else None
            if check is not None and check.bind_to is not None and check.bind_to not in where:
                issue = loaded.issue(check, "bind_to", f"{check.bind_to} is not an address of this host "
                                                       "(the health check cannot bind to it)")
                if issue not in errors:
                    errors.append(issue)
    if facts.ipvs_problem is not None:
        first = config.virtual_services[0] if config.virtual_services else daemon
        errors.append(loaded.issue(first, None, f"IPVS is not available on this host: {facts.ipvs_problem}"))
    return errors, warnings


def _source_problem(loaded, inst, facts: HostFacts, where: dict, errors: list, warnings: list) -> None:
    """The address the adverts go out from, as the agent picks it (agent._source_address)."""
    if inst.unicast_src is not None:
        src = inst.unicast_src
        if src not in where:
            errors.append(loaded.issue(inst, "unicast_src", f"{src} is not an address of this host"))
        elif inst.interface not in where[src]:
            warnings.append(loaded.issue(inst, "unicast_src", f"{src} is on {', '.join(where[src])}, "
                                                              f"not on {inst.interface} (the instance's interface)"))
        return
    vips = {v.ip for v in inst.virtual_ips}
    usable = [a for a, flags in facts.interfaces[inst.interface]
              if a.version == inst.family and a.ip not in vips
              and not flags & (IFA_F_SECONDARY | IFA_F_TENTATIVE)
              and (inst.family == 4 or a.ip.is_link_local)]
    if not usable:
        kind = "IPv4" if inst.family == 4 else "link-local IPv6"
        errors.append(loaded.issue(inst, "interface", f"{inst.interface} has no {kind} address to send adverts "
                                                      "from (RFC 5798 5.1.1.1 / 5.1.2.1): add one, or set unicast_src"))
