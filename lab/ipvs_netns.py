"""Network namespaces for the IPVS kernel tests (area prefix "iv", addresses 10.244.0.0/16
and fd00:244::/64).

``IpvsNetns`` makes one namespace with an addressed veth pair, so the kernel accepts real
servers in 10.244.0.0/16 and fd00:244::/64 (ip_vs_new_dest refuses an address with no
usable route, kernel-lab.md). ``ipvs()`` opens our netlink backend *inside* it: a netlink
socket stays bound to the namespace it was created in, so we enter the namespace only
for the socket() call and return at once. Teardown deletes the veth before the namespace
(``ip netns del`` returns before the kernel is done, kernel-lab.md).
"""

from __future__ import annotations

import os
import subprocess
import time

from lab.netns import inside, sh

__all__ = ["IpvsNetns", "inside", "kernel_schedulers", "sh", "wait_until"]


class IpvsNetns:
    """One namespace: iv-a (10.244.0.1/16, fd00:244::1/64) <-> iv-b, both up, lo up."""

    def __init__(self, tag: str):
        self.name = f"iv{os.getpid() % 100000}{tag}"
        self.up = False

    def __enter__(self) -> IpvsNetns:
        sh("ip", "netns", "add", self.name)
        self.up = True
        try:
            n = self.name
            sh("ip", "-n", n, "link", "set", "lo", "up")
            sh("ip", "-n", n, "link", "add", "iv-a", "type", "veth", "peer", "name", "iv-b")
            sh("ip", "-n", n, "addr", "add", "10.244.0.1/16", "dev", "iv-a")
            sh("ip", "-n", n, "addr", "add", "fd00:244::1/64", "dev", "iv-a", "nodad")
            sh("ip", "-n", n, "link", "set", "iv-a", "up")
            sh("ip", "-n", n, "link", "set", "iv-b", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if not self.up:
            return
        sh("ip", "-n", self.name, "link", "del", "iv-a", check=False)
        sh("ip", "netns", "del", self.name, check=False)
        self.up = False

    def ipvs(self):
        from hadirector.kernel.ipvs import IpvsNetlink
        with inside(self.name):
            return IpvsNetlink()

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return sh(*argv, ns=self.name, **kw)

    def ipvsadm(self, *args: str) -> str:
        return self.run("ipvsadm", *args).stdout


def wait_until(pred, timeout: float = 10.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def kernel_schedulers() -> set[str]:
    """Schedulers the running kernel ships (ip_vs_twos arrived in 6.2; the lab's Debian
    6.1 kernel lacks it): loaded modules, plus modules.dep of the module tree (the lab
    keeps it under modprobe's -d root)."""
    from hadirector import model
    have = set()
    try:
        with open("/proc/modules") as f:
            have |= {line.split()[0] for line in f}
    except FileNotFoundError:      # CONFIG_MODULES=n: only built-ins
        pass
    roots = ["/"]
    opts = os.environ.get("MODPROBE_OPTIONS", "").split()
    if "-d" in opts and opts.index("-d") + 1 < len(opts):
        roots.append(opts[opts.index("-d") + 1])
    for root in roots:
        for index in ("modules.dep", "modules.builtin"):
            try:
                with open(os.path.join(root, "lib/modules", os.uname().release, index)) as f:
                    for line in f:
                        have.add(os.path.basename(line.split(":", 1)[0].strip()).split(".ko")[0])
            except FileNotFoundError:
                pass
    return {s for s in model.SCHEDULERS if f"ip_vs_{s}" in have}
