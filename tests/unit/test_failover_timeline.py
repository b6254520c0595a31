"""The failover timeline picture (lab/timeline.py): a pure function from a
synthetic timeline to SVG text — well-formed, one panel per cycle, the lab's marks with
their labels — and the record built from a run_failover report."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from lab import timeline
from lab.timeline import Cycle, Mark, Sample, Timeline, cycle_from_report, holder_at, render_svg

SVG = "{http://www.w3.org/2000/svg}"


def synthetic_cycle(title: str, stop_kind: str = "term") -> Cycle:
    """-3 s .. 12 s around a stop at 0: dir1 holds the VIP until 0, nobody until the
    takeover at 0.7 s, dir2 until the takeback at 9 s (restart at 6 s); requests fail
    from 0 to 0.7 s; one long-lived connection dies at 5 s."""
    samples = []
    for i in range(150):
        t = round(-3 + i * 0.1, 3)
        holders = ("dir1",) if t < 0 or t >= 9 else () if t < 0.7 else ("dir2",)
        if stop_kind == "kill" and 0 <= t < 6:
            holders = ("dir1",) + holders   # kill -9 leaves the VIP in dir1's kernel
        failed = 1 if 0 <= t < 0.7 else 0
        samples.append(Sample(t, 1 - failed, failed, 10 if t < 5 else 9, holders))
    marks = (Mark(0.0, "stop"), Mark(0.7, "takeover"), Mark(6.0, "restart"), Mark(9.0, "takeback"))
    return Cycle(title, tuple(samples), marks, long_total=10, note="takeover 0.70 s")


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode())


def cycles_of(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "cycle"]


def test_the_picture_is_well_formed_svg_with_one_panel_per_cycle():
    tl = Timeline("failover timeline", (synthetic_cycle("cycle 1: SIGTERM of dir1"),
                                        synthetic_cycle("cycle 2: kill -9 of dir1", "kill")))
    svg = render_svg(tl)
    root = parse(svg)
    assert root.tag == f"{SVG}svg" and float(root.get("height")) > 0
    panels = cycles_of(root)
    assert [g.get("id") for g in panels] == ["cycle-1", "cycle-2"]
    titles = [t.text for g in panels for t in g.iter(f"{SVG}text") if t.get("class") == "cycle-title"]
    assert titles == ["cycle 1: SIGTERM of dir1", "cycle 2: kill -9 of dir1"]


def test_every_panel_carries_the_stop_takeover_restart_and_takeback_marks_with_their_labels():
    root = parse(render_svg(Timeline("t", (synthetic_cycle("a"), synthetic_cycle("b")))))
    for panel in cycles_of(root):
        marks = [g for g in panel.iter(f"{SVG}g") if g.get("class") == "mark"]
        assert [m.get("data-label") for m in marks] == ["stop", "takeover", "restart", "takeback"]
        for m in marks:
            assert [t.text for t in m.iter(f"{SVG}text")] == [m.get("data-label")]
            assert m.find(f"{SVG}line") is not None
        assert marks[1].find(f"{SVG}title").text == "takeover at 0.70 s"


def test_the_picture_draws_requests_connections_and_each_directors_vip_lane():
    root = parse(render_svg(Timeline("t", (synthetic_cycle("a", "kill"),))))
    panel = cycles_of(root)[0]
    classes = {el.get("class") for el in panel.iter()}
    assert {"requests-ok", "requests-failed", "long-alive", "vip-dir1", "vip-dir2"} <= classes
    # The failed requests are one run (0 .. 0.7 s): one sub-path.
    failed = next(el for el in panel.iter(f"{SVG}path") if el.get("class") == "requests-failed")
    assert failed.get("d").count("M") == 1
    # dir1's lane: held before the stop and (kill -9: still in its kernel) until 6 s, then
    # again from the takeback: two runs.
    lane = next(el for el in panel.iter(f"{SVG}path") if el.get("class") == "vip-dir1")
    assert lane.get("d").count("M") == 2


def test_the_picture_needs_nothing_from_outside():
    svg = render_svg(Timeline("t", (synthetic_cycle("a"),)))
    assert "href" not in svg and "<script" not in svg and "@import" not in svg and "url(" not in svg


def test_text_from_the_run_is_escaped():
    svg = render_svg(Timeline("a <b> & 'c'", (synthetic_cycle("x < y & z"),)))
    root = parse(svg)
    assert root.find(f"{SVG}title").text == "a <b> & 'c'"


def test_an_empty_cycle_still_renders():
    root = parse(render_svg(Timeline("t", (Cycle("nothing", (), ()),))))
    assert len(cycles_of(root)) == 1


# --- the record from a run_failover report ---------------------------------------------------


def test_the_holder_at_a_time_is_the_last_sample_before_it():
    samples = [(10.0, ("dir1",)), (12.0, ()), (12.5, ("dir2",))]
    assert holder_at(samples, 9.0) == ()
    assert holder_at(samples, 11.0) == ("dir1",)
    assert holder_at(samples, 12.2) == ()
    assert holder_at(samples, 99.0) == ("dir2",)


def test_a_cycle_from_a_report_puts_the_stop_at_zero_and_adds_the_outage_connections():
    t0, stop = 1000.0, 1003.0
    n = 100   # 10 s of buckets
    report = {
        "t0": t0,
        "timeline": {"bucket": 0.1, "ok": [1] * n, "failed": [0] * n, "alive": [10] * n},
        "times": {"stop": stop, "takeover": stop + 0.6, "restart": stop + 5.0, "takeback": stop + 6.5},
        "vip_samples": [(t0 - 1, ["dir1"]), (stop + 0.1, []), (stop + 0.6, ["dir2"]), (stop + 6.5, ["dir1"])],
        "outage": {"t0": stop + 4.0, "long_requested": 10, "long_survived": 10,
                   "timeline": {"bucket": 0.1, "ok": [0] * 60, "failed": [0] * 60, "alive": [10] * 60}},
        "takeover_s": 0.6, "takeback_s": 1.5, "failed": 0, "requests": 100,
        "long_requested": 10, "long_survived": 10,
    }
    c = cycle_from_report(report, "cycle 1: SIGTERM of dir1")
    assert len(c.samples) == n
    assert c.samples[0].t == -3.0 and c.samples[30].t == 0.0
    assert [(m.label, m.t) for m in c.marks] == [("stop", 0.0), ("takeover", 0.6), ("restart", 5.0),
                                                  ("takeback", 6.5)]
    at = {s.t: s for s in c.samples}
    assert at[-1.0].holders == ("dir1",) and at[0.3].holders == () and at[2.0].holders == ("dir2",)
    assert at[3.0].long_alive == 10 and at[5.0].long_alive == 20
    assert c.long_total == 20
    assert "survived 20 of 20" in c.note
    assert timeline.MARKS == ("stop", "takeover", "restart", "takeback")


def test_the_client_counts_requests_by_the_bucket_they_were_sent_in_and_samples_connections():
    from lab import client

    st = client.Stats()
    st.ok_times = [0.01, 0.05, 0.31]
    st.failures = [(0.12, "timeout"), (0.29, "ConnectionRefusedError")]
    st.alive_samples = [(0.0, 10), (0.1, 10), (0.2, 9), (0.45, 8)]
    tl = client.timeline(st, end=0.5)
    assert tl == {"bucket": 0.1, "ok": [2, 0, 0, 1, 0, 0], "failed": [0, 1, 1, 0, 0, 0],
                  "alive": [10, 10, 9, 9, 8, 8]}


def test_a_saved_timeline_draws_the_same_picture_again(tmp_path):
    tl = Timeline("t", (synthetic_cycle("a", "kill"), synthetic_cycle("b")))
    assert timeline.from_json(timeline.to_json(tl)) == tl
    saved = tmp_path / "failover-timeline.json"
    saved.write_text(timeline.to_json(tl))
    assert timeline.main([str(saved)]) == 0
    assert (tmp_path / "failover-timeline.svg").read_text() == render_svg(tl)


def test_each_panel_zooms_on_the_failover_and_the_takeback():
    root = parse(render_svg(Timeline("t", (synthetic_cycle("a"),))))
    zooms = [g for g in cycles_of(root)[0].iter(f"{SVG}g") if g.get("class") == "zoom"]
    assert len(zooms) == 2
    labels = [[m.get("data-label") for m in z.iter(f"{SVG}g") if m.get("class") == "zoom-mark"] for z in zooms]
    # failover: -3 s .. takeover + 5 s; takeback: takeback - 5 s .. + 3 s
    assert labels == [["stop", "takeover"], ["restart", "takeback"]]


def test_the_real_client_records_per_bucket_what_it_saw_when_its_server_dies(tmp_path):
    # lab/client.py against lab/realserver.py on loopback: requests succeed,
    # then the server is killed: requests fail and the long-lived connections die.
    import socket
    import subprocess
    import time

    lab = Path(__file__).resolve().parents[2] / "lab"
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    server = subprocess.Popen([sys.executable, str(lab / "realserver.py"), "rs1", "--http-port", str(ports[0]),
                               "--echo-port", str(ports[1]), "--state-dir", str(tmp_path)])
    client = None
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", ports[1])) == 0:
                    break
            time.sleep(0.05)
        client = subprocess.Popen(
            [sys.executable, str(lab / "client.py"), "--vip", "127.0.0.1", "--http-port", str(ports[0]),
             "--echo-port", str(ports[1]), "--rate", "20", "--long", "3", "--ping", "0.1", "--timeout", "0.5",
             "--long-timeout", "0.5", "--duration", "3", "--ready-file", str(tmp_path / "ready"),
             "--out", str(tmp_path / "client.json")])
        for _ in range(100):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)
        time.sleep(1.0)
        killed = time.monotonic()
        server.kill()
        server.wait()
        client.wait(timeout=30)
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    report = __import__("json").loads((tmp_path / "client.json").read_text())
    tl = report["timeline"]
    assert tl["bucket"] == 0.1 and len(tl["ok"]) == len(tl["failed"]) == len(tl["alive"]) >= 30
    assert sum(tl["ok"]) == report["ok"] > 0 and sum(tl["failed"]) == report["failed"] > 0
    assert max(tl["alive"]) == 3 and tl["alive"][-1] == 0
    # The client's t0 is on this process's monotonic clock: the kill's bucket is known.
    k = int((killed - report["t0"]) / 0.1)
    assert sum(tl["ok"][k + 1:]) == 0, "nothing sent after the server died succeeded"
    assert sum(tl["failed"][k:]) > 0
    assert tl["alive"][k - 1] == 3
