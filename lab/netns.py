"""Network-namespace primitives every lab builder shares: one ``sh()`` that runs a
command on the host or inside a namespace, and ``inside()`` that moves the calling
thread into one for a block.

The builders on top: ``lab.lan`` (the LANs: a switched LAN of nodes for the VRRP tests,
bench and demo, and the director-pair layout), ``lab.ipvs_netns`` (one namespace with an
addressed veth for the IPVS kernel tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str, ns: str | None = None, check: bool = True, timeout: float | None = 60,
       input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` (in namespace ``ns`` through ``ip netns exec``), output captured as text."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, input=input)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread in namespace ``ns`` for the duration of the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def terminate(proc: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
    """``sig`` (SIGTERM: the graceful stop an operator sends), then SIGKILL if the process
    has not exited ``timeout`` s later; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
