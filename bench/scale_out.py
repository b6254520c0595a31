"""Scale-out control plane on this host: how fast a director leaves the router's FIB.

    .venv/bin/python -m bench.scale_out              # 5 runs per event, ~3 min
    .venv/bin/python -m bench.scale_out --runs 2

The lab of tests/netns/test_scaleout_bgp.py (lab/scaleout.py): a router namespace with
BIRD 2 (ECMP, merge paths, BFD 100 ms x 3) and three directors, each with its own BIRD
(config from ``hadirector bird-config``) and the real agent with a stateful fake IPVS
(this host has no IPVS; the data-plane half -- 0 broken connections when flows move --
is tests/kernel/test_scaleout_traffic.py's). Per event, the time from the cause to the
router's FIB losing that director's next hop (``ip route show VIP`` polled every 20 ms,
so +-20 ms; a cause that is a command -- ``hadirector drain``, ``withdraw`` -- counts its
own Python start-up, as an operator or systemd would see it), then the director is brought back and the next run starts from 3 next hops.

Goals from issue 14: graceful drain <= 50 ms to the router, silent failure <= 400 ms
with BFD.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hadirector.api.cli import control_request
from lab.netns import sh
from lab.scaleout import VIP, Director, ScaleOutLab

START = 60.0
SILENT = ("table inet silent { chain cin { type filter hook input priority -300; policy drop; }; "
          "chain cout { type filter hook output priority -300; policy drop; }; }")


def hadirector(d: Director, *args: str) -> None:
    sh(sys.executable, "-m", "hadirector.cli", *args, "-c", str(d.config), ns=d.ns)


def run(runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        lab = ScaleOutLab(f"bs{os.getpid() % 10000}", Path(tmp), directors=3, net=62)
        ds: list[Director] = []
        try:
            lab.up()
            lab.start_router_bird()
            ds = [Director(lab, i) for i in (1, 2, 3)]
            for d in ds:
                d.start_bird()
                d.start_agent()
            everyone = {d.ip for d in ds}
            lab.wait_next_hops(VIP, everyone, START)
            d = ds[1]                      # the middle one: a cause on d2 only
            rest = everyone - {d.ip}

            def measure(name: str, cause, restore) -> None:
                t0 = time.monotonic()
                cause()
                lab.wait_next_hops(VIP, rest, 30.0)
                results.setdefault(name, []).append((time.monotonic() - t0) * 1000)
                restore()
                lab.wait_next_hops(VIP, everyone, START)

            for _ in range(runs):
                measure("health check fails (interval 0.2 s, fall 1)", lambda: d.healthy.unlink(),
                        lambda: d.healthy.touch())
                # The drain command as the agent gets it (without the CLI's start-up).
                sock = str(d.dir / "state" / "control.sock")
                measure("drain (control socket)", lambda: control_request(sock, "drain", timeout=10),
                        lambda: control_request(sock, "undrain", timeout=10))
                measure("agent SIGTERM (withdraw first)", lambda: d.proc.send_signal(signal.SIGTERM),
                        lambda: (d.proc.wait(timeout=15), d.start_agent()))
                measure("agent kill -9, then ExecStopPost withdraw",
                        lambda: (d.stop_agent(signal.SIGKILL), hadirector(d, "withdraw")),
                        d.start_agent)
                measure("BIRD kill -9", lambda: lab.kill_bird(f"d{d.i}"), d.start_bird)
                measure("silent director (nftables drop), BFD 100 ms x 3",
                        lambda: sh("nft", "-f", "-", ns=d.ns, input=SILENT),
                        lambda: sh("nft", "delete", "table", "inet", "silent", ns=d.ns))
        finally:
            for x in ds:
                x.stop_agent(signal.SIGKILL)
            lab.down()
    return results


def table(results: dict[str, list[float]]) -> str:
    lines = ["| event (on 1 of 3 directors) | runs | min ms | median ms | max ms |", "|---|---|---|---|---|"]
    for name, values in results.items():
        lines.append(f"| {name} | {len(values)} | {min(values):.0f} | {statistics.median(values):.0f} | "
                     f"{max(values):.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(table(run(args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
