"""The asyncio shell around one ``VrrpMachine``: socket in, timer, actions out.

Theory of operation (aioquic's protocol.py shape):

* input: the raw socket's fd is watched with ``loop.add_reader``; each datagram is
  parsed and decoded (``parse_ip_packet`` / ``decode``) and, if it is an advert, fed to
  ``machine.receive_advert(adv, src, now)``. A ``Reject`` is counted and logged at a
  bounded rate (one line per reason per ``DropLog.interval``), because a raw socket
  hears anything on protocol 112 and a flood must not become a log flood. An advert
  for our VRID from our own source address is dropped before the machine sees it and
  logged as an error (``vrrp.own_address_advert_received``): someone else sends with
  our address (``_own_address_advert``).
* time: ONE ``loop.call_at`` handle, re-armed from ``machine.get_timer()`` after every
  input. No sleep loops. ``now`` is ``loop.time()`` (monotonic), the same clock
  ``call_at`` uses, so deadlines from the machine are used as they are.
* output: ``_drain()`` pulls ``machine.actions()``; ``SendAdvert`` is encoded (per
  destination: the v3 checksum covers the destination, RFC 5798 5.2.8) and sent,
  ``RoleChanged`` is logged as ``vrrp.role_changed`` and handed to the agent's callback,
  which adds/removes VIPs, sends GARP and runs notify scripts. The driver itself never
  touches addresses: a role change is an event, not a side effect.

Signed adverts (``instance.auth``, vrrp/auth.py): an advert for our VRID and version is
verified before the machine sees any field of it, and every advert we send is signed
once and copied to each destination; both go through ``self.gate``
(agent/advert_auth.py ``AdvertGate``), which reads the wall clock for the trailer while
the machine keeps running on the loop's monotonic clock. A reload that changes only
``auth`` or ``peers`` swaps the gate's ``AdvertAuth`` and keeps the machine.

The driver is synchronous apart from the loop callbacks, so a role change is handed
to the agent in the same loop iteration as the packet or timer that caused it.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from hadirector.model import IPAddress, VrrpInstance
from hadirector.vrrp.codec import Advert, IpPacket, Reject, decode, encode, parse_ip_packet
from hadirector.vrrp.machine import (
    IntervalBounded, MasterWish, PeerMisconfigured, Reannounce, RoleChanged, SendAdvert, State,
    VrrpMachine,
)

from hadirector.logging import get_logger

from .advert_auth import AdvertGate
from .rearm import rearm

# How many datagrams one readable event may consume before yielding to the loop:
# a flood of junk must not starve timers (our own adverts are timer driven).
MAX_READS_PER_EVENT = 64
UNKNOWN_PEER = "unknown_peer"      # unicast mode: sender is not a configured peer


class Transport(Protocol):
    """What the driver needs from ``hadirector.kernel.vrrp_socket.VrrpSocket`` (fakeable)."""

    family: int
    peers: tuple[IPAddress, ...]
    group: IPAddress

    def fileno(self) -> int: ...
    def recv(self): ...                      # -> ReceivedPacket | None
    def send_to(self, payload: bytes, dst: IPAddress, src: IPAddress | None = None) -> None: ...
    def destinations(self) -> tuple[IPAddress, ...]: ...
    def close(self) -> None: ...


@dataclass
class DropLog:
    """At most one log line per key per ``interval`` seconds; counts what it swallowed."""

    interval: float = 10.0
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def admit(self, key: str, now: float) -> int | None:
        """None: stay quiet. Otherwise log now, reporting this many suppressed lines."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


# Called with (driver, change) for every RoleChanged, synchronously.
RoleCallback = Callable[["VrrpDriver", RoleChanged], None]


class VrrpDriver:
    def __init__(
        self,
        instance: VrrpInstance,
        *,
        transport: Transport,
        primary_address: IPAddress,
        on_role_changed: RoleCallback | None = None,
        on_view_changed: Callable[["VrrpDriver"], None] | None = None,
        on_master_wish: Callable[["VrrpDriver", MasterWish], None] | None = None,
        on_reannounce: Callable[["VrrpDriver", Reannounce], None] | None = None,
        sync_group: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        log=None,
        drop_log_interval: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.transport = transport
        self.primary_address = primary_address
        self.on_role_changed = on_role_changed
        self.on_reannounce = on_reannounce
        # Called when what a status reader sees changed (master address/priority,
        # effective priority) without a role change: the agent rewrites state.json.
        self.on_view_changed = on_view_changed
        self._view: tuple | None = None
        self.loop = loop or asyncio.get_running_loop()
        # Sync-group members do not promote themselves: their MasterWish goes to the
        # agent's group policy, which moves the whole group together.
        self.machine = VrrpMachine(instance, primary_address=primary_address, now=self.loop.time(),
                                   sync_group=sync_group)
        self.on_master_wish = on_master_wish
        self.log = (log or get_logger("hadirector.vrrp")).bind(instance=instance.name, vrid=instance.vrid)
        self.rejected: dict[str, int] = {}       # reason -> count (decode + machine + peers + auth)
        self.send_errors = 0
        self._drops = DropLog(drop_log_interval)
        # Signing, verifying and their counters (status reads ``gate.auth``/``gate.verified``).
        self.gate = AdvertGate(instance, wall_clock=wall_clock, drops=self._drops, log=self.log)
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._started = False

    # --- lifecycle ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    def start(self) -> None:
        """Start listening and leave INITIALIZE (RFC 5798 6.4.1)."""
        if self._started:
            return
        self._started = True
        self.loop.add_reader(self.transport.fileno(), self._on_readable)
        self._reading = True
        self.machine.start(self.loop.time())
        self._drain()

    def shutdown(self) -> None:
        """Graceful stop: a master sends priority 0 (RFC 5798 6.4.3) and steps down.

        The RoleChanged(..., INITIALIZE) goes to the agent like any other, which
        removes the VIPs. The socket stays open until ``close()`` so that the
        priority-0 advert is actually sent.
        """
        self.machine.shutdown(self.loop.time())
        self._drain()
        self._stop_reading()

    def close(self) -> None:
        self._stop_reading()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.transport.fileno())
            self._reading = False

    # --- inputs from the agent (trackers, sync groups) ---------------------------------

    def set_fault(self, fault: bool, reason: str) -> None:
        self.machine.set_fault(fault, reason, self.loop.time())
        self._drain()

    def set_priority_delta(self, delta: int, reason: str) -> None:
        self.machine.set_priority_delta(delta, reason, self.loop.time())
        self._drain()

    def reconfigure(self, instance: VrrpInstance) -> bool:
        """Reload: adopt ``instance`` in place (``VrrpMachine.reconfigure``); False when
        the change needs a new driver. Never a role change. A new ``auth`` replaces only
        the signing/verifying state, never the machine."""
        if not self.machine.reconfigure(instance, self.loop.time()):
            return False
        old, self.instance = self.instance, instance
        self.gate.reconfigure(old, instance)
        self._drain()
        return True

    def hold_preemption(self, seconds: float) -> None:
        """``VrrpMachine.hold_preemption`` for ``seconds`` from now."""
        self.machine.hold_preemption(self.loop.time() + seconds)

    def hold_takeover(self, held: bool) -> None:
        """``VrrpMachine.hold_takeover``: the agent's start-up hold."""
        self.machine.hold_takeover(held, self.loop.time())
        self._drain()

    def force_state(self, state: State, reason: str) -> bool:
        changed = self.machine.force_state(state, reason, self.loop.time())
        self._drain()
        return changed

    # --- packets --------------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(MAX_READS_PER_EVENT):
            try:
                pkt = self.transport.recv()
            except OSError as e:
                self._drop(f"recv_error:{errno.errorcode.get(e.errno, e.errno)}", None)
                return
            if pkt is None:
                return
            self.feed(pkt)

    def feed(self, pkt) -> Reject | str | None:
        """Validate one received datagram and hand it to the machine.

        Returns the drop reason, or None when the machine acted on the advert.
        """
        now = self.loop.time()
        src = pkt.src
        trailer_len = self.gate.trailer_len
        if self.transport.family == 4:
            ip = parse_ip_packet(pkt.ip_packet if pkt.ip_packet is not None else b"")
            if isinstance(ip, Reject):
                return self._drop(ip, src)
            src = ip.src
            payload = ip.payload
            result = decode(payload, src=ip.src, dst=ip.dst, ttl=ip.ttl, family=4, trailer_len=trailer_len)
        else:
            dst = pkt.dst if pkt.dst is not None else self.transport.group
            payload = pkt.payload
            result = decode(payload, src=src, dst=dst, ttl=pkt.ttl, family=6, trailer_len=trailer_len)
        if isinstance(result, Reject):
            return self._drop(result, src)
        ours = result.vrid == self.instance.vrid
        if ours and src == self.primary_address:
            return self._own_address_advert(result, src)
        if self.transport.peers and src not in self.transport.peers:
            # Unicast mode talks to its configured peers only (keepalived does the same).
            return self._drop(UNKNOWN_PEER, src)
        if ours and self.instance.peers and src not in self.instance.peers:
            # Multicast allow-list (peers:): anyone else's advert for our VRID is dropped.
            return self._drop(UNKNOWN_PEER, src)
        if ours and result.version == self.instance.version:
            verdict = self.gate.admit(payload, result, src, now)
            if verdict is not None:
                return self._drop(verdict, src)
        reject = self.machine.receive_advert(result, src, now)
        if reject is not None:
            self._drop(reject, src, quiet=True)
        self._drain()
        return reject

    def _own_address_advert(self, adv: Advert, src: IPAddress) -> Reject:
        """An advert for our VRID from the address we send from. Our own never come
        back (multicast loop is off), so someone else uses our address: a second agent
        on this director, an address conflict on the LAN, or a forgery. Dropped: it is
        no peer. RFC 5798 6.4.2/6.4.3 break priority ties by comparing the sender's
        address with ours, and an equal address is neither higher nor lower; acting on
        it (a master steps down on a higher priority, a backup restarts its
        Master_Down_Timer) would let whoever sends it take the VIP away or keep us
        from taking it over. Logged loudly, at a bounded rate, and counted."""
        key = Reject.OWN_ADVERT.value
        self.rejected[key] = self.rejected.get(key, 0) + 1
        suppressed = self._drops.admit(key, self.loop.time())
        if suppressed is not None:
            self.log.error("vrrp.own_address_advert_received", reason="own_source_address",
                           src=str(src), priority=adv.priority,
                           advert_interval=adv.max_advert_int, suppressed=suppressed,
                           total=self.rejected[key])
        return Reject.OWN_ADVERT

    def _drop(self, reason: Reject | str, src: IPAddress | None, quiet: bool = False) -> Reject | str:
        key = reason.value if isinstance(reason, Reject) else reason
        self.rejected[key] = self.rejected.get(key, 0) + 1
        suppressed = self._drops.admit(key, self.loop.time())
        if suppressed is not None:
            # Adverts for other VRIDs on a shared LAN are normal: debug, not warning.
            emit = self.log.debug if quiet else self.log.warning
            emit("vrrp.advert_rejected", reason=key, src=str(src) if src else None,
                 suppressed=suppressed, total=self.rejected[key])
        return reason

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self.machine.get_timer()
        # asyncio may run a handle up to one clock resolution early; the deadline
        # has been reached as far as the loop is concerned.
        now = self.loop.time()
        if deadline is not None and now < deadline:
            now = deadline if deadline - now < 0.001 else now
        self.machine.handle_timer(now)
        self._drain()

    # --- outputs --------------------------------------------------------------------

    def _drain(self) -> None:
        actions = self.machine.actions()
        # Adverts first: RFC 5798 6.4.2 sends the ADVERTISEMENT before the rest of the
        # transition to Master, and a peer should not wait for our log line, state
        # file and VIP bookkeeping to learn who the master is.
        for action in actions:
            if isinstance(action, SendAdvert):
                self._send(action)
        for action in actions:
            if isinstance(action, RoleChanged):
                self._role_changed(action)
            elif isinstance(action, MasterWish):
                self.log.debug("vrrp.master_wished", wants=action.wants, reason=action.reason)
                if self.on_master_wish is not None:
                    self.on_master_wish(self, action)
            elif isinstance(action, PeerMisconfigured):
                suppressed = self._drops.admit(f"misconfigured:{action.src}", self.loop.time())
                if suppressed is not None:
                    self.log.warning("vrrp.peer_misconfigured", reason=action.reason.value,
                                     src=str(action.src), detail=action.detail,
                                     suppressed=suppressed)
            elif isinstance(action, Reannounce):
                # The machine bounds how often (REANNOUNCE_HOLDOFF): no rate limit here.
                self.log.warning("vrrp.lower_priority_master_heard", peer=str(action.peer),
                                 peer_priority=action.peer_priority,
                                 priority=self.machine.effective_priority,
                                 reason="reannouncing_vips")
                if self.on_reannounce is not None:
                    self.on_reannounce(self, action)
            elif isinstance(action, IntervalBounded):
                # A spoofed or misconfigured Max Adver Int (see vrrp/timers.py): one
                # line per source per DropLog interval, so a peer stuck at it is no flood.
                suppressed = self._drops.admit(f"interval:{action.src}", self.loop.time())
                if suppressed is not None:
                    self.log.warning(
                        "vrrp.advert_interval_bounded", src=str(action.src),
                        advertised=action.advertised, used=action.used,
                        configured=action.configured, suppressed=suppressed,
                        reason="too_long" if action.advertised > action.used else "too_short")
        self._arm()
        m = self.machine
        view = (m.state, m.master_address, m.master_priority, m.effective_priority)
        if view != self._view:
            self._view = view
            if self.on_view_changed is not None:
                self.on_view_changed(self)

    def _arm(self) -> None:
        self._timer = rearm(self.loop, self._timer, self.machine.get_timer(), self._on_timer)

    def _send(self, action: SendAdvert) -> None:
        adv: Advert | None = action.advert
        if adv is None:
            return
        dsts = self.transport.destinations()
        # One signature per advert (AdvertGate.sign), copied to every destination.
        pdu, trailer = self.gate.sign(adv, self.primary_address, dsts[0]) if dsts else (b"", b"")
        for dst in dsts:
            try:
                if trailer and dst is dsts[0] and adv.family == 4:
                    payload = pdu + trailer      # the IPv4 checksum does not cover the trailer
                else:
                    payload = encode(adv, self.primary_address, dst, trailer)
                self.transport.send_to(payload, dst, self.primary_address)
            except OSError as e:
                # ENETDOWN / ENOBUFS while the link is down: the link tracker turns
                # that into FAULT; here we only count and log (bounded).
                self.send_errors += 1
                name = errno.errorcode.get(e.errno, str(e.errno))
                suppressed = self._drops.admit(f"send:{name}", self.loop.time())
                if suppressed is not None:
                    self.log.warning("vrrp.advert_send_failed", reason=name, dst=str(dst),
                                     suppressed=suppressed)

    def _role_changed(self, change: RoleChanged) -> None:
        self.log.info(
            "vrrp.role_changed", old=change.old.value, new=change.new.value,
            reason=change.reason, detail=change.detail or None,
            priority=self.machine.effective_priority,
            # The advert behind the change, if one caused it (keepalived logs it too).
            peer=str(change.peer) if change.peer is not None else None,
            peer_priority=change.peer_priority,
        )
        if self.on_role_changed is not None:
            self.on_role_changed(self, change)
