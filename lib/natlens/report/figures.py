"""The report's figures: matplotlib Figures built from a `ReportData`, one call each.

Figures are made with `matplotlib.figure.Figure` (not pyplot), so a notebook shows
each exactly once (the cell's value) and nothing leaks between calls. Labels that
come from the incident are plain text: mathtext is off, so a `$` in a Service or
node name cannot turn into markup.
"""

from __future__ import annotations

import matplotlib
import matplotlib.dates
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from natlens.findings.paths import MODES_S
from natlens.report import tables
from natlens.report.data import ReportData
from natlens.vocab import ANSWERED, ESTABLISHED, RESET, TIMED_OUT, UNANSWERED, UNKNOWN

OUTCOME_COLORS = {ESTABLISHED: "#2e7d32", ANSWERED: "#2e7d32", TIMED_OUT: "#b3261e",
                  UNANSWERED: "#b3261e", RESET: "#ef6c00", UNKNOWN: "#757575"}
GOOD_OUTCOMES = (ESTABLISHED, ANSWERED)
_RC = {"text.parse_math": False, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def _figure(width: float = 9.0, height: float = 3.2) -> Figure:
    return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def timeline(d: ReportData, bins: int = 60) -> Figure:
    """Connections over time (UTC) by outcome, stacked."""
    with matplotlib.rc_context(_RC):
        fig = _figure()
        t = tables.connection_outcomes(d)
        if t.empty:
            return _empty(fig, "no connections in the captures")
        ax = fig.subplots()
        lo, hi = float(t["ts"].min()), float(t["ts"].max())
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        x = pd.to_datetime(edges[:-1], unit="s", utc=True).tz_localize(None)
        width = (edges[1] - edges[0]) / 86400.0  # matplotlib date units are days
        bottom = np.zeros(bins)
        order = sorted(t["outcome"].unique(), key=lambda o: (o not in GOOD_OUTCOMES, o))
        for outcome in order:
            counts, _ = np.histogram(t.loc[t["outcome"] == outcome, "ts"], bins=edges)
            ax.bar(x, counts, width=width, bottom=bottom, align="edge", label=f"{outcome} ({counts.sum():,})",
                   color=OUTCOME_COLORS.get(outcome))
            bottom += counts
        window = _reported_window(d)
        if window is not None:
            ax.axvspan(*window, color="#999999", alpha=0.15, lw=0, label="reported window", zorder=0)
            ax.set_xlim(min(x[0], window[0]), max(x[-1] + pd.Timedelta(seconds=edges[1] - edges[0]), window[1]))
        loc = matplotlib.dates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(loc))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # counts, not 0.5
        ax.set_ylabel("connections per bin")
        ax.set_xlabel(f"time (UTC), bins of {(edges[1] - edges[0]):.3g} s")
        ax.legend(loc="best", fontsize=8, ncols=min(4, len(order) + (window is not None)))
        fig.suptitle("Connections by outcome")
        return fig


def _reported_window(d: ReportData):
    """incident.yaml's time window as naive UTC timestamps, or None."""
    w = d.about.get("window") or {}
    try:
        start, end = (pd.Timestamp(w[k]) for k in ("start", "end"))
    except (KeyError, ValueError):
        return None
    start = start.tz_convert("UTC").tz_localize(None) if start.tzinfo else start
    end = end.tz_convert("UTC").tz_localize(None) if end.tzinfo else end
    return (start, end) if end >= start else None


def latency_cdf(d: ReportData) -> Figure:
    """Empirical CDFs of handshake, connect and first-byte times, one line per path.

    When the analysis found slow or lossy paths (``d.analysis.problems``,
    natlens.findings.paths), the connect axis marks the connect-time modes at the kernel's
    SYN retransmission times (a dashed line at 1 s, 3 s ... with how many sit there), and
    each delayed or lost group is a shaded band over its connections' times on the axis it
    slows (SYN / SYN-ACK: handshake and connect; the client's ACK and the server's first
    data: first byte).
    """
    with matplotlib.rc_context(_RC):
        df = d.latency
        metrics = tables.LATENCY_METRICS
        fig = _figure(10.0, 3.2)
        if df.empty:
            return _empty(fig, "no latency measurements")
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
        groups = list(df.groupby("path", dropna=False))
        for ax, m in zip(axes, metrics, strict=True):
            for path, g in groups:
                v = np.sort(pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(dtype=float))
                v = v[v > 0]
                if v.size == 0:
                    continue
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post",
                        label=f"{path} (n={v.size:,})")
            ax.set_xscale("log")
            _plain_log_ticks(ax)
            ax.set_xlabel(f"{m.removesuffix('_ms').replace('_', ' ')} (ms, log)")
            ax.set_ylim(0, 1.02)
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
        marks = _mark_problems(dict(zip(metrics, axes, strict=True)), df, _problems(d))
        if marks:  # one legend for the marks, below the axes, each mark once
            fig.legend(list(marks.values()), list(marks), loc="outside lower center", fontsize=7,
                       ncols=min(3, len(marks)), title="found on the path", title_fontsize=7)
        axes[0].set_ylabel("fraction of connections")
        fig.suptitle("Latency CDF per path")
        return fig


def _plain_log_ticks(ax) -> None:
    """Log-axis tick labels as plain numbers ("0.12", "1", "200").

    Why: the figures turn mathtext off (a "$" in a label from the incident must stay text), and
    matplotlib's log formatters write their labels in mathtext, which then shows as raw
    "$\\mathdefault{1.2\\times10^{-1}}$". Minor ticks are labelled only where the axis spans
    less than a decade (else the decades label it): every one below a factor of 3, else
    those at 2 and 5 times a power of ten.
    """
    def label(v: float, _pos=None, minor: bool = False) -> str:
        if v <= 0:
            return ""
        if minor:
            lo, hi = sorted(ax.get_xlim())
            span = hi / lo if lo > 0 else float("inf")
            mantissa = round(v / 10 ** np.floor(np.log10(v)), 6)
            if span >= 10 or (span >= 3 and mantissa not in (2.0, 5.0)):
                return ""
        return f"{v:.2g}" if v < 1 else f"{v:,.0f}" if v >= 100 else f"{v:g}"

    ax.xaxis.set_major_formatter(ticker.FuncFormatter(label))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, pos: label(v, pos, minor=True)))


# which latency axes a problem kind slows (natlens.findings.paths KINDS)
_PROBLEM_AXES = {"syn-delayed": ("handshake_ms", "connect_ms"), "synack-delayed": ("handshake_ms", "connect_ms"),
                 "syn-lost": ("connect_ms",), "synack-lost": ("connect_ms",),
                 "ack-delayed": ("first_byte_ms",), "data-delayed": ("first_byte_ms",)}
_BAND_COLORS = ("#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#c2185b", "#455a64")
_SHORT = {"syn-delayed": "SYN delayed", "synack-delayed": "SYN-ACK delayed", "syn-lost": "SYN lost",
          "synack-lost": "SYN-ACK lost", "ack-delayed": "ACK delayed", "data-delayed": "data delayed"}


def _problems(d: ReportData) -> pd.DataFrame:
    """The analysis' path problems table, or an empty one (an analysis without it)."""
    p = getattr(getattr(d, "analysis", None), "problems", None)
    return p if isinstance(p, pd.DataFrame) else pd.DataFrame(columns=["kind", "journeys"])


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
            ax.text(mode_ms, 1.0, f" {mode_ms / 1e3:g} s", color="#b3261e", fontsize=7,
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


def snat_ratio(d: ReportData) -> Figure:
    """SNAT ratio per Service and source node (share of connections SNATed)."""
    with matplotlib.rc_context(_RC):
        t = tables.snat(d)
        fig = _figure(9.0, 0.5 + 0.35 * max(1, len(t)))
        if t.empty:
            return _empty(fig, "no Service traffic through a load balancer")
        ax = fig.subplots()
        labels = [f"{r.service} from {r.source_node} ({r.policy})" for r in t.itertuples()]
        ratio = pd.to_numeric(t["ratio"], errors="coerce").fillna(0).to_numpy()
        known = pd.to_numeric(t["ratio"], errors="coerce").notna().to_numpy()
        ax.barh(range(len(t)), ratio, color=np.where(known, "#1f3b5c", "#c8ccd2"))
        for i, r in enumerate(t.itertuples()):
            note = (f"{r.snat:,} of {r.connections:,} SNATed" if known[i]
                    else f"{r.connections:,} connections, SNAT not visible in the captures")
            ax.text(max(ratio[i], 0) + 0.01, i, note, va="center", fontsize=8)
        ax.set_yticks(range(len(t)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of connections SNATed")
        return fig
