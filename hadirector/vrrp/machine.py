"""The VRRP state machine of one virtual router instance, with no I/O (RFC 5798 6.4).

Theory of operation
-------------------
``VrrpMachine`` is an aioquic-style protocol engine. Every input carries the time:

    m.start(now)                         Initialize -> Backup (or Master when owner)
    m.receive_advert(adv, src, now)      an advert already validated by codec.decode
    m.handle_timer(now)                  the deadline from get_timer() passed
    m.set_fault(True, "track_interface:eth0", now)
    m.set_priority_delta(-20, "track_script:chk_nginx", now)
    m.shutdown(now)

and the shell pulls what to do with ``actions()`` (``RoleChanged``, ``SendAdvert``,
``PeerMisconfigured``, ``IntervalBounded``) and re-arms ONE timer at ``get_timer()``. The machine never reads a
clock, sleeps or touches a socket; it does not add VIPs or send GARP either: the agent
does that when it sees ``RoleChanged(new=MASTER)`` (RFC 5798 6.4.1 "broadcast a
gratuitous ARP" is the shell's half of "transition to Master").

Timers: RFC 5798 has two (Adver_Timer in Master, Master_Down_Timer in Backup) but never
both at once, so one deadline is enough. keepalived's preempt_delay needs no timer of
its own: it is a time compared when a lower-priority advert arrives.

Fault sources and priority deltas are keyed by their ``reason`` string, so independent
trackers (interfaces, scripts, a sync group) can set and clear theirs without knowing
about each other: the machine is in FAULT while any fault reason is set, and the
effective priority is the configured one plus the sum of the deltas.

Sync groups (``hadirector.vrrp.group``): a member built with ``sync_group=True`` does
not take over on its own when its Master_Down_Timer fires; it emits
``MasterWish(True)`` and keeps waiting, and the group policy moves all members to
MASTER together once every member wishes it (keepalived 2.x
``vrrp_sync_can_goto_master``). Without this, members whose peers have different
priorities hand the group back and forth forever.

Master_Adver_Interval (v3) is learned from the master's adverts (RFC 5798 6.4.2 /
6.4.3) but only within ``timers.bounded_adver_interval`` of our own interval: a spoofed
40.95 s advert must not leave every router waiting ~140 s. A transition caused by an
advert (a higher priority or address, priority 0, a lower-priority master preempted)
names that advert's sender and priority in ``RoleChanged.peer`` / ``peer_priority``.

Allowed transitions are in ``_TRANSITIONS``; anything else is a bug and raises before
any state changes (h11 style).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hadirector.model import IPAddress, VrrpInstance
from hadirector.model import VrrpState as State  # the one VRRP state enum, by the machine's name
from hadirector.vrrp.codec import Advert, Reject
from hadirector.vrrp.timers import bounded_adver_interval, master_down_interval, skew_time

PRIORITY_OWNER = 255      # RFC 5798 5.2.4: the address owner
PRIORITY_STOP = 0         # RFC 5798 5.2.4: the master is leaving


class Reason:
    """Stable reason strings carried by RoleChanged (log field ``reason``)."""

    STARTUP = "startup"                          # Initialize -> Backup
    OWNER = "owner"                              # Initialize/Fault -> Master at priority 255
    MASTER_DOWN_TIMER = "master_down_timer"      # no advert for Master_Down_Interval
    PRIORITY_ZERO_RECEIVED = "priority_zero_received"  # took over Skew_Time after a priority-0 advert
    PREEMPTED = "preempted"                      # took over from a live lower-priority master
    HIGHER_PRIORITY_RECEIVED = "higher_priority_received"
    HIGHER_ADDRESS_RECEIVED = "higher_address_received"  # equal priority, larger primary address
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    SHUTDOWN = "shutdown"
    SYNC_GROUP = "sync_group"                    # forced by a vrrp sync group


# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class RoleChanged:
    """The instance changed state. On new=MASTER the agent adds the VIPs and sends GARP /
    unsolicited NA; on leaving MASTER it removes them. ``detail`` says more (e.g. which
    fault source) and may vary; ``reason`` is one of the ``Reason`` constants. When an
    advert caused the change (``higher_priority_received``, ``higher_address_received``,
    ``priority_zero_received``, ``preempted``), ``peer`` is its sender and
    ``peer_priority`` its priority (keepalived logs both); otherwise both are None."""

    old: State
    new: State
    reason: str
    detail: str = ""
    peer: IPAddress | None = None
    peer_priority: int | None = None


@dataclass(frozen=True)
class SendAdvert:
    """Send ``advert`` now (encode with our primary address as source, to 224.0.0.18 /
    ff02::12 or each unicast peer). Equality looks at ``priority`` only, so tests can
    write ``SendAdvert(priority=100)``."""

    priority: int
    advert: Advert | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PeerMisconfigured:
    """A peer's advert was acted on although it disagrees with our configuration (its
    address list differs; RFC 5798 7.1 "SHOULD log", keepalived accepts it too). The shell
    logs it at a bounded rate."""

    reason: Reject
    src: IPAddress
    detail: str = ""


@dataclass(frozen=True)
class IntervalBounded:
    """A v3 advert we follow advertised a Max Adver Int outside
    ``timers.bounded_adver_interval``'s window around our configured interval;
    ``used`` was adopted as Master_Adver_Interval instead of ``advertised``. Spoofed or
    misconfigured either way: the shell logs it (bounded rate) with the source."""

    src: IPAddress
    advertised: float
    used: float
    configured: float


@dataclass(frozen=True)
class Reannounce:
    """As MASTER we heard a lower-priority advert: another router believed itself
    master (a partition that healed, a peer that was frozen) and has answered ARP for our
    VIPs meanwhile, so neighbours may still point at it. We assert ourselves with an
    advert at once (sent with this action) and the shell re-announces the VIPs with
    gratuitous ARP / unsolicited NA (keepalived's ``garp_lower_prio_repeat``). At most
    once per ``REANNOUNCE_HOLDOFF`` of our advert interval: a peer stuck below us (a
    one-way partition) costs one burst per advert of its, and the *last* advert it sends
    before it steps down is always answered, so the LAN ends pointing at us."""

    peer: IPAddress
    peer_priority: int


# A lower-priority master that keeps advertising is answered at most once per this
# fraction of our advert interval (two adverts of a peer at our own rate are never
# merged into one answer, even with jitter).
REANNOUNCE_HOLDOFF = 0.5


@dataclass(frozen=True)
class MasterWish:
    """Sync-group members only (``sync_group=True``): the Master_Down_Timer fired, so this
    instance would now become MASTER (``wants=True``, ``reason`` as RoleChanged would
    carry), or it accepted a master's advert again (``wants=False``). Route it to
    ``SyncGroupPolicy.master_wish``; the instance stays BACKUP until forced."""

    wants: bool
    reason: str


Action = RoleChanged | SendAdvert | PeerMisconfigured | IntervalBounded | Reannounce | MasterWish


@dataclass
class Counters:
    """Monotonic counters for metrics (names follow keepalived's stats where they exist)."""

    adverts_sent: int = 0
    adverts_received: int = 0             # every advert handed to receive_advert
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    lower_priority_discarded: int = 0     # RFC 5798 6.4.2 / 6.4.3 "discard"
    became_master: int = 0
    became_backup: int = 0
    became_fault: int = 0
    released_master: int = 0
    interval_bounded: int = 0             # adverts whose interval was clamped
    ignored: dict[str, int] = field(default_factory=dict)   # Reject.value -> count


# Allowed (old, new) pairs. INITIALIZE is left by start() and entered by shutdown().
_TRANSITIONS: frozenset[tuple[State, State]] = frozenset({
    (State.INITIALIZE, State.BACKUP), (State.INITIALIZE, State.MASTER),
    (State.INITIALIZE, State.FAULT),
    (State.BACKUP, State.MASTER), (State.BACKUP, State.FAULT), (State.BACKUP, State.INITIALIZE),
    (State.MASTER, State.BACKUP), (State.MASTER, State.FAULT), (State.MASTER, State.INITIALIZE),
    (State.FAULT, State.BACKUP), (State.FAULT, State.MASTER), (State.FAULT, State.INITIALIZE),
})


class VrrpMachine:
    """One VRRP instance (RFC 5798 6.4; RFC 3768 6.4 for version 2)."""

    def __init__(self, instance: VrrpInstance, *, primary_address: IPAddress, now: float = 0.0,
                 sync_group: bool = False):
        self.instance = instance
        self.sync_group = sync_group              # see "Sync groups" above; may be set later
        self.primary_address = primary_address
        self._state = State.INITIALIZE
        self._deadline: float | None = None
        self._actions: list[Action] = []
        self._faults: dict[str, None] = {}        # ordered set of fault reasons
        self._deltas: dict[str, int] = {}
        self._effective = self._compute_priority()
        self._master_adver_interval = instance.advert_interval
        self._master_address: IPAddress | None = None
        self._master_priority: int | None = None
        self._preempt_at: float | None = None     # keepalived preempt_time; None = not started
        self._hold_until = float("-inf")          # see hold_preemption()
        self._down_reason = Reason.MASTER_DOWN_TIMER
        self._down_peer: tuple[IPAddress, int] | None = None   # the advert behind _down_reason
        self._wants_master = False                # held in BACKUP by the sync group
        self._takeover_held = False               # see hold_takeover()
        self._takeover_due = False                # the timer fired while held
        self._reannounced_at = float("-inf")      # last Reannounce (its holdoff)
        self._since = now
        self._last_reason = ""
        self._vips = frozenset(v.ip for v in instance.virtual_ips)
        self.counters = Counters()

    # --- read-only view -----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def effective_priority(self) -> int:
        return self._effective

    @property
    def master_address(self) -> IPAddress | None:
        """The current master: ourselves in MASTER, the sender of the adverts we follow in
        BACKUP, None when unknown (INITIALIZE, FAULT, after a priority-0 advert)."""
        return self._master_address

    @property
    def master_priority(self) -> int | None:
        return self._master_priority

    @property
    def master_adver_interval(self) -> float:
        return self._master_adver_interval

    @property
    def since(self) -> float:
        """``now`` of the last state transition (or of construction)."""
        return self._since

    @property
    def last_reason(self) -> str:
        return self._last_reason

    @property
    def wants_master(self) -> bool:
        """MASTER, or a sync-group member held in BACKUP after its down timer fired."""
        return self._state is State.MASTER or self._wants_master

    @property
    def faults(self) -> frozenset[str]:
        return frozenset(self._faults)

    @property
    def priority_deltas(self) -> dict[str, int]:
        return dict(self._deltas)

    @property
    def preemption_held_until(self) -> float | None:
        """The ``until`` of the last hold_preemption(), or None if never held."""
        return None if self._hold_until == float("-inf") else self._hold_until

    def get_timer(self) -> float | None:
        """The one deadline at which ``handle_timer`` must be called, or None."""
        return self._deadline

    def actions(self) -> list[Action]:
        """Everything the shell must do since the last call, in order; then cleared."""
        out, self._actions = self._actions, []
        return out

    # --- inputs --------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Leave INITIALIZE (RFC 5798 6.4.1). No-op when already started."""
        if self._state is not State.INITIALIZE:
            return
        if self._faults:
            self._transition(State.FAULT, Reason.FAULT, now, detail=next(iter(self._faults)))
        elif self._effective == PRIORITY_OWNER and not self._takeover_held:
            self._become_master(Reason.OWNER, now)
        else:
            self._become_backup(Reason.STARTUP, now)
            if self._effective == PRIORITY_OWNER:
                # The owner takes over at once (RFC 5798 6.4.1): due now, once released.
                self._down_reason = Reason.OWNER
                self._deadline = now

    def shutdown(self, now: float) -> None:
        """Go back to INITIALIZE; a master first sends a priority-0 advert so that a backup
        takes over after Skew_Time instead of Master_Down_Interval (RFC 5798 6.4.3)."""
        if self._state is State.INITIALIZE:
            return
        if self._state is State.MASTER:
            self._send(PRIORITY_STOP)
        self._transition(State.INITIALIZE, Reason.SHUTDOWN, now)
        self._deadline = None
        self._master_address = self._master_priority = None

    def hold_preemption(self, until: float) -> None:
        """Do not preempt a live lower-priority master before ``until``: in BACKUP its
        adverts are followed as if preempt were off. The agent holds while a freshly
        started IPVS backup sync daemon catches up with the master's connections, so
        that taking the VIP back does not drop them. A master that goes silent or sends
        priority 0 is still replaced at once (RFC 5798 6.4.2): the hold only delays a
        takeover that nobody needs yet."""
        self._hold_until = max(self._hold_until, until)

    def hold_takeover(self, held: bool, now: float) -> None:
        """While held, a BACKUP whose Master_Down_Timer fires stays BACKUP and keeps
        following adverts; released, it takes over at once unless a master was heard
        meanwhile. The agent holds every instance while it finishes starting: the
        machines (and the RFC 5798 6.4.1 master-down wait) start before the slow parts
        of the agent, and a director that turns out unable to program IPVS has not
        become master in the meantime."""
        was, self._takeover_held = self._takeover_held, held
        if was and not held and self._state is State.BACKUP and self._takeover_due:
            self._takeover_due = False
            self._deadline = now
            self.handle_timer(now)

    def receive_advert(self, adv: Advert, src: IPAddress, now: float) -> Reject | None:
        """Act on one advert that ``codec.decode`` accepted, from ``src``.

        Returns the reason it was dropped before the RFC 6.4 rules saw it (counted in
        ``counters.ignored``), or None when the rules processed it (a lower-priority
        advert that the rules discard also returns None; see
        ``counters.lower_priority_discarded``).
        """
        self.counters.adverts_received += 1
        reject = self._precheck(adv, src)
        if reject is not None:
            self.counters.ignored[reject.value] = self.counters.ignored.get(reject.value, 0) + 1
            return reject
        if adv.priority == PRIORITY_STOP:
            self.counters.priority_zero_received += 1
        if self._vips and set(adv.addresses) != self._vips:
            # RFC 5798 7.1: MAY verify, SHOULD log. Dropping would make both routers
            # master over a typo; keepalived also logs and carries on.
            self._actions.append(PeerMisconfigured(
                Reject.ADDRESS_MISMATCH, src,
                detail=",".join(str(a) for a in adv.addresses)))
        if self._state is State.BACKUP:
            self._backup_receive(adv, src, now)
        else:
            self._master_receive(adv, src, now)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire the deadline if it has passed; calling early or twice is harmless."""
        if self._deadline is None or now < self._deadline:
            return
        if self._state is State.MASTER:
            # RFC 5798 6.4.3: Adver_Timer fired -> send, re-arm.
            self._send(self._effective)
            self._deadline = now + self.instance.advert_interval
        elif self._state is State.BACKUP and self._takeover_held:
            # Still starting (hold_takeover): due, acted on at the release.
            self._takeover_due = True
            self._deadline = None
        elif self._state is State.BACKUP and self.sync_group:
            # Held for the group: say so once, and keep watching as keepalived does.
            if not self._wants_master:
                self._wants_master = True
                self._actions.append(MasterWish(True, self._down_reason))
            self._deadline = now + self._master_down_interval()
        elif self._state is State.BACKUP:
            # RFC 5798 6.4.2: Master_Down_Timer fired -> become Master.
            self._become_master(self._down_reason, now, peer=self._down_peer)

    def set_fault(self, fault: bool, reason: str, now: float) -> None:
        """Set or clear the fault named ``reason`` (e.g. "track_interface:eth0").

        While any fault is set the instance is in FAULT: it neither sends nor acts on
        adverts. A master entering FAULT first sends priority 0 so a backup takes over at
        once (keepalived does the same). Clearing the last fault goes to BACKUP, or to
        MASTER for an address owner. Before start() the faults are only recorded.
        """
        had = bool(self._faults)
        if fault:
            self._faults[reason] = None
        else:
            self._faults.pop(reason, None)
        if self._state is State.INITIALIZE or had == bool(self._faults):
            return
        if self._faults:
            if self._state is State.MASTER:
                self._send(PRIORITY_STOP)
            self._transition(State.FAULT, Reason.FAULT, now, detail=reason)
            self._deadline = None
            self._master_address = self._master_priority = None
        elif self._effective == PRIORITY_OWNER:
            self._become_master(Reason.FAULT_CLEARED, now, detail=reason)
        else:
            self._become_backup(Reason.FAULT_CLEARED, now, detail=reason)

    def set_priority_delta(self, delta: int, reason: str, now: float) -> None:
        """Set the priority change named ``reason`` (0 removes it).

        Effective priority = configured + sum of deltas, clamped to 1..254; an address
        owner (255) stays 255. A master advertises a changed priority at once so that a
        backup can preempt without waiting for the next Adver_Timer.
        """
        if delta:
            self._deltas[reason] = delta
        else:
            self._deltas.pop(reason, None)
        old, self._effective = self._effective, self._compute_priority()
        if self._effective != old and self._state is State.MASTER:
            self._send(self._effective)
            self._deadline = now + self.instance.advert_interval

    def force_state(self, state: State, reason: str, now: float) -> bool:
        """Sync-group override: move BACKUP -> MASTER or MASTER -> BACKUP now.

        Anything else (INITIALIZE, FAULT, already there) is left alone. Returns whether
        the state changed. Faults are forced with ``set_fault`` instead.
        """
        if state is State.MASTER and self._state is State.BACKUP:
            # The member whose own wish it was keeps the advert behind it (its reason).
            peer = self._down_peer if reason == self._down_reason else None
            self._become_master(reason, now, peer=peer)
            return True
        if state is State.BACKUP and self._state is State.MASTER:
            self._become_backup(reason, now)
            return True
        return False

    def reconfigure(self, instance: VrrpInstance, now: float) -> bool:
        """Adopt a reloaded config of the same virtual router, keeping state and timers.

        Only what needs no new identity can change in place: priority, preempt,
        preempt_delay, advert_interval, accept_mode, notify, garp, tracking. A change of
        VRID, version, address family or VIP list (what adverts say and peers check,
        RFC 5798 7.1), or into or out of address-owner priority 255 (its own rules,
        RFC 5798 6.4.1), returns False and changes nothing: the shell restarts the
        instance instead. No RoleChanged is ever emitted here.

        A master whose effective priority or interval changed advertises at once, so a
        backup preempts (or stops preempting) without waiting for the next
        Adver_Timer, exactly as for a tracker's priority delta.
        """
        old = self.instance
        same_identity = (
            instance.vrid == old.vrid and instance.version == old.version
            and instance.family == old.family and instance.virtual_ips == old.virtual_ips
            and (instance.priority == PRIORITY_OWNER) == (old.priority == PRIORITY_OWNER)
        )
        if not same_identity:
            return False
        self.instance = instance
        prev, self._effective = self._effective, self._compute_priority()
        if instance.preempt_delay != old.preempt_delay or not instance.preempt:
            self._preempt_at = None
        if instance.version == 2 or self._state is not State.BACKUP:
            # v2: every router uses its own interval; v3 backups keep the master's.
            self._master_adver_interval = instance.advert_interval
        if self._state is State.MASTER and (
                self._effective != prev or instance.advert_interval != old.advert_interval):
            self._send(self._effective)
            self._deadline = now + instance.advert_interval
        return True

    # --- RFC 5798 6.4 rules ---------------------------------------------------------

    def _precheck(self, adv: Advert, src: IPAddress) -> Reject | None:
        inst = self.instance
        if self._state in (State.INITIALIZE, State.FAULT):
            return Reject.NOT_LISTENING
        if adv.vrid != inst.vrid:
            return Reject.VRID_MISMATCH
        if adv.version != inst.version:
            return Reject.VERSION_MISMATCH
        if adv.family != inst.family or src.version != self.primary_address.version:
            return Reject.FAMILY_MISMATCH
        if src == self.primary_address:
            return Reject.OWN_ADVERT
        # RFC 5798 7.1 also lets an address owner (255) drop every advert; like
        # keepalived's default (owner_ignore_adverts off) we process them, so that two
        # routers both configured as owner still settle on one master by address.
        if inst.version == 2 and adv.max_advert_int != inst.advert_interval:
            # RFC 3768 7.1: MUST drop when the interval differs from ours.
            return Reject.INTERVAL_MISMATCH
        return None

    def _backup_receive(self, adv: Advert, src: IPAddress, now: float) -> None:
        # RFC 5798 6.4.2, Backup: "If an ADVERTISEMENT is received".
        if adv.priority == PRIORITY_STOP:
            # The master is leaving: answer after Skew_Time only, highest priority first.
            self._deadline = now + skew_time(
                self._effective, self._master_adver_interval, version=self.instance.version)
            self._takeover_due = False
            self._down_reason = Reason.PRIORITY_ZERO_RECEIVED
            self._down_peer = (src, adv.priority)
            self._master_address = self._master_priority = None
            return
        lower = adv.priority < self._effective
        delay = self.instance.preempt_delay
        holding = delay > 0 and (self._preempt_at is None or now < self._preempt_at)
        if not self.instance.preempt or not lower or holding or now < self._hold_until:
            if self.instance.version == 3:
                self._adopt_interval(adv, src)
            self._deadline = now + self._master_down_interval()
            self._takeover_due = False
            self._down_reason = Reason.MASTER_DOWN_TIMER
            self._down_peer = None
            self._master_address, self._master_priority = src, adv.priority
            if self._wants_master:
                self._wants_master = False
                self._actions.append(MasterWish(False, "master_advert_accepted"))
            if delay > 0 and self.instance.preempt:
                # keepalived preempt_delay: the delay starts at the first lower-priority
                # advert seen in BACKUP and is cancelled by an equal or higher one.
                if not lower:
                    self._preempt_at = None
                elif self._preempt_at is None:
                    self._preempt_at = now + delay
            return
        # Preempt is on and the advert's priority is lower: discard it, so the
        # Master_Down_Timer runs out and we take over (the timer keeps running).
        self.counters.lower_priority_discarded += 1
        self._down_reason = Reason.PREEMPTED
        self._down_peer = (src, adv.priority)
        self._master_address, self._master_priority = src, adv.priority

    def _master_receive(self, adv: Advert, src: IPAddress, now: float) -> None:
        # RFC 5798 6.4.3, Master: "If an ADVERTISEMENT is received".
        if adv.priority == PRIORITY_STOP:
            # Another router is leaving: assert ourselves at once.
            self._send(self._effective)
            self._deadline = now + self.instance.advert_interval
            return
        if adv.priority > self._effective:
            reason = Reason.HIGHER_PRIORITY_RECEIVED
        elif adv.priority == self._effective and int(src) > int(self.primary_address):
            # Unsigned integer comparison in network byte order = int() of the address.
            reason = Reason.HIGHER_ADDRESS_RECEIVED
        else:
            # RFC 5798 6.4.3 discards it. But a router that sends adverts believes it is
            # master and may hold our VIPs in its neighbours' ARP caches: answer with an
            # advert now (so it steps down without waiting for our timer) and ask the
            # shell to re-announce the VIPs, as keepalived does.
            self.counters.lower_priority_discarded += 1
            if now - self._reannounced_at >= REANNOUNCE_HOLDOFF * self.instance.advert_interval:
                self._reannounced_at = now
                self._send(self._effective)
                self._deadline = now + self.instance.advert_interval
                self._actions.append(Reannounce(src, adv.priority))
            return
        if self.instance.version == 3:
            self._adopt_interval(adv, src)
        self._become_backup(reason, now, master=(src, adv.priority), peer=(src, adv.priority))
        # Two masters at once (a partition that healed): we may have answered ARP for the
        # VIPs last, and the winner, whose advert we just heard, may never hear one of
        # ours again. One advert at our priority, sent as we step down, tells it there
        # was a second master, and it re-announces the VIPs (Reannounce). Beyond RFC
        # 5798 6.4.3; a backup receiving it follows the usual rules for a lower priority.
        self._send(self._effective)

    def _adopt_interval(self, adv: Advert, src: IPAddress) -> None:
        # RFC 5798 6.4.2 / 6.4.3: "Set Master_Adver_Interval to Adver Interval contained
        # in the ADVERTISEMENT", within a window around our own (timers.py says why).
        configured = self.instance.advert_interval
        used = bounded_adver_interval(adv.max_advert_int, configured)
        if used != adv.max_advert_int:
            self.counters.interval_bounded += 1
            self._actions.append(IntervalBounded(src, adv.max_advert_int, used, configured))
        self._master_adver_interval = used

    # --- transitions ----------------------------------------------------------------

    def _become_master(self, reason: str, now: float, detail: str = "",
                       peer: tuple[IPAddress, int] | None = None) -> None:
        # RFC 5798 6.4.1 / 6.4.2: send an advert, (GARP by the shell), arm Adver_Timer.
        self._transition(State.MASTER, reason, now, detail=detail, peer=peer)
        self._send(self._effective)
        self._deadline = now + self.instance.advert_interval
        self._master_address, self._master_priority = self.primary_address, self._effective
        self._preempt_at = None

    def _become_backup(self, reason: str, now: float, detail: str = "",
                       master: tuple[IPAddress, int] | None = None,
                       peer: tuple[IPAddress, int] | None = None) -> None:
        if self._state is not State.MASTER:
            # From Initialize / Fault: start from our own interval (RFC 5798 6.4.1).
            self._master_adver_interval = self.instance.advert_interval
        self._transition(State.BACKUP, reason, now, detail=detail, peer=peer)
        self._deadline = now + self._master_down_interval()
        self._down_reason = Reason.MASTER_DOWN_TIMER
        self._down_peer = None
        self._master_address, self._master_priority = master if master else (None, None)
        self._preempt_at = None

    def _transition(self, new: State, reason: str, now: float, detail: str = "",
                    peer: tuple[IPAddress, int] | None = None) -> None:
        old = self._state
        if (old, new) not in _TRANSITIONS:
            raise RuntimeError(f"illegal VRRP transition {old.name} -> {new.name} ({reason})")
        self._state, self._since, self._last_reason = new, now, reason
        self._wants_master = False
        self._takeover_due = False
        if old is State.MASTER:
            self.counters.released_master += 1
        if new is State.MASTER:
            self.counters.became_master += 1
        elif new is State.BACKUP:
            self.counters.became_backup += 1
        elif new is State.FAULT:
            self.counters.became_fault += 1
        self._actions.append(RoleChanged(old, new, reason, detail,
                                         *(peer if peer is not None else (None, None))))

    def _send(self, priority: int) -> None:
        inst = self.instance
        self.counters.adverts_sent += 1
        if priority == PRIORITY_STOP:
            self.counters.priority_zero_sent += 1
        advert = Advert(
            version=inst.version, vrid=inst.vrid, priority=priority,
            max_advert_int=inst.advert_interval,
            addresses=tuple(v.ip for v in inst.virtual_ips), family=inst.family,
        )
        self._actions.append(SendAdvert(priority, advert))

    def _master_down_interval(self) -> float:
        return master_down_interval(
            self._effective, self._master_adver_interval, version=self.instance.version)

    def _compute_priority(self) -> int:
        base = self.instance.priority
        if base == PRIORITY_OWNER:
            return PRIORITY_OWNER
        return max(1, min(254, base + sum(self._deltas.values())))
