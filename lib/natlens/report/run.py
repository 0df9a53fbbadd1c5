"""One incident -> one report directory: execute the notebook, check it, render the HTML.

    <out>/report.html    the self-contained report to share
    <out>/summary.json   natlens.summary/1 (written by the notebook)
    <out>/report.ipynb   the executed notebook
    <out>/report.log     cell output and kernel messages of the run
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import natlens
from natlens.errors import NatlensError, require_dir
from natlens.parallel import bars_from
from natlens.report.anonymize import (
    Anonymizer,
    bundle_anonymizer,
    load_key,
    new_key,
    scrub_log,
    scrub_notebook,
    scrub_summary,
)
from natlens.report.data import KEY_ENV
from natlens.report.execute import execute
from natlens.report.identifiers import Identifiers
from natlens.report.render import render_html

NOTEBOOKS = Path(natlens.__file__).resolve().parents[2] / "notebooks"
REPORT_NOTEBOOK = NOTEBOOKS / "incident_report.ipynb"
CELL_TIMEOUT = 600.0


@dataclass
class ReportResult:
    """What one report run gave: where its files are, or why it failed (`input_error`: the
    inputs were wrong, as a NatlensError said; the CLI prints it as its one line, exit 2)."""

    incident: str
    out_dir: Path
    ok: bool
    error: str | None
    seconds: float
    html: Path | None = None
    summary: Path | None = None
    notebook: Path | None = None
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    input_error: bool = False  # the notebook raised NatlensError: bad input, `error` is its message


def build_report(
    incident_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    anonymize: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    start: str = "",
    end: str = "",
    services: Sequence[str] = (),
    notebook: str | os.PathLike[str] | None = None,
    cell_timeout: float = CELL_TIMEOUT,
    command: str | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> ReportResult:
    """Produce the report of `incident_dir` in `out_dir` (default reports/<incident>).

    Raises NatlensError for a missing incident directory or notebook and for options that are
    wrong on their face (natlens.findings.scope's forms, an unknown Service where the inventory
    names the Services); a notebook that fails (error, timeout, dead kernel, summary.json not
    written) comes back as `ok=False` with the reason, and no report.html is left behind; one
    whose cell raised NatlensError (a window outside the captures, ...) has `input_error` set.
    `command` is the command line the report names (default: this Python call, described).
    `scheduler`: the notebook reads the captures on that Dask cluster (natlens.cluster).
    `progress`: a bar per capture on stderr while the notebook reads them.
    """
    require_dir(incident_dir, "incident")
    incident_dir = Path(incident_dir).resolve()
    check_inputs(incident_dir if notebook is None else None, anonymize=anonymize,
                 key_file=key_file, start=start, end=end, services=services)
    out = Path(out_dir) if out_dir else Path("reports") / incident_dir.name
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = Path(notebook) if notebook else REPORT_NOTEBOOK
    if not source.is_file():
        raise NatlensError("report notebook not found", path=str(source))
    html, summary, executed, log = (out / "report.html", out / "summary.json",
                                    out / "report.ipynb", out / "report.log")
    for stale in (html, summary, log):
        stale.unlink(missing_ok=True)
    params = {"incident_dir": str(incident_dir), "out_dir": str(out), "anonymize": bool(anonymize),
              "start": _text(start), "end": _text(end), "services": [str(x) for x in services or []],
              "generated_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "natlens_version": natlens.__version__, **({"scheduler": scheduler} if scheduler else {}),
              "command": command or python_call(incident_dir, out_dir, anonymize=anonymize, start=start,
                                                end=end, services=services, notebook=notebook)}
    t0 = time.time()
    shown = incident_dir.name
    with _anonymization_key(anonymize, key_file) as key_path, _capture_bars(progress, params):
        r = execute(source, executed, params, cwd=out, log=log, expect=[summary],
                    cell_timeout=cell_timeout)
        if key_path is not None:
            shown = scrub_outputs(incident_dir, out, key_path, executed, log)
    result = ReportResult(incident=incident_dir.name, out_dir=out, ok=r.ok, error=r.error,
                          seconds=0.0, notebook=executed, log=log, input_error=r.input_error)
    if r.ok:
        try:
            render_html(executed, html, title=f"natlens report: {shown}")
            result.html, result.summary = html, summary
        except Exception as exc:  # a rendering failure is this incident's failure, not a crash
            result.ok, result.error = False, f"rendering HTML failed: {type(exc).__name__}: {exc}"
    result.seconds = time.time() - t0
    return result


@contextmanager
def _capture_bars(progress: bool, params: dict[str, Any]) -> Iterator[None]:
    """With ``progress``, the notebook's parameter progress_file, whose bars are drawn here."""
    if not progress:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="natlens-progress-") as tmp:
        params["progress_file"] = str(Path(tmp) / "bars")
        with bars_from(Path(params["progress_file"])):
            yield


def scrub_outputs(incident_dir: Path, out_dir: Path, key_file: str | os.PathLike[str],
                  notebook: Path, log: Path) -> str:
    """Map the identifiers papermill left in the executed notebook and the log (the
    parameters hold the incident's path, the log the notebooks' and working directory's),
    and any name a notebook of the user's own wrote into summary.json.

    Uses the kernel's key, so a name gets the pseudonym the report shows. Returns the
    incident's pseudonym, for the HTML title.
    """
    key = load_key(key_file)
    try:
        anonymizer = bundle_anonymizer(key, incident_dir, paths=[out_dir])
    except NatlensError:  # a notebook of the user's own may run on no bundle at all
        ids = Identifiers(names={incident_dir.name: "incident"})
        ids.add_path(incident_dir, out_dir)
        anonymizer = Anonymizer(key, ids)
    if notebook.is_file():
        scrub_notebook(notebook, anonymizer)
    scrub_log(log, anonymizer)
    scrub_summary(out_dir / "summary.json", anonymizer)
    return anonymizer.names.name(incident_dir.name, "incident")


def check_inputs(incident_dir: Path | None, *, anonymize: bool = False,
                 key_file: str | os.PathLike[str] | None = None, start: str = "", end: str = "",
                 services: Sequence[str] = ()) -> None:
    """Raise NatlensError for bad parameters or an unusable bundle before a notebook starts.

    Inside the notebook the same problem would take a kernel start to find; here it is the
    usual one-line error, exit 2. The scope's syntax is checked (natlens.findings.scope), and
    the Services against the inventory when it names load-balancer Services (else, and for
    the window against the captures, the analysis in the notebook checks them: its
    NatlensError is an input error too). `incident_dir` None: a notebook of the user's own
    may need no captures, so the bundle is not checked.
    """
    from natlens.bundle import load_bundle, require_captures
    from natlens.findings.scope import known_services, parse_scope, resolve_services

    request = parse_scope(services, start or None, end or None)
    if key_file is not None and not anonymize:  # a key and a plain report: which did the user mean?
        raise NatlensError("--key-file only applies with --anonymize")
    if anonymize and key_file is not None:
        check_key_file(key_file)
    if incident_dir is None:
        return
    bundle = load_bundle(incident_dir)
    require_captures(bundle)
    if request.services:
        from natlens.inventory import build_inventory

        known = known_services(build_inventory(bundle), pd.DataFrame(columns=["vip", "vport", "proto"]))
        if known:
            resolve_services(request.services, known)


def python_call(incident_dir: str | os.PathLike[str], out_dir: Any = None, **options: Any) -> str:
    """How a report made from Python is named in it: "natlens.report.build_report('x', ...)"
    with the options that differ from their defaults."""
    args = [repr(str(incident_dir))] + ([repr(str(out_dir))] if out_dir else [])
    args += [f"{k}={v!r}" for k, v in options.items() if v not in (None, "", (), [], False)]
    return f"natlens.report.build_report({', '.join(args)})"


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def check_key_file(key_file: str | os.PathLike[str]) -> None:
    """Raise NatlensError unless `key_file` is a readable Crypto-PAn key."""
    try:
        load_key(key_file)
    except OSError as exc:
        raise NatlensError(exc.strerror or str(exc), path=str(key_file)) from None
    except ValueError:
        raise NatlensError("a Crypto-PAn key is 32 raw bytes or 64 hex characters",
                           path=str(key_file)) from None


@contextmanager
def _anonymization_key(anonymize: bool, key_file: str | os.PathLike[str] | None) -> Iterator[str | None]:
    """Hand the Crypto-PAn key file to the kernel through the environment, never as a parameter.

    Without a key file, a random key is made for this run and deleted afterwards. Yields the
    key file's path (None when not anonymizing).
    """
    if not anonymize:
        yield None
        return
    old = os.environ.get(KEY_ENV)
    with tempfile.TemporaryDirectory(prefix="natlens-key-") as tmp:
        if key_file is None:
            key_file = Path(tmp) / "cryptopan.key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_key().hex())
        os.environ[KEY_ENV] = str(Path(key_file).resolve())
        try:
            yield os.environ[KEY_ENV]
        finally:
            if old is None:
                os.environ.pop(KEY_ENV, None)
            else:
                os.environ[KEY_ENV] = old
