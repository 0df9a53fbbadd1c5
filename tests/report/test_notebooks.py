"""The committed notebooks: no outputs, kernel python3, a `parameters` cell, thin code cells."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
EXPECTED = {"incident_report.ipynb", "snat.ipynb", "loopback.ipynb", "latency.ipynb",
            "netfilter_trace.ipynb"}


def test_the_report_and_deep_dive_notebooks_are_committed():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        assert "papermill" not in cell.metadata, f"{path.name} cell {i} was saved from a papermill run"
    assert "papermill" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_and_kernel(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    body = ast.parse(tagged[0].source).body
    names = {t.id for node in body for t in ([node.target] if isinstance(node, ast.AnnAssign) else node.targets)}
    assert {"incident_dir", "anonymize", "start", "end", "services", "generated_utc", "natlens_version",
            "command"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_thin(path):
    # Logic lives in the library: no loops, functions or classes in a notebook, and few lines.
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        banned = (ast.For, ast.While, ast.FunctionDef, ast.ClassDef, ast.With, ast.Try)
        assert not any(isinstance(n, banned) for n in ast.walk(tree)), cell.source
        if "parameters" not in cell.metadata.get("tags", []):
            assert len(cell.source.splitlines()) <= 6, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter_with_its_default_and_help(path, caplog):
    """papermill warned 'Unable to parse line 3/4/5' ('=' in a comment) and --help-notebook
    listed only incident_dir, anonymize and out_dir."""
    import logging

    from papermill.translators import PythonTranslator

    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(cell)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assigned = [line.split(":")[0].split("=")[0].strip() for line in cell.source.splitlines() if line.strip()]
    assert [p.name for p in params] == assigned
    for p in params:
        assert p.default and p.help and p.inferred_type_name != "None", p


def test_a_bad_journey_fails_the_loopback_notebook_with_one_line(sample, tmp_path):
    """`loopback.ipynb -p journey J99` ended in a bare KeyError traceback."""
    from natlens.report.execute import execute

    nb = next(p for p in NOTEBOOKS if p.name == "loopback.ipynb")
    r = execute(nb, tmp_path / "out.ipynb", {"incident_dir": str(sample), "journey": "J99"}, cwd=tmp_path)
    assert r.input_error and not r.ok
    assert r.error.startswith("parameter journey='J99': no such journey; the incident's journeys: J0, J1, ")
    assert "loopback journeys: J0, " in r.error
    out = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    tb = [o for c in out.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert [o.traceback for o in tb] == [[f"NatlensError: {r.error}"]]  # one line, no traceback


@pytest.mark.parametrize("params, message", [
    ({"node": "node-9"}, "parameter node='node-9': no such node; the bundle's nodes: node-1, node-2"),
    ({"node": "node-1", "src": "pod", "dst": "198.19.0.10", "dport": 80}, "parameter src='pod': not an IP"),
    ({"node": "node-1", "src": "198.18.16.5", "dst": "198.19.0.10", "dport": 70000}, "parameter dport=70000"),
    ({"node": "node-1", "dst": "198.19.0.10"}, "go together (or none, for each SNAT row's trace): src, dport missing"),
])
def test_netfilter_trace_parameters_are_checked(sample, params, message):
    from natlens import report
    from natlens.errors import NatlensError

    d = report.load(sample)
    with pytest.raises(NatlensError, match=re.escape(message)):
        report.checks.check_trace(d, **params)
    report.checks.check_trace(d)  # none given: each SNAT row's trace
    report.checks.check_trace(d, node="node-1", src="198.18.16.5", dst="198.19.0.10", dport=80)
