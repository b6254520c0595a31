"""Warnings: valid configs that probably do not say what was meant (``config/lint.py``),
each at its file:line:column and key, never an error unless ``check --strict``; and the
YAML readings that are refused rather than guessed (``compose.CoreResolver``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadirector.config import ConfigError
from hadirector.config.fields import interface_problem
from hadirector.config.loader import load, parse

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted([*ROOT.glob("etc/*.yaml"), *ROOT.glob("etc/lab/*/*.yaml")])

INSTANCE = """\
node: {router_id: t}
vrrp_instances:
  - name: VI_1
    interface: eth0
    vrid: 51
    virtual_ips: [192.0.2.100/24]
"""


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in parse(text, "w.yaml").warnings]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_load_without_a_warning(path):
    assert load(path).warnings == ()


def test_unicast_src_without_peers_warns_that_adverts_stay_multicast():
    assert warnings_of(INSTANCE + "    unicast_src: 192.0.2.2\n") == [
        "w.yaml:7:18: vrrp_instances[0].unicast_src: unicast_src without unicast_peers: the adverts still go "
        "to the multicast group 224.0.0.18; list the other director(s) in unicast_peers, or remove unicast_src"]


def test_the_nodes_own_address_as_a_peer_warns_at_that_peer():
    text = INSTANCE + "    unicast_src: 192.0.2.2\n    unicast_peers: [192.0.2.3, 192.0.2.2]\n"
    assert warnings_of(text) == [
        "w.yaml:8:32: vrrp_instances[0].unicast_peers[1]: 192.0.2.2 is this node's own unicast_src; "
        "list only the other director(s)"]


def test_a_vip_without_prefix_length_warns_it_becomes_a_host_address():
    text = INSTANCE.replace("[192.0.2.100/24]", "[192.0.2.100/24, 192.0.2.101]")
    assert warnings_of(text) == [
        "w.yaml:6:35: vrrp_instances[0].virtual_ips[1]: 192.0.2.101 has no prefix length: it is added as "
        "192.0.2.101/32 with no subnet route (as keepalived does); write the interface's prefix "
        "(like 192.0.2.101/24), or /32 to say so"]


def test_a_vip_written_as_a_host_route_on_purpose_does_not_warn():
    assert warnings_of(INSTANCE.replace("192.0.2.100/24", "192.0.2.100/32")) == []


SERVICE = INSTANCE + """\
virtual_services:
  - address: 192.0.2.100
    port: 80
"""


def test_nat_by_default_with_real_servers_in_the_vip_subnet_on_the_same_port_looks_like_dr():
    text = SERVICE + "    real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12, port: 80}]\n"
    (w,) = warnings_of(text)
    assert w.startswith("w.yaml:8:14: virtual_services[0].address: forward is not set, so the real servers "
                        "get NAT (the default), but they are in the VIP's subnet 192.0.2.0/24 (VI_1)")
    assert "write forward: dr" in w and "or forward: nat" in w


@pytest.mark.parametrize("servers", [
    "    forward: nat\n    real_servers: [{address: 192.0.2.11}]\n",            # said so
    "    forward: dr\n    real_servers: [{address: 192.0.2.11}]\n",
    "    real_servers: [{address: 192.0.2.11, forward: nat}]\n",               # said so per server
    "    real_servers: [{address: 198.51.100.11}]\n",                            # behind the director
    "    real_servers: [{address: 192.0.2.11, port: 8080}]\n",                   # port mapped: NAT only
    "    real_servers: [{address: 192.0.2.11}, {address: 198.51.100.11}]\n",     # not all on the link
    "    real_servers: []\n",
], ids=["forward_nat", "forward_dr", "per_server_nat", "other_subnet", "port_mapped", "mixed", "none"])
def test_nat_services_that_do_not_look_like_dr_do_not_warn(servers):
    assert warnings_of(SERVICE + servers) == []


def test_a_service_whose_vip_has_no_prefix_gives_no_dr_guess():
    text = SERVICE.replace("192.0.2.100/24", "192.0.2.100/32") + "    real_servers: [{address: 192.0.2.11}]\n"
    assert warnings_of(text) == []


def test_a_quoted_number_as_a_duration_is_accepted_with_a_warning():
    loaded = parse(INSTANCE + "    preempt_delay: \"30\"\n", "w.yaml")
    assert loaded.config.vrrp_instances[0].preempt_delay == 30.0
    assert [str(w) for w in loaded.warnings] == [
        "w.yaml:7:20: vrrp_instances[0].preempt_delay: '30' is a string; remove the quotes (or give a unit: \"30s\")"]
    assert warnings_of(INSTANCE + "    preempt_delay: \"30s\"\n") == []


@pytest.mark.parametrize("value, expected", [
    ('"100"', "expected an integer 1..255, got '100', a string; remove the quotes"),
    ("'100'", "expected an integer 1..255, got '100', a string; remove the quotes"),
])
def test_a_quoted_integer_is_refused_saying_remove_the_quotes(value, expected):
    with pytest.raises(ConfigError) as info:
        parse(INSTANCE + f"    priority: {value}\n", "w.yaml")
    assert str(info.value) == f"w.yaml:7:15: vrrp_instances[0].priority: {expected}"


@pytest.mark.parametrize("text, message", [
    ("router_id: on", "expected a non-empty string, got on, which YAML 1.1 reads as true and YAML 1.2 as "
                      "text: write true, or \"on\" in quotes for text"),
    ("router_id: 1_000", "expected a non-empty string, got 1_000, which YAML 1.1 reads as 1000"),
    ("router_id: 12:30:00", "got 12:30:00, which YAML 1.1 reads as 45000 (base 60)"),
])
def test_yaml11_readings_are_refused_in_string_fields_too(text, message):
    with pytest.raises(ConfigError) as info:
        parse(f"node: {{{text}}}\n", "w.yaml")
    assert message in str(info.value)


def test_quoted_yaml11_lookalikes_are_plain_text():
    loaded = parse("node: {router_id: 'on', state_dir: /run/x}\n", "w.yaml")
    assert loaded.config.node.router_id == "on"


def test_yaml12_core_values_read_as_before():
    loaded = parse(INSTANCE + "    preempt: False\n    priority: +120\n    advert_interval: 1.5\n", "w.yaml")
    inst = loaded.config.vrrp_instances[0]
    assert (inst.preempt, inst.priority, inst.advert_interval) == (False, 120, 1.5)


def test_a_command_argument_keeps_its_text_whatever_yaml_11_would_make_of_it():
    text = INSTANCE + "    notify: {master: [/bin/echo, yes, 010, 1:30, 0x1F]}\n"
    inst = parse(text, "w.yaml").config.vrrp_instances[0]
    assert inst.notify.master == ("/bin/echo", "yes", "010", "1:30", "0x1F")


@pytest.mark.parametrize("name, problem", [
    ("eth0", None), ("bond0.100", None), ("a;b", None), ("x" * 15, None), ("vlan@eth0", None),
    ("", "an interface name cannot be empty"),
    ("x" * 16, "16 bytes long; Linux interface names have at most 15"),
    ("é" * 8, "16 bytes long; Linux interface names have at most 15"),
    (".", "'.' is not a valid interface name"),
    ("..", "'..' is not a valid interface name"),
    ("a/b", "Linux interface names cannot contain '/'"),
    ("a:b", "Linux interface names cannot contain ':'"),
    ("a b", "Linux interface names cannot contain spaces"),
    ("a\tb", "Linux interface names cannot contain '\\t'"),
    ("a\0b", "Linux interface names cannot contain NUL"),
    ("à", "Linux interface names cannot contain '\\xa0'"),      # UTF-8 C3 A0: the kernel's isspace(0xa0)
])
def test_interface_names_are_checked_like_the_kernels_dev_valid_name(name, problem):
    assert interface_problem(name) == problem
