"""Per-service quorum with hysteresis (sans-IO).

Theory of operation
-------------------
A virtual service has quorum while the summed weight of its UP real servers is at
least ``quorum``. Without quorum the IPVS layer falls back to the sorry server (and the
agent runs ``quorum_down``); with it again, the real servers return (``quorum_up``).

``quorum_hysteresis`` keeps a service hovering at the threshold from flapping, with
keepalived's rule (check/ipwrapper.c, update_quorum_state): quorum is *lost* when the
alive weight drops below ``quorum - hysteresis`` (or to zero), and *gained* only when
it reaches ``quorum + hysteresis``. Between the two, the previous decision stands.

Like keepalived, a service starts with quorum: nothing is lost before anything is
known. While some of its checked servers are still UNKNOWN (no first result yet), a
loss is not declared -- otherwise every start would run ``quorum_down`` and then
``quorum_up`` a second later.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadirector.health.policy import HealthState, HealthView, ServiceKey
from hadirector.model import VirtualService


@dataclass(frozen=True, slots=True)
class QuorumChange:
    service_key: ServiceKey
    gained: bool                 # True: quorum gained; False: lost
    alive_weight: int
    quorum: int
    hysteresis: int

    @property
    def reason(self) -> str:
        if self.gained:
            return f"alive weight {self.alive_weight} >= {self.quorum + self.hysteresis}"
        return f"alive weight {self.alive_weight} < {self.quorum - self.hysteresis}"


def alive_weight(service: VirtualService, view: HealthView) -> tuple[int, bool]:
    """(summed weight of UP real servers, whether any is still UNKNOWN)."""
    total, pending = 0, False
    key = service.key
    for rs in service.real_servers:
        st = view.state(key, rs.key)
        if st is HealthState.UP:
            total += rs.weight
        elif st is HealthState.UNKNOWN:
            pending = True
    return total, pending


class QuorumPolicy:
    def __init__(self) -> None:
        self._up: dict[ServiceKey, bool] = {}

    def has_quorum(self, service_key: ServiceKey) -> bool:
        return self._up.get(service_key, True)

    def forget(self, service_key: ServiceKey) -> None:
        self._up.pop(service_key, None)

    def evaluate(self, service: VirtualService, view: HealthView) -> QuorumChange | None:
        weight, pending = alive_weight(service, view)
        return self.decide(service.key, weight, pending, service.quorum, service.quorum_hysteresis)

    def decide(self, service_key: ServiceKey, weight: int, pending: bool,
               quorum: int, hysteresis: int) -> QuorumChange | None:
        up = self._up.get(service_key, True)
        if up:
            if pending:
                return None
            if weight == 0 or weight < quorum - hysteresis:
                self._up[service_key] = False
                return QuorumChange(service_key, False, weight, quorum, hysteresis)
        elif weight > 0 and weight >= quorum + hysteresis:
            self._up[service_key] = True
            return QuorumChange(service_key, True, weight, quorum, hysteresis)
        self._up.setdefault(service_key, up)
        return None
