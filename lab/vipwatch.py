"""Who has the VIP in their kernel: sampled every 50 ms for the failover timeline
(``VipWatch``), or every change of it from the kernel's own address events (``VipEvents``).

``Director.holds_vip`` forks ``ip addr``, which under the kernel lab's emulation takes a
good share of 100 ms. This asks the kernel itself: one rtnetlink socket per director
namespace, made there once (a netlink socket stays bound to the namespace it was
created in; the thread enters it only for the ``socket()`` call), then an address dump
per sample. No process lives in the directors' namespaces for it, so a kill -9 of every
process there or a power-off leaves the watch running.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time

from lab.netns import inside

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTMGRP_IPV4_IFADDR = 0x10
SO_RCVBUFFORCE = 33   # root may set a receive queue past net.core.rmem_max
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_HDR = struct.Struct("=IHHII")   # struct nlmsghdr
_IFADDRMSG = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")


def dump_request(seq: int) -> bytes:
    """RTM_GETADDR dump of every IPv4 address."""
    body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    return _HDR.pack(_HDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse(data: bytes) -> tuple[list[tuple[int, frozenset[str]]], bool]:
    """The IPv4 address messages in one read -- (RTM_NEWADDR or RTM_DELADDR, the
    addresses it names in IFA_LOCAL/IFA_ADDRESS) -- and whether NLMSG_DONE ended it."""
    out: list[tuple[int, frozenset[str]]] = []
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
        elif mtype in (RTM_NEWADDR, RTM_DELADDR) and data[off + _HDR.size] == socket.AF_INET:
            found: set[str] = set()
            a, end = off + _HDR.size + _IFADDRMSG.size, off + length
            while a + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size:
                    break
                if atype in (IFA_LOCAL, IFA_ADDRESS) and alen == _RTA.size + 4:
                    found.add(socket.inet_ntoa(data[a + _RTA.size:a + alen]))
                a += (alen + 3) & ~3
            out.append((mtype, frozenset(found)))
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
            messages, done = parse(self.sock.recv(65536))
            for mtype, addrs in messages:
                if mtype == RTM_NEWADDR:
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


class VipEvents:
    """Every change of ``vip`` in namespace ``ns`` while the ``with`` block runs, read
    from the kernel's address events, not sampled. The kernel queues an event in the
    socket at the moment of the change, so a test process starved for a second still
    misses nothing, however short the flap. The socket subscribes before the first dump,
    so no change falls between the two; a queue that overflowed (ENOBUFS) is ``error``,
    never a silent gap, and so is an end state the events do not account for.

    After the block: ``held_at_start``, ``held_at_end`` and ``events``, the VIP's
    "added" and "deleted" in the kernel's order. The watch lasts at least
    ``min_watch`` seconds, so it covers the aftermath of however fast a change it frames.
    """

    def __init__(self, ns: str, vip, *, min_watch: float = 1.0, queue_bytes: int = 1 << 22) -> None:
        self.ns, self.vip, self.min_watch, self.queue_bytes = ns, str(vip), min_watch, queue_bytes
        self.events: list[str] = []
        self.error: str | None = None
        self.held_at_start = self.held_at_end = False

    def __enter__(self) -> VipEvents:
        with inside(self.ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.queue_bytes)
        self.sock.bind((0, RTMGRP_IPV4_IFADDR))
        self.sock.setblocking(False)
        self.reader = AddressReader(self.ns)
        self.held_at_start = self.vip in self.reader.addresses()
        self.started = time.monotonic()
        return self

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self.error = "the kernel dropped address events: the socket's queue overflowed"
                continue
            messages, _ = parse(data)
            self.events += ["added" if mtype == RTM_NEWADDR else "deleted"
                            for mtype, addrs in messages if self.vip in addrs]

    def __exit__(self, *exc) -> None:
        try:
            time.sleep(max(0.0, self.started + self.min_watch - time.monotonic()))
            # The end state first, then the queue: every event up to the dump is queued
            # by then (the kernel sends it before the change's own call returns).
            self.held_at_end = self.vip in self.reader.addresses()
            self._drain()
            replayed = self.events[-1] == "added" if self.events else self.held_at_start
            if self.error is None and replayed != self.held_at_end:
                self.error = (f"the events ({self.events}) do not lead from held={self.held_at_start} "
                              f"to the end state held={self.held_at_end}")
        finally:
            self.sock.close()
            self.reader.close()
