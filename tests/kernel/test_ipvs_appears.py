"""A director started on a kernel whose IPVS is not there yet recovers by itself when
ip_vs is loaded: FAULT (``ipvs_unavailable``) and no VIP while it is missing; then the
table programmed, the sync daemon started and the VIP taken, with no restart.

The lab's kernel has ip_vs (loaded at boot) and would load it again on the first
generic netlink lookup of "IPVS", so the test withholds it: the kernel's modprobe path
is emptied (``__request_module`` then answers ENOENT at once) and ip_vs and its holders
(schedulers ...) are unloaded. Whatever happens, the modprobe path and every module
loaded before come back at the end: the kernel tests after this one run in the same
boot. It unloads modules, so it runs only inside the kernel lab, never on a host whose
own IPVS may be in use.

One agent in a one-node namespace LAN (lab.lan, area "ia", 10.234.44.0/24); the oracles
are outside it: ``ip addr``, ``ipvsadm -Ln`` and ``ipvsadm -L --daemon`` in its
namespace, plus its JSON log and state.json.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from lab.kernel.runner import IN_LAB_ENV
from lab.agents import AgentProc, instance_config, wait_for
from lab.lan import Lan, sh

pytestmark = [pytest.mark.kernel, pytest.mark.netns, pytest.mark.slow]

MODPROBE_PATH = Path("/proc/sys/kernel/modprobe")
START_TIMEOUT = 180.0        # agent start-up under TCG
# The backoff caps at 30 s: IPVS is noticed at most that long after it appears, plus
# the agent's own work and an election under TCG.
RECOVER_TIMEOUT = 30.0 + 90.0
SYNCID = 44


def loaded() -> set[str]:
    with open("/proc/modules") as f:
        return {line.split()[0] for line in f}


def ipvs_modules() -> list[str]:
    """ip_vs and the modules that hold it (schedulers, ftp/sip helpers, xt_ipvs), holders
    first (the unload order)."""
    if "ip_vs" not in loaded():
        return []
    holders = sorted(os.listdir("/sys/module/ip_vs/holders"))
    return holders + ["ip_vs"]


def unload(modules: list[str], timeout: float = 60.0) -> None:
    """rmmod in order; a module still referenced (a namespace of an earlier test being
    torn down by the kernel) is retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    pending = list(modules)
    while pending:
        last = subprocess.run(["rmmod", pending[0]], capture_output=True, text=True)
        if last.returncode == 0 or pending[0] not in loaded():
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            refcnt = Path(f"/sys/module/{pending[0]}/refcnt")
            raise AssertionError(f"cannot unload {pending[0]} (refcnt "
                                 f"{refcnt.read_text().strip() if refcnt.exists() else '?'}): "
                                 f"{last.stderr.strip()}")
        time.sleep(0.5)


@contextlib.contextmanager
def ipvs_withheld() -> Iterator[list[str]]:
    """The block runs with ip_vs unloaded and not loadable; yields what was unloaded.
    Afterwards the modprobe path and the unloaded modules are put back, whatever
    happened (``restore_ipvs`` may also be called earlier by the test)."""
    saved_path = MODPROBE_PATH.read_text()
    modules = ipvs_modules()
    try:
        MODPROBE_PATH.write_text("\n")          # empty: request_module fails with ENOENT
        unload(modules)
        assert "ip_vs" not in loaded()
        yield modules
    finally:
        restore_ipvs(saved_path, modules)


def restore_ipvs(path: str, modules: list[str]) -> None:
    MODPROBE_PATH.write_text(path)
    for m in ["ip_vs"] + [m for m in modules if m != "ip_vs"]:
        if m not in loaded():
            subprocess.run(["modprobe", m], capture_output=True, text=True, timeout=120)
    missing = [m for m in modules if m not in loaded()]
    assert not missing, f"could not load {missing} again"


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def lan():
    lab = Lan("ia", nodes=1, net=44)
    try:
        yield lab.up()
    finally:
        lab.down()


def test_a_director_without_ipvs_waits_in_fault_then_programs_ipvs_and_takes_the_vip_when_it_appears(
        lan, tmp_path):
    assert os.environ.get(IN_LAB_ENV) == "1", "unloads ip_vs: runs only inside the kernel lab"
    vip, rs = lan.vip4(), lan.ip4(50)
    inst = instance_config(lan, name="vi_1", vrid=44, priority=150, advert=1.0)
    extra = {
        "lvs": {"sync_daemon": {"interface": "eth0", "syncid": SYNCID}},
        "virtual_services": [{"name": "web", "address": str(vip), "port": 80, "scheduler": "rr",
                              "forward": "dr", "real_servers": [{"address": str(rs)}]}],
    }
    agent = AgentProc(lan, 1, tmp_path, [inst], extra)
    saved_path = MODPROBE_PATH.read_text()
    try:
        with ipvs_withheld() as modules:
            agent.start()
            wait_for(lambda: agent.role("vi_1") == "FAULT", START_TIMEOUT, interval=0.2,
                     what="vi_1 in FAULT")
            held = []

            def retried_twice() -> bool:
                if lan.has_ip(1, vip):
                    held.append(time.monotonic())
                return any(e.get("attempt", 0) >= 3 for e in agent.events("ipvs.retry_scheduled"))

            wait_for(retried_twice, 60.0, interval=0.5, what="two failed retries")
            assert held == [], "a director without IPVS held the VIP"
            assert agent.alive(), agent.log_text()[-3000:]
            assert agent.state()["instances"]["vi_1"]["faults"] == ["ipvs_unavailable"]
            unavailable = agent.events("ipvs.unavailable")
            assert len(unavailable) == 1 and unavailable[0]["errno"] == "ENOENT", unavailable

            # IPVS appears: modprobe allowed again, ip_vs and the schedulers loaded.
            appeared = time.time()
            restore_ipvs(saved_path, modules)
            wait_for(lambda: agent.role("vi_1") == "MASTER" and lan.has_ip(1, vip), RECOVER_TIMEOUT,
                     interval=0.5, what="vi_1 MASTER with the VIP after ip_vs was loaded")

        table = sh("ipvsadm", "-Ln", ns=lan.ns(1)).stdout
        assert f"TCP  {vip}:80 rr" in table and f"-> {rs}:80" in table and "Route" in table, table
        daemons = sh("ipvsadm", "-L", "--daemon", ns=lan.ns(1)).stdout
        assert f"master sync daemon (mcast=eth0, syncid={SYNCID}," in daemons, daemons
        assert agent.alive() and "Traceback" not in agent.log_text(), agent.log_text()[-3000:]
        assert agent.state()["instances"]["vi_1"]["faults"] == []
        available = agent.events("ipvs.available")
        assert len(available) == 1 and available[0]["instances"] == ["vi_1"], available
        assert available[0]["reason"] == "retry"
        # Programmed first, fault cleared after: the table is in before vi_1 elects.
        programmed = [e for e in agent.events("ipvs.table_changed") if e.get("reason") == "retry"]
        cleared = [e for e in agent.events("vrrp.role_changed")
                   if e["instance"] == "vi_1" and e["old"] == "FAULT"]
        assert programmed and cleared and cleared[0]["new"] == "BACKUP"
        assert ts(programmed[0]) <= ts(available[0]) <= ts(cleared[0])
        assert ts(available[0]) >= appeared - 1.0
        # Stopped cleanly: exit 0, VIP released.
        assert agent.stop(timeout=60) == 0
        assert not lan.has_ip(1, vip)
    finally:
        agent.stop(timeout=60)
        assert MODPROBE_PATH.read_text() == saved_path
        assert "ip_vs" in loaded()
