"""One incident -> one report directory: execute the notebook, check it, render the HTML.

    <out>/report.html    the self-contained report to share
    <out>/summary.json   natlens.summary/1 (written by the notebook)
    <out>/report.ipynb   the executed notebook
    <out>/report.log     cell output and kernel messages of the run
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import natlens
from natlens.errors import NatlensError
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
) -> ReportResult:
    """Produce the report of `incident_dir` in `out_dir` (default reports/<incident>).

    Raises NatlensError for a missing incident directory or notebook; a notebook
    that fails (error, timeout, dead kernel, summary.json not written) comes back
    as `ok=False` with the reason, and no report.html is left behind.
    """
    incident_dir = Path(incident_dir).resolve()
    if not incident_dir.is_dir():
        raise NatlensError("incident directory not found", path=str(incident_dir))
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
              "start": start or "", "end": end or "", "services": list(services or [])}
    t0 = time.time()
    shown = incident_dir.name
    with _anonymization_key(anonymize, key_file) as key_path:
        r = execute(source, executed, params, cwd=out, log=log, expect=[summary],
                    cell_timeout=cell_timeout)
        if key_path is not None:
            shown = scrub_outputs(incident_dir, out, key_path, executed, log)
    result = ReportResult(incident=incident_dir.name, out_dir=out, ok=r.ok, error=r.error,
                          seconds=0.0, notebook=executed, log=log)
    if r.ok:
        try:
            render_html(executed, html, title=f"natlens report: {shown}")
            result.html, result.summary = html, summary
        except Exception as exc:  # a rendering failure is this incident's failure, not a crash
            result.ok, result.error = False, f"rendering HTML failed: {type(exc).__name__}: {exc}"
    result.seconds = time.time() - t0
    return result


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

    Inside the notebook the same problem would only be a failed cell (exit 1 and a log to
    read); here it is the usual one-line error, exit 2. `incident_dir` None: a notebook
    of the user's own may need no captures, so the bundle is not checked.
    """
    from natlens.bundle import load_bundle, require_captures
    from natlens.report.data import _utc

    if incident_dir is not None:
        require_captures(load_bundle(incident_dir))
    _utc(start, "start")
    _utc(end, "end")
    for svc in services:
        if not _SERVICE.match(svc):
            raise NatlensError(f"--service {svc!r}: expected VIP, VIP:PORT or VIP:PORT/PROTO "
                               "(e.g. 198.19.0.10:80/tcp)")
    if anonymize and key_file is not None:
        check_key_file(key_file)


def check_key_file(key_file: str | os.PathLike[str]) -> None:
    """Raise NatlensError unless `key_file` is a readable Crypto-PAn key."""
    try:
        load_key(key_file)
    except OSError as exc:
        raise NatlensError(exc.strerror or str(exc), path=str(key_file)) from None
    except ValueError:
        raise NatlensError("a Crypto-PAn key is 32 raw bytes or 64 hex characters",
                           path=str(key_file)) from None


_SERVICE = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9A-Fa-f:]+\]?)(:\d{1,5}(/(tcp|udp|sctp))?)?$")


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
