"""'hadirector ipvs' rendering (pure; the kernel-lab tests compare it with ipvsadm)."""

from hadirector import model
from hadirector.ipvs.backend import DaemonEntry, DaemonState
from hadirector.ipvs.cli import largenum, render, render_daemons, render_rules
from hadirector.ipvs.table import ServiceKey, desired_table
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy


def test_listing_has_ipvsadm_header_columns_and_destination_lines():
    out = render(desired_table(sc.config(sc.web(2, scheduler="rr")), all_healthy))
    assert out.splitlines() == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  10.244.0.100:80 rr",
        "  -> 10.244.1.1:80                Masq    1      0          0         ",
        "  -> 10.244.1.2:80                Masq    1      0          0         ",
    ]


def test_health_column_appears_when_the_agent_answers():
    table = desired_table(sc.config(sc.web(2)), all_healthy)
    out = render(table, health={("TCP 10.244.0.100:80", "10.244.1.1:80"): "up"}).splitlines()
    assert out[2].endswith("InActConn Health")
    assert out[4].endswith(" up") and out[5].endswith(" -")


def test_service_flags_persistence_and_ops_read_like_ipvsadm():
    cfg = sc.config(
        sc.vs("a", address=None, port=0, fwmark=44, family=4, scheduler="sh", scheduler_flags=("sh-fallback", "sh-port")),
        sc.vs("b", port=53, protocol=model.Protocol.UDP, one_packet=True, persistence_timeout=30,
              persistence_netmask="255.255.255.0"),
        sc.vs("c", address="fd00:244::100", port=443, persistence_timeout=120, persistence_netmask="64"),
    )
    lines = [line for line in render(desired_table(cfg, all_healthy)).splitlines()[3:]]
    assert lines == [
        "UDP  10.244.0.100:53 wlc persistent 30 mask 255.255.255.0 ops",
        "TCP  [fd00:244::100]:443 wlc persistent 120 mask 64",
        "FWM  44 sh (sh-fallback,sh-port)",
    ]


def test_ipv6_real_server_sorts_first_in_an_ipv4_service_as_libipvs_does():
    # ipvs_cmp_dests subtracts 32-bit words: fd00:... wraps below 10.x (seen in ipvsadm 1.31)
    v = sc.vs(real_servers=(sc.rs("10.244.2.1", 0, forward=model.ForwardMethod.TUN),
                            sc.rs("fd00:244::9", 0, forward=model.ForwardMethod.TUN)))
    lines = render(desired_table(sc.config(v), all_healthy)).splitlines()
    assert lines[4].split()[1] == "[fd00:244::9]:80" and lines[5].split()[1] == "10.244.2.1:80"


def test_rules_are_ipvsadm_save_lines():
    v = sc.vs(port=8000, real_servers=(
        sc.rs("10.244.2.2", 0, forward=model.ForwardMethod.TUN, tunnel_type=model.TunnelType.GUE, tunnel_port=6080,
              tunnel_checksum="remcsum"),
        sc.rs("10.244.2.3", 8000, weight=2)))
    assert render_rules(desired_table(sc.config(v), all_healthy)) == (
        "-A -t 10.244.0.100:8000 -s wlc\n"
        "-a -t 10.244.0.100:8000 -r 10.244.2.2:8000 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n"
        "-a -t 10.244.0.100:8000 -r 10.244.2.3:8000 -m -w 2\n")


def test_large_counters_abbreviate_like_ipvsadm():
    assert largenum(99_999_999) == " 99999999"
    assert largenum(123_456_789) == "  123456K"
    assert largenum(12_345_678_901) == "   12345M"


def test_daemon_lines():
    out = render_daemons([DaemonEntry(DaemonState.BACKUP, "eth0", 9, 1200, "224.0.0.81", 8848, 1),
                          DaemonEntry(DaemonState.MASTER, "eth0", 9, 1472, "224.0.0.81", 8848, 1)])
    assert out.splitlines()[0] == "master sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"


def test_fwmark_service_key_text():
    assert str(ServiceKey.mark(4, 5)) == "fwmark 5"
