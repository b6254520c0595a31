"""The control socket on a real unix socket: who may reload, how often, and its file."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat

import pytest

from hadirector.api.control import ControlError, ControlServer, bind_private, socket_path
from hadirector.api.snapshot import ReloadResult


class Reloads:
    def __init__(self) -> None:
        self.count = 0
        self.result: ReloadResult | Exception = ReloadResult(
            ok=True, generation=2, message="1 change", changes=("vrrp VI_1: priority 150 -> 120",))

    async def __call__(self) -> ReloadResult:
        self.count += 1
        await asyncio.sleep(0)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def reloads():
    return Reloads()


@pytest.fixture
async def control(tmp_path, reloads):
    srv = ControlServer(socket_path(str(tmp_path / "run")), reloads)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def ask(path: str, line: bytes = b"reload\n") -> dict | None:
    r, w = await asyncio.open_unix_connection(path)
    try:
        w.write(line)
        data = await asyncio.wait_for(r.read(), 10)
    except OSError:             # closed at capacity before or after our line went out
        data = b""
    finally:
        w.close()
    return json.loads(data) if data else None


async def test_root_reloads_over_the_socket_and_gets_the_result(control, reloads):
    answer = await ask(control.path)
    assert reloads.count == 1
    assert answer["ok"] is True and answer["generation"] == 2
    assert answer["changes"] == ["vrrp VI_1: priority 150 -> 120"]


async def test_the_socket_file_is_mode_0600_and_owned_by_the_agent(control):
    st = os.lstat(control.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert os.listdir(os.path.dirname(control.path)) == ["control.sock"], "no temp dir left"


async def test_a_peer_whose_uid_is_not_allowed_is_refused_by_its_credentials(tmp_path, reloads, logs):
    # Defence in depth behind the 0600 mode: SO_PEERCRED decides, whatever the mode.
    srv = ControlServer(str(tmp_path / "c.sock"), reloads, allowed_uids=frozenset({4242}))
    await srv.start()
    try:
        os.chmod(srv.path, 0o666)
        answers = [await ask(srv.path) for _ in range(5)]
    finally:
        await srv.stop()
    assert reloads.count == 0
    assert all(a["reason"] == "not_root" for a in answers)
    assert f"you are uid {os.geteuid()}" in answers[0]["error"]
    refused = [e for e in logs if e["event"] == "api.control_refused"]
    assert len(refused) == 1 and refused[0]["reason"] == "not_root"    # once per interval


async def test_a_burst_of_reloads_applies_two_and_refuses_the_rest_with_the_wait(control, reloads):
    answers = await asyncio.gather(*(ask(control.path) for _ in range(50)))
    applied = [a for a in answers if a is not None and a.get("ok")]
    limited = [a for a in answers if a is not None and a.get("reason") == "rate_limited"]
    closed = [a for a in answers if a is None]            # at capacity: closed unanswered
    assert len(applied) == reloads.count == 2
    assert len(applied) + len(limited) + len(closed) == 50 and limited
    assert 0 < limited[0]["retry_after"] <= 1.0 and "retry in" in limited[0]["error"]
    await asyncio.sleep(1.05)
    assert (await ask(control.path))["ok"] is True, "one more token a second later"


async def test_a_crashing_reload_is_reported_and_the_socket_keeps_serving(control, reloads):
    reloads.result = RuntimeError("boom")
    answer = await ask(control.path)
    assert answer["reason"] == "crashed" and "boom" in answer["error"]
    await asyncio.sleep(1.05)
    reloads.result = ReloadResult(ok=False, generation=1, message="config invalid", errors=("x",))
    answer = await ask(control.path)
    assert answer["ok"] is False and answer["errors"] == ["x"]


async def test_unknown_commands_and_long_lines_are_refused(control, reloads):
    assert (await ask(control.path, b"shutdown\n"))["reason"] == "unknown_command"
    assert (await ask(control.path, b"x" * 1000))["reason"] == "bad_request"
    assert reloads.count == 0


async def test_a_stale_socket_file_is_replaced_but_a_live_one_is_left_alone(tmp_path, reloads):
    path = str(tmp_path / "c.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)                  # a crashed agent's file: nobody listening
    stale.close()
    first = ControlServer(path, reloads)
    await first.start()
    try:
        assert (await ask(path))["ok"] is True
        second = ControlServer(path, reloads)
        with pytest.raises(ControlError) as e:
            await second.start()
        assert e.value.reason == "in_use"
        assert (await ask(path)) is not None, "the running agent's socket still works"
    finally:
        await first.stop()
    assert not os.path.exists(path)


async def test_stop_does_not_remove_a_successors_socket(tmp_path, reloads):
    path = str(tmp_path / "c.sock")
    srv = ControlServer(path, reloads)
    await srv.start()
    os.unlink(path)
    successor, _ = bind_private(path)
    try:
        await srv.stop()
        assert os.path.exists(path)
    finally:
        successor.close()


def test_a_path_too_long_for_a_unix_socket_is_a_clear_error(tmp_path):
    with pytest.raises(ControlError) as e:
        bind_private(str(tmp_path / ("d" * 120) / "control.sock"))
    assert e.value.reason == "path_too_long" and "node.state_dir" in str(e.value)


def test_something_else_at_the_path_is_not_replaced(tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(ControlError) as e:
        bind_private(str(path))
    assert e.value.reason == "not_a_socket" and path.read_text() == "not a socket"
