"""The pure limits of the local API, with a fake clock."""

from __future__ import annotations

import ast
from pathlib import Path

from hadirector.api import limits
from hadirector.api.limits import BUSY, IDLE, NEW, ConnView, Throttle, TokenBucket, Waiting, expired


def test_the_limits_core_does_no_io():
    tree = ast.parse(Path(limits.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"asyncio", "socket", "time", "selectors", "resource", "os"}


def test_a_flood_of_failures_is_one_report_per_interval_with_the_count():
    t = Throttle(interval=10.0)
    first = t.note("EMFILE", now=100.0)
    assert first is not None and first.counts == {"EMFILE": 1}       # the first at once
    for i in range(68_000):
        assert t.note("EMFILE", now=100.0 + i * 0.0001) is None      # 6.8 s: counted
    assert t.flush(now=109.9) is None
    assert t.next_due() == 110.0
    report = t.flush(now=110.0)
    assert report.counts == {"EMFILE": 68_000} and report.since == 10.0
    assert t.flush(now=200.0) is None and t.next_due() is None


def test_after_a_quiet_interval_the_next_failure_is_reported_at_once():
    t = Throttle(interval=10.0)
    t.note("EMFILE", now=0.0)
    r = t.note("ENFILE", now=30.0)
    assert r is not None and r.counts == {"ENFILE": 1}


def test_drain_reports_what_is_counted_even_before_the_interval():
    t = Throttle(interval=10.0)
    t.note("a", now=0.0)
    t.note("a", now=1.0)
    t.note("b", now=2.0)
    r = t.drain(now=3.0)
    assert r.counts == {"a": 1, "b": 1} and r.total == 2
    assert t.drain(now=4.0) is None


def test_the_reload_bucket_allows_a_burst_then_one_per_second():
    b = TokenBucket(rate=1.0, burst=2)
    assert [b.take(now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert b.take(now=0.0) == 1.0                    # wait a second for the next
    assert b.take(now=0.5) == 0.5
    assert b.take(now=1.0) == 0.0
    assert b.take(now=1.2) > 0.0
    applied = sum(b.take(now=10.0 + i * 0.001) == 0.0 for i in range(200))   # 200 in 0.2 s
    assert applied == 2


def test_a_full_server_sheds_the_longest_waiting_connection_that_is_not_busy():
    w: Waiting[str] = Waiting()
    assert w.oldest() is None
    # In time order, as the listener reports them.
    w.enter("busy-old", NEW, 0.0)
    w.enter("idle-old", NEW, 0.5)
    w.enter("busy-old", BUSY, 1.0)      # its request is being answered: never shed
    w.enter("idle-old", BUSY, 1.5)
    w.enter("idle-old", IDLE, 2.0)      # answered: waiting again, since 2.0
    w.enter("new", NEW, 5.0)
    w.enter("new-late", NEW, 9.0)
    assert w.oldest() == "idle-old" and len(w) == 3
    w.leave("idle-old")                 # shed (or closed by its client)
    assert w.oldest() == "new"
    w.enter("new-late", BUSY, 9.5)
    w.leave("new")
    assert w.oldest() is None, "every connection left is busy: none to shed"


def test_a_connection_that_has_sent_nothing_yet_is_shed_after_every_slowloris():
    w: Waiting[str] = Waiting()
    w.enter("fresh", NEW, 0.0, silent=True)         # connected, its request not here yet
    w.enter("slowloris", NEW, 1.0, silent=True)
    w.enter("slowloris", NEW, 1.1)                  # its first header bytes, then nothing
    w.enter("idle", IDLE, 2.0)
    assert w.oldest() == "slowloris"
    w.leave("slowloris")
    assert w.oldest() == "idle"
    w.leave("idle")
    assert w.oldest() == "fresh", "a flood that sends nothing is still shed, oldest first"


def test_each_state_has_its_own_deadline():
    conns = [ConnView("slowloris", NEW, 0.0), ConnView("keepalive", IDLE, 0.0),
             ConnView("request", BUSY, 0.0), ConnView("fresh", NEW, 4.0)]
    out = expired(conns, now=5.0, header_timeout=5.0, idle_timeout=3.0, request_timeout=10.0)
    assert out == [("slowloris", "header_timeout"), ("keepalive", "idle_timeout")]
    out = expired(conns, now=10.0, header_timeout=5.0, idle_timeout=3.0, request_timeout=10.0)
    assert ("request", "request_timeout") in out and ("fresh", "header_timeout") in out
