"""pytest integration: tests marked ``@pytest.mark.kernel`` run where IPVS is.

Theory of operation.

* On a host whose kernel has IPVS (``/proc/net/ip_vs`` exists), or inside the lab
  (``HADIRECTOR_IN_KERNEL_LAB=1``), kernel tests run directly like any other test.
* Otherwise the plugin takes over the run protocol of every selected kernel item. Once
  collection is done it boots the lab in background threads -- ``--kernel-lab-boots``
  guests at once, each given whole test modules (a module's fixtures stay in one guest),
  the heaviest modules first onto the least loaded guest -- with a pytest inside each
  guest given its node ids, and moves the kernel items after the host's own, so the
  host's tests run while the guests do. The guest pytest (this same plugin, in guest
  mode) appends each phase report as a JSON line to a file in a read-write export.
  Each host item waits for its own lines and reports them as its outcome, so progress
  shows while the guests are still running.
* A skip in the guest becomes a failure on the host: in CI a skipped kernel test is a
  test that did not run. xfail/xpass keep their meaning.
* If the lab fails to boot, times out or dies, every kernel item without a result fails
  with the reason and the tail of the guest console.

Nothing boots when no kernel item is selected; a run that stops early (``-x``, Ctrl-C)
kills the guests. Options: ``--kernel-lab=auto|always|never``, ``--kernel-lab-boots``,
``--kernel-lab-timeout``, ``--kernel-lab-mem``.

Why several boots, and why early: a guest under TCG keeps 1.1-1.5 host CPUs busy, so
on a two-CPU machine the host's own tests (11 minutes of the suite's 37 there) fit
beside one guest, and a machine with more CPUs runs a guest per two of them
(``default_boots``; ``lab_seconds(N)`` marks say how long a test keeps a guest busy,
for sharing them out).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..progress import Pace, Pacer, wait_line
from .runner import IN_LAB_ENV, LabBootError, LabResult, host_has_ipvs, in_lab, run_in_lab

REPORT_ENV = "HADIRECTOR_LAB_REPORT"
# While the host waits for the guest's results: a line every 10 s, then every fifth of
# the time so far (a 10-minute lab prints some twenty lines).
WAIT_PACE = Pace(quiet=10.0, period=10.0, backoff=0.2)
MARK = "kernel"
_PHASES = ("setup", "call", "teardown")


# ---------------------------------------------------------------------------------
# The mapping from guest reports to host reports (pure; unit-tested on the host).


@dataclass(frozen=True)
class GuestPhase:
    """One phase report as the guest wrote it (one JSON line)."""

    nodeid: str
    when: str
    outcome: str  # passed | failed | skipped
    longrepr: str = ""  # the guest's failure text, or the skip reason
    message: str = ""  # the one-line crash message, for the short summary
    location: tuple[str, int] | None = None  # (path, lineno) of a skip or crash
    sections: tuple[tuple[str, str], ...] = ()
    duration: float = 0.0
    wasxfail: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> GuestPhase:
        loc = data.get("location")
        return cls(
            nodeid=data["nodeid"],
            when=data["when"],
            outcome=data["outcome"],
            longrepr=data.get("longrepr", ""),
            message=data.get("message", ""),
            location=(loc[0], int(loc[1])) if loc else None,
            sections=tuple(tuple(s) for s in data.get("sections", ())),
            duration=float(data.get("duration", 0.0)),
            wasxfail=data.get("wasxfail"),
        )

    def to_json(self) -> dict:
        return {
            "nodeid": self.nodeid,
            "when": self.when,
            "outcome": self.outcome,
            "longrepr": self.longrepr,
            "message": self.message,
            "location": list(self.location) if self.location else None,
            "sections": [list(s) for s in self.sections],
            "duration": self.duration,
            "wasxfail": self.wasxfail,
        }


@dataclass(frozen=True)
class HostPhase:
    """What the host reports for one phase of a kernel item."""

    when: str
    outcome: str
    longrepr: str = ""
    message: str = ""
    sections: tuple[tuple[str, str], ...] = ()
    duration: float = 0.0
    wasxfail: str | None = None
    skip_location: tuple[str, int] | None = None


def host_phases(phases: Sequence[GuestPhase], *, missing_reason: str = "") -> list[HostPhase]:
    """Map the guest's reports of one test to the host's.

    ``phases`` are the guest's reports for the item, in order; ``missing_reason`` says
    why they may be incomplete (the lab failed, timed out, never ran the item). The
    result always has a setup phase, a call phase unless setup failed, and a teardown.
    """
    by_when = {p.when: p for p in phases}
    out: list[HostPhase] = []
    setup = by_when.get("setup")
    if setup is None:
        reason = missing_reason or "the kernel lab reported no result for this test"
        return [
            HostPhase("setup", "passed"),
            HostPhase("call", "failed", longrepr=reason, message=_first_line(reason)),
            HostPhase("teardown", "passed"),
        ]
    for when in _PHASES:
        p = by_when.get(when)
        if p is None:
            if when == "call" and (setup.outcome != "passed"):
                continue  # setup failed or skipped: pytest runs no call phase
            if when == "teardown" or when == "call":
                reason = missing_reason or f"the kernel lab stopped during the {when} phase"
                out.append(HostPhase(when, "failed", longrepr=reason, message=_first_line(reason)))
                if when == "call":
                    out.append(HostPhase("teardown", "passed"))
                return out
            continue
        if p.outcome == "skipped" and p.wasxfail is None:
            reason = (
                f"skipped inside the kernel lab, and a kernel test that does not run is a failure "
                f"(fix the lab or the test): {p.longrepr}"
            )
            if when == "setup":
                # Report it where a reader looks for a test's failure: the call phase.
                out.append(HostPhase("setup", "passed", sections=p.sections, duration=p.duration))
                out.append(HostPhase("call", "failed", longrepr=reason, message=_first_line(reason)))
                continue
            out.append(HostPhase(when, "failed", longrepr=reason, message=_first_line(reason),
                                 sections=p.sections, duration=p.duration))
            continue
        out.append(
            HostPhase(
                when,
                p.outcome,
                longrepr=p.longrepr,
                message=p.message,
                sections=p.sections,
                duration=p.duration,
                wasxfail=p.wasxfail,
                skip_location=p.location if p.outcome == "skipped" else None,
            )
        )
    return out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def read_guest_reports(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete JSON lines appended to ``path`` since ``offset``; the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    lines = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return lines, offset + end


def share_out(modules: Sequence[tuple[str, Sequence[str], float]], boots: int) -> list[list[str]]:
    """The node ids of each guest: ``modules`` is ``(name, node ids, weight)`` in
    collection order; each module goes whole to one guest (its module fixtures set up
    once), the heaviest first onto the guest with the least weight so far (ties: the
    first), and each guest runs its modules in collection order. No empty guest."""
    boots = max(1, min(boots, len(modules)))
    load = [0.0] * boots
    given: list[list[int]] = [[] for _ in range(boots)]
    for i in sorted(range(len(modules)), key=lambda i: (-modules[i][2], i)):
        b = min(range(boots), key=lambda b: (load[b], b))
        load[b] += modules[i][2]
        given[b].append(i)
    return [[n for i in sorted(g) for n in modules[i][1]] for g in given if g]


def default_boots() -> int:
    """One guest per two CPUs: a guest under TCG keeps 1.1-1.5 of them busy (session 11,
    2 CPUs). Two guests on two CPUs, beside other work, took 1,760 s against one's 1,600 s
    and missed the scale-out lab's real-time bounds (BFD detection within 1.5 s)."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


# Seconds a kernel test keeps a guest busy when it says nothing (``lab_seconds``): the
# mean of the unmarked slow tests (11 s) and of the others (4.7 s) in session 11's lab.
SLOW_SECONDS, OTHER_SECONDS = 11.0, 5.0


def item_weight(item: pytest.Item) -> float:
    """How long an item keeps a guest busy: its ``lab_seconds(N)`` mark (the closest:
    a test's own before its module's), else a guess from its ``slow`` mark."""
    mark = item.get_closest_marker("lab_seconds")
    if mark is not None and mark.args:
        return float(mark.args[0])
    return SLOW_SECONDS if item.get_closest_marker("slow") is not None else OTHER_SECONDS


# ---------------------------------------------------------------------------------
# pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernel-lab", "hadirector kernel lab (tests marked kernel)")
    group.addoption(
        "--kernel-lab",
        choices=("auto", "always", "never"),
        default=os.environ.get("HADIRECTOR_KERNEL_LAB", "auto"),
        help="run kernel tests in the QEMU lab: auto (when this kernel lacks IPVS), "
        "always, never (run them directly)",
    )
    group.addoption("--kernel-lab-timeout", type=float, default=3000.0, metavar="S",
                    help="seconds for the one lab boot that runs all kernel tests (default 3000)")
    group.addoption("--kernel-lab-mem", type=int, default=1024, metavar="MB", help="guest memory (default 1024)")
    group.addoption("--kernel-lab-boots", type=int, default=int(os.environ.get("HADIRECTOR_KERNEL_LAB_BOOTS", "0")),
                    metavar="N", help="guests booted at once to share the kernel tests, whole modules each"
                    " (default: one per two CPUs, or $HADIRECTOR_KERNEL_LAB_BOOTS)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_seconds(n): about how long this kernel test keeps a lab guest"
                            " busy, to share tests out between guests (lab/kernel/README.md)")
    if in_lab():
        report = os.environ.get(REPORT_ENV)
        if report:
            config.pluginmanager.register(GuestReporter(Path(report)), "kernellab-guest-reporter")
        return
    mode = config.getoption("--kernel-lab")
    if mode == "always" or (mode == "auto" and not host_has_ipvs()):
        config.pluginmanager.register(LabDispatcher(config), "kernellab-dispatcher")


class GuestReporter:
    """Inside the lab: append every phase report to the exchange file, as it happens."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, data: dict) -> None:
        line = (json.dumps(data) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        longrepr, message, location = "", "", None
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            path, lineno, reason = report.longrepr
            longrepr, message, location = reason, reason, (str(path), int(lineno or 0))
        elif report.longrepr is not None:
            longrepr = report.longreprtext
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else _first_line(longrepr)
        self._write(
            GuestPhase(
                nodeid=report.nodeid,
                when=report.when,
                outcome=report.outcome,
                longrepr=longrepr,
                message=message,
                location=location,
                sections=tuple(report.sections),
                duration=report.duration,
                wasxfail=getattr(report, "wasxfail", None),
            ).to_json()
        )

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        # The host's progress line names the test running now (setup included: a
        # module fixture may take minutes before the first report).
        self._write({"event": "started", "nodeid": nodeid})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write({"event": "collect_error", "nodeid": report.nodeid, "longrepr": report.longreprtext})

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._write({"event": "finished", "exitstatus": int(exitstatus)})


class GuestRepr:
    """A guest's failure text, shaped like pytest's own longrepr where the terminal and
    junitxml look (``toterminal``, ``reprcrash.message``, ``str``)."""

    @dataclass
    class _Crash:
        message: str
        path: str = ""
        lineno: int = 0

    def __init__(self, text: str, message: str) -> None:
        self.text = text
        self.reprcrash = self._Crash(message or _first_line(text))

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


@dataclass
class _LabRun:
    """One background lab boot of this session, and the node ids it runs."""

    nodeids: list[str]
    results_dir: Path
    name: str = "lab"
    thread: threading.Thread | None = None
    result: LabResult | None = None
    error: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    reports: dict[str, list[GuestPhase]] = field(default_factory=dict)
    collect_errors: list[str] = field(default_factory=list)
    finished: bool = False  # the guest pytest wrote its last line
    offset: int = 0
    started: float = 0.0
    running: str | None = None  # the node id the guest started last

    @property
    def report_path(self) -> Path:
        return self.results_dir / "reports.jsonl"

    def poll(self) -> None:
        lines, self.offset = read_guest_reports(self.report_path, self.offset)
        for data in lines:
            event = data.get("event")
            if event == "finished":
                self.finished = True
            elif event == "started":
                self.running = data["nodeid"]
            elif event == "collect_error":
                self.collect_errors.append(f"{data['nodeid']}:\n{data['longrepr']}")
            else:
                phase = GuestPhase.from_json(data)
                self.reports.setdefault(phase.nodeid, []).append(phase)

    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def item_complete(self, nodeid: str) -> bool:
        phases = self.reports.get(nodeid, [])
        return any(p.when == "teardown" for p in phases)

    def status(self) -> str:
        """What the guest is doing, for the progress line."""
        if self.running is None:
            return "the guest boots and collects"
        done = sum(1 for n in self.nodeids if self.item_complete(n))
        running = "" if self.item_complete(self.running) else f", running {self.running.rsplit('::', 1)[-1]}"
        return f"{done} of {len(self.nodeids)} done{running}"


class LabDispatcher:
    """On a host without IPVS: run the selected kernel items in lab boots of their own."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.kernel_items: list[pytest.Item] = []
        self.labs: list[_LabRun] = []
        self.lab_of: dict[str, _LabRun] = {}
        self.pacer: Pacer | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        # The host's own tests first: they run while the guests boot and run theirs.
        host = [i for i in items if i.get_closest_marker(MARK) is None]
        if len(host) != len(items):
            items[:] = host + [i for i in items if i.get_closest_marker(MARK) is not None]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.kernel_items = [i for i in session.items if i.get_closest_marker(MARK) is not None]
        if self.kernel_items and not session.config.option.collectonly:
            self._start()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if item.get_closest_marker(MARK) is None:
            return None
        if not self.labs:
            self._start()
        phases = self._wait_for(item.nodeid)
        # The host set up nothing for this item, but host items before it may have left
        # module or session fixtures for pytest to finalize when the chain changes; do
        # what pytest's own protocol does after a test, or the next item fails setup.
        try:
            item.session._setupstate.teardown_exact(nextitem)
        except (KeyboardInterrupt, pytest.exit.Exception):
            raise
        except BaseException as exc:
            phases = _with_host_teardown_error(phases, exc)
        _report(item, phases)
        return True

    # -- the lab runs

    def _start(self) -> None:
        ids: dict[str, list[str]] = {}
        weight: dict[str, float] = {}
        for item in self.kernel_items:
            module = item.nodeid.split("::", 1)[0]
            ids.setdefault(module, []).append(item.nodeid)
            weight[module] = weight.get(module, 0.0) + item_weight(item)
        shares = share_out([(m, ids[m], weight[m]) for m in ids],
                           self.config.getoption("--kernel-lab-boots") or default_boots())
        self._say(f"kernel-lab: booting {len(shares)} QEMU lab(s) for {len(self.kernel_items)} kernel test(s)"
                  f" ({', '.join(str(len(s)) for s in shares)}; this kernel has no IPVS)")
        for n, nodeids in enumerate(shares, 1):
            lab = self._boot(nodeids, f"lab {n}" if len(shares) > 1 else "lab")
            self.labs.append(lab)
            self.lab_of.update((i, lab) for i in nodeids)

    def _boot(self, nodeids: list[str], name: str) -> _LabRun:
        lab = _LabRun(nodeids, Path(tempfile.mkdtemp(prefix="hadirector-kl-")), name=name)
        argv = self._guest_argv(nodeids)
        env = dict(os.environ)
        # Options for the host run must not deselect the node ids we pass.
        env.pop("PYTEST_ADDOPTS", None)
        env[REPORT_ENV] = str(lab.report_path)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the root is read-only in the guest
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("CI", os.environ.get("CI", ""))
        lab.started = time.monotonic()

        def run() -> None:
            try:
                lab.result = run_in_lab(
                    argv,
                    cwd=str(self.config.rootpath),
                    env=env,
                    timeout=self.config.getoption("--kernel-lab-timeout"),
                    rw_dir=lab.results_dir,
                    memory_mb=self.config.getoption("--kernel-lab-mem"),
                    cancel=lab.cancel,
                )
            except BaseException as exc:  # reported per item
                lab.error = exc

        lab.thread = threading.Thread(target=run, name=f"kernel-{name.replace(' ', '')}", daemon=True)
        lab.thread.start()
        return lab

    def _guest_argv(self, nodeids: list[str]) -> list[str]:
        opt = self.config.option
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(self.config.rootpath)]
        if self.config.inipath is not None:
            argv += ["-c", str(self.config.inipath)]
        # The host already selected; an addopts -k/-m must not deselect in the guest.
        argv += ["-k", "", "-m", "", "-q", "-rfE", "--color=no"]
        if getattr(opt, "maxfail", 0):
            argv += [f"--maxfail={opt.maxfail}"]
        if getattr(opt, "tbstyle", "auto") not in (None, "auto"):
            argv += [f"--tb={opt.tbstyle}"]
        if getattr(opt, "showlocals", False):
            argv += ["-l"]
        if getattr(opt, "capture", "fd") == "no":
            argv += ["-s"]
        if getattr(opt, "log_level", None):
            argv += [f"--log-level={opt.log_level}"]
        return argv + nodeids

    def _wait_for(self, nodeid: str) -> list[HostPhase]:
        lab = self.lab_of[nodeid]
        while True:
            lab.poll()
            if lab.item_complete(nodeid):
                return host_phases(lab.reports[nodeid])
            if lab.done():
                lab.poll()  # lines written just before the guest stopped
                if lab.item_complete(nodeid):
                    return host_phases(lab.reports[nodeid])
                return host_phases(lab.reports.get(nodeid, []), missing_reason=self._why_missing(lab, nodeid))
            now = time.monotonic()
            self.pacer = self.pacer or Pacer(WAIT_PACE, tty=False, start=lab.started)
            if self.pacer.due(now):
                for other in self.labs:
                    other.poll()
                status = "; ".join(f"{other.name}: {other.status()}" for other in self.labs)
                self._progress("kernel-lab: " + wait_line(
                    f"{nodeid.rsplit('::', 1)[-1]} ({status})", now - lab.started,
                    self.config.getoption("--kernel-lab-timeout")))
            lab.thread.join(timeout=0.2)

    def _why_missing(self, lab: _LabRun, nodeid: str) -> str:
        err, res = lab.error, lab.result
        if isinstance(err, LabBootError):
            return f"the kernel lab failed to boot: {err}\n--- guest console (last lines) ---\n{err.tail(60)}"
        if err is not None:
            return f"the kernel lab could not run: {type(err).__name__}: {err}"
        assert res is not None
        tail = "\n".join(res.output.splitlines()[-60:])
        if res.timed_out:
            why = f"the kernel lab timed out after {self.config.getoption('--kernel-lab-timeout'):g} s"
        elif lab.collect_errors:
            why = "the guest pytest could not collect:\n" + "\n".join(lab.collect_errors)
        elif not lab.finished:
            why = f"the guest stopped before finishing (exit {res.returncode})"
        else:
            why = f"the guest pytest did not run this test (exit {res.returncode})"
        return f"{why} [{nodeid}]\n--- guest output (last lines) ---\n{tail}"

    # -- reporting

    def _say(self, line: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and self.config.option.verbose >= 0:
            tr.ensure_newline()
            tr.write_line(line)

    def _progress(self, line: str) -> None:
        # Also under -q: a quiet run still shows that the lab is alive (not under -qq).
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and self.config.option.verbose >= -1:
            tr.ensure_newline()
            tr.write_line(line)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session, exitstatus):
        stopped = session.shouldstop or session.shouldfail
        for lab in self.labs:
            if lab.thread is None:
                continue
            # All results in: let the guest pytest finish and power off by itself.
            # Otherwise (-x, Ctrl-C on the host) nobody waits for the rest: kill qemu.
            lab.poll()
            all_in = lab.finished or all(lab.item_complete(n) for n in lab.nodeids)
            if all_in and not stopped:
                lab.thread.join(timeout=120)
            lab.cancel.set()
        for lab in self.labs:
            if lab.thread is not None:
                lab.thread.join(timeout=30)
        yield
        for lab in self.labs:
            shutil.rmtree(lab.results_dir, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for lab in self.labs:
            res = lab.result
            if res is not None:
                terminalreporter.write_line(
                    f"kernel-{lab.name}: {len(lab.reports)}/{len(lab.nodeids)} kernel tests ran in kernel "
                    f"{res.kernel_version}; boot {res.boot_seconds:.1f} s, lab total {res.elapsed_seconds:.1f} s"
                    + (" (cancelled)" if res.cancelled else " (timed out)" if res.timed_out else "")
                )
            elif lab.error is not None:
                terminalreporter.write_line(f"kernel-{lab.name}: failed: {lab.error}")


def _with_host_teardown_error(phases: list[HostPhase], exc: BaseException) -> list[HostPhase]:
    import traceback

    text = "a host fixture failed to finalize after this kernel test:\n" + "".join(
        traceback.format_exception(exc)
    )
    kept = [p for p in phases if p.when != "teardown"]
    return kept + [HostPhase("teardown", "failed", longrepr=text, message=f"{type(exc).__name__}: {exc}")]


def _report(item: pytest.Item, phases: Iterable[HostPhase]) -> None:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    keywords = {k: 1 for k in item.keywords}
    for p in phases:
        longrepr: object = None
        if p.outcome == "failed":
            longrepr = GuestRepr(p.longrepr, p.message)
        elif p.outcome == "skipped":
            path, lineno = p.skip_location or (item.location[0], item.location[1] or 0)
            longrepr = (path, lineno, p.longrepr)
        extra = {"wasxfail": p.wasxfail} if p.wasxfail is not None else {}
        rep = pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords=keywords,
            outcome=p.outcome,
            longrepr=longrepr,
            when=p.when,
            sections=p.sections,
            duration=p.duration,
            user_properties=item.user_properties,
            **extra,
        )
        ihook.pytest_runtest_logreport(report=rep)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


__all__ = [
    "IN_LAB_ENV",
    "GuestPhase",
    "HostPhase",
    "LabDispatcher",
    "host_phases",
    "read_guest_reports",
]
