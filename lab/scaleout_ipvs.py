"""The scale-out data-plane lab: three directors with real IPVS behind a static ECMP
route, DR real servers, and one client holding long-lived connections
(shared/scale-out.md 3b). Needs IPVS, so it runs in the kernel lab
(tests/kernel/test_scaleout_traffic.py, ``bench.scale_out``'s backend event).

Topology (namespaces "<tag>sw", "<tag>rt"...; 10.245.0.0/16), all on one bridge in the
switch namespace except the client::

    client 10.245.1.2 --veth-- router 10.245.1.1 | 10.245.2.1 --br0-- directors 10.245.2.11-13
                                                                   -- real servers 10.245.2.21-23

The router's route to the VIP 10.245.9.1 is a static ECMP route switched by hand, as BGP
would (BIRD and BGP are lab/scaleout.py's part). fib_multipath_hash_policy=3 with fields
0x0037 (a veth lab, shared/scale-out.md 3a "Lab pitfall"). Each director holds the VIP
on lo and a DR service VIP:80 that ``program()`` writes through the product's planner
and reconciler (``desired_table`` of a ``scale_out`` config: mh, mh-fallback, mh-port,
canonical order, weight 0 for a real server that is not up); each real server holds the
VIP on lo (arp_ignore/arp_announce) and answers every line on a connection with its
name, replying straight to the client through the router.

The same ``SERVER`` and ``CLIENT`` scripts serve bench/scale_out.py's anchor (directors
that terminate TCP themselves, on lab/scaleout.py's BIRD router).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable

from hadirector import model
from hadirector.ipvs.table import HealthView, ServiceKey, dest_digest, desired_table
from lab.ipvs_scenarios import all_healthy
from lab.netns import inside, sh, terminate

VIP = "10.245.9.1"
CLIENT_IP = "10.245.1.2"
ROUTER_IP = "10.245.2.1"
DIRECTORS = ["10.245.2.11", "10.245.2.12", "10.245.2.13"]
# Listed out of order on purpose: the kernel must see them in one canonical order.
REAL_SERVERS = ["10.245.2.23", "10.245.2.21", "10.245.2.22"]
SERVICE = ServiceKey.inet("tcp", VIP, 80)

# A real server: answers its name on accept and once per line it reads, on many
# connections at once (one thread, a selector: thousands of long-lived connections cost
# no thread each under TCG). argv: NAME [PORT]
SERVER = r"""
import resource, selectors, socket, sys
name = sys.argv[1].encode() + b"\n"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 80
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
except (ValueError, OSError):       # no CAP_SYS_RESOURCE: as many as allowed
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
sel = selectors.DefaultSelector()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(4096)
s.setblocking(False)
sel.register(s, selectors.EVENT_READ, None)
print("ready", flush=True)
def drop(c):
    sel.unregister(c)
    c.close()
while True:
    for key, _ in sel.select():
        if key.data is None:
            try:
                c, _ = s.accept()
            except OSError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, b"")
            try:
                c.send(name)
            except OSError:
                drop(c)
            continue
        c = key.fileobj
        try:
            data = c.recv(4096)
        except OSError:
            data = b""
        if not data:
            drop(c)
            continue
        buf = key.data + data
        try:
            c.send(name * buf.count(b"\n"))
        except OSError:
            drop(c)
            continue
        sel.modify(c, selectors.EVENT_READ, buf.rsplit(b"\n", 1)[-1])
"""

# Commands on stdin, one JSON answer per line on stdout (argv: VIP SOURCE [TIMEOUT] [PORT]):
#   open N PORT0  -> N connections from source ports PORT0.. ; [[port, name|"broken: ..."], ...]
#   ping          -> one line on each open connection; [[port, name|"broken: ..."], ...]
#   close         -> closes them all; []
# A connection that broke is reported once and forgotten.
CLIENT = r"""
import json, resource, socket, sys
vip, me = sys.argv[1], sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
vport = int(sys.argv[4]) if len(sys.argv) > 4 else 80
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
except (ValueError, OSError):       # no CAP_SYS_RESOURCE: as many as allowed
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
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
            s.settimeout(timeout)
            try:
                s.bind((me, port))
                s.connect((vip, vport))
                out.append([port, read_name(s)])
                conns[port] = s
            except OSError as e:
                s.close()
                out.append([port, f"broken: {type(e).__name__}: {e}"])
    elif cmd[0] == "ping":
        # Newest first: not the order they were opened in, so a scheduler with state of
        # its own (rr) on another director does not replay the first one's choices.
        for port, s in sorted(conns.items(), reverse=True):
            try:
                s.sendall(b"ping\n")
                out.append([port, read_name(s)])
            except OSError as e:
                s.close()
                del conns[port]
                out.append([port, f"broken: {type(e).__name__}: {e}"])
    elif cmd[0] == "close":
        for s in conns.values():
            s.close()
        conns.clear()
    print(json.dumps(out), flush=True)
"""


class Client:
    """The ``CLIENT`` script in namespace ``ns``, driven line by line: each call returns
    {source port: the name the server answered, or "broken: ..."}."""

    def __init__(self, ns: str, vip: str, source: str, timeout: float = 10.0, port: int = 80) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, vip, source,
                                      str(timeout), str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> dict[int, str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the lab client exited ({self.proc.wait(timeout=10)}) on {line!r}")
        return {port: name for port, name in json.loads(answer)}

    def open(self, n: int, port0: int) -> dict[int, str]:
        return self.ask(f"open {n} {port0}")

    def ping(self) -> dict[int, str]:
        return self.ask("ping")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("close")
                self.proc.stdin.close()
            except (OSError, RuntimeError, ValueError):
                pass                # it died: the caller's own error says why
        terminate(self.proc, timeout=30)


def start_server(ns: str, name: str, port: int = 80) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, name, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"lab server {name} in {ns}: {proc.stderr.read().strip()}")
    return proc


def broken(opened: dict[int, str], answers: dict[int, str], among: Iterable[int] | None = None) -> list[int]:
    """Ports of the connections (of ``among``, default all answered) whose line got no
    answer with the name the connection started with: a reset, EOF, a timeout or
    another server's name."""
    ports = answers if among is None else [p for p in among if p in answers]
    return sorted(p for p in ports if answers[p] != opened[p])


def parse_connections(text: str, client: str = CLIENT_IP, virtual: str = f"{VIP}:80") -> dict[int, str]:
    """``ipvsadm -Lnc`` -> {client source port: real server address} for the
    connection entries from ``client`` to ``virtual``: which real server this director's
    kernel chose for each flow it carried."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        words = line.split()
        # pro expire state source virtual destination
        if len(words) != 6 or words[0] not in ("TCP", "UDP", "SCTP"):
            continue
        source, vip, dest = words[3], words[4], words[5]
        address, _, port = source.rpartition(":")
        if address == client and vip == virtual:
            out[int(port)] = dest.rpartition(":")[0]
    return out


def movers(opened: dict[int, str], chosen: dict[int, str], address_of: dict[str, str],
           among: Iterable[int]) -> list[int]:
    """Ports of the flows (of ``among``) that a director's kernel sent to another real
    server than the one the flow started on (``chosen`` from ``parse_connections``)."""
    return sorted(p for p in among if p in chosen and chosen[p] != address_of[opened[p]])


class ScaleOutIpvsLab:
    """The lab above. ``up()``/``down()``; ``program()`` writes every director's table
    through the product; ``route_via()`` moves the flows; ``client()`` opens the
    connections; ``chosen()`` reads a director's connection entries."""

    def __init__(self, tag: str | None = None) -> None:
        p = tag or f"sx{os.getpid() % 10000}"
        self.sw, self.rt, self.cl = f"{p}sw", f"{p}rt", f"{p}cl"
        self.dirs = [f"{p}d{i}" for i in (1, 2, 3)]
        self.rss = [f"{p}r{i}" for i in (1, 2, 3)]
        # rs1, rs2, rs3 in address order
        self.names = {f"rs{i + 1}": a for i, a in enumerate(sorted(REAL_SERVERS, key=ipaddress.ip_address))}
        self.address_of = dict(self.names)
        self.made: list[str] = []
        self.servers: dict[int, subprocess.Popen] = {}
        self.ports = 0
        self.reconcilers = []
        self.backends = []
        self.config: model.Config | None = None

    # --- building -------------------------------------------------------------------

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

    def up(self) -> ScaleOutIpvsLab:
        for n in (self.sw, self.rt, self.cl, *self.dirs, *self.rss):
            self.ns(n)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        # client <-> router
        sh("ip", "-n", self.rt, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.cl)
        sh("ip", "-n", self.rt, "addr", "add", "10.245.1.1/24", "dev", "eth0")
        sh("ip", "-n", self.rt, "link", "set", "eth0", "up")
        sh("ip", "-n", self.cl, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        sh("ip", "-n", self.cl, "link", "set", "eth0", "up")
        sh("ip", "-n", self.cl, "route", "add", "default", "via", "10.245.1.1")
        self.port(self.rt, ROUTER_IP)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "3"),
                           ("net.ipv4.fib_multipath_hash_fields", "0x0037")):
            sh("sysctl", "-qw", f"{key}={value}", ns=self.rt)
        for name, address in (*zip(self.dirs, DIRECTORS), *zip(self.rss, self.names.values())):
            self.port(name, address)
            sh("ip", "-n", name, "route", "add", "default", "via", ROUTER_IP)
            sh("ip", "-n", name, "addr", "add", f"{VIP}/32", "dev", "lo")
            for k in ("all", "eth1"):
                sh("sysctl", "-qw", f"net.ipv4.conf.{k}.arp_ignore=1", f"net.ipv4.conf.{k}.arp_announce=2", ns=name)
        for i in range(len(self.rss)):
            self.start_server(i)
        from hadirector.kernel.reconcile import Reconciler
        from hadirector.kernel.ipvs import IpvsNetlink

        for d in self.dirs:
            with inside(d):
                backend = IpvsNetlink()
            self.backends.append(backend)
            self.reconcilers.append(Reconciler(backend))
        return self

    def down(self) -> None:
        for b in self.backends:
            b.close()
        for i in list(self.servers):
            self.stop_server(i)
        for name in reversed(self.made):
            for ifname in ("eth0", "eth1"):
                sh("ip", "-n", name, "link", "del", ifname, check=False)
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)

    # --- real servers -----------------------------------------------------------------

    def start_server(self, i: int) -> None:
        """Real server ``i`` (0-based; its name is rs{i+1}) answers (again)."""
        if i not in self.servers:
            self.servers[i] = start_server(self.rss[i], f"rs{i + 1}")

    def stop_server(self, i: int) -> None:
        """Real server ``i``'s process dies (its connections are closed by its kernel)."""
        proc = self.servers.pop(i)
        terminate(proc, timeout=10, sig=signal.SIGKILL)

    # --- programming the directors ----------------------------------------------------

    def make_config(self, scheduler: str = "mh") -> model.Config:
        """The ``scale_out`` config every director runs: the real servers in config order,
        each with a check (so a health view decides its weight), port 0 resolved to 80
        as the agent's loader does (mh hashes a destination's port too, so a director
        programmed by hand with :80 must be compared with :80)."""
        flags = ("mh-fallback", "mh-port") if scheduler == "mh" else ()
        check = model.HealthCheck(model.TcpProbe())
        vs = model.VirtualService(
            "web", address=ipaddress.ip_address(VIP), port=80, scheduler=scheduler, scheduler_flags=flags,
            real_servers=tuple(model.RealServer(ipaddress.ip_address(a), forward=model.ForwardMethod.DR, check=check)
                               for a in REAL_SERVERS)).with_ports_resolved()     # as the loader does
        so = model.ScaleOut(services=("web",), local_as=65001,
                            peers=(model.BgpPeer(ipaddress.ip_address(ROUTER_IP), 65000),))
        return model.Config(node=model.NodeSettings("sx"), virtual_services=(vs,), scale_out=so)

    def program(self, scheduler: str = "mh", sloppy: bool = True) -> list[str]:
        """Every director gets the same config, all real servers up, through our
        reconciler from an empty table; returns each director's digest of the kernel's
        list."""
        self.config = self.make_config(scheduler)
        for d in self.dirs:
            # Start clean: each test programs the service anew (ipvsadm -C also removes
            # what program_by_hand() made, which our reconciler does not own).
            sh("ipvsadm", "-C", ns=d)
            sh("sysctl", "-qw", f"net.ipv4.vs.sloppy_tcp={int(sloppy)}", ns=d)
        return self.set_health(all_healthy)

    def set_health(self, health: HealthView) -> list[str]:
        """What the agent does on a health change: every director converges to
        ``desired_table(config, health)`` (a real server that is not up goes to weight
        0); returns the digests."""
        for rec in self.reconcilers:
            report = rec.sync(desired_table(self.config, health))
            assert report.errors == [], report.errors
        return self.digests()

    def digests(self) -> list[str]:
        """Each director's digest of its kernel's destination list (order and weights),
        as ``hadirector status`` shows it."""
        return [dest_digest(b.dump_service(SERVICE).dests_of(SERVICE).values()) for b in self.backends]

    def ipvsadm(self, director: int, *args: str) -> str:
        return sh("ipvsadm", *args, ns=self.dirs[director]).stdout

    def program_by_hand(self, director: int, order: Iterable[str]) -> str:
        """Director ``director`` programmed with ipvsadm, the destinations added in
        ``order`` (as a tool that follows the config's order would); returns its digest."""
        vs = f"{VIP}:80"
        self.ipvsadm(director, "-C")
        self.ipvsadm(director, "-A", "-t", vs, "-s", "mh", "-b", "mh-fallback,mh-port")
        for address in order:
            self.ipvsadm(director, "-a", "-t", vs, "-r", f"{address}:80", "-g", "-w", "1")
        return self.digests()[director]

    # --- traffic ----------------------------------------------------------------------

    def route_via(self, *directors: str) -> None:
        hops = [w for d in directors for w in ("nexthop", "via", d)]
        sh("ip", "-n", self.rt, "route", "replace", f"{VIP}/32", *hops)

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.cl, VIP, CLIENT_IP, timeout)

    def chosen(self, director: int) -> dict[int, str]:
        """{client port: real server address} from director ``director``'s connection
        entries (``ipvsadm -Lnc``): the kernel's own choice per flow."""
        return parse_connections(self.ipvsadm(director, "-Lnc"))
