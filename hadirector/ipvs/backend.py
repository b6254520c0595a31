"""The interface every IPVS backend offers (the kernel over netlink, and the fake), the
error it raises, and the sync-daemon types.

``IpvsError`` carries the failed operation, the kernel's errno and a sentence that names
the entry and, where the errno allows, the field at fault, e.g.::

    add real server 10.244.1.2:80 to tcp 10.244.0.1:80: ERANGE (Numerical result out of
    range): lower threshold 50 is above upper threshold 10

The explanations follow the kernel's own checks (net/netfilter/ipvs/ip_vs_ctl.c):
``ip_vs_genl_set_cmd`` (ESRCH: no such service; EINVAL: a real server of another family
needs tunnelling), ``ip_vs_add_service`` (ENOENT: no scheduler/persistence-engine module;
EINVAL: IPv6 netmask outside 1..128), ``ip_vs_add_dest``/``ip_vs_edit_dest`` (ERANGE:
negative weight or lower threshold above upper; EINVAL: GUE without a port; EEXIST;
ENOENT), ``ip_vs_new_dest`` (EINVAL: the address is not unicast in this namespace's
routing table), ``start_sync_thread`` (EEXIST: already running; ENODEV: no interface).
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from typing import Protocol

from hadirector import model
from hadirector.ipvs import planner
from hadirector.ipvs.table import Table


# The sync daemon's role: the one enum (model.SyncRole), by the kernel's name for it.
# Its kernel encoding (IP_VS_STATE_*) lives in kernel/ipvs.py.
DaemonState = model.SyncRole


def parse_daemon_state(value: DaemonState | str) -> DaemonState:
    """``DaemonState.MASTER`` or ``"master"`` -> ``DaemonState.MASTER``."""
    return value if isinstance(value, DaemonState) else DaemonState[str(value).upper()]


@dataclass(frozen=True)
class DaemonEntry:
    """A running sync daemon as the kernel reports it (effective values: the kernel fills
    in port 8848, ttl 1, group 224.0.0.81 and the MTU-derived maxlen when given 0)."""

    state: DaemonState
    interface: str
    syncid: int
    maxlen: int = 0
    mcast_group: str | None = None
    port: int = 0
    ttl: int = 0


@dataclass(frozen=True)
class DaemonOp:
    """Start or stop of a sync daemon, for error reporting."""

    action: str                  # "start" | "stop"
    state: DaemonState
    interface: str = ""

    def __str__(self) -> str:
        where = f" on {self.interface}" if self.interface else ""
        return f"{self.action} {self.state.name.lower()} sync daemon{where}"


class IpvsError(Exception):
    def __init__(self, op: object, errno: int, message: str = ""):
        self.op = op
        self.errno = errno
        self.message = message or f"{op}: {errname(errno)}: {explain(op, errno)}"
        super().__init__(self.message)


class IpvsUnavailable(IpvsError):
    """The kernel's IPVS cannot be used at all, as opposed to one entry being refused:
    the generic netlink family "IPVS" is missing (no ip_vs module, and the kernel could
    not load one: ENOENT), the netlink socket cannot be opened, or reading the table is
    refused as a whole (EPERM: needs root or CAP_NET_ADMIN). The agent retries; see
    ``ipvs/availability.py``."""


def errname(code: int) -> str:
    return f"{errno_mod.errorcode.get(code, str(code))} ({os.strerror(code)})"


def explain(op: object, code: int) -> str:
    """Why the kernel said ``code`` to ``op``, naming the entry and field at fault."""
    E = errno_mod
    if isinstance(op, (planner.AddService, planner.EditService)):
        e = op.entry
        if code == E.EEXIST:
            return f"service {e.key} already exists"
        if code == E.ESRCH:
            return f"service {e.key} does not exist"
        if code == E.ENOENT:
            if e.pe_name:
                return f"scheduler {e.scheduler!r} or persistence engine {e.pe_name!r} is not available"
            return f"scheduler {e.scheduler!r} is not available (no ip_vs_{e.scheduler} module)"
        if code == E.EINVAL:
            return f"invalid field: netmask /{e.netmask} or scheduler {e.scheduler!r}"
        if code == E.EAFNOSUPPORT:
            return f"address family IPv{e.key.family} is not supported by this kernel"
    if isinstance(op, planner.DelService):
        if code == E.ESRCH:
            return f"service {op.key} does not exist"
    if isinstance(op, (planner.AddDest, planner.EditDest)):
        d = op.entry
        if code == E.ESRCH:
            return f"service {op.service} does not exist"
        if code == E.EEXIST:
            return f"real server {d.key} is already in the service"
        if code == E.ENOENT:
            return f"real server {d.key} is not in the service"
        if code == E.ERANGE:
            if d.weight < 0:
                return f"weight {d.weight} is negative"
            return f"lower threshold {d.l_threshold} is above upper threshold {d.u_threshold}"
        if code == E.EINVAL:
            if d.tun_type == 1 and d.tun_port == 0 and d.fwd == 2:
                return "tunnel type gue needs a tunnel port"
            if d.family != op.service.family and d.fwd != 2:
                return (f"real server family IPv{d.family} differs from the service's "
                        f"IPv{op.service.family}; only tunnel forwarding allows that")
            return (f"address {d.key.address} is not a usable unicast address in this "
                    f"namespace (no route), or a mixed-family real server while the sync "
                    f"daemon runs")
    if isinstance(op, planner.DelDest):
        if code == E.ESRCH:
            return f"service {op.service} does not exist"
        if code == E.ENOENT:
            return f"real server {op.key} is not in the service"
    if isinstance(op, DaemonOp):
        if code == E.EEXIST:
            return f"a {op.state.name.lower()} sync daemon is already running"
        if code == E.ESRCH:
            return f"no {op.state.name.lower()} sync daemon is running"
        if code == E.ENODEV:
            return f"interface {op.interface!r} does not exist"
        if code == E.EINVAL:
            return "invalid sync daemon settings (multicast group, or mixed-family real servers)"
    return os.strerror(code)


class IpvsBackend(Protocol):
    """What the reconciler and the CLI need from the kernel (or the fake)."""

    def dump(self) -> Table: ...

    def dump_service(self, key) -> Table: ...

    def apply(self, op: planner.Op) -> None:
        """Apply one operation; raise IpvsError on refusal."""

    def apply_many(self, ops: list[planner.Op]) -> list[IpvsError | None]:
        """Apply in order (the kernel backend batches them); one result per op."""

    def start_daemon(self, state: DaemonState | str, cfg: model.SyncDaemon) -> None: ...

    def stop_daemon(self, state: DaemonState | str) -> None: ...

    def daemons(self) -> list[DaemonEntry]: ...

    def close(self) -> None: ...
