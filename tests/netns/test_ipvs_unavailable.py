"""A director pair on a kernel without IPVS (this host: no ip_vs, no module loading).

Two real ``hadirector run`` agents with the same config: vi_1 carries the VIP of a
virtual service (the instance the LVS side follows), vi_2 is VRRP only. Neither can
program IPVS, so neither may hold vi_1's VIP (a director that holds a VIP it cannot
forward black-holes the service); both must keep running, retrying with backoff, and
vi_2 must elect as usual. Checked from outside the agents: ``ip addr`` in each
namespace, the processes, their JSON logs, state.json and ``hadirector status``.

The test needs a host kernel without IPVS, like this one, and says so if run on another
(a skip would count as a failure); IPVS appearing while the agent runs is tested in
the kernel lab (tests/kernel/test_ipvs_appears.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from lab.agents import HADIRECTOR, ROOT, AgentProc, holders, instance_config, wait_for
from lab.lan import Lan

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ADVERT = 0.1
HIGH, LOW = 150, 100
START_TIMEOUT = 15.0
API_PORT = 9131        # 127.0.0.1 inside each node's own namespace


@pytest.fixture
def lan():
    lab = Lan("iu", nodes=2, net=43)
    try:
        yield lab.up()
    finally:
        lab.down()


def director_config(lan: Lan, priority: int) -> tuple[list[dict], dict]:
    vi_1 = instance_config(lan, name="vi_1", vrid=51, priority=priority, advert=ADVERT)
    vi_2 = instance_config(lan, name="vi_2", vrid=52, priority=priority, advert=ADVERT)
    vi_2["virtual_ips"] = [str(lan.vip4(101))]
    extra = {
        "api": {"listen": f"127.0.0.1:{API_PORT}"},
        "virtual_services": [{
            "name": "web", "address": str(lan.vip4()), "port": 80, "scheduler": "rr",
            "forward": "dr", "real_servers": [{"address": str(lan.ip4(50))}],
        }],
    }
    return [vi_1, vi_2], extra


def test_directors_without_ipvs_keep_running_in_fault_and_neither_holds_the_service_vip(lan, tmp_path):
    assert not os.path.exists("/proc/net/ip_vs"), "this test needs a host kernel without IPVS"
    agents = [AgentProc(lan, n, tmp_path, *director_config(lan, prio))
              for n, prio in ((1, HIGH), (2, LOW))]
    try:
        for a in agents:
            a.start()
        vip, vrrp_only_vip = lan.vip4(), lan.vip4(101)
        # vi_2 (VRRP only) elects as usual: the higher priority holds its VIP.
        wait_for(lambda: holders(lan, vrrp_only_vip, (1, 2)) == [1] and agents[1].role("vi_2") == "BACKUP",
                 START_TIMEOUT, interval=0.05, what="vi_2 elected on node 1")
        # Several retry periods (1 s, 2 s, 4 s): the agents stay up, vi_1 stays in FAULT
        # and its VIP on no director, at every look.
        seen_vip: list[tuple[float, list[int]]] = []

        def three_retries_failed() -> bool:
            held = holders(lan, vip, (1, 2))
            if held:
                seen_vip.append((time.monotonic(), held))
            return all(any(e.get("attempt", 0) >= 5 for e in a.events("ipvs.retry_scheduled")) for a in agents)

        wait_for(three_retries_failed, 30.0, interval=0.1, what="three failed retries on both nodes")
        assert seen_vip == [], f"the service VIP was held by a director without IPVS: {seen_vip}"
        for a in agents:
            assert a.alive(), a.log_text()[-3000:]
            log = a.log_text()
            assert "Traceback" not in log, log[-3000:]
            assert a.role("vi_1") == "FAULT"
            assert a.state()["instances"]["vi_1"]["faults"] == ["ipvs_unavailable"]
            assert a.state()["instances"]["vi_1"]["holds_vips"] is not True
            unavailable = a.events("ipvs.unavailable")
            assert len(unavailable) == 1, unavailable
            assert unavailable[0]["errno"] == "ENOENT" and unavailable[0]["instances"] == ["vi_1"]
            assert "generic netlink family 'IPVS'" in unavailable[0]["reason"]
            retries = a.events("ipvs.retry_scheduled")
            assert [r["delay"] for r in retries[:4]] == [1.0, 2.0, 4.0, 8.0]
            # vi_1 went straight to FAULT: never BACKUP or MASTER on the way.
            vi_1 = [(e["old"], e["new"]) for e in a.events("vrrp.role_changed") if e["instance"] == "vi_1"]
            assert vi_1 == [("INIT", "FAULT")], vi_1
        assert holders(lan, vrrp_only_vip, (1, 2)) == [1] and agents[0].role("vi_2") == "MASTER"

        # What an operator sees.
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        status = subprocess.run(["ip", "netns", "exec", lan.ns(1), *HADIRECTOR, "status",
                                 "-c", str(agents[0].config_path)],
                                capture_output=True, text=True, timeout=30, env=env, cwd=str(ROOT))
        assert status.returncode == 0, status.stderr
        assert "IPVS UNAVAILABLE" in status.stdout and "ENOENT" in status.stdout, status.stdout
        assert "fault (ipvs_unavailable)" in status.stdout, status.stdout

        # A clean stop, still: exit 0 and the VRRP-only VIP released.
        for a in agents:
            a.signal(signal.SIGTERM)
        for a in agents:
            assert a.proc.wait(15) == 0
        assert holders(lan, vrrp_only_vip, (1, 2)) == []
    finally:
        for a in agents:
            a.stop()
