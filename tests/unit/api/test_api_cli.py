"""``hadirector status`` against a real ApiServer on loopback, ``hadirector reload``
against a real ControlServer on a unix socket.

The CLI is synchronous (urllib), so it runs in a worker thread while the server runs
on the test's event loop — the same split as an operator's shell and the agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

import pytest

from hadirector.exitcodes import ExitCode

from hadirector.api import cli as api_cli
from hadirector.api.cli import format_age, render_status
from hadirector.api.control import ControlServer
from hadirector.api.server import ApiServer
from hadirector.api.snapshot import ReloadResult
from hadirector.cli import main


@pytest.fixture
def reload_result():
    return {"result": ReloadResult(ok=True, generation=4, message="",
                                   changes=("vrrp VI_1: priority 150 -> 120",))}


@pytest.fixture
async def server(snapshot):
    srv = ApiServer("127.0.0.1", 0, snapshot=lambda: snapshot)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def control(tmp_path, reload_result):
    async def reload():
        return reload_result["result"]

    srv = ControlServer(str(tmp_path / "control.sock"), reload)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the tables (pure rendering) ----------------------------------------------------


def test_status_shows_each_vrrp_instance_with_state_priority_and_master(snapshot):
    text = render_status(snapshot)
    lines = text.splitlines()
    header = next(l for l in lines if l.strip().startswith("NAME"))
    assert header.split() == ["NAME", "VRID", "IFACE", "VER", "STATE", "PRIO", "MASTER",
                              "SINCE", "REASON", "TRANS", "ADVERTS", "S/R/BAD"]
    vi1 = next(l for l in lines if l.strip().startswith("VI_1"))
    assert vi1.split() == ["VI_1", "51", "eth0", "v3", "MASTER", "150", "192.0.2.1",
                           "5m12s", "master_down_timer", "2", "310/12/4"]
    # a lowered effective priority shows next to the configured one
    vi6 = next(l for l in lines if l.strip().startswith("VI_6"))
    assert "BACKUP  80 (100)" in vi6


def test_status_says_when_and_why_a_backup_holds_off_preemption(snapshot):
    import dataclasses
    vi6 = next(v for v in snapshot.vrrp_instances if v.name == "VI_6")
    held = dataclasses.replace(vi6, preempt_held_until=snapshot.generated_at + 3.2)
    snap = dataclasses.replace(snapshot, vrrp_instances=tuple(
        held if v.name == "VI_6" else v for v in snapshot.vrrp_instances))
    assert "  VI_6: not preempting for 3s more (backup sync daemon catching up)" in render_status(snap).splitlines()
    assert "not preempting" not in render_status(snapshot)


def test_status_lays_out_services_like_ipvsadm_with_health_beside_each_server(snapshot):
    lines = render_status(snapshot).splitlines()
    svc = lines.index(next(l for l in lines if "TCP  10.0.0.100:80 wlc" in l))
    assert "(web, quorum up)" in lines[svc]
    up, down = lines[svc + 1].split(), lines[svc + 2].split()
    assert up[:6] == ["->", "10.0.1.1:80", "Masq", "10", "4", "7"]
    assert " ".join(up[6:]) == "up 5m12s (HTTP 200, 1.2ms)"
    # not in the kernel: no weight there; health says why
    assert down[:4] == ["->", "10.0.1.2:80", "Masq", "-"]
    assert " ".join(down[6:]) == "down 45s (connection refused, 0.3ms)"
    # real servers are indented under their service, as in ipvsadm -Ln
    assert lines[svc + 1].index("->") > lines[svc].index("TCP")
    text = "\n".join(lines)
    assert "UDP  [2001:db8::53]:53 rr persistent 300" in text
    assert "(dns-v6, QUORUM DOWN)" in text
    assert "-> [2001:db8:1::1]:53" in text and "Route" in text
    assert "(marked, quorum up, not in kernel)" in text


def test_status_shows_the_sync_daemon_desired_and_in_the_kernel(snapshot):
    text = render_status(snapshot)
    assert "Sync daemon\n  desired master on eth1 syncid 7, follows VI_1\n" \
           "  kernel: master on eth1 syncid 7\n" in text
    stopped = dataclasses.replace(snapshot.sync_daemon, kernel=())
    text = render_status(dataclasses.replace(snapshot, sync_daemon=stopped))
    assert "  kernel: no daemon running" in text


def test_status_header_names_node_config_generation_and_reloads(snapshot):
    head = render_status(snapshot).splitlines()[:3]
    assert head == [
        "hadirector 0.1.0 on lb1 (pid 4242), up 1h02m",
        "config /etc/hadirector/hadirector.yaml, generation 3, loaded 10m00s ago",
        "reloads: 3 (1 refused), last applied 10m00s ago",
    ]


def test_status_of_an_empty_agent_says_none(snapshot):
    empty = dataclasses.replace(snapshot, vrrp_instances=(), virtual_services=())
    text = render_status(empty)
    assert "VRRP instances\n  (none)" in text and "Virtual services\n  (none)" in text


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m"), (2 * 86400 + 7 * 3600, "2d07h"),
    (-5, "0s"),
])
def test_ages_are_short(seconds, text):
    assert format_age(seconds) == text


# --- against a running server -----------------------------------------------------------


async def test_status_prints_the_tables(server, capsys):
    assert await run_cli("status", "--url", server.url) == 0
    out = capsys.readouterr().out
    assert out.startswith("hadirector 0.1.0 on lb1 (pid 4242)")
    assert "VI_1" in out and "-> 10.0.1.1:80" in out and "kernel: master on eth1" in out


async def test_status_json_prints_the_agents_json(server, capsys, snapshot):
    assert await run_cli("status", "--url", server.url, "--json") == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(snapshot.to_dict()))


async def test_status_finds_the_agent_from_the_config_file(server, capsys, tmp_path):
    cfg = tmp_path / "hadirector.yaml"
    cfg.write_text(f"node: {{router_id: lb1}}\napi:\n  listen: 0.0.0.0:{server.port}\n")
    assert await run_cli("status", "-c", str(cfg)) == 0   # wildcard -> loopback
    assert "VI_1" in capsys.readouterr().out


def test_status_says_clearly_when_the_agent_is_not_running(capsys):
    port = free_port()
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == ExitCode.NOT_RUNNING
    err = capsys.readouterr().err
    assert err.strip() == (f"hadirector status: cannot reach hadirector at 127.0.0.1:{port}: "
                           f"connection refused — is the agent running?")


def test_status_with_an_unreadable_config_exits_config_invalid_as_check_does(capsys, tmp_path):
    assert main(["status", "-c", str(tmp_path / "missing.yaml")]) == ExitCode.CONFIG_INVALID
    assert "cannot read" in capsys.readouterr().err


def test_status_with_the_api_disabled_says_so(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("api: {enabled: false}\n")
    assert main(["status", "-c", str(cfg)]) == 2
    assert "api.enabled: false" in capsys.readouterr().err


@pytest.mark.parametrize("api, url", [
    (None, "http://127.0.0.1:9110"),
    ({"listen": "127.0.0.2:9200"}, "http://127.0.0.2:9200"),
    ({"listen": "[::1]:9111"}, "http://[::1]:9111"),
    ({"listen": "[::]:9111"}, "http://[::1]:9111"),
    ({"listen": ":9300"}, "http://127.0.0.1:9300"),
    ({"listen_host": "127.0.0.9", "listen_port": 9400}, "http://127.0.0.9:9400"),
])
def test_api_address_from_config(tmp_path, api, url):
    cfg = tmp_path / "c.yaml"
    doc = {"node": {"router_id": "x"}} | ({"api": api} if api is not None else {})
    cfg.write_text(json.dumps(doc))   # JSON is YAML
    assert api_cli.api_base_url(str(cfg), None) == url


def test_without_a_config_file_the_default_address_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(api_cli, "DEFAULT_CONFIG", str(tmp_path / "absent.yaml"))
    assert api_cli.api_base_url(None, None) == "http://127.0.0.1:9110"


async def test_reload_prints_what_changed(control, capsys):
    assert await run_cli("reload", "--socket", control.path) == 0
    out = capsys.readouterr().out
    assert out == "reload applied: config generation 4\n  vrrp VI_1: priority 150 -> 120\n"


async def test_reload_finds_the_socket_in_the_configs_state_dir(tmp_path, reload_result, capsys):
    async def reload():
        return reload_result["result"]

    state = tmp_path / "state"
    cfg = tmp_path / "h.yaml"
    # Only node.state_dir is read: the rest may be invalid (the agent runs the old one).
    cfg.write_text(f"node: {{router_id: r1, state_dir: {state}}}\nvrrp_instances: [{{vrid: 300}}]\n")
    srv = ControlServer(str(state / "control.sock"), reload)
    await srv.start()
    try:
        assert await run_cli("reload", "-c", str(cfg)) == 0
    finally:
        await srv.stop()
    assert "reload applied" in capsys.readouterr().out


def test_reload_without_a_config_uses_the_default_socket(monkeypatch, tmp_path):
    monkeypatch.setattr(api_cli, "DEFAULT_CONFIG", str(tmp_path / "absent.yaml"))
    assert api_cli.control_socket_path(None, None) == "/run/hadirector/control.sock"


async def test_a_refused_reload_exits_non_zero_with_the_errors(control, capsys, reload_result):
    reload_result["result"] = ReloadResult(
        ok=False, generation=3, message="config invalid",
        errors=("/etc/hadirector/hadirector.yaml:12: vrrp_instances[0].vrid: must be 1..255",))
    assert await run_cli("reload", "--socket", control.path) == ExitCode.CONFIG_INVALID
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "reload refused, still running config generation 3: config invalid\n"
        "  /etc/hadirector/hadirector.yaml:12: vrrp_instances[0].vrid: must be 1..255\n")


async def test_reload_json_prints_the_result_and_keeps_the_exit_code(control, capsys,
                                                                     reload_result):
    reload_result["result"] = ReloadResult(ok=False, generation=3, errors=("bad",))
    assert await run_cli("reload", "--socket", control.path, "--json") == ExitCode.CONFIG_INVALID
    assert json.loads(capsys.readouterr().out)["errors"] == ["bad"]


async def test_a_rate_limited_reload_waits_its_turn(control, capsys):
    # The bucket is empty (two reloads just happened): the agent refuses, and the CLI
    # retries after the wait it names instead of failing.
    now = asyncio.get_running_loop().time()
    assert control.limiter.take(now) == 0.0 and control.limiter.take(now) == 0.0
    assert await run_cli("reload", "--socket", control.path) == 0
    assert control.applied == 1 and control.refused["rate_limited"] >= 1
    assert "reload applied" in capsys.readouterr().out


async def test_reload_refused_for_a_non_root_peer_says_it_needs_root(tmp_path, reload_result,
                                                                    capsys):
    async def reload():
        return reload_result["result"]

    srv = ControlServer(str(tmp_path / "c.sock"), reload, allowed_uids=frozenset({4242}))
    await srv.start()
    try:
        assert await run_cli("reload", "--socket", srv.path) == ExitCode.NO_PRIVILEGE
    finally:
        await srv.stop()
    assert "serves root only" in capsys.readouterr().err


def test_reload_without_permission_on_the_socket_says_it_needs_root(monkeypatch, capsys):
    def denied(self, path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", denied)
    assert main(["reload", "--socket", "/run/hadirector/control.sock"]) == ExitCode.NO_PRIVILEGE
    err = capsys.readouterr().err
    assert "permission denied on /run/hadirector/control.sock" in err and "needs root" in err


def test_reload_says_clearly_when_the_agent_is_not_running(capsys, tmp_path):
    assert main(["reload", "--socket", str(tmp_path / "control.sock")]) == ExitCode.NOT_RUNNING
    assert "no such socket — is the agent running?" in capsys.readouterr().err
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    assert main(["reload", "--socket", str(tmp_path / "stale.sock")]) == ExitCode.NOT_RUNNING
    assert "connection refused — is the agent running?" in capsys.readouterr().err


async def test_status_reports_an_agent_that_cannot_snapshot(capsys):
    def broken():
        raise RuntimeError("state torn")

    srv = ApiServer("127.0.0.1", 0, snapshot=broken)
    await srv.start()
    try:
        assert await run_cli("status", "--url", srv.url) == 1
    finally:
        await srv.stop()
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "state torn" in err


def test_the_client_commands_do_not_import_aiohttp():
    import subprocess
    import sys
    code = "import sys, hadirector.api.cli; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_status_refuses_a_config_that_is_no_regular_file_instead_of_reading_forever(capsys):
    # /dev/zero never ends: the agent's loader refuses it by size, so does the CLI.
    assert main(["status", "-c", "/dev/zero"]) == ExitCode.CONFIG_INVALID
    assert "not a regular file of at most" in capsys.readouterr().err


def test_status_shows_the_faults_the_link_watch_and_the_api_absorbed(snapshot):
    from hadirector.api.snapshot import ApiStatus, LinkWatchStatus, ListenerStatus

    snap = dataclasses.replace(
        snapshot, link_watch=LinkWatchStatus(overruns=2, resyncs=2),
        api=ApiStatus(http=ListenerStatus(accepted=1200, dropped={"at_capacity": 1000, "idle_timeout": 3},
                                          accept_failures={"EMFILE": 1}, accept_pauses=1),
                      control=ListenerStatus(accepted=9, refused={"rate_limited": 7})))
    tail = render_status(snap).split("Faults absorbed\n")[1].splitlines()
    assert tail == [
        "  link watch: 2 overrun(s), 2 resync(s), 0 resubscribe(s), 0 restart(s)",
        "  http API: 1200 accepted; dropped at_capacity 1000, idle_timeout 3; refused none; "
        "accept failures EMFILE 1, 1 pause(s)",
        "  control socket: 9 accepted; dropped none; refused rate_limited 7",
    ]


def test_status_shows_an_instances_auth_settings_and_refusals_never_a_secret(snapshot):
    from hadirector.api.snapshot import VrrpAuthStatus

    auth = VrrpAuthStatus(mode="enforce", active_key=2, key_ids=(1, 2), anti_replay="time", time_window=5,
                          verified=40, rejected={"bad_hmac": 3, "auth_missing": 7})
    snap = dataclasses.replace(snapshot, vrrp_instances=(
        dataclasses.replace(snapshot.vrrp_instances[0], auth=auth),) + snapshot.vrrp_instances[1:])
    assert ("  VI_1: auth enforce, signing key 2 (keys 1, 2), time window 5s; verified 40, "
            "refused: auth_missing 7, bad_hmac 3") in render_status(snap).splitlines()
    assert "auth" not in render_status(snapshot)


def test_status_marks_an_inconclusive_last_check_and_counts_them_by_reason(snapshot):
    web = snapshot.virtual_services[0]
    up = dataclasses.replace(web.real_servers[0], last_check=dataclasses.replace(
        web.real_servers[0].last_check, ok=False, detail="emfile", latency=0.0001, inconclusive=True))
    web = dataclasses.replace(web, real_servers=(up,) + web.real_servers[1:])
    health = dataclasses.replace(snapshot.health, checks={"ok": 4, "inconclusive": 3},
                                 inconclusive={"emfile": 2, "enobufs": 1})
    text = render_status(dataclasses.replace(snapshot, health=health,
                                             virtual_services=(web,) + snapshot.virtual_services[1:]))
    assert "up 5m12s (emfile, inconclusive, 0.1ms)" in text
    assert "  inconclusive (not counted): emfile 2, enobufs 1" in text


def test_status_shows_the_checker_worker_in_one_line_with_its_restarts_and_last_exit(worker_snapshot, snapshot):
    def health_lines(snap):
        return render_status(snap).split("Health checks\n")[1].split("\n\n")[0].splitlines()

    up = worker_snapshot(snapshot, starts=3, restarts=2, last_exit="killed by SIGKILL")
    assert health_lines(up) == [
        "  checker worker: pid 4300, up 10m00s; 2 restart(s), last exit: killed by SIGKILL",
        "  5 run: fail 1, ok 4; mean latency 410.9ms",
    ]
    down = worker_snapshot(snapshot, running=False, pid=None, starts=3, restarts=2,
                           last_exit="killed by SIGKILL: hung: no frame for 5.1 s", since=snapshot.generated_at - 1)
    assert health_lines(down)[0] == ("  checker worker: DOWN 1s, its checks wait for a restart; 2 restart(s), "
                                     "last exit: killed by SIGKILL: hung: no frame for 5.1 s")
    first = worker_snapshot(snapshot)
    assert health_lines(first)[0] == "  checker worker: pid 4300, up 10m00s; 0 restart(s)"
    assert "checker worker" not in render_status(snapshot)      # the asyncio engine


def test_status_shows_a_worker_that_has_run_no_check_yet(worker_snapshot, snapshot):
    from hadirector.api.snapshot import HealthTotals, HistogramSnapshot

    idle = dataclasses.replace(snapshot, health=HealthTotals(latency=HistogramSnapshot()))
    assert "Health checks" not in render_status(idle)
    assert "  checker worker: pid 4300, up 10m00s; 0 restart(s)" in render_status(worker_snapshot(idle))
