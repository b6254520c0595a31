"""`python -m lab.kernel [options] -- CMD ARGS...`: run one command in the kernel lab.

The command runs in the current directory with the current environment, on this
machine's root filesystem (read-only; /tmp, /run and /dev/shm are the guest's own),
inside a kernel that has IPVS. Its output streams live; the exit status is the
command's, 124 on timeout, 125 when the lab itself failed.
"""

from __future__ import annotations

import argparse
import os
import sys

LAB_FAILED_RC = 125


def add_arguments_kernel_lab(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.epilog = (f"exit status: the command's own; 124 when it timed out; {LAB_FAILED_RC} when the lab "
                     "itself failed;\n2 for a bad command line")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="kill the lab after S seconds (default 600)")
    parser.add_argument("--mem", type=int, default=1024, metavar="MB", help="guest memory (default 1024)")
    parser.add_argument("--smp", type=int, default=2, metavar="N", help="guest CPUs (default 2)")
    parser.add_argument("--rw", action="append", default=[], metavar="DIR",
                        help="export DIR read-write at the same path (repeatable)")
    parser.add_argument("--shell", action="store_true",
                        help="interactive shell on the console (no timeout); CMD defaults to bash")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the lab's own console lines and timings")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def cmd_kernel_lab(args: argparse.Namespace) -> int:
    from . import LabBootError, LabError, run_in_lab

    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        if not args.shell:
            print("kernel-lab: no command (use: python -m lab.kernel -- CMD ARGS...)", file=sys.stderr)
            return 2
        argv = ["/bin/bash", "-i"]
    out = _ConsoleFilter(sys.stdout, verbose=args.verbose)
    try:
        result = run_in_lab(
            argv,
            cwd=os.getcwd(),
            timeout=None if args.shell else args.timeout,
            rw_dir=args.rw or None,
            memory_mb=args.mem,
            smp=args.smp,
            stream=None if args.shell else out,
            interactive=args.shell,
        )
    except LabBootError as exc:
        out.flush()
        print(f"kernel-lab: {exc}\n--- console (last lines) ---\n{exc.tail()}", file=sys.stderr)
        return LAB_FAILED_RC
    except LabError as exc:
        print(f"kernel-lab: {exc}", file=sys.stderr)
        return LAB_FAILED_RC
    out.flush()
    if result.timed_out:
        print(f"kernel-lab: timed out after {args.timeout:g} s; qemu killed", file=sys.stderr)
    if args.verbose:
        print(
            f"kernel-lab: exit {result.returncode}, kernel {result.kernel_version}, "
            f"boot {result.boot_seconds:.1f} s, total {result.elapsed_seconds:.1f} s",
            file=sys.stderr,
        )
    return result.returncode


class _ConsoleFilter:
    """Passes the command's output through and hides the lab's own console lines
    (markers, the power-down message) unless verbose."""

    _LAB_LINES = ("KLAB:READY", "KLAB:DONE", "KLAB:PHASE")

    def __init__(self, stream, *, verbose: bool) -> None:
        self._stream = stream
        self._verbose = verbose
        self._partial = ""

    def __call__(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if self._verbose or not self._is_lab_line(line):
                self._stream.write(line + "\n")
        self._stream.flush()

    def _is_lab_line(self, line: str) -> bool:
        return line.startswith(self._LAB_LINES) or line.endswith("reboot: Power down")

    def flush(self) -> None:
        if self._partial:
            self._stream.write(self._partial)
            self._partial = ""
        self._stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.kernel", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments_kernel_lab(parser)
    return cmd_kernel_lab(parser.parse_args(argv))
