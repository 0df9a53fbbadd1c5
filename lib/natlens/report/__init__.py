"""Incident reports: parameterized notebooks run by papermill, rendered to one HTML file.

In a notebook (what every report section does, one call each):

    from natlens import report
    d = report.load("data/samples/loopback-local")       # ReportData
    report.text.banner(d); report.tables.snat(d); report.figures.timeline(d); ...

From Python or the CLI (`natlens report`, `natlens batch`):

    report.build_report(incident_dir, out_dir, anonymize=False) -> ReportResult
    report.run_batch(incidents_dir, out_dir, jobs=2) -> BatchResult

Modules, one job each:
    data       analysis -> ReportData (scoped, optionally anonymized); summary.json
    checks     the deep-dive notebooks' own parameters (journey, node, src, dst, dport)
    text       verdict banner, executive summary, rule traces, remediation (escaped HTML)
    tables     the report's tables (DataFrames, columns named for scripts)
    display    table_html: how a table shows (readable headers, percentages, fits the page)
    figures    the report's matplotlib figures
    anonymize  every identifier mapped for reports shared outside: Crypto-PAn for addresses,
               keyed pseudonyms (pseudonyms) for the names identifiers collects from the bundle,
               paths, MACs; the executed notebook and log scrubbed
    execute    papermill run + strict failure detection (errors, timeouts, dead kernels)
    render     executed notebook -> self-contained HTML (no code, TOC, embedded images)
    run        one incident -> report directory;  batch: many, in parallel, + index
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from natlens.errors import NatlensError
from natlens.report import checks, figures, tables, text
from natlens.report.data import ReportData, load, write_summary
from natlens.report.display import table_html

__all__ = ["ReportData", "build_report", "checks", "figures", "load", "run_batch", "setup", "table_html", "tables",
           "text", "write_summary"]


def setup(max_rows: int = 40) -> None:
    """Notebook display settings for reports: bounded tables, PNG figures (embeddable)."""
    pd.set_option("display.max_rows", max_rows)
    pd.set_option("display.min_rows", min(20, max_rows))
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.max_colwidth", 80)
    pd.set_option("display.width", 200)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # outside IPython: nothing to configure
        pass
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:  # tables as display.table_html shows them (readable headers, no row index)
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)
        shell.set_custom_exc((NatlensError,), _one_line_error)


def _one_line_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    """IPython's display of a NatlensError: its one line, no traceback (bad input is not a bug).
    The cell still fails with ename NatlensError, which natlens.report.execute reads as bad input."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def build_report(*args: Any, **kwargs: Any):
    """See natlens.report.run.build_report."""
    from natlens.report.run import build_report as _build

    return _build(*args, **kwargs)


def run_batch(*args: Any, **kwargs: Any):
    """See natlens.report.batch.run_batch."""
    from natlens.report.batch import run_batch as _run

    return _run(*args, **kwargs)
