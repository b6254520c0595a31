"""The kernel lab's pure parts: module load order, which host paths stay visible under
the guest's tmpfs, the command script, and the initramfs archive format."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from hadirector.kernellab.initramfs import _NewcWriter, init_script
from hadirector.kernellab.kernel import LabKernel
from hadirector.kernellab.runner import _hidden_paths, _write_exchange, load_order


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
