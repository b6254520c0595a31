"""``VrrpMachine.reconfigure``: a reload changes a running instance without a transition.

Fake clock as in test_machine.py: priority 100, advert interval 1 s.
"""

from __future__ import annotations

import ipaddress

from hadirector.vrrp.machine import SendAdvert, State, VrrpMachine

from .helpers import advert, instance, ip

ME = ip("10.233.0.2")
PEER = ip("10.233.0.3")


def started(state: State, **kw) -> VrrpMachine:
    m = VrrpMachine(instance(**kw), primary_address=ME)
    m.start(0.0)
    if state is State.MASTER:
        m.handle_timer(m.get_timer())
    assert m.state is state
    m.actions()
    return m


def test_master_adopts_a_new_priority_and_advertises_it_at_once():  # RFC 5798 6.4.3
    m = started(State.MASTER)
    since = m.since
    assert m.reconfigure(instance(priority=120), now=4.0) is True
    assert m.state is State.MASTER and m.since == since
    assert m.effective_priority == 120
    assert m.actions() == [SendAdvert(priority=120)]
    assert m.get_timer() == 4.0 + 1.0


def test_master_with_a_lower_priority_is_preempted_by_the_backup_as_usual():  # RFC 5798 6.4.3
    m = started(State.MASTER, priority=150)
    m.reconfigure(instance(priority=90), now=4.0)
    m.actions()
    m.receive_advert(advert(100), PEER, now=4.1)
    assert m.state is State.BACKUP


def test_backup_keeps_its_master_down_timer_and_master_on_a_priority_change():  # RFC 5798 6.4.2
    m = started(State.BACKUP)
    m.receive_advert(advert(200), PEER, now=1.0)
    deadline = m.get_timer()
    assert m.reconfigure(instance(priority=110), now=1.5) is True
    assert m.actions() == []
    assert (m.state, m.get_timer(), m.master_address) == (State.BACKUP, deadline, PEER)


def test_notify_and_garp_changes_are_taken_without_any_action():
    from hadirector.model import GarpSettings, NotifyScripts
    m = started(State.MASTER)
    new = instance(notify=NotifyScripts(master=("/bin/true",)), garp=GarpSettings(count=1))
    assert m.reconfigure(new, now=2.0) is True
    assert m.actions() == []
    assert m.instance is new


def test_identity_changes_are_refused_and_nothing_changes():  # RFC 5798 7.1
    m = started(State.MASTER)
    before = m.instance
    for new in (instance(vrid=52), instance(version=2),
                instance(virtual_ips=(ipaddress.ip_interface("10.233.0.101/24"),)),
                instance(priority=255)):
        assert m.reconfigure(new, now=2.0) is False
        assert m.instance is before and m.actions() == [] and m.state is State.MASTER


def test_priority_deltas_stay_applied_on_top_of_the_new_priority():
    m = started(State.BACKUP)
    m.set_priority_delta(-20, "track_script:chk", now=0.5)
    m.reconfigure(instance(priority=150), now=1.0)
    assert m.effective_priority == 130
