"""A slowloris client for the API tests: hold many idle TCP connections to one port.

Run it as an unprivileged user (the tests use ``setpriv --reuid=65534``) inside the
agent's namespace::

    python api_flood.py --port 9110 --connections 1100 --duration 15

It keeps ``--connections`` sockets open to ``--host:--port``: each sends the first
line of a request and then one header byte per second, never finishing the headers
(slowloris). A socket the server closes is reopened at once, so the pressure stays on
for ``--duration`` seconds; then everything is closed and one JSON line of counters
is printed. Bounded by construction: the loop ends at the deadline whatever the
server does, and never opens more than ``--max-opens`` sockets in all.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--max-opens", type=int, default=200_000)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 64
    if soft < want:     # an unprivileged process may raise its soft limit up to the hard one
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    sel = selectors.DefaultSelector()
    conns: dict[socket.socket, list] = {}      # socket -> [next trickle time, head sent]
    stats = {"opened": 0, "connect_failed": 0, "closed_by_server": 0, "peak_open": 0,
             "uid": os.getuid()}
    deadline = time.monotonic() + args.duration

    def open_one() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        stats["opened"] += 1
        try:
            s.connect((args.host, args.port))
        except BlockingIOError:
            pass
        except OSError:
            stats["connect_failed"] += 1
            s.close()
            return
        conns[s] = [time.monotonic() + 0.2, False]
        sel.register(s, selectors.EVENT_READ)

    def drop(s: socket.socket) -> None:
        sel.unregister(s)
        del conns[s]
        s.close()

    while time.monotonic() < deadline:
        while len(conns) < args.connections and stats["opened"] < args.max_opens:
            open_one()
        stats["peak_open"] = max(stats["peak_open"], len(conns))
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:      # closed (or answered and closed) by the server
                stats["closed_by_server"] += 1
                drop(s)
        now = time.monotonic()
        for s, st in list(conns.items()):
            if st[0] > now:
                continue
            # First a request line and an unfinished header, then one byte a second.
            chunk = b"a" if st[1] else b"GET /status HTTP/1.1\r\nHost: x\r\nX-a: "
            try:
                s.send(chunk)
                st[1] = True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno != errno.ENOTCONN:     # still connecting: try again later
                    stats["closed_by_server"] += 1
                    drop(s)
                    continue
            st[0] = now + 1.0
    for s in list(conns):
        drop(s)
    out = stats
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
