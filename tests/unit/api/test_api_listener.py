"""BoundedListener on real loopback sockets, and against a real descriptor limit."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import structlog

from hadirector.api.listener import BoundedListener, raise_nofile_limit

ROOT = Path(__file__).resolve().parents[3]


class Line(asyncio.Protocol):
    """``busy\\n`` marks the connection busy, ``done\\n`` idle; echoes ``ok``."""

    def __init__(self, listener_ref: list) -> None:
        self.ref = listener_ref

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        for line in data.split(b"\n"):
            if line == b"busy":
                self.ref[0].request_started(self.transport)
            elif line == b"done":
                self.ref[0].request_finished(self.transport)
        self.transport.write(b"ok\n")


async def start(**kw) -> tuple[BoundedListener, int]:
    sock = socket.create_server(("127.0.0.1", 0))
    ref: list = [None]
    lst = BoundedListener(sock, lambda: Line(ref), log=structlog.get_logger(), **kw)
    ref[0] = lst
    lst.start()
    return lst, sock.getsockname()[1]


async def connect(port: int, line: bytes | None = None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if line is not None:
        w.write(line + b"\n")
        assert await asyncio.wait_for(r.readline(), 5) == b"ok\n"
    return r, w


async def is_closed(r: asyncio.StreamReader, within: float = 0.5) -> bool:
    try:
        return await asyncio.wait_for(r.read(100), within) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_a_connection_with_a_request_in_progress_is_never_shed():
    lst, port = await start(max_connections=2, header_timeout=30, request_timeout=30)
    try:
        busy = [await connect(port, b"busy") for _ in range(2)]
        late_r, late_w = await connect(port)
        assert await is_closed(late_r), "full of busy connections: the newcomer is closed"
        assert all([not await is_closed(r, 0.2) for r, _ in busy])
        assert lst.dropped == {"all_busy": 1}
        # One request finishes: that connection is idle now and gives way to a newcomer.
        busy[0][1].write(b"done\n")
        await busy[0][0].readline()
        await asyncio.sleep(0.05)
        r3, w3 = await connect(port, b"hello")
        assert await is_closed(busy[0][0]) and not await is_closed(busy[1][0], 0.2)
        assert lst.dropped["at_capacity"] == 1
        for _, w in busy + [(late_r, late_w), (r3, w3)]:
            w.close()
    finally:
        await lst.close()


async def test_close_cuts_every_connection_and_stops_listening():
    lst, port = await start()
    r, w = await connect(port, b"x")
    await lst.close()
    assert await is_closed(r)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    w.close()
    await lst.close()        # idempotent


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
HALF = b"GET /status HTTP/1.1\r\nHost: x\r\n"          # a slowloris never ends its head


class SlowHandler(asyncio.Protocol):
    """An HTTP-ish protocol whose handler starts ``delay`` s after the head arrives, as
    aiohttp's starts some loop turns later (more on a loaded director): only then
    does it mark the connection busy, and it answers ``ok``."""

    def __init__(self, listener_ref: list, delay: float) -> None:
        self.ref, self.delay = listener_ref, delay

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if b"\r\n\r\n" in data:
            asyncio.get_running_loop().call_later(self.delay, self._handle)

    def _handle(self):
        if not self.transport.is_closing():
            self.ref[0].request_started(self.transport)
            self.transport.write(b"ok\n")
            self.ref[0].request_finished(self.transport)


def slow_listener(delay: float, **kw) -> tuple[BoundedListener, socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    ref: list = [None]
    lst = BoundedListener(sock, lambda: SlowHandler(ref, delay), log=structlog.get_logger(),
                          header_timeout=30, request_timeout=30, **kw)
    ref[0] = lst
    return lst, sock


async def answered(r: asyncio.StreamReader, within: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(r.readline(), within) == b"ok\n"
    except (ConnectionError, TimeoutError):
        return False


async def flood(port: int, n: int) -> list:
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HALF)
        conns.append((r, w))
    return conns


@pytest.mark.parametrize("request_end, survives", [(b"\r\n\r\n", True), (None, False)])
async def test_a_client_whose_request_head_is_complete_outlives_a_flood_before_its_handler_runs(
        request_end, survives):
    # 4 slots; the real client's handler starts 0.5 s after its head arrives, and 12
    # slowloris connections arrive meanwhile. Seen at the end of its head, the client
    # is busy and the flood sheds only slowloris; without request_end it was the
    # oldest waiting connection after 3 newcomers, and was cut off.
    lst, sock = slow_listener(0.5, max_connections=4, request_end=request_end)
    lst.start()
    port = sock.getsockname()[1]
    try:
        early = await flood(port, 3)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HEAD)
        await asyncio.sleep(0.1)          # accepted and read; its handler not started
        late = await flood(port, 12)
        assert await answered(r) is survives
        assert lst.dropped.get("at_capacity", 0) == 12
        for _, writer in early + late + [(r, w)]:
            writer.close()
    finally:
        await lst.close()


async def test_a_client_that_has_not_sent_its_request_yet_outlives_older_slowloris():
    lst, sock = slow_listener(0.0, max_connections=4, request_end=b"\r\n\r\n")
    lst.start()
    port = sock.getsockname()[1]
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)     # its request comes later
        await asyncio.sleep(0.05)
        loris = await flood(port, 9)
        await asyncio.sleep(0.05)
        assert lst.dropped == {"at_capacity": 6}
        w.write(HEAD)
        assert await answered(r), "the slowloris were shed, not the quiet client"
        for _, writer in loris + [(r, w)]:
            writer.close()
    finally:
        await lst.close()


async def test_a_request_queued_before_the_accept_is_busy_from_the_accept():
    # The client and 6 slowloris are all in the accept queue when the listener starts:
    # one batch of 8 accepts takes them. The listener reads what each has queued as it
    # accepts it, sees the client's complete head, so the batch sheds slowloris only.
    lst, sock = slow_listener(0.2, max_connections=4, request_end=b"\r\n\r\n")
    port = sock.getsockname()[1]
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HEAD)
        await w.drain()
        queued = await flood(port, 6)
        await asyncio.sleep(0.05)         # every byte is in the kernel's queues
        lst.start()
        assert await answered(r)
        assert lst.dropped == {"at_capacity": 3}
        for _, writer in queued + [(r, w)]:
            writer.close()
    finally:
        await lst.close()


async def test_a_slowloris_connection_never_gets_a_protocol_and_is_closed_at_its_header_timeout():
    made = []
    sock = socket.create_server(("127.0.0.1", 0))
    ref: list = [None]

    def factory():
        made.append(1)
        return SlowHandler(ref, 0.0)

    lst = BoundedListener(sock, factory, log=structlog.get_logger(), header_timeout=0.3,
                          request_end=b"\r\n\r\n")
    ref[0] = lst
    lst.start()
    try:
        (r, w), = await flood(sock.getsockname()[1], 1)
        w.write(b"X-Trickle: 1\r\n")
        assert not await is_closed(r, 0.1)
        assert await is_closed(r, 1.0), "closed at its header timeout"
        assert made == [] and lst.dropped == {"header_timeout": 1}
        w.close()
    finally:
        await lst.close()


async def test_a_head_sent_in_pieces_reaches_the_protocol_whole_and_in_order():
    got: list[bytes] = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            got.append(data)
            if b"".join(got).endswith(b"body"):
                self.transport.write(b"ok\n")

    sock = socket.create_server(("127.0.0.1", 0))
    lst = BoundedListener(sock, Record, log=structlog.get_logger(), request_end=b"\r\n\r\n")
    lst.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        for piece in (b"POST /x HTTP/1.1\r\nHo", b"st: x\r\nContent-Length: 4\r", b"\n\r\nbo", b"dy"):
            w.write(piece)
            await w.drain()
            await asyncio.sleep(0.05)
        assert await answered(r)
        assert b"".join(got) == b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        w.close()
    finally:
        await lst.close()


# A server that may hold more connections than it has descriptors: every accept past
# the limit fails with EMFILE, as the agent's did before the connection cap.
EMFILE_SERVER = textwrap.dedent("""
    import asyncio, resource, socket, sys
    from hadirector.logging import configure_logging
    from hadirector.api.listener import BoundedListener

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
        def data_received(self, d):
            self.t.write(b"ok\\n")

    async def main():
        configure_logging("json", stream=sys.stdout)
        sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        lst = BoundedListener(sock, Echo, log=__import__("structlog").get_logger(),
                              max_connections=10_000, header_timeout=1.5, report_interval=2.0)
        lst.start()
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
        print(sock.getsockname()[1], flush=True)
        await asyncio.sleep(float(sys.argv[1]))
        await lst.close()
        print("FAILURES", sum(lst.accept_failures.values()), flush=True)
        print("PAUSES", lst.pauses, flush=True)

    asyncio.run(main())
""")


def test_emfile_pauses_accepting_logs_once_per_interval_and_recovers(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(EMFILE_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), "8"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        port = int(proc.stdout.readline())
        # 200 idle connections for 4 s against 48 descriptors.
        held = []
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
        time.sleep(4.0)
        for s in held:
            s.close()
        time.sleep(2.0)          # the header timeout freed the descriptors
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hi\n")
            assert s.recv(10) == b"ok\n", "accepting resumed after the flood"
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in out and "out of system resource" not in out, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "api.accept_failed"]
    failures = int(out.split("FAILURES")[1].split()[0])
    # Every EMFILE paused accepting (counted for /metrics: api_accept_pauses_total).
    assert int(out.split("PAUSES")[1]) == failures
    # Paused 1 s after each EMFILE: a handful of failures, reported every 2 s with the count.
    assert failures >= 1 and failures <= 12, out
    assert 1 <= len(failed) <= 5 and failed[0]["reason"] == "EMFILE", failed
    assert sum(e["count"] for e in failed) == failures


def run_with_nofile(soft: int, hard: int) -> list:
    code = "from hadirector.api.listener import raise_nofile_limit; import json; print(json.dumps(raise_nofile_limit()))"
    out = subprocess.run(["prlimit", f"--nofile={soft}:{hard}", sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    return json.loads(out)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one():
    assert run_with_nofile(1024, 4096) == [1024, 4096, 4096, ""]
    assert run_with_nofile(1024, 1024) == [1024, 1024, 1024, ""]
    assert callable(raise_nofile_limit)
