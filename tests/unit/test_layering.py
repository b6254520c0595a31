"""Each import has one home (style.md item 7), checked by walking every module's imports.

- the kernel layer, ``hadirector/kernel/``, is the one place that talks to the kernel: only
  it imports pyroute2 and only it opens netlink, raw IP and packet sockets (the probes open
  ordinary TCP and UDP); ``ipvs/`` keeps the pure table, plan and errors, no kernel I/O;
- the sans-IO cores (VRRP, health policy and schedule, IPVS table and planner, sync
  daemon plan, config model, reload plan, the director) import no asyncio, no socket, no
  clock, no randomness, no logging, and no hadirector module that is not a core;
- aiohttp only in the probes and the API server;
- no asyncio subprocess anywhere: scripts are spawned through ``kernel/spawn.py``;
- nothing in the product imports the lab (``lab/``), the tests, the benchmarks, scapy or pytest;
- only the VRRP shell touches the instance runtimes (``.runtimes``, ``.driver``); the LVS
  side and the status builder get the narrow ``agent/vrrp_side.VrrpSide``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "hadirector"

CORES = [
    "model.py", "vrrp/codec.py", "vrrp/machine.py", "vrrp/timers.py", "vrrp/group.py", "vrrp/auth.py",
    "health/policy.py", "health/schedule.py", "ipvs/table.py", "ipvs/planner.py",
    "ipvs/syncd.py", "agent/reload.py", "director/node.py", "director/effects.py", "director/lvs.py",
    "director/gate.py", "scaleout/bird.py",
    "vrrp/__init__.py", "director/__init__.py",
]
CORE_PACKAGES = ("vrrp", "director")     # every module in these is a core
# What a core must not import: I/O, clocks, randomness, logging, the kernel's libraries.
IO_MODULES = {"asyncio", "socket", "select", "selectors", "subprocess", "time", "datetime", "threading",
              "os", "random", "pyroute2", "aiohttp", "structlog", "scapy"}
# ... but a core may, where said why:
CORE_ALLOWED = {
    "health/schedule.py": {"random"},                     # the jitter's own seeded Random
    "ipvs/syncd.py": {"hadirector.ipvs.backend"},         # the backend's Protocol and error types
}


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


def dotted(core: str) -> str:
    return "hadirector." + core.removesuffix(".py").replace("/", ".")


def internal_imports(source: str, module: str) -> set[str]:
    """The hadirector modules that ``source`` (module ``module``) imports, with
    ``from hadirector import model`` and relative imports resolved to module names."""
    package = module.rsplit(".", 1)[0].split(".")
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("hadirector"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base == "hadirector":
                out.update(f"hadirector.{a.name}" for a in node.names)
            elif base.startswith("hadirector"):
                out.add(base)
    return out


@pytest.mark.parametrize("core", CORES)
def test_sans_io_cores_import_no_io(core):
    path = PKG / core
    if not path.exists():
        pytest.fail(f"{core} listed as a core but missing")
    bad = {m for m in imports_of(path)
           if m.split(".")[0] in IO_MODULES and m not in CORE_ALLOWED.get(core, ())}
    assert bad == set(), f"{core} imports I/O: {sorted(bad)}"


@pytest.mark.parametrize("core", CORES)
def test_sans_io_cores_import_only_other_cores(core):
    # A core that imported a shell module would do I/O through it.
    cores = {dotted(c) for c in CORES}
    found = internal_imports((PKG / core).read_text(), dotted(core))
    bad = {m for m in found if m not in cores and m not in CORE_ALLOWED.get(core, ())}
    assert bad == set(), f"{core} imports non-core hadirector modules: {sorted(bad)}"


def test_every_module_of_a_core_package_is_checked_as_a_core():
    for package in CORE_PACKAGES:
        for path in sorted((PKG / package).glob("*.py")):
            assert rel(path) in CORES, f"{rel(path)} is in a core package: list it in CORES"


def test_the_core_contract_resolves_relative_and_package_imports():
    source = "from .effects import AddVips\nfrom hadirector import model\nfrom ..agent import agent\n"
    assert internal_imports(source, "hadirector.director.node") == {
        "hadirector.director.effects", "hadirector.model", "hadirector.agent"}


def test_pyroute2_lives_only_in_the_kernel_layer():
    allowed = lambda r: r.startswith("kernel/")  # noqa: E731
    offenders = [rel(p) for p in modules()
                 if any(m.split(".")[0] == "pyroute2" for m in imports_of(p)) and not allowed(rel(p))]
    assert offenders == []


def test_aiohttp_lives_only_in_the_probes_and_the_api_server():
    allowed = {"health/probes.py", "api/server.py"}
    offenders = [rel(p) for p in modules()
                 if any(m.split(".")[0] == "aiohttp" for m in imports_of(p)) and rel(p) not in allowed]
    assert offenders == []


KERNEL_SOCKETS = ("SOCK_RAW", "AF_PACKET", "AF_NETLINK")


def kernel_socket_lines(source: str) -> list[str]:
    """Lines of ``source`` that name a netlink, raw IP or packet socket."""
    return [line.strip() for line in source.splitlines() if any(k in line for k in KERNEL_SOCKETS)]


def test_netlink_raw_ip_and_packet_sockets_are_opened_only_in_the_kernel_layer():
    offenders = [f"{rel(p)}: {line}" for p in modules() if not rel(p).startswith("kernel/")
                 for line in kernel_socket_lines(p.read_text())]
    assert offenders == []


def test_the_socket_scan_sees_netlink_raw_and_packet_sockets():
    source = ("a = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)\n"
              "b = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)\n"
              "c = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)\n"
              "d = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n")
    assert len(kernel_socket_lines(source)) == 3


def test_the_ipvs_folder_holds_no_kernel_io():
    # The reconciler (an executor that logs) and the netlink backend live in kernel/;
    # ipvs/ keeps the table, the plan, the backend's Protocol and errors, and the CLI,
    # which opens the kernel only through kernel/.
    kernel_io = {"socket", "pyroute2", "structlog", "asyncio", "fcntl", "select", "subprocess"}
    offenders = {rel(p): sorted(m for m in imports_of(p) if m.split(".")[0] in kernel_io)
                 for p in sorted((PKG / "ipvs").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


ASYNCIO_SPAWNS = ("create_subprocess_exec", "create_subprocess_shell", "subprocess_exec", "subprocess_shell")


def test_no_module_spawns_a_child_through_asyncio():
    # CPython 3.11's subprocess transport hangs the loop's clean-up when a task is
    # cancelled mid-spawn; kernel/spawn.py spawns in a thread and kills the whole tree.
    offenders = {rel(p): asyncio_spawns(p.read_text()) for p in modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def asyncio_spawns(source: str) -> list[int]:
    """Lines of ``source`` that name one of asyncio's spawn calls (not in a comment)."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Attribute) and node.attr in ASYNCIO_SPAWNS
                  or isinstance(node, ast.Name) and node.id in ASYNCIO_SPAWNS)


def test_the_spawn_scan_sees_asyncio_spawns():
    source = ("# create_subprocess_exec in a comment is fine\n"
              "p = await asyncio.create_subprocess_exec('x')\n"
              "t, _ = await loop.subprocess_exec(f, 'x')\n")
    assert asyncio_spawns(source) == [2, 3]


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


# The VRRP shell: the supervisor (agent.py, reloader.py) and the executor that owns the
# instance runtimes. Everyone else asks ``vrrp_side.VrrpSide`` (Seesaw's HA -> engine).
RUNTIME_OWNERS = {"agent/agent.py", "agent/reloader.py", "agent/executor.py"}
RUNTIME_ATTRIBUTES = {"runtimes", "driver"}


def runtime_reaches(source: str) -> list[int]:
    """Lines of ``source`` that read an attribute named ``runtimes`` or ``driver``."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Attribute) and node.attr in RUNTIME_ATTRIBUTES)


def test_only_the_vrrp_shell_reaches_into_the_instance_runtimes():
    offenders = {rel(p): runtime_reaches(p.read_text()) for p in modules() if rel(p) not in RUNTIME_OWNERS}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_runtime_scan_sees_a_reach_into_the_runtimes():
    source = "def f(agent):\n    rt = agent.runtimes['vi_1']\n    return rt.driver.state\n"
    assert runtime_reaches(source) == [2, 3]


# The runtime's classes stay readable in one sitting (issue 11: no class over ~300 lines).
CLASS_LINES = 300
CLASS_LINES_EXCEPTIONS: set[str] = set()


def test_no_runtime_class_is_over_three_hundred_lines():
    long = []
    for p in modules():
        if not rel(p).startswith("agent/"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and f"{rel(p)}:{node.name}" not in CLASS_LINES_EXCEPTIONS:
                lines = node.end_lineno - node.lineno + 1
                if lines > CLASS_LINES:
                    long.append(f"{rel(p)}:{node.name} ({lines} lines)")
    assert long == []
