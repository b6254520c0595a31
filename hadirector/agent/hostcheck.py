"""``hadirector check --host``: is this host ready for this config?

The checks ``hadirector run`` would otherwise fail on at start (a missing interface, no
address to send adverts from, no IPVS for the virtual services), made without starting
anything. Kept apart from ``preflight``, which must stay light (it runs before the
config is read).
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.model import Config, IPInterface


@dataclass(frozen=True)
class HostFacts:
    """What ``check --host`` reads from this host (``read_host_facts``)."""

    # interface -> its (address, IFA flags)
    interfaces: dict[str, tuple[tuple[IPInterface, int], ...]]
    ipvs_problem: str | None = None       # why IPVS cannot be used; None: it can (or not asked)


def read_host_facts(config: Config) -> HostFacts:
    import asyncio

    from hadirector.ipvs.availability import probe
    from hadirector.model import needs_ipvs
    from hadirector.kernel.addresses import AddressManager

    async def dump() -> dict:
        manager = AddressManager()
        try:
            return await manager.host_addresses()
        finally:
            manager.close()

    interfaces = {name: tuple(addrs) for name, addrs in asyncio.run(dump()).items()}
    return HostFacts(interfaces, probe() if needs_ipvs(config) else None)


IFA_F_SECONDARY = 0x01      # kernel.addresses'; not imported (its asyncio and logging)
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
