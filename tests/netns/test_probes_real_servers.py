"""The dns, udp, ping, smtp, tcp and http probes against real servers in a namespace
(issue 13): dnsmasq, socat's UDP echo, OpenSMTPD, the kernel's own echo reply, Python's
http.server -- each up, down (refused), slow (the server stopped with SIGSTOP: it holds
its socket, never answers), giving a wrong answer, unreachable (no route), and behind a
link that goes down. Across a real link a TCP or HTTP check's connect is still in
progress when it returns, unlike on loopback: the path the epoll events drive.

Layout: the probes run in a "director" namespace (10.213.0.1, fd13::1), the servers in
a "server" namespace (10.213.0.2, fd13::2) at the other end of a veth pair. Names end in
the pid, so parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time

import pytest

from hadirector.health.dns import TYPES, decode_reply, encode_query
from hadirector.health.probes import run_check
from hadirector.health.udp import exchange
from hadirector.model import DnsProbe, HealthCheck, HttpProbe, PingProbe, SmtpProbe, TcpProbe, UdpProbe
from lab.netns import inside, sh, terminate
from lab.processes import group_gone

pytestmark = pytest.mark.netns

PID = os.getpid()
D, S = f"prbd{PID}", f"prbs{PID}"
D4, S4, D6, S6 = "10.213.0.1", "10.213.0.2", "fd13::1", "fd13::2"
NOWHERE = "10.213.9.9"              # an "unreachable" route in the director namespace
WWW4, WWW6 = "10.213.0.50", "fd13::50"
TIMEOUT = 1.0
SLACK = 1.0                         # real time on a loaded 2-core machine


@pytest.fixture(scope="module")
def lab():
    for ns in (D, S):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", D, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", S)
    for ns, a4, a6 in ((D, D4, D6), (S, S4, S6)):
        sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", D, "route", "add", "unreachable", f"{NOWHERE}/32")
    wait_for_link()
    try:
        yield
    finally:
        for ns in (D, S):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def link(lab):
    """The server's end of the link; put back up after a test that takes it down."""
    yield lambda state: sh("ip", "-n", S, "link", "set", "eth0", state)
    sh("ip", "-n", S, "link", "set", "eth0", "up")
    # A link going down takes its IPv6 addresses with it (keep_addr_on_down=0).
    sh("ip", "-n", S, "addr", "replace", f"{S6}/64", "dev", "eth0", "nodad")
    wait_for_link()


def wait_for_link() -> None:
    """Until both families cross the veth (carrier, neighbour discovery)."""
    deadline = time.monotonic() + 10
    for address in (S4, S6):
        while sh("ping", "-c1", "-W1", address, ns=D, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{address} not reachable from the director namespace"
            time.sleep(0.1)


def probe(p, address: str, port: int = 0, timeout: float = TIMEOUT):
    """Run one check from the director namespace; (result, wall seconds it took)."""
    check = HealthCheck(p, timeout=timeout)
    t0 = time.monotonic()
    with inside(D):
        r = asyncio.run(run_check(check, ipaddress.ip_address(address), port))
    return r, time.monotonic() - t0


@contextlib.contextmanager
def server(*argv: str, ready=None):
    """``argv`` in the server namespace, in its own process group (so SIGSTOP stops
    every process of it); ``ready()`` polled until true."""
    proc = subprocess.Popen(["ip", "netns", "exec", S, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while ready is not None and not ready():
            assert proc.poll() is None, f"{argv[0]} exited: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"{argv[0]} not ready in 10 s"
            time.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
        terminate(proc, timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)         # forked children (socat, smtpd) too
        # SIGKILL is sent, not waited for, and the children are not ours to wait(). On a
        # loaded machine a socat child can live on for milliseconds holding the server's
        # socket: the next test's datagram to that port is then queued there and dropped
        # unread, not answered with the port unreachable that test expects.
        deadline = time.monotonic() + 10
        while not group_gone(proc.pid):
            assert time.monotonic() < deadline, f"{argv[0]}'s processes still alive 10 s after SIGKILL"
            time.sleep(0.01)


@contextlib.contextmanager
def stopped(proc: subprocess.Popen):
    """SIGSTOP: the server keeps its sockets (the kernel queues and accepts) but never answers."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def listening(proto: str, port: int):
    return lambda: f":{port} " in sh("ss", "-Hln", f"-{proto}", ns=S).stdout


# --- DNS: dnsmasq, authoritative for lab.test -------------------------------------------

WWW_A = DnsProbe(name="www.lab.test", query_type="A", answer_regex=r"^10\.213\.0\.50$")


@pytest.fixture
def dnsmasq(lab):
    with server("dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--user=root", "--pid-file=", "--bind-interfaces", f"--listen-address={S4}",
                f"--listen-address={S6}", "--port=53", f"--auth-server=ns.lab.test,{S4}",
                "--auth-zone=lab.test", f"--host-record=www.lab.test,{WWW4},{WWW6}",
                *BIG_TXT, ready=listening("u", 53)) as proc:
        yield proc


# More TXT records than fit in 512 bytes of UDP: dnsmasq sets TC, and the "needle" is
# only in the full answer over TCP (dnsmasq answers its records last given first).
BIG_TXT = ["--txt-record=big.lab.test,needle"] + \
          [f"--txt-record=big.lab.test,{'hay%d-' % i + 'x' * 180}" for i in range(4)]


def test_dns_probe_is_up_on_the_expected_answer_from_dnsmasq(dnsmasq):
    r, _ = probe(WWW_A, S4, 53)
    assert (r.ok, r.detail) == (True, "rcode NOERROR")
    r, _ = probe(DnsProbe(name="www.lab.test", query_type="AAAA", answer_regex="^fd13::50$"), S6, 53)
    assert (r.ok, r.detail) == (True, "rcode NOERROR")
    r, _ = probe(DnsProbe(name="lab.test"), S4, 53)            # keepalived's SOA query, for the zone
    assert (r.ok, r.detail) == (True, "rcode NOERROR")


def test_dns_probe_over_tcp_is_up_on_the_expected_answer(dnsmasq):
    r, _ = probe(DnsProbe(name="www.lab.test", query_type="A", answer_regex=r"^10\.213\.0\.50$",
                          transport="tcp"), S4, 53)
    assert (r.ok, r.detail) == (True, "rcode NOERROR")


def test_dns_probe_asks_again_over_tcp_when_the_udp_answer_was_truncated(dnsmasq):
    needle = DnsProbe(name="big.lab.test", query_type="TXT", answer_regex="^needle$")
    # Over UDP alone the answer is truncated and the needle is not in it ...
    query = encode_query(7, "big.lab.test", TYPES["TXT"])
    with inside(D):
        data, _, _ = asyncio.run(exchange(ipaddress.ip_address(S4), 53, query, TIMEOUT, None))
    udp = decode_reply(data)
    assert udp.truncated and not any(a.text == "needle" for a in udp.answers)
    # ... so the probe asks over TCP, where it is.
    r, _ = probe(needle, S4, 53)
    assert (r.ok, r.detail) == (True, "rcode NOERROR")


def test_dns_probe_is_down_on_a_wrong_answer_or_rcode(dnsmasq):
    r, _ = probe(DnsProbe(name="www.lab.test", query_type="A", answer_regex=r"^10\.213\.0\.99$"), S4, 53)
    assert (r.ok, r.detail) == (False, "answer mismatch")
    r, _ = probe(DnsProbe(name="nope.lab.test", query_type="A"), S4, 53)
    assert (r.ok, r.detail) == (False, "rcode NXDOMAIN")
    # keepalived's default (the root's SOA) from an authoritative-only server that does
    # not recurse: it refuses, so the default check fails, as keepalived's would.
    r, _ = probe(DnsProbe(), S4, 53)
    assert (r.ok, r.detail) == (False, "rcode REFUSED")
    # ... and a check that expects that rcode passes.
    r, _ = probe(DnsProbe(name="nope.lab.test", query_type="A", rcode="NXDOMAIN"), S4, 53)
    assert (r.ok, r.detail) == (True, "rcode NXDOMAIN")


def test_dns_probe_is_down_at_its_timeout_when_dnsmasq_hangs(dnsmasq):
    for p in (WWW_A, DnsProbe(transport="tcp")):
        with stopped(dnsmasq):
            r, took = probe(p, S4, 53)
        assert (r.ok, r.detail) == (False, "timeout"), p
        assert TIMEOUT <= took < TIMEOUT + SLACK


def test_dns_probe_is_refused_at_once_when_dnsmasq_is_gone(lab):
    r, took = probe(WWW_A, S4, 53)                              # ICMP port unreachable
    assert (r.ok, r.detail) == (False, "refused")
    assert took < TIMEOUT
    r, took = probe(DnsProbe(transport="tcp"), S4, 53)         # TCP reset
    assert (r.ok, r.detail) == (False, "refused")
    assert took < TIMEOUT


# --- UDP: socat -------------------------------------------------------------------------


@pytest.fixture
def echo(lab):
    with server("socat", "UDP4-RECVFROM:7,fork", "PIPE", ready=listening("u", 7)) as proc:
        yield proc


@pytest.fixture
def wrong(lab):
    with server("socat", "UDP4-RECVFROM:8,fork", "SYSTEM:echo nope", ready=listening("u", 8)) as proc:
        yield proc


def test_udp_probe_is_up_on_the_echo_of_its_payload(echo):
    r, _ = probe(UdpProbe(payload=b"hc-ping", require_reply=True, reply_regex="^hc-ping$"), S4, 7)
    assert (r.ok, r.detail) == (True, "reply")
    r, took = probe(UdpProbe(payload=b"x"), S4, 7)              # a reply ends it before the timeout
    assert (r.ok, r.detail) == (True, "reply")
    assert took < TIMEOUT


def test_udp_probe_is_down_on_a_reply_that_does_not_match(wrong):
    r, _ = probe(UdpProbe(payload=b"hc-ping", require_reply=True, reply_regex="^hc-ping$"), S4, 8)
    assert (r.ok, r.detail) == (False, "reply mismatch")


def test_udp_probe_without_require_reply_takes_silence_as_up_as_keepalived(echo):
    with stopped(echo):
        r, took = probe(UdpProbe(payload=b"x"), S4, 7)
        assert (r.ok, r.detail) == (True, "no reply")
        assert TIMEOUT <= took < TIMEOUT + SLACK
        r, _ = probe(UdpProbe(payload=b"x", require_reply=True), S4, 7)
        assert (r.ok, r.detail) == (False, "timeout")


def test_udp_probe_is_refused_by_an_icmp_port_unreachable(lab):
    for p in (UdpProbe(), UdpProbe(require_reply=True)):
        r, took = probe(p, S4, 7)
        assert (r.ok, r.detail) == (False, "refused")
        assert took < TIMEOUT


# --- ping: the kernel's echo reply ------------------------------------------------------


@pytest.fixture(params=["raw", "ping_socket"])
def icmp(request, lab):
    """Both ICMP sockets: a raw one (Debian's ping_group_range "1 0" allows no ping
    socket), and the unprivileged ping socket when the range admits root's group."""
    if request.param == "ping_socket":
        sh("sysctl", "-qw", "net.ipv4.ping_group_range=0 0", ns=D)
    yield request.param
    sh("sysctl", "-qw", "net.ipv4.ping_group_range=1 0", ns=D)


def test_ping_probe_is_up_on_an_echo_reply(icmp):
    for address in (S4, S6):
        r, _ = probe(PingProbe(), address)
        assert (r.ok, r.detail) == (True, "echo reply"), address


def test_ping_probe_is_down_at_its_timeout_when_echoes_go_unanswered(icmp):
    sh("sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1", ns=S)
    try:
        r, took = probe(PingProbe(), S4)
    finally:
        sh("sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0", ns=S)
    assert (r.ok, r.detail) == (False, "timeout")
    assert TIMEOUT <= took < TIMEOUT + SLACK


# --- SMTP: OpenSMTPD, and scripted servers for what it does not say ---------------------


@pytest.fixture
def smtpd(lab, tmp_path):
    conf = tmp_path / "smtpd.conf"
    conf.write_text(f'listen on {S4} port 25\naction "local" mbox\n'
                    'match from any for domain "lab.test" action "local"\n')
    with server("smtpd", "-d", "-f", str(conf), ready=listening("t", 25)) as proc:
        yield proc


@pytest.fixture
def scripted_smtp(lab, tmp_path):
    """A server that says what ``script`` (sh, one connection on stdin/stdout) says."""
    def start(port: int, script: str):
        path = tmp_path / f"smtp{port}.sh"
        path.write_text(script + "\n")
        return server("socat", f"TCP4-LISTEN:{port},reuseaddr,fork", f"EXEC:sh {path}",
                      ready=listening("t", port))
    return start


def test_smtp_probe_is_up_on_opensmtpd_s_banner_and_ehlo(smtpd):
    r, _ = probe(SmtpProbe(helo_name="lb1.lab.test"), S4, 25)
    assert (r.ok, r.detail) == (True, "ehlo 250")


def test_smtp_probe_falls_back_to_helo_when_the_server_refuses_ehlo(scripted_smtp):
    # An RFC 821 server: 502 to EHLO, 250 to HELO.
    script = r"printf '220 old ESMTP\r\n'; read l; printf '502 no\r\n'; read l; printf '250 hi\r\n'; read l"
    with scripted_smtp(2526, script):
        r, _ = probe(SmtpProbe(), S4, 2526)
    assert (r.ok, r.detail) == (True, "helo 250")


def test_smtp_probe_is_down_on_a_wrong_banner_or_greeting_reply(scripted_smtp):
    with scripted_smtp(2527, r"printf '554 go away\r\n'; read l"):
        r, _ = probe(SmtpProbe(), S4, 2527)
    assert (r.ok, r.detail) == (False, "banner 554")
    with scripted_smtp(2528, r"printf '220 hi\r\n'; read l; printf '421 busy\r\n'; read l"):
        r, _ = probe(SmtpProbe(), S4, 2528)
    assert (r.ok, r.detail) == (False, "ehlo 421")
    with scripted_smtp(2529, r"printf 'HTTP/1.1 400 Bad Request\r\n'"):
        r, _ = probe(SmtpProbe(), S4, 2529)
    assert (r.ok, r.detail) == (False, "bad reply")


def test_smtp_probe_is_down_at_its_timeout_when_opensmtpd_hangs(smtpd):
    with stopped(smtpd):
        r, took = probe(SmtpProbe(), S4, 25)
    assert (r.ok, r.detail) == (False, "timeout")
    assert TIMEOUT <= took < TIMEOUT + SLACK


def test_smtp_probe_is_refused_when_nothing_listens(lab):
    r, _ = probe(SmtpProbe(), S4, 25)
    assert (r.ok, r.detail) == (False, "refused")


# --- TCP and HTTP: Python's http.server -------------------------------------------------

HTTP_PORT = 8080
# Bigger than one read and than a window's worth of segments: the edge-triggered reader
# must keep reading as they arrive, to the close (http.server speaks HTTP/1.0).
BIG = b"x" * 300_000 + b"the end"


@pytest.fixture
def www(lab, tmp_path):
    (tmp_path / "ok").write_text("ok\n")
    (tmp_path / "big").write_bytes(BIG)
    with server(sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "::",
                "--directory", str(tmp_path), ready=listening("t", HTTP_PORT)) as proc:
        yield proc


@pytest.mark.parametrize("address", [S4, S6])
def test_tcp_and_http_probes_are_up_against_a_real_server_across_the_link(www, address):
    r, _ = probe(TcpProbe(), address, HTTP_PORT)
    assert (r.ok, r.detail) == (True, "connected")
    r, _ = probe(HttpProbe(path="/ok", body_regex="^ok$"), address, HTTP_PORT)
    assert (r.ok, r.detail) == (True, "status 200")
    r, _ = probe(HttpProbe(path="/big", body_regex="the end$"), address, HTTP_PORT)
    assert (r.ok, r.detail) == (True, "status 200")


def test_http_probe_is_down_on_a_wrong_status_or_body(www):
    r, _ = probe(HttpProbe(path="/missing"), S4, HTTP_PORT)
    assert (r.ok, r.detail) == (False, "status 404")
    r, _ = probe(HttpProbe(path="/ok", body_regex="^fine$"), S4, HTTP_PORT)
    assert (r.ok, r.detail) == (False, "body mismatch")


def test_http_probe_is_down_at_its_timeout_when_the_server_hangs_and_tcp_still_connects(www):
    with stopped(www):
        r, _ = probe(TcpProbe(), S4, HTTP_PORT)           # the kernel still completes handshakes
        assert (r.ok, r.detail) == (True, "connected")
        r, took = probe(HttpProbe(path="/ok"), S4, HTTP_PORT)
        assert (r.ok, r.detail) == (False, "timeout")
        assert TIMEOUT <= took < TIMEOUT + SLACK


def test_tcp_and_http_probes_are_refused_at_once_when_nothing_listens(lab):
    for p in (TcpProbe(), HttpProbe()):
        r, took = probe(p, S4, HTTP_PORT)
        assert (r.ok, r.detail) == (False, "refused")
        assert took < TIMEOUT


# --- every probe: no route, and a link that goes down -----------------------------------

EVERY = [
    pytest.param(WWW_A, 53, id="dns"),
    pytest.param(UdpProbe(payload=b"x", require_reply=True), 7, id="udp"),   # socat echoes no empty datagram
    pytest.param(PingProbe(), 0, id="ping"),
    pytest.param(SmtpProbe(), 25, id="smtp"),
    pytest.param(TcpProbe(), HTTP_PORT, id="tcp"),
    pytest.param(HttpProbe(path="/ok"), HTTP_PORT, id="http"),
]


@pytest.mark.parametrize("p, port", EVERY)
def test_probe_is_down_at_once_when_there_is_no_route(lab, p, port):
    r, took = probe(p, NOWHERE, port)
    assert (r.ok, r.detail) == (False, "unreachable")
    assert took < TIMEOUT


@pytest.mark.parametrize("p, port", EVERY)
def test_probe_is_down_within_its_timeout_when_the_server_link_goes_down(lab, link, dnsmasq, echo, smtpd,
                                                                         www, p, port):
    r, _ = probe(p, S4, port)
    assert r.ok, r.detail                                       # up first, on a live link
    link("down")
    r, took = probe(p, S4, port)
    assert not r.ok
    assert r.detail in ("timeout", "unreachable")
    assert took < TIMEOUT + SLACK
