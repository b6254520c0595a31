"""`./run package` builds a .deb that installs, works and purges cleanly on Debian 12.

The package is installed the way an operator would (`apt-get install ./hadirector_*.deb`)
into a clean Debian 12 root made by `debootstrap --variant=minbase bookworm`, entered
with chroot in a private mount namespace (its /proc, /sys and /dev mounts vanish with
the namespace, even when a test fails half-way).

The root is cached as a tarball under /var/cache/hadirector/debroot, one per set of
packages it holds: the package's Depends and Recommends (read from the built .deb)
plus man-db and systemd, which a real director has. Making it needs the Debian mirror once
(about two minutes); later runs unpack it in seconds and install without network,
since every dependency is already there.

`systemd-analyze verify` runs on this host against the installed unit with
`--root=<the root>`: the unit's paths (ExecStart=, ExecReload=) and the units it
depends on are then looked up in the installed root, not on this machine (a missing
/usr/bin/hadirector or /bin/kill there fails it), and no systemd has to run in the
chroot. Without systemd in the root it fails on "Unit sysinit.target not found".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/hadirector/debroot")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a director has beside the package's own dependencies: man, and systemd (whose
# units `systemd-analyze verify --root` resolves the unit's dependencies against).
OPERATOR_PACKAGES = ("man-db", "systemd")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
       "HOME": "/root"}
# Paths that change by themselves when any package is installed and removed (dpkg's
# and apt's own state and logs, man-db's index): not the package's files.
STATE = ("var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/log/", "tmp/", "run/", "proc/", "sys/",
         "dev/", "var/lib/systemd/deb-systemd")


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def in_root(root: Path, *argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run argv chrooted into root, with /proc, /sys and /dev, in a mount namespace of its own."""
    script = ('mount -t proc proc "$R/proc" && mount --rbind /sys "$R/sys" && mount --rbind /dev "$R/dev" '
              '&& exec chroot "$R" "$@"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                       env={**ENV, "R": str(root)}, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def package_names(field: str) -> list[str]:
    """'python3 (>= 3.11), libc6 (>= 2.17), a | b' -> ['python3', 'libc6', 'a']"""
    return [alt.split("|")[0].split("(")[0].strip() for alt in field.split(",") if alt.strip()]


def base_root(packages: list[str]) -> Path:
    """The cached tarball of a minbase bookworm root with ``packages`` installed."""
    key = hashlib.sha256(" ".join(sorted(packages)).encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-minbase-{key}.tar.zst"
    with contextlib.closing(_lock(CACHE / ".lock")):
        if tarball.exists():
            return tarball
        for stale in CACHE.glob("build-*"):       # a run killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        build = CACHE / f"build-{os.getpid()}"
        try:
            # In a mount namespace: debootstrap's own /proc and /sys mounts go with it.
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "debootstrap",
                                "--variant=minbase", "--include=" + ",".join(sorted(packages)),
                                SUITE, str(build), MIRROR],
                               env=ENV, capture_output=True, text=True, timeout=1800)
            assert r.returncode == 0, f"debootstrap failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            for deb in (build / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            part = tarball.with_suffix(".part")
            subprocess.run(["tar", "--zstd", "--numeric-owner", "-C", str(build), "-cpf", str(part), "."],
                           env=ENV, check=True)
            for old in CACHE.glob(f"{SUITE}-minbase-*.tar.zst"):
                old.unlink()          # made for another set of packages
            part.rename(tarball)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return tarball


def files_of(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel + "/"
        if rel.startswith(STATE):
            dirnames[:] = []
            continue
        out.add(rel)
        out.update(rel + name for name in filenames)
        out.update(rel + name for name in dirnames if os.path.islink(os.path.join(dirpath, name)))
    return out


def enablement_links(root: Path) -> list[Path]:
    """The unit's `systemctl enable` links (absolute symlinks: dangling seen from here,
    so not Path.glob, which skips them)."""
    return [link for wants in (root / "etc/systemd/system").glob("*.wants")
            if os.path.lexists(link := wants / "hadirector.service")]


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([str(ROOT / "run"), "package", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.name == f"hadirector_{field(path, 'Version')}_{field(path, 'Architecture')}.deb"
    return path


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory):
    """(root, files before the install): the package installed with apt in a fresh root."""
    packages = package_names(field(deb, "Depends")) + package_names(field(deb, "Recommends"))
    tarball = base_root(sorted(set(packages) | set(OPERATOR_PACKAGES)))
    root = tmp_path_factory.mktemp("debroot")
    subprocess.run(["tar", "--zstd", "--numeric-owner", "-C", str(root), "-xpf", str(tarball)], env=ENV,
                   check=True)
    before = files_of(root)
    shutil.copy(deb, root / "tmp" / deb.name)
    r = in_root(root, "apt-get", "install", "-y", "-q", f"/tmp/{deb.name}")
    assert "Setting up hadirector" in r.stdout
    (root / "tmp" / deb.name).unlink()
    yield root, before
    shutil.rmtree(root, ignore_errors=True)


def test_the_package_depends_only_on_debian_packages(deb):
    depends = field(deb, "Depends")
    assert re.search(r"python3 \(>= 3\.11\)", depends)
    assert set(package_names(depends)) <= {"python3", "libc6", "procps"}
    contents = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    # Runtime only: no test tools, no installer, nothing the agent never imports.
    # The lab (QEMU kernel lab, namespace builders, IPVS scenarios) is not the product.
    for absent in ("site-packages/pytest", "site-packages/scapy", "site-packages/pip/",
                   "site-packages/setuptools/", "/bin/pip", "site-packages/lab/",
                   "site-packages/hadirector/kernellab/", "site-packages/hadirector/ipvs/scenarios.py"):
        assert absent not in contents, absent
    assert "./usr/share/doc/hadirector/copyright" in contents
    assert "./usr/share/doc/hadirector/changelog.gz" in contents


def test_lintian_finds_nothing(deb):
    # Debian's own checker, on its defaults; the few tags a private virtualenv must
    # raise are overridden, each with its reason, in packaging/deb/lintian-overrides.
    r = subprocess.run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb)],
                       env=ENV, capture_output=True, text=True, timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWI]: ", line)]
    assert r.returncode == 0 and not tags, "\n".join(tags) or r.stderr


def test_hadirector_version_names_the_package_version(installed, deb):
    root, _ = installed
    r = in_root(root, "hadirector", "--version")
    assert field(deb, "Version") in r.stdout + r.stderr


def test_the_shipped_config_passes_check(installed):
    root, _ = installed
    r = in_root(root, "hadirector", "check", "-c", "/etc/hadirector/hadirector.yaml")
    assert "OK" in r.stdout


def test_the_config_is_a_conffile(installed):
    root, _ = installed
    r = in_root(root, "dpkg-query", "-W", "-f", "${Conffiles}", "hadirector")
    assert "/etc/hadirector/hadirector.yaml" in r.stdout


def test_man_finds_and_renders_both_pages(installed):
    root, _ = installed
    assert in_root(root, "man", "-w", "hadirector").stdout.strip() == "/usr/share/man/man8/hadirector.8.gz"
    assert in_root(root, "man", "-w", "hadirector.yaml").stdout.strip() == \
        "/usr/share/man/man5/hadirector.yaml.5.gz"
    for page, word in (("hadirector", "import-keepalived"), ("hadirector.yaml", "virtual_router_id")):
        r = in_root(root, "env", "MANWIDTH=80", "man", "-P", "cat", page)
        assert word in r.stdout and r.stderr == "", r.stderr


def test_the_unit_is_installed_valid_and_not_enabled(installed):
    root, _ = installed
    unit = root / "lib/systemd/system/hadirector.service"
    text = unit.read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    assert exec_start == "/usr/bin/hadirector"
    # The binary resolves inside the root (a relative symlink into the virtualenv).
    target = (root / exec_start.lstrip("/")).resolve()
    assert str(target).startswith(str(root)) and os.access(target, os.X_OK), target
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "/lib/systemd/system/hadirector.service"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Neither enabled nor started: no [Install] links anywhere under /etc.
    assert not enablement_links(root)
    r = subprocess.run(["systemctl", f"--root={root}", "is-enabled", "hadirector.service"], env=ENV,
                       capture_output=True, text=True)
    assert r.stdout.strip() == "disabled"


def test_purge_leaves_nothing_behind(installed):
    root, before = installed
    # As an operator would leave it: enabled, and run once.
    subprocess.run(["systemctl", f"--root={root}", "enable", "hadirector.service"], env=ENV,
                   capture_output=True, check=True)
    assert enablement_links(root)
    in_root(root, "hadirector", "check", "-c", "/etc/hadirector/hadirector.yaml")
    in_root(root, "apt-get", "purge", "-y", "-q", "hadirector")
    assert in_root(root, "dpkg-query", "-W", "hadirector", check=False).returncode != 0 or \
        "ii" not in in_root(root, "dpkg", "-l", "hadirector", check=False).stdout
    for path in ("etc/hadirector", "usr/lib/hadirector", "usr/bin/hadirector",
                 "lib/systemd/system/hadirector.service", "usr/share/doc/hadirector"):
        assert not os.path.lexists(root / path), path
    left = files_of(root) - before
    assert not left, f"left behind: {sorted(left)}"
