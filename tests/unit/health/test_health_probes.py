"""Probes against real loopback servers: each failure mode comes back with its reason,
and no probe outlives its timeout."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

from hadirector.health.errors import failed, failure_reason
from hadirector.health.policy import ProbeResult
from hadirector.health.probes import HttpClients, http_probe, run_check, script_probe, tcp_probe
from hadirector.model import HealthCheck, HttpProbe, ScriptProbe, StatusRange

from .servers import Behaviour, blackhole_listener, closed_port, http_server, silent_server

LOCAL = "127.0.0.1"
# Real time: generous margin over the timeout for a loaded 2-core CI machine.
SLACK = 1.0


@pytest.fixture
async def clients():
    c = HttpClients()
    yield c
    await c.close()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca):
    cert = ca.issue_cert("127.0.0.1", "hc.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


# --- TCP ------------------------------------------------------------------------------


async def test_tcp_probe_passes_against_a_listener():
    async with http_server() as (port, _):
        r = await tcp_probe(LOCAL, port, timeout=1.0)
    assert (r.ok, r.detail) == (True, "connected")
    assert 0 <= r.elapsed < 1.0


async def test_tcp_probe_reports_refused_on_a_closed_port():
    r = await tcp_probe(LOCAL, closed_port(), timeout=1.0)
    assert (r.ok, r.detail) == (False, "refused")


async def test_tcp_probe_reports_timeout_when_syns_go_unanswered_and_stops_at_its_timeout():
    with blackhole_listener() as port:
        t0 = time.monotonic()
        r = await tcp_probe(LOCAL, port, timeout=0.5)
        took = time.monotonic() - t0
    assert (r.ok, r.detail) == (False, "timeout")
    assert 0.5 <= took < 0.5 + SLACK


async def test_tcp_probe_binds_to_the_given_source_address():
    seen = []

    async def handle(reader, writer):
        seen.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        r = await tcp_probe(LOCAL, port, timeout=1.0, bind_to="127.0.0.77")
        await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert r.ok and seen == ["127.0.0.77"]


async def test_tcp_probe_reports_an_unusable_source_address_instead_of_raising():
    r = await tcp_probe(LOCAL, 80, timeout=1.0, bind_to="192.0.2.1")   # not ours
    assert not r.ok and r.detail == "address not available"


# --- HTTP -----------------------------------------------------------------------------


async def test_http_probe_passes_on_an_expected_status(clients):
    async with http_server() as (port, b):
        r = await http_probe(LOCAL, port, HttpProbe(path="/health"), 1.0, clients=clients)
    assert (r.ok, r.detail) == (True, "status 200")
    assert b.hits == 1


async def test_http_probe_reports_the_status_of_a_500(clients):
    async with http_server(behaviour=Behaviour(status=500)) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(), 1.0, clients=clients)
    assert (r.ok, r.detail) == (False, "status 500")


async def test_http_probe_accepts_any_of_the_configured_status_codes(clients):
    async with http_server(behaviour=Behaviour(status=204)) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(status_codes=(200, 204)), 1.0, clients=clients)
    assert r.ok


async def test_http_probe_accepts_a_status_inside_a_configured_range_only(clients):
    probe = HttpProbe(status_codes=(StatusRange(200, 299),))
    async with http_server(behaviour=Behaviour(status=226)) as (port, _):
        assert (await http_probe(LOCAL, port, probe, 1.0, clients=clients)).ok
    async with http_server(behaviour=Behaviour(status=302)) as (port, _):
        r = await http_probe(LOCAL, port, probe, 1.0, clients=clients)
    assert (r.ok, r.detail) == (False, "status 302")


async def test_http_probe_reports_refused_on_a_closed_port(clients):
    r = await http_probe(LOCAL, closed_port(), HttpProbe(), 1.0, clients=clients)
    assert (r.ok, r.detail) == (False, "refused")


async def test_http_probe_times_out_on_a_server_that_never_answers(clients):
    async with silent_server() as port:
        t0 = time.monotonic()
        r = await http_probe(LOCAL, port, HttpProbe(), 0.5, clients=clients)
        took = time.monotonic() - t0
    assert (r.ok, r.detail) == (False, "timeout")
    assert 0.5 <= took < 0.5 + SLACK


async def test_http_probe_times_out_on_a_server_slower_than_the_timeout(clients):
    async with http_server(behaviour=Behaviour(delay=2.0)) as (port, _):
        t0 = time.monotonic()
        r = await http_probe(LOCAL, port, HttpProbe(), 0.3, clients=clients)
        took = time.monotonic() - t0
    assert (r.ok, r.detail) == (False, "timeout")
    assert took < 0.3 + SLACK


async def test_http_probe_passes_on_a_slow_server_within_the_timeout(clients):
    async with http_server(behaviour=Behaviour(delay=0.2)) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(), 2.0, clients=clients)
    assert r.ok and r.elapsed >= 0.2


async def test_http_probe_matches_the_body_against_a_regex_and_notices_a_change(clients):
    probe = HttpProbe(body_regex=r"ok: all \w+ nominal")
    async with http_server() as (port, b):
        assert (await http_probe(LOCAL, port, probe, 1.0, clients=clients)).ok
        b.body = b"<html>maintenance</html>"
        r = await http_probe(LOCAL, port, probe, 1.0, clients=clients)
    assert (r.ok, r.detail) == (False, "body mismatch")


async def test_http_probe_checks_the_md5_digest_of_the_body_and_notices_a_change(clients):
    async with http_server() as (port, b):
        probe = HttpProbe(digest=b.md5.upper())    # keepalived's genhash prints either case
        assert (await http_probe(LOCAL, port, probe, 1.0, clients=clients)).ok
        b.body += b"\n<!-- changed -->"
        r = await http_probe(LOCAL, port, probe, 1.0, clients=clients)
    assert (r.ok, r.detail) == (False, "digest mismatch")


async def test_http_probe_sends_the_configured_host_header(clients):
    async with http_server() as (port, b):
        assert (await http_probe(LOCAL, port, HttpProbe(host="www.example.test"), 1.0, clients=clients)).ok
    assert b.hosts == ["www.example.test"]


async def test_http_probe_opens_a_new_connection_for_every_check(clients):
    peers = []

    async def handle(reader, writer):
        peers.append(writer.get_extra_info("peername"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()             # keep-alive if the client let us
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(3):
            assert (await http_probe(LOCAL, port, HttpProbe(), 1.0, clients=clients)).ok
    finally:
        server.close()
        await server.wait_closed()
    assert len(set(peers)) == 3


async def test_http_probe_without_shared_clients_cleans_up_after_itself():
    async with http_server() as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(), 1.0)
    assert r.ok


# --- HTTPS ----------------------------------------------------------------------------


async def test_https_probe_with_verification_fails_against_an_untrusted_certificate(clients, server_ssl):
    async with http_server(ssl_context=server_ssl) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(tls=True), 2.0, clients=clients)
    assert not r.ok and r.detail.startswith("tls: ")
    assert "certificate" in r.detail


async def test_https_probe_without_verification_passes_against_a_self_signed_certificate(clients, server_ssl):
    async with http_server(ssl_context=server_ssl) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(tls=True, verify_tls=False), 2.0, clients=clients)
    assert (r.ok, r.detail) == (True, "status 200")


async def test_https_probe_verifies_against_the_configured_ca_file(clients, server_ssl, ca_file):
    async with http_server(ssl_context=server_ssl) as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(tls=True, ca_file=ca_file), 2.0, clients=clients)
    assert (r.ok, r.detail) == (True, "status 200")


async def test_https_probe_verifies_the_virtual_host_name_not_the_address(clients, server_ssl, ca_file):
    async with http_server(ssl_context=server_ssl) as (port, b):
        good = await http_probe(LOCAL, port, HttpProbe(tls=True, ca_file=ca_file, host="hc.test"),
                                2.0, clients=clients)
        bad = await http_probe(LOCAL, port, HttpProbe(tls=True, ca_file=ca_file, host="other.test"),
                               2.0, clients=clients)
    assert good.ok and b.hosts == ["hc.test"]
    assert not bad.ok and bad.detail.startswith("tls: ")


async def test_https_probe_against_a_plain_http_server_fails_with_a_reason(clients):
    async with http_server() as (port, _):
        r = await http_probe(LOCAL, port, HttpProbe(tls=True, verify_tls=False), 2.0, clients=clients)
    assert not r.ok and r.detail.startswith("tls: ")


# --- script ---------------------------------------------------------------------------


async def test_script_probe_passes_on_exit_0():
    r = await script_probe(["/bin/true"], timeout=5.0)
    assert (r.ok, r.detail) == (True, "exit 0")


async def test_script_probe_reports_the_exit_status():
    r = await script_probe(["/bin/sh", "-c", "exit 3"], timeout=5.0)
    assert (r.ok, r.detail) == (False, "exit 3")


async def test_script_probe_reports_a_missing_program():
    r = await script_probe(["/nonexistent/check"], timeout=5.0)
    assert (r.ok, r.detail) == (False, "not found")


async def test_script_probe_runs_no_shell():
    r = await script_probe(["/bin/echo", "$(exit 1)", ";", "false"], timeout=5.0)
    assert r.ok


async def test_script_probe_kills_the_whole_process_group_on_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    # The shell starts a grandchild that would outlive a plain kill of the shell.
    argv = ["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"]
    t0 = time.monotonic()
    r = await script_probe(argv, timeout=0.5)
    took = time.monotonic() - t0
    assert (r.ok, r.detail) == (False, "timeout")
    assert 0.5 <= took < 0.5 + SLACK
    grandchild = int(pidfile.read_text())
    await asyncio.sleep(0.1)
    assert not _alive(grandchild)


async def test_script_probe_passes_even_if_it_leaves_a_child_holding_its_output():
    r = await script_probe(["/bin/sh", "-c", "(sleep 3 &) ; exit 0"], timeout=1.0)
    assert (r.ok, r.detail) == (True, "exit 0")


async def test_script_probe_cancelled_kills_and_reaps_its_process(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(script_probe(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], 10.0))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if pidfile.exists() and pidfile.read_text().strip():
            break
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# --- dispatch -------------------------------------------------------------------------


async def test_run_check_dispatches_on_the_configured_probe(clients):
    async with http_server() as (port, _):
        http = await run_check(HealthCheck(HttpProbe(), timeout=1.0), LOCAL, port, clients)
    script = await run_check(HealthCheck(ScriptProbe((sys.executable, "-c", "raise SystemExit(1)")),
                                         timeout=5.0), LOCAL, 0)
    assert http.detail == "status 200" and script.detail == "exit 1"


async def test_http_probe_binds_to_the_given_source_address(clients):
    peers = []

    async def handle(reader, writer):
        peers.append(writer.get_extra_info("peername")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        bound = await http_probe(LOCAL, port, HttpProbe(), 1.0, bind_to="127.0.0.78", clients=clients)
        plain = await http_probe(LOCAL, port, HttpProbe(), 1.0, clients=clients)
    finally:
        server.close()
        await server.wait_closed()
    assert bound.ok and plain.ok
    assert peers == ["127.0.0.78", "127.0.0.1"]


async def test_http_probe_asks_for_an_unencoded_body_so_digests_match_genhash(clients):
    seen = []

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.decode().lower())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        r = await http_probe(LOCAL, port, HttpProbe(digest="444bcb3a3fcf8389296c49467f27e1d6"), 1.0,
                             clients=clients)
    finally:
        server.close()
        await server.wait_closed()
    assert (r.ok, r.detail) == (True, "status 200")
    assert "accept-encoding" not in seen[0]


# --- the lean HTTP client against raw servers (issue 13) --------------------------------


async def _raw_server(reply: bytes, close: bool = True):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()

    server = await asyncio.start_server(handle, LOCAL, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("reply, probe, expected", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n",
     HttpProbe(body_regex="all good"), (True, "status 200")),
    (b"HTTP/1.0 200 OK\r\n\r\nno length, ends at close", HttpProbe(body_regex="at close$"), (True, "status 200")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut short", HttpProbe(body_regex="x"), (False, "bad body")),
    (b"", HttpProbe(), (False, "disconnected")),
    (b"220 smtp.example ESMTP\r\n\r\n", HttpProbe(), (False, "bad response")),
])
async def test_http_probe_reads_real_responses_of_every_framing(reply, probe, expected):
    server, port = await _raw_server(reply)
    try:
        r = await http_probe(LOCAL, port, probe, 2.0)
    finally:
        server.close()
        await server.wait_closed()
    assert (r.ok, r.detail) == expected and not r.inconclusive


async def test_http_probe_decides_on_the_status_without_waiting_for_the_server_to_close():
    server, port = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nstart", close=False)
    try:
        r = await http_probe(LOCAL, port, HttpProbe(), 2.0)
    finally:
        server.close()
    assert (r.ok, r.detail) == (True, "status 200") and r.elapsed < 1.0


def test_an_exchange_that_ends_early_fails_with_its_reason_and_only_local_errnos_are_inconclusive():
    assert failed(TimeoutError(), 1.0) == ProbeResult(False, "timeout", 1.0)
    assert failed(ConnectionRefusedError(errno.ECONNREFUSED, "x"), 0.1) == ProbeResult(False, "refused", 0.1)
    assert failed(OSError(errno.EMFILE, "x"), 0.0) == ProbeResult(False, "emfile", 0.0, inconclusive=True)
    assert failed(OSError(errno.ENOBUFS, "x"), 0.0).inconclusive
    # A bug in a probe is a failed check naming it, never an exception in the runner.
    assert failed(ValueError("bad"), 0.2) == ProbeResult(False, "error: ValueError: bad", 0.2)
    assert failure_reason(OSError(errno.EHOSTUNREACH, "x")) == "unreachable"


# A child process lowers RLIMIT_NOFILE and opens files until EMFILE, then runs the probes
# ({probes}: awaited calls) and prints each result as "ok detail inconclusive".
OUT_OF_DESCRIPTORS = """\
import asyncio, os, resource
{imports}
async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
{warm_up}    hog = []
    try:
        while True: hog.append(os.open('/dev/null', os.O_RDONLY))
    except OSError: pass
    for r in ({probes}):
        print(r.ok, r.detail, r.inconclusive)
asyncio.run(main())
"""


async def results_out_of_descriptors(imports: str, probes: str, warm_up: str = "") -> list[str]:
    code = OUT_OF_DESCRIPTORS.format(imports=imports, probes=probes, warm_up=warm_up)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3])))
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_probes_that_cannot_get_a_socket_are_inconclusive():
    """RLIMIT_NOFILE lowered in a child process until socket() fails with EMFILE."""
    lines = await results_out_of_descriptors(
        "from hadirector.health.probes import tcp_probe, http_probe, script_probe\n"
        "from hadirector.model import HttpProbe",
        "await tcp_probe('127.0.0.1', 9, 1.0), await http_probe('127.0.0.1', 9, HttpProbe(), 1.0), "
        "await script_probe(['/bin/true'], 1.0)",
        warm_up="    await tcp_probe('127.0.0.1', 9, 1.0)   # the poller's epoll, made while fds remain\n")
    assert lines == ["False emfile True"] * 3


async def test_dns_udp_ping_and_smtp_probes_that_cannot_get_a_socket_are_inconclusive():
    """The issue-13 probes too: EMFILE is the director's failure, not the server's."""
    lines = await results_out_of_descriptors(
        "from hadirector.health.dns import dns_probe\n"
        "from hadirector.health.udp import udp_probe\n"
        "from hadirector.health.ping import ping_probe\n"
        "from hadirector.health.smtp import smtp_probe\n"
        "from hadirector.model import DnsProbe, UdpProbe, SmtpProbe",
        "await dns_probe('127.0.0.1', 53, DnsProbe(), 1.0), await udp_probe('127.0.0.1', 9, UdpProbe(), 1.0), "
        "await ping_probe('127.0.0.1', 1.0), await smtp_probe('127.0.0.1', 25, SmtpProbe(), 1.0)")
    assert lines == ["False emfile True"] * 4


async def test_a_missing_or_non_executable_script_is_inconclusive(tmp_path):
    missing = await script_probe([str(tmp_path / "nope")], 1.0)
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    denied = await script_probe([str(plain)], 1.0)
    assert (missing.ok, missing.detail, missing.inconclusive) == (False, "not found", True)
    assert (denied.ok, denied.detail, denied.inconclusive) == (False, "permission denied", True)
    failed = await script_probe([sys.executable, "-c", "raise SystemExit(1)"], 5.0)
    assert not failed.inconclusive         # the script ran and said no: a real failure


async def test_tcp_and_http_probes_reach_ipv6_servers():
    server = await asyncio.start_server(
        lambda r, w: (w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), w.close()), "::1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        tcp = await tcp_probe("::1", port, 1.0)
        http = await http_probe("::1", port, HttpProbe(), 1.0)
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            free = s.getsockname()[1]
        refused = await tcp_probe("::1", free, 1.0)
    finally:
        server.close()
    assert (tcp.ok, http.ok, http.detail, refused.detail) == (True, True, "status 200", "refused")


async def test_a_probe_started_without_a_descriptor_for_the_poller_is_inconclusive(monkeypatch):
    from hadirector.health import probes

    def no_fds(loop):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(probes, "poller", no_fds)
    got = []
    check = probes.start_probe(HealthCheck(HttpProbe()), LOCAL, 9, got.append)
    check.cancel()
    assert [(r.ok, r.detail, r.inconclusive) for r in got] == [(False, "emfile", True)]


async def test_a_full_epoll_makes_the_check_inconclusive_and_closes_its_socket(monkeypatch):
    from hadirector.health import probes

    p = probes.poller(asyncio.get_running_loop())

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(p, "watch", full)
    with blackhole_listener() as port:      # the connect stays in progress: it must be watched
        r = await tcp_probe(LOCAL, port, 1.0)
    assert (r.ok, r.detail, r.inconclusive) == (False, "enospc", True)


async def test_batched_timeouts_keep_each_checks_own_timeout_whatever_the_order_they_started():
    loop = asyncio.get_running_loop()
    with blackhole_listener() as port:
        t0 = loop.time()
        long = asyncio.ensure_future(tcp_probe(LOCAL, port, 1.5))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(tcp_probe(LOCAL, port, 0.3))
        done_short = await short
        t_short = loop.time() - t0
        assert not long.done()              # the later, shorter one expired first
        done_long = await long
        t_long = loop.time() - t0
    assert (done_short.detail, done_long.detail) == ("timeout", "timeout")
    assert 0.3 <= t_short < 0.3 + SLACK and 1.5 <= t_long < 1.5 + SLACK


async def test_a_check_on_the_descriptor_of_a_finished_one_keeps_its_own_timeout():
    """The timeout FIFO keeps (deadline, descriptor) rows, not checks: the row of a check
    that finished early must not time out a later check that got the same descriptor."""
    from hadirector.health import probes

    got = []
    with socket.socket() as live, blackhole_listener() as hole:
        live.bind((LOCAL, 0))
        live.listen(16)
        first = probes.TcpTarget(LOCAL, live.getsockname()[1], 0.6, None).start(got.append)
        fd = first._fd
        assert fd >= 0                       # watched: its row is in the FIFO
        await wait_until(lambda: len(got) == 1)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        second = probes.TcpTarget(LOCAL, hole, 0.6, None).start(got.append)
        assert second._fd == fd             # the same descriptor, a later deadline
        await wait_until(lambda: len(got) == 2, timeout=0.6 + SLACK)
        took = time.monotonic() - t0
    assert [(r.ok, r.detail) for r in got] == [(True, "connected"), (False, "timeout")]
    assert 0.6 <= took < 0.6 + SLACK


async def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- fewer wake-ups and system calls per check (issue 13) -------------------------------


async def test_checks_that_ended_while_starting_report_when_reaped_without_a_loop_iteration():
    """A loopback connect completes inside connect(2): ``reap_ready`` right after the
    start hands the result over in the same callback (no asyncio iteration of its own),
    and a check still in progress is left to its event."""
    from hadirector.health import probes

    got = []
    with socket.socket() as live, blackhole_listener() as hole:
        live.bind((LOCAL, 0))
        live.listen(16)
        probes.TcpTarget(LOCAL, live.getsockname()[1], 1.0, None).start(got.append)
        pending = probes.TcpTarget(LOCAL, hole, 1.0, None).start(got.append)
        assert got == []                     # connect in progress: reported by epoll
        probes.reap_ready()                  # no await: still the same loop callback
        assert [(r.ok, r.detail) for r in got] == [(True, "connected")]
        assert not pending.finished
        pending.cancel()


async def test_a_reap_whose_epoll_fails_does_not_raise_into_the_runner(monkeypatch):
    """The runner reaps inside its timer callback: an exception there would stop its
    timer chain. The loop's own call of the same handler still sees the failure."""
    from hadirector.health import probes

    p = probes.poller(asyncio.get_running_loop())

    class BrokenEpoll:
        def poll(self, timeout):
            raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(p, "_ep", BrokenEpoll())
    probes.reap_ready()
    with pytest.raises(OSError):
        p._on_ready()


def _answering_server(reply: bytes, read_first: bool, close: bool):
    async def handle(reader, writer):
        if read_first:
            await reader.readuntil(b"\r\n\r\n")
        for piece in reply if isinstance(reply, list) else [reply]:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05 if isinstance(reply, list) else 0)
        if close:
            writer.close()
        else:
            await reader.read()
    return asyncio.start_server(handle, LOCAL, 0)


_BIG = b"x" * 300_000 + b"the end"


@pytest.mark.parametrize("reply, read_first, close, probe, expected", [
    # Everything, close included, may be queued before the check reads at all: the
    # edge-triggered reader must read past 64 KiB chunks to the end.
    (b"HTTP/1.0 200 OK\r\n\r\n" + _BIG, True, True, HttpProbe(body_regex="the end$"), (True, "status 200")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_BIG) + _BIG, True, False,
     HttpProbe(body_regex="the end$"), (True, "status 200")),
    # In pieces, the connection left open: each piece is a new edge.
    ([b"HTTP/1.1 200", b" OK\r\nContent-Le", b"ngth: 4\r\n\r\nfi", b"ne"], True, False,
     HttpProbe(body_regex="^fine$"), (True, "status 200")),
])
async def test_http_check_reads_every_response_the_edge_triggered_socket_announces(
        reply, read_first, close, probe, expected):
    server = await _answering_server(reply, read_first, close)
    try:
        r = await http_probe(LOCAL, server.sockets[0].getsockname()[1], probe, 2.0)
    finally:
        server.close()
        await server.wait_closed()
    assert (r.ok, r.detail) == expected and not r.inconclusive


@pytest.mark.parametrize("reply, close, expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True, (True, "status 200")),
    (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", False, (False, "status 503")),
    (b"", True, (False, "disconnected")),
])
async def test_http_check_reads_an_answer_that_came_with_the_connect(reply, close, expected):
    """The server answers (and maybe closes) on accept, before the check's first event
    is handled: that event already says readable, and no later edge would come."""
    from hadirector.health import probes

    with socket.socket() as lsock:
        lsock.bind((LOCAL, 0))
        lsock.listen(4)
        held = []

        def serve():
            conn, _ = lsock.accept()
            conn.sendall(reply)
            if close:
                conn.close()
            else:
                held.append(conn)

        t = threading.Thread(target=serve)
        t.start()
        got = []
        check = probes.HttpTarget(LOCAL, lsock.getsockname()[1], HttpProbe(), 2.0, None).start(got.append)
        t.join(2.0)
        time.sleep(0.05)                     # blocking: the answer lands before the event
        try:
            await wait_until(lambda: got, timeout=2.0 + SLACK)
        finally:
            check.cancel()
            for c in held:
                c.close()
    assert [(r.ok, r.detail) for r in got] == [expected]


# --- the poller -----------------------------------------------------------------------


class _Socketed:
    """A check as ``EpollChecks.watch`` sees it, on one end of a real socket pair: it
    records the events handed to it, and ``then`` runs on its first one."""

    __slots__ = ("_sock", "_fd", "_start", "_deadline", "events", "then", "failed")

    def __init__(self, sock: socket.socket, then=None) -> None:
        self._sock, self._fd, self.events, self.then, self.failed = sock, -1, [], then, []
        self._start = asyncio.get_running_loop().time()

    def on_event(self, events: int, now: float) -> None:
        self.events.append(events)
        if self.then is not None:
            then, self.then = self.then, None
            then()

    def fail(self, detail: str) -> None:
        self.failed.append(detail)


async def test_an_event_for_a_descriptor_reused_within_one_batch_is_not_handed_to_its_new_check():
    # The runner starts a check from another's ``done``: it may get the descriptor of a
    # socket closed earlier in the same batch, whose ready event is not the new one's.
    import select

    from hadirector.health.probes import poller

    p = poller(asyncio.get_running_loop())
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    spare, spare_peer = socket.socketpair()
    reused: list[_Socketed] = []

    def close_b_and_watch_a_new_socket_on_its_number():
        fd = b.fileno()
        p.forget(fd)
        b.close()
        os.dup2(spare.fileno(), fd)          # the new socket gets the freed number
        new = _Socketed(socket.socket(fileno=fd))
        p.watch(new, select.EPOLLIN, 60.0)
        reused.append(new)

    first = _Socketed(a, then=close_b_and_watch_a_new_socket_on_its_number)
    second = _Socketed(b)
    p.watch(first, select.EPOLLIN, 60.0)
    p.watch(second, select.EPOLLIN, 60.0)
    a_peer.send(b"x")
    b_peer.send(b"x")
    fd_b = b.fileno()
    try:
        p.dispatch([(a.fileno(), select.EPOLLIN), (fd_b, select.EPOLLIN)], 0.0)
        assert first.events == [select.EPOLLIN]
        assert second.events == [] and reused and reused[0].events == []
        assert not (first.failed or second.failed or reused[0].failed)
    finally:
        for check in (first, second, *reused):
            p.forget(check._fd)
        for s in (a, a_peer, b_peer, spare, spare_peer, *(r._sock for r in reused)):
            s.close()
