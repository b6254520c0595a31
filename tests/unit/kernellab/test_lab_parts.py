"""The kernel lab's pure parts: module load order, which host paths stay visible under
the guest's tmpfs, the command script, and the initramfs archive format."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from lab.kernel.initramfs import _NewcWriter, init_script
from lab.kernel.kernel import LabKernel
from lab.kernel import runner
from lab.kernel.runner import _hidden_paths, _write_exchange, load_order


def fake_kernel(tmp_path: Path) -> LabKernel:
    version = "6.1.0-99-amd64"
    mods = tmp_path / "root" / "lib" / "modules" / version
    mods.mkdir(parents=True)
    k = "kernel/net/netfilter"
    (mods / "modules.dep").write_text(
        f"{k}/ipvs/ip_vs_rr.ko: {k}/ipvs/ip_vs.ko {k}/nf_conntrack.ko kernel/lib/libcrc32c.ko\n"
        f"{k}/ipvs/ip_vs.ko: {k}/nf_conntrack.ko kernel/lib/libcrc32c.ko\n"
        f"{k}/nf_conntrack.ko: kernel/lib/libcrc32c.ko\n"
        "kernel/lib/libcrc32c.ko:\n"
        "kernel/drivers/net/veth.ko:\n"
    )
    (mods / "modules.builtin").write_text("kernel/net/bridge/bridge.ko\n")
    return LabKernel(version, tmp_path / "vmlinuz", tmp_path / "root")


def test_modules_load_after_their_dependencies_and_each_only_once(tmp_path):
    order = load_order(fake_kernel(tmp_path), ["ip_vs_rr", "ip_vs", "veth"])
    assert order == ["libcrc32c", "nf_conntrack", "ip_vs", "ip_vs_rr", "veth"]


def test_modules_the_kernel_lacks_or_builds_in_are_left_out(tmp_path):
    # ip_vs_twos arrived in Linux 6.2; bridge is built in here.
    assert load_order(fake_kernel(tmp_path), ["ip_vs_twos", "bridge", "veth"]) == ["veth"]


def test_host_paths_under_the_guests_tmp_are_kept_visible_outermost_only(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    xchg = tmp_path / "xchg"
    xchg.mkdir()
    kept = _hidden_paths([str(venv / "bin"), str(venv), "/usr", str(xchg / "sub"), "/tmp/does-not-exist"],
                         exclude=[str(xchg)])
    # pytest's tmp_path is under /tmp unless TMPDIR says otherwise
    assert kept == ([str(venv)] if str(tmp_path).startswith("/tmp/") else [])


def test_the_command_script_quotes_arguments_and_environment(tmp_path):
    kernel = fake_kernel(tmp_path)
    xchg = tmp_path / "x"
    xchg.mkdir()
    _write_exchange(xchg, kernel=kernel, argv=["sh", "-c", "echo \"$A\" 'b c'"], cwd="/work/main",
                    env={"A": "it's $HOME", "PATH": "/usr/bin:/bin"}, keep=[], rw_dirs=[], modules=[],
                    interactive=False)
    script = (xchg / "run.sh").read_text()
    out = subprocess.run(["sh", "-c", script.replace("cd /work/main", "cd /")], capture_output=True, text=True)
    assert out.stdout == "it's $HOME b c\n"
    params = dict(line.split("=", 1) for line in (xchg / "params").read_text().splitlines())
    assert shlex.split(params["KVER"]) == [kernel.version]
    assert shlex.split(params["XCHG_PATH"]) == [str(xchg)]


def test_the_initramfs_is_a_newc_archive_that_cpio_reads(tmp_path):
    w = _NewcWriter()
    w.directory("bin")
    w.chardev("dev/console", 5, 1)
    w.file("init", init_script().encode(), 0o755)
    w.file("bin/odd", b"x" * 5, 0o644)  # a size that needs padding
    archive = tmp_path / "a.cpio"
    archive.write_bytes(w.finish())
    listing = subprocess.run(["cpio", "-itv", "-F", str(archive)], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in listing.stdout.splitlines()]
    assert names == ["bin", "dev/console", "init", "bin/odd"]
    assert listing.stdout.splitlines()[1].startswith("crw")
    subprocess.run(["cpio", "-id", "-F", str(archive), "init", "bin/odd"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "init").read_text() == init_script() and (tmp_path / "bin/odd").read_bytes() == b"xxxxx"


def test_the_lab_prefers_backports_612_generic_kernels_newest_first():
    from lab.kernel.kernel import BACKPORTS, STABLE, newest_packages

    names = [
        "linux-image-6.12.43+deb12-amd64",
        "linux-image-6.12.95+deb12-cloud-amd64",  # IPVS but no 9p
        "linux-image-6.12.95+deb12-rt-amd64",
        "linux-image-6.12.95+deb12-amd64-unsigned",
        "linux-image-6.12.90+deb12-amd64",
        "linux-image-6.12.90+deb12.1-amd64",  # a rebuild of the same ABI sorts above it
        "linux-image-6.1.0-56-amd64",
        "linux-image-amd64",
    ]
    assert newest_packages(names, BACKPORTS) == [
        "linux-image-6.12.90+deb12.1-amd64",
        "linux-image-6.12.90+deb12-amd64",
        "linux-image-6.12.43+deb12-amd64",
    ]
    assert newest_packages(names, STABLE) == ["linux-image-6.1.0-56-amd64"]


def test_backports_is_asked_through_a_private_apt_configuration(tmp_path):
    from lab.kernel.kernel import BACKPORTS, STABLE, apt_options

    opts = apt_options(tmp_path, BACKPORTS)
    settings = dict(o.split("=", 1) for o in opts if o != "-o")
    sources = Path(settings["Dir::Etc::SourceList"])
    assert sources.read_text() == "deb http://deb.debian.org/debian bookworm-backports main\n"
    assert sources.is_relative_to(tmp_path) and settings["Dir::Etc::SourceParts"] == "/dev/null"
    assert (Path(settings["Dir::State::Lists"]) / "partial").is_dir()
    assert Path(settings["Dir::Cache"]).is_relative_to(tmp_path)
    assert apt_options(tmp_path, STABLE) == []  # the fallback uses the machine's apt


def test_compressed_modules_are_decompressed_before_their_signature_is_stripped(tmp_path):
    import lzma

    from lab.kernel.initramfs import strip_signature
    from lab.kernel.kernel import decompress_module

    elf = b"\x7fELF" + b"\0" * 60
    sig = b"S" * 256
    info = bytes(8) + len(sig).to_bytes(4, "big")
    signed = elf + sig + info + b"~Module signature appended~\n"
    raw = decompress_module("ip_vs_twos.ko.xz", lzma.compress(signed, format=lzma.FORMAT_XZ))
    assert raw == signed and strip_signature(raw) == elf
    assert decompress_module("veth.ko", signed) == signed


def test_a_scheduler_module_named_ko_xz_keeps_its_module_name(tmp_path):
    kernel = fake_kernel(tmp_path)
    dep = kernel.modules_dir / "modules.dep"
    dep.write_text(dep.read_text() + "kernel/net/netfilter/ipvs/ip_vs_twos.ko.xz: kernel/lib/libcrc32c.ko\n")
    assert kernel.has_module("ip_vs_twos")
    assert load_order(kernel, ["ip_vs_twos"]) == ["libcrc32c", "ip_vs_twos"]


def test_the_bzimage_payload_is_found_through_the_setup_header():
    import lzma
    import struct

    from lab.kernel.kernel import bzimage_payload, decompress_payload

    elf = b"\x7fELF" + b"k" * 1000
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + len(elf).to_bytes(4, "little")
    image = bytearray(2 * 512 + 100)  # setup_sects=1: protected-mode code at 1024
    image[0x1F1] = 1
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", image, 0x248, 100, len(payload))
    image += payload + b"trailing"
    assert bzimage_payload(bytes(image)) == payload
    assert decompress_payload(payload) == elf


def test_a_zstd_bzimage_payload_is_unpacked_without_its_size_trailer():
    from lab.kernel.kernel import decompress_payload

    elf = b"\x7fELF" + b"z" * 1000
    packed = subprocess.run(["zstd", "-q", "-c"], input=elf, capture_output=True, check=True).stdout
    assert decompress_payload(packed + len(elf).to_bytes(4, "little")) == elf


def _cached(cache: Path, version: str) -> None:
    d = cache / "kernels" / version
    (d / "root").mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"not a bzImage")
    (d / ".complete").write_text(f"linux-image-{version}\n")


def test_a_cached_612_kernel_is_used_without_asking_apt(tmp_path, monkeypatch):
    import lab.kernel.kernel as kk

    _cached(tmp_path, "6.1.0-56-amd64")
    _cached(tmp_path, "6.12.95+deb12-amd64")
    monkeypatch.setattr(kk, "_fetch", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fetched")))
    assert kk.ensure_kernel(tmp_path).version == "6.12.95+deb12-amd64"


def test_the_lab_falls_back_to_61_only_when_backports_is_unreachable_and_says_so(tmp_path, monkeypatch):
    import lab.kernel.kernel as kk

    _cached(tmp_path, "6.1.0-56-amd64")
    asked = []

    def unreachable(cache, log, source):
        asked.append(source.suite)
        raise kk.SourceUnreachable("apt-get update for bookworm-backports: Temporary failure resolving")

    monkeypatch.setattr(kk, "_fetch", unreachable)
    said: list[str] = []
    assert kk.ensure_kernel(tmp_path, log=said.append).version == "6.1.0-56-amd64"
    assert asked == ["bookworm-backports"]
    assert "6.1.0-56-amd64" in said[-1] and "no ip_vs_twos" in said[-1] and "Temporary failure" in said[-1]
    # An offline machine does not wait for apt again on the next run, but still says why.
    said.clear()
    assert kk.ensure_kernel(tmp_path, log=said.append).version == "6.1.0-56-amd64"
    assert asked == ["bookworm-backports"] and "no ip_vs_twos" in said[-1]


def test_a_broken_backports_kernel_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch):
    import pytest

    import lab.kernel.kernel as kk

    _cached(tmp_path, "6.1.0-56-amd64")

    def broken(cache, log, source):
        raise kk.KernelFetchError("depmod -b ... failed with 1")

    monkeypatch.setattr(kk, "_fetch", broken)
    with pytest.raises(kk.KernelFetchError, match="depmod"):
        kk.ensure_kernel(tmp_path)


def test_the_kernel_lab_command_says_it_passes_its_commands_status_through_and_shows_its_defaults():
    # `python -m lab.kernel` from the repository root: the lab is not part of the product.
    root = Path(__file__).resolve().parents[3]
    res = subprocess.run([sys.executable, "-m", "lab.kernel", "--help"], capture_output=True, text=True,
                         cwd=root, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "exit status: the command's own; 124 when it timed out; 125" in res.stdout
    flat = " ".join(res.stdout.split())
    for shown in ("(default 600)", "(default 1024)", "(default 2)"):
        assert shown in flat, shown


def _nices(pid: int) -> list[int]:
    """The niceness of every thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        out.append(int(stat.rsplit(")", 1)[1].split()[16]))
    return out


def test_the_guest_outranks_the_hosts_tests_in_every_thread_it_has_or_starts(tmp_path):
    # A stand-in for qemu: a process in its own session with a thread already running
    # when it is favoured and one it starts afterwards.
    script = ("import threading, time, sys\n"
              "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
              "print('one', flush=True); sys.stdin.readline()\n"
              "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
              "print('two', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "one\n"
        assert runner.favour(proc.pid)
        assert _nices(proc.pid) == [runner.GUEST_NICE] * 2
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "two\n"
        assert _nices(proc.pid) == [runner.GUEST_NICE] * 3
    finally:
        proc.kill()
        proc.wait()
