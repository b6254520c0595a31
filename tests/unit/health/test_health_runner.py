"""The health runner: every check concurrently, transitions reported once, reloads
that keep state. Real asyncio time with short intervals and generous margins."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import time

import pytest
from structlog.testing import capture_logs

from hadirector.agent.health_runner import HealthRunner
from hadirector.health.policy import HealthState, ProbeResult
from hadirector.ipvs.table import DestKey, desired_table
from hadirector.model import (
    Config, HealthCheck, HttpProbe, InitialHealth, NodeSettings, RealServer, TcpProbe,
    VirtualService,
)

from .servers import Behaviour, blackhole_listener, closed_port, http_server

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN
IP = ipaddress.ip_address
SLACK = 1.0     # seconds of margin for a loaded CI machine


def config(*services: VirtualService) -> Config:
    return Config(node=NodeSettings("hc-test"), virtual_services=services)


def service(servers, name="web", port=80, **kw) -> VirtualService:
    return VirtualService(name, address=IP("192.0.2.10"), port=port, real_servers=tuple(servers), **kw)


def rs(port, addr="127.0.0.1", **check) -> RealServer:
    probe = check.pop("probe", TcpProbe())
    return RealServer(IP(addr), port, check=HealthCheck(probe, **check))


class Recorder:
    def __init__(self):
        self.calls = []
        self.runner = None
        self.seen_in_callback = []

    def __call__(self, service_key, rs_key, new):
        self.calls.append((rs_key, new))
        if self.runner is not None:
            self.seen_in_callback.append(self.runner.state(service_key, rs_key))

    def of(self, key):
        return [new for k, new in self.calls if k == key]


async def wait_for(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


class ScriptedProbe:
    """A fake probe: each target answers from its own list, then repeats the last."""

    def __init__(self, plan):
        self.plan = {k: list(v) for k, v in plan.items()}
        self.calls = {}

    async def __call__(self, check, addr, port, clients):
        key = (addr, port)
        self.calls[key] = self.calls.get(key, 0) + 1
        seq = self.plan[key]
        ok = seq.pop(0) if len(seq) > 1 else seq[0]
        return ProbeResult(ok, "ok" if ok else "refused", 0.001)


# --- transitions ------------------------------------------------------------------------


async def test_each_transition_is_reported_once_and_logged_with_its_reason():
    a, b = rs(1001, interval=0.02, rise=2, fall=2), rs(1002, interval=0.02, rise=2, fall=2)
    probe = ScriptedProbe({
        (str(a.address), 1001): [True, True, False, True, False, False, False, True, True, True],
        (str(b.address), 1002): [False],
    })
    rec = Recorder()
    runner = HealthRunner(config(service([a, b])), rec, probe=probe, seed=1)
    rec.runner = runner
    with capture_logs() as logs:
        async with runner:
            await wait_for(lambda: probe.calls.get((str(a.address), 1001), 0) >= 12, 5)
    # a: first result decides (UP); one failure is not fall=2; two are; two successes rise.
    assert rec.of(a.key) == [UP, DOWN, UP]
    assert rec.of(b.key) == [DOWN]
    assert rec.seen_in_callback == [new for _, new in rec.calls]   # state applied before the call
    events = [(e["event"], e["server"], e["old"], e["new"], e["reason"]) for e in logs
              if e["event"].startswith("health.server_")]
    assert sorted(events) == sorted([
        ("health.server_up", "127.0.0.1:1001", "unknown", "up", "ok"),
        ("health.server_down", "127.0.0.1:1001", "up", "down", "refused"),
        ("health.server_up", "127.0.0.1:1001", "down", "up", "ok"),
        ("health.server_down", "127.0.0.1:1002", "unknown", "down", "refused"),
    ])
    assert all(e["service"] == "web" and "latency" in e for e in logs if e["event"].startswith("health.server_"))


async def test_a_failing_callback_is_logged_and_checking_goes_on():
    a = rs(1001, interval=0.02, rise=1, fall=1)
    probe = ScriptedProbe({(str(a.address), 1001): [True, False, True]})

    def boom(*args):
        raise RuntimeError("ipvs exploded")

    with capture_logs() as logs:
        async with HealthRunner(config(service([a])), boom, probe=probe) as runner:
            await wait_for(lambda: probe.calls.get((str(a.address), 1001), 0) >= 3, 5)
            assert runner.state(*((service([a]).key, a.key))) is UP
    assert sum(e["event"] == "health.callback_failed" for e in logs) == 3


async def test_a_probe_that_raises_counts_as_a_failure():
    a = rs(1001, interval=0.05)

    async def broken(*args):
        raise ValueError("bug")

    rec = Recorder()
    async with HealthRunner(config(service([a])), rec, probe=broken):
        await wait_for(lambda: rec.calls, 5)
    assert rec.calls == [(a.key, DOWN)]


async def test_servers_without_a_check_are_up_from_the_start_and_never_probed():
    plain = RealServer(IP("127.0.0.1"), 1001)
    probe = ScriptedProbe({})
    async with HealthRunner(config(service([plain])), probe=probe) as runner:
        await asyncio.sleep(0.1)
        assert runner.state(service([plain]).key, plain.key) is UP
    assert probe.calls == {}


# --- real servers -------------------------------------------------------------------------


async def test_one_hanging_server_does_not_delay_the_others():
    servers = []
    for i in range(2, 42):                      # 40 healthy listeners on 127.0.0.2..41
        s = await asyncio.start_server(lambda r, w: w.close(), f"127.0.0.{i}", 0)
        servers.append(s)
    healthy = [rs(s.sockets[0].getsockname()[1], s.sockets[0].getsockname()[0],
                  interval=0.2, timeout=0.5) for s in servers]
    with blackhole_listener("127.0.0.99") as hang_port:
        hanging = [rs(hang_port, "127.0.0.99", interval=0.2, timeout=3.0, fall=1)]
        vs = service(healthy + hanging)
        rec = Recorder()
        # Concurrency well above the number of hanging checks: they hold their slots.
        runner = HealthRunner(config(vs), rec, max_concurrency=8)
        t0 = time.monotonic()
        async with runner:
            await wait_for(lambda: all(runner.state(vs.key, r.key) is UP for r in healthy), 1.0 + SLACK)
            first_up = time.monotonic() - t0
            await asyncio.sleep(1.0)
            snap = runner.snapshot()
            assert runner.state(vs.key, hanging[0].key) is UNKNOWN   # still in its probe
            await wait_for(lambda: runner.state(vs.key, hanging[0].key) is DOWN, 3.0 + SLACK)
        for s in servers:
            s.close()
    assert first_up < 1.5          # the hanging probe's timeout is 3 s
    rows = {r.rs_key: r for r in snap.servers}
    # ~6 checks each in 1.2 s at 0.2 s; ask for 4.
    assert all(rows[r.key].checks >= 4 for r in healthy)
    assert rows[hanging[0].key].checks == 0
    assert rec.of(hanging[0].key) == [DOWN]
    assert all(rec.of(r.key) == [UP] for r in healthy)


@pytest.mark.parametrize("failure", ["refused", "status 500", "timeout", "body mismatch"])
async def test_a_failure_is_detected_within_fall_intervals_plus_timeout(failure):
    # timeout < interval: checks of one server never overlap, so with a timeout longer
    # than the interval a hang would take fall x timeout instead.
    interval, timeout, fall = 0.3, 0.25, 3
    probe = HttpProbe(body_regex="nominal")
    b = Behaviour()
    async with http_server(behaviour=b) as (port, _):
        server = rs(port, interval=interval, timeout=timeout, fall=fall, rise=1, probe=probe)
        vs = service([server])
        rec = Recorder()
        async with HealthRunner(config(vs), rec, seed=3) as runner:
            await wait_for(lambda: rec.calls == [(server.key, UP)], 1.0 + SLACK)
            if failure == "status 500":
                b.status = 500
            elif failure == "timeout":
                b.delay = 10.0
            elif failure == "body mismatch":
                b.body = b"maintenance"
            else:
                await b.stop()
            break_at = time.monotonic()
            detected = await wait_for(lambda: runner.state(vs.key, server.key) is DOWN,
                                      fall * interval + timeout + SLACK)
            row = runner.snapshot().servers[0]
    assert detected - break_at <= fall * interval + timeout + SLACK
    assert rec.calls == [(server.key, UP), (server.key, DOWN)]
    assert row.last.detail == failure and row.failures == fall


async def test_recovery_is_detected_within_rise_intervals():
    interval, rise = 0.1, 3
    port = closed_port()
    server = rs(port, interval=interval, rise=rise, fall=1)
    vs = service([server])
    rec = Recorder()
    async with HealthRunner(config(vs), rec) as runner:
        await wait_for(lambda: rec.calls == [(server.key, DOWN)], 1.0 + SLACK)
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        t0 = time.monotonic()
        try:
            t = await wait_for(lambda: runner.state(vs.key, server.key) is UP, rise * interval + SLACK)
        finally:
            listener.close()
    assert t - t0 >= (rise - 1) * interval * 0.9
    assert rec.calls == [(server.key, DOWN), (server.key, UP)]


# --- reload -------------------------------------------------------------------------------


async def test_reload_keeps_the_state_and_counters_of_unchanged_checks():
    async with http_server() as (port, b):
        keep = rs(port, interval=0.05, rise=1, probe=HttpProbe())
        retimed = rs(port, "127.0.0.2", interval=0.05, rise=1)
        gone = rs(port, "127.0.0.3", interval=0.05, rise=1)
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.2", port)
        vs = service([keep, retimed, gone])
        rec = Recorder()
        async with HealthRunner(config(vs), rec) as runner:
            await wait_for(lambda: runner.state(vs.key, keep.key) is UP
                           and runner.state(vs.key, retimed.key) is UP, 1.0 + SLACK)
            before = {r.rs_key: r for r in runner.snapshot().servers}
            added = rs(port, "127.0.0.4", interval=0.05)
            retimed2 = dataclasses.replace(retimed, check=dataclasses.replace(retimed.check, interval=0.5, fall=5))
            vs2 = service([keep, retimed2, added])
            n_calls = len(rec.calls)
            runner.update_config(config(vs2))
            after = {r.rs_key: r for r in runner.snapshot().servers}
            assert set(after) == {keep.key, retimed.key, added.key}
            assert after[keep.key].state is UP and after[keep.key].checks >= before[keep.key].checks
            assert after[retimed.key].state is UP and after[retimed.key].fall == 5
            assert after[retimed.key].transitions == before[retimed.key].transitions
            assert after[retimed.key].checks >= before[retimed.key].checks >= 1
            assert runner.state(vs.key, gone.key) is UNKNOWN
            await wait_for(lambda: runner.state(vs.key, added.key) is not UNKNOWN, 1.0 + SLACK)
        listener.close()
    assert rec.calls[n_calls:] == [(added.key, DOWN)]   # nothing listens on 127.0.0.4


async def test_reload_with_a_changed_probe_keeps_the_state_and_ignores_the_old_probes_results():
    async with http_server() as (port, b):
        server = rs(port, interval=0.05, rise=1, fall=2, probe=HttpProbe())
        vs = service([server])
        rec = Recorder()
        async with HealthRunner(config(vs), rec) as runner:
            await wait_for(lambda: runner.state(vs.key, server.key) is UP, 1.0 + SLACK)
            changed = dataclasses.replace(server, check=dataclasses.replace(server.check, probe=HttpProbe(path="/v2")))
            with capture_logs() as logs:
                runner.update_config(config(service([changed])))
            assert runner.state(vs.key, server.key) is UP
            assert [e["event"] for e in logs] == ["health.check_replaced"]
            await asyncio.sleep(0.3)
        assert rec.calls == [(server.key, UP)]


async def test_a_result_of_the_old_probe_still_in_flight_after_a_reload_is_ignored():
    # The callback path: the old probe's check hangs (its SYNs unanswered) when the
    # reload points the check at a live port; its timeout arrives after the new probe
    # brought the server up, and must not take it down (fall 1).
    with blackhole_listener() as hole, socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen(64)
        server = rs(hole, interval=0.05, timeout=0.6, fall=1, rise=1)
        vs = service([server])
        rec = Recorder()
        async with HealthRunner(config(vs), rec) as runner:
            await asyncio.sleep(0.1)
            assert runner.snapshot().in_flight == 1             # the old probe, hanging
            moved = dataclasses.replace(server, check=dataclasses.replace(server.check, port=live.getsockname()[1]))
            runner.update_config(config(service([moved])))
            await wait_for(lambda: runner.state(vs.key, server.key) is UP, 1.0 + SLACK)
            await asyncio.sleep(0.8)                             # past the old probe's timeout
            assert runner.state(vs.key, server.key) is UP
    assert rec.calls == [(server.key, UP)]


async def test_stop_cancels_hanging_checks_promptly():
    with blackhole_listener() as port:
        server = rs(port, timeout=30.0)
        async with HealthRunner(config(service([server]))) as runner:
            await asyncio.sleep(0.1)
            assert runner.snapshot().in_flight == 1
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 1.0


# --- views for the other layers -------------------------------------------------------


async def test_ipvs_desired_table_programs_only_servers_the_runner_saw_up():
    async with http_server() as (port, _):
        up = rs(port, interval=0.05)
        down = rs(closed_port(), interval=0.05)
        vs = service([up, down])
        cfg = config(vs)
        async with HealthRunner(cfg) as runner:
            # Before any result nothing is programmed (initial: unknown).
            [dests] = desired_table(cfg, runner.ipvs_health).dests.values()
            assert dests == {}
            await wait_for(lambda: runner.state(vs.key, down.key) is DOWN
                           and runner.state(vs.key, up.key) is UP, 1.0 + SLACK)
            table = desired_table(cfg, runner.ipvs_health)
    [dests] = table.dests.values()
    assert set(dests) == {DestKey.of(up.address, up.port)}


async def test_snapshot_reports_last_result_latency_counters_and_totals():
    async with http_server(behaviour=Behaviour(status=503)) as (port, _):
        server = rs(port, interval=0.05, probe=HttpProbe(), fall=1)
        vs = service([server])
        async with HealthRunner(config(vs)) as runner:
            await wait_for(lambda: runner.snapshot().servers[0].checks >= 3, 2.0)
            snap = runner.snapshot()
    [row] = snap.servers
    assert (row.service, row.server, row.state, row.checked, row.sorry) == ("web", f"127.0.0.1:{port}", DOWN, True, False)
    assert row.last.ok is False and row.last.detail == "status 503" and row.last.latency > 0
    assert abs(row.last.at - time.time()) < 5 and row.failures == row.checks
    assert snap.totals.checks["fail"] >= 3 and snap.totals.latency.count >= 3


async def test_no_more_than_max_concurrency_probes_run_at_once_and_the_rest_wait_their_turn():
    running, peak, done = 0, 0, []

    async def slow_probe(check, addr, port, clients):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(port)
        return ProbeResult(True, "ok", 0.05)

    servers = [rs(2000 + i, interval=10.0) for i in range(40)]
    async with HealthRunner(config(service(servers)), probe=slow_probe, max_concurrency=5) as runner:
        await asyncio.sleep(0.02)
        snap = runner.snapshot()
        assert (snap.in_flight, snap.queued) == (5, 35)
        await wait_for(lambda: len(done) == 40, 5.0)
    assert peak == 5 and sorted(done) == [2000 + i for i in range(40)]


async def test_retry_delay_confirms_a_failure_quickly_then_the_interval_applies_again():
    starts = []

    async def failing(check, addr, port, clients):
        starts.append(time.monotonic())
        return ProbeResult(False, "refused", 0.0)

    server = rs(1001, interval=0.6, retry_delay=0.05, fall=3, initial=InitialHealth.UP)
    vs = service([server])
    rec = Recorder()
    async with HealthRunner(config(vs), rec, probe=failing) as runner:
        await wait_for(lambda: runner.state(vs.key, server.key) is DOWN, 0.5 + SLACK)
        down_after = starts[-1] - starts[0]
        await wait_for(lambda: len(starts) >= 5, 2.0 + SLACK)
    # Three failures 50 ms apart bring it down (not 3 x 600 ms) ...
    assert down_after < 0.4
    # ... and once it is down, checks go back to the interval.
    assert starts[4] - starts[3] >= 0.5
    assert rec.calls == [(server.key, DOWN)]


async def test_max_rate_spreads_a_burst_of_due_checks_over_time():
    starts = []

    async def instant(check, addr, port, clients):
        starts.append(time.monotonic())
        return ProbeResult(True, "ok", 0.0)

    servers = [rs(3000 + i, interval=30.0) for i in range(60)]
    async with HealthRunner(config(service(servers)), probe=instant, max_rate=100.0):
        await wait_for(lambda: len(starts) == 60, 3.0 + SLACK)
    # A burst of 10 (a tenth of a second's worth), then 100 a second: ~0.5 s for 60.
    took = starts[-1] - starts[0]
    assert 0.4 <= took <= 0.5 + SLACK
    assert max(b - a for a, b in zip(starts[9:], starts[10:])) < 0.1 + SLACK


def test_the_start_bucket_allows_a_tenth_of_a_second_at_once_then_rate_per_second():
    from hadirector.agent.health_runner import _Bucket

    bucket = _Bucket(100.0, now=5.0)
    assert [bucket.take(5.0) for _ in range(11)] == [True] * 10 + [False]
    assert bucket.wait() == pytest.approx(0.01)
    assert not bucket.take(5.009) and bucket.take(5.0101)
    assert _Bucket(2.0, now=0.0).burst == 1.0        # never less than one start at once


async def test_a_stopped_runner_starts_again_with_every_target_scheduled():
    calls = []

    async def slow(check, addr, port, clients):
        calls.append(port)
        await asyncio.sleep(0.2)
        return ProbeResult(True, "ok", 0.2)

    servers = [rs(4000 + i, interval=0.05) for i in range(6)]
    runner = HealthRunner(config(service(servers)), probe=slow, max_concurrency=2)
    await runner.start()
    await asyncio.sleep(0.05)                     # 2 running, 4 queued
    await runner.stop()
    calls.clear()
    await runner.start()
    try:
        await wait_for(lambda: set(calls) == {4000 + i for i in range(6)}, 2.0 + SLACK)
    finally:
        await runner.stop()


# --- inconclusive probes (the director could not run them) -------------------------------


async def test_inconclusive_probes_change_no_state_and_are_counted_and_logged_at_a_bounded_rate():
    up = rs(1001, interval=0.01, fall=1, initial=InitialHealth.UP)
    unknown = rs(1002, interval=0.01, fall=1)
    vs = service([up, unknown])
    cfg = config(vs)
    verdict = {"emfile": True}

    async def local_trouble(check, addr, port, clients):
        if verdict["emfile"]:
            return ProbeResult(False, "emfile", 0.0001, inconclusive=True)
        return ProbeResult(False, "refused", 0.001)

    rec = Recorder()
    with capture_logs() as logs:
        async with HealthRunner(cfg, rec, probe=local_trouble) as runner:
            before = desired_table(cfg, runner.ipvs_health)
            await wait_for(lambda: runner.snapshot().totals.inconclusive.get("emfile", 0) >= 40, 5)
            # Every probe of the service inconclusive: no transition, the same IPVS table.
            assert rec.calls == []
            assert desired_table(cfg, runner.ipvs_health) == before
            assert (runner.state(vs.key, up.key), runner.state(vs.key, unknown.key)) == (UP, UNKNOWN)
            snap = runner.snapshot()
            row = next(r for r in snap.servers if r.rs_key == up.key)
            assert row.inconclusive >= 20 and row.checks == 0 and row.failures == 0
            assert row.last.inconclusive and row.last.detail == "emfile"
            assert snap.totals.checks["inconclusive"] == sum(snap.totals.inconclusive.values())
            assert snap.totals.latency.count == 0
            verdict["emfile"] = False       # descriptors back: real results count again
            await wait_for(lambda: len(rec.calls) == 2, 5)
    assert [new for _, new in rec.calls] == [DOWN, DOWN]
    lines = [e for e in logs if e["event"] == "health.check_inconclusive"]
    assert len(lines) == 1          # one reason, well inside INCONCLUSIVE_LOG_EVERY
    assert (lines[0]["reason"], lines[0]["suppressed"], lines[0]["log_level"]) == ("emfile", 0, "warning")
    assert lines[0]["service"] == "web" and lines[0]["state"] in ("up", "unknown")


def test_inconclusive_log_lines_carry_how_many_were_not_logged():
    from hadirector.agent import health_report as hr

    a = rs(1001)
    clock = [100.0]
    runner = HealthRunner(config(service([a])), clock=lambda: clock[0])
    [slot] = runner._slots.values()
    emfile = ProbeResult(False, "emfile", 0.0, inconclusive=True)
    with capture_logs() as logs:
        for _ in range(5):
            runner._totals.note_inconclusive(slot, emfile, clock[0])
            clock[0] += 1.0
        runner._totals.note_inconclusive(slot, ProbeResult(False, "enobufs", 0.0, inconclusive=True), clock[0])
        clock[0] = 100.0 + hr.INCONCLUSIVE_LOG_EVERY
        runner._totals.note_inconclusive(slot, emfile, clock[0])
    got = [(e["reason"], e["suppressed"], e["total"]) for e in logs]
    assert got == [("emfile", 0, 1), ("enobufs", 0, 1), ("emfile", 4, 6)]


async def test_a_start_that_raises_counts_as_a_failure_and_the_check_runs_again():
    a = rs(1001, interval=0.02, fall=1)
    calls = []

    class BrokenStarter:
        def __init__(self, port):
            self.port = port

        def start(self, done):
            calls.append(self.port)
            raise ValueError("bug")

    rec = Recorder()
    async with HealthRunner(config(service([a])), rec,
                            prepare=lambda check, addr, port: BrokenStarter(port)) as runner:
        await wait_for(lambda: len(calls) >= 3, 5)
        assert runner.snapshot().in_flight == 0
    assert rec.calls == [(a.key, DOWN)]
