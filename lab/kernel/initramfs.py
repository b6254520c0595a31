"""The lab's initramfs: busybox, the few modules needed to reach the host's root over
9p, and an /init that sets up the guest and runs one command.

Only the bootstrap modules live in the initramfs. Everything else (ip_vs, schedulers,
veth, ...) is loaded from the unpacked module tree once the host root is mounted: /init
binds that tree on /lib/modules and points the kernel at busybox's modprobe, so the
kernel's own auto-loading (``request_module``) works for anything a test asks for.

Per-run settings (which paths to expose, which command) are not baked in: /init reads
them from ``params`` in the read-write exchange export, so one cached image serves every
run. The image is cached under the kernel version and a hash of this file's inputs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import os
from collections.abc import Sequence
from pathlib import Path

from .kernel import LabKernel, cache_lock

# Enough to mount the host root over 9p; their dependencies come from modules.dep
# (6.12 adds netfs under 9pnet) and built-in ones drop out (6.12 builds virtio_pci in).
# crc32c_generic is here because libcrc32c (needed by ip_vs via nf_conntrack) needs a
# crc32c transform when it loads ("softdep libcrc32c pre: crc32c" in 6.12, "unknown
# symbol" in 6.1), and the busybox modprobe does not know about softdeps.
BOOTSTRAP_MODULES = ["virtio_pci", "crc32c_generic", "9pnet_virtio", "9p"]

# Debian signs its modules and the kernel checks a signature whenever one is appended
# (it only taints on unsigned ones unless module.sig_enforce). Hashing and verifying
# under TCG is slow, and nothing here needs the check. Modules in the image are stored
# decompressed (6.12 ships .ko.xz, signed before compression), then stripped.
STRIP_SIGNATURES = not os.environ.get("HADIRECTOR_LAB_KEEP_SIGNATURES")
_SIG_MAGIC = b"~Module signature appended~\n"

# The 9p tags the runner exports. Fixed names shared with runner.py.
TAG_ROOT = "hostroot"
TAG_XCHG = "xchg"

# /init runs under busybox sh as PID 1. `params` (written by the runner) sets:
#   KVER           uname -r of this kernel
#   MODTREE        host path of the dir holding <KVER>/ (…/root/lib/modules)
#   LOAD_KO        "name:file" (file relative to /lib/modules/KVER) to insmod, in order
#   XCHG_PATH      host path of the exchange dir; mounted there in the guest as well
#   KEEP_PATHS     host paths under /tmp, /run, /dev/shm that must stay visible
#   RW_MOUNTS      "tag=path ..." extra read-write exports, mounted at the same path
#   NINEP_OPTS     extra 9p options for the read-only root
#   SHELL_MODE     1: run the command on the console (interactive), no capture
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /host /hostro /xchg /lib/modules /sbin /usr/bin /usr/sbin /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

phase() {
    [ -z "$KLAB_DEBUG" ] || echo "KLAB:PHASE $1 $(cut -d' ' -f1 /proc/uptime)"
}

fail() {
    echo "KLAB:FAIL $*"
    sync
    poweroff -f
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
[ -n "$KLAB_DEBUG" ] || echo 1 > /proc/sys/kernel/printk 2>/dev/null

phase init
for m in $(cat /modules/order); do
    insmod /modules/$m.ko || fail "insmod $m"
done

phase bootstrap-modules-loaded
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none,rw @TAG_XCHG@ /xchg \
    || fail "mount exchange export"
[ -f /xchg/params ] || fail "no params in exchange export"
. /xchg/params

mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro,multidevs=remap$NINEP_OPTS @TAG_ROOT@ /host \
    || fail "mount host root"

# The kernel's usermode helper runs in this (initramfs) root, so the tree and the
# modprobe it calls must be here; busybox modprobe reads the depmod output.
mount -o bind "/host$MODTREE" /lib/modules || fail "bind module tree $MODTREE"
[ -d /lib/modules/$KVER ] || fail "no modules for $KVER in $MODTREE"
echo /sbin/modprobe > /proc/sys/kernel/modprobe
phase root-mounted
# insmod in an order computed on the host from modules.dep: a modprobe per module
# would parse modules.dep each time, which costs seconds under TCG. The default set is
# in the initramfs, without signatures; others come from the tree over 9p.
# Names come from the host: a file name may spell with dashes what /sys/module and the
# image spell with underscores, and may end in .ko.xz.
for spec in $LOAD_KO; do
    name=${spec%%:*}; ko=${spec#*:}
    [ -d "/sys/module/$name" ] && continue
    if [ -f "/modules/$name.ko" ]; then
        insmod "/modules/$name.ko" || echo "KLAB:WARN insmod $name failed"
    else
        insmod "/lib/modules/$KVER/$ko" || echo "KLAB:WARN insmod $ko failed"
    fi
done

phase modules-loaded
ip link set lo up
hostname kernel-lab

# Keep a view of the host root without the guest's tmpfs on top, to re-expose paths
# under /tmp (a venv there) that the tmpfs would hide.
mount -o bind /host /hostro
mount -t proc proc /host/proc || fail "mount proc"
mount -t sysfs sysfs /host/sys || fail "mount sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mount dev"
mkdir -p /host/dev/pts /host/dev/shm 2>/dev/null
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "mount /run"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /tmp"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /host/sys/fs/bpf 2>/dev/null
for p in $KEEP_PATHS; do
    mkdir -p "/host$p" && mount -o bind "/hostro$p" "/host$p" || fail "keep $p"
done
mkdir -p "/host$XCHG_PATH" 2>/dev/null
mount -o bind /xchg "/host$XCHG_PATH" || fail "bind exchange at $XCHG_PATH"
for spec in $RW_MOUNTS; do
    tag=${spec%%=*}; path=${spec#*=}
    mkdir -p "/host$path" 2>/dev/null
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none,rw "$tag" "/host$path" \
        || fail "mount $tag at $path"
done

echo "KLAB:READY $(cut -d' ' -f1 /proc/uptime)"
if [ "$SHELL_MODE" = 1 ]; then
    setsid cttyhack chroot /host /bin/sh "$XCHG_PATH/run.sh"
    echo $? > /xchg/rc
else
    { chroot /host /bin/sh "$XCHG_PATH/run.sh" < /dev/null; echo $? > /xchg/rc; } 2>&1 \
        | tee /xchg/output
fi
echo "KLAB:DONE $(cat /xchg/rc) $(cut -d' ' -f1 /proc/uptime)"
sync
umount -a -r 2>/dev/null
poweroff -f
sleep 10
"""


def init_script() -> str:
    return INIT_SCRIPT.replace("@TAG_XCHG@", TAG_XCHG).replace("@TAG_ROOT@", TAG_ROOT)


def busybox_path() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    raise FileNotFoundError("busybox not found: install busybox-static")


def ensure_initramfs(kernel: LabKernel, cache: Path, preload: Sequence[str] = ()) -> Path:
    """Build (once) and return the gzipped newc initramfs for ``kernel``.

    ``preload`` names modules to carry in the image besides the bootstrap ones, so
    /init can insmod them from memory instead of reading them over 9p.
    """
    order = kernel.dependencies(BOOTSTRAP_MODULES)
    extra = [m for m in preload if m not in order]
    busybox = busybox_path().read_bytes()
    script = init_script()
    digest = hashlib.sha256()
    for part in (script.encode(), "\n".join(order).encode(), "\n".join(extra).encode(), busybox,
                 str(STRIP_SIGNATURES).encode()):
        digest.update(hashlib.sha256(part).digest())
    path = cache / "initramfs" / f"{kernel.version}-{digest.hexdigest()[:16]}.cpio.gz"
    if path.exists():
        return path
    with cache_lock(cache):
        if path.exists():
            return path
        writer = _NewcWriter()
        for d in ("bin", "dev", "modules", "proc", "sys"):
            writer.directory(d)
        writer.chardev("dev/console", 5, 1)
        writer.file("bin/busybox", busybox, 0o755)
        writer.file("init", script.encode(), 0o755)
        writer.file("modules/order", ("\n".join(order) + "\n").encode(), 0o644)
        for name in order + extra:
            data = kernel.module_bytes(name)
            writer.file(f"modules/{name}.ko", strip_signature(data) if STRIP_SIGNATURES else data, 0o644)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(writer.finish())
        tmp.rename(path)
        # Old images of this kernel are dead weight once the script changed.
        for old in path.parent.glob(f"{kernel.version}-*.cpio.gz"):
            if old != path:
                old.unlink(missing_ok=True)
    return path


class _NewcWriter:
    """A minimal writer for the cpio "newc" format the kernel unpacks (see the kernel's
    Documentation/driver-api/early-userspace/buffer-format.rst)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        namez = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self._buf.write(namez)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()



def strip_signature(ko: bytes) -> bytes:
    """The module without its appended signature (see the kernel's
    scripts/sign-file.c: signature, struct module_signature, magic string)."""
    if not ko.endswith(_SIG_MAGIC):
        return ko
    info = ko[-len(_SIG_MAGIC) - 12 : -len(_SIG_MAGIC)]
    sig_len = int.from_bytes(info[8:12], "big")
    end = len(ko) - len(_SIG_MAGIC) - 12 - sig_len
    if end <= 0:
        return ko
    return ko[:end]
