"""desired_table(): what the kernel should hold for a config and the health of its real
servers (keepalived semantics: inhibit_on_failure, sorry server, quorum with hysteresis)."""

import ipaddress

from hadirector import model
from hadirector.ipvs.table import (
    FWD_MASQ, FWD_ROUTE, FWD_TUNNEL, SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2,
    TUN_FLAG_CSUM, TUN_GUE, DestKey, ServiceKey, desired_service, desired_table,
)
from hadirector.model import HealthState
from lab import ipvs_scenarios as sc
from lab.ipvs_scenarios import all_healthy, health_from_mapping

H, U, X = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN


def states(vs, *each):
    return health_from_mapping({(vs.name, r.key): s for r, s in zip(vs.real_servers, each)})


def addrs(dests):
    return sorted((d.key.address, d.weight) for d in dests)


def test_service_key_is_protocol_address_port_or_family_and_fwmark():
    assert ServiceKey.of(sc.web()) == ServiceKey(4, 0, "tcp", "10.244.0.100", 80)
    fw = sc.vs("fw", address=None, port=0, fwmark=7, family=6)
    assert ServiceKey.of(fw) == ServiceKey(6, 7)
    assert str(ServiceKey.of(fw)) == "fwmark 7 ipv6"
    assert str(ServiceKey.inet("udp", "fd00:244::1", 53)) == "udp [fd00:244::1]:53"


def test_every_healthy_real_server_is_programmed_with_its_weight():
    v = sc.vs(real_servers=(sc.rs("10.244.1.1", weight=3), sc.rs("10.244.1.2", weight=1)))
    t = desired_table(sc.config(v), all_healthy)
    key = ServiceKey.of(v)
    assert addrs(t.dests_of(key).values()) == [("10.244.1.1", 3), ("10.244.1.2", 1)]
    assert t.quorum[key] is True


def test_real_server_without_first_health_result_is_not_programmed():
    v = sc.web(3)
    svc, dests, quorum = desired_service(v, states(v, H, X, X))
    assert addrs(dests) == [("10.244.1.1", 1)]


def test_no_result_at_all_programs_the_service_empty_and_defers_quorum():
    v = sc.web(2, sorry_server=sc.rs("10.244.9.9"))
    svc, dests, quorum = desired_service(v, states(v, X, X))
    assert dests == [] and quorum is None   # no sorry server flash at start-up


def test_unhealthy_real_server_is_removed():
    v = sc.web(3)
    _, dests, _ = desired_service(v, states(v, H, U, H))
    assert addrs(dests) == [("10.244.1.1", 1), ("10.244.1.3", 1)]


def test_unhealthy_real_server_gets_weight_zero_with_inhibit_on_failure():
    v = sc.web(3, inhibit_on_failure=True)
    _, dests, _ = desired_service(v, states(v, H, U, H))
    assert addrs(dests) == [("10.244.1.1", 1), ("10.244.1.2", 0), ("10.244.1.3", 1)]


def test_unchecked_real_server_is_always_healthy():
    v = sc.vs(real_servers=(sc.rs("10.244.1.1", checked=False),))
    _, dests, _ = desired_service(v, lambda vs, r: HealthState.DOWN)
    assert addrs(dests) == [("10.244.1.1", 1)]


def test_sorry_server_is_the_only_destination_when_no_real_server_is_healthy():
    v = sc.web(2, sorry_server=sc.rs("10.244.9.9", weight=1))
    _, dests, quorum = desired_service(v, states(v, U, U))
    assert quorum is False
    assert addrs(dests) == [("10.244.9.9", 1)]


def test_sorry_server_is_not_programmed_while_quorum_holds():
    v = sc.web(2, sorry_server=sc.rs("10.244.9.9"))
    _, dests, quorum = desired_service(v, states(v, H, U))
    assert quorum is True and addrs(dests) == [("10.244.1.1", 1)]


def test_quorum_lost_below_threshold_swaps_in_sorry_server():
    v = sc.vs(real_servers=tuple(sc.rs(f"10.244.1.{i}", weight=2) for i in (1, 2, 3)),
              quorum=4, sorry_server=sc.rs("10.244.9.9"))
    _, dests, quorum = desired_service(v, states(v, H, U, U), quorum_before=True)
    assert quorum is False
    assert addrs(dests) == [("10.244.9.9", 1)]


def test_quorum_lost_without_sorry_server_keeps_the_healthy_ones():
    v = sc.vs(real_servers=tuple(sc.rs(f"10.244.1.{i}", weight=2) for i in (1, 2, 3)), quorum=4)
    _, dests, quorum = desired_service(v, states(v, H, U, U), quorum_before=True)
    assert quorum is False and addrs(dests) == [("10.244.1.1", 2)]


def test_quorum_hysteresis_holds_state_between_the_thresholds():
    # quorum 4 +- 1: gained at >= 5, lost below 3, held in between (keepalived).
    v = sc.vs(real_servers=tuple(sc.rs(f"10.244.1.{i}", weight=w) for i, w in ((1, 2), (2, 2), (3, 1))),
              quorum=4, quorum_hysteresis=1, sorry_server=sc.rs("10.244.9.9"))
    assert desired_service(v, states(v, H, H, U), quorum_before=True)[2] is True     # 4: held up
    assert desired_service(v, states(v, H, U, H), quorum_before=True)[2] is True     # 3: held up
    assert desired_service(v, states(v, H, U, U), quorum_before=True)[2] is False    # 2 < 3: lost
    assert desired_service(v, states(v, H, H, U), quorum_before=False)[2] is False   # 4 < 5: held down
    assert desired_service(v, states(v, H, H, H), quorum_before=False)[2] is True    # 5: regained


def test_desired_table_feeds_quorum_back_for_hysteresis():
    v = sc.vs(real_servers=tuple(sc.rs(f"10.244.1.{i}", weight=2) for i in (1, 2)),
              quorum=4, quorum_hysteresis=1, sorry_server=sc.rs("10.244.9.9"))
    cfg = sc.config(v)
    key = ServiceKey.of(v)
    first = desired_table(cfg, states(v, H, H))
    assert first.quorum[key] is True
    second = desired_table(cfg, states(v, H, U), quorum_before=first.quorum)
    assert second.quorum[key] is False
    third = desired_table(cfg, states(v, H, H), quorum_before=second.quorum)
    assert third.quorum[key] is False        # 4 < 4+1: stays down
    assert addrs(third.dests_of(key).values()) == [("10.244.9.9", 1)]


def test_service_fields_persistence_one_packet_and_scheduler_flags():
    v = sc.vs("dns", port=53, protocol=model.Protocol.UDP, scheduler="sh",
              scheduler_flags=("sh-fallback", "sh-port"), persistence_timeout=300,
              persistence_netmask="255.255.255.0", one_packet=True)
    svc, _, _ = desired_service(v, all_healthy)
    assert svc.flags == SVC_F_PERSISTENT | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2
    assert (svc.scheduler, svc.timeout, svc.netmask) == ("sh", 300, 24)


def test_ipv6_netmask_is_a_prefix_length_and_defaults_to_128():
    v = sc.vs(address="fd00:244::100", persistence_timeout=60, persistence_netmask="64")
    assert desired_service(v, all_healthy)[0].netmask == 64
    assert desired_service(sc.vs(address="fd00:244::100"), all_healthy)[0].netmask == 128


def test_forwarding_methods_tunnel_settings_and_thresholds():
    v = sc.vs(real_servers=(
        sc.rs("10.244.1.1", forward=model.ForwardMethod.NAT, upper_threshold=100, lower_threshold=50),
        sc.rs("10.244.1.2", 0, forward=model.ForwardMethod.DR),
        sc.rs("10.244.1.3", 0, forward=model.ForwardMethod.TUN, tunnel_type=model.TunnelType.GUE,
              tunnel_port=6080, tunnel_checksum="csum"),
    ))
    d = {x.key.address: x for x in desired_service(v, all_healthy)[1]}
    assert (d["10.244.1.1"].fwd, d["10.244.1.1"].u_threshold, d["10.244.1.1"].l_threshold) == (FWD_MASQ, 100, 50)
    # port 0 = the service's port, as ipvsadm does for -g/-i
    assert d["10.244.1.2"].fwd == FWD_ROUTE and d["10.244.1.2"].key == DestKey("10.244.1.2", 80)
    t = d["10.244.1.3"]
    assert (t.fwd, t.tun_type, t.tun_port, t.tun_flags) == (FWD_TUNNEL, TUN_GUE, 6080, TUN_FLAG_CSUM)


def test_ipv6_real_server_in_ipv4_service_keeps_its_own_family():
    v = sc.vs(real_servers=(sc.rs("fd00:244::5", 0, forward=model.ForwardMethod.TUN),))
    (d,) = desired_service(v, all_healthy)[1]
    assert d.family == 6 and d.key.ip == ipaddress.ip_address("fd00:244::5")


def test_counters_do_not_take_part_in_equality():
    from hadirector.ipvs.table import DestEntry, Stats
    a = DestEntry(DestKey("10.244.1.1", 80))
    b = DestEntry(DestKey("10.244.1.1", 80), active_conns=5, stats=Stats(conns=9))
    assert a == b
