"""The dns, udp, ping and smtp checks and dynamic scripts: keys, keepalived's defaults,
and clear errors (issue 13)."""

from __future__ import annotations

import textwrap

import pytest

from hadirector import model as m
from hadirector.config import ConfigError, parse_config
from hadirector.config.effective import effective_yaml


def service(check: str, protocol: str = "udp", port: int = 53) -> str:
    return textwrap.dedent(f"""\
        node: {{router_id: t}}
        virtual_services:
          - address: 192.0.2.10
            port: {port}
            protocol: {protocol}
            check: {check}
            real_servers: [{{address: 10.0.0.1}}]
        """)


def probe(check: str, **kw) -> object:
    cfg = parse_config(service(check, **kw), "t.yaml")
    return cfg.virtual_services[0].real_servers[0].check.probe


def errors(check: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(service(check, **kw), "t.yaml")
    return [str(i) for i in info.value.issues]


def test_dns_check_defaults_to_an_soa_query_for_the_root_expecting_noerror_as_keepalived():
    assert probe("{type: dns}") == m.DnsProbe(name=".", query_type="SOA", rcode="NOERROR", answer_regex=None)


def test_dns_check_takes_name_type_rcode_and_answer_regex():
    p = probe("{type: dns, name: www.example.com., query_type: AAAA, rcode: NXDOMAIN, answer_regex: '^2001:'}")
    assert p == m.DnsProbe("www.example.com.", "AAAA", "NXDOMAIN", "^2001:")


def test_dns_check_goes_over_udp_unless_tcp_is_asked_for():
    assert probe("{type: dns}").transport == "udp"
    assert probe("{type: dns, transport: tcp}").transport == "tcp"
    assert any("unknown DNS transport 'quic'" in e for e in errors("{type: dns, transport: quic}"))


@pytest.mark.parametrize("name", ["a..b", "-a.b", "a b", "x" * 64 + ".com", ".a"])
def test_dns_check_refuses_a_name_no_dns_server_would_accept(name):
    assert any("check.name: expected a DNS name" in e for e in errors(f"{{type: dns, name: '{name}'}}"))


def test_udp_check_sends_an_empty_datagram_by_default_and_silence_is_up():
    assert probe("{type: udp}") == m.UdpProbe(payload=b"", require_reply=False, reply_regex=None)


def test_udp_check_payload_as_text_or_hex_and_a_required_reply():
    assert probe("{type: udp, payload: ping}").payload == b"ping"
    p = probe("{type: udp, payload_hex: 'de ad be ef', require_reply: true, reply_regex: '^\\xde'}")
    assert p == m.UdpProbe(payload=b"\xde\xad\xbe\xef", require_reply=True, reply_regex="^\\xde")


def test_udp_check_refuses_both_payload_forms():
    assert any("payload_hex: give payload or payload_hex, not both" in e
               for e in errors("{type: udp, payload: a, payload_hex: '61'}"))


def test_ping_check_needs_no_port_even_on_a_portless_service():
    cfg = parse_config(textwrap.dedent("""\
        node: {router_id: t}
        virtual_services:
          - fwmark: 7
            check: {type: ping}
            real_servers: [{address: 10.0.0.1}]
        """), "t.yaml")
    assert cfg.virtual_services[0].real_servers[0].check.probe == m.PingProbe()


def test_smtp_check_says_helo_with_keepalived_s_default_name():
    assert probe("{type: smtp}", protocol="tcp", port=25) == m.SmtpProbe("smtpchecker.keepalived.org")
    assert probe("{type: smtp, helo_name: lb1.example.org}", protocol="tcp", port=25).helo_name == "lb1.example.org"


def test_script_check_is_dynamic_only_when_asked():
    assert probe("{type: script, command: /bin/true}").dynamic is False
    assert probe("{type: script, command: /bin/true, dynamic: true}").dynamic is True


@pytest.mark.parametrize("key", ["name: x", "payload: x", "helo_name: x", "require_reply: true"])
def test_a_probe_key_on_another_check_type_is_an_error_naming_its_type(key):
    assert any("not used by a tcp check" in e for e in errors(f"{{type: tcp, {key}}}"))


@pytest.mark.parametrize("check", [
    "{type: dns, name: example.com, query_type: MX, rcode: SERVFAIL, answer_regex: mail}",
    "{type: dns, transport: tcp}",
    "{type: udp, payload_hex: '0001', require_reply: true, reply_regex: '^\\x00'}",
    "{type: udp}",
    "{type: ping}",
    "{type: smtp, helo_name: lb1}",
    "{type: script, command: [/bin/sh, -c, 'exit 3'], dynamic: true}",
])
def test_config_effective_writes_the_new_probes_back_to_the_same_model(check):
    cfg = parse_config(service(check), "t.yaml")
    again = parse_config(effective_yaml(cfg), "t.yaml")
    assert again.virtual_services == cfg.virtual_services
