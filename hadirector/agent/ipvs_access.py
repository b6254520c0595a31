"""IPVS as a resource that may be missing: open it, lose it, retry, and fault meanwhile.

``IpvsAccess`` holds the open backend (``backend``, or None) and acts on what the
sans-IO ``ipvs.availability.IpvsAvailability`` decides:

* ``open()`` opens a backend (``factory``: the kernel's netlink, or a test's fake) and
  reads the table once: a table that cannot be read cannot be planned either;
* ``lost(error)`` drops the backend (closed if we opened it), puts the instances the LVS
  side follows in FAULT with reason ``ipvs_unavailable`` through the VRRP side's
  ``set_fault`` (sync groups follow) and arms one retry timer (1 s doubling to 30 s);
* the retry calls the controller's ``reopen("retry")``; once the controller has
  converged it calls ``opened(trigger)``, which clears the fault, so the instance elects
  with a ready table;
* ``reconfigure()`` after a reload: a config that needs no IPVS any more has nothing to
  retry and no fault to hold.

The config is read through ``config()`` (the controller's, one source) and the followed
instances from ``director.lvs.unavailable_faulted``.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
from typing import Any, Callable

from hadirector import model
from hadirector.agent.vrrp_side import VrrpSide
from hadirector.director.lvs import needs_ipvs, unavailable_faulted
from hadirector.ipvs.availability import (
    FAULT_REASON, Backoff, BecameAvailable, BecameUnavailable, IpvsAvailability, RetryScheduled,
    fault_changes,
)
from hadirector.ipvs.backend import IpvsError
from hadirector.ipvs.table import Table
from hadirector.logging import get_logger

log = get_logger("hadirector.lvs")


class IpvsAccess:
    def __init__(self, factory: Callable[[], Any], *, close_on_loss: bool, backoff: Backoff,
                 config: Callable[[], model.Config], reopen: Callable[[str], object],
                 unusable: Callable[[IpvsError], None]) -> None:
        """``reopen(reason)``: the controller opens and converges again (the retry);
        ``unusable(error)``: the controller's reaction to a loss, which ends in ``lost``."""
        self._factory = factory
        self._close_on_loss = close_on_loss      # close only what we opened
        self._config = config
        self._reopen = reopen
        self._unusable = unusable
        self.backend: Any = None                 # open and usable, or None
        self.availability = IpvsAvailability(backoff)
        self.faulted: tuple[str, ...] = ()       # instances we put in FAULT
        self.vrrp: VrrpSide | None = None        # set by the controller's prepare()
        self._retry: asyncio.TimerHandle | None = None

    @property
    def retry_armed(self) -> bool:
        return self._retry is not None

    def open(self) -> Table:
        """Open a backend and read the kernel's table. Raises ``IpvsError``; a backend
        that opened but cannot be read is kept for ``lost`` to close."""
        backend = None
        try:
            backend = self._factory()
            return backend.dump()
        finally:
            self.backend = backend

    def opened(self, trigger: str) -> None:
        """The controller converged on the open backend: IPVS is available again."""
        self.availability.succeeded(now=_now())
        self._log(trigger=trigger)
        self.apply_faults()

    def lost(self, e: IpvsError) -> None:
        """IPVS cannot be used: drop the backend, fault the followed instances, retry."""
        if self.backend is not None and self._close_on_loss and hasattr(self.backend, "close"):
            try:
                self.backend.close()
            except OSError:
                pass
        self.backend = None
        self.availability.failed(str(e), now=_now())
        self._log(errno=errno_mod.errorcode.get(e.errno, str(e.errno)))
        self.apply_faults()
        self._arm_retry()

    def reconfigure(self) -> None:
        """After a reload: when the new config needs no IPVS, stop retrying and clear the fault."""
        if needs_ipvs(self._config()) or self.availability.available is None:
            return
        self.cancel_retry()
        self.availability.forget()
        self.apply_faults()

    def _log(self, trigger: str = "", errno: str = "") -> None:
        for ev in self.availability.events():
            if isinstance(ev, BecameUnavailable):
                log.error("ipvs.unavailable", reason=ev.reason, errno=errno,
                          instances=list(self._faulted_now()), fault=FAULT_REASON)
            elif isinstance(ev, RetryScheduled):
                log.warning("ipvs.retry_scheduled", attempt=ev.attempt, delay=ev.delay,
                            reason=ev.reason)
            elif isinstance(ev, BecameAvailable) and ev.unavailable_for is not None:
                log.info("ipvs.available", attempts=ev.attempts,
                         unavailable_for=round(ev.unavailable_for, 3),
                         instances=list(self.faulted), reason=trigger)

    def _faulted_now(self) -> tuple[str, ...]:
        """The instances the ``ipvs_unavailable`` fault applies to now."""
        return unavailable_faulted(self._config(), self.availability.fault,
                                   self.vrrp.roles() if self.vrrp is not None else None)

    def apply_faults(self) -> None:
        want = self._faulted_now()
        if self.vrrp is not None:
            for name, fault in fault_changes(self.faulted, want):
                self.vrrp.set_fault(name, fault, FAULT_REASON)
        self.faulted = want

    def _arm_retry(self) -> None:
        self.cancel_retry()
        deadline = self.availability.get_timer()
        if deadline is not None:
            self._retry = asyncio.get_running_loop().call_at(deadline, self._retry_now)

    def cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _retry_now(self) -> None:
        self._retry = None
        if not needs_ipvs(self._config()) or not self.availability.fault:
            return
        try:
            self._reopen("retry")
        except Exception as e:  # noqa: BLE001 - a bug here must not end the retries
            log.exception("ipvs.retry_failed", reason=f"{type(e).__name__}: {e}")
            self._unusable(IpvsError("open IPVS", 0, f"open IPVS: {type(e).__name__}: {e}"))


def _now() -> float:
    return asyncio.get_running_loop().time()
