"""How a report shows a DataFrame: readable headers, shares as percentages, tables that fit.

Display only. The library's DataFrames keep their column names (`client_h`,
`predicted_by_rules`, ...): users' scripts depend on them. `table_html` turns
one into the HTML table a customer reads, and `report.setup()` registers it as
the notebook's HTML formatter for DataFrames, so the report and JupyterLab show
the same thing. Every value is escaped.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

# Column name -> header a customer reads. Names not listed fall back to `header()`'s rules.
HEADERS = {
    "time_utc": "time (UTC)", "ts": "time (UTC)", "ts_ns": "time (ns since epoch)",
    "since_first_us": "µs after the first", "host_network": "host-network client",
    "journey": "journey", "client_node": "client node", "client_h": "client address",
    "client_p": "client port", "service": "Service", "lb_backend": "LB sent it to",
    "outcome": "outcome", "syn_retransmits": "SYN retransmits", "loopback_evidence": "evidence",
    "source_node": "client node", "policy": "traffic policy", "connections": "connections",
    "snat": "SNATed", "ratio": "SNATed share", "predicted_by_rules": "rules predict this",
    "share": "share", "capture": "capture point", "src": "source", "dst": "destination",
    "sport": "source port", "dport": "destination port", "flags": "TCP flags", "note": "what happens",
    "path": "path", "metric": "metric", "count": "connections", "p50": "p50 (ms)", "p90": "p90 (ms)",
    "p99": "p99 (ms)", "max": "max (ms)", "file": "file", "bytes": "bytes", "sha256": "SHA-256",
    "records": "records read", "decoded": "decoded", "skipped": "skipped",
    "skipped_by_reason": "skipped, by reason", "vip": "VIP", "proto": "protocol", "kind": "type",
    "snat_on_egress": "SNAT on egress", "node_ports": "node ports", "packet": "packet there", "point": "interface",
    "failure": "cause", "meaning": "what it means",
}
# Suffixes of the analysis' column names (Zeek-like id.orig_h / _p, *_ms).
_SUFFIXES = (("_h", " address"), ("_p", " port"), ("_ms", " (ms)"), ("_utc", " (UTC)"))
WRAP_CHARS = 24   # a text column with a longer value wraps, as the last column, at least 8rem wide
WIDE_COLUMNS = 7  # from this many columns on, columns with one value in every row go to the caption


def header(column: Any) -> str:
    """The readable header for a column name (unlisted names: underscores become spaces)."""
    name = str(column)
    if name in HEADERS:
        return HEADERS[name]
    for suffix, words in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)].replace("_", " ") + words
    return name.replace("_", " ")


def is_share(column: Any) -> bool:
    """A column holding a fraction of a whole (0.55), shown as a percentage (55.0 %)."""
    name = str(column)
    return name in ("share", "ratio") or name.endswith(("_share", "_ratio"))


def is_duration(column: Any) -> bool:
    """A column of whole microseconds or milliseconds (``since_first_us``), shown 1,004,792."""
    return str(column).endswith(("_us", "_ms"))


def cell(value: Any, share: bool = False, counted: bool = False) -> str:
    """One value as display text (not yet escaped): '-' for missing, 'yes'/'no', '55.0 %', and
    thousands separators for a `counted` column (a duration in whole µs or ms; never a port)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) if value else "-"
    try:
        if pd.isna(value):
            return "-"
    except (TypeError, ValueError):
        pass
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) and counted:
        return f"{int(value):,}"
    if share:
        try:
            return f"{100.0 * float(value):.1f} %"
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def table_html(df: Any, max_rows: int | None = None) -> str:
    """A DataFrame as the report shows it: escaped, no row index, readable headers, fitting the page.

    Shares are percentages; booleans read yes/no; a long text column (evidence)
    wraps as the last column; in a wide table, a column with the same value in
    every row is said once in the caption above the table instead of repeated.
    """
    df = pd.DataFrame(df)
    if df.empty:  # a header over nothing reads as a broken table; the words around it say why
        return '<p class="natlens-none">(none)</p>'
    if max_rows is None:
        max_rows = pd.get_option("display.max_rows") or len(df)
    cols = list(df.columns)
    constant = _constant_columns(df) if len(cols) >= WIDE_COLUMNS and len(df) >= 2 else []
    cols = [c for c in cols if c not in constant]
    wrap = [c for c in cols if _long_text(df[c])]
    cols = [c for c in cols if c not in wrap] + wrap
    num = {c for c in cols if _numeric(df[c]) or is_share(c)}

    def cls(c: Any) -> str:
        return ' class="natlens-num"' if c in num else ' class="natlens-wrap"' if c in wrap else ""

    parts = ['<table class="natlens-table">']
    if constant:
        said = " · ".join(f"{html.escape(header(c))}: <b>{html.escape(cell(df[c].iloc[0], is_share(c)))}</b>"
                          for c in constant)
        parts.append(f"<caption>In every row: {said}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th{cls(c)}>{html.escape(header(c))}</th>" for c in cols)
                 + "</tr></thead><tbody>")
    shown, hidden = _rows(df, max_rows)
    for i, (_, row) in enumerate(shown.iterrows()):
        if hidden and i == len(shown) // 2:
            parts.append(f'<tr class="natlens-more"><td colspan="{len(cols)}">… {hidden:,} more rows …</td></tr>')
        parts.append("<tr>" + "".join(f"<td{cls(c)}>{html.escape(cell(row[c], is_share(c), is_duration(c)))}</td>"
                                      for c in cols)
                     + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _rows(df: pd.DataFrame, max_rows: int) -> tuple[pd.DataFrame, int]:
    """Rows to show (head and tail, as pandas does past display.max_rows) and how many are left out."""
    if len(df) <= max_rows:
        return df, 0
    half = max(1, min(max_rows, pd.get_option("display.min_rows") or max_rows) // 2)
    return pd.concat([df.iloc[:half], df.iloc[-half:]]), len(df) - 2 * half


def _constant_columns(df: pd.DataFrame) -> list[Any]:
    out = []
    for c in df.columns:
        shown = {cell(v) for v in df[c]}
        if len(shown) == 1:
            out.append(c)
    return out if len(out) < len(df.columns) else []


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _long_text(s: pd.Series) -> bool:
    if _numeric(s) or s.empty:
        return False
    return bool(s.map(lambda v: len(cell(v))).max() > WRAP_CHARS)
