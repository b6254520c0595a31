"""Run one command inside the kernel lab: a Debian kernel with IPVS under QEMU (TCG),
whose root filesystem is this machine's own, read-only over 9p.

Theory of operation. The runner makes an exchange directory on the host and exports it
read-write as a second 9p share. It writes ``params`` (what /init must mount and load)
and ``run.sh`` (cd, environment, the command) there, boots QEMU, and streams the serial
console while the guest runs. Inside, /init tees the command's output into
``output`` and writes its exit status to ``rc``, then powers off; the runner reads both
back. The guest sees the exchange directory (and any ``rw_dir``) at the same path as the
host, so a command can leave result files for its caller.

Nested KVM does not work on these machines, so QEMU runs with ``-accel tcg``: boot takes
a few seconds, and CPU-bound work is 10-20x slower than on the host while timers keep
real time.
"""

from __future__ import annotations

import codecs
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .initramfs import TAG_ROOT, TAG_XCHG, ensure_initramfs
from .kernel import LabKernel, cache_dir, ensure_kernel
from ..progress import Pacer, ProgressLine, wait_line

# Set in the guest's environment; the pytest plugin and tests read it.
IN_LAB_ENV = "HADIRECTOR_IN_KERNEL_LAB"

IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos")

# Loaded before the command so tests find them without relying on auto-loading (which
# works too: /init registers busybox modprobe with the kernel). A scheduler module that
# is missing when a service is added gives EINVAL, hence all of them.
DEFAULT_MODULES = (
    "ip_vs",
    *(f"ip_vs_{s}" for s in IPVS_SCHEDULERS),
    "nf_conntrack",
    "veth",
    "bridge",
    "ipip",
    "dummy",
)

# The guest mounts tmpfs here; host paths below them are hidden unless kept.
_GUEST_TMPFS = ("/tmp", "/run", "/dev/shm")

# Exit status when the lab timed out, as timeout(1) reports it.
TIMEOUT_RC = 124
# The guest's niceness on the host. Its tests measure failovers in real time on
# emulated CPUs 10-20x slower than the host's, and the suite runs the host's own tests
# beside it: at an equal share, a host test that took the CPU for a second froze every
# process of the guest at once (most likely what a CI run's pair lab met: a takeback
# 91 s after the restart, where whole cycles take 35-61 s here, and a client's first
# requests timed out before the stop). The host's tests
# take the rest and still end well before the guest (they were robust beside two CPU
# hogs). Needs CAP_SYS_NICE; without it the guest runs at an equal share.
GUEST_NICE = -5


class LabError(RuntimeError):
    """The lab could not be prepared (kernel, initramfs, qemu missing)."""


class LabBootError(LabError):
    """The guest never reached the command. ``console`` holds what it printed."""

    def __init__(self, message: str, console: str) -> None:
        super().__init__(message)
        self.console = console

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


@dataclass(frozen=True)
class LabResult:
    returncode: int
    output: str  # the command's stdout and stderr, interleaved
    console: str = ""  # the whole serial console, boot messages included
    boot_seconds: float = 0.0  # host wall time until the command started
    elapsed_seconds: float = 0.0  # host wall time for the whole run
    timed_out: bool = False  # killed: the timeout ran out or the caller cancelled
    kernel_version: str = ""
    cancelled: bool = False


def host_has_ipvs() -> bool:
    """True when this machine's own kernel has IPVS (no lab needed)."""
    return os.path.exists("/proc/net/ip_vs")


def in_lab() -> bool:
    return os.environ.get(IN_LAB_ENV) == "1"


def run_in_lab(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 600.0,
    rw_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    memory_mb: int = 1024,
    smp: int = 2,
    stream: TextIO | Callable[[str], object] | None = None,
    keep_paths: Sequence[str | os.PathLike[str]] = (),
    modules: Sequence[str] = DEFAULT_MODULES,
    interactive: bool = False,
    kernel: LabKernel | None = None,
    cancel: threading.Event | None = None,
) -> LabResult:
    """Boot the lab, run ``argv`` in ``cwd`` with ``env``, return its status and output.

    ``env`` defaults to this process's environment; ``HADIRECTOR_IN_KERNEL_LAB=1`` is
    always added. ``rw_dir`` (one path or several) is exported read-write and appears at
    the same path in the guest; everything else is read-only, except the guest's own
    tmpfs on /tmp, /run and /dev/shm. Paths under those that the command needs from the
    host (cwd, the Python prefix, ``keep_paths``) are re-exposed read-only.

    ``stream`` receives the console live (a text file or a callable). On timeout QEMU is
    killed and the result has ``timed_out`` set and returncode 124; setting ``cancel``
    (from another thread) kills it the same way. Raises LabBootError if the guest never
    started the command, LabError if the lab cannot be prepared.
    """
    if not argv:
        raise ValueError("run_in_lab needs a command")
    started = time.monotonic()
    cwd = os.path.realpath(cwd or os.getcwd())
    rw_dirs = _as_paths(rw_dir)
    for d in rw_dirs:
        if not os.path.isdir(d):
            raise LabError(f"rw_dir {d} is not a directory")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise LabError("qemu-system-x86_64 not found: install qemu-system-x86 (see ./run)")

    cache = cache_dir()
    try:
        kernel = kernel or ensure_kernel(cache, log=_log_to(stream))
        initrd = ensure_initramfs(kernel, cache, preload=load_order(kernel, DEFAULT_MODULES))
    except (OSError, RuntimeError) as exc:
        raise LabError(f"kernel lab not available: {exc}") from exc

    guest_env = dict(os.environ if env is None else env)
    guest_env[IN_LAB_ENV] = "1"
    # The guest's /lib/modules is not the host's (which has none): kmod's modprobe, run
    # by a command, reads its root from here. The kernel's own auto-loading does not
    # need it.
    guest_env.setdefault("MODPROBE_OPTIONS", f"-d {kernel.root}")

    keep = [cwd, sys.prefix, sys.base_prefix, *map(str, keep_paths)]
    exe = shutil.which(argv[0], path=guest_env.get("PATH")) if "/" not in argv[0] else argv[0]
    if exe:
        keep.append(os.path.dirname(os.path.realpath(exe)))

    xchg = tempfile.mkdtemp(prefix="hadirector-lab-")
    try:
        xchg = os.path.realpath(xchg)
        _write_exchange(
            Path(xchg),
            kernel=kernel,
            argv=list(argv),
            cwd=cwd,
            env=guest_env,
            keep=_hidden_paths(keep, exclude=[xchg, *rw_dirs]),
            rw_dirs=rw_dirs,
            modules=load_order(kernel, modules),
            interactive=interactive,
        )
        cmd = _qemu_command(qemu, kernel, initrd, xchg, rw_dirs, memory_mb, smp, interactive)
        return _boot(cmd, Path(xchg), kernel, started, timeout, stream, interactive, cancel)
    finally:
        shutil.rmtree(xchg, ignore_errors=True)


def load_order(kernel: LabKernel, modules: Sequence[str]) -> list[str]:
    """The modules to insmod so that ``modules`` are loaded: dependencies first,
    modules this kernel does not have left out (ip_vs_twos arrived in Linux 6.2: the
    6.1 fallback kernel lacks it)."""
    index = kernel.module_index()
    builtin = kernel.builtin_modules()
    present = [m for m in modules if m.replace("-", "_") in index or m.replace("-", "_") in builtin]
    return kernel.dependencies(present)


def _as_paths(rw_dir) -> list[str]:
    if rw_dir is None:
        return []
    if isinstance(rw_dir, (str, os.PathLike)):
        rw_dir = [rw_dir]
    return [os.path.realpath(p) for p in rw_dir]


def _hidden_paths(paths: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The paths a guest tmpfs would hide, outermost only, minus those mounted anyway."""
    hidden = []
    for p in sorted({os.path.realpath(p) for p in paths if p}):
        if not any(_under(p, t) and p != t for t in _GUEST_TMPFS):
            continue
        if any(_under(p, e) for e in exclude) or any(_under(p, h) for h in hidden):
            continue
        if os.path.exists(p):
            hidden.append(p)
    return hidden


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _write_exchange(xchg: Path, *, kernel, argv, cwd, env, keep, rw_dirs, modules, interactive) -> None:
    for p in [*keep, *rw_dirs, str(xchg), cwd]:
        if any(c.isspace() for c in p):
            raise LabError(f"kernel lab cannot mount paths with spaces: {p!r}")
    params = {
        "KVER": kernel.version,
        "MODTREE": str(kernel.root / "lib" / "modules"),
        "LOAD_KO": " ".join(f"{m}:{kernel.module_path(m).relative_to(kernel.modules_dir)}" for m in modules),
        "XCHG_PATH": str(xchg),
        "KEEP_PATHS": " ".join(keep),
        "RW_MOUNTS": " ".join(f"rw{i}={p}" for i, p in enumerate(rw_dirs)),
        # The root is read-only and nobody changes it under a test: caching lookups
        # and pages in the guest makes Python start-up several times faster.
        "NINEP_OPTS": ",cache=loose",
        "SHELL_MODE": "1" if interactive else "0",
    }
    (xchg / "params").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in params.items()))
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()) if "=" not in k)
    (xchg / "run.sh").write_text(
        f"cd {shlex.quote(cwd)} || {{ echo 'kernel-lab: cannot cd to {cwd}' >&2; exit 125; }}\n"
        f"exec env -i {assignments} {shlex.join(argv)}\n"
    )


def _qemu_command(qemu, kernel, initrd, xchg, rw_dirs, memory_mb, smp, interactive) -> list[str]:
    debug = bool(os.environ.get("HADIRECTOR_LAB_DEBUG"))
    append = " ".join(
        [
            "console=ttyS0",
            *(["loglevel=7", "KLAB_DEBUG=1"] if debug else ["quiet", "loglevel=1"]),
            "panic=-1",  # a dying /init reboots, which -no-reboot turns into exit
            # Each of these skips work that takes a noticeable share of a TCG boot and
            # that a throwaway guest does not need (about 0.7 s together).
            "mitigations=off",
            "cryptomgr.notests",
            "apparmor=0",
            "audit=0",
            "ima_appraise=off",
            "nowatchdog",
            "i8042.noaux",
            "i8042.nokbd",
            "i8042.nopnp",
            "tsc=reliable",
            "no_timer_check",
            "8250.nr_uarts=1",
            "random.trust_cpu=on",
        ]
    )
    cmd = [
        qemu,
        "-accel", "tcg,thread=multi",
        "-M", "pc",
        "-cpu", "max",
        "-smp", str(smp),
        "-m", str(memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(kernel.boot_image),
        "-initrd", str(initrd),
        "-append", append,
        "-virtfs", f"local,path=/,mount_tag={TAG_ROOT},security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={xchg},mount_tag={TAG_XCHG},security_model=none,multidevs=remap",
    ]
    for i, d in enumerate(rw_dirs):
        cmd += ["-virtfs", f"local,path={d},mount_tag=rw{i},security_model=none,multidevs=remap"]
    if interactive:
        cmd += ["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]
    else:
        cmd += ["-serial", "stdio"]
    return cmd


def _boot(cmd, xchg: Path, kernel: LabKernel, started: float, timeout, stream, interactive, cancel) -> LabResult:
    console: list[str] = []
    ready_at: list[float] = []
    write = _writer(stream)

    if interactive:
        proc = subprocess.Popen(cmd)
        proc.wait()
        rc = _read_rc(xchg)
        return LabResult(rc if rc is not None else 1, "", elapsed_seconds=time.monotonic() - started,
                         kernel_version=kernel.version)

    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    favour(proc.pid)

    def pump() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        tail = ""  # the marker may arrive split over several reads
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = (pending + decoder.decode(chunk)).replace("\r\n", "\n")
            # Hold back a lone trailing \r: its \n may be in the next chunk.
            pending = text[-1] if text.endswith("\r") else ""
            text = text[:-1] if pending else text
            console.append(text)
            if not ready_at:
                tail = (tail + text)[-64:]
                if "KLAB:READY" in tail:
                    ready_at.append(time.monotonic())
            if write:
                write(text)

    reader = threading.Thread(target=pump, name="kernel-lab-console", daemon=True)
    reader.start()
    timed_out = cancelled = False
    deadline = None if timeout is None else started + timeout
    # With a live console (the CLI, the demo) the boot, silent under "quiet", says that
    # it is under way; the pytest plugin reports its own progress.
    booting = ProgressLine(prefix="kernel-lab: ") if write else None
    pacer = Pacer(tty=booting.tty, start=started) if booting else None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            cancelled = cancel is not None and cancel.is_set()
            if cancelled or (deadline is not None and now >= deadline):
                timed_out = True
                _kill(proc)
                break
            if booting is not None:
                if ready_at:
                    booting.end()
                    booting = None
                elif pacer.due(now):
                    booting.show(wait_line(f"the guest to boot (kernel {kernel.version})", now - started, timeout))
            try:
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        _kill(proc)  # KeyboardInterrupt: never leave a qemu behind
        raise
    finally:
        if booting is not None:
            booting.end()
        reader.join(timeout=5)
        proc.stdout.close()
    elapsed = time.monotonic() - started
    text = "".join(console)

    if not ready_at and "KLAB:READY" not in text:
        why = "timed out" if timed_out else f"qemu exited with {proc.returncode}"
        fail = [line for line in text.splitlines() if line.startswith("KLAB:FAIL")]
        raise LabBootError(f"kernel lab did not start the command ({why}){': ' + fail[-1] if fail else ''}", text)

    output = _read_text(xchg / "output")
    rc = _read_rc(xchg)
    if timed_out:
        rc = TIMEOUT_RC
    elif rc is None:
        # The guest died mid-command (oops, out of memory): that is the command's failure.
        rc = 255
        output += "\nkernel-lab: the guest stopped before the command finished\n"
    boot = (ready_at[0] if ready_at else started) - started
    return LabResult(rc, output, text, boot, elapsed, timed_out, kernel.version, cancelled)


def favour(leader: int, nice: int = GUEST_NICE) -> bool:
    """Give the process group ``leader`` leads (qemu, in a session of its own) the
    niceness ``nice``: every thread it has now (Linux sets it per thread; a group's
    setpriority reaches them all) and, inherited, every thread it starts later.
    False where the host refuses (no CAP_SYS_NICE)."""
    try:
        os.setpriority(os.PRIO_PGRP, leader, nice)
    except (PermissionError, ProcessLookupError):
        return False
    return True


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: qemu and nothing else
        except ProcessLookupError:
            pass
        proc.wait()


def _read_rc(xchg: Path) -> int | None:
    try:
        return int((xchg / "rc").read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _writer(stream) -> Callable[[str], object] | None:
    if stream is None:
        return None
    if callable(stream) and not hasattr(stream, "write"):
        return stream

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def _log_to(stream) -> Callable[[str], None]:
    write = _writer(stream)
    return (lambda msg: write(msg + "\n")) if write else (lambda msg: print(msg, file=sys.stderr))
