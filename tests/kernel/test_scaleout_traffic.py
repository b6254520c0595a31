"""Scale-out in real IPVS: three directors programmed by our reconciler from a
``scale_out`` config pick the same real server for a flow, so long-lived TCP connections
survive being moved from one director to another (shared/scale-out.md 3b).

Topology (names "sx<pid>...", 10.245.0.0/16), all on one bridge in the switch namespace
except the client::

    client 10.245.1.2 --veth-- router 10.245.1.1 | 10.245.2.1 --br0-- directors 10.245.2.11-13
                                                                   -- real servers 10.245.2.21-23

The router's route to the VIP 10.245.9.1 is a static ECMP route (BIRD and BGP are the
host-namespace tests' part; here the router route is switched by hand, as BGP would).
fib_multipath_hash_policy=3 with fields 0x0037 (a veth lab, see the doc). Each director
holds the VIP on lo and a DR service VIP:80 (mh, mh-fallback, mh-port, sloppy_tcp=1);
each real server holds the VIP on lo (arp_ignore/arp_announce) and answers every line
on a connection with its name, replying straight to the client through the router.

A connection is *broken* when a line sent on it gets no answer with the name it started
with (a reset, EOF, a timeout or another server's name). The negative controls show
that each ingredient is needed: ``rr`` instead of ``mh`` and ``sloppy_tcp=0`` break most
moved connections. Another insertion order on one director, and a failed real server
deleted (or added at weight 0) instead of set to weight 0, move well under 1 % of flows,
so a model of mh (lab/mh.py, checked against the kernel here) picks the client ports
they move, and exactly those must break; weight 0, and a director started while a real
server is down, break none of them. Each test prints its counts (``pytest -rP`` shows
them for passing tests).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from hadirector import model
from hadirector.health.policy import HealthState
from hadirector.ipvs.planner import AddDest, DelDest
from hadirector.ipvs.reconciler import Reconciler
from hadirector.ipvs.table import ServiceKey, Table, dest_digest, desired_table
from lab import mh
from lab.ipvs_netns import inside, sh
from lab.ipvs_scenarios import all_healthy

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

VIP = "10.245.9.1"
DIRECTORS = ["10.245.2.11", "10.245.2.12", "10.245.2.13"]
# Listed out of order on purpose: the kernel must see them in one canonical order.
REAL_SERVERS = ["10.245.2.23", "10.245.2.21", "10.245.2.22"]
CONNECTIONS = 30
CLIENT_IP = "10.245.1.2"
KEY = ServiceKey.inet("tcp", VIP, 80)
# The real server that fails in the tests that need one, and each real server's name
# (the servers answer with "rs1".."rs3" in address order).
FAILED = "10.245.2.23"
NAMES = {a: f"rs{i + 1}" for i, a in enumerate(sorted(REAL_SERVERS, key=ipaddress.ip_address))}


def failed_down(vs: model.VirtualService, rs: model.RealServer) -> HealthState:
    return HealthState.DOWN if str(rs.address) == FAILED else HealthState.UP

SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(512)
print("ready", flush=True)
def serve(c):
    try:
        c.sendall(name + b"\n")
        f = c.makefile("rb")
        for line in f:
            c.sendall(name + b"\n")
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Commands on stdin, one JSON answer per line on stdout:
#   open N PORT0  -> N connections from source ports PORT0.. ; [[port, name|error], ...]
#   openports P,Q -> the same from the source ports listed
#   ping          -> one line on each open connection; [[port, name|"broken: ..."], ...]
#   close         -> closes them all; []
CLIENT = r"""
import json, socket, sys
vip = sys.argv[1]
conns = {}
def read_name(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionError("EOF")
        buf += chunk
    return buf.decode().strip()
for line in sys.stdin:
    cmd = line.split()
    out = []
    if cmd[0] in ("open", "openports"):
        if cmd[0] == "open":
            ports = range(int(cmd[2]), int(cmd[2]) + int(cmd[1]))
        else:
            ports = [int(p) for p in cmd[1].split(",")]
        for port in ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(10)
            try:
                s.bind(("10.245.1.2", port))
                s.connect((vip, 80))
                conns[port] = s
                out.append([port, read_name(s)])
            except OSError as e:
                out.append([port, f"broken: {type(e).__name__}: {e}"])
    elif cmd[0] == "ping":
        # Newest first: not the order they were opened in, so a scheduler with state of
        # its own (rr) on another director does not replay the first one's choices.
        for port, s in sorted(conns.items(), reverse=True):
            try:
                s.sendall(b"ping\n")
                out.append([port, read_name(s)])
            except OSError as e:
                out.append([port, f"broken: {type(e).__name__}: {e}"])
    elif cmd[0] == "close":
        for s in conns.values():
            s.close()
        conns.clear()
    print(json.dumps(out), flush=True)
"""


class ScaleOutLab:
    def __init__(self) -> None:
        p = f"sx{os.getpid() % 10000}"
        self.sw, self.rt, self.cl = f"{p}sw", f"{p}rt", f"{p}cl"
        self.dirs = [f"{p}d{i}" for i in (1, 2, 3)]
        self.rss = [f"{p}r{i}" for i in (1, 2, 3)]
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.ports = 0
        self.reconcilers: list[Reconciler] = []
        self.backends = []
        self.config: model.Config | None = None

    def ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def port(self, node: str, address: str) -> None:
        self.ports += 1
        peer = f"p{self.ports}"
        sh("ip", "-n", self.sw, "link", "add", peer, "type", "veth", "peer", "name", "eth1", "netns", node)
        sh("ip", "-n", self.sw, "link", "set", peer, "master", "br0", "up")
        sh("ip", "-n", node, "addr", "add", f"{address}/24", "dev", "eth1")
        sh("ip", "-n", node, "link", "set", "eth1", "up")

    def up(self) -> None:
        for n in (self.sw, self.rt, self.cl, *self.dirs, *self.rss):
            self.ns(n)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        # client <-> router
        sh("ip", "-n", self.rt, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.cl)
        sh("ip", "-n", self.rt, "addr", "add", "10.245.1.1/24", "dev", "eth0")
        sh("ip", "-n", self.rt, "link", "set", "eth0", "up")
        sh("ip", "-n", self.cl, "addr", "add", "10.245.1.2/24", "dev", "eth0")
        sh("ip", "-n", self.cl, "link", "set", "eth0", "up")
        sh("ip", "-n", self.cl, "route", "add", "default", "via", "10.245.1.1")
        self.port(self.rt, "10.245.2.1")
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "3"),
                           ("net.ipv4.fib_multipath_hash_fields", "0x0037")):
            sh("sysctl", "-qw", f"{key}={value}", ns=self.rt)
        for name, address in (*zip(self.dirs, DIRECTORS), *zip(self.rss, sorted(REAL_SERVERS))):
            self.port(name, address)
            sh("ip", "-n", name, "route", "add", "default", "via", "10.245.2.1")
            sh("ip", "-n", name, "addr", "add", f"{VIP}/32", "dev", "lo")
            for k in ("all", "eth1"):
                sh("sysctl", "-qw", f"net.ipv4.conf.{k}.arp_ignore=1", f"net.ipv4.conf.{k}.arp_announce=2", ns=name)
        for i, name in enumerate(self.rss):
            proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER, f"rs{i + 1}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(proc)
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        from hadirector.kernel.ipvs import IpvsNetlink

        for d in self.dirs:
            with inside(d):
                backend = IpvsNetlink()
            self.backends.append(backend)
            self.reconcilers.append(Reconciler(backend))

    def down(self) -> None:
        for b in self.backends:
            b.close()
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        for name in reversed(self.made):
            for ifname in ("eth0", "eth1"):
                sh("ip", "-n", name, "link", "del", ifname, check=False)
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)

    def program(self, scheduler: str = "mh", sloppy: bool = True) -> list[str]:
        """Every director gets the same config (its real servers in config order) through
        our reconciler; returns each director's digest of the kernel's list."""
        flags = ("mh-fallback", "mh-port") if scheduler == "mh" else ()
        check = model.HealthCheck(model.TcpProbe())     # never probed: health() below decides
        vs = model.VirtualService(
            "web", address=ipaddress.ip_address(VIP), port=80, scheduler=scheduler, scheduler_flags=flags,
            real_servers=tuple(model.RealServer(ipaddress.ip_address(a), forward=model.ForwardMethod.DR,
                                                check=check) for a in REAL_SERVERS))
        so = model.ScaleOut(services=("web",), local_as=65001,
                            peers=(model.BgpPeer(ipaddress.ip_address("10.245.2.1"), 65000),))
        self.config = model.Config(node=model.NodeSettings("sx"), virtual_services=(vs,), scale_out=so)
        for d, rec in zip(self.dirs, self.reconcilers):
            rec.sync(Table())          # start clean: each test programs the service anew
            report = rec.sync(desired_table(self.config, all_healthy))
            assert report.errors == [], report.errors
            sh("sysctl", "-qw", f"net.ipv4.vs.sloppy_tcp={int(sloppy)}", ns=d)
        return [self.digest(i) for i in range(len(self.dirs))]

    def digest(self, i: int) -> str:
        """Director i's digest of the kernel's destination list, in the kernel's order."""
        return dest_digest(self.backends[i].dump_service(KEY).dests_of(KEY).values())

    def fail(self) -> None:
        """Health says FAILED is down: every director programs it as our agent does
        (scale-out: weight 0, never deleted)."""
        for rec in self.reconcilers:
            report = rec.sync(desired_table(self.config, failed_down))
            assert report.errors == [], report.errors

    def delete(self, i: int, address: str) -> None:
        """Negative control: director i deletes ``address`` (what a director without
        scale-out does with a failed real server) instead of weighting it 0."""
        [dkey] = [k for k in self.backends[i].dump_service(KEY).dests_of(KEY) if str(k.ip) == address]
        self.backends[i].apply(DelDest(KEY, dkey, dkey.ip.version))

    def readd(self, i: int, order: list[str], zero: str | None = None) -> None:
        """Negative control: director i's destinations deleted and added again in ``order``
        (what a director that does not sort them would hold), ``zero`` added at weight 0
        (what our planner did before it added at the weight, then set 0)."""
        want = desired_table(self.config, all_healthy).dests_of(KEY)
        for dkey in list(self.backends[i].dump_service(KEY).dests_of(KEY)):
            self.backends[i].apply(DelDest(KEY, dkey, dkey.ip.version))
        by_address = {str(k.ip): entry for k, entry in want.items()}
        for address in order:
            entry = by_address[address]
            self.backends[i].apply(AddDest(KEY, dataclasses.replace(entry, weight=0) if address == zero else entry))

    def route_via(self, *directors: str) -> None:
        hops = [w for d in directors for w in ("nexthop", "via", d)]
        sh("ip", "-n", self.rt, "route", "replace", f"{VIP}/32", *hops)


class Client:
    def __init__(self, lab: ScaleOutLab) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.cl, sys.executable, "-c", CLIENT, VIP],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> dict[int, str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return {port: name for port, name in json.loads(self.proc.stdout.readline())}

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def lab():
    lab = ScaleOutLab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def move_through_every_director(lab: ScaleOutLab, port0: int, ports: list[int] | None = None,
                                between=None) -> tuple[dict[int, str], list[dict[int, str]]]:
    """Open CONNECTIONS connections (from ``port0`` on, or from ``ports``) through d1
    alone, then (after ``between()``, if given) carry them through d2 alone, then d3:
    the names each round answers with."""
    client = Client(lab)
    try:
        lab.route_via(DIRECTORS[0])
        opened = client.ask(f"open {CONNECTIONS} {port0}" if ports is None
                            else "openports " + ",".join(map(str, ports)))
        if between is not None:
            between()
        rounds = []
        for d in DIRECTORS[1:]:
            lab.route_via(d)
            rounds.append(client.ask("ping"))
        client.ask("close")
    finally:
        client.close()
    return opened, rounds


def broken(opened: dict[int, str], answers: dict[int, str]) -> list[int]:
    return [port for port, name in answers.items() if name != opened[port]]


def test_every_director_holds_the_same_destination_list_in_canonical_order(lab):
    digests = lab.program("mh")
    assert len(set(digests)) == 1, digests
    key = ServiceKey.inet("tcp", VIP, 80)
    order = [d.key.address for d in lab.reconcilers[0].backend.dump_service(key).dests_of(key).values()]
    assert sorted(order) == sorted(REAL_SERVERS) and len(order) == 3


def test_the_same_flow_gets_the_same_real_server_whichever_director_carries_it(lab):
    lab.program("mh")
    opened, rounds = move_through_every_director(lab, port0=41000)
    assert all(not name.startswith("broken") for name in opened.values()), opened
    assert len(set(opened.values())) >= 2, f"mh should spread {CONNECTIONS} flows: {opened}"
    for answers in rounds:
        assert broken(opened, answers) == [], answers
    print(f"{CONNECTIONS} connections carried by d1, then d2, then d3: 0 broken; spread "
          f"{sorted(collections.Counter(opened.values()).items())}")


def test_removing_a_director_from_the_ecmp_set_breaks_no_established_connection(lab):
    lab.program("mh")
    client = Client(lab)
    try:
        lab.route_via(*DIRECTORS)
        opened = client.ask(f"open {2 * CONNECTIONS} 42000")
        assert all(not name.startswith("broken") for name in opened.values()), opened
        for survivors in ((DIRECTORS[0], DIRECTORS[2]), (DIRECTORS[0],), tuple(DIRECTORS)):
            lab.route_via(*survivors)
            answers = client.ask("ping")
            assert broken(opened, answers) == [], (survivors, answers)
        client.ask("close")
    finally:
        client.close()


def test_negative_control_rr_instead_of_mh_breaks_moved_connections(lab):
    lab.program("rr")
    opened, rounds = move_through_every_director(lab, port0=43000)
    lost = broken(opened, rounds[0])
    print(f"rr: {len(lost)} of {CONNECTIONS} broken on the first move")
    assert len(lost) >= CONNECTIONS // 4, (opened, rounds[0])


def test_negative_control_sloppy_tcp_off_breaks_moved_connections(lab):
    lab.program("mh", sloppy=False)
    opened, rounds = move_through_every_director(lab, port0=44000)
    lost = broken(opened, rounds[0])
    print(f"mh without sloppy_tcp: {len(lost)} of {CONNECTIONS} broken on the first move")
    assert len(lost) >= CONNECTIONS * 3 // 4, (opened, rounds[0])
    lab.program("mh")


# Another insertion order on one director, or a real server deleted (or added at weight
# 0) instead of set to weight 0, gives that director another mh lookup table. With three
# real servers and 4093 slots it sends well under 1 % of flows elsewhere (lab/mh.py), too
# few to meet by chance with a few dozen connections, so the model of mh picks the
# client ports: MOVERS whose real server it says changes, as many it says stay. The
# kernel must then break exactly the movers: that checks the model as well.
MOVERS = 10


def mh_choice(order: list[str], down: str | None = None, added_at_0: bool = False):
    """Client port -> real server name that mh gives a new flow, for a director whose
    kernel list is ``order`` (weight 1 each; ``down`` at weight 0, added at 0 or not)."""
    dests = [mh.Dest(a, 80, weight=0 if a == down else 1, last_weight=0 if a == down and added_at_0 else 1)
             for a in order]
    table = mh.lookup_table(dests)
    return lambda port: NAMES.get(mh.schedule(dests, table, CLIENT_IP, port), "none")


def pick(ports: range, before, after, live_only: bool = False) -> tuple[list[int], list[int]]:
    """MOVERS ports whose real server differs between the ``before`` and ``after``
    models and as many that stay (of live real servers only, if asked): (ports, movers)."""
    movers, stay = [], []
    for port in ports:
        if live_only and before(port) == NAMES[FAILED]:
            continue
        (movers if before(port) != after(port) else stay).append(port)
        if len(movers) >= MOVERS and len(stay) >= MOVERS:
            break
    assert len(movers) == MOVERS, f"only {len(movers)} movers in ports {ports}"
    return sorted(movers + stay[:MOVERS]), movers


def kernel_order(lab: ScaleOutLab, i: int) -> list[str]:
    return [str(k.ip) for k in lab.backends[i].dump_service(KEY).dests_of(KEY)]


def test_the_mh_model_predicts_the_real_server_the_kernel_picks(lab):
    lab.program("mh")
    predicted = mh_choice(kernel_order(lab, 0))
    opened, _ = move_through_every_director(lab, 30000)
    wrong = {p: (name, predicted(p)) for p, name in opened.items() if name != predicted(p)}
    print(f"mh model: {CONNECTIONS - len(wrong)} of {CONNECTIONS} flows on the real server it predicts")
    assert wrong == {}, f"observed, predicted: {wrong}"


def test_negative_control_another_insertion_order_on_one_director_breaks_moved_connections(lab):
    digests = lab.program("mh")
    order = kernel_order(lab, 0)
    ports, movers = pick(range(10000, 30000), mh_choice(order), mh_choice(order[::-1]))
    lab.readd(1, sorted(REAL_SERVERS, key=ipaddress.ip_address)[::-1])
    assert kernel_order(lab, 1) == order[::-1] and lab.digest(1) != digests[0], kernel_order(lab, 1)
    opened, rounds = move_through_every_director(lab, 0, ports=ports)
    assert all(not name.startswith("broken") for name in opened.values()), opened
    lost = broken(opened, rounds[0])
    print(f"mh, d2's destinations added in reverse order: {len(lost)} of {len(ports)} connections broken on "
          f"the move d1 -> d2 ({len(movers)} predicted; same order everywhere: 0)")
    assert sorted(lost) == movers, f"broken {sorted(lost)}, predicted {movers}"
    lab.program("mh")


def carried_after(lab: ScaleOutLab, ports: list[int], change) -> tuple[list[int], list[int], list[int], list[int]]:
    """Open ``ports`` through d1, ``change()``, then carry them through d2: the flows of
    live real servers and those of them broken, the flows of FAILED and those broken."""
    opened, rounds = move_through_every_director(lab, 0, ports=ports, between=change)
    assert all(not name.startswith("broken") for name in opened.values()), opened
    lost = set(broken(opened, rounds[0]))
    live = sorted(p for p, name in opened.items() if name != NAMES[FAILED])
    dead = sorted(p for p, name in opened.items() if name == NAMES[FAILED])
    return live, sorted(lost & set(live)), dead, sorted(lost & set(dead))


def failure_ports(lab: ScaleOutLab, ports: range) -> tuple[list[int], list[int]]:
    """Ports of live real servers that a director without FAILED's slots (deleted, or
    added at weight 0) would send elsewhere, and as many it would not."""
    order = kernel_order(lab, 0)
    return pick(ports, mh_choice(order), mh_choice([a for a in order if a != FAILED]), live_only=True)


def test_a_failed_real_server_at_weight_0_breaks_no_moved_flow_of_a_live_one(lab):
    lab.program("mh")
    ports, movers = failure_ports(lab, range(46000, 52000))
    live, live_lost, dead, dead_lost = carried_after(lab, ports, lab.fail)
    print(f"{NAMES[FAILED]} failed, weight 0 on every director, then d1 -> d2: {len(live_lost)} of {len(live)} "
          f"flows of live real servers broken, {len(movers)} of them ones a delete would move")
    assert len({lab.digest(i) for i in range(3)}) == 1
    assert live and live_lost == [], f"{len(live_lost)} of {len(live)} flows of live real servers broken"


def test_negative_control_deleting_a_failed_real_server_breaks_moved_flows_of_live_ones(lab):
    lab.program("mh")
    ports, movers = failure_ports(lab, range(52000, 58000))
    live, live_lost, _, _ = carried_after(lab, ports, lambda: [lab.delete(i, FAILED) for i in range(3)])
    print(f"{NAMES[FAILED]} failed, deleted on every director, then d1 -> d2: {len(live_lost)} of {len(live)} "
          f"flows of live real servers broken ({len(movers)} predicted; weight 0 instead: 0)")
    assert live_lost == movers, f"broken {live_lost}, predicted {movers}"
    lab.program("mh")


def restart_d2_while_failed_is_down(lab: ScaleOutLab) -> None:
    lab.fail()                              # d1, d3: up before, now weight 0
    rec = lab.reconcilers[1]                # d2 starts again: nothing, no result yet, then down
    rec.sync(Table())
    for health in (lambda vs, rs: HealthState.UNKNOWN, failed_down):
        assert rec.sync(desired_table(lab.config, health)).errors == []


def test_a_director_started_while_a_real_server_is_down_breaks_no_moved_flow_of_a_live_one(lab):
    """IPVS remembers a destination's last non-zero weight (``last_weight``, set on add
    even when 0), and ``mh`` gives slots by it. A director that starts while a real
    server is down must hold the table of the directors that saw it up: our planner adds
    it at its weight, then sets 0 (the control below adds it at 0)."""
    lab.program("mh")
    ports, movers = failure_ports(lab, range(58000, 64000))
    live, live_lost, _, _ = carried_after(lab, ports, lambda: restart_d2_while_failed_is_down(lab))
    print(f"d2 started while {NAMES[FAILED]} was down, then d1 -> d2: {len(live_lost)} of {len(live)} flows of "
          f"live real servers broken, {len(movers)} of them ones a table without its slots would move")
    assert live and live_lost == [], f"{len(live_lost)} of {len(live)} flows of live real servers broken"


def test_negative_control_a_real_server_added_at_weight_0_on_one_director_breaks_moved_flows(lab):
    lab.program("mh")
    ports, movers = failure_ports(lab, range(1024, 10000))

    def fail_then_readd_d2_with_failed_at_0():
        lab.fail()
        lab.readd(1, sorted(REAL_SERVERS, key=ipaddress.ip_address), zero=FAILED)

    live, live_lost, _, _ = carried_after(lab, ports, fail_then_readd_d2_with_failed_at_0)
    print(f"d2 holds {NAMES[FAILED]} added at weight 0, then d1 -> d2: {len(live_lost)} of {len(live)} flows of "
          f"live real servers broken ({len(movers)} predicted)")
    assert live_lost == movers, f"broken {live_lost}, predicted {movers}"
    lab.program("mh")


AGENT_START = 180.0        # the whole agent under TCG


def test_the_real_agent_announces_once_ipvs_is_programmed_and_withdraws_on_stop(tmp_path):
    """``hadirector run`` with a scale_out section, on a kernel with IPVS: the service is
    programmed in canonical order, the sloppy sysctls are set, the VIP's route appears in
    table 201, and a graceful stop withdraws it before the agent exits."""
    import signal
    import time

    import yaml

    from lab import ROOT
    from lab.ipvs_netns import IpvsNetns, wait_until

    config = {
        "node": {"router_id": "sx-agent", "state_dir": str(tmp_path / "state"), "log_format": "json"},
        "api": {"enabled": False},
        "virtual_services": [{
            "name": "web", "address": "10.244.9.1", "port": 80, "scheduler": "mh",
            "scheduler_flags": ["mh-fallback", "mh-port"], "forward": "dr",
            "real_servers": [{"address": "10.244.0.12"}, {"address": "10.244.0.11"}],
        }],
        "scale_out": {"services": ["web"], "local_as": 65001, "hold_down": 0, "drain_grace": 0.5,
                      "peers": [{"address": "10.244.0.2", "asn": 65000}],
                      "bird_socket": str(tmp_path / "no-bird.ctl")},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with IpvsNetns("sxa") as ns:
        log = open(tmp_path / "agent.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-m", "hadirector.cli", "run",
                                 "-c", str(path), "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        try:
            def gate_routes() -> str:       # an empty table 201 is "does not exist" (exit 2)
                return ns.run("ip", "route", "show", "table", "201", check=False).stdout

            assert wait_until(lambda: "10.244.9.1 dev lo proto 201" in gate_routes(), AGENT_START), \
                (tmp_path / "agent.log").read_text()[-3000:]
            table = ns.ipvsadm("-Ln")
            assert "10.244.0.11:80" in table and "10.244.0.12:80" in table and "mh-fallback" in table, table
            for name in ("sloppy_tcp", "sloppy_sctp", "schedule_icmp"):
                assert ns.run("sysctl", "-n", f"net.ipv4.vs.{name}").stdout.strip() == "1", name
            assert "10.244.9.1" in ns.run("ip", "addr", "show", "lo").stdout
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: gate_routes().strip() == "", 30)
            withdrawn = time.monotonic() - t0
            assert proc.wait(timeout=120) == 0
            print(f"real agent: announced with IPVS programmed; withdrawn {withdrawn:.2f} s after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
