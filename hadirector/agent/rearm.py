"""One timer per core, re-armed after each batch of events (aioquic's ``transmit()``)."""

from __future__ import annotations

import asyncio
from typing import Callable


def rearm(loop: asyncio.AbstractEventLoop, handle: asyncio.TimerHandle | None, deadline: float | None,
          callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """The timer for the core's next ``deadline`` (None: no timer): ``handle`` itself when
    it is already set for that deadline, else a new ``call_at`` (the old one cancelled)."""
    if handle is not None:
        if deadline is not None and handle.when() == deadline:
            return handle
        handle.cancel()
    return loop.call_at(deadline, callback) if deadline is not None else None
