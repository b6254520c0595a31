"""The failover timeline picture: what the clients saw and who held the VIP, per 100 ms,
one panel per failover cycle, as a self-contained SVG (any browser; no scripts, no
external fonts or images).

Theory of operation. ``Timeline`` is a small typed record: per cycle, one ``Sample``
per bucket (short requests that succeeded and failed, by the time they were sent;
long-lived connections alive; which directors had the VIP in their kernel) and the
lab's ``Mark``s (stop, takeover, restart, takeback). ``render_svg(timeline)`` is a pure
function from that record to SVG text. ``cycle_from_report`` builds a cycle from what
``pairlab.run_failover`` returns (the clients' per-bucket counts and the VIP samples),
so the demo and the tests draw the same picture from a real run. The record is saved
beside the picture as JSON (``to_json``); ``python -m lab.timeline FILE.json``
draws it again (``-o OUT.svg``), e.g. after a change to the drawing.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass

BUCKET = 0.1   # seconds per sample
MARKS = ("stop", "takeover", "restart", "takeback")


@dataclass(frozen=True)
class Sample:
    t: float                     # start of the bucket, seconds from the cycle's origin
    ok: int                      # short requests sent in it that succeeded
    failed: int                  # ... that failed
    long_alive: int              # long-lived connections alive (opened, not lost)
    holders: tuple[str, ...]     # directors with the VIP in their kernel


@dataclass(frozen=True)
class Mark:
    t: float
    label: str                   # one of MARKS, or any short word


@dataclass(frozen=True)
class Cycle:
    title: str                   # "cycle 1: SIGTERM of dir1"
    samples: tuple[Sample, ...]
    marks: tuple[Mark, ...]
    long_total: int = 0          # long-lived connections asked for (the row's scale)
    note: str = ""               # a one-line summary under the title


@dataclass(frozen=True)
class Timeline:
    title: str
    cycles: tuple[Cycle, ...]
    directors: tuple[str, ...] = ("dir1", "dir2")
    bucket: float = BUCKET
    origin: str = "the stop"     # what t = 0 is, for the axis label


def to_json(tl: Timeline) -> str:
    return json.dumps(dataclasses.asdict(tl), separators=(",", ":"))


def from_json(text: str) -> Timeline:
    d = json.loads(text)
    cycles = tuple(
        Cycle(c["title"], tuple(Sample(s["t"], s["ok"], s["failed"], s["long_alive"], tuple(s["holders"]))
                                for s in c["samples"]),
              tuple(Mark(m["t"], m["label"]) for m in c["marks"]), c["long_total"], c["note"])
        for c in d["cycles"])
    return Timeline(d["title"], cycles, tuple(d["directors"]), d["bucket"], d["origin"])


# --- from a pair-lab run ------------------------------------------------------------------


def holder_at(samples: list[tuple[float, tuple[str, ...]]], t: float) -> tuple[str, ...]:
    """Who held the VIP at ``t``: the last sample at or before it (samples are
    (time, holders) at each change, sorted); nobody before the first."""
    i = bisect.bisect_right([s[0] for s in samples], t)
    return tuple(samples[i - 1][1]) if i else ()


def cycle_from_report(report: dict, title: str) -> Cycle:
    """One cycle from ``pairlab.run_failover``'s report: the client's ``timeline``
    buckets, the outage client's (long-lived connections opened while the backup was
    master) added to the alive count, ``vip_samples`` for the holders, and ``times``
    for the marks. t = 0 is the stop."""
    tl = report["timeline"]
    bucket = tl["bucket"]
    origin = report["times"]["stop"]
    start = report["t0"]
    outage = report.get("outage") or {}
    o_tl, o_t0 = outage.get("timeline"), outage.get("t0")
    vip = sorted((t, tuple(h)) for t, h in report.get("vip_samples", []))
    samples = []
    for i, (ok, failed, alive) in enumerate(zip(tl["ok"], tl["failed"], tl["alive"])):
        at = start + i * bucket
        if o_tl is not None:
            j = round((at - o_t0) / bucket)
            if 0 <= j < len(o_tl["alive"]):
                alive += o_tl["alive"][j]
        samples.append(Sample(round(at - origin, 3), ok, failed, alive, holder_at(vip, at + bucket / 2)))
    marks = tuple(Mark(round(report["times"][k] - origin, 3), k) for k in MARKS if k in report["times"])
    total = report.get("long_requested", 0) + outage.get("long_requested", 0)
    note = (f"takeover {report['takeover_s']:.2f} s"
            + (f", takeback {report['takeback_s']:.1f} s after the restart" if "takeback_s" in report else "")
            + f"; short requests failed {report['failed']} of {report['requests']}"
            + f"; long-lived survived {report['long_survived'] + outage.get('long_survived', 0)} of {total}")
    return Cycle(title, tuple(samples), marks, total, note)


# --- the picture ----------------------------------------------------------------------------

WIDTH = 1200
LEFT, RIGHT = 120, 24            # row labels on the left
ROW_REQ, ROW_LONG, LANE = 56, 48, 14
COLORS = {"ok": "#2e9d48", "failed": "#d7263d", "alive": "#2d6fb7", "axis": "#555", "grid": "#ddd",
          "mark": "#222"}
DIRECTOR_COLORS = ("#7b3fa0", "#e08a00", "#1b998b", "#a23b72")
STYLE = ("text{font-family:sans-serif;font-size:11px;fill:#222}"
         ".title{font-size:15px;font-weight:bold}.cycle-title{font-size:13px;font-weight:bold}"
         ".note{fill:#555}.tick{fill:#555;font-size:10px}.mark-label{font-weight:bold}")


def _nice_step(span: float, most: int = 16) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600):
        if span / step <= most:
            return step
    return 10 ** math.ceil(math.log10(span / most))


def _runs(values: list) -> list[tuple[int, int, object]]:
    """(first index, length, value) of each run of equal values."""
    out: list[tuple[int, int, object]] = []
    for i, v in enumerate(values):
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], out[-1][1] + 1, v)
        else:
            out.append((i, 1, v))
    return out


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _window(cycle: Cycle, bucket: float) -> tuple[float, float]:
    ts = [s.t for s in cycle.samples] or [0.0]
    return (min([ts[0]] + [m.t for m in cycle.marks]),
            max([ts[-1] + bucket] + [m.t for m in cycle.marks]))


def _zooms(cycle: Cycle, t0: float, t1: float) -> list[tuple[str, float, float]]:
    """The few seconds around the two moves of the VIP, where 100 ms matter: from just
    before the stop to after the takeover, and around the takeback."""
    t = {m.label: m.t for m in cycle.marks}
    out = []
    if "stop" in t:
        end = max(t.get("takeover", t["stop"]), t["stop"]) + 5.0
        out.append(("failover, zoomed", max(t0, t["stop"] - 3.0), min(t1, end)))
    if "takeback" in t:
        out.append(("takeback, zoomed", max(t0, t["takeback"] - 5.0), min(t1, t["takeback"] + 3.0)))
    return [z for z in out if z[2] > z[1]]


def _panel(root: ET.Element, tl: Timeline, n: int, cycle: Cycle, top: float) -> float:
    """Draw one cycle's panel at ``top`` — the whole cycle, then the failover and the
    takeback zoomed side by side — and return its height."""
    g = _sub(root, "g", class_="cycle", id=f"cycle-{n}")
    _sub(g, "text", cycle.title, x=8, y=_fmt(top + 14), class_="cycle-title")
    if cycle.note:
        _sub(g, "text", cycle.note, x=8, y=_fmt(top + 30), class_="note")
    y = top + 40
    t0, t1 = _window(cycle, tl.bucket)
    plot_w = WIDTH - LEFT - RIGHT
    y += _plot(g, tl, cycle, t0, t1, LEFT, plot_w, y, mark_class="mark", row_labels=True)
    zooms = _zooms(cycle, t0, t1)
    gap = 30
    w = (plot_w - gap * (len(zooms) - 1)) / max(len(zooms), 1)
    height = 0.0
    for k, (title, a, b) in enumerate(zooms):
        left = LEFT + k * (w + gap)
        zg = _sub(g, "g", class_="zoom")
        _sub(zg, "text", f"{title}: {_fmt(a)} s to {_fmt(b)} s", x=_fmt(left), y=_fmt(y + 16), class_="note")
        height = max(height, _plot(zg, tl, cycle, a, b, left, w, y + 20, mark_class="zoom-mark",
                                   row_labels=k == 0) + 20)
    return y + height - top


def _plot(g: ET.Element, tl: Timeline, cycle: Cycle, t0: float, t1: float, left: float, plot_w: float,
          top: float, *, mark_class: str, row_labels: bool) -> float:
    """The rows (requests, long-lived connections, VIP lanes), the time axis and the
    marks of ``cycle`` between ``t0`` and ``t1``, in ``plot_w`` pixels from ``left``;
    returns the height used."""
    span = max(t1 - t0, tl.bucket)
    samples = [s for s in cycle.samples if t0 - tl.bucket < s.t < t1]

    def x(t: float) -> float:
        return left + (min(max(t, t0), t1) - t0) / span * plot_w

    def bar(s: Sample, length: int) -> tuple[float, float]:
        """x and width of ``length`` buckets from ``s``, clipped to the window."""
        a, b = x(s.t), x(s.t + length * tl.bucket)
        return a, b - a

    def label(text: str, yy: float, cls: str = "row-label") -> None:
        if row_labels:
            _sub(g, "text", text, x=8, y=_fmt(yy), class_=cls)

    y = top
    labels_top = y
    y += 30                                   # two rows of mark labels

    # Short requests per bucket: ok up from the baseline, failed stacked on top.
    peak = max([s.ok + s.failed for s in cycle.samples] + [1])
    base = y + ROW_REQ
    label("short requests", y + ROW_REQ / 2)
    label(f"per {_fmt(tl.bucket * 1000)} ms (max {peak})", y + ROW_REQ / 2 + 13, "tick")
    _sub(g, "line", x1=_fmt(left), y1=_fmt(base), x2=_fmt(left + plot_w), y2=_fmt(base), stroke=COLORS["grid"])
    for kind in ("ok", "failed"):
        heights = [(s.ok if kind == "ok" else s.failed) / peak * ROW_REQ for s in samples]
        lifts = [s.ok / peak * ROW_REQ if kind == "failed" else 0.0 for s in samples]
        d = []
        for i, length, (h, lift) in _runs(list(zip(heights, lifts))):
            if h > 0:
                bx, bw = bar(samples[i], length)
                d.append(f"M{_fmt(bx)} {_fmt(base - lift)}h{_fmt(bw)}v{_fmt(-h)}h{_fmt(-bw)}z")
        if d:
            _sub(g, "path", d="".join(d), fill=COLORS[kind], class_=f"requests-{kind}")
    y = base + 10

    # Long-lived connections alive: a step line over the row, 0..long_total.
    scale = max([cycle.long_total] + [s.long_alive for s in cycle.samples] + [1])
    base = y + ROW_LONG
    label("long-lived alive", y + ROW_LONG / 2)
    label(f"of {scale}", y + ROW_LONG / 2 + 13, "tick")
    _sub(g, "line", x1=_fmt(left), y1=_fmt(base), x2=_fmt(left + plot_w), y2=_fmt(base), stroke=COLORS["grid"])
    _sub(g, "line", x1=_fmt(left), y1=_fmt(y), x2=_fmt(left + plot_w), y2=_fmt(y), stroke=COLORS["grid"],
         stroke_dasharray="2,3")
    if samples:
        pts = []
        for i, length, v in _runs([s.long_alive for s in samples]):
            bx, bw = bar(samples[i], length)
            yy = _fmt(base - v / scale * ROW_LONG)
            pts.append(f"{_fmt(bx)},{yy} {_fmt(bx + bw)},{yy}")
        _sub(g, "polyline", points=" ".join(pts), fill="none", stroke=COLORS["alive"], stroke_width=2,
             class_="long-alive")
    y = base + 10

    # Who holds the VIP: one lane per director.
    label("VIP held by", y + LANE - 3)
    for k, name in enumerate(tl.directors):
        lane_y = y + k * (LANE + 3)
        if row_labels:
            _sub(g, "text", name, x=_fmt(left - 8), y=_fmt(lane_y + LANE - 3), text_anchor="end")
        _sub(g, "rect", x=_fmt(left), y=_fmt(lane_y), width=_fmt(plot_w), height=LANE, fill="#f3f3f3")
        d = []
        for i, length, held in _runs([name in s.holders for s in samples]):
            if held:
                bx, bw = bar(samples[i], length)
                d.append(f"M{_fmt(bx)} {_fmt(lane_y)}h{_fmt(bw)}v{LANE}h{_fmt(-bw)}z")
        if d:
            _sub(g, "path", d="".join(d), fill=DIRECTOR_COLORS[k % len(DIRECTOR_COLORS)], class_=f"vip-{name}")
    y += len(tl.directors) * (LANE + 3) + 4
    rows_bottom = y

    # Time axis.
    step = _nice_step(span, most=max(3, int(plot_w / 70)))
    _sub(g, "line", x1=_fmt(left), y1=_fmt(y), x2=_fmt(left + plot_w), y2=_fmt(y), stroke=COLORS["axis"])
    tick = math.ceil(t0 / step) * step
    while tick <= t1 + 1e-9:
        _sub(g, "line", x1=_fmt(x(tick)), y1=_fmt(y), x2=_fmt(x(tick)), y2=_fmt(y + 4), stroke=COLORS["axis"])
        _sub(g, "text", _fmt(tick), x=_fmt(x(tick)), y=_fmt(y + 15), text_anchor="middle", class_="tick")
        tick += step
    _sub(g, "text", f"seconds from {tl.origin}", x=_fmt(left + plot_w), y=_fmt(y + 28), text_anchor="end",
         class_="tick")
    y += 34

    # The lab's steps: a line across the rows, its label above (alternating rows and
    # sides, so that a stop and a takeover 0.6 s apart stay readable).
    for k, m in enumerate(sorted(cycle.marks, key=lambda m: m.t)):
        if not t0 <= m.t <= t1:
            continue
        mg = _sub(g, "g", class_=mark_class, data_label=m.label)
        _sub(mg, "title", f"{m.label} at {m.t:.2f} s")
        xx = _fmt(x(m.t))
        _sub(mg, "line", x1=xx, y1=_fmt(labels_top + 4 + 13 * (k % 2)), x2=xx, y2=_fmt(rows_bottom),
             stroke=COLORS["mark"], stroke_dasharray="4,3")
        _sub(mg, "text", m.label, x=_fmt(x(m.t) + (3 if k % 2 else -3)), y=_fmt(labels_top + 12 + 13 * (k % 2)),
             text_anchor="start" if k % 2 else "end", class_="mark-label")
    return y - top


def render_svg(tl: Timeline) -> str:
    """The whole picture as SVG text: a legend, then one panel per cycle."""
    root = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg", "version": "1.1",
                              "font-family": "sans-serif"})
    _sub(root, "title", tl.title)
    _sub(root, "style", STYLE)
    bg = _sub(root, "rect", x=0, y=0, width=WIDTH, height=0, fill="white")
    _sub(root, "text", tl.title, x=8, y=20, class_="title")
    legend = _sub(root, "g", class_="legend")
    items = [("ok", "short request ok"), ("failed", "short request failed"),
             ("alive", "long-lived connections alive")]
    items += [(d, f"{d} holds the VIP") for d in tl.directors]
    lx = 8.0
    for key, text in items:
        color = COLORS.get(key) or DIRECTOR_COLORS[tl.directors.index(key) % len(DIRECTOR_COLORS)]
        _sub(legend, "rect", x=_fmt(lx), y=30, width=10, height=10, fill=color)
        _sub(legend, "text", text, x=_fmt(lx + 14), y=39)
        lx += 14 + 6.5 * len(text) + 18
    _sub(legend, "text", f"per {_fmt(tl.bucket * 1000)} ms bucket; requests by the time they were sent; "
                         "dashed lines: the lab's steps", x=8, y=56, class_="note")
    y = 66.0
    for n, cycle in enumerate(tl.cycles, 1):
        y += _panel(root, tl, n, cycle, y) + 14
    height = _fmt(y)
    root.set("width", str(WIDTH))
    root.set("height", height)
    root.set("viewBox", f"0 0 {WIDTH} {height}")
    bg.set("height", height)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description="draw a saved failover timeline (JSON) as SVG")
    p.add_argument("json", type=argparse.FileType("r"))
    p.add_argument("-o", "--out", help="SVG file (default: beside the JSON)")
    a = p.parse_args(argv)
    out = a.out or a.json.name.removesuffix(".json") + ".svg"
    with open(out, "w") as fh:
        fh.write(render_svg(from_json(a.json.read())))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
