"""``scale_out:``: the services it lists must be carriable by N directors at once, and
every mistake is an error at its file:line:key (shared/scale-out.md 1b)."""

from __future__ import annotations

import pytest

from hadirector import model as m
from hadirector.config import ConfigError
from hadirector.config.effective import effective_yaml
from hadirector.config.loader import parse_config

SERVICE = """\
virtual_services:
  - name: web
    address: 10.100.0.1
    port: 80
    scheduler: {scheduler}
    scheduler_flags: {flags}
    forward: {forward}
    real_servers: [{{address: 10.2.0.11}}, {{address: 10.2.0.12}}]
"""
SCALE_OUT = """\
scale_out:
  services: [web]
  local_as: 65001
  peers: [{address: 10.1.0.1, asn: 65000}]
"""


def config(scheduler="mh", flags="[mh-fallback, mh-port]", forward="dr", scale_out=SCALE_OUT, extra=""):
    return "node: {router_id: d1}\n" + SERVICE.format(scheduler=scheduler, flags=flags, forward=forward) \
        + extra + scale_out


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "so.yaml")
    return [str(i) for i in e.value.issues]


def test_a_dr_mh_service_with_fallback_is_scaled_out_with_lb_timers_by_default():
    so = parse_config(config()).scale_out
    assert so == m.ScaleOut(services=("web",), local_as=65001,
                            peers=(m.BgpPeer(m.IPAddress.__args__[0]("10.1.0.1"), 65000),))
    assert (so.table, so.route_protocol, so.min_healthy) == (201, 201, 1)
    assert (so.hold_time, so.connect_retry, so.error_wait_min, so.error_wait_max) == (9, 2, 2, 20)
    assert (so.bfd, so.bfd_interval, so.bfd_multiplier) == (True, 0.1, 3)


def test_no_scale_out_section_means_none():
    assert parse_config(config(scale_out="")).scale_out is None


def test_forward_nat_is_refused_at_the_forward_key_the_real_servers_inherit():
    # Both real servers inherit the service's forward: one error, at that key.
    assert issues(config(forward="nat")) == [
        "so.yaml:8:14: virtual_services[0].real_servers[0].forward: forward nat cannot be scaled out "
        "(replies must return through the director holding the entry); use forward: dr or tun"]


def test_a_real_server_left_at_the_default_nat_is_refused_too():
    text = config().replace("    forward: dr\n", "")
    found = issues(text)
    assert found and all("forward nat cannot be scaled out" in f for f in found)
    assert "real_servers[0].forward" in found[0]


def test_a_scheduler_other_than_mh_is_refused_at_the_scheduler_key():
    assert issues(config(scheduler="rr", flags="[]")) == [
        "so.yaml:6:16: virtual_services[0].scheduler: scale_out needs scheduler mh (the same real server "
        "for a flow on every director), got 'rr'"]


def test_mh_without_mh_fallback_is_refused_at_the_scheduler_flags_key():
    [issue] = issues(config(flags="[mh-port]"))
    assert issue.startswith("so.yaml:7:22: virtual_services[0].scheduler_flags: scale_out needs the mh-fallback flag")


def test_missing_bgp_settings_are_named():
    assert issues(config(scale_out="scale_out:\n  services: [web]\n  peers: [{address: 10.1.0.1, asn: 1}]\n")) \
        == ["so.yaml:11:3: scale_out.local_as: missing required key"]
    assert issues(config(scale_out="scale_out:\n  services: [web]\n  local_as: 65001\n")) \
        == ["so.yaml:11:3: scale_out.peers: missing required key"]


def test_an_unknown_service_name_lists_the_defined_ones():
    [issue] = issues(config(scale_out=SCALE_OUT.replace("[web]", "[web, api]")))
    assert issue == "so.yaml:11:19: scale_out.services[1]: no virtual service named 'api' (defined: 'web')"


def test_a_sorry_server_is_refused_because_the_vip_is_withdrawn_instead():
    text = config().replace("    real_servers:", "    sorry_server: {address: 10.2.0.99}\n    real_servers:")
    [issue] = issues(text)
    assert "virtual_services[0].sorry_server: a scale_out service has no sorry server" in issue


def test_a_fwmark_service_has_no_address_to_announce():
    text = config().replace("    address: 10.100.0.1\n    port: 80\n", "    fwmark: 7\n")
    found = issues(text)
    assert any("virtual_services[0].fwmark: a scale_out service needs an address to announce" in f for f in found)


@pytest.mark.parametrize("key,value,message", [
    ("table", 254, "scale_out.table: table 254 is the kernel's main table"),
    ("table", 255, "scale_out.table: table 255 is the kernel's local table"),
    ("route_protocol", 2, "scale_out.route_protocol: protocol 2 is reserved (kernel)"),
    ("route_protocol", 12, "scale_out.route_protocol: protocol 12 is reserved (bird)"),
    ("hold_time", 2, "scale_out.hold_time: expected 3..65535 s (RFC 4271 4.2), got 2"),
    ("error_wait_min", 30, "scale_out.error_wait_min: expected error_wait_min <= error_wait_max (20), got 30"),
    ("min_healthy", 0, "scale_out.min_healthy: expected an integer 1..65535, got 0"),
])
def test_bad_scale_out_values_are_errors_at_their_key(key, value, message):
    [issue] = issues(config(scale_out=SCALE_OUT + f"  {key}: {value}\n"))
    assert message in issue and issue.startswith("so.yaml:1")


def test_a_service_or_peer_listed_twice_is_an_error():
    text = config(scale_out=SCALE_OUT.replace("[web]", "[web, web]").replace(
        "peers: [{address: 10.1.0.1, asn: 65000}]",
        "peers: [{address: 10.1.0.1, asn: 65000}, {address: 10.1.0.1, asn: 65000}]"))
    found = issues(text)
    assert any("scale_out.services[1]: service 'web' is listed twice" in f for f in found)
    assert any("scale_out.peers[1]: peer 10.1.0.1 is listed twice" in f for f in found)


def test_the_effective_config_of_a_scale_out_node_loads_to_the_same_model():
    cfg = parse_config(config(scale_out=SCALE_OUT + "  router_id: 10.1.0.11\n  hold_down: 500ms\n"))
    again = parse_config(effective_yaml(cfg))
    assert again.scale_out == cfg.scale_out


def test_a_vip_of_a_family_no_peer_speaks_is_an_error_at_the_address():
    text = config().replace("address: 10.100.0.1", 'address: "2001:db8::10"').replace(
        "{address: 10.2.0.11}, {address: 10.2.0.12}", '{address: "2001:db8::11"}')
    assert issues(text) == ["so.yaml:4:14: virtual_services[0].address: no IPv6 peer in scale_out.peers "
                            "to announce 2001:db8::10 to"]
