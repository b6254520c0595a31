"""The VRRP side of keepalived.conf: ``global_defs``, ``vrrp_script``, ``vrrp_instance``
and ``vrrp_sync_group``, each read with a flat keyword -> handler table
(``GLOBAL_DEFS``, ``VRRP_SCRIPT``, ``VRRP_INSTANCE``, ``VRRP_SYNC_GROUP``).

A handler gets the converter (for notes and the globals), the block being read and
the statement; the block's ``finish`` function then applies keepalived's defaults and
rules (vrrp_complete_instance) and returns the dict of hadirector keys.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .lex import Stmt, Where
from .values import Bad, Handler, address, arg, command, floating, integer, num, put

if TYPE_CHECKING:
    from .convert import Converter

VipList = list[tuple[Stmt, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]


@dataclass
class Garp:
    delay: float = 5.0       # garp_master_delay
    repeat: int = 5          # garp_master_repeat
    refresh: float = 0.0     # garp_master_refresh
    interval: float = 0.0    # garp_interval (IPv4)
    gna_interval: float = 0.0  # gna_interval (IPv6)


def _garp(attr: str, conv: Callable[[str, str], Any]) -> Handler:
    """A handler that sets ``block.garp.attr`` (global_defs' defaults, or an instance's)."""
    def handler(cv: Converter, block: Any, x: Stmt) -> None:
        setattr(block.garp, attr, conv(arg(x), x.keyword))
    handler.__name__ = f"garp_{attr}"
    return handler


def _notify(key: str) -> Handler:
    """notify_master, notify_backup, ... of an instance or a sync group."""
    def handler(cv: Converter, block: Any, x: Stmt) -> None:
        block.notify[key] = command(x, cv.notes)
    handler.__name__ = f"notify_{key}"
    return handler


def _repeat(v: str, what: str) -> int:
    return integer(v, what, 1)


_GARP_GLOBALS: dict[str, Handler] = {
    "vrrp_garp_master_delay": _garp("delay", floating),
    "vrrp_garp_master_repeat": _garp("repeat", _repeat),
    "vrrp_garp_master_refresh": _garp("refresh", floating),
    "vrrp_garp_interval": _garp("interval", floating),
    "vrrp_gna_interval": _garp("gna_interval", floating),
}
_NOTIFY: dict[str, Handler] = {
    "notify_master": _notify("master"),
    "notify_backup": _notify("backup"),
    "notify_fault": _notify("fault"),
    "notify_stop": _notify("stop"),
    "notify": _notify("notify"),
}


# --- global_defs: the block is the converter itself (its globals) ---------------------


def _router_id(cv: Converter, g: Converter, x: Stmt) -> None:
    g.router_id = arg(x)
    g.router_id_where = x.where


def _vrrp_version(cv: Converter, g: Converter, x: Stmt) -> None:
    g.vrrp_version = integer(arg(x), "vrrp_version", 2, 3)


def _vrrp_strict(cv: Converter, g: Converter, x: Stmt) -> None:
    g.strict = True
    cv.change(x.where, "vrrp_strict: its extra checks are not done; only its "
                       "effect on accept_mode (off) is kept")


def _lvs_flush(cv: Converter, g: Converter, x: Stmt) -> None:
    cv.change(x.where, "lvs_flush: hadirector never flushes IPVS, it removes only "
                       "the entries it owns")


def _lvs_flush_on_stop(cv: Converter, g: Converter, x: Stmt) -> None:
    cv.change(x.where, f"{x.keyword}: on_shutdown is 'remove', which removes only "
                       f"hadirector's own entries, not the whole table")


_SYNCD_OPTIONS = ("inst", "id", "maxlen", "port", "ttl", "group")


def _lvs_sync_daemon(cv: Converter, g: Converter, s: Stmt) -> None:
    """``lvs_sync_daemon IFACE [INSTANCE | inst NAME] [id N] [maxlen N] [port N]
    [ttl N] [group IP]`` (global_parser.c lvs_syncd_handler)."""
    if g.sync_daemon is not None:
        raise Bad("lvs_sync_daemon given twice")
    sd: dict[str, Any] = {"interface": arg(s)}
    args = s.args
    i = 1
    while i < len(args):
        key = args[i]
        val = args[i + 1] if i + 1 < len(args) else None
        if key in _SYNCD_OPTIONS and val is None:
            raise Bad(f"lvs_sync_daemon {key} needs a value")
        if key == "inst":
            sd["follow_instance"] = val
        elif key == "id":
            sd["syncid"] = integer(val, "lvs_sync_daemon id", 0, 255)
        elif key == "maxlen":
            sd["maxlen"] = integer(val, "lvs_sync_daemon maxlen", 1, 65535 - 28)
        elif key == "port":
            sd["port"] = integer(val, "lvs_sync_daemon port", 1, 65535)
        elif key == "ttl":
            sd["ttl"] = integer(val, "lvs_sync_daemon ttl", 1, 255)
        elif key == "group":
            group = address(val, "lvs_sync_daemon group")
            if not group.is_multicast:
                raise Bad(f"lvs_sync_daemon group {val} is not multicast")
            sd["mcast_group"] = str(group)
        elif i == 1:        # old syntax: IFACE INSTANCE [SYNCID]
            sd["follow_instance"] = key
            i += 1
            continue
        elif i == 2 and key.isdigit():
            sd["syncid"] = integer(key, "lvs_sync_daemon syncid", 0, 255)
            i += 1
            continue
        else:
            raise Bad(f"lvs_sync_daemon option '{key}' unknown")
        i += 2
    g.sync_daemon, g.sync_daemon_where = sd, s.where


GLOBAL_DEFS: dict[str, Handler] = {
    "router_id": _router_id,
    "vrrp_version": _vrrp_version,
    "vrrp_strict": _vrrp_strict,
    **_GARP_GLOBALS,
    "lvs_sync_daemon": _lvs_sync_daemon,
    "lvs_flush": _lvs_flush,
    "lvs_flush_onstop": _lvs_flush_on_stop,
    "lvs_flush_on_stop": _lvs_flush_on_stop,
}


# --- vrrp_script ------------------------------------------------------------------------


@dataclass
class _Script:
    st: dict[str, Any]
    timeout: list[float] = field(default_factory=list)


def _script_command(cv: Converter, b: _Script, x: Stmt) -> None:
    b.st["command"] = command(x, cv.notes, user_words=False)


def _script_timeout(cv: Converter, b: _Script, x: Stmt) -> None:
    b.timeout.append(floating(arg(x), "timeout"))


def _script_weight(cv: Converter, b: _Script, x: Stmt) -> None:
    b.st["weight"] = integer(arg(x), "weight", -253, 253)
    if len(x.args) > 1:
        cv.skip(x, f"weight {' '.join(x.args[1:])}: 'reverse' not supported, skipped "
                   f"(weight kept as {b.st['weight']})")


VRRP_SCRIPT: dict[str, Handler] = {
    "script": _script_command,
    "interval": put("interval", lambda x: num(floating(arg(x), "interval"))),
    "timeout": _script_timeout,
    "weight": _script_weight,
    "rise": put("rise", lambda x: integer(arg(x), "rise", 1)),
    "fall": put("fall", lambda x: integer(arg(x), "fall", 1)),
}


def script(cv: Converter, s: Stmt) -> None:
    name = s.args[0]
    b = _Script({"name": name})
    cv.each(s.block or [], VRRP_SCRIPT, b, f"vrrp_script {name}")
    d = b.st
    if "command" not in d:
        cv.skip(s, f"vrrp_script {name} has no script, skipped")
        return
    if name in cv.scripts:
        cv.skip(s, f"vrrp_script {name} defined twice; the second is skipped")
        return
    # keepalived: interval 1 s; timeout 0 means "the interval"; rise/fall 1; weight 0.
    d.setdefault("interval", 1)
    d["timeout"] = num(b.timeout[0]) if b.timeout and b.timeout[0] > 0 else d["interval"]
    d.setdefault("weight", 0)
    d.setdefault("rise", 1)
    d.setdefault("fall", 1)
    cv.scripts[name] = {k: d[k] for k in ("name", "command", "interval", "timeout",
                                          "weight", "rise", "fall")}


# --- vrrp_instance ----------------------------------------------------------------------


@dataclass
class _Instance:
    name: str
    garp: Garp
    st: dict[str, Any] = field(default_factory=dict)
    vips: VipList = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    tifs: list[dict[str, Any]] = field(default_factory=list)
    tscripts: list[str] = field(default_factory=list)
    notify: dict[str, list[str]] = field(default_factory=dict)
    auth: dict[str, Any] | None = None


def _state(cv: Converter, b: _Instance, x: Stmt) -> None:
    v = arg(x).upper()
    if v not in ("MASTER", "BACKUP"):
        raise Bad(f"state '{x.args[0]}' unknown")
    b.st["state"] = v
    if v == "MASTER":
        cv.change(x.where, "state MASTER: keepalived starts as master at once; "
                           "hadirector starts as backup and elects by priority")


def _virtual_ipaddress(cv: Converter, b: _Instance, x: Stmt) -> None:
    for item in x.block or []:
        try:
            b.vips.append((item, _vip(cv, item, b.st.get("interface"))))
        except Bad as e:
            cv.skip(item, f"{e}; address skipped")


def _virtual_ipaddress_excluded(cv: Converter, b: _Instance, x: Stmt) -> None:
    cv.change(x.where, "virtual_ipaddress_excluded: merged into virtual_ips, "
                       "so they are also listed in adverts")
    _virtual_ipaddress(cv, b, x)


def _unicast_peer(cv: Converter, b: _Instance, x: Stmt) -> None:
    for item in x.block or []:
        try:
            b.peers.append(str(address(item.keyword, "unicast_peer")))
        except Bad as e:
            cv.skip(item, f"{e}; peer skipped")
            continue
        if len(item.words) > 1:
            cv.skip(item, f"unicast_peer options '{' '.join(item.args)}' not "
                          f"supported, skipped")


def _track_interface(cv: Converter, b: _Instance, x: Stmt) -> None:
    for item in x.block or []:
        t: dict[str, Any] = {"name": item.keyword, "weight": 0}
        if len(item.args) >= 2 and item.args[0] == "weight":
            try:
                t["weight"] = integer(item.args[1], "weight", -254, 254)
            except Bad as e:
                cv.skip(item, f"{e}; track_interface skipped")
                continue
            if len(item.args) > 2:
                cv.skip(item, f"track_interface '{' '.join(item.args[2:])}' not "
                              f"supported, skipped")
        elif item.args:
            cv.skip(item, f"track_interface options '{' '.join(item.args)}' not "
                          f"supported, skipped")
        b.tifs.append(t)


def _track_script(cv: Converter, b: _Instance, x: Stmt) -> None:
    for item in x.block or []:
        b.tscripts.append(_track_script_ref(cv, item))


def _authentication(cv: Converter, b: _Instance, x: Stmt) -> None:
    cv.skip(x, "authentication not supported (RFC 5798 removed it), skipped; a "
               "keepalived peer with auth_type set will ignore our adverts. Signed adverts: "
               "auth (keepalived 2.4.2+'s auth_hmac) on both nodes")


_AUTH_MODES = {"enforce": "enforce", "permissive": "permissive", "receive-only": "receive_only"}


def _auth_hmac(cv: Converter, b: _Instance, x: Stmt) -> None:
    """keepalived 2.4.2+'s auth_hmac block -> auth. Keys are converted only from
    ``file:`` (hadirector reads secrets only from files, in keepalived's format); an
    inline key is lost, and never echoed."""
    auth: dict[str, Any] = {}
    keys: list[dict[str, Any]] = []
    for item in x.block or []:
        k = item.keyword
        try:
            if k == "key":
                if len(item.args) < 2:
                    raise Bad("auth_hmac key needs an id and a value")
                key_id = integer(item.args[0], "auth_hmac key id", 1, 255)
                if not item.args[1].startswith("file:"):
                    cv.skip(item, f"auth_hmac key {key_id}: an inline key is not converted "
                                  "(hadirector reads keys only from files): write it to a file only "
                                  "root can read, as keepalived's file: format (hex:... or the text), "
                                  f"and list {{id: {key_id}, secret_file: PATH}} in auth.keys")
                    continue
                keys.append({"id": key_id, "secret_file": item.args[1].removeprefix("file:")})
            elif k == "active_key":
                auth["active_key"] = integer(arg(item), "active_key", 1, 255)
            elif k == "time_window":
                auth["time_window"] = integer(arg(item), "time_window", 1, 300)
            elif k == "anti_replay":
                if arg(item) not in ("time", "monotonic"):
                    raise Bad(f"anti_replay '{arg(item)}' must be time or monotonic")
                auth["anti_replay"] = arg(item)
            elif k == "mode":
                if arg(item) not in _AUTH_MODES:
                    raise Bad(f"mode '{arg(item)}' must be enforce, permissive or receive-only")
                auth["mode"] = _AUTH_MODES[arg(item)]
            else:
                cv.skip(item, f"auth_hmac {k} not supported, skipped")
        except Bad as e:
            cv.skip(item, f"{e}; skipped")
    ids = {key["id"] for key in keys}
    active = auth.get("active_key")
    if not keys or (active is not None and active not in ids) or (active is None and len(ids) > 1):
        cv.skip(x, "auth_hmac not converted: its active key is not among the keys read from "
                   "files (see the notes above); the instance's adverts stay unsigned")
        return
    b.auth = {"mode": auth.get("mode", "enforce"), "keys": keys,
              **{k: v for k, v in auth.items() if k != "mode"}}


def _lvs_sync_daemon_interface(cv: Converter, b: _Instance, x: Stmt) -> None:
    if cv.sync_daemon is None:
        cv.sync_daemon = {"interface": arg(x), "follow_instance": b.name}
        cv.sync_daemon_where = x.where
    else:
        cv.skip(x, "lvs_sync_daemon_interface: a sync daemon is already set, skipped")


def _on(x: Stmt) -> bool:
    return (x.args or ["on"])[0] in ("on", "true", "yes")


VRRP_INSTANCE: dict[str, Handler] = {
    "state": _state,
    "interface": put("interface", lambda x: arg(x)),
    "virtual_router_id": put("vrid", lambda x: integer(arg(x), "virtual_router_id", 1, 255)),
    "priority": put("priority", lambda x: integer(arg(x), "priority", 1, 255)),
    "advert_int": put("advert_interval", lambda x: floating(arg(x), "advert_int")),
    "version": put("version", lambda x: integer(arg(x), "version", 2, 3)),
    "virtual_ipaddress": _virtual_ipaddress,
    "virtual_ipaddress_excluded": _virtual_ipaddress_excluded,
    "nopreempt": put("preempt", lambda x: False),
    "preempt": put("preempt", lambda x: True),
    "preempt_delay": put("preempt_delay", lambda x: floating(arg(x), "preempt_delay")),
    "accept": put("accept", lambda x: True),
    "no_accept": put("accept", lambda x: False),
    "strict_mode": put("strict", _on),
    "unicast_src_ip": put("unicast_src", lambda x: str(address(arg(x), "unicast_src_ip"))),
    "unicast_peer": _unicast_peer,
    "track_interface": _track_interface,
    "track_script": _track_script,
    **_NOTIFY,
    **{k.removeprefix("vrrp_"): h for k, h in _GARP_GLOBALS.items()},
    "authentication": _authentication,
    "auth_hmac": _auth_hmac,
    "lvs_sync_daemon_interface": _lvs_sync_daemon_interface,
}


def instance(cv: Converter, s: Stmt) -> dict[str, Any]:
    name = s.args[0]
    b = _Instance(name, Garp(**cv.garp.__dict__))
    ctx = f"vrrp_instance {name}"
    # 'interface' must be known before VIPs are read (for the dev check), whatever
    # the order in the file.
    block = s.block or []
    cv.each([x for x in block if x.keyword == "interface"], VRRP_INSTANCE, b, ctx)
    cv.each([x for x in block if x.keyword != "interface"], VRRP_INSTANCE, b, ctx)
    st = b.st
    if "interface" not in st:
        raise Bad("no interface")
    if "vrid" not in st:
        raise Bad("no virtual_router_id")

    vips = _one_family_once(cv, b.vips, name)
    if not vips:
        raise Bad("no virtual_ipaddress (hadirector needs at least one)")
    family = vips[0][1].version
    version = st.get("version", 3 if family == 6 else cv.vrrp_version)
    if version == 2 and family == 6:
        cv.info(s.where, f"vrrp_instance {name}: IPv6 needs VRRP version 3; using 3 "
                         f"(as keepalived does)")
        version = 3

    priority = st.get("priority")
    if priority is None:
        # vrrp_complete_instance: no priority -> 255 for state MASTER, else 100.
        priority = 255 if st.get("state") == "MASTER" else 100
        if priority == 255:
            cv.info(s.where, f"vrrp_instance {name}: state MASTER without priority "
                             f"means priority 255 (address owner) in keepalived")
    advert = _advert(cv, st.get("advert_interval", 1.0), version, name, s.where)
    strict = st.get("strict", cv.strict)
    accept = st.get("accept", True if priority == 255 else not strict)
    preempt, preempt_delay = _preempt_rules(cv, s, st, priority, strict)

    d: dict[str, Any] = {
        "name": name,
        "interface": st["interface"],
        "vrid": st["vrid"],
        "priority": priority,
        "version": version,
        "advert_interval": num(advert),
        "virtual_ips": [str(v) for _, v in vips],
        "preempt": preempt,
    }
    if preempt_delay:
        d["preempt_delay"] = num(preempt_delay)
    d["accept_mode"] = accept
    if "unicast_src" in st:
        d["unicast_src"] = st["unicast_src"]
    if b.peers:
        d["unicast_peers"] = b.peers
    if b.tifs:
        d["track_interfaces"] = b.tifs
    if b.tscripts:
        d["track_scripts"] = b.tscripts
    if b.notify:
        d["notify"] = b.notify
    d["garp"] = _garp_settings(cv, b.garp, family, name, s.where)
    if b.auth is not None:
        if strict and b.auth["mode"] != "enforce":
            cv.info(s.where, f"vrrp_instance {name}: strict_mode requires auth_hmac mode enforce; "
                             "using enforce (as keepalived does)")
            b.auth["mode"] = "enforce"
        d["auth"] = b.auth
    return d


def _one_family_once(cv: Converter, vips: VipList, name: str) -> VipList:
    """The VIPs of the first one's family, each once (the rest noted as skipped)."""
    families = {v.version for _, v in vips}
    if len(families) > 1:
        first = vips[0][1].version
        for item, v in vips:
            if v.version != first:
                cv.skip(item, f"{v} is IPv{v.version} but the instance is IPv{first}; "
                              f"address skipped")
        vips = [(i, v) for i, v in vips if v.version == first]
    seen: set = set()
    unique = []
    for item, v in vips:
        if v.ip in seen:
            cv.skip(item, f"{v.ip} is listed twice in vrrp_instance {name}; the second "
                          f"entry is skipped")
            continue
        seen.add(v.ip)
        unique.append((item, v))
    return unique


def _garp_settings(cv: Converter, garp: Garp, family: int, name: str, where: Where) -> dict[str, Any]:
    interval = garp.gna_interval if family == 6 else garp.interval
    if interval > 1:
        cv.change(where, f"vrrp_instance {name}: garp interval {interval:g}s "
                         f"shortened to hadirector's maximum, 1s")
        interval = 1.0
    return {
        "count": garp.repeat,
        "interval": num(interval),
        "repeat_delay": num(garp.delay),
        "refresh": num(garp.refresh),
    }


def _preempt_rules(cv: Converter, s: Stmt, st: dict[str, Any], priority: int,
                   strict: bool) -> tuple[bool, float]:
    """nopreempt and preempt_delay as keepalived really runs them
    (vrrp_complete_instance, 2.2.7): both are cleared for an instance whose initial
    state is MASTER (``state MASTER``, or no state and priority 255; strict mode
    forces the state to match the priority), nopreempt is cleared at priority 255,
    and preempt_delay is cleared with nopreempt or strict mode."""
    name = s.args[0]
    block = s.block or []
    nopreempt_at = next((x.where for x in block if x.keyword == "nopreempt"), s.where)
    delay_at = next((x.where for x in block if x.keyword == "preempt_delay"), s.where)
    preempt = st.get("preempt", True)
    delay = st.get("preempt_delay", 0.0)
    initial = st.get("state") or ("MASTER" if priority == 255 else "BACKUP")
    if strict and (initial == "MASTER") != (priority == 255):
        initial = "MASTER" if priority == 255 else "BACKUP"
    why = ""
    if not preempt and priority == 255:
        why = "priority 255 (address owner)"
    elif not preempt and initial == "MASTER":
        why = "initial state MASTER"
    if why:
        preempt = True
        cv.info(nopreempt_at, f"vrrp_instance {name}: nopreempt is ignored by keepalived "
                              f"with {why}; converted as preempt: true")
    if delay:
        why = ("initial state MASTER" if initial == "MASTER" else
               "strict mode" if strict else "nopreempt" if not preempt else "")
        if why:
            cv.info(delay_at, f"vrrp_instance {name}: preempt_delay is ignored by "
                              f"keepalived with {why}; not converted")
            delay = 0.0
    return preempt, delay


def _advert(cv: Converter, advert: float, version: int, name: str, where: Where) -> float:
    """Round the advert interval as keepalived does (vrrp_complete_instance): whole
    seconds 1..255 for VRRPv2 (RFC 3768 5.3.7), centiseconds up to 40.95 s for v3
    (RFC 5798 5.2.7)."""
    if version == 2:
        rounded = float(min(max(int(advert + 0.5), 1), 255))
    else:
        rounded = min(max(int(advert * 100 + 0.5), 1), 4095) / 100
    if abs(rounded - advert) > 1e-9:
        cv.info(where, f"vrrp_instance {name}: advert_int {advert:g} is not valid for "
                       f"VRRPv{version}; rounded to {rounded:g} as keepalived does")
    return rounded


_VIP_OPTIONS = ("label", "scope", "brd", "broadcast", "metric", "preferred_lft", "valid_lft")


def _vip(cv: Converter, item: Stmt, interface: str | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``ADDR[/PREFIX] [dev IF] [label L] [scope S] [brd B] ...``; no prefix = host."""
    text = item.keyword
    try:
        vip = ipaddress.ip_interface(text)
    except ValueError:
        raise Bad(f"virtual address '{text}' is not an address") from None
    if "/" not in text:  # keepalived: /32 for IPv4, /128 for IPv6 (vrrp_ipaddress.c)
        vip = ipaddress.ip_interface(f"{vip.ip}/{vip.max_prefixlen}")
    opts = item.args
    i = 0
    while i < len(opts):
        key = opts[i]
        val = opts[i + 1] if i + 1 < len(opts) else None
        if key == "dev" and val is not None:
            if val != interface:
                cv.skip(item, f"{vip} dev {val}: hadirector adds every VIP on the "
                              f"instance interface ({interface}); dev skipped")
            i += 2
        elif key in _VIP_OPTIONS and val is not None:
            cv.skip(item, f"{vip} {key} {val} not supported, skipped")
            i += 2
        else:
            cv.skip(item, f"{vip} option '{key}' not supported, skipped")
            i += 1
    return vip


def _track_script_ref(cv: Converter, item: Stmt) -> str:
    """``NAME [weight N]``. A per-instance weight override becomes a copy of the
    script with that weight: hadirector keeps one weight per script."""
    name = item.keyword
    if len(item.args) >= 2 and item.args[0] == "weight":
        try:
            w = integer(item.args[1], "weight", -253, 253)
        except Bad as e:
            cv.skip(item, f"{e}; weight override skipped")
            return name
        base = cv.scripts.get(name)
        if base is None or base["weight"] == w:
            return name
        copy_name = f"{name}_weight_{w}".replace("-", "minus_")
        if copy_name not in cv.script_copies:
            cv.script_copies[copy_name] = {**base, "name": copy_name, "weight": w}
        cv.info(item.where, f"track_script {name} weight {w}: hadirector has one weight "
                            f"per script; using a copy named {copy_name}")
        return copy_name
    if item.args:
        cv.skip(item, f"track_script options '{' '.join(item.args)}' not supported, skipped")
    return name


# --- vrrp_sync_group --------------------------------------------------------------------


@dataclass
class _SyncGroup:
    members: list[str] = field(default_factory=list)
    notify: dict[str, list[str]] = field(default_factory=dict)


def _group(cv: Converter, b: _SyncGroup, x: Stmt) -> None:
    b.members.extend(i.keyword for i in x.block or [] if i.words)
    for i in x.block or []:
        if i.args:
            cv.skip(i, f"'{' '.join(i.args)}' after {i.keyword} not supported, skipped")


VRRP_SYNC_GROUP: dict[str, Handler] = {"group": _group, **_NOTIFY}
# Keywords of a sync group that are not instance names in the old syntax.
_SYNC_GROUP_WORDS = ("smtp_alert", "global_tracking", "notify_priority_changes")


def sync_group(cv: Converter, s: Stmt) -> None:
    name = s.args[0]
    b = _SyncGroup()
    rest: list[Stmt] = []
    for x in s.block or []:
        # Old syntax: instance names listed directly in the sync group.
        if x.keyword not in VRRP_SYNC_GROUP and x.block is None and not x.args and \
                x.keyword not in _SYNC_GROUP_WORDS:
            b.members.append(x.keyword)
        else:
            rest.append(x)
    cv.each(rest, VRRP_SYNC_GROUP, b, f"vrrp_sync_group {name}")
    d: dict[str, Any] = {"name": name, "instances": b.members}
    if b.notify:
        d["notify"] = b.notify
    cv.sync_groups.append(d)
