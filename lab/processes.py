"""Looking at real processes from the labs and tests (spawned scripts, their trees)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Running (a zombie is dead: in a container, PID 1 may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def group_gone(pgid: int) -> bool:
    """No live process is left in process group ``pgid`` (zombies as in ``alive``: a
    process has closed its files, and so its sockets, before it becomes one)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:                                 # exited meanwhile
            continue
        state, _ppid, pgrp = stat[stat.rindex(b")") + 2:].split()[:3]
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            return False
    return True


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, from every one of its threads (a child belongs
    to the thread that forked it)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:                                 # the thread ended meanwhile
            continue
    return kids
