"""Stateful stand-ins for the kernel, failing the way the kernel does: IPVS
(``FakeIpvs``, for ``kernel/ipvs.py``), addresses and links (``FakeAddresses`` and
``FakeLinkWatcher``, for ``kernel/addresses.py``).

IPVS:

Not a no-op dummy (kube-proxy's util/ipvs/testing/fake.go is the model): it keeps the
table, refuses what ip_vs_ctl.c refuses with the same errno, and counts writes, so the
same planner/reconciler tests run against it and, in the kernel lab, against the kernel.

Refusals modelled (ip_vs_ctl.c): EEXIST on adding a service or real server twice; ESRCH
for any command on a missing service; ENOENT on editing/deleting a missing real server
and on an unknown scheduler; ERANGE on a negative weight or lower threshold above the
upper; EINVAL on GUE without a port, on a real server of another family unless tunnelled
(and never while a sync daemon runs, nor a daemon while such a server exists),
on an IPv6 netmask outside 1..128 and on an address ``routable`` rejects; sync daemons:
EEXIST twice, ESRCH when stopping one that is not running, ENODEV for an unknown
interface. ``fail_next(op_type, errno)`` injects a refusal for tests.

``unavailable = errno.ENOENT`` makes it a kernel without IPVS (the generic netlink
family unregistered): every read raises ``IpvsUnavailable`` and every write is refused
with that errno, as genetlink answers for an unknown family; ``None`` brings it back
(the table as it was, as if the module had never left: tests clear it themselves).
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from hadirector import model
from hadirector.kernel.addresses import LinkState
from hadirector.ipvs import planner
from hadirector.ipvs.backend import (
    DaemonEntry, DaemonOp, DaemonState, IpvsError, IpvsUnavailable, errname, parse_daemon_state,
)
from hadirector.ipvs.table import FWD_TUNNEL, SCHEDULERS_AVAILABLE, TUN_GUE, ServiceKey, Table


def _unicast(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_multicast or ip.is_unspecified or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))
                or (ip.version == 6 and ip.is_link_local))


class FakeIpvs:
    def __init__(self, schedulers: tuple[str, ...] = SCHEDULERS_AVAILABLE,
                 interfaces: set[str] | None = None,
                 routable: Callable[[str], bool] = _unicast):
        self.table = Table()
        self.schedulers = set(schedulers)
        self.interfaces = interfaces          # None = any interface name exists
        self.routable = routable
        self.writes: list[planner.Op] = []    # every accepted write, in order
        self.calls = 0                        # every apply() call, accepted or not
        self.dumps = 0
        self._daemons: dict[DaemonState, DaemonEntry] = {}
        self._faults: list[tuple[type, int, Callable[[planner.Op], bool] | None]] = []
        self.unavailable: int | None = None   # an errno: no IPVS in this "kernel"

    # --- test hooks -------------------------------------------------------------------

    def fail_next(self, op_type: type, code: int, when: Callable[[planner.Op], bool] | None = None) -> None:
        """Refuse the next ``op_type`` (matching ``when``) with ``code``."""
        self._faults.append((op_type, code, when))

    def _check_available(self, what: str) -> None:
        code = self.unavailable
        if code is not None:
            why = ("the kernel has no IPVS (generic netlink family 'IPVS' missing)"
                   if code == errno.ENOENT else "needs root or CAP_NET_ADMIN" if code == errno.EPERM
                   else "IPVS cannot be used")
            raise IpvsUnavailable(what, code, f"{what}: {errname(code)}: {why}")

    # --- IpvsBackend ------------------------------------------------------------------

    def dump(self) -> Table:
        self._check_available("dump services")
        self.dumps += 1
        return self.table.copy()

    def dump_service(self, key: ServiceKey) -> Table:
        self._check_available(f"read service {key}")
        out = Table()
        if key in self.table.services:
            out.add(self.table.services[key], list(self.table.dests_of(key).values()))
        return out

    def apply(self, op: planner.Op) -> None:
        self.calls += 1
        if self.unavailable is not None:
            raise IpvsError(op, self.unavailable)
        for i, (op_type, code, when) in enumerate(self._faults):
            if isinstance(op, op_type) and (when is None or when(op)):
                del self._faults[i]
                raise IpvsError(op, code)
        code = self._check(op)
        if code:
            raise IpvsError(op, code)
        planner.apply_to_table(self.table, op)
        self.writes.append(op)

    def apply_many(self, ops: list[planner.Op]) -> list[IpvsError | None]:
        out: list[IpvsError | None] = []
        for op in ops:
            try:
                self.apply(op)
                out.append(None)
            except IpvsError as e:
                out.append(e)
        return out

    def _check(self, op: planner.Op) -> int:
        t = self.table
        if isinstance(op, planner.AddService):
            if op.entry.key in t.services:
                return errno.EEXIST
            return self._check_service_fields(op.entry)
        svc_key = op.service
        if svc_key not in t.services:
            return errno.ESRCH
        if isinstance(op, planner.EditService):
            return self._check_service_fields(op.entry)
        if isinstance(op, planner.DelService):
            return 0
        dests = t.dests_of(svc_key)
        if isinstance(op, planner.DelDest):
            return 0 if op.key in dests else errno.ENOENT
        d = op.entry
        if d.family != svc_key.family and (d.fwd != FWD_TUNNEL or self._daemons):
            # only tunnels cross families, and never while a sync daemon runs
            return errno.EINVAL
        if d.weight < 0 or d.l_threshold > d.u_threshold:
            return errno.ERANGE
        if d.tun_type == TUN_GUE and d.tun_port == 0:
            return errno.EINVAL
        if isinstance(op, planner.AddDest):
            if d.key in dests:
                return errno.EEXIST
            if not self.routable(d.key.address):
                return errno.EINVAL
            return 0
        return 0 if d.key in dests else errno.ENOENT

    def _check_service_fields(self, entry) -> int:
        if entry.scheduler != "none" and entry.scheduler not in self.schedulers:
            return errno.ENOENT
        if entry.key.family == 6 and not 1 <= entry.netmask <= 128:
            return errno.EINVAL
        return 0

    # --- sync daemon ------------------------------------------------------------------

    def start_daemon(self, state: DaemonState | str, cfg: model.SyncDaemon) -> None:
        state = parse_daemon_state(state)
        op = DaemonOp("start", state, cfg.interface)
        if self.unavailable is not None:
            raise IpvsError(op, self.unavailable)
        if state is DaemonState.NONE:
            raise IpvsError(op, errno.EINVAL)      # IP_VS_STATE_NONE starts no thread
        if state in self._daemons:
            raise IpvsError(op, errno.EEXIST)
        if self.interfaces is not None and cfg.interface not in self.interfaces:
            raise IpvsError(op, errno.ENODEV)
        group = cfg.mcast_group
        if group is not None and not group.is_multicast:
            raise IpvsError(op, errno.EINVAL)
        if self._mixed_family_dests():
            # ip_vs_genl_new_daemon: the sync protocol cannot carry mixed families
            raise IpvsError(op, errno.EINVAL)
        self._daemons[state] = DaemonEntry(
            state=state, interface=cfg.interface, syncid=cfg.syncid,
            maxlen=cfg.maxlen or 1472,
            mcast_group=str(group) if group is not None else "224.0.0.81",
            port=cfg.port or 8848, ttl=cfg.ttl or 1,
        )

    def _mixed_family_dests(self) -> bool:
        return any(d.family != key.family for key, dests in self.table.dests.items() for d in dests.values())

    def stop_daemon(self, state: DaemonState | str) -> None:
        state = parse_daemon_state(state)
        if self.unavailable is not None:
            raise IpvsError(DaemonOp("stop", state), self.unavailable)
        if state not in self._daemons:
            raise IpvsError(DaemonOp("stop", state), errno.ESRCH)
        del self._daemons[state]

    def daemons(self) -> list[DaemonEntry]:
        self._check_available("dump sync daemons")
        return [self._daemons[s] for s in DaemonState if s in self._daemons]

    def close(self) -> None:
        pass


# --- addresses and links (kernel/addresses.py) -------------------------------------------


@dataclass
class FakeAddresses:
    """AddressManager stand-in: keeps per-interface address sets, idempotent like it."""

    addrs: dict[str, list] = field(default_factory=lambda: {"eth0": [ipaddress.ip_interface("10.0.0.1/24")]})
    log: list[tuple[str, str]] = field(default_factory=list)
    fail_adds: int = 0                  # the next N add_vip calls raise
    on_change: Callable[[], None] | None = None     # called after an address is added or removed

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def primary_address(self, interface, family, exclude=()):
        for a in self.addrs.get(interface, []):
            if a.version == family and a.ip not in exclude:
                return a.ip
        return None

    def add_vip(self, interface, vip, label=None):
        if self.fail_adds:
            self.fail_adds -= 1
            raise OSError(1, "Operation not permitted")
        have = self.addrs.setdefault(interface, [])
        if any(a.ip == vip.ip for a in have):
            return False
        have.append(vip)
        self.log.append(("add", str(vip)))
        self._changed()
        return True

    async def remove_vip(self, interface, vip):
        have = self.addrs.get(interface, [])
        for a in have:
            if a.ip == vip.ip:
                have.remove(a)
                self.log.append(("del", str(vip)))
                self._changed()
                return True
        return False

    async def link_state(self, interface):
        return LinkState(interface, 2, up=True)

    def has(self, interface, ip) -> bool:
        return any(str(a.ip) == str(ip) for a in self.addrs.get(interface, []))

    def close(self):
        pass


class FakeLinkWatcher:
    """LinkWatcher stand-in: the test pushes LinkState events."""

    instances: list["FakeLinkWatcher"] = []

    def __init__(self, names) -> None:
        import asyncio
        self.names = frozenset(names)
        self.queue: asyncio.Queue = asyncio.Queue()
        FakeLinkWatcher.instances.append(self)

    async def __aenter__(self):
        return self

    def close(self) -> None:
        pass

    def push(self, name: str, up: bool) -> None:
        self.queue.put_nowait(LinkState(name, 2, up=up))

    async def events(self):
        while True:
            yield await self.queue.get()
