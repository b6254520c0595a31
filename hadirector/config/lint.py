"""Warnings about a valid config: what it says is allowed, but is probably not meant.

Theory of operation: ``lint(ctx, config)`` runs after the whole file converted without
an error, and reports through ``ctx.warn`` at the key concerned, so a warning reads like
an error (``file:line:column: key.path: message``). Warnings never stop ``check``,
``run`` or a reload; ``hadirector check --strict`` turns them into errors. The
converters add their own (a duration written as a quoted number).

The rules:

* ``unicast_src`` without ``unicast_peers``: the source is used, but the adverts go to
  the multicast group, which is seldom what a unicast setup means.
* ``unicast_src`` listed among the ``unicast_peers``: the node would advertise to
  itself (and its own adverts are dropped, ``vrrp.own_address_advert_received``).
* a virtual IP without a prefix length: it is added as a /32 (/128), like keepalived,
  with no subnet route; write the interface's prefix, or /32 to say it is meant.
* ``forward`` left at its default (NAT) in a service that looks like direct routing.
  The heuristic: the service has an address (not a fwmark) that is a virtual IP
  written with a prefix shorter than a host's; every real server (and the sorry
  server) is inside that prefix; and none of them maps the port (its port is 0 or the
  service's). NAT setups put their real servers behind the director, in another subnet
  whose gateway is the director, and may map ports; direct routing needs real servers
  on the VIP's own link and the service's port. A NAT service on the VIP's subnet with
  the same ports (a one-armed NAT) gets the warning too: ``forward: nat`` silences it.
"""

from __future__ import annotations

import ipaddress

from yaml.nodes import ScalarNode

from .. import model as m
from .fields import Ctx


def lint(ctx: Ctx, config: m.Config) -> None:
    for inst in config.vrrp_instances:
        _lint_instance(ctx, inst)
    vips = {vip.ip: (vip, inst) for inst in config.vrrp_instances for vip in inst.virtual_ips}
    written = {vip.ip for inst in config.vrrp_instances for i, vip in enumerate(inst.virtual_ips)
               if _has_prefix(ctx, inst, i)}
    for vs in config.virtual_services:
        _lint_forward(ctx, vs, vips, written)


def _has_prefix(ctx: Ctx, inst: m.VrrpInstance, index: int) -> bool:
    node = ctx.view(inst).item_node("virtual_ips", index)
    return not isinstance(node, ScalarNode) or "/" in node.value


def _lint_instance(ctx: Ctx, inst: m.VrrpInstance) -> None:
    v = ctx.view(inst)
    group = "224.0.0.18" if inst.family == 4 else "ff02::12"
    if inst.unicast_src is not None and not inst.unicast_peers:
        v.warn("unicast_src", f"unicast_src without unicast_peers: the adverts still go to the multicast "
                              f"group {group}; list the other director(s) in unicast_peers, or remove unicast_src")
    for i, peer in enumerate(inst.unicast_peers):
        if peer == inst.unicast_src:
            v.warn("unicast_peers", f"{peer} is this node's own unicast_src; list only the other director(s)", i)
    for i, vip in enumerate(inst.virtual_ips):
        if not _has_prefix(ctx, inst, i):
            host = vip.network.prefixlen
            v.warn("virtual_ips", f"{vip.ip} has no prefix length: it is added as {vip.ip}/{host} with no subnet "
                                  f"route (as keepalived does); write the interface's prefix "
                                  f"(like {vip.ip}/{24 if vip.version == 4 else 64}), or /{host} to say so", i)


def _lint_forward(ctx: Ctx, vs: m.VirtualService, vips: dict, written: set) -> None:
    if vs.address is None or vs.address not in vips or vs.address not in written:
        return
    v = ctx.view(vs)
    servers = [*vs.real_servers, *([vs.sorry_server] if vs.sorry_server is not None else [])]
    if not servers or v.has("forward") or any(ctx.view(rs).has("forward") for rs in servers):
        return
    vip, inst = vips[vs.address]
    net: ipaddress.IPv4Network | ipaddress.IPv6Network = vip.network
    if net.prefixlen == net.max_prefixlen:
        return
    same_subnet = all(rs.address.version == net.version and rs.address in net for rs in servers)
    same_port = all(rs.port in (0, vs.port) for rs in servers)
    if same_subnet and same_port:
        v.warn("address", f"forward is not set, so the real servers get NAT (the default), but they are in "
                          f"the VIP's subnet {net} ({inst.name}) on the service's port, as for direct routing: "
                          f"write forward: dr if they answer clients themselves (the VIP on their loopback), "
                          f"or forward: nat to say NAT is meant")
