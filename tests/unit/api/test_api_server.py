"""ApiServer on 127.0.0.1 with an ephemeral port and a fake agent behind it."""

from __future__ import annotations

import asyncio
import json
import socket
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from hadirector.api.server import ApiServer, _is_loopback
from hadirector.api.snapshot import ReloadResult, Snapshot


class FakeAgent:
    """Stands in for the agent: serves a snapshot, reloads as scripted."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.broken = False
        self.reloads = 0
        self.next_reload: ReloadResult | Exception = ReloadResult(
            ok=True, generation=4, message="2 changes", changes=("vrrp VI_1: priority 150 -> 120",
                                                               "service web: +10.0.1.3:80"))
        self.reload_gate: asyncio.Event | None = None
        self.in_reload = 0
        self.max_in_reload = 0

    def snapshot(self) -> Snapshot:
        if self.broken:
            raise RuntimeError("state torn")
        return self.snap

    async def reload(self) -> ReloadResult:
        self.reloads += 1
        self.in_reload += 1
        self.max_in_reload = max(self.max_in_reload, self.in_reload)
        try:
            if self.reload_gate is not None:
                await self.reload_gate.wait()
            if isinstance(self.next_reload, Exception):
                raise self.next_reload
            return self.next_reload
        finally:
            self.in_reload -= 1


@pytest.fixture
def agent(snapshot):
    return FakeAgent(snapshot)


@pytest.fixture
async def server(agent):
    srv = ApiServer("127.0.0.1", 0, snapshot=agent.snapshot, reload=agent.reload)
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
                                  agent.snapshot, agent.reload)
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


async def test_reload_returns_the_result_of_an_applied_reload(server, http, agent):
    async with http.post(server.url + "/reload") as r:
        assert r.status == 200
        body = await r.json()
    assert agent.reloads == 1
    assert body["ok"] is True and body["generation"] == 4
    assert body["changes"] == ["vrrp VI_1: priority 150 -> 120", "service web: +10.0.1.3:80"]


async def test_a_refused_reload_is_422_with_the_errors(server, http, agent):
    agent.next_reload = ReloadResult(ok=False, generation=3, message="config invalid",
                                     errors=("hadirector.yaml:7: vrid: must be 1..255",))
    async with http.post(server.url + "/reload") as r:
        assert r.status == 422
        body = await r.json()
    assert body["ok"] is False and body["generation"] == 3
    assert body["errors"] == ["hadirector.yaml:7: vrid: must be 1..255"]


async def test_a_crashing_reload_is_a_500_and_the_server_keeps_serving(server, http, agent):
    agent.next_reload = RuntimeError("boom")
    async with http.post(server.url + "/reload") as r:
        assert r.status == 500
        assert "boom" in (await r.json())["error"]
    async with http.get(server.url + "/healthz") as r:
        assert r.status == 200


async def test_concurrent_reloads_run_one_at_a_time(server, http, agent):
    agent.reload_gate = asyncio.Event()

    async def post():
        async with http.post(server.url + "/reload") as r:
            return r.status

    tasks = [asyncio.create_task(post()) for _ in range(3)]
    async with asyncio.timeout(5):
        while agent.reloads < 1:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)            # give the other two the chance to barge in
    assert (agent.reloads, agent.in_reload) == (1, 1)   # they wait for the lock
    agent.reload_gate.set()
    assert await asyncio.gather(*tasks) == [200, 200, 200]
    assert (agent.reloads, agent.max_in_reload) == (3, 1)


async def test_reload_from_a_browser_page_is_refused(server, http, agent, logs):
    # A page the operator visits could POST cross-site to 127.0.0.1 without a CORS
    # preflight; browsers always send Origin on such a request.
    async with http.post(server.url + "/reload", headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
        assert (await r.json())["reason"] == "browser_origin"
    assert agent.reloads == 0
    assert {"event": "api.reload_refused", "reason": "browser_origin"}.items() <= logs[-1].items()


async def test_reload_over_a_non_loopback_connection_is_refused(agent):
    srv = ApiServer("0.0.0.0", 0, snapshot=agent.snapshot, reload=agent.reload)
    transport = mock.Mock()
    transport.get_extra_info.side_effect = {
        "peername": ("192.0.2.7", 40000), "sockname": ("192.0.2.1", 9110)}.get
    req = make_mocked_request("POST", "/reload", transport=transport)
    resp = await srv._handle_reload(req)
    assert resp.status == 403
    assert json.loads(resp.text)["reason"] == "not_loopback"
    assert agent.reloads == 0


@pytest.mark.parametrize("addr, loopback", [
    (("127.0.0.1", 1), True), (("127.3.4.5", 1), True), (("::1", 1, 0, 0), True),
    (("::ffff:127.0.0.1", 1, 0, 0), True), (("10.0.0.1", 1), False),
    (("fe80::1%eth0", 1, 0, 2), False), (None, False), ("/run/sock", False),
])
def test_loopback_detection(addr, loopback):
    assert _is_loopback(addr) is loopback


async def test_only_reload_accepts_post_and_reload_refuses_get(server, http, agent):
    async with http.get(server.url + "/reload") as r:
        assert r.status == 405
    async with http.post(server.url + "/status") as r:
        assert r.status == 405
    async with http.get(server.url + "/nope") as r:
        assert r.status == 404
    assert agent.reloads == 0


async def test_start_fails_loudly_when_the_port_is_taken(agent):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        srv = ApiServer("127.0.0.1", held.getsockname()[1], agent.snapshot, agent.reload)
        with pytest.raises(OSError):
            await srv.start()
        await srv.stop()     # nothing to stop: harmless


async def test_stop_closes_the_listener_and_is_idempotent(agent):
    srv = ApiServer("127.0.0.1", 0, agent.snapshot, agent.reload)
    await srv.start()
    port = srv.port
    await srv.stop()
    await srv.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
