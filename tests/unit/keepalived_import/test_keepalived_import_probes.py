"""DNS_CHECK, UDP_CHECK, PING_CHECK, SMTP_CHECK and misc_dynamic convert to hadirector's
dns, udp, ping and smtp checks and dynamic scripts with keepalived's defaults, so no
real server is left "always up" (issue 13)."""

from __future__ import annotations

import re

import pytest

from hadirector import model as m
from hadirector.config.keepalived.lvs import hex_octets, udp_reply_regex

from .helpers import convert, load, notes, only


def service(text: str):
    conv = convert(text)
    return conv, only(load(conv).virtual_services)


def check_of(body: str, port: int = 53):
    conv, vs = service(f"""
        virtual_server 192.0.2.10 {port} {{
            lb_algo rr
            protocol UDP
            real_server 10.0.0.7 {port} {{
                {body}
            }}
        }}
        """)
    return conv, vs.real_servers[0].check


def test_dns_check_defaults_to_the_root_soa_with_three_retries_a_delay_loop_apart():
    conv, c = check_of("DNS_CHECK {\n}")
    assert c.probe == m.DnsProbe(name=".", query_type="SOA", rcode="NOERROR")
    # check_dns.c: DNS_DEFAULT_RETRY 3, delay_before_retry 0 -> delay_loop (60 s default).
    assert (c.interval, c.fall, c.retry_delay, c.port) == (60.0, 4, 60.0, None)
    assert notes(conv) == []


def test_dns_check_keeps_type_name_and_connection_settings():
    _, c = check_of("DNS_CHECK {\n connect_port 5353\n connect_timeout 2\n type a\n name www.example.com\n}")
    assert c.probe == m.DnsProbe(name="www.example.com", query_type="A")
    assert (c.port, c.timeout) == (5353, 2.0)


def test_dns_check_with_an_unknown_type_keeps_soa_and_says_so_as_keepalived_ignores_it():
    conv, c = check_of("DNS_CHECK {\n type AXFR\n}")
    assert c.probe.query_type == "SOA"
    assert any(n.startswith("lost") and "DNS check type 'AXFR' is not one of" in n for n in notes(conv))


def test_udp_check_payload_and_required_reply_become_bytes_and_a_regex():
    _, c = check_of("UDP_CHECK {\n payload de ad 0 1f\n require_reply 4X 4\n min_reply_length 2\n}")
    assert c.probe.payload == bytes.fromhex("dead001f")
    assert c.probe.require_reply is True
    rx = re.compile(c.probe.reply_regex.encode("latin-1"))
    assert rx.search(b"\x41\x04rest") and rx.search(b"\x4f\x04")
    assert not rx.search(b"\x51\x04") and not rx.search(b"\x41\x05")
    assert not rx.search(b"\x41")                       # shorter than min_reply_length 2
    assert not rx.search(b"\x41\x04" + bytes(300))     # longer than the default max 255


def test_udp_check_without_require_reply_takes_silence_as_up_like_keepalived():
    _, c = check_of("UDP_CHECK {\n connect_timeout 3\n}")
    assert c.probe == m.UdpProbe(payload=b"", require_reply=False, reply_regex=None)


def test_keepalived_hex_strings_are_read_like_read_hex_str():
    assert hex_octets("0102 a", "p") == [1, 2, 10]
    assert hex_octets("4X", "r", wildcard=True) == ["4X"]
    with pytest.raises(Exception):
        hex_octets("4X", "payload")
    assert udp_reply_regex([0x41], 0, 255) == r"(?s)^(?=.{0,255}\Z)\x41"


def test_ping_check_needs_no_port():
    conv, c = check_of("PING_CHECK {\n retry 4\n}")
    assert (c.probe, c.fall, c.port) == (m.PingProbe(), 5, None)
    assert notes(conv) == []


def test_smtp_check_says_keepalived_s_helo_name_unless_given():
    _, c = check_of("SMTP_CHECK {\n}", port=25)
    assert c.probe == m.SmtpProbe("smtpchecker.keepalived.org")
    _, c = check_of('SMTP_CHECK {\n helo_name "mx.example.org"\n}', port=25)
    assert c.probe.helo_name == "mx.example.org"


def test_smtp_check_without_connection_settings_goes_to_its_first_host_and_loses_the_others():
    conv, c = check_of("SMTP_CHECK {\n host {\n connect_ip 10.0.0.8\n connect_port 587\n }\n"
                       " host {\n connect_ip 10.0.0.9\n }\n}", port=25)
    assert (str(c.address), c.port) == ("10.0.0.8", 587)
    assert [n for n in notes(conv) if n.startswith("lost")] == [
        "lost: keepalived.conf:11: SMTP_CHECK host 10.0.0.9: hadirector runs one check per real "
        "server; this host is not checked"]


def test_misc_dynamic_becomes_a_dynamic_script_check():
    conv, c = check_of("MISC_CHECK {\n misc_path /usr/local/bin/weight.sh\n misc_dynamic\n}")
    assert c.probe == m.ScriptProbe(("/usr/local/bin/weight.sh",), dynamic=True)
    assert notes(conv) == []
