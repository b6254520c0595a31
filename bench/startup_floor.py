#!/usr/bin/env python3
"""Where hadirector's exec -> BACKUP goes: the CPython floor under it, a step at a time.

A ladder of ``python -c`` programs, each importing more of what ``hadirector run``
imports before its INIT -> BACKUP line, each ending with one line on stdout; the time is
exec -> that line, stamped when read from the pipe, as bench/startup.py stamps the agent's
BACKUP line (median and min of ``--runs``, rows interleaved run by run). Imports only: no
namespace, no config, no socket, so it needs neither root nor a quiet LAN. Compare the
rows with keepalived's exec -> BACKUP (bench/startup.py, same host): the goal of issue 11
is 1.5 x that.

Rows (cumulative from "+ asyncio" on, all in the installed layout):
    bare interpreter        python -S: no site module, no venv
    installed layout        python in a virtualenv whose site-packages holds the
                            dependencies and no .pth file, as the Debian package's
                            /usr/lib/hadirector (a temporary venv; its one .pth names the
                            dev venv's site-packages and this tree as plain paths)
    dev venv (editable)     .venv's python: its site-packages runs the editable install's
                            finder (pathlib, urllib.parse ...) and setuptools' distutils
                            hack at every start; bench/startup.py runs this one
    + asyncio ... + the run path   what the agent needs before BACKUP, in the order its
                            start-up imports it; the last row is every module ``hadirector
                            run`` imports before INIT -> BACKUP (VRRP only), without
                            running any of it

Usage:
    .venv/bin/python -m bench.startup_floor [--runs 20]
    .venv/bin/python -m bench.startup_floor --python /usr/bin/python3   # as the Debian package
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, imports), cumulative: each row imports its own and every row's above.
LADDER: tuple[tuple[str, str], ...] = (
    ("+ asyncio", "import asyncio"),
    ("+ logging json argparse socket", "import logging, json, argparse, socket"),
    ("+ structlog", "import structlog"),
    ("+ yaml (PyYAML, C loader)", "import yaml"),
    ("+ hadirector.model (26 dataclasses)", "import hadirector.model"),
    ("+ the run path before BACKUP", "import hadirector.cli, hadirector.agent.cli, hadirector.agent.lock, "
     "hadirector.agent.preflight, hadirector.agent.vip_record, hadirector.config.loader, "
     "hadirector.logging, hadirector.agent.agent, hadirector.kernel.addresses, "
     "hadirector.kernel.vrrp_socket"),
)


def installed_layout(work: Path, base: str) -> Path:
    """A virtualenv (no pip) of ``base`` whose site-packages holds one .pth naming the
    dev venv's site-packages and this tree: the package's layout, without the editable
    finder."""
    venv = work / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dev-tree.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{ROOT}\n")
    return venv / "bin" / "python"


def rows(py_installed: str) -> list[tuple[str, list[str]]]:
    out = [
        ("bare interpreter (python -S)", [py_installed, "-S", "-c", "print('ready')"]),
        ("installed layout (python -c pass)", [py_installed, "-c", "print('ready')"]),
        ("dev venv, editable install", [sys.executable, "-c", "print('ready')"]),
    ]
    code = []
    for label, imports in LADDER:
        code.append(imports)
        out.append((label, [py_installed, "-c", "; ".join(code) + "; print('ready')"]))
    return out


def once(argv: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(cwd), env=env)
    line = p.stdout.readline()
    t = time.monotonic() - t0
    _, err = p.communicate(timeout=30)
    if line.strip() != b"ready":
        raise RuntimeError(f"{argv}: {err.decode(errors='replace')}")
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                   help="the interpreter of the installed layout, e.g. /usr/bin/python3 as the Debian "
                        "package uses (same minor version as .venv's; default: .venv's own base)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="startup-floor-"))
    try:
        # Byte-compiled, as installed (bench/startup.py does the same).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "hadirector")], check=True)
        installed = installed_layout(work, a.python)
        version = subprocess.run([str(installed), "-c", "import sys; print(sys.version.split()[0])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        ladder = rows(str(installed))
        empty = work / "cwd"
        empty.mkdir()
        times: dict[str, list[float]] = {label: [] for label, _ in ladder}
        for _ in range(a.runs):            # interleaved: a load change hits every row
            for label, cmd in ladder:
                times[label].append(once(cmd, empty))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"exec -> line read, ms; {a.runs} runs; installed layout: {a.python} (Python {version}); "
          f"dev venv: Python {sys.version.split()[0]}")
    print(f"{'row':<40} | {'median':>7} {'min':>7} | {'step':>7}")
    print("-" * 68)
    prev = None
    for label, _ in ladder:
        med = statistics.median(times[label]) * 1000
        step = "" if prev is None or label.startswith("dev venv") else f"{med - prev:+7.1f}"
        print(f"{label:<40} | {med:7.1f} {min(times[label]) * 1000:7.1f} | {step:>7}")
        if not label.startswith("dev venv"):
            prev = med
    return 0


if __name__ == "__main__":
    sys.exit(main())
