"""``hadirector config --effective``: every default written out, and the output is a
config that loads to the same model (and passes ``hadirector check``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hadirector import model as m
from hadirector.config.effective import effective_yaml, to_data
from hadirector.config.loader import load, parse

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted([*ROOT.glob("etc/*.yaml"), *ROOT.glob("etc/lab/*/*.yaml")])

# Every shape the model has that the shipped files may not: tunnels, fwmark, IPv6,
# https/script checks, no check, thresholds, a sorry server, a sync daemon without
# refresh_period, strings that YAML 1.1 would read as something else.
EVERY_SHAPE = """\
node: {router_id: "on", state_dir: /run/h}
api: {listen: "[::1]:9111", enabled: false}
track_scripts:
  - {name: "010", command: [/bin/true, "yes", "1:30"], interval: 100ms}
vrrp_instances:
  - name: v4
    interface: eth0
    vrid: 51
    version: 2
    advert_interval: 3
    virtual_ips: [192.0.2.100/24, 192.0.2.101/32]
    unicast_src: 192.0.2.2
    unicast_peers: [192.0.2.3]
    track_interfaces: [eth1, {name: eth2, weight: -20}]
    track_scripts: ["010"]
    notify: {master: /bin/true, timeout: 5}
  - {name: v6, interface: eth0, vrid: 52, virtual_ips: ["fd00::100/64"], preempt: false, accept_mode: true}
sync_groups:
  - {name: g, instances: [v4], notify: {notify: [/bin/n]}}
lvs:
  program: master_only
  on_shutdown: remove
  sync_daemon: {interface: eth1, follow_instance: g, mcast_group: 224.0.0.81}
virtual_services:
  - address: 192.0.2.100
    port: 443
    scheduler: sh
    scheduler_flags: [sh-port]
    persistence_timeout: 300
    persistence_netmask: 255.255.255.0
    forward: tun
    tunnel_type: gue
    tunnel_port: 6080
    tunnel_checksum: csum
    check: {type: https, path: /h, status_codes: [200, "201-204"], verify_tls: false, bind_to: 192.0.2.2}
    quorum_up: /bin/up
    real_servers:
      - {address: 192.0.2.11, weight: 5, upper_threshold: 100, lower_threshold: 50}
      - {address: 192.0.2.12, check: false}
      - {address: 192.0.2.13, check: {type: script, command: /bin/check}}
    sorry_server: {address: 192.0.2.20, port: 8443}
  - fwmark: 10
    family: 6
    protocol: udp
    one_packet: true
    forward: dr
    check: {type: tcp, port: 53, retry_delay: 1}
    real_servers: [{address: "fd00::11"}]
  - address: 192.0.2.100
    port: 80
    forward: tun
    tunnel_type: gre
    real_servers: [{address: 192.0.2.14}]
"""


def resolved(config: m.Config, source: str) -> m.Config:
    """``config`` as the effective file states it: the derived catch_up written out."""
    sd = config.lvs.sync_daemon
    if sd is not None:
        lvs = dataclasses.replace(config.lvs, sync_daemon=dataclasses.replace(sd, catch_up=sd.preempt_hold))
        config = dataclasses.replace(config, lvs=lvs)
    return dataclasses.replace(config, source=source)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_effective_config_of_every_shipped_file_loads_to_the_same_model(path):
    config = load(path).config
    again = parse(effective_yaml(config), "effective.yaml")
    assert again.config == resolved(config, "effective.yaml")
    assert again.warnings == ()


def test_the_effective_config_of_every_model_shape_loads_to_the_same_model():
    config = parse(EVERY_SHAPE, "every.yaml").config
    text = effective_yaml(config)
    assert parse(text, "effective.yaml").config == resolved(config, "effective.yaml")
    # Strings YAML 1.1 would read otherwise are quoted, so they stay strings.
    assert "router_id: 'on'" in text and "- '1:30'" in text and "name: '010'" in text


def test_every_key_of_the_model_is_written_with_its_default():
    config = parse("vrrp_instances: [{name: v, interface: eth0, vrid: 1, virtual_ips: [192.0.2.1/24]}]\n"
                   "virtual_services: [{address: 192.0.2.1, port: 80, real_servers: [{address: 192.0.2.9, "
                   "check: {type: tcp}}]}]\n", "c.yaml").config
    data = to_data(config)
    inst = data["vrrp_instances"][0]
    assert (inst["priority"], inst["version"], inst["advert_interval"], inst["preempt"]) == (100, 3, 1.0, True)
    assert inst["garp"] == {"count": 5, "interval": 0.0, "repeat_delay": 5.0, "refresh": 0.0}
    assert data["node"]["router_id"] == config.node.router_id        # the host name, resolved
    assert data["api"] == {"listen": "127.0.0.1:9110", "enabled": True}
    rs = data["virtual_services"][0]["real_servers"][0]
    assert (rs["forward"], rs["weight"], rs["port"]) == ("nat", 1, 0)
    assert rs["check"] == {"type": "tcp", "interval": 5.0, "timeout": 3.0, "rise": 2, "fall": 3,
                           "initial": "unknown", "jitter": 0.0, "retry_delay": None, "bind_to": None,
                           "address": None, "port": None}
    assert data["lvs"] == {"program": "always", "on_shutdown": "keep", "sync_daemon": None}


def run_cli(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hadirector.cli", *argv], capture_output=True, text=True,
                          cwd=str(cwd), env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_config_effective_prints_yaml_that_hadirector_check_accepts(tmp_path):
    res = run_cli("config", "-c", str(ROOT / "etc" / "primary.yaml"), "--effective")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert yaml.safe_load(res.stdout)["node"]["router_id"] == "lvs1"
    out = tmp_path / "effective.yaml"
    out.write_text(res.stdout)
    check = run_cli("check", "-c", str(out), "--strict")
    assert (check.returncode, check.stderr) == (0, "")
    assert check.stdout == "config OK: 2 vrrp instances, 4 virtual services, 10 real servers\n"
    # And it is a fixed point: the effective config of the effective config is itself.
    again = run_cli("config", "-c", str(out), "--effective")
    assert again.stdout.split("\n", 1)[1] == res.stdout.split("\n", 1)[1]


def test_config_without_effective_is_a_usage_error():
    res = run_cli("config", "-c", str(ROOT / "etc" / "primary.yaml"))
    assert res.returncode == 2
    assert "--effective" in res.stderr
