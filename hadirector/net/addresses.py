"""Virtual IP addresses and link state over rtnetlink: pyroute2's AsyncIPRoute for
dumps, removal and link events; the VIP add is one blocking request (``net/rtnl.py``).

Theory of operation: ``AddressManager`` is the only code that adds or removes
addresses. Every call is idempotent — adding a VIP that is already there, or removing
one that is gone, is success — because the agent re-applies its desired state after
restarts and role flaps, and a dead predecessor may have left a VIP behind.

VIPs are added the way keepalived adds them: IPv4 as /32 unless a prefix is given,
with a label ``<ifname>:<suffix>`` so ``ip addr`` (and ``ifconfig``) show which are
ours; IPv6 with IFA_F_NODAD so the address is usable at once (a VIP that sits in
"tentative" for a second after failover is a second of outage).

``LinkWatcher`` turns RTM_NEWLINK broadcasts into ``LinkState`` values for
track_interface. pyroute2 is imported here and in ``hadirector.ipvs`` only.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import AsyncIterator

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from hadirector.model import IPAddress, IPInterface
from hadirector.net import rtnl

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
    """Async rtnetlink client for the addresses of this namespace."""

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None
        # One request at a time on the socket: pyroute2 matches replies by sequence
        # number, but interleaved dumps on one socket have bitten people before.
        self._lock = asyncio.Lock()

    async def _get(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def ifindex(self, interface: str) -> int:
        # if_nametoindex is one ioctl; link_lookup would dump every link.
        try:
            return socket.if_nametoindex(interface)
        except OSError:
            raise NetError(f"no such interface: {interface}") from None

    async def link_state(self, interface: str) -> LinkState:
        async with self._lock:
            ipr = await self._get()
            found = await ipr.link_lookup(ifname=interface)
            if not found:
                return LinkState(interface, 0, up=False, exists=False)
            msgs = [m async for m in await ipr.link("dump")]
        for m in msgs:
            if m["index"] == found[0]:
                return LinkState(interface, m["index"], up=link_is_up(m["flags"]))
        return LinkState(interface, 0, up=False, exists=False)

    async def list_addresses(self, interface: str, family: int | None = None) -> list[IPInterface]:
        """Addresses on the interface in kernel order (primary first)."""
        return [a for a, _flags, _scope in await self._dump(interface, family)]

    async def _dump(self, interface: str, family: int | None) -> list[tuple[IPInterface, int, int]]:
        index = await self.ifindex(interface)
        af = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
        async with self._lock:
            ipr = await self._get()
            msgs = [m async for m in await ipr.addr("dump", family=af)]
        out = []
        for m in msgs:
            if m["index"] != index:
                continue
            addr = m.get("IFA_ADDRESS") or m.get("IFA_LOCAL")
            if addr is None:
                continue
            flags = m.get("IFA_FLAGS") or m["flags"]
            out.append((ipaddress.ip_interface(f"{addr}/{m['prefixlen']}"), flags, m["scope"]))
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
        """Remove the VIP; True if it was there, False if it was already gone."""
        vip = normalise_vip(vip)
        try:
            index = await self.ifindex(interface)
        except NetError:
            return False    # interface gone: so is the address
        try:
            async with self._lock:
                ipr = await self._get()
                await ipr.addr("del", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen)
        except NetlinkError as e:
            if e.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise NetError(f"removing {vip} from {interface}: {e}") from e
        return True

    async def has_vip(self, interface: str, vip: IPInterface) -> bool:
        vip = normalise_vip(vip)
        return any(a.ip == vip.ip for a in await self.list_addresses(interface, vip.version))


class LinkWatcher:
    """RTM_NEWLINK / RTM_DELLINK events as ``LinkState``, for the watched names only."""

    def __init__(self, names: set[str] | frozenset[str]) -> None:
        self.names = frozenset(names)
        self._ipr: AsyncIPRoute | None = None

    async def __aenter__(self) -> "LinkWatcher":
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK)
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def events(self) -> AsyncIterator[LinkState]:
        assert self._ipr is not None, "use 'async with LinkWatcher(...)'"
        async for msg in self._ipr.get():
            kind = msg["header"]["type"]
            name = msg.get("ifname") or msg.get("IFLA_IFNAME")
            if name not in self.names:
                continue
            if kind == RTM_DELLINK:
                yield LinkState(name, msg["index"], up=False, exists=False)
            elif kind == RTM_NEWLINK:
                yield LinkState(name, msg["index"], up=link_is_up(msg["flags"]))
