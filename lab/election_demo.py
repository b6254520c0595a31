"""VRRP election demo (no IPVS needed): two hadirector agents elect a master, the
primary is stopped, the backup takes the VIP, the primary returns and takes it back.

Everything runs in network namespaces created here (prefix "ve<pid>dm") on a bridge in
its own "switch" namespace, and is torn down at the end, also on Ctrl-C.

Usage: netns-lab/election-demo [--stop term|kill] [--advert SECONDS]
   or: .venv/bin/python -m lab.election_demo ... (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from hadirector.vrrp.timers import master_down_interval, skew_time
from lab.agents import AgentProc, instance_config, wait_for
from lab.lan import Lan, sh

T0 = time.monotonic()


def step(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def holder(lan: Lan) -> str:
    got = [name for i, name in ((1, "primary"), (2, "backup")) if lan.has_ip(i, lan.vip4())]
    return ", ".join(got) or "nobody"


def mac(lan: Lan, i: int) -> str:
    return sh("cat", "/sys/class/net/eth0/address", ns=lan.ns(i)).stdout.strip()


def client_entry(lan: Lan) -> str:
    out = sh("ip", "neigh", "show", str(lan.vip4()), "dev", "eth0", ns=lan.ns(3)).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else "(none)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stop", choices=("term", "kill"), default="term",
                    help="stop the primary gracefully (SIGTERM) or kill -9 it")
    ap.add_argument("--advert", type=float, default=0.2, help="advert interval, seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("election-demo: needs root (network namespaces)", file=sys.stderr)
        return 2

    lan = Lan("dm", nodes=3, net=99)
    work = Path(tempfile.mkdtemp(prefix="ve-demo-"))
    primary = AgentProc(lan, 1, work, [instance_config(lan, priority=150, advert=args.advert)])
    backup = AgentProc(lan, 2, work, [instance_config(lan, priority=100, advert=args.advert)])
    try:
        step(f"building the LAN: switch {lan.switch}, primary {lan.ip4(1)}, backup {lan.ip4(2)}, "
             f"client {lan.ip4(3)}; VIP {lan.vip4()}")
        lan.up()
        step(f"starting the primary (priority 150) and the backup (priority 100), "
             f"advert interval {args.advert:g}s")
        primary.start()
        wait_for(lambda: primary.role() == "MASTER", 20, 0.05, "primary MASTER")
        backup.start()
        wait_for(lambda: backup.role() == "BACKUP" and backup.state()["instances"]["vi_1"]["master"],
                 20, 0.05, "backup following the primary")
        step(f"elected: primary={primary.role()}, backup={backup.role()}; VIP held by: {holder(lan)}")
        sh("ping", "-c1", "-W2", str(lan.vip4()), ns=lan.ns(3))
        step(f"client pinged the VIP; its ARP entry points at {client_entry(lan)} "
             f"(primary's MAC {mac(lan, 1)})")

        if args.stop == "term":
            bound, what = skew_time(100, args.advert), "Skew_Time (priority-0 advert)"
            step("stopping the primary with SIGTERM: it sends priority 0 and releases the VIP")
            t = time.monotonic()
            primary.signal(signal.SIGTERM)
        else:
            bound, what = master_down_interval(100, args.advert), "Master_Down_Interval"
            step("killing the primary with kill -9: no goodbye, its VIP stays behind")
            t = time.monotonic()
            primary.kill()
        wait_for(lambda: lan.has_ip(2, lan.vip4()), 10 + 5 * args.advert, 0.01, "backup holding the VIP")
        took = time.monotonic() - t
        step(f"backup took over in {took * 1000:.0f} ms (RFC 5798 bound: {what} = {bound * 1000:.0f} ms); "
             f"VIP held by: {holder(lan)}")
        wait_for(lambda: client_entry(lan) == mac(lan, 2), 3, 0.02, "client ARP entry moved")
        step(f"gratuitous ARP moved the client's entry to {client_entry(lan)} (backup's MAC)")

        step("restarting the primary: a higher priority preempts the backup")
        primary.start()
        wait_for(lambda: primary.role() == "MASTER" and not lan.has_ip(2, lan.vip4()), 20, 0.05,
                 "primary MASTER again")
        if args.stop == "kill":
            step("(on start-up the primary first removed the VIP its killed predecessor left)")
        step(f"primary={primary.role()}, backup={backup.role()}; VIP held by: {holder(lan)}")
        step("done")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        primary.stop()
        backup.stop()
        lan.down()
        step("namespaces removed")


if __name__ == "__main__":
    sys.exit(main())
