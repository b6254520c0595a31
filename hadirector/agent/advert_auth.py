"""Signed adverts for one ``VrrpDriver``: the gate every advert passes on its way in and out.

The driver asks the gate, for an advert for our VRID and version, whether it may reach
the machine (``admit``), and asks it for the trailer of each advert it sends (``sign``).
The gate holds the ``AdvertAuth`` (vrrp/auth.py) with its send sequence and replay
marks, counts what it accepted, warns (rate-limited through the driver's ``DropLog``)
when a peer's clock drifts towards the edge of the time window, and swaps keys and
mode on reload without touching the machine (send sequence and replay marks carried
over). Refusals go back to the driver as a ``Reject``, which counts and logs them with
every other drop reason.

The trailer carries UTC time, so the gate reads ``wall_clock()`` (``time.time``); the
machine keeps running on the loop's monotonic clock, which callers pass as ``now``
for the rate limit only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from hadirector.model import AntiReplay, IPAddress, VrrpInstance
from hadirector.vrrp.codec import Advert, Reject, encode

# vrrp/auth.py (with hashlib and hmac) is imported by the first instance that has
# ``auth``: an agent without it need not load it before INIT -> BACKUP.
if TYPE_CHECKING:
    from hadirector.vrrp.auth import AdvertAuth

    from .vrrp_driver import DropLog


class AdvertGate:
    def __init__(self, instance: VrrpInstance, *, wall_clock: Callable[[], float], drops: "DropLog",
                 log) -> None:
        self.wall_clock = wall_clock
        self.log = log
        self._drops = drops
        self.auth: AdvertAuth | None = _new_auth(instance)
        self.verified = 0                   # adverts whose trailer verified
        self.unsigned_accepted = 0          # permissive / receive_only: accepted unsigned

    @property
    def trailer_len(self) -> int:
        """What ``decode`` expects after the VRRP PDU: a trailer only when auth is on."""
        if self.auth is None:
            return 0
        from hadirector.vrrp.auth import TRAILER_LEN

        return TRAILER_LEN

    def reconfigure(self, old: VrrpInstance, instance: VrrpInstance) -> None:
        """Reload: a new ``auth`` (or an interval that moves the time window) replaces
        only the signing/verifying state."""
        if instance.auth == old.auth and instance.advert_interval == old.advert_interval:
            return
        self.auth = _new_auth(instance, self.auth)
        auth = instance.auth
        self.log.info("vrrp.auth_reconfigured", reason="reload",
                      mode=auth.mode.value if auth else None,
                      active_key=auth.active_key if auth else None,
                      key_ids=[k.id for k in auth.keys] if auth else [],
                      time_window=self.auth.window if self.auth else None)

    def admit(self, payload: bytes, adv: Advert, src: IPAddress, now: float) -> Reject | None:
        """None: the advert (decoded from ``payload``) may reach the machine; otherwise
        the reason to drop it. Called before any field of it reaches the machine
        (keepalived's order)."""
        auth = self.auth
        if auth is None:
            return None
        pdu = payload[:len(payload) - len(adv.trailer)]
        verdict = auth.verify(pdu, adv.trailer or None, src, self.wall_clock())
        if verdict is not None:
            return verdict
        if adv.trailer:
            self.verified += 1
            self._check_skew(auth, src, now)
        else:
            self.unsigned_accepted += 1
        return None

    def _check_skew(self, auth: AdvertAuth, src: IPAddress, now: float) -> None:
        """keepalived's early warning: a peer's clock past half the window from ours."""
        skew = auth.last_skew
        if auth.config.anti_replay is AntiReplay.TIME and skew is not None and abs(skew) > auth.window / 2:
            suppressed = self._drops.admit(f"skew:{src}", now)
            if suppressed is not None:
                self.log.warning("vrrp.auth_clock_skewed", reason="approaching_time_window",
                                 src=str(src), skew=skew, time_window=auth.window,
                                 suppressed=suppressed)

    def sign(self, adv: Advert, src: IPAddress, dst: IPAddress) -> tuple[bytes, bytes]:
        """``(pdu encoded for dst, trailer)``, or ``(b"", b"")`` when we do not sign.

        One signature per advert, copied to every destination: the HMAC covers neither
        the destination nor the checksum field that depends on it."""
        if self.auth is None or not self.auth.signs:
            return b"", b""
        pdu = encode(adv, src, dst)
        return pdu, self.auth.sign(pdu, src, self.wall_clock())


def _new_auth(instance: VrrpInstance, old: AdvertAuth | None = None) -> AdvertAuth | None:
    if instance.auth is None:
        return None
    from hadirector.vrrp.auth import AdvertAuth

    peers = tuple(instance.unicast_peers)
    if old is not None:
        return old.reconfigured(instance.auth, advert_interval=instance.advert_interval,
                                unicast_peers=peers)
    return AdvertAuth(instance.auth, family=instance.family, version=instance.version,
                      vrid=instance.vrid, advert_interval=instance.advert_interval,
                      unicast_peers=peers)
