"""The YAML loader: valid files become exactly the expected model; mistakes become
ConfigIssues naming file, line, column and key path."""

from __future__ import annotations

import ipaddress
import socket
import textwrap

import pytest

from hadirector import model as m
from hadirector.config import ConfigError, ConfigIssue, load_config, parse_config
from hadirector.config.fields import parse_duration

ip = ipaddress.ip_address
iface = ipaddress.ip_interface


def parse(text: str) -> m.Config:
    return parse_config(textwrap.dedent(text), "test.yaml")


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [str(i) for i in info.value.issues]


FULL = """
node: {router_id: lvs1, log_format: json, state_dir: /var/lib/hadirector}
api: {listen: "[::1]:9200", enabled: true}
track_scripts:
  - name: chk_gw
    command: /usr/bin/ping -c1 -W1 '192.0.2.1'
    interval: 500ms
    timeout: 1s
    weight: -60
    rise: 2
    fall: 3
vrrp_instances:
  - name: VI_FRONT
    interface: eth0
    vrid: 51
    priority: 150
    version: 3
    advert_interval: 250ms
    virtual_ips: [192.0.2.100/24, 192.0.2.101]
    preempt: false
    preempt_delay: 30s
    accept_mode: true
    unicast_src: 192.0.2.2
    unicast_peers: [192.0.2.3]
    track_interfaces: [eth1, {name: eth2, weight: -10}]
    track_scripts: [chk_gw]
    notify:
      master: [/usr/local/sbin/notify, master]
      notify: /usr/local/sbin/notify --all
      timeout: 5s
    garp: {count: 3, interval: 10ms, repeat_delay: 2s, refresh: 1m}
  - name: VI_BACK
    interface: eth1
    vrid: 52
    version: 2
    advert_interval: 2
    virtual_ips: [198.51.100.1/24]
sync_groups:
  - name: G
    instances: [VI_FRONT, VI_BACK]
    notify: {fault: [/bin/logger, fault]}
lvs:
  program: master_only
  on_shutdown: remove
  sync_daemon:
    interface: eth1
    syncid: 7
    follow_instance: G
    mcast_group: 224.0.0.81
    port: 8849
    ttl: 2
    maxlen: 1400
    refresh_period: 2s
    catch_up: 5s
virtual_services:
  - name: web
    address: 192.0.2.100
    port: 80
    protocol: tcp
    scheduler: sh
    scheduler_flags: [sh-fallback, sh-port]
    persistence_timeout: 5m
    persistence_netmask: 24
    forward: dr
    inhibit_on_failure: true
    quorum: 2
    quorum_hysteresis: 1
    quorum_up: /usr/local/sbin/quorum up
    quorum_down: [/usr/local/sbin/quorum, down]
    check:
      type: https
      path: /healthz
      status_codes: [200, 204]
      body_regex: "^ok$"
      digest: 0123456789abcdef0123456789ABCDEF
      host: www.example.org
      verify_tls: false
      ca_file: /etc/ssl/ca.pem
      interval: 2s
      timeout: 1.5
      rise: 1
      fall: 2
      initial: down
      jitter: 100ms
      retry_delay: 500ms
      bind_to: 192.0.2.2
    real_servers:
      - {address: 192.0.2.11, weight: 100, upper_threshold: 1000, lower_threshold: 800}
      - address: 192.0.2.12
        port: 80
        check: {port: 8443, address: 192.0.2.112}
      - {address: 192.0.2.13, check: false}
    sorry_server: {address: 192.0.2.20, port: 8080, forward: nat}
  - fwmark: 10
    family: 6
    protocol: udp
    one_packet: true
    persistence_timeout: 60
    persistence_netmask: 64
    check: {type: script, command: [/usr/local/bin/probe, "--port", 53], interval: 1m}
    real_servers:
      - {address: "2001:db8::11", port: 53, forward: masq}
      - {address: "192.0.2.50", port: 53, forward: tun, tunnel_type: gue, tunnel_port: 6080, tunnel_checksum: csum}
"""


def test_full_config_loads_to_exactly_the_expected_model():
    https = m.HealthCheck(
        probe=m.HttpProbe(path="/healthz", tls=True, status_codes=(200, 204), body_regex="^ok$",
                          digest="0123456789abcdef0123456789ABCDEF", host="www.example.org",
                          verify_tls=False, ca_file="/etc/ssl/ca.pem"),
        interval=2.0, timeout=1.5, rise=1, fall=2, initial=m.InitialHealth.DOWN, jitter=0.1,
        retry_delay=0.5, bind_to=ip("192.0.2.2"))
    script = m.HealthCheck(probe=m.ScriptProbe(command=("/usr/local/bin/probe", "--port", "53")), interval=60.0)
    expected = m.Config(
        source="test.yaml",
        node=m.NodeSettings(router_id="lvs1", log_format=m.LogFormat.JSON, state_dir="/var/lib/hadirector"),
        api=m.ApiSettings(listen_host="::1", listen_port=9200, enabled=True),
        track_scripts=(m.TrackScript(name="chk_gw", command=("/usr/bin/ping", "-c1", "-W1", "192.0.2.1"),
                                     interval=0.5, timeout=1.0, weight=-60, rise=2, fall=3),),
        vrrp_instances=(
            m.VrrpInstance(
                name="VI_FRONT", interface="eth0", vrid=51, priority=150, version=3, advert_interval=0.25,
                virtual_ips=(iface("192.0.2.100/24"), iface("192.0.2.101/32")),
                preempt=False, preempt_delay=30.0, accept_mode=True,
                unicast_src=ip("192.0.2.2"), unicast_peers=(ip("192.0.2.3"),),
                track_interfaces=(m.TrackInterface("eth1"), m.TrackInterface("eth2", weight=-10)),
                track_scripts=("chk_gw",),
                notify=m.NotifyScripts(master=("/usr/local/sbin/notify", "master"),
                                       notify=("/usr/local/sbin/notify", "--all"), timeout=5.0),
                garp=m.GarpSettings(count=3, interval=0.01, repeat_delay=2.0, refresh=60.0)),
            m.VrrpInstance(name="VI_BACK", interface="eth1", vrid=52, version=2, advert_interval=2.0,
                           virtual_ips=(iface("198.51.100.1/24"),)),
        ),
        sync_groups=(m.SyncGroup(name="G", instances=("VI_FRONT", "VI_BACK"),
                                 notify=m.NotifyScripts(fault=("/bin/logger", "fault"))),),
        lvs=m.LvsSettings(program=m.ProgramMode.MASTER_ONLY, on_shutdown=m.ShutdownAction.REMOVE,
                          sync_daemon=m.SyncDaemon(interface="eth1", syncid=7, follow_instance="G",
                                                   mcast_group=ip("224.0.0.81"), port=8849, ttl=2, maxlen=1400,
                                                   refresh_period=2, catch_up=5.0)),
        virtual_services=(
            m.VirtualService(
                name="web", protocol=m.Protocol.TCP, address=ip("192.0.2.100"), port=80, family=4,
                scheduler="sh", scheduler_flags=("sh-fallback", "sh-port"), persistence_timeout=300,
                persistence_netmask="255.255.255.0", inhibit_on_failure=True, quorum=2, quorum_hysteresis=1,
                quorum_up=("/usr/local/sbin/quorum", "up"), quorum_down=("/usr/local/sbin/quorum", "down"),
                real_servers=(
                    # port 0 in the file: the service's, resolved at load
                    m.RealServer(address=ip("192.0.2.11"), port=80, port_from_service=True, weight=100,
                                 forward=m.ForwardMethod.DR, upper_threshold=1000, lower_threshold=800,
                                 check=https),
                    m.RealServer(address=ip("192.0.2.12"), port=80, forward=m.ForwardMethod.DR,
                                 check=m.HealthCheck(**{**vars(https), "port": 8443,
                                                        "address": ip("192.0.2.112")})),
                    m.RealServer(address=ip("192.0.2.13"), port=80, port_from_service=True,
                                 forward=m.ForwardMethod.DR, check=None),
                ),
                sorry_server=m.RealServer(address=ip("192.0.2.20"), port=8080, forward=m.ForwardMethod.NAT)),
            m.VirtualService(
                name="fwmark/10", protocol=m.Protocol.UDP, fwmark=10, family=6, one_packet=True,
                persistence_timeout=60, persistence_netmask="64",
                real_servers=(
                    m.RealServer(address=ip("2001:db8::11"), port=53, forward=m.ForwardMethod.NAT, check=script),
                    m.RealServer(address=ip("192.0.2.50"), port=53, forward=m.ForwardMethod.TUN,
                                 tunnel_type=m.TunnelType.GUE, tunnel_port=6080, tunnel_checksum="csum",
                                 check=script),
                )),
        ),
    )
    assert parse(FULL) == expected


def test_minimal_file_takes_the_model_defaults():
    config = parse("""
        node: {router_id: lvs1}
        vrrp_instances:
          - {name: VI_1, interface: eth0, vrid: 51, virtual_ips: ["2001:db8::100/64"]}
    """)
    assert config == m.Config(
        source="test.yaml", node=m.NodeSettings(router_id="lvs1"),
        vrrp_instances=(m.VrrpInstance(name="VI_1", interface="eth0", vrid=51,
                                       virtual_ips=(iface("2001:db8::100/64"),)),))
    assert config.vrrp_instances[0].family == 6


def test_router_id_defaults_to_the_host_name_like_keepalived():
    assert parse("virtual_services: []\n").node.router_id == socket.gethostname()
    assert parse("node: {log_format: json}\n").node.router_id == socket.gethostname()


def test_load_config_records_the_path_as_source(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("node: {router_id: a}\n")
    assert load_config(path).source == str(path)


@pytest.mark.parametrize("text, seconds", [
    ("3", 3.0), ("0.25", 0.25), ('"100ms"', 0.1), ('"2.5s"', 2.5), ('"1m"', 60.0),
    ('"1m30s"', 90.0), ('"1h"', 3600.0), ('"1.5"', 1.5), ('"250 ms"', 0.25),
])
def test_durations_are_seconds_or_strings_with_units(text, seconds):
    config = parse(f"track_scripts: [{{name: c, command: /bin/true, interval: {text}}}]\n")
    assert config.track_scripts[0].interval == seconds


@pytest.mark.parametrize("text", ["10x", "ms", "1m-5s", "", "-", "1 2s", "s1"])
def test_parse_duration_rejects_what_is_not_a_duration(text):
    assert parse_duration(text) is None


def test_commands_are_argv_lists_or_shell_like_strings_never_run_by_a_shell():
    config = parse("""
        track_scripts:
          - {name: a, command: "/usr/bin/check --name 'two words' $HOME | x"}
          - {name: b, command: [/usr/bin/check, 3, --flag]}
    """)
    assert config.track_scripts[0].command == ("/usr/bin/check", "--name", "two words", "$HOME", "|", "x")
    assert config.track_scripts[1].command == ("/usr/bin/check", "3", "--flag")


def test_advert_interval_keeps_centisecond_resolution():  # RFC 5798 5.2.7
    config = parse("""
        vrrp_instances:
          - {name: a, interface: eth0, vrid: 1, advert_interval: 40.95, virtual_ips: [192.0.2.1]}
          - {name: b, interface: eth0, vrid: 2, advert_interval: 10ms, virtual_ips: [192.0.2.2]}
          - {name: c, interface: eth0, vrid: 3, advert_interval: 0.3, virtual_ips: [192.0.2.3]}
    """)
    assert [i.advert_interval for i in config.vrrp_instances] == [40.95, 0.01, 0.3]


def test_same_vrid_is_allowed_on_another_interface_or_family():
    config = parse("""
        vrrp_instances:
          - {name: a, interface: eth0, vrid: 51, virtual_ips: [192.0.2.1]}
          - {name: b, interface: eth1, vrid: 51, virtual_ips: [198.51.100.1]}
          - {name: c, interface: eth0, vrid: 51, virtual_ips: ["2001:db8::1"]}
    """)
    assert len(config.vrrp_instances) == 3


VS_HEAD = """
virtual_services:
  - address: 192.0.2.100
    port: 80
    forward: dr
    check: {type: http, path: /healthz, interval: 5s, rise: 3}
    real_servers:
"""


def test_real_servers_inherit_the_service_forward_method_and_check():
    rs = parse(VS_HEAD + "      - {address: 192.0.2.11}\n").virtual_services[0].real_servers[0]
    assert rs.forward is m.ForwardMethod.DR
    assert rs.check == m.HealthCheck(probe=m.HttpProbe(path="/healthz"), interval=5.0, rise=3)


def test_real_server_check_is_merged_over_the_service_check():
    rs = parse(VS_HEAD + "      - {address: 192.0.2.11, check: {path: /deep, rise: 1}}\n").virtual_services[0].real_servers[0]
    assert rs.check == m.HealthCheck(probe=m.HttpProbe(path="/deep"), interval=5.0, rise=1)


def test_real_server_check_of_another_type_replaces_the_service_check():
    rs = parse(VS_HEAD + "      - {address: 192.0.2.11, check: {type: tcp, port: 8080}}\n").virtual_services[0].real_servers[0]
    assert rs.check == m.HealthCheck(probe=m.TcpProbe(), port=8080)


@pytest.mark.parametrize("off", ["false", "null", "~"])
def test_real_server_check_can_be_switched_off(off):
    rs = parse(VS_HEAD + f"      - {{address: 192.0.2.11, check: {off}}}\n").virtual_services[0].real_servers[0]
    assert rs.check is None


def test_real_server_forward_overrides_the_service_default():
    rs = parse(VS_HEAD + "      - {address: 192.0.2.11, forward: nat, port: 8080}\n").virtual_services[0].real_servers[0]
    assert rs.forward is m.ForwardMethod.NAT and rs.port == 8080


@pytest.mark.parametrize("text, method", [
    ("nat", m.ForwardMethod.NAT), ("masq", m.ForwardMethod.NAT), ("NAT", m.ForwardMethod.NAT),
    ("dr", m.ForwardMethod.DR), ("route", m.ForwardMethod.DR), ("direct", m.ForwardMethod.DR),
    ("tun", m.ForwardMethod.TUN), ("ipip", m.ForwardMethod.TUN), ("tunnel", m.ForwardMethod.TUN),
])
def test_forwarding_method_aliases_of_ipvsadm_and_keepalived(text, method):
    config = parse(f"virtual_services: [{{address: 192.0.2.1, port: 80, real_servers: [{{address: 192.0.2.2, forward: {text}}}]}}]\n")
    assert config.virtual_services[0].real_servers[0].forward is method


def test_service_without_name_is_named_after_its_key():
    config = parse("""
        virtual_services:
          - {address: 192.0.2.1, port: 53, protocol: udp}
          - {address: "2001:db8::1", port: 443}
          - {fwmark: 7}
    """)
    assert [vs.name for vs in config.virtual_services] == ["udp/192.0.2.1:53", "tcp/[2001:db8::1]:443", "fwmark/7"]
    assert [vs.family for vs in config.virtual_services] == [4, 6, 4]


def test_service_port_zero_is_allowed_with_persistence_as_in_ipvsadm():
    vs = parse("virtual_services: [{address: 192.0.2.1, port: 0, persistence_timeout: 1m}]\n").virtual_services[0]
    assert vs.port == 0 and vs.persistence_timeout == 60


def test_tunnel_forwarding_may_cross_address_families():
    config = parse("""
        virtual_services:
          - address: 192.0.2.1
            port: 80
            real_servers: [{address: "2001:db8::5", forward: tun}]
    """)
    assert config.virtual_services[0].real_servers[0].address == ip("2001:db8::5")


def test_yaml_anchors_live_under_x_keys_and_merge_keys_work():
    config = parse("""
        x-check: &web {type: http, path: /healthz, interval: 3s}
        virtual_services:
          - address: 192.0.2.1
            port: 80
            check: {<<: *web, interval: 1s}
            real_servers: [{address: 192.0.2.2}]
    """)
    assert config.virtual_services[0].real_servers[0].check == m.HealthCheck(
        probe=m.HttpProbe(path="/healthz"), interval=1.0)


def test_mistakes_in_different_places_are_all_reported_in_file_order():
    found = issues("""
        node: {router_id: a, bogus: 1}
        vrrp_instances:
          - {name: VI_1, interface: eth0, vrid: 256, virtual_ips: [192.0.2.1]}
        virtual_services:
          - {address: 192.0.2.1, port: 80, scheduler: nope}
        lvs: {sync_daemon: {interface: eth1, ttl: 0}}
    """)
    assert [f.split(": ")[0] for f in found] == [
        "test.yaml:2:22", "test.yaml:4:41", "test.yaml:6:47", "test.yaml:7:43"]
    assert [f.split(": ")[1] for f in found] == [
        "node.bogus", "vrrp_instances[0].vrid", "virtual_services[0].scheduler", "lvs.sync_daemon.ttl"]


def test_reference_checks_still_run_when_another_section_is_broken():
    found = issues("""
        vrrp_instances:
          - {name: VI_1, interface: eth0, vrid: 1, virtual_ips: [192.0.2.1], track_scripts: [missing]}
        track_scripts: []
        virtual_services:
          - {address: 192.0.2.1, port: 99999}
    """)
    assert any("track_scripts[0]: no track script named 'missing'" in f for f in found)
    assert any("virtual_services[0].port" in f for f in found)


def test_unknown_key_without_a_close_match_lists_the_valid_keys():
    (msg,) = issues("api: {zzz: 1}\n")
    assert msg == "test.yaml:1:7: api.zzz: unknown key; expected one of enabled, listen"


def test_sync_group_may_not_share_a_name_with_an_instance():
    (msg,) = issues("""
        vrrp_instances: [{name: X, interface: eth0, vrid: 1, virtual_ips: [192.0.2.1]}]
        sync_groups: [{name: X, instances: [X]}]
    """)
    assert "sync_groups[0].name: 'X' is also a vrrp instance name" in msg


def test_error_text_shows_ten_issues_and_counts_the_rest():
    text = "vrrp_instances:\n" + "".join(
        f"  - {{name: v{i}, interface: eth0, vrid: 300, virtual_ips: [192.0.2.{i}]}}\n" for i in range(12))
    with pytest.raises(ConfigError) as info:
        parse_config(text, "many.yaml")
    assert len(info.value.issues) == 12
    lines = str(info.value).splitlines()
    assert len(lines) == 11 and lines[-1] == "... and 2 more errors"


def test_unreadable_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


def test_issue_renders_as_file_line_column_path_message():
    assert str(ConfigIssue("etc/primary.yaml", 14, 7, "vrrp_instances[0].priority",
                           "expected an integer 1..255, got 300")) == \
        "etc/primary.yaml:14:7: vrrp_instances[0].priority: expected an integer 1..255, got 300"


def test_sections_with_every_key_commented_out_take_their_defaults():
    config = parse("""
        node:
          # router_id: lvs1
        api:
        lvs:
        vrrp_instances:
          - name: VI_1
            interface: eth0
            vrid: 1
            virtual_ips: [192.0.2.1]
            notify:
            garp:
        virtual_services:
    """)
    assert config.node.router_id == socket.gethostname()
    assert (config.api, config.lvs, config.virtual_services) == (m.ApiSettings(), m.LvsSettings(), ())
    assert config.vrrp_instances[0].notify == m.NotifyScripts()


def test_http_status_codes_are_codes_or_inclusive_ranges_like_keepalived():
    rs = parse(VS_HEAD + '      - {address: 192.0.2.11, check: {status_codes: [204, "200-299", 301-302]}}\n'
               ).virtual_services[0].real_servers[0]
    assert rs.check.probe.status_codes == (m.StatusRange(204, 204), m.StatusRange(200, 299), m.StatusRange(301, 302))
    assert rs.check.probe.accepts(250) and rs.check.probe.accepts(302) and not rs.check.probe.accepts(303)


@pytest.mark.parametrize("value", ['"299-200"', "200-700", "99", '"2xx"', "200-", '"-200"'])
def test_a_status_code_range_that_is_empty_or_out_of_range_is_refused(value):
    found = issues(VS_HEAD + f"      - {{address: 192.0.2.11, check: {{status_codes: [{value}]}}}}\n")
    assert len(found) == 1 and "status_codes[0]" in found[0], found


def test_a_real_server_port_zero_is_the_service_port_once_loaded_and_written_back_as_zero():
    from hadirector.config.effective import to_data

    config = parse("""
        virtual_services:
          - address: 192.0.2.1
            port: 443
            forward: dr
            real_servers: [{address: 192.0.2.10}, {address: 192.0.2.11, port: 8443}]
            sorry_server: {address: 192.0.2.99}
          - fwmark: 7
            real_servers: [{address: 192.0.2.20}]
    """)
    web, fw = config.virtual_services
    assert [(rs.port, rs.port_from_service) for rs in web.real_servers] == [(443, True), (8443, False)]
    assert (web.sorry_server.port, web.sorry_server.port_from_service) == (443, True)
    assert [(rs.port, rs.port_from_service) for rs in fw.real_servers] == [(0, False)]   # a mark has no port
    written = to_data(config)["virtual_services"][0]
    assert [rs["port"] for rs in written["real_servers"]] == [0, 8443]
    assert written["sorry_server"]["port"] == 0


def test_a_service_whose_ports_were_resolved_still_points_at_its_lines(tmp_path):
    # `hadirector check --host` reports IPVS problems against the loaded (port-resolved)
    # objects; they must map back to where the operator wrote them.
    from hadirector.config import loader

    path = tmp_path / "n.yaml"
    path.write_text(textwrap.dedent("""\
        node: {router_id: n1}
        virtual_services:
          - address: 10.0.0.100
            port: 80
            forward: dr
            real_servers: [{address: 10.0.0.2}]
        """))
    loaded = loader.load(path)
    vs = loaded.config.virtual_services[0]
    assert vs.real_servers[0].port == 80
    assert (loaded.issue(vs, None, "x").line, loaded.issue(vs, None, "x").column) == (3, 5)
    assert loaded.issue(vs.real_servers[0], "address", "x").line == 6


def test_health_engine_defaults_to_asyncio_and_worker_is_accepted():
    base = "node: {router_id: d1}\n"
    assert parse(base).health.engine is m.HealthEngine.ASYNCIO
    assert parse(base + "health: {engine: worker}\n").health.engine is m.HealthEngine.WORKER
    assert parse(base + "health:\n").health.engine is m.HealthEngine.ASYNCIO


def test_a_bad_health_engine_is_refused_naming_file_line_and_key():
    (msg,) = issues("node: {router_id: d1}\nhealth: {engine: threads}\n")
    assert msg == ("test.yaml:2:18: health.engine: unknown health engine 'threads'; "
                   "expected one of asyncio, worker")
