"""`--workers N` / `--scheduler ADDRESS` on analyze, report and batch: a local Dask cluster
gives what the run without one gives; the options' misuses are one line and exit 2; an
anonymized command line does not name the scheduler's host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from natlens.report.anonymize import Anonymizer

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "mixed"


def _natlens(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "natlens", *argv], capture_output=True, text=True, check=check)


def test_analyze_on_two_local_workers_prints_what_one_process_prints():
    here = _natlens("analyze", str(SAMPLE), "--json").stdout
    there = _natlens("analyze", str(SAMPLE), "--json", "--workers", "2").stdout
    assert json.loads(there) == json.loads(here)


def test_report_and_batch_on_local_workers_write_the_summary_the_local_report_writes(tmp_path):
    _natlens("report", str(SAMPLE), "--out", str(tmp_path / "here"))
    _natlens("report", str(SAMPLE), "--out", str(tmp_path / "there"), "--workers", "2")
    here = json.loads((tmp_path / "here" / "summary.json").read_text())
    assert json.loads((tmp_path / "there" / "summary.json").read_text()) == here
    incidents = tmp_path / "incidents"
    incidents.mkdir()
    (incidents / SAMPLE.name).symlink_to(SAMPLE)
    r = _natlens("batch", str(incidents), "--out", str(tmp_path / "batch"), "--workers", "1", "--jobs", "1")
    assert "1 of 1 incidents reported" in r.stdout
    assert json.loads((tmp_path / "batch" / SAMPLE.name / "summary.json").read_text()) == here


@pytest.mark.parametrize(("argv", "said"), [
    (["analyze", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
     "give --scheduler (a running cluster) or --workers (a cluster started here), not both"),
    (["analyze", "--workers", "1", "--jobs", "2"],
     "--jobs is for processes on this machine: on a Dask cluster its workers read the captures"),
    (["analyze", "--workers", "0"], "--workers must be 1 or more, not 0"),
    (["report", "--workers", "0"], "--workers must be 1 or more, not 0"),
])
def test_a_misused_cluster_option_is_one_line_and_exit_2(argv, said, tmp_path):
    r = _natlens(argv[0], str(SAMPLE), *argv[1:], *(["--out", str(tmp_path)] if argv[0] == "report" else []),
                 check=False)
    assert r.returncode == 2 and r.stderr.strip() == f"natlens: error: {said}"


def test_an_anonymized_command_line_does_not_name_the_scheduler_host():
    line = Anonymizer(b"k" * 32).command("natlens report inc --scheduler tcp://dask.acme.internal:8786 --workers 2")
    assert "acme" not in line and "--scheduler" in line and "--workers 2" in line
