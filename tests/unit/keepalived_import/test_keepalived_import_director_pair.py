"""A realistic director pair (keepalived master + backup sharing an included LVS file)
converts into exactly the model a hand-written hadirector config would give."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from hadirector import model as m
from hadirector.config import parse_config
from hadirector.config.keepalived import convert_file

NODE = """\
! {router_id}: keepalived {role} director
global_defs {{
    router_id {router_id}
    vrrp_version 3
    vrrp_garp_master_refresh 60
    lvs_sync_daemon eth1 VI_WEB id 51 maxlen 1400
}}

vrrp_script chk_ipvs {{
    script "/usr/local/bin/check-ipvs --quiet"
    interval 2
    timeout 3
    rise 2
    fall 3
    weight -60
}}

vrrp_sync_group DIRECTOR {{
    group {{
        VI_WEB
        VI_GW
    }}
    notify_master "/etc/keepalived/notify.sh master"
    notify_backup "/etc/keepalived/notify.sh backup"
    notify_fault  "/etc/keepalived/notify.sh fault"
}}

vrrp_instance VI_WEB {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 0.5
    {preempt}
    unicast_src_ip {src}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        198.51.100.10/24 dev eth0
        198.51.100.11/24
    }}
    track_interface {{
        eth1 weight -30
    }}
    track_script {{
        chk_ipvs
    }}
    garp_master_delay 2
    garp_master_repeat 3
}}

vrrp_instance VI_GW {{
    state {state}
    interface eth1
    virtual_router_id 52
    priority {priority}
    advert_int 0.5
    {preempt}
    virtual_ipaddress {{
        10.0.0.1/24
    }}
}}

include lvs/*.conf
"""

LVS = """\
virtual_server 198.51.100.10 80 {
    delay_loop 5
    lb_algo wlc
    lb_kind NAT
    protocol TCP
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    quorum 2
    hysteresis 1
    quorum_up "/usr/local/bin/announce up 198.51.100.10"
    quorum_down "/usr/local/bin/announce down 198.51.100.10"
    sorry_server 10.0.0.99 8080

    real_server 10.0.0.21 8080 {
        weight 10
        HTTP_GET {
            url {
                path /healthz
                status_code 200 204
            }
            connect_timeout 2
            retry 2
            delay_before_retry 1
        }
    }
    real_server 10.0.0.22 8080 {
        weight 10
        uthreshold 1000
        lthreshold 800
        HTTP_GET {
            url {
                path /healthz
                status_code 200 204
            }
            connect_timeout 2
            retry 2
            delay_before_retry 1
        }
    }
}

virtual_server 198.51.100.11 443 {
    delay_loop 10
    lb_algo sh
    sh-port
    lb_kind DR
    protocol TCP

    real_server 10.0.0.21 443 {
        SSL_GET {
            url {
                path /ping
                digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            virtualhost www.example.org
            connect_timeout 3
        }
    }
    real_server 10.0.0.22 443 {
        TCP_CHECK {
            connect_port 443
            bindto 10.0.0.2
        }
    }
}

virtual_server 198.51.100.10 53 {
    lb_algo rr
    lb_kind NAT
    protocol UDP
    ops
    real_server 10.0.0.31 53 {
        MISC_CHECK {
            misc_path "/usr/lib/nagios/plugins/check_dns -H example.org -s 10.0.0.31"
            misc_timeout 4
        }
    }
}
"""

MASTER = dict(router_id="lb1", role="master", state="MASTER", priority=150, preempt="",
              src="192.0.2.11", peer="192.0.2.12")
BACKUP = dict(router_id="lb2", role="backup", state="BACKUP", priority=100, preempt="nopreempt",
              src="192.0.2.12", peer="192.0.2.11")


def ip(s: str):
    return ipaddress.ip_address(s)


@pytest.fixture
def pair(tmp_path):
    configs = {}
    for params in (MASTER, BACKUP):
        d = tmp_path / params["router_id"]
        (d / "lvs").mkdir(parents=True)
        (d / "keepalived.conf").write_text(NODE.format(**params))
        (d / "lvs" / "services.conf").write_text(LVS)
        conv = convert_file(str(d / "keepalived.conf"), display="keepalived.conf")
        configs[params["router_id"]] = (conv, parse_config(conv.to_yaml(), f"{params['router_id']}.yaml"))
    return configs


NOTIFY = m.NotifyScripts(master=("/etc/keepalived/notify.sh", "master"),
                         backup=("/etc/keepalived/notify.sh", "backup"),
                         fault=("/etc/keepalived/notify.sh", "fault"))


def test_master_vrrp_side_is_exactly_as_configured(pair):
    _, c = pair["lb1"]
    assert c.node == m.NodeSettings(router_id="lb1")
    web, gw = c.vrrp_instances
    assert web == m.VrrpInstance(
        name="VI_WEB", interface="eth0", vrid=51, priority=150, version=3, advert_interval=0.5,
        virtual_ips=(ipaddress.ip_interface("198.51.100.10/24"),
                     ipaddress.ip_interface("198.51.100.11/24")),
        preempt=True, accept_mode=True,
        unicast_src=ip("192.0.2.11"), unicast_peers=(ip("192.0.2.12"),),
        track_interfaces=(m.TrackInterface("eth1", -30),), track_scripts=("chk_ipvs",),
        garp=m.GarpSettings(count=3, interval=0.0, repeat_delay=2.0, refresh=60.0))
    assert gw == m.VrrpInstance(
        name="VI_GW", interface="eth1", vrid=52, priority=150, version=3, advert_interval=0.5,
        virtual_ips=(ipaddress.ip_interface("10.0.0.1/24"),), preempt=True, accept_mode=True,
        garp=m.GarpSettings(count=5, interval=0.0, repeat_delay=5.0, refresh=60.0))
    assert c.sync_groups == (m.SyncGroup("DIRECTOR", ("VI_WEB", "VI_GW"), NOTIFY),)
    assert c.track_scripts == (m.TrackScript(
        name="chk_ipvs", command=("/usr/local/bin/check-ipvs", "--quiet"), interval=2.0,
        timeout=3.0, weight=-60, rise=2, fall=3),)
    assert c.lvs == m.LvsSettings(
        program=m.ProgramMode.ALWAYS, on_shutdown=m.ShutdownAction.REMOVE,
        sync_daemon=m.SyncDaemon(interface="eth1", syncid=51, follow_instance="VI_WEB", maxlen=1400))


def test_master_lvs_side_is_exactly_as_configured(pair):
    _, c = pair["lb1"]
    web, tls, dns = c.virtual_services
    http_check = m.HealthCheck(
        probe=m.HttpProbe(path="/healthz", status_codes=(200, 204)),
        interval=5.0, timeout=2.0, rise=1, fall=3, retry_delay=1.0)
    assert web == m.VirtualService(
        name="tcp/198.51.100.10:80", protocol=m.Protocol.TCP, address=ip("198.51.100.10"),
        port=80, family=4, scheduler="wlc", persistence_timeout=300,
        persistence_netmask="255.255.255.0",
        real_servers=(
            m.RealServer(address=ip("10.0.0.21"), port=8080, weight=10, check=http_check),
            m.RealServer(address=ip("10.0.0.22"), port=8080, weight=10, upper_threshold=1000,
                         lower_threshold=800, check=http_check)),
        sorry_server=m.RealServer(address=ip("10.0.0.99"), port=8080),
        quorum=2, quorum_hysteresis=1,
        quorum_up=("/usr/local/bin/announce", "up", "198.51.100.10"),
        quorum_down=("/usr/local/bin/announce", "down", "198.51.100.10"))
    assert tls == m.VirtualService(
        name="tcp/198.51.100.11:443", address=ip("198.51.100.11"), port=443, scheduler="sh",
        scheduler_flags=("sh-port",),
        real_servers=(
            m.RealServer(address=ip("10.0.0.21"), port=443, forward=m.ForwardMethod.DR,
                         check=m.HealthCheck(
                             probe=m.HttpProbe(path="/ping", tls=True, status_codes=(m.StatusRange(200, 299),),
                                               digest="9b3a0c85a887a256d6939da88aabd8cd",
                                               host="www.example.org", verify_tls=False),
                             interval=10.0, timeout=3.0, rise=1, fall=2, retry_delay=3.0)),
            m.RealServer(address=ip("10.0.0.22"), port=443, forward=m.ForwardMethod.DR,
                         check=m.HealthCheck(probe=m.TcpProbe(), interval=10.0, timeout=5.0,
                                             rise=1, fall=2, retry_delay=1.0, port=443,
                                             bind_to=ip("10.0.0.2")))))
    assert dns == m.VirtualService(
        name="udp/198.51.100.10:53", protocol=m.Protocol.UDP, address=ip("198.51.100.10"),
        port=53, scheduler="rr", one_packet=True,
        real_servers=(m.RealServer(address=ip("10.0.0.31"), port=53, check=m.HealthCheck(
            probe=m.ScriptProbe(("/usr/lib/nagios/plugins/check_dns", "-H", "example.org",
                                 "-s", "10.0.0.31")),
            interval=60.0, timeout=4.0, rise=1, fall=1)),))


def test_backup_differs_from_master_only_where_keepalived_configs_differ(pair):
    _, master = pair["lb1"]
    _, backup = pair["lb2"]
    assert backup.node.router_id == "lb2"
    expected = tuple(
        dataclasses.replace(i, priority=100, preempt=False,
                            **({"unicast_src": ip("192.0.2.12"), "unicast_peers": (ip("192.0.2.11"),)}
                               if i.name == "VI_WEB" else {}))
        for i in master.vrrp_instances)
    assert backup.vrrp_instances == expected
    for same in ("sync_groups", "track_scripts", "lvs", "virtual_services"):
        assert getattr(backup, same) == getattr(master, same), same


def test_pair_notes_are_only_the_master_state_hints(pair):
    for name, (conv, _) in pair.items():
        assert conv.lost == [], [str(n) for n in conv.lost]
        expected = [(29, "changed", "state MASTER"), (54, "changed", "state MASTER")] \
            if name == "lb1" else []
        assert [(n.where.line, n.severity.value, n.message.split(":")[0])
                for n in conv.notes] == expected
