"""CheckLoop: TCP and plain-HTTP checks with no asyncio, against real loopback servers.

Each server is a real listening socket on 127.0.0.1 served by a thread (accepts and
closes; answers HTTP 200 or 500; accepts and never answers), a port nothing listens
on (refused), or a listener whose accept queue is full (a connect that hangs).
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import threading
import time

import pytest

from hadirector.health.checkloop import CheckLoop, LoopTarget
from hadirector.model import HealthCheck, HealthState, HttpProbe, ScriptProbe, TcpProbe

from .servers import blackhole_listener, closed_port

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN
# Real time: the margin over a timeout test_health_probes.py allows a loaded 2-core CI machine.
SLACK = 1.0


class LoopbackServer:
    """A real server on 127.0.0.1 in a thread. ``mode``: "accept" (accept, close),
    "http" (answer ``status`` to a GET), "silent" (accept, read, never answer).
    ``stop()`` closes the listener (connections are refused); ``start()`` listens
    again on the same port."""

    def __init__(self, mode: str, status: int = 200) -> None:
        self.mode, self.status = mode, status
        self.port = 0
        self.accepted = 0
        self._lsock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> LoopbackServer:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self._lsock = s
        self._stop = threading.Event()
        sel = selectors.DefaultSelector()           # here: its descriptor exists on return
        sel.register(s, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, args=(s, sel, self._stop), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, lsock: socket.socket, sel: selectors.BaseSelector, stop: threading.Event) -> None:
        conns: dict[socket.socket, bytes] = {}
        try:
            while not stop.is_set():
                for key, _ in sel.select(0.02):
                    sock = key.fileobj
                    if sock is lsock:
                        try:
                            c, _ = lsock.accept()
                        except BlockingIOError:
                            continue
                        except OSError:          # EMFILE (a test fills the table)
                            time.sleep(0.01)
                            continue
                        self.accepted += 1
                        if self.mode == "accept":
                            c.close()
                            continue
                        c.setblocking(False)
                        conns[c] = b""
                        sel.register(c, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    conns[sock] += data
                    if data and self.mode == "http" and b"\r\n\r\n" in conns[sock]:
                        sock.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Length: 2\r\n"
                                     "Connection: close\r\n\r\nok".encode())
                    elif data:
                        continue                 # silent: read on, never answer
                    sel.unregister(sock)
                    del conns[sock]
                    sock.close()
        finally:
            for c in conns:
                c.close()
            sel.close()
            lsock.close()


def tcp(interval=0.05, timeout=1.0, rise=1, fall=1, **kw) -> HealthCheck:
    return HealthCheck(TcpProbe(), interval=interval, timeout=timeout, rise=rise, fall=fall, **kw)


def http(interval=0.05, timeout=1.0, rise=1, fall=1, **kw) -> HealthCheck:
    return HealthCheck(HttpProbe(path="/health"), interval=interval, timeout=timeout,
                       rise=rise, fall=fall, **kw)


def run_until(loop: CheckLoop, done, limit: float = 5.0, step: float = 0.05):
    """Run in steps until ``done(reports so far)``; every report."""
    reports = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        reports.append(loop.run(until=time.monotonic() + step))
        if done(reports):
            return reports
    raise AssertionError(f"not done within {limit} s: {reports[-1] if reports else None}")


def transitions(reports):
    return [t for r in reports for t in r.transitions]


# --- up, down, timeout ------------------------------------------------------------------


def test_tcp_check_of_a_listening_server_goes_up_on_its_first_result():
    with LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", srv.port)]) as loop:
        assert loop.state("rs1") is UNKNOWN
        reports = run_until(loop, lambda rs: sum(r.completed for r in rs) >= 3)
    (t,) = transitions(reports)
    assert (t.target, t.old, t.new, t.reason, t.count) == ("rs1", UNKNOWN, UP, "connected", 1)
    assert sum(r.failed + r.inconclusive for r in reports) == 0


def test_tcp_check_of_a_port_nothing_listens_on_goes_down_as_refused():
    port = closed_port()
    with CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", port)]) as loop:
        reports = run_until(loop, lambda rs: sum(r.completed for r in rs) >= 2)
        assert loop.state("rs1") is DOWN
    (t,) = transitions(reports)
    assert (t.new, t.reason) == (DOWN, "refused")
    assert sum(r.failed for r in reports) == sum(r.completed for r in reports)


def test_http_check_reads_the_status_200_up_and_500_down():
    with LoopbackServer("http", 200) as ok, LoopbackServer("http", 500) as bad, \
            CheckLoop([LoopTarget("ok", http(), "127.0.0.1", ok.port),
                       LoopTarget("bad", http(), "127.0.0.1", bad.port)]) as loop:
        reports = run_until(loop, lambda rs: len(transitions(rs)) == 2)
        assert (loop.state("ok"), loop.state("bad")) == (UP, DOWN)
    got = {t.target: (t.new, t.reason) for t in transitions(reports)}
    assert got == {"ok": (UP, "status 200"), "bad": (DOWN, "status 500")}
    assert ok.accepted >= 1 and bad.accepted >= 1


def test_http_server_that_never_answers_is_down_after_the_timeout():
    with LoopbackServer("silent") as srv, \
            CheckLoop([LoopTarget("rs1", http(timeout=0.2), "127.0.0.1", srv.port)]) as loop:
        start = time.monotonic()
        reports = run_until(loop, lambda rs: transitions(rs))
        took = time.monotonic() - start
    (t,) = transitions(reports)
    assert (t.new, t.reason) == (DOWN, "timeout")
    assert 0.2 <= t.latency < 0.2 + SLACK
    assert took >= 0.2


def test_tcp_connect_that_hangs_is_down_after_the_timeout():
    with blackhole_listener() as port, \
            CheckLoop([LoopTarget("rs1", tcp(timeout=0.15), "127.0.0.1", port)]) as loop:
        reports = run_until(loop, lambda rs: transitions(rs))
    (t,) = transitions(reports)
    assert (t.new, t.reason) == (DOWN, "timeout")
    assert 0.15 <= t.latency < 0.15 + SLACK


def test_checks_still_running_at_until_are_recorded_by_the_next_run():
    with LoopbackServer("silent") as srv, \
            CheckLoop([LoopTarget("rs1", http(timeout=0.3), "127.0.0.1", srv.port)]) as loop:
        first = loop.run(until=time.monotonic() + 0.1)
        assert (first.started, first.completed, first.transitions) == (1, 0, [])
        second = loop.run(until=time.monotonic() + 0.4)
    assert second.completed >= 1
    assert [(t.new, t.reason) for t in second.transitions] == [(DOWN, "timeout")]


# --- rise and fall ----------------------------------------------------------------------


def test_up_server_goes_down_only_after_fall_consecutive_failures_and_up_after_rise():
    srv = LoopbackServer("accept").start()
    try:
        with CheckLoop([LoopTarget("rs1", tcp(rise=2, fall=3, initial=UP), "127.0.0.1",
                                   srv.port)]) as loop:
            run_until(loop, lambda rs: sum(r.completed for r in rs) >= 2)
            assert loop.state("rs1") is UP
            srv.stop()                                      # refused from now on
            reports = run_until(loop, lambda rs: transitions(rs))
            (down,) = transitions(reports)
            assert (down.old, down.new, down.reason, down.count) == (UP, DOWN, "refused", 3)
            assert sum(r.failed for r in reports) >= 3
            srv.start()                                     # same port, listening again
            reports = run_until(loop, lambda rs: transitions(rs))
            (up,) = transitions(reports)
            assert (up.old, up.new, up.reason, up.count) == (DOWN, UP, "connected", 2)
            assert loop.health("rs1").successes >= 2
    finally:
        srv.stop()


def test_a_failure_is_confirmed_after_retry_delay_not_after_the_interval():
    port = closed_port()
    check = tcp(interval=10.0, fall=3, initial=UP, retry_delay=0.05)
    with CheckLoop([LoopTarget("rs1", check, "127.0.0.1", port)]) as loop:
        reports = run_until(loop, lambda rs: transitions(rs), limit=2.0)
    (t,) = transitions(reports)
    assert (t.new, t.count) == (DOWN, 3)


# --- lateness ---------------------------------------------------------------------------


def test_every_check_started_has_its_lateness_and_none_starts_before_its_deadline():
    with LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget(i, tcp(interval=0.02), "127.0.0.1", srv.port) for i in range(20)],
                      warmup=0.02) as loop:
        report = loop.run(until=time.monotonic() + 0.3)
    assert report.started >= 20 * 5
    assert len(report.lateness) == report.started
    assert min(report.lateness) >= 0.0


# --- a failure of the director is not a failure of the server ---------------------------


def test_checks_that_cannot_get_a_descriptor_are_inconclusive_and_take_no_server_down():
    with LoopbackServer("accept") as tsrv, LoopbackServer("http") as hsrv, \
            CheckLoop([LoopTarget("tcp", tcp(), "127.0.0.1", tsrv.port),
                       LoopTarget("http", http(), "127.0.0.1", hsrv.port)]) as loop:
        run_until(loop, lambda rs: len(transitions(rs)) == 2)
        assert (loop.state("tcp"), loop.state("http")) == (UP, UP)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        hog: list[int] = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            try:
                while True:
                    hog.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            starved = loop.run(until=time.monotonic() + 0.3)
        finally:
            for fd in hog:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert starved.inconclusive >= 4 and starved.failed == 0
        assert starved.transitions == []
        assert (loop.state("tcp"), loop.state("http")) == (UP, UP)
        assert loop.health("tcp").last.detail == "emfile" and loop.health("tcp").last.inconclusive
        # Descriptors back: checking is back to normal, a server that stops goes down.
        tsrv.stop()
        reports = run_until(loop, lambda rs: transitions(rs))
    assert [(t.target, t.new, t.reason) for t in transitions(reports)] == [("tcp", DOWN, "refused")]


# --- what cannot run here -----------------------------------------------------------------


@pytest.mark.parametrize("target, match", [
    (LoopTarget("s", HealthCheck(HttpProbe(tls=True)), "127.0.0.1", 443), "'s': a https check"),
    (LoopTarget("s", HealthCheck(ScriptProbe(("true",))), "127.0.0.1", 80), "'s': a ScriptProbe check"),
    (LoopTarget("s", tcp(), "localhost", 80), "'s': address 'localhost' is not an IP address"),
    (LoopTarget("s", tcp(), "127.0.0.1", 0), "'s': port 0 is not 1-65535"),
])
def test_a_target_that_cannot_run_here_is_refused_naming_it(target, match):
    with pytest.raises(ValueError, match=match):
        CheckLoop([LoopTarget("fine", tcp(), "127.0.0.1", 80), target])


def test_a_target_listed_twice_is_refused_naming_it():
    with pytest.raises(ValueError, match="'a': listed twice"):
        CheckLoop([LoopTarget("a", tcp(), "127.0.0.1", 80), LoopTarget("a", tcp(), "127.0.0.1", 81)])


def open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            pass                                        # the listing's own descriptor
    return out


def test_close_cancels_running_checks_and_leaves_no_descriptor_open():
    with LoopbackServer("silent") as srv:
        before = open_fds()
        loop = CheckLoop([LoopTarget(i, http(timeout=5.0), "127.0.0.1", srv.port) for i in range(10)])
        report = loop.run(until=time.monotonic() + 0.1)
        assert report.started == 10 and report.completed == 0
        assert len(open_fds()) >= len(before) + 11      # the epoll, ten sockets (+ the server's ends)
        loop.close()
        # The server's ends (in this process too) close once it reads our close.
        end = time.monotonic() + 2.0
        while open_fds() != before and time.monotonic() < end:
            time.sleep(0.01)
        assert open_fds() == before




# --- targets added, changed and removed between runs (the worker's reloads) -------------


def test_a_target_put_between_runs_is_checked_from_the_next_run():
    with LoopbackServer("accept") as srv, CheckLoop([]) as loop:
        assert loop.run(until=time.monotonic() + 0.05).started == 0
        loop.put(LoopTarget("rs1", tcp(), "127.0.0.1", srv.port))
        reports = run_until(loop, lambda rs: transitions(rs))
    (t,) = transitions(reports)
    assert (t.target, t.new) == ("rs1", UP)
    assert "rs1" in reports[-1].touched


def test_a_target_put_with_a_state_starts_there_and_rise_fall_apply_from_it():
    port = closed_port()
    with CheckLoop([]) as loop:
        loop.put(LoopTarget("rs1", tcp(fall=3), "127.0.0.1", port), UP)
        assert loop.state("rs1") is UP
        reports = run_until(loop, lambda rs: transitions(rs))
    (t,) = transitions(reports)
    assert (t.old, t.new, t.count) == (UP, DOWN, 3)


def connected_to(port: int) -> set[int]:
    """This process's descriptors connected to ``port`` (not the server thread's own
    ends: counting every descriptor raced the thread closing its side)."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=int(name))
        except OSError:
            continue                        # not a socket, or already closed
        try:
            if s.getpeername()[1] == port and s.getsockname()[1] != port:
                out.add(int(name))
        except (OSError, IndexError, TypeError):
            pass
        finally:
            s.detach()
    return out


def test_a_removed_target_is_not_checked_again_and_its_running_check_is_cancelled():
    with LoopbackServer("silent") as srv, CheckLoop([LoopTarget("rs1", http(timeout=5.0), "127.0.0.1",
                                                                srv.port)]) as loop:
        first = loop.run(until=time.monotonic() + 0.1)
        assert (first.started, first.completed) == (1, 0)
        assert len(connected_to(srv.port)) == 1
        assert loop.remove("rs1") and not loop.remove("rs1")
        assert connected_to(srv.port) == set()                      # its socket is closed
        later = loop.run(until=time.monotonic() + 0.2)
        assert (later.started, later.completed) == (0, 0)
        assert "rs1" not in loop and len(loop) == 0


def test_a_new_probe_keeps_the_state_restarts_the_counts_and_drops_the_old_check():
    with LoopbackServer("silent") as silent, LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget("rs1", http(timeout=5.0, initial=UP), "127.0.0.1", silent.port)]) as loop:
        assert loop.run(until=time.monotonic() + 0.1).completed == 0      # hangs on the silent one
        loop.put(LoopTarget("rs1", tcp(rise=2, initial=UP), "127.0.0.1", srv.port))
        assert loop.state("rs1") is UP
        assert (loop.health("rs1").successes, loop.health("rs1").failures) == (0, 0)
        reports = run_until(loop, lambda rs: sum(r.completed for r in rs) >= 2)
    assert transitions(reports) == []
    assert all(r.failed == 0 for r in reports)          # the silent server's check never timed out


def test_new_timing_keeps_the_counts():
    with LoopbackServer("accept") as srv, CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", srv.port)]) as loop:
        run_until(loop, lambda rs: sum(r.completed for r in rs) >= 2)
        before = loop.health("rs1").successes
        loop.put(LoopTarget("rs1", tcp(interval=0.5, rise=4), "127.0.0.1", srv.port))
        assert loop.health("rs1").successes == before and loop.health("rs1").rise == 4


def test_a_target_put_that_cannot_run_here_is_refused_and_changes_nothing():
    with CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", 80)]) as loop:
        with pytest.raises(ValueError, match="target 'rs1': address 'localhost' is not an IP address"):
            loop.put(LoopTarget("rs1", tcp(), "localhost", 80))
        assert loop.due("rs1") is not None and len(loop) == 1


def test_seed_sets_the_state_of_a_target_with_no_result_yet_only():
    with CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", 80)]) as loop:
        assert loop.seed("rs1", UP) and loop.state("rs1") is UP
        assert not loop.seed("nope", UP)


def test_readable_input_ends_the_run_early_and_its_handler_runs():
    r, w = os.pipe()
    got = []
    try:
        with CheckLoop([]) as loop:
            loop.watch_input(r, lambda: got.append(os.read(r, 100)))
            os.write(w, b"hello")
            start = time.monotonic()
            loop.run(until=start + 5.0)
            assert time.monotonic() - start < 1.0
            assert got == [b"hello"]
            start = time.monotonic()
            loop.run(until=start + 0.1)                 # nothing more to read: a full run
            assert time.monotonic() - start >= 0.1
    finally:
        os.close(r)
        os.close(w)


def test_a_run_counts_results_by_kind_and_inconclusive_ones_by_reason():
    port = closed_port()
    with LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget("up", tcp(), "127.0.0.1", srv.port),
                       LoopTarget("refused", tcp(), "127.0.0.1", port)]) as loop:
        report = loop.run(until=time.monotonic() + 0.2)
    assert report.kinds["ok"] >= 1 and report.kinds["fail"] >= 1
    assert len(report.latencies) == report.completed - report.inconclusive
    assert report.touched == {"up", "refused"}


def test_a_new_probe_put_with_a_state_takes_that_state():
    port = closed_port()
    with CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", port)]) as loop:
        run_until(loop, lambda rs: transitions(rs))
        assert loop.state("rs1") is DOWN
        loop.put(LoopTarget("rs1", tcp(timeout=0.7), "127.0.0.1", port), UP)     # the agent's word
        assert loop.state("rs1") is UP
        loop.put(LoopTarget("rs1", tcp(timeout=0.7, interval=0.2), "127.0.0.1", port), DOWN)
        assert loop.state("rs1") is UP                  # timing only: the loop's state is newer


def test_with_one_event_per_wait_every_check_still_ends():
    with LoopbackServer("http") as srv, \
            CheckLoop([LoopTarget(i, http(), "127.0.0.1", srv.port) for i in range(10)], max_events=1) as loop:
        reports = run_until(loop, lambda rs: len(transitions(rs)) == 10)
    assert {t.new for t in transitions(reports)} == {UP}


# --- how long a run lasts (the worker's batches) ------------------------------------------


def test_a_run_ends_hurry_after_its_first_transition_not_at_until():
    port = closed_port()
    with CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", port)]) as loop:
        start = time.monotonic()
        report = loop.run(until=start + 5.0, hurry=0.05)
        took = time.monotonic() - start
    (t,) = report.transitions
    assert t.new is DOWN
    assert 0.05 <= took < SLACK


def test_a_run_with_results_but_no_transition_lasts_until_until():
    with LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget("rs1", tcp(), "127.0.0.1", srv.port)]) as loop:
        run_until(loop, lambda rs: transitions(rs))          # UP: no transition from here on
        start = time.monotonic()
        report = loop.run(until=start + 0.3, hurry=0.01)
        took = time.monotonic() - start
    assert report.completed >= 3 and report.transitions == []
    assert took >= 0.3


def test_a_run_ends_once_enough_results_are_in():
    with LoopbackServer("accept") as srv, \
            CheckLoop([LoopTarget(i, tcp(interval=0.02), "127.0.0.1", srv.port) for i in range(4)]) as loop:
        run_until(loop, lambda rs: len(transitions(rs)) == 4)
        start = time.monotonic()
        report = loop.run(until=start + 5.0, enough=6)
        took = time.monotonic() - start
    # The run ends after the event batch that brought the 6th result: a few more at most.
    assert 6 <= report.completed < 6 + 4
    assert took < SLACK


def test_an_http_server_checked_again_is_judged_by_the_status_line_seen_before(monkeypatch):
    from hadirector.health import probes

    made = []
    real = probes.HttpResponse

    def counting(*args):
        made.append(1)
        return real(*args)

    monkeypatch.setattr(probes, "HttpResponse", counting)
    with LoopbackServer("http", 200) as srv, \
            CheckLoop([LoopTarget("rs1", http(), "127.0.0.1", srv.port)]) as loop:
        reports = run_until(loop, lambda rs: sum(r.completed for r in rs) >= 3)
        assert loop.state("rs1") is UP
        # The first answer went through the parser; those after it by lookup alone.
        assert len(made) == 1
        srv.status = 503                          # a status not seen before: the parser
        reports = run_until(loop, lambda rs: transitions(rs))
    (t,) = transitions(reports)
    assert (t.new, t.reason) == (DOWN, "status 503") and len(made) == 2
