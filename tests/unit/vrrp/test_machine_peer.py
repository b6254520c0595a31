"""A transition caused by an advert names the advert's sender and priority
(``RoleChanged.peer`` / ``peer_priority``), as keepalived's log does; one rule per test.

Fake clock; priority 100, advert interval 1 s: Skew_Time = 156/256 s.
"""

from __future__ import annotations

import pytest

from hadirector.vrrp.machine import Reason, RoleChanged, State, VrrpMachine

from .helpers import advert, instance, ip

ME = ip("10.233.0.2")
PEER = ip("10.233.0.3")
OTHER = ip("10.233.0.4")
SKEW = 156 / 256
MDI = 3 + SKEW
B, M = State.BACKUP, State.MASTER


def backup(**kw) -> VrrpMachine:
    m = VrrpMachine(instance(**kw), primary_address=ME)
    m.start(0.0)
    m.actions()
    return m


def master(**kw) -> VrrpMachine:
    m = backup(**kw)
    m.handle_timer(m.get_timer())
    m.actions()
    return m


def role_changes(m: VrrpMachine) -> list[RoleChanged]:
    return [a for a in m.actions() if isinstance(a, RoleChanged)]


def test_stepping_down_names_the_higher_priority_sender():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(200), PEER, 10.0)
    [change] = role_changes(m)
    assert (change.reason, change.peer, change.peer_priority) == (
        Reason.HIGHER_PRIORITY_RECEIVED, PEER, 200)


def test_stepping_down_names_the_equal_priority_higher_address_sender():  # RFC 5798 6.4.3
    m = master()
    m.receive_advert(advert(100), PEER, 10.0)
    [change] = role_changes(m)
    assert (change.reason, change.peer, change.peer_priority) == (
        Reason.HIGHER_ADDRESS_RECEIVED, PEER, 100)


def test_takeover_after_priority_zero_names_the_leaving_master():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(200), PEER, 1.0)
    m.receive_advert(advert(0), PEER, 2.0)
    m.handle_timer(2.0 + SKEW)
    [change] = role_changes(m)
    assert (change.reason, change.peer, change.peer_priority) == (
        Reason.PRIORITY_ZERO_RECEIVED, PEER, 0)


def test_preemption_names_the_lower_priority_master():  # RFC 5798 6.4.2 Preempt_Mode
    m = backup()
    m.receive_advert(advert(50), PEER, 1.0)
    m.handle_timer(MDI)
    [change] = role_changes(m)
    assert (change.reason, change.peer, change.peer_priority) == (Reason.PREEMPTED, PEER, 50)


def test_a_silent_master_names_no_peer():  # RFC 5798 6.4.2 Master_Down_Timer
    m = backup()
    m.receive_advert(advert(200), PEER, 1.0)
    m.handle_timer(1.0 + MDI)
    [change] = role_changes(m)
    assert (change.reason, change.peer, change.peer_priority) == (
        Reason.MASTER_DOWN_TIMER, None, None)


def test_a_master_advert_after_priority_zero_clears_the_named_peer():  # RFC 5798 6.4.2
    m = backup()
    m.receive_advert(advert(0), PEER, 1.0)
    m.receive_advert(advert(200), OTHER, 1.1)     # a new master answered first
    m.handle_timer(1.1 + MDI)                     # ... then went silent
    [change] = role_changes(m)
    assert (change.reason, change.peer) == (Reason.MASTER_DOWN_TIMER, None)


def test_a_sync_group_member_forced_on_its_own_wish_keeps_the_peer():  # keepalived sync group
    m = VrrpMachine(instance(), primary_address=ME, sync_group=True)
    m.start(0.0)
    m.receive_advert(advert(200), PEER, 1.0)
    m.receive_advert(advert(0), PEER, 2.0)
    m.handle_timer(2.0 + SKEW)                    # wishes, stays BACKUP
    m.actions()
    assert m.force_state(M, Reason.PRIORITY_ZERO_RECEIVED, 2.0 + SKEW)
    [change] = role_changes(m)
    assert (change.peer, change.peer_priority) == (PEER, 0)


def test_startup_and_fault_transitions_name_no_peer():
    m = VrrpMachine(instance(), primary_address=ME)
    m.start(0.0)
    m.set_fault(True, "track_interface:vc0", 1.0)
    changes = role_changes(m)
    assert [c.reason for c in changes] == [Reason.STARTUP, Reason.FAULT]
    assert all(c.peer is None and c.peer_priority is None for c in changes)
