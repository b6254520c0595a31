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
moved connections.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from hadirector import model
from hadirector.kernel.reconcile import Reconciler
from hadirector.ipvs.table import ServiceKey, Table, dest_digest, desired_table
from lab.ipvs_netns import inside, sh
from lab.ipvs_scenarios import all_healthy

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

VIP = "10.245.9.1"
DIRECTORS = ["10.245.2.11", "10.245.2.12", "10.245.2.13"]
# Listed out of order on purpose: the kernel must see them in one canonical order.
REAL_SERVERS = ["10.245.2.23", "10.245.2.21", "10.245.2.22"]
CONNECTIONS = 30

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
    if cmd[0] == "open":
        n, port0 = int(cmd[1]), int(cmd[2])
        for port in range(port0, port0 + n):
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
        vs = model.VirtualService(
            "web", address=ipaddress.ip_address(VIP), port=80, scheduler=scheduler, scheduler_flags=flags,
            real_servers=tuple(model.RealServer(ipaddress.ip_address(a), forward=model.ForwardMethod.DR)
                               for a in REAL_SERVERS))
        so = model.ScaleOut(services=("web",), local_as=65001,
                            peers=(model.BgpPeer(ipaddress.ip_address("10.245.2.1"), 65000),))
        config = model.Config(node=model.NodeSettings("sx"), virtual_services=(vs,), scale_out=so)
        digests = []
        for d, rec in zip(self.dirs, self.reconcilers):
            rec.sync(Table())          # start clean: each test programs the service anew
            report = rec.sync(desired_table(config, all_healthy))
            assert report.errors == [], report.errors
            sh("sysctl", "-qw", f"net.ipv4.vs.sloppy_tcp={int(sloppy)}", ns=d)
            key = ServiceKey.of(vs)
            digests.append(dest_digest(rec.backend.dump_service(key).dests_of(key).values()))
        return digests

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


def move_through_every_director(lab: ScaleOutLab, port0: int) -> tuple[dict[int, str], list[dict[int, str]]]:
    """Open CONNECTIONS through d1 alone, then carry them through d2 alone, then d3:
    the names each round answers with."""
    client = Client(lab)
    try:
        lab.route_via(DIRECTORS[0])
        opened = client.ask(f"open {CONNECTIONS} {port0}")
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
