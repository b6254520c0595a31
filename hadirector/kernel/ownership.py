"""Which IPVS services this agent owns, persisted so a restarted agent can reconcile what
a dead predecessor left behind (a SIGKILLed agent leaves its table in the kernel).

The set is a JSON list of service keys in ``<state_dir>/ipvs-owned.json``, written to a
temporary file in the same directory, fsynced and renamed over the old one: a reader
sees the old set or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hadirector.ipvs.table import ServiceKey

FILENAME = "ipvs-owned.json"
FORMAT = 1


class OwnedStore:
    """Load/save the owned set. ``path=None`` keeps it in memory only (tests, CLI)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self._memory: set[ServiceKey] = set()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike) -> OwnedStore:
        return cls(Path(state_dir) / FILENAME)

    def load(self) -> set[ServiceKey]:
        if self.path is None:
            return set(self._memory)
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return set()
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"{self.path}: unknown ownership file format")
        return {ServiceKey.from_json(k) for k in raw["services"]}

    def save(self, owned: Iterable[ServiceKey]) -> None:
        keys = sorted(set(owned))
        if self.path is None:
            self._memory = set(keys)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": FORMAT, "services": [k.to_json() for k in keys]}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".ipvs-owned.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
