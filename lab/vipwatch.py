"""Who has the VIP in their kernel, sampled every 50 ms for the failover timeline.

``Director.holds_vip`` forks ``ip addr``, which under the kernel lab's emulation takes a
good share of 100 ms. This asks the kernel itself: one rtnetlink socket per director
namespace, made there once (a netlink socket stays bound to the namespace it was
created in; the thread enters it only for the ``socket()`` call), then an address dump
per sample. No process lives in the directors' namespaces for it, so a kill -9 of every
process there or a power-off leaves the watch running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_HDR = struct.Struct("=IHHII")   # struct nlmsghdr
_IFADDRMSG = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """The calling thread in network namespace ``ns`` for the block."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def dump_request(seq: int) -> bytes:
    """RTM_GETADDR dump of every IPv4 address."""
    body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    return _HDR.pack(_HDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_dump(data: bytes) -> tuple[list[str], bool]:
    """The IPv4 addresses (IFA_LOCAL/IFA_ADDRESS) in one read of an address dump, and
    whether the dump is complete (NLMSG_DONE seen)."""
    out: list[str] = []
    off, done = 0, False
    while off + _HDR.size <= len(data):
        length, mtype, _, _, _ = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        if mtype == NLMSG_DONE:
            done = True
        elif mtype == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
            raise OSError(err, f"address dump: {os.strerror(err)}")
        elif mtype == RTM_NEWADDR and data[off + _HDR.size] == socket.AF_INET:
            a, end = off + _HDR.size + _IFADDRMSG.size, off + length
            while a + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size:
                    break
                if atype in (IFA_LOCAL, IFA_ADDRESS) and alen == _RTA.size + 4:
                    out.append(socket.inet_ntoa(data[a + _RTA.size:a + alen]))
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return out, done


class AddressReader:
    """The IPv4 addresses of one namespace, read through a netlink socket made there."""

    def __init__(self, ns: str) -> None:
        with inside(ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.settimeout(2.0)
        self.seq = 0

    def addresses(self) -> set[str]:
        self.seq += 1
        self.sock.send(dump_request(self.seq))
        found: set[str] = set()
        done = False
        while not done:
            addrs, done = parse_dump(self.sock.recv(65536))
            found.update(addrs)
        return found

    def close(self) -> None:
        self.sock.close()


class VipWatch:
    """Sample which of ``namespaces`` (name -> namespace) have ``vip`` every
    ``interval`` in a background thread; ``stop()`` returns (monotonic time, holders)
    at every change, the first sample included."""

    def __init__(self, namespaces: dict[str, str], vip: str, interval: float = 0.05) -> None:
        self.vip = vip
        self.interval = interval
        self.readers = {name: AddressReader(ns) for name, ns in namespaces.items()}
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-watch", daemon=True)

    def start(self) -> VipWatch:
        self._thread.start()
        return self

    def sample(self) -> tuple[str, ...]:
        held = []
        for name, reader in self.readers.items():
            try:
                if self.vip in reader.addresses():
                    held.append(name)
            except OSError:
                self.errors += 1    # a namespace going away at the end; counted, not fatal
        return tuple(held)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            held = self.sample()
            if not self.samples or self.samples[-1][1] != held:
                self.samples.append((t, held))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self) -> list[tuple[float, tuple[str, ...]]]:
        self._stop.set()
        self._thread.join(timeout=10)
        for reader in self.readers.values():
            reader.close()
        return list(self.samples)
