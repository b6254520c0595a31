"""The validated configuration of one director, as frozen dataclasses.

Theory of operation: ``hadirector.config`` turns a YAML file into a ``Config``; every
other layer reads only these types. They are stdlib-only and immutable so that a reload
can diff old and new values with ``==`` (unchanged parts keep their runtime state).

Units: times are float seconds everywhere (advert intervals keep centisecond
resolution, RFC 5798 5.2.7). Addresses are ``ipaddress`` objects.

The YAML shape (see etc/primary.yaml for a commented example)::

    node:            {router_id, log_format, state_dir}
    api:             {listen}
    vrrp_instances:  [VrrpInstance ...]
    sync_groups:     [SyncGroup ...]
    track_scripts:   [TrackScript ...]
    lvs:             {program, on_shutdown, sync_daemon: SyncDaemon}
    virtual_services: [VirtualService ...]
    scale_out:       ScaleOut (N active directors behind an ECMP router, BGP via BIRD)
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Every scheduler the kernel ships as an ip_vs_<name> module.
SCHEDULERS: tuple[str, ...] = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq",
    "mh", "fo", "ovf", "twos",
)
# Scheduler flags (IP_VS_SVC_F_SCHED1..3) by the names ipvsadm uses, and the
# scheduler each belongs to.
SCHEDULER_FLAGS: dict[str, str] = {
    "sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh",
}


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class ForwardMethod(enum.Enum):
    """LVS packet forwarding method. Kernel values: masq 0, local 1, tunnel 2, route 3."""

    NAT = "nat"
    DR = "dr"
    TUN = "tun"


class TunnelType(enum.Enum):
    IPIP = "ipip"
    GUE = "gue"
    GRE = "gre"


class LogFormat(enum.Enum):
    CONSOLE = "console"
    JSON = "json"
    JOURNAL = "journal"     # console lines with sd-daemon(3) priority prefixes (<3> ...)


class ProgramMode(enum.Enum):
    """Which node programs the IPVS table: both (warm standby) or only the master."""

    ALWAYS = "always"
    MASTER_ONLY = "master_only"


class ShutdownAction(enum.Enum):
    """What the agent does with its IPVS entries on a graceful stop."""

    KEEP = "keep"
    REMOVE = "remove"


class HealthState(enum.Enum):
    """A real server's health: the one vocabulary of the config (``check.initial``), the
    rise/fall policy, the IPVS table and the status snapshot.

    UNKNOWN: no result yet; such a server is not programmed until the first result,
    which decides at once. UP / DOWN: rise/fall then apply as usual.
    """

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


# ``check.initial``: the state a real server starts in, before its first result.
InitialHealth = HealthState


class VrrpState(enum.Enum):
    """A VRRP instance's state: RFC 5798 6.4 states plus FAULT (keepalived's: an
    interface or tracked script is down, so the instance must not be master). The
    values are keepalived's names for them, and the status API's."""

    INITIALIZE = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


class SyncRole(enum.Enum):
    """Role of the IPVS connection-sync daemon. The kernel encodes MASTER and BACKUP as
    IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP (kernel/ipvs.py); NONE: no daemon wanted
    (e.g. FAULT, stopped), which the kernel has no code for."""

    MASTER = "master"
    BACKUP = "backup"
    NONE = "none"


def format_endpoint(address: str | IPAddress, port: int) -> str:
    """``10.0.0.1:80`` / ``[2001:db8::1]:80``, as ipvsadm prints them."""
    address = str(address)
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- node, api -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSettings:
    router_id: str
    log_format: LogFormat = LogFormat.CONSOLE
    state_dir: str = "/run/hadirector"


class HealthEngine(enum.Enum):
    """Where the TCP and plain-HTTP checks run: on the agent's event loop, or in a
    checker worker process (health/worker.py; the other probes stay on the loop)."""

    ASYNCIO = "asyncio"
    WORKER = "worker"


@dataclass(frozen=True)
class HealthSettings:
    engine: HealthEngine = HealthEngine.ASYNCIO


@dataclass(frozen=True)
class ApiSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9110
    enabled: bool = True


# --- VRRP --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackInterface:
    """Link down -> FAULT when weight is 0; otherwise priority changes by ``weight``."""

    name: str
    weight: int = 0


@dataclass(frozen=True)
class TrackScript:
    """A periodic command; exit 0 = success. After ``fall`` failures the priority of
    every instance that tracks it changes by ``weight`` (negative lowers it); with
    weight 0 a failed script puts the instance in FAULT (keepalived semantics)."""

    name: str
    command: tuple[str, ...]
    interval: float = 2.0
    timeout: float = 2.0
    weight: int = 0
    rise: int = 1
    fall: int = 1


@dataclass(frozen=True)
class NotifyScripts:
    """Commands run on a state change, without a shell, with a timeout.

    ``notify`` gets keepalived's arguments appended: INSTANCE|GROUP name state priority.
    """

    master: tuple[str, ...] = ()
    backup: tuple[str, ...] = ()
    fault: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class GarpSettings:
    """Gratuitous ARP (IPv4) / unsolicited NA (IPv6) sent on becoming master."""

    count: int = 5          # packets per VIP per burst
    interval: float = 0.0   # seconds between packets of one burst
    repeat_delay: float = 5.0  # a second burst this long after the first; 0 = none
    refresh: float = 0.0    # periodic burst while master; 0 = never


class AuthMode(enum.Enum):
    """How an instance treats the HMAC trailer of keepalived's ``auth_hmac`` (2.4.2+).

    RECEIVE_ONLY verifies a trailer when one comes but sends none; PERMISSIVE signs and
    still accepts adverts without one; ENFORCE signs and requires one. A pair moves
    receive_only -> permissive -> enforce one reload at a time, every step hitless."""

    ENFORCE = "enforce"
    PERMISSIVE = "permissive"
    RECEIVE_ONLY = "receive_only"


class AntiReplay(enum.Enum):
    """TIME: the trailer's UTC timestamp must be within ``time_window`` of our clock
    (replays are rejected after it, also across a restart); MONOTONIC: only strict
    growth per sender, for hosts without a synchronised clock."""

    TIME = "time"
    MONOTONIC = "monotonic"


@dataclass(frozen=True)
class AuthKey:
    """One HMAC key: its id on the wire and the file it was read from. ``secret`` is the
    key itself (32-64 bytes); it takes part in ``==`` (a reload sees a changed file)
    but never in ``repr``, logs, status or ``config --effective``."""

    id: int                                  # 1..255
    secret_file: str
    secret: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class VrrpAuth:
    """Authenticated adverts: keepalived's ``auth_hmac`` trailer (HMAC-SHA256/128)."""

    keys: tuple[AuthKey, ...]
    active_key: int                          # the id that signs; every listed id verifies
    mode: AuthMode = AuthMode.ENFORCE
    anti_replay: AntiReplay = AntiReplay.TIME
    time_window: float | None = None         # seconds 1..300; None: max(3 x advert interval, 5)


# A field a running VRRP machine adopts on reload (VrrpMachine.reconfigure); a change of
# any other VrrpInstance field restarts the instance (agent/reload.py reads this mark).
LIVE = {"reload": "live"}


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    interface: str
    vrid: int                      # 1..255
    priority: int = field(default=100, metadata=LIVE)   # 1..254, 255 = address owner
    version: int = 3               # 3 (RFC 5798) or 2 (RFC 3768)
    advert_interval: float = field(default=1.0, metadata=LIVE)  # seconds, centisecond resolution (v2: whole seconds)
    virtual_ips: tuple[IPInterface, ...] = ()
    preempt: bool = field(default=True, metadata=LIVE)
    preempt_delay: float = field(default=0.0, metadata=LIVE)
    accept_mode: bool = field(default=False, metadata=LIVE)
    unicast_src: IPAddress | None = None
    unicast_peers: tuple[IPAddress, ...] = ()
    track_interfaces: tuple[TrackInterface, ...] = field(default=(), metadata=LIVE)
    track_scripts: tuple[str, ...] = field(default=(), metadata=LIVE)   # names of TrackScript entries
    notify: NotifyScripts = field(default_factory=NotifyScripts, metadata=LIVE)
    garp: GarpSettings = field(default_factory=GarpSettings, metadata=LIVE)
    # Signed adverts (None: plain VRRP); keys, mode and window change on reload in place.
    auth: VrrpAuth | None = field(default=None, metadata=LIVE)
    # Multicast: accept adverts only from these sources (unicast: unicast_peers are).
    peers: tuple[IPAddress, ...] = field(default=(), metadata=LIVE)

    @property
    def family(self) -> int:
        return self.virtual_ips[0].version if self.virtual_ips else 4


@dataclass(frozen=True)
class SyncGroup:
    """Instances that fail over together: if one goes to FAULT or BACKUP, all do."""

    name: str
    instances: tuple[str, ...]
    notify: NotifyScripts = field(default_factory=NotifyScripts)


# --- LVS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpProbe:
    pass


@dataclass(frozen=True, order=True)
class StatusRange:
    """HTTP status codes ``low`` to ``high`` inclusive (one code: ``low == high``), as
    keepalived's ``status_code 200-299``; written ``200`` or ``"200-299"``."""

    low: int
    high: int

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and self.low <= code <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True)
class HttpProbe:
    path: str = "/"
    tls: bool = False
    # A bare code stands for its one-code range (HttpProbe(status_codes=(200, 204))).
    status_codes: tuple[StatusRange, ...] = (StatusRange(200, 200),)
    body_regex: str | None = None
    digest: str | None = None          # hex MD5 of the body, as keepalived's HTTP_GET
    host: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        codes = tuple(c if isinstance(c, StatusRange) else StatusRange(c, c) for c in self.status_codes)
        object.__setattr__(self, "status_codes", codes)

    def accepts(self, status: int) -> bool:
        return any(status in r for r in self.status_codes)


@dataclass(frozen=True)
class ScriptProbe:
    command: tuple[str, ...]           # argv; exit 0 = healthy
    # keepalived's misc_dynamic: exit 0 up at the configured weight, 1 down, 2-255 up
    # with weight = code - 2.
    dynamic: bool = False


# DNS query types and response codes by their RFC 1035 / IANA names (the numbers are
# the codec's business: hadirector/health/dns.py).
DNS_QUERY_TYPES: tuple[str, ...] = (
    "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "RRSIG", "DNSKEY", "ANY",
)
DNS_RCODES: tuple[str, ...] = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
DNS_TRANSPORTS: tuple[str, ...] = ("udp", "tcp")


@dataclass(frozen=True)
class DnsProbe:
    """keepalived's DNS_CHECK: one query over UDP; healthy on the expected rcode (and,
    with ``answer_regex``, an answer record whose text matches it)."""

    name: str = "."                    # the root, as keepalived's default
    query_type: str = "SOA"
    rcode: str = "NOERROR"
    answer_regex: str | None = None
    transport: str = "udp"             # "udp" (a truncated answer is asked again over TCP) or "tcp"


@dataclass(frozen=True)
class UdpProbe:
    """keepalived's UDP_CHECK: send ``payload``; an ICMP port unreachable is down. Without
    ``require_reply`` silence until the timeout is up; with it a reply (matching
    ``reply_regex``, if given) must come within the timeout."""

    payload: bytes = b""
    require_reply: bool = False
    reply_regex: str | None = None     # searched in the reply's bytes


@dataclass(frozen=True)
class PingProbe:
    """keepalived's PING_CHECK: one ICMP / ICMPv6 echo, answered within the timeout."""


SMTP_DEFAULT_HELO = "smtpchecker.keepalived.org"   # keepalived's SMTP_DEFAULT_HELO


@dataclass(frozen=True)
class SmtpProbe:
    """keepalived's SMTP_CHECK: banner 220, ``EHLO helo_name`` (``HELO`` if refused)
    answered 250, then QUIT."""

    helo_name: str = SMTP_DEFAULT_HELO


Probe = TcpProbe | HttpProbe | ScriptProbe | DnsProbe | UdpProbe | PingProbe | SmtpProbe
# Probes that go to no port (a check without a port is fine for them).
PORTLESS_PROBES = (ScriptProbe, PingProbe)


@dataclass(frozen=True)
class HealthCheck:
    probe: Probe
    interval: float = 5.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3
    initial: InitialHealth = InitialHealth.UNKNOWN
    jitter: float = 0.0                # seconds; each check starts up to this much late
    retry_delay: float | None = None   # after a failure, check again this soon
    bind_to: IPAddress | None = None
    address: IPAddress | None = None   # check this address instead of the real server's
    port: int | None = None            # ... and this port


@dataclass(frozen=True)
class RealServer:
    address: IPAddress
    # The port it is reached on. The config's 0 ("the same as the virtual service", DR
    # and TUN: they cannot rewrite it; ipvsadm does the same for -g/-i) is resolved
    # once, at load (VirtualService.with_ports_resolved): here it is the service's port
    # and port_from_service is True, so ``config --effective`` writes 0 back.
    port: int = 0
    weight: int = 1
    forward: ForwardMethod = ForwardMethod.NAT
    tunnel_type: TunnelType = TunnelType.IPIP
    tunnel_port: int = 0               # GUE: destination UDP port (required for gue)
    tunnel_checksum: str = "nocsum"    # GUE/GRE: "nocsum" | "csum" | "remcsum" (ipvsadm --tun-*)
    upper_threshold: int = 0           # 0 = no limit
    lower_threshold: int = 0
    check: HealthCheck | None = None   # None = always healthy
    port_from_service: bool = False    # the config said port 0 (see port)

    @property
    def key(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)


def resolve_port(rs: RealServer, service_port: int) -> RealServer:
    """``rs`` with the config's port 0 made ``service_port`` (see RealServer.port)."""
    if rs.port or not service_port:
        return rs
    return dataclasses.replace(rs, port=service_port, port_from_service=True)


@dataclass(frozen=True)
class VirtualService:
    """One IPVS virtual service: address+port+protocol, or a firewall mark."""

    name: str
    protocol: Protocol = Protocol.TCP
    address: IPAddress | None = None
    port: int = 0
    fwmark: int | None = None
    family: int = 4                    # 4 or 6; from address, or given with fwmark
    scheduler: str = "wlc"
    scheduler_flags: tuple[str, ...] = ()
    persistence_timeout: int = 0       # seconds, 0 = not persistent
    persistence_netmask: str | None = None   # IPv4 mask or IPv6 prefix length
    one_packet: bool = False           # "ops": schedule every UDP datagram
    real_servers: tuple[RealServer, ...] = ()
    sorry_server: RealServer | None = None
    inhibit_on_failure: bool = False
    quorum: int = 1                    # minimum healthy weight to keep the service up
    quorum_hysteresis: int = 0
    quorum_up: tuple[str, ...] = ()    # commands run when quorum is gained
    quorum_down: tuple[str, ...] = ()  # ... and lost

    def with_ports_resolved(self) -> VirtualService:
        """This service with each real server's port 0 replaced by the service's port
        (the one place that rule is written; the loader calls it once). A firewall-mark
        service has no port, so its real servers keep theirs."""
        if not self.port:
            return self
        return dataclasses.replace(
            self, real_servers=tuple(resolve_port(rs, self.port) for rs in self.real_servers),
            sorry_server=resolve_port(self.sorry_server, self.port) if self.sorry_server else None)

    @property
    def key(self) -> tuple:
        """Identity of the service in the kernel (what IPVS looks entries up by)."""
        if self.fwmark is not None:
            return ("fwmark", self.family, self.fwmark)
        return (self.protocol.value, self.address, self.port)


@dataclass(frozen=True)
class SyncDaemon:
    """Kernel IPVS connection sync (IPVS_CMD_NEW_DAEMON), switched with VRRP state."""

    interface: str
    syncid: int = 0                    # 0..255
    follow_instance: str | None = None  # the VRRP instance (or sync group) it follows
    mcast_group: IPAddress | None = None   # default 224.0.0.81
    port: int = 8848
    ttl: int = 1
    maxlen: int = 0                    # 0 = kernel default (interface MTU)
    # net.ipv4.vs.sync_refresh_period: re-send an active connection to the backup at
    # most this often (whole seconds); setting it also sets sync_threshold's period to
    # 0, so connections sync on state changes and by time rather than every 50th packet.
    # None: leave the kernel's settings alone.
    refresh_period: int | None = None
    # After its sync daemon starts as backup, a node does not preempt a live master for
    # this long, so the master re-sends the connections opened meanwhile (None: twice
    # refresh_period, or 0 without one).
    catch_up: float | None = None

    @property
    def preempt_hold(self) -> float:
        """Seconds a freshly started backup sync daemon holds off preemption."""
        if self.catch_up is not None:
            return self.catch_up
        return 2.0 * self.refresh_period if self.refresh_period else 0.0


@dataclass(frozen=True)
class LvsSettings:
    program: ProgramMode = ProgramMode.ALWAYS
    on_shutdown: ShutdownAction = ShutdownAction.KEEP
    sync_daemon: SyncDaemon | None = None


# --- scale-out: N active directors behind an ECMP router ------------------------------


@dataclass(frozen=True)
class BgpPeer:
    """A router this director announces its VIPs to (eBGP or iBGP)."""

    address: IPAddress
    asn: int


@dataclass(frozen=True)
class ScaleOut:
    """This director is one of N active ones for ``services``: each announces their VIPs
    with BGP (BIRD beside the agent) while it can carry them, and every director picks
    the same real server for a flow (``mh`` in one canonical destination order, weight
    0 instead of deletion, ``sloppy_tcp``), so the router may send any packet of any
    flow to any of them. The agent's hand-off to BIRD is a kernel routing table: it
    keeps ``VIP/32 dev lo table <table> proto <route_protocol>`` there exactly while the
    VIP should be announced; BIRD's kernel protocol learns that table."""

    services: tuple[str, ...]          # names of virtual services (scheduler mh, DR/TUN)
    local_as: int
    peers: tuple[BgpPeer, ...]
    router_id: IPAddress | None = None  # BIRD's router id; None: BIRD picks an address
    table: int = 201                   # the kernel table the agent owns
    route_protocol: int = 201          # rtm_protocol of the gate routes
    min_healthy: int = 1               # UP real servers a service needs to be announced
    hold_down: float = 3.0             # eligible this long (continuously) before announcing
    drain_grace: float = 2.0           # on stop: withdraw, wait this long, then tear down
    bird_socket: str = "/run/bird/bird.ctl"   # birdc -s (read-only status)
    # The BGP timers rendered into BIRD's config (BIRD's defaults suit the Internet: a
    # 240 s hold time, 120 s connect retry, 60..300 s error wait).
    hold_time: int = 9
    connect_retry: int = 2
    error_wait_min: int = 2
    error_wait_max: int = 20
    bfd: bool = True
    bfd_interval: float = 0.1
    bfd_multiplier: int = 3


# --- the whole file -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    node: NodeSettings
    source: str = "<memory>"           # path it was loaded from
    api: ApiSettings = field(default_factory=ApiSettings)
    vrrp_instances: tuple[VrrpInstance, ...] = ()
    sync_groups: tuple[SyncGroup, ...] = ()
    track_scripts: tuple[TrackScript, ...] = ()
    lvs: LvsSettings = field(default_factory=LvsSettings)
    virtual_services: tuple[VirtualService, ...] = ()
    scale_out: ScaleOut | None = None
    health: HealthSettings = field(default_factory=HealthSettings)


def needs_ipvs(config: Config) -> bool:
    """Does this config program IPVS or run a sync daemon at all?"""
    return bool(config.virtual_services) or config.lvs.sync_daemon is not None
