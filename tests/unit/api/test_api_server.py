"""ApiServer on 127.0.0.1 with an ephemeral port and a fake agent behind it."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hadirector.api.server import ApiServer
from hadirector.api.snapshot import Snapshot


class FakeAgent:
    """Stands in for the agent: serves a snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.broken = False

    def snapshot(self) -> Snapshot:
        if self.broken:
            raise RuntimeError("state torn")
        return self.snap


@pytest.fixture
def agent(snapshot):
    return FakeAgent(snapshot)


@pytest.fixture
async def server(agent):
    srv = ApiServer("127.0.0.1", 0, snapshot=agent.snapshot)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


def test_the_config_api_section_gives_the_listen_address(agent):
    from hadirector.model import ApiSettings
    srv = ApiServer.from_settings(ApiSettings(listen_host="::1", listen_port=9111),
                                  agent.snapshot)
    assert (srv.host, srv.port, srv.url) == ("::1", 9111, "http://[::1]:9111")


async def test_start_binds_an_ephemeral_port_on_loopback(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_status_is_the_snapshot_as_json(server, http, snapshot):
    async with http.get(server.url + "/status") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        body = await r.json()
    assert body == json.loads(json.dumps(snapshot.to_dict()))
    assert Snapshot.from_dict(body) == snapshot


async def test_metrics_parse_and_match_the_snapshot(server, http):
    async with http.get(server.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    masters = [s.labels["vrrp_instance"] for s in fams["hadirector_vrrp_state"].samples
               if s.labels["state"] == "MASTER" and s.value == 1]
    assert masters == ["VI_1"]
    assert fams["hadirector_vrrp_transitions"].type == "counter"
    assert fams["hadirector_health_check_duration_seconds"].type == "histogram"


async def test_healthz_answers_ok_while_the_agent_can_snapshot(server, http, agent):
    async with http.get(server.url + "/healthz") as r:
        assert (r.status, await r.text()) == (200, "ok\n")
    agent.broken = True
    async with http.get(server.url + "/healthz") as r:
        assert r.status == 503


async def test_a_failing_snapshot_is_a_503_with_the_error_not_a_dead_server(server, http, agent):
    agent.broken = True
    for path in ("/status", "/metrics"):
        async with http.get(server.url + path) as r:
            assert r.status == 503
            assert "state torn" in (await r.json())["error"]
    agent.broken = False
    async with http.get(server.url + "/status") as r:
        assert r.status == 200


async def test_reload_over_http_is_refused_and_points_to_the_control_socket(agent, http, logs):
    srv = ApiServer("127.0.0.1", 0, snapshot=agent.snapshot, control_path="/run/hadirector/control.sock")
    await srv.start()
    try:
        for _ in range(50):
            async with http.post(srv.url + "/reload") as r:
                assert r.status == 403
                body = await r.json()
        async with http.get(srv.url + "/healthz") as r:
            assert r.status == 200
    finally:
        await srv.stop()
    assert body["reason"] == "http_not_allowed"
    assert "`hadirector reload`" in body["error"] and "/run/hadirector/control.sock" in body["error"]
    # 50 refusals, one log line (once per interval), carrying the count so far.
    refused = [e for e in logs if e["event"] == "api.reload_refused"]
    assert len(refused) == 1 and refused[0]["reason"] == "http_not_allowed"


async def test_reads_are_get_only(server, http):
    async with http.get(server.url + "/reload") as r:
        assert r.status == 405
    async with http.post(server.url + "/status") as r:
        assert r.status == 405
    async with http.get(server.url + "/nope") as r:
        assert r.status == 404


async def test_start_fails_loudly_when_the_port_is_taken(agent):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        srv = ApiServer("127.0.0.1", held.getsockname()[1], agent.snapshot)
        with pytest.raises(OSError):
            await srv.start()
        await srv.stop()     # nothing to stop: harmless


async def test_stop_closes_the_listener_and_is_idempotent(agent):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot)
    await srv.start()
    port = srv.port
    await srv.stop()
    await srv.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# --- bounded connections (a local user must not be able to starve the agent) --------------


async def raw_connections(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` slowloris connections: each sends the start of a request head, no more."""
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /status HTTP/1.1\r\n")
        await w.drain()
        conns.append((r, w))
    return conns


async def test_a_connection_that_sends_nothing_never_reaches_the_agent(agent, http):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot, max_connections=4, header_timeout=30)
    await srv.start()
    try:
        silent = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(10)]
        await asyncio.sleep(0.2)
        assert srv.listener.accepted == 0 and srv.listener.dropped == {}
        async with http.get(srv.url + "/healthz") as r:      # answered at once, no shedding
            assert (r.status, await r.text()) == (200, "ok\n")
        assert srv.listener.accepted == 1 and srv.listener.dropped == {}
        for _, w in silent:
            w.close()
    finally:
        await srv.stop()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_a_full_server_sheds_the_longest_waiting_idle_connections_and_still_answers(
        agent, http, logs):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot, max_connections=4, header_timeout=30)
    await srv.start()
    try:
        idle = await raw_connections(srv.port, 10)
        await asyncio.sleep(0.2)
        assert srv.listener.connections <= 4
        async with http.get(srv.url + "/healthz") as r:
            assert (r.status, await r.text()) == (200, "ok\n")
        shed = [await closed_by_server(rd, 0.5) for rd, _ in idle]
        assert shed[:7] == [True] * 7, "the oldest idle connections made room"
        assert srv.listener.dropped["at_capacity"] >= 7
        for _, w in idle:
            w.close()
    finally:
        await srv.stop()
    dropped = [e for e in logs if e["event"] == "api.connections_dropped"]
    # The first drop is reported at once, the rest are counted for the next report.
    assert len(dropped) <= 2 and dropped[0]["reason"] == "at_capacity"
    assert sum(e["count"] for e in dropped) == srv.listener.dropped["at_capacity"]


async def test_headers_trickled_a_byte_at_a_time_are_cut_at_the_header_timeout(agent):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot, header_timeout=0.5)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        t0 = asyncio.get_running_loop().time()
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nX-slow: ")
        cut = None
        for _ in range(30):                      # slowloris: a byte every 0.1 s
            await asyncio.sleep(0.1)
            if reader.at_eof() or writer.is_closing():
                break
            try:
                writer.write(b"a")
                await writer.drain()
            except ConnectionError:
                break
            if await closed_by_server(reader, 0.001):
                break
        cut = asyncio.get_running_loop().time() - t0
        writer.close()
    finally:
        await srv.stop()
    assert 0.4 <= cut < 1.5, f"cut after {cut:.2f}s"
    assert srv.listener.dropped.get("header_timeout") == 1


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(agent):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot, idle_timeout=0.5)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"ok\n")
        assert head.startswith(b"HTTP/1.1 200")
        t0 = asyncio.get_running_loop().time()
        assert await closed_by_server(reader, 3.0)
        idle = asyncio.get_running_loop().time() - t0
        writer.close()
    finally:
        await srv.stop()
    assert 0.4 <= idle < 1.5, f"closed after {idle:.2f}s idle"


async def test_many_servers_connection_limit_is_a_share_of_the_descriptor_limit():
    from hadirector.api.limits import API_FD_SHARE, connection_budget
    assert connection_budget(1024, 64) == 64 == 1024 // API_FD_SHARE
    assert connection_budget(256, 64) == 16
    assert connection_budget(65536, 64) == 64
    assert connection_budget(20, 64) == 4


async def test_a_big_metrics_render_lets_the_event_loop_turn_between_slices(agent, http,
                                                                           big_snapshot):
    # 30 services x 50 real servers: the loop must turn at least once per slice of
    # the render (one per virtual service at least), not wait for the whole body.
    from hadirector.api import metrics

    agent.snap = big_snapshot(30, 50)
    srv = ApiServer("127.0.0.1", 0, snapshot=agent.snapshot)
    await srv.start()
    turns = 0
    stop = False

    async def spin() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    try:
        spinner = asyncio.get_running_loop().create_task(spin())
        await asyncio.sleep(0)
        before = turns
        async with http.get(srv.url + "/metrics") as r:
            body = await r.read()
        during = turns - before
        stop = True
        await spinner
    finally:
        await srv.stop()
    assert body == metrics.render(agent.snap).encode()
    assert during >= 30
