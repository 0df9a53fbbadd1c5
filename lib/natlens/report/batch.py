"""Reports for many incidents in parallel processes, with an index and one summary table.

`run_batch(incidents_dir, out_dir, jobs)` makes one report per incident (a
subdirectory holding `nodes/` or `incident.yaml`) in its own worker process,
shows one progress bar over the incidents, keeps going past failures, and then
writes:

    <out>/index.html       incidents with verdict, loopback hits, SNAT ratio, links
    <out>/summary.csv      one row per incident (the same as summary.parquet)
    <out>/summary.parquet
    <out>/<incident>/...   report.html, summary.json, report.ipynb, report.log
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from natlens.errors import NatlensError, require_dir
from natlens.report.anonymize import load_key, new_key
from natlens.report.identifiers import Identifiers
from natlens.report.pseudonyms import Pseudonyms
from natlens.report.run import CELL_TIMEOUT, build_report, check_key_file
from natlens.report.text import esc, pct

AGGREGATE_COLUMNS = [
    "incident", "status", "error", "loopback_detected", "headline", "connections", "failed",
    "timeouts", "resets", "loopback_hits", "loopback_failed", "snat_connections", "snat",
    "snat_ratio", "handshake_p50_ms", "handshake_p99_ms", "connect_p50_ms", "connect_p99_ms",
    "first_byte_p50_ms", "first_byte_p99_ms", "seconds", "report",
]


@dataclass
class BatchResult:
    out_dir: Path
    index: Path
    table: pd.DataFrame
    failures: list[tuple[str, str]] = field(default_factory=list)  # (incident, why)
    seconds: float = 0.0


def find_incidents(incidents_dir: str | os.PathLike[str]) -> list[Path]:
    """The incident bundles directly under `incidents_dir`, sorted by name."""
    root = require_dir(incidents_dir, "incidents")
    found = [p for p in sorted(root.iterdir())
             if p.is_dir() and ((p / "nodes").is_dir() or (p / "incident.yaml").is_file())]
    if not found:
        raise NatlensError("no incident bundles (directories with nodes/ or incident.yaml) here",
                           path=str(root))
    return found


def run_batch(
    incidents_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] = "reports",
    *,
    jobs: int = 1,
    anonymize: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    cell_timeout: float = CELL_TIMEOUT,
    progress: bool = True,
    incidents: Sequence[Path] | None = None,
    notebook: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> BatchResult:
    """Report every incident under `incidents_dir` with `jobs` worker processes.

    `notebook` replaces the incident report notebook (same parameters); `command` is the
    command line each report names (default: this Python call, described). An incident whose
    notebook raised NatlensError keeps its row, failed, with that message alone.
    """
    from tqdm import tqdm

    t0 = time.time()
    todo = list(incidents) if incidents is not None else find_incidents(incidents_dir)
    names = [p.name for p in todo]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise NatlensError(f"incident names must be unique, repeated: {', '.join(sorted(dupes))}")
    if anonymize and key_file is not None:
        check_key_file(key_file)  # once, not as a failure of every incident
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = command or (f"natlens.report.run_batch({str(incidents_dir)!r}, {str(out_dir)!r}, jobs={jobs!r}"
                          + (", anonymize=True" if anonymize else "") + ")")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="natlens-key-") as tmp:
        if anonymize and key_file is None:
            # One key for the whole batch: an address maps the same way in every report.
            key_file = Path(tmp) / "cryptopan.key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_key().hex())
        shown = _shown_names(names, key_file if anonymize else None)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool, \
                tqdm(total=len(todo), desc="reports", unit="incident", disable=not progress) as bar:
            futures = {
                pool.submit(_one, str(p), str(out / shown[p.name]), anonymize,
                            str(key_file) if key_file else None, cell_timeout,
                            str(notebook) if notebook else None, command, shown[p.name]): p.name
                for p in sorted(todo, key=_bundle_bytes, reverse=True)
            }
            for fut in as_completed(futures):
                name = futures[fut]
                try:
                    results[name] = fut.result()
                except Exception as exc:  # the worker process itself died
                    results[name] = {"incident": shown[name], "ok": False, "seconds": 0.0,
                                     "error": f"worker failed: {type(exc).__name__}: {exc}"}
                if not results[name]["ok"]:
                    bar.set_postfix(failed=sum(not r["ok"] for r in results.values()))
                bar.update(1)
    rows = [_row(results[n], out) for n in names]
    table = pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
    table.to_csv(out / "summary.csv", index=False)
    table.to_parquet(out / "summary.parquet", index=False)
    index = write_index(table, out / "index.html")
    failures = [(r["incident"], r["error"]) for r in (results[n] for n in names) if not r["ok"]]
    return BatchResult(out_dir=out, index=index, table=table, failures=failures,
                       seconds=time.time() - t0)


def _bundle_bytes(incident: Path) -> int:
    """How much data an incident holds: the largest go first, so workers finish together."""
    return sum(f.stat().st_size for f in incident.resolve().rglob("*") if f.is_file())


def _shown_names(names: Sequence[str], key_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """Each incident's name as the batch shows it (its directory, table row and index link):
    its own, or with a key (anonymizing) its pseudonym, the one its report shows."""
    if key_file is None:
        return {n: n for n in names}
    pseudonyms = Pseudonyms(load_key(key_file))
    return {n: pseudonyms.name(n, "incident") for n in names}


def _one(incident: str, out: str, anonymize: bool, key_file: str | None, cell_timeout: float,
         notebook: str | None, command: str | None = None, shown: str | None = None) -> dict[str, Any]:
    """Worker: one report; every failure comes back as data, with the log path (a NatlensError,
    before the notebook or from it, as its own message: the input is wrong, not the notebook).
    `shown` is the name the batch shows (the pseudonym when anonymizing); an anonymized
    failure's words have the incident's name and every absolute path mapped."""
    shown = shown or Path(incident).name
    try:
        r = build_report(incident, out, anonymize=anonymize, key_file=key_file,
                         cell_timeout=cell_timeout, notebook=notebook, command=command)
        error = r.error
        if error and r.log is not None and not r.input_error:
            # anonymized: the log's place in the batch's directory, which names nothing
            error = f"{error} (log: {Path(shown) / r.log.name if anonymize else r.log})"
        result = {"incident": shown, "ok": r.ok, "error": error, "seconds": r.seconds,
                  "html": str(r.html) if r.html else None}
    except NatlensError as exc:
        result = {"incident": shown, "ok": False, "error": str(exc), "seconds": 0.0}
    if anonymize and key_file and result["error"]:
        ids = Identifiers(names={Path(incident).name: "incident"}, paths=[incident, str(Path(incident).resolve())])
        result["error"] = Pseudonyms(load_key(key_file), ids).absolute_paths(result["error"])
    return result


def _row(r: dict[str, Any], out: Path) -> dict[str, Any]:
    name = r["incident"]
    row: dict[str, Any] = {"incident": name, "status": "ok" if r["ok"] else "failed",
                           "error": r.get("error") or "", "seconds": round(r.get("seconds", 0.0), 2),
                           "report": f"{name}/report.html" if r["ok"] else ""}
    path = out / name / "summary.json"
    if r["ok"] and path.is_file():
        row.update(aggregate_summary(json.loads(path.read_text(encoding="utf-8"))))
    return row


def aggregate_summary(s: dict[str, Any]) -> dict[str, Any]:
    """The one-row digest of a summary.json used by the batch table and index."""
    c = s.get("connections") or {}
    lb = s.get("loopback") or {}
    snat_rows = s.get("snat") or []
    # Only rows whose SNAT the captures show: an undetermined row is no evidence of "not SNATed".
    known = [x for x in snat_rows if x.get("ratio") is not None]
    sc = sum(int(x.get("connections") or 0) for x in known)
    sn = sum(int(x.get("snat") or 0) for x in known)
    lat = s.get("latency_ms") or {}
    v = s.get("verdict") or {}
    row = {
        "loopback_detected": bool(v.get("loopback_detected")), "headline": v.get("headline", ""),
        "connections": c.get("total"), "failed": c.get("failed"), "timeouts": c.get("timeouts"),
        "resets": c.get("resets"), "loopback_hits": lb.get("hits"), "loopback_failed": lb.get("failed"),
        "snat_connections": sc, "snat": sn, "snat_ratio": round(sn / sc, 4) if sc else None,
    }
    for m in ("handshake", "connect", "first_byte"):
        st = lat.get(m) or {}
        row[f"{m}_p50_ms"] = st.get("p50") if st.get("count") else None
        row[f"{m}_p99_ms"] = st.get("p99") if st.get("count") else None
    return row


def write_index(table: pd.DataFrame, path: Path) -> Path:
    """A self-contained index page: one row per incident, links to its files."""
    body = []
    for r in table.to_dict("records"):
        name = r["incident"]
        if r["status"] == "ok":
            verdict = ("loopback" if r["loopback_detected"] else "no loopback") + f": {r['headline']}"
            links = " · ".join([_link(name, "report.html", "report"), _link(name, "summary.json", "summary.json"),
                                _link(name, "report.ipynb", "notebook"), _link(name, "report.log", "log")])
            ratio = pct(r["snat"], r["snat_connections"]) if r["snat_connections"] else "n/a"
            cells = [_link(name, "report.html", esc(name)), esc(verdict),
                     esc(_int(r["loopback_hits"])), esc(ratio), esc(_int(r["connections"])),
                     esc(_int(r["failed"])), links]
            cls = "bad" if r["loopback_detected"] or (r["failed"] or 0) > 0 else "ok"
        else:
            cells = [esc(name), f"<strong>report failed</strong>: {esc(r['error'])}", "", "", "", "",
                     _link(name, "report.log", "log")]
            cls = "failed"
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ok = int((table["status"] == "ok").sum())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>natlens incident reports</title>
<style>
body {{ font: 14px/1.4 sans-serif; margin: 2rem; color: #1b1b1b; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #dde1e6; padding: .35rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f6f7f9; }}
tr.bad td:nth-child(2) {{ color: #b3261e; }} tr.ok td:nth-child(2) {{ color: #2e7d32; }}
tr.failed {{ background: #fdecea; }}
</style></head><body>
<h1>natlens incident reports</h1>
<p>{ok} of {len(table)} incidents reported. The same rows as a table:
<a href="summary.csv">summary.csv</a>, <a href="summary.parquet">summary.parquet</a>.</p>
<table><thead><tr><th>incident</th><th>verdict</th><th>loopback hits</th><th>SNAT ratio</th>
<th>connections</th><th>failed</th><th>files</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def _link(incident: str, file: str, label: str) -> str:
    return f'<a href="{esc(quote(incident))}/{file}">{label}</a>'


def _int(x: Any) -> str:
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return ""
