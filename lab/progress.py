"""Progress of long work in the labs: a download shows bytes and percent as it goes, a
wait of more than a few seconds says what it waits for.

Theory of operation. The core is sans-IO: ``Pacer`` decides, from the times it is
given, whether a progress line is due, and ``wait_line`` / ``download_line`` /
``downloaded_line`` format the lines; tests drive them with a fake clock. The shells
read the clock and write: ``ProgressLine`` prints to stderr (on a terminal one line
rewritten in place, otherwise whole lines, few enough for a CI log), ``wait_for`` polls
a condition, ``download`` fetches a URL to a file.

How often (``Pace``): nothing for the first ``quiet`` seconds, so a short wait or a
small file says nothing. Then, not on a terminal, at most one line per ``period`` and,
as the wait grows, one per ``backoff`` of the time so far (10 %: a ten-minute wait
prints about forty lines, not 120). A download of known size prints when it crossed
another ``step`` (10 %) of it, still at most one line per ``period``, and after
``idle`` seconds without a step (a crawling mirror). On a terminal the line is
rewritten every ``tty_period``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class Pace:
    quiet: float = 5.0
    period: float = 5.0
    backoff: float = 0.1
    step: float = 0.1
    idle: float = 30.0
    tty_period: float = 0.5


PACE = Pace()


class Pacer:
    """When the next progress line is due. ``due(now, fraction)`` answers and, when it
    says yes, counts the line as printed."""

    def __init__(self, pace: Pace = PACE, *, tty: bool, start: float) -> None:
        self.pace = pace
        self.tty = tty
        self.start = start
        self.last: float | None = None   # when the last line went out
        self.last_fraction = 0.0

    def due(self, now: float, fraction: float | None = None) -> bool:
        p = self.pace
        elapsed = now - self.start
        if elapsed < p.quiet:
            return False
        if self.last is None:
            ok = True
        elif self.tty:
            ok = now - self.last >= p.tty_period
        else:
            since = now - self.last
            # With a known size the steps pace the lines; the time only when it crawls.
            by_time = since >= max(p.period, p.backoff * elapsed, p.idle if fraction is not None else 0.0)
            by_size = fraction is not None and fraction - self.last_fraction >= p.step - 1e-9
            ok = since >= p.period and (by_time or by_size)
        if ok:
            self.last = now
            if fraction is not None:
                self.last_fraction = fraction
        return ok


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def wait_line(what: str, elapsed: float, bound: float | None) -> str:
    """``waiting for dir2 to take the VIP (12 s so far, bound 60 s)``"""
    tail = f", bound {bound:.0f} s" if bound is not None else ""
    return f"waiting for {what} ({elapsed:.0f} s so far{tail})"


def download_line(name: str, done: int, total: int | None, elapsed: float) -> str:
    """``downloading x.deb: 12.3 MB of 64.6 MB (19 %), 2.1 MB/s``"""
    rate = f"{human_bytes(done / elapsed)}/s" if elapsed > 0 else "-"
    if total:
        return f"downloading {name}: {human_bytes(done)} of {human_bytes(total)} ({100 * done // total} %), {rate}"
    return f"downloading {name}: {human_bytes(done)} so far, {rate}"


def downloaded_line(name: str, done: int, elapsed: float) -> str:
    rate = f", {human_bytes(done / elapsed)}/s" if elapsed > 0 else ""
    return f"downloaded {name}: {human_bytes(done)} in {elapsed:.1f} s{rate}"


# --- the shells ------------------------------------------------------------------------


class ProgressLine:
    """Where progress goes: on a terminal one line rewritten in place, otherwise one
    line each time (to stderr by default)."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "", tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self._width = 0   # of the line now shown in place

    def show(self, text: str) -> None:
        line = self.prefix + text
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self, text: str | None = None) -> None:
        """The last line: replaces the one shown in place (or is printed after it)."""
        if text is not None:
            self.show(text)
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0


def wait_for(what: str, cond: Callable[[], object], timeout: float, *, step: float = 0.05,
             out: ProgressLine | None = None, pace: Pace = PACE,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], object] = time.sleep) -> float:
    """Poll ``cond`` every ``step`` until it is true; return the seconds it took. Raise
    TimeoutError naming ``what`` after ``timeout``. Says what it waits for while it
    waits (see ``Pace``)."""
    out = out or ProgressLine()
    start = clock()
    pacer = Pacer(pace, tty=out.tty, start=start)
    shown = False
    try:
        while True:
            if cond():
                return clock() - start
            now = clock()
            if now - start >= timeout:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            if pacer.due(now):
                out.show(wait_line(what, now - start, timeout))
                shown = True
            sleep(step)
    finally:
        if shown:
            out.end()


class DownloadError(RuntimeError):
    """The URL could not be fetched whole, or its content is not what was expected."""


def download(url: str, dest: Path, *, size: int | None = None, digest: str | None = None,
             out: ProgressLine | None = None, pace: Pace = PACE, timeout: float = 30.0,
             clock: Callable[[], float] = time.monotonic, chunk: int = 256 * 1024) -> int:
    """Fetch ``url`` into ``dest`` (written beside it, renamed when complete), showing
    bytes and percent as it goes. ``size`` (bytes) and ``digest`` ("SHA256:hex", as
    ``apt-get --print-uris`` gives them) are checked when given. Returns the size."""
    out = out or ProgressLine()
    name = dest.name
    start = clock()
    pacer = Pacer(pace, tty=out.tty, start=start)
    hasher = None
    if digest:
        algo, _, want = digest.partition(":")
        try:
            hasher = hashlib.new(algo.lower().replace("-", ""))
        except ValueError as exc:
            raise DownloadError(f"{url}: unknown digest {algo!r}") from exc
    tmp = dest.with_name(f".{dest.name}.part")
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            length = resp.headers.get("Content-Length")
            total = size or (int(length) if length and length.isdigit() else None)
            while data := resp.read(chunk):
                fh.write(data)
                if hasher is not None:
                    hasher.update(data)
                done += len(data)
                now = clock()
                if pacer.due(now, done / total if total else None):
                    out.show(download_line(name, done, total, now - start))
        if size is not None and done != size:
            raise DownloadError(f"{url}: got {done} bytes, expected {size}")
        if hasher is not None and hasher.hexdigest() != want.lower():
            raise DownloadError(f"{url}: {algo} mismatch (got {hasher.hexdigest()}, expected {want})")
        os.replace(tmp, dest)
    except OSError as exc:   # urllib's URLError and HTTPError are OSErrors
        tmp.unlink(missing_ok=True)
        out.end()
        raise DownloadError(f"{url}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        out.end()
        raise
    out.end(downloaded_line(name, done, clock() - start))
    return done
