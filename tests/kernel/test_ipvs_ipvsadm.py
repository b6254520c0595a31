"""ipvsadm is the judge: a table written by our netlink code must read back through
ipvsadm 1.31 exactly as we expect, and our listing must match ipvsadm's byte for byte."""

from __future__ import annotations

import sys

import pytest

from hadirector.ipvs.cli import render, render_rules
from hadirector.kernel.reconcile import Reconciler
from hadirector.ipvs.table import desired_table
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy

from lab.ipvs_netns import IpvsNetns, kernel_schedulers

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def programmed():
    """Every scheduler, family, forwarding method, tunnel type and flag, programmed once
    by our reconciler into a fresh namespace."""
    with IpvsNetns("sa") as ns:
        backend = ns.ipvs()
        desired = desired_table(sc.every_field(sorted(kernel_schedulers())), all_healthy)
        report = Reconciler(backend).sync(desired)
        assert report.errors == []
        try:
            yield ns, backend, desired
        finally:
            backend.close()


def test_ipvsadm_save_shows_exactly_the_rules_the_config_asks_for(programmed):
    ns, _, desired = programmed
    assert ns.ipvsadm("-Sn") == render_rules(desired)


def test_our_listing_is_ipvsadm_list_byte_for_byte(programmed):
    ns, backend, _ = programmed
    version, size = backend.info()
    assert render(backend.dump(), version=version, size=size) == ns.ipvsadm("-Ln")


def test_our_stats_listing_is_ipvsadm_stats_byte_for_byte(programmed):
    ns, backend, _ = programmed
    version, size = backend.info()
    assert render(backend.dump(), version=version, size=size, stats=True) == ns.ipvsadm("-Ln", "--stats")


def test_thresholds_read_back_through_ipvsadm(programmed):
    ns, _, _ = programmed
    rows = [line.split() for line in ns.ipvsadm("-Ln", "--thresholds").splitlines() if "10.244.2.4:8000" in line]
    assert rows == [["->", "10.244.2.4:8000", "1000", "100", "0", "0"]]


def test_tunnel_settings_read_back_through_ipvsadm(programmed):
    ns, _, _ = programmed
    info = {line.split()[1]: line.split()[3] for line in ns.ipvsadm("-Ln", "--tun-info").splitlines()
            if line.strip().startswith("->") and "Tunnel" in line}
    assert info["10.244.2.1:8000"] == "ipip"
    assert info["10.244.2.2:8000"] == "gue:6080:r+c"
    assert info["10.244.2.3:8000"] == "gre:+c"
    assert info["10.244.2.5:8000"] == "gue:6081:-c"
    assert info["[fd00:244::9]:8000"] == "ipip"


def test_ipvsadm_restore_of_our_rules_builds_the_same_table():
    """Our rules text is valid ipvsadm-restore input and means the same table (the
    benchmark relies on it); -S does not carry thresholds, so the config has none."""
    desired = desired_table(sc.config(sc.web(3), sc.vs("dns", port=53, real_servers=(sc.rs("10.244.1.9", 53),))), all_healthy)
    with IpvsNetns("rs") as ns:
        ns.run("ipvsadm-restore", input=render_rules(desired))
        backend = ns.ipvs()
        try:
            assert backend.dump() == desired
            assert Reconciler(backend).sync(desired).planned == []
        finally:
            backend.close()


def test_hadirector_ipvs_command_prints_what_ipvsadm_prints(programmed):
    """Without a running agent (no Health column) the command's output is ipvsadm's."""
    ns, _, _ = programmed
    ours = ns.run(sys.executable, "-m", "hadirector.cli", "ipvs", "--no-health").stdout
    assert ours == ns.ipvsadm("-Ln")
    stats = ns.run(sys.executable, "-m", "hadirector.cli", "ipvs", "--no-health", "--stats").stdout
    assert stats == ns.ipvsadm("-Ln", "--stats")
