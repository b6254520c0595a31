"""The VIPs this agent added, on disk beside its lock, for the next agent's start-up.

A kill -9'd master leaves its VIPs on the interfaces, and once the peer has taken
over two nodes answer for them until they go. The next agent removes them first of
all, before it reads its config or imports anything slow (``preflight``), so it needs
to know which addresses are its predecessor's without the config: this record.

Theory of operation. The agent rewrites ``net-<netns inode>.vips`` in the lock's
root-only directory (``lock.LOCK_DIR``) as a whole (write, then rename) *before* it
adds a VIP — so a kill between the two leaves at worst an address recorded that is
not there, whose removal finds nothing — and after it removes one. A VIP that was
already on the interface when the agent wanted it (``vrrp.vips_already_present``) is
not recorded: it was not added by us. A clean stop leaves no file. The next holder
of the lock reads it, removes each VIP from the interface it was added to (same
name *and* index: a link re-created since is another link) and deletes the file.
The namespace's cookie is recorded too: a network namespace's inode can be reused by
a later namespace (a lab torn down and built again), its cookie cannot, so a record
left by a dead namespace is ignored rather than applied to a new one.

stdlib only (the start-up path imports this before anything else).
"""

from __future__ import annotations

import json
import os
from collections import namedtuple
from collections.abc import Iterable

VERSION = 1


# A namedtuple, not a dataclass: see lock.Holder (start-up cost). Immutable, ordered.
#   interface: str; ifindex: int (0: unknown when recorded, the name alone is checked);
#   vip: str ("10.0.0.1/32", "2001:db8::1/128"); instance: str; vrid: int
RecordedVip = namedtuple("RecordedVip", "interface ifindex vip instance vrid", defaults=("", 0))


def record_path(lock_dir: str, netns: int) -> str:
    return os.path.join(lock_dir, f"net-{netns}.vips")


def encode(vips: Iterable[RecordedVip], cookie: int | None, pid: int) -> str:
    return json.dumps({"version": VERSION, "netns_cookie": cookie, "pid": pid,
                       "vips": [v._asdict() for v in sorted(set(vips))]}, sort_keys=True)


def decode(text: str, cookie: int | None) -> list[RecordedVip]:
    """The recorded VIPs; [] for a record of another namespace (cookie mismatch) or
    one that does not parse (it was written by rename, so never half)."""
    try:
        doc = json.loads(text)
        if doc.get("version") != VERSION or doc.get("netns_cookie") != cookie:
            return []
        return [RecordedVip(str(v["interface"]), int(v["ifindex"]), str(v["vip"]),
                            str(v.get("instance", "")), int(v.get("vrid", 0)))
                for v in doc["vips"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


class VipRecord:
    """Reads and rewrites one namespace's record; ``write([])`` removes it."""

    def __init__(self, path: str, cookie: int | None) -> None:
        self.path = path
        self.cookie = cookie
        self._last: frozenset[RecordedVip] | None = None

    def read(self) -> list[RecordedVip]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return decode(f.read(), self.cookie)
        except FileNotFoundError:
            return []

    def write(self, vips: Iterable[RecordedVip]) -> bool:
        """Replace the record (atomically); False when it already said exactly that."""
        wanted = frozenset(vips)
        if wanted == self._last:
            return False
        if not wanted:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(encode(wanted, self.cookie, os.getpid()))
            os.replace(tmp, self.path)
        self._last = wanted
        return True
