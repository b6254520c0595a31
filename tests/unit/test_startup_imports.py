"""What ``hadirector run`` imports: a VRRP-only agent neither aiohttp nor pyroute2, nor the
health runner and its probes; an IPVS one only the netlink part of pyroute2.

aiohttp (~12 MB, ~0.15 s) is for HTTP checks and the HTTP API, pyroute2 (~10 MB, ~0.1 s,
its package imports all of itself) for IPVS; an agent whose config has neither pays for
neither (bench/startup.py measures it). Checked in a fresh interpreter that imports the
run path's modules and builds its components for such a config.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
    import sys, tempfile, pathlib
    from hadirector.agent import cli, lock, preflight, vip_record           # noqa: F401
    from hadirector.config.loader import load
    from hadirector.logging import configure_logging
    from hadirector.agent.agent import Agent
    from hadirector.agent.lvs import LvsController
    from hadirector.agent.api_component import ApiComponent
    STARTED
    from hadirector.kernel import addresses                                # noqa: F401
    from hadirector.kernel import garp, vrrp_socket                            # noqa: F401
    d = pathlib.Path(tempfile.mkdtemp())
    (d / "c.yaml").write_text(
        "node: {router_id: n1, state_dir: %s}\\n"
        "API\\n"
        "vrrp_instances:\\n"
        "  - {name: vi_1, interface: eth0, vrid: 51, priority: 100, virtual_ips: [10.0.0.100/32]}\\n" % d)
    config = load(str(d / "c.yaml")).config
    configure_logging("json", level="info")
    agent = Agent(config)
    lvs = LvsController(config)
    ApiComponent(lvs)
    print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"aiohttp", "pyroute2", "yarl", "multidict"})))
    print(" ".join(sorted(set(sys.modules) & set(sys.argv[1:]))))
"""

# Imported on demand only: the health runner and its probes when a config has virtual
# services, ctypes when a script is spawned, difflib for a config with an unknown key.
ON_DEMAND = ("hadirector.agent.health_runner", "hadirector.health.probes", "hadirector.health.dns",
             "hadirector.api.metrics", "ctypes", "difflib")


# What ApiComponent.start imports, after the VRRP machines started.
STARTED = "from hadirector.api import control, limits, listener  # noqa: F401"


def run_path(api: str, names: tuple[str, ...] = ON_DEMAND, started: bool = True) -> list[str]:
    code = textwrap.dedent(PROGRAM).replace("API", api).replace("STARTED", STARTED if started else "pass")
    res = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def run_path_imports(api: str) -> str:
    return run_path(api)[0].strip()


def test_a_vrrp_only_agent_imports_neither_aiohttp_nor_pyroute2():
    assert run_path_imports("api: {enabled: false}") == ""


def test_building_the_api_component_leaves_the_http_server_unimported():
    # The server module is imported by ApiComponent.start when api.enabled; building the
    # component imports nothing of it.
    assert run_path_imports("api: {enabled: true}") == ""


def test_a_vrrp_only_agent_imports_neither_the_health_runner_nor_script_or_config_error_helpers():
    assert run_path("api: {enabled: true}")[1] == ""


def test_the_status_model_is_imported_after_the_vrrp_machines_start_not_before():
    # ~60 dataclasses: ApiComponent.start imports them (on a worker thread), so a restarted
    # director's first master-down timer does not wait for them.
    before_start = run_path("api: {enabled: true}", ("hadirector.api.snapshot", "hadirector.agent.status"),
                            started=False)
    assert before_start[1] == ""


def test_the_health_runner_is_imported_when_the_config_has_virtual_services():
    # The same program, its config given a virtual service: the runner is built.
    vs = ("virtual_services:\\n"
          "  - {name: web, address: 10.0.0.100, port: 80, real_servers: [{address: 10.0.0.2}]}\\n"
          "api: {enabled: false}")
    assert run_path(vs)[1].split() == ["hadirector.agent.health_runner", "hadirector.api.metrics",
                                       "hadirector.health.dns", "hadirector.health.probes"]


def test_an_lvs_agent_builds_its_health_runner_without_the_status_model():
    # The runner is built before the machines start (the table is planned from its
    # states); the status model (~60 dataclasses, ~0.25 s of an emulated guest's start)
    # is imported on the first status read, not on that path.
    vs = ("virtual_services:\\n"
          "  - {name: web, address: 10.0.0.100, port: 80, real_servers: [{address: 10.0.0.2}]}\\n"
          "api: {enabled: false}")
    out = run_path(vs, ("hadirector.agent.health_runner", "hadirector.api.snapshot"), started=False)
    assert out[1].split() == ["hadirector.agent.health_runner"]


IPVS_PROGRAM = """
    import sys
    import hadirector.kernel.ipvs
    print(sorted(m for m in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.iproute", "pyroute2.conntrack")
                 if m in sys.modules))
    from pyroute2 import IPRoute, NetNS                   # the whole package, on demand
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401
    import pyroute2
    from importlib import metadata
    print(IPRoute.__name__, NetNS.__name__, pyroute2.__version__ == metadata.version("pyroute2"))
    try:
        pyroute2.no_such_name
    except AttributeError as e:
        print("AttributeError", e)
"""


def test_ipvs_netlink_imports_pyroute2s_netlink_modules_not_the_whole_package():
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(IPVS_PROGRAM)], capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "[]",
        "IPRoute NetNS True",
        "AttributeError module 'pyroute2' has no attribute 'no_such_name'",
    ]


def test_the_version_is_the_installed_metadatas_without_importing_importlib_metadata():
    code = ("import sys, hadirector; v = hadirector.__version__; "
            "print(v, 'importlib.metadata' in sys.modules); "
            "from importlib import metadata; print(v == metadata.version('hadirector'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr
    version, loaded = res.stdout.splitlines()[0].split()
    assert loaded == "False" and version[0].isdigit()
    assert res.stdout.splitlines()[1] == "True"


# Agent.start itself, with fakes at the I/O edges (addresses, links, the VRRP socket):
# what is imported when the machine reports INIT -> BACKUP, and what once it has.
START_PROGRAM = """
    import asyncio, sys, tempfile
    from hadirector.agent.agent import Agent
    from hadirector.config.loader import load
    from hadirector.kernel.fake import FakeAddresses, FakeLinkWatcher
    from hadirector.logging import configure_logging
    from tests.unit.agent.fakes import FakeTransport
    d = tempfile.mkdtemp()
    open(d + "/c.yaml", "w").write(
        "node: {router_id: n1, state_dir: %s}\\n"
        "api: {enabled: false}\\n"
        "vrrp_instances:\\n"
        "  - {name: vi_1, interface: eth0, vrid: 51, priority: 100, virtual_ips: [10.0.0.100/32]}\\n" % d)
    config = load(d + "/c.yaml").config
    configure_logging("json", level="warning")
    seen = {}

    def on_role(event):
        if event.new.value == "BACKUP":
            seen["backup"] = sorted(set(sys.modules) & set(sys.argv[1:]))

    async def main():
        agent = Agent(config, addresses=FakeAddresses(), transport_factory=lambda i: FakeTransport(),
                      link_watcher_factory=FakeLinkWatcher)
        agent.on_role_changed.append(on_role)
        await agent.start()
        seen["started"] = sorted(set(sys.modules) & set(sys.argv[1:]))
        await agent.stop()

    asyncio.run(main())
    print(" ".join(seen["backup"]))
    print(" ".join(seen["started"]))
"""


def test_the_machines_reach_backup_before_the_status_model_is_imported():
    # A link tracker's first reading (the instance's own interface, up) reaches the
    # director before the machines start; its state.json write used to import the status
    # model (34 dataclasses, ~15 % of exec -> BACKUP) there. state.json is written from
    # the machines' start on, its first write right after INIT -> BACKUP. Track scripts'
    # rise/fall (the health package), the reload planner and advert auth (hashlib,
    # hmac) wait for their first use.
    names = ("hadirector.api.snapshot", "hadirector.agent.status", "hadirector.health.policy",
             "hadirector.agent.reload", "hadirector.vrrp.auth", "hmac")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(START_PROGRAM), *names],
                         capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr
    at_backup, at_started = res.stdout.splitlines()
    assert at_backup == ""
    # The status model (which names auth's reject reasons) once started; the rest not.
    assert at_started.split() == ["hadirector.agent.status", "hadirector.api.snapshot",
                                  "hadirector.vrrp.auth", "hmac"]
