"""The kernel-lab pytest plugin, without a VM: how guest reports become host reports,
and the whole dispatch through a fake lab that runs the "guest" pytest locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from lab.kernel.pytest_plugin import GuestPhase, HostPhase, host_phases, read_guest_reports

NODE = "tests/kernel/test_x.py::test_y"


def phase(when: str, outcome: str = "passed", **kw) -> GuestPhase:
    return GuestPhase(nodeid=NODE, when=when, outcome=outcome, **kw)


def outcomes(phases: list[HostPhase]) -> list[tuple[str, str]]:
    return [(p.when, p.outcome) for p in phases]


# -- mapping guest reports to host reports


def test_a_test_that_passed_in_the_guest_passes_on_the_host():
    got = host_phases([phase("setup"), phase("call", duration=1.5), phase("teardown")])
    assert outcomes(got) == [("setup", "passed"), ("call", "passed"), ("teardown", "passed")]
    assert got[1].duration == 1.5


def test_a_guest_failure_keeps_the_guests_text_and_crash_message():
    got = host_phases([
        phase("setup"),
        phase("call", "failed", longrepr="def test_y():\n>   assert 1 == 2\nE   assert 1 == 2", message="assert 1 == 2",
              sections=(("Captured stdout call", "hello\n"),)),
        phase("teardown"),
    ])
    assert outcomes(got) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    assert "assert 1 == 2" in got[1].longrepr and got[1].message == "assert 1 == 2"
    assert got[1].sections == (("Captured stdout call", "hello\n"),)


def test_a_skip_in_the_guest_is_a_failure_on_the_host():
    got = host_phases([phase("setup"), phase("call", "skipped", longrepr="no ipvsadm"), phase("teardown")])
    assert outcomes(got) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    assert "skipped inside the kernel lab" in got[1].longrepr and "no ipvsadm" in got[1].longrepr


def test_a_skip_during_setup_fails_the_call_phase_so_it_reads_as_the_tests_failure():
    got = host_phases([phase("setup", "skipped", longrepr="fixture skipped"), phase("teardown")])
    assert outcomes(got) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    assert "fixture skipped" in got[1].longrepr


def test_an_expected_failure_stays_an_expected_failure():
    got = host_phases([phase("setup"), phase("call", "skipped", longrepr="", wasxfail="kernel bug 123"),
                       phase("teardown")])
    assert outcomes(got) == [("setup", "passed"), ("call", "skipped"), ("teardown", "passed")]
    assert got[1].wasxfail == "kernel bug 123"


def test_a_setup_error_in_the_guest_has_no_call_phase_like_pytest():
    got = host_phases([phase("setup", "failed", longrepr="fixture boom"), phase("teardown")])
    assert outcomes(got) == [("setup", "failed"), ("teardown", "passed")]


def test_a_test_with_no_guest_result_fails_with_the_reason():
    got = host_phases([], missing_reason="the kernel lab failed to boot: KLAB:FAIL mount host root")
    assert outcomes(got) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    assert got[1].message == "the kernel lab failed to boot: KLAB:FAIL mount host root"


def test_a_guest_that_stopped_mid_test_fails_that_test():
    got = host_phases([phase("setup")], missing_reason="the kernel lab timed out after 60 s")
    assert outcomes(got) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    assert "timed out" in got[1].longrepr


def test_a_guest_that_stopped_in_teardown_fails_the_teardown():
    got = host_phases([phase("setup"), phase("call")])
    assert outcomes(got) == [("setup", "passed"), ("call", "passed"), ("teardown", "failed")]


def test_guest_phases_round_trip_through_json():
    p = phase("call", "skipped", longrepr="why", location=("tests/x.py", 7), sections=(("a", "b"),), wasxfail=None)
    assert GuestPhase.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_reading_reports_leaves_a_half_written_line_for_the_next_read(tmp_path: Path):
    path = tmp_path / "reports.jsonl"
    assert read_guest_reports(path) == ([], 0)
    path.write_text('{"event": "a"}\n{"event": "b"')
    lines, offset = read_guest_reports(path)
    assert lines == [{"event": "a"}]
    with open(path, "a") as fh:
        fh.write("}\n")
    lines, offset = read_guest_reports(path, offset)
    assert lines == [{"event": "b"}] and offset == path.stat().st_size


def test_the_hosts_progress_line_names_the_test_the_guest_runs_and_how_many_are_done(tmp_path: Path):
    from lab.kernel.pytest_plugin import _LabRun

    lab = _LabRun(["t.py::a", "t.py::b", "t.py::c"], tmp_path)
    lab.poll()
    assert lab.status() == "the guest boots and collects"
    with open(lab.report_path, "a") as fh:
        fh.write(json.dumps({"event": "started", "nodeid": "t.py::a"}) + "\n")
        for when in ("setup", "call", "teardown"):
            fh.write(json.dumps(GuestPhase("t.py::a", when, "passed").to_json()) + "\n")
        fh.write(json.dumps({"event": "started", "nodeid": "t.py::b"}) + "\n")
    lab.poll()
    assert lab.status() == "1 of 3 done, running b"


# -- the whole plugin, with a lab that runs the guest pytest on this machine

CONFTEST = '''
import json, os, subprocess, time
from pathlib import Path
import pytest
import lab.kernel.pytest_plugin as kp
from lab.kernel.runner import LabBootError, LabResult

pytest_plugins = ["lab.kernel.pytest_plugin"]
CALLS = Path(__file__).with_name("lab_calls.jsonl")

def fake_run_in_lab(argv, *, cwd, env, timeout, rw_dir, memory_mb, cancel):
    with open(CALLS, "a") as fh:
        fh.write(json.dumps({"argv": argv, "cwd": cwd}) + "\\n")
    if os.environ.get("FAKE_LAB_BOOT_FAILS"):
        raise LabBootError("kernel lab did not start the command (qemu exited with 0): KLAB:FAIL mount host root",
                           "[    1.0] Run /init as init process\\nKLAB:FAIL mount host root\\n")
    proc = subprocess.run(argv, cwd=cwd, env={**env, "HADIRECTOR_IN_KERNEL_LAB": "1"},
                          capture_output=True, text=True, timeout=timeout)
    return LabResult(proc.returncode, proc.stdout + proc.stderr, kernel_version="fake")

kp.run_in_lab = fake_run_in_lab
'''

TESTS = '''
import os
import pytest

def test_host_only():
    assert os.environ.get("HADIRECTOR_IN_KERNEL_LAB") is None

@pytest.mark.kernel
def test_passes_in_guest():
    assert os.environ["HADIRECTOR_IN_KERNEL_LAB"] == "1"

@pytest.mark.kernel
def test_fails_in_guest():
    assert 6 * 7 == 41, "arithmetic in the guest"

@pytest.mark.kernel
def test_skips_in_guest():
    pytest.skip("ipvsadm missing in the guest")

@pytest.mark.kernel
@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n in (1, 2)
'''


# Runs after test_sample.py: pytest must have finalized test_sample's module fixture
# although the last item there ran in the lab, not through pytest's own protocol.
TESTS_AFTER = '''
import test_sample

def test_next_module_sets_up_cleanly():
    assert test_sample.FINALIZED == ["module"]
'''

MODULE_FIXTURE = '''
FINALIZED = []

@pytest.fixture(scope="module")
def module_resource():
    yield
    FINALIZED.append("module")

def test_host_uses_a_module_fixture(module_resource):
    pass
'''


def run_pytest(tmp_path: Path, *args: str, env: dict | None = None,
               extra_conftest: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST + extra_conftest)
    (tmp_path / "test_sample.py").write_text(TESTS.replace("\ndef test_host_only", MODULE_FIXTURE + "\ndef test_host_only"))
    (tmp_path / "test_tail.py").write_text(TESTS_AFTER)
    full_env = {k: v for k, v in os.environ.items() if k not in ("HADIRECTOR_IN_KERNEL_LAB", "PYTEST_ADDOPTS")}
    full_env.update(env or {})
    # The plugin is the lab's (lab/, at the repository root, not installed).
    root = str(Path(__file__).resolve().parents[3])
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--kernel-lab=always", "-rA", "-o", "addopts=", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=full_env,
    )


def lab_calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "lab_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_kernel_items_run_in_one_lab_boot_and_report_the_guests_outcomes(tmp_path: Path):
    result = run_pytest(tmp_path)
    out = result.stdout
    assert "2 failed, 6 passed" in out, out
    assert "PASSED test_tail.py::test_next_module_sets_up_cleanly" in out
    assert "PASSED test_sample.py::test_host_only" in out
    assert "PASSED test_sample.py::test_passes_in_guest" in out
    assert "PASSED test_sample.py::test_param[2]" in out
    assert "FAILED test_sample.py::test_fails_in_guest" in out and "arithmetic in the guest" in out
    assert "FAILED test_sample.py::test_skips_in_guest" in out and "ipvsadm missing in the guest" in out
    calls = lab_calls(tmp_path)
    assert len(calls) == 1  # one boot for all four kernel items
    assert calls[0]["argv"][-5:] == [
        "test_sample.py::test_passes_in_guest",
        "test_sample.py::test_fails_in_guest",
        "test_sample.py::test_skips_in_guest",
        "test_sample.py::test_param[1]",
        "test_sample.py::test_param[2]",
    ]


def test_no_lab_boots_when_no_kernel_item_is_selected(tmp_path: Path):
    result = run_pytest(tmp_path, "-m", "not kernel")
    assert "3 passed" in result.stdout, result.stdout
    assert lab_calls(tmp_path) == []


def test_host_selection_decides_and_exitfirst_is_passed_to_the_guest(tmp_path: Path):
    result = run_pytest(tmp_path, "-k", "param", "-x")
    assert "2 passed" in result.stdout, result.stdout
    (call,) = lab_calls(tmp_path)
    assert "--maxfail=1" in call["argv"]
    assert call["argv"][-2:] == ["test_sample.py::test_param[1]", "test_sample.py::test_param[2]"]


def test_a_lab_that_fails_to_boot_fails_every_kernel_item_with_the_console_tail(tmp_path: Path):
    result = run_pytest(tmp_path, env={"FAKE_LAB_BOOT_FAILS": "1"})
    out = result.stdout
    assert "5 failed, 3 passed" in out, out
    assert out.count("the kernel lab failed to boot") >= 5
    assert "KLAB:FAIL mount host root" in out
    assert len(lab_calls(tmp_path)) == 1


# -- several guests at once


def test_share_out_gives_whole_modules_heaviest_first_to_the_least_loaded_guest():
    from lab.kernel.pytest_plugin import share_out

    modules = [("a.py", ["a.py::1", "a.py::2"], 2.0), ("b.py", ["b.py::1"], 10.0),
               ("c.py", ["c.py::1"], 3.0), ("d.py", ["d.py::1", "d.py::2"], 6.0)]
    # b (10) to guest 1, d (6) to guest 2, c (3) to guest 2 (9), a (2) to guest 2 (11)
    assert share_out(modules, 2) == [["b.py::1"], ["a.py::1", "a.py::2", "c.py::1", "d.py::1", "d.py::2"]]
    assert share_out(modules, 1) == [["a.py::1", "a.py::2", "b.py::1", "c.py::1", "d.py::1", "d.py::2"]]


def test_share_out_boots_no_guest_without_a_module():
    from lab.kernel.pytest_plugin import share_out

    assert share_out([("a.py", ["a.py::1", "a.py::2"], 2.0)], 4) == [["a.py::1", "a.py::2"]]
    assert share_out([("a.py", ["a.py::1"], 1.0), ("b.py", ["b.py::1"], 1.0)], 0) == [["a.py::1", "b.py::1"]]


SECOND_KERNEL_MODULE = '''
import pytest

@pytest.mark.kernel
def test_other_module_in_guest():
    pass
'''

# A host test collected after the kernel tests: each fake boot must start before it runs
# and waits for the file it writes, so the run only passes if the guests boot first and
# the host tests run meanwhile.
LATE_HOST = '''
from pathlib import Path

def test_host_runs_while_the_guests_do():
    Path(__file__).with_name("host_ran").write_text("yes")
'''

WAITING_LAB = '''
import time
_fake = kp.run_in_lab

def waiting_run_in_lab(argv, **kw):
    marker = Path(__file__).with_name("host_ran")
    if marker.exists():
        raise RuntimeError("the lab booted only after the host tests")
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        raise RuntimeError("the host tests did not run while the lab ran")
    return _fake(argv, **kw)

kp.run_in_lab = waiting_run_in_lab
'''


def test_two_guests_run_whole_modules_while_the_host_runs_its_own_tests_first(tmp_path: Path):
    (tmp_path / "test_other.py").write_text(SECOND_KERNEL_MODULE)
    (tmp_path / "test_zlast.py").write_text(LATE_HOST)
    result = run_pytest(tmp_path, "--kernel-lab-boots=2", extra_conftest=WAITING_LAB)
    out = result.stdout
    assert "2 failed, 8 passed" in out, out
    assert "PASSED test_zlast.py::test_host_runs_while_the_guests_do" in out
    calls = sorted(lab_calls(tmp_path), key=lambda c: c["argv"][-1])
    assert len(calls) == 2
    assert calls[0]["argv"][-1] == "test_other.py::test_other_module_in_guest"
    assert [a for a in calls[1]["argv"] if a.startswith("test_")] == [
        "test_sample.py::test_passes_in_guest", "test_sample.py::test_fails_in_guest",
        "test_sample.py::test_skips_in_guest", "test_sample.py::test_param[1]", "test_sample.py::test_param[2]"]
    # Every host test reported before the first kernel test's result.
    lines = [line for line in out.splitlines() if line.startswith(("PASSED", "FAILED"))]
    host = [n for n, line in enumerate(lines) if "in_guest" not in line and "param" not in line]
    kernel = [n for n, line in enumerate(lines) if "in_guest" in line or "param" in line]
    assert max(host) < min(kernel), lines
