"""Authenticated adverts: keepalived's ``auth_hmac`` trailer (2.4.2+), sans-IO.

Theory of operation: plain VRRP trusts any packet with TTL 255 and a valid checksum,
so any host on the LAN can take the VIPs. keepalived 2.4 appends a 28-byte trailer
(draft-cassen-vrrp-auth-hmac) after the VRRP PDU, after the addresses (v2: after the 8
auth-data bytes)::

    | ext_type=1 | key_id | reserved=0 (2) | sec (4, UTC) | subsec (2) | ctr (2) |
    | HMAC-SHA256 truncated to 128 bits (16)                                   |

The HMAC covers a 20-byte pseudo-header (family byte 4|6, VRRP version, VRID, 0, the
source address zero-padded to 16 bytes), the PDU with its checksum field read as
zero, the first 12 trailer bytes and 16 zero bytes in place of the HMAC. The IP header
(TTL, destination) is not covered: one signature serves every unicast peer.

``AdvertAuth`` is one instance's signer and verifier. It never reads a clock: the
shell passes ``wall=`` (UTC seconds, the clock the trailer carries). Receive order is
keepalived's, cheapest first: MALFORMED (ext_type/reserved), STALE (time mode: the
unauthenticated timestamp outside the window, checked before the HMAC so a flood of
captures costs no digest; it only ever rejects), UNKNOWN_KEY, BAD_HMAC (constant-time
compare), REPLAY (the sequence must be strictly after the sender's high-water mark,
RFC 1982 serial arithmetic over 64 bits). Replay state is per sender: in unicast the
configured peers only; in multicast a 4-slot LRU filled only once an HMAC verified,
so forged sources cannot churn it. A mark that fell outside the window expires, so a
sender recovers after a clock step.

Sequence = sec<<32 | subsec<<16 | ctr; the sender uses max(clock, last + 1), and in
time mode restarts from the clock when it stranded more than a window ahead (a clock
stepped back). Nothing is persisted.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass

from hadirector.model import AntiReplay, AuthMode, IPAddress, VrrpAuth
from hadirector.vrrp.codec import Reject

TRAILER_LEN = 28
HMAC_LEN = 16
EXT_HMAC_SHA256 = 1                 # the only ext_type defined
KEY_MIN, KEY_MAX = 32, 64           # bytes; keepalived's bounds
WINDOW_MIN, WINDOW_MAX, WINDOW_FLOOR = 1, 300, 5   # seconds
MCAST_SENDERS = 4                   # replay slots per multicast instance (keepalived's)

# Every outcome verify() can reject with, in keepalived's receive order (status, metrics).
REJECTS = (Reject.AUTH_MISSING, Reject.AUTH_MALFORMED, Reject.AUTH_STALE, Reject.AUTH_UNKNOWN_KEY,
           Reject.AUTH_BAD_HMAC, Reject.AUTH_REPLAY)

_HEAD = struct.Struct("!BBHIHH")    # ext_type, key_id, reserved, sec, subsec, ctr
_CSUM = slice(6, 8)                 # the VRRP checksum field, read as zero by the HMAC
_ZERO_MAC = bytes(HMAC_LEN)
_SEQ_MOD = 1 << 64


def default_window(advert_interval: float) -> int:
    """keepalived's default freshness window: max(3 x advert interval, 5 s), at most 300."""
    return max(WINDOW_FLOOR, min(WINDOW_MAX, math.ceil(3 * advert_interval)))


def seq_after(a: int, b: int) -> bool:
    """RFC 1982 serial arithmetic on 64 bits: ``a`` comes strictly after ``b``."""
    return 0 < (a - b) % _SEQ_MOD < (1 << 63)


def clock_seq(wall: float) -> int:
    """A UTC clock reading as a sequence: seconds, a 1/65536 fraction, counter 0."""
    sec = math.floor(wall)
    subsec = min(int((wall - sec) * 65536), 0xFFFF)
    return ((sec & 0xFFFFFFFF) << 32) | (subsec << 16)


def _signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def pseudo_header(family: int, version: int, vrid: int, src: IPAddress) -> bytes:
    """Binds family, version and VRID (no splicing between instances sharing a key)
    and the claimed sender."""
    return bytes((family, version, vrid, 0)) + src.packed.ljust(16, b"\x00")


def compute_mac(key: bytes | hmac.HMAC, pseudo: bytes, pdu: bytes, head: bytes) -> bytes:
    """The truncated HMAC; ``key`` may be an already keyed ``hmac.HMAC`` (copying one
    skips hashing the key pads again: ~40% of an HMAC this short)."""
    keyed = key.copy() if isinstance(key, hmac.HMAC) else hmac.new(key, digestmod=hashlib.sha256)
    keyed.update(b"".join((pseudo, pdu[:_CSUM.start], b"\x00\x00", pdu[_CSUM.stop:], head, _ZERO_MAC)))
    return keyed.digest()[:HMAC_LEN]


@dataclass(frozen=True)
class Trailer:
    key_id: int
    seq: int
    mac: bytes = _ZERO_MAC
    ext_type: int = EXT_HMAC_SHA256
    reserved: int = 0

    def head(self) -> bytes:
        return _HEAD.pack(self.ext_type, self.key_id, self.reserved, self.seq >> 32,
                          (self.seq >> 16) & 0xFFFF, self.seq & 0xFFFF)

    def pack(self) -> bytes:
        return self.head() + self.mac

    @property
    def sec(self) -> int:
        return self.seq >> 32

    @classmethod
    def unpack(cls, data: bytes) -> "Trailer":
        if len(data) != TRAILER_LEN:
            raise ValueError(f"a trailer is {TRAILER_LEN} bytes, not {len(data)}")
        ext, key_id, reserved, sec, subsec, ctr = _HEAD.unpack_from(data)
        return cls(key_id, (sec << 32) | (subsec << 16) | ctr, bytes(data[12:]), ext, reserved)


def sign(key: bytes | hmac.HMAC, key_id: int, seq: int, pdu: bytes, *, family: int, version: int,
         vrid: int, src: IPAddress) -> bytes:
    """The 28 trailer bytes for ``pdu`` (its checksum field is ignored)."""
    head = Trailer(key_id, seq).head()
    return head + compute_mac(key, pseudo_header(family, version, vrid, src), pdu, head)


class AdvertAuth:
    """One instance's signing and verifying state (see the module docstring).

    ``verify`` returns None (accept) or the ``Reject``; ``sign`` returns the trailer to
    append, b"" in receive_only mode. ``last_skew`` is the clock skew in seconds of the
    last trailer that reached the window check (for the early warning at half the
    window)."""

    def __init__(self, auth: VrrpAuth, *, family: int, version: int, vrid: int,
                 advert_interval: float, unicast_peers: tuple[IPAddress, ...] = ()) -> None:
        self.config = auth
        self.family, self.version, self.vrid = family, version, vrid
        self.keys: dict[int, hmac.HMAC] = {k.id: hmac.new(k.secret, digestmod=hashlib.sha256)
                                           for k in auth.keys}
        self.mode = auth.mode
        self.time_mode = auth.anti_replay is AntiReplay.TIME
        self.window = int(auth.time_window) if auth.time_window is not None \
            else default_window(advert_interval)
        self.send_seq = 0
        self.last_skew: int | None = None
        self.unicast = bool(unicast_peers)
        # Replay high-water marks: None = no valid mark yet.
        self._peers: dict[IPAddress, int | None] = {p: None for p in unicast_peers}
        self._senders: OrderedDict[IPAddress, int | None] = OrderedDict()

    def reconfigured(self, auth: VrrpAuth, *, advert_interval: float,
                     unicast_peers: tuple[IPAddress, ...] = ()) -> "AdvertAuth":
        """The state for a reloaded config: new keys, mode and window; the send sequence
        and the replay marks carry over (a reload must not reopen a replay window)."""
        new = AdvertAuth(auth, family=self.family, version=self.version, vrid=self.vrid,
                         advert_interval=advert_interval, unicast_peers=unicast_peers)
        new.send_seq = self.send_seq
        for peer in new._peers:
            new._peers[peer] = self._peers.get(peer)
        new._senders = OrderedDict(self._senders)
        return new

    # --- sending ----------------------------------------------------------------------

    @property
    def signs(self) -> bool:
        return self.mode is not AuthMode.RECEIVE_ONLY

    def next_seq(self, wall: float) -> int:
        clk = clock_seq(wall)
        if seq_after(clk, self.send_seq):
            self.send_seq = clk
        elif self.time_mode and _signed32((self.send_seq >> 32) - (clk >> 32)) > self.window:
            # The clock was stepped back: receivers would reject the stranded sequence
            # as stale until the clock catches up, so restart from the clock.
            self.send_seq = clk
        else:
            self.send_seq = (self.send_seq + 1) % _SEQ_MOD
        return self.send_seq

    def sign(self, pdu: bytes, src: IPAddress, wall: float) -> bytes:
        """One signature per advert, copied to every destination (the HMAC does not
        cover the destination)."""
        if not self.signs:
            return b""
        key_id = self.config.active_key
        return sign(self.keys[key_id], key_id, self.next_seq(wall), pdu, family=self.family,
                    version=self.version, vrid=self.vrid, src=src)

    # --- receiving --------------------------------------------------------------------

    def verify(self, pdu: bytes, trailer: bytes | None, src: IPAddress, wall: float) -> Reject | None:
        """Decide on one received advert: ``pdu`` without the trailer, ``trailer`` its
        28 bytes or None when it came without one."""
        if not trailer:
            # Only the migration modes accept unsigned adverts.
            return Reject.AUTH_MISSING if self.mode is AuthMode.ENFORCE else None
        if self.unicast and src not in self._peers:
            return Reject.UNKNOWN_PEER
        try:
            tr = Trailer.unpack(trailer)
        except ValueError:
            return Reject.AUTH_MALFORMED
        if tr.ext_type != EXT_HMAC_SHA256 or tr.reserved != 0:
            return Reject.AUTH_MALFORMED
        now_sec = math.floor(wall)
        if self.time_mode:
            self.last_skew = _signed32(now_sec - tr.sec)
            if abs(self.last_skew) > self.window:
                return Reject.AUTH_STALE
        key = self.keys.get(tr.key_id)
        if key is None:
            return Reject.AUTH_UNKNOWN_KEY
        expected = compute_mac(key, pseudo_header(self.family, self.version, self.vrid, src),
                               pdu, tr.head())
        if not hmac.compare_digest(expected, tr.mac):
            return Reject.AUTH_BAD_HMAC
        # Only now, with the HMAC verified, may a sender occupy a replay slot.
        marks = self._peers if self.unicast else self._sender_slot(src)
        mark = marks.get(src)
        if mark is not None and self.time_mode and \
                abs(_signed32(now_sec - (mark >> 32))) > self.window:
            # A mark outside the window orders only packets the window rejects anyway;
            # dropping it lets a sender whose clock was stepped back recover.
            mark = None
        if mark is not None and not seq_after(tr.seq, mark):
            return Reject.AUTH_REPLAY
        marks[src] = tr.seq
        return None

    def _sender_slot(self, src: IPAddress) -> OrderedDict:
        senders = self._senders
        if src in senders:
            senders.move_to_end(src)
        else:
            if len(senders) >= MCAST_SENDERS:
                senders.popitem(last=False)      # the least recently used
            senders[src] = None
        return senders

    def replay_senders(self) -> tuple[IPAddress, ...]:
        """Sources holding a replay slot (tests, status)."""
        return tuple(self._senders) if not self.unicast else tuple(self._peers)
