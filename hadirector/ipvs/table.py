"""What the kernel's IPVS table holds, and what it should hold.

Theory of operation
-------------------
``ServiceEntry`` and ``DestEntry`` are the kernel's view of one virtual service and one
real server: an identifying key plus every field IPVS lets us set. Counters (connections,
packets, bytes) ride along for printing but are excluded from ``==``, so comparing a dump
with a desired table compares only what we can change.

``desired_table(config, health)`` is a pure function from the validated config and the
current health of each real server to the table the kernel should hold. The rules are
keepalived's (check/ipvswrapper.c, check/check_daemon.c), written once here:

* a real server with no health result yet (UNKNOWN) is not programmed at all;
* a DOWN one is left out, or kept with weight 0 when ``inhibit_on_failure``;
* quorum: the sum of the weights of the healthy real servers must reach
  ``quorum + quorum_hysteresis`` to gain quorum and falls below ``quorum -
  quorum_hysteresis`` to lose it (in between the previous state holds). While quorum is
  lost and a sorry server is configured, the sorry server is the only live destination;
* the virtual service itself is always programmed, even when it has no destination, so
  clients get a quick refusal rather than a route to a stale host.

Kernel encodings used throughout (include/uapi/linux/ip_vs.h): forwarding method masq 0,
local 1, tunnel 2, route 3; tunnel type ipip 0, gue 1, gre 2; service flags below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hadirector import model
from hadirector.model import HealthState

# IP_VS_SVC_F_* (include/uapi/linux/ip_vs.h)
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002      # kernel-internal: set on every hashed service, never ours
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008      # sh-fallback / mh-fallback
SVC_F_SCHED2 = 0x0010      # sh-port / mh-port
SVC_F_SCHED3 = 0x0020
# The flags we set and compare; HASHED is the kernel's bookkeeping.
SVC_F_SETTABLE = SVC_F_PERSISTENT | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

SCHED_FLAG_BITS: dict[str, int] = {
    "sh-fallback": SVC_F_SCHED1, "mh-fallback": SVC_F_SCHED1,
    "sh-port": SVC_F_SCHED2, "mh-port": SVC_F_SCHED2,
}

# IP_VS_CONN_F_* forwarding methods
FWD_MASQ = 0
FWD_LOCAL = 1
FWD_TUNNEL = 2
FWD_ROUTE = 3
FWD_BY_METHOD: dict[model.ForwardMethod, int] = {
    model.ForwardMethod.NAT: FWD_MASQ,
    model.ForwardMethod.DR: FWD_ROUTE,
    model.ForwardMethod.TUN: FWD_TUNNEL,
}
FWD_NAMES = {FWD_MASQ: "Masq", FWD_LOCAL: "Local", FWD_TUNNEL: "Tunnel", FWD_ROUTE: "Route"}

# IP_VS_CONN_F_TUNNEL_TYPE_*
TUN_IPIP = 0
TUN_GUE = 1
TUN_GRE = 2
TUN_BY_TYPE: dict[model.TunnelType, int] = {
    model.TunnelType.IPIP: TUN_IPIP, model.TunnelType.GUE: TUN_GUE, model.TunnelType.GRE: TUN_GRE,
}
TUN_NAMES = {TUN_IPIP: "ipip", TUN_GUE: "gue", TUN_GRE: "gre"}
# IP_VS_TUNNEL_ENCAP_FLAG_*
TUN_FLAG_NOCSUM = 0
TUN_FLAG_CSUM = 1 << 0
TUN_FLAG_REMCSUM = 1 << 1
TUN_FLAGS_BY_NAME = {"nocsum": TUN_FLAG_NOCSUM, "csum": TUN_FLAG_CSUM, "remcsum": TUN_FLAG_REMCSUM}

# Schedulers the kernel ships (one ip_vs_<name> module each).
SCHEDULERS_AVAILABLE: tuple[str, ...] = model.SCHEDULERS

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items()}


# --- keys ------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ServiceKey:
    """What IPVS looks a service up by: (family, fwmark) or (family, protocol, addr, port)."""

    family: int                       # 4 or 6
    fwmark: int = 0                   # non-zero = firewall-mark service
    protocol: str = ""                # "tcp" / "udp" / "sctp"; "" for fwmark services
    address: str = ""                 # canonical text form; "" for fwmark services
    port: int = 0

    @classmethod
    def inet(cls, protocol: str, address: model.IPAddress | str, port: int) -> ServiceKey:
        addr = ipaddress.ip_address(address)
        return cls(addr.version, 0, protocol, str(addr), port)

    @classmethod
    def mark(cls, family: int, fwmark: int) -> ServiceKey:
        return cls(family, fwmark)

    @classmethod
    def of(cls, vs: model.VirtualService) -> ServiceKey:
        if vs.fwmark is not None:
            return cls.mark(vs.family, vs.fwmark)
        assert vs.address is not None
        return cls.inet(vs.protocol.value, vs.address, vs.port)

    @property
    def ip(self) -> model.IPAddress | None:
        return ipaddress.ip_address(self.address) if self.address else None

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}" + (" ipv6" if self.family == 6 else "")
        return f"{self.protocol} {model.format_endpoint(self.address, self.port)}"

    def to_json(self) -> list:
        return [self.family, self.fwmark, self.protocol, self.address, self.port]

    @classmethod
    def from_json(cls, raw: list) -> ServiceKey:
        family, fwmark, protocol, address, port = raw
        return cls(int(family), int(fwmark), str(protocol), str(address), int(port))


@dataclass(frozen=True, order=True)
class DestKey:
    address: str                      # canonical text form
    port: int

    @classmethod
    def of(cls, address: model.IPAddress | str, port: int) -> DestKey:
        return cls(str(ipaddress.ip_address(address)), port)

    @property
    def ip(self) -> model.IPAddress:
        return ipaddress.ip_address(self.address)

    def __str__(self) -> str:
        return model.format_endpoint(self.address, self.port)


# --- entries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """IPVS_STATS_ATTR_* (64-bit variant when the kernel sends it): the one counters
    type, also the status snapshot's.

    The first five are monotonic counters; the rates are the kernel's 2-second
    estimator values, so gauges.
    """

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True)
class ServiceEntry:
    key: ServiceKey
    scheduler: str = "wlc"
    flags: int = 0                    # SVC_F_SETTABLE bits only
    timeout: int = 0                  # persistence timeout, seconds
    netmask: int = 32                 # persistence granularity as a prefix length
    pe_name: str = ""                 # persistence engine ("sip"); "" = none
    stats: Stats = field(default_factory=Stats, compare=False)
    # Scale-out (not a kernel field): the destinations must be in the kernel in one
    # canonical insertion order, the same on every director (see ``canonical_order``).
    ordered: bool = field(default=False, compare=False)

    # Fields SET_SERVICE can change in place (everything but the key).
    EDITABLE = ("scheduler", "flags", "timeout", "netmask", "pe_name")

    def diff(self, other: ServiceEntry) -> tuple[str, ...]:
        return tuple(f for f in self.EDITABLE if getattr(self, f) != getattr(other, f))


@dataclass(frozen=True)
class DestEntry:
    key: DestKey
    family: int = 4                   # the real server's family (may differ for tunnels)
    fwd: int = FWD_MASQ
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = TUN_IPIP
    tun_port: int = 0
    tun_flags: int = TUN_FLAG_NOCSUM
    # Desired only (the kernel does not report it): the weight IPVS is to keep as the
    # destination's last_weight, by which mh gives it lookup-table slots. A scale-out
    # destination at weight 0 carries its configured weight here (see planner._add_ordered).
    last_weight: int = field(default=0, compare=False)
    active_conns: int = field(default=0, compare=False)
    inact_conns: int = field(default=0, compare=False)
    persist_conns: int = field(default=0, compare=False)
    stats: Stats = field(default_factory=Stats, compare=False)

    EDITABLE = ("fwd", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")

    def diff(self, other: DestEntry) -> tuple[str, ...]:
        """Fields of ``other`` (desired) that differ from self (actual).

        The kernel turns the forwarding method of a real server whose address is local
        into LOCAL (__ip_vs_update_dest); asking for anything else again would change
        nothing, so an actual LOCAL matches any desired method.
        """
        out = []
        for f in self.EDITABLE:
            a, b = getattr(self, f), getattr(other, f)
            if f == "fwd" and a == FWD_LOCAL:
                continue
            if a != b:
                out.append(f)
        return tuple(out)


@dataclass
class Table:
    """Services and their destinations. Equality ignores counters and ``quorum``."""

    services: dict[ServiceKey, ServiceEntry] = field(default_factory=dict)
    dests: dict[ServiceKey, dict[DestKey, DestEntry]] = field(default_factory=dict)
    # Per service: quorum held (True) or lost (False); absent = not decided yet.
    # Feed it back into the next desired_table() call for hysteresis.
    quorum: dict[ServiceKey, bool] = field(default_factory=dict, compare=False)

    def add(self, service: ServiceEntry, dests: list[DestEntry] | tuple[DestEntry, ...] = ()) -> None:
        self.services[service.key] = service
        self.dests[service.key] = {d.key: d for d in dests}

    def dests_of(self, key: ServiceKey) -> dict[DestKey, DestEntry]:
        return self.dests.get(key, {})

    def copy(self) -> Table:
        return Table(dict(self.services), {k: dict(v) for k, v in self.dests.items()}, dict(self.quorum))

    def __len__(self) -> int:
        return len(self.services)


# --- health ------------------------------------------------------------------------


# health(vs, rs) -> HealthState. The health runner's policy provides the real one.
HealthView = Callable[[model.VirtualService, model.RealServer], HealthState]
# weight(vs, rs) -> the weight a dynamic check set (keepalived's misc_dynamic), or None
# for the configured one.
WeightView = Callable[[model.VirtualService, model.RealServer], "int | None"]


# --- config -> entries ----------------------------------------------------------------


def netmask_prefix(vs: model.VirtualService) -> int:
    """Persistence granularity as a prefix length (the kernel keeps an IPv4 mask and an
    IPv6 prefix length; we normalise to prefix lengths and encode at the wire)."""
    full = 128 if _family(vs) == 6 else 32
    raw = vs.persistence_netmask
    if raw is None or raw == "":
        return full
    raw = str(raw)
    if raw.isdigit():
        return int(raw)
    return ipaddress.IPv4Network(f"0.0.0.0/{raw}").prefixlen


def _family(vs: model.VirtualService) -> int:
    return vs.address.version if vs.address is not None else vs.family


def service_entry(vs: model.VirtualService) -> ServiceEntry:
    flags = 0
    if vs.persistence_timeout > 0:
        flags |= SVC_F_PERSISTENT
    if vs.one_packet:
        flags |= SVC_F_ONEPACKET
    for name in vs.scheduler_flags:
        flags |= SCHED_FLAG_BITS[name]
    return ServiceEntry(
        key=ServiceKey.of(vs),
        scheduler=vs.scheduler,
        flags=flags,
        timeout=vs.persistence_timeout if vs.persistence_timeout > 0 else 0,
        netmask=netmask_prefix(vs),
    )


def dest_entry(vs: model.VirtualService, rs: model.RealServer, weight: int | None = None) -> DestEntry:
    tunnel = rs.forward is model.ForwardMethod.TUN
    return DestEntry(
        key=DestKey.of(rs.address, rs.port),
        family=rs.address.version,
        fwd=FWD_BY_METHOD[rs.forward],
        weight=rs.weight if weight is None else weight,
        u_threshold=rs.upper_threshold,
        l_threshold=rs.lower_threshold,
        tun_type=TUN_BY_TYPE[rs.tunnel_type] if tunnel else TUN_IPIP,
        tun_port=rs.tunnel_port if tunnel else 0,
        tun_flags=TUN_FLAGS_BY_NAME[rs.tunnel_checksum] if tunnel else 0,
    )


def canonical_order(keys: Iterable[DestKey]) -> list[DestKey]:
    """The one insertion order of a scale-out service's destinations on every director:
    by family, numeric address, port. ``mh`` fills its lookup table walking the
    destinations in list order, so the same set inserted in another order can give
    another table (Julian Anastasov on lkml, 2023: "it is enough to add the dests in the
    same order to duplicate the lookup table")."""
    return sorted(keys, key=lambda k: (k.ip.version, int(k.ip), k.port))


def dest_digest(dests: Iterable[DestEntry]) -> str:
    """A short digest of destinations and weights *in the order given* (the kernel's list
    order when ``dests`` is a dump): N directors whose digests agree pick the same real
    server for a flow; ``hadirector status`` shows it per service."""
    text = ";".join(f"{d.key}={d.weight}" for d in dests)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def quorum_state(vs: model.VirtualService, healthy_weight: int, pending: bool,
                 before: bool | None) -> bool | None:
    """keepalived's update_quorum_state(): gain at quorum+hysteresis, lose below
    quorum-hysteresis, hold in between. ``pending`` (some real servers have no result
    yet) defers a first loss so that start-up does not flash the sorry server."""
    up_at = vs.quorum + vs.quorum_hysteresis
    down_below = vs.quorum - vs.quorum_hysteresis
    if before is None:
        if healthy_weight >= vs.quorum:
            return True
        return None if pending else False
    if not before and healthy_weight >= up_at:
        return True
    if before and (healthy_weight == 0 or healthy_weight < down_below):
        return False
    return before


def desired_service(vs: model.VirtualService, health: HealthView,
                    quorum_before: bool | None = None, weight: WeightView | None = None,
                    scale_out: bool = False) -> tuple[ServiceEntry, list[DestEntry], bool | None]:
    """The entry, destinations and quorum state for one virtual service.

    ``weight``: a dynamic weight (a ``dynamic`` script check) per real server, or None for
    the configured one.
    ``scale_out``: every real server is programmed, in canonical order, from the start;
    one that is not UP (down, or no result yet) has weight 0 instead of being left out,
    so the ``mh`` lookup table stays the same on every director whatever their health
    results (weight 0 keeps its slots through ``last_weight``; ``mh-fallback`` re-hashes
    its flows deterministically)."""
    if weight is not None:
        # A dynamic weight replaces the configured one everywhere below, quorum included
        # (keepalived's update_svr_wgt counts the effective weight).
        weights = [weight(vs, rs) for rs in vs.real_servers]
        if any(w is not None for w in weights):
            vs = dataclasses.replace(vs, real_servers=tuple(
                rs if w is None else dataclasses.replace(rs, weight=w)
                for rs, w in zip(vs.real_servers, weights)))
    if scale_out:
        return _scale_out_service(vs, health, quorum_before)
    svc = service_entry(vs)
    healthy: list[model.RealServer] = []
    inhibited: list[model.RealServer] = []
    pending = False
    for rs in vs.real_servers:
        state = HealthState.UP if rs.check is None else health(vs, rs)
        if state is HealthState.UP:
            healthy.append(rs)
        elif state is HealthState.DOWN:
            if vs.inhibit_on_failure:
                inhibited.append(rs)
        else:
            pending = True
    weight = sum(rs.weight for rs in healthy)
    quorum = quorum_state(vs, weight, pending, quorum_before)

    dests: dict[DestKey, DestEntry] = {}
    if quorum is False and vs.sorry_server is not None:
        # keepalived: on losing quorum the sorry server goes in and the live servers go
        # out (inhibited ones stay at weight 0 so their connections drain).
        for rs in healthy + inhibited:
            if vs.inhibit_on_failure:
                d = dest_entry(vs, rs, weight=0)
                dests[d.key] = d
        sorry = dest_entry(vs, vs.sorry_server, weight=vs.sorry_server.weight or 1)
        dests[sorry.key] = sorry
    else:
        for rs in inhibited:
            d = dest_entry(vs, rs, weight=0)
            dests[d.key] = d
        for rs in healthy:
            d = dest_entry(vs, rs)
            dests[d.key] = d
    return svc, list(dests.values()), quorum


def _scale_out_service(vs: model.VirtualService, health: HealthView,
                       quorum_before: bool | None) -> tuple[ServiceEntry, list[DestEntry], bool | None]:
    svc = dataclasses.replace(service_entry(vs), ordered=True)
    dests: dict[DestKey, DestEntry] = {}
    weight, pending = 0, False
    for rs in vs.real_servers:
        state = HealthState.UP if rs.check is None else health(vs, rs)
        up = state is HealthState.UP
        weight += rs.weight if up else 0
        pending = pending or state is HealthState.UNKNOWN
        d = dest_entry(vs, rs, weight=None if up else 0)
        dests[d.key] = dataclasses.replace(d, last_weight=rs.weight)
    ordered = [dests[k] for k in canonical_order(dests)]
    return svc, ordered, quorum_state(vs, weight, pending, quorum_before)


def scale_out_names(config: model.Config) -> frozenset[str]:
    return frozenset(config.scale_out.services) if config.scale_out is not None else frozenset()


def desired_table(config: model.Config, health: HealthView,
                  quorum_before: Mapping[ServiceKey, bool] | None = None,
                  weight: WeightView | None = None) -> Table:
    """The whole table the kernel should hold for ``config`` given ``health``.

    ``quorum_before`` is the ``quorum`` of the previous desired table (hysteresis).
    """
    before = quorum_before or {}
    table = Table()
    scaled = scale_out_names(config)
    for vs in config.virtual_services:
        key = ServiceKey.of(vs)
        svc, dests, quorum = desired_service(vs, health, before.get(key), weight, scale_out=vs.name in scaled)
        table.add(svc, dests)
        if quorum is not None:
            table.quorum[key] = quorum
    return table
