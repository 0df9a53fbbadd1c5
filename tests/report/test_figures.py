"""The report's figures as a reader sees them.

Every public figure function is drawn for every sample incident and for small hand-built
edge cases (one connection, all in one millisecond, a span of hours, one SNAT row at 0 %,
at 100 %, undetermined, names with "$"), the way a notebook draws them (outside the figure
functions), and then read back: the tick labels from the drawn Text objects, every text
from an SVG with text kept as text. They must be correct plain text (no mathtext markup
shown raw, no empty labels where ticks are), time axes HH:MM:SS UTC, latency axes in ms,
every SNAT row a visible bar with its counts, legends off the data, and text that is still
legible when the report is read 800 px wide.
"""

from __future__ import annotations

import io
import re
import types
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from natlens import report
from natlens.report import figures

FIGURES = ("timeline", "latency_cdf", "snat_ratio")
MARKUP = ("$", r"\mathdefault", r"\times", "^{")
HMS = re.compile(r"(\d\d):(\d\d):(\d\d)(\.\d{3})?")
NUMBER = re.compile(r"-?\d{1,3}(,\d{3})*(\.\d+)?( %)?")
# At 800 px the report's text column (its table of contents takes the left) shows a figure
# about 430 px wide, measured in Chromium; text smaller than this many pixels there is not read.
NARROW_PX, MIN_TEXT_PX = 430, 9.0
T0 = pd.Timestamp("2026-11-26T06:39:52.5Z").timestamp()
HOSTILE = ("web$x^{2}$:80/tcp", "node-$\\times$", "remote/$n$")


def _sample_dirs() -> list:
    return sorted(p for p in SAMPLES.iterdir() if (p / "nodes").is_dir())


_LOADED: dict = {}


def _sample(path):
    if path not in _LOADED:
        _LOADED[path] = report.load(path)
    return _LOADED[path]


# --- hand-built incidents ----------------------------------------------------------------


def _data(ts, *, outcomes=None, latency_ms=None, snat=((20, 0, 0),), window=None, names=None, host_network=None):
    """A minimal ReportData stand-in: journeys at `ts` (epoch s), connect times `latency_ms`
    (one per journey, None for none), SNAT rows (connections, snat, undetermined)."""
    service, node, path = names or ("198.19.0.10:80/tcp", "node-1", "remote/snat")
    ts = list(ts)
    outcomes = outcomes or ["established"] * len(ts)
    ms = list(latency_ms) if latency_ms is not None else [0.2 + 0.01 * i for i in range(len(ts))]
    latency = pd.DataFrame({"journey": [f"J{i}" for i in range(len(ts))], "path": path,
                            "handshake_ms": ms, "connect_ms": ms,
                            "first_byte_ms": [None if v is None else v + 0.4 for v in ms]})
    hosts = host_network or ["no"] * len(snat)
    rows = [{"service": service, "source_node": node, "host_network": h, "policy": "Local",
             "connections": c, "snat": s, "no_snat": c - s - u, "unknown_snat": u,
             "ratio": s / (c - u) if c > u else None, "predicted_by_rules": None}
            for (c, s, u), h in zip(snat, hosts, strict=True)]
    about = {"window": {"start": window[0], "end": window[1]}} if window else {}
    return types.SimpleNamespace(journeys=pd.DataFrame({"ts": ts, "outcome": outcomes}),
                                 latency=latency, snat=pd.DataFrame(rows), about=about,
                                 analysis=types.SimpleNamespace(), anonymizer=None)


EDGE_CASES = {
    "one connection": lambda: _data([T0], snat=[(1, 0, 0)]),
    "one millisecond": lambda: _data(T0 + np.linspace(0, 0.0008, 5),
                                     outcomes=["established", "timed out", "reset", "timed out", "unknown"],
                                     latency_ms=[0.25, None, None, None, None]),
    "hours": lambda: _data(T0 + np.linspace(0, 3 * 3600, 200), outcomes=["established", "timed out"] * 100,
                           latency_ms=np.geomspace(0.05, 3000, 200)),
    "snat 0 %": lambda: _data(T0 + np.arange(20) * 0.07, snat=[(20, 0, 0)]),
    "snat 100 %": lambda: _data(T0 + np.arange(20) * 0.07, snat=[(20, 20, 0)]),
    "snat undetermined": lambda: _data(T0 + np.arange(20) * 0.07, snat=[(20, 0, 20), (12, 3, 4)]),
    "snat big counts": lambda: _data(T0 + np.arange(20) * 0.07, snat=[(12345, 2345, 1000), (25000, 25000, 0), (7, 0, 0)],
                                     host_network=["yes", "unknown", "no"]),
    "window": lambda: _data(T0 + np.arange(20) * 0.07,
                            window=("2026-11-26T06:39:50Z", "2026-11-26T06:40:10+00:00")),
    "no latency": lambda: _data([T0, T0 + 1], latency_ms=[None, None]),
    "names with $": lambda: _data(T0 + np.arange(4) * 0.3, names=HOSTILE),
}

CASES = [pytest.param(p, id=p.name) for p in _sample_dirs()] + [
    pytest.param(name, id=name) for name in EDGE_CASES]


def _load(case):
    return EDGE_CASES[case]() if isinstance(case, str) else _sample(case)


# --- reading a drawn figure --------------------------------------------------------------


def _draw(fig):
    """Draw as a notebook does: after the figure function returned, with the default rcParams."""
    FigureCanvasAgg(fig).draw()
    return fig


def _svg_texts(fig) -> list[str]:
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        buf = io.BytesIO()
        fig.savefig(buf, format="svg")
    root = ET.fromstring(buf.getvalue())
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("}text")]


def _shown_ticks(axis, minor=False):
    """(location, label) of the ticks inside the view whose labels are drawn."""
    if not axis.get_visible() or not axis.axes.get_visible() or not axis.axes.axison:
        return []
    lo, hi = sorted(axis.get_view_interval())
    eps = (hi - lo) * 1e-9
    return [(t.get_loc(), t.label1.get_text()) for t in (axis.get_minor_ticks() if minor else axis.get_major_ticks())
            if t.label1.get_visible() and lo - eps <= t.get_loc() <= hi + eps]


def _drawn_texts(fig) -> list[Text]:
    """The visible Text objects matplotlib draws: tick labels only for ticks inside the view."""
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for minor in (False, True):
                all_ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
                ticks |= {id(t.label1) for t in all_ticks} | {id(t.label2) for t in all_ticks}
                locs = {loc for loc, _ in _shown_ticks(axis, minor)}
                shown += [t.label1 for t in all_ticks if t.get_loc() in locs and t.label1.get_visible()]
    return [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()] + shown


def _without(text: str, allowed) -> str:
    for a in allowed:
        text = text.replace(a, "")
    return text


def _check_text(fig, allowed=()):
    """No tick label carries markup or is empty; no text anywhere shows markup raw."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            major = _shown_ticks(axis)
            assert all(label.strip() for _, label in major), f"an empty major tick label: {major}"
            for _, label in major + _shown_ticks(axis, minor=True):
                assert not any(m in _without(label, allowed) for m in MARKUP), label
    for text in _svg_texts(fig):
        assert not any(m in _without(text, allowed) for m in MARKUP), text


def _check_legible(fig):
    """Legends off the plotting areas; every visible text legible at NARROW_PX wide."""
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for leg in legends:
        box = leg.get_window_extent(renderer).shrunk(0.98, 0.98)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), \
            "a legend runs out of the figure"
        for ax in fig.axes:
            assert not (ax.axison and box.overlaps(ax.bbox)), f"a legend covers the data of {ax}"
    for ax in fig.axes:  # tick labels side by side, not on top of each other
        for axis in (ax.xaxis, ax.yaxis):
            shown = set(_shown_ticks(axis)) | set(_shown_ticks(axis, minor=True))
            boxes = sorted((t.label1.get_window_extent(renderer) for t in axis.get_major_ticks() + axis.get_minor_ticks()
                            if t.label1.get_text() and (t.get_loc(), t.label1.get_text()) in shown),
                           key=lambda b, x=axis is ax.xaxis: b.x0 if x else b.y0)
            for a, b in zip(boxes, boxes[1:], strict=False):
                assert not a.shrunk(0.98, 0.98).overlaps(b), f"tick labels overlap on {axis}"
    scale = NARROW_PX / (fig.get_figwidth() * 72)  # displayed px per point
    inside = fig.bbox.padded(1)
    for t in _drawn_texts(fig):
        box = t.get_window_extent(renderer)
        if t.get_text().strip() and box.width > 0:
            assert t.get_fontsize() * scale >= MIN_TEXT_PX, f"{t.get_text()!r} at {t.get_fontsize()} pt"
            assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), \
                f"{t.get_text()!r} runs out of the figure"


# --- every figure, every case ------------------------------------------------------------


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("case", CASES)
def test_figures_are_plain_text_and_legible(case, name):
    d = _load(case)
    fig = _draw(getattr(figures, name)(d))
    _check_text(fig, allowed=HOSTILE if case == "names with $" else ())
    _check_legible(fig)


@pytest.mark.parametrize("case", CASES)
def test_timeline_axis_is_hh_mm_ss_utc(case):
    d = _load(case)
    fig = _draw(figures.timeline(d))
    ax = fig.axes[0]
    ticks = _shown_ticks(ax.xaxis)
    assert len(ticks) >= 2, ticks
    seconds = []
    for _, label in ticks:
        m = HMS.fullmatch(label)
        assert m, f"{label!r} is not HH:MM:SS(.mmm)"
        seconds.append(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + float(m[4] or 0))
    steps = np.diff(seconds)
    assert (steps > 0).all() and np.allclose(steps, steps[0], atol=5e-4), seconds
    ts = pd.to_numeric(d.journeys["ts"], errors="coerce").dropna()
    first, last = (datetime.fromtimestamp(v, timezone.utc) for v in (ts.min(), ts.max()))
    sod = [(t - t.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() for t in (first, last)]
    if first.date() == last.date():  # the labels are the data's UTC times
        assert seconds[0] - steps[0] <= sod[0] and sod[1] <= seconds[-1] + steps[0], (seconds, sod)
    assert "UTC" in ax.get_xlabel() and first.date().isoformat() in ax.get_xlabel()
    counts = _bar_totals(ax)
    assert sum(counts) == len(ts), "stacked bars count every connection once"


def _bar_totals(ax) -> list[float]:
    """Height of each stacked bar (bars at one x summed), the reported window excluded."""
    by_x: dict = {}
    for p in ax.patches:
        if type(p).__name__ == "Rectangle" and p.get_height() > 0 and p.get_label() != "reported window":
            by_x[round(p.get_x(), 6)] = by_x.get(round(p.get_x(), 6), 0) + p.get_height()
    return list(by_x.values())


@pytest.mark.parametrize(("span_s", "width_s"), [
    (0.0, 0.001), (0.0004, 0.001), (0.06, 0.001), (0.061, 0.002), (1.5, 0.05), (2.9, 0.05),
    (59.0, 1.0), (61.0, 2.0), (600.0, 10.0), (3600.0, 60.0), (3 * 3600.0, 300.0), (2 * 86400.0, 3600.0)])
def test_bin_width_is_round_and_fits_the_span(span_s, width_s):
    assert figures.bin_width(span_s) == pytest.approx(width_s)
    assert figures.bin_width(span_s, max_bins=600) <= width_s


@pytest.mark.parametrize(("case", "per"), [("one connection", "1 ms"), ("one millisecond", "1 ms"),
                                           ("hours", "5 min"), ("snat 0 %", "50 ms")])
def test_timeline_says_its_bin_width(case, per):
    fig = _draw(figures.timeline(_load(case)))
    assert f"per {per}" in fig.axes[0].get_ylabel()


@pytest.mark.parametrize(("window", "said"), [((-3600, 3600), "the reported window runs past it"),
                                              ((86400, 90000), "the reported window is not on this axis")])
def test_a_reported_window_far_wider_than_the_connections_leaves_their_bins_alone(window, said):
    """A window an hour wide, or a day off (a time zone mistake), used to set the bins: every
    connection then fell into one bar."""
    ts = [T0 + 0.05 * i for i in range(20)]
    plain = _draw(figures.timeline(_data(ts))).axes[0]
    iso = [pd.Timestamp(T0 + w, unit="s", tz="UTC").isoformat() for w in window]
    wide = _draw(figures.timeline(_data(ts, window=iso))).axes[0]
    assert wide.get_ylabel() == plain.get_ylabel() == "connections per 20 ms"  # 0.95 s of connections
    assert said in wide.get_xlabel() and "reported window" not in plain.get_xlabel()


def test_timeline_bin_width_can_be_chosen():
    fig = _draw(figures.timeline(_load("snat 0 %"), bin_s=0.2))
    assert "per 200 ms" in fig.axes[0].get_ylabel()
    assert sorted(_bar_totals(fig.axes[0]), reverse=True)[0] == 3  # 0.07 s apart: 3 in 200 ms
    for bad in (0, -1.0, 1e-6):  # 1 us over 1.33 s: 1.3 million bars
        with pytest.raises(ValueError, match="bin_s"):
            figures.timeline(_load("snat 0 %"), bin_s=bad)


@pytest.mark.parametrize("case", CASES)
def test_latency_axes_say_ms_and_label_their_ticks(case):
    d = _load(case)
    fig = _draw(figures.latency_cdf(d))
    shown = [ax for ax in fig.axes if _shown_ticks(ax.xaxis)]
    if not any(ax.get_lines() for ax in fig.axes):
        return  # nothing measured: a note, no axes
    assert shown
    for ax in shown:
        assert "ms" in ax.get_xlabel().split() or "(ms" in ax.get_xlabel(), ax.get_xlabel()
        major = _shown_ticks(ax.xaxis)
        labelled = [(v, s) for v, s in major + _shown_ticks(ax.xaxis, minor=True) if s]
        assert len(labelled) >= 2, major
        for v, s in labelled:
            assert NUMBER.fullmatch(s), s
            assert float(s.replace(",", "")) == pytest.approx(v, rel=0.05), (v, s)
    for ax in fig.axes:  # every measured connection is on the curve
        for line in ax.get_lines():
            y = line.get_ydata()
            if len(y) and line.get_linestyle() != "--":
                assert y[-1] == pytest.approx(1.0) and len(line.get_xdata()) >= 2


def test_one_connection_latency_is_a_visible_step():
    fig = _draw(figures.latency_cdf(_load("one connection")))
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert lines and all(np.ptp(ln.get_ydata()) > 0 for ln in lines)


@pytest.mark.parametrize(("case", "rows"), [
    ("snat 0 %", ["0 of 20 SNATed"]), ("snat 100 %", ["20 of 20 SNATed"]), ("one connection", ["0 of 1 SNATed"]),
    ("snat undetermined", ["not visible", "3 of 8 SNATed"]),
    ("snat big counts", ["2,345 of 11,345 SNATed (20.7 %), 1,000 not visible", "25,000 of 25,000 SNATed (100 %)",
                         "0 of 7 SNATed (0 %)"])])
def test_snat_rows_are_visible_bars_with_their_counts(case, rows):
    fig = _draw(figures.snat_ratio(_load(case)))
    ax = fig.axes[0]
    ticks = _shown_ticks(ax.yaxis)
    assert len(ticks) == len(rows)
    texts = [t.get_text() for t in ax.texts]
    for (y, _label), want in zip(ticks, rows, strict=True):
        on_row = [p for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - y) < 0.01 and p.get_width() > 0]
        assert sum(p.get_width() for p in on_row) == pytest.approx(1.0), "a full-width bar per row"
        assert any(want in t for t in texts), (want, texts)


@pytest.mark.parametrize("case", [pytest.param(p, id=p.name) for p in _sample_dirs()])
def test_samples_snat_notes_match_the_table(case):
    d = _load(case)
    fig = _draw(figures.snat_ratio(d))
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    undetermined = d.snat["unknown_snat"].fillna(0).astype(int).tolist()
    for r, unknown in zip(report.tables.snat(d).itertuples(), undetermined, strict=True):
        if pd.notna(r.ratio):
            assert f"{r.snat:,} of {r.connections - unknown:,} SNATed" in texts, texts


def test_names_with_dollars_stay_literal():
    d = _load("names with $")
    texts = []
    for name in FIGURES:
        texts += _svg_texts(_draw(getattr(figures, name)(d)))
    joined = "\n".join(texts)
    for name in HOSTILE:
        assert name in joined, f"{name!r} was not drawn as itself"
