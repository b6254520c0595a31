"""The ``scale_out:`` section: its record, and the checks against the services it lists.

A scale-out service is carried by N active directors at once, and the router may move
any flow to any of them, so every director must pick the same real server for it
without shared state (shared/scale-out.md 1b):

- scheduler ``mh`` (fixed hash keys: the same lookup table on every machine) with the
  ``mh-fallback`` flag (a real server at weight 0 keeps its slots; without the flag a
  flow hashed to it finds "no destination available");
- forwarding ``dr`` or ``tun``: the director sees only the inbound half of a flow; NAT
  needs the replies back through the director that holds the entry;
- no sorry server: losing the quorum withdraws the VIP instead of rewriting the table;
- an address to announce (not a firewall-mark service).

Each problem is an error at the key that causes it (file:line:key), not a guess.
"""

from __future__ import annotations

from typing import Any

from .. import model as m
from .errors import shown
from .fields import (
    Ctx, Field as F, KeyDoc as K, Record, View, boolean, duration, integer, ip_address, optional, record, seq,
    string,
)

U32 = 2**32 - 1
# Linux's reserved table ids (rtnetlink.h): unspec 0, compat 252, default 253, main 254, local 255.
RESERVED_TABLES = {0: "unspec", 252: "compat", 253: "default", 254: "main", 255: "local"}
# rtnetlink.h: 0..4 are the kernel's own route origins; 12 is RTPROT_BIRD, which BIRD
# takes for routes it installed itself and would not treat as learned.
RESERVED_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 12: "bird"}

BGP_PEER = Record(m.BgpPeer, (
    F("address", ip_address(multicast=False), required=True,
      doc=K("The router's address (BGP neighbor).", None)),
    F("asn", integer(1, U32), required=True,
      doc=K("The router's AS number.", None)),
))


def _finish(ctx: Ctx, v: View, kw: dict[str, Any]) -> None:
    table = kw.get("table")
    if table in RESERVED_TABLES:
        v.error("table", f"table {table} is the kernel's {RESERVED_TABLES[table]} table; "
                "use a table of its own (default 201)")
    proto = kw.get("route_protocol")
    if proto in RESERVED_PROTOCOLS:
        v.error("route_protocol", f"protocol {proto} is reserved ({RESERVED_PROTOCOLS[proto]}); "
                "use one of its own (default 201)")
    lo = kw.get("error_wait_min", m.ScaleOut.error_wait_min)
    hi = kw.get("error_wait_max", m.ScaleOut.error_wait_max)
    if lo > hi:
        v.error("error_wait_min", f"expected error_wait_min <= error_wait_max ({hi}), got {lo}")
    hold = kw.get("hold_time", m.ScaleOut.hold_time)
    if hold < 3:
        # RFC 4271 4.2: the hold time is 0 or at least three seconds.
        v.error("hold_time", f"expected 3..65535 s (RFC 4271 4.2), got {hold}")
    names: dict[str, int] = {}
    for i, name in enumerate(kw.get("services", ())):
        if name in names:
            v.error("services", f"service {shown(name)} is listed twice (first as services[{names[name]}])", i)
        names.setdefault(name, i)
    peers: dict = {}
    for i, peer in enumerate(kw.get("peers", ())):
        if peer.address in peers:
            v.error("peers", f"peer {peer.address} is listed twice (first as peers[{peers[peer.address]}])", i)
        peers.setdefault(peer.address, i)


SCALE_OUT = Record(m.ScaleOut, (
    F("services", seq(string(what="a virtual service name"), min_len=1, what="service"), required=True,
      doc=K("Names of the virtual services this director carries as one of N active ones (no VRRP): "
            "scheduler mh with mh-fallback, forward dr or tun, an address, no sorry server.", None)),
    F("local_as", integer(1, U32), required=True,
      doc=K("This director's AS number in BGP.", None)),
    F("peers", seq(record(BGP_PEER), min_len=1, what="peer"), required=True,
      doc=K("The routers the VIPs are announced to.", None)),
    F("router_id", optional(ip_address(multicast=False)),
      doc=K("BIRD's router id.", None, default="BIRD's choice (an address of this host)")),
    F("table", integer(1, U32),
      doc=K("The kernel routing table the agent owns: a VIP/32 route there while the VIP is to be "
            "announced (BIRD's kernel protocol learns it). Flushed at start and stop.", None)),
    F("route_protocol", integer(0, 255),
      doc=K("The protocol number (rtm_protocol) of the agent's routes in that table.", None)),
    F("min_healthy", integer(1, 65535),
      doc=K("Real servers of a service that must be up for its VIP to be announced.", None)),
    F("hold_down", duration(ge=0, le=3600),
      doc=K("A VIP is announced only after it was ready this long without a break (after start "
            "and after any withdrawal), so a flapping director does not move flows.", None)),
    F("drain_grace", duration(ge=0, le=300),
      doc=K("On stop: the VIPs are withdrawn first, then after this long the IPVS side stops.", None)),
    F("bird_socket", string(r"/.*", "an absolute path"),
      doc=K("BIRD's control socket, read with birdc for status (never written).", None)),
    F("hold_time", integer(0, 65535),
      doc=K("BGP hold time rendered into BIRD's config (BIRD's default: 240).", None)),
    F("connect_retry", integer(1, 65535),
      doc=K("BGP connect retry time (BIRD's default: 120).", None)),
    F("error_wait_min", integer(1, 65535),
      doc=K("BGP error wait time, first (BIRD's default: 60).", None)),
    F("error_wait_max", integer(1, 65535),
      doc=K("BGP error wait time, longest after repeated errors (BIRD's default: 300).", None)),
    F("bfd", boolean(),
      doc=K("BFD on the BGP sessions: a silent director leaves the router's FIB in about "
            "interval x multiplier.", None)),
    F("bfd_interval", duration(ge=0.01, le=10),
      doc=K("BFD transmit and receive interval.", None)),
    F("bfd_multiplier", integer(1, 255),
      doc=K("BFD detection multiplier.", None)),
), _finish)


def check_services(ctx: Ctx, so: m.ScaleOut, services: tuple[m.VirtualService, ...]) -> None:
    """Every listed service exists and can be carried by N directors at once."""
    sv = ctx.view(so)
    by_name = {vs.name: vs for vs in services}
    for i, name in enumerate(so.services):
        vs = by_name.get(name)
        if vs is None:
            defined = ", ".join(sorted(shown(n) for n in by_name)) or "none"
            sv.error("services", f"no virtual service named {shown(name)} (defined: {defined})", i)
            continue
        v = ctx.view(vs)
        if vs.address is None:
            v.error("fwmark", "a scale_out service needs an address to announce, not a fwmark")
        elif vs.address.version not in {p.address.version for p in so.peers}:
            # BIRD exports an IPv6 route on an IPv6 session (its ipv6 channel), and IPv4 on IPv4.
            v.error("address", f"no IPv{vs.address.version} peer in scale_out.peers to announce "
                    f"{vs.address} to")
        if vs.scheduler != "mh":
            v.error("scheduler", f"scale_out needs scheduler mh (the same real server for a flow on every "
                    f"director), got {shown(vs.scheduler)}")
        elif "mh-fallback" not in vs.scheduler_flags:
            v.error("scheduler_flags", "scale_out needs the mh-fallback flag (a real server at weight 0 "
                    "keeps its slots; without the flag its flows find no destination)")
        for j, rs in enumerate(vs.real_servers):
            if rs.forward is m.ForwardMethod.NAT:
                rv = ctx.view(rs)
                ctx.error(rv.value_node("forward"), v.key_path("real_servers", j) + ".forward",
                          "forward nat cannot be scaled out (replies must return through the director "
                          "holding the entry); use forward: dr or tun")
        if vs.sorry_server is not None:
            v.error("sorry_server", "a scale_out service has no sorry server: below min_healthy its VIP "
                    "is withdrawn instead")
