"""What a report shows, loaded once: the incident's analysis, scoped and optionally anonymized.

`load(incident_dir)` runs the analysis core (natlens.findings.analyze) and wraps
it in a `ReportData`: the summary (natlens.summary/1) and the tables the report
draws from, about the Services / time window of interest when given (the analysis's scope),
and anonymized (`anonymize=True`: Crypto-PAn for addresses, keyed pseudonyms for the
bundle's names, paths and MACs; natlens.report.anonymize) before anything is shown, so
tables, figures, text and summary.json all carry the same mapped identifiers, no
payload-derived strings and none of incident.yaml's free text. Every report section is one call on this object
(natlens.report.text / tables / figures), in a notebook or anywhere else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from natlens.errors import NatlensError, require_dir
from natlens.findings import Analysis
from natlens.findings.scope import Scope
from natlens.nodefiles import hidden
from natlens.report.anonymize import Anonymizer, bundle_anonymizer, load_key, new_key
from natlens.vocab import SUMMARY_SCHEMA

# The environment variable through which a Crypto-PAn key file reaches the notebook
# kernel: the key must never appear in the notebook's parameters (they are published).
KEY_ENV = "NATLENS_ANON_KEY_FILE"


@dataclass
class ReportData:
    """The numbers and tables of one incident report (see module docstring)."""

    incident: str
    incident_dir: Path
    summary: dict[str, Any]
    connections: pd.DataFrame
    journeys: pd.DataFrame
    snat: pd.DataFrame
    loopback: pd.DataFrame
    latency: pd.DataFrame
    files: pd.DataFrame
    inferred: list[str]
    parameters: dict[str, Any]
    analysis: Analysis = field(repr=False)  # what every table, figure and text is drawn from
    anonymized: bool = False
    about: dict[str, Any] = field(default_factory=dict)  # incident.yaml: title, window, notes, services
    anonymizer: Anonymizer | None = field(default=None, repr=False)

    def journey_hops(self, journey_id: Any = None) -> pd.DataFrame:
        """Hop-by-hop view of one journey (default: the first loopback journey), as shown.

        `journey_id` is a journey's id ("J3"; anonymization maps addresses, never ids), or None
        for the first loopback journey. KeyError for an id that is not a journey.
        """
        journey_id = self.worked_journey_id() if journey_id is None else journey_id
        if journey_id is None:
            return pd.DataFrame()
        hops = self.analysis.journey_hops(journey_id)
        return self.anonymizer.frame(hops) if self.anonymizer else hops

    def worked_journey_id(self) -> Any:
        """The journey the report walks through hop by hop (displayed id), or None."""
        return None if self.loopback.empty else self.loopback["journey"].iloc[0]


def load(
    incident_dir: str | os.PathLike[str],
    *,
    anonymize: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    start: str | float | None = None,
    end: str | float | None = None,
    services: Sequence[str] | str = (),
    analysis: Analysis | None = None,
    run: Mapping[str, str] | None = None,
    scheduler: str = "",
    progress_file: str = "",
) -> ReportData:
    """Analyze `incident_dir` (or take a ready `analysis`) and prepare it for a report.

    `services`, `start`, `end` scope the analysis (natlens.findings.scope: Services as VIP,
    VIP:PORT, VIP:PORT/PROTO, NS/NAME or NS/NAME:PORT; times as ISO 8601, UTC unless zoned,
    epoch seconds or a time of day): every table, figure, the verdict and summary.json are then
    about those Services' connections in that window, and the connection records too are cut
    to the window. A ready `analysis` must have been made with the same scope. With
    `anonymize`, every identifier is mapped using the key in `key_file` (or
    $NATLENS_ANON_KEY_FILE, or a fresh random key): addresses with Crypto-PAn, the bundle's
    names, the paths and MACs with keyed pseudonyms; incident.yaml's title and notes are left
    out (`anonymous_about`). `run` says how the report was made (generated_utc,
    natlens_version, command: filled in when empty); the parameters table shows it.
    `scheduler`: read the captures on that Dask cluster (natlens.cluster; empty: here).
    `progress_file`: where the bars of the captures being read are written (for the process that
    runs the notebook to draw: natlens.parallel.bars_from; empty: no bars).
    """
    if not str(incident_dir).strip():  # the notebook's default: Path("") would be the cwd
        raise NatlensError("parameter incident_dir is empty: give the incident bundle's directory")
    incident_dir = require_dir(incident_dir, "incident")
    if isinstance(services, str):  # papermill -p services 198.19.0.10:80 gives one string
        services = [services]
    services = [str(s) for s in (services or []) if str(s).strip()]
    if analysis is None:
        from natlens.findings import analyze

        analysis = analyze(incident_dir, progress=progress_file or False, services=services, start=start, end=end,
                           scheduler=scheduler or None)
    else:
        _same_scope(analysis, services, start, end)
    summary = analysis.summary()
    if summary.get("schema") != SUMMARY_SCHEMA:
        raise NatlensError(f"analysis produced schema {summary.get('schema')!r}, "
                           f"the report needs {SUMMARY_SCHEMA}", path=str(incident_dir))
    frames = {
        "connections": _in_window(analysis.connections, analysis.scope),
        "journeys": analysis.service_journeys,
        "snat": analysis.snat,
        "loopback": analysis.loopback,
        "latency": analysis.latency,
    }
    files = input_files(incident_dir, analysis.inputs)
    inferred = list(analysis.inferred)
    params = {"incident_dir": str(incident_dir), "anonymize": bool(anonymize),
              "start": "" if start is None else str(start), "end": "" if end is None else str(end),
              "services": services, **run_info(run)}
    about = incident_about(analysis)
    anonymizer = None
    if anonymize:
        key_file = key_file or os.environ.get(KEY_ENV) or None
        key = load_key(key_file) if key_file else new_key()
        anonymizer = (bundle_anonymizer(key, incident_dir, bundle=analysis.bundle, inventory=analysis.inventory)
                      if analysis.bundle is not None else Anonymizer(key))
        summary = anonymizer.value(summary)
        frames = {k: anonymizer.frame(v) for k, v in frames.items()}
        files = anonymizer.frame(files)
        inferred = [anonymizer.text(s) for s in inferred]
        params = anonymizer.params(params)
        about = anonymous_about(about, anonymizer)
    return ReportData(
        incident=summary["incident"],
        incident_dir=incident_dir, summary=summary, files=files, inferred=inferred,
        parameters=params, anonymized=bool(anonymize), about=about, analysis=analysis,
        anonymizer=anonymizer, **frames,
    )


def incident_about(analysis: Analysis) -> dict[str, Any]:
    """What the user wrote in incident.yaml (DESIGN.md section 2), as text: title, the UTC
    time window, the Services of interest and notes. Empty when there is none."""
    raw = analysis.bundle.incident if analysis.bundle is not None else {}
    about: dict[str, Any] = {}
    if raw.get("title"):
        about["title"] = str(raw["title"])
    window = raw.get("window") or {}
    if isinstance(window, dict) and (window.get("start") or window.get("end")):
        about["window"] = {k: str(window[k]) for k in ("start", "end") if window.get(k)}
    if raw.get("services"):
        svcs = raw["services"]
        about["services"] = [str(x) for x in (svcs if isinstance(svcs, list) else [svcs])]
    if raw.get("notes"):
        about["notes"] = str(raw["notes"])
    return about


# incident.yaml's free text: an anonymized report leaves it out (see anonymous_about).
FREE_TEXT = ("title", "notes")


def anonymous_about(about: dict[str, Any], anonymizer: Anonymizer) -> dict[str, Any]:
    """incident.yaml's facts for an anonymized report: the window as it is, the Services
    mapped, and the title and notes left out, named in ``left_out``.

    Why left out rather than mapped: free text can name anything (a customer, a ticket, a
    person, a host natlens never saw); only names known from the bundle could be mapped,
    so a mapped note could still identify the customer.
    """
    out = anonymizer.value({k: v for k, v in about.items() if k not in FREE_TEXT})
    left = [k for k in FREE_TEXT if about.get(k)]
    if left:
        out["left_out"] = left
    return out


def write_summary(data: ReportData, out_dir: str | os.PathLike[str]) -> Path:
    """Write summary.json (natlens.summary/1, anonymized when the report is) into `out_dir`."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data.summary, indent=2, sort_keys=False, default=_json_default) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def input_files(incident_dir: Path, captures: Iterable[dict[str, Any]] = ()) -> pd.DataFrame:
    """Every file of the bundle: path, bytes, SHA-256, and for captures the record tally."""
    incident_dir = incident_dir.resolve()
    by_file = {c["file"]: c for c in captures}  # bundle-relative (natlens.summary/1)
    rows = []
    for p in sorted(incident_dir.rglob("*")):
        if not p.is_file() or hidden(p, incident_dir):
            continue
        rel = p.relative_to(incident_dir).as_posix()
        cap = by_file.get(rel)  # None: not a capture natlens read
        rows.append({
            "file": rel,
            "bytes": p.stat().st_size,
            "sha256": _sha256(p),
            "records": cap["records"] if cap else None,
            "decoded": cap["decoded"] if cap else None,
            "skipped": sum(cap["skipped"].values()) if cap else None,
            "skipped_by_reason": _skip_reasons(cap) if cap else "",
        })
    df = pd.DataFrame(rows, columns=["file", "bytes", "sha256", "records", "decoded", "skipped",
                                     "skipped_by_reason"])
    for col in ("records", "decoded", "skipped"):
        df[col] = df[col].astype("Int64")
    return df


def _skip_reasons(cap: dict[str, Any]) -> str:
    """'bad-length: 2 (4,096 bytes), arp: 17; flagged: ts-fraction-invalid 1': why records
    were not decoded, the bytes in no record, and the records kept with an anomaly."""
    nbytes = cap.get("skipped_bytes", {})
    parts = [f"{k}: {v}" + (f" ({nbytes[k]:,} bytes)" if nbytes.get(k) else "")
             for k, v in sorted(cap["skipped"].items())]
    text = ", ".join(parts)
    flagged = ", ".join(f"{k} {v}" for k, v in sorted(cap.get("anomalies", {}).items()))
    return text + (f"; flagged: {flagged}" if flagged else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _in_window(df: pd.DataFrame, scope: Scope | None) -> pd.DataFrame:
    """The rows of `df` whose ``ts`` falls in the scope's time window (all without one)."""
    if scope is None or df.empty or "ts" not in df.columns or (scope.lo is None and scope.hi is None):
        return df
    ts = pd.to_numeric(df["ts"], errors="coerce")
    keep = pd.Series(True, index=df.index)
    if scope.lo is not None:
        keep &= ts >= scope.lo
    if scope.hi is not None:
        keep &= ts <= scope.hi
    return df[keep.fillna(False).astype(bool)]


def _same_scope(analysis: Analysis, services: Sequence[str], start: Any, end: Any) -> None:
    """NatlensError when a ready analysis was made with another scope than the one asked for:
    the report would say one scope and show another."""
    from natlens.findings.scope import parse_scope

    asked = parse_scope(services, start, end)
    have = analysis.scope.asked if analysis.scope is not None else None
    if (have or None) != (None if asked.empty else asked.asked):
        raise NatlensError("the analysis given was made with another scope (services/start/end) "
                           "than the one asked for: analyze with the same options")


def run_info(run: Mapping[str, str] | None = None) -> dict[str, str]:
    """How the report was made: generated_utc (ISO 8601, now when not given), natlens_version
    (this natlens when not given) and the command line (said to be unknown when not given)."""
    from datetime import datetime, timezone

    import natlens

    run = dict(run or {})
    return {"generated_utc": run.get("generated_utc") or
            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "natlens_version": run.get("natlens_version") or natlens.__version__,
            "command": run.get("command") or "not recorded (the notebook was run without it)"}


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
