"""Invariants of the director pair, checked from outside the agents after a fault.

What the namespaces show, not what an agent says: who holds the VIP is ``ip addr`` in
each director's namespace; the client reaching the VIP is a real request from the
client's namespace; a lost connection is the client's report. Only "status agrees
with the kernel" reads the agent (its ``state.json``) — to hold it against the kernel.

Each check returns ``Violation(kind, detail)`` values (an empty list: the invariant
holds), so tests assert ``== []`` and a benchmark counts them by kind.

Bounds (RFC 5798): a backup takes over within Master_Down_Interval = 3 ×
Master_Adver_Interval + Skew_Time, Skew_Time = (256 − Priority) × Master_Adver_Interval
/ 256 (6.1, 6.4.2); a returning higher-priority router with preempt takes back on its
first advert after its own master-down wait (6.4.2, 6.4.3). ``master_down`` computes it.

Connection survival. With IPVS and sync on (kernel lab, modes dr/nat), established
connections survive every fault after which one director ends up forwarding and whose
connections were synced before it: link loss, power-off, SIGSTOP, restart mid-takeover
(if the restarted agent is master before the client's timeout), spoofed high priority
and a spoofed huge interval once bounded (the outage stays below TCP's retransmission
limit), loss/delay. They cannot survive: a connection opened less than one sync refresh
before the fault (the standby never learnt it); an outage longer than the client's
retransmission timeout (a 40.95 s spoofed interval adopted unbounded: ~123 s with no
master); a both-way partition that lasts, where both directors hold the VIP and the
LAN's ARP caches split the clients. In the VRRP-only host mode there is no sync at all — each
director serves the VIP itself — so a connection survives exactly the faults where the
VIP must not move (second agent, bad reload, API flood, starvation, light loss).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lab import lan, pairlab
from lab.progress import Pacer, ProgressLine, wait_line

# Transitions an advert causes: the event must name the peer (address and priority).
ADVERT_REASONS = ("higher_priority_received", "priority_zero_received", "preempted_by_peer")


@dataclass(frozen=True)
class Violation:
    kind: str        # one_holder, status_disagrees, client_unreached, connection_lost,
    detail: str      # transition_unlogged, cause_missing, peer_unnamed, not_converged


@dataclass(frozen=True)
class Convergence:
    ok: bool
    seconds: float                    # from ``since`` until the pair was (last) right
    holders: tuple[str, ...]
    bound: float
    violations: tuple[Violation, ...] = field(default=())


def master_down(advert: float, priority: int) -> float:
    """RFC 5798 6.1: 3 × Master_Adver_Interval + (256 − Priority) × interval / 256."""
    return 3 * advert + (256 - priority) * advert / 256


# After convergence, the client's ARP entry for the VIP follows the holder within this
# (the holder's gratuitous ARP goes out with its first advert; 1 s of poll and delivery).
ARP_BOUND = 1.0


def holders(lab: pairlab.Lab) -> list[str]:
    return [d.name for d in lab.directors if d.holds_vip()]


_STATE_DIRS: dict[str, Path] = {}     # config text -> its state_dir (parsed once)


def state_dir(d: pairlab.Director) -> Path | None:
    import yaml
    if d.kind != "hadirector":
        return None
    # Polled every 20 ms by converge(): a YAML parse each time costs the emulated guest
    # CPU that the agents under test need.
    text = d.config.read_text()
    if text not in _STATE_DIRS:
        _STATE_DIRS[text] = Path(yaml.safe_load(text)["node"]["state_dir"])
    return _STATE_DIRS[text]


def agent_role(lab: pairlab.Lab, name: str) -> str | None:
    """The role the director's agent reports (state.json), or None if it has none or
    no agent runs."""
    d = lab.director_named(name)
    if d.proc is None or d.proc.poll() is not None:
        return None
    sd = state_dir(d)
    if sd is None:
        return None
    try:
        state = json.loads((sd / "state.json").read_text())
    except (OSError, ValueError):
        return None
    insts = state.get("instances", {})
    return next(iter(insts.values()), {}).get("state") if insts else None


def status_agrees(lab: pairlab.Lab) -> list[Violation]:
    """Each running agent's role agrees with its kernel: MASTER iff it holds the VIP."""
    out = []
    for d in lab.directors:
        role = agent_role(lab, d.name)
        if role is None:
            continue
        held = d.holds_vip()
        if (role == "MASTER") != held:
            out.append(Violation("status_disagrees",
                                 f"{d.name} says {role} but its kernel {'holds' if held else 'lacks'} the VIP"))
    return out


def one_holder(lab: pairlab.Lab, expect: str | None = None) -> list[Violation]:
    h = holders(lab)
    if len(h) != 1:
        return [Violation("one_holder", f"VIP {lan.VIP} held by {h or 'nobody'}")]
    if expect is not None and h != [expect]:
        return [Violation("one_holder", f"VIP {lan.VIP} held by {h[0]}, expected {expect}")]
    return []


def client_reaches_vip(lab: pairlab.Lab, timeout: float = 2.0) -> str | None:
    """One HTTP request from the client's namespace to the VIP; the name of whoever
    answered, or None."""
    r = lan.sh("curl", "-s", "-m", f"{timeout:g}", f"http://{lan.VIP}/",
                    ns=lab.ns("client"), check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def client_check(lab: pairlab.Lab, expect: str | None = None, tries: int = 3) -> list[Violation]:
    h = holders(lab)
    for _ in range(tries):
        served = client_reaches_vip(lab)
        if served is not None and (expect or (h[0] if len(h) == 1 else served)) == served:
            return []
        time.sleep(0.2)
    return [Violation("client_unreached", f"client got {served!r} from {lan.VIP}; holders {h}")]


def converge(lab: pairlab.Lab, bound: float, expect: str | None = None, since: float | None = None,
             stable: float = 0.0) -> Convergence:
    """Wait until exactly one director holds the VIP (``expect`` if given) and the
    other's status agrees with its kernel, for ``stable`` s in a row, at most ``bound``
    s after ``since`` (monotonic; default now). The time is from ``since`` to the start
    of the good stretch."""
    since = time.monotonic() if since is None else since
    deadline = since + bound + stable
    good_from: float | None = None
    out = ProgressLine(prefix="[lab] ")
    pacer = Pacer(tty=out.tty, start=since)
    try:
        while True:
            now = time.monotonic()
            bad = one_holder(lab, expect) + status_agrees(lab)
            if not bad:
                good_from = now if good_from is None else good_from
                if now - good_from >= stable:
                    return Convergence(good_from - since <= bound, good_from - since, tuple(holders(lab)), bound)
            else:
                good_from = None
            if now >= deadline:
                return Convergence(False, now - since, tuple(holders(lab)), bound,
                                   tuple(bad) + (Violation("not_converged",
                                                           f"not converged within {bound:.2f}s: "
                                                           + "; ".join(v.detail for v in bad)),))
            if pacer.due(now):
                out.show(wait_line(f"convergence ({'; '.join(v.detail for v in bad) or 'stable so far'})",
                                   now - since, bound + stable))
            time.sleep(0.02)
    finally:
        out.end()   # a line rewritten in place on a terminal ends here


def log_events(d: pairlab.Director, since_wall: float = 0.0, event: str | None = None) -> list[dict]:
    out = []
    try:
        text = d.log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if event is not None and e.get("event") != event:
            continue
        ts = e.get("timestamp")
        if ts and datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() < since_wall:
            continue
        out.append(e)
    return out


def _names_an_address(e: dict) -> bool:
    for k, v in e.items():
        if k in ("timestamp", "event", "level", "logger_name"):
            continue
        for word in str(v).replace(",", " ").replace("=", " ").split():
            try:
                ipaddress.ip_address(word.strip("'\"()[]"))
                return True
            except ValueError:
                pass
    return False


def transitions_logged(lab: pairlab.Lab, since_wall: float, before: list[str] | None = None) -> list[Violation]:
    """Every role change since ``since_wall`` carries its cause; one an advert caused
    names the peer's address; and a director whose VIP ownership changed (``before``
    against now) logged a role change."""
    out = []
    now_holding = holders(lab)
    for d in lab.directors:
        if d.kind != "hadirector" or d.proc is None:
            continue           # keepalived logs another way; a powered-off host logs nothing
        events = log_events(d, since_wall, "vrrp.role_changed")
        for e in events:
            if not e.get("reason"):
                out.append(Violation("cause_missing", f"{d.name}: {e.get('old')} -> {e.get('new')} without a reason"))
            elif e["reason"] in ADVERT_REASONS and not _names_an_address(e):
                out.append(Violation("peer_unnamed", f"{d.name}: {e.get('old')} -> {e.get('new')} "
                                                     f"reason={e['reason']} does not name the peer"))
        if before is not None and (d.name in before) != (d.name in now_holding) and not events:
            out.append(Violation("transition_unlogged",
                                 f"{d.name} {'lost' if d.name in before else 'took'} the VIP; no vrrp.role_changed logged"))
    return out


def connections_survived(report: dict) -> list[Violation]:
    """From a client report (client.py): every long-lived connection opened survived."""
    out = [Violation("connection_lost", f"at {t:.2f}s on {server}: {why}") for t, server, why in report["long_lost"]]
    if report["long_opened"] < report["long_requested"]:
        out.append(Violation("connection_lost",
                             f"only {report['long_opened']} of {report['long_requested']} opened"))
    return out


def _mac(lab: pairlab.Lab, name: str) -> str:
    return lan.sh("cat", "/sys/class/net/eth0/address", ns=lab.ns(name), check=False).stdout.strip()


def arp_follows(lab: pairlab.Lab, bound: float) -> list[Violation]:
    """The client's ARP entry for the VIP names the holder's MAC within ``bound`` s.
    A master that stays MASTER through a fault (SIGSTOP, a partition) while the peer
    took over and sent gratuitous ARP must announce itself again when it hears the
    peer's lower priority, or the LAN keeps sending the VIP's traffic to the peer:
    it works while the peer forwards it, and fails when the peer goes away."""
    deadline = time.monotonic() + bound
    while True:
        h = holders(lab)
        out = lan.sh("ip", "neigh", "show", lan.VIP, ns=lab.ns("client"), check=False).stdout.split()
        mac = out[out.index("lladdr") + 1] if "lladdr" in out else None
        if len(h) != 1 or mac is None or mac == _mac(lab, h[0]):
            return []
        if time.monotonic() >= deadline:
            owner = next((d.name for d in lab.directors if _mac(lab, d.name) == mac), mac)
            return [Violation("arp_stale", f"client's ARP entry for {lan.VIP} points at {owner}, "
                                               f"{h[0]} holds it ({bound:.1f}s after convergence)")]
        time.sleep(0.1)


def check(lab: pairlab.Lab, mark: dict, bound: float, expect: str | None = None,
          before: list[str] | None = None, stable: float = 0.0) -> tuple[Convergence, list[Violation]]:
    """All the invariants after a fault whose (last) mark is ``mark``: convergence
    within ``bound`` of it, the client reaching the holder, every transition logged
    with its cause."""
    conv = converge(lab, bound, expect, since=mark["mono"], stable=stable)
    v = list(conv.violations)
    if conv.ok:
        v += client_check(lab, expect)
        v += arp_follows(lab, ARP_BOUND)
    v += transitions_logged(lab, mark["wall"] - 1.0, before)
    return conv, v


def watch(lab: pairlab.Lab, seconds: float, interval: float = 0.05) -> list[tuple[float, tuple[str, ...]]]:
    """Sample who holds the VIP every ``interval`` for ``seconds``: (monotonic, holders)
    at each change (the first sample included)."""
    out: list[tuple[float, tuple[str, ...]]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        h = tuple(holders(lab))
        if not out or out[-1][1] != h:
            out.append((time.monotonic(), h))
        time.sleep(interval)
    return out


def vip_stayed(samples: list[tuple[float, tuple[str, ...]]], name: str) -> list[Violation]:
    """The VIP never left ``name`` and nobody else held it (a fault that must not move it)."""
    return [Violation("vip_moved", f"at {t:.2f} held by {list(h) or 'nobody'} instead of {name} only")
            for t, h in samples if h != (name,)]


def took_over(lab: pairlab.Lab, name: str, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` (monotonic) until ``name`` was seen holding the VIP — the
    time of the poll that saw it, taken before the poll — or None within ``timeout``."""
    while True:
        t = time.monotonic()
        if name in holders(lab):
            return t - since
        if t - since > timeout:
            return None
        time.sleep(0.02)
