"""Fetch and cache a stock Debian kernel that has IPVS.

This machine's kernel has neither IPVS nor module loading, so the lab boots Debian's
``linux-image-6.1.0-N-amd64`` under QEMU. Not the ``-cloud-amd64`` flavour: it has IPVS
but no 9p, and the lab's root filesystem is this machine's own, exported over 9p.

The package is fetched once with ``apt-get download``, unpacked with ``dpkg -x`` and
indexed with ``depmod -b``; the result lives in the cache directory
(``$HADIRECTOR_LAB_CACHE`` or ``/var/cache/hadirector/kernel-lab``) and is reused by
every later run, CI included. A kernel already in the cache is preferred over asking
apt for a newer one, so a warm machine never touches the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/hadirector/kernel-lab")

# linux-image-6.1.0-56-amd64, but neither -cloud-amd64 (no 9p), -rt-amd64 nor -unsigned.
_PACKAGE_RE = re.compile(r"^linux-image-(6\.1\.0-\d+-amd64)$")
_STAMP = ".complete"


class KernelFetchError(RuntimeError):
    """The lab kernel could not be found, downloaded or unpacked."""


@dataclass(frozen=True)
class LabKernel:
    """An unpacked kernel: its image and the module tree that belongs to it."""

    version: str  # uname -r, e.g. "6.1.0-56-amd64"
    vmlinuz: Path
    root: Path  # dpkg -x target; modules are under root/lib/modules/<version>

    @property
    def boot_image(self) -> Path:
        """What QEMU boots: the uncompressed ELF when we have it (see extract_vmlinux)."""
        elf = self.vmlinuz.with_name("vmlinux")
        return elf if elf.exists() else self.vmlinuz

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.version

    def module_path(self, name: str) -> Path | None:
        """The .ko file of a module by name (dashes and underscores are the same), or
        None when the module is built in or absent."""
        return self.module_index().get(name.replace("-", "_"))

    def module_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for line in (self.modules_dir / "modules.dep").read_text().splitlines():
            rel = line.split(":", 1)[0]
            index[_module_name(rel)] = self.modules_dir / rel
        return index

    def dependencies(self, names: list[str]) -> list[str]:
        """The modules to insmod, in load order, so that every name in ``names`` ends up
        loaded: each module's dependencies (from modules.dep) come before it."""
        deps: dict[str, list[str]] = {}
        for line in (self.modules_dir / "modules.dep").read_text().splitlines():
            rel, _, rest = line.partition(":")
            deps[_module_name(rel)] = [_module_name(d) for d in rest.split()]
        builtin = self.builtin_modules()
        order: list[str] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            name = name.replace("-", "_")
            if name in order or name in builtin:
                return
            if name not in deps:
                raise KernelFetchError(f"module {name} not in {self.version} (needed by {trail})")
            if name in trail:
                raise KernelFetchError(f"module dependency loop: {trail + (name,)}")
            # modules.dep lists every transitive dependency, nearest first; visiting each
            # recursively yields a valid order either way.
            for dep in reversed(deps[name]):
                visit(dep, trail + (name,))
            order.append(name)

        for n in names:
            visit(n, ())
        return order

    def builtin_modules(self) -> set[str]:
        path = self.modules_dir / "modules.builtin"
        if not path.exists():
            return set()
        return {_module_name(line) for line in path.read_text().split()}


def _module_name(rel: str) -> str:
    base = os.path.basename(rel.strip())
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def cache_dir() -> Path:
    return Path(os.environ.get("HADIRECTOR_LAB_CACHE") or DEFAULT_CACHE)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Serialise builds in one cache: engineers and CI may start labs at once."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_kernels(cache: Path | None = None) -> list[LabKernel]:
    """Complete kernels in the cache, newest first."""
    cache = cache or cache_dir()
    found = []
    kdir = cache / "kernels"
    if kdir.is_dir():
        for entry in kdir.iterdir():
            if (entry / _STAMP).exists() and (entry / "vmlinuz").exists():
                found.append(LabKernel(entry.name, entry / "vmlinuz", entry / "root"))
    found.sort(key=lambda k: _version_key(k.version), reverse=True)
    return found


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def ensure_kernel(cache: Path | None = None, *, log=None) -> LabKernel:
    """Return a cached lab kernel, fetching the newest one apt knows on first use."""
    cache = cache or cache_dir()
    have = cached_kernels(cache)
    if have:
        if not have[0].boot_image.name == "vmlinux":
            with cache_lock(cache), contextlib.suppress(ValueError, lzma.LZMAError):
                extract_vmlinux(have[0].vmlinuz, have[0].vmlinuz.with_name("vmlinux"))
        return have[0]
    with cache_lock(cache):
        have = cached_kernels(cache)  # someone else may have built it while we waited
        if have:
            return have[0]
        return _fetch(cache, log or (lambda msg: None))


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise KernelFetchError(f"{argv[0]} not found: install it (see ./run need_debs)") from exc
    except subprocess.CalledProcessError as exc:
        raise KernelFetchError(
            f"{' '.join(argv)} failed with {exc.returncode}: {exc.stderr.strip()[-2000:]}"
        ) from exc


def candidate_packages() -> list[str]:
    """Installable linux-image-6.1.0-N-amd64 packages, newest first."""
    out = _run(["apt-cache", "pkgnames", "linux-image-6.1.0-"]).stdout.split()
    names = sorted((n for n in out if _PACKAGE_RE.match(n)), key=_version_key, reverse=True)
    # pkgnames also lists names only mentioned by other packages; keep those that have
    # a candidate version, so the download cannot fail on a virtual name.
    usable = []
    for name in names[:8]:
        policy = _run(["apt-cache", "policy", name]).stdout
        m = re.search(r"Candidate:\s*(\S+)", policy)
        if m and m.group(1) != "(none)":
            usable.append(name)
    return usable


def _fetch(cache: Path, log) -> LabKernel:
    names = candidate_packages()
    if not names:
        # A fresh machine has no package lists yet.
        log("kernel-lab: apt-get update (no linux-image-6.1.0-*-amd64 known yet)")
        _run(["apt-get", "update", "-qq"])
        names = candidate_packages()
    if not names:
        raise KernelFetchError("apt knows no linux-image-6.1.0-*-amd64 package")
    package = names[0]
    version = _PACKAGE_RE.match(package).group(1)
    log(f"kernel-lab: fetching {package} into {cache}")
    (cache / "kernels").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=cache / "kernels"))
    try:
        try:
            _run(["apt-get", "download", package], cwd=work)
        except KernelFetchError:
            # Package lists older than the mirror name a file it no longer has.
            log(f"kernel-lab: apt-get download {package} failed; apt-get update and retry")
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", package], cwd=work)
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise KernelFetchError(f"apt-get download {package} left {debs}")
        root = work / "root"
        _run(["dpkg", "-x", str(debs[0]), str(root)])
        debs[0].unlink()
        # Debian ships /lib as a directory inside the package even on merged-/usr hosts.
        if not (root / "lib" / "modules" / version).is_dir():
            usr = root / "usr" / "lib" / "modules" / version
            if usr.is_dir():
                (root / "lib").mkdir(exist_ok=True)
                (root / "lib" / "modules").symlink_to("../usr/lib/modules")
            else:
                raise KernelFetchError(f"{package} has no lib/modules/{version}")
        _run(["depmod", "-b", str(root), version])
        shutil.copy2(root / "boot" / f"vmlinuz-{version}", work / "vmlinuz")
        try:
            extract_vmlinux(work / "vmlinuz", work / "vmlinux")
        except (ValueError, lzma.LZMAError) as exc:
            log(f"kernel-lab: booting the compressed image ({exc})")
        (work / _STAMP).write_text(package + "\n")
        final = cache / "kernels" / version
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"kernel-lab: kernel {version} ready")
    return LabKernel(version, final / "vmlinuz", final / "root")


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Unpack the ELF kernel from a bzImage, for QEMU to boot through its PVH entry.

    Under TCG the bzImage's own xz decompressor takes about five seconds, most of the
    boot. Debian builds with CONFIG_PVH, so QEMU can load the ELF directly. Raises
    ValueError when the image is not what we expect; the caller then boots the bzImage.
    """
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")  # Debian 6.1 uses CONFIG_KERNEL_XZ
    if start < 0:
        raise ValueError("no xz payload in the bzImage")
    elf = lzma.LZMADecompressor().decompress(data[start:])
    if not elf.startswith(b"\x7fELF"):
        raise ValueError("xz payload is not an ELF image")
    # XEN_ELFNOTE_PHYS32_ENTRY (18): the PVH entry point QEMU needs.
    if b"Xen\x00" not in elf or not _has_pvh_note(elf):
        raise ValueError("kernel has no PVH entry note")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)


def _has_pvh_note(elf: bytes) -> bool:
    import struct

    # ELF64 program headers: find PT_NOTE segments and walk their notes.
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz]
            if name.rstrip(b"\0") == b"Xen" and ntype == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False
