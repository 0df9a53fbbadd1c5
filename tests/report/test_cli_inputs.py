"""What a user gets wrong on the command line fails fast, as one line and exit 2, and
the report's tables read like a report (no pandas row index)."""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone

import pandas as pd
import pytest

from natlens.cli import main
from natlens.errors import NatlensError
from natlens.findings import analyze
from natlens.report import table_html
from natlens.report.run import build_report, check_inputs


@pytest.mark.parametrize("kwargs, message", [
    ({"start": "yesterday"}, "start time 'yesterday' is not a time: give ISO 8601"),
    ({"services": ["nope"]}, "Service 'nope': expected VIP, VIP:PORT, VIP:PORT/PROTO, NAMESPACE/NAME"),
    ({"services": ["10.0.0.1:443"]}, "unknown Service '10.0.0.1:443'; the incident's Services: "
                                     "default/web-local (198.19.0.10:80/tcp)"),
    ({"services": ["198.19.0.10:80/udp"]}, "unknown Service '198.19.0.10:80/udp'"),
    ({"start": "2026-11-26T06:40:03Z", "end": "2026-11-26T06:40:02Z"}, "the window runs backwards"),
    ({"start": "1795675193", "end": "1795675192"}, "the window runs backwards"),
    ({"anonymize": True, "key_file": "/nonexistent/key"}, "/nonexistent/key: No such file"),
    ({"key_file": "/nonexistent/key"}, "--key-file only applies with --anonymize"),  # else: a plain report
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


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_names_epoch_seconds_and_times_of_day_pass_the_checks(sample):
    """Service names (as incident.yaml writes them) and epoch seconds used to be refused."""
    check_inputs(sample, services=["default/web-local", "default/web-local:80", "198.19.0.10"],
                 start="1795675193", end="06:39:54")


def test_a_missing_directory_is_one_message_for_every_entry_point(tmp_path, capsys):
    nope = tmp_path / "nope"
    for argv in (["analyze", str(nope)], ["report", str(nope), "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert _one_error_line(capsys) == f"natlens: error: {nope}: incident directory not found"
    assert main(["explain", "--node", str(nope / "nodes" / "node-1"), "--services"]) == 2
    assert _one_error_line(capsys) == f"natlens: error: {nope / 'nodes' / 'node-1'}: node directory not found"
    assert main(["batch", str(nope), "--out", str(tmp_path / "b")]) == 2
    assert _one_error_line(capsys) == f"natlens: error: {nope}: incidents directory not found"


@pytest.mark.parametrize("argv, message", [
    (["--service", "10.0.0.1:443"], "unknown Service '10.0.0.1:443'; the incident's Services: "
                                    "default/web-local (198.19.0.10:80/tcp)"),
    (["--start", "06:39:54", "--end", "06:39:53"], "is after end time '06:39:53'"),
    (["--start", "2026-01-01", "--end", "2026-01-02"], "holds no packet: the captures span 2026-11-26 "),
    (["--start", "1795675193x"], "start time '1795675193x' is not a time"),
])
def test_analyze_refuses_a_scope_that_cannot_be_right(sample, capsys, argv, message):
    assert main(["analyze", str(sample), *argv]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("natlens: error: ") and message in line


def test_analyze_with_a_scope_says_so_and_prints_no_nan(sample, capsys):
    """The CLI printed NaN (connect times of connections that never connected, medians of none)."""
    ts = sorted(analyze(sample).service_journeys["ts"])
    assert main(["analyze", str(sample), "--journeys", "--service", "default/web-local",
                 "--start", f"{ts[5]:.6f}"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "unknown" in out
    assert (f"scope: This analysis covers only Service default/web-local (198.19.0.10:80/tcp) from "
            f"{datetime.fromtimestamp(ts[5], timezone.utc):%Y-%m-%d %H:%M:%S}") in out
    assert f": {len(ts) - 5} of the incident's {len(ts)} connections." in out


def test_a_natlens_error_in_the_notebook_is_one_line_and_exit_2(sample, tmp_path, capsys):
    """A window outside the captures is found by the analysis in the notebook: it was 'cell 3
    raised NatlensError ...', exit 1 (or accepted, the timeline saying 'no connections')."""
    assert main(["report", str(sample), "--out", str(tmp_path / "r"), "--start", "2026-01-01",
                 "--end", "2026-01-02T00:00:00Z"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("natlens: error: the time window 2026-01-01 00:00:00.000 UTC to 2026-01-02 "
                           "00:00:00.000 UTC holds no packet: the captures span 2026-11-26 ")
    assert "cell" not in line


def test_batch_refuses_a_key_file_without_anonymize(sample, tmp_path, capsys):
    assert main(["batch", str(sample.parent), "--out", str(tmp_path / "b"), "--key-file", str(tmp_path / "k")]) == 2
    assert capsys.readouterr().err.strip() == "natlens: error: --key-file only applies with --anonymize"


def test_batch_keeps_the_row_of_an_incident_with_bad_input(monkeypatch, tmp_path):
    import natlens.report.batch as batch
    from natlens.report.run import ReportResult

    def bad_input(incident, out, **kw):
        return ReportResult(incident="x", out_dir=tmp_path, ok=False, seconds=1.0, log=tmp_path / "report.log",
                            error="the time window ... holds no packet", input_error=True)

    monkeypatch.setattr(batch, "build_report", bad_input)
    row = batch._one("x", str(tmp_path), False, None, 60.0, None, "natlens batch in")
    assert row == {"incident": "x", "ok": False, "error": "the time window ... holds no packet",
                   "seconds": 1.0, "html": None}


def test_the_report_names_when_how_and_with_which_natlens_it_was_made(sample, tmp_path):
    import natlens
    from natlens import report

    d = report.load(sample, run={"command": "natlens report x --service 198.19.0.10"})
    t = report.tables.parameters(d).set_index("parameter")["value"]
    assert t["natlens_version"] == natlens.__version__ and t["command"] == "natlens report x --service 198.19.0.10"
    assert abs(datetime.fromisoformat(t["generated_utc"].replace("Z", "+00:00")).timestamp()
               - datetime.now(timezone.utc).timestamp()) < 120


def test_build_report_passes_the_command_line_to_the_notebook(sample, monkeypatch, tmp_path):
    import natlens.report.run as run

    seen = {}

    def fake_execute(source, executed, params, **kw):
        seen.update(params)
        raise RuntimeError("stop")

    monkeypatch.setattr(run, "execute", fake_execute)
    with pytest.raises(RuntimeError):
        main(["report", str(sample), "--out", str(tmp_path / "r"), "--service", "default/web-local"])
    assert seen["command"] == f"natlens report {sample} --out {tmp_path / 'r'} --service default/web-local"
    assert seen["natlens_version"] and seen["generated_utc"].endswith("Z")
    with pytest.raises(RuntimeError):
        build_report(sample, tmp_path / "p", services=["default/web-local"])
    assert seen["command"] == (f"natlens.report.build_report({str(sample)!r}, {str(tmp_path / 'p')!r}, "
                               "services=['default/web-local'])")


def test_an_anonymized_reports_parameters_name_no_real_address(sample, tmp_path, key_file):
    """--service values and the command line reach the executed notebook's parameters: mapped
    there too (the --service address was left in report.ipynb)."""
    from natlens.report.anonymize import Anonymizer, load_key

    out = tmp_path / "r"
    assert main(["report", str(sample), "--out", str(out), "--anonymize", "--key-file", str(key_file),
                 "--service", "198.19.0.10:80"]) == 0
    executed = (out / "report.ipynb").read_text()
    mapped = Anonymizer(load_key(key_file)).ip("198.19.0.10")
    assert "198.19.0.10" not in executed and f"--service {mapped}:80" in executed
