"""natlens batch: parallel worker processes, failures collected (errors, timeouts, dead
kernels), per-run logs, index.html and the aggregated CSV/Parquet table.

The incidents here run a small notebook with the report's parameters that writes a
summary.json, raises, hangs or kills its kernel depending on the incident's name, so the
batch machinery is tested on its own, independent of the analysis.
"""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from natlens.cli import main
from natlens.report.batch import find_incidents, run_batch
from natlens.report.render import external_references

PARAMS = ('incident_dir = ""\nout_dir = "."\nanonymize = False\nstart = ""\nend = ""\n'
          "services = []\n")
BODY = r'''
import json, os, pathlib, time
name = pathlib.Path(incident_dir).name
if name.startswith("error"):
    raise RuntimeError("no captures in " + name)
if name.startswith("hang"):
    time.sleep(120)
n = int(name.split("-")[-1]) if name[-1].isdigit() else 0
summary = {"schema": "natlens.summary/1", "incident": name,
           "inputs": {"captures": [], "inferred": []},
           "connections": {"total": 100 + n, "failed": n, "timeouts": n, "resets": 0},
           "snat": [{"service": "198.18.10.1:80/tcp", "source_node": "node-a", "policy": "Local",
                     "connections": 50, "snat": n, "ratio": n / 50, "predicted_by_rules": True,
                     "rule_trace": []}],
           "loopback": {"hits": n, "failed": n, "by_node": {"node-a": n}},
           "latency_ms": {"handshake": {"count": 10, "p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}},
           "verdict": {"loopback_detected": n > 0, "headline": "<b>%d</b> looped back" % n,
                       "root_cause": "", "remediation": []}}
pathlib.Path(out_dir, "summary.json").write_text(json.dumps(summary))
print("wrote summary for", name)
if name.startswith("dies"):
    os._exit(1)
'''


@pytest.fixture
def notebook(tmp_path):
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                             new_code_cell(BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "fake_report.ipynb"
    nbformat.write(nb, str(path))
    return path


def _incidents(root, names):
    for name in names:
        (root / name / "nodes" / "node-a").mkdir(parents=True)
    (root / "not-an-incident").mkdir()
    return root


def test_batch_collects_every_failure_and_still_writes_the_index(tmp_path, notebook, capsys):
    inc = _incidents(tmp_path / "incidents", ["ok-1", "ok-2", "error-3", "hang-4", "dies-5"])
    out = tmp_path / "reports"
    r = run_batch(inc, out, jobs=2, notebook=notebook, cell_timeout=5, progress=True)
    failed = dict(r.failures)
    assert sorted(failed) == ["dies-5", "error-3", "hang-4"]
    assert "RuntimeError: no captures in error-3" in failed["error-3"]
    assert "timeout" in failed["hang-4"]
    # dies-5 wrote a complete-looking summary.json before its kernel died: still a failure.
    assert (out / "dies-5" / "summary.json").is_file()
    assert "kernel died" in failed["dies-5"]
    assert all("report.log" in why for why in failed.values())
    # One log per run, holding the cell output.
    assert "wrote summary for ok-1" in (out / "ok-1" / "report.log").read_text()
    assert (out / "error-3" / "report.log").is_file()
    # One progress bar over the 5 incidents (not-an-incident is not one).
    err = capsys.readouterr().err
    assert "5/5" in err and "reports" in err

    table = pd.read_csv(out / "summary.csv")
    assert list(table["incident"]) == ["dies-5", "error-3", "hang-4", "ok-1", "ok-2"]
    assert pd.read_parquet(out / "summary.parquet")["incident"].tolist() == list(table["incident"])
    ok = table.set_index("incident").loc["ok-2"]
    assert ok["status"] == "ok" and ok["loopback_hits"] == 2 and ok["connections"] == 102
    assert ok["snat_ratio"] == pytest.approx(2 / 50)
    assert (table.set_index("incident").loc[["dies-5", "error-3", "hang-4"], "status"] == "failed").all()

    page = (out / "index.html").read_text()
    assert external_references(page) == []
    assert 'href="ok-1/report.html"' in page and 'href="ok-2/summary.json"' in page
    assert "&lt;b&gt;2&lt;/b&gt; looped back" in page and "<b>2</b>" not in page
    assert len(re.findall(r"<tr class=", page)) == 5
    assert (out / "ok-1" / "report.html").is_file() and not (out / "error-3" / "report.html").exists()


def test_cli_batch_exits_nonzero_naming_each_failed_incident(tmp_path, notebook, capsys):
    inc = _incidents(tmp_path / "incidents", ["ok-1", "error-2"])
    rc = main(["batch", str(inc), "--out", str(tmp_path / "r"), "--jobs", "2", "--no-progress",
               "--notebook", str(notebook)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "natlens: 1 of 2 incidents failed:" in err
    assert re.search(r"^  error-2: cell \d+ raised RuntimeError: no captures in error-2", err, re.M)
    assert "ok-1" not in err and "index.html" in out


def test_find_incidents_rejects_an_empty_directory(tmp_path):
    from natlens.errors import NatlensError

    (tmp_path / "x").mkdir()
    with pytest.raises(NatlensError, match="no incident bundles"):
        find_incidents(tmp_path)
    assert main(["batch", str(tmp_path / "missing")]) == 2


def test_anonymized_batch_uses_one_key_file_for_all(tmp_path, notebook):
    # The key reaches kernels through the environment only: never in the notebook's parameters.
    inc = _incidents(tmp_path / "incidents", ["ok-1"])
    r = run_batch(inc, tmp_path / "r", jobs=1, notebook=notebook, anonymize=True, progress=False)
    assert not r.failures
    # The incident is named by its pseudonym: its directory, its row and its summary.json.
    shown = r.table["incident"].iloc[0]
    assert re.fullmatch(r"incident-[0-9a-f]{8}", shown) and not (tmp_path / "r" / "ok-1").exists()
    executed = (tmp_path / "r" / shown / "report.ipynb").read_text()
    assert "anonymize = True" in executed and "ok-1" not in executed
    assert "cryptopan.key" not in executed and "NATLENS_ANON_KEY" not in executed
    assert json.loads((tmp_path / "r" / shown / "summary.json").read_text())["incident"] == shown
