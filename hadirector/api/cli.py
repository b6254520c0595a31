"""``hadirector status`` and ``hadirector reload``: clients of the agent.

``status`` reads the HTTP API, found from the config file's ``api`` section (or
``--url``). ``reload`` changes state, so it goes over the agent's root-only control
socket, ``<node.state_dir>/control.sock`` (or ``--socket``), never over HTTP. Both
use the stdlib only (no aiohttp import for a one-shot command) and print either
readable text or, with ``--json``, the agent's JSON unchanged.

The config file is read leniently — only ``api.listen`` / ``api.enabled`` /
``node.state_dir`` — rather than through the full validator: these commands are what
an operator runs when something is wrong, including right after editing the config
into an invalid state, and the running agent still listens where the *old* config said.

A reload refused by the rate limit (``rate_limited``) is retried after the wait the
agent names, a few times, so a script calling ``hadirector reload`` twice in a row
works.

Exit codes (hadirector/exitcodes.py, shared by every subcommand): 0 success; 1 an
unexpected answer; 2 usage (or the API disabled in the config); 3 a config file these
commands cannot read or parse, or a reload refused (the agent kept its config): the
code ``check`` and ``run`` give for the same file; 5 ``reload`` needs root; 7 no agent
answers (as LSB's "not running").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

from hadirector.exitcodes import ExitCode
from typing import Any

from hadirector.api.snapshot import (
    HealthState,
    HealthWorkerStatus,
    RealServerStatus,
    ReloadResult,
    Snapshot,
    VrrpInstanceStatus,
    from_jsonable,
)

DEFAULT_CONFIG = "/etc/hadirector/hadirector.yaml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9110
TIMEOUT = 5.0      # seconds; the agent answers from memory, so this is generous

# The codes every subcommand shares (hadirector/exitcodes.py): a refused reload is a
# config error, as in `check` and `run`; "needs root" is the agent's own no-privilege code.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = ExitCode.OK, ExitCode.INTERNAL_ERROR, ExitCode.USAGE
EXIT_UNREACHABLE, EXIT_NOPERM, EXIT_REFUSED = ExitCode.NOT_RUNNING, ExitCode.NO_PRIVILEGE, ExitCode.CONFIG_INVALID
EXIT_CONFIG = ExitCode.CONFIG_INVALID
DEFAULT_STATE_DIR = "/run/hadirector"
CONTROL_SOCKET = "control.sock"         # hadirector.api.control.SOCKET_NAME
RATE_LIMIT_RETRIES = 5
MAX_RETRY_WAIT = 5.0                    # s: never wait longer than this for one retry


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- arguments -------------------------------------------------------------------------


def add_arguments_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=None,
                        help=f"config file whose api.listen locates the agent "
                             f"(default {DEFAULT_CONFIG}, or {DEFAULT_HOST}:{DEFAULT_PORT} "
                             f"if that does not exist)")
    parser.add_argument("--url", default=None,
                        help="the agent's API base URL, e.g. http://127.0.0.1:9110")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=argparse.SUPPRESS)


def add_arguments_reload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=None,
                        help=f"config file whose node.state_dir holds the agent's control "
                             f"socket (default {DEFAULT_CONFIG}, or "
                             f"{DEFAULT_STATE_DIR}/{CONTROL_SOCKET} if that does not exist)")
    parser.add_argument("--socket", default=None,
                        help="the agent's control socket, e.g. "
                             f"{DEFAULT_STATE_DIR}/{CONTROL_SOCKET}")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the reload (default: as long as it takes)")


def add_arguments_drain(parser: argparse.ArgumentParser) -> None:
    add_arguments_reload(parser)
    parser.add_argument("--undo", action="store_true",
                        help="put the director back (its VIPs are announced again after the hold-down)")


def cmd_drain(args: argparse.Namespace) -> int:
    """A scale-out director: withdraw its VIPs from the routers now (``--undo``: back)."""
    try:
        path = control_socket_path(args.config, args.socket)
        data = control_request(path, "undrain" if args.undo else "drain", timeout=args.timeout)
        if not data.get("ok"):
            code = EXIT_NOPERM if data.get("reason") == "not_root" else EXIT_FAILED
            raise CliError(f"hadirector at {path}: {data.get('error', data)}", code)
    except CliError as e:
        print(f"hadirector drain: {e}", file=sys.stderr)
        return e.code
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        state = "drained" if data["drained"] else "back in service"
        print(f"{state}: " + ", ".join(f"{vip} {why}" for vip, why in data["vips"].items()))
    return EXIT_OK


# --- locating the agent ------------------------------------------------------------------


def api_base_url(config: str | None, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    path = config if config is not None else DEFAULT_CONFIG
    if config is None and not os.path.exists(path):
        return _http_url(DEFAULT_HOST, DEFAULT_PORT)
    host, port = _listen_from_config(path)
    return _http_url(host, port)


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _read_config(path: str) -> Any:
    import yaml  # only here: --url and --socket need no YAML

    from hadirector.config.compose import MAX_FILE_BYTES

    try:
        with open(path, encoding="utf-8") as f:
            # The agent's own size limit: /dev/zero or a runaway file is refused, not read.
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES or not os.path.isfile(path):
                raise CliError(f"cannot read {path}: not a regular file of at most "
                               f"{MAX_FILE_BYTES} bytes", EXIT_CONFIG)
            return yaml.safe_load(f)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", EXIT_CONFIG) from None
    except yaml.YAMLError as e:
        raise CliError(f"cannot parse {path}: {e}", EXIT_CONFIG) from None


def control_socket_path(config: str | None, sock: str | None) -> str:
    if sock:
        return sock
    path = config if config is not None else DEFAULT_CONFIG
    if config is None and not os.path.exists(path):
        return os.path.join(DEFAULT_STATE_DIR, CONTROL_SOCKET)
    doc = _read_config(path)
    node = doc.get("node") if isinstance(doc, dict) else None
    state_dir = node.get("state_dir") if isinstance(node, dict) else None
    if not isinstance(state_dir, str) or not state_dir:
        state_dir = DEFAULT_STATE_DIR
    return os.path.join(state_dir, CONTROL_SOCKET)


def _listen_from_config(path: str) -> tuple[str, int]:
    doc = _read_config(path)
    api = (doc or {}).get("api") if isinstance(doc, dict) else None
    if not isinstance(api, dict):
        return DEFAULT_HOST, DEFAULT_PORT
    if api.get("enabled", True) is False:
        raise CliError(f"the API is disabled in {path} (api.enabled: false); "
                       f"enable it to use this command", EXIT_USAGE)
    host, port = DEFAULT_HOST, DEFAULT_PORT
    listen = api.get("listen")
    if isinstance(listen, str) and listen:
        host, port = _split_listen(listen, path)
    host = str(api.get("listen_host", host))
    port = int(api.get("listen_port", port))
    # A wildcard listener is reached over loopback.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def _split_listen(listen: str, path: str) -> tuple[str, int]:
    """``127.0.0.1:9110``, ``[::1]:9110``, ``:9110`` or a bare host."""
    listen = listen.strip()
    try:
        if listen.startswith("["):
            host, _, rest = listen[1:].partition("]")
            return host, int(rest.lstrip(":")) if rest else DEFAULT_PORT
        if listen.count(":") == 1:
            host, port = listen.split(":")
            return host or DEFAULT_HOST, int(port)
        return listen, DEFAULT_PORT   # bare host (an IPv6 address without a port too)
    except ValueError:
        raise CliError(f"{path}: api.listen: cannot parse {listen!r} "
                       f"(want host:port)", EXIT_CONFIG) from None


# --- HTTP --------------------------------------------------------------------------------


def _request(base: str, path: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, headers={"Accept": "application/json"})
    where = base.removeprefix("http://").removeprefix("https://")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        # 4xx/5xx still carry the agent's JSON answer.
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise CliError(f"cannot reach hadirector at {where}: {_describe(reason)}"
                       f" — is the agent running?", EXIT_UNREACHABLE) from None


def _describe(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason)


def _decode(status: int | None, body: bytes, base: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()[:200]
        how = f" (HTTP {status})" if status is not None else ""
        raise CliError(f"unexpected answer from {base}{how}: {text!r}", EXIT_FAILED) from None


# --- commands -----------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    try:
        base = api_base_url(args.config, args.url)
        status, body = _request(base, "/status", timeout=args.timeout)
        data = _decode(status, body, base)
        if status != 200:
            raise CliError(f"hadirector at {base}: HTTP {status}: "
                           f"{data.get('error', data) if isinstance(data, dict) else data}",
                           EXIT_FAILED)
        if args.json:
            print(json.dumps(data, indent=2))
            return EXIT_OK
        try:
            snap = Snapshot.from_dict(data)
        except ValueError as e:
            raise CliError(f"cannot understand the agent's status ({e}); "
                           f"try --json", EXIT_FAILED) from None
        sys.stdout.write(render_status(snap))
        return EXIT_OK
    except CliError as e:
        print(f"hadirector status: {e}", file=sys.stderr)
        return e.code


def control_request(path: str, command: str, timeout: float | None = None) -> dict:
    """Send one command line to the control socket; its one JSON answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except PermissionError:
            raise CliError(f"permission denied on {path}: `hadirector reload` needs root",
                           EXIT_NOPERM) from None
        except FileNotFoundError:
            raise CliError(f"cannot reach hadirector at {path}: no such socket"
                           f" — is the agent running?", EXIT_UNREACHABLE) from None
        except OSError as e:
            raise CliError(f"cannot reach hadirector at {path}: {_describe(e)}"
                           f" — is the agent running?", EXIT_UNREACHABLE) from None
        try:
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as e:
            raise CliError(f"hadirector at {path}: {_describe(e)}", EXIT_FAILED) from None
    finally:
        sock.close()
    body = b"".join(chunks)
    if not body:
        raise CliError(f"hadirector at {path} closed the connection without an answer"
                       f" (too many requests at once?)", EXIT_FAILED)
    data = _decode(None, body, path)
    if not isinstance(data, dict):
        raise CliError(f"unexpected answer from {path}: {str(data)[:200]!r}", EXIT_FAILED)
    return data


def cmd_reload(args: argparse.Namespace) -> int:
    try:
        path = control_socket_path(args.config, args.socket)
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            data = control_request(path, "reload", timeout=args.timeout)
            if data.get("reason") != "rate_limited" or attempt == RATE_LIMIT_RETRIES:
                break
            time.sleep(min(MAX_RETRY_WAIT, max(0.05, float(data.get("retry_after", 1.0)))))
        if "ok" not in data:
            code = EXIT_NOPERM if data.get("reason") == "not_root" else EXIT_FAILED
            raise CliError(f"hadirector at {path}: {data.get('error', data)}", code)
        result = from_jsonable(ReloadResult, data)
    except (CliError, ValueError) as e:
        code = e.code if isinstance(e, CliError) else EXIT_FAILED
        print(f"hadirector reload: {e}", file=sys.stderr)
        return code
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        out = sys.stdout if result.ok else sys.stderr
        out.write(render_reload(result))
    return EXIT_OK if result.ok else EXIT_REFUSED


# --- rendering (pure) ------------------------------------------------------------------------


def render_reload(r: ReloadResult) -> str:
    lines = []
    if r.ok:
        head = f"reload applied: config generation {r.generation}"
        if not r.changes:
            head += ", nothing changed"
        lines.append(head + (f" ({r.message})" if r.message else ""))
        lines += [f"  {c}" for c in r.changes]
    else:
        lines.append(f"reload refused, still running config generation {r.generation}"
                     + (f": {r.message}" if r.message else ""))
        lines += [f"  {e}" for e in r.errors]
    return "\n".join(lines) + "\n"


def format_age(seconds: float) -> str:
    """``45s``, ``5m12s``, ``3h04m``, ``2d07h`` — short, like kubectl's AGE."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = lambda cells: indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [fmt(header)] + [fmt(r) for r in rows]


# ipvsadm's names for the forwarding methods.
_FORWARD = {"nat": "Masq", "dr": "Route", "tun": "Tunnel", "local": "Local"}


def _vrrp_rows(snap: Snapshot) -> list[list[str]]:
    rows = []
    for v in snap.vrrp_instances:
        invalid = sum(v.adverts_invalid.values())
        rows.append([
            v.name, str(v.vrid), v.interface, f"v{v.version}", v.state.value,
            _priority(v), v.master_address or "-",
            format_age(snap.generated_at - v.since),
            (v.reason or "-") + (f" ({', '.join(v.faults)})" if v.faults else ""), str(v.transitions),
            f"{v.adverts_sent}/{v.adverts_received}/{invalid}",
        ])
    return rows


def _priority(v: VrrpInstanceStatus) -> str:
    if v.effective_priority == v.priority:
        return str(v.priority)
    return f"{v.effective_priority} ({v.priority})"


def _health_text(rs: RealServerStatus, now: float) -> str:
    text = rs.health.value
    if rs.health_since is not None and rs.health is not HealthState.UNKNOWN:
        text += f" {format_age(now - rs.health_since)}"
    if rs.last_check is not None:
        c = rs.last_check
        latency = f"{c.latency * 1000:.1f}ms"
        detail = f"{c.detail}, inconclusive" if c.inconclusive else c.detail
        text += f" ({detail}, {latency})" if detail else f" ({latency})"
    return text


def render_status(snap: Snapshot) -> str:
    now = snap.generated_at
    n = snap.node
    out: list[str] = []
    version = f" {n.version}" if n.version else ""
    out.append(f"hadirector{version} on {n.router_id} (pid {n.pid}), "
               f"up {format_age(now - n.started_at)}")
    out.append(f"config {n.config_path}, generation {n.config_generation}, "
               f"loaded {format_age(now - n.config_loaded_at)} ago")
    r = snap.reloads
    if r.count:
        last = "applied" if r.last_ok else "REFUSED"
        ago = f" {format_age(now - r.last_at)} ago" if r.last_at is not None else ""
        line = f"reloads: {r.count} ({r.failures} refused), last {last}{ago}"
        if not r.last_ok and r.last_error:
            line += f": {r.last_error}"
        out.append(line)

    out += ["", "VRRP instances"]
    if snap.vrrp_instances:
        out += _table(["NAME", "VRID", "IFACE", "VER", "STATE", "PRIO", "MASTER", "SINCE",
                       "REASON", "TRANS", "ADVERTS S/R/BAD"], _vrrp_rows(snap), indent="  ")
        for v in snap.vrrp_instances:
            if v.preempt_held_until is not None and v.preempt_held_until > now:
                out.append(f"  {v.name}: not preempting for {v.preempt_held_until - now:.0f}s more "
                           "(backup sync daemon catching up)")
            if v.auth is not None:
                a = v.auth
                refused = ", ".join(f"{r} {n}" for r, n in sorted(a.rejected.items())) or "none"
                out.append(f"  {v.name}: auth {a.mode}, signing key {a.active_key} (keys "
                           f"{', '.join(map(str, a.key_ids))}), {a.anti_replay} window {a.time_window}s; "
                           f"verified {a.verified}, refused: {refused}")
    else:
        out.append("  (none)")

    out += ["", "Virtual services"]
    out += _ipvs_unavailable(snap)
    if snap.virtual_services:
        out += _services(snap)
    else:
        out.append("  (none)")

    out += ["", "Sync daemon"]
    out += _sync(snap)
    if snap.scale_out is not None:
        out += ["", "Scale-out"] + _scale_out(snap.scale_out)

    h = snap.health
    if h.checks or h.latency.count or h.worker is not None:
        out += ["", "Health checks"]
        if h.worker is not None:
            out.append(_worker_line(h.worker, now))
        by_result = ", ".join(f"{k} {v}" for k, v in sorted(h.checks.items())) or "none"
        line = f"  {sum(h.checks.values())} run: {by_result}"
        if h.latency.count:
            line += f"; mean latency {h.latency.sum / h.latency.count * 1000:.1f}ms"
        out.append(line)
        if h.inconclusive:
            out.append("  inconclusive (not counted): "
                       + ", ".join(f"{k} {v}" for k, v in sorted(h.inconclusive.items())))
    out += _faults_absorbed(snap)
    return "\n".join(out) + "\n"


def _worker_line(w: HealthWorkerStatus, now: float) -> str:
    """The checker worker (engine worker) in one line: is it there, how often it died, why."""
    age = f" {format_age(now - w.since)}" if w.since is not None else ""
    state = f"pid {w.pid}, up{age}" if w.running else f"DOWN{age}, its checks wait for a restart"
    line = f"  checker worker: {state}; {w.restarts} restart(s)"
    if w.last_exit is not None:
        line += f", last exit: {w.last_exit}"
    return line


def _scale_out(so) -> list[str]:
    out = [f"  gate table {so.table}" + (", DRAINED by the operator" if so.drained else "")
           + f", {so.gate_changes} change(s)"]
    for v in so.vips:
        out.append(f"  {v.vip}: " + ("announced" if v.announced else f"not announced ({v.reason})"))
    for service, digest in sorted(so.digests.items()):
        out.append(f"  {service}: destinations digest {digest or '?'} (equal on every director = same backends)")
    if so.sysctl_drift:
        drift = ", ".join(f"net.ipv4.vs.{n}={so.sysctls.get(n) or '?'}" for n in so.sysctl_drift)
        out.append(f"  SYSCTL DRIFT: {drift} (scale-out needs 1)")
    if so.bird_error is not None:
        out.append(f"  BIRD: {so.bird_error}")
    for b in so.bgp:
        out.append(f"  BGP {b.name}: {b.state} {b.info}".rstrip())
    for f in so.bfd:
        out.append(f"  BFD {f.address} on {f.interface}: {f.state}")
    return out


def _counts(counts) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"


def _faults_absorbed(snap: Snapshot) -> list[str]:
    """Link watch and local API counters (what ``/metrics`` exports), one line each."""
    lw = snap.link_watch
    lines = ["", "Faults absorbed",
             f"  link watch: {lw.overruns} overrun(s), {lw.resyncs} resync(s), "
             f"{lw.resubscribes} resubscribe(s), {lw.restarts} restart(s)"]
    for name, lst in (("http API", snap.api.http), ("control socket", snap.api.control)):
        if lst is None:
            continue
        line = (f"  {name}: {lst.accepted} accepted; dropped {_counts(lst.dropped)}; "
                f"refused {_counts(lst.refused)}")
        if lst.accept_failures or lst.accept_pauses:
            line += f"; accept failures {_counts(lst.accept_failures)}, {lst.accept_pauses} pause(s)"
        lines.append(line)
    return lines


def _ipvs_unavailable(snap: Snapshot) -> list[str]:
    ipvs = snap.ipvs
    if not ipvs.needed or ipvs.available is not False:
        return []
    now = snap.generated_at
    since = f" for {format_age(now - ipvs.since)}" if ipvs.since is not None else ""
    line = f"  IPVS UNAVAILABLE{since}: {ipvs.reason or 'unknown reason'}"
    lines = [line]
    retry = f"  {ipvs.failures} attempt(s) failed"
    if ipvs.next_attempt_at is not None:
        retry += f", next in {format_age(ipvs.next_attempt_at - now)}"
    lines.append(retry + "; the instances the LVS side follows stay in FAULT (ipvs_unavailable)")
    return lines


def _services(snap: Snapshot) -> list[str]:
    """Laid out like ``ipvsadm -Ln``: the service line, then its real servers indented
    under ``->``, with weight and connections, plus health and service name."""
    now = snap.generated_at
    rows: list[list[str]] = []
    for vs in snap.virtual_services:
        flags = []
        if vs.persistence_timeout:
            flags.append(f"persistent {vs.persistence_timeout}")
        notes = [vs.name, "quorum up" if vs.quorum_up else "QUORUM DOWN"]
        if not vs.in_kernel:
            notes.append("not in kernel")
        rows.append([f"{vs.key.replace(' ', '  ', 1)} {vs.scheduler}"
                     + ("".join(" " + f for f in flags)), "", "", "", "",
                     "(" + ", ".join(notes) + ")"])
        for rs in vs.real_servers:
            weight = str(rs.kernel_weight) if rs.kernel_weight is not None else "-"
            if rs.kernel_weight is not None and rs.kernel_weight != rs.weight:
                weight += f" ({rs.weight})"
            name = f"  -> {rs.endpoint}" + (" (sorry)" if rs.sorry_server else "")
            rows.append([name, _FORWARD.get(rs.forward, rs.forward), weight,
                         str(rs.active_conns), str(rs.inactive_conns), _health_text(rs, now)])
    return _table(["Prot LocalAddress:Port Scheduler Flags", "Forward", "Weight",
                   "ActiveConn", "InActConn", "Health"], rows, indent="  ")


def _sync(snap: Snapshot) -> list[str]:
    sd = snap.sync_daemon
    if not sd.configured:
        head = "  not configured"
    else:
        head = f"  desired {sd.desired_role.value}"
        if sd.interface:
            head += f" on {sd.interface}"
        if sd.syncid is not None:
            head += f" syncid {sd.syncid}"
        if sd.follow_instance:
            head += f", follows {sd.follow_instance}"
    lines = [head]
    if sd.kernel:
        for k in sd.kernel:
            lines.append(f"  kernel: {k.role.value} on {k.interface} syncid {k.syncid}")
    elif sd.configured:
        lines.append("  kernel: no daemon running")
    return lines
