"""The kernel's connection-sync tuning, ``net.ipv4.vs.*`` (per network namespace).

By default the master sync daemon sends a connection when its 3rd incoming packet
arrives and then every 50 packets (``sync_threshold = 3 50``). A backup daemon that
starts later therefore never hears of a quiet long-lived connection, and taking the VIP
back to that node drops it. ``sync_refresh_period = R`` with a sync period of 0 makes the
master re-send each active connection at most every R seconds instead (and on every
state change), so a fresh backup knows them all within about R
(Documentation/networking/ipvs-sysctl.rst).

``sync_tuning`` is the pure decision; ``apply_sync_tuning`` reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hadirector import model

VS_SYSCTL = Path("/proc/sys/net/ipv4/vs")


class SysctlError(Exception):
    """A net.ipv4.vs.* setting could not be read or written (message names the file)."""


@dataclass(frozen=True)
class SysctlChange:
    name: str           # e.g. "sync_refresh_period"
    old: str
    new: str


def _threshold(text: str) -> tuple[int, int]:
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"unexpected sync_threshold {text!r}")
    return int(parts[0]), int(parts[1])


def sync_tuning(cfg: model.SyncDaemon | None, current: dict[str, str]) -> list[SysctlChange]:
    """What to write so the kernel re-sends active connections every
    ``cfg.refresh_period`` seconds. Nothing when refresh_period is unset (the kernel's
    settings are the operator's) or already in place. ``current`` holds the files'
    present contents; the threshold (first number) is kept, only the period becomes 0."""
    if cfg is None or cfg.refresh_period is None:
        return []
    changes = []
    refresh = str(cfg.refresh_period)
    if current["sync_refresh_period"].strip() != refresh:
        changes.append(SysctlChange("sync_refresh_period", current["sync_refresh_period"].strip(), refresh))
    threshold, period = _threshold(current["sync_threshold"])
    if period != 0:
        changes.append(SysctlChange("sync_threshold", f"{threshold} {period}", f"{threshold} 0"))
    return changes


def apply_sync_tuning(cfg: model.SyncDaemon | None, root: Path = VS_SYSCTL) -> list[SysctlChange]:
    """Read, decide, write; returns what changed. Raises SysctlError naming the file."""
    if cfg is None or cfg.refresh_period is None:
        return []
    current = {}
    for name in ("sync_refresh_period", "sync_threshold"):
        path = root / name
        try:
            current[name] = path.read_text()
        except OSError as e:
            raise SysctlError(f"cannot read {path}: {e.strerror or e} "
                              "(is the ip_vs module loaded in this network namespace?)") from None
    try:
        changes = sync_tuning(cfg, current)
    except ValueError as e:
        raise SysctlError(f"{root / 'sync_threshold'}: {e}") from None
    for change in changes:
        path = root / change.name
        try:
            path.write_text(change.new + "\n")
        except OSError as e:
            raise SysctlError(f"cannot write {change.new!r} to {path}: {e.strerror or e}") from None
    return changes


# A scale-out director picks up flows mid-stream that another director started
# (shared/scale-out.md 1b.4): sloppy_tcp schedules any non-RST TCP packet, not only a
# SYN (else the local stack answers it with a reset); sloppy_sctp is the SCTP analogue;
# schedule_icmp schedules an ICMP error with no connection, so PMTU "frag needed"
# reaches the backend mh picks for the inner header.
SCALE_OUT_SYSCTLS: tuple[tuple[str, str], ...] = (("sloppy_tcp", "1"), ("sloppy_sctp", "1"), ("schedule_icmp", "1"))


def read_values(names, root: Path = VS_SYSCTL) -> dict[str, str | None]:
    """Each net.ipv4.vs.NAME's value, or None when it cannot be read."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = (root / name).read_text().strip()
        except OSError:
            out[name] = None
    return out


def apply_values(values: tuple[tuple[str, str], ...], root: Path = VS_SYSCTL) -> list[SysctlChange]:
    """Write each value that differs; returns what changed. Raises SysctlError."""
    changes = []
    for name, want in values:
        path = root / name
        try:
            have = path.read_text().strip()
            if have != want:
                path.write_text(want)
                changes.append(SysctlChange(name, have, want))
        except OSError as e:
            raise SysctlError(f"cannot set {path} to {want}: {e.strerror or e} "
                              "(is the ip_vs module loaded in this network namespace?)") from None
    return changes
