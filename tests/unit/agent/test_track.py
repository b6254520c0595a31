"""track_interface / track_script semantics (keepalived's), with a recording sink."""

from __future__ import annotations

import ipaddress

from hadirector.agent.track import ScriptTracker, apply_link, interface_bindings
from hadirector.health.policy import ProbeResult
from hadirector.model import TrackInterface, TrackScript, VrrpInstance

VIP = ipaddress.ip_interface("10.0.0.100/32")


class Sink:
    def __init__(self):
        self.calls = []

    def set_fault(self, instance, fault, reason):
        self.calls.append(("fault", instance, fault, reason))

    def set_priority_delta(self, instance, delta, reason):
        self.calls.append(("delta", instance, delta, reason))


def inst(name="vi_1", **kw):
    return VrrpInstance(name=name, interface="eth0", vrid=51, virtual_ips=(VIP,), **kw)


def test_own_interface_is_tracked_with_weight_zero_and_others_with_theirs():
    b = interface_bindings((inst(track_interfaces=(TrackInterface("eth1", -20), TrackInterface("eth2", 10))),))
    assert {k: [(x.instance, x.weight) for x in v] for k, v in b.items()} == {
        "eth0": [("vi_1", 0)], "eth1": [("vi_1", -20)], "eth2": [("vi_1", 10)]}


def test_link_down_faults_weight_zero_and_lowers_negative_weight():
    sink = Sink()
    b = interface_bindings((inst(track_interfaces=(TrackInterface("eth1", -20),)),))
    apply_link(sink, b["eth0"], "eth0", up=False)
    apply_link(sink, b["eth1"], "eth1", up=False)
    apply_link(sink, b["eth1"], "eth1", up=True)
    assert sink.calls == [
        ("fault", "vi_1", True, "track_interface:eth0"),
        ("delta", "vi_1", -20, "track_interface:eth1"),
        ("delta", "vi_1", 0, "track_interface:eth1"),
    ]


def test_positive_weight_raises_priority_while_link_is_up():
    sink = Sink()
    b = interface_bindings((inst(track_interfaces=(TrackInterface("eth2", 10),)),))
    apply_link(sink, b["eth2"], "eth2", up=True)
    apply_link(sink, b["eth2"], "eth2", up=False)
    assert [c[2] for c in sink.calls] == [10, 0]


def fail():
    return ProbeResult(False, "exit 1", 0.01)


def ok():
    return ProbeResult(True, "exit 0", 0.01)


def test_script_weight_applies_after_fall_failures_and_clears_after_rise_successes():
    sink = Sink()
    s = TrackScript("chk", ("true",), weight=-30, rise=2, fall=2)
    tr = ScriptTracker((s,), (inst(track_scripts=("chk",)), inst("vi_2")), sink)
    assert tr.users == {"chk": ["vi_1"]}
    tr.record("chk", ok(), 0)          # first result decides at once (UNKNOWN -> UP)
    tr.record("chk", fail(), 1)        # 1 of 2
    assert sink.calls == [("delta", "vi_1", 0, "track_script:chk")]
    tr.record("chk", fail(), 2)        # fall reached
    tr.record("chk", fail(), 3)        # no repeat report
    tr.record("chk", ok(), 4)          # 1 of 2
    tr.record("chk", ok(), 5)          # rise reached
    assert sink.calls[1:] == [("delta", "vi_1", -30, "track_script:chk"),
                              ("delta", "vi_1", 0, "track_script:chk")]


def test_failing_script_with_weight_zero_faults_the_instance():
    sink = Sink()
    s = TrackScript("chk", ("false",), weight=0)
    tr = ScriptTracker((s,), (inst(track_scripts=("chk",)),), sink)
    tr.record("chk", fail(), 0)
    tr.record("chk", ok(), 1)
    assert sink.calls == [("fault", "vi_1", True, "track_script:chk"),
                          ("fault", "vi_1", False, "track_script:chk")]


# --- InterfaceTracker keeps following, whatever its watcher does -------------------------


class Links:
    """The links' true state, read by the tracker on start and after a restart."""

    def __init__(self, **up):
        self.up = dict(up)

    async def link_state(self, name):
        from hadirector.kernel.addresses import LinkState
        return LinkState(name, 2, up=self.up[name])


class ScriptedWatcher:
    """A watcher whose stream is a script: LinkStates, then an exception to raise or
    (None) the stream ending; the last one created waits forever after its script."""

    scripts: list[list] = []
    made: list["ScriptedWatcher"] = []

    def __init__(self, names):
        self.names = frozenset(names)
        self.script = ScriptedWatcher.scripts.pop(0) if ScriptedWatcher.scripts else []
        self.closed = False
        ScriptedWatcher.made.append(self)

    async def __aenter__(self):
        return self

    def close(self):
        self.closed = True

    async def events(self):
        import asyncio
        for item in self.script:
            if isinstance(item, BaseException):
                raise item
            if item is None:
                return
            yield item
        await asyncio.Event().wait()


class Log:
    def __init__(self):
        self.records = []

    def __getattr__(self, level):
        return lambda event, **kw: self.records.append((event, kw))

    def named(self, name):
        return [kw for event, kw in self.records if event == name]


async def settle(tracker, restarts, timeout=5.0):
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while tracker.restarts < restarts:
        assert loop.time() < deadline, f"{tracker.restarts} restarts, wanted {restarts}"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def tracker_with(scripts, links, log, sink):
    from hadirector.agent.track import InterfaceTracker
    ScriptedWatcher.scripts = [list(s) for s in scripts]
    ScriptedWatcher.made = []
    tr = InterfaceTracker((inst(),), sink, log, addresses=links, watcher_factory=ScriptedWatcher)
    tr.RESTART_MIN = 0.01
    return tr


async def test_a_watcher_that_raises_is_logged_and_replaced_and_links_are_read_again():
    from hadirector.kernel.addresses import LinkState
    sink, log, links = Sink(), Log(), Links(eth0=True)
    tr = tracker_with([[LinkState("eth0", 2, up=False), RuntimeError("socket gone")]], links, log, sink)
    await tr.start()
    links.up["eth0"] = True             # came back while no watcher listened
    await settle(tr, restarts=1)
    await tr.stop()
    assert sink.calls == [("fault", "vi_1", False, "track_interface:eth0"),
                          ("fault", "vi_1", True, "track_interface:eth0"),
                          ("fault", "vi_1", False, "track_interface:eth0")]
    failed = log.named("track.link_watch_failed")
    assert failed[0]["reason"] == "RuntimeError: socket gone" and failed[0]["interfaces"] == ["eth0"]
    assert log.named("track.link_watch_restarted")[0]["restarts"] == 1
    assert ScriptedWatcher.made[0].closed and ScriptedWatcher.made[1].closed


async def test_a_watcher_stream_that_ends_is_a_failure_too():
    sink, log, links = Sink(), Log(), Links(eth0=True)
    tr = tracker_with([[None], [None]], links, log, sink)
    await tr.start()
    await settle(tr, restarts=2)
    await tr.stop()
    assert [f["reason"] for f in log.named("track.link_watch_failed")] == ["events_ended"] * 2
    # The retry delay doubles: a watcher that keeps failing is not a hot loop.
    assert [f["retry_in"] for f in log.named("track.link_watch_failed")] == [0.01, 0.02]
    assert len(ScriptedWatcher.made) == 3


async def test_a_restart_that_fails_is_retried():
    from hadirector.agent.track import InterfaceTracker

    class Flaky(Links):
        fail = 2

        async def link_state(self, name):
            if self.fail and tr._task is not None:
                self.fail -= 1
                raise OSError(24, "Too many open files")
            return await super().link_state(name)

    sink, log, links = Sink(), Log(), Flaky(eth0=True)
    tr = tracker_with([[RuntimeError("boom")]], links, log, sink)
    assert isinstance(tr, InterfaceTracker)
    await tr.start()
    await settle(tr, restarts=1)
    await tr.stop()
    reasons = [f["reason"] for f in log.named("track.link_watch_failed")]
    assert reasons == ["RuntimeError: boom", "OSError: [Errno 24] Too many open files",
                       "OSError: [Errno 24] Too many open files"]
    assert all(w.closed for w in ScriptedWatcher.made)


async def test_link_watch_counters_add_up_over_restarted_watchers_and_a_new_tracker():
    # /status and /metrics count what every watcher survived, not only the live one.
    from hadirector.agent.track import InterfaceTracker

    sink, log, links = Sink(), Log(), Links(eth0=True)
    tr = tracker_with([[RuntimeError("boom")]], links, log, sink)
    await tr.start()
    first = ScriptedWatcher.made[0]
    first.table = type("T", (), {"overruns": 3})()
    first.resyncs, first.resubscribes = 2, 1
    await settle(tr, restarts=1)
    live = ScriptedWatcher.made[-1]
    live.resyncs = 1
    assert tr.counts() == {"overruns": 3, "resyncs": 3, "resubscribes": 1, "restarts": 1}
    await tr.stop()
    # A reload that changes the bindings builds a new tracker on the same totals.
    again = InterfaceTracker((inst(),), sink, log, addresses=links, watcher_factory=ScriptedWatcher,
                             totals=tr.totals)
    assert again.counts() == {"overruns": 3, "resyncs": 3, "resubscribes": 1, "restarts": 1}
