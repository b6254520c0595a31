"""The agent's long-lived objects, kept out of the garbage collector's full passes.

Almost everything the agent holds is made when a config is loaded (start, each reload)
and lives until the next one: the config, the VRRP machines, the health runner's slots,
policy records and schedule. CPython's full collections walk all of it every time --
11-35 ms at 6,000 health-check targets (bench/health_checks.py, issue 13): the lateness
tail of health checks, and a stall for the VRRP adverts that share the loop.

``settle()`` (after start and after each reload) asks for the survivors of the next full
collection to be frozen (``gc.freeze``): later full passes then walk only what was made
since. Nothing is collected here -- the collector's own next pass, which would come
anyway, does it -- so a reload adds no pause. Each ``settle()`` first unfreezes what the
previous one froze, so what a reload drops (cycles too) is collected by that pass and
nothing stays frozen past the next reload; ``release()`` (stop) gives the process its
normal collector back (tests run many agents in one process).
"""

from __future__ import annotations

import gc

_armed = False


def _after_collection(phase: str, info: dict) -> None:
    global _armed
    # A full pass has just collected every generation: what is tracked now survived it.
    if _armed and phase == "stop" and info.get("generation") == 2:
        _armed = False
        gc.freeze()


def settle() -> None:
    """Freeze the survivors of the next full collection (a config was just loaded)."""
    global _armed
    gc.unfreeze()
    _armed = True
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def release() -> None:
    """Back to the normal collector: nothing frozen, nothing pending."""
    global _armed
    _armed = False
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()


def pending() -> bool:
    """A freeze waits for the next full collection."""
    return _armed
