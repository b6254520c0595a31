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
