"""Virtual IP addresses and link state over rtnetlink, on the kernel's own messages
(``kernel/rtnl.py`` and the link messages below): no pyroute2 on the VRRP path.

Theory of operation: ``AddressManager`` is the only code that adds or removes
addresses. Every call is idempotent — adding a VIP that is already there, or removing
one that is gone, is success — because the agent re-applies its desired state after
restarts and role flaps, and a dead predecessor may have left a VIP behind.

VIPs are added the way keepalived adds them: IPv4 as /32 unless a prefix is given,
with a label ``<ifname>:<suffix>`` so ``ip addr`` (and ``ifconfig``) show which are
ours; IPv6 with IFA_F_NODAD so the address is usable at once (a VIP that sits in
"tentative" for a second after failover is a second of outage).

``LinkWatcher`` turns RTM_NEWLINK broadcasts into ``LinkState`` values for
track_interface, over a raw netlink socket it reads for the agent's whole life (see
"link state" below). pyroute2 is imported in ``kernel/ipvs.py`` only.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import AsyncIterator

from hadirector.logging import get_logger
from hadirector.model import IPAddress, IPInterface
from hadirector.kernel import nlmsg, rtnl
from hadirector.kernel.nlmsg import (  # noqa: F401 - the link table's vocabulary
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
)

IFF_UP = 0x1
IFF_RUNNING = 0x40     # the kernel's "operationally up": carrier present
IFA_F_SECONDARY = 0x01
IFA_F_TENTATIVE = 0x40
RT_SCOPE_LINK = 253
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFNAMSIZ = 16


class NetError(Exception):
    """An rtnetlink request failed for a reason that is not 'already done'."""


@dataclass(frozen=True)
class LinkState:
    name: str
    index: int
    up: bool          # administratively up AND has carrier
    exists: bool = True


def link_is_up(flags: int) -> bool:
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def vip_label(interface: str, suffix: str) -> str | None:
    """keepalived-style ``eth0:vi_1`` labels; None when it would not fit IFNAMSIZ."""
    label = f"{interface}:{suffix}"
    return label if len(label) < IFNAMSIZ else None


def normalise_vip(vip: IPInterface | IPAddress | str) -> IPInterface:
    """An address without a prefix is a host route: /32 or /128 (keepalived's default)."""
    if isinstance(vip, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return vip
    return ipaddress.ip_interface(str(vip))


class AddressManager:
    """Async rtnetlink client for the addresses of this namespace.

    Each dump runs on a fresh NETLINK_ROUTE socket read through the event loop (a host
    with many addresses answers in several datagrams; the loop keeps running); the VIP
    add and remove are one blocking request each (``rtnl``, microseconds)."""

    DUMP_TIMEOUT = 5.0      # the kernel answers a dump at once; this only bounds a bug

    def close(self) -> None:
        """Nothing to release: every request has its own socket (kept for callers)."""

    async def ifindex(self, interface: str) -> int:
        # if_nametoindex is one ioctl; link_lookup would dump every link.
        try:
            return socket.if_nametoindex(interface)
        except OSError:
            raise NetError(f"no such interface: {interface}") from None

    async def _netlink_dump(self, request: bytes, seq: int) -> list[bytes]:
        """The datagrams answering one dump request, up to its NLMSG_DONE."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as s:
            s.setblocking(False)
            s.bind((0, 0))
            await loop.sock_sendall(s, request)
            out = []
            async with asyncio.timeout(self.DUMP_TIMEOUT):
                while True:
                    data = await loop.sock_recv(s, LinkWatcher.RECV_SIZE)
                    out.append(data)
                    if rtnl.dump_ended(data, seq):
                        return out

    async def link_state(self, interface: str) -> LinkState:
        try:
            index = socket.if_nametoindex(interface)
        except OSError:
            return LinkState(interface, 0, up=False, exists=False)
        seq = _next_seq()
        for data in await self._netlink_dump(getlink_dump_request(seq), seq):
            for m in parse_link_messages(data):
                if m.kind == RTM_NEWLINK and m.index == index:
                    return LinkState(interface, index, up=link_is_up(m.flags))
        return LinkState(interface, 0, up=False, exists=False)

    async def list_addresses(self, interface: str, family: int | None = None) -> list[IPInterface]:
        """Addresses on the interface in kernel order (primary first)."""
        return [a for a, _flags, _scope in await self._dump(interface, family)]

    async def _addresses(self, family: int | None) -> list[tuple[int, IPInterface, int, int]]:
        """(ifindex, address, flags, scope) of every address of ``family``, kernel order."""
        af = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
        seq = _next_seq()
        out = []
        for data in await self._netlink_dump(rtnl.getaddr_dump_request(seq, af), seq):
            for index, fam, packed, prefixlen, flags, scope in rtnl.parse_addresses(data):
                if af != socket.AF_UNSPEC and fam != af:
                    continue
                ip = ipaddress.ip_address(packed)
                out.append((index, ipaddress.ip_interface(f"{ip}/{prefixlen}"), flags, scope))
        return out

    async def _dump(self, interface: str, family: int | None) -> list[tuple[IPInterface, int, int]]:
        index = await self.ifindex(interface)
        return [(a, flags, scope) for i, a, flags, scope in await self._addresses(family) if i == index]

    async def host_addresses(self) -> dict[str, list[tuple[IPInterface, int]]]:
        """Every interface of this namespace with its (address, IFA flags), in one dump
        (``hadirector check --host``)."""
        names = dict(socket.if_nameindex())
        out: dict[str, list[tuple[IPInterface, int]]] = {name: [] for name in names.values()}
        for index, addr, flags, _scope in await self._addresses(None):
            if index in names:
                out[names[index]].append((addr, flags))
        return out

    async def primary_address(
        self, interface: str, family: int, exclude: tuple[IPAddress, ...] = ()
    ) -> IPAddress | None:
        """The source VRRP uses: IPv4's primary address (RFC 5798 5.1.1.1), IPv6's
        link-local one (5.1.2.1). VIPs are skipped: they come and go with the role."""
        for iface, flags, scope in await self._dump(interface, family):
            ip = iface.ip
            if ip in exclude or flags & (IFA_F_SECONDARY | IFA_F_TENTATIVE):
                continue
            if family == 6 and not ip.is_link_local:
                continue
            return ip
        return None

    def add_vip(self, interface: str, vip: IPInterface, label: str | None = None) -> bool:
        """Add the VIP; True if it was added now, False if it was already there.

        Blocking, one netlink round trip (``rtnl.add_address``, microseconds): the agent
        calls it in the loop turn that sent the first master advert, so the VIP exists
        before the loop runs anything else."""
        vip = normalise_vip(vip)
        try:
            return rtnl.add_address(socket.if_nametoindex(interface), vip, label=label)
        except OSError as e:
            raise NetError(f"adding {vip} to {interface}: {e.strerror or e}") from e

    async def remove_vip(self, interface: str, vip: IPInterface) -> bool:
        """Remove the VIP; True if it was there, False if it was already gone (one
        blocking request, like the add)."""
        vip = normalise_vip(vip)
        try:
            index = await self.ifindex(interface)
        except NetError:
            return False    # interface gone: so is the address
        try:
            return rtnl.remove_address(index, vip)
        except OSError as e:
            raise NetError(f"removing {vip} from {interface}: {e.strerror or e}") from e

    async def has_vip(self, interface: str, vip: IPInterface) -> bool:
        vip = normalise_vip(vip)
        return any(a.ip == vip.ip for a in await self.list_addresses(interface, vip.version))


def _next_seq() -> int:
    return int.from_bytes(os.urandom(4), "little") or 1


# --- link state: a sans-IO table and the netlink shell that feeds it ------------------
#
# Theory of operation. ``LinkWatcher`` owns one raw NETLINK_ROUTE socket subscribed to
# RTMGRP_LINK and reads it for as long as the agent runs (pyroute2 0.9's
# ``AsyncIPRoute.get()`` returns after one receive batch, so it cannot be the loop).
# Everything it learns goes through ``LinkTable``, which is pure: it keeps what was
# last reported per watched name and turns messages into changes only.
#
# Losing an event must never leave a link's state stale. The kernel drops broadcasts
# when the socket's receive queue is full and reports it once as ENOBUFS on the next
# recv (a netlink overrun). The watcher then dumps every link (RTM_GETLINK) ON THE SAME
# SOCKET: dump replies and later broadcasts share one queue, so applying them in order
# gives the current state with no stale event replayed over the fresh one (a dump on a
# second socket would race the broadcasts still queued on the first). A watched name
# that neither the dump nor a broadcast during it mentions no longer exists. An overrun
# during a dump (or a dump the kernel marks NLM_F_DUMP_INTR) asks for one more dump
# when this one ends: the kernel refuses a second dump on a socket (EBUSY) until then.
# A datagram cut short (a message larger than the receive buffer) counts as an overrun.
# Any other socket error, or the socket closing, drops it: the watcher subscribes
# afresh after a short backoff and starts again with a dump.

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTM_GETLINK = 18
IFLA_IFNAME = 3

_IFINFOMSG = struct.Struct("=BxHiII")    # family, pad, type, index, flags, change


@dataclass(frozen=True)
class LinkMessage:
    """One netlink message as far as link tracking needs it."""
    kind: int            # RTM_NEWLINK, RTM_DELLINK, NLMSG_DONE, NLMSG_ERROR, ...
    seq: int
    portid: int
    nl_flags: int = 0    # nlmsg_flags (NLM_F_DUMP_INTR)
    index: int = 0
    name: str | None = None
    flags: int = 0       # ifi_flags (IFF_UP, IFF_RUNNING)
    error: int = 0       # NLMSG_ERROR: a positive errno, 0 for an ack


def getlink_dump_request(seq: int) -> bytes:
    """RTM_GETLINK with NLM_F_DUMP, as ``ip link show`` sends it."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return nlmsg.message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def parse_link_messages(data: bytes) -> list[LinkMessage]:
    """Every message in one netlink datagram. A damaged one (a datagram cut short by
    a too small buffer, a bad length) ends it with an NLMSG_OVERRUN mark: what it
    held is lost, which calls for a resync like any overrun."""
    out: list[LinkMessage] = []
    for kind, nl_flags, seq, portid, body, end in nlmsg.messages(data):
        if kind in (RTM_NEWLINK, RTM_DELLINK) and body + _IFINFOMSG.size <= end:
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
            name = nlmsg.attributes(data, body + _IFINFOMSG.size, end).get(IFLA_IFNAME)
            out.append(LinkMessage(kind, seq, portid, nl_flags, index,
                                   None if name is None else name.split(b"\0", 1)[0].decode(errors="replace"),
                                   flags))
        elif kind == NLMSG_ERROR and (code := nlmsg.error(data, body, end)) is not None:
            out.append(LinkMessage(kind, seq, portid, nl_flags, error=code))
        else:
            out.append(LinkMessage(kind, seq, portid, nl_flags))
    return out


@dataclass(frozen=True)
class Resynced:
    """A full dump of the links was applied; ``changed``: states it corrected."""
    reason: str          # "subscribed", "overrun", "dump_interrupted"
    changed: int


@dataclass(frozen=True)
class DumpFailed:
    """The kernel refused the dump (NLMSG_ERROR); another one is wanted."""
    error: int           # errno


class LinkTable:
    """Sans-IO: the watched links' state from broadcasts and dumps; reports changes only.

    The shell calls ``begin_dump`` when ``wants_dump`` and it has sent the request,
    ``overrun()`` on ENOBUFS, ``resubscribed()`` on a new socket, and ``feed`` with
    what it reads; ``feed`` returns the ``LinkState`` changes, ``Resynced`` when a dump
    ended and ``DumpFailed`` when the kernel refused one."""

    def __init__(self, names: set[str] | frozenset[str]) -> None:
        self.names = frozenset(names)
        self.reported: dict[str, LinkState] = {}
        self._by_index: dict[int, str] = {}     # ifindex -> watched name
        self.dump_seq: int | None = None        # a dump in flight
        self.portid = 0                         # ours: dump replies carry it
        self._want: str | None = "subscribed"   # why the next dump is needed, if it is
        self._reason = ""                       # why the running one was started
        self._seen: set[str] = set()            # names the running dump or a broadcast named
        self._changed = 0
        self.overruns = 0
        self.resyncs = 0

    @property
    def wants_dump(self) -> bool:
        return self._want is not None and self.dump_seq is None

    def begin_dump(self, seq: int, portid: int) -> None:
        self.dump_seq, self.portid = seq, portid
        self._reason, self._want = self._want or "requested", None
        self._seen, self._changed = set(), 0

    def overrun(self) -> None:
        """Broadcasts were lost: only a dump tells what holds now."""
        self.overruns += 1
        self._want = "overrun"

    def resubscribed(self) -> None:
        """A new socket: no dump runs on it, and what happened meanwhile is unknown."""
        self.dump_seq = None
        self._want = "subscribed"

    def feed(self, msgs: list[LinkMessage]) -> list[LinkState | Resynced | DumpFailed]:
        out: list[LinkState | Resynced | DumpFailed] = []
        for m in msgs:
            ours = self.dump_seq is not None and m.seq == self.dump_seq and m.portid == self.portid
            if ours and m.nl_flags & NLM_F_DUMP_INTR:
                self._want = self._want or "dump_interrupted"   # inconsistent: dump again
            if m.kind in (RTM_NEWLINK, RTM_DELLINK):
                self._link(m, out)
            elif m.kind == NLMSG_OVERRUN:
                self.overrun()
            elif ours and m.kind == NLMSG_DONE:
                self._dump_done(out)
            elif ours and m.kind == NLMSG_ERROR and m.error:
                self.dump_seq = None
                self._want = self._want or self._reason
                out.append(DumpFailed(m.error))
        return out

    def _link(self, m: LinkMessage, out: list) -> None:
        old = self._by_index.get(m.index)
        if m.name not in self.names:
            if old is not None:                 # a watched link renamed away
                del self._by_index[m.index]
                self._seen.add(old)
                self._report(LinkState(old, m.index, up=False, exists=False), out)
            return
        self._seen.add(m.name)
        if old is not None and old != m.name:   # renamed from one watched name to another
            self._report(LinkState(old, m.index, up=False, exists=False), out)
        if m.kind == RTM_DELLINK:
            self._by_index.pop(m.index, None)
            self._report(LinkState(m.name, m.index, up=False, exists=False), out)
        else:
            self._by_index[m.index] = m.name
            self._report(LinkState(m.name, m.index, up=link_is_up(m.flags)), out)

    def _dump_done(self, out: list) -> None:
        for name in sorted(self.names - self._seen):
            for index in [i for i, n in self._by_index.items() if n == name]:
                del self._by_index[index]
            self._report(LinkState(name, 0, up=False, exists=False), out)
        self.dump_seq = None
        self.resyncs += 1
        out.append(Resynced(self._reason, self._changed))

    def _report(self, st: LinkState, out: list) -> None:
        if self.reported.get(st.name) == st:
            return
        self.reported[st.name] = st
        self._changed += 1
        out.append(st)


class LinkWatcher:
    """RTM_NEWLINK / RTM_DELLINK events as ``LinkState``, for the watched names only,
    for as long as ``events()`` is iterated (see the theory of operation above)."""

    # Far above the 32 KiB the kernel fills a dump buffer with, and above any one link
    # message (a NIC with many VFs sends tens of KiB): a cut datagram would mean a resync.
    RECV_SIZE = 256 * 1024
    RETRY_MIN, RETRY_MAX = 0.1, 5.0

    def __init__(self, names: set[str] | frozenset[str], *, rcvbuf: int | None = None,
                 log=None) -> None:
        self.names = frozenset(names)
        self.rcvbuf = rcvbuf    # SO_RCVBUF in bytes; None: the kernel's default
        self.table = LinkTable(self.names)
        self.log = log or get_logger("hadirector.net")
        self.resubscribes = 0
        self.resyncs = 0        # dumps applied beyond the first (net.link_state_resynced)
        self._sock: socket.socket | None = None
        self._seq = 0

    async def __aenter__(self) -> "LinkWatcher":
        self._subscribe()
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _subscribe(self) -> None:
        flags = socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | flags, NETLINK_ROUTE)
        try:
            if self.rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.bind((0, RTMGRP_LINK))
        except BaseException:
            s.close()
            raise
        self._sock = s
        self.table.resubscribed()

    async def _recv(self) -> bytes:
        assert self._sock is not None
        return await asyncio.get_running_loop().sock_recv(self._sock, self.RECV_SIZE)

    def _request_dump(self) -> None:
        assert self._sock is not None
        seq = self._seq = (self._seq % 0x7FFFFFFF) + 1
        self._sock.send(getlink_dump_request(seq))
        self.table.begin_dump(seq, self._sock.getsockname()[0])

    async def events(self) -> AsyncIterator[LinkState]:
        """Changes of the watched links, never ending: the first ones are the state
        found by the initial dump; errors re-subscribe instead of ending the stream."""
        delay = self.RETRY_MIN
        while True:
            receiving = False
            try:
                if self._sock is None:
                    self._subscribe()
                    self.resubscribes += 1
                    self.log.info("net.link_watch_resubscribed", interfaces=sorted(self.names),
                                  reason="socket_replaced", count=self.resubscribes)
                if self.table.wants_dump:
                    self._request_dump()
                receiving = True
                data = await self._recv()
                if not data:
                    raise ConnectionResetError(errno.ECONNRESET, "netlink socket closed")
                changes = self.table.feed(parse_link_messages(data))
            except OSError as e:
                # ENOBUFS from recv is the overrun; from send it is memory pressure,
                # handled like any failure (with a backoff, not a hot retry).
                if e.errno == errno.ENOBUFS and receiving and self._sock is not None:
                    self.table.overrun()
                    self.log.warning("net.link_events_lost", interfaces=sorted(self.names),
                                     reason="netlink_overrun", overruns=self.table.overruns)
                    continue
                self.log.warning("net.link_watch_failed", interfaces=sorted(self.names),
                                 reason=f"{type(e).__name__}: {e}", retry_in=delay)
                self.close()
                await asyncio.sleep(delay)   # a runner, not protocol code
                delay = min(delay * 2, self.RETRY_MAX)
                continue
            failed = None
            for change in changes:
                if isinstance(change, LinkState):
                    yield change
                elif isinstance(change, Resynced):
                    # The first dump is the start-up state, not news.
                    if change.reason != "subscribed" or self.resubscribes:
                        self.resyncs += 1
                        self.log.info("net.link_state_resynced", interfaces=sorted(self.names),
                                      reason=change.reason, changed=change.changed)
                else:
                    failed = change
            if failed is None:
                delay = self.RETRY_MIN
                continue
            # Not a hot retry: a fresh socket after the backoff, which dumps again.
            self.log.warning("net.link_watch_failed", interfaces=sorted(self.names),
                             reason=f"link dump refused: {os.strerror(failed.error)}", retry_in=delay)
            self.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.RETRY_MAX)
