"""``hadirector check --host`` on a kernel that has IPVS: the probe (the agent's own
first attempt, ``ipvs/availability.probe``) answers, so a director whose interface,
source address and IPVS are all there passes, and the same file with a missing
interface still fails with the host code. The host without IPVS is
tests/netns/test_cli_operator.py.

One namespace LAN (lab.lan, area "ch", 10.234.46.0/24), the real CLI as a process.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from hadirector.exitcodes import ExitCode
from lab.agents import HADIRECTOR, ROOT
from lab.lan import Lan

pytestmark = [pytest.mark.kernel, pytest.mark.netns]


@pytest.fixture
def lan():
    lab = Lan("ch", nodes=2, net=46)
    try:
        yield lab.up()
    finally:
        lab.down()


def check_host(ns: str, path) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *HADIRECTOR, "check", "-c", str(path), "--host", "--strict"],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_host_passes_on_a_director_whose_kernel_has_ipvs(lan, tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        node: {{router_id: d1}}
        vrrp_instances:
          - {{name: VI_1, interface: eth0, vrid: 46, virtual_ips: [{lan.vip4()}/24]}}
        lvs:
          sync_daemon: {{interface: eth0, follow_instance: VI_1}}
        virtual_services:
          - address: {lan.vip4()}
            port: 80
            forward: dr
            real_servers: [{{address: {lan.ip4(2)}}}]
        """))
    res = check_host(lan.ns(1), cfg)
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == "config OK on this host: 1 vrrp instance, 1 virtual service, 1 real server\n"

    cfg.write_text(cfg.read_text().replace("sync_daemon: {interface: eth0", "sync_daemon: {interface: eth7"))
    res = check_host(lan.ns(1), cfg)
    assert res.returncode == ExitCode.START_FAILED
    assert res.stderr.splitlines() == [
        f"error: {cfg}:5:28: lvs.sync_daemon.interface: no sync daemon interface 'eth7' on this host",
        f"{cfg}: 1 host error, this host is not ready",
    ]


def test_the_agents_start_up_question_finds_ipvs_registered():
    # What ``hadirector run`` asks before its machines start (agent/cli.py): here the
    # answer lets it build the LVS side while the master-down wait runs. On a host
    # without IPVS: tests/netns/test_genl_host.py.
    from hadirector.agent.cli import _ipvs_missing
    from hadirector.config.loader import parse_config
    from hadirector.kernel.genl import family_id

    assert isinstance(family_id("IPVS"), int)
    config = parse_config(
        "node: {router_id: n1, state_dir: /run/genl-question}\n"
        "vrrp_instances:\n"
        "  - {name: vi_1, interface: eth0, vrid: 51, priority: 100, virtual_ips: [10.0.0.100/32]}\n"
        "virtual_services:\n"
        "  - {name: web, address: 10.0.0.100, port: 80, real_servers: [{address: 10.0.0.2}]}\n")
    assert _ipvs_missing(config) is False

