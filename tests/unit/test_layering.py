"""Each import has one home (style.md item 7), checked by walking every module's imports.

- pyroute2 only in the kernel-facing layers: ``hadirector/net/`` and ``hadirector/ipvs/netlink.py``;
- raw sockets only in ``hadirector/net/`` (and the probes, which open ordinary TCP);
- the sans-IO cores (VRRP, health policy and schedule, IPVS table and planner, sync
  daemon plan, config model) import no asyncio, no socket, no clock;
- aiohttp only in the probes and the API server;
- nothing in the product imports the lab (``lab/``), the tests, the benchmarks, scapy or pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "hadirector"

CORES = [
    "model.py", "vrrp/codec.py", "vrrp/machine.py", "vrrp/timers.py", "vrrp/group.py",
    "health/policy.py", "health/schedule.py", "ipvs/table.py", "ipvs/planner.py",
    "ipvs/syncd.py", "agent/reload.py", "director/node.py", "director/effects.py", "director/lvs.py",
]
IO_MODULES = {"asyncio", "socket", "selectors", "subprocess", "time", "threading", "pyroute2", "aiohttp"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def rel(p: Path) -> str:
    return p.relative_to(PKG).as_posix()


@pytest.mark.parametrize("core", CORES)
def test_sans_io_cores_import_no_io(core):
    path = PKG / core
    if not path.exists():
        pytest.fail(f"{core} listed as a core but missing")
    bad = {m for m in imports_of(path) if m.split(".")[0] in IO_MODULES}
    assert bad == set(), f"{core} imports I/O: {sorted(bad)}"


def test_pyroute2_lives_only_in_the_kernel_facing_layers():
    allowed = lambda r: r.startswith("net/") or r == "ipvs/netlink.py"  # noqa: E731
    offenders = [rel(p) for p in modules()
                 if any(m.split(".")[0] == "pyroute2" for m in imports_of(p)) and not allowed(rel(p))]
    assert offenders == []


def test_aiohttp_lives_only_in_the_probes_and_the_api_server():
    allowed = {"health/probes.py", "api/server.py"}
    offenders = [rel(p) for p in modules()
                 if any(m.split(".")[0] == "aiohttp" for m in imports_of(p)) and rel(p) not in allowed]
    assert offenders == []


def test_raw_ip_and_packet_sockets_are_opened_only_in_the_net_layer():
    # Netlink sockets are SOCK_RAW too; they belong to the kernel layers.
    offenders = []
    for p in modules():
        for line in p.read_text().splitlines():
            raw = "SOCK_RAW" in line and "AF_NETLINK" not in line
            if (raw or "AF_PACKET" in line) and not rel(p).startswith("net/"):
                offenders.append(f"{rel(p)}: {line.strip()}")
    assert offenders == []


def test_the_product_imports_no_lab_test_or_test_tool_code():
    # lab/, tests/ and bench/ are not installed with the agent (pyproject packages only
    # hadirector*), and scapy and pytest are test dependencies only.
    outside = {"lab", "tests", "bench", "scapy", "pytest"}
    offenders = {rel(p): sorted(m for m in imports_of(p) if m.split(".")[0] in outside) for p in modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_layering_scan_sees_an_import_of_the_lab(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom lab.kernel import run_in_lab\nif True:\n    import tests.netns\n")
    assert {"lab.kernel", "tests.netns"} <= imports_of(sample)
