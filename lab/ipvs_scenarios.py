"""Small config builders shared by the IPVS tests (fake and kernel lab) and the benchmark,
and the health views they program with (the agent's come from its health runner).

Addresses come from the IPVS area's test ranges: 10.244.0.0/16 and fd00:244::/64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace

from hadirector import model
from hadirector.ipvs.table import HealthView
from hadirector.model import HealthState

VIP4 = ipaddress.IPv4Address("10.244.0.100")
VIP6 = ipaddress.IPv6Address("fd00:244::100")


def rs(address: str, port: int = 80, weight: int = 1, forward: model.ForwardMethod = model.ForwardMethod.NAT,
       checked: bool = True, **kw) -> model.RealServer:
    check = model.HealthCheck(model.TcpProbe()) if checked else None
    return model.RealServer(ipaddress.ip_address(address), port, weight, forward, check=check, **kw)


def vs(name: str = "web", address: str | None = str(VIP4), port: int = 80,
       real_servers: tuple[model.RealServer, ...] = (), **kw) -> model.VirtualService:
    addr = ipaddress.ip_address(address) if address is not None else None
    if addr is not None and "family" not in kw:
        kw["family"] = addr.version
    # Port 0 resolved as the loader does.
    return model.VirtualService(name=name, address=addr, port=port, real_servers=tuple(real_servers),
                                **kw).with_ports_resolved()


def config(*services: model.VirtualService) -> model.Config:
    return model.Config(node=model.NodeSettings(router_id="iv-test"), virtual_services=tuple(services))


def web(n: int = 3, scheduler: str = "rr", **kw) -> model.VirtualService:
    """tcp 10.244.0.100:80 with real servers 10.244.1.1..n (NAT)."""
    return vs("web", real_servers=tuple(rs(f"10.244.1.{i}", 80) for i in range(1, n + 1)),
              scheduler=scheduler, **kw)


def many(services: int, dests: int, base_port: int = 10000) -> model.Config:
    """``services`` TCP services on 10.244.0.100 ports base_port.., each with ``dests``
    real servers 10.244.<2+j//250>.<1+j%250> (NAT): the benchmark table."""
    out = []
    for i in range(services):
        out.append(vs(f"svc{i}", port=base_port + i, scheduler="wlc",
                      real_servers=tuple(rs(f"10.244.{2 + j // 250}.{1 + j % 250}", 8080, weight=1 + j % 5,
                                            checked=False)
                                         for j in range(dests))))
    return config(*out)


def with_weight(cfg: model.Config, service: str, address: str, weight: int) -> model.Config:
    """``cfg`` with one real server's weight changed."""
    target = ipaddress.ip_address(address)
    services = []
    for v in cfg.virtual_services:
        if v.name == service:
            v = replace(v, real_servers=tuple(replace(r, weight=weight) if r.address == target else r
                                              for r in v.real_servers))
        services.append(v)
    return replace(cfg, virtual_services=tuple(services))


def without_rs(cfg: model.Config, service: str, address: str) -> model.Config:
    target = ipaddress.ip_address(address)
    services = []
    for v in cfg.virtual_services:
        if v.name == service:
            v = replace(v, real_servers=tuple(r for r in v.real_servers if r.address != target))
        services.append(v)
    return replace(cfg, virtual_services=tuple(services))


def every_field(schedulers: tuple[str, ...] | list[str] = model.SCHEDULERS) -> model.Config:
    """One service per scheduler, plus IPv6, fwmark (v4 and v6), persistence with masks,
    scheduler flags, one-packet UDP, SCTP, every forwarding method and tunnel type, an
    IPv6 real server behind an IPv4 VIP, weight 0 and thresholds."""
    F, T = model.ForwardMethod, model.TunnelType
    services = [vs(f"s-{s}", port=2000 + i, scheduler=s, real_servers=(rs("10.244.1.1", 80),))
                for i, s in enumerate(schedulers)]
    services += [
        vs("v6", address="fd00:244::100", port=443, scheduler="wrr", persistence_timeout=120,
           persistence_netmask="64", real_servers=(rs("fd00:244::5", 443, weight=3), rs("fd00:244::6", 0, forward=F.DR))),
        vs("fw4", address=None, port=0, fwmark=44, family=4, scheduler="sh",
           scheduler_flags=("sh-fallback", "sh-port"), real_servers=(rs("10.244.1.2", 0, forward=F.DR),)),
        vs("fw6", address=None, port=0, fwmark=66, family=6, scheduler="mh", scheduler_flags=("mh-port",),
           real_servers=(rs("fd00:244::7", 0, forward=F.TUN),)),
        vs("fw7", address=None, port=0, fwmark=67, family=4, scheduler="rr", persistence_timeout=10,
           real_servers=(rs("10.244.1.7", 0, forward=F.DR),)),
        vs("udp", port=53, protocol=model.Protocol.UDP, one_packet=True, persistence_timeout=30,
           persistence_netmask="255.255.255.0", real_servers=(rs("10.244.1.3", 53),)),
        vs("udp-ops", port=54, protocol=model.Protocol.UDP, one_packet=True, real_servers=(rs("10.244.1.3", 54),)),
        vs("sctp", port=3868, protocol=model.Protocol.SCTP, real_servers=(rs("10.244.1.3", 3868),)),
        vs("tun", port=8000, real_servers=(
            rs("10.244.2.1", 0, forward=F.TUN, tunnel_type=T.IPIP),
            rs("10.244.2.2", 0, forward=F.TUN, tunnel_type=T.GUE, tunnel_port=6080, tunnel_checksum="remcsum"),
            rs("10.244.2.3", 0, forward=F.TUN, tunnel_type=T.GRE, tunnel_checksum="csum"),
            rs("10.244.2.5", 0, forward=F.TUN, tunnel_type=T.GUE, tunnel_port=6081),
            rs("10.244.2.6", 0, forward=F.TUN, tunnel_type=T.GRE),
            rs("fd00:244::9", 0, forward=F.TUN),      # IPv6 real server behind an IPv4 VIP
            rs("10.244.2.4", 8000, weight=0, upper_threshold=1000, lower_threshold=100),
        )),
    ]
    return config(*services)


# --- health views ----------------------------------------------------------------------


def all_healthy(vs: model.VirtualService, rs: model.RealServer) -> HealthState:
    """Every real server is up."""
    return HealthState.UP


def health_from_mapping(states: Mapping[tuple[str, tuple], HealthState],
                        default: HealthState = HealthState.UNKNOWN) -> HealthView:
    """A HealthView over {(virtual service name, real server key): HealthState}."""

    def view(vs: model.VirtualService, rs: model.RealServer) -> HealthState:
        return states.get((vs.name, rs.key), default)

    return view
