"""The checker worker as an operator sees it (issue 13): ``HealthTotals.engine`` and
``.worker`` in the status, the two ``hadirector_health_worker_*`` families in /metrics
and its line in ``hadirector status`` -- from a real worker process that is killed and
restarted, and one that cannot be started at all.

The rendering itself is specified on made-up snapshots in tests/unit/api/; here the
snapshot comes from the runner the agent uses (``WorkerHealthRunner.snapshot``).
"""

from __future__ import annotations

import os
import signal
import time

from prometheus_client.parser import text_string_to_metric_families

from hadirector.agent.health_checks import runner_for
from hadirector.agent.health_worker import CheckWorker
from hadirector.api.cli import render_status
from hadirector.api.metrics import render
from hadirector.api.snapshot import HealthWorkerStatus, NodeStatus, Snapshot
from hadirector.ipvs.availability import Backoff
from hadirector.model import HealthEngine

from .test_health_worker import SLACK, config, port_of, rs, tcp_server, wait_for


def worker_metrics(health) -> dict[str, float]:
    """The hadirector_health_worker_* samples of a /metrics body for this status."""
    node = NodeStatus(router_id="lb", config_path="c", pid=os.getpid(), started_at=0.0, config_loaded_at=0.0)
    text = render(Snapshot(node=node, generated_at=time.time(), health=health))
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("hadirector_health_worker_")}


async def test_a_killed_worker_shows_as_down_then_as_one_restart_with_its_reason():
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv))))
        t0 = time.time()
        await runner.start()
        try:
            first = runner.snapshot().totals
            pid = first.worker.pid
            assert first.engine is HealthEngine.WORKER and pid is not None
            assert first.worker == HealthWorkerStatus(running=True, pid=pid, starts=1, restarts=0,
                                                      last_exit=None, since=first.worker.since)
            assert t0 - 0.01 <= first.worker.since <= time.time()
            assert worker_metrics(first) == {"hadirector_health_worker_restarts_total": 0,
                                             "hadirector_health_worker_up": 1}

            os.kill(pid, signal.SIGKILL)
            # The restart waits a backoff (0.2 s first): the status shows the gap.
            await wait_for(lambda: not runner.snapshot().totals.worker.running, SLACK)
            down = runner.snapshot().totals
            assert (down.worker.pid, down.worker.starts, down.worker.restarts) == (None, 1, 0)
            assert down.worker.last_exit == "killed by SIGKILL"
            assert down.worker.since > first.worker.since
            assert worker_metrics(down)["hadirector_health_worker_up"] == 0

            await wait_for(lambda: runner.snapshot().totals.worker.running, SLACK)
            again = runner.snapshot().totals
        finally:
            await runner.stop()
    w = again.worker
    assert w.pid not in (None, pid) and (w.starts, w.restarts) == (2, 1)
    assert w.last_exit == "killed by SIGKILL" and w.since > down.worker.since
    assert worker_metrics(again) == {"hadirector_health_worker_restarts_total": 1,
                                     "hadirector_health_worker_up": 1}
    node = NodeStatus(router_id="lb", config_path="c", pid=os.getpid(), started_at=0.0, config_loaded_at=0.0)
    text = render_status(Snapshot(node=node, generated_at=w.since + 5, health=again))
    assert f"  checker worker: pid {w.pid}, up 5s; 1 restart(s), last exit: killed by SIGKILL" in text
    assert runner.snapshot().totals.worker.running is False        # stopped with the runner


async def test_a_worker_that_cannot_be_started_says_why_in_the_status():
    worker = CheckWorker(lambda: {}, lambda b, now: None, time.monotonic, argv=("/nonexistent/python",),
                         backoff=Backoff(first=5.0))
    assert worker.status(time.monotonic(), time.time()) == HealthWorkerStatus(running=False)
    await worker.start()
    try:
        status = worker.status(time.monotonic(), time.time())
    finally:
        await worker.stop()
    assert (status.running, status.pid, status.starts, status.restarts) == (False, None, 0, 0)
    assert status.last_exit.startswith("could not start: [Errno 2] No such file or directory")
    assert status.since is not None


async def test_the_asyncio_engine_reports_its_engine_and_no_worker():
    async with tcp_server() as tsrv:
        runner = runner_for(config(rs(port_of(tsrv)), engine=HealthEngine.ASYNCIO))
        totals = runner.snapshot().totals
    assert totals.engine is HealthEngine.ASYNCIO and totals.worker is None
    assert worker_metrics(totals) == {}
