"""VRRP advertisement codec: bytes <-> ``Advert``, with RFC 5798 7.1 receive checks.

Theory of operation: the net layer hands us what a raw socket returned (for IPv4 the
whole IP packet, see ``parse_ip_packet``; for IPv6 only the payload plus the hop limit
from IPV6_HOPLIMIT ancillary data) and ``decode`` either returns an ``Advert`` or a
``Reject`` that says why the packet was dropped. ``decode`` never raises, whatever the
bytes: a raw socket hears anything on protocol 112 and a bad packet must never take
the agent down. ``encode`` is the inverse and computes the checksum.

Checks that need the local configuration (VRID, addresses, v2 advert interval) belong to
the state machine, which reports them with the same ``Reject`` values.

Wire formats (both 8 fixed bytes, then addresses):

  VRRPv3 (RFC 5798 5.1)                      VRRPv2 (RFC 3768 5.1)
  |ver=3|type=1| VRID | priority | count |   |ver=2|type=1| VRID | priority | count |
  | rsvd(4) | max adver int (12, cs) | csum| |auth type| adver int (s) | checksum   |
  | IPv4 or IPv6 addresses ...          |   | IPv4 addresses ... | auth data (8)  |

The v3 checksum covers an IPv4/IPv6 pseudo-header (RFC 5798 5.2.8); the v2 checksum
covers the VRRP message only (RFC 3768 5.3.8).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTO_VRRP = 112          # IANA protocol number (RFC 5798 5.2.4)
VRRP_TTL = 255            # RFC 5798 5.2.3: sent with TTL/hop limit 255, checked on receive
TYPE_ADVERTISEMENT = 1    # RFC 5798 5.2.2: the only type defined
MCAST_V4 = ipaddress.IPv4Address("224.0.0.18")   # RFC 5798 5.1.1.2
MCAST_V6 = ipaddress.IPv6Address("ff02::12")     # RFC 5798 5.1.2.2

AUTH_NONE = 0             # RFC 3768 5.3.6.1
AUTH_SIMPLE_TEXT = 1      # RFC 2338 5.3.6.2, still sent by some v2 peers (keepalived auth_type PASS)

_HEADER = struct.Struct("!BBBBHH")   # ver|type, vrid, priority, count, (auth,int)|int, checksum
_V2_AUTH_LEN = 8
_V3_MAX_INT_CS = 0x0FFF   # 12 bits of centiseconds (RFC 5798 5.2.7)


class Reject(enum.Enum):
    """Why an advertisement was dropped. Values are stable strings for logs/metrics."""

    # decode() / parse_ip_packet(): the packet itself is bad (RFC 5798 7.1)
    TRUNCATED = "truncated"             # shorter than the fixed header or its addresses
    BAD_LENGTH = "bad_length"           # longer than its address count says / IP lengths wrong
    BAD_VERSION = "bad_version"         # not 2 or 3, or v2 over IPv6
    BAD_TYPE = "bad_type"               # type != 1 (ADVERTISEMENT)
    BAD_TTL = "bad_ttl"                 # TTL / hop limit != 255
    BAD_CHECKSUM = "bad_checksum"
    BAD_INTERVAL = "bad_interval"       # advert interval 0
    BAD_AUTH_TYPE = "bad_auth_type"     # v2 auth type other than 0 or 1 (e.g. 2 = IPsec AH)
    AUTH_MISMATCH = "auth_mismatch"     # v2 simple-text password differs from the expected one
    BAD_PROTOCOL = "bad_protocol"       # IP protocol != 112
    BAD_IP_HEADER = "bad_ip_header"     # not IPv4, IHL < 5, fragment
    # VrrpMachine.receive_advert(): a valid packet that is not for this instance
    VRID_MISMATCH = "vrid_mismatch"
    VERSION_MISMATCH = "version_mismatch"   # a v2 advert at a v3 instance or vice versa
    FAMILY_MISMATCH = "family_mismatch"
    ADDRESS_MISMATCH = "address_mismatch"   # addresses differ and sender is not the owner
    INTERVAL_MISMATCH = "interval_mismatch"  # v2 only: RFC 3768 7.1 requires equal intervals
    OWN_ADVERT = "own_advert"           # looped back from our own primary address
    NOT_LISTENING = "not_listening"     # INITIALIZE or FAULT: adverts are not acted upon
    # The driver: a source that is no configured peer (unicast_peers, or peers: in multicast)
    UNKNOWN_PEER = "unknown_peer"
    # vrrp/auth.py: the auth_hmac trailer, in keepalived's receive order
    AUTH_MISSING = "auth_missing"       # mode enforce, and the advert carries no trailer
    AUTH_MALFORMED = "auth_malformed"   # unknown ext_type or nonzero reserved field
    AUTH_STALE = "stale"                # timestamp outside the time window (before the HMAC)
    AUTH_UNKNOWN_KEY = "unknown_key"    # key id not configured
    AUTH_BAD_HMAC = "bad_hmac"          # forged, tampered, or signed with another key
    AUTH_REPLAY = "replay"              # sequence not after the sender's high-water mark


@dataclass(frozen=True)
class Advert:
    """One VRRP advertisement, version independent.

    ``max_advert_int`` is in seconds: v3 carries centiseconds (RFC 5798 5.2.7), v2 whole
    seconds (RFC 3768 5.3.7 "Adver Int"). ``auth_type``/``auth_data`` exist only on the
    v2 wire; we send type 0 and accept 0 and 1 (simple text) on receive.
    """

    version: int                    # 2 or 3
    vrid: int                       # 1..255
    priority: int                   # 0..255; 0 = master is leaving, 255 = address owner
    max_advert_int: float           # seconds
    addresses: tuple[IPAddress, ...] = ()
    family: int = 4                 # 4 or 6
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""          # v2 simple text, up to 8 bytes (NUL padded on the wire)
    # The auth_hmac trailer as received (vrrp/auth.py verifies it): not the advert's meaning.
    trailer: bytes = field(default=b"", repr=False, compare=False)


class IpPacket(NamedTuple):
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    payload: bytes


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    # RFC 5798 5.2.8: the v3 checksum includes the IPv4 (RFC 768-style) or IPv6
    # (RFC 8200 8.1) pseudo-header with next header 112.
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, PROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, PROTO_VRRP)


def encode(adv: Advert, src: IPAddress | None = None, dst: IPAddress | None = None,
           trailer: bytes = b"") -> bytes:
    """Build the VRRP payload of ``adv`` (what goes after the IP header), checksum included.

    v3 needs ``src`` (our primary address) and ``dst`` (224.0.0.18, ff02::12 or a unicast
    peer) for the pseudo-header; v2 ignores them. Raises ``ValueError`` for an Advert no
    wire format can carry (a programming error, unlike decode's inputs).

    ``trailer`` (vrrp/auth.py) is appended after the PDU. As keepalived does, the IPv4
    checksum covers the PDU only, the IPv6 one the whole payload (what the kernel's
    IPV6_CHECKSUM computes there).
    """
    if not 0 <= adv.priority <= 255 or not 1 <= adv.vrid <= 255:
        raise ValueError(f"priority {adv.priority} / vrid {adv.vrid} out of range")
    if len(adv.addresses) > 255:
        raise ValueError("at most 255 addresses fit in one advertisement")
    for a in adv.addresses:
        if a.version != adv.family:
            raise ValueError(f"address {a} is not IPv{adv.family}")
    addrs = b"".join(a.packed for a in adv.addresses)
    if adv.version == 3:
        if src is None or dst is None or src.version != adv.family or dst.version != adv.family:
            raise ValueError("VRRPv3 needs IPv%d src and dst for its checksum" % adv.family)
        cs = round(adv.max_advert_int * 100)
        if not 1 <= cs <= _V3_MAX_INT_CS:
            raise ValueError(f"v3 advert interval {adv.max_advert_int}s not in 0.01..40.95")
        head = _HEADER.pack(0x31, adv.vrid, adv.priority, len(adv.addresses), cs, 0)
        body = head + addrs
        covered = body + trailer if adv.family == 6 else body
        csum = checksum(_pseudo_header(src, dst, len(covered)) + covered)
    elif adv.version == 2:
        if adv.family != 4:
            raise ValueError("VRRPv2 is IPv4 only (RFC 3768)")
        secs = round(adv.max_advert_int)
        if secs != adv.max_advert_int or not 1 <= secs <= 255:
            raise ValueError(f"v2 advert interval {adv.max_advert_int}s not whole 1..255")
        if adv.auth_type not in (AUTH_NONE, AUTH_SIMPLE_TEXT) or len(adv.auth_data) > 8:
            raise ValueError("v2 auth: type 0 or 1 with at most 8 bytes")
        auth = adv.auth_data.ljust(_V2_AUTH_LEN, b"\x00") if adv.auth_type else bytes(8)
        # RFC 3768 5.3.6: byte 4 is the auth type, byte 5 the interval in seconds.
        head = _HEADER.pack(0x21, adv.vrid, adv.priority, len(adv.addresses),
                            (adv.auth_type << 8) | secs, 0)
        body = head + addrs + auth
        csum = checksum(body)
    else:
        raise ValueError(f"VRRP version {adv.version} not supported")
    return body[:6] + struct.pack("!H", csum) + body[8:] + trailer


def decode(
    payload: bytes,
    *,
    src: IPAddress,
    dst: IPAddress,
    ttl: int | None,
    family: int,
    auth: bytes | None = None,
    trailer_len: int = 0,
) -> Advert | Reject:
    """Validate and parse one VRRP payload (RFC 5798 7.1, RFC 3768 7.1). Never raises.

    ``ttl`` is the IPv4 TTL or IPv6 hop limit; ``None`` skips that check (only for
    callers that cannot learn it). ``auth``: for v2, an expected simple-text password;
    ``None`` accepts auth types 0 and 1 without comparing. ``trailer_len``: an instance
    with auth_hmac accepts a payload exactly this much longer than its address count
    says (detection by exact length, as keepalived) and returns those bytes in
    ``Advert.trailer``, unverified.
    """
    try:
        return _decode(payload, src, dst, ttl, family, auth, trailer_len)
    except Exception:  # noqa: BLE001 - belt and braces: the contract is "never raises"
        return Reject.TRUNCATED


def _decode(payload, src, dst, ttl, family, auth, trailer_len=0) -> Advert | Reject:
    if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) < _HEADER.size:
        return Reject.TRUNCATED
    payload = bytes(payload)
    if ttl is not None and ttl != VRRP_TTL:
        # RFC 5798 7.1: a packet that crossed a router is not from our LAN.
        return Reject.BAD_TTL
    vt, vrid, priority, count, word, _csum = _HEADER.unpack_from(payload)
    version, type_ = vt >> 4, vt & 0x0F
    if version not in (2, 3) or (version == 2 and family != 4) or family not in (4, 6):
        return Reject.BAD_VERSION
    if type_ != TYPE_ADVERTISEMENT:
        return Reject.BAD_TYPE
    alen = 4 if family == 4 else 16
    expected = _HEADER.size + count * alen + (_V2_AUTH_LEN if version == 2 else 0)
    if len(payload) < expected:
        return Reject.TRUNCATED
    trailer = b""
    if trailer_len and len(payload) == expected + trailer_len:
        payload, trailer = payload[:expected], payload[expected:]
    if len(payload) > expected:
        return Reject.BAD_LENGTH
    if version == 3:
        # IPv6: the checksum covers the trailer too (see encode).
        covered = payload + trailer if family == 6 else payload
        try:
            pseudo = _pseudo_header(src, dst, len(covered))
        except (AttributeError, struct.error):
            return Reject.BAD_VERSION
        if src.version != family or dst.version != family:
            return Reject.BAD_VERSION
        if checksum(pseudo + covered) != 0:
            return Reject.BAD_CHECKSUM
        interval = (word & _V3_MAX_INT_CS) / 100
        auth_type, auth_data = AUTH_NONE, b""
    else:
        if checksum(payload) != 0:
            return Reject.BAD_CHECKSUM
        interval = float(word & 0xFF)
        auth_type = word >> 8
        auth_data = payload[expected - _V2_AUTH_LEN:]
        if auth_type == AUTH_NONE:
            auth_data = b""
        elif auth_type == AUTH_SIMPLE_TEXT:
            auth_data = auth_data.rstrip(b"\x00")
        else:
            return Reject.BAD_AUTH_TYPE
        if auth is not None and (auth_type != AUTH_SIMPLE_TEXT or auth_data != auth[:8]):
            return Reject.AUTH_MISMATCH
    if interval == 0:
        return Reject.BAD_INTERVAL
    ip = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    addresses = tuple(
        ip(payload[_HEADER.size + i * alen: _HEADER.size + (i + 1) * alen]) for i in range(count)
    )
    return Advert(version=version, vrid=vrid, priority=priority, max_advert_int=interval,
                  addresses=addresses, family=family, auth_type=auth_type, auth_data=auth_data,
                  trailer=trailer)


def parse_ip_packet(data: bytes) -> IpPacket | Reject:
    """Split what an IPv4 raw socket returned into (src, dst, ttl, payload). Never raises.

    Honours IHL (options are skipped) and Total Length (trailing link padding is cut).
    The kernel has already verified the header checksum and reassembled fragments.
    """
    try:
        if len(data) < 20:
            return Reject.TRUNCATED
        data = bytes(data)
        if data[0] >> 4 != 4:
            return Reject.BAD_IP_HEADER
        ihl = (data[0] & 0x0F) * 4
        total = struct.unpack_from("!H", data, 2)[0]
        if ihl < 20:
            return Reject.BAD_IP_HEADER
        if total < ihl or len(data) < total:
            # Some kernels historically reported Total Length in host order on raw
            # sockets (BSD); Linux does not. Anything inconsistent is dropped.
            return Reject.BAD_LENGTH if len(data) >= ihl else Reject.TRUNCATED
        if data[9] != PROTO_VRRP:
            return Reject.BAD_PROTOCOL
        return IpPacket(
            src=ipaddress.IPv4Address(data[12:16]),
            dst=ipaddress.IPv4Address(data[16:20]),
            ttl=data[8],
            payload=data[ihl:total],
        )
    except Exception:  # noqa: BLE001 - never raises
        return Reject.TRUNCATED
