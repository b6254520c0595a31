"""BIRD beside the director: the rendered config (LB timers, learn only the agent's
protocol from its table) and the parsers of ``birdc`` output recorded from BIRD 2.0.12
in tests/netns/test_scaleout_bgp.py's lab."""

from __future__ import annotations

import pytest

from hadirector.scaleout import bird
from hadirector.config.loader import parse_config

CONFIG = """\
node: {router_id: d1}
virtual_services:
  - {name: web, address: 10.100.0.1, port: 80, scheduler: mh, scheduler_flags: [mh-fallback],
     forward: dr, real_servers: [{address: 10.2.0.11}]}
scale_out:
  services: [web]
  local_as: 65001
  router_id: 10.61.0.11
  table: 300
  route_protocol: 99
  peers: [{address: 10.61.0.1, asn: 65000}, {address: "2001:db8::1", asn: 65000}]
"""

PROTOCOLS = ("BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n"
             "device1    Device     ---        up     09:04:34.762  \n"
             "hadirector_gate Kernel     master4    up     09:04:34.762  \n"
             "hadirector_bfd BFD        ---        up     09:04:34.762  \n"
             "peer_10_61_0_1 BGP        ---        up     09:04:35.654  Established   \n"
             "peer_10_61_0_2 BGP        ---        start  2026-12-06 09:04:35  Idle          "
             "Error: BFD session down\n")
BFD = ("BIRD 2.0.12 ready.\nhadirector_bfd:\n"
       "IP address                Interface  State      Since         Interval  Timeout\n"
       "10.61.0.1                 eth0       Up         09:04:35.458    0.100    0.300\n"
       "10.61.0.2                 eth0       Down       09:04:36.458    1.000    0.000\n")


def test_the_rendered_config_has_load_balancer_timers_instead_of_birds_internet_defaults():
    text = bird.render(parse_config(CONFIG, "/etc/hadirector/hadirector.yaml"))
    assert "router id 10.61.0.11;" in text
    for line in ("hold time 9;", "connect retry time 2;", "error wait time 2, 20;", "bfd on;",
                 'interface "*" { interval 100 ms; multiplier 3; };'):
        assert line in text
    assert "neighbor 10.61.0.1 as 65000;" in text and "local as 65001;" in text


def test_the_kernel_protocol_learns_only_the_agents_routes_of_its_table_per_family():
    text = bird.render(parse_config(CONFIG))
    assert text.count("\n  kernel table 300;") == 2
    assert "ipv4 { import where krt_source = 99; export none; };" in text
    assert "ipv6 { import where krt_source = 99; export none; };" in text
    assert 'ipv4 { import none; export where proto = "hadirector_gate"; };' in text
    assert 'ipv6 { import none; export where proto = "hadirector_gate6"; };' in text
    assert "protocol bgp peer_2001_db8__1 {" in text


def test_render_refuses_a_config_without_scale_out():
    with pytest.raises(ValueError, match="no scale_out"):
        bird.render(parse_config("node: {router_id: x}\n"))


def test_show_protocols_is_parsed_into_bgp_session_states():
    states = {p.name: p for p in bird.parse_protocols(PROTOCOLS)}
    assert states["peer_10_61_0_1"].established
    assert states["peer_10_61_0_2"] == bird.ProtocolState("peer_10_61_0_2", "BGP", "start",
                                                          "Idle Error: BFD session down")
    assert not states["peer_10_61_0_2"].established
    assert states["hadirector_gate"].proto == "Kernel" and not states["hadirector_gate"].established


def test_show_bfd_sessions_is_parsed_per_neighbour():
    assert bird.parse_bfd_sessions(BFD) == [bird.BfdSession("10.61.0.1", "eth0", "Up"),
                                            bird.BfdSession("10.61.0.2", "eth0", "Down")]
    assert [s.up for s in bird.parse_bfd_sessions(BFD)] == [True, False]


def test_birdc_errors_parse_to_nothing():
    assert bird.parse_protocols("Unable to connect to server control socket (/x): No such file\n") == []
    assert bird.parse_bfd_sessions("") == []
