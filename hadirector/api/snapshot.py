"""The status snapshot: what the running agent reports about itself.

Theory of operation: the agent owns all runtime state. When the API needs it, it calls
the agent's ``snapshot()`` callable, which builds one immutable ``Snapshot`` from that
state in a single pass of the event loop (so it is consistent: no half-applied reload,
no VRRP state from before a transition next to IPVS weights from after it). Everything
the API serves — ``/status`` JSON, ``/metrics`` text, the ``hadirector status`` tables —
is a pure function of one ``Snapshot``.

This module is the contract between the agent (producer) and the API and CLI
(consumers). Rules that keep it a contract:

* frozen dataclasses over the project's vocabulary (``model.HealthState``,
  ``HealthEngine``, ``VrrpState``, ``SyncRole``, ``ipvs.table.Stats``), no behaviour beyond
  (de)serialisation; it imports nothing that imports it back (a leaf);
* fields may be ADDED with defaults; existing ones are never renamed or removed
  (bump ``SCHEMA_VERSION`` only for an incompatible change);
* ``from_dict`` ignores unknown keys and fills missing defaulted ones, so a newer
  agent and an older ``hadirector status`` (or the reverse) still talk;
* addresses are strings (the JSON form), times are Unix seconds as float
  (``time.time()``; ``since`` fields are wall-clock so an operator can read them),
  durations are float seconds, counters are ints that only grow for the life of the
  process (Prometheus counter semantics; a restart resets them, which Prometheus
  handles via ``hadirector_start_time_seconds``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The one vocabulary (model.py) and the one counters type (ipvs/table.py): both stdlib-only
# leaves, so the snapshot stays importable by the CLI without the agent.
from hadirector.ipvs.table import Stats
from hadirector.model import HealthEngine, HealthState, SyncRole, VrrpState, format_endpoint


SCHEMA_VERSION = 1


# --- node -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeStatus:
    router_id: str
    config_path: str
    pid: int
    started_at: float                   # process start, Unix seconds
    config_loaded_at: float             # when the current config was applied
    config_generation: int = 1          # 1 at start, +1 on every applied reload
    version: str = ""                   # hadirector package version
    running: bool = True                # False while starting and after stopping


# --- VRRP -----------------------------------------------------------------------


@dataclass(frozen=True)
class VrrpAuthStatus:
    """Signed adverts of one instance (model.VrrpAuth): its settings, never a secret."""

    mode: str                           # "enforce" | "permissive" | "receive_only"
    active_key: int
    key_ids: tuple[int, ...]
    anti_replay: str                    # "time" | "monotonic"
    time_window: int                    # seconds in force (the default resolved)
    verified: int = 0                   # adverts whose signature verified
    unsigned_accepted: int = 0          # permissive / receive_only: accepted without one
    # dropped by the auth checks, by reason (auth_missing, auth_malformed, stale,
    # unknown_key, bad_hmac, replay); also counted in adverts_invalid
    rejected: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class VrrpInstanceStatus:
    name: str
    vrid: int
    interface: str
    version: int                        # 2 or 3
    state: VrrpState                    # VrrpState.INITIALIZE is "INIT" on the wire
    priority: int                       # configured
    effective_priority: int             # after track_interfaces / track_scripts weights
    master_address: str | None          # current master's source address; ours when MASTER
    since: float                        # Unix seconds of the last state change
    reason: str                         # why the last transition happened ("" at start)
    transitions: int = 0
    adverts_sent: int = 0
    adverts_received: int = 0
    # invalid adverts dropped, by decoder reject reason (e.g. "bad_ttl", "bad_checksum")
    adverts_invalid: Mapping[str, int] = field(default_factory=dict)
    virtual_ips: tuple[str, ...] = ()   # as configured, "10.0.0.1/24"
    sync_group: str | None = None
    # Unix seconds until which a live lower-priority master is not preempted (a backup
    # sync daemon catching up); None when no such hold is running.
    preempt_held_until: float | None = None
    # the faults holding the instance in FAULT: "track_interface:eth0", "ipvs_unavailable" ...
    faults: tuple[str, ...] = ()
    # the virtual_ips this node holds on its interface now (added as master, not yet
    # removed): across two directors' scrapes, a VIP must be held exactly once
    held_vips: tuple[str, ...] = ()
    auth: VrrpAuthStatus | None = None  # None: plain adverts
    # priority changes in force, by source ("track_interface:eth0" ...): the
    # effective_priority is priority plus these
    priority_deltas: Mapping[str, int] = field(default_factory=dict)


# --- IPVS -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The last health-check probe of one real server."""

    ok: bool
    detail: str                         # "connected", "HTTP 503", "timeout after 3.0s"
    latency: float                      # seconds the probe took
    at: float                           # Unix seconds it finished
    inconclusive: bool = False          # could not run here ("emfile"): not counted


@dataclass(frozen=True)
class RealServerStatus:
    address: str
    port: int
    forward: str                        # "nat" | "dr" | "tun" (model.ForwardMethod values)
    health: HealthState
    health_since: float | None          # Unix seconds of the last health change
    weight: int                         # configured
    kernel_weight: int | None           # None: not in the kernel table (not programmed)
    last_check: CheckResult | None = None
    active_conns: int = 0
    inactive_conns: int = 0
    stats: Stats = field(default_factory=Stats)
    sorry_server: bool = False

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.address, self.port)


@dataclass(frozen=True)
class VirtualServiceStatus:
    name: str
    key: str                            # "TCP 10.0.0.1:80", "UDP [2001:db8::1]:53", "FWM 5"
    scheduler: str
    quorum_up: bool
    in_kernel: bool = True              # False e.g. when only the master programs IPVS
    persistence_timeout: int = 0
    stats: Stats = field(default_factory=Stats)
    real_servers: tuple[RealServerStatus, ...] = ()


@dataclass(frozen=True)
class IpvsAvailabilityStatus:
    """Can the agent program the kernel's IPVS? While it cannot, the instances the LVS
    side follows are in FAULT (``ipvs_unavailable``) and the agent retries with backoff."""

    needed: bool = False                # the config has virtual services or a sync daemon
    available: bool | None = None       # None: not needed, or not tried yet
    reason: str | None = None           # why not, when unavailable ("open IPVS ...: ENOENT ...")
    since: float | None = None          # Unix seconds of the last change of ``available``
    failures: int = 0                   # consecutive failed attempts
    next_attempt_at: float | None = None  # Unix seconds of the next retry


# --- sync daemon ------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSyncDaemon:
    """One daemon as the kernel reports it (IPVS_CMD_GET_DAEMON)."""

    role: SyncRole
    interface: str
    syncid: int


@dataclass(frozen=True)
class SyncDaemonStatus:
    configured: bool = False
    desired_role: SyncRole = SyncRole.NONE
    interface: str | None = None
    syncid: int | None = None
    follow_instance: str | None = None
    kernel: tuple[KernelSyncDaemon, ...] = ()


# --- health checks -------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramSnapshot:
    """A Prometheus-style histogram: ``buckets`` are (upper bound, CUMULATIVE count)
    in increasing order of bound, without the implicit +Inf bucket (which is
    ``count``)."""

    buckets: tuple[tuple[float, int], ...] = ()
    count: int = 0
    sum: float = 0.0


@dataclass(frozen=True)
class HealthWorkerStatus:
    """The checker worker process of ``health: {engine: worker}`` (agent/health_worker.py):
    the TCP and plain-HTTP checks run in it. While it is dead, those checks do not run
    and their servers keep their last state; the agent starts it again after a backoff."""

    running: bool                       # a worker process is alive now
    pid: int | None = None              # None while it is being restarted
    starts: int = 0                     # workers started since the agent started
    restarts: int = 0                   # starts - 1: workers started in place of a dead one
    # why the last worker died: "killed by SIGKILL", "exit 1: <its last stderr line>",
    # "killed by SIGKILL: hung: no frame for 5.2 s", "could not start: ..."; None: none died
    last_exit: str | None = None
    since: float | None = None          # Unix seconds of the last start or death


@dataclass(frozen=True)
class HealthTotals:
    """The node's health checking: its engine, the checker worker, and counts over every
    check (a VRRP-only node runs none: everything at its default)."""

    # probes run since start, by result: "ok", "fail", "timeout", "error", "inconclusive"
    checks: Mapping[str, int] = field(default_factory=dict)
    # inconclusive probes (a local reason, not the server's) by reason: "emfile", ...
    inconclusive: Mapping[str, int] = field(default_factory=dict)
    latency: HistogramSnapshot = field(default_factory=HistogramSnapshot)
    # where the checks run; None: no health runner (no virtual services). A reload keeps
    # the running engine (health.engine_kept), so this is what runs, not what the file says.
    engine: HealthEngine | None = None
    worker: HealthWorkerStatus | None = None    # engine worker only


# --- reloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did. Returned by the agent's reload callable and by POST /reload.

    ``ok`` False means the reload was refused (the new config did not load or
    validate) and the running config was kept unchanged.
    """

    ok: bool
    generation: int                     # config generation in force afterwards
    message: str = ""                   # one line for humans
    errors: tuple[str, ...] = ()        # "file:line: key: problem", when refused
    changes: tuple[str, ...] = ()       # what the diff changed, for humans
    duration: float = 0.0               # seconds the reload took


@dataclass(frozen=True)
class ReloadStatus:
    count: int = 0                      # reloads attempted (SIGHUP or POST /reload)
    failures: int = 0                   # ... of which refused
    last_ok: bool | None = None         # None: never reloaded
    last_at: float | None = None
    last_error: str | None = None


# --- faults absorbed: link watching and the local API -----------------------------------


@dataclass(frozen=True)
class LinkWatchStatus:
    """What following rtnetlink for the tracked interfaces has survived since start."""

    overruns: int = 0                   # netlink overruns (ENOBUFS): link events lost
    resyncs: int = 0                    # full re-reads of the links after lost events or a new socket
    resubscribes: int = 0               # netlink sockets replaced after an error
    restarts: int = 0                   # watchers restarted after failing


@dataclass(frozen=True)
class ListenerStatus:
    """One local listener's counters (the HTTP API, or the control socket)."""

    accepted: int = 0
    # connections the agent closed, by reason: "at_capacity", "all_busy",
    # "header_timeout", "idle_timeout", "request_timeout"
    dropped: Mapping[str, int] = field(default_factory=dict)
    # failed accept() calls, by errno name ("EMFILE" ...)
    accept_failures: Mapping[str, int] = field(default_factory=dict)
    accept_pauses: int = 0              # accepting paused for lack of descriptors or memory
    # requests refused, by reason: "http_not_allowed" (POST /reload), "not_root",
    # "rate_limited", "unknown_command", "bad_request"
    refused: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiStatus:
    http: ListenerStatus | None = None      # None: the HTTP API is not serving
    control: ListenerStatus | None = None   # None: the control socket is not serving


# --- scale-out (scale_out:) -----------------------------------------------------------


@dataclass(frozen=True)
class ScaleOutVip:
    vip: str
    announced: bool                     # its route is in the gate table (BIRD exports it)
    reason: str = ""                    # why not announced ("" when it is)


@dataclass(frozen=True)
class BgpSessionStatus:
    name: str                           # BIRD protocol name, e.g. peer_10_1_0_1
    state: str                          # BIRD's: up, start, down ...
    info: str = ""                      # Established, Active, Idle ... and an error
    established: bool = False


@dataclass(frozen=True)
class BfdSessionStatus:
    address: str
    interface: str
    state: str                          # Up, Down, Init, AdminDown
    up: bool = False


@dataclass(frozen=True)
class ScaleOutStatus:
    table: int
    drained: bool = False
    vips: tuple[ScaleOutVip, ...] = ()
    # Per service: digest of the kernel's destination list and weights, in list order;
    # equal on N directors = the same real server for a flow on each ("" unknown).
    digests: Mapping[str, str] = field(default_factory=dict)
    sysctls: Mapping[str, str] = field(default_factory=dict)      # net.ipv4.vs.*, "" unreadable
    sysctl_drift: tuple[str, ...] = ()  # the ones not at the value scale-out needs
    bgp: tuple[BgpSessionStatus, ...] = ()
    bfd: tuple[BfdSessionStatus, ...] = ()
    bird_error: str | None = None       # birdc missing or BIRD not answering
    gate_changes: int = 0               # announces and withdrawals since start


# --- the whole snapshot -------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    node: NodeStatus
    generated_at: float                 # Unix seconds; "since" fields are shown relative to this
    vrrp_instances: tuple[VrrpInstanceStatus, ...] = ()
    virtual_services: tuple[VirtualServiceStatus, ...] = ()
    sync_daemon: SyncDaemonStatus = field(default_factory=SyncDaemonStatus)
    health: HealthTotals = field(default_factory=HealthTotals)
    reloads: ReloadStatus = field(default_factory=ReloadStatus)
    schema_version: int = SCHEMA_VERSION
    ipvs: IpvsAvailabilityStatus = field(default_factory=IpvsAvailabilityStatus)
    link_watch: LinkWatchStatus = field(default_factory=LinkWatchStatus)
    api: ApiStatus = field(default_factory=ApiStatus)
    scale_out: ScaleOutStatus | None = None
    # each sync group's last reported state ("MASTER" ...), by group name
    sync_groups: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        return from_jsonable(cls, data)


# --- state.json ---------------------------------------------------------------------------


def state_file(snap: Snapshot) -> dict[str, Any]:
    """``<state_dir>/state.json``: the VRRP part of a snapshot under the file's own keys
    (lab/, tests and benches read ``instances.<name>.state``, ``master``, ``faults``,
    ``holds_vips``, ``rejected``, ``groups`` and ``config_generation``)."""
    instances = {}
    for v in snap.vrrp_instances:
        instances[v.name] = {
            "vrid": v.vrid,
            "interface": v.interface,
            "version": v.version,
            "state": v.state.value,
            "priority": v.effective_priority,
            "configured_priority": v.priority,
            "since": round(v.since, 3),
            "reason": v.reason,
            "master": v.master_address,
            "faults": list(v.faults),
            "priority_deltas": dict(v.priority_deltas),
            "vips": list(v.virtual_ips),
            "holds_vips": bool(v.held_vips),
            "adverts_sent": v.adverts_sent,
            "adverts_received": v.adverts_received,
            "rejected": dict(v.adverts_invalid),
            "auth_verified": v.auth.verified if v.auth is not None else 0,
        }
    return {"pid": snap.node.pid, "router_id": snap.node.router_id, "running": snap.node.running,
            "instances": instances, "groups": dict(snap.sync_groups),
            "config_generation": snap.node.config_generation}


# --- helpers ----------------------------------------------------------------------------


def service_key_text(protocol: str | None, address: str | None, port: int,
                     fwmark: int | None = None) -> str:
    """The ``key`` text of a virtual service: ``TCP 10.0.0.1:80`` or ``FWM 5``."""
    if fwmark is not None:
        return f"FWM {fwmark}"
    return f"{(protocol or 'tcp').upper()} {format_endpoint(str(address), port)}"


def to_jsonable(value: Any) -> Any:
    """Dataclasses -> dicts, enums -> values, tuples -> lists; recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


T = TypeVar("T")


def from_jsonable(cls: type[T], data: Any) -> T:
    """The inverse of ``to_jsonable`` for the types in this module, driven by the type
    hints. Unknown keys are ignored (forward compatibility); a missing key without a
    default raises ``ValueError`` naming it."""
    return _convert(cls, data, path=cls.__name__)


def _convert(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        last: Exception | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, data, path)
            except (TypeError, ValueError) as e:
                last = e
        raise ValueError(f"{path}: {data!r} matches none of {tp}") from last
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{path}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{path}: missing key {f.name!r}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise ValueError(f"{path}: expected {len(args)} items, got {len(data)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if origin in (Mapping, dict, typing.Mapping):
        kt, vt = typing.get_args(tp)
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
        return {_convert(kt, k, path): _convert(vt, v, f"{path}[{k!r}]") for k, v in data.items()}
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ValueError(f"{path}: expected a number, got {data!r}")
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise ValueError(f"{path}: expected {tp.__name__}, got {data!r}")
        return data
    raise TypeError(f"{path}: unsupported type {tp!r}")
