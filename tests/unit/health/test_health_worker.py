"""``health: {engine: worker}``: the runner's TCP and plain-HTTP checks in a real checker
worker process (``python -m hadirector.health.worker``) against real loopback servers.

What is real: the worker process, its pipes, the sockets of its checks, the servers.
The agent side is the ``HealthRunner`` the agent uses, with its structlog events.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from hadirector.agent.health_checks import HealthChecks, runner_for
from hadirector.agent.health_runner import HealthRunner
from hadirector.agent.health_worker import CheckWorker, WorkerHealthRunner, _worker_env
from hadirector.health.policy import HealthState
from hadirector.health.wire import Batch, FrameReader, encode, put_frames, wire_target
from hadirector.ipvs.availability import Backoff
from hadirector.model import (
    Config, HealthCheck, HealthEngine, HealthSettings, HttpProbe, NodeSettings, RealServer, ScriptProbe,
    TcpProbe, VirtualService,
)

from .servers import closed_port, http_server

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN
IP = ipaddress.ip_address
SLACK = 2.0     # seconds: a worker start (an interpreter) on a loaded 2-core machine


def config(*servers: RealServer, engine=HealthEngine.WORKER) -> Config:
    vs = VirtualService("web", address=IP("192.0.2.10"), port=80, real_servers=tuple(servers))
    return Config(node=NodeSettings("hc-worker"), virtual_services=(vs,), health=HealthSettings(engine))


def rs(port: int, probe=None, **check) -> RealServer:
    check = {"interval": 0.05, "timeout": 0.5, "rise": 1, "fall": 1, **check}
    return RealServer(IP("127.0.0.1"), port, check=HealthCheck(probe or TcpProbe(), **check))


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, service_key, rs_key, new):
        self.calls.append((rs_key[1], new))

    def of(self, port):
        return [new for p, new in self.calls if p == port]


async def wait_for(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


@contextlib.asynccontextmanager
async def tcp_server():
    """A listener that accepts and closes; ``close()`` makes its port refuse."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.close()


def port_of(server) -> int:
    return server.sockets[0].getsockname()[1]


def events(logs, name):
    return [e for e in logs if e["event"] == name]


# --- up, down, rise and fall ----------------------------------------------------------


async def test_worker_checks_go_up_and_down_with_the_runners_log_events_and_callbacks():
    rec = Recorder()
    refused = closed_port()
    async with tcp_server() as tsrv, http_server() as (hport, behaviour):
        behaviour.status = 500
        tport = port_of(tsrv)
        runner = runner_for(config(rs(tport), rs(hport, HttpProbe(path="/h")), rs(refused)), rec)
        with capture_logs() as logs:
            await runner.start()
            try:
                await wait_for(lambda: len(rec.calls) == 3, SLACK)
                assert runner.worker.process.pid is not None
            finally:
                await runner.stop()
    assert rec.of(tport) == [UP]
    assert rec.of(hport) == [DOWN] and rec.of(refused) == [DOWN]
    downs = {e["server"]: e for e in events(logs, "health.server_down")}
    assert downs[f"127.0.0.1:{hport}"]["reason"] == "status 500"
    assert downs[f"127.0.0.1:{refused}"]["reason"] == "refused"
    (up,) = events(logs, "health.server_up")
    assert (up["old"], up["new"], up["reason"], up["service"]) == ("unknown", "up", "connected", "web")
    assert behaviour.hits >= 1
    assert [e["reason"] for e in events(logs, "health.worker_started")] == ["first"]
    assert events(logs, "health.worker_exited") == []


async def test_an_up_server_goes_down_after_fall_failures_and_up_again_after_rise():
    rec = Recorder()
    async with tcp_server() as tsrv:
        port = port_of(tsrv)
        runner = runner_for(config(rs(port, rise=3, fall=2, initial=UP)), rec)
        with capture_logs() as logs:
            await runner.start()
            try:
                await asyncio.sleep(0.3)
                assert rec.calls == [] and runner.state(runner.config.virtual_services[0].key,
                                                        (IP("127.0.0.1"), port)) is UP
                tsrv.close()
                await tsrv.wait_closed()
                await wait_for(lambda: rec.of(port) == [DOWN], SLACK)
                again = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
                try:
                    await wait_for(lambda: rec.of(port) == [DOWN, UP], SLACK)
                finally:
                    again.close()
            finally:
                await runner.stop()
    down, = events(logs, "health.server_down")
    up, = events(logs, "health.server_up")
    assert (down["count"], down["reason"]) == (2, "refused")
    assert (up["count"], up["old"]) == (3, "down")


# --- reload ---------------------------------------------------------------------------


async def test_a_reload_adds_and_removes_worker_targets_without_restarting_the_worker():
    rec = Recorder()
    async with tcp_server() as a, tcp_server() as b:
        pa, pb = port_of(a), port_of(b)
        runner = runner_for(config(rs(pa)), rec)
        await runner.start()
        try:
            await wait_for(lambda: rec.of(pa) == [UP], SLACK)
            pid = runner.worker.process.pid
            runner.update_config(config(rs(pa), rs(pb)))
            await wait_for(lambda: rec.of(pb) == [UP], SLACK)
            runner.update_config(config(rs(pb)))
            a.close()
            await a.wait_closed()
            await asyncio.sleep(0.5)                 # a's checks would have failed by now
            assert rec.of(pa) == [UP]
            assert runner.worker.process.pid == pid and runner.worker.process.starts == 1
            assert [s.server for s in runner.snapshot().servers] == [f"127.0.0.1:{pb}"]
        finally:
            await runner.stop()


async def test_a_reload_that_changes_a_probe_keeps_the_state_and_checks_the_new_one():
    rec = Recorder()
    async with tcp_server() as tsrv, http_server() as (hport, behaviour):
        runner = runner_for(config(rs(hport, fall=1)), rec)
        await runner.start()
        try:
            await wait_for(lambda: rec.of(hport) == [UP], SLACK)
            behaviour.status = 503
            runner.update_config(config(rs(hport, HttpProbe(path="/x"), fall=1)))
            await wait_for(lambda: rec.of(hport) == [UP, DOWN], SLACK)
        finally:
            await runner.stop()
    assert behaviour.hits >= 1


# --- the worker dies ------------------------------------------------------------------


async def test_a_killed_worker_is_logged_restarted_and_no_server_goes_down_meanwhile():
    rec = Recorder()
    async with tcp_server() as tsrv:
        port = port_of(tsrv)
        runner = runner_for(config(rs(port, interval=0.05, fall=1)), rec)
        key = (runner.config.virtual_services[0].key, (IP("127.0.0.1"), port))
        with capture_logs() as logs:
            await runner.start()
            try:
                await wait_for(lambda: rec.of(port) == [UP], SLACK)
                first = runner.worker.process.pid
                os.kill(first, signal.SIGKILL)
                await wait_for(lambda: events(logs, "health.worker_exited"), SLACK)
                assert runner.state(*key) is UP          # kept while no worker runs
                await wait_for(lambda: runner.worker.process.pid not in (None, first), SLACK)
                await asyncio.sleep(0.3)                 # the new worker checks: still up
                assert rec.calls == [(port, UP)]
                tsrv.close()                             # and it does check
                await tsrv.wait_closed()
                await wait_for(lambda: rec.of(port) == [UP, DOWN], SLACK)
            finally:
                await runner.stop()
    (exited,) = events(logs, "health.worker_exited")
    assert exited["pid"] == first and exited["code"] == -signal.SIGKILL
    assert exited["reason"] == "killed by SIGKILL" and exited["restart_in"] > 0
    assert [e["reason"] for e in events(logs, "health.worker_started")] == ["first", "restart"]
    restarted = events(logs, "health.worker_started")[1]
    assert restarted["targets"] == 1


async def until_first_exit(argv: tuple[str, ...], **kw) -> tuple[list, list]:
    """Runs a CheckWorker on ``argv`` until it logs its first exit: (batches, logs)."""
    batches: list = []
    worker = CheckWorker(lambda: {}, lambda b, now: batches.append(b), time.monotonic, argv=argv,
                         backoff=Backoff(first=5.0), **kw)
    with capture_logs() as logs:
        await worker.start()
        try:
            await wait_for(lambda: events(logs, "health.worker_exited"), SLACK)
        finally:
            await worker.stop()
    return batches, logs


async def test_a_worker_that_writes_a_bad_frame_is_killed_and_restarted_with_the_reason():
    fake = (sys.executable, "-c", "import os, time; os.write(1, b'\\x7f\\xff\\xff\\xff'); time.sleep(30)")
    batches, logs = await until_first_exit(fake)
    (exited,) = events(logs, "health.worker_exited")
    assert exited["reason"].startswith("killed by SIGKILL: bad frame from the worker: frame 1: length 2147483647 "
                                       "exceeds the limit")
    assert batches == []


async def test_stop_ends_the_worker_through_its_stdin():
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv))))
        await runner.start()
        await wait_for(lambda: runner.snapshot().servers[0].state is UP, SLACK)
        pid = runner.worker.process.pid
        with capture_logs() as logs:
            await runner.stop()
    assert runner.worker.process.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)                              # exited and reaped
    assert events(logs, "health.worker_exited") == []


# --- what stays on the asyncio path, and the status --------------------------------------


async def test_script_and_https_checks_stay_on_the_runner_and_only_tcp_and_http_go_to_the_worker():
    rec = Recorder()
    async with tcp_server() as tsrv:
        script = RealServer(IP("127.0.0.2"), 80, check=HealthCheck(ScriptProbe(("true",)), interval=0.05,
                                                                   rise=1, fall=1))
        https = rs(closed_port(), HttpProbe(tls=True))
        tport = port_of(tsrv)
        runner = runner_for(config(rs(tport), script, https), rec)
        sent = runner.worker.targets()
        assert [t.port for t in sent.values()] == [tport]
        await runner.start()
        try:
            await wait_for(lambda: len(rec.calls) == 3, SLACK)
        finally:
            await runner.stop()
    assert sorted(new.value for _, new in rec.calls) == ["down", "up", "up"]


async def test_status_rows_of_worker_targets_carry_their_counters_and_last_result():
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv), interval=0.05)))
        await runner.start()
        try:
            await wait_for(lambda: runner.snapshot().servers[0].checks >= 3, 2 * SLACK)
            (row,) = runner.snapshot().servers
            totals = runner.snapshot().totals
        finally:
            await runner.stop()
    assert row.state is UP and row.successes >= 3 and row.failures == 0
    assert row.last.ok and row.last.detail == "connected" and row.last.at <= time.time()
    assert totals.checks["ok"] >= row.checks and totals.latency.count >= row.checks


async def test_the_asyncio_engine_starts_no_worker():
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv)), engine=HealthEngine.ASYNCIO))
        assert type(runner) is HealthRunner
        await runner.start()
        try:
            await wait_for(lambda: runner.snapshot().servers[0].state is UP, SLACK)
        finally:
            await runner.stop()


# --- the worker process on its own --------------------------------------------------------


def spawn_worker() -> subprocess.Popen:
    return subprocess.Popen((sys.executable, "-m", "hadirector.health.worker"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_worker_env())


def test_the_worker_exits_0_at_eof_on_its_input():
    proc = spawn_worker()
    out, err = proc.communicate(b"", timeout=10)
    up = b"".join(Batch().frames())          # written once its imports are done
    assert (proc.returncode, out, err) == (0, up, b"")


@pytest.mark.parametrize("data, said", [
    (b"\x00\x00\x00\x03abc", "bad frame from the agent: frame 1: not JSON"),
    (encode({"t": "launch"}), "bad frame from the agent: a 'launch' frame: unknown message type"),
    (encode({"t": "put", "targets": [{"kind": "tcp", "id": 1}]}), "bad frame from the agent: a 'put' frame, target 1:"),
    (b"\x00\x00\x00\x09abc", "bad frame from the agent: input ended inside a frame"),
])
def test_a_bad_frame_ends_the_worker_with_exit_2_and_one_line_saying_why(data, said):
    proc = spawn_worker()
    out, err = proc.communicate(data, timeout=10)
    assert proc.returncode == 2
    assert err.decode().startswith(said) and err.count(b"\n") == 1


def test_the_worker_reports_a_transition_in_a_batch_frame():
    port = closed_port()
    proc = spawn_worker()
    try:
        t = wire_target(5, 2, HealthCheck(TcpProbe(), interval=0.05, timeout=0.5, fall=1), "127.0.0.1", port, UP)
        for frame in put_frames([t]):
            proc.stdin.write(frame)
        proc.stdin.flush()
        reader, found = FrameReader(), []
        deadline = time.monotonic() + SLACK
        while not found and time.monotonic() < deadline:
            for msg in reader.feed(os.read(proc.stdout.fileno(), 65536)):
                found += msg["tr"]
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert found[0][:4] == [5, 2, "down", "refused"]
    assert proc.returncode == 0


async def test_a_worker_with_results_and_no_transition_writes_once_a_heartbeat_not_once_a_flush():
    # 20 ms batches at 100 checks/s cost the agent more per check than the check
    # (bench/health_checks.py --worker, issue 13); a transition still goes at once.
    from hadirector.health import worker as worker_module
    batches = []
    async with tcp_server() as server:
        check = HealthCheck(TcpProbe(), interval=0.05, timeout=0.5, fall=1)
        targets = {i: wire_target(i, 1, check, "127.0.0.1", port_of(server), UP) for i in range(5)}
        worker = CheckWorker(lambda: targets, lambda b, now: batches.append((now, b)), time.monotonic)
        await worker.start()
        try:
            await wait_for(lambda: batches, SLACK)
            await asyncio.sleep(2.6 * worker_module.ROWS_EVERY)
        finally:
            await worker.stop()
    results = sum(sum(b.kinds.values()) for _, b in batches)
    assert results >= 100                       # ~100 checks a second for 2.6 s
    assert len(batches) <= 7                    # up, beats, the rows' slices (53 with a batch per flush)
    assert not any(b.transitions for _, b in batches)


def test_the_worker_engine_builds_the_worker_runner():
    runner = runner_for(config(rs(80)))
    assert isinstance(runner, WorkerHealthRunner)
    assert [t.kind for t in runner.worker.targets().values()] == ["tcp"]


def test_a_reload_that_changes_the_engine_keeps_the_running_one_and_says_so():
    checks = HealthChecks(config(rs(80), engine=HealthEngine.ASYNCIO), lambda *a: None, {})
    with capture_logs() as logs:
        checks.update_config(config(rs(80), engine=HealthEngine.WORKER))
    assert type(checks.runner) is HealthRunner
    (kept,) = events(logs, "health.engine_kept")
    assert (kept["engine"], kept["wanted"], kept["reason"]) == ("asyncio", "worker", "restart_required")


async def test_a_worker_that_writes_nothing_is_taken_for_hung_killed_and_restarted():
    silent = (sys.executable, "-c", "import time; time.sleep(60)")
    _, logs = await until_first_exit(silent, hung_after=0.5, start_wait=0.5)
    (exited,) = events(logs, "health.worker_exited")
    assert exited["reason"].startswith("killed by SIGKILL: hung: no frame for ")
    assert exited["reason"].endswith(" s (none since it started)")


async def test_a_worker_silent_after_its_first_frame_is_killed_after_hung_after_not_start_wait():
    once = (sys.executable, "-c", "import os, time; from hadirector.health.wire import Batch; "
            "[os.write(1, f) for f in Batch().frames()]; time.sleep(60)")
    batches, logs = await until_first_exit(once, hung_after=0.5, start_wait=60.0)
    (exited,) = events(logs, "health.worker_exited")
    assert exited["reason"].startswith("killed by SIGKILL: hung: no frame for ")
    assert "none since it started" not in exited["reason"] and len(batches) == 1


async def test_a_worker_slow_to_start_is_not_taken_for_hung():
    # The kernel lab's emulated CPU took 5 s to start a worker: the agent killed each
    # one as hung before its first frame, for ever.
    slow = (sys.executable, "-c", "import time, runpy; time.sleep(3.0); "
            "runpy.run_module('hadirector.health.worker', run_name='__main__')")
    batches = []
    worker = CheckWorker(lambda: {}, lambda b, now: batches.append(b), time.monotonic, argv=slow,
                         hung_after=1.5)
    with capture_logs() as logs:
        await worker.start()
        try:
            await wait_for(lambda: len(batches) >= 2, SLACK + 4.5)   # 3 s asleep, then beats
        finally:
            await worker.stop()
    assert events(logs, "health.worker_exited") == [] and worker.starts == 1


async def test_a_real_worker_writes_at_least_once_a_second_when_nothing_happens():
    batches = []
    worker = CheckWorker(lambda: {}, lambda b, now: batches.append(b), time.monotonic, hung_after=1.5)
    with capture_logs() as logs:
        await worker.start()
        try:
            await asyncio.sleep(3.5)
        finally:
            await worker.stop()
    assert len(batches) >= 2 and events(logs, "health.worker_exited") == []


async def test_a_worker_out_of_descriptors_reports_inconclusive_and_takes_no_server_down():
    rec = Recorder()
    # The worker's own fd limit, set after its imports: 0-2 and its epoll fit, no socket does.
    starved = (sys.executable, "-c", "import resource, sys; from hadirector.health import worker; "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (4, 4)); sys.exit(worker.main([]))")
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv), fall=1, initial=UP)), rec)
        runner.worker.process._argv = starved
        with capture_logs() as logs:
            await runner.start()
            try:
                await wait_for(lambda: runner.snapshot().totals.inconclusive.get("emfile", 0) >= 5, SLACK)
                (row,) = runner.snapshot().servers
            finally:
                await runner.stop()
    assert rec.calls == [] and row.state is UP
    (line,) = events(logs, "health.check_inconclusive")
    assert (line["reason"], line["state"]) == ("emfile", "up")


async def test_a_state_seeded_before_start_reaches_the_worker_and_rise_fall_apply_from_it():
    rec = Recorder()
    port = closed_port()
    runner = runner_for(config(rs(port, fall=3)), rec)
    vs_key, rs_key = runner.config.virtual_services[0].key, (IP("127.0.0.1"), port)
    assert runner.seed(vs_key, rs_key, UP)
    with capture_logs() as logs:
        await runner.start()
        try:
            await wait_for(lambda: rec.calls, SLACK)
        finally:
            await runner.stop()
    assert rec.calls == [(port, DOWN)]
    (down,) = events(logs, "health.server_down")
    assert (down["old"], down["count"]) == ("up", 3)          # not the first result's 1


async def test_what_a_worker_wrote_before_it_died_is_still_applied():
    from hadirector.health.wire import Batch, WireTransition

    (frame,) = Batch((WireTransition(1, 1, DOWN, "refused", 0.0, 1, 0.0),), {"fail": 1}).frames()
    dying = (sys.executable, "-c", f"import os; os.write(1, {frame!r})")
    batches, logs = await until_first_exit(dying)
    assert [t.reason for b in batches for t in b.transitions] == ["refused"]
    assert events(logs, "health.worker_exited")[0]["reason"] == "exit 0"
