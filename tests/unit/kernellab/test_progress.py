"""Progress of long lab work: when a line is due (fake clock), what it says, and a real
download over HTTP from a loopback server through the kernel lab's downloader."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time

import pytest

from lab.progress import (
    DownloadError, Pace, Pacer, ProgressLine, download, download_line, downloaded_line, human_bytes,
    wait_for, wait_line,
)


def lines_due(pacer: Pacer, times, fraction=lambda t: None) -> list[float]:
    return [t for t in times if pacer.due(t, fraction(t))]


def ticks(until: float, step: float = 0.1) -> list[float]:
    return [round(i * step, 3) for i in range(int(until / step) + 1)]


# --- the pacer ------------------------------------------------------------------------


def test_a_wait_shorter_than_the_quiet_time_prints_nothing():
    assert lines_due(Pacer(tty=False, start=0.0), ticks(4.9)) == []


def test_off_a_terminal_a_line_every_period_once_the_quiet_time_is_over():
    assert lines_due(Pacer(tty=False, start=0.0), ticks(30)) == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]


def test_off_a_terminal_a_long_wait_backs_off_to_a_tenth_of_the_time_so_far():
    due = lines_due(Pacer(tty=False, start=0.0), ticks(600, 0.5))
    gaps = [b - a for a, b in zip(due, due[1:])]
    assert all(g >= 5.0 for g in gaps)
    assert all(b - a >= 0.1 * b - 0.5 for a, b in zip(due, due[1:]))   # the 0.5 s tick
    assert len(due) <= 40, "a ten-minute wait stays readable in a CI log"


def test_off_a_terminal_a_download_also_prints_each_tenth_but_never_twice_in_a_period():
    # 1 % a second for 100 s: every 10 % is 10 s, above the 5 s period.
    due = lines_due(Pacer(tty=False, start=0.0), ticks(100, 1.0), fraction=lambda t: t / 100)
    assert due[:3] == [5.0, 15.0, 25.0]
    # A crawl: 1 % in 100 s still says so every 30 s.
    slow = lines_due(Pacer(tty=False, start=0.0), ticks(100, 1.0), fraction=lambda t: t / 10000)
    assert slow == [5.0, 35.0, 65.0, 95.0]
    # 10 % a second: ten steps in 10 s, but at most one line per 5 s.
    fast = lines_due(Pacer(tty=False, start=0.0), ticks(10), fraction=lambda t: t / 10)
    assert fast == [5.0, 10.0]


def test_on_a_terminal_the_line_is_rewritten_twice_a_second():
    due = lines_due(Pacer(tty=True, start=100.0), [100.0 + t for t in ticks(7)])
    assert due == [105.0, 105.5, 106.0, 106.5, 107.0]


# --- the lines ------------------------------------------------------------------------


def test_lines_say_what_and_how_far():
    assert wait_line("dir2 to take the VIP", 12.4, 60) == "waiting for dir2 to take the VIP (12 s so far, bound 60 s)"
    assert download_line("k.deb", 12_300_000, 64_600_000, 6.0) == \
        "downloading k.deb: 12.3 MB of 64.6 MB (19 %), 2.0 MB/s"
    assert download_line("k.deb", 2048, None, 2.0) == "downloading k.deb: 2.0 kB so far, 1.0 kB/s"
    assert downloaded_line("k.deb", 64_600_000, 12.0) == "downloaded k.deb: 64.6 MB in 12.0 s, 5.4 MB/s"
    assert human_bytes(999) == "999 B"


# --- wait_for with a fake clock --------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_a_wait_says_what_it_waits_for_every_few_seconds_and_returns_the_time_it_took():
    clock, out = FakeClock(), io.StringIO()
    took = wait_for("dir1 to be master", lambda: clock.now >= 17.0, 60, step=0.5,
                    out=ProgressLine(out, prefix="[lab] ", tty=False), clock=clock, sleep=clock.sleep)
    assert took == 17.0
    assert out.getvalue().splitlines() == [
        "[lab] waiting for dir1 to be master (5 s so far, bound 60 s)",
        "[lab] waiting for dir1 to be master (10 s so far, bound 60 s)",
        "[lab] waiting for dir1 to be master (15 s so far, bound 60 s)",
    ]


def test_a_wait_that_runs_out_names_what_it_waited_for():
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="timed out after 3s waiting for the VIP"):
        wait_for("the VIP", lambda: False, 3, out=ProgressLine(io.StringIO(), tty=False), clock=clock,
                 sleep=clock.sleep)


def test_on_a_terminal_a_wait_rewrites_one_line_and_ends_it():
    clock, out = FakeClock(), io.StringIO()
    wait_for("x", lambda: clock.now >= 6.0, 60, step=0.5, out=ProgressLine(out, tty=True), clock=clock,
             sleep=clock.sleep)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 2   # at 5.0 and 5.5 s; the condition held at 6.0 s


# --- a real download from a loopback server ---------------------------------------------


PAYLOAD = bytes(range(256)) * 4096   # 1 MiB


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD in 16 pieces, 50 ms apart (a slow mirror), or 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path != "/pool/k.deb":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        piece = len(PAYLOAD) // 16
        for i in range(16):
            self.wfile.write(PAYLOAD[i * piece:(i + 1) * piece])
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# The lab's pace scaled down 50x, so a 0.8 s download shows what a 40 s one would.
FAST = Pace(quiet=0.1, period=0.1, backoff=0.1, step=0.1, idle=0.6, tty_period=0.01)


def test_a_download_shows_bytes_and_percent_as_it_goes_and_checks_size_and_hash(mirror, tmp_path):
    out = io.StringIO()
    digest = "SHA256:" + hashlib.sha256(PAYLOAD).hexdigest()
    n = download(f"{mirror}/pool/k.deb", tmp_path / "k.deb", size=len(PAYLOAD), digest=digest,
                 out=ProgressLine(out, prefix="kernel-lab: ", tty=False), pace=FAST, chunk=16 * 1024)
    assert n == len(PAYLOAD) and (tmp_path / "k.deb").read_bytes() == PAYLOAD
    lines = out.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("kernel-lab: downloading k.deb: ")]
    assert len(progress) >= 3, lines
    percents = [int(line.split("(")[1].split(" %")[0]) for line in progress]
    assert percents == sorted(percents) and 0 < percents[0] < 100, lines
    assert all(" of 1.0 MB (" in line and line.endswith("/s") for line in progress), lines
    assert len(progress) <= 10, "at most one line per period: the test's period is 0.1 s of 0.8 s"
    assert lines[-1].startswith("kernel-lab: downloaded k.deb: 1.0 MB in "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.deb"]


def test_a_download_on_a_terminal_rewrites_one_line(mirror, tmp_path):
    out = io.StringIO()
    download(f"{mirror}/pool/k.deb", tmp_path / "k.deb", out=ProgressLine(out, tty=True), pace=FAST,
             chunk=16 * 1024)
    text = out.getvalue()
    assert text.count("\r") >= 3 and text.count("\n") == 1
    assert text.rstrip("\n").rsplit("\r", 1)[1].startswith("downloaded k.deb: 1.0 MB in ")


def test_a_download_whose_hash_differs_fails_and_leaves_no_file(mirror, tmp_path):
    with pytest.raises(DownloadError, match="SHA256 mismatch"):
        download(f"{mirror}/pool/k.deb", tmp_path / "k.deb", digest="SHA256:" + "0" * 64,
                 out=ProgressLine(io.StringIO(), tty=False), pace=FAST)
    assert list(tmp_path.iterdir()) == []


def test_a_download_of_a_missing_file_names_the_url(mirror, tmp_path):
    with pytest.raises(DownloadError, match=r"/pool/gone\.deb: HTTP Error 404"):
        download(f"{mirror}/pool/gone.deb", tmp_path / "gone.deb", out=ProgressLine(io.StringIO(), tty=False))
    assert list(tmp_path.iterdir()) == []
