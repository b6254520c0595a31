"""Prometheus text exposition (format 0.0.4) rendered from a ``Snapshot``.

Theory of operation: ``render(snapshot)`` is a pure function (``Renderer`` the same
in slices); the agent keeps no metric objects. Counters come from the snapshot's
monotonic fields (and the kernel's IPVS stats, which are monotonic for the life of a
service), gauges from its current values. The tests parse the output with prometheus_client.

Hand-written rather than prometheus_client's custom-collector API, for the cost
(``bench/metrics_render.py``, bench/README.md): for 100 services x 100 real servers the
library took 1.54 s where the earlier hand-written renderer took 0.94 s; this one takes
~0.12 s, formatting each sample line once, with each real server's labels escaped once
for its ~15 samples. ``Renderer`` cuts that into slices of ~1 ms so the server lets the
event loop turn between them. Importing the library would also cost the agent ~20 ms
and 0.5 MB RSS on top of the API server, for a dependency only tests need.

Conventions (https://prometheus.io/docs/instrumenting/exposition_formats/,
https://prometheus.io/docs/practices/naming/):

* every name starts with ``hadirector_``; counters end in ``_total``; units in the
  name (``_seconds``, ``_bytes``);
* enum-like state is one series per possible value with value 0 or 1, like
  kube-state-metrics' ``kube_pod_status_phase``, so ``hadirector_vrrp_state{state=
  "MASTER"} == 1`` selects masters and a missing scrape is not mistaken for BACKUP;
* the VRRP label is ``vrrp_instance``, not ``instance``, because Prometheus owns the
  ``instance`` target label and would rename ours to ``exported_instance``;
* ``hadirector_ipvs_*`` series are the kernel's view (its table and stats), the
  others the agent's (``real_server_weight`` is configured, ``ipvs_real_server_weight``
  is what the kernel holds — they differ while a server is drained or down);
* a series whose value is unknown is omitted rather than exported as 0 (a real
  server that is not in the kernel has no ``kernel_weight``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from hadirector.model import HealthState, SyncRole, VrrpState

if TYPE_CHECKING:
    from hadirector.api.snapshot import HistogramSnapshot, Snapshot
    from hadirector.ipvs.table import Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Probe latency buckets, seconds: health probes on a LAN take ~0.1-10 ms; timeouts
# are seconds.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class Histogram:
    """A latency accumulator for the agent; ``snapshot()`` gives the cumulative
    ``HistogramSnapshot`` the exposition needs. Not thread-safe (event loop only)."""

    def __init__(self, bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self._bounds = tuple(float(b) for b in bounds)
        # Per bucket, not cumulative; the last one counts values beyond every bound, so
        # an observation is one index and no test (a health check's latency: per check).
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts a value equal
        # to a bound in that bound's bucket.
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def merge(self, counts: Sequence[int], total: float) -> None:
        """Add values counted elsewhere: ``counts`` per bucket of these bounds, then the
        count beyond the last (``health.wire.latency_counts``: a checker worker's)."""
        mine = self._counts
        if len(counts) != len(mine):
            raise ValueError(f"{len(counts)} counts for {len(mine) - 1} bounds and the overflow")
        for i, n in enumerate(counts):
            mine[i] += n
        self._sum += total

    def snapshot(self) -> HistogramSnapshot:
        # Imported here: the health runner builds a Histogram before the VRRP machines
        # start, and the status model is ~0.25 s of an emulated guest's start-up.
        from hadirector.api.snapshot import HistogramSnapshot

        cumulative, running = [], 0
        for bound, n in zip(self._bounds, self._counts):
            running += n
            cumulative.append((bound, running))
        return HistogramSnapshot(buckets=tuple(cumulative), count=running + self._counts[-1], sum=self._sum)


# --- text format primitives ------------------------------------------------------


def escape_label_value(value: str) -> str:
    # 0.0.4: backslash, double quote and line feed are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    # 0.0.4: only backslash and line feed are escaped in HELP.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


Labels = tuple[tuple[str, str], ...]


def label_text(**labels: str | int) -> str:
    """``k="v",...`` with the values escaped: built once per series group and reused
    for each of its samples (the per-real-server series share their labels)."""
    return ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())


class _Family:
    """One metric family: its sample lines are formatted as they are added (a
    family's samples are contiguous in the text, in the order added)."""

    __slots__ = ("name", "type", "help", "lines")

    def __init__(self, name: str, type_: str, help_: str) -> None:
        self.name = name
        self.type = type_               # counter | gauge | histogram
        self.help = help_
        self.lines: list[str] = []

    def add(self, value: float | int | bool, suffix: str = "", **labels: str | int) -> None:
        self.add_labelled(value, label_text(**labels) if labels else "", suffix)

    def add_labelled(self, value: float | int | bool, labels: str, suffix: str = "") -> None:
        """``labels`` as ``label_text`` made it (the hot path: no escaping here)."""
        if labels:
            self.lines.append(f"{self.name}{suffix}{{{labels}}} {format_value(value)}")
        else:
            self.lines.append(f"{self.name}{suffix} {format_value(value)}")

    def head(self) -> str:
        return f"# HELP {self.name} {escape_help(self.help)}\n# TYPE {self.name} {self.type}\n"


class _Exposition:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def family(self, name: str, type_: str, help_: str) -> _Family:
        full = "hadirector_" + name
        fam = self._families.get(full)
        if fam is None:
            fam = self._families[full] = _Family(full, type_, help_)
        return fam

    def families(self) -> list[_Family]:
        return list(self._families.values())


# --- the metrics ----------------------------------------------------------------------


# Sample lines joined and encoded per slice: ~1 ms of text.
TEXT_SLICE_LINES = 8000


class Renderer:
    """Renders one snapshot in slices, so a big table does not hold the event loop:
    ``step()`` does one slice (the samples of one virtual service, or the text of up to
    ``TEXT_SLICE_LINES`` samples) and returns True when the body is complete. At 100 services x 100 real
    servers a slice takes ~1-2 ms (``bench/metrics_render.py`` prints the longest);
    the server awaits between slices. The snapshot is immutable, so the slices see
    one consistent state."""

    def __init__(self, snap: Snapshot) -> None:
        self._chunks: list[bytes] = []
        self._work = self._slices(snap)
        self._done = False

    def step(self) -> bool:
        if not self._done:
            try:
                next(self._work)
            except StopIteration:
                self._done = True
        return self._done

    def body(self) -> bytes:
        while not self.step():
            pass
        return b"".join(self._chunks)

    def _slices(self, snap: Snapshot) -> Iterator[None]:
        ex = _Exposition()
        _node(ex, snap)
        _vrrp(ex, snap)
        yield
        yield from _ipvs(ex, snap)
        _sync_daemon(ex, snap)
        _health(ex, snap)
        _reloads(ex, snap)
        _link_watch(ex, snap)
        _api(ex, snap)
        _scale_out(ex, snap)
        yield
        pending = 0
        for fam in ex.families():
            self._chunks.append(fam.head().encode())
            lines = fam.lines
            for i in range(0, len(lines), TEXT_SLICE_LINES):
                part = lines[i:i + TEXT_SLICE_LINES]
                self._chunks.append(("\n".join(part) + "\n").encode())
                pending += len(part)
                if pending >= TEXT_SLICE_LINES:
                    pending = 0
                    yield
            fam.lines = []


def render(snap: Snapshot) -> str:
    """The whole /metrics body for one snapshot, in one go."""
    return Renderer(snap).body().decode()


def _node(ex: _Exposition, snap: Snapshot) -> None:
    n = snap.node
    ex.family("build_info", "gauge", "Always 1; labels carry the version and router id.").add(
        1, version=n.version, router_id=n.router_id)
    ex.family("start_time_seconds", "gauge",
              "Unix time the agent process started.").add(n.started_at)
    ex.family("config_generation", "gauge",
              "Generation of the config in force: 1 at start, +1 per applied reload.").add(
        n.config_generation)
    ex.family("config_loaded_timestamp_seconds", "gauge",
              "Unix time the config in force was applied.").add(n.config_loaded_at)


def _vrrp(ex: _Exposition, snap: Snapshot) -> None:
    state = ex.family("vrrp_state", "gauge",
                      "VRRP instance state: 1 for the current state, 0 for the others.")
    prio = ex.family("vrrp_priority", "gauge", "Configured VRRP priority.")
    eff = ex.family("vrrp_effective_priority", "gauge",
                    "VRRP priority after tracked interface and script weights.")
    since = ex.family("vrrp_state_since_timestamp_seconds", "gauge",
                      "Unix time of the instance's last state change.")
    trans = ex.family("vrrp_transitions_total", "counter", "VRRP state transitions.")
    sent = ex.family("vrrp_adverts_sent_total", "counter", "VRRP advertisements sent.")
    recv = ex.family("vrrp_adverts_received_total", "counter",
                     "Valid VRRP advertisements received.")
    bad = ex.family("vrrp_adverts_invalid_total", "counter",
                    "VRRP advertisements received and dropped, by reason.")
    held = ex.family("vrrp_vip_held", "gauge",
                     "1 while this director holds the virtual IP on its interface (added as "
                     "master), else 0; summed over the directors it must be 1.")
    auth_ok = ex.family("vrrp_auth_verified_total", "counter",
                        "Signed VRRP advertisements whose signature verified (auth).")
    auth_unsigned = ex.family("vrrp_auth_unsigned_accepted_total", "counter",
                              "Unsigned adverts accepted in auth mode permissive or receive_only.")
    auth_bad = ex.family("vrrp_auth_rejected_total", "counter",
                         "Adverts dropped by the auth checks, by reason (auth_missing, "
                         "auth_malformed, stale, unknown_key, bad_hmac, replay).")
    for v in snap.vrrp_instances:
        ids = {"vrrp_instance": v.name, "vrid": v.vrid, "interface": v.interface}
        if v.auth is not None:
            auth_ok.add(v.auth.verified, **ids)
            auth_unsigned.add(v.auth.unsigned_accepted, **ids)
            for reason, n in sorted(v.auth.rejected.items()):
                auth_bad.add(n, **ids, reason=reason)
        for s in VrrpState:
            state.add(s is v.state, **ids, state=s.value)
        prio.add(v.priority, **ids)
        eff.add(v.effective_priority, **ids)
        since.add(v.since, **ids)
        trans.add(v.transitions, **ids)
        sent.add(v.adverts_sent, **ids)
        recv.add(v.adverts_received, **ids)
        for reason, n in sorted(v.adverts_invalid.items()):
            bad.add(n, **ids, reason=reason)
        for vip in v.virtual_ips:
            held.add(vip in v.held_vips, **ids, vip=vip.split("/")[0])


def _ipvs(ex: _Exposition, snap: Snapshot) -> Iterator[None]:
    """A generator: yields after each virtual service (one slice of ``Renderer``)."""
    if snap.ipvs.needed:
        ex.family("ipvs_available", "gauge",
                  "1 when the agent can program the kernel IPVS; 0 while it cannot (the "
                  "followed instances are in FAULT, ipvs_unavailable).").add(
            snap.ipvs.available is True)
    info = ex.family("ipvs_service_info", "gauge",
                     "Always 1 per virtual service; labels carry its key and scheduler.")
    quorum = ex.family("ipvs_service_quorum_up", "gauge",
                       "1 when the service's healthy weight meets its quorum.")
    in_kernel = ex.family("ipvs_service_in_kernel", "gauge",
                          "1 when the service is present in the kernel IPVS table.")
    svc_conns = ex.family("ipvs_service_connections_total", "counter",
                          "Connections scheduled by the service (kernel stats).")
    svc_pkts = ex.family("ipvs_service_packets_total", "counter",
                         "Packets through the service, by direction (kernel stats).")
    svc_bytes = ex.family("ipvs_service_bytes_total", "counter",
                          "Bytes through the service, by direction (kernel stats).")
    svc_cps = ex.family("ipvs_service_connections_per_second", "gauge",
                        "The kernel's connection rate estimate for the service.")
    rs_health = ex.family("real_server_health", "gauge",
                          "Real server health: 1 for the current state, 0 for the others.")
    rs_weight = ex.family("real_server_weight", "gauge", "Configured real server weight.")
    rs_kweight = ex.family("ipvs_real_server_weight", "gauge",
                           "Real server weight in the kernel; absent when not programmed.")
    rs_active = ex.family("ipvs_real_server_active_connections", "gauge",
                          "Active connections to the real server.")
    rs_inactive = ex.family("ipvs_real_server_inactive_connections", "gauge",
                            "Inactive connections to the real server.")
    rs_conns = ex.family("ipvs_real_server_connections_total", "counter",
                         "Connections scheduled to the real server (kernel stats).")
    rs_pkts = ex.family("ipvs_real_server_packets_total", "counter",
                        "Packets to/from the real server, by direction (kernel stats).")
    rs_bytes = ex.family("ipvs_real_server_bytes_total", "counter",
                         "Bytes to/from the real server, by direction (kernel stats).")
    rs_latency = ex.family("real_server_last_check_duration_seconds", "gauge",
                           "How long the real server's last health probe took.")

    def traffic(c: Stats, conns: _Family, pkts: _Family, bytes_: _Family, ids: str) -> None:
        conns.add_labelled(c.conns, ids)
        pkts.add_labelled(c.inpkts, ids + ',direction="in"')
        pkts.add_labelled(c.outpkts, ids + ',direction="out"')
        bytes_.add_labelled(c.inbytes, ids + ',direction="in"')
        bytes_.add_labelled(c.outbytes, ids + ',direction="out"')

    health_states = [(h, f',state="{h.value}"') for h in HealthState]
    for vs in snap.virtual_services:
        svc = label_text(service=vs.name)
        info.add(1, service=vs.name, key=vs.key, scheduler=vs.scheduler)
        quorum.add_labelled(vs.quorum_up, svc)
        in_kernel.add_labelled(vs.in_kernel, svc)
        traffic(vs.stats, svc_conns, svc_pkts, svc_bytes, svc)
        svc_cps.add_labelled(vs.stats.cps, svc)
        health_lines = rs_health.lines
        prefix = f"{rs_health.name}{{{svc},real_server=\""
        for rs in vs.real_servers:
            # One escaped label text per real server, shared by its ~15 samples.
            endpoint = escape_label_value(rs.endpoint)
            ids = f'{svc},real_server="{endpoint}"'
            for h, state in health_states:
                health_lines.append(f'{prefix}{endpoint}"{state}}} {"1" if h is rs.health else "0"}')
            rs_weight.add_labelled(rs.weight, ids)
            if rs.kernel_weight is not None:
                rs_kweight.add_labelled(rs.kernel_weight, ids)
                rs_active.add_labelled(rs.active_conns, ids)
                rs_inactive.add_labelled(rs.inactive_conns, ids)
                traffic(rs.stats, rs_conns, rs_pkts, rs_bytes, ids)
            if rs.last_check is not None:
                rs_latency.add_labelled(rs.last_check.latency, ids)
        yield


def _sync_daemon(ex: _Exposition, snap: Snapshot) -> None:
    sd = snap.sync_daemon
    desired = ex.family("sync_daemon_desired_role", "gauge",
                        "Role the agent wants the IPVS sync daemon in: 1 for that role.")
    running = ex.family("sync_daemon_running", "gauge",
                        "1 per sync daemon the kernel reports running.")
    if sd.configured:
        for r in SyncRole:
            desired.add(r is sd.desired_role, role=r.value)
    for k in sd.kernel:
        running.add(1, role=k.role.value, interface=k.interface, syncid=k.syncid)


def _health(ex: _Exposition, snap: Snapshot) -> None:
    checks = ex.family("health_checks_total", "counter", "Health probes run, by result.")
    for result, n in sorted(snap.health.checks.items()):
        checks.add(n, result=result)
    inconclusive = ex.family("health_checks_inconclusive_total", "counter",
                             "Health probes that could not run here (counted toward neither"
                             " rise nor fall), by reason.")
    for reason, n in sorted(snap.health.inconclusive.items()):
        inconclusive.add(n, reason=reason)
    _histogram(ex.family("health_check_duration_seconds", "histogram",
                         "Health probe latency."), snap.health.latency)
    # Declared on every director, sampled only with the worker engine: the fleet's
    # alerting rules find the names in every scrape (as the scale-out families).
    restarts = ex.family("health_worker_restarts_total", "counter",
                         "Checker worker processes started in place of a dead one (health engine worker).")
    up = ex.family("health_worker_up", "gauge",
                   "1 while the checker worker process runs, 0 while it is being restarted (its TCP "
                   "and HTTP checks do not run meanwhile).")
    worker = snap.health.worker
    if worker is not None:
        restarts.add(worker.restarts)
        up.add(worker.running)


def _histogram(fam: _Family, h: HistogramSnapshot) -> None:
    for bound, cumulative in h.buckets:
        fam.add(cumulative, "_bucket", le=format_value(float(bound)))
    fam.add(h.count, "_bucket", le="+Inf")
    fam.add(h.sum, "_sum")
    fam.add(h.count, "_count")


def _reloads(ex: _Exposition, snap: Snapshot) -> None:
    r = snap.reloads
    ex.family("reloads_total", "counter", "Config reloads attempted.").add(r.count)
    ex.family("reload_failures_total", "counter",
              "Config reloads refused (the running config was kept).").add(r.failures)
    if r.last_ok is not None:
        ex.family("reload_last_success", "gauge",
                  "1 if the last reload was applied, 0 if it was refused.").add(r.last_ok)
    if r.last_at is not None:
        ex.family("reload_last_timestamp_seconds", "gauge",
                  "Unix time of the last reload attempt.").add(r.last_at)


def _link_watch(ex: _Exposition, snap: Snapshot) -> None:
    lw = snap.link_watch
    ex.family("link_watch_overruns_total", "counter",
              "Netlink overruns (ENOBUFS) of the link watcher: link events the kernel dropped.").add(
        lw.overruns)
    ex.family("link_watch_resyncs_total", "counter",
              "Full re-reads of the tracked links after lost events or a new netlink socket.").add(
        lw.resyncs)
    ex.family("link_watch_resubscribes_total", "counter",
              "Link watcher netlink sockets replaced after an error.").add(lw.resubscribes)
    ex.family("link_watch_restarts_total", "counter",
              "Link watchers restarted after failing.").add(lw.restarts)


# Reasons exported at 0 before they first happen, so rate() and alerts see the series.
DROP_REASONS = ("at_capacity", "all_busy", "header_timeout", "idle_timeout", "request_timeout")
ACCEPT_FAILURES = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
REFUSALS = {"http": ("http_not_allowed",),
            "control": ("not_root", "rate_limited", "unknown_command", "bad_request")}


def _api(ex: _Exposition, snap: Snapshot) -> None:
    accepted = ex.family("api_connections_accepted_total", "counter",
                         "Connections accepted by a local API listener (http, control).")
    dropped = ex.family("api_connections_dropped_total", "counter",
                        "Connections the agent closed to protect itself, by listener and reason.")
    failures = ex.family("api_accept_failures_total", "counter",
                         "Failed accepts on a local API listener, by errno.")
    pauses = ex.family("api_accept_pauses_total", "counter",
                       "Times accepting paused for lack of file descriptors or memory.")
    refused = ex.family("api_requests_refused_total", "counter",
                        "Requests refused (reload over HTTP, not root, rate limited ...), by reason.")
    for name, lst in (("http", snap.api.http), ("control", snap.api.control)):
        if lst is None:
            continue
        accepted.add(lst.accepted, listener=name)
        for reason in sorted(set(DROP_REASONS) | set(lst.dropped)):
            dropped.add(lst.dropped.get(reason, 0), listener=name, reason=reason)
        for reason in sorted(set(ACCEPT_FAILURES) | set(lst.accept_failures)):
            failures.add(lst.accept_failures.get(reason, 0), listener=name, reason=reason)
        pauses.add(lst.accept_pauses, listener=name)
        for reason in sorted(set(REFUSALS[name]) | set(lst.refused)):
            refused.add(lst.refused.get(reason, 0), listener=name, reason=reason)


def _scale_out(ex: _Exposition, snap: Snapshot) -> None:
    # The families are always declared (no samples on a VRRP director), so the fleet's
    # alerting rules find them in every scrape.
    announced = ex.family("scale_out_vip_announced", "gauge",
                          "1 while this scale-out director announces the VIP (its route is in the "
                          "gate table BIRD exports), else 0.")
    digest = ex.family("scale_out_service_digest_info", "gauge",
                       "Always 1; the digest label is the kernel's destination order and weights: "
                       "equal on every director = the same real server for a flow.")
    so = snap.scale_out
    if so is None:
        return
    for v in so.vips:
        announced.add(v.announced, vip=v.vip)
    for service, value in sorted(so.digests.items()):
        digest.add(1, service=service, digest=value)
    ex.family("scale_out_drained", "gauge", "1 while the operator has drained this director.").add(so.drained)
    ex.family("scale_out_gate_changes_total", "counter",
              "VIP announcements and withdrawals since the agent started.").add(so.gate_changes)
    drift = ex.family("scale_out_sysctl_drift", "gauge",
                      "1 when a net.ipv4.vs sysctl scale-out needs (sloppy_tcp, sloppy_sctp, "
                      "schedule_icmp) is not 1.")
    for name in sorted(so.sysctls):
        drift.add(name in so.sysctl_drift, sysctl=name)
    ex.family("scale_out_bird_reachable", "gauge",
              "1 when birdc answered the last read, else 0.").add(so.bird_error is None)
    bgp = ex.family("scale_out_bgp_session_up", "gauge", "1 while the BGP session is Established.")
    for b in so.bgp:
        bgp.add(b.established, peer=b.name)
    bfd = ex.family("scale_out_bfd_session_up", "gauge", "1 while the BFD session is Up.")
    for f in so.bfd:
        bfd.add(f.up, address=f.address, interface=f.interface)
