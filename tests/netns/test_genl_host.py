"""The start-up question (kernel/genl.py, agent/cli.py) against this host's kernel, which
has no IPVS: the controller answers for itself and says no IPVS, so an agent that needs
IPVS prepares its LVS side before the VRRP machines start (straight to FAULT, as
tests/netns/test_ipvs_unavailable.py shows with real agents). The kernel lab's answer:
tests/kernel/test_check_host_ipvs.py."""

from __future__ import annotations

import os

import pytest

from hadirector.agent.cli import _ipvs_missing
from hadirector.config.loader import parse_config
from hadirector.kernel.genl import GENL_ID_CTRL, family_id

pytestmark = [pytest.mark.netns]

VS = """
virtual_services:
  - {name: web, address: 10.0.0.100, port: 80, real_servers: [{address: 10.0.0.2}]}
"""


def config(tmp_path, extra: str = ""):
    return parse_config(f"node: {{router_id: n1, state_dir: {tmp_path}}}\n"
                     "vrrp_instances:\n"
                     "  - {name: vi_1, interface: eth0, vrid: 51, priority: 100, virtual_ips: [10.0.0.100/32]}\n"
                     + extra)


def test_this_hosts_controller_answers_for_itself_and_has_no_ipvs():
    assert not os.path.exists("/proc/net/ip_vs"), "this test needs a host kernel without IPVS"
    assert family_id("nlctrl") == GENL_ID_CTRL
    assert family_id("IPVS") is None


def test_only_a_config_that_needs_ipvs_is_told_it_is_missing(tmp_path):
    assert _ipvs_missing(config(tmp_path, VS)) is True
    assert _ipvs_missing(config(tmp_path)) is False
