"""The report's figures: matplotlib Figures built from a `ReportData`, one call each.

Figures are made with `matplotlib.figure.Figure` (not pyplot), so a notebook shows
each exactly once (the cell's value) and nothing leaks between calls.

Every label is plain text. Labels that come from the incident (Service, node and path
names) are drawn with mathtext off, so a `$` in a name cannot turn into markup; and since
mathtext is off, no axis may use one of matplotlib's formatters that write mathtext (the
log formatters write "$\\mathdefault{2\\times10^{-1}}$", which would then show raw): every
axis here has a formatter of this module.

They are sized for the report (natlens.report.render): an HTML page read 1400 px wide shows
them at their own 538 px (5.6 in at 96 dpi); at 800 px, beside the table of contents, about
430 px wide, where 9.5 pt text is still 10 px; legends sit outside the data.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.text import Text

from natlens.findings.paths import MODES_S
from natlens.report import tables
from natlens.report.data import ReportData
from natlens.vocab import ANSWERED, ESTABLISHED, RESET, TIMED_OUT, UNANSWERED, UNKNOWN, YES

OUTCOME_COLORS = {ESTABLISHED: "#2e7d32", ANSWERED: "#2e7d32", TIMED_OUT: "#b3261e",
                  UNANSWERED: "#b3261e", RESET: "#ef6c00", UNKNOWN: "#757575"}
GOOD_OUTCOMES = (ESTABLISHED, ANSWERED)
WIDTH_IN = 5.6  # 538 px at 96 dpi
_RC = {"text.parse_math": False, "axes.formatter.use_mathtext": False, "font.size": 10.5,
       "axes.labelsize": 10.5, "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 9.5,
       "legend.title_fontsize": 9.5, "figure.titlesize": 11.5, "axes.grid": True, "grid.alpha": 0.3}
_NOTE_PT = 9.5  # annotations (counts on bars, marks)
MAX_BINS = 5000  # a timeline with more bars than this is not drawn (a mistyped bin_s)
# Round widths in seconds (1-2-5 below a minute, then minutes and hours a clock shows), for the
# timeline's bins and its ticks: a bin or tick step is always one of these, or whole days.
STEPS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0,
           60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0)


def _figure(width: float = WIDTH_IN, height: float = 3.0) -> Figure:
    return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _empty(text: str) -> Figure:
    """A one-line figure saying why there is nothing to draw."""
    fig = _figure(WIDTH_IN, 0.8)
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _plain(fig)


def _plain(fig: Figure) -> Figure:
    """Every text of the figure as plain text, whatever rcParams the caller draws it under.

    Why: rc_context only reaches texts made inside it; this pins the ones that exist when a
    figure function returns (tick labels made later carry this module's formatters' text)."""
    for t in fig.findobj(Text):
        t.set_parse_math(False)
    return fig


def _legend_above(ax, ncols: int, **kw):
    """A legend in a row above the axes, outside the data."""
    return ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), borderaxespad=0, frameon=False,
                     ncols=max(1, ncols), handlelength=1.2, columnspacing=1.2, **kw)


# --- time axis ---------------------------------------------------------------------------


def bin_width(span_s: float, max_bins: int = 60) -> float:
    """The timeline's bin width for `span_s` seconds: the smallest of STEPS_S (1 ms, 2 ms,
    5 ms ... 1 s ... 1 min ... 1 h ...) or whole days that covers the span in at most `max_bins`
    bins.

    Why: a round width is a number the reader can say ("connections per 50 ms") and bins that
    start on round times line up with log timestamps; 0.025 s or 0.0127 s bins are neither.
    """
    return _step(max(float(span_s), 0.0), max(1, int(max_bins)))


def _step(span: float, n: int) -> float:
    for s in STEPS_S:
        if span <= s * n * (1 + 1e-9):
            return s
    return 86400.0 * math.ceil(span / n / 86400.0)


def duration_text(seconds: float) -> str:
    """A round duration in words a clock uses: "1 ms", "50 ms", "1 s", "15 s", "5 min", "2 h", "1 d"."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size < 1e-9 * size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds * 1e3:.3g} ms"


class _TimeLocator(ticker.Locator):
    """Ticks at round UTC times on an axis in epoch seconds: the smallest step of STEPS_S (or
    whole days) whose labels fit side by side in the axes' width, HH:MM:SS.mmm labels being
    wider than HH:MM:SS."""

    def __call__(self):
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float):
        lo, hi = sorted((float(vmin), float(vmax)))
        span = max(hi - lo, 1e-9)
        ax = getattr(self.axis, "axes", None)
        px = ax.bbox.width if ax is not None else 460.0  # the timeline's axes, about
        char_px = _char_px() * (ax.figure.dpi / 96 if ax is not None else 1.0)
        fits = [s for s in STEPS_S if px * s / span >= char_px * (12 if s < 1 else 8) + 12]
        step = fits[0] if fits else _step(span, 2)
        first, last = math.ceil(lo / step - 1e-6), math.floor(hi / step + 1e-6)
        return np.arange(first, last + 1) * step


class _TimeFormatter(ticker.Formatter):
    """Epoch seconds as UTC HH:MM:SS, with .mmm on every label when one tick needs it."""

    def __call__(self, x, pos=None) -> str:
        return _hms(x, ms=round(x * 1000) % 1000 != 0)

    def format_ticks(self, values) -> list[str]:
        ms = any(round(v * 1000) % 1000 != 0 for v in values)
        return [_hms(v, ms) for v in values]


def _hms(epoch_s: float, ms: bool) -> str:
    total_ms = round(epoch_s * 1000)
    s = (total_ms // 1000) % 86400
    text = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    return text + f".{total_ms % 1000:03d}" if ms else text


def _utc_dates(lo: float, hi: float) -> str:
    a, b = (datetime.fromtimestamp(v, timezone.utc).date().isoformat() for v in (lo, hi))
    return a if a == b else f"{a} to {b}"


# --- timeline ----------------------------------------------------------------------------


def timeline(d: ReportData, *, bin_s: float | None = None, max_bins: int = 60) -> Figure:
    """Connections over time by outcome, stacked, in round bins.

    The x axis reads HH:MM:SS UTC (HH:MM:SS.mmm when ticks are less than a second apart),
    the date in its label. Bins are `bin_width(span, max_bins)` of the connections' span
    (incident.yaml's reported window is shaded where it overlaps; the axis label says when it
    runs past the axis or is not on it) unless `bin_s`
    (seconds; ValueError unless positive and at most MAX_BINS bins over the connections) is
    given, and the y label says their width. When few bins hold connections each bar
    carries its count, so a single connection still reads as "1".
    """
    with matplotlib.rc_context(_RC):
        t = tables.connection_outcomes(d)
        if t.empty:
            return _empty("no connections in the captures")
        fig = _figure(WIDTH_IN, 3.0)
        ax = fig.subplots()
        ax.set_axisbelow(True)
        ts, outcome = t["ts"].to_numpy(dtype=float), t["outcome"].to_numpy()
        lo, hi = float(ts.min()), float(ts.max())
        window = _reported_window(d)
        # bins over the connections alone: a reported window an hour (or a time zone) away must
        # not squeeze them into one bar; the window is shaded where it overlaps, and said if not
        width = bin_width(hi - lo, max_bins) if bin_s is None else _chosen_width(bin_s, lo, hi)
        edges = _bin_edges(lo, hi, width)
        order = sorted(set(outcome), key=lambda o: (o not in GOOD_OUTCOMES, o))
        totals = np.zeros(len(edges) - 1)
        for o in order:
            counts, _ = np.histogram(ts[outcome == o], bins=edges)
            ax.bar(edges[:-1], counts, width=width, bottom=totals, align="edge", linewidth=0,
                   color=OUTCOME_COLORS.get(o), label=f"{o} ({counts.sum():,})")
            totals += counts
        limits = _time_limits(edges[0], edges[-1], width)
        note = ""
        if window:
            ax.axvspan(*window, color="#999999", alpha=0.15, lw=0, zorder=0, label="reported window")
            if window[1] < limits[0] or window[0] > limits[1]:
                note = "; the reported window is not on this axis"
            elif window[0] < limits[0] or window[1] > limits[1]:
                note = "; the reported window runs past it"
        ax.set_xlim(*limits)
        ax.xaxis.set_major_locator(_TimeLocator())
        ax.xaxis.set_major_formatter(_TimeFormatter())
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=4, integer=True, min_n_ticks=2))
        ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        ax.set_ylim(0, max(1.0, totals.max()) * 1.2)
        _count_bars(ax, edges, totals, width)
        ax.set_xlabel(f"UTC time on {_utc_dates(*ax.get_xlim())}{note}")
        ax.set_ylabel(f"connections per {duration_text(width)}")
        _legend_above(ax, ncols=min(3, len(order) + bool(window)))
        fig.suptitle("Connections by outcome")
        return _plain(fig)


def _chosen_width(bin_s: float, lo: float, hi: float) -> float:
    """A caller's bin width, refused when it is not positive or would draw over MAX_BINS bars."""
    width = float(bin_s)
    if not width > 0 or (hi - lo) / width > MAX_BINS:
        raise ValueError(f"bin_s={bin_s!r}: give a positive width of at least {(hi - lo) / MAX_BINS:.3g} s "
                         f"(at most {MAX_BINS:,} bins over {hi - lo:.3g} s)")
    return width


def _bin_edges(lo: float, hi: float, width: float) -> np.ndarray:
    """Edges at whole multiples of `width` (bins start on round UTC times) covering [lo, hi]."""
    k0, k1 = math.floor(lo / width), math.ceil(hi / width)
    k0 -= k0 * width > lo
    k1 += k1 * width < hi
    return np.arange(k0, max(k1, k0 + 1) + 1) * width


def _time_limits(lo: float, hi: float, width: float) -> tuple[float, float]:
    """The x range: everything shown, at least ten bins wide (one lone bin is not a sliver)."""
    if hi - lo < 10 * width:
        mid = (lo + hi) / 2
        lo, hi = mid - 5 * width, mid + 5 * width
    return lo, hi


def _count_bars(ax, edges: np.ndarray, totals: np.ndarray, width: float) -> None:
    """Each bar's count above it when few bars hold connections and the labels fit."""
    filled = np.flatnonzero(totals)
    digits = len(f"{int(totals.max()):,}")
    lo, hi = ax.get_xlim()
    px_per_bin = 460 * width / (hi - lo)  # the axes are about 460 px wide
    if len(filled) > 10 or (np.any(np.diff(filled) == 1) and px_per_bin < 8 * digits):
        return
    for i in filled:
        ax.text(edges[i] + width / 2, totals[i], f"{int(totals[i]):,}", ha="center", va="bottom",
                fontsize=_NOTE_PT)


def _reported_window(d: ReportData) -> tuple[float, float] | None:
    """incident.yaml's time window in epoch seconds, or None (none, unreadable, or reversed)."""
    w = d.about.get("window") or {}
    try:
        start, end = (pd.Timestamp(w[k]) for k in ("start", "end"))
    except (KeyError, TypeError, ValueError):
        return None
    if pd.isna(start) or pd.isna(end):
        return None
    start, end = (t.tz_localize("UTC") if t.tzinfo is None else t for t in (start, end))
    return (start.timestamp(), end.timestamp()) if end >= start else None


# --- latency -----------------------------------------------------------------------------


def latency_cdf(d: ReportData) -> Figure:
    """Empirical CDFs of handshake, connect and first-byte times in ms, one line per path.

    One row per measure, sharing the time axis so they compare at a glance: log scale when the
    times span a factor of ten or more, linear (plain ms) below, where a log axis would
    carry one or two labels. The title says how many connections have a measurement (failed
    ones have none).

    When the analysis found slow or lossy paths (``d.analysis.problems``,
    natlens.findings.paths), the connect row marks the connect-time modes at the kernel's
    SYN retransmission times (a dashed line at 1 s, 3 s ... with how many sit there), and
    each delayed or lost group is a shaded band over its connections' times on the rows it
    slows (SYN / SYN-ACK: handshake and connect; the client's ACK and the server's first
    data: first byte), named in a legend below the axes.
    """
    with matplotlib.rc_context(_RC):
        df, metrics = d.latency, tables.LATENCY_METRICS
        curves = _latency_curves(df, metrics)
        measured = _measured(df, metrics)
        if not measured:
            return _empty("no latency to show: no connection completed its handshake" if len(df)
                          else "no latency measurements")
        fig = _figure(WIDTH_IN, 1.4 + 1.25 * len(metrics))
        problems = _problems(d)
        axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
        paths = list(dict.fromkeys(p for m in metrics for p, _ in curves[m]))
        color = {p: f"C{i % 10}" for i, p in enumerate(paths)}
        for ax, m in zip(axes, metrics, strict=True):
            for path, v in curves[m]:  # from 0 at the fastest, so one connection is a visible step
                ax.step(np.concatenate([v[:1], v]), np.arange(v.size + 1) / v.size, where="post",
                        color=color[path], label=path)
            ax.set_ylabel(m.removesuffix("_ms").replace("_", " "))
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_locator(ticker.FixedLocator([0.0, 0.5, 1.0]))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{100 * v:.0f} %"))
        lo, hi = _latency_range(curves, problems)
        log = hi >= 10 * lo
        for ax in axes:
            ax.set_xscale("log" if log else "linear")
        if not log:
            pad = max(0.05 * (hi - lo), 0.05 * hi)
            axes[0].set_xlim(max(0.0, lo - pad), hi + pad)
        marks = _mark_problems(dict(zip(metrics, axes, strict=True)), df, problems)
        _ms_ticks(axes[-1], log)
        axes[-1].set_xlabel("time in ms (log scale)" if log else "time in ms")
        fig.supylabel("share of connections (cumulative)", fontsize=10.5)
        counts = _measured_by_path(df, metrics)
        handles = {ln.get_label(): ln for ax in axes for ln in ax.get_lines() if ln.get_label() in color}
        _legend_above(axes[0], ncols=min(3, len(paths)), handles=[handles[p] for p in paths],
                      labels=[f"{p} ({counts.get(p, 0):,})" for p in paths])
        if marks:  # one legend for the marks, below the axes, each mark once
            fig.legend(list(marks.values()), list(marks), loc="outside lower center",
                       title="found on the path", frameon=False)
        fig.suptitle(f"Latency per path: {measured:,} of {len(df):,} connections measured")
        return _plain(fig)


def _latency_curves(df: pd.DataFrame, metrics) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per measure, each path's positive times in ms, sorted (paths without any left out)."""
    out: dict = {m: [] for m in metrics}
    if df.empty:
        return out
    for path, g in df.groupby("path", dropna=False, sort=True):
        name = str(path) if pd.notna(path) else "path not known"
        for m in metrics:
            v = np.sort(pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(dtype=float))
            if (v := v[v > 0]).size:
                out[m].append((name, v))
    return out


def _measured_mask(df: pd.DataFrame, metrics) -> pd.Series:
    return pd.concat([pd.to_numeric(df[m], errors="coerce") > 0 for m in metrics], axis=1).any(axis=1)


def _measured(df: pd.DataFrame, metrics) -> int:
    """How many connections have at least one time."""
    return 0 if df.empty else int(_measured_mask(df, metrics).sum())


def _measured_by_path(df: pd.DataFrame, metrics) -> dict[str, int]:
    m = _measured_mask(df, metrics)
    paths = df["path"].map(lambda p: str(p) if pd.notna(p) else "path not known")
    return m.groupby(paths).sum().to_dict()


def _latency_range(curves: dict, problems: pd.DataFrame) -> tuple[float, float]:
    """The smallest and largest time drawn (ms), the connect-time modes included."""
    v = [x for pairs in curves.values() for _, arr in pairs for x in (arr[0], arr[-1])]
    if not problems.empty and "kind" in problems:
        v += [_mode_ms(float(r.delay_ms_min), float(r.delay_ms_max)) for r in problems.itertuples()
              if r.kind == "connect-mode" and pd.notna(r.delay_ms_min)]
    return min(v), max(v)


def _ms_number(v: float) -> str:
    """A time in ms as a plain number: "0.05", "0.25", "1", "200", "1,000"."""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return np.format_float_positional(float(f"{v:.4g}"), trim="-")


def _ms_ticks(ax, log: bool) -> None:
    """Plain-number tick labels on the ms axis (shared by the rows).

    Why: the figures turn mathtext off (a "$" in a label from the incident must stay text), and
    matplotlib's log formatters write their labels in mathtext, which then shows as raw
    "$\\mathdefault{2\\times10^{-1}}$". On a log axis the decades are labelled, and 2 and 5
    times them too while the axis spans less than a factor of 100.
    """
    if not log:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: _ms_number(v)))
        return

    def minor(v: float, _pos=None) -> str:
        lo, hi = sorted(ax.get_xlim())
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
        return _ms_number(v) if lo > 0 and hi / lo < 100 and mantissa in (2.0, 5.0) else ""

    ax.xaxis.set_major_locator(ticker.LogLocator(base=10))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: _ms_number(v) if v > 0 else ""))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10)))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(minor))


# which latency axes a problem kind slows (natlens.findings.paths KINDS)
_PROBLEM_AXES = {"syn-delayed": ("handshake_ms", "connect_ms"), "synack-delayed": ("handshake_ms", "connect_ms"),
                 "syn-lost": ("connect_ms",), "synack-lost": ("connect_ms",),
                 "ack-delayed": ("first_byte_ms",), "data-delayed": ("first_byte_ms",)}
_BAND_COLORS = ("#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#c2185b", "#455a64")
_SHORT = {"syn-delayed": "SYN delayed", "synack-delayed": "SYN-ACK delayed", "syn-lost": "SYN lost",
          "synack-lost": "SYN-ACK lost", "ack-delayed": "ACK delayed", "data-delayed": "data delayed"}


def _problems(d: ReportData) -> pd.DataFrame:
    """The analysis' path problems table as the report shows it (anonymized when the report is), or
    an empty one (an analysis without it)."""
    p = getattr(getattr(d, "analysis", None), "problems", None)
    if not isinstance(p, pd.DataFrame):
        return pd.DataFrame(columns=["kind", "journeys"])
    an = getattr(d, "anonymizer", None)  # its capture points name nodes and pods: mapped as all else
    return an.frame(p) if an is not None and not p.empty else p


def _mark_problems(axes: dict, latency: pd.DataFrame, problems: pd.DataFrame) -> dict:
    """Connect-time modes as dashed lines on the connect axis, delayed and lost groups as
    bands over their connections' times (see latency_cdf). Returns {label: artist}."""
    marks: dict = {}
    if problems.empty or "journey" not in latency:
        return marks
    by_id = latency.set_index("journey")
    for r in problems.itertuples():
        ids = [j for j in (r.journeys if isinstance(r.journeys, (list, tuple, np.ndarray)) else [])
               if j in by_id.index]
        if r.kind == "connect-mode" and "connect_ms" in axes and pd.notna(r.delay_ms_min):
            ax = axes["connect_ms"]
            mode_ms = _mode_ms(float(r.delay_ms_min), float(r.delay_ms_max))
            label = f"{mode_ms / 1e3:g} s: SYN retransmission time ({r.count})"
            marks[label] = ax.axvline(mode_ms, color="#b3261e", ls="--", lw=1.0)
            ax.text(mode_ms, 1.0, f" {mode_ms / 1e3:g} s", color="#b3261e", fontsize=_NOTE_PT,
                    va="top", ha="left")
            lo, hi = ax.get_xlim()
            ax.set_xlim(lo, max(hi, mode_ms * 1.5))
            continue
        if r.kind not in _PROBLEM_AXES or not ids:
            continue
        color = _BAND_COLORS[len(marks) % len(_BAND_COLORS)]
        where = f" {r.from_point} -> {r.to_point}" if isinstance(r.between, str) else ""
        label = f"{_SHORT[r.kind]}{where} ({len(ids)})"
        for m in _PROBLEM_AXES[r.kind]:
            v = pd.to_numeric(by_id.loc[ids, m], errors="coerce").dropna()
            v = v[v > 0]
            if m in axes and not v.empty:
                marks[label] = axes[m].axvspan(float(v.min()) / 1.03, float(v.max()) * 1.03,
                                               color=color, alpha=0.18, lw=0)
    return marks


def _mode_ms(lo: float, hi: float) -> float:
    """The SYN retransmission time (1, 3, 7 ... s, in ms) nearest a connect-mode row's times."""
    mid = (lo + hi) / 2
    return min((m * 1e3 for m in MODES_S), key=lambda m: abs(m - mid))


# --- SNAT --------------------------------------------------------------------------------

# (column of d.snat, legend label, colour, colour of the count written on it)
_SNAT_PARTS = (("snat", "SNATed", "#1f3b5c", "#ffffff"), ("no_snat", "not SNATed", "#a9c1da", "#1b1f24"),
               ("unknown_snat", "not visible", "#d5d8dc", "#1b1f24"))


def snat_ratio(d: ReportData) -> Figure:
    """SNAT per Service and source node: each row one full-width bar of its connections,
    SNATed (dark), not SNATed (light) and undetermined (grey) stacked, with the counts on the
    bar and "k of n SNATed (x %)" beside it.

    Why: a bar of the ratio alone is empty at 0 %, the answer an engineer most often looks
    for (a Local Service's pod traffic leaves un-SNATed); a full bar of counts reads the same
    for one row or many, at 0 %, 100 % or between.
    """
    with matplotlib.rc_context(_RC):
        t = tables.snat(d)
        if t.empty:
            return _empty("no Service traffic through a load balancer")
        fig = _figure(WIDTH_IN, 1.2 + 0.8 * len(t))
        ax = fig.subplots()
        ax.set_axisbelow(True)
        parts, labels = _snat_parts(d, t), _snat_row_labels(t)
        total = parts.sum(axis=1).clip(lower=1).to_numpy(dtype=float)
        bar_px = WIDTH_IN * 96 - 40 - _char_px() * max(len(line) for s in labels for line in s.split("\n"))
        y, left = np.arange(len(t)), np.zeros(len(t))
        for col, label, color, ink in _SNAT_PARTS:
            share = parts[col].to_numpy(dtype=float) / total
            if col == "unknown_snat" and not share.any():
                continue
            ax.barh(y, share, left=left, height=0.45, color=color, label=label, linewidth=0)
            for i in range(len(t)):  # the count on its part, where it fits
                text = f"{int(parts[col].iloc[i]):,}"
                if share[i] * bar_px >= _char_px() * len(text) + 8:
                    ax.text(left[i] + share[i] / 2, y[i], text, ha="center", va="center", color=ink,
                            fontsize=_NOTE_PT)
            left += share
        for i in range(len(t)):  # above the bar, from its left end
            ax.text(0, i - 0.3, _snat_note(parts.iloc[i]), ha="left", va="bottom", fontsize=_NOTE_PT)
        ax.set_yticks(y, labels)
        ax.set_ylim(len(t) - 0.5, -0.8)  # the table's first row on top, room for its note
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_locator(ticker.FixedLocator([0.0, 0.5, 1.0]))
        ax.xaxis.set_minor_locator(ticker.FixedLocator([0.25, 0.75]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{100 * v:.0f} %"))
        ax.grid(True, axis="x", which="both")
        ax.grid(False, axis="y")
        ax.set_xlabel("share of the row's connections")
        _legend_above(ax, ncols=3)
        fig.suptitle("SNAT per Service and source node")
        return _plain(fig)


def _char_px() -> float:
    """About how wide a character of 10 pt text is at 96 dpi (DejaVu Sans digits: 0.55 em)."""
    return 0.55 * 10 * 96 / 72


def _snat_parts(d: ReportData, t: pd.DataFrame) -> pd.DataFrame:
    """Per row of `t` (tables.snat): connections SNATed, not SNATed and undetermined.

    d.snat has the last two (natlens.findings.snat); a table without them counts a row with
    a ratio as all known and one without as all undetermined."""
    full = d.snat
    snat = pd.to_numeric(t["snat"], errors="coerce").fillna(0).astype(int)
    if {"no_snat", "unknown_snat"} <= set(full.columns) and len(full) == len(t):
        no = pd.to_numeric(full["no_snat"], errors="coerce").fillna(0).astype(int).to_numpy()
        unknown = pd.to_numeric(full["unknown_snat"], errors="coerce").fillna(0).astype(int).to_numpy()
    else:
        rest = pd.to_numeric(t["connections"], errors="coerce").fillna(0).astype(int) - snat
        known = pd.to_numeric(t["ratio"], errors="coerce").notna()
        no, unknown = rest.where(known, 0).to_numpy(), rest.where(~known, 0).to_numpy()
    return pd.DataFrame({"snat": snat.to_numpy(), "no_snat": no, "unknown_snat": unknown})


def _snat_note(row: pd.Series) -> str:
    """ "k of n SNATed (x %)" over the connections whose SNAT is known, or that none is."""
    known = int(row["snat"] + row["no_snat"])
    if known == 0:
        return "SNAT not visible"
    snat = int(row["snat"])
    share = "0 %" if snat == 0 else "100 %" if snat == known else f"{100 * snat / known:.1f} %"
    note = f"{snat:,} of {known:,} SNATed ({share})"
    return note + (f", {int(row['unknown_snat']):,} not visible" if row["unknown_snat"] else "")


def _snat_row_labels(t: pd.DataFrame) -> list[str]:
    """ "Service" over "from node (policy)", and a third line when the row is (or may be) the
    node's own connections; short lines leave the bars the width."""
    host = (tables.host_network_text(t["host_network"]) if "host_network" in t
            else pd.Series([None] * len(t)))
    whose = {YES: "\nhost network", UNKNOWN: "\npods or host network"}
    return [f"{r.service}\nfrom {r.source_node} ({r.policy}){whose.get(h, '')}"
            for r, h in zip(t.itertuples(), host, strict=True)]
