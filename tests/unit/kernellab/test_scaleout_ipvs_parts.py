"""lab/scaleout_ipvs.py's parts that need no IPVS: reading a director's connection
entries, counting broken connections and kernel movers, and the server and client
scripts talking over loopback (real processes, real sockets)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from lab.scaleout_ipvs import CLIENT, SERVER, broken, movers, parse_connections

LNC = """\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.245.1.2:46001   10.245.9.1:80      10.245.2.21:80
TCP 14:58  ESTABLISHED 10.245.1.2:46000   10.245.9.1:80      10.245.2.23:80
TCP 00:59  SYN_RECV    10.245.1.9:46002   10.245.9.1:80      10.245.2.22:80
TCP 14:57  ESTABLISHED 10.245.1.2:46003   10.245.9.2:80      10.245.2.22:80
"""
ADDRESS_OF = {"rs1": "10.245.2.21", "rs2": "10.245.2.22", "rs3": "10.245.2.23"}


def test_connection_entries_give_the_real_server_per_client_port_of_our_client_and_vip_only():
    assert parse_connections(LNC) == {46001: "10.245.2.21", 46000: "10.245.2.23"}
    assert parse_connections("IPVS connection entries\n") == {}


def test_a_connection_is_broken_when_its_answer_is_not_the_name_it_started_with():
    opened = {1: "rs1", 2: "rs2", 3: "rs3", 4: "rs1"}
    answers = {1: "rs1", 2: "rs3", 3: "broken: ConnectionResetError: reset", 4: "rs1"}
    assert broken(opened, answers) == [2, 3]
    assert broken(opened, answers, among=[1, 2, 4]) == [2]
    assert broken(opened, {1: "rs1"}, among=[1, 2]) == []       # 2 broke earlier: reported once


def test_a_mover_is_a_flow_the_director_sent_to_another_real_server_than_it_started_on():
    opened = {46000: "rs3", 46001: "rs2", 46005: "rs1"}
    chosen = parse_connections(LNC)
    assert movers(opened, chosen, ADDRESS_OF, opened) == [46001]   # 46005: no entry, not counted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive source ports free on loopback, below the ephemeral
    range (the client binds each one itself)."""
    for port0 in range(12000, 30000, n):
        socks = []
        try:
            for port in range(port0, port0 + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return port0
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} free ports")


def test_the_lab_client_holds_connections_to_the_lab_server_and_reports_a_broken_one_once():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, "rs7", str(port)], stdout=subprocess.PIPE, text=True)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, "127.0.0.1", "127.0.0.1", "5", str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(line: str) -> dict[int, str]:
        client.stdin.write(line + "\n")
        client.stdin.flush()
        return {p: name for p, name in json.loads(client.stdout.readline())}

    try:
        assert server.stdout.readline().strip() == "ready"
        port0 = free_ports(20)
        assert ask(f"open 20 {port0}") == {p: "rs7" for p in range(port0, port0 + 20)}
        assert ask("ping") == {p: "rs7" for p in range(port0, port0 + 20)}
        server.kill()
        server.wait(timeout=10)
        after = ask("ping")
        assert sorted(after) == list(range(port0, port0 + 20))
        assert all(name.startswith("broken: ") for name in after.values()), after
        assert ask("ping") == {}
    finally:
        server.kill()
        client.kill()
        server.wait(timeout=10)
        client.wait(timeout=10)
