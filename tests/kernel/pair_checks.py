"""What the pair-lab tests read from a failover report (lab/pairlab.py's
``run_failover``): where failures fell relative to the lab's steps, and the agents' JSON
log events on the lab's monotonic clock."""

from __future__ import annotations

import json
from datetime import datetime

from lab import pairlab  # noqa: F401  (re-exported for the pair-lab test modules)

# A request that started this long before the stop may still be in flight when the
# primary goes; the client gives up on a request after 2 s.
BEFORE = 2.5
# After the backup holds the VIP, clients need its gratuitous ARP and the TCP
# retransmission of anything sent into the gap; allow that long.
AFTER = 3.0


def abs_time(report: dict, t: float) -> float:
    return report["t0"] + t


def failures_outside(report: dict, windows: list[tuple[float, float]], reasons=None) -> list:
    out = []
    for t, why in report["failures"]:
        at = abs_time(report, t)
        if reasons is not None and not any(why.startswith(r) for r in reasons):
            continue
        if not any(a <= at <= b for a, b in windows):
            out.append((round(at - report["times"]["stop"], 2), why))
    return out


def explain(report: dict, outside: list) -> str:
    """Where the failures fell, relative to the stop, beside the lab's steps, the
    client's own start and the stretches it ran late (its stalls, lab/client.py)."""
    t = report["times"]
    stop = t["stop"]
    steps = {k: round(v - stop, 2) for k, v in t.items()}
    stalls = [(round(abs_time(report, at) - stop, 2), late) for at, late in report.get("stalls", ())]
    near = [s for s in stalls if any(f[0] - 3.0 <= s[0] <= f[0] + 3.0 for f in outside)]
    return (f"{len(outside)} of {report['failed']} failures outside the windows; "
            f"steps (s from stop): {steps}; client started at {round(report['t0'] - stop, 2)}; "
            f"rs failure at {round(report.get('rs_fail_at', stop) - stop, 2)}; "
            f"first outside: {outside[:25]}; client stalls near them (s from stop, s late): "
            f"{near[:25]} ({len(stalls)} in all); requests {report['requests']}, ok {report['ok']}")


def failover_windows(report: dict) -> list[tuple[float, float]]:
    t = report["times"]
    windows = [(t["stop"] - BEFORE, t["takeover"] + AFTER)]
    if "takeback" in t:
        # The primary's return moves the VIP once more (preempt). Its window runs from
        # the returning agent's start to its takeover, as the agent's own log times it
        # (polling `ip addr` from outside lags by seconds under emulation). While it
        # starts, its start-up competes with the whole lab for the two emulated CPUs.
        roles = events(report["dir1_log"], "vrrp.role_changed")
        master = max([mono(report, e) for e in roles if e["new"] == "MASTER"], default=t["takeback"])
        windows.append((t["restart"] - BEFORE, max(master, t["takeback"]) + AFTER))
    return windows


def mono(report: dict, event: dict) -> float:
    wall = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return wall - report["wall_minus_mono"]


def events(log: str, name: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            d = json.loads(line)
            if d.get("event") == name:
                out.append(d)
    return out


def assert_outage_connections_survived(report: dict) -> None:
    # Opened through dir2 while dir1 was away: dir1 knows them only through the sync
    # daemon it started on its return, so it must not preempt before it caught up.
    second = report["dir1_log"].split("===== start #")[1]
    held = events(second, "vrrp.preemption_held")
    assert held and held[0]["reason"] == "sync_daemon_catch_up", "the returning primary held preemption"
    o = report["outage"]
    assert o["long_opened"] == o["long_requested"] == 10
    assert o["long_survived"] == 10, o["long_lost"]
