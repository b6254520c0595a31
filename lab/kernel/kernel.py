"""Fetch and cache a stock Debian kernel that has IPVS.

This machine's kernel has neither IPVS nor module loading, so the lab boots a Debian
kernel under QEMU. The product supports every IPVS scheduler, and ``ip_vs_twos`` only
arrived in Linux 6.2, so the lab wants bookworm-backports' ``linux-image-6.12.N+deb12-amd64``
(signed, from deb.debian.org). It is looked up through a private apt configuration kept
in the cache directory, so the machine's own apt sources are never touched. If
backports cannot be reached, the lab falls back to bookworm's own
``linux-image-6.1.0-N-amd64`` (system apt), which has every scheduler but twos, and says
so. Never the ``-cloud-amd64`` flavour (IPVS but no 9p, and the lab's root filesystem is
this machine's own over 9p) nor ``-rt``.

The package is fetched once (apt names its URL, size and hash; the download shows bytes
and percent and is checked against them), unpacked with ``dpkg -x`` and indexed with
``depmod -b``; the result lives in the cache directory
(``$HADIRECTOR_LAB_CACHE`` or ``/var/cache/hadirector/kernel-lab``) and is reused by
every later run, CI included. A 6.12 kernel already in the cache is used without asking
apt for a newer one, so a warm machine never touches the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..progress import DownloadError, ProgressLine, download

DEFAULT_CACHE = Path("/var/cache/hadirector/kernel-lab")

_STAMP = ".complete"

# After backports failed to answer, a run falls back to 6.1 without asking again for
# this long: an offline machine should not pay an apt timeout on every boot.
BACKPORTS_RETRY_SECONDS = 3600.0
_UNREACHABLE = ".backports-unreachable"


@dataclass(frozen=True)
class KernelSource:
    """Where a lab kernel comes from: a package name pattern and the apt to ask."""

    suite: str
    package_re: re.Pattern[str]  # group 1 is the kernel version (uname -r)
    pkgnames_prefix: str
    private_apt: bool  # True: our own sources.list under the cache dir

    def version_of(self, package: str) -> str | None:
        m = self.package_re.match(package)
        return m.group(1) if m else None


# linux-image-6.12.73+deb12-amd64 (also +deb12.1), but neither -cloud-amd64 (no 9p),
# -rt-amd64 nor -unsigned: the anchored pattern leaves them out.
BACKPORTS = KernelSource(
    "bookworm-backports",
    re.compile(r"^linux-image-(6\.12\.\d+\+deb12(?:\.\d+)?-amd64)$"),
    "linux-image-6.12.",
    private_apt=True,
)
# The fallback: bookworm's own kernel, from the machine's apt sources. No ip_vs_twos.
STABLE = KernelSource(
    "bookworm",
    re.compile(r"^linux-image-(6\.1\.0-\d+-amd64)$"),
    "linux-image-6.1.0-",
    private_apt=False,
)
BACKPORTS_SOURCES_LIST = "deb http://deb.debian.org/debian bookworm-backports main\n"


class KernelFetchError(RuntimeError):
    """The lab kernel could not be found, downloaded or unpacked."""


class SourceUnreachable(KernelFetchError):
    """apt could not list or download from a kernel source (network, mirror)."""


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

    def module_bytes(self, name: str) -> bytes:
        """The module's ELF image, decompressed: Debian's 6.12 ships ``.ko.xz``."""
        path = self.module_path(name)
        if path is None:
            raise KernelFetchError(f"module {name} not in {self.version}")
        return decompress_module(path.name, path.read_bytes())

    def has_module(self, name: str) -> bool:
        name = name.replace("-", "_")
        return name in self.module_index() or name in self.builtin_modules()

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


def decompress_module(filename: str, data: bytes) -> bytes:
    """A module file's contents as the kernel's init_module wants them (uncompressed)."""
    if filename.endswith(".ko.xz"):
        return lzma.decompress(data)
    if filename.endswith(".ko.gz"):
        return gzip.decompress(data)
    if filename.endswith(".ko.zst"):
        return _zstd_decompress(data)
    return data


def _zstd_decompress(data: bytes) -> bytes:
    # Python 3.11 has no zstd in its standard library; Debian's zstd tool does it.
    try:
        out = subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True, check=True)
    except FileNotFoundError as exc:
        raise ValueError("zstd not found: install it (see ./run need_debs)") from exc
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"zstd -d failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    return out.stdout


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
    # "6.12.90+deb12.1-amd64" -> (6, 12, 90, 12, 1): the flavour's digits must not count,
    # or 6.12.90+deb12 (…, 12, 64) would sort above 6.12.90+deb12.1 (…, 12, 1, 64).
    version = re.sub(r"-amd64$", "", version).removeprefix("linux-image-")
    return tuple(int(p) for p in re.findall(r"\d+", version))


def ensure_kernel(cache: Path | None = None, *, log=None) -> LabKernel:
    """Return the lab kernel: a cached 6.12 from bookworm-backports when there is one,
    else fetch the newest from backports; only if backports cannot be reached, a
    (cached or fetched) bookworm 6.1, which lacks ip_vs_twos. ``log`` hears which
    kernel is used and why whenever it is not a cached 6.12."""
    cache = cache or cache_dir()
    log = log or (lambda msg: None)
    preferred = _cached_from(cache, BACKPORTS)
    if preferred:
        return _with_vmlinux(cache, preferred[0])
    with cache_lock(cache):
        preferred = _cached_from(cache, BACKPORTS)  # someone else may have built it
        if preferred:
            return _with_vmlinux(cache, preferred[0], locked=True)
        why = _recently_unreachable(cache)
        if why is None:
            try:
                kernel = _fetch(cache, log, BACKPORTS)
            except SourceUnreachable as exc:
                why = str(exc)
                (cache / _UNREACHABLE).write_text(why + "\n")
            else:
                (cache / _UNREACHABLE).unlink(missing_ok=True)
                log(f"kernel-lab: using {kernel.version} from {BACKPORTS.suite} (has ip_vs_twos)")
                return kernel
        fallback = _cached_from(cache, STABLE)
        kernel = fallback[0] if fallback else _fetch(cache, log, STABLE)
    log(
        f"kernel-lab: WARNING using {kernel.version} from {STABLE.suite}, which has no ip_vs_twos: "
        f"{BACKPORTS.suite} could not be reached ({_first_line(why)}); retried after "
        f"{BACKPORTS_RETRY_SECONDS / 3600:g} h or when {cache / _UNREACHABLE} is deleted"
    )
    return _with_vmlinux(cache, kernel)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else text


def _cached_from(cache: Path, source: KernelSource) -> list[LabKernel]:
    return [k for k in cached_kernels(cache) if source.version_of(f"linux-image-{k.version}")]


def _recently_unreachable(cache: Path) -> str | None:
    """Why backports failed, if it failed less than BACKPORTS_RETRY_SECONDS ago."""
    marker = cache / _UNREACHABLE
    try:
        if time.time() - marker.stat().st_mtime < BACKPORTS_RETRY_SECONDS:
            return marker.read_text().strip() or "unreachable"
    except OSError:
        pass
    return None


def _with_vmlinux(cache: Path, kernel: LabKernel, locked: bool = False) -> LabKernel:
    """Extract the ELF image of a cached kernel that has none yet (older caches)."""
    if kernel.boot_image.name != "vmlinux":
        with contextlib.ExitStack() as stack:
            if not locked:
                stack.enter_context(cache_lock(cache))
            with contextlib.suppress(ValueError, lzma.LZMAError):
                extract_vmlinux(kernel.vmlinuz, kernel.vmlinuz.with_name("vmlinux"))
    return kernel


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise KernelFetchError(f"{argv[0]} not found: install it (see ./run need_debs)") from exc
    except subprocess.CalledProcessError as exc:
        raise KernelFetchError(
            f"{' '.join(argv)} failed with {exc.returncode}: {exc.stderr.strip()[-2000:]}"
        ) from exc


def newest_packages(names: list[str], source: KernelSource) -> list[str]:
    """The names that are ``source``'s kernel packages, newest first."""
    return sorted((n for n in names if source.version_of(n)), key=_version_key, reverse=True)


def apt_options(cache: Path, source: KernelSource) -> list[str]:
    """apt-get/apt-cache options for ``source``: for backports, a private configuration
    under the cache dir (its own sources.list, package lists and archive cache) so the
    machine's apt sources stay as they are; apt's signing keyring is still the system's,
    which verifies deb.debian.org's Release files."""
    if not source.private_apt:
        return []
    base = cache / "apt" / source.suite
    (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = base / "sources.list"
    if not sources.exists() or sources.read_text() != BACKPORTS_SOURCES_LIST:
        sources.write_text(BACKPORTS_SOURCES_LIST)
    return [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={base / 'lists'}",
        "-o", f"Dir::Cache={base / 'cache'}",
        # Fail fast when offline: the caller falls back to 6.1.
        "-o", "Acquire::http::Timeout=20",
        "-o", "Acquire::Retries=1",
        # The download lands in a root-only work dir; apt's _apt user cannot write there.
        "-o", "APT::Sandbox::User=root",
    ]


def candidate_packages(source: KernelSource = STABLE, options: list[str] | None = None) -> list[str]:
    """Installable kernel packages of ``source``, newest first."""
    options = options or []
    out = _run(["apt-cache", *options, "pkgnames", source.pkgnames_prefix]).stdout.split()
    names = newest_packages(out, source)
    # pkgnames also lists names only mentioned by other packages; keep those that have
    # a candidate version, so the download cannot fail on a virtual name.
    usable = []
    for name in names[:8]:
        policy = _run(["apt-cache", *options, "policy", name]).stdout
        m = re.search(r"Candidate:\s*(\S+)", policy)
        if m and m.group(1) != "(none)":
            usable.append(name)
    return usable


def _update(options: list[str], source: KernelSource) -> None:
    try:
        _run(["apt-get", *options, "update", "-qq"])
    except KernelFetchError as exc:
        raise SourceUnreachable(f"apt-get update for {source.suite}: {exc}") from exc
    # apt-get update exits 0 when a source failed to download (it warns only); with a
    # private list of one source, no Packages file means it was not reached.


def _fetch(cache: Path, log, source: KernelSource = STABLE) -> LabKernel:
    options = apt_options(cache, source)
    if source.private_apt:
        # Our own lists: refresh them (360 kB) before choosing; this runs only when no
        # kernel of this source is cached.
        log(f"kernel-lab: apt-get update for {source.suite} (private lists in {cache / 'apt'})")
        _update(options, source)
    names = candidate_packages(source, options)
    if not names and not source.private_apt:
        # A fresh machine has no package lists yet.
        log(f"kernel-lab: apt-get update (no {source.pkgnames_prefix}* package known yet)")
        _update(options, source)
        names = candidate_packages(source, options)
    if not names:
        raise SourceUnreachable(f"apt knows no {source.pkgnames_prefix}*-amd64 package in {source.suite}")
    package = names[0]
    version = source.version_of(package)
    log(f"kernel-lab: fetching {package} ({source.suite}) into {cache}")
    (cache / "kernels").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=cache / "kernels"))
    try:
        try:
            _download(options, package, work, log)
        except KernelFetchError:
            # Package lists older than the mirror name a file it no longer has.
            log(f"kernel-lab: downloading {package} failed; apt-get update and retry")
            _update(options, source)
            try:
                _download(options, package, work, log)
            except KernelFetchError as exc:
                raise SourceUnreachable(f"apt-get download {package}: {exc}") from exc
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
        (work / _STAMP).write_text(f"{package} {source.suite}\n")
        final = cache / "kernels" / version
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"kernel-lab: kernel {version} ready")
    return LabKernel(version, final / "vmlinuz", final / "root")


_PRINT_URIS = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+) (?P<size>\d+) (?P<digest>\S+:\S+)$", re.M)


def _download(options: list[str], package: str, work: Path, log) -> None:
    """Fetch ``package``'s .deb into ``work``, showing bytes and percent (the kernel is
    some 100 MB). apt names the URL, size and hash from its signed package lists; the
    file is checked against them. If the direct fetch fails (a proxy only apt's own
    configuration knows, say) apt-get downloads it, without progress."""
    uris = _run(["apt-get", *options, "--print-uris", "download", package], cwd=work).stdout
    m = _PRINT_URIS.search(uris)
    if m is not None:
        try:
            download(m["url"], work / m["file"], size=int(m["size"]), digest=m["digest"],
                     out=ProgressLine(prefix="kernel-lab: "))
            return
        except DownloadError as exc:
            log(f"kernel-lab: {exc}; apt-get download instead")
    _run(["apt-get", *options, "download", package], cwd=work)


def bzimage_payload(data: bytes) -> bytes:
    """The compressed kernel inside a bzImage, located through the setup header
    (Documentation/arch/x86/boot.rst: setup_sects at 0x1f1, payload_offset and
    payload_length at 0x248, relative to the protected-mode code after the setup)."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage (no HdrS setup header)")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(data):
        raise ValueError("bzImage payload outside the file")
    return data[start : start + length]


def decompress_payload(payload: bytes) -> bytes:
    """Debian 6.1 uses CONFIG_KERNEL_XZ, 6.12 CONFIG_KERNEL_ZSTD. Both payloads end in
    the 4-byte uncompressed size the kernel's own decompressor wants."""
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor().decompress(payload)  # stops at the stream's end
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        return _zstd_decompress(payload[:-4])  # the zstd tool rejects trailing bytes
    raise ValueError(f"unknown bzImage payload compression (magic {payload[:4].hex()})")


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Unpack the ELF kernel from a bzImage, for QEMU to boot through its PVH entry.

    Under TCG the bzImage's own decompressor takes seconds (about five for 6.1's xz),
    much of the boot. Debian builds with CONFIG_PVH, so QEMU can load the ELF directly.
    Raises ValueError when the image is not what we expect; the caller then boots the
    bzImage.
    """
    elf = decompress_payload(bzimage_payload(vmlinuz.read_bytes()))
    if not elf.startswith(b"\x7fELF"):
        raise ValueError("xz payload is not an ELF image")
    # XEN_ELFNOTE_PHYS32_ENTRY (18): the PVH entry point QEMU needs.
    if b"Xen\x00" not in elf or not _has_pvh_note(elf):
        raise ValueError("kernel has no PVH entry note")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)


def _has_pvh_note(elf: bytes) -> bool:
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
