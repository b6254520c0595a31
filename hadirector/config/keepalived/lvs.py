"""The LVS side of keepalived.conf: ``virtual_server_group``, ``virtual_server``,
``real_server``, the checkers and their ``url`` blocks, each read with a flat keyword
-> handler table (``VIRTUAL_SERVER``, ``REAL_SERVER``, ``CHECKERS[kind]``, ``URL``).

Checker settings (delay_loop, retry, ...) may be given on the virtual server, the real
server or the checker: each block's ``defaults`` is a copy of its parent's
(``CheckDefaults.child``), so the nearest one wins, as in keepalived.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hadirector.model import SCHEDULERS

from .lex import Stmt
from .values import Bad, Handler, address, arg, command, floating, integer, num, put

if TYPE_CHECKING:
    from .convert import Converter

# keepalived checkers hadirector has no probe for -> what the note calls the missing probe.
UNSUPPORTED_CHECKERS = {"BFD_CHECK": "BFD", "FILE_CHECK": "file"}
# keepalived checker -> hadirector check type.
_CHECK_TYPE = {
    "TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "script",
    "DNS_CHECK": "dns", "UDP_CHECK": "udp", "PING_CHECK": "ping", "SMTP_CHECK": "smtp",
}
_FORWARD = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_KA_DEFAULT_DELAY_LOOP = 60.0
_KA_DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass
class CheckDefaults:
    """Checker settings inherited virtual_server -> real_server -> checker."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    alpha: bool | None = None
    virtualhost: str | None = None
    warmup: float | None = None

    def child(self) -> "CheckDefaults":
        return CheckDefaults(**self.__dict__)


def _default(attr: str, conv: Callable[[Stmt], Any]) -> Handler:
    """A handler that sets ``block.defaults.attr``: a checker setting its children inherit."""
    def handler(cv: Converter, block: Any, x: Stmt) -> None:
        setattr(block.defaults, attr, conv(x))
    handler.__name__ = f"default_{attr}"
    return handler


def _warmup(cv: Converter, block: Any, x: Stmt) -> None:
    """keepalived's ``warmup`` delays only the first check by a random [0, N] s
    (register_checkers_thread); hadirector's nearest setting is the check
    ``jitter``, which delays every check that way."""
    v = floating(arg(x), "warmup")
    block.defaults.warmup = v
    if v > 0:
        cv.change(x.where, f"warmup {v:g}: converted to the check jitter, which "
                           f"delays every check (not only the first, as keepalived "
                           f"does) by up to {v:g}s, so checks come on average "
                           f"{v / 2:g}s further apart")


def _alpha(cv: Converter, block: Any, x: Stmt) -> None:
    block.defaults.alpha = True


# Checker settings a virtual server, a real server and a checker all take.
_CHECK_DEFAULTS: dict[str, Handler] = {
    "delay_loop": _default("delay_loop", lambda x: floating(arg(x), "delay_loop")),
    "connect_timeout": _default("connect_timeout", lambda x: floating(arg(x), "connect_timeout")),
    "retry": _default("retry", lambda x: integer(arg(x), "retry", 0)),
    "delay_before_retry": _default("delay_before_retry",
                                   lambda x: floating(arg(x), "delay_before_retry")),
    "warmup": _warmup,
}
_VIRTUALHOST = _default("virtualhost", lambda x: arg(x))
_INHIBIT = put("inhibit", lambda x: True)


def forward(x: Stmt) -> dict[str, Any]:
    """``NAT|DR|TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum]``
    (svr_forwarding_handler) -> forward and, for TUN, the tunnel fields."""
    v = arg(x).upper()
    if v not in _FORWARD:
        raise Bad(f"forwarding method '{x.args[0]}' unknown")
    out: dict[str, Any] = {"forward": _FORWARD[v]}
    opts = x.args[1:]
    if opts and v != "TUN":
        raise Bad(f"options '{' '.join(opts)}' only apply to TUN")
    i = 0
    while i < len(opts):
        key = opts[i]
        if key in ("type", "port") and i + 1 >= len(opts):
            raise Bad(f"{key} needs a value")
        if key == "type":
            if opts[i + 1] not in ("ipip", "gue", "gre"):
                raise Bad(f"tunnel type '{opts[i + 1]}' unknown")
            out["tunnel_type"] = opts[i + 1]
            i += 2
        elif key == "port":
            out["tunnel_port"] = integer(opts[i + 1], "tunnel port", 1, 65535)
            i += 2
        elif key in ("nocsum", "csum", "remcsum"):
            out["tunnel_checksum"] = key
            i += 1
        else:
            raise Bad(f"option '{key}' unknown")
    ttype = out.get("tunnel_type", "ipip")
    if ttype != "gue":
        out.pop("tunnel_port", None)
    if ttype == "ipip":
        out.pop("tunnel_checksum", None)
    if ttype == "gue" and "tunnel_port" not in out:
        raise Bad("a gue tunnel needs 'port N'")
    return out


# --- virtual_server_group ---------------------------------------------------------------


def vsgroup(cv: Converter, s: Stmt) -> None:
    name = s.args[0]
    entries: list[tuple[Stmt, list[str]]] = []
    for item in s.block or []:
        if item.words:
            entries.append((item, item.words))
    cv.vsgroups[name] = entries


ServiceKey = tuple[str, Any, int, "int | None"]


def _expand_vsg_entry(item: Stmt) -> list[ServiceKey]:
    """-> [(kind, address-or-None, port, fwmark-or-None)] for one group line:
    ``IP[-LAST|-IP|/PREFIX] [PORT]`` or ``fwmark N [inet|inet6]`` (alloc_vsg_entry)."""
    w = item.words
    if w[0] == "fwmark":
        mark = integer(arg(item), "fwmark", 0, 2**32 - 1)
        fam = 6 if len(w) > 2 and w[2] == "inet6" else 4 if len(w) > 2 else None
        return [("fwmark", fam, 0, mark)]
    port = integer(w[1], "port", 0, 65535) if len(w) > 1 else 0
    text = w[0]
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise Bad(f"'{text}': {e}") from None
        addrs: list[Any] = list(net) if net.num_addresses <= 1024 else []
        if not addrs:
            raise Bad(f"'{text}' expands to {net.num_addresses} services (limit 1024)")
        return [("addr", a, port, None) for a in addrs]
    if "-" in text:
        return [("addr", a, port, None) for a in _address_range(text)]
    return [("addr", address(text, "address"), port, None)]


def _address_range(text: str) -> list[Any]:
    start_s, end_s = text.split("-", 1)
    start = address(start_s, "range start")
    if (start.version == 4 and "." in end_s) or (start.version == 6 and ":" in end_s):
        end = address(end_s, "range end")
    else:
        base = 16 if start.version == 6 else 10
        try:
            last = int(end_s, base)
        except ValueError:
            raise Bad(f"range end '{end_s}' is not a number") from None
        # keepalived replaces the last octet (IPv4) or last 16-bit group (IPv6, hex).
        mask = 0xFF if start.version == 4 else 0xFFFF
        if last > mask:
            raise Bad(f"range end '{end_s}' too large")
        end = ipaddress.ip_address((int(start) & ~mask) | last)
    if int(end) < int(start):
        raise Bad(f"range '{text}' ends before it starts")
    if int(end) - int(start) >= 1024:
        raise Bad(f"range '{text}' expands to more than 1024 services")
    return [ipaddress.ip_address(a) for a in range(int(start), int(end) + 1)]


# --- virtual_server ---------------------------------------------------------------------


def virtual_server(cv: Converter, s: Stmt) -> list[dict[str, Any]]:
    a = s.args
    keys: list[ServiceKey] = []
    label = " ".join(a)
    try:
        if a[0] == "group":
            gname = arg(s, 1)
            if gname not in cv.vsgroups:
                raise Bad(f"virtual_server_group {gname} not defined")
            for item, _ in cv.vsgroups[gname]:
                try:
                    keys.extend(_expand_vsg_entry(item))
                except Bad as e:
                    cv.skip(item, f"{e}; group entry skipped")
            prefix = gname + "/"
        elif a[0] == "fwmark":
            keys.append(("fwmark", None, 0, integer(arg(s, 1), "fwmark", 0, 2**32 - 1)))
            prefix = ""
        else:
            port = integer(a[1], "port", 0, 65535) if len(a) > 1 else 0
            keys.append(("addr", address(a[0], "virtual_server address"), port, None))
            prefix = ""
    except Bad as e:
        cv.skip(s, f"virtual_server {label}: {e}; skipped")
        return []

    base = _vs_settings(cv, s)
    if base is None:
        return []
    out: list[dict[str, Any]] = []
    for key in keys:
        d = _service(cv, s, base, key, prefix)
        if any(x["name"] == d["name"] for x in cv.services + out):
            cv.skip(s, f"virtual_server {d['name']} defined twice; the second is skipped")
            continue
        out.append(d)
    return out


def _service(cv: Converter, s: Stmt, base: dict[str, Any], key: ServiceKey,
             prefix: str) -> dict[str, Any]:
    """One service of a virtual_server line (a group gives several), from its settings."""
    kind, addr_or_fam, port, mark = key
    d: dict[str, Any] = {}
    proto = base["protocol"]
    if kind == "fwmark":
        fam = addr_or_fam or base["family_hint"]
        name = f"{prefix}fwmark/{mark}" + (f"/ipv{fam}" if prefix and addr_or_fam else "")
        d["name"] = name
        d["fwmark"] = mark
        d["family"] = fam
        if base["protocol_set"]:
            cv.info(s.where, f"virtual_server {name}: protocol is ignored for "
                             f"fwmark services (as in keepalived)")
    else:
        host = str(addr_or_fam) if addr_or_fam.version == 4 else f"[{addr_or_fam}]"
        name = f"{prefix}{proto}/{host}:{port}"
        d["name"] = name
        d["protocol"] = proto
        d["address"] = str(addr_or_fam)
        d["port"] = port
    d.update(copy.deepcopy(base["fields"]))
    proto_eff = "fwmark" if kind == "fwmark" else proto
    if d.get("one_packet") and proto_eff != "udp":
        del d["one_packet"]
        cv.skip(s, f"virtual_server {name}: ops applies to UDP services only, skipped")
    family = d.get("family") or addr_or_fam.version
    keep = []
    for rs in d["real_servers"]:
        # IPVS crosses address families only by tunnelling (as keepalived checks).
        if ipaddress.ip_address(rs["address"]).version != family and rs["forward"] != "tun":
            cv.skip(s, f"virtual_server {name}: real server {rs['address']} is not "
                       f"IPv{family} and not tunnelled; skipped for this service")
        else:
            keep.append(rs)
    d["real_servers"] = keep
    if not port:
        for rs in d["real_servers"]:
            chk = rs.get("check")
            if chk and chk["type"] != "script" and not chk.get("port") and not rs["port"]:
                del rs["check"]
                cv.skip(s, f"virtual_server {name}: the {chk['type']} check of real "
                           f"server {rs['address']} has no port (give connect_port); "
                           f"check skipped, server always up")
    return d


@dataclass
class _VirtualServer:
    st: dict[str, Any] = field(default_factory=dict)
    flags: list[tuple[Stmt, str]] = field(default_factory=list)
    defaults: CheckDefaults = field(default_factory=CheckDefaults)
    real_servers: list[Stmt] = field(default_factory=list)
    sorry: dict[str, Any] = field(default_factory=dict)


def _scheduler(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    v = arg(x)
    if v not in SCHEDULERS:
        raise Bad(f"scheduler '{v}' unknown")
    b.st["scheduler"] = v


def _protocol(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    v = arg(x).upper()
    if v not in _PROTOCOLS:
        raise Bad(f"protocol '{x.args[0]}' unknown")
    b.st["protocol"] = _PROTOCOLS[v]


def _persistence_timeout(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    # Without a value keepalived uses IPVS's default, 360 s.
    b.st["persistence_timeout"] = integer(x.args[0], "persistence_timeout", 1) if x.args else 360


def _persistence_granularity(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    v = arg(x)
    try:
        if v.isdigit():
            integer(v, "persistence_granularity", 1, 128)
        else:
            ipaddress.IPv4Address(v)
    except (ValueError, Bad):
        raise Bad(f"persistence_granularity '{v}' is neither a netmask nor a prefix length") from None
    b.st["persistence_netmask"] = v


def _quorum_up(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.st["quorum_up"] = command(x, cv.notes)


def _quorum_down(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.st["quorum_down"] = command(x, cv.notes)


def _sorry_server(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.sorry["address"] = str(address(arg(x), "sorry_server"))
    b.sorry["port"] = integer(x.args[1], "port", 0, 65535) if len(x.args) > 1 else 0
    b.sorry["where"] = x.where


def _sorry_server_lvs_method(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.sorry["forward"] = forward(x)


def _ip_family(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    v = arg(x)
    if v not in ("inet", "inet6"):
        raise Bad(f"ip_family '{v}' unknown")
    b.st["family"] = 4 if v == "inet" else 6


def _omega(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    cv.skip(x, "omega: quorum_down is not run on shutdown; skipped")


def _real_server_stmt(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.real_servers.append(x)    # read after the whole block: it inherits settings given later


def _flag(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    b.flags.append((x, x.keyword))


def _lvs_flags(cv: Converter, b: _VirtualServer, x: Stmt) -> None:
    # One line listing several flags, as ipvsadm -b takes them.
    for f in x.args:
        if f == "ops":
            b.st["one_packet"] = True
        else:
            b.flags.append((x, f))


_SCHED_FLAGS = ("hashed", "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback",
                "mh-port", "mh-fallback")

VIRTUAL_SERVER: dict[str, Handler] = {
    **_CHECK_DEFAULTS,
    "virtualhost": _VIRTUALHOST,
    "inhibit_on_failure": _INHIBIT,
    "lb_algo": _scheduler,
    "lvs_sched": _scheduler,
    "lb_kind": put("forward", forward),
    "lvs_method": put("forward", forward),
    "persistence_timeout": _persistence_timeout,
    "persistence_granularity": _persistence_granularity,
    "protocol": _protocol,
    "ops": put("one_packet", lambda x: True),
    "quorum": put("quorum", lambda x: integer(arg(x), "quorum", 1)),
    "hysteresis": put("quorum_hysteresis", lambda x: integer(arg(x), "hysteresis", 0)),
    "quorum_up": _quorum_up,
    "quorum_down": _quorum_down,
    "weight": put("weight", lambda x: integer(arg(x), "weight", 1, 65535)),
    "sorry_server": _sorry_server,
    "sorry_server_lvs_method": _sorry_server_lvs_method,
    "ip_family": _ip_family,
    "alpha": _alpha,
    "omega": _omega,
    "real_server": _real_server_stmt,
    **{f: _flag for f in _SCHED_FLAGS},
    "lvs_flags": _lvs_flags,
}


def _vs_settings(cv: Converter, s: Stmt) -> dict[str, Any] | None:
    """What every service of a virtual_server line shares: the block's settings."""
    b = _VirtualServer()
    ctx = f"virtual_server {' '.join(s.args)}"
    cv.each(s.block or [], VIRTUAL_SERVER, b, ctx)
    st = b.st

    scheduler = st.get("scheduler")
    if scheduler is None:
        scheduler = "wlc"
        cv.info(s.where, f"{ctx}: no lb_algo; keepalived's default 'wlc' used")
    sched_flags = _sched_flags(cv, b.flags, scheduler)
    fwd = st.get("forward")

    fields: dict[str, Any] = {"scheduler": scheduler}
    if sched_flags:
        fields["scheduler_flags"] = sched_flags
    if "persistence_timeout" in st:
        fields["persistence_timeout"] = st["persistence_timeout"]
    if "persistence_netmask" in st:
        fields["persistence_netmask"] = st["persistence_netmask"]
    if st.get("one_packet"):
        fields["one_packet"] = True

    servers, rs_inhibit, families = _real_servers(cv, b, fwd, ctx)
    fields["real_servers"] = servers
    if not servers:
        cv.info(s.where, f"{ctx} has no real servers")
    if b.sorry:
        ss = {"address": b.sorry["address"], "port": b.sorry["port"], "weight": 1}
        ss.update(b.sorry.get("forward") or fwd or {"forward": "nat"})
        fields["sorry_server"] = ss
    inhibit = any(rs_inhibit)
    if inhibit and not all(rs_inhibit):
        cv.change(s.where, f"{ctx}: inhibit_on_failure set on some real servers only; "
                           f"hadirector applies it to the whole service")
    if inhibit:
        fields["inhibit_on_failure"] = True
    fields["quorum"] = st.get("quorum", 1)
    if st.get("quorum_hysteresis"):
        fields["quorum_hysteresis"] = st["quorum_hysteresis"]
    if "quorum_up" in st:
        fields["quorum_up"] = st["quorum_up"]
    if "quorum_down" in st:
        fields["quorum_down"] = st["quorum_down"]
    family_hint = st.get("family") or (families.pop() if len(families) == 1 else 4)
    return {"protocol": st.get("protocol", "tcp"), "protocol_set": "protocol" in st,
            "family_hint": family_hint, "fields": fields}


def _real_servers(cv: Converter, b: _VirtualServer, fwd: dict[str, Any] | None,
                  ctx: str) -> tuple[list[dict[str, Any]], list[bool], set[int]]:
    """The real servers of a virtual server: (each once, its inhibit_on_failure, families)."""
    servers: list[dict[str, Any]] = []
    rs_inhibit: list[bool] = []
    families: set[int] = set()
    for r in b.real_servers:
        try:
            rs, inhibit = real_server(cv, r, b.defaults, fwd, b.st.get("weight", 1), ctx)
        except Bad as e:
            cv.skip(r, f"real_server {' '.join(r.args)}: {e}; skipped")
            continue
        key = (rs["address"], rs["port"])
        if any((x["address"], x["port"]) == key for x in servers):
            cv.skip(r, f"real_server {' '.join(r.args)} given twice; the second is skipped")
            continue
        families.add(ipaddress.ip_address(rs["address"]).version)
        servers.append(rs)
        rs_inhibit.append(inhibit if inhibit is not None else b.st.get("inhibit", False))
    return servers, rs_inhibit, families


def _sched_flags(cv: Converter, flags: list[tuple[Stmt, str]], scheduler: str) -> list[str]:
    out: list[str] = []
    # IP_VS_SVC_F_SCHED1 is sh/mh-fallback, SCHED2 sh/mh-port (include/uapi ip_vs.h).
    numbered = {"flag-1": "fallback", "flag-2": "port"}
    for stmt, f in flags:
        if f in numbered and scheduler in ("sh", "mh"):
            f = f"{scheduler}-{numbered[f]}"
        if f in ("sh-port", "sh-fallback", "mh-port", "mh-fallback"):
            if not f.startswith(scheduler + "-"):
                cv.info(stmt.where, f"{f} applies only to the {f[:2]} scheduler, not "
                                    f"{scheduler}; skipped (keepalived ignores it too)")
            elif f not in out:
                out.append(f)
        else:
            cv.skip(stmt, f"{f} not supported for scheduler {scheduler}, skipped")
    return out


# --- real_server ------------------------------------------------------------------------


@dataclass
class _RealServer:
    defaults: CheckDefaults
    st: dict[str, Any] = field(default_factory=dict)
    checkers: list[Stmt] = field(default_factory=list)


def _notify_updown(cv: Converter, b: _RealServer, x: Stmt) -> None:
    cv.skip(x, f"{x.keyword}: real server notify scripts not supported, skipped")


def _checker_stmt(cv: Converter, b: _RealServer, x: Stmt) -> None:
    b.checkers.append(x)


REAL_SERVER: dict[str, Handler] = {
    "weight": put("weight", lambda x: integer(arg(x), "weight", 0, 65535)),
    "lvs_method": put("forward", forward),
    "uthreshold": put("upper_threshold", lambda x: integer(arg(x), "uthreshold", 0)),
    "lthreshold": put("lower_threshold", lambda x: integer(arg(x), "lthreshold", 0)),
    "inhibit_on_failure": _INHIBIT,
    "notify_up": _notify_updown,
    "notify_down": _notify_updown,
    "alpha": _alpha,
    **_CHECK_DEFAULTS,
    "virtualhost": _VIRTUALHOST,
    **{c: _checker_stmt for c in (*_CHECK_TYPE, *UNSUPPORTED_CHECKERS)},
}


def real_server(cv: Converter, r: Stmt, vs_defaults: CheckDefaults, vs_forward: dict[str, Any] | None,
                vs_weight: int, vs_ctx: str = "") -> tuple[dict[str, Any], bool | None]:
    addr = address(arg(r), "real_server address")
    port = integer(r.args[1], "port", 0, 65535) if len(r.args) > 1 else 0
    b = _RealServer(vs_defaults.child())
    ctx = f"real_server {' '.join(r.args)}"
    cv.each(r.block or [], REAL_SERVER, b, ctx)
    st = b.st

    rs: dict[str, Any] = {
        "address": str(addr),
        "port": port,
        "weight": st.get("weight", vs_weight),
    }
    rs.update(st.get("forward") or vs_forward or {"forward": "nat"})
    if st.get("upper_threshold"):
        rs["upper_threshold"] = st["upper_threshold"]
    if st.get("lower_threshold"):
        rs["lower_threshold"] = st["lower_threshold"]

    check = None
    for c in b.checkers:
        if c.keyword in UNSUPPORTED_CHECKERS:
            cv.skip(c, f"{c.keyword} of {ctx} in {vs_ctx} is not converted: hadirector "
                       f"has no {UNSUPPORTED_CHECKERS[c.keyword]} probe")
            continue
        if check is not None:
            cv.skip(c, f"{c.keyword}: hadirector runs one check per real server; "
                       f"this second checker is skipped")
            continue
        try:
            check = checker(cv, c, b.defaults, target=(str(addr), port))
        except Bad as e:
            cv.skip(c, f"{c.keyword}: {e}; checker skipped")
    if check is not None:
        rs["check"] = check
    elif b.checkers:
        cv.skip(r, f"{ctx} in {vs_ctx}: no convertible checker, so it has no health "
                   f"check: always considered up")
    return rs, st.get("inhibit")


# --- checkers ---------------------------------------------------------------------------


@dataclass
class _Checker:
    defaults: CheckDefaults
    st: dict[str, Any] = field(default_factory=dict)
    urls: list[Stmt] = field(default_factory=list)
    hosts: list[Stmt] = field(default_factory=list)        # SMTP_CHECK's deprecated host blocks


def _checker_alpha(cv: Converter, b: _Checker, x: Stmt) -> None:
    v = (x.args or ["yes"])[0].lower()
    b.defaults.alpha = v not in ("no", "off", "false", "0")


def _url_stmt(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.urls.append(x)


def _misc_path(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.st["command"] = command(x, cv.notes, user_words=False)


def _misc_dynamic(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.st["dynamic"] = True


def hex_octets(text: str, what: str, wildcard: bool = False) -> list[int | str]:
    """keepalived's read_hex_str: blank-separated groups of one or two hex digits, one
    octet each; with ``wildcard`` an ``X`` digit matches any nibble. An octet with a
    wildcard comes back as its two-character text ("4X"), others as ints."""
    out: list[int | str] = []
    for group in text.split():
        for i in range(0, len(group), 2):
            pair = group[i:i + 2].upper()
            if any(ch not in "0123456789ABCDEF" + ("X" if wildcard else "") for ch in pair):
                raise Bad(f"{what} '{text}' is not a hex string")
            out.append(pair if "X" in pair else int(pair, 16))
    if not out:
        raise Bad(f"{what} needs hex digits")
    return out


def _octet_regex(octet: int | str) -> str:
    if isinstance(octet, int):
        return f"\\x{octet:02x}"
    hi, lo = octet if len(octet) == 2 else ("0", octet)
    if hi == "X" and lo == "X":
        return "."
    his = range(16) if hi == "X" else [int(hi, 16)]
    los = range(16) if lo == "X" else [int(lo, 16)]
    return "[" + "".join(f"\\x{h << 4 | l_:02x}" for h in his for l_ in los) + "]"


def _payload(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.st["payload_hex"] = "".join(f"{o:02x}" for o in hex_octets(" ".join(x.args), "payload"))


def _require_reply(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.st["require_reply"] = True
    if x.args:
        b.st["reply_octets"] = hex_octets(" ".join(x.args), "require_reply", wildcard=True)


def udp_reply_regex(octets: list[int | str], min_len: int, max_len: int) -> str:
    """keepalived's check_udp_reply as a regex over the reply: its length within
    [min_len, max_len], and its first octets equal to the given ones (``X`` nibbles
    match anything). keepalived compares only as many octets as the reply has; the
    regex wants them all."""
    return f"(?s)^(?=.{{{min_len},{max_len}}}\\Z)" + "".join(_octet_regex(o) for o in octets)


def _smtp_host(cv: Converter, b: _Checker, x: Stmt) -> None:
    b.hosts.append(x)


_CONNECT: dict[str, Handler] = {
    "connect_ip": put("address", lambda x: str(address(arg(x), "connect_ip"))),
    "connect_port": put("port", lambda x: integer(arg(x), "connect_port", 1, 65535)),
    "bindto": put("bind_to", lambda x: str(address(arg(x), "bindto"))),
}
_ANY_CHECK: dict[str, Handler] = {**_CHECK_DEFAULTS, "alpha": _checker_alpha}
TCP_CHECK: dict[str, Handler] = {**_CONNECT, **_ANY_CHECK}
HTTP_GET: dict[str, Handler] = {
    **TCP_CHECK,
    "nb_get_retry": _default("retry", lambda x: integer(arg(x), "nb_get_retry", 0)),
    "virtualhost": _VIRTUALHOST,
    "url": _url_stmt,
}
MISC_CHECK: dict[str, Handler] = {
    **{k: h for k, h in _ANY_CHECK.items() if k != "connect_timeout"},
    "misc_path": _misc_path,
    "misc_timeout": put("misc_timeout", lambda x: floating(arg(x), "misc_timeout")),
    "misc_dynamic": _misc_dynamic,
}
DNS_CHECK: dict[str, Handler] = {
    **TCP_CHECK,
    "type": put("query_type", lambda x: _dns_type(arg(x))),
    "name": put("name", lambda x: arg(x)),
}
UDP_CHECK: dict[str, Handler] = {
    **TCP_CHECK,
    "payload": _payload,
    "require_reply": _require_reply,
    "min_reply_length": put("min_reply_length", lambda x: integer(arg(x), "min_reply_length", 0, 65535)),
    "max_reply_length": put("max_reply_length", lambda x: integer(arg(x), "max_reply_length", 0, 65535)),
}
SMTP_CHECK: dict[str, Handler] = {
    **TCP_CHECK,
    "helo_name": put("helo_name", lambda x: arg(x)),
    "host": _smtp_host,
}
PING_CHECK: dict[str, Handler] = {k: h for k, h in TCP_CHECK.items() if k != "connect_port"}
CHECKERS: dict[str, dict[str, Handler]] = {
    "TCP_CHECK": TCP_CHECK, "HTTP_GET": HTTP_GET, "SSL_GET": HTTP_GET, "MISC_CHECK": MISC_CHECK,
    "DNS_CHECK": DNS_CHECK, "UDP_CHECK": UDP_CHECK, "SMTP_CHECK": SMTP_CHECK, "PING_CHECK": PING_CHECK,
}
_DNS_TYPES = ("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", "RRSIG", "DNSKEY")   # check_dns.c DNS_TYPE


def _dns_type(text: str) -> str:
    if text.upper() not in _DNS_TYPES:
        raise Bad(f"DNS check type '{text}' is not one of {', '.join(_DNS_TYPES)}")
    return text.upper()


def checker(cv: Converter, c: Stmt, rs_defaults: CheckDefaults,
            target: tuple[str, int] | None = None) -> dict[str, Any]:
    kind = c.keyword
    b = _Checker(rs_defaults.child())
    cv.each(c.block or [], CHECKERS[kind], b, kind)
    st, dfl = b.st, b.defaults

    # keepalived defaults (check_api.c, check_data.c, check_http.c, check_misc.c, check_dns.c)
    delay_loop = dfl.delay_loop if dfl.delay_loop is not None else _KA_DEFAULT_DELAY_LOOP
    retry = dfl.retry if dfl.retry is not None else {"MISC_CHECK": 0, "DNS_CHECK": 3}.get(kind, 1)
    dbr = dfl.delay_before_retry
    if dbr is None:
        # DNS_CHECK's default 0 "will default to delay_loop" (check_dns.c).
        dbr = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": delay_loop}.get(kind, 1.0)

    out: dict[str, Any] = {"type": _CHECK_TYPE[kind]}
    if kind == "MISC_CHECK":
        if "command" not in st:
            raise Bad("no misc_path")
        out["command"] = st["command"]
        if st.get("dynamic"):
            out["dynamic"] = True
    elif kind == "DNS_CHECK":
        out["name"] = st.get("name") or "."           # DNS_DEFAULT_NAME "": the root
        out["query_type"] = st.get("query_type", "SOA")
    elif kind == "UDP_CHECK":
        _udp(st, out)
    elif kind == "SMTP_CHECK":
        out["helo_name"] = st.get("helo_name", "smtpchecker.keepalived.org")
        _smtp_hosts(cv, b, st, target)

    if kind == "MISC_CHECK":
        # misc_timeout defaults to delay_loop (check_misc.c).
        timeout = st.get("misc_timeout") or delay_loop
    else:
        timeout = dfl.connect_timeout if dfl.connect_timeout is not None \
            else _KA_DEFAULT_CONNECT_TIMEOUT
    out["interval"] = num(delay_loop)
    out["timeout"] = num(timeout)
    out["rise"] = 1
    out["fall"] = retry + 1
    if retry:
        out["retry_delay"] = num(dbr)
    if dfl.alpha:
        out["initial"] = "down"
    if dfl.warmup:
        out["jitter"] = num(dfl.warmup)
    for k in ("bind_to", "address", "port"):
        if k in st:
            out[k] = st[k]

    if kind in ("HTTP_GET", "SSL_GET"):
        _http_urls(cv, b, out)
        if kind == "SSL_GET":
            out["verify_tls"] = False
    return out


def _udp(st: dict[str, Any], out: dict[str, Any]) -> None:
    if "payload_hex" in st:
        out["payload_hex"] = st["payload_hex"]
    if st.get("require_reply"):
        out["require_reply"] = True
        if "reply_octets" in st:     # keepalived checks lengths only along with reply data
            out["reply_regex"] = udp_reply_regex(st["reply_octets"], st.get("min_reply_length", 0),
                                                 st.get("max_reply_length", 255))


def _smtp_hosts(cv: Converter, b: _Checker, st: dict[str, Any], target: tuple[str, int] | None) -> None:
    """SMTP_CHECK's deprecated ``host`` blocks are more checkers. Without connection
    settings of its own the check goes to the first host, as keepalived's does
    (check_smtp.c smtp_check_end_handler); a host that is the check's own target adds
    nothing; any other is not checked (one check per real server)."""
    hosts = []
    for h in b.hosts:
        one = _Checker(b.defaults.child())
        cv.each(h.block or [], _CONNECT, one, "host")
        hosts.append((h, {k: v for k, v in one.st.items() if k in ("address", "port", "bind_to")}))
    own = any(k in st for k in ("address", "port", "bind_to")) or b.defaults.connect_timeout is not None
    if hosts and not own:
        st.update(hosts.pop(0)[1])
    addr, port = target or (None, None)
    main = (st.get("address", addr), st.get("port", port), st.get("bind_to"))
    for h, co in hosts:
        if (co.get("address", addr), co.get("port", port), co.get("bind_to")) == main:
            cv.info(h.where, f"SMTP_CHECK host {co.get('address', addr)}: the same as the check itself")
            continue
        cv.skip(h, f"SMTP_CHECK host {co.get('address', 'with no connect_ip')}: hadirector runs one "
                   f"check per real server; this host is not checked")


def _http_urls(cv: Converter, b: _Checker, out: dict[str, Any]) -> None:
    """The first url block is checked; the others are noted as skipped."""
    if not b.urls:
        raise Bad("no url")
    out.update(url(cv, b.urls[0], b.defaults.virtualhost))
    for extra in b.urls[1:]:
        path = next((u.args[0] for u in extra.block or [] if u.keyword == "path" and u.args), "?")
        cv.skip(extra, f"url {path}: hadirector checks one URL per real server; "
                       f"skipped (only {out['path']} is checked)")


# --- url --------------------------------------------------------------------------------


@dataclass
class _Url:
    st: dict[str, Any] = field(default_factory=dict)
    codes: list[tuple[int, int]] = field(default_factory=list)     # ranges, as written


def _status_code(cv: Converter, b: _Url, x: Stmt) -> None:
    for part in x.args:
        lo_s, _, hi_s = part.partition("-")
        lo = integer(lo_s, "status_code", 100, 599)
        hi = integer(hi_s, "status_code", 100, 599) if hi_s else lo
        if hi < lo:
            raise Bad(f"status_code range '{part}' is empty")
        if (lo, hi) not in b.codes:
            b.codes.append((lo, hi))


def _digest(cv: Converter, b: _Url, x: Stmt) -> None:
    v = arg(x).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", v):
        raise Bad(f"digest '{x.args[0]}' is not an MD5 hex digest")
    b.st["digest"] = v


URL: dict[str, Handler] = {
    "path": put("path", lambda x: arg(x)),
    "digest": _digest,
    "status_code": _status_code,
    "virtualhost": put("host", lambda x: arg(x)),
    "regex": put("body_regex", lambda x: arg(x)),
}


def url(cv: Converter, u: Stmt, virtualhost: str | None) -> dict[str, Any]:
    b = _Url()
    cv.each(u.block or [], URL, b, "url")
    st = b.st
    if "path" not in st:
        raise Bad("url has no path")
    out: dict[str, Any] = {"path": st["path"]}
    # No status_code: keepalived accepts any 2xx (HTTP_DEFAULT_STATUS_CODE_MIN..MAX).
    out["status_codes"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in b.codes] or ["200-299"]
    if "digest" in st:
        out["digest"] = st["digest"]
    if "body_regex" in st:
        out["body_regex"] = st["body_regex"]
    host = st.get("host") or virtualhost
    if host:
        out["host"] = host
    return out
