"""The VRRP state machine, one rule per test (RFC 5798 6.4, RFC 3768 for v2).

Times are a fake clock: every input takes ``now``. Defaults: priority 100, advert
interval 1 s, so Skew_Time = 156/256 = 0.609375 s and Master_Down_Interval = 3.609375 s.
"""

from __future__ import annotations

import ipaddress

import pytest

from hadirector.vrrp.codec import MCAST_V4, MCAST_V6, Reject, decode, encode
from hadirector.vrrp.machine import (
    REANNOUNCE_HOLDOFF, PeerMisconfigured, Reannounce, Reason, RoleChanged, SendAdvert, State,
    VrrpMachine,
)

from .helpers import advert, instance, ip

ME = ip("10.233.0.2")
PEER = ip("10.233.0.3")          # higher address than ME
LOW_PEER = ip("10.233.0.1")      # lower address than ME
SKEW = 156 / 256
MDI = 3 + SKEW

B, M, F, I = State.BACKUP, State.MASTER, State.FAULT, State.INITIALIZE


def machine(primary=ME, **kw) -> VrrpMachine:
    return VrrpMachine(instance(**kw), primary_address=primary)


def backup(now: float = 0.0, **kw) -> VrrpMachine:
    m = machine(**kw)
    m.start(now)
    assert m.state is B
    m.actions()
    return m


def master(now: float = 0.0, **kw) -> VrrpMachine:
    m = backup(now, **kw)
    m.handle_timer(m.get_timer())
    assert m.state is M
    m.actions()
    return m


# --- RFC 5798 6.4.1 Initialize ------------------------------------------------------------


def test_owner_becomes_master_at_startup_and_advertises():  # RFC 5798 6.4.1
    m = machine(priority=255)
    m.start(now=5.0)
    assert m.state is M
    assert m.actions() == [RoleChanged(I, M, Reason.OWNER), SendAdvert(priority=255)]
    assert m.get_timer() == 6.0           # Adver_Timer = Advertisement_Interval
    assert m.master_address == ME


def test_non_owner_starts_as_backup_with_master_down_interval():  # RFC 5798 6.4.1
    m = machine(priority=100)
    m.start(now=5.0)
    assert m.state is B
    assert m.actions() == [RoleChanged(I, B, Reason.STARTUP)]
    assert m.master_adver_interval == 1.0
    assert m.get_timer() == 5.0 + MDI
    assert m.since == 5.0 and m.last_reason == "startup"


def test_initialize_has_no_timer_and_ignores_adverts():  # RFC 5798 6.4.1
    m = machine()
    assert m.state is I and m.get_timer() is None
    assert m.receive_advert(advert(200), PEER, 0.0) is Reject.NOT_LISTENING
    m.handle_timer(100.0)
    assert m.actions() == []


def test_start_goes_to_fault_when_a_fault_is_already_set():
    m = machine()
    m.set_fault(True, "track_interface:vc0", 0.0)
    assert m.actions() == [] and m.state is I
    m.start(1.0)
    assert m.actions() == [RoleChanged(I, F, Reason.FAULT, "track_interface:vc0")]
    assert m.get_timer() is None


# --- RFC 5798 6.4.2 Backup -----------------------------------------------------------------


def test_backup_becomes_master_when_master_down_timer_fires():  # RFC 5798 6.4.2
    m = backup()
    m.handle_timer(now=3.61)
    assert m.actions() == [RoleChanged(B, M, Reason.MASTER_DOWN_TIMER), SendAdvert(priority=100)]
    assert m.get_timer() == pytest.approx(4.61)
    assert m.master_address == ME
    assert m.counters.became_master == 1


def test_backup_sends_no_adverts():  # RFC 5798 6.4.2 "MUST NOT send"
    m = backup()
    m.receive_advert(advert(200), PEER, 1.0)
    m.handle_timer(2.0)                       # before the deadline: nothing
    assert m.actions() == []
    assert m.counters.adverts_sent == 0


def test_backup_takes_over_after_skew_time_on_priority_zero():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200), PEER, 1.0)
    assert m.receive_advert(advert(0), PEER, 2.0) is None
    assert m.get_timer() == pytest.approx(2.0 + SKEW)
    assert m.master_address is None
    m.handle_timer(2.0 + SKEW)
    assert m.actions() == [RoleChanged(B, M, Reason.PRIORITY_ZERO_RECEIVED, peer=PEER, peer_priority=0),
                           SendAdvert(100)]
    assert m.counters.priority_zero_received == 1


def test_higher_priority_backup_answers_priority_zero_first():  # RFC 5798 6.1 Skew_Time
    hi, lo = backup(priority=200), backup(priority=50)
    for m in (hi, lo):
        m.receive_advert(advert(0), PEER, 0.0)
    assert hi.get_timer() < lo.get_timer()


def test_backup_resets_master_down_timer_on_higher_priority_advert():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200), PEER, 3.0)
    assert m.get_timer() == pytest.approx(3.0 + MDI)
    assert (m.master_address, m.master_priority) == (PEER, 200)
    m.handle_timer(3.61)                      # the old deadline no longer fires
    assert m.state is B and m.actions() == []


def test_backup_resets_master_down_timer_on_equal_priority_advert():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(100), LOW_PEER, 3.0)   # equal priority: ">=" rule, address unused
    assert m.get_timer() == pytest.approx(3.0 + MDI)


def test_backup_learns_master_adver_interval_from_v3_advert():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200, interval=2.5), PEER, 1.0)
    assert m.master_adver_interval == 2.5
    # Master_Down_Interval = 3 * 2.5 + (156 * 2.5) / 256
    assert m.get_timer() == pytest.approx(1.0 + 7.5 + 156 * 2.5 / 256)


def test_backup_with_preempt_discards_lower_priority_advert_and_takes_over():  # RFC 5798 6.4.2
    m = backup(priority=100)
    assert m.receive_advert(advert(50), PEER, 1.0) is None
    assert m.get_timer() == pytest.approx(MDI)     # discarded: the timer keeps running
    assert m.counters.lower_priority_discarded == 1
    m.handle_timer(MDI)
    assert m.actions() == [RoleChanged(B, M, Reason.PREEMPTED, peer=PEER, peer_priority=50),
                           SendAdvert(100)]


def test_backup_without_preempt_follows_lower_priority_master():  # RFC 5798 6.4.2 Preempt_Mode
    m = backup(priority=100, preempt=False)
    m.receive_advert(advert(50, interval=2.0), PEER, 1.0)
    assert m.master_adver_interval == 2.0
    assert m.get_timer() == pytest.approx(1.0 + 6.0 + 156 * 2 / 256)
    assert (m.master_address, m.master_priority) == (PEER, 50)


def test_preempt_delay_holds_off_preemption_from_first_lower_advert():  # keepalived preempt_delay
    m = backup(priority=100, preempt_delay=10.0)
    for t in range(1, 11):                    # delay started at t=1; holds until t=11
        m.receive_advert(advert(50), PEER, float(t))
        assert m.get_timer() == pytest.approx(t + MDI), t
    m.receive_advert(advert(50), PEER, 11.0)  # delay over: discard, the timer runs out
    assert m.get_timer() == pytest.approx(10.0 + MDI)
    m.handle_timer(10.0 + MDI)
    assert m.actions() == [RoleChanged(B, M, Reason.PREEMPTED, peer=PEER, peer_priority=50),
                           SendAdvert(100)]


def test_preempt_delay_restarts_after_a_higher_priority_advert():  # keepalived preempt_delay
    m = backup(priority=100, preempt_delay=10.0)
    m.receive_advert(advert(50), PEER, 1.0)       # delay until 11
    m.receive_advert(advert(150), PEER, 5.0)      # cancelled
    m.receive_advert(advert(50), PEER, 6.0)       # restarted: until 16
    m.receive_advert(advert(50), PEER, 12.0)
    assert m.get_timer() == pytest.approx(12.0 + MDI)   # still accepted at 12
    m.receive_advert(advert(50), PEER, 16.0)
    assert m.get_timer() == pytest.approx(12.0 + MDI)   # discarded at 16


def test_preempt_delay_does_not_apply_without_preempt():
    m = backup(priority=100, preempt=False, preempt_delay=10.0)
    for t in (1.0, 20.0, 40.0):
        m.receive_advert(advert(50), PEER, t)
        assert m.get_timer() == pytest.approx(t + MDI)


def test_a_preemption_hold_follows_a_lower_priority_master_until_it_ends():  # sync catch-up
    m = backup(priority=100)
    m.hold_preemption(until=8.0)
    for t in range(1, 8):
        m.receive_advert(advert(50), PEER, float(t))
        assert m.get_timer() == pytest.approx(t + MDI), t
        assert m.master_address == PEER
    m.receive_advert(advert(50), PEER, 8.0)   # hold over: discard, the timer runs out
    assert m.get_timer() == pytest.approx(7.0 + MDI)
    m.handle_timer(7.0 + MDI)
    assert m.actions()[-2:] == [RoleChanged(B, M, Reason.PREEMPTED, peer=PEER, peer_priority=50),
                               SendAdvert(100)]
    assert m.preemption_held_until == 8.0


def test_a_preemption_hold_does_not_delay_takeover_from_a_silent_master():  # RFC 5798 6.4.2
    m = backup(priority=100)
    m.hold_preemption(until=100.0)
    m.receive_advert(advert(50), PEER, 1.0)
    m.handle_timer(1.0 + MDI)
    assert m.state is M and m.last_reason == Reason.MASTER_DOWN_TIMER


def test_a_preemption_hold_does_not_delay_takeover_on_priority_zero():  # RFC 5798 6.4.2
    m = backup(priority=100)
    m.hold_preemption(until=100.0)
    m.receive_advert(advert(50), PEER, 1.0)
    m.receive_advert(advert(0), PEER, 2.0)
    assert m.get_timer() == pytest.approx(2.0 + SKEW)
    m.handle_timer(2.0 + SKEW)
    assert m.state is M


def test_a_shorter_preemption_hold_never_cuts_a_longer_one():
    m = backup(priority=100)
    m.hold_preemption(until=10.0)
    m.hold_preemption(until=5.0)
    assert m.preemption_held_until == 10.0


# --- the agent's start-up hold (hold_takeover) ------------------------------------------


def held_backup(now: float = 0.0, **kw) -> VrrpMachine:
    m = machine(**kw)
    m.hold_takeover(True, now)
    m.start(now)
    assert m.state is B
    m.actions()
    return m


def test_a_takeover_held_at_startup_waits_for_the_release_then_happens_at_once():
    m = held_backup(priority=100)
    assert m.get_timer() == pytest.approx(MDI)      # the master-down wait runs meanwhile
    m.handle_timer(MDI)
    assert m.state is B and m.actions() == []
    assert m.get_timer() is None                    # due: nothing left to time
    m.hold_takeover(False, now=5.0)
    assert m.state is M
    assert m.actions() == [RoleChanged(B, M, Reason.MASTER_DOWN_TIMER), SendAdvert(100)]
    assert m.get_timer() == pytest.approx(6.0)


def test_a_release_before_the_master_down_timer_changes_nothing():
    m = held_backup(priority=100)
    m.hold_takeover(False, now=1.0)
    assert m.state is B and m.actions() == []
    assert m.get_timer() == pytest.approx(MDI)
    m.handle_timer(MDI)
    assert m.state is M


def test_a_master_heard_while_held_cancels_the_due_takeover():  # RFC 5798 6.4.2
    m = held_backup(priority=100)
    m.handle_timer(MDI)
    m.receive_advert(advert(200), PEER, 4.0)
    assert m.get_timer() == pytest.approx(4.0 + MDI)
    m.hold_takeover(False, now=5.0)
    assert m.state is B and m.master_address == PEER


def test_a_held_owner_starts_as_backup_and_becomes_master_at_the_release():  # RFC 5798 6.4.1
    m = held_backup(priority=255)
    m.handle_timer(m.get_timer())
    assert m.state is B
    m.hold_takeover(False, now=0.5)
    assert m.state is M and m.last_reason == Reason.OWNER


def test_a_fault_while_held_leaves_nothing_due_after_the_release():
    m = held_backup(priority=100)
    m.handle_timer(MDI)
    m.set_fault(True, "ipvs_unavailable", now=4.0)
    m.hold_takeover(False, now=5.0)
    assert m.state is F


def test_v2_backup_drops_advert_with_a_different_interval():  # RFC 3768 7.1
    m = backup(version=2)
    assert m.receive_advert(advert(200, version=2, interval=2.0), PEER, 1.0) is Reject.INTERVAL_MISMATCH
    assert m.get_timer() == pytest.approx(MDI)
    assert m.counters.ignored == {"interval_mismatch": 1}


def test_v2_backup_uses_rfc3768_skew_and_never_learns_the_interval():  # RFC 3768 6.1
    m = backup(version=2, advert_interval=3.0)
    assert m.get_timer() == pytest.approx(9 + SKEW)      # skew is not scaled by the interval
    m.receive_advert(advert(200, version=2, interval=3.0), PEER, 1.0)
    assert m.master_adver_interval == 3.0
    m.receive_advert(advert(0, version=2, interval=3.0), PEER, 2.0)
    assert m.get_timer() == pytest.approx(2.0 + SKEW)


def test_backup_shutdown_goes_to_initialize_silently():  # RFC 5798 6.4.2 Shutdown
    m = backup()
    m.shutdown(1.0)
    assert m.actions() == [RoleChanged(B, I, Reason.SHUTDOWN)]
    assert m.get_timer() is None


# --- RFC 5798 6.4.3 Master -----------------------------------------------------------------


def test_master_sends_advert_every_advertisement_interval():  # RFC 5798 6.4.3
    m = master(advert_interval=0.5)
    t0 = m.get_timer()
    sent = []
    for k in range(4):
        t = t0 + 0.5 * k
        m.handle_timer(t)
        sent += m.actions()
        assert m.get_timer() == pytest.approx(t + 0.5)
    assert sent == [SendAdvert(100)] * 4


def test_master_answers_priority_zero_with_an_immediate_advert():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(0), PEER, 10.0)
    assert m.actions() == [SendAdvert(100)]
    assert m.get_timer() == 11.0
    assert m.state is M


def test_master_steps_down_on_higher_priority_advert():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(150, interval=2.0), LOW_PEER, 10.0)
    # One advert at our priority as we step down: the winner learns there were two
    # masters and re-announces the VIPs (see test_master_keeps_role_on_lower_...).
    assert m.actions() == [RoleChanged(M, B, Reason.HIGHER_PRIORITY_RECEIVED,
                                       peer=LOW_PEER, peer_priority=150),
                           SendAdvert(priority=100)]
    assert m.master_adver_interval == 2.0      # v3: learned from the new master
    assert m.get_timer() == pytest.approx(10.0 + 6.0 + 156 * 2 / 256)
    assert (m.master_address, m.master_priority) == (LOW_PEER, 150)
    assert m.counters.released_master == 1


def test_master_steps_down_on_equal_priority_from_higher_address():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(100), PEER, 10.0)
    assert m.actions() == [RoleChanged(M, B, Reason.HIGHER_ADDRESS_RECEIVED,
                                       peer=PEER, peer_priority=100),
                           SendAdvert(priority=100)]


def test_master_keeps_role_on_equal_priority_from_lower_address():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(100), LOW_PEER, 10.0)
    # Kept, and asserted at once (the other router believes it is master: keepalived's
    # "forcing new election").
    assert m.state is M
    assert m.actions() == [SendAdvert(priority=100), Reannounce(LOW_PEER, 100)]


def test_master_address_tie_break_compares_ipv6_as_unsigned_integers():  # RFC 5798 6.4.3
    vip6 = ipaddress.ip_interface("fd00:233::100/64")
    m = VrrpMachine(instance(virtual_ips=(vip6,)), primary_address=ip("fe80::2"))
    m.start(0.0)
    m.handle_timer(m.get_timer())
    m.receive_advert(advert(100, family=6, addresses=(vip6.ip,)), ip("fe80::1"), 5.0)
    assert m.state is M
    m.receive_advert(advert(100, family=6, addresses=(vip6.ip,)), ip("fe80::1:0:0:1"), 6.0)
    assert m.state is B


def test_master_keeps_role_on_lower_priority_advert_and_reasserts_itself():  # RFC 5798 6.4.3
    # 6.4.3 discards the advert; a router sending it believes it is master and may hold
    # our VIPs in neighbours' ARP caches, so we advertise at once and re-announce.
    m = master()
    now = m.get_timer() - 0.5
    m.receive_advert(advert(99), PEER, now)
    assert m.state is M
    assert m.actions() == [SendAdvert(priority=100), Reannounce(PEER, 99)]
    assert m.get_timer() == pytest.approx(now + 1.0)     # the advert just sent re-arms
    assert m.counters.lower_priority_discarded == 1


def test_master_reannounces_at_most_once_per_half_advert_interval_for_a_lower_master():
    m = master()                                  # advert interval 1 s
    m.receive_advert(advert(99), PEER, 10.0)
    m.actions()
    timer = m.get_timer()
    m.receive_advert(advert(99), PEER, 10.0 + REANNOUNCE_HOLDOFF - 0.1)
    assert m.actions() == [] and m.get_timer() == timer
    # The peer's next advert at its own 1 s interval is answered again.
    m.receive_advert(advert(99), PEER, 11.0)
    assert m.actions() == [SendAdvert(priority=100), Reannounce(PEER, 99)]
    assert m.counters.lower_priority_discarded == 3


def test_master_shutdown_sends_priority_zero_and_goes_to_initialize():  # RFC 5798 6.4.3 Shutdown
    m = master()
    m.shutdown(20.0)
    assert m.actions() == [SendAdvert(priority=0), RoleChanged(M, I, Reason.SHUTDOWN)]
    assert m.get_timer() is None and m.master_address is None
    assert m.counters.priority_zero_sent == 1


def test_machine_can_start_again_after_shutdown():
    m = master()
    m.shutdown(20.0)
    m.actions()
    m.start(21.0)
    assert m.actions() == [RoleChanged(I, B, Reason.STARTUP)]


# --- priority tracking -----------------------------------------------------------------------


def test_master_readvertises_at_once_when_its_priority_changes():
    m = master()
    m.set_priority_delta(-30, "track_script:chk", 10.2)
    assert m.effective_priority == 70
    assert m.actions() == [SendAdvert(priority=70)]
    assert m.get_timer() == pytest.approx(11.2)
    m.set_priority_delta(-30, "track_script:chk", 10.5)    # unchanged: nothing to say
    assert m.actions() == []


def test_priority_deltas_are_keyed_by_reason_and_summed():
    m = backup()
    m.set_priority_delta(-20, "track_script:a", 1.0)
    m.set_priority_delta(-15, "track_interface:vc1", 1.0)
    assert m.effective_priority == 65
    m.set_priority_delta(0, "track_script:a", 2.0)
    assert m.effective_priority == 85
    assert m.priority_deltas == {"track_interface:vc1": -15}
    assert m.actions() == []                 # a backup has nothing to send


def test_effective_priority_is_clamped_to_1_through_254():
    m = backup()
    m.set_priority_delta(-500, "a", 0.0)
    assert m.effective_priority == 1
    m.set_priority_delta(+500, "a", 0.0)
    assert m.effective_priority == 254       # never claims to be the owner


def test_owner_stays_at_255_whatever_the_delta():
    m = machine(priority=255)
    m.set_priority_delta(-100, "a", 0.0)
    assert m.effective_priority == 255


def test_lowered_backup_priority_applies_to_the_next_master_down_interval():  # RFC 5798 6.1
    m = backup()
    m.set_priority_delta(-50, "a", 0.0)
    m.receive_advert(advert(200), PEER, 1.0)
    assert m.get_timer() == pytest.approx(1.0 + 3 + 206 / 256)


# --- FAULT -------------------------------------------------------------------------------------


def test_fault_stops_adverts_and_ignores_received_ones():
    m = master()
    m.set_fault(True, "track_interface:vc0", 10.0)
    m.actions()
    assert m.state is F and m.get_timer() is None
    assert m.receive_advert(advert(0), PEER, 11.0) is Reject.NOT_LISTENING
    m.handle_timer(100.0)
    assert m.actions() == []


def test_master_entering_fault_sends_priority_zero_first():  # keepalived; RFC 5798 6.4.3 spirit
    m = master()
    m.set_fault(True, "track_interface:vc0", 10.0)
    assert m.actions() == [SendAdvert(0), RoleChanged(M, F, Reason.FAULT, "track_interface:vc0")]


def test_backup_entering_fault_is_silent():
    m = backup()
    m.set_fault(True, "track_script:chk", 1.0)
    assert m.actions() == [RoleChanged(B, F, Reason.FAULT, "track_script:chk")]


def test_leaving_fault_goes_to_backup_with_a_fresh_master_down_timer():
    m = backup()
    m.receive_advert(advert(200, interval=4.0), PEER, 0.5)
    m.set_fault(True, "x", 1.0)
    m.set_fault(False, "x", 2.0)
    assert m.actions()[-1] == RoleChanged(F, B, Reason.FAULT_CLEARED, "x")
    assert m.master_adver_interval == 1.0     # our own again, as at Initialize
    assert m.get_timer() == pytest.approx(2.0 + MDI)


def test_owner_leaving_fault_goes_straight_to_master():
    m = machine(priority=255)
    m.start(0.0)
    m.set_fault(True, "x", 1.0)
    m.actions()
    m.set_fault(False, "x", 2.0)
    assert m.actions() == [RoleChanged(F, M, Reason.FAULT_CLEARED, "x"), SendAdvert(255)]


def test_fault_clears_only_when_every_source_clears():
    m = backup()
    m.set_fault(True, "track_interface:vc0", 1.0)
    m.set_fault(True, "track_script:chk", 1.5)
    m.set_fault(False, "track_interface:vc0", 2.0)
    assert m.state is F
    assert m.faults == {"track_script:chk"}
    m.set_fault(False, "track_script:chk", 3.0)
    assert m.state is B
    assert [a.new for a in m.actions()] == [F, B]


def test_clearing_an_unknown_fault_is_harmless():
    m = backup()
    m.set_fault(False, "never-set", 1.0)
    assert m.state is B and m.actions() == []


# --- adverts that are not for us --------------------------------------------------------------


@pytest.mark.parametrize("adv,src,reason", [
    (advert(200, vrid=52), PEER, Reject.VRID_MISMATCH),
    (advert(200, version=2), PEER, Reject.VERSION_MISMATCH),
    (advert(200, family=6, addresses=(ip("fd00::1"),)), ip("fe80::9"), Reject.FAMILY_MISMATCH),
    (advert(200), ME, Reject.OWN_ADVERT),
], ids=["vrid", "version", "family", "own"])
def test_adverts_not_for_this_instance_are_ignored_and_counted(adv, src, reason):  # RFC 5798 7.1
    m = backup()
    assert m.receive_advert(adv, src, 1.0) is reason
    assert m.get_timer() == pytest.approx(MDI)
    assert m.counters.ignored == {reason.value: 1}
    assert m.counters.adverts_received == 1


def test_address_mismatch_is_reported_but_the_advert_still_counts():  # RFC 5798 7.1 SHOULD log
    m = backup()
    assert m.receive_advert(advert(200, addresses=(ip("10.233.0.99"),)), PEER, 1.0) is None
    assert m.actions() == [PeerMisconfigured(Reject.ADDRESS_MISMATCH, PEER, "10.233.0.99")]
    assert m.get_timer() == pytest.approx(1.0 + MDI)


def test_handle_timer_before_the_deadline_does_nothing():
    m = backup()
    m.handle_timer(1.0)
    m.handle_timer(3.6)
    assert m.state is B and m.actions() == []


def test_illegal_transition_raises_and_keeps_the_state():  # h11-style transition table
    m = backup()
    with pytest.raises(RuntimeError):
        m._transition(State.BACKUP, "bogus", 1.0)
    assert m.state is B and m.actions() == []


# --- the adverts the machine asks to send -------------------------------------------------------


@pytest.mark.parametrize("kw,src,dst", [
    (dict(), ME, MCAST_V4),
    (dict(version=2, advert_interval=2.0), ME, MCAST_V4),
    (dict(virtual_ips=(ipaddress.ip_interface("fe80::100/64"),
                       ipaddress.ip_interface("fd00:233::100/64")),
          advert_interval=0.25), ip("fe80::2"), MCAST_V6),
], ids=["v3-ipv4", "v2", "v3-ipv6"])
def test_send_advert_carries_an_encodable_advert_of_the_instance(kw, src, dst):
    m = VrrpMachine(instance(vrid=77, **kw), primary_address=src)
    m.start(0.0)
    m.handle_timer(m.get_timer())
    send = [a for a in m.actions() if isinstance(a, SendAdvert)][0]
    adv = send.advert
    assert (adv.vrid, adv.priority, adv.version) == (77, 100, kw.get("version", 3))
    assert adv.addresses == tuple(v.ip for v in m.instance.virtual_ips)
    assert decode(encode(adv, src, dst), src=src, dst=dst, ttl=255, family=adv.family) == adv


def test_counters_add_up_over_a_session():
    m = backup()
    m.receive_advert(advert(200), PEER, 1.0)
    m.receive_advert(advert(0), PEER, 2.0)
    m.handle_timer(3.0)
    m.handle_timer(4.0)
    m.shutdown(4.5)
    c = m.counters
    assert (c.adverts_received, c.priority_zero_received) == (2, 1)
    assert (c.adverts_sent, c.priority_zero_sent) == (3, 1)
    assert (c.became_backup, c.became_master, c.released_master) == (1, 1, 1)
