"""Health checking of real servers.

* ``policy``   -- rise/fall, written once: ``HealthPolicy.record(target, result, now)``
  returns a ``Transition`` only when a state changes (sans-IO).
* ``schedule`` -- ``CheckSchedule``: when each check is due (one calendar queue, one timer).
* ``probes``   -- ``tcp_probe``, ``http_probe``, ``script_probe`` and ``run_check``, which
  dispatches to them and to ``dns``, ``udp``, ``ping`` and ``smtp`` (issue 13): I/O
  only, no policy; each returns ``ProbeResult(ok, detail, elapsed)`` and never raises.

The asyncio shell that runs them is ``hadirector.agent.health_runner.HealthRunner``.
"""

from hadirector.health.policy import (
    HealthPolicy,
    HealthState,
    ProbeResult,
    ServerHealth,
    Transition,
)
from hadirector.health.schedule import CheckSchedule

__all__ = [
    "CheckSchedule", "HealthPolicy", "HealthState", "ProbeResult",
    "ServerHealth", "Transition",
]
