"""The announce gate in the kernel: ``VIP/32 dev lo table T proto P`` routes, over
rtnetlink (``rtnl``'s socket, ``nlmsg``'s framing; pyroute2's IPRoute wants an event loop of
its own and cannot run inside the agent's).

A scale-out director announces a VIP by keeping this route in its own table ``T``;
BIRD's kernel protocol learns the table and exports it over BGP, and withdraws it the
moment the route goes (9-25 ms to the router's FIB, shared/scale-out.md 3a). The route
is never used for forwarding (no rule points at the table); it is only the hand-off.
The agent owns exactly the routes of protocol ``P`` in table ``T``: ``flush`` removes
those and nothing else (an operator's route in the same table stays).

Every call is idempotent (adding a route that is there, deleting one that is gone, is
success) and one blocking request (microseconds). ``bind_vip`` puts the VIP on ``lo``
so IPVS (which hooks LOCAL_IN) sees its packets, as on DR real servers.

``route_message`` and ``parse_routes`` are pure; the rest does the socket.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from hadirector.model import IPAddress
from hadirector.kernel import nlmsg, rtnl

RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RTN_UNICAST = 1
RT_SCOPE_LINK = 253          # what ``ip route add ... dev lo`` gives a route with no gateway
_RTMSG = struct.Struct("=BBBBBBBBI")    # family, dst_len, src_len, tos, table, protocol, scope, type, flags


class GateError(OSError):
    """A gate route could not be added, deleted or read (the message says which)."""


def _family(vip: IPAddress) -> int:
    return socket.AF_INET if vip.version == 4 else socket.AF_INET6


def _host(vip: IPAddress) -> str:
    return f"{vip}/{vip.max_prefixlen}"


def route_message(kind: int, seq: int, vip: IPAddress, table: int, proto: int, oif: int,
                  scope: int = RT_SCOPE_LINK) -> bytes:
    """RTM_NEWROUTE (CREATE|EXCL) or RTM_DELROUTE with ACK for ``vip``'s host route, as
    ``ip route add|del VIP dev lo table T proto P`` sends it."""
    flags = nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK
    if kind == RTM_NEWROUTE:
        flags |= nlmsg.NLM_F_CREATE | nlmsg.NLM_F_EXCL
    body = _RTMSG.pack(_family(vip), vip.max_prefixlen, 0, 0, table if table < 256 else 0, proto, scope,
                       RTN_UNICAST, 0)
    body += nlmsg.attr(RTA_DST, vip.packed) + nlmsg.attr(RTA_OIF, struct.pack("=I", oif)) \
        + nlmsg.attr(RTA_TABLE, struct.pack("=I", table))
    return nlmsg.message(kind, flags, seq, body)


def getroute_dump_request(seq: int, family: int) -> bytes:
    body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return nlmsg.message(RTM_GETROUTE, nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_DUMP, seq, body)


def parse_routes(data: bytes) -> list[tuple[int, int, int, int, int, bytes | None]]:
    """The RTM_NEWROUTE messages of one dump datagram as (family, dst_len, table,
    protocol, scope, dst bytes or None). The table is RTA_TABLE when sent (ids >= 256
    fit only there), else rtm_table."""
    out = []
    for kind, _flags, _seq, _pid, body, end in nlmsg.messages(data):
        if kind != RTM_NEWROUTE or body + _RTMSG.size > end:
            continue
        family, dst_len, _src, _tos, table, proto, scope, _type, _fl = _RTMSG.unpack_from(data, body)
        attrs = nlmsg.attributes(data, body + _RTMSG.size, end, nlmsg.NLA_TYPE_MASK)
        if RTA_TABLE in attrs and len(attrs[RTA_TABLE]) == 4:
            table = struct.unpack("=I", attrs[RTA_TABLE])[0]
        out.append((family, dst_len, table, proto, scope, attrs.get(RTA_DST)))
    return out


class GateRoutes:
    def __init__(self, table: int, proto: int) -> None:
        self.table, self.proto = table, proto
        self._lo = socket.if_nametoindex("lo")

    def close(self) -> None:
        pass

    def _request(self, kind: int, vip: IPAddress, scope: int = RT_SCOPE_LINK) -> int:
        seq = rtnl._seq()
        return rtnl._request(route_message(kind, seq, vip, self.table, self.proto, self._lo, scope), seq, 1.0)

    def add(self, vip: IPAddress) -> None:
        """Announce ``vip`` (idempotent)."""
        code = self._request(RTM_NEWROUTE, vip)
        if code not in (0, errno.EEXIST):
            raise GateError(code, f"add {_host(vip)} table {self.table}: {os.strerror(code)}")

    def delete(self, vip: IPAddress, scope: int = RT_SCOPE_LINK) -> None:
        """Withdraw ``vip`` (idempotent). The kernel matches the scope too."""
        code = self._request(RTM_DELROUTE, vip, scope)
        if code not in (0, errno.ESRCH, errno.ENOENT):
            raise GateError(code, f"delete {_host(vip)} table {self.table}: {os.strerror(code)}")

    def announced(self) -> set[IPAddress]:
        """The VIPs announced now: our protocol's host routes in our table."""
        return set(self._routes())

    def _routes(self) -> dict[IPAddress, int]:
        out: dict[IPAddress, int] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for fam, dst_len, table, proto, scope, dst in self._dump(family):
                full = 32 if fam == socket.AF_INET else 128
                if table == self.table and proto == self.proto and dst is not None and dst_len == full:
                    out[ipaddress.ip_address(dst)] = scope
        return out

    def _dump(self, family: int) -> list:
        seq = rtnl._seq()
        routes = []
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, rtnl.NETLINK_ROUTE) as s:
            s.settimeout(5.0)
            s.bind((0, 0))
            s.send(getroute_dump_request(seq, family))
            while True:
                data = s.recv(1 << 20)
                routes += parse_routes(data)
                if nlmsg.dump_ended(data, seq):
                    return routes

    def flush(self) -> set[IPAddress]:
        """Withdraw everything this agent (or a dead predecessor) announced."""
        gone = self._routes()
        for vip, scope in gone.items():
            self.delete(vip, scope)
        left = self.announced()
        if left:
            raise GateError(errno.EBUSY, f"table {self.table} still holds "
                            f"{', '.join(sorted(map(str, left)))} after a flush")
        return set(gone)

    def bind_vip(self, vip: IPAddress) -> bool:
        """Put ``vip``/32 (/128) on ``lo`` unless it is there; True if added."""
        try:
            return rtnl.add_address(self._lo, ipaddress.ip_interface(_host(vip)))
        except OSError as e:
            raise GateError(e.errno or 0, f"add {_host(vip)} on lo: {e.strerror or e}") from None
