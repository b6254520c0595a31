"""LVS mappings: virtual_server(_group), real_server, checkers, quorum, flags.

Checker arithmetic follows keepalived (check_tcp.c tcp_epilog): a server goes down
after its first failure plus ``retry`` retries ``delay_before_retry`` apart, so
``fall = retry + 1``; one success brings it up, so ``rise = 1``.
"""

from __future__ import annotations

import ipaddress

import pytest

from hadirector import model as m

from .helpers import convert, load, notes, only


def ip(s: str):
    return ipaddress.ip_address(s)


def service(text: str, **kw):
    conv = convert(text, **kw)
    return conv, only(load(conv).virtual_services)


def test_virtual_server_core_fields():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo wrr
            lb_kind DR
            protocol TCP
            persistence_timeout 600
            persistence_granularity 255.255.255.0
            real_server 10.0.0.1 80 {
                weight 5
            }
        }
        """)
    assert vs == m.VirtualService(
        name="tcp/192.0.2.10:80", protocol=m.Protocol.TCP, address=ip("192.0.2.10"), port=80,
        family=4, scheduler="wrr", persistence_timeout=600, persistence_netmask="255.255.255.0",
        real_servers=(m.RealServer(address=ip("10.0.0.1"), port=80, weight=5,
                                   forward=m.ForwardMethod.DR),))
    assert notes(conv) == []


def test_lvs_sched_and_lvs_method_are_the_new_spellings():
    _, vs = service("""
        virtual_server 192.0.2.10 53 {
            lvs_sched sh
            lvs_method TUN
            protocol UDP
            real_server 10.0.0.1 53 {
            }
        }
        """)
    assert (vs.protocol, vs.scheduler) == (m.Protocol.UDP, "sh")
    assert vs.real_servers[0].forward is m.ForwardMethod.TUN


def test_no_lb_algo_means_keepalived_default_wlc_and_no_lb_kind_means_nat():
    conv, vs = service("virtual_server 192.0.2.10 80 {\n real_server 10.0.0.1 80 {\n }\n}\n")
    assert vs.scheduler == "wlc"
    assert vs.real_servers[0].forward is m.ForwardMethod.NAT
    assert any("no lb_algo" in n for n in notes(conv, "changed", "info"))


def test_persistence_timeout_without_a_value_is_ipvs_default_360():
    _, vs = service("virtual_server 192.0.2.10 0 {\n lb_algo rr\n persistence_timeout\n"
                    " real_server 10.0.0.1 {\n }\n}\n")
    assert (vs.port, vs.persistence_timeout) == (0, 360)


def test_real_server_lvs_method_overrides_the_virtual_servers_and_tun_options_carry_over():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            lb_kind DR
            real_server 10.0.0.1 80 {
            }
            real_server 10.0.0.2 80 {
                lvs_method TUN type gue port 6080 remcsum
            }
            real_server 10.0.0.3 80 {
                lvs_method NAT
            }
        }
        """)
    a, b, c = vs.real_servers
    assert a.forward is m.ForwardMethod.DR
    assert (b.forward, b.tunnel_type, b.tunnel_port, b.tunnel_checksum) == (
        m.ForwardMethod.TUN, m.TunnelType.GUE, 6080, "remcsum")
    assert c.forward is m.ForwardMethod.NAT


def test_fwmark_service_takes_its_family_from_the_real_servers():
    conv, vs = service("""
        virtual_server fwmark 5 {
            lb_algo rr
            lb_kind DR
            real_server 2001:db8::1 {
                TCP_CHECK {
                    connect_port 443
                }
            }
        }
        """)
    assert (vs.name, vs.fwmark, vs.family, vs.key) == ("fwmark/5", 5, 6, ("fwmark", 6, 5))
    assert vs.real_servers[0].check.port == 443


def test_fwmark_check_without_any_port_is_dropped_with_a_note():
    conv, vs = service("""
        virtual_server fwmark 5 {
            lb_algo rr
            real_server 10.0.0.1 {
                TCP_CHECK {
                }
            }
        }
        """)
    assert vs.real_servers[0].check is None
    assert any("has no port" in n for n in notes(conv, "lost"))


def test_virtual_server_group_is_expanded_with_keepalived_range_rules():
    conv = convert("""
        virtual_server_group WEB {
            192.0.2.1-3 80
            192.0.2.250-192.0.3.1 80
            198.51.100.0/31 443
            2001:db8::a-c 80
            fwmark 9 inet6
        }
        virtual_server group WEB {
            lb_algo rr
            real_server 10.0.0.1 8080 {
            }
            real_server 2001:db8:1::1 8080 {
                lvs_method TUN
            }
        }
        """)
    services = load(conv).virtual_services
    v4 = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.250", "192.0.2.251", "192.0.2.252",
          "192.0.2.253", "192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1"]
    expected = [("tcp", ip(a), 80) for a in v4]
    expected += [("tcp", ip("198.51.100.0"), 443), ("tcp", ip("198.51.100.1"), 443)]
    # IPv6 range ends are hex, on the last 16-bit group (inet_stor in keepalived's utils.c).
    expected += [("tcp", ip(f"2001:db8::{x}"), 80) for x in "abc"]
    expected += [("fwmark", 6, 9)]
    assert [vs.key for vs in services] == expected
    assert services[0].name == "WEB/tcp/192.0.2.1:80"
    assert services[-1].name == "WEB/fwmark/9/ipv6"
    # The NAT real server is IPv4: IPv4 services get both, IPv6 ones only the tunnel.
    assert [str(rs.address) for rs in services[0].real_servers] == ["10.0.0.1", "2001:db8:1::1"]
    assert [str(rs.address) for rs in services[-1].real_servers] == ["2001:db8:1::1"]
    assert sum("10.0.0.1 is not IPv6 and not tunnelled" in n for n in notes(conv, "lost")) == 4


def test_undefined_virtual_server_group_is_skipped_with_its_line():
    conv = convert("\nvirtual_server group NOPE {\n lb_algo rr\n}\n")
    assert notes(conv, "lost") == [
        "lost: keepalived.conf:2: virtual_server group NOPE: virtual_server_group NOPE not defined; skipped"]


def test_tcp_check_with_keepalived_defaults():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            real_server 10.0.0.1 80 {
                TCP_CHECK {
                }
            }
        }
        """)
    # delay_loop 60 s, connect_timeout 5 s, retry 1 with delay_before_retry 1 s.
    assert vs.real_servers[0].check == m.HealthCheck(
        probe=m.TcpProbe(), interval=60.0, timeout=5.0, rise=1, fall=2, retry_delay=1.0)


def test_retry_n_means_fall_n_plus_one_and_delay_before_retry_is_the_retry_delay():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            delay_loop 3
            real_server 10.0.0.1 80 {
                TCP_CHECK {
                    connect_ip 10.0.1.1
                    connect_port 8080
                    bindto 10.0.0.254
                    connect_timeout 2
                    retry 4
                    delay_before_retry 0.5
                }
            }
            real_server 10.0.0.2 80 {
                TCP_CHECK {
                    retry 0
                }
            }
        }
        """)
    a, b = vs.real_servers
    assert a.check == m.HealthCheck(
        probe=m.TcpProbe(), interval=3.0, timeout=2.0, rise=1, fall=5, retry_delay=0.5,
        address=ip("10.0.1.1"), port=8080, bind_to=ip("10.0.0.254"))
    assert (b.check.fall, b.check.retry_delay) == (1, None)


def test_checker_settings_are_inherited_virtual_server_then_real_server_then_checker():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            delay_loop 10
            connect_timeout 4
            retry 2
            real_server 10.0.0.1 80 {
                delay_loop 7
                TCP_CHECK {
                }
            }
            real_server 10.0.0.2 80 {
                TCP_CHECK {
                    delay_loop 2
                    retry 1
                }
            }
        }
        """)
    a, b = (rs.check for rs in vs.real_servers)
    assert (a.interval, a.timeout, a.fall) == (7.0, 4.0, 3)
    assert (b.interval, b.timeout, b.fall) == (2.0, 4.0, 2)


def test_http_get_url_status_codes_digest_and_virtualhost():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            virtualhost www.example.org
            real_server 10.0.0.1 80 {
                HTTP_GET {
                    url {
                        path /health?full=1
                        status_code 200-202 204 301
                        digest 9B3A0C85A887A256D6939DA88AABD8CD
                    }
                    nb_get_retry 2
                }
            }
        }
        """)
    check = vs.real_servers[0].check
    assert check.probe == m.HttpProbe(path="/health?full=1", status_codes=(m.StatusRange(200, 202), 204, 301),
                                      digest="9b3a0c85a887a256d6939da88aabd8cd",
                                      host="www.example.org")
    # HTTP_GET's delay_before_retry defaults to 3 s (check_http.c).
    assert (check.fall, check.retry_delay) == (3, 3.0)


def test_http_status_codes_default_to_any_2xx_like_keepalived():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            real_server 10.0.0.1 80 {
                HTTP_GET {
                    url {
                        path /
                    }
                }
            }
        }
        """)
    assert vs.real_servers[0].check.probe.status_codes == (m.StatusRange(200, 299),)


def test_ssl_get_is_https_without_certificate_verification_like_keepalived():
    _, vs = service("""
        virtual_server 192.0.2.10 443 {
            lb_algo rr
            real_server 10.0.0.1 443 {
                SSL_GET {
                    url {
                        path /
                        status_code 200
                    }
                    url {
                        path /second
                    }
                }
                TCP_CHECK {
                }
            }
        }
        """)
    probe = vs.real_servers[0].check.probe
    assert (probe.tls, probe.verify_tls, probe.path) == (True, False, "/")


def test_second_url_and_second_checker_are_listed_as_skipped():
    conv = convert("""
        virtual_server 192.0.2.10 443 {
            lb_algo rr
            real_server 10.0.0.1 443 {
                SSL_GET {
                    url {
                        path /
                    }
                    url {
                        path /second
                    }
                }
                TCP_CHECK {
                }
            }
        }
        """)
    assert notes(conv, "lost") == [
        "lost: keepalived.conf:9: url /second: hadirector checks one URL per real server; skipped "
        "(only / is checked)",
        "lost: keepalived.conf:13: TCP_CHECK: hadirector runs one check per real server; this second "
        "checker is skipped",
    ]


def test_misc_check_becomes_a_script_check_and_its_timeout_defaults_to_delay_loop():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            delay_loop 15
            real_server 10.0.0.1 80 {
                MISC_CHECK {
                    misc_path "/usr/local/bin/check_web 10.0.0.1 --port 80"
                }
            }
            real_server 10.0.0.2 80 {
                MISC_CHECK {
                    misc_path /usr/local/bin/check_web
                    misc_timeout 4
                    misc_dynamic
                }
            }
        }
        """)
    a, b = (rs.check for rs in vs.real_servers)
    # MISC_CHECK's retry defaults to 0: the first failure takes it down (check_misc.c).
    assert a == m.HealthCheck(
        probe=m.ScriptProbe(("/usr/local/bin/check_web", "10.0.0.1", "--port", "80")),
        interval=15.0, timeout=15.0, rise=1, fall=1)
    assert (b.timeout, b.probe.command) == (4.0, ("/usr/local/bin/check_web",))


def test_unsupported_checker_is_listed_with_its_line_and_the_server_has_no_check():
    conv, vs = service("""
        virtual_server 192.0.2.10 25 {
            lb_algo rr
            real_server 10.0.0.1 25 {
                BFD_CHECK {
                    name bfd_1
                }
            }
        }
        """)
    assert notes(conv) == [
        "lost: keepalived.conf:5: BFD_CHECK of real_server 10.0.0.1 25 in virtual_server "
        "192.0.2.10 25 is not converted: hadirector has no BFD probe",
        "lost: keepalived.conf:4: real_server 10.0.0.1 25 in virtual_server 192.0.2.10 25: no "
        "convertible checker, so it has no health check: always considered up"]
    assert vs.real_servers[0].check is None


def test_alpha_starts_real_servers_down():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            alpha
            real_server 10.0.0.1 80 {
                TCP_CHECK {
                }
            }
        }
        """)
    assert vs.real_servers[0].check.initial is m.InitialHealth.DOWN


def test_without_alpha_real_servers_wait_for_their_first_check():
    _, vs = service("virtual_server 192.0.2.10 80 {\n lb_algo rr\n real_server 10.0.0.1 80 {\n"
                    "  TCP_CHECK {\n  }\n }\n}\n")
    assert vs.real_servers[0].check.initial is m.InitialHealth.UNKNOWN


def test_sorry_server_inhibit_on_failure_and_thresholds():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo wlc
            lb_kind DR
            sorry_server 10.0.9.9 8080
            sorry_server_lvs_method NAT
            real_server 10.0.0.1 80 {
                inhibit_on_failure
                uthreshold 500
                lthreshold 400
            }
        }
        """)
    assert vs.sorry_server == m.RealServer(address=ip("10.0.9.9"), port=8080, weight=1,
                                           forward=m.ForwardMethod.NAT)
    assert vs.inhibit_on_failure is True
    rs = vs.real_servers[0]
    assert (rs.upper_threshold, rs.lower_threshold) == (500, 400)


def test_inhibit_on_failure_on_some_real_servers_only_applies_to_the_service_with_a_note():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            real_server 10.0.0.1 80 {
                inhibit_on_failure
            }
            real_server 10.0.0.2 80 {
            }
        }
        """)
    assert vs.inhibit_on_failure is True
    assert any("some real servers only" in n for n in notes(conv, "changed", "info"))


def test_quorum_hysteresis_and_quorum_scripts():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            quorum 3
            hysteresis 1
            quorum_up "/usr/local/sbin/bgp announce 192.0.2.10"
            quorum_down /usr/local/sbin/bgp-withdraw
            omega
            real_server 10.0.0.1 80 {
                weight 3
            }
        }
        """)
    assert (vs.quorum, vs.quorum_hysteresis) == (3, 1)
    assert vs.quorum_up == ("/usr/local/sbin/bgp", "announce", "192.0.2.10")
    assert vs.quorum_down == ("/usr/local/sbin/bgp-withdraw",)
    assert any(n.startswith("lost: keepalived.conf:8: omega") for n in notes(conv, "lost"))


def test_scheduler_flags_by_name_and_by_number():
    _, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo sh
            sh-port
            flag-1
            real_server 10.0.0.1 80 {
            }
        }
        """)
    # IP_VS_SVC_F_SCHED1 is sh-fallback, SCHED2 sh-port.
    assert vs.scheduler_flags == ("sh-port", "sh-fallback")


def test_lvs_flags_lists_several_flags_on_one_line():
    conv, vs = service("""
        virtual_server 192.0.2.10 53 {
            lb_algo mh
            protocol UDP
            lvs_flags mh-port mh-fallback ops hashed
            real_server 10.0.0.1 53 {
            }
        }
        """)
    assert (vs.scheduler_flags, vs.one_packet) == (("mh-port", "mh-fallback"), True)
    assert notes(conv, "lost") == [
        "lost: keepalived.conf:5: hashed not supported for scheduler mh, skipped"]


def test_scheduler_flag_of_another_scheduler_is_skipped_as_keepalived_does():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            mh-port
            real_server 10.0.0.1 80 {
            }
        }
        """)
    assert vs.scheduler_flags == ()
    assert any(n.startswith("info: keepalived.conf:4: mh-port applies only to the mh scheduler")
               for n in notes(conv, "info"))


def test_ops_is_one_packet_scheduling_for_udp_only():
    _, vs = service("virtual_server 192.0.2.10 53 {\n lb_algo rr\n protocol UDP\n ops\n"
                    " real_server 10.0.0.1 53 {\n }\n}\n")
    assert vs.one_packet is True
    conv, vs = service("virtual_server 192.0.2.10 80 {\n lb_algo rr\n ops\n"
                       " real_server 10.0.0.1 80 {\n }\n}\n")
    assert vs.one_packet is False
    assert any("ops applies to UDP services only" in n for n in notes(conv, "lost"))


def test_virtual_server_weight_is_the_default_real_server_weight():
    _, vs = service("virtual_server 192.0.2.10 80 {\n lb_algo rr\n weight 4\n"
                    " real_server 10.0.0.1 80 {\n }\n real_server 10.0.0.2 80 {\n weight 9\n }\n}\n")
    assert [rs.weight for rs in vs.real_servers] == [4, 9]


def test_lvs_settings_match_keepalived_remove_on_stop_and_program_on_both_nodes():
    conv, _ = service("virtual_server 192.0.2.10 80 {\n lb_algo rr\n real_server 10.0.0.1 80 {\n }\n}\n")
    lvs = load(conv).lvs
    assert (lvs.program, lvs.on_shutdown) == (m.ProgramMode.ALWAYS, m.ShutdownAction.REMOVE)


def test_bad_values_skip_only_their_statement_with_the_reason():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo roundrobin
            real_server 10.0.0.1 80 {
                weight heavy
            }
            real_server not-an-ip 80 {
            }
        }
        """)
    assert notes(conv, "lost") == [
        "lost: keepalived.conf:3: scheduler 'roundrobin' unknown; lb_algo skipped",
        "lost: keepalived.conf:5: weight 'heavy' is not an integer; weight skipped",
        "lost: keepalived.conf:7: real_server not-an-ip 80: real_server address 'not-an-ip' is not an "
        "IP address; skipped",
    ]
    assert [str(rs.address) for rs in vs.real_servers] == ["10.0.0.1"]


def test_warmup_becomes_the_check_jitter_with_a_note_that_it_applies_to_every_check():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            warmup 10
            real_server 10.0.0.1 80 {
                TCP_CHECK {
                }
            }
            real_server 10.0.0.2 80 {
                TCP_CHECK {
                    warmup 0
                }
            }
        }
        """)
    assert [rs.check.jitter for rs in vs.real_servers] == [10.0, 0.0]
    assert notes(conv) == [
        "changed: keepalived.conf:4: warmup 10: converted to the check jitter, which delays every "
        "check (not only the first, as keepalived does) by up to 10s, so checks come on average "
        "5s further apart"]


def test_status_code_ranges_stay_ranges_and_accept_the_same_codes():
    conv, vs = service("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            real_server 10.0.0.1 80 {
                HTTP_GET {
                    url {
                        path /health
                        status_code 200-204 301 400-401
                    }
                }
            }
        }
        """)
    probe = vs.real_servers[0].check.probe
    assert probe.status_codes == (m.StatusRange(200, 204), m.StatusRange(301, 301), m.StatusRange(400, 401))
    assert [c for c in range(100, 600) if probe.accepts(c)] == [200, 201, 202, 203, 204, 301, 400, 401]
    assert "200-204" in conv.to_yaml() and "400-401" in conv.to_yaml()
    assert notes(conv) == []


@pytest.mark.parametrize("checker,probe", [("BFD_CHECK", "BFD"), ("FILE_CHECK", "file")])
def test_checkers_without_a_probe_are_lost_loudly_with_their_server_and_line(checker, probe):
    conv, vs = service(f"""
        virtual_server 192.0.2.10 53 {{
            lb_algo rr
            real_server 10.0.0.7 53 {{
                {checker} {{
                    retry 2
                }}
                TCP_CHECK {{
                    connect_port 22
                }}
            }}
        }}
        """)
    # The other checker still converts; the lost one is named with its real server.
    assert vs.real_servers[0].check.port == 22
    assert notes(conv) == [
        f"lost: keepalived.conf:5: {checker} of real_server 10.0.0.7 53 in virtual_server "
        f"192.0.2.10 53 is not converted: hadirector has no {probe} probe"]
