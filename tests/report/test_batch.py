"""natlens batch: parallel worker processes, failures collected (errors, timeouts, dead
kernels), per-run logs, index.html and the aggregated CSV/Parquet table.

The incidents here run a small notebook with the report's parameters that writes a
summary.json, raises, hangs or kills its kernel depending on the incident's name, so the
batch machinery is tested on its own, independent of the analysis.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from natlens.cli import main
from natlens.report.batch import COLUMN_TYPES, find_incidents, run_batch
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
if name.startswith("mixed"):
    # A Local Service (no SNAT, 13 loopbacks) and a Cluster one (all SNATed) from two nodes.
    row = {"host_network": "no", "unknown": 0, "rule_trace": [], "predicted_by_rules": True}
    summary["connections"] = {"total": 40, "failed": 13, "timeouts": 13, "resets": 0, "unknown": 0}
    summary["snat"] = [
        {**row, "service": "198.19.0.10:80/tcp", "source_node": "node-1", "policy": "Local",
         "connections": 20, "snat": 0, "no_snat": 20, "ratio": 0.0},
        {**row, "service": "198.19.0.11:80/tcp", "source_node": "node-1", "policy": "Cluster",
         "connections": 12, "snat": 12, "no_snat": 0, "ratio": 1.0},
        {**row, "service": "198.19.0.11:80/tcp", "source_node": "node-2", "policy": "Cluster",
         "connections": 8, "snat": 6, "no_snat": 0, "unknown": 2, "ratio": 1.0,
         "predicted_by_rules": None}]
    summary["loopback"] = {"hits": 13, "failed": 13, "by_node": {"node-1": 13}}
    summary["failures"] = {"failed": 13, "by_mechanism": {"loopback": 13}, "by_service": [
        {"service": "198.19.0.10:80/tcp", "source_node": "node-1", "failed": 13,
         "by_mechanism": {"loopback": 13}}], "unexplained": 0}
    summary["lb_behaviour"] = [
        {"service": "198.19.0.10:80/tcp", "behaviour": "unknown", "loops": {"answered-from-node-port": 13}},
        {"service": "198.19.0.11:80/tcp", "behaviour": "avoids-source", "loops": {}}]
if name.startswith("garbled"):
    summary["snat"] = 5  # a report that says ok, with a summary.json the batch cannot read
pathlib.Path(out_dir, "summary.json").write_text(json.dumps(summary))
print("wrote summary for", name)
if name.startswith("dies"):
    os._exit(1)
'''


def _notebook(tmp_path):
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                             new_code_cell(BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "fake_report.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def notebook(tmp_path):
    return _notebook(tmp_path)


def _incidents(root, names):
    for name in names:
        (root / name / "nodes" / "node-a").mkdir(parents=True)
    (root / "not-an-incident").mkdir()
    return root


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch of every kind of incident: two good ones, a Local + Cluster one, one that
    raises, one that hangs past the cell timeout, one whose kernel dies."""
    tmp = tmp_path_factory.mktemp("batch")
    notebook = _notebook(tmp)
    inc = _incidents(tmp / "incidents", ["ok-1", "ok-2", "error-3", "hang-4", "dies-5", "mixed"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the progress bar
        r = run_batch(inc, tmp / "reports", jobs=2, notebook=notebook, cell_timeout=5, progress=True)
    r.progress_text = err.getvalue()
    return r


def test_batch_collects_every_failure_and_still_writes_the_index(batch):
    r, out = batch, batch.out_dir
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
    # One progress bar over the 6 incidents (not-an-incident is not one).
    assert "6/6" in r.progress_text and "reports" in r.progress_text

    # BatchResult.table: one row per incident (the CLI counts them); .services is summary.csv.
    assert r.table["incident"].tolist() == ["dies-5", "error-3", "hang-4", "mixed", "ok-1", "ok-2"]
    assert "snat_ratio" not in r.table and len(r.services) == 7
    table = pd.read_csv(out / "summary.csv")
    assert list(table["incident"]) == ["dies-5", "error-3", "hang-4", "mixed", "mixed", "ok-1", "ok-2"]
    assert pd.read_parquet(out / "summary.parquet")["incident"].tolist() == list(table["incident"])
    ok = table.set_index("incident").loc["ok-2"]
    assert ok["status"] == "ok" and ok["loopback_hits"] == 2 and ok["connections"] == 50
    assert ok["incident_connections"] == 102 and ok["service"] == "198.18.10.1:80/tcp"
    assert ok["snat_ratio"] == pytest.approx(2 / 50)
    failed_rows = table[table["incident"].isin(["dies-5", "error-3", "hang-4"])]
    assert (failed_rows["status"] == "failed").all() and failed_rows["error"].str.len().gt(0).all()
    assert failed_rows[["service", "connections", "snat_ratio"]].isna().all().all()

    page = (out / "index.html").read_text()
    assert external_references(page) == []
    assert 'href="ok-1/report.html"' in page and 'href="ok-2/summary.json"' in page
    assert "&lt;b&gt;2&lt;/b&gt; looped back" in page and "<b>2</b>" not in page
    incidents, services = re.findall(r'<table class="sortable" id="(\w+)">(.*?)</table>', page, re.S)
    assert incidents[0] == "incidents" and services[0] == "services"
    assert len(re.findall(r"<tr class=", incidents[1])) == 6  # every incident, failed ones too
    assert len(re.findall(r"<tr class=", services[1])) == 7  # one per incident and Service
    assert len(re.findall(r'<tr class="failed">', incidents[1])) == 3
    assert "RuntimeError: no captures in error-3" in incidents[1]
    assert (out / "ok-1" / "report.html").is_file() and not (out / "error-3" / "report.html").exists()


def test_summary_csv_is_per_service_with_integer_counts_even_beside_a_failed_incident(batch):
    """The issue: `mixed` showed 50.0 % SNAT (a Local 0 % and a Cluster 100 % averaged), and a
    failed incident turned summary.csv's counts into floats (20.0)."""
    out = batch.out_dir
    with (out / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    counts = [c for c, t in COLUMN_TYPES.items() if t == "Int64"]
    for r in rows:
        for c in counts:
            assert re.fullmatch(r"\d*", r[c]), (r["incident"], c, r[c])  # "20" or empty, never "20.0"
    assert any(r["status"] == "failed" and r["connections"] == "" for r in rows)
    mixed = {r["service"]: r for r in rows if r["incident"] == "mixed"}
    local, cluster = mixed["198.19.0.10:80/tcp"], mixed["198.19.0.11:80/tcp"]
    assert (local["policy"], local["snat_ratio"], local["connections"]) == ("Local", "0.0", "20")
    assert (local["loopback_hits"], local["failed"], local["loopback_failed"]) == ("13", "13", "13")
    # The Cluster Service over its two source nodes: 18 of 18 shown SNATed, 2 not shown.
    assert (cluster["snat_ratio"], cluster["snat"], cluster["snat_unknown"]) == ("1.0", "18", "2")
    assert (cluster["source_nodes"], cluster["loopback_hits"], cluster["failed"]) == ("node-1, node-2", "0", "0")
    assert cluster["rules_agree"] == "" and local["rules_agree"] == "True"
    assert {local["incident_connections"], cluster["incident_connections"]} == {"40"}
    assert "0.5" not in (local["snat_ratio"], cluster["snat_ratio"])
    table = pd.read_parquet(out / "summary.parquet")
    assert {str(table[c].dtype) for c in counts} == {"Int64"}
    assert str(table["snat_ratio"].dtype) == "Float64" and str(table["rules_agree"].dtype) == "boolean"
    page = (out / "index.html").read_text().replace("\u00a0", " ")  # figures kept together
    assert "0.0 % (0 of 20)" in page and "100.0 % (18 of 18); 2 not shown" in page
    assert "50.0 %" not in page


def test_index_sorts_by_a_clicked_header_in_chromium(batch, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian chromium is missing (.ci/run installs it)")
    page = (batch.out_dir / "index.html").read_text()
    probe = """<script>
window.addEventListener("load", function () {
  function order(id) { return Array.prototype.map.call(document.getElementById(id).tBodies[0].rows,
    function (r) { return r.cells[0].textContent.trim() + "|" + r.cells[1].textContent.trim().slice(0, 18); }).join("##"); }
  var snat = document.querySelectorAll("#services th")[5];
  snat.click(); var up = order("services");
  snat.click(); var down = order("services");
  document.querySelectorAll("#incidents th")[3].click();
  document.body.setAttribute("data-up", up);
  document.body.setAttribute("data-down", down);
  document.body.setAttribute("data-conns", order("incidents"));
  document.body.setAttribute("data-aria", snat.getAttribute("aria-sort"));
});
</script>"""
    probed = batch.out_dir / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>", 1))
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                        "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {k: v.split("##") for k, v in re.findall(r'data-(up|down|conns)="([^"]*)"', r.stdout)}
    assert 'data-aria="descending"' in r.stdout
    # SNATed ascending: 0 % (mixed's Local), 2 % (ok-1), 4 % (ok-2), 100 % (Cluster); failed last.
    assert [x.split("|")[0] for x in got["up"][:4]] == ["mixed", "ok-1", "ok-2", "mixed"]
    assert got["up"][0].startswith("mixed|198.19.0.10") and got["up"][3].startswith("mixed|198.19.0.11")
    assert all("report failed" in x for x in got["up"][4:]) and len(got["up"]) == 7
    assert got["down"][0].startswith("mixed|198.19.0.11") and all("report failed" in x for x in got["down"][4:])
    # The incidents by connections, ascending: mixed (40), ok-1 (101), ok-2 (102), failed ones last.
    assert [x.split("|")[0] for x in got["conns"][:3]] == ["mixed", "ok-1", "ok-2"]


def test_cli_batch_exits_nonzero_naming_each_failed_incident(tmp_path, notebook, capsys):
    inc = _incidents(tmp_path / "incidents", ["ok-1", "error-2", "garbled-3"])
    rc = main(["batch", str(inc), "--out", str(tmp_path / "r"), "--jobs", "2", "--no-progress",
               "--notebook", str(notebook)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "natlens: 2 of 3 incidents failed:" in err
    assert re.search(r"^  error-2: cell \d+ raised RuntimeError: no captures in error-2", err, re.M)
    assert re.search(r"^  garbled-3: .*garbled-3/summary.json: summary.json not readable", err, re.M)
    assert "ok-1" not in err and "index.html" in out and "(1 of 3 incidents reported" in out
    table = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert table.set_index("incident").loc["garbled-3", "status"] == "failed"


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


def test_service_rows_of_the_mixed_sample_keep_local_and_cluster_apart(sample):
    """On a real analysis (data/samples/mixed): each Service its own SNAT ratio, loopbacks
    and failures, adding up to the incident's; the incident digest pools no SNAT ratio."""
    from natlens.findings import analyze
    from natlens.report.batch import aggregate_summary, service_rows

    s = analyze(sample.parent / "mixed").summary()
    rows = {r["service"]: r for r in service_rows(s)}
    assert sorted(rows) == ["198.19.0.10:80/tcp", "198.19.0.11:80/tcp"]
    local, cluster = rows["198.19.0.10:80/tcp"], rows["198.19.0.11:80/tcp"]
    assert (local["policy"], local["snat_ratio"], local["connections"]) == ("Local", 0.0, 20)
    assert (cluster["policy"], cluster["snat_ratio"], cluster["connections"]) == ("Cluster", 1.0, 20)
    assert (local["loopback_hits"], cluster["loopback_hits"]) == (13, 0)
    assert local["loopback_hits"] + cluster["loopback_hits"] == s["loopback"]["hits"]
    assert local["failed"] + cluster["failed"] == s["connections"]["failed"] == 13
    assert local["loopback_failed"] == s["loopback"]["failed"]
    assert local["rules_agree"] is True and cluster["lb_behaviour"] == "avoids-source"
    digest = aggregate_summary(s)
    assert digest["snat_ratio"] is None and digest["incident_connections"] == 40
