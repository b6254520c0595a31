"""The net layer against a real kernel: raw VRRP sockets, VIPs, GARP (namespaces).

Each test runs a small script inside a node namespace (``ip netns exec``), because the
net layer acts on the namespace of the process that calls it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from lab.lan import Lan, sh

pytestmark = [pytest.mark.netns, pytest.mark.lan("np", nodes=3, net=3)]
PY = sys.executable
ROOT = __file__.rsplit("/tests/", 1)[0]


def run_in(ns: str, code: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    prog = f"import sys; sys.path.insert(0, {ROOT!r})\n" + textwrap.dedent(code)
    return subprocess.run(["ip", "netns", "exec", ns, PY, "-c", prog, *args],
                          capture_output=True, text=True, timeout=timeout)


def start_in(ns: str, code: str, *args: str) -> subprocess.Popen:
    prog = f"import sys; sys.path.insert(0, {ROOT!r})\n" + textwrap.dedent(code)
    return subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", prog, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


RECEIVER = """
    import select, time
    from hadirector.kernel.vrrp_socket import VrrpSocket
    s = VrrpSocket("eth0", int(sys.argv[1]))
    print("ready", flush=True)
    end = time.time() + 3
    while time.time() < end:
        if select.select([s], [], [], 0.1)[0]:
            p = s.recv()
            print(p.src, p.dst, p.ttl, p.payload.hex(), flush=True)
"""

SENDER = """
    import ipaddress
    from hadirector.kernel.vrrp_socket import VrrpSocket
    from hadirector.vrrp.codec import Advert, encode
    fam = int(sys.argv[1]); src = ipaddress.ip_address(sys.argv[2])
    peers = tuple(ipaddress.ip_address(p) for p in sys.argv[3:])
    s = VrrpSocket("eth0", fam, peers=peers)
    vip = ipaddress.ip_address("10.234.3.100" if fam == 4 else "fd00:234::3:64")
    for dst in s.destinations():
        a = Advert(version=3, vrid=7, priority=150, max_advert_int=0.5, addresses=(vip,), family=fam)
        s.send_to(encode(a, src, dst), dst, src)
"""


def link_local(lan: Lan, i: int) -> str:
    out = sh("ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link", ns=lan.ns(i)).stdout
    return out.split()[3].split("/")[0]


def receive(lan: Lan, fam: int, src: str, peers: tuple[str, ...] = ()) -> dict[int, list[str]]:
    rx = {i: start_in(lan.ns(i), RECEIVER, str(fam)) for i in (2, 3)}
    try:
        for p in rx.values():
            assert p.stdout.readline().strip() == "ready"
        done = run_in(lan.ns(1), SENDER, str(fam), src, *peers)
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)
    finally:
        for p in rx.values():
            p.terminate()
    return {i: p.communicate(timeout=5)[0].splitlines() for i, p in rx.items()}


@pytest.mark.parametrize("fam", [4, 6])
def test_multicast_advert_arrives_with_ttl_255_and_group_destination(lan, fam):  # RFC 5798 5.1.1.3
    src = str(lan.ip4(1)) if fam == 4 else link_local(lan, 1)
    got = receive(lan, fam, src)
    for i in (2, 3):
        assert len(got[i]) == 1, got
        psrc, pdst, ttl, payload = got[i][0].split()
        assert psrc == src and pdst == ("224.0.0.18" if fam == 4 else "ff02::12")
        assert ttl == "255"
        assert payload.startswith("3107")   # v3 advert, vrid 7


def test_unicast_peers_get_the_advert_and_nobody_else(lan):
    got = receive(lan, 4, str(lan.ip4(1)), peers=(str(lan.ip4(2)),))
    assert [line.split()[1] for line in got[2]] == [str(lan.ip4(2))]
    assert got[3] == []


ADDRS = """
    import asyncio, ipaddress, subprocess
    from hadirector.kernel.addresses import AddressManager
    async def main():
        m = AddressManager()
        v4 = ipaddress.ip_interface("10.234.3.100")
        v6 = ipaddress.ip_interface("fd00:234::3:64")
        print(m.add_vip("eth0", v4, label="eth0:v7"), m.add_vip("eth0", v4))
        print(m.add_vip("eth0", v6), m.add_vip("eth0", v6))
        print(sorted(str(a) for a in await m.list_addresses("eth0")))
        print(await m.primary_address("eth0", 4, exclude=(v4.ip,)), (await m.primary_address("eth0", 6)).is_link_local)
        print(" ".join(subprocess.run(["ip", "-o", "addr", "show", "dev", "eth0"],
                                      capture_output=True, text=True).stdout.split()))
        print(await m.remove_vip("eth0", v4), await m.remove_vip("eth0", v4))
        print(await m.remove_vip("eth0", v6), await m.has_vip("eth0", v6))
        try:
            m.add_vip("nosuch0", v4)
        except Exception as e:
            print(type(e).__name__, e)
        m.close()
    asyncio.run(main())
"""


def test_vip_add_and_remove_are_idempotent_and_v4_is_a_labelled_host_route(lan):
    res = run_in(lan.ns(1), ADDRS)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "True False"
    assert lines[1] == "True False"
    assert "10.234.3.100/32" in lines[2] and "fd00:234::3:64/128" in lines[2]
    assert lines[3] == "10.234.3.1 True"
    # As the kernel has them: the v4 VIP labelled keepalived-style, the v6 one without
    # duplicate address detection (usable at once after a takeover).
    assert "inet 10.234.3.100/32" in lines[4] and "eth0:v7" in lines[4]
    v6 = lines[4][lines[4].index("inet6 fd00:234::3:64/128"):]
    assert "nodad" in v6.split("valid_lft")[0] and "tentative" not in v6.split("valid_lft")[0]
    assert lines[5] == "True False"
    assert lines[6] == "True False"
    assert lines[7].startswith("NetError adding 10.234.3.100/32 to nosuch0")


GARP = """
    import ipaddress
    from hadirector.kernel.garp import Announcer
    with Announcer("eth0") as a:
        print(a.announce([ipaddress.ip_address(x) for x in sys.argv[1:]]))
"""


def test_gratuitous_arp_and_na_move_a_neighbours_cache_entry(lan):  # RFC 5798 6.4.2
    vip4, vip6 = lan.vip4(), lan.vip6()
    # Node 2 holds the VIP first; node 3 learns it by pinging.
    sh("ip", "addr", "add", f"{vip4}/32", "dev", "eth0", ns=lan.ns(2))
    sh("ip", "addr", "add", f"{vip6}/128", "dev", "eth0", "nodad", ns=lan.ns(2))
    sh("ping", "-c1", "-W2", str(vip4), ns=lan.ns(3))
    sh("ping", "-6", "-c1", "-W2", str(vip6), ns=lan.ns(3))
    mac = {i: sh("cat", "/sys/class/net/eth0/address", ns=lan.ns(i)).stdout.strip() for i in (1, 2)}

    def neigh(ip) -> str:
        return sh("ip", "neigh", "show", str(ip), "dev", "eth0", ns=lan.ns(3)).stdout

    assert mac[2] in neigh(vip4) and mac[2] in neigh(vip6)
    sh("ip", "addr", "del", f"{vip4}/32", "dev", "eth0", ns=lan.ns(2))
    sh("ip", "addr", "del", f"{vip6}/128", "dev", "eth0", ns=lan.ns(2))
    sh("ip", "addr", "add", f"{vip4}/32", "dev", "eth0", ns=lan.ns(1))
    sh("ip", "addr", "add", f"{vip6}/128", "dev", "eth0", "nodad", ns=lan.ns(1))
    res = run_in(lan.ns(1), GARP, str(vip4), str(vip6))
    assert res.stdout.strip() == "2", res.stderr
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not (mac[1] in neigh(vip4) and mac[1] in neigh(vip6)):
        time.sleep(0.05)
    assert mac[1] in neigh(vip4), neigh(vip4)
    assert mac[1] in neigh(vip6), neigh(vip6)


LINKS_AND_HOST = """
    import asyncio, ipaddress, json, subprocess
    from hadirector.kernel.addresses import AddressManager
    async def main():
        m = AddressManager()
        print(await m.link_state("eth0"))
        subprocess.run(["ip", "link", "set", "eth0", "down"], check=True)
        print(await m.link_state("eth0"))
        subprocess.run(["ip", "link", "set", "eth0", "up"], check=True)
        print(await m.link_state("nosuch0"))
        host = await m.host_addresses()
        print(json.dumps({k: sorted(str(a) for a, _f in v) for k, v in host.items()}, sort_keys=True))
        for i in range(300):            # a dump longer than one datagram
            subprocess.run(["ip", "addr", "add", f"10.99.{i // 250}.{i % 250 + 1}/32", "dev", "lo"], check=True)
        print(len(await m.list_addresses("lo", 4)))
        print("pyroute2" in sys.modules)
    asyncio.run(main())
"""


def test_link_state_and_address_dumps_read_the_kernel_without_pyroute2(lan):
    res = run_in(lan.ns(1), LINKS_AND_HOST, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("LinkState(name='eth0', index=") and "up=True, exists=True" in lines[0]
    assert lines[1].startswith("LinkState(name='eth0', index=") and "up=False, exists=True" in lines[1]
    assert lines[2] == "LinkState(name='nosuch0', index=0, up=False, exists=False)"
    # As ``ip addr`` has them (the link flap above took the v6 global address).
    ip_j = json.loads(sh("ip", "-j", "addr", "show", "dev", "eth0", ns=lan.ns(1)).stdout)
    expected = sorted(f"{a['local']}/{a['prefixlen']}" for a in ip_j[0]["addr_info"])
    got = json.loads(lines[3])
    assert got["eth0"] == expected and "10.234.3.1/24" in expected
    assert got["lo"] == ["127.0.0.1/8", "::1/128"]
    assert lines[4] == "301"            # 127.0.0.1 and the 300 added
    assert lines[5] == "False"          # the VRRP path's rtnetlink needs no pyroute2
