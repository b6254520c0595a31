"""Can this director program IPVS at all? The retry schedule and what it means for VRRP.

Theory of operation
-------------------
A director whose kernel offers no IPVS (no ip_vs module and none loadable, so the
generic netlink family "IPVS" is missing; or the table cannot even be read) must
neither crash nor hold the VIPs of the virtual services it cannot forward: the
instances the LVS side follows go to FAULT with reason ``ipvs_unavailable`` and the
peer serves. ``IpvsAvailability`` is the sans-IO record of that:

* the shell reports each attempt to open IPVS: ``failed(reason, now=)`` or
  ``succeeded(now=)``;
* it reads back the events to log (``events()``: only changes, so one line per attempt
  and none while nothing happens), the one deadline of the next attempt
  (``get_timer()``), and whether the followed instances must be in FAULT (``fault``).

The schedule (``Backoff``): 1 s after the first failure, doubling up to 30 s; a success
starts it over. IPVS appearing later (a module loaded by hand, a kernel package
installed) is then noticed within the cap, without a restart of the agent.

A refusal of one entry (EINVAL for one service, ENOENT for a missing scheduler) is not
unavailability: the reconciler reports it per entry and never reports it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import dataclass

FAULT_REASON = "ipvs_unavailable"


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        # Capped before the power grows: a director down for days must not overflow.
        delay = self.first
        for _ in range(failures - 1):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)


@dataclass(frozen=True)
class BecameUnavailable:
    """IPVS could not be opened (first failure, or a failure for another reason)."""

    reason: str
    failures: int


@dataclass(frozen=True)
class RetryScheduled:
    attempt: int            # the number of the attempt that is scheduled (2 = first retry)
    delay: float
    at: float
    reason: str             # why the last attempt failed


@dataclass(frozen=True)
class BecameAvailable:
    attempts: int           # attempts it took, this one included (1: at once)
    unavailable_for: float | None   # seconds since the first failure; None: never failed


Event = BecameUnavailable | RetryScheduled | BecameAvailable


class IpvsAvailability:
    def __init__(self, backoff: Backoff = Backoff()) -> None:
        self.backoff = backoff
        self.available: bool | None = None     # None: not tried yet
        self.reason = ""                       # why the last attempt failed
        self.failures = 0                      # consecutive failed attempts
        self.since: float | None = None        # time of the last change of ``available``
        self._deadline: float | None = None
        self._events: list[Event] = []

    @property
    def fault(self) -> bool:
        """Must the instances the LVS side follows be in FAULT?"""
        return self.available is False

    def failed(self, reason: str, *, now: float) -> None:
        """An attempt to open (or read) IPVS failed for ``reason``."""
        if self.available is not False:
            self.since = now
            self._events.append(BecameUnavailable(reason, self.failures + 1))
        elif reason != self.reason:
            self._events.append(BecameUnavailable(reason, self.failures + 1))
        self.available = False
        self.reason = reason
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        self._deadline = now + delay
        self._events.append(RetryScheduled(self.failures + 1, delay, self._deadline, reason))

    def succeeded(self, *, now: float) -> None:
        """IPVS is open and the table was read."""
        if self.available is not True:
            down_for = now - self.since if self.available is False and self.since is not None else None
            self._events.append(BecameAvailable(self.failures + 1, down_for))
            self.since = now
        self.available = True
        self.reason = ""
        self.failures = 0
        self._deadline = None

    def forget(self) -> None:
        """The config no longer needs IPVS: nothing to retry, nothing to fault."""
        self.available = None
        self.reason = ""
        self.failures = 0
        self.since = None
        self._deadline = None

    def get_timer(self) -> float | None:
        """When to try again; None: no attempt is due."""
        return self._deadline

    def due(self, *, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out


def probe(open_backend: Callable[[], Any] | None = None) -> str | None:
    """One attempt to open IPVS and read the table, as the agent's first one at start:
    None when it works, else why not (``hadirector check --host``)."""
    from hadirector.ipvs.backend import IpvsError

    if open_backend is None:
        from hadirector.kernel.ipvs import IpvsNetlink as open_backend
    backend = None
    try:
        backend = open_backend()
        backend.dump()
        return None
    except IpvsError as e:
        return str(e)
    except OSError as e:
        return e.strerror or str(e)
    finally:
        if backend is not None and hasattr(backend, "close"):
            backend.close()


def fault_changes(held: Iterable[str], want: Iterable[str]) -> list[tuple[str, bool]]:
    """The ``(instance, fault)`` calls that take the ``ipvs_unavailable`` fault from the
    instances in ``held`` to those in ``want``. Clears come first (a reload that moved
    the LVS role frees the old instance before faulting the new one). Every wanted
    instance is set again, not only the new ones: setting a fault is idempotent, and an
    instance that a reload restarted has a fresh machine without it."""
    held, want = list(dict.fromkeys(held)), list(dict.fromkeys(want))
    return [(n, False) for n in held if n not in want] + [(n, True) for n in want]
