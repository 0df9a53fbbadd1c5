"""summary.json (``natlens.summary/1``, DESIGN.md section 5) from an analysis's tables.

Why: scripts build on this document, so it is computed in one place, from the same
vocabulary as everything else, with nulls (never NaN) where there is no value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens.findings import failure_words
from natlens.vocab import RESET, SUMMARY_SCHEMA, TIMED_OUT, TRISTATE, UNKNOWN, is_failed

LATENCY_FIELDS = (("handshake", "handshake_ms"), ("connect", "connect_ms"), ("first_byte", "first_byte_ms"))
CAPTURE_FIELDS = ("node", "file", "records", "decoded", "skipped", "skipped_bytes", "anomalies", "connections",
                  "not_in_connections")


def build_summary(incident: str, inputs: list[dict], inferred: list[str], not_read: list[tuple[str, str]],
                  journeys: pd.DataFrame, snat: pd.DataFrame, loopback: pd.DataFrame,
                  latency: pd.DataFrame, verdict: dict, quality: list[dict] | None = None,
                  problems: pd.DataFrame | None = None, uncaptured: list[str] | None = None,
                  rules: list[dict] | None = None, lb: list[dict] | None = None, *,
                  scope: dict | None = None) -> dict:
    """The summary document of one incident's Service journeys (``quality``: findings.quality's
    entry per capture; ``problems``: findings.paths' table; ``rules``: findings.mechanism's
    facts per Service and client node, as dicts; ``lb``: findings.lb's finding per Service; ``scope``: findings.scope's Scope.to_dict(), None without one)."""
    return {
        "schema": SUMMARY_SCHEMA,
        "incident": incident,
        "inputs": {"captures": [{k: c[k] for k in CAPTURE_FIELDS} for c in inputs],
                   "inferred": list(inferred),
                   "not_read": [{"file": f, "reason": why} for f, why in not_read],
                   "quality": [dict(q) for q in quality or []],
                   "uncaptured_nodes": list(uncaptured or [])},
        "connections": connection_counts(journeys),
        "snat": [_snat_row(r) for r in snat.itertuples()],
        "loopback": {"hits": int(len(loopback)),
                     "failed": int(is_failed(loopback["outcome"]).sum()),
                     "by_node": {str(k): int(v) for k, v in
                                 loopback["client_node"].value_counts().sort_index().items()}},
        "latency_ms": {name: distribution(latency[col]) for name, col in LATENCY_FIELDS},
        "verdict": dict(verdict),
        "problems": [] if problems is None else [plain(row) for row in problems.to_dict("records")],
        "rules": list(rules or []),
        "failures": failure_words.summary(journeys),
        "lb_behaviour": list(lb or []),
        "scope": scope,
    }


def plain(row: dict) -> dict:
    """A table row as JSON values: NaN as null, numpy numbers as Python ones, lists as lists."""
    out = {}
    for k, v in row.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            out[k] = [x.item() if hasattr(x, "item") else x for x in v]
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            out[k] = None
        else:
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def connection_counts(journeys: pd.DataFrame) -> dict:
    """total, failed (= timeouts + resets), timeouts, resets, unknown (outcome not shown)."""
    return {"total": int(len(journeys)), "failed": int(is_failed(journeys["outcome"]).sum()),
            "timeouts": int((journeys["outcome"] == TIMED_OUT).sum()),
            "resets": int((journeys["outcome"] == RESET).sum()),
            "unknown": int((journeys["outcome"] == UNKNOWN).sum())}


def _snat_row(r) -> dict:
    """One SNAT row of the summary: host_network "yes" / "no" / "unknown" (never asserted
    without evidence), and counts that agree: connections = snat + no_snat + unknown."""
    return {"service": r.service, "source_node": r.source_node,
            "host_network": r.host_network if r.host_network in TRISTATE else UNKNOWN,
            "policy": r.policy, "connections": int(r.connections), "snat": int(r.snat),
            "no_snat": int(r.no_snat), "unknown": int(r.unknown_snat),
            "ratio": None if pd.isna(r.ratio) else float(r.ratio),
            "predicted_by_rules": None if r.predicted_by_rules is None or pd.isna(r.predicted_by_rules)
            else bool(r.predicted_by_rules),
            "rule_trace": list(r.rule_trace)}


def distribution(s: pd.Series) -> dict:
    """count, p50, p90, p99, max of a latency column in ms (None without a sample)."""
    v = s.dropna().to_numpy(dtype=float)
    if not v.size:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    q = np.percentile(v, [50, 90, 99])
    return {"count": int(v.size), "p50": round(float(q[0]), 3), "p90": round(float(q[1]), 3),
            "p99": round(float(q[2]), 3), "max": round(float(v.max()), 3)}
