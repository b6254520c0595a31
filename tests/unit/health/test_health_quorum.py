"""Per-service quorum with hysteresis (keepalived's update_quorum_state rule)."""

from __future__ import annotations

import ipaddress

from hadirector.health.policy import HealthPolicy, ProbeResult
from hadirector.health.quorum import QuorumPolicy
from hadirector.model import HealthCheck, RealServer, TcpProbe, VirtualService

OK = ProbeResult(True, "connected", 0.001)
BAD = ProbeResult(False, "refused", 0.001)


def service(n=4, quorum=3, hysteresis=1) -> VirtualService:
    rss = tuple(RealServer(ipaddress.ip_address(f"10.0.0.{i + 1}"), 80, weight=1,
                           check=HealthCheck(TcpProbe(), rise=1, fall=1)) for i in range(n))
    return VirtualService("web", address=ipaddress.ip_address("192.0.2.1"), port=80,
                          real_servers=rss, quorum=quorum, quorum_hysteresis=hysteresis)


def tracked(vs):
    p = HealthPolicy()
    for rs in vs.real_servers:
        p.track((vs.key, rs.key), rs.check, now=0.0)
    return p


def set_up(p, vs, n_up, now=1.0):
    for i, rs in enumerate(vs.real_servers):
        p.record((vs.key, rs.key), OK if i < n_up else BAD, now)


def test_service_starts_with_quorum_and_no_loss_is_declared_while_servers_are_unknown():
    vs = service()
    p, q = tracked(vs), QuorumPolicy()
    assert q.has_quorum(vs.key)
    assert q.evaluate(vs, p) is None
    p.record((vs.key, vs.real_servers[0].key), BAD, 1.0)
    assert q.evaluate(vs, p) is None           # three still unknown


def test_quorum_is_lost_below_quorum_minus_hysteresis_and_regained_at_quorum_plus_hysteresis():
    vs = service(n=4, quorum=3, hysteresis=1)
    p, q = tracked(vs), QuorumPolicy()
    set_up(p, vs, 2)
    assert q.evaluate(vs, p) is None           # 2 >= 3 - 1: keeps quorum
    set_up(p, vs, 1)
    lost = q.evaluate(vs, p)
    assert (lost.gained, lost.alive_weight) == (False, 1) and not q.has_quorum(vs.key)
    assert lost.reason == "alive weight 1 < 2"
    set_up(p, vs, 3)
    assert q.evaluate(vs, p) is None           # 3 < 3 + 1: still lost
    set_up(p, vs, 4)
    gained = q.evaluate(vs, p)
    assert (gained.gained, gained.alive_weight) == (True, 4) and q.has_quorum(vs.key)


def test_losing_every_server_loses_quorum_even_when_hysteresis_reaches_zero():
    vs = service(n=2, quorum=1, hysteresis=1)
    p, q = tracked(vs), QuorumPolicy()
    set_up(p, vs, 0)
    assert q.evaluate(vs, p).gained is False


def test_quorum_counts_weight_not_servers():
    vs = service(n=2, quorum=5, hysteresis=0)
    heavy = vs.real_servers[0].__class__(vs.real_servers[0].address, 80, weight=5,
                                         check=vs.real_servers[0].check)
    vs = VirtualService("web", address=vs.address, port=80, quorum=5,
                        real_servers=(heavy, vs.real_servers[1]))
    p, q = tracked(vs), QuorumPolicy()
    set_up(p, vs, 1)                            # only the weight-5 server
    assert q.evaluate(vs, p) is None and q.has_quorum(vs.key)


def test_each_decision_is_reported_once():
    vs = service(n=3, quorum=2, hysteresis=0)
    p, q = tracked(vs), QuorumPolicy()
    set_up(p, vs, 1)
    assert q.evaluate(vs, p) is not None
    assert q.evaluate(vs, p) is None
    assert q.evaluate(vs, p) is None
