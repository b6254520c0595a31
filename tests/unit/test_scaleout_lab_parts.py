"""The scale-out lab's own parts that need no namespace: the router's flow map parser,
its FIB watch, ``ipvsadm`` destination order, an event's account and its report line
(lab/scaleout.py, lab/scaleout_demo.py), and the long-lived-connection client
(lab/scaleout_flows.py) against real sockets on loopback: a right answer, a reset, a
server that falls silent, another server's name; and the lab's server and client
processes end to end on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from datetime import datetime

from lab.scaleout import RouteWatch, SessionDrop, exec_stop_post, parse_route_get, session_drops
from lab.scaleout_demo import (EventResult, Primed, Window, account, classify_drops, format_report, ipvs_dests,
                               spread)
from lab.scaleout_flows import Flows, FlowState, Pinger, start_servers

ROUTE_GET = """\
10.100.0.1 from 10.63.1.2 via 10.63.0.12 dev br0 iif cl
    cache iif cl
10.100.0.1 from 10.63.1.2 via 10.63.0.11 dev br0 iif cl
    cache iif cl
10.100.0.1 from 10.63.1.2 dev br0 iif cl
    cache iif cl
"""

IPVSADM = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.100.0.1:80 mh (mh-fallback,mh-port)
  -> 10.63.0.21:80                Route   1      7          0
  -> 10.63.0.22:80                Route   0      5          1
  -> 10.63.0.23:80                Route   1      8          0
"""


def state(port: int, name: str = "rs1", broken: str | None = None, answers: int = 3) -> FlowState:
    return FlowState(port, name, broken, answers, 0.0, 0.0)


def test_route_get_batch_output_gives_each_flow_its_next_hop_in_order():
    assert parse_route_get(ROUTE_GET, "10.100.0.1") == ["10.63.0.12", "10.63.0.11", None]


def test_route_watch_times_each_change_of_the_vips_next_hops_and_ignores_the_rest():
    w = RouteWatch("10.100.0.1")
    for t, line in [(1.0, "10.100.0.1 proto bird metric 32 \n"),
                    (1.0, "\tnexthop via 10.63.0.11 dev br0 weight 1 \n"),
                    (1.0, "\tnexthop via 10.63.0.12 dev br0 weight 1 \n"),
                    (1.5, "10.9.9.0/24 via 10.63.0.11 dev br0 proto bird metric 32 \n"),
                    (1.5, "\tnexthop via 10.63.0.13 dev br0 weight 1 \n"),     # not the VIP's
                    (2.0, "10.100.0.1 via 10.63.0.13 dev br0 metric 1 \n"),       # a pin
                    (3.0, "Deleted 10.100.0.1 via 10.63.0.12 dev br0 proto bird metric 32 \n"),
                    (3.1, "10.100.0.1 via 10.63.0.12 dev br0 proto bird metric 32 \n")]:
        w.feed(line, t)
    assert w.first(0.0, {"10.63.0.11", "10.63.0.12"}) == 1.0
    assert w.first(0.0, {"10.63.0.13"}) is None
    assert w.first(0.0, {"10.63.0.12"}) == 3.1, "a deletion is not the route"
    assert w.first(3.2, {"10.63.0.12"}) is None


def test_the_lab_runs_what_the_units_exec_stop_post_runs(tmp_path):
    assert exec_stop_post() == ["withdraw"]      # systemd/hadirector.service
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nExecStopPost=-/opt/hd/bin/hadirector withdraw --all -c /etc/x.yaml\n")
    assert exec_stop_post(unit) == ["withdraw", "--all"]
    unit.write_text("[Service]\nExecStopPost=/bin/true\n")
    with pytest.raises(ValueError, match="no ExecStopPost"):
        exec_stop_post(unit)


def test_ipvsadm_listing_gives_the_kernel_order_and_weights():
    assert ipvs_dests(IPVSADM) == [("10.63.0.21:80", "1"), ("10.63.0.22:80", "0"), ("10.63.0.23:80", "1")]


def test_an_event_counts_only_connections_alive_before_it_that_broke_during_it():
    before = {1: state(1), 2: state(2), 3: state(3, broken="EOF")}
    after = {1: state(1), 2: state(2, broken="ConnectionResetError"), 3: state(3, broken="EOF")}
    r = account("silent failure of d3", before, after, {1: "a", 2: "b", 3: "b"}, {1: "a", 2: "a", 3: "a"},
                detection=0.31, leaves=True)
    assert r.established == 2 and r.broken == {2: "ConnectionResetError"} and r.moved == 1
    assert r.line == "silent failure of d3: broken: 1 of 2 established connections"


def test_spread_lists_every_director_even_one_without_flows():
    names = {"10.0.0.11": "d1", "10.0.0.12": "d2", "10.0.0.13": "d3"}
    assert spread({1: "10.0.0.11", 2: "10.0.0.11", 3: "10.0.0.13"}, names) == {"d1": 2, "d2": 0, "d3": 1}


def test_the_report_has_one_line_per_event_then_detection_and_spread():
    results = [EventResult("silent failure of d3", 60, {}, 31, 0.312, "BFD 100 ms x 3", 1.4, leaves=True),
               EventResult("d3 heard again (rejoins)", 60, {}, 29, 4.2, stall=0.02),
               EventResult("clean stop of d1 (SIGTERM)", 60, {40001: "EOF"}, 20, 0.05, leaves=True)]
    text = format_report(results, connections=60, digests={"d1": "x", "d2": "x"},
                         spreads=[("3 directors, 60 connections", {"d1": 21, "d2": 19, "d3": 20})])
    lines = text.splitlines()
    assert "silent failure of d3: broken: 0 of 60 established connections" in lines
    assert "clean stop of d1 (SIGTERM): broken: 1 of 60 established connections" in lines
    assert "    broken: client port 40001: EOF" in lines
    assert "    silent failure of d3: 312 ms (BFD 100 ms x 3)" in lines
    assert not any(line.startswith("    d3 heard again") for line in lines), "a join is no detection"
    assert "    3 directors, 60 connections: d1 21, d2 19, d3 20" in lines
    assert "identical on d1 d2" in text
    assert lines[-1].startswith("result: 1 established connections broken")


# The router's BIRD log (debug protocols { states, events }), from real runs: d3 silenced
# (BFD), d1 resetting the session (a starved guest), d2's BIRD killed.
ROUTER_LOG = """\
2026-12-06 15:34:55.670 <TRACE> d3: BGP session established
2026-12-06 15:34:55.670 <TRACE> d3: State changed to up
2026-12-06 15:34:55.700 <TRACE> d1: State changed to up
2026-12-06 15:34:55.710 <TRACE> d2: State changed to up
2026-12-06 15:34:57.348 <TRACE> bfd1: Session to 10.61.0.13 changed state from Up to Down
2026-12-06 15:34:57.348 <TRACE> d3: BFD session down
2026-12-06 15:34:57.348 <TRACE> d3: State changed to stop
2026-12-06 15:34:57.348 <TRACE> d3: State changed to down
2026-12-06 15:34:57.348 <TRACE> d3: State changed to start
2026-12-06 15:34:57.348 <TRACE> d3: Startup delayed by 2 seconds due to errors
2026-12-06 15:34:58.001 <RMT> d1: Received: Cease
2026-12-06 15:34:58.001 <TRACE> d1: State changed to stop
2026-12-06 15:34:59.253 <TRACE> d2: Connection closed
2026-12-06 15:34:59.253 <TRACE> d2: State changed to stop
2026-12-06 15:34:59.924 <TRACE> d3: State changed to up
2026-12-06 15:35:00.100 <TRACE> d4: State changed to stop
2026-12-06 15:35:01.000 <ERR> hadirector_bfd: Socket error: Operation not permitted
"""


def test_the_routers_log_gives_each_drop_of_an_established_session_with_its_reason():
    drops = session_drops(ROUTER_LOG)
    assert [(d.peer, d.reason) for d in drops] == [("d3", "BFD session down"), ("d1", "Received: Cease"),
                                                   ("d2", "Connection closed")], "d4 was never up"
    assert drops[0].at == datetime(2026, 12, 6, 15, 34, 57, 348000)


def test_only_the_silenced_directors_drop_during_its_failure_is_expected():
    def t(second: int) -> datetime:
        return datetime(2026, 12, 6, 15, 34, second)

    drops = [SessionDrop(t(10), "d3", "BFD session down"), SessionDrop(t(11), "d1", "Received: Cease"),
             SessionDrop(t(30), "d2", "BFD session down")]
    windows = [Window("set-up", t(0), t(5)), Window("silent failure of d3", t(9), t(20), drops="d3")]
    assert classify_drops(drops, windows) == [(drops[0], "silent failure of d3", True),
                                              (drops[1], "silent failure of d3", False),
                                              (drops[2], "between events", False)]
    text = format_report([], connections=60, digests={"d1": "x"}, spreads=[],
                         sessions=classify_drops(drops, windows))
    assert "BGP sessions the router dropped (its BIRD log): 3, unexpected: 2" in text
    assert "    15:34:10.000 d3 (BFD session down) during silent failure of d3" in text.splitlines()
    assert "    15:34:11.000 d1 (Received: Cease) during silent failure of d3: UNEXPECTED" in text.splitlines()


def test_a_primed_command_takes_its_input_when_fired_and_names_its_failure():
    Primed(["cat"], "cat").fire("a line\n")
    failing = Primed(["cat", "-", "/nonexistent/x"], "cat")
    with pytest.raises(RuntimeError, match=r"(?s)exit 1: .*nonexistent/x"):
        failing.fire("a line\n")
    with pytest.raises(RuntimeError, match="never waited for its input"):
        Primed(["cat", "/nonexistent/x"], "cat", timeout=5)


# --- the client against real sockets on loopback ---------------------------------------------


class NameServer:
    """Answers every line with its name; ``mode`` changes that for new lines:
    "silent" (no answer), "reset" (RST), "other" (another name)."""

    def __init__(self, name: str = "rs1") -> None:
        self.name, self.mode = name, "answer"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            c.sendall(f"{self.name}\n".encode())
            f = c.makefile("rb")
            for _ in f:
                if self.mode == "silent":
                    continue
                if self.mode == "reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                    return
                c.sendall(b"rs9\n" if self.mode == "other" else f"{self.name}\n".encode())
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def free_ports(n: int) -> int:
    """A run of ``n`` source ports that are free now (the client binds them)."""
    for base in range(45000, 60000, 50):
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free source ports")


def wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("mode, why", [("reset", "ConnectionResetError"), ("other", "answered by 'rs9'"),
                                       ("silent", "timeout: no answer within 1 s")])
def test_the_client_keeps_connections_talking_and_names_how_one_broke(mode, why):
    server = NameServer()
    pinger = Pinger("127.0.0.1", "127.0.0.1", server.port, timeout=1.0)
    try:
        port0 = free_ports(3)
        opened = pinger.open(3, port0)
        assert opened == [[port0, "rs1"], [port0 + 1, "rs1"], [port0 + 2, "rs1"]]
        pinger.start(0.05)
        wait(lambda: all(s["answers"] >= 3 for s in pinger.status()))
        assert all(s["broken"] is None for s in pinger.status())
        server.mode = mode
        wait(lambda: all(s["broken"] for s in pinger.status()))
        assert {s["broken"].split(":")[0] if mode == "reset" else s["broken"] for s in pinger.status()} == {why}
    finally:
        pinger.stop()
        server.close()


def test_the_client_reports_the_longest_stall_since_it_was_last_asked():
    server = NameServer()
    pinger = Pinger("127.0.0.1", "127.0.0.1", server.port, timeout=5.0)
    try:
        pinger.open(1, free_ports(1))
        pinger.start(0.05)
        wait(lambda: pinger.status()[0]["answers"] >= 2)
        server.mode = "silent"
        time.sleep(0.4)
        server.mode = "answer"       # the silent line stays unanswered: its age is the stall
        [s] = pinger.status()
        assert 0.3 <= s["stall"] < 1.0 and s["broken"] is None
    finally:
        pinger.stop()
        server.close()


def test_the_server_and_client_processes_speak_their_command_protocol_end_to_end():
    """The lab's real server process and client process on loopback (the lab runs
    them in namespaces): open, start, status, stop."""
    port = free_ports(1)
    server = start_servers(port, {"": "rs1"})
    flows = Flows(None, "127.0.0.1", "127.0.0.1", port=port, timeout=2.0)
    try:
        port0 = free_ports(4)
        assert flows.open(4, port0) == {p: "rs1" for p in range(port0, port0 + 4)}
        flows.start(0.05)
        wait(lambda: all(s.answers >= 3 for s in flows.status().values()))
        flows.stop()
        states = flows.status()
        assert sorted(states) == list(range(port0, port0 + 4))
        assert all(s.broken is None and s.name == "rs1" and s.stall < 1.0 for s in states.values())
        server.kill()                 # every connection now ends: EOF or a reset
        server.wait(timeout=10)
        flows.start(0.05)
        wait(lambda: all(s.broken for s in flows.status().values()))
    finally:
        flows.close()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
