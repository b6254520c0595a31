"""Client traffic for the director-pair lab: short HTTP requests at a fixed rate and a set
of long-lived TCP connections that echo a line every `--ping` seconds.

Bounded: it stops by itself after `--duration` seconds (or earlier when the stop file
appears). It sends only to the VIP given, which lives inside the lab's namespaces.

At the end it writes a JSON summary to `--out`: requests sent, failed (with the times
of the failures), the longest time without a successful request, and for the
long-lived connections how many were opened, how many survived and why others died;
and a per-100 ms ``timeline`` (requests that succeeded and failed, by the time they were
sent; long-lived connections alive) for lab/timeline.py's picture.
With `--progress` it prints one status line per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter


BUCKET = 0.1   # seconds per timeline bucket


class Stats:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.sent = 0
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self.ok_times: list[float] = []
        self.ok_done: list[float] = []      # when each successful request completed
        self.served_by: Counter[str] = Counter()
        self.long_opened = 0
        self.long_alive = 0
        self.long_lost: list[tuple[float, str, str]] = []   # (time, server, reason)
        self.long_servers: Counter[str] = Counter()
        self.last_server = "-"
        self.alive_samples: list[tuple[float, int]] = [(0.0, 0)]   # (time, long_alive) at each change
        self.stalls: list[tuple[float, float]] = []     # (time, seconds) the client itself ran late

    def now(self) -> float:
        return time.monotonic() - self.t0


async def short_request(vip: str, port: int, timeout: float, st: Stats) -> None:
    start = st.now()
    st.sent += 1
    phase = "connect"       # where a timeout struck: no SYN-ACK, or no (whole) answer
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(vip, port)
            phase = "reply"
            writer.write(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            data = await reader.read()
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            raise ValueError(f"status {status.split()[1]}" if status.count(" ") else "empty reply")
        server = body.decode(errors="replace").strip()
        st.ok += 1
        st.ok_times.append(start)
        st.ok_done.append(st.now())
        st.served_by[server] += 1
        st.last_server = server
    except TimeoutError:
        st.failures.append((start, f"timeout: {phase}"))
    except ValueError as exc:
        st.failures.append((start, str(exc)))
    except (OSError, asyncio.IncompleteReadError) as exc:
        st.failures.append((start, type(exc).__name__ + (f": {exc}" if str(exc) else "")))


async def long_lived(vip: str, port: int, ping: float, timeout: float, st: Stats, stop: asyncio.Event) -> None:
    server = "?"
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(vip, port)
            hello = await reader.readline()
        server = hello.decode().strip().removeprefix("hello from ")
    except (OSError, TimeoutError) as exc:
        st.long_lost.append((st.now(), server, f"connect: {type(exc).__name__}"))
        return
    st.long_opened += 1
    st.long_alive += 1
    st.alive_samples.append((st.now(), st.long_alive))
    st.long_servers[server] += 1
    seq = 0
    try:
        while not stop.is_set():
            seq += 1
            line = f"{seq}\n".encode()
            writer.write(line)
            async with asyncio.timeout(timeout):
                await writer.drain()
                echoed = await reader.readline()
            if echoed != line:
                raise ConnectionError(f"bad echo {echoed!r}")
            try:
                await asyncio.wait_for(stop.wait(), ping)
            except TimeoutError:
                pass
    except (OSError, TimeoutError) as exc:
        st.long_alive -= 1
        st.alive_samples.append((st.now(), st.long_alive))
        st.long_lost.append((st.now(), server, type(exc).__name__ + (f": {exc}" if str(exc) else "")))
        return
    writer.close()


async def watch_stalls(st: Stats, every: float = 0.1, floor: float = 0.25) -> None:
    """Record each time this client's own loop woke more than ``floor`` late: a request
    that timed out while its client was not running says nothing about the network
    (the kernel lab's emulated CPUs are shared with every process of the lab)."""
    while True:
        t = st.now()
        await asyncio.sleep(every)
        late = st.now() - t - every
        if late > floor and len(st.stalls) < 1000:
            st.stalls.append((round(t + every, 3), round(late, 3)))


def timeline(st: Stats, end: float) -> dict:
    """Per BUCKET from t=0 to ``end``: short requests ok and failed by the time they
    were sent, and long-lived connections alive (as the bucket ends)."""
    n = int(end / BUCKET) + 1
    ok, failed, alive = [0] * n, [0] * n, [0] * n
    for t in st.ok_times:
        ok[min(int(t / BUCKET), n - 1)] += 1
    for t, _ in st.failures:
        failed[min(int(t / BUCKET), n - 1)] += 1
    last, samples = 0, iter(st.alive_samples)
    pending = next(samples, None)
    for i in range(n):
        while pending is not None and pending[0] < (i + 1) * BUCKET:
            last = pending[1]
            pending = next(samples, None)
        alive[i] = last
    return {"bucket": BUCKET, "ok": ok, "failed": failed, "alive": alive}


def gaps_over(times: list[float], start: float, end: float, floor: float) -> list[tuple[float, float]]:
    """(start, length) of every stretch longer than ``floor`` with no successful
    request, inside [start, end]."""
    pts = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return [(a, b - a) for a, b in zip(pts, pts[1:]) if b - a > floor]


def max_gap(times: list[float], start: float, end: float) -> float:
    """Longest stretch with no successful request, inside [start, end]."""
    pts = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max((b - a for a, b in zip(pts, pts[1:])), default=0.0)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vip", required=True)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--echo-port", type=int, default=9000)
    p.add_argument("--rate", type=float, default=20.0, help="short requests per second")
    p.add_argument("--timeout", type=float, default=1.0, help="short request timeout")
    p.add_argument("--long", type=int, default=10, help="long-lived connections")
    p.add_argument("--ping", type=float, default=0.2)
    p.add_argument("--long-timeout", type=float, default=15.0)
    p.add_argument("--duration", type=float, default=60.0, help="hard upper bound, seconds")
    p.add_argument("--stop-file", default=None)
    p.add_argument("--ready-file", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--label", default="client", help="progress lines start with [LABEL]")
    a = p.parse_args()

    st = Stats()
    stop = asyncio.Event()
    longs = [asyncio.create_task(long_lived(a.vip, a.echo_port, a.ping, a.long_timeout, st, stop))
             for _ in range(a.long)]
    shorts: set[asyncio.Task] = set()
    stalls = asyncio.create_task(watch_stalls(st))
    period = 1.0 / a.rate if a.rate > 0 else 0.1   # --rate 0: long-lived connections only
    next_at = time.monotonic()
    last_progress = 0.0
    ready_written = False
    while st.now() < a.duration and not (a.stop_file and os.path.exists(a.stop_file)):
        if a.rate > 0 and len(shorts) < 200:   # bounded concurrency
            t = asyncio.create_task(short_request(a.vip, a.http_port, a.timeout, st))
            shorts.add(t)
            t.add_done_callback(shorts.discard)
        if not ready_written and a.ready_file and st.long_opened + len(st.long_lost) >= a.long:
            open(a.ready_file, "w").close()
            ready_written = True
        if a.progress and st.now() - last_progress >= 1.0:
            last_progress = st.now()
            print(f"[{a.label}] t={st.now():5.1f}s requests ok={st.ok} failed={len(st.failures)} "
                  f"long-lived alive={st.long_alive}/{a.long} last={st.last_server}", flush=True)
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    end = st.now()
    stalls.cancel()
    stop.set()
    await asyncio.gather(*shorts, return_exceptions=True)
    await asyncio.gather(*longs, return_exceptions=True)
    summary = {
        "t0": st.t0,                 # time.monotonic() of t=0 (same clock as the lab's)
        "duration": end,
        "requests": st.sent,
        "ok": st.ok,
        "failed": len(st.failures),
        "failures": st.failures[:2000],
        "failure_reasons": dict(Counter(why.split(":")[0] for _, why in st.failures)),
        "max_gap": max_gap(st.ok_times, 0.5, end - a.timeout),
        # The same over completion times: a request started inside the outage whose SYN
        # retransmission got through still counts as a success above; here it does not
        # hide the outage.
        "max_gap_done": max_gap(st.ok_done, 0.5, end),
        # Every outage, not only the longest (a fault may cause two: failover and
        # takeback), by completion time; 1 s is ten request periods at the lab's rate.
        "gaps_done": gaps_over(st.ok_done, 0.5, end, 1.0),
        "served_by": dict(st.served_by),
        "long_requested": a.long,
        "long_opened": st.long_opened,
        "long_survived": st.long_alive,
        "long_lost": st.long_lost,
        "long_servers": dict(st.long_servers),
        "timeline": timeline(st, end),
        "stalls": st.stalls,
    }
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
