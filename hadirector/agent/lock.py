"""One agent per director: a lock that a second ``hadirector run`` cannot take, and
that no unprivileged user can take first.

Two agents on one host fight silently: the second cannot hear the first's adverts
(they come from its own address, and the kernel does not loop multicast back to the
sender), so it becomes MASTER beside it, and when it stops it removes the VIP the
first still holds. keepalived refuses a second start with its pid file.

Theory of operation. The lock is ``flock(LOCK_EX)`` on
``/run/hadirector/locks/net-<inode>.lock``, where ``<inode>`` is the network
namespace's (``stat /proc/self/ns/net``, what ``lsns -t net`` shows): a director is a
network namespace, so two agents in two namespaces (the labs) are two directors and
both run, and two in one namespace are refused. The directory is created 0700 and
must be owned by us (root) and writable by no one else, up to ``/run``: a local user
can neither create the file nor open it, so cannot hold the lock first. The kernel
drops a flock when its holder dies, kill -9 included, so a stale file is never in
the way. The holder writes its pid into the file; a refused agent reads it there.
The descriptor is close-on-exec: a notify script that outlives the agent does not
keep the lock.

The abstract unix socket ``@hadirector/agent`` (per network namespace, like the
lock) is kept as a *beacon*, never as the lock: ``ss -xlp`` shows the holder, and a
refused agent can ask it for its pid (SO_PEERCRED) if the file does not say. Any
user can bind an abstract name first; such a squatter is reported (``squatter``) and
ignored. A beacon held by *root* (or by our own uid, for an agent run as a dedicated
user with the two capabilities) while we got the flock means another agent
whose lock file was taken from under it (its directory removed, or another mount
namespace with another /run): that is refused too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
import time
from collections import namedtuple

LOCK_DIR = "/run/hadirector/locks"
# "\0hadirector/agent" on the wire; `ss -xlp | grep hadirector` shows "@hadirector/agent".
BEACON_NAME = "hadirector/agent"
LOCK_NAME = BEACON_NAME        # the old name of the constant
_UCRED = struct.Struct("=iII")     # struct ucred: pid, uid, gid
SO_NETNS_COOKIE = 71           # linux/socket.h (5.14+): a netns id never reused until reboot
PID_WAIT = 0.2                 # s: a holder writes its pid right after its flock


def netns_inode(path: str = "/proc/self/ns/net") -> int:
    return os.stat(path).st_ino


def netns_cookie() -> int | None:
    """This network namespace's cookie (unlike its inode, never reused for a later
    namespace); None on kernels before 5.14."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return None


# The start-up path runs this before a dead predecessor's VIP goes: namedtuples, not
# dataclasses, whose import (with inspect) costs more than the whole lock.
class Holder(namedtuple("Holder", "pid uid", defaults=(None, None))):
    """Who holds the lock: pid and uid (None: could not tell). Immutable."""

    __slots__ = ()

    def describe(self) -> str:
        if self.pid is None:
            return "another agent"
        return f"pid {self.pid}" + (f" (uid {self.uid})" if self.uid not in (None, 0) else "")


class AlreadyRunning(Exception):
    def __init__(self, name: str, holder: Holder) -> None:
        super().__init__(f"{holder.describe()} already holds the lock {name}: "
                         "one agent per network namespace")
        self.name = name
        self.holder = holder


class LockUnusable(Exception):
    """The lock directory is not private to us: refusing beats a lock anyone can take."""


def private_dir(path: str) -> str:
    """Create ``path`` (0700) if needed and check that it and its parents up to ``/``
    are directories (not symlinks) owned by us or root and writable by nobody else
    (sticky world-writable ones like /tmp excepted for parents only). Raises
    ``LockUnusable`` naming the offending path."""
    euid = os.geteuid()
    try:
        # The parent as the unit's RuntimeDirectoryMode= and the control socket's code make it.
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise LockUnusable(f"cannot create {path}: {e.strerror or e}") from None
    own = os.lstat(path)
    if not stat.S_ISDIR(own.st_mode):
        raise LockUnusable(f"{path}: not a directory")
    if own.st_uid != euid:
        raise LockUnusable(f"{path}: owned by uid {own.st_uid}, not by uid {euid}")
    if stat.S_IMODE(own.st_mode) & 0o077:
        os.chmod(path, 0o700)      # ours: a loose mode is a mistake we can mend
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.lstat(parent)
        if stat.S_ISLNK(st.st_mode):
            st = os.stat(parent)   # /run may be a symlink to /var/run's target
        if st.st_uid not in (0, euid):
            raise LockUnusable(f"{parent}: owned by uid {st.st_uid}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise LockUnusable(f"{parent}: writable by group or others")
        if parent == "/":
            return path
        parent = os.path.dirname(parent)


def holder_of(name: str = BEACON_NAME) -> Holder | None:
    """Ask the beacon who holds it; None when nobody listens. Never blocks: a listener
    whose backlog is full (one that does not accept: a squatter) is ``Holder()``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)
        try:
            s.connect(_address(name))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError:
            return Holder()         # there, but busy (backlog full): unknown
        pid, uid, _gid = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return Holder(pid or None, uid)


def _address(name: str) -> bytes:
    return b"\0" + name.encode()


class AgentLock:
    """``acquire()`` or raise ``AlreadyRunning`` / ``LockUnusable``; held until
    ``close()`` or death. ``path`` is this namespace's lock file."""

    def __init__(self, directory: str = LOCK_DIR, beacon: str | None = BEACON_NAME,
                 netns: int | None = None) -> None:
        self.directory = directory
        self.netns = netns if netns is not None else netns_inode()
        self.path = os.path.join(directory, f"net-{self.netns}.lock")
        self.beacon = beacon
        self.squatter: Holder | None = None     # who held the beacon name instead of us
        self._fd: int | None = None
        self._sock: socket.socket | None = None

    @property
    def name(self) -> str:
        return self.path

    def acquire(self) -> "AgentLock":
        private_dir(self.directory)
        # Twice: root may have replaced the file between our open and our flock.
        for _ in range(2):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder_from_file(fd)
                os.close(fd)
                raise AlreadyRunning(self.path, holder) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise LockUnusable(f"{self.path}: replaced while being locked, twice")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        try:
            self._raise_beacon()
        except BaseException:
            self.close()
            raise
        return self

    def _holder_from_file(self, fd: int) -> Holder:
        deadline = time.monotonic() + PID_WAIT
        while True:
            raw = os.pread(fd, 32, 0).strip()
            if raw.isdigit():
                return Holder(int(raw), 0)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        beacon = holder_of(self.beacon) if self.beacon else None
        return beacon if beacon is not None and beacon.uid in (0, os.geteuid()) else Holder()

    def _raise_beacon(self) -> None:
        if not self.beacon:
            return
        # Twice: a holder that exits between our bind and our question frees the name.
        holder = Holder()
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.bind(_address(self.beacon))
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                found = holder_of(self.beacon)
                if found is None:
                    continue
                holder = found
                break
            s.listen(8)
            s.setblocking(False)
            self._sock = s
            return
        if holder.uid in (0, os.geteuid()) and holder.pid not in (None, os.getpid()):
            # Root's (or our user's) beacon with the flock ours: another agent lost its
            # lock file. Anyone else's is a squatter.
            raise AlreadyRunning(f"@{self.beacon}", holder)
        self.squatter = holder

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int | None:
        """The beacon's listening socket, to drain from the event loop (None: no beacon)."""
        return self._sock.fileno() if self._sock is not None else None

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
        if self._fd is not None:
            # Still ours while the pid goes: the next holder never sees a stale one.
            # The file stays: unlinking a lock file races the next agent's open.
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "AgentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.close()
