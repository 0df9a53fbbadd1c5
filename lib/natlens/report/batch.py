"""Reports for many incidents in parallel processes, with an index and one summary table.

`run_batch(incidents_dir, out_dir, jobs)` makes one report per incident (a
subdirectory holding `nodes/` or `incident.yaml`) in its own worker process,
shows one progress bar over the incidents, keeps going past failures, and then
writes:

    <out>/index.html       the incidents (verdict, totals, files; a failed report with its
                           error), then one row per incident and Service (its own SNAT
                           ratio, loopbacks, failures); both tables sort by a clicked header
    <out>/summary.csv      one row per incident and Service (BATCH_COLUMNS), one for an
                           incident with no Service or whose report failed; counts are
                           integers (Int64), missing values empty (the same as summary.parquet)
    <out>/summary.parquet
    <out>/<incident>/...   report.html, summary.json, report.ipynb, report.log

Why per Service: a Local and a Cluster Service of one incident have SNAT ratios of 0 and 1;
their average (0.5) describes neither, so no number here is pooled across Services.
"""

from __future__ import annotations

import functools
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
from natlens.report.pseudonyms import Pseudonyms, distinct
from natlens.report.run import CELL_TIMEOUT, build_report, check_key_file
from natlens.report.text import esc, pct

# summary.csv / summary.parquet: one row per (incident, Service), or one for an incident with
# no Service or whose report failed. incident_* columns are the incident's own totals, the same
# on each of its rows (never add them up across rows); the others are the Service's.
COLUMN_TYPES: dict[str, str] = {
    "incident": "string", "status": "string", "error": "string",
    "service": "string", "policy": "string", "source_nodes": "string",
    "connections": "Int64", "snat": "Int64", "no_snat": "Int64", "snat_unknown": "Int64",
    "snat_ratio": "Float64", "rules_agree": "boolean", "failed": "Int64",
    "loopback_hits": "Int64", "loopback_failed": "Int64", "lb_behaviour": "string",
    "loopback_detected": "boolean", "headline": "string", "services": "Int64",
    "incident_connections": "Int64", "incident_failed": "Int64", "incident_timeouts": "Int64",
    "incident_resets": "Int64", "incident_unknown": "Int64", "incident_loopback_hits": "Int64",
    "incident_loopback_failed": "Int64",
    "incident_handshake_p50_ms": "Float64", "incident_handshake_p99_ms": "Float64",
    "incident_connect_p50_ms": "Float64", "incident_connect_p99_ms": "Float64",
    "incident_first_byte_p50_ms": "Float64", "incident_first_byte_p99_ms": "Float64",
    "seconds": "Float64", "report": "string",
}
BATCH_COLUMNS = list(COLUMN_TYPES)
# BatchResult.table: the incident's own columns, one row per incident.
INCIDENT_COLUMNS = ["incident", "status", "error", "loopback_detected", "headline", "services",
                    *(c for c in BATCH_COLUMNS if c.startswith("incident_")), "seconds", "report"]


@dataclass
class BatchResult:
    """What a batch wrote. ``table``: one row per incident (INCIDENT_COLUMNS: status, error,
    verdict and the incident's totals; no SNAT ratio, which is a Service's); ``services``: one
    row per incident and Service, as in summary.csv / summary.parquet (BATCH_COLUMNS)."""

    out_dir: Path
    index: Path
    table: pd.DataFrame
    failures: list[tuple[str, str]] = field(default_factory=list)  # (incident, why)
    seconds: float = 0.0
    services: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BATCH_COLUMNS))


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
    scheduler: str | None = None,
) -> BatchResult:
    """Report every incident under `incidents_dir` with `jobs` worker processes.

    `notebook` replaces the incident report notebook (same parameters); `command` is the
    command line each report names (default: this Python call, described). An incident whose
    notebook raised NatlensError keeps its row, failed, with that message alone. `scheduler`:
    every report reads its captures on that Dask cluster (natlens.cluster).
    """
    from tqdm import tqdm

    t0 = time.time()
    todo = list(incidents) if incidents is not None else find_incidents(incidents_dir)
    names = [p.name for p in todo]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise NatlensError(f"incident names must be unique, repeated: {', '.join(sorted(dupes))}")
    if key_file is not None and not anonymize:  # a key and a plain report: which did the user mean?
        raise NatlensError("--key-file only applies with --anonymize")
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
                            str(notebook) if notebook else None, command, shown[p.name], scheduler): p.name
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
    services = batch_table([row for n in names for row in _rows(results[n], out)])
    services.to_csv(out / "summary.csv", index=False)
    services.to_parquet(out / "summary.parquet", index=False)
    index = write_index(services, out / "index.html")
    incidents = services.drop_duplicates("incident")[INCIDENT_COLUMNS].reset_index(drop=True)
    failures = [(str(r.incident), str(r.error)) for r in incidents.itertuples() if r.status != "ok"]
    return BatchResult(out_dir=out, index=index, table=incidents, failures=failures,
                       seconds=time.time() - t0, services=services)


def _bundle_bytes(incident: Path) -> int:
    """How much data an incident holds: the largest go first, so workers finish together."""
    return sum(f.stat().st_size for f in incident.resolve().rglob("*") if f.is_file())


def _shown_names(names: Sequence[str], key_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """Each incident's name as the batch shows it (its directory, table row and index link):
    its own, or with a key (anonymizing) its pseudonym, the one its report shows."""
    if key_file is None:
        return {n: n for n in names}
    pseudonyms = Pseudonyms(load_key(key_file))
    shown = functools.partial(pseudonyms.name, kind="incident")
    distinct(shown, names)  # two incidents shown as one would share a directory and a row
    return {n: shown(n) for n in names}


def _one(incident: str, out: str, anonymize: bool, key_file: str | None, cell_timeout: float,
         notebook: str | None, command: str | None = None, shown: str | None = None,
         scheduler: str | None = None) -> dict[str, Any]:
    """Worker: one report; every failure comes back as data, with the log path (a NatlensError,
    before the notebook or from it, as its own message: the input is wrong, not the notebook).
    `shown` is the name the batch shows (the pseudonym when anonymizing); an anonymized
    failure's words have the incident's name and every absolute path mapped."""
    shown = shown or Path(incident).name
    try:
        r = build_report(incident, out, anonymize=anonymize, key_file=key_file,
                         cell_timeout=cell_timeout, notebook=notebook, command=command, scheduler=scheduler)
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


def _rows(r: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """An incident's rows of the batch table: one per Service its summary.json names (one
    with no Service when it names none), or one carrying the error when its report failed."""
    name = r["incident"]
    base: dict[str, Any] = {"incident": name, "status": "ok" if r["ok"] else "failed",
                            "error": r.get("error") or "", "seconds": round(r.get("seconds", 0.0), 2),
                            "report": f"{name}/report.html" if r["ok"] else ""}
    path = out / name / "summary.json"
    if not (r["ok"] and path.is_file()):
        return [base]
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        incident = {**base, **aggregate_summary(summary)}
        services = service_rows(summary)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        # The report said ok, but its summary cannot be read: a failed row, not a lost batch.
        return [{**base, "status": "failed", "report": "",
                 "error": f"{path}: summary.json not readable as natlens.summary/1: {exc}"}]
    incident["services"] = len(services)
    return [{**incident, **svc} for svc in services] or [incident]


def batch_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as summary.csv's table: counts as pandas Int64 (an integer in the CSV, also
    beside a failed incident's empty cells, never 20.0), ratios and times Float64, flags
    boolean, text string; a missing value is <NA> (an empty CSV cell), never NaN."""
    table = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    for col, dtype in COLUMN_TYPES.items():
        values = table[col].astype(object).where(table[col].notna(), None)
        table[col] = pd.array(values.tolist(), dtype=dtype)
    return table


def aggregate_summary(s: dict[str, Any]) -> dict[str, Any]:
    """The incident-wide digest of a summary.json: verdict, headline, the incident's totals
    and latency percentiles. SNAT is a Service's, never pooled across Services (a Local
    Service's 0 % and a Cluster one's 100 % are not an incident's 50 %): ``service_rows``;
    here ``snat_connections`` / ``snat`` / ``snat_ratio`` only when the incident has one
    Service, else None."""
    c = s.get("connections") or {}
    lb = s.get("loopback") or {}
    lat = s.get("latency_ms") or {}
    v = s.get("verdict") or {}
    row: dict[str, Any] = {
        "loopback_detected": v.get("loopback_detected"), "headline": v.get("headline", ""),
        "incident_connections": c.get("total"), "incident_failed": c.get("failed"),
        "incident_timeouts": c.get("timeouts"), "incident_resets": c.get("resets"),
        "incident_unknown": c.get("unknown"), "incident_loopback_hits": lb.get("hits"),
        "incident_loopback_failed": lb.get("failed"),
    }
    for m in ("handshake", "connect", "first_byte"):
        st = lat.get(m) or {}
        row[f"incident_{m}_p50_ms"] = st.get("p50") if st.get("count") else None
        row[f"incident_{m}_p99_ms"] = st.get("p99") if st.get("count") else None
    services = service_rows(s)
    one = services[0] if len(services) == 1 else {}
    known = (one.get("snat") or 0) + (one.get("no_snat") or 0)
    row.update(snat_connections=known if one else None, snat=one.get("snat"),
               snat_ratio=one.get("snat_ratio"))
    return row


def service_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per Service (VIP:port/proto) of a summary.json, by name: its SNAT counts over
    its source nodes (the ratio over the connections whose SNAT the captures show: an
    undetermined one is no evidence of "not SNATed"), whether the rules agree, its failed
    connections and loopbacks (failures.by_service, lb_behaviour) and its load balancer's
    behaviour. A count the summary does not hold is None, never 0."""
    rows: dict[str, dict[str, Any]] = {}
    for x in s.get("snat") or []:
        _add_snat(rows.setdefault(str(x.get("service")), _new_service()), x)
    failures = s.get("failures")
    for x in (failures or {}).get("by_service") or []:
        r = rows.setdefault(str(x.get("service")), _new_service())
        r["failed"] += int(x.get("failed") or 0)
        r["loopback_failed"] += int((x.get("by_mechanism") or {}).get("loopback") or 0)
    lbs = {str(f.get("service")): f for f in s.get("lb_behaviour") or []}
    for svc in lbs:
        rows.setdefault(svc, _new_service())
    out = [_service_row(svc, r, lbs.get(svc), failures is not None) for svc, r in sorted(rows.items())]
    if len(out) == 1:  # the incident's Service journeys are all this Service's
        c, lb = s.get("connections") or {}, s.get("loopback") or {}
        for col, total in (("failed", c.get("failed")), ("loopback_hits", lb.get("hits")),
                           ("loopback_failed", lb.get("failed"))):
            if out[0][col] is None:
                out[0][col] = total
    return out


def _new_service() -> dict[str, Any]:
    return {"policies": [], "nodes": [], "agree": [], "connections": 0, "snat": 0, "no_snat": 0,
            "unknown": 0, "failed": 0, "loopback_failed": 0, "loopback": [], "snat_rows": 0}


def _add_snat(r: dict[str, Any], x: dict[str, Any]) -> None:
    """One SNAT row (Service, source node, host network) into its Service's sums. A row
    without no_snat / unknown (DESIGN.md section 5's shorter form) is read from its ratio."""
    conns, snat = int(x.get("connections") or 0), int(x.get("snat") or 0)
    no_snat = x.get("no_snat")
    if no_snat is None:
        no_snat = conns - snat if x.get("ratio") is not None else 0
    unknown = x.get("unknown")
    r["policies"].append(str(x.get("policy") or "unknown"))
    r["nodes"].append(str(x.get("source_node") or "unknown"))
    r["agree"].append(x.get("predicted_by_rules"))
    r["connections"] += conns
    r["snat"] += snat
    r["no_snat"] += int(no_snat)
    r["unknown"] += int(unknown) if unknown is not None else conns - snat - int(no_snat)
    r["snat_rows"] += 1
    if "loopback" in x:
        r["loopback"].append(int(x["loopback"] or 0))


def _service_row(svc: str, r: dict[str, Any], lb: dict[str, Any] | None, has_failures: bool) -> dict[str, Any]:
    """A Service's sums as its row of the batch table."""
    measured = r["snat"] + r["no_snat"]
    agree = r["agree"]
    if len(r["loopback"]) == r["snat_rows"] and r["snat_rows"]:
        hits = sum(r["loopback"])
    elif lb is not None:
        hits = sum(int(n) for n in (lb.get("loops") or {}).values())
    else:
        hits = None
    return {
        "service": svc, "policy": "/".join(dict.fromkeys(r["policies"])) or None,
        "source_nodes": ", ".join(sorted(set(r["nodes"]))) or None,
        "connections": r["connections"] if r["snat_rows"] else None,
        "snat": r["snat"] if r["snat_rows"] else None,
        "no_snat": r["no_snat"] if r["snat_rows"] else None,
        "snat_unknown": r["unknown"] if r["snat_rows"] else None,
        "snat_ratio": round(r["snat"] / measured, 4) if measured else None,
        "rules_agree": (False if False in agree else True if agree and all(a is True for a in agree)
                        else None),
        "failed": r["failed"] if has_failures else None,
        "loopback_hits": hits,
        "loopback_failed": r["loopback_failed"] if has_failures else None,
        "lb_behaviour": lb.get("behaviour") if lb else None,
    }


def write_index(table: pd.DataFrame, path: Path) -> Path:
    """A self-contained index page (no external resource; one small inline script sorts a
    table by the column whose header is clicked): the incidents with their verdicts and
    files, a failed report as its own row with its error; then one row per incident and
    Service, with that Service's own SNAT ratio, loopbacks and failures."""
    incidents = table.drop_duplicates("incident")
    ok = int((incidents["status"] == "ok").sum())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>natlens incident reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_INDEX_CSS}</style></head><body>
<h1>natlens incident reports</h1>
<p>{ok} of {len(incidents)} incidents reported. One row per incident and Service as a table:
<a href="summary.csv">summary.csv</a>, <a href="summary.parquet">summary.parquet</a>.
Click a column header to sort by it.</p>
<h2>Incidents</h2>
<div class="wrap"><table class="sortable" id="incidents"><thead><tr>{_headers(_INCIDENT_HEADERS)}</tr></thead>
<tbody>
{chr(10).join(_incident_row(r) for r in incidents.to_dict("records"))}
</tbody></table></div>
<h2>Services</h2>
<p>Each Service's own numbers, over its source nodes: the SNAT ratio counts the connections
whose SNAT the captures show. Services of one incident are never averaged.</p>
<div class="wrap"><table class="sortable" id="services"><thead><tr>{_headers(_SERVICE_HEADERS)}</tr></thead>
<tbody>
{chr(10).join(_service_row_html(r) for r in table.to_dict("records"))}
</tbody></table></div>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


_INCIDENT_HEADERS = ["incident", "verdict", "Services", "connections", "failed", "loopback hits", "files"]
_SERVICE_HEADERS = ["incident", "Service", "policy", "source nodes", "connections", "SNATed",
                    "rules", "loopback hits", "failed", "load balancer"]
BEHAVIOUR_SHORT = {"avoids-source": "avoids the source's node", "any-backend": "any backend",
                   "proxy": "proxies", "unknown": "not shown"}
_INDEX_CSS = r"""
body { font: 14px/1.4 sans-serif; margin: 2rem; color: #1b1b1b; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .4rem; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #dde1e6; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f7f9; cursor: pointer; user-select: none; white-space: nowrap; }
th::after { content: "\00a0\2195"; color: #8a9199; }
th[aria-sort="ascending"]::after { content: "\00a0\25B2"; color: #1b1b1b; }
th[aria-sort="descending"]::after { content: "\00a0\25BC"; color: #1b1b1b; }
th.num, td.num { text-align: right; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.verdict { min-width: 14em; }
td.files { white-space: nowrap; }
td.num.wraps { white-space: normal; }
tr.bad td.verdict, tr.bad td.hit { color: #b3261e; } tr.ok td.verdict { color: #2e7d32; }
tr.failed { background: #fdecea; }
@media (max-width: 900px) {
  body { margin: 1rem; font-size: 13px; } th, td { padding: .3rem .35rem; } th { white-space: normal; }
  td.files a { display: block; } td.files .sep { display: none; }
}
"""
# Sorts a table.sortable by a clicked (or Enter-pressed) header: a cell's data-sort, else its
# text; numbers as numbers; empty cells last either way; a second click reverses.
_SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
      var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


_NUMERIC_HEADERS = {"Services", "connections", "failed", "loopback hits", "SNATed"}


def _headers(names: list[str]) -> str:
    """Header cells that sort their column when clicked (or focused and Enter pressed)."""
    cells = []
    for h in names:
        cls = ' class="num"' if h in _NUMERIC_HEADERS else ""
        label = esc(h).replace("connections", "conn&shy;ections")  # may break on a narrow screen
        cells.append(f'<th scope="col" tabindex="0" aria-sort="none"{cls}>{label}</th>')
    return "".join(cells)


def _td(text: str, sort: Any = None, cls: str | None = None) -> str:
    """A cell of already-escaped `text`; `sort` its sort key where the text is not one."""
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None and not pd.isna(sort):
        attrs += f' data-sort="{esc(sort)}"'
    return f"<td{attrs}>{text}</td>"


def _num(x: Any, cls: str = "num") -> str:
    return _td(esc(_int(x)), None if pd.isna(x) else int(x), cls)


def _incident_row(r: dict[str, Any]) -> str:
    """An incident's row: its verdict, totals and files, or its error when the report failed."""
    name = r["incident"]
    if r["status"] != "ok":
        cells = [_td(esc(name)), _td(f"<strong>report failed</strong>: {esc(r['error'])}", cls="verdict"),
                 _td(""), _td(""), _td(""), _td(""), _td(_link(name, "report.log", "log"), cls="files")]
        return '<tr class="failed">' + "".join(cells) + "</tr>"
    detected = not pd.isna(r["loopback_detected"]) and bool(r["loopback_detected"])
    verdict = ("loopback" if detected else "no loopback") + f": {_text(r['headline'])}"
    links = '<span class="sep"> · </span>'.join([_link(name, "report.html", "report"), _link(name, "summary.json", "summary.json"),
                        _link(name, "report.ipynb", "notebook"), _link(name, "report.log", "log")])
    failed = r["incident_failed"]
    cls = "bad" if detected or (not pd.isna(failed) and failed > 0) else "ok"
    cells = [_td(_link(name, "report.html", esc(name)), name), _td(esc(verdict), cls="verdict"),
             _num(r["services"]), _num(r["incident_connections"]), _num(failed, "num hit"),
             _num(r["incident_loopback_hits"], "num hit"), _td(links, cls="files")]
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>"


def _service_row_html(r: dict[str, Any]) -> str:
    """An (incident, Service) row: the Service's own SNAT ratio, loopbacks and failures."""
    name = r["incident"]
    blank = "".join(_td("") for _ in _SERVICE_HEADERS[2:])
    if r["status"] != "ok":
        return f'<tr class="failed">{_td(esc(name))}{_td("report failed (see Incidents)")}{blank}</tr>'
    first = _td(_link(name, "report.html", esc(name)), name)
    if pd.isna(r["service"]):
        return f'<tr class="ok">{first}{_td("no load-balancer Service seen")}{blank}</tr>'
    hits, failed = r["loopback_hits"], r["failed"]
    bad = any(not pd.isna(x) and x > 0 for x in (hits, failed))
    service = esc(r["service"]).replace(":", ":<wbr>", 1)  # VIP: / port/proto on a narrow screen
    cells = [first, _td(service, r["service"]), _td(esc(_text(r["policy"]))),
             _td(esc(_text(r["source_nodes"]))), _num(r["connections"]), _snat_cell(r),
             _td(esc(_agreement(r["rules_agree"]))), _num(hits, "num hit"), _num(failed, "num hit"),
             _td(esc(BEHAVIOUR_SHORT.get(_text(r["lb_behaviour"]), _text(r["lb_behaviour"]))))]
    return f'<tr class="{"bad" if bad else "ok"}">' + "".join(cells) + "</tr>"


def _snat_cell(r: dict[str, Any]) -> str:
    """"100.0 % (20 of 20)", sorted by the ratio; "unknown" when the captures show none."""
    measured = sum(int(x) for x in (r["snat"], r["no_snat"]) if not pd.isna(x))
    nb = "\u00a0"  # the figures stay together when the cell wraps
    text = (f"{pct(r['snat'], measured).replace(' ', nb)} ({_int(r['snat'])}{nb}of{nb}{_int(measured)})"
            if measured else "unknown")
    if not pd.isna(r["snat_unknown"]) and r["snat_unknown"] > 0:
        text += f"; {_int(r['snat_unknown'])}{nb}not{nb}shown"
    return _td(esc(text), r["snat_ratio"], "num wraps")


def _agreement(x: Any) -> str:
    """Whether the rules predict the SNAT the captures show."""
    if x is None or pd.isna(x):
        return "unknown"
    return "agree" if bool(x) else "DISAGREE"


def _text(x: Any) -> str:
    return "" if x is None or pd.isna(x) else str(x)


def _link(incident: str, file: str, label: str) -> str:
    return f'<a href="{esc(quote(incident))}/{file}">{label}</a>'


def _int(x: Any) -> str:
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return ""
