"""ApiComponent wiring: the control socket, the HTTP cap and the descriptor limit."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
from types import SimpleNamespace

import structlog

from hadirector.agent.api_component import ApiComponent
from hadirector.api.limits import connection_budget
from hadirector.api.snapshot import ReloadResult
from hadirector.model import ApiSettings, NodeSettings


class FakeAgent:
    def __init__(self, state_dir: str, api: ApiSettings) -> None:
        self.config = SimpleNamespace(node=NodeSettings(router_id="t", state_dir=state_dir), api=api)
        self.log = structlog.get_logger("test")
        self.triggers: list[str] = []

    async def reload_async(self, trigger: str = "api") -> ReloadResult:
        self.triggers.append(trigger)
        return ReloadResult(ok=True, generation=2)


async def ask(path: str) -> dict:
    r, w = await asyncio.open_unix_connection(path)
    w.write(b"reload\n")
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return json.loads(data)


async def test_the_control_socket_serves_reloads_even_with_the_http_api_disabled(tmp_path):
    agent = FakeAgent(str(tmp_path / "state"), ApiSettings(enabled=False))
    comp = ApiComponent()
    await comp.start(agent)
    try:
        assert comp.server is None and comp.control is not None
        path = str(tmp_path / "state" / "control.sock")
        assert (await ask(path))["ok"] is True
        assert agent.triggers == ["control"]
    finally:
        await comp.stop(agent)
    assert not os.path.exists(path)


async def test_the_http_cap_is_a_share_of_the_descriptor_limit(tmp_path):
    agent = FakeAgent(str(tmp_path), ApiSettings(listen_host="127.0.0.1", listen_port=0))
    comp = ApiComponent()
    await comp.start(agent)
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert comp.server.max_connections == connection_budget(soft, 64)
        assert comp.server.listener.max_connections == comp.server.max_connections
        assert comp.server.control_path == str(tmp_path / "control.sock")
    finally:
        await comp.stop(agent)


async def test_a_control_socket_held_by_another_agent_is_logged_and_http_still_starts(tmp_path, logs):
    path = str(tmp_path / "control.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen()
    agent = FakeAgent(str(tmp_path), ApiSettings(listen_host="127.0.0.1", listen_port=0))
    comp = ApiComponent()
    try:
        await comp.start(agent)
        assert comp.control is None and comp.server is not None
        failed = [e for e in logs if e["event"] == "api.control_failed"]
        assert failed and failed[0]["reason"] == "in_use" and failed[0]["path"] == path
        await comp.stop(agent)
        assert os.path.exists(path), "the other agent's socket stays"
    finally:
        other.close()
