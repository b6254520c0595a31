"""The scale-out shell: executes the announce gate (``director.gate``) in the kernel.

Theory of operation
-------------------
``ScaleOutComponent`` is an agent component, started after the LVS side and stopped
before it. It fails closed:

* start: the gate table is flushed (a dead predecessor's routes go; the systemd unit's
  ``ExecStopPost=hadirector withdraw`` does the same after a crash), the VIPs are put on
  ``lo`` (IPVS sees only packets for local addresses), ``sloppy_tcp``, ``sloppy_sctp``
  and ``schedule_icmp`` are set once IPVS is there, then the gate decides;
* every health change and every IPVS availability change (``LvsController.listeners``)
  and the gate's one timer (hold-down, drain grace) feed the gate; its ``Announce`` /
  ``Withdraw`` add or delete ``VIP/32 dev lo table T proto P``; BIRD does the rest;
* stop: the gate withdraws every VIP, waits ``drain_grace`` (the router moves the flows
  to the other directors meanwhile), then the table is flushed and the component
  returns, so the LVS side (stopped after it) tears IPVS down only then.

BIRD is read, never driven: ``birdc show protocols`` and ``show bfd sessions`` every few
seconds for status and metrics; a missing birdc or a BIRD that does not answer is
reported as such and changes nothing else.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from typing import Any

from hadirector import model
from hadirector.api import snapshot as s
from hadirector.director.gate import Announce, AnnounceGate, ServiceView, TearDown, Withdraw
from hadirector.health.policy import HealthState
from hadirector.kernel import sysctl
from hadirector.ipvs.table import ServiceKey, dest_digest
from hadirector.logging import get_logger
from hadirector.scaleout import bird

log = get_logger("hadirector.scaleout")

BIRD_POLL = 2.0          # seconds between birdc reads (status only)
# In node.state_dir while the operator has the director drained: a restart (an upgrade,
# a crash) keeps it out of the ECMP set until ``hadirector drain --undo``.
DRAINED_FILE = "scale-out-drained"
BIRDC_TIMEOUT = 2.0


class ScaleOutComponent:
    def __init__(self, lvs, *, routes_factory=None, sysctl_root=sysctl.VS_SYSCTL) -> None:
        self.lvs = lvs
        self.config: model.Config = lvs.config
        self._routes_factory = routes_factory
        self._sysctl_root = sysctl_root
        self.routes: Any = None
        self.gate: AnnounceGate | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._torn_down = asyncio.Event()
        self._poll: asyncio.Task | None = None
        self._tuned = False
        self.gate_changes = 0
        self.errors = 0
        self.bgp: list[bird.ProtocolState] = []
        self.bfd: list[bird.BfdSession] = []
        self.bird_error: str | None = "not read yet"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, agent) -> None:
        so = self.config.scale_out
        if so is None:
            return
        if self._routes_factory is None:
            from hadirector.kernel.gate_routes import GateRoutes

            self.routes = GateRoutes(so.table, so.route_protocol)
        else:
            self.routes = self._routes_factory(so.table, so.route_protocol)
        gone = self.routes.flush()
        if gone:
            log.warning("scaleout.gate_flushed", vips=sorted(map(str, gone)), table=so.table,
                        reason="left_by_a_previous_agent")
        self.gate = AnnounceGate(so, self.config.virtual_services)
        if os.path.exists(self._drained_path()):
            self.gate.drained = True
            log.warning("scaleout.still_drained", file=self._drained_path(), reason="drained_before_restart")
        for vip in self.gate.vips:
            try:
                if self.routes.bind_vip(vip):
                    log.info("scaleout.vip_bound", vip=str(vip), interface="lo", reason="ipvs_needs_a_local_address")
            except Exception as e:  # noqa: BLE001 - reported; the gate stays closed for nothing else
                self.errors += 1
                log.error("scaleout.vip_bind_failed", vip=str(vip), reason=str(e))
        self.lvs.listeners.append(self._changed)
        self._poll = asyncio.get_running_loop().create_task(self._poll_bird())
        log.info("scaleout.started", vips=[str(v) for v in self.gate.vips], table=so.table,
                 protocol=so.route_protocol, hold_down=so.hold_down, reason="config")
        self._changed()

    async def stop(self, agent) -> None:
        if self.gate is None:
            return
        if self._changed in self.lvs.listeners:
            self.lvs.listeners.remove(self._changed)
        self.gate.stop(now=_now())
        self._drain_effects()
        try:
            await asyncio.wait_for(self._torn_down.wait(), self.gate.so.drain_grace + 1.0)
        except asyncio.TimeoutError:
            log.error("scaleout.drain_timeout", reason="tearing_down_anyway")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        try:
            self.routes.flush()             # fail closed, whatever the gate thought
        finally:
            self.routes.close()
        log.info("scaleout.stopped", reason="agent_stopping")

    def update_config(self, new: model.Config) -> None:
        """A reload: the gate follows the new services; a VIP announced before and still
        listed keeps its state (no withdrawal, no new hold-down), one no longer listed is
        withdrawn now. The table, protocol and BGP settings take a restart (BIRD's
        config is rendered from them); a removed ``scale_out`` withdraws everything."""
        old, self.config = self.config, new
        if self.gate is None:
            if new.scale_out is not None:
                log.warning("scaleout.restart_needed", reason="scale_out_added_by_reload")
            return
        so = new.scale_out
        if so is None or (so.table, so.route_protocol) != (old.scale_out.table, old.scale_out.route_protocol):
            log.warning("scaleout.restart_needed", reason="scale_out_removed" if so is None
                        else "gate_table_changed", withdrawn=sorted(map(str, self.gate.announced())))
            self.gate.drain(True, now=_now())       # withdraw all until a restart
            self._drain_effects()
            return
        gate = AnnounceGate(so, new.virtual_services)
        gate.drained, gate.stopping = self.gate.drained, self.gate.stopping
        for vip, state in self.gate.vips.items():
            if vip in gate.vips:
                gate.vips[vip].announced = state.announced
                gate.vips[vip].ready_since = state.ready_since
                gate.vips[vip].reason = state.reason
            elif state.announced:
                self._gate_route(self.routes.delete, vip, "scaleout.withdrawn", "not_in_config")
        for vip in gate.vips:
            if vip not in self.gate.vips:
                try:
                    self.routes.bind_vip(vip)
                except Exception as e:  # noqa: BLE001
                    self.errors += 1
                    log.error("scaleout.vip_bind_failed", vip=str(vip), reason=str(e))
        self.gate = gate
        self._changed()

    def control_commands(self) -> dict:
        """``hadirector drain`` / ``drain --undo`` over the agent's control socket."""
        def command(drained: bool):
            def run() -> dict:
                self.drain(drained)
                vips = {str(v): st.reason or "announced" for v, st in self.gate.vips.items()} if self.gate else {}
                return {"ok": True, "drained": drained, "vips": vips}
            return run
        return {"drain": command(True), "undrain": command(False)}

    def _drained_path(self) -> str:
        return os.path.join(self.config.node.state_dir, DRAINED_FILE)

    def drain(self, drained: bool) -> None:
        """The operator takes this director out of the ECMP set (or puts it back); kept
        across restarts in the state directory."""
        try:
            if drained:
                os.makedirs(self.config.node.state_dir, exist_ok=True)
                with open(self._drained_path(), "w") as f:
                    f.write("drained by the operator (hadirector drain); hadirector drain --undo to end\n")
            elif os.path.exists(self._drained_path()):
                os.unlink(self._drained_path())
        except OSError as e:
            self.errors += 1
            log.error("scaleout.drain_not_kept", file=self._drained_path(), reason=str(e))
        if self.gate is not None:
            log.info("scaleout.drain_changed", drained=drained, reason="operator")
            self.gate.drain(drained, now=_now())
            self._drain_effects()

    # --- inputs ----------------------------------------------------------------------------

    def views(self) -> list[ServiceView]:
        lvs = self.lvs
        programmed = lvs.reconciler is not None and lvs.programming
        out = []
        for vs in self.config.virtual_services:
            if vs.name not in self.gate.so.services:
                continue
            up = pending = 0
            for rs in vs.real_servers:
                state = HealthState.UP if rs.check is None else lvs.health.ipvs_health(vs, rs)
                up += state is HealthState.UP
                pending += state is HealthState.UNKNOWN
            out.append(ServiceView(vs.name, programmed=programmed, up=up, pending=pending))
        return out

    def _changed(self) -> None:
        if self.gate is None:
            return
        if self.lvs.reconciler is not None and not self._tuned:
            self._tune()
        self.gate.update(self.views(), now=_now())
        self._drain_effects()

    def _on_timer(self) -> None:
        self._timer = None
        self.gate.handle_timer(now=_now())
        self._drain_effects()

    # --- effects ---------------------------------------------------------------------------

    def _drain_effects(self) -> None:
        for effect in self.gate.effects():
            if isinstance(effect, Announce):
                self._gate_route(self.routes.add, effect.vip, "scaleout.announced", effect.reason)
            elif isinstance(effect, Withdraw):
                self._gate_route(self.routes.delete, effect.vip, "scaleout.withdrawn", effect.reason)
            elif isinstance(effect, TearDown):
                self._torn_down.set()
        self._arm()

    def _gate_route(self, call, vip, event: str, reason: str) -> None:
        try:
            call(vip)
        except Exception as e:  # noqa: BLE001 - a refused route must not stop the agent
            self.errors += 1
            log.error("scaleout.gate_failed", vip=str(vip), action=event.rpartition(".")[2], reason=str(e))
            return
        self.gate_changes += 1
        log.info(event, vip=str(vip), table=self.gate.so.table, reason=reason)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.gate.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _tune(self) -> None:
        try:
            changes = sysctl.apply_values(sysctl.SCALE_OUT_SYSCTLS, self._sysctl_root)
        except sysctl.SysctlError as e:
            self.errors += 1
            log.error("scaleout.sysctl_failed", reason=str(e))
            return
        self._tuned = True
        for c in changes:
            log.info("scaleout.sysctl_set", sysctl=f"net.ipv4.vs.{c.name}", old=c.old, new=c.new,
                     reason="scale_out_picks_up_flows_mid_stream")

    # --- BIRD, read-only -----------------------------------------------------------------

    async def _poll_bird(self) -> None:
        while True:
            await self.read_bird()
            await asyncio.sleep(BIRD_POLL)

    async def read_bird(self) -> None:
        so = self.gate.so
        if shutil.which("birdc") is None:
            self.bird_error = "birdc not installed"
            return
        try:
            protocols = await _birdc(so.bird_socket, "show", "protocols")
            sessions = await _birdc(so.bird_socket, "show", "bfd", "sessions") if so.bfd else ""
        except (OSError, asyncio.TimeoutError, RuntimeError) as e:
            self.bird_error = str(e) or type(e).__name__
            self.bgp, self.bfd = [], []
            return
        self.bird_error = None
        self.bgp = [p for p in bird.parse_protocols(protocols) if p.proto == "BGP"]
        self.bfd = bird.parse_bfd_sessions(sessions)

    # --- status -------------------------------------------------------------------------

    def scale_out_status(self) -> s.ScaleOutStatus | None:
        """The typed status for /status, /metrics and ``hadirector status``."""
        raw = self.status()
        if not raw:
            return None
        want = dict(sysctl.SCALE_OUT_SYSCTLS)
        return s.ScaleOutStatus(
            table=raw["table"], drained=raw["drained"],
            vips=tuple(s.ScaleOutVip(vip, v["announced"], v["reason"]) for vip, v in raw["vips"].items()),
            digests={k: v or "" for k, v in raw["digests"].items()},
            sysctls={k: v or "" for k, v in raw["sysctls"].items()},
            sysctl_drift=tuple(k for k, v in raw["sysctls"].items() if v != want[k]),
            bgp=tuple(s.BgpSessionStatus(**b) for b in raw["bgp"]),
            bfd=tuple(s.BfdSessionStatus(address=f["address"], interface=f["interface"], state=f["state"],
                                         up=f["state"] == "Up") for f in raw["bfd"]),
            bird_error=raw["bird_error"], gate_changes=raw["gate_changes"])

    def status(self) -> dict[str, Any]:
        if self.gate is None:
            return {}
        so = self.gate.so
        digests = {}
        backend = self.lvs.reconciler.backend if self.lvs.reconciler is not None else None
        for vs in self.config.virtual_services:
            if vs.name in so.services and backend is not None:
                try:
                    dump = backend.dump_service(ServiceKey.of(vs))
                    digests[vs.name] = dest_digest(dump.dests_of(ServiceKey.of(vs)).values())
                except Exception:  # noqa: BLE001 - status must answer
                    digests[vs.name] = None
        return {
            "table": so.table,
            "drained": self.gate.drained,
            "vips": {str(vip): {"announced": s.announced, "reason": s.reason}
                     for vip, s in self.gate.vips.items()},
            "digests": digests,
            "sysctls": sysctl.read_values([n for n, _ in sysctl.SCALE_OUT_SYSCTLS], self._sysctl_root),
            "bgp": [{"name": p.name, "state": p.state, "info": p.info, "established": p.established}
                    for p in self.bgp],
            "bfd": [{"address": b.address, "interface": b.interface, "state": b.state} for b in self.bfd],
            "bird_error": self.bird_error,
            "gate_changes": self.gate_changes,
        }


async def _birdc(socket_path: str, *command: str) -> str:
    """One ``birdc`` read, in a worker thread rather than an asyncio subprocess: a task
    cancelled while asyncio spawns a child (CPython 3.11, pipes not yet connected) makes
    the transport wait forever for pipes that never connect, so an agent failing just
    after start hung in ``asyncio.run``'s clean-up. A cancelled thread read is let go;
    it ends by itself within ``BIRDC_TIMEOUT`` (birdc killed), which bounds the wait of
    ``asyncio.run`` for the default executor."""
    return await asyncio.to_thread(_birdc_blocking, socket_path, *command)


def _birdc_blocking(socket_path: str, *command: str) -> str:
    try:
        r = subprocess.run(["birdc", "-s", socket_path, *command], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BIRDC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"birdc -s {socket_path}: no answer within {BIRDC_TIMEOUT:g} s") from None
    text = r.stdout.decode(errors="replace")
    if r.returncode != 0 or "Unable to connect" in text:
        raise RuntimeError(text.strip().splitlines()[-1] if text.strip() else f"birdc exit {r.returncode}")
    return text


def _now() -> float:
    return asyncio.get_running_loop().time()
