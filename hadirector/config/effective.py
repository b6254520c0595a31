"""The effective config: a validated ``Config`` written back as YAML with every default
resolved (``hadirector config --effective``, like ``keepalived -d``).

Theory of operation: ``to_data`` maps the model back to the file's keys, writing every
key the model has a value for (defaults included: the router_id from the host name,
the listen address, each real server's forward method and health check, the
``catch_up`` a ``refresh_period`` implies). An auth ``time_window`` left to its default
is left out: that default moves with ``advert_interval``. The YAML-only conveniences
are already expanded: a service's ``forward``, ``tunnel_*`` and ``check`` appear on
each real server. The text is emitted with the loader's own resolver, so a string that the loader
would read as something else (``"yes"``, ``"1:30"``, ``"010"``) is quoted, and loading
the output gives the same ``Config`` (tests hold this for every shipped config).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import Any

import yaml

from .. import model as m
from .compose import CoreResolver


def _value(x: Any) -> Any:
    if isinstance(x, m.AuthKey):
        return {"id": x.id, "secret_file": x.secret_file}     # the secret stays in its file
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface,
                      ipaddress.IPv6Interface)):
        return str(x)
    if isinstance(x, tuple):
        return [_value(i) for i in x]
    if dataclasses.is_dataclass(x):
        return _fields(x)
    return x


def _fields(obj: Any, **overrides: Any) -> dict:
    """Every field of a model dataclass under its own name, which is its YAML key (for
    the records without YAML-only conveniences), so a new field is written without
    being listed here; ``overrides`` replace the values that are written differently."""
    out = {f.name: _value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    out.update(overrides)
    return out


def _listen(api: m.ApiSettings) -> str:
    host = f"[{api.listen_host}]" if ":" in api.listen_host else api.listen_host
    return f"{host}:{api.listen_port}"


def _notify(n: m.NotifyScripts) -> dict:
    out: dict[str, Any] = {k: list(getattr(n, k)) for k in ("master", "backup", "fault", "stop", "notify")
                           if getattr(n, k)}
    out["timeout"] = n.timeout
    return out


def _auth(a: m.VrrpAuth | None) -> dict | None:
    if a is None:
        return None
    out = _fields(a)
    if a.time_window is None:
        # The default follows advert_interval (max(3 x interval, 5 s)): writing today's
        # value would freeze it, and ``null`` reads as if it were a setting.
        del out["time_window"]
    return out


def _instance(i: m.VrrpInstance) -> dict:
    return _fields(i, notify=_notify(i.notify), auth=_auth(i.auth))


def _check(c: m.HealthCheck | None) -> Any:
    if c is None:
        return False
    p = c.probe
    out: dict[str, Any] = {"type": ("https" if p.tls else "http") if isinstance(p, m.HttpProbe)
                           else _PROBE_TYPES.get(type(p), "tcp")}
    out.update(interval=c.interval, timeout=c.timeout, rise=c.rise, fall=c.fall, initial=c.initial.value,
               jitter=c.jitter, retry_delay=c.retry_delay, bind_to=_value(c.bind_to),
               address=_value(c.address), port=c.port)
    if isinstance(p, m.HttpProbe):
        out.update(path=p.path, status_codes=[r.low if r.low == r.high else str(r) for r in p.status_codes], body_regex=p.body_regex, digest=p.digest,
                   host=p.host)
        if p.tls:
            out.update(verify_tls=p.verify_tls, ca_file=p.ca_file)
    elif isinstance(p, m.ScriptProbe):
        out.update(command=list(p.command), dynamic=p.dynamic)
    elif isinstance(p, m.DnsProbe):
        out.update(name=p.name, query_type=p.query_type, rcode=p.rcode, answer_regex=p.answer_regex,
                   transport=p.transport)
    elif isinstance(p, m.UdpProbe):
        out.update(payload_hex=p.payload.hex(), require_reply=p.require_reply, reply_regex=p.reply_regex)
    elif isinstance(p, m.SmtpProbe):
        out["helo_name"] = p.helo_name
    return out


_PROBE_TYPES: dict[type, str] = {m.ScriptProbe: "script", m.DnsProbe: "dns", m.UdpProbe: "udp",
                                 m.PingProbe: "ping", m.SmtpProbe: "smtp"}


def _real_server(rs: m.RealServer, with_check: bool) -> dict:
    # What the operator wrote: 0 for "the service's port" (resolved in the model).
    out: dict[str, Any] = {"address": str(rs.address), "port": 0 if rs.port_from_service else rs.port,
                           "weight": rs.weight,
                           "forward": rs.forward.value}
    if rs.forward is m.ForwardMethod.TUN:
        out["tunnel_type"] = rs.tunnel_type.value
        if rs.tunnel_type is m.TunnelType.GUE:
            out["tunnel_port"] = rs.tunnel_port
        if rs.tunnel_type is not m.TunnelType.IPIP:
            out["tunnel_checksum"] = rs.tunnel_checksum
    out.update(upper_threshold=rs.upper_threshold, lower_threshold=rs.lower_threshold)
    if with_check:
        out["check"] = _check(rs.check)
    return out


def _service(vs: m.VirtualService) -> dict:
    out: dict[str, Any] = {"name": vs.name, "protocol": vs.protocol.value}
    if vs.fwmark is not None:
        out.update(fwmark=vs.fwmark, family=vs.family)
    else:
        out.update(address=str(vs.address), port=vs.port)
    out.update(scheduler=vs.scheduler, scheduler_flags=list(vs.scheduler_flags),
               persistence_timeout=vs.persistence_timeout)
    if vs.persistence_netmask is not None:
        out["persistence_netmask"] = vs.persistence_netmask
    out.update(one_packet=vs.one_packet, inhibit_on_failure=vs.inhibit_on_failure, quorum=vs.quorum,
               quorum_hysteresis=vs.quorum_hysteresis)
    for key in ("quorum_up", "quorum_down"):
        if getattr(vs, key):
            out[key] = list(getattr(vs, key))
    out["real_servers"] = [_real_server(rs, with_check=True) for rs in vs.real_servers]
    out["sorry_server"] = _real_server(vs.sorry_server, with_check=False) if vs.sorry_server else None
    return out


def _sync_daemon(d: m.SyncDaemon | None) -> dict | None:
    if d is None:
        return None
    return _fields(d, catch_up=d.preempt_hold)


def to_data(config: m.Config) -> dict:
    """The config as plain YAML data, every key written."""
    return {
        "node": _fields(config.node),
        "api": {"listen": _listen(config.api), "enabled": config.api.enabled},
        "track_scripts": [_fields(t) for t in config.track_scripts],
        "vrrp_instances": [_instance(i) for i in config.vrrp_instances],
        "sync_groups": [_fields(g, notify=_notify(g.notify)) for g in config.sync_groups],
        "lvs": _fields(config.lvs, sync_daemon=_sync_daemon(config.lvs.sync_daemon)),
        "virtual_services": [_service(vs) for vs in config.virtual_services],
        "health": _fields(config.health),
        **({"scale_out": _fields(config.scale_out)} if config.scale_out is not None else {}),
    }


class _Dumper(yaml.emitter.Emitter, yaml.serializer.Serializer, yaml.representer.SafeRepresenter,
              CoreResolver):
    """SafeDumper, but deciding what needs quotes with the loader's resolver."""

    def __init__(self, stream: Any, **kw: Any) -> None:
        yaml.emitter.Emitter.__init__(self, stream, width=kw.get("width"), allow_unicode=True)
        yaml.serializer.Serializer.__init__(self)
        yaml.representer.SafeRepresenter.__init__(self, sort_keys=False)
        CoreResolver.__init__(self)


def effective_yaml(config: m.Config) -> str:
    head = f"# effective config of {config.source}: every default written out (hadirector config --effective)\n"
    return head + yaml.dump(to_data(config), Dumper=_Dumper, width=100)
