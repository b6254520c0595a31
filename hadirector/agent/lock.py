"""One agent per director: a lock that a second ``hadirector run`` cannot take.

Two agents on one host fight silently: the second cannot hear the first's adverts
(they come from its own address, and the kernel does not loop multicast back to the
sender), so it becomes MASTER beside it, and when it stops it removes the VIP the
first still holds. keepalived refuses a second start with its pid file.

The lock is a listening unix socket bound to an *abstract* name. The kernel frees it
the instant the holder dies, kill -9 included (no stale pid file to judge), and
abstract names are per network namespace, which is exactly the scope of a director:
two agents in two namespaces (the labs) are two directors and both run. A second
agent learns who holds the lock by connecting and reading SO_PEERCRED (pid, uid of
the process that called listen()). The holder accepts and closes such connections
from its event loop (``accept_pending``), so the backlog never fills.

Abstract names carry no permissions: any local user can bind this name first and
keep the agent from starting. ``Holder.uid`` says who did, and the refusal names it.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

# "\0hadirector/agent" on the wire; `ss -xlp | grep hadirector` shows "@hadirector/agent".
LOCK_NAME = "hadirector/agent"
_UCRED = struct.Struct("=iII")     # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as SO_PEERCRED reported it (None: could not ask)."""

    pid: int | None = None
    uid: int | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "another agent"
        return f"pid {self.pid}" + (f" (uid {self.uid})" if self.uid not in (None, 0) else "")


class AlreadyRunning(Exception):
    def __init__(self, name: str, holder: Holder) -> None:
        super().__init__(f"{holder.describe()} already holds the lock @{name}: "
                         "one agent per network namespace")
        self.name = name
        self.holder = holder


def _address(name: str) -> bytes:
    return b"\0" + name.encode()


def holder_of(name: str = LOCK_NAME, timeout: float = 0.5) -> Holder | None:
    """Ask the holder who it is; None when nobody listens (the lock is free)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(_address(name))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError:
            return Holder()         # there, but busy (backlog full, timeout): unknown pid
        pid, uid, _gid = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return Holder(pid or None, uid)


class AgentLock:
    """``acquire()`` or raise ``AlreadyRunning``; hold it until ``close()`` or death."""

    def __init__(self, name: str = LOCK_NAME) -> None:
        self.name = name
        self._sock: socket.socket | None = None

    def acquire(self) -> "AgentLock":
        # Twice: a holder that exits between our bind and our question leaves the
        # name free, and the second bind takes it.
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.bind(_address(self.name))
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                holder = holder_of(self.name)
                if holder is None:
                    continue
                raise AlreadyRunning(self.name, holder) from None
            s.listen(8)
            s.setblocking(False)
            self._sock = s
            return self
        raise AlreadyRunning(self.name, Holder())

    @property
    def held(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int:
        assert self._sock is not None, "acquire() first"
        return self._sock.fileno()

    def accept_pending(self) -> int:
        """Accept and close every waiting connection (someone asked who we are: the
        kernel answered with our credentials at connect time). Returns how many;
        raises OSError when accepting fails for another reason than "no more"."""
        n = 0
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            # Anything else (EMFILE ...) goes to the caller, which pauses: the socket
            # stays readable, and retrying at once would spin.
            conn.close()
            n += 1
        return n

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "AgentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.close()
