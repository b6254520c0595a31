"""Benchmark: what checking N real servers every second costs the health runner.

For each probe kind (tcp, http) and each N (default 1,000 / 5,000 / 10,000) this starts
N loopback listeners in separate server processes, runs ``HealthRunner`` against them
with ``interval=1`` (first checks spread over the first second with ``warmup``), lets it
settle for one interval, then measures for ``--duration`` seconds:

* CPU time of this process (user+sys, ``getrusage``) per second of wall time -- the
  servers run in other processes and are reported separately;
* achieved checks per second against the N/s asked for, and failed checks;
* probe latency p50/p99 (connect, or request+response) as the probe measured it;
* lateness p99: how much later than ``interval`` after its previous check a check
  started (queueing in the runner: timer, semaphore, a saturated event loop).

Targets are spread over 127.1.0.0/16 addresses x 50 ports each, so no single
destination sees enough connections to exhaust ephemeral ports; the fd limit is raised
to its hard limit. All traffic stays on loopback; each run is bounded in time.

* full garbage-collector passes inside the window, and the longest (they were the
  lateness tail: ``agent/heap.py``). Like the agent, a run freezes what the config
  built (``heap.settle``) when the code has it.

``--before REV`` also runs the product code of git revision REV (``hadirector/``
exported to a temporary directory beside this bench, so both are measured by the same
instrumentation; REV needs the runner's ``prepare=``, 5becf3a or later, and ``--grid`` its
``grid=``, session 11), as a
child process right before each run of this tree, so old and new code meet the same
machine state; the last table (markdown, for bench/README.md) gives per kind and size:
checks/s sustained, CPU us per check (user + sys), checks per core-second, lateness
p50/p99, full GC passes.

Run: ``.venv/bin/python -m bench.health_checks [--sizes 1000,3000,10000] [--kinds tcp,http]
[--duration 10] [--before 6103bbd] [--floor] [--checkloop]``. ``--floor`` adds, after each run, the
same checks as bare system calls in a tight loop (``floor_loop``): the cost no checker goes below.
``--checkloop`` adds the same checks run by ``health.checkloop.CheckLoop`` (no asyncio: the
probes' check objects, schedule and rise/fall in a loop of its own; ``checkloop_run``).
``--worker`` adds the product path of ``health: {engine: worker}``: ``WorkerHealthRunner``
on this process's event loop, the checks in its checker worker process (``worker_run``);
its CPU is the agent's and the worker's together (``agent us/chk`` prints the agent's
share), its lateness the worker's own count of how late each check started.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import ipaddress
import multiprocessing
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from hadirector.agent.health_runner import HealthRunner
from hadirector.health.probes import prepare_probe, run_check
from hadirector.model import (
    Config, HealthCheck, HttpProbe, NodeSettings, RealServer, TcpProbe, VirtualService,
)

try:                        # the agent's handling of its long-lived objects (issue 13)
    from hadirector.agent import heap
except ImportError:         # --before: code older than agent/heap.py
    heap = None

PORTS_PER_ADDRESS = 50
BASE_PORT = 20000
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                 b"Connection: close\r\n\r\nok\n")


def endpoints(n: int) -> list[tuple[str, int]]:
    out = []
    for i in range(n):
        a = i // PORTS_PER_ADDRESS
        out.append((f"127.1.{a // 250}.{a % 250 + 1}", BASE_PORT + i % PORTS_PER_ADDRESS))
    return out


# --- servers (separate processes, plain epoll: cheap, and not what we measure) ----------


def serve(eps: list[tuple[str, int]], kind: str, ready, stop, accepted=None) -> None:
    """Serve ``eps`` until ``stop``; adds accepted connections to ``accepted`` (a shared
    counter) so a checker we cannot instrument (keepalived) can be measured too."""
    ep = select.epoll()
    listeners: dict[int, socket.socket] = {}
    conns: dict[int, socket.socket] = {}
    for host, port in eps:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1024)
        s.setblocking(False)
        listeners[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    ready.set()
    n = 0
    while not stop.is_set():
        if n and accepted is not None:
            with accepted.get_lock():
                accepted.value += n
        n = 0
        for fd, _ in ep.poll(0.2):
            ls = listeners.get(fd)
            if ls is not None:
                while True:
                    try:
                        c, _addr = ls.accept()
                    except BlockingIOError:
                        break
                    n += 1
                    if kind == "tcp":
                        c.close()
                    else:
                        c.setblocking(False)
                        conns[c.fileno()] = c
                        ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            try:
                data = c.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data and b"\r\n\r\n" not in data:
                continue            # request not complete yet (it always fits one read here)
            if data:
                try:
                    c.send(HTTP_RESPONSE)
                except OSError:
                    pass
            ep.unregister(fd)
            del conns[fd]
            c.close()


def proc_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def proc_cpu(pid: int) -> float:
    return sum(proc_times(pid))


# --pin: the CPUs the loopback servers run on (None: any). The checker gets the rest.
SERVER_CPUS: set[int] | None = None


def _serve_pinned(*args) -> None:
    if SERVER_CPUS is not None:
        os.sched_setaffinity(0, SERVER_CPUS)
    serve(*args)


def start_servers(eps, kind, nproc, accepted=None):
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    procs = []
    for i in range(nproc):
        ready = ctx.Event()
        p = ctx.Process(target=_serve_pinned, args=(eps[i::nproc], kind, ready, stop, accepted), daemon=True)
        p.start()
        if not ready.wait(30):
            raise RuntimeError("server process did not start")
        procs.append(p)
    return procs, stop


def stop_servers(procs, stop) -> None:
    stop.set()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()             # its listeners must be gone before the next run binds them


# --- one measured run ----------------------------------------------------------------------


def config_for(eps, kind: str, interval: float, timeout: float) -> Config:
    probe = TcpProbe() if kind == "tcp" else HttpProbe(path="/health")
    check = HealthCheck(probe, interval=interval, timeout=timeout, rise=1, fall=3)
    services = []
    per_service = 1000
    for s in range(0, len(eps), per_service):
        rss = tuple(RealServer(ipaddress.ip_address(h), p, check=check) for h, p in eps[s:s + per_service])
        services.append(VirtualService(f"svc{s // per_service}", address=ipaddress.ip_address("192.0.2.1"),
                                       port=8000 + s // per_service, real_servers=rss))
    return Config(node=NodeSettings("bench"), virtual_services=tuple(services))


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(eps, kind, duration, interval, timeout, concurrency, max_rate=0.0, grid=None) -> dict:
    cfg = config_for(eps, kind, interval, timeout)
    loop = asyncio.get_running_loop()
    window = {"on": False}
    latencies: list[float] = []
    lateness: list[float] = []
    last_start: dict[tuple, float] = {}
    counts = {"ok": 0, "fail": 0}
    reasons: dict[str, int] = {}

    def record(start, addr, port, r):
        key = (addr, port)
        prev = last_start.get(key)
        last_start[key] = start
        if window["on"]:
            counts["ok" if r.ok else "fail"] += 1
            latencies.append(r.elapsed)
            if prev is not None:
                lateness.append(max(0.0, start - prev - interval))
            if not r.ok:
                reasons[r.detail] = reasons.get(r.detail, 0) + 1

    async def probe(check, addr, port, clients):        # the task path (old runner, HTTPS)
        start = loop.time()
        r = await run_check(check, addr, port, clients)
        record(start, addr, port, r)
        return r

    class Timed:                                         # the callback path
        """The target's real starter; each check's start and result recorded."""

        def __init__(self, starter, addr, port):
            self.starter, self.addr, self.port = starter, addr, port

        def start(self, done):
            t = loop.time()

            def finished(r):
                record(t, self.addr, self.port, r)
                done(r)
            return self.starter.start(finished)

    def prepare(check, addr, port):
        starter = prepare_probe(check, addr, port)
        return None if starter is None else Timed(starter, addr, port)

    kw = {"prepare": prepare}
    if grid is not None:
        kw["grid"] = grid
    runner = HealthRunner(cfg, None, probe=probe, max_concurrency=concurrency, max_rate=max_rate,
                          seed=1, warmup=interval, **kw)
    if heap is not None:
        heap.settle()                                # as the agent does once its config is loaded
    gc.collect()
    full_passes: list[float] = []
    timing = {"t": 0.0}

    def on_gc(phase, info):                          # full passes inside the window, their length
        if info["generation"] == 2 and window["on"]:
            if phase == "start":
                timing["t"] = time.perf_counter()
            else:
                full_passes.append(time.perf_counter() - timing["t"])

    gc.callbacks.append(on_gc)
    await runner.start()
    try:
        await asyncio.sleep(interval * 1.5)          # first checks spread over warmup
        window["on"] = True
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(duration)
        window["on"] = False
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    finally:
        await runner.stop()
        gc.callbacks.remove(on_gc)
        if heap is not None:
            heap.release()
    wall = t1 - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    done = counts["ok"] + counts["fail"]
    return {
        "wall": wall, "cpu": cpu, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
        "rate": done / wall, "done": done, "fail": counts["fail"], "reasons": reasons,
        "p50": pct(latencies, 0.50), "p99": pct(latencies, 0.99),
        "late_p50": pct(lateness, 0.50), "late_p99": pct(lateness, 0.99),
        "gc_n": len(full_passes), "gc_max": max(full_passes, default=0.0),
    }


def floor_loop(eps, kind: str, duration: float, interval: float) -> dict:
    """The floor: the same checks as bare system calls in a tight loop (no runner, no
    asyncio, no result objects) at the same rate -- socket, connect, epoll, close, and
    for HTTP send and recv. On loopback it includes the servers' kernel half too."""
    ep = select.epoll()
    socks: dict[int, list] = {}
    rate, step = len(eps) / interval, 0.002
    stream = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    done = i = 0
    carry = 0.0
    t0 = nxt = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    while (now := time.monotonic()) - t0 < duration:
        if now >= nxt:
            carry += rate * step
            for _ in range(int(carry)):
                s = socket.socket(socket.AF_INET, stream)
                s.connect_ex(eps[i % len(eps)])
                i += 1
                socks[s.fileno()] = [s, False]
                ep.register(s.fileno(), select.EPOLLOUT)
            carry -= int(carry)
            nxt += step
        for fd, ev in ep.poll(max(0.0, nxt - time.monotonic())):
            entry = socks[fd]
            s = entry[0]
            if kind == "http" and not ev & (select.EPOLLERR | select.EPOLLHUP):
                if not entry[1]:
                    s.send(request)
                    entry[1] = True
                    ep.modify(fd, select.EPOLLIN)
                    continue
                if b"\r\n\r\n" not in s.recv(65536):
                    continue
            del socks[fd]
            s.close()
            done += 1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    for entry in socks.values():
        entry[0].close()
    ep.close()
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"wall": wall, "cpu": user + sys_, "user": user, "sys": sys_, "rate": done / wall,
            "done": done, "fail": 0, "reasons": {}, "p50": float("nan"), "p99": float("nan"),
            "late_p50": float("nan"), "late_p99": float("nan"), "gc_n": float("nan"), "gc_max": float("nan")}


def checkloop_run(eps, kind: str, duration: float, interval: float, timeout: float,
                  max_events: int | None = None) -> dict:
    """The same checks (same probe, interval, timeout, rise/fall, warmup) run by
    ``CheckLoop``: one thread, its own epoll, no asyncio. Its lateness is from each
    check's deadline, which is the runner rows' "interval after the previous start" for
    every check that ends within its interval (no jitter here). It keeps no per-check
    probe latency (no per-check instrumentation at all: the runner rows carry the
    bench's wrapper, a closure and a few list and dict operations per check)."""
    from hadirector.health.checkloop import CheckLoop, LoopTarget    # not in --before trees
    probe = TcpProbe() if kind == "tcp" else HttpProbe(path="/health")
    check = HealthCheck(probe, interval=interval, timeout=timeout, rise=1, fall=3)
    loop = CheckLoop([LoopTarget(i, check, h, p) for i, (h, p) in enumerate(eps)], warmup=interval, seed=1,
                     **({} if max_events is None else {"max_events": max_events}))
    if heap is not None:
        heap.settle()
    gc.collect()
    full_passes: list[float] = []
    window = {"on": False, "t": 0.0}

    def on_gc(phase, info):
        if info["generation"] == 2 and window["on"]:
            if phase == "start":
                window["t"] = time.perf_counter()
            else:
                full_passes.append(time.perf_counter() - window["t"])

    gc.callbacks.append(on_gc)
    # Where a late start comes from (per loop turn, not per check): the events one poll
    # returned and how long their dispatch took, the checks one turn started and how
    # long that took (from pop_due's return to the next poll), how long a poll slept
    # past what it was asked (the kernel's timer slack and the scheduler).
    turns = {"events": [], "dispatch": [], "starts": [], "start_s": [], "oversleep": []}
    checks, schedule = loop._checks, loop._schedule
    poll0, dispatch0, pop0 = checks.poll, checks.dispatch, schedule.pop_due
    mark = {"popped": None}
    clock = time.monotonic

    def poll(timeout, max_events=-1):
        t = clock()
        if mark["popped"] is not None and window["on"]:
            turns["start_s"].append(t - mark["popped"])
        mark["popped"] = None
        ready = poll0(timeout, max_events)
        if window["on"]:
            turns["oversleep"].append(max(0.0, clock() - t - timeout) if not ready else 0.0)
            turns["events"].append(len(ready))
        return ready

    def dispatch(ready, now):
        t = clock()
        dispatch0(ready, now)
        if window["on"]:
            turns["dispatch"].append(clock() - t)

    def pop_due(now):
        due = pop0(now)
        if window["on"]:
            turns["starts"].append(len(due))
        mark["popped"] = clock()
        return due

    checks.poll, checks.dispatch, schedule.pop_due = poll, dispatch, pop_due
    try:
        loop.run(until=time.monotonic() + interval * 1.5)      # first checks spread over warmup
        window["on"] = True
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        rep = loop.run(until=t0 + duration)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        window["on"] = False
        reasons: dict[str, int] = {}
        for i in range(len(eps)):
            last = loop.health(i).last
            if last is not None and not last.ok:
                reasons[last.detail] = reasons.get(last.detail, 0) + 1
    finally:
        loop.close()
        gc.callbacks.remove(on_gc)
        if heap is not None:
            heap.release()
    wall = t1 - t0
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    done = rep.completed
    return {"wall": wall, "cpu": user + sys_, "user": user, "sys": sys_, "rate": done / wall,
            "done": done, "fail": rep.failed + rep.inconclusive, "reasons": reasons,
            "p50": float("nan"), "p99": float("nan"),
            "late_p50": pct(rep.lateness, 0.50), "late_p99": pct(rep.lateness, 0.99),
            "gc_n": len(full_passes), "gc_max": max(full_passes, default=0.0),
            "why": {"events p99/max": (pct(turns["events"], 0.99), max(turns["events"], default=0)),
                    "dispatch p99/max ms": (pct(turns["dispatch"], 0.99) * 1e3,
                                            max(turns["dispatch"], default=0.0) * 1e3),
                    "starts p99/max": (pct(turns["starts"], 0.99), max(turns["starts"], default=0)),
                    "start batch p99/max ms": (pct(turns["start_s"], 0.99) * 1e3,
                                               max(turns["start_s"], default=0.0) * 1e3),
                    "oversleep p99/max ms": (pct(turns["oversleep"], 0.99) * 1e3,
                                             max(turns["oversleep"], default=0.0) * 1e3),
                    "involuntary switches/s": (r1.ru_nivcsw - r0.ru_nivcsw) / (t1 - t0),
                    "late > 10ms": sum(1 for x in rep.lateness if x > 0.010)}}


def worker_run(eps, kind: str, duration: float, interval: float, timeout: float,
               accepted=None, settle: float = 1.5) -> dict:
    """The same checks through ``WorkerHealthRunner`` (health: {engine: worker}): this
    process is the agent (its loop reads the batches and applies them), the checks run
    in the worker process. CPU: both processes; lateness: the batches' counts (how late
    each check started after its deadline, in ``wire.LATE_STEP`` steps). ``accepted``
    (the servers' shared counter) adds ``served``: checks per second as the servers
    counted them in the window; ``settle``: intervals from start to the window."""
    import dataclasses

    from hadirector.agent.health_worker import WorkerHealthRunner     # not in --before trees
    from hadirector.health.wire import LATE_STEP, LATENCY_BOUNDS
    from hadirector.model import HealthEngine, HealthSettings

    cfg = dataclasses.replace(config_for(eps, kind, interval, timeout),
                              health=HealthSettings(HealthEngine.WORKER))
    window = {"on": False}
    kinds: dict[str, int] = {}
    late: dict[int, int] = {}
    lat_counts = [0] * (len(LATENCY_BOUNDS) + 1)       # the worker sends latencies as bucket counts
    batches = {"n": 0, "checks": 0, "max": 0}
    served = [0, 0]

    async def go() -> tuple:
        runner = WorkerHealthRunner(cfg, None, seed=1, warmup=interval)
        proc = runner.worker.process
        apply = proc._on_batch

        def on_batch(batch, now):                      # the runner's, counted in the window
            if batch.kinds:
                window["checking"] = True
            if window["on"]:
                n = sum(batch.kinds.values())
                batches["n"] += 1
                batches["checks"] += n
                batches["max"] = max(batches["max"], n)
                for k, v in batch.kinds.items():
                    kinds[k] = kinds.get(k, 0) + v
                for k, v in batch.late.items():
                    late[k] = late.get(k, 0) + v
                if batch.latency:
                    for i, c in enumerate(batch.latency):
                        lat_counts[i] += c
            apply(batch, now)
        proc._on_batch = on_batch
        if heap is not None:
            heap.settle()
        gc.collect()
        await runner.start()
        try:
            # From its first results on: an emulated guest (the kernel lab) takes seconds
            # to start the worker's interpreter, which is not what a check costs.
            while not window.get("checking"):
                await asyncio.sleep(0.05)
            await asyncio.sleep(interval * settle)
            pid = proc.pid
            window["on"] = True
            r0, w0, t0 = resource.getrusage(resource.RUSAGE_SELF), proc_times(pid), time.monotonic()
            served[0] = accepted.value if accepted is not None else 0
            await asyncio.sleep(duration)
            r1, w1, t1 = resource.getrusage(resource.RUSAGE_SELF), proc_times(pid), time.monotonic()
            served[1] = accepted.value if accepted is not None else 0
            window["on"] = False
            assert proc.pid == pid, "the worker restarted during the window"
        finally:
            await runner.stop()
            if heap is not None:
                heap.release()
        return r0, r1, w0, w1, t1 - t0

    with asyncio.Runner() as arun:
        r0, r1, w0, w1, wall = arun.run(go())
    a_user, a_sys = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    w_user, w_sys = w1[0] - w0[0], w1[1] - w0[1]
    done = sum(kinds.values())
    steps = sorted(late.items())
    total = sum(late.values())

    def late_pct(q: float) -> float:
        acc = 0
        for k, v in steps:
            acc += v
            if acc > q * total:
                return k * LATE_STEP
        return float("nan")
    return {"wall": wall, "cpu": a_user + a_sys + w_user + w_sys, "user": a_user + w_user,
            "sys": a_sys + w_sys, "rate": done / wall, "done": done, "fail": done - kinds.get("ok", 0),
            "reasons": {}, "p50": bucket_pct(lat_counts, LATENCY_BOUNDS, 0.50),
            "p99": bucket_pct(lat_counts, LATENCY_BOUNDS, 0.99),
            "late_p50": late_pct(0.50), "late_p99": late_pct(0.99), "gc_n": float("nan"),
            "gc_max": float("nan"), "agent_us": (a_user + a_sys) / max(1, done) * 1e6, "agent_cpu": a_user + a_sys,
            "batches": batches["n"] / wall, "batch_mean": batches["checks"] / max(1, batches["n"]),
            "batch_max": batches["max"], "served": (served[1] - served[0]) / wall}


def bucket_pct(counts, bounds, q: float) -> float:
    """The upper bound of the bucket that holds the ``q`` quantile (inf: over the last)."""
    total, acc = sum(counts), 0
    for i, c in enumerate(counts):
        acc += c
        if total and acc >= q * total:
            return bounds[i] if i < len(bounds) else math.inf
    return float("nan")


def ms(seconds: float) -> str:
    # nan: no target was checked twice inside the window (the runner fell behind).
    return "-" if seconds != seconds else f"{seconds * 1e3:.1f}ms"


def run_one(kind: str, n: int, args, floor: bool = False, engine: str = "runner") -> dict:
    """One measured run of this tree's runner (or of ``floor_loop``, or of ``CheckLoop``
    with ``engine="checkloop"``): servers up, measure, servers down."""
    eps = endpoints(n)
    accepted = None
    if engine == "worker":
        # Its results reach this process in batches (one a second when nothing changes):
        # a window's edges would cut one, so the servers count its checks.
        import multiprocessing
        accepted = multiprocessing.get_context("fork").Value("q", 0)
    procs, stop = start_servers(eps, kind, args.server_procs, accepted)
    load = os.getloadavg()[0]
    try:
        srv0 = sum(proc_cpu(p.pid) for p in procs)
        factory = None
        if args.loop == "uvloop":
            import uvloop
            factory = uvloop.new_event_loop
        if floor:
            res = floor_loop(eps, kind, args.duration, args.interval)
        elif engine == "checkloop":
            res = checkloop_run(eps, kind, args.duration, args.interval, args.timeout, args.max_events)
        elif engine == "worker":
            res = worker_run(eps, kind, args.duration, args.interval, args.timeout, accepted=accepted)
            res["rate"], res["done"] = res["served"], res["served"] * res["wall"]
            res["agent_us"] = res["agent_cpu"] / max(1, res["done"]) * 1e6
        else:
            with asyncio.Runner(loop_factory=factory) as runner:
                res = runner.run(measure(eps, kind, args.duration, args.interval, args.timeout,
                                         args.concurrency, args.max_rate, args.grid))
        srv = (sum(proc_cpu(p.pid) for p in procs) - srv0) / (res["wall"] + (0 if floor else args.interval * 1.5))
    finally:
        stop_servers(procs, stop)
    w = res["wall"]
    return {"kind": kind, "n": n, "want": n / args.interval, "got": res["rate"], "fail": res["fail"],
            "p50": res["p50"], "p99": res["p99"], "late_p50": res["late_p50"],
            "late_p99": res["late_p99"], "cpu_s": res["cpu"] / w, "user_s": res["user"] / w,
            "sys_s": res["sys"] / w, "us_chk": res["cpu"] / max(1, res["done"]) * 1e6,
            "srv": srv, "load": load, "reasons": res["reasons"], "gc_n": res["gc_n"], "gc_max": res["gc_max"],
            **{k: res[k] for k in ("agent_us", "batches", "batch_mean", "batch_max", "why") if k in res}}


def _ms_value(text: str) -> float:
    return float("nan") if text == "-" else float(text.removesuffix("ms")) / 1e3


def run_before(tree: str, kind: str, n: int, args) -> dict | None:
    """The same run with the code of ``--before`` (exported to ``tree``), in a child
    process; its row is parsed back (every version of this file prints the same
    columns after the kind)."""
    cmd = [sys.executable, "-m", "bench.health_checks", "--sizes", str(n), "--kinds", kind,
           "--duration", str(args.duration), "--interval", str(args.interval),
           "--timeout", str(args.timeout), "--concurrency", str(args.concurrency),
           "--max-rate", str(args.max_rate), "--server-procs", str(args.server_procs)]
    out = subprocess.run(cmd, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), capture_output=True,
                         text=True, timeout=args.duration * 4 + 120)
    for line in out.stdout.splitlines():
        f = line.split()
        if f[:1] == ["after"]:
            f = f[1:]
        if len(f) >= 15 and f[0] == kind and f[1] == str(n):
            return {"kind": kind, "n": n, "want": float(f[2]), "got": float(f[3]), "fail": int(f[4]),
                    "p50": float(f[5]) / 1e3, "p99": float(f[6]) / 1e3, "late_p50": _ms_value(f[7]),
                    "late_p99": _ms_value(f[8]), "cpu_s": float(f[9]), "user_s": float(f[10]),
                    "sys_s": float(f[11]), "us_chk": float(f[12]), "srv": float(f[13]),
                    "load": float(f[14]), "reasons": {},
                    "gc_n": float(f[15]) if len(f) > 16 and f[15] != "-" else float("nan"),
                    "gc_max": _ms_value(f[16]) if len(f) > 16 else float("nan")}
    print(f"# before: no row for {kind} {n}: {out.stderr.strip()[-500:]}", file=sys.stderr)
    return None


def export_tree(rev: str) -> str:
    root = Path(__file__).resolve().parents[1]
    tree = tempfile.mkdtemp(prefix="hc-before-")
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "hadirector"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    # This bench measures the old code: same instrumentation, same columns.
    shutil.copytree(root / "bench", Path(tree) / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def row_text(impl: str, r: dict) -> str:
    return (f"{impl:9} {r['kind']:5} {r['n']:>7} {r['want']:>7.0f} {r['got']:>7.0f} {r['fail']:>5} "
            f"{r['p50'] * 1e3:>7.2f} {r['p99'] * 1e3:>7.2f} {ms(r['late_p50']):>8} {ms(r['late_p99']):>8} "
            f"{r['cpu_s']:>7.2f} {r['user_s']:>6.2f} {r['sys_s']:>6.2f} {r['us_chk']:>6.0f} "
            f"{r['srv']:>7.2f} {r['load']:>5.1f} {_count(r['gc_n']):>4} {ms(r['gc_max']):>8}")


def _count(n: float) -> str:
    return "-" if n != n else f"{n:.0f}"


def summary(rows: list[tuple[str, dict]]) -> str:
    """The table for bench/README.md: what one core sustains, and how late."""
    out = ["| kind | servers | code | checks/s (asked) | CPU us/check (user + sys) | checks per core-second"
           " | lateness p50 / p99 | full GC passes, longest |", "|---|---|---|---|---|---|---|---|"]
    for impl, r in rows:
        done = max(r["got"], 1e-9)
        out.append(f"| {r['kind']} | {r['n']:,} | {impl} | {r['got']:,.0f} ({r['want']:,.0f}) | "
                   f"{r['us_chk']:.0f} ({r['user_s'] / done * 1e6:.0f} + {r['sys_s'] / done * 1e6:.0f}) | "
                   f"{1e6 / max(r['us_chk'], 1e-9):,.0f} | {ms(r['late_p50'])} / {ms(r['late_p99'])} | "
                   f"{_count(r['gc_n'])}, {ms(r['gc_max'])} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,3000,10000")
    ap.add_argument("--kinds", default="tcp,http")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--max-rate", type=float, default=0.0,
                    help="HealthRunner max_rate (checks started per second); 0 = no cap, to"
                         " measure capacity (the runner's default is 5000)")
    ap.add_argument("--server-procs", type=int, default=2)
    ap.add_argument("--grid", type=float, default=None,
                    help="HealthRunner deadline grid (s; 0: exact deadlines); default: it follows the rate")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop of this tree's runs (uvloop: if importable)")
    ap.add_argument("--floor", action="store_true",
                    help="also run the bare system calls of the same checks in a tight loop"
                         " (floor_loop) after each run: what no checker in Python goes below")
    ap.add_argument("--checkloop", action="store_true",
                    help="also run the same checks in health.checkloop.CheckLoop (no asyncio)"
                         " after each run")
    ap.add_argument("--max-events", type=int, default=None,
                    help="CheckLoop max_events (events per epoll_wait) of the checkloop row")
    ap.add_argument("--worker", action="store_true",
                    help="also run the same checks through WorkerHealthRunner (health: {engine: worker}:"
                         " a checker worker process) after each run")
    ap.add_argument("--before", metavar="REV",
                    help="also run the code of git revision REV, right before each run of this"
                         " tree's code (same servers, sizes and machine state)")
    ap.add_argument("--pin", action="store_true",
                    help="the issue's 'on one core': this process (the checker, the agent of the worker"
                         " row, and the worker it starts) on CPU 0, the loopback servers on the others")
    args = ap.parse_args(argv)
    global SERVER_CPUS
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            ap.error("--pin needs 2 CPUs or more")
        SERVER_CPUS = set(cpus[1:])
        os.sched_setaffinity(0, {cpus[0]})

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # no per-event I/O

    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    tree = export_tree(args.before) if args.before else None
    print(f"# health runner benchmark: interval {args.interval}s, timeout {args.timeout}s, "
          f"concurrency {args.concurrency}, max_rate {args.max_rate or 'none'}, {args.duration:.0f}s per run, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}"
          + (f"; pinned: checker on CPU {min(os.sched_getaffinity(0))}, servers on {sorted(SERVER_CPUS)}"
             if SERVER_CPUS else "")
          + (f"; before = {args.before}" if args.before else ""), flush=True)
    header = (f"{'code':9} {'kind':5} {'servers':>7} {'want/s':>7} {'got/s':>7} {'fail':>5} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'late p50':>8} {'late p99':>8} "
              f"{'cpu s/s':>7} {'user':>6} {'sys':>6} {'us/chk':>6} {'srv cpu':>7} {'load':>5} {'gc2':>4} {'gc2 max':>8}")
    print(header)
    print("-" * len(header), flush=True)
    rows: list[tuple[str, dict]] = []
    try:
        for kind in kinds:
            for n in sizes:
                if tree is not None:
                    r = run_before(tree, kind, n, args)
                    if r is not None:
                        rows.append(("before", r))
                        print(row_text("before", r), flush=True)
                r = run_one(kind, n, args)
                rows.append(("after", r))
                print(row_text("after", r), flush=True)
                if r["reasons"]:
                    top = sorted(r["reasons"].items(), key=lambda kv: -kv[1])[:3]
                    print(f"       failures: {', '.join(f'{k} x{v}' for k, v in top)}", flush=True)
                if args.checkloop:
                    r = run_one(kind, n, args, engine="checkloop")
                    rows.append(("checkloop", r))
                    print(row_text("checkloop", r), flush=True)
                    if r["reasons"]:
                        top = sorted(r["reasons"].items(), key=lambda kv: -kv[1])[:3]
                        print(f"          last failures: {', '.join(f'{k} x{v}' for k, v in top)}", flush=True)
                    print("          per turn: " + "; ".join(
                        f"{k} " + ("/".join(f"{x:.1f}" for x in v) if isinstance(v, tuple) else f"{v:.0f}")
                        for k, v in r["why"].items()), flush=True)
                if args.worker:
                    r = run_one(kind, n, args, engine="worker")
                    rows.append(("worker", r))
                    print(row_text("worker", r), flush=True)
                    print(f"          agent share {r['agent_us']:.1f} us/chk; {r['batches']:.0f} batches/s of"
                          f" {r['batch_mean']:.0f} results (max {r['batch_max']})", flush=True)
                if args.floor:
                    r = run_one(kind, n, args, floor=True)
                    rows.append(("floor", r))
                    print(row_text("floor", r), flush=True)
    finally:
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
    print("# cpu s/s = CPU seconds of the checker process per wall second (1.00 = one core);"
          " us/chk = its CPU microseconds per check; srv cpu = CPU s/s of the loopback servers;"
          " late = check start beyond interval after the previous one; load = 1-min load"
          " average when the run started (other work on the machine); gc2 = full GC passes in the"
          " window, gc2 max = the longest", flush=True)
    print()
    print(summary(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
