"""The announce gate of a scale-out director, with no I/O: is each VIP to be announced?

Theory of operation
-------------------
A scale-out director (``scale_out:``) is one of N active ones behind an ECMP router. It
announces a VIP (the shell keeps ``VIP/32`` in the kernel table BIRD learns) exactly
while it can carry every scale-out service on that VIP:

* the node runs and is not drained by the operator, nor stopping;
* IPVS holds the service (a director without IPVS must not attract flows it would
  answer with resets);
* every real server has a first health result (before that the ``mh`` table holds some
  at weight 0, and their flows would be re-hashed elsewhere, then moved back);
* at least ``min_healthy`` real servers are up;
* all of the above has held for ``hold_down`` seconds without a break (at start, and
  again after any withdrawal), so a flapping director does not move flows to and fro.

``readiness`` is the pure decision and returns a reason (MetalLB's shape: ``""`` means
ready). ``AnnounceGate`` adds time: inputs carry ``now``; outputs are pulled with
``effects()`` (``Announce``, ``Withdraw``, ``TearDown``) and ``get_timer()`` (one
deadline or None), like the VRRP machine. Stopping withdraws first and asks for the
tear-down only ``drain_grace`` later, so the router has moved the flows before IPVS
goes away.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.model import IPAddress, ScaleOut, VirtualService


@dataclass(frozen=True)
class ServiceView:
    """What the shell knows of one scale-out service now."""

    name: str
    programmed: bool           # IPVS holds the service
    up: int                    # real servers UP
    pending: int               # real servers with no health result yet


def readiness(svc: ServiceView, min_healthy: int) -> str:
    """Why ``svc`` cannot be carried by this director now; ``""`` when it can."""
    if not svc.programmed:
        return "ipvs_not_programmed"
    if svc.pending:
        return "health_pending"
    if svc.up < min_healthy:
        return "below_min_healthy"
    return ""


@dataclass(frozen=True)
class Announce:
    vip: IPAddress
    reason: str


@dataclass(frozen=True)
class Withdraw:
    vip: IPAddress
    reason: str


@dataclass(frozen=True)
class TearDown:
    """Stopping, and every VIP has been withdrawn for ``drain_grace``: IPVS may go."""

    reason: str = "drain_grace_elapsed"


GateEffect = Announce | Withdraw | TearDown


@dataclass
class VipState:
    services: tuple[str, ...]
    announced: bool = False
    ready_since: float | None = None      # ready without a break since
    reason: str = "starting"              # why not announced ("" when announced)


def vips_of(so: ScaleOut, services: tuple[VirtualService, ...]) -> dict[IPAddress, tuple[str, ...]]:
    """Each announced VIP and the scale-out services on it (config order)."""
    listed = set(so.services)
    out: dict[IPAddress, tuple[str, ...]] = {}
    for vs in services:
        if vs.name in listed and vs.address is not None:
            out[vs.address] = (*out.get(vs.address, ()), vs.name)
    return out


class AnnounceGate:
    def __init__(self, so: ScaleOut, services: tuple[VirtualService, ...]) -> None:
        self.so = so
        self.vips = {vip: VipState(names) for vip, names in vips_of(so, services).items()}
        self.drained = False
        self.stopping = False
        self._views: dict[str, ServiceView] = {}
        self._teardown_at: float | None = None
        self._torn_down = False
        self._effects: list[GateEffect] = []

    # --- inputs ---------------------------------------------------------------------

    def update(self, views: list[ServiceView], now: float) -> None:
        """The services' current state (a health change, IPVS programmed or lost)."""
        for v in views:
            self._views[v.name] = v
        self._evaluate(now)

    def drain(self, drained: bool, now: float) -> None:
        """The operator takes this director out (``True``) or puts it back."""
        self.drained = drained
        self._evaluate(now)

    def stop(self, now: float) -> None:
        """Withdraw everything now; ``TearDown`` after ``drain_grace`` (at once if
        nothing was announced: no flow is coming here)."""
        if self.stopping:
            return
        self.stopping = True
        was_announced = any(s.announced for s in self.vips.values())
        self._evaluate(now)
        self._teardown_at = now + self.so.drain_grace if was_announced else now
        self.handle_timer(now)

    def handle_timer(self, now: float) -> None:
        if self._teardown_at is not None and now >= self._teardown_at and not self._torn_down:
            self._torn_down = True
            self._teardown_at = None
            self._effects.append(TearDown())
        self._evaluate(now)

    # --- outputs --------------------------------------------------------------------

    def effects(self) -> list[GateEffect]:
        out, self._effects = self._effects, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [s.ready_since + self.so.hold_down for s in self.vips.values()
                     if s.ready_since is not None and not s.announced]
        if self._teardown_at is not None:
            deadlines.append(self._teardown_at)
        return min(deadlines) if deadlines else None

    def announced(self) -> tuple[IPAddress, ...]:
        return tuple(vip for vip, s in self.vips.items() if s.announced)

    # --- the rule ---------------------------------------------------------------------

    def vip_reason(self, vip: IPAddress) -> str:
        """Why ``vip`` must not be announced now (without the hold-down); ``""``: it may."""
        if self.stopping:
            return "stopping"
        if self.drained:
            return "drained"
        for name in self.vips[vip].services:
            view = self._views.get(name)
            why = "no_state_yet" if view is None else readiness(view, self.so.min_healthy)
            if why:
                return f"{name}:{why}"
        return ""

    def _evaluate(self, now: float) -> None:
        for vip, s in self.vips.items():
            why = self.vip_reason(vip)
            if why:
                s.ready_since = None
                s.reason = why
                if s.announced:
                    s.announced = False
                    self._effects.append(Withdraw(vip, why))
                continue
            if s.announced:
                continue
            if s.ready_since is None:
                s.ready_since = now
            if now >= s.ready_since + self.so.hold_down:
                s.announced = True
                s.reason = ""
                self._effects.append(Announce(vip, "ready" if self.so.hold_down == 0 else "hold_down_passed"))
            else:
                s.reason = "hold_down"
