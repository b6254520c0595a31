"""A model of the kernel's ``mh`` scheduler (net/netfilter/ipvs/ip_vs_mh.c), to predict
which real server IPVS picks for a flow without a kernel.

The kernel lab's scale-out tests use it to choose the client ports whose flows a
misconfigured director (another insertion order, a deleted real server, one added at
weight 0) sends elsewhere: with three real servers and 4093 slots that is well under
1 % of flows, too few to meet by chance with a few hundred TCP connections. The tests
check the model against the kernel too (the flows it says stay must stay).

Written from the kernel source (6.12): hsiphash on 64-bit is SipHash-1-3 with the
fixed keys of ``generate_hash_secret``; offset and skip per destination; the table
filled round by round in list order, ``last_weight`` turns per round; lookup by source
address (+ source port with ``mh-port``), ``mh-fallback`` re-hashing with offsets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

TAB_SIZE = 4093                 # primes[CONFIG_IP_VS_MH_TAB_INDEX(12) - 8]
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)
_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def hsiphash_u32(value: int, key: tuple[int, int]) -> int:
    """The kernel's hsiphash() of one u32 on 64-bit: SipHash-1-3, low 32 bits."""
    k0, k1 = key
    v0, v1 = 0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1
    v2, v3 = 0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1

    def rnd():
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M64; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)  # noqa: E702
        v2 = (v2 + v3) & _M64; v3 = _rotl(v3, 16); v3 ^= v2                      # noqa: E702
        v0 = (v0 + v3) & _M64; v3 = _rotl(v3, 21); v3 ^= v0                      # noqa: E702
        v2 = (v2 + v1) & _M64; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)  # noqa: E702

    b = (4 << 56) | (value & 0xFFFFFFFF)
    v3 ^= b
    rnd()
    v0 ^= b
    v2 ^= 0xFF
    rnd()
    rnd()
    rnd()
    return (v0 ^ v1 ^ v2 ^ v3) & 0xFFFFFFFF


def hashkey(address: str, port: int, key: tuple[int, int], offset: int = 0) -> int:
    v = (offset + port + int(ipaddress.IPv4Address(address))) & 0xFFFFFFFF
    return hsiphash_u32(v, key)


@dataclass(frozen=True)
class Dest:
    address: str
    port: int
    weight: int = 1             # the current weight (0: unavailable, mh-fallback skips it)
    last_weight: int = 1        # the last non-zero weight (0 if added at 0): its slots


def lookup_table(dests: list[Dest]) -> list[int | None]:
    """Slot -> index into ``dests`` (the kernel's list order), as ip_vs_mh_populate."""
    import math

    weights = [d.last_weight for d in dests if d.last_weight > 0]
    if not weights:
        return [None] * TAB_SIZE
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    shift = max(0, (max(weights) // g).bit_length() - 6)          # IP_VS_MH_TAB_BITS = 12 / 2
    setup = []
    for d in dests:
        offset = hashkey(d.address, d.port, HASH1) % TAB_SIZE
        skip = hashkey(d.address, d.port, HASH2) % (TAB_SIZE - 1) + 1
        turns = ((d.last_weight // g) >> shift) or int(d.last_weight != 0)
        setup.append([offset, skip, turns])
    table: list[int | None] = [None] * TAB_SIZE
    n = dt_count = 0
    while True:
        i = 0
        while i < len(dests):
            perm, skip, turns = setup[i]
            if turns < 1:
                i += 1
                continue
            c = perm
            while table[c] is not None:
                perm += skip
                if perm >= TAB_SIZE:
                    perm -= TAB_SIZE
                c = perm
            setup[i][0] = perm
            table[c] = i
            n += 1
            if n == TAB_SIZE:
                return table
            dt_count += 1
            if dt_count >= turns:
                dt_count = 0
                i += 1


def schedule(dests: list[Dest], table: list[int | None], client: str, cport: int,
             mh_port: bool = True, fallback: bool = True) -> str | None:
    """The real server's address a new flow from ``client:cport`` gets (None: none)."""
    port = cport if mh_port else 0
    ihash = hashkey(client, port, HASH1) % TAB_SIZE
    i = table[ihash]
    if i is None:
        return None
    if dests[i].weight > 0:
        return dests[i].address
    if not fallback:
        return None
    for offset in range(TAB_SIZE):
        h = hashkey(client, port, HASH1, (offset + ihash) % TAB_SIZE) % TAB_SIZE
        i = table[h]
        if i is None:
            return None
        if dests[i].weight > 0:
            return dests[i].address
    return None
