"""What a user gets wrong on the command line fails fast, as one line and exit 2, and
the report's tables read like a report (no pandas row index)."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from natlens.cli import main
from natlens.errors import NatlensError
from natlens.report import table_html
from natlens.report.run import build_report


@pytest.mark.parametrize("kwargs, message", [
    ({"start": "yesterday"}, "start time 'yesterday' is not ISO 8601"),
    ({"services": ["nope"]}, "--service 'nope': expected VIP"),
    ({"anonymize": True, "key_file": "/nonexistent/key"}, "/nonexistent/key: No such file"),
])
def test_bad_parameters_fail_before_the_notebook_runs(sample, tmp_path, kwargs, message):
    with pytest.raises(NatlensError, match=re.escape(message)):
        build_report(sample, tmp_path / "r", **kwargs)
    assert not (tmp_path / "r" / "report.log").exists()  # no notebook was started


def test_bundle_without_captures_is_exit_2(sample, tmp_path, capsys):
    d = tmp_path / "nocap"
    shutil.copytree(sample, d)
    for f in d.glob("nodes/*/*.pcap"):
        f.unlink()
    assert main(["report", str(d), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"natlens: error: {d / 'nodes'}: no captures")


def test_batch_shows_no_progress_bar_when_stderr_is_not_a_terminal(sample, tmp_path, monkeypatch):
    import natlens.report.batch as batch

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise NatlensError("stop here")

    monkeypatch.setattr(batch, "run_batch", fake)
    assert main(["batch", str(sample.parent), "--out", str(tmp_path)]) == 2  # pytest: not a tty
    assert seen["progress"] is False


def test_tables_have_no_row_index_and_stay_escaped():
    page = table_html(pd.DataFrame({"service": ["<script>x</script>"], "ratio": [None]}))
    assert "<th></th>" not in page and "<th>0</th>" not in page
    assert "&lt;script&gt;" in page and "<script>" not in page


def test_sample_report_tables_have_no_row_index(sample_report):
    page = sample_report.html.read_text()
    tables = re.findall(r"<table.*?</table>", page, re.S)
    assert len(tables) >= 5
    assert not [t for t in tables if re.search(r"<tbody>\s*<tr>\s*<th", t)]


def test_batch_digest_counts_undetermined_snat_as_unknown_not_as_zero():
    from natlens.report.batch import aggregate_summary

    undetermined = {"service": "198.19.0.10:80/tcp", "source_node": "node-1", "policy": "Cluster",
                    "connections": 20, "snat": 0, "ratio": None}
    row = aggregate_summary({"snat": [undetermined]})
    assert row["snat_ratio"] is None and row["snat_connections"] == 0
    measured = {**undetermined, "policy": "Local", "snat": 0, "ratio": 0.0}
    row = aggregate_summary({"snat": [undetermined, measured]})
    assert row["snat_ratio"] == 0.0 and row["snat_connections"] == 20
