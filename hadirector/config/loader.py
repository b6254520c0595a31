"""YAML config file -> validated ``hadirector.model.Config``.

Theory of operation: the file is composed into PyYAML nodes (see ``fields``), then
converted section by section with one ``Record`` table per model dataclass. Each key is
declared once, on its ``F(key, converter, doc=K(words, keepalived keyword))`` line;
hadirector.yaml(5) is generated from these lines and the model's defaults. A new field
is its model field (marked ``LIVE`` when a running VRRP machine can adopt it on reload)
plus that line; ``config --effective`` writes it by itself (virtual services, real
servers and checks excepted: ``effective`` writes those by hand). Checks
that need several fields of one record live in that record's ``finish`` hook; checks
across records (names, references, vrid clashes) run last on whatever sections were
valid. Every problem is reported as ``file:line:column: key.path: message``, with any
value it echoes cut to 80 characters. The work is bounded (``compose``): a file of at
most 1 MiB, at most 200,000 nodes with aliases and merge keys expanded, 64 levels deep.

YAML-only conveniences (they do not exist in the model):
- a virtual service's ``forward``, ``tunnel_*`` and ``check`` are defaults for its
  real servers (keepalived's ``lb_kind`` is per service too; the sorry server takes
  the first two);
- a real server's ``check`` mapping is merged over the service's (unless it names
  another ``type``, then it replaces it); ``check: false`` (or null) turns it off;
- a virtual service without ``name`` is named after its key, e.g. ``tcp/192.0.2.10:80``;
- ``node.router_id`` defaults to the host name (as keepalived's ``router_id``);
- top-level keys starting with ``x-`` are ignored: a place for YAML anchors
  (``x-web-check: &web {type: http, path: /health}`` ... ``check: *web``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from .. import model as m
from .compose import MAX_FILE_BYTES, TooComplex, compose
from .errors import ConfigError, ConfigIssue, clip, shown
from .fields import described
from .fields import (
    Conv, Ctx, Field as F, Invalid, KeyDoc as K, Pair, Record, View, boolean, choice, command, describe,
    duration, enum_of, family_name, integer, interface_name, ip_address, ip_interface, is_null, join, mapping_pairs,
    one_of_shapes, optional, record, regex, seq, string, whole_seconds,
)
from .lint import lint
from .scaleout import SCALE_OUT, check_services as _check_scale_out

U16 = 65535


def hex_bytes() -> Conv:
    """Hex digits (blanks allowed between bytes) -> bytes, as keepalived's UDP payload."""
    what = "hex digits (an even number of 0-9a-f, blanks allowed)"

    def conv(ctx: Ctx, node: Node, path: str) -> bytes:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str" and node.value == "":
            return b""                      # the default, as ``config --effective`` writes it
        text = string(what=what)(ctx, node, path)
        try:
            return bytes.fromhex(text)
        except ValueError:
            ctx.fail(node, path, f"expected {what}, got {shown(text)}")

    return described(conv, what)


def status_range() -> Conv:
    """An HTTP status code (``204``) or an inclusive range of them (``"200-299"``, as
    keepalived's ``status_code``), each 100 to 599."""
    code = integer(100, 599)
    what = "a status code 100-599 or a range like 200-299"

    def conv(ctx: Ctx, node: Node, path: str) -> m.StatusRange:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            low, dash, high = node.value.partition("-")
            if not (dash and low.strip().isdecimal() and high.strip().isdecimal()):
                ctx.fail(node, path, f"expected {what}, got {shown(node.value)}")
            lo, hi = int(low), int(high)
            if not 100 <= lo <= hi <= 599:
                ctx.fail(node, path, f"expected {what} (low <= high), got {shown(node.value)}")
            return m.StatusRange(lo, hi)
        value = code(ctx, node, path)
        return m.StatusRange(value, value)

    return described(conv, what)
U32 = 2**32 - 1
CHECK_TYPES = ("tcp", "http", "https", "script", "dns", "udp", "ping", "smtp")


def _default(cls: type, attr: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == attr)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _get(kw: dict[str, Any], cls: type, attr: str) -> Any:
    return kw[attr] if attr in kw else _default(cls, attr)


def _own(view: View, key: str) -> bool:
    """Whether ``key`` is written in this mapping (not inherited from a service)."""
    return (key in view.pairs and isinstance(view.node, MappingNode)
            and any(k is view.pairs[key][0] for k, _ in view.node.value))


def _raw(ctx: Ctx, node: Node, path: str) -> Node:
    return node   # converted later by the record's finish hook, which needs context


def _family(ctx: Ctx, node: Node, path: str) -> int:
    if not (isinstance(node, ScalarNode) and node.tag.endswith(":int") and node.value in ("4", "6")):
        ctx.fail(node, path, f"expected 4 or 6, got {describe(node)}")
    return int(node.value)


# --- node, api ------------------------------------------------------------------------


def _finish_node(ctx: Ctx, v: View, kw: dict) -> None:
    kw.setdefault("router_id", socket.gethostname())


NODE = Record(m.NodeSettings, (
    F("router_id", string(),
      doc=K("This director's name in logs and status.", "router_id", default="the host name")),
    F("log_format", enum_of(m.LogFormat, what="log format"),
      doc=K("console: key=value lines; json: one JSON object per event. --log-format and "
            "HADIRECTOR_LOG_FORMAT override it.", None)),
    F("state_dir", string(r"/.*", "an absolute path"),
      doc=K("Where state.json and control.sock live (the unit's RuntimeDirectory).", None)),
), _finish_node)


def _listen(ctx: Ctx, node: Node, path: str) -> tuple[str, int]:
    expected = "expected HOST:PORT like 127.0.0.1:9110 or [::1]:9110"
    text = node.value if isinstance(node, ScalarNode) and node.tag.endswith(":str") else ""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= U16:
        ctx.fail(node, path, f"{expected}, got {describe(node)}")
    return host, int(port)


def _finish_api(ctx: Ctx, v: View, kw: dict) -> None:
    if "listen" in kw:
        kw["listen_host"], kw["listen_port"] = kw.pop("listen")


API = Record(m.ApiSettings, (
    F("listen", _listen,
      doc=K("Address and port of the HTTP API.", None,
            type="HOST:PORT, e.g. 127.0.0.1:9110 or [::1]:9110", default="127.0.0.1:9110")),
    F("enabled", boolean(),
      doc=K("false: no HTTP API (hadirector reload still works over control.sock).", None)),
), _finish_api)


HEALTH = Record(m.HealthSettings, (
    F("engine", enum_of(m.HealthEngine, what="health engine"),
      doc=K("asyncio: every check runs on the agent's event loop; worker: TCP and plain-HTTP checks "
            "run in a checker process the agent starts (and restarts), the others on the loop.",
            None)),
))


# --- VRRP -------------------------------------------------------------------------------

# keepalived allows track weights of -254..254 so a priority can move the whole range.
_track_weight = integer(-254, 254)

TRACK_INTERFACE = Record(m.TrackInterface, (
    F("name", interface_name(), required=True,
      doc=K("The interface name.", "the interface in track_interface { }")),
    F("weight", _track_weight,
      doc=K("0: link down puts the instance in FAULT; otherwise the priority moves by this much while "
            "the link is down.", "weight")),
))


def _track_interface_by_name(ctx: Ctx, node: Node, path: str) -> m.TrackInterface:
    if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        string(what="an interface name or {name, weight}")(ctx, node, path)     # fails, saying why
    return m.TrackInterface(name=interface_name()(ctx, node, path))


TRACK_SCRIPT = Record(m.TrackScript, (
    F("name", string(), required=True,
      doc=K("The name instances refer to in track_scripts.", "vrrp_script NAME")),
    F("command", command(), required=True,
      doc=K("The command; exit status 0 is success. keepalived runs it through /bin/sh; here it is an "
            "argv, never run by a shell.", "script")),
    F("interval", duration(gt=0),
      doc=K("Seconds between runs.", "interval")),
    F("timeout", duration(gt=0),
      doc=K("A run taking longer fails.", "timeout")),
    F("weight", _track_weight,
      doc=K("0: failing puts the tracking instances in FAULT; otherwise their priority moves by this "
            "much while failing.", "weight")),
    F("rise", integer(1, 1000),
      doc=K("Successes in a row that end a failure.", "rise")),
    F("fall", integer(1, 1000),
      doc=K("Failures in a row that start one.", "fall")),
), hints={"script": "keepalived's script; here: command"})

NOTIFY = Record(m.NotifyScripts, (
    F("master", command(),
      doc=K("Run on becoming MASTER. keepalived runs it through /bin/sh; here it is an argv, never "
            "run by a shell.", "notify_master")),
    F("backup", command(),
      doc=K("Run on becoming BACKUP.", "notify_backup")),
    F("fault", command(),
      doc=K("Run on entering FAULT.", "notify_fault")),
    F("stop", command(),
      doc=K("Run when the instance stops.", "notify_stop")),
    F("notify", command(),
      doc=K("Run on every change, with keepalived's arguments appended: INSTANCE|GROUP name state "
            "priority.", "notify")),
    F("timeout", duration(gt=0),
      doc=K("A script still running after this is killed with its whole process tree.", None)),
), hints={k: f"keepalived's {k}; here: {k.removeprefix('notify_')}"
          for k in ("notify_master", "notify_backup", "notify_fault", "notify_stop")})

GARP = Record(m.GarpSettings, (
    F("count", integer(0, 255),
      doc=K("Packets per VIP per burst.", "garp_master_repeat")),
    F("interval", duration(ge=0, le=1),
      doc=K("Seconds between the packets of one burst.", "garp_interval, gna_interval")),
    F("repeat_delay", duration(ge=0),
      doc=K("A second burst this long after the first; 0: none.", "garp_master_delay")),
    F("refresh", duration(ge=0),
      doc=K("A burst this often while master; 0: never.", "garp_master_refresh")),
))


# --- VRRP: authenticated adverts (keepalived's auth_hmac, vrrp/auth.py) ------------------

_KEY_MIN, _KEY_MAX = 32, 64            # bytes, as keepalived (VRRP_AUTH_HMAC_KEY_MIN/MAX)
_KEY_FILE_MAX = 4 + 2 * _KEY_MAX + 8   # "hex:" + digits + a line end and some slack


def read_key_file(path: str) -> tuple[bytes, str | None]:
    """(secret, warning) of an auth key file, in keepalived's format so one file serves
    both: a trailing line end is dropped; ``hex:`` followed by hex digits is those
    bytes, anything else the bytes as written. Raises ValueError with what is wrong; the
    message never contains the secret."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(_KEY_FILE_MAX + 1)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if st.st_uid not in (0, os.geteuid()):
        raise ValueError(f"{path} is owned by uid {st.st_uid}; a key file must be root's")
    if len(data) > _KEY_FILE_MAX:
        raise ValueError(f"{path} is too large for a key ({_KEY_MIN}-{_KEY_MAX} bytes, or hex: and "
                         f"{2 * _KEY_MIN}-{2 * _KEY_MAX} hex digits)")
    data = data.rstrip(b"\r\n")
    if data.startswith(b"hex:"):
        try:
            secret = bytes.fromhex(data[4:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{path}: after hex: expected hex digits only") from None
    else:
        secret = data
    if not _KEY_MIN <= len(secret) <= _KEY_MAX:
        raise ValueError(f"{path} holds a {len(secret)}-byte key; expected {_KEY_MIN}-{_KEY_MAX} bytes "
                         f"(raw, or hex: and {2 * _KEY_MIN}-{2 * _KEY_MAX} hex digits)")
    warning = None
    if st.st_mode & 0o077:
        warning = (f"key file {path} is readable by group or others (mode {st.st_mode & 0o777:04o}); "
                   f"chmod 600 {path}")
    return secret, warning


def _finish_auth_key(ctx: Ctx, v: View, kw: dict) -> None:
    try:
        kw["secret"], warning = read_key_file(kw["secret_file"])
    except ValueError as e:
        v.fail("secret_file", str(e))
    if warning:
        v.warn("secret_file", warning)


AUTH_KEY = Record(m.AuthKey, (
    F("id", integer(1, 255), required=True,
      doc=K("The key id carried in each signed advert.", "key ID")),
    F("secret_file", string(r"/.*", "an absolute path"), required=True,
      doc=K("The file holding the key, root's and mode 0600: 32-64 bytes as written, or hex: and "
            "64-128 hex digits (keepalived's format; a trailing line end is ignored). Never logged, "
            "never in status or config --effective.", "key ID file:PATH")),
), _finish_auth_key)


def _finish_auth(ctx: Ctx, v: View, kw: dict) -> None:
    ids: dict[int, int] = {}
    for i, key in enumerate(kw.get("keys", ())):
        if key.id in ids:
            v.error("keys", f"key id {key.id} is listed twice (first as keys[{ids[key.id]}])", i)
        ids.setdefault(key.id, i)
    if "active_key" not in kw and len(ids) == 1:
        kw["active_key"] = next(iter(ids))
    elif "active_key" not in kw:
        ctx.error(v.node, v.key_path("active_key"), "missing required key (which of the keys signs)")
    elif kw["active_key"] not in ids:
        v.error("active_key", f"no key with id {kw['active_key']} "
                f"(keys: {', '.join(str(i) for i in sorted(ids))})")


AUTH = Record(m.VrrpAuth, (
    F("mode", enum_of(m.AuthMode, aliases={"receive-only": m.AuthMode.RECEIVE_ONLY}, what="auth mode"),
      doc=K("enforce: sign, and drop adverts without a valid signature; permissive: sign, and also "
            "accept unsigned adverts; receive_only: send unsigned, check signatures that come. "
            "Roll out receive_only -> permissive -> enforce, one reload at a time.", "mode")),
    F("active_key", integer(1, 255),
      doc=K("The id of the key that signs; every listed key verifies.", "active_key",
            default="the only key, when there is one")),
    F("keys", seq(record(AUTH_KEY), min_len=1, what="key"), required=True,
      doc=K("The keys, each {id, secret_file}.", "key ID VALUE")),
    F("anti_replay", enum_of(m.AntiReplay, what="anti-replay mode"),
      doc=K("time: a signature older or newer than time_window is refused (clocks in sync, NTP); "
            "monotonic: only a growing sequence per sender.", "anti_replay")),
    F("time_window", optional(whole_seconds(1, 300)),
      doc=K("How far a signature's UTC timestamp may be from this host's clock.", "time_window",
            default="max(3 x advert_interval, 5s)")),
), _finish_auth, hints={
    "key": "keepalived's key ID VALUE; here: keys: [{id: 1, secret_file: /etc/hadirector/vrrp-key-1}]",
    "window": "here: time_window",
})


def _finish_vrrp(ctx: Ctx, v: View, kw: dict) -> None:
    vips: tuple = kw["virtual_ips"]
    family = vips[0].version
    seen: dict = {}
    for i, vip in enumerate(vips):
        if vip.version != family:
            v.error("virtual_ips", f"{family_name(vip.version)} address {vip} mixed with "
                    f"{family_name(family)} ones; IPv4 and IPv6 need separate instances "
                    "(RFC 5798: one address family per virtual router)", i)
        elif vip.ip in seen:
            v.error("virtual_ips", f"{vip.ip} is listed twice (first as virtual_ips[{seen[vip.ip]}])", i)
        seen.setdefault(vip.ip, i)

    version = _get(kw, m.VrrpInstance, "version")
    if version == 2 and family == 6:
        v.error("version", "VRRPv2 (RFC 3768) is IPv4 only; use version 3 for IPv6")
    adv = _get(kw, m.VrrpInstance, "advert_interval")
    if version == 2:
        # RFC 3768 5.3.7: Adver Int is an 8-bit count of seconds.
        if adv != int(adv) or not 1 <= adv <= 255:
            v.error("advert_interval", f"expected whole seconds 1..255 for VRRPv2, got {adv:g}")
    else:
        # RFC 5798 5.2.7: Max Advertise Interval is a 12-bit count of centiseconds.
        cs = round(adv * 100)
        if abs(adv * 100 - cs) > 1e-6:
            v.error("advert_interval", f"expected a multiple of 10ms (centiseconds, RFC 5798 5.2.7), got {adv:g}")
        elif not 1 <= cs <= 4095:
            v.error("advert_interval", f"expected 0.01..40.95 s (RFC 5798 5.2.7), got {adv:g}")
        else:
            kw["advert_interval"] = cs / 100

    src = kw.get("unicast_src")
    if src is not None and src.version != family:
        v.error("unicast_src", f"expected an {family_name(family)} address like the virtual_ips, got {src}")
    for i, peer in enumerate(kw.get("unicast_peers", ())):
        if peer.version != family:
            v.error("unicast_peers", f"expected an {family_name(family)} address like the virtual_ips, got {peer}", i)
    for i, peer in enumerate(kw.get("peers", ())):
        if peer.version != family:
            v.error("peers", f"expected an {family_name(family)} address like the virtual_ips, got {peer}", i)
    if kw.get("peers") and kw.get("unicast_peers"):
        v.error("peers", "peers is the multicast allow-list; with unicast_peers those already are")
    names: set[str] = set()
    for i, name in enumerate(kw.get("track_scripts", ())):
        if name in names:
            v.error("track_scripts", f"track script {shown(name)} is listed twice", i)
        names.add(name)


VRRP_INSTANCE = Record(m.VrrpInstance, (
    F("name", string(), required=True,
      doc=K("The instance's name, unique in the file.", "vrrp_instance NAME")),
    F("interface", interface_name(), required=True,
      doc=K("The interface VRRP adverts are sent and received on.", "interface")),
    F("vrid", integer(1, 255), required=True,
      doc=K("The virtual router id, the same on both directors (RFC 5798 5.2.3).", "virtual_router_id")),
    F("priority", integer(1, 255),
      doc=K("Higher wins the election; 255 means this node owns the addresses (RFC 5798 5.2.4).",
            "priority")),
    F("version", integer(2, 3),
      doc=K("3: VRRPv3 (RFC 5798); 2: VRRPv2 (RFC 3768, IPv4 only), for a pair with a keepalived peer "
            "on its default.", "version, or vrrp_version in global_defs")),
    F("advert_interval", duration(gt=0),
      doc=K("Seconds between adverts; centiseconds resolution (VRRPv2: whole seconds).", "advert_int")),
    F("virtual_ips", seq(ip_interface(), min_len=1, what="virtual IP"), required=True,
      doc=K("The addresses the master holds, all of one family.", "virtual_ipaddress")),
    F("preempt", boolean(),
      doc=K("A higher-priority backup takes the VIPs from a live master.", "nopreempt (the opposite)")),
    F("preempt_delay", duration(ge=0, le=1000),
      doc=K("How long a node waits after start-up before it preempts.", "preempt_delay")),
    F("accept_mode", boolean(),
      doc=K("The master accepts packets sent to the VIPs it does not own (RFC 5798 6.1).",
            "accept / no_accept")),
    F("unicast_src", optional(ip_address(multicast=False)),
      doc=K("Send adverts by unicast from this address (with unicast_peers) instead of multicast.",
            "unicast_src_ip")),
    F("unicast_peers", seq(ip_address(multicast=False)),
      doc=K("The peers' addresses for unicast adverts.", "unicast_peer { }")),
    F("track_interfaces", seq(one_of_shapes(_track_interface_by_name, record(TRACK_INTERFACE))),
      doc=K("Links whose state moves this instance's priority, or puts it in FAULT.",
            "track_interface { }", type="a list of: an interface name, or a mapping {name, weight}")),
    F("track_scripts", seq(string(what="a track script name")),
      doc=K("Names of track_scripts entries this instance follows.", "track_script { }")),
    F("notify", record(NOTIFY, nullable=True),
      doc=K("Commands run on a state change.",
            "notify_master, notify_backup, notify_fault, notify_stop, notify")),
    F("garp", record(GARP, nullable=True),
      doc=K("Gratuitous ARP / unsolicited NA sent when becoming master.",
            "garp_master_* and vrrp_garp_* in global_defs")),
    F("auth", optional(record(AUTH)),
      doc=K("Signed adverts (keepalived's auth_hmac trailer, wire-compatible with keepalived 2.4.2+); "
            "null: none.", "auth_hmac { }", default="the top-level auth, or none")),
    F("peers", seq(ip_address(multicast=False)),
      doc=K("Multicast: accept adverts only from these addresses (others are dropped and counted as "
            "unknown_peer); empty: from anyone.", None)),
), _finish_vrrp, hints={
    "virtual_router_id": "keepalived's virtual_router_id; here: vrid",
    "advert_int": "keepalived's advert_int; here: advert_interval",
    "virtual_ipaddress": "keepalived's virtual_ipaddress; here: virtual_ips",
    "track_interface": "keepalived's track_interface; here: track_interfaces",
    "track_script": "keepalived's track_script; here: track_scripts",
    "unicast_src_ip": "keepalived's unicast_src_ip; here: unicast_src",
    "unicast_peer": "keepalived's unicast_peer; here: unicast_peers",
    "nopreempt": "keepalived's nopreempt; here: preempt: false",
    "state": "keepalived's state is not used: the priority decides who becomes master",
    "authentication": "the RFC 2338 password is not supported (RFC 5798 removed it); signed adverts: auth",
    "auth_hmac": "keepalived's auth_hmac; here: auth",
    "notify_master": "keepalived's notify_master; here: notify: {master: ...}",
    "notify_backup": "keepalived's notify_backup; here: notify: {backup: ...}",
    "notify_fault": "keepalived's notify_fault; here: notify: {fault: ...}",
})

SYNC_GROUP = Record(m.SyncGroup, (
    F("name", string(), required=True,
      doc=K("The group's name; lvs.sync_daemon.follow_instance may name it.", "vrrp_sync_group NAME")),
    F("instances", seq(string(what="a vrrp instance name"), min_len=1, what="instance"), required=True,
      doc=K("Member instances: if one goes to BACKUP or FAULT, all do.", "group { }")),
    F("notify", record(NOTIFY, nullable=True),
      doc=K("Commands run on a state change of the group (keys as an instance's notify).",
            "notify_* in vrrp_sync_group")),
), hints={"group": "keepalived's group; here: instances"})


# --- LVS: health checks ------------------------------------------------------------------

_HTTP_KEYS = ("path", "status_codes", "body_regex", "digest", "host")
# Probe keys and the check types that use them.
_PROBE_KEYS: dict[str, tuple[str, ...]] = {
    **{k: ("http", "https") for k in _HTTP_KEYS},
    "verify_tls": ("https",), "ca_file": ("https",), "command": ("script",), "dynamic": ("script",),
    "name": ("dns",), "query_type": ("dns",), "rcode": ("dns",), "answer_regex": ("dns",), "transport": ("dns",),
    "payload": ("udp",), "payload_hex": ("udp",), "require_reply": ("udp",), "reply_regex": ("udp",),
    "helo_name": ("smtp",),
}
# A DNS name: labels of 1-63 letters, digits, '-', '_' or '*', dot-separated, at most
# 253 characters, an optional final dot; "." is the root.
_DNS_NAME = r"\.|(?=.{1,254}$)(?:[A-Za-z0-9_*](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*" \
            r"[A-Za-z0-9_*](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"


def _finish_check(ctx: Ctx, v: View, kw: dict) -> None:
    kind = kw.pop("type")
    probe_kw = {k: kw.pop(k) for k in list(kw) if k in _PROBE_KEYS}
    for key in probe_kw:
        if kind not in _PROBE_KEYS[key]:
            v.error(key, f"not used by a {kind} check (only by {', '.join(_PROBE_KEYS[key])})")
    if kind == "script" and "command" not in probe_kw:
        ctx.error(v.node, v.key_path("command"), "missing required key (a script check needs a command)")
    if kind == "tcp":
        kw["probe"] = m.TcpProbe()
    elif kind == "script":
        kw["probe"] = m.ScriptProbe(command=probe_kw.get("command", ()),
                                    dynamic=probe_kw.get("dynamic", False))
    elif kind == "dns":
        kw["probe"] = m.DnsProbe(**probe_kw)
    elif kind == "udp":
        if "payload" in probe_kw and "payload_hex" in probe_kw:
            v.error("payload_hex", "give payload or payload_hex, not both")
        payload = probe_kw.pop("payload", "").encode() + probe_kw.pop("payload_hex", b"")
        if probe_kw.get("reply_regex") is not None and not probe_kw.get("require_reply"):
            v.error("reply_regex", "a reply regex needs require_reply: true")
        kw["probe"] = m.UdpProbe(payload=payload, **probe_kw)
    elif kind == "ping":
        kw["probe"] = m.PingProbe()
    elif kind == "smtp":
        kw["probe"] = m.SmtpProbe(**probe_kw)
    else:
        kw["probe"] = m.HttpProbe(tls=kind == "https", **probe_kw)


CHECK = Record(m.HealthCheck, (
    F("type", choice(CHECK_TYPES, "check type"), required=True,
      doc=K("tcp: a connect; http, https: a GET; script: a command; dns: a query over UDP; "
            "udp: a datagram; ping: an ICMP echo; smtp: banner, EHLO, QUIT.",
            "TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK, UDP_CHECK, PING_CHECK, SMTP_CHECK")),
    F("interval", duration(gt=0),
      doc=K("Seconds between checks.", "delay_loop")),
    F("timeout", duration(gt=0),
      doc=K("A check taking longer fails.", "connect_timeout, misc_timeout")),
    F("rise", integer(1, 1000),
      doc=K("Successes in a row that bring a server up.", None)),
    F("fall", integer(1, 1000),
      doc=K("Failures in a row that take it down.", "retry (fall = retry + 1)")),
    # Listed in start-up order (the enum's own order is the status API's: up, down, unknown).
    F("initial", enum_of((m.HealthState.UNKNOWN, m.HealthState.UP, m.HealthState.DOWN),  # type: ignore[arg-type]
                         what="initial state"),
      doc=K("The state before the first result; unknown: not programmed until then.",
            "alpha (start down; without it: up)")),
    F("jitter", duration(ge=0),
      doc=K("Each check starts up to this much late, to spread them out.", "warmup")),
    F("retry_delay", optional(duration(gt=0)),
      doc=K("After a failure, check again this soon; null: after interval.", "delay_before_retry")),
    F("bind_to", optional(ip_address(multicast=False)),
      doc=K("Source address of the check.", "bindto")),
    F("address", optional(ip_address(multicast=False)),
      doc=K("Check this address instead of the real server's.", "connect_ip")),
    F("port", optional(integer(1, U16)),
      doc=K("... and this port; null: the real server's (or the service's).", "connect_port")),
    F("path", string(r"/\S*", "a URL path starting with /"),
      doc=K("http, https: the URL path.", "url { path }")),
    F("status_codes", seq(status_range(), min_len=1, what="status code"),
      doc=K("http, https: the status codes that count as healthy.", "url { status_code }")),
    F("body_regex", optional(regex()),
      doc=K("http, https: the body must match.", "url { regex }")),
    F("digest", optional(string(r"[0-9a-fA-F]{32}", "an MD5 digest (32 hex digits)")),
      doc=K("http, https: the hex MD5 of the body must be this.", "url { digest }")),
    F("host", optional(string()),
      doc=K("http, https: the Host header (and TLS server name).", "virtualhost")),
    F("verify_tls", boolean(),
      doc=K("https: verify the server's certificate.", "none: SSL_GET does not verify (false)")),
    F("ca_file", optional(string(r"/.*", "an absolute path")),
      doc=K("https: CA bundle to verify with; null: the system's.", "SSL { ca }")),
    F("command", command(),
      doc=K("script: the command; exit status 0 is healthy.", "misc_path",
            default="required with type: script")),
    F("dynamic", boolean(),
      doc=K("script: exit 0 is up at the configured weight, 1 down, 2-255 up with weight "
            "code - 2.", "misc_dynamic")),
    F("name", string(_DNS_NAME, "a DNS name (labels of 1-63 characters, or . for the root)"),
      doc=K("dns: the name queried.", "name")),
    F("query_type", choice(m.DNS_QUERY_TYPES, "DNS query type"),
      doc=K("dns: the query type.", "type")),
    F("rcode", choice(m.DNS_RCODES, "DNS response code"),
      doc=K("dns: the response code that counts as healthy.", "none: NOERROR")),
    F("answer_regex", optional(regex()),
      doc=K("dns: an answer record's text (an address, a name, TXT strings, an SOA) must match.",
            None, default="null: any answer, or none")),
    F("transport", choice(m.DNS_TRANSPORTS, "DNS transport"),
      doc=K("dns: udp (a truncated answer is asked again over TCP, RFC 7766 5) or tcp.",
            "none: UDP only")),
    F("payload", string(what="a string"),
      doc=K("udp: the datagram sent, as text (UTF-8).", "none", default="empty")),
    F("payload_hex", hex_bytes(),
      doc=K("udp: the datagram sent, as hex digits.", "payload", default="empty")),
    F("require_reply", boolean(),
      doc=K("udp: no reply within the timeout is down (without it, silence is up).",
            "require_reply")),
    F("reply_regex", optional(regex()),
      doc=K("udp: the reply must match (bytes; \\xNN for any byte).",
            "require_reply HEX, min_reply_length, max_reply_length")),
    F("helo_name", string(r"[^\s]+", "a host name without blanks"),
      doc=K("smtp: the name sent with EHLO (or HELO).", "helo_name")),
), _finish_check, hints={
    "delay_loop": "keepalived's delay_loop; here: interval",
    "connect_timeout": "keepalived's connect_timeout; here: timeout",
    "connect_port": "keepalived's connect_port; here: port",
    "connect_ip": "keepalived's connect_ip; here: address",
    "bindto": "keepalived's bindto; here: bind_to",
    "retry": "keepalived's retry; here: fall",
    "delay_before_retry": "keepalived's delay_before_retry; here: retry_delay",
    "url": "keepalived's url block; here: path, status_codes, body_regex, digest",
    "misc_path": "keepalived's misc_path; here: command",
    "virtualhost": "keepalived's virtualhost; here: host",
})


def _check(service_check: Node | None) -> Conv:
    """A real server's (or a service's) ``check``: null/false = none; a real server's
    mapping is merged over ``service_check`` unless it names a different ``type``."""

    service_pairs: list[dict[str, Pair]] = []     # computed at the first real server
    inherited: list[tuple[m.HealthCheck | None, int]] = []   # (check, errors), ditto

    def conv(ctx: Ctx, node: Node, path: str) -> m.HealthCheck | None:
        if is_null(node) or (isinstance(node, ScalarNode) and node.tag.endswith(":bool")
                             and node.value.lower() in ("false", "no", "off")):
            return None
        if node is service_check:
            # The service's check as is: converted once for the service and all its
            # real servers (a large or broken one must not cost servers x keys).
            if not inherited:
                start = ctx.error_count
                try:
                    inherited.append((record(CHECK)(ctx, node, path), 0))
                except Invalid:
                    inherited.append((None, ctx.error_count - start))
            check, errors = inherited[0]
            if check is None:
                ctx.replay(errors)
            return check
        inherit = None
        if isinstance(service_check, MappingNode) and isinstance(node, MappingNode):
            if not service_pairs:
                # Once per service, not per real server, and only the keys a check
                # has: the service's own conversion reports the others, once.
                pairs = mapping_pairs(ctx, service_check, path)
                service_pairs.append({k: pairs[k] for k in CHECK.by_key if k in pairs})
            base = service_pairs[0]
            own = mapping_pairs(ctx, node, path)
            if "type" not in own or "type" not in base or own["type"][1].value == base["type"][1].value:
                inherit = base
        return record(CHECK, inherit=inherit)(ctx, node, path)

    return described(conv, "a check mapping, or false / null for none", spec=CHECK)


# --- LVS: real servers and virtual services ---------------------------------------------------

_FORWARD = enum_of(m.ForwardMethod, aliases={
    "masq": m.ForwardMethod.NAT, "route": m.ForwardMethod.DR, "direct": m.ForwardMethod.DR,
    "ipip": m.ForwardMethod.TUN, "tunnel": m.ForwardMethod.TUN,
    "NAT": m.ForwardMethod.NAT, "DR": m.ForwardMethod.DR, "TUN": m.ForwardMethod.TUN,
}, what="forwarding method")
_TUNNEL = enum_of(m.TunnelType, what="tunnel type")


def _finish_real_server(ctx: Ctx, v: View, kw: dict) -> None:
    upper = kw.get("upper_threshold", 0)
    lower = kw.get("lower_threshold", 0)
    if lower and (not upper or lower > upper):
        v.error("lower_threshold", f"expected lower_threshold <= upper_threshold ({upper}"
                f"{', no limit' if not upper else ''}), got {lower}")
    tun = _get(kw, m.RealServer, "forward") is m.ForwardMethod.TUN
    tunnel = _get(kw, m.RealServer, "tunnel_type")
    for key in _TUNNEL_KEYS:
        if _own(v, key) and not tun:
            v.error(key, "only used with forward: tun")
    if not tun:
        return
    if tunnel is m.TunnelType.GUE and not kw.get("tunnel_port"):
        ctx.error(v.value_node("tunnel_type"), v.key_path("tunnel_port"),
                  "missing required key (a gue tunnel needs the real server's UDP port)")
    if tunnel is not m.TunnelType.GUE and _own(v, "tunnel_port"):
        v.error("tunnel_port", "only used with tunnel_type: gue")
    if tunnel is m.TunnelType.IPIP and _own(v, "tunnel_checksum"):
        v.error("tunnel_checksum", "only used with tunnel_type: gue or gre")


_TUNNEL_KEYS = ("tunnel_type", "tunnel_port", "tunnel_checksum")


_RS_HINTS = {
    "lb_kind": "keepalived's lb_kind; here: forward",
    "inhibit_on_failure": "set inhibit_on_failure on the virtual service",
    "TCP_CHECK": "keepalived's TCP_CHECK; here: check: {type: tcp}",
    "HTTP_GET": "keepalived's HTTP_GET; here: check: {type: http}",
    "SSL_GET": "keepalived's SSL_GET; here: check: {type: https}",
    "MISC_CHECK": "keepalived's MISC_CHECK; here: check: {type: script}",
}


def _real_server_record(check: Conv | None, with_check: bool) -> Record:
    fields = [
        F("address", ip_address(multicast=False), required=True,
          doc=K("The real server's address.", "real_server IP PORT")),
        F("port", integer(0, U16),
          doc=K("Its port; 0: the service's port (DR, TUN).", "real_server IP PORT")),
        F("weight", integer(0, U16),
          doc=K("Its IPVS weight; 0 takes it out of scheduling.", "weight")),
        F("forward", _FORWARD,
          doc=K("nat (masquerading), dr (direct routing) or tun (IP tunnelling).",
                "lvs_method, lb_kind")),
        F("tunnel_type", _TUNNEL,
          doc=K("With forward: tun, the encapsulation.", "lvs_method TUN type")),
        F("tunnel_port", integer(1, U16),
          doc=K("GUE: the real server's UDP port (required for gue).", "lvs_method TUN type gue port")),
        F("tunnel_checksum", choice(("nocsum", "csum", "remcsum"), "tunnel checksum mode"),
          doc=K("GUE/GRE: nocsum, csum or remcsum (ipvsadm --tun-*).",
                "lvs_method TUN ... nocsum|csum|remcsum")),
        F("upper_threshold", integer(0, U32),
          doc=K("No new connections past this many; 0: no limit.", "uthreshold")),
        F("lower_threshold", integer(0, U32),
          doc=K("New connections again below this many.", "lthreshold")),
    ]
    if with_check:
        fields.append(F("check", check or _check(None),
                        doc=K("Its health check; none: always healthy.",
                              "TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK", default="the service's check")))
    return Record(m.RealServer, tuple(fields), _finish_real_server, hints=_RS_HINTS)


def _persistence_netmask(ctx: Ctx, node: Node, path: str, family: int) -> str:
    """IPv4: a dotted netmask (or a prefix length) -> '255.255.255.0'; IPv6: a prefix
    length 1..128 -> '64' (what ipvsadm -M takes for each family)."""
    text = node.value if isinstance(node, ScalarNode) and not is_null(node) else ""
    try:
        if family == 4:
            net = ipaddress.IPv4Network(f"0.0.0.0/{text.lstrip('/')}")
            return str(net.netmask)
        if text.lstrip("/").isdigit() and 1 <= int(text.lstrip("/")) <= 128:
            return str(int(text.lstrip("/")))
    except ValueError:
        pass
    expected = ("an IPv4 netmask like 255.255.255.0 or a prefix length 0..32" if family == 4
                else "an IPv6 prefix length 1..128")
    ctx.fail(node, path, f"expected {expected}, got {describe(node)}")


def _finish_service(ctx: Ctx, v: View, kw: dict) -> None:
    addr = kw.get("address")
    fwmark = kw.get("fwmark")
    if addr is not None and fwmark is not None:
        v.fail("fwmark", "give either address/port/protocol or fwmark, not both")
    if addr is None and fwmark is None:
        ctx.fail(v.node, v.key_path("address"), "missing required key (or fwmark for a firewall-mark service)")
    if fwmark is not None:
        if v.has("port"):
            v.fail("port", "a fwmark service has no port (the mark selects the packets)")
        kw.setdefault("family", 4)
        name = f"fwmark/{fwmark}"
    else:
        if v.has("family") and kw["family"] != addr.version:
            v.error("family", f"address {addr} is IPv{addr.version}, not IPv{kw['family']}")
        kw["family"] = addr.version
        if not v.has("port"):
            ctx.fail(v.node, v.key_path("port"), "missing required key (0 = all ports, with persistence)")
        proto = _get(kw, m.VirtualService, "protocol").value
        name = f"{proto}/{addr}:{kw['port']}" if addr.version == 4 else f"{proto}/[{addr}]:{kw['port']}"
        # ipvsadm accepts port 0 ("all ports") only for persistent services.
        if kw["port"] == 0 and not kw.get("persistence_timeout"):
            v.error("port", "port 0 (all ports) needs persistence_timeout > 0, as in ipvsadm")
        if kw.get("one_packet") and kw.get("protocol", m.Protocol.TCP) is not m.Protocol.UDP:
            v.error("one_packet", "one-packet scheduling only applies to UDP services")
    kw.setdefault("name", name)
    family = kw["family"]

    scheduler = _get(kw, m.VirtualService, "scheduler")
    for i, flag in enumerate(kw.get("scheduler_flags", ())):
        if m.SCHEDULER_FLAGS[flag] != scheduler:
            v.error("scheduler_flags", f"flag {shown(flag)} belongs to the {m.SCHEDULER_FLAGS[flag]} scheduler, "
                    f"not {scheduler}", i)

    if v.has("persistence_netmask") and not is_null(v.value_node("persistence_netmask")):
        if not kw.get("persistence_timeout"):
            v.error("persistence_netmask", "only used with persistence_timeout > 0")
        try:
            kw["persistence_netmask"] = _persistence_netmask(
                ctx, v.value_node("persistence_netmask"), v.key_path("persistence_netmask"), family)
        except Invalid:
            pass

    servers = kw.get("real_servers", ())
    _check_real_servers(ctx, v, kw, servers)
    if kw.get("sorry_server") is not None:
        _check_family(ctx, v, family, kw["sorry_server"], "sorry_server", None)


def _prepare_service(pairs: dict[str, Pair]) -> dict[str, Conv]:
    """Real servers inherit the service's forward/tunnel settings and its check."""
    service_check = pairs["check"][1] if "check" in pairs else None
    inherit = {k: pairs[k] for k in ("forward", *_TUNNEL_KEYS, "check") if k in pairs}
    sorry_inherit = {k: pairs[k] for k in ("forward", *_TUNNEL_KEYS) if k in pairs}
    check = _check(service_check)      # the service's and its real servers': converted once
    return {
        "check": check,
        "real_servers": seq(record(_real_server_record(check, with_check=True), inherit=inherit)),
        "sorry_server": optional(record(_real_server_record(None, with_check=False), inherit=sorry_inherit)),
    }


def _check_family(ctx: Ctx, v: View, family: int, rs: m.RealServer, key: str, index: int | None) -> None:
    # IPVS crosses address families only for tunnelled destinations ("mixed family").
    if rs.address.version != family and rs.forward is not m.ForwardMethod.TUN:
        node = ctx.view(rs).value_node("address")
        ctx.error(node, join(v.key_path(key, index), "address"),
                  f"expected an {family_name(family)} address like the service's "
                  f"(only forward: tun can cross families), got {rs.address}")


def _check_real_servers(ctx: Ctx, v: View, kw: dict, servers: tuple[m.RealServer, ...]) -> None:
    vs_port = kw.get("port", 0)
    seen: dict[tuple, int] = {}
    for i, rs in enumerate(servers):
        rv = ctx.view(rs)
        _check_family(ctx, v, kw["family"], rs, "real_servers", i)
        # Port 0 means "the service's port", so 10.0.0.1:0 and 10.0.0.1:80 are the
        # same destination of a port-80 service.
        key = (rs.address, rs.port or vs_port)
        if key in seen:
            ctx.error(rv.node, v.key_path("real_servers", i),
                      f"real server {rs.address} port {key[1]} is already real_servers[{seen[key]}]")
        seen.setdefault(key, i)
        if rs.check is not None and not isinstance(rs.check.probe, m.PORTLESS_PROBES) \
                and rs.check.port is None and not rs.port and not vs_port:
            ctx.error(rv.node, v.key_path("real_servers", i),
                      "the health check needs a port: give the real server a port or set check.port "
                      "(the service has none)")


VIRTUAL_SERVICE = Record(m.VirtualService, (
    F("name", string(),
      doc=K("A name for logs and status, unique in the file.", None,
            default="from its key, e.g. tcp/192.0.2.10:80 or fwmark/1")),
    F("protocol", enum_of(m.Protocol, aliases={"TCP": m.Protocol.TCP, "UDP": m.Protocol.UDP,
                                                "SCTP": m.Protocol.SCTP}, what="protocol"),
      doc=K("The transport protocol.", "protocol")),
    F("address", ip_address(multicast=False),
      doc=K("The virtual address (or give fwmark).", "virtual_server IP PORT",
            default="required, unless fwmark is given")),
    F("port", integer(0, U16),
      doc=K("The virtual port; 0: all ports (needs persistence_timeout).", "virtual_server IP PORT",
            default="required with address")),
    F("fwmark", integer(1, U32),
      doc=K("A firewall-mark service instead of address/port/protocol.", "virtual_server fwmark N")),
    F("family", _family,
      doc=K("With fwmark: the address family; otherwise taken from address.", "ip_family",
            type="4 or 6")),
    F("scheduler", choice(m.SCHEDULERS, "scheduler"),
      doc=K("The IPVS scheduler (the kernel module ip_vs_NAME).", "lb_algo, lvs_sched")),
    F("scheduler_flags", seq(choice(tuple(m.SCHEDULER_FLAGS), "scheduler flag")),
      doc=K("Flags of the sh and mh schedulers (ipvsadm -b).",
            "sh-port, sh-fallback, mh-port, mh-fallback")),
    F("persistence_timeout", whole_seconds(0, U32 // 1000),
      doc=K("Persistence: a client goes to the same real server for this long; 0: not persistent.",
            "persistence_timeout")),
    F("persistence_netmask", _raw, attr=None,
      doc=K("Clients in one network of this size count as one for persistence.",
            "persistence_granularity",
            type="IPv4: a netmask like 255.255.255.0 or a prefix length 0..32; IPv6: a prefix length 1..128",
            default="none (each client address alone)")),
    F("one_packet", boolean(),
      doc=K("Schedule every UDP datagram on its own.", "ops")),
    F("real_servers", seq(record(_real_server_record(None, True))),
      doc=K("The real servers.", "real_server IP PORT { }")),   # see _prepare_service
    F("sorry_server", optional(record(_real_server_record(None, False))),
      doc=K("Takes the traffic while the quorum is lost (keys as a real server, without check).",
            "sorry_server IP PORT, sorry_server_lvs_method")),
    F("inhibit_on_failure", boolean(),
      doc=K("A failed real server stays in the table with weight 0 instead of being removed.",
            "inhibit_on_failure (per real_server there)")),
    F("quorum", integer(0, U32),
      doc=K("Minimum healthy weight for the service to be up.", "quorum")),
    F("quorum_hysteresis", integer(0, U32),
      doc=K("Slack around quorum before it is gained or lost again.", "hysteresis")),
    F("quorum_up", command(),
      doc=K("Command run when the quorum is gained.", "quorum_up")),
    F("quorum_down", command(),
      doc=K("Command run when the quorum is lost.", "quorum_down")),
    F("check", _check(None), attr=None,
      doc=K("The default health check of its real servers; a real server's own check mapping is "
            "merged over it.", "a checker block in each real_server", default="none")),
    F("forward", _FORWARD, attr=None,
      doc=K("The default forwarding method of its real servers (and the sorry server).",
            "lb_kind, lvs_method", default="nat")),
    F("tunnel_type", _TUNNEL, attr=None,
      doc=K("The default tunnel type of its real servers.", "lvs_method TUN type", default="ipip")),
    F("tunnel_port", integer(1, U16), attr=None,
      doc=K("The default GUE port of its real servers.", "lvs_method TUN type gue port", default="none")),
    F("tunnel_checksum", choice(("nocsum", "csum", "remcsum"), "tunnel checksum mode"), attr=None,
      doc=K("The default GUE/GRE checksum mode of its real servers.",
            "lvs_method TUN ... nocsum|csum|remcsum", default="nocsum")),
), _finish_service, prepare=_prepare_service, hints={
    **_RS_HINTS,
    "lb_algo": "keepalived's lb_algo; here: scheduler",
    "lb_kind": "keepalived's lb_kind; here: forward",
    "real_server": "keepalived's real_server; here: real_servers (a list)",
    "delay_loop": "keepalived's delay_loop; here: check: {interval: ...}",
    "ops": "keepalived's ops; here: one_packet",
    "persistence_granularity": "keepalived's persistence_granularity; here: persistence_netmask",
    "inhibit_on_failure": "keepalived's per-server inhibit_on_failure; here: on the virtual service",
})

SYNC_DAEMON = Record(m.SyncDaemon, (
    F("interface", interface_name(), required=True,
      doc=K("The interface sync messages go out and come in on.", "lvs_sync_daemon INTERFACE")),
    F("syncid", integer(0, 255),
      doc=K("Sync id, the same on both directors.", "id")),
    F("follow_instance", optional(string()),
      doc=K("The VRRP instance or sync group whose state the daemon follows; null: the only instance.",
            "lvs_sync_daemon INTERFACE INSTANCE")),
    F("mcast_group", optional(ip_address(multicast=True)),
      doc=K("Multicast group of sync messages; null: 224.0.0.81 (IPv4).", "group")),
    F("port", integer(1, U16),
      doc=K("UDP port of sync messages.", "port")),
    F("ttl", integer(1, 255),
      doc=K("Multicast TTL of sync messages.", "ttl")),
    F("maxlen", integer(0, 65507),
      doc=K("Largest sync message in bytes; 0: the interface MTU.", "maxlen")),
    F("refresh_period", optional(whole_seconds(1, 3600)),
      doc=K("Re-send an active connection to the backup at most this often "
            "(net.ipv4.vs.sync_refresh_period; also sets sync_threshold's period to 0); null: leave "
            "the kernel's settings alone.", None)),
    F("catch_up", optional(duration(ge=0, le=3600)),
      doc=K("After its sync daemon starts as backup, a node does not preempt a live master for this "
            "long; null: twice refresh_period, or 0.", None)),
))

LVS = Record(m.LvsSettings, (
    F("program", enum_of(m.ProgramMode, what="program mode"),
      doc=K("always: both directors keep the IPVS table programmed (warm standby, a takeover moves "
            "only the VIPs); master_only: only the master programs it.", None)),
    F("on_shutdown", enum_of(m.ShutdownAction, what="shutdown action"),
      doc=K("keep or remove the agent's own IPVS entries on a graceful stop.",
            "none: keepalived removes its virtual servers on stop "
            "(lvs_flush_onstop flushes the whole table)")),
    F("sync_daemon", optional(record(SYNC_DAEMON)),
      doc=K("The kernel IPVS connection-sync daemon: master on the VRRP master, backup on the other "
            "node.", "lvs_sync_daemon")),
))


# --- the whole file: references between sections ------------------------------------------


def _unique(ctx: Ctx, objs: tuple, what: str) -> dict[str, Any]:
    by_name: dict[str, Any] = {}
    for obj in objs:
        if obj.name in by_name:
            first = ctx.view(by_name[obj.name])
            v = ctx.view(obj)
            ctx.error(v.value_node("name"), v.key_path("name"),
                      f"duplicate {what} name {shown(obj.name)} (also {first.path}, line {first.node.start_mark.line + 1})")
        by_name.setdefault(obj.name, obj)
    return by_name


def _names(d: dict, shown_names: int = 10) -> str:
    names = sorted(d)
    more = f", ... ({len(names)} in all)" if len(names) > shown_names else ""
    return ", ".join(clip(n) for n in names[:shown_names]) + more or "none"


def _finish_config(ctx: Ctx, v: View, kw: dict) -> None:
    def section(key: str) -> Any:
        # Absent -> its default; present but invalid -> None (skip checks using it).
        return kw.get(key, None if v.has(key) else _default(m.Config, key))

    listed: dict[int, str] = {}

    def defined(names: dict) -> str:      # sorted once per section, not once per error
        if id(names) not in listed:
            listed[id(names)] = _names(names)
        return listed[id(names)]

    default_auth = kw.pop("auth", None)
    if default_auth is not None and kw.get("vrrp_instances"):
        # The top-level auth is the default of every instance without an auth key.
        resolved = []
        for inst in kw["vrrp_instances"]:
            if not ctx.view(inst).has("auth"):
                view, inst = ctx.view(inst), dataclasses.replace(inst, auth=default_auth)
                ctx.remember(inst, view)
            resolved.append(inst)
        kw["vrrp_instances"] = tuple(resolved)
    instances, scripts = section("vrrp_instances"), section("track_scripts")
    groups, services, lvs = section("sync_groups"), section("virtual_services"), section("lvs")
    if not v.has("node"):
        kw["node"] = m.NodeSettings(router_id=socket.gethostname())

    script_names = _unique(ctx, scripts, "track script") if scripts is not None else None
    if instances is not None:
        inst_names = _unique(ctx, instances, "vrrp instance")
        vrids: dict[tuple, m.VrrpInstance] = {}
        vips: dict = {}
        for inst in instances:
            iv = ctx.view(inst)
            key = (inst.interface, inst.family, inst.vrid)
            if key in vrids:
                # RFC 5798 7.3: the virtual MAC is derived from the VRID per family.
                ctx.error(iv.value_node("vrid"), iv.key_path("vrid"),
                          f"vrid {inst.vrid} is already used on {inst.interface} ({family_name(inst.family)}) "
                          f"by {ctx.view(vrids[key]).path} {shown(vrids[key].name)}")
            vrids.setdefault(key, inst)
            for i, vip in enumerate(inst.virtual_ips):
                if vip.ip in vips and vips[vip.ip] is not inst:
                    iv.error("virtual_ips", f"{vip.ip} is also a virtual IP of {shown(vips[vip.ip].name)}", i)
                vips.setdefault(vip.ip, inst)
            if script_names is not None:
                for i, name in enumerate(inst.track_scripts):
                    if name not in script_names:
                        iv.error("track_scripts", f"no track script named {shown(name)} "
                                 f"(defined: {defined(script_names)})", i)
    else:
        inst_names = None

    group_names = _unique(ctx, groups, "sync group") if groups is not None else None
    if group_names is not None and inst_names is not None:
        member_of: dict[str, m.SyncGroup] = {}
        for group in groups:
            gv = ctx.view(group)
            if group.name in inst_names:
                gv.error("name", f"{shown(group.name)} is also a vrrp instance name; follow_instance "
                         "would be ambiguous")
            for i, name in enumerate(group.instances):
                if name not in inst_names:
                    gv.error("instances", f"no vrrp instance named {shown(name)} (defined: {defined(inst_names)})", i)
                elif name in member_of:
                    gv.error("instances", f"{shown(name)} is already in sync group {shown(member_of[name].name)}; "
                             "an instance can be in one group only", i)
                member_of.setdefault(name, group)

    if services is not None:
        _unique(ctx, services, "virtual service")
        keys: dict[tuple, m.VirtualService] = {}
        for vs in services:
            if vs.key in keys:
                sv = ctx.view(vs)
                ctx.error(sv.node, sv.path, f"same address/port/protocol (or fwmark) as "
                          f"{ctx.view(keys[vs.key]).path} {shown(keys[vs.key].name)}")
            keys.setdefault(vs.key, vs)

    if kw.get("scale_out") is not None and services is not None:
        _check_scale_out(ctx, kw["scale_out"], services)

    daemon = lvs.sync_daemon if lvs is not None else None
    if daemon is not None and daemon.follow_instance is not None \
            and inst_names is not None and group_names is not None:
        if daemon.follow_instance not in inst_names and daemon.follow_instance not in group_names:
            dv = ctx.view(daemon)
            dv.error("follow_instance", f"no vrrp instance or sync group named {shown(daemon.follow_instance)} "
                     f"(defined: {_names({**inst_names, **group_names})})")


CONFIG = Record(None, (
    F("node", record(NODE, nullable=True),
      doc=K("This director: its name, log format and state directory.", "global_defs",
            default="(all defaults)")),
    F("api", record(API, nullable=True),
      doc=K("The local read-only HTTP API (/status, /metrics, /healthz).", None)),
    F("vrrp_instances", seq(record(VRRP_INSTANCE)),
      doc=K("The VRRP virtual routers this node takes part in.", "vrrp_instance NAME { }")),
    F("auth", optional(record(AUTH)),
      doc=K("The default auth of every vrrp instance without an auth key of its own (keys as an "
            "instance's auth).", "auth_hmac { } in each vrrp_instance", default="none")),
    F("sync_groups", seq(record(SYNC_GROUP)),
      doc=K("Instances that fail over together.", "vrrp_sync_group NAME { }")),
    F("track_scripts", seq(record(TRACK_SCRIPT)),
      doc=K("Periodic commands whose result moves the priority of the instances that track them.",
            "vrrp_script NAME { }")),
    F("lvs", record(LVS, nullable=True),
      doc=K("How the IPVS table is programmed, and the connection sync daemon.", None)),
    F("virtual_services", seq(record(VIRTUAL_SERVICE)),
      doc=K("The IPVS virtual services and their real servers.", "virtual_server IP PORT { }")),
    F("health", record(HEALTH, nullable=True),
      doc=K("How the real servers' health checks run.", None)),
    F("scale_out", record(SCALE_OUT),
      doc=K("This director is one of N active ones behind an ECMP router for the services listed, "
            "announcing their VIPs with BGP (BIRD) while it can carry them.", None, default="none")),
), _finish_config, ignore_prefix="x-", hints={
    "global_defs": "keepalived's global_defs; here: node",
    "vrrp_instance": "keepalived's vrrp_instance; here: vrrp_instances (a list)",
    "vrrp_sync_group": "keepalived's vrrp_sync_group; here: sync_groups (a list)",
    "vrrp_script": "keepalived's vrrp_script; here: track_scripts (a list)",
    "virtual_server": "keepalived's virtual_server; here: virtual_services (a list)",
    "lvs_sync_daemon": "keepalived's lvs_sync_daemon; here: lvs: {sync_daemon: ...}",
})

_TOP_KEYS = "node, vrrp_instances, virtual_services, ..."


# --- entry points ----------------------------------------------------------------------------


def _too_large(source: str, size: int) -> ConfigError:
    return ConfigError([ConfigIssue(source, 0, 0, "", f"file too large: {size} bytes; the limit is "
                                                      f"{MAX_FILE_BYTES} bytes (1 MiB)")])


def _indent(text: str, line: int) -> tuple[int, str]:
    """(column of the first non-blank character, the line's text) of a 1-based line."""
    lines = text.splitlines()
    body = lines[line - 1] if 0 < line <= len(lines) else ""
    return len(body) - len(body.lstrip(" ")) + 1, body


def yaml_syntax_problem(e: yaml.MarkedYAMLError, text: str) -> tuple[int, int, str]:
    """(line, column, message) of a YAML syntax error in plain words: what is wrong on
    which line, rather than the parser's state ("while parsing a block mapping ...")."""
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    start = e.context_mark.line + 1 if e.context_mark else None
    problem, context = e.problem or "", e.context or ""
    if problem in ("did not find expected key", "did not find expected '-' indicator") \
            or problem.startswith("expected <block end>"):
        col, _ = _indent(text, line)
        what = "list" if "collection" in context else "mapping"
        return line, col, (f"line {line}: this line is indented differently from the lines above it "
                           f"(the {what} that starts at line {start} lines up its "
                           f"{'items' if what == 'list' else 'keys'} differently)"
                           if start else f"line {line}: this line is indented differently from the lines above it")
    if problem == "mapping values are not allowed in this context" \
            or problem.startswith("mapping values are not allowed"):
        before = _indent(text, line)[1][:col - 1]
        if ": " in before:
            return line, col, f"line {line}: a second ': ' on this line; a value that contains ': ' needs quotes"
        return line, col, f"line {line}: this line is indented more than the line above it"
    if "tab character" in problem or (problem.startswith("found character") and mark is not None
                                      and _indent(text, line)[1][mark.column:mark.column + 1] == "\t"):
        return line, col, f"line {line}: a tab character; YAML indents with spaces only"
    if problem == "could not find expected ':'" and start:
        return start, _indent(text, start)[0], (f"line {start}: expected 'key: value' (no ':' on this line, "
                                                "or a quote not closed)")
    if context.startswith("while scanning a quoted scalar") and start:
        return start, e.context_mark.column + 1, f"line {start}: a quoted value is never closed"
    if problem.startswith("found undefined alias"):
        name = problem.rpartition(" ")[2]
        return line, col, f"line {line}: alias *{name.strip(chr(39))} has no anchor &{name.strip(chr(39))} before it"
    detail = problem or "invalid YAML"
    if context:
        detail += f" ({context}" + (f" at line {start})" if start else ")")
    return line, col, detail


@dataclass(frozen=True)
class Loaded:
    """A valid config, the warnings about it (see ``lint``), and where each part was
    written (for checks made later, e.g. against the host: ``check --host``)."""

    config: m.Config
    warnings: tuple[ConfigIssue, ...]
    ctx: Ctx = field(repr=False, compare=False)

    def issue(self, obj: object, key: str | None, message: str, index: int | None = None) -> ConfigIssue:
        """A ConfigIssue at ``obj``'s ``key`` (its item ``index``), or at ``obj`` itself."""
        v = self.ctx.view(obj)
        if key is None:
            node, path = v.node, v.path
        else:
            node = v.value_node(key) if index is None else v.item_node(key, index)
            path = v.key_path(key, index)
        return ConfigIssue(self.ctx.source, node.start_mark.line + 1, node.start_mark.column + 1, path, message)


def parse_config(text: str, source: str = "<memory>") -> m.Config:
    """Parse and validate config text; ``source`` names it in errors and Config.source.

    The work is bounded (see ``compose``): size, alias/merge expansion and nesting."""
    return parse(text, source).config


def parse(text: str, source: str = "<memory>") -> Loaded:
    """``parse_config``, with the warnings (valid, but probably not what was meant)."""
    if len(text) > MAX_FILE_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_large(source, len(text.encode("utf-8", "surrogatepass")))
    ctx = Ctx(source)
    try:
        root = compose(text)
    except TooComplex as e:
        line, col = (e.mark.line + 1, e.mark.column + 1) if e.mark else (0, 0)
        raise ConfigError([ConfigIssue(source, line, col, "", e.message)]) from None
    except yaml.MarkedYAMLError as e:
        line, col, detail = yaml_syntax_problem(e, text)
        raise ConfigError([ConfigIssue(source, line, col, "", f"YAML syntax error: {detail}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"YAML error: {e}")]) from None
    if root is None or is_null(root):
        raise ConfigError([ConfigIssue(source, 1, 1, "", f"the file is empty; expected a mapping ({_TOP_KEYS})")])
    if not isinstance(root, MappingNode):
        raise ConfigError([ConfigIssue(source, root.start_mark.line + 1, root.start_mark.column + 1, "",
                                       f"expected a mapping at the top level ({_TOP_KEYS}), got {describe(root)}")])
    try:
        kw = record(CONFIG, partial=True)(ctx, root, "")
    except Invalid:
        kw = None
    if ctx.issues or kw is None:
        raise ConfigError(sorted(ctx.issues, key=lambda i: (i.line, i.column)), unlisted=ctx.unlisted)
    config = m.Config(source=source, **kw)
    lint(ctx, config)
    # A real server's port 0 is the service's: resolved once, here (after the checks and
    # warnings, which point at the objects as written), for every user of the model.
    config = dataclasses.replace(config, virtual_services=tuple(
        _ports_resolved(ctx, vs) for vs in config.virtual_services))
    return Loaded(config, tuple(sorted(ctx.warnings, key=lambda i: (i.line, i.column))), ctx)


def _ports_resolved(ctx: Ctx, vs: m.VirtualService) -> m.VirtualService:
    """``vs.with_ports_resolved()``, still pointing at the lines it was read from
    (``hadirector check --host`` reports against the resolved objects)."""
    new = vs.with_ports_resolved()
    ctx.carry(vs, new)
    for old_rs, new_rs in zip(vs.real_servers, new.real_servers):
        ctx.carry(old_rs, new_rs)
    if vs.sorry_server is not None and new.sorry_server is not None:
        ctx.carry(vs.sorry_server, new.sorry_server)
    return new


def load_config(path: str | Path) -> m.Config:
    """Read and validate a config file; raises ConfigError (also when it cannot be read,
    or is larger than MAX_FILE_BYTES: checked before parsing, and never read past)."""
    return load(path).config


def load(path: str | Path) -> Loaded:
    """``load_config``, with the warnings."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise _too_large(source, size)
            data = f.read(MAX_FILE_BYTES + 1)     # not a regular file (a pipe, /dev/zero) has no size
        if len(data) > MAX_FILE_BYTES:
            raise _too_large(source, max(size, len(data)))
        text = data.decode("utf-8")
    except OSError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"cannot read: {e.strerror or e}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(source, 0, 0, "", f"not UTF-8 text: {e}")]) from None
    return parse(text, source)
