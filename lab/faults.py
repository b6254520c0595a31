"""The fault injector of the director-pair lab, shared by tests, the demo and benchmarks.

Every fault is a function over a ``pairlab.Lab`` (built, directors started) that acts
from outside the agents — on links, namespaces, processes, nftables, qdiscs — and
records what it did with ``lab.mark`` (wall clock, which agent logs carry, and the
monotonic clock, which the client report carries). Each has its undo: ``link_up`` for
``link_down``, ``power_on`` for ``power_off``, ``heal`` for ``partition``,
``clear_netem`` for ``netem``; the others end by themselves (``cpu_starve``, ``sigstop``,
``api_flood``) or restore what they changed (``bad_reload``). ``heal_all`` undoes every
network fault at once, so a test can leave the lab clean whatever failed.

What needs which kernel: everything here works in host namespaces except ``netem``
(this host's kernel has no sch_netem; the kernel lab's has) and IPVS state (modes
dr/nat). See invariants.py for what is checked after each fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import lan, pairlab
from lab.netns import terminate

VRRP_PROTO = 112
VRRP_GROUP = "224.0.0.18"
NFT_TABLE = "faultlab"


class FaultError(RuntimeError):
    """A fault could not be injected (what, where and why in the message)."""


def _sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = lan.sh(*argv, ns=ns, check=False)
    if check and r.returncode != 0:
        where = f" in {ns}" if ns else ""
        raise FaultError(f"{' '.join(argv)}{where} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _topo(lab: pairlab.Lab) -> lan.Topology:
    return lab.topo or lan.build(lab.mode, lab.prefix)


def _director(lab: pairlab.Lab, name: str) -> pairlab.Director:
    try:
        return lab.director_named(name)
    except StopIteration:
        raise FaultError(f"no director {name!r} in the lab (have {[d.name for d in lab.directors]})") from None


def _address(lab: pairlab.Lab, name: str) -> str:
    addr = _topo(lab).node(name).front
    assert addr is not None
    return addr


def _pids(ns: str) -> list[int]:
    return [int(p) for p in _sh("ip", "netns", "pids", ns, check=False).stdout.split()]


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(d: pairlab.Director) -> None:
    """Collect the exit status of the director's processes we started, so no zombie
    keeps a pid (keepalived's pid files, `ip netns pids`) after a kill."""
    for p in (d.proc, d.service):
        if p is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


# --- links ---------------------------------------------------------------------------


def _link(lab: pairlab.Lab, name: str, side: str) -> tuple[str, str | None]:
    """(interface, namespace) of the director's front link on ``side``: "switch" is the
    bridge port (down there = carrier loss inside, as a pulled cable or a dead switch
    port), "inside" is the director's own eth0 (an admin down on the host)."""
    node = _topo(lab).node(name)
    outer, inner = lan.links(_topo(lab), node)[0]
    if side == "switch":
        return outer, _topo(lab).switch
    if side == "inside":
        return inner, node.ns
    raise FaultError(f"link side must be 'switch' or 'inside', got {side!r}")


def link_down(lab: pairlab.Lab, name: str, side: str = "switch") -> dict:
    dev, ns = _link(lab, name, side)
    _sh("ip", "link", "set", dev, "down", ns=ns)
    return lab.mark(f"fault: {name} link down ({side} side, {dev})", fault="link_down", node=name, side=side)


def link_up(lab: pairlab.Lab, name: str, side: str = "switch") -> dict:
    dev, ns = _link(lab, name, side)
    _sh("ip", "link", "set", dev, "up", ns=ns)
    return lab.mark(f"heal: {name} link up ({side} side, {dev})", fault="link_up", node=name, side=side)


def flap(lab: pairlab.Lab, name: str, count: int = 1, down: float = 2.0, up: float = 0.5,
         side: str = "switch") -> list[dict]:
    """``count`` times: link down for ``down`` s, then up for ``up`` s (the last up is
    not waited for). Returns the marks, down and up alternating."""
    marks = []
    for i in range(count):
        marks.append(link_down(lab, name, side))
        time.sleep(down)
        marks.append(link_up(lab, name, side))
        if i < count - 1:
            time.sleep(up)
    return marks


# --- power ---------------------------------------------------------------------------


def power_off(lab: pairlab.Lab, name: str) -> float:
    """A dead host at one instant: every process in the director's namespace stopped,
    its links deleted (its kernel neither answers for nor forwards to the VIP any more:
    the VIP and routes went with the interfaces), then every process killed. SIGSTOP
    first, so nothing reacts to a sibling's death (keepalived's children would send a
    priority-0 advert). Returns the wall time of the instant (after the stop, before
    the links go: from there on the host neither sends nor acts)."""
    d = _director(lab, name)
    topo = _topo(lab)
    node = topo.node(name)
    pids = _pids(node.ns)
    _signal_all(pids, signal.SIGSTOP)
    rec = lab.mark(f"fault: {name} powered off ({len(pids)} processes, links removed)",
                   fault="power_off", node=name)
    for outer, _inner in lan.links(topo, node):
        # Deleting the switch side deletes the pair: eth0 vanishes in the director.
        _sh("ip", "link", "del", outer, ns=topo.switch, check=False)
    _signal_all(pids, signal.SIGKILL)
    _reap(d)
    d.proc = None
    d.service = None
    return rec["wall"]


def power_on(lab: pairlab.Lab, name: str, start_agent: bool = True) -> dict:
    """Boot the director again: its links and addresses as lan.up made them, an
    empty IPVS table and no sync daemon (a fresh kernel), the VIP's server (vrrp mode),
    then the agent."""
    d = _director(lab, name)
    topo = _topo(lab)
    node = topo.node(name)
    if d.proc is not None and d.proc.poll() is None:
        raise FaultError(f"power_on {name}: its agent (pid {d.proc.pid}) is running; power_off first")
    lan.attach(topo, node)
    if lab.mode != "vrrp":
        _sh("ipvsadm", "-C", ns=node.ns, check=False)
        for state in ("master", "backup"):
            _sh("ipvsadm", "--stop-daemon", state, ns=node.ns, check=False)
    else:
        d.start_service(lab.results)
    rec = lab.mark(f"heal: {name} powered on", fault="power_on", node=name)
    if start_agent:
        d.start()
    return rec


# --- partition -----------------------------------------------------------------------

_DIRECTIONS = ("both", "dir1->dir2", "dir2->dir1")


def partition(lab: pairlab.Lab, direction: str = "both") -> dict:
    """Drop VRRP between the directors with nftables, in the receiver's namespace:
    "dir1->dir2" drops dir1's adverts at dir2 (dir2 stops hearing the master, dir1
    still hears dir2), "both" drops each way. Only protocol 112 from the peer's
    address: the client's traffic and everything else still flows."""
    if direction not in _DIRECTIONS:
        raise FaultError(f"partition direction must be one of {', '.join(_DIRECTIONS)}, got {direction!r}")
    pairs = [("dir1", "dir2"), ("dir2", "dir1")] if direction == "both" else [tuple(direction.split("->"))]
    for src, dst in pairs:
        ns = lab.ns(dst)
        _sh("nft", "add", "table", "inet", NFT_TABLE, ns=ns)
        # Before anything else on input (priority raw): the raw VRRP socket never sees it.
        _sh("nft", "add", "chain", "inet", NFT_TABLE, "input",
            "{ type filter hook input priority -300; }", ns=ns)
        _sh("nft", "add", "rule", "inet", NFT_TABLE, "input",
            "ip", "saddr", _address(lab, src), "ip", "protocol", str(VRRP_PROTO), "counter", "drop", ns=ns)
    return lab.mark(f"fault: VRRP partition {direction}", fault="partition", direction=direction)


def dropped(lab: pairlab.Lab, name: str) -> int:
    """Packets the partition dropped at ``name`` so far (0 if none is in place)."""
    out = _sh("nft", "list", "table", "inet", NFT_TABLE, ns=lab.ns(name), check=False).stdout
    return sum(int(w.split()[0]) for w in out.split("counter packets ")[1:]) if out else 0


def heal(lab: pairlab.Lab) -> dict:
    """Remove every partition (idempotent)."""
    for d in lab.directors:
        _sh("nft", "delete", "table", "inet", NFT_TABLE, ns=d.ns, check=False)
    return lab.mark("heal: VRRP partition removed", fault="heal")


# --- loss, delay, jitter -------------------------------------------------------------


def netem(lab: pairlab.Lab, name: str, loss: float | None = None, delay: float | None = None,
          jitter: float | None = None) -> dict:
    """``tc netem`` on the director's egress (its adverts and everything else it sends):
    ``loss`` in percent, ``delay`` and ``jitter`` in seconds (jitter is uniform ± around
    delay, as netem does). Needs sch_netem: the kernel lab has it, this host may not."""
    args: list[str] = []
    if loss is not None:
        args += ["loss", f"{loss:g}%"]
    if delay is not None or jitter is not None:
        args += ["delay", f"{(delay or 0) * 1000:g}ms"]
        if jitter:
            args += [f"{jitter * 1000:g}ms"]
    if not args:
        raise FaultError("netem needs at least one of loss=, delay=, jitter=")
    dev, ns = _link(lab, name, "inside")
    r = _sh("tc", "qdisc", "replace", "dev", dev, "root", "netem", *args, ns=ns, check=False)
    if r.returncode != 0:
        raise FaultError(f"tc netem on {name} {dev} failed: {r.stderr.strip()} "
                         "(this kernel may lack sch_netem: run it in the kernel lab)")
    return lab.mark(f"fault: netem on {name}: {' '.join(args)}", fault="netem", node=name,
                    loss=loss, delay=delay, jitter=jitter)


def clear_netem(lab: pairlab.Lab, name: str) -> dict:
    dev, ns = _link(lab, name, "inside")
    _sh("tc", "qdisc", "del", "dev", dev, "root", ns=ns, check=False)
    return lab.mark(f"heal: netem cleared on {name}", fault="clear_netem", node=name)


def heal_all(lab: pairlab.Lab) -> None:
    """Undo every network fault that may be in place (links, partition, netem); safe to
    call whatever state the lab is in."""
    topo = _topo(lab)
    for d in lab.directors:
        node = topo.node(d.name)
        present = _sh("ip", "-o", "link", "show", ns=topo.switch, check=False).stdout
        for outer, inner in lan.links(topo, node):
            if f" {outer}@" in present or f" {outer}:" in present:
                _sh("ip", "link", "set", outer, "up", ns=topo.switch, check=False)
                _sh("ip", "link", "set", inner, "up", ns=node.ns, check=False)
                _sh("tc", "qdisc", "del", "dev", inner, "root", ns=node.ns, check=False)
        _sh("nft", "delete", "table", "inet", NFT_TABLE, ns=d.ns, check=False)


# --- CPU, signals, restarts ----------------------------------------------------------

_BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def cpu_starve(lab: pairlab.Lab, seconds: float, per_core: int = 1) -> list[subprocess.Popen]:
    """Busy loops on every core, ``per_core`` of them per core and director, inside the
    directors' namespaces; each stops by itself after ``seconds``. Returns the
    processes (``wait`` on them, or ``stop_starve``)."""
    cores = os.cpu_count() or 1
    procs = []
    for d in lab.directors:
        for core in range(cores):
            for _ in range(per_core):
                p = subprocess.Popen(["ip", "netns", "exec", d.ns, sys.executable, "-c",
                                      _BUSY.format(seconds=float(seconds))])
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(p.pid, {core})
                procs.append(p)
    lab.mark(f"fault: CPU starvation, {len(procs)} busy loops for {seconds:g}s", fault="cpu_starve",
             seconds=seconds, loops=len(procs))
    return procs


def stop_starve(lab: pairlab.Lab, procs: list[subprocess.Popen]) -> dict:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    for p in procs:
        p.wait()
    return lab.mark("heal: CPU starvation over", fault="cpu_starve_end")


def agent_pids(lab: pairlab.Lab, name: str) -> list[int]:
    """The agent's processes in the director's namespace (not the VIP's server)."""
    d = _director(lab, name)
    skip = {d.service.pid} if d.service is not None else set()
    return [p for p in _pids(d.ns) if p not in skip]


def sigstop(lab: pairlab.Lab, name: str, seconds: float) -> tuple[dict, dict]:
    """SIGSTOP the director's agent for ``seconds``, then SIGCONT (a long GC pause, a
    VM migration): its kernel keeps the VIP while the peer times it out."""
    pids = agent_pids(lab, name)
    if not pids:
        raise FaultError(f"sigstop {name}: no agent process is running")
    _signal_all(pids, signal.SIGSTOP)
    stopped = lab.mark(f"fault: {name} agent SIGSTOP for {seconds:g}s", fault="sigstop", node=name)
    time.sleep(seconds)
    _signal_all(pids, signal.SIGCONT)
    cont = lab.mark(f"heal: {name} agent SIGCONT", fault="sigcont", node=name)
    return stopped, cont


def restart_agent(lab: pairlab.Lab, name: str) -> dict:
    """A clean restart of the agent (SIGTERM, wait, start with the same config)."""
    d = _director(lab, name)
    d.stop("term")
    rec = lab.mark(f"fault: {name} agent restarted", fault="restart", node=name)
    d.start()
    return rec


def restart_during_takeover(lab: pairlab.Lab, master: str = "dir1", taker: str = "dir2",
                            at: float = 0.5) -> dict:
    """The master's host dies (power_off) and, while the backup's master-down timer is
    still running (``at`` × its master-down interval later), the backup's agent is
    restarted: the new agent must finish the takeover by itself. ``power_on(master)``
    is the caller's to do."""
    adv = advert_interval(lab)
    down = 3 * adv + (256 - priority(lab, taker)) * adv / 256
    power_off(lab, master)
    time.sleep(at * down)
    return restart_agent(lab, taker)


def advert_interval(lab: pairlab.Lab) -> float:
    if lab.advert_interval is not None:
        return float(lab.advert_interval)
    return _config_seconds(lab, "advert_interval", 1.0)


def priority(lab: pairlab.Lab, name: str) -> int:
    import yaml
    cfg = yaml.safe_load(_director(lab, name).config.read_text())
    return int(cfg["vrrp_instances"][0]["priority"])


def _config_seconds(lab: pairlab.Lab, key: str, default: float) -> float:
    import yaml
    cfg = yaml.safe_load(lab.directors[0].config.read_text())
    value = str(cfg["vrrp_instances"][0].get(key, default))
    return float(value[:-2]) / 1000 if value.endswith("ms") else float(value.rstrip("s"))


# --- hostile local actors ------------------------------------------------------------


@dataclass
class SecondAgent:
    proc: subprocess.Popen
    log: Path
    config: Path
    mark: dict

    def exited(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> dict:
        """SIGTERM it (what an operator does on noticing): a second agent that ran must
        still not remove the VIP the first one holds."""
        return {"rc": terminate(self.proc), "output": self.log.read_text(errors="replace")}


def second_agent(lab: pairlab.Lab, name: str) -> SecondAgent:
    """Start another ``hadirector run`` on the director with the same config, except its
    state_dir (as an operator's slip would: a second unit, a test run by hand)."""
    import re
    d = _director(lab, name)
    text = re.sub(r"(?m)^(\s*state_dir:)\s*\S+", rf"\g<1> {lab.state_base / (name + '-second')}",
                  d.config.read_text())
    cfg = lab.results / f"{name}-second.yaml"
    cfg.write_text(text)
    log = lab.results / f"{name}-second.log"
    out = open(log, "w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", d.ns, pairlab.PYTHON, "-m", "hadirector.cli", "run", "-c", str(cfg),
         "--log-format", "json"],
        stdout=out, stderr=subprocess.STDOUT, cwd=pairlab.ROOT,
        env={**os.environ, "PYTHONPATH": str(pairlab.ROOT), "PYTHONUNBUFFERED": "1"})
    out.close()
    rec = lab.mark(f"fault: second agent started on {name} (pid {proc.pid})", fault="second_agent", node=name)
    return SecondAgent(proc, log, cfg, rec)


_SPOOF = r"""
import json, sys, time
from scapy.all import IP, conf, send
from scapy.layers.vrrp import VRRPv3
conf.verb = 0
src, vip, vrid, prio, adv, count, gap = sys.argv[1:8]
pkt = IP(src=src, dst="224.0.0.18", ttl=255, proto=112) / VRRPv3(
    vrid=int(vrid), priority=int(prio), adv=int(adv), ipcount=1, addrlist=[vip])
times = []
for i in range(int(count)):
    send(pkt, iface="eth0")
    times.append(time.time())
    if i < int(count) - 1:
        time.sleep(float(gap))
print(json.dumps({"first": times[0], "last": times[-1], "sent": len(times)}))
"""


def spoof_advert(lab: pairlab.Lab, priority: int = 254, interval: float = 1.0, count: int = 1,
                 gap: float = 0.1, vrid: int = 51, src: str | None = None) -> dict:
    """VRRPv3 adverts from the client's namespace (scapy), claiming the directors' VRID
    with ``priority`` and a Max Advertise Interval of ``interval`` s (12 bits of
    centiseconds: at most 40.95 s). RFC 5798 has no authentication in v3: any host on
    the LAN can send this. Returns the mark, with the wall times of the first and last
    advert sent."""
    cs = round(interval * 100)
    if not 0 < cs < 4096:
        raise FaultError(f"spoof interval must be in (0, 40.95] s, got {interval}")
    src = src or _address(lab, "client")
    r = subprocess.run(["ip", "netns", "exec", lab.ns("client"), pairlab.PYTHON, "-c", _SPOOF,
                        src, lan.VIP, str(vrid), str(priority), str(cs), str(count), str(gap)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise FaultError(f"spoofed advert from {src} failed: {r.stderr.strip()[-500:]}")
    sent = json.loads(r.stdout.strip().splitlines()[-1])
    return lab.mark(f"fault: {sent['sent']} spoofed advert(s) from {src}: priority {priority}, "
                    f"interval {cs / 100:g}s", fault="spoof_advert", src=src, priority=priority,
                    interval=cs / 100, first_wall=sent["first"], last_wall=sent["last"])


def pathological_yaml(depth: int = 7, width: int = 9) -> str:
    """An ``x-anchors`` block (the top-level home for anchors) of YAML merge keys nested
    ``depth`` deep, each level merging the previous one ``width`` times: ~500 bytes
    whose naive merge expansion visits width**depth mappings (9**7, 4.8 million: 4 s
    or more to load on a loaded 2-core machine before the loader bounded it). Every merged key is a valid instance key, so
    the only thing wrong with the file is the work it asks for."""
    lines = ["x-anchors:", "  a0: &a0 {preempt: true}"]
    for i in range(1, depth + 1):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"  a{i}: &a{i} {{<<: [{refs}]}}")
    return "\n".join(lines) + "\n"


def pathological_config(good: str, depth: int = 7, width: int = 9) -> str:
    """``good`` (a lab director config) with the anchors above it and its first VRRP
    instance merging the deepest one."""
    anchors = pathological_yaml(depth, width)
    lines = good.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- name:"))
    indent = len(lines[at]) - len(lines[at].lstrip()) + 2
    lines.insert(at + 1, " " * indent + f"<<: *a{depth}")
    return anchors + "\n".join(lines) + "\n"


def bad_reload(lab: pairlab.Lab, name: str, depth: int = 7, width: int = 9,
               restore_after: float = 0.0) -> dict:
    """Replace the director's config with ``pathological_config`` of it, SIGHUP the agent (a reload), and put the good config back after
    ``restore_after`` s (the file only: no second reload). The agent must refuse the
    file quickly and keep running as it was — VRRP never pauses. Needs a lab with its
    own results directory (the config then lives there, not in etc/lab)."""
    d = _director(lab, name)
    if lab.results not in d.config.parents:
        raise FaultError(f"bad_reload {name}: its config {d.config} is not under the lab's results "
                         f"directory {lab.results}; refusing to overwrite it")
    if d.proc is None or d.proc.poll() is not None:
        raise FaultError(f"bad_reload {name}: the agent is not running")
    good = d.config.read_text()
    bad = pathological_config(good, depth, width)
    d.config.write_text(bad)
    try:
        d.proc.send_signal(signal.SIGHUP)
        rec = lab.mark(f"fault: {name} reloaded with a {len(bad) - len(good)}-byte pathological "
                       f"merge-key block (depth {depth})", fault="bad_reload", node=name)
        time.sleep(restore_after)
    finally:
        if restore_after > 0:
            d.config.write_text(good)
    rec["good_config"] = good
    return rec


def restore_config(lab: pairlab.Lab, name: str, text: str) -> None:
    _director(lab, name).config.write_text(text)


_FLOOD = r"""
import json, socket, sys, time, urllib.request
host, port, n, hold, posts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
socks, errors = [], {}
start = time.monotonic()
for i in range(n):
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")   # never finished: slowloris
        socks.append(s)
    except OSError as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
opened = len(socks)
statuses = {}
for i in range(posts):
    try:
        req = urllib.request.Request(f"http://{host}:{port}/reload", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            code = str(r.status)
    except urllib.error.HTTPError as e:
        code = str(e.code)
    except OSError as e:
        code = type(e).__name__
    statuses[code] = statuses.get(code, 0) + 1
time.sleep(max(0.0, hold - (time.monotonic() - start)))
alive = 0
for s in socks:
    try:
        s.setblocking(False)
        alive += s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
    s.close()
print(json.dumps({"opened": opened, "connect_errors": errors, "still_open": alive,
                  "reload_statuses": statuses}))
"""


@dataclass
class Flood:
    proc: subprocess.Popen
    mark: dict

    def result(self, timeout: float = 120) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise FaultError(f"api flood failed: {err.strip()[-500:]}")
        return json.loads(out.strip().splitlines()[-1])


def api_flood(lab: pairlab.Lab, name: str, n: int = 1100, hold: float = 5.0, posts: int = 20,
              port: int = 9110, user: str = "nobody") -> Flood:
    """As ``user`` (not root), in the director's namespace: open ``n`` connections to
    the agent's API on loopback, each sending half a request and never finishing it,
    hold them ``hold`` s, and try ``posts`` POST /reload meanwhile. Bounded: the
    process closes everything and exits after ``hold`` s. Returns at once; ``result()``
    gives what the flooder saw."""
    import pwd
    d = _director(lab, name)
    pw = pwd.getpwnam(user)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", d.ns, "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
         "--", "/usr/bin/python3", "-c", _FLOOD, "127.0.0.1", str(port), str(n), str(hold), str(posts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    rec = lab.mark(f"fault: API flood on {name}: {n} idle connections as {user} for {hold:g}s",
                   fault="api_flood", node=name, n=n, user=user)
    return Flood(proc, rec)


def powered(lab: pairlab.Lab, name: str) -> bool:
    """Whether the director has its links (False after power_off until power_on)."""
    _outer, inner = lan.links(_topo(lab), _topo(lab).node(name))[0]
    return _sh("ip", "link", "show", inner, ns=lab.ns(name), check=False).returncode == 0
