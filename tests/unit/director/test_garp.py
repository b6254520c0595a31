"""GARP / unsolicited NA bursts as deadlines of the director core (RFC 5798 6.4.1/6.4.2;
keepalived garp_master_delay/repeat/refresh): each round is an ``Announce`` emitted at
its deadline, with a fake clock."""

from __future__ import annotations

import ipaddress

from hadirector.director.effects import Announce
from hadirector.director.node import Director
from hadirector.model import Config, GarpSettings, NodeSettings, VrrpInstance
from hadirector.vrrp.machine import Reason, RoleChanged, State

B, M = State.BACKUP, State.MASTER
VIP = ipaddress.ip_interface("10.0.0.100/32")
GARP = GarpSettings(count=3, interval=0.5, repeat_delay=5.0, refresh=60.0)


def director(garp=GARP) -> Director:
    inst = VrrpInstance(name="vi_1", interface="eth0", vrid=51, priority=100,
                        virtual_ips=(VIP,), garp=garp)
    d = Director(Config(node=NodeSettings(router_id="t"), vrrp_instances=(inst,)))
    d.attach("vi_1", B)
    return d


def master(d: Director, now: float) -> list:
    d.role_changed("vi_1", RoleChanged(B, M, Reason.MASTER_DOWN_TIMER), priority=100, now=now)
    return [e for e in d.effects() if isinstance(e, Announce)]


def tick(d: Director, now: float) -> list:
    d.handle_timer(now)
    return d.effects()


def test_takeover_burst_rounds_go_interval_apart_then_the_repeat_then_a_refresh_each_period():
    d = director()
    assert master(d, 10.0) == [Announce("vi_1", "takeover", 0, 3, inline=True)]
    assert d.next_deadline() == 10.5
    assert tick(d, 10.5) == [Announce("vi_1", "takeover", 1, 3)]
    assert tick(d, 11.0) == [Announce("vi_1", "takeover", 2, 3)]
    assert d.next_deadline() == 16.0, "repeat_delay after the burst's last round"
    assert tick(d, 16.0) == [Announce("vi_1", "repeat", 0, 3)]
    assert tick(d, 17.0) == [Announce("vi_1", "repeat", 1, 3), Announce("vi_1", "repeat", 2, 3)]
    assert d.next_deadline() == 77.0, "refresh after the repeat burst"
    assert [e.round for e in tick(d, 78.0)] == [0, 1, 2]
    assert d.next_deadline() == 138.0
    assert tick(d, 137.9) == [], "early is harmless"


def test_without_repeat_or_refresh_one_burst_is_all():
    d = director(GarpSettings(count=2, interval=0.0, repeat_delay=0.0))
    assert master(d, 1.0) == [Announce("vi_1", "takeover", 0, 2, inline=True)]
    assert tick(d, 1.0) == [Announce("vi_1", "takeover", 1, 2)]
    assert d.next_deadline() is None


def test_leaving_master_cancels_every_pending_round():
    d = director()
    master(d, 0.0)
    d.role_changed("vi_1", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED), priority=100, now=0.2)
    d.effects()
    assert d.next_deadline() is None
    assert tick(d, 100.0) == []


def test_no_garp_until_a_deferred_vip_add_succeeds_then_the_whole_takeover_burst():
    d = director()
    master(d, 0.0)
    d.vips_deferred("vi_1", now=0.0)
    assert d.next_deadline() is None
    d.vips_added("vi_1", now=1.0)
    assert d.effects() == [Announce("vi_1", "takeover", 0, 3)]
    assert d.next_deadline() == 1.5


def test_a_late_vip_add_after_leaving_master_announces_nothing():
    d = director()
    master(d, 0.0)
    d.role_changed("vi_1", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED), priority=100, now=0.1)
    d.effects()
    d.vips_added("vi_1", now=1.0)
    assert d.effects() == [] and d.next_deadline() is None


def test_a_failed_round_drops_the_rest_of_its_burst_and_what_follows_is_timed_from_the_failure():
    d = director()
    master(d, 0.0)
    failed = tick(d, 0.5)[0]
    d.announce_failed(failed, now=0.5)
    assert d.next_deadline() == 5.5, "the repeat, not round 2"
    assert tick(d, 5.5) == [Announce("vi_1", "repeat", 0, 3)]


def test_a_failed_inline_round_is_sent_again_as_a_whole_burst():
    d = director(GarpSettings(count=2, interval=0.0, repeat_delay=0.0))
    (inline,) = master(d, 0.0)
    d.announce_failed(inline, now=0.01)
    assert tick(d, 0.01) == [Announce("vi_1", "takeover", 0, 2), Announce("vi_1", "takeover", 1, 2)]
    assert d.next_deadline() is None


def test_a_lower_priority_master_heard_gets_a_burst_of_its_own_beside_the_takeover_one():
    d = director()
    master(d, 0.0)
    d.reannounce("vi_1", now=0.2)
    assert d.effects() == [Announce("vi_1", "lower_priority_master_heard", 0, 3)]
    assert tick(d, 0.5) == [Announce("vi_1", "takeover", 1, 3)]
    assert tick(d, 0.7) == [Announce("vi_1", "lower_priority_master_heard", 1, 3)]
    assert tick(d, 1.2) == [Announce("vi_1", "takeover", 2, 3),
                            Announce("vi_1", "lower_priority_master_heard", 2, 3)]


def test_a_reannounce_burst_is_followed_by_one_more_an_advert_interval_after_it_ends():
    # The peer's takeover GARPs left with the advert we heard and may reach the LAN
    # after our answer; one more burst once it has stepped down ends the LAN on us.
    d = director(GarpSettings(count=2, interval=0.0, repeat_delay=0.0))
    master(d, 0.0)
    tick(d, 0.0)                                        # the takeover burst's last round
    d.reannounce("vi_1", now=3.0)
    assert d.effects() == [Announce("vi_1", "lower_priority_master_heard", 0, 2),
                           Announce("vi_1", "lower_priority_master_heard", 1, 2)]
    assert d.next_deadline() == 4.0                     # advert_interval 1 s
    assert tick(d, 4.0) == [Announce("vi_1", "lower_priority_master_heard", 0, 2),
                            Announce("vi_1", "lower_priority_master_heard", 1, 2)]
    assert d.next_deadline() is None                    # the follow-up has no follow-up


def test_the_reannounce_follow_up_is_cancelled_when_the_instance_leaves_master():
    d = director(GarpSettings(count=2, interval=0.0, repeat_delay=0.0))
    master(d, 0.0)
    tick(d, 0.0)                                        # the takeover burst's last round
    d.reannounce("vi_1", now=3.0)
    d.effects()
    d.role_changed("vi_1", RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED), priority=100, now=3.5)
    assert not [e for e in d.effects() if isinstance(e, Announce)]
    assert tick(d, 4.0) == [] and d.next_deadline() is None


def test_an_instance_without_vips_or_garp_count_schedules_nothing():
    for garp in (GarpSettings(count=0),):
        d = director(garp)
        assert master(d, 0.0) == [] and d.next_deadline() is None
