"""Traffic for the scale-out lab with IPVS: DR real servers that answer every line of a
long-lived connection with their name, and a client that keeps M such connections
talking while directors fail, stop and join.

A connection is *broken* when a line sent on it gets no answer with the name it started
with: a reset, EOF, an error, another server's name, or no answer within the client's
``--timeout`` (tests/kernel/test_scaleout_traffic.py's rule). The *stall* of a line is
the time from sending it to its answer: a line caught in a director's outage waits for
the router to move the flow and for TCP to retransmit.

Both sides are stdlib only and few processes (a Python start costs seconds under TCG):

* ``python -m lab.scaleout_flows serve --port 80 NS=NAME ...`` -- one process for every
  real server: it opens each listening socket inside that server's namespace (a socket
  stays in the namespace it was made in) and serves them all from one event loop.
* ``python -m lab.scaleout_flows client --src ADDR VIP`` (run in the client's namespace)
  -- commands on stdin, one JSON answer per line on stdout (``Flows`` drives it):

  ``open N PORT0``   N connections from source ports PORT0..; ``[[port, name|"broken: ..."], ...]``
  ``start SECONDS``  every connection sends a line every SECONDS (staggered); ``[]``
  ``status``         ``[{port, name, broken, answers, last_ok, stall}, ...]``; ``stall``: the
                     longest stall since the previous ``status`` (a line still unanswered
                     counts with its age)
  ``stop``           no more lines (answers still due are awaited); ``[]``

The client sends only to the VIP it is given, which lives inside the lab's namespaces;
it stops by itself when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from lab import ROOT

TICK = 0.05        # s between looks at what is due to send or has timed out


# --- the real servers ----------------------------------------------------------------------


async def _serve(listeners: list[tuple[str, socket.socket]]) -> None:
    def handler(name: bytes):
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(name)
                await writer.drain()
                while await reader.readline():
                    writer.write(name)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
        return serve

    servers = [await asyncio.start_server(handler(f"{name}\n".encode()), sock=s, backlog=512)
               for name, s in listeners]
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            s.close()


def serve(port: int, specs: list[str]) -> None:
    from lab.netns import inside

    listeners = []
    for spec in specs:
        ns, _, name = spec.partition("=")
        with inside(ns) if ns else contextlib.nullcontext():     # "=NAME": this namespace
            s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(512)
        s.setblocking(False)
        listeners.append((name or ns, s))
    asyncio.run(_serve(listeners))


# --- the client ------------------------------------------------------------------------------


@dataclass
class _Conn:
    port: int
    sock: socket.socket
    name: str
    broken: str | None = None
    pending_since: float | None = None
    next_at: float = 0.0
    answers: int = 0
    last_ok: float = 0.0
    stall: float = 0.0
    buf: bytes = b""


class Pinger:
    """The client's connections and the loop that keeps them talking (one thread)."""

    def __init__(self, vip: str, src: str, port: int, timeout: float) -> None:
        self.vip, self.src, self.port, self.timeout = vip, src, port, timeout
        self.conns: dict[int, _Conn] = {}
        self.lock = threading.Lock()
        self.interval: float | None = None
        self.sel = selectors.DefaultSelector()
        self.thread: threading.Thread | None = None

    def open(self, n: int, port0: int) -> list:
        out = []
        with self.lock:
            for port in range(port0, port0 + n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.settimeout(self.timeout)
                try:
                    s.bind((self.src, port))
                    s.connect((self.vip, self.port))
                    name = _read_line(s)
                except OSError as e:
                    s.close()
                    out.append([port, f"broken: {type(e).__name__}: {e}"])
                    continue
                s.setblocking(False)
                now = time.monotonic()
                c = _Conn(port, s, name, last_ok=now)
                self.conns[port] = c
                self.sel.register(s, selectors.EVENT_READ, c)
                out.append([port, name])
        return out

    def start(self, interval: float) -> None:
        with self.lock:
            self.interval = interval
            now = time.monotonic()
            live = [c for c in self.conns.values() if c.broken is None]
            for k, c in enumerate(live):         # staggered over one interval
                c.next_at = now + interval * k / max(1, len(live))
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.interval = None

    def status(self) -> list:
        now = time.monotonic()
        out = []
        with self.lock:
            for c in self.conns.values():
                stall = max(c.stall, now - c.pending_since if c.pending_since is not None else 0.0)
                out.append({"port": c.port, "name": c.name, "broken": c.broken, "answers": c.answers,
                            "last_ok": c.last_ok, "stall": round(stall, 4)})
                c.stall = 0.0
        return out

    def _sweep(self, now: float) -> None:
        for c in self.conns.values():
            if c.broken is not None:
                continue
            if c.pending_since is not None and now - c.pending_since > self.timeout:
                self._break(c, f"timeout: no answer within {self.timeout:g} s")
            elif c.pending_since is None and self.interval is not None and now >= c.next_at:
                try:
                    c.sock.send(b"ping\n")
                    c.pending_since = now
                except OSError as e:
                    self._break(c, f"{type(e).__name__}: {e}")

    def _break(self, c: _Conn, why: str) -> None:
        c.broken = why
        c.pending_since = None
        self.sel.unregister(c.sock)
        c.sock.close()

    def _loop(self) -> None:
        # Sends and time-outs are looked at every TICK, not at each answer: the loop
        # shares an emulated guest's CPU with the agents (TCG is 10-20x slower).
        sweep = 0.0
        while True:
            with self.lock:
                now = time.monotonic()
                if now >= sweep:
                    sweep = now + TICK
                    self._sweep(now)
            events = self.sel.select(timeout=max(0.0, sweep - time.monotonic()))
            with self.lock:
                now = time.monotonic()
                for key, _ in events:
                    c: _Conn = key.data
                    if c.broken is not None:
                        continue
                    try:
                        chunk = c.sock.recv(256)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        self._break(c, f"{type(e).__name__}: {e}")
                        continue
                    if not chunk:
                        self._break(c, "EOF")
                        continue
                    c.buf += chunk
                    while b"\n" in c.buf and c.broken is None:
                        line, c.buf = c.buf.split(b"\n", 1)
                        name = line.decode(errors="replace").strip()
                        if name != c.name:
                            self._break(c, f"answered by {name!r}")
                        elif c.pending_since is not None:
                            c.stall = max(c.stall, now - c.pending_since)
                            c.pending_since = None
                            c.answers += 1
                            c.last_ok = now
                            c.next_at = now + (self.interval or 0.0)


def _read_line(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionError("EOF before the server's name")
        buf += chunk
    return buf.decode().strip()


def client(vip: str, src: str, port: int, timeout: float) -> None:
    p = Pinger(vip, src, port, timeout)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "open":
            out = p.open(int(cmd[1]), int(cmd[2]))
        elif cmd[0] == "start":
            p.start(float(cmd[1]))
            out = []
        elif cmd[0] == "stop":
            p.stop()
            out = []
        elif cmd[0] == "status":
            out = p.status()
        else:
            out = {"error": f"unknown command {cmd[0]!r}"}
        print(json.dumps(out), flush=True)


# --- the driver (in the test or demo process) ---------------------------------------------


@dataclass
class FlowState:
    port: int
    name: str                 # the real server that answered first
    broken: str | None
    answers: int
    last_ok: float            # time.monotonic() of the last right answer
    stall: float              # longest stall since the previous status (s)


@dataclass
class Flows:
    """The client process in namespace ``ns`` (None: this one), driven over its
    stdin/stdout."""

    ns: str | None
    vip: str
    src: str
    port: int = 80
    timeout: float = 15.0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        where = ["ip", "netns", "exec", self.ns] if self.ns else []
        self.proc = subprocess.Popen(
            [*where, sys.executable, "-m", "lab.scaleout_flows", "client", "--src", self.src,
             "--port", str(self.port), "--timeout", str(self.timeout), self.vip],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))

    def ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the lab client exited ({self.proc.poll()}) on {line!r}")
        return json.loads(answer)

    def open(self, n: int, port0: int) -> dict[int, str]:
        return {port: name for port, name in self.ask(f"open {n} {port0}")}

    def start(self, interval: float) -> None:
        self.ask(f"start {interval}")

    def stop(self) -> None:
        self.ask("stop")

    def status(self) -> dict[int, FlowState]:
        return {s["port"]: FlowState(**s) for s in self.ask("status")}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_servers(port: int, servers: dict[str, str]) -> subprocess.Popen:
    """The one process serving every real server (``{namespace: name}``; namespace
    ``""``: this one), once ready."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lab.scaleout_flows", "serve", "--port", str(port),
                             *(f"{ns}={name}" for ns, name in servers.items())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"real servers did not start: {line} {proc.stderr.read()[-2000:]}")
    return proc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lab.scaleout_flows", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=80)
    s.add_argument("servers", nargs="+", metavar="NS=NAME")
    c = sub.add_parser("client")
    c.add_argument("--src", required=True)
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--timeout", type=float, default=15.0)
    c.add_argument("vip")
    a = p.parse_args(argv)
    if a.role == "serve":
        serve(a.port, a.servers)
    else:
        client(a.vip, a.src, a.port, a.timeout)


if __name__ == "__main__":
    main()
