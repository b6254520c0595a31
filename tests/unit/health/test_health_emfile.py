"""A director out of file descriptors takes no healthy server down (issue 13).

A real runner process checks real loopback servers (TCP and HTTP) until they are up,
then lowers its own RLIMIT_NOFILE and opens files until EMFILE: every probe now fails
to get a socket. Those results are inconclusive, so no server goes down; they are
counted and logged at a bounded rate. When the descriptors are freed, checking is
back to normal: a server that really stops is then taken down.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from .servers import http_server

ROOT = Path(__file__).resolve().parents[3]

CHILD = r'''
import asyncio, errno, ipaddress, json, os, resource, sys
import structlog
from hadirector.agent.health_runner import HealthRunner
from hadirector.model import (Config, HealthCheck, HttpProbe, NodeSettings, RealServer,
                              TcpProbe, VirtualService)

structlog.configure(processors=[structlog.processors.add_log_level,
                                structlog.processors.JSONRenderer()],
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))
tcp_port, http_port = int(sys.argv[1]), int(sys.argv[2])
IP = ipaddress.ip_address

def check(probe):
    return HealthCheck(probe, interval=0.05, timeout=1.0, rise=1, fall=1)

vs = VirtualService("web", address=IP("192.0.2.10"), port=80, real_servers=(
    RealServer(IP("127.0.0.1"), tcp_port, check=check(TcpProbe())),
    RealServer(IP("127.0.0.1"), http_port, check=check(HttpProbe(path="/health"))),
))
transitions = []

def say(**kw):
    print(json.dumps(kw), flush=True)

def states(runner):
    snap = runner.snapshot()
    return {"states": [r.state.value for r in snap.servers],
            "checks": [r.checks for r in snap.servers],
            "inconclusive": [r.inconclusive for r in snap.servers],
            "last": [[r.last.detail, r.last.inconclusive] if r.last else None for r in snap.servers],
            "totals": dict(snap.totals.inconclusive), "transitions": list(transitions)}

async def main():
    runner = HealthRunner(Config(node=NodeSettings("emfile"), virtual_services=(vs,)),
                          lambda s, r, new: transitions.append(new.value))
    async with runner:
        while [r.state.value for r in runner.snapshot().servers] != ["up", "up"]:
            await asyncio.sleep(0.02)
        say(phase="up", **states(runner))
        # Exhaust this process's descriptors.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        hog = []
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        say(phase="exhausted", fds=len(hog))
        await asyncio.sleep(1.0)
        say(phase="starved", **states(runner))
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        before = states(runner)["checks"]
        while any(c < b + 5 for c, b in zip(states(runner)["checks"], before)):
            await asyncio.sleep(0.02)
        say(phase="freed", **states(runner))
        line = await asyncio.to_thread(sys.stdin.readline)     # the parent stops the HTTP server
        while runner.snapshot().servers[1].state.value != "down":
            await asyncio.sleep(0.02)
        say(phase="http_stopped", **states(runner))

asyncio.run(main())
'''


async def _next(proc, phase):
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line, f"runner process exited before {phase}: {(await proc.stderr.read()).decode()[-2000:]}"
    msg = json.loads(line)
    assert msg["phase"] == phase, msg
    return msg


async def test_a_runner_out_of_descriptors_takes_no_server_down_and_recovers():
    tcp = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    async with http_server() as (http_port, behaviour):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(tcp_port), str(http_port), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            up = await _next(proc, "up")
            assert up["transitions"] == ["up", "up"]
            exhausted = await _next(proc, "exhausted")
            assert exhausted["fds"] > 0
            starved = await _next(proc, "starved")
            # About 20 checks each in that second: all inconclusive, none a failure.
            assert starved["states"] == ["up", "up"] and starved["transitions"] == ["up", "up"]
            assert min(starved["inconclusive"]) >= 5
            assert starved["totals"].get("emfile", 0) == sum(starved["inconclusive"])
            assert starved["last"] == [["emfile", True], ["emfile", True]]
            freed = await _next(proc, "freed")
            assert freed["states"] == ["up", "up"] and freed["transitions"] == ["up", "up"]
            assert freed["last"] == [["connected", False], ["status 200", False]]
            await behaviour.stop()          # a real failure is seen again once descriptors are back
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            stopped = await _next(proc, "http_stopped")
            assert stopped["states"] == ["up", "down"] and stopped["transitions"] == ["up", "up", "down"]
            assert stopped["last"][1] == ["refused", False]
            await asyncio.wait_for(proc.wait(), 10)
            logs = [json.loads(x) for x in (await proc.stderr.read()).decode().splitlines()
                    if x.startswith("{")]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            tcp.close()
    assert proc.returncode == 0
    inconclusive = [e for e in logs if e["event"] == "health.check_inconclusive"]
    # Two servers, one reason, one second: one line (the rate bound), naming the reason.
    assert len(inconclusive) == 1 and inconclusive[0]["reason"] == "emfile"
    assert inconclusive[0]["level"] == "warning"
    assert not any(e["event"] == "health.server_down" and e["server"].endswith(f":{tcp_port}")
                   for e in logs)
