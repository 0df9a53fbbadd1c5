"""papermill execution with strict failure detection, and the self-contained HTML rendering."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from natlens.report.execute import check_completed, execute
from natlens.report.render import external_references, render_html, toc_html


def _notebook(path, *cells):
    nb = new_notebook(cells=[new_code_cell("marker = 'unset'", metadata={"tags": ["parameters"]})])
    for c in cells:
        nb.cells.append(new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


WRITE_DONE = "open('done.txt', 'w').write(marker)"


def test_success_injects_parameters_and_logs_cell_output(tmp_path):
    src = _notebook(tmp_path / "ok.ipynb", "print('hello', marker)", WRITE_DONE)
    r = execute(src, tmp_path / "out.ipynb", {"marker": "p42"}, cwd=tmp_path,
                log=tmp_path / "run.log", expect=[tmp_path / "done.txt"])
    assert r.ok and r.error is None, r.error
    assert (tmp_path / "done.txt").read_text() == "p42"
    assert "hello p42" in (tmp_path / "run.log").read_text()
    assert check_completed(tmp_path / "out.ipynb") is None


def test_cell_error_is_a_failure_naming_the_exception(tmp_path):
    src = _notebook(tmp_path / "e.ipynb", "raise ValueError('no captures in bundle')", WRITE_DONE)
    r = execute(src, tmp_path / "out.ipynb", {}, cwd=tmp_path)
    assert not r.ok
    assert "ValueError: no captures in bundle" in r.error
    assert not (tmp_path / "done.txt").exists()


def test_timeout_is_a_failure(tmp_path):
    src = _notebook(tmp_path / "t.ipynb", "import time; time.sleep(60)", WRITE_DONE)
    r = execute(src, tmp_path / "out.ipynb", {}, cwd=tmp_path, cell_timeout=2)
    assert not r.ok and "timeout" in r.error
    assert r.seconds < 30


def test_dead_kernel_is_a_failure_even_if_the_saved_notebook_looks_complete(tmp_path):
    # The last cell writes the expected file and then kills the kernel: every output
    # the report needs is there, but the run did not finish cleanly.
    src = _notebook(tmp_path / "d.ipynb", "print('all outputs there')",
                    WRITE_DONE + "; import os; os._exit(1)")
    r = execute(src, tmp_path / "out.ipynb", {}, cwd=tmp_path, expect=[tmp_path / "done.txt"])
    assert (tmp_path / "done.txt").exists()
    assert not r.ok and "kernel died" in r.error


def test_missing_expected_file_is_a_failure(tmp_path):
    src = _notebook(tmp_path / "m.ipynb", "x = 1")
    r = execute(src, tmp_path / "out.ipynb", {}, cwd=tmp_path, expect=[tmp_path / "done.txt"])
    assert not r.ok and "did not write done.txt" in r.error


def test_check_completed_rejects_a_cell_that_never_ran(tmp_path):
    src = _notebook(tmp_path / "ok.ipynb", "x = 1")
    execute(src, tmp_path / "out.ipynb", {}, cwd=tmp_path)
    nb = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    nb.cells[-1].metadata["papermill"]["status"] = "pending"
    nbformat.write(nb, str(tmp_path / "out.ipynb"))
    assert "did not complete" in check_completed(tmp_path / "out.ipynb")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    src = _notebook(
        d / "r.ipynb",
        "md:## Executive summary\n\nPlain words.",
        "import pandas as pd\npd.DataFrame({'comment': ['<script>document.title=1</script>']})",
        "md:## Timeline",
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(); ax.plot([1, 2]); plt.show()",
        "import sys, warnings\nwarnings.warn('stderr noise'); print('to stderr', file=sys.stderr)",
        "md:### Detail",
    )
    r = execute(src, d / "out.ipynb", {}, cwd=d)
    assert r.ok, r.error
    return render_html(d / "out.ipynb", d / "r.html", title="incident <x>")


def test_html_has_no_code_no_stderr_and_escaped_strings(rendered):
    assert "marker = " not in rendered and "plt.subplots" not in rendered
    assert "stderr noise" not in rendered and "to stderr" not in rendered
    assert "<script>document.title" not in rendered
    assert "&lt;script&gt;document.title" in rendered
    assert "<title>incident &lt;x&gt;</title>" in rendered


def test_html_is_self_contained(rendered):
    assert external_references(rendered) == []
    assert not re.search(r"<script[^>]*\bsrc=", rendered)
    assert re.search(r'<img[^>]+src="data:image/png;base64,', rendered)


def test_html_has_a_table_of_contents(rendered):
    nav = re.search(r'<nav class="natlens-toc".*?</nav>', rendered, re.S).group(0)
    assert re.findall(r'href="#([^"]+)"', nav) == ["Executive-summary", "Timeline", "Detail"]
    for anchor in ("Executive-summary", "Timeline", "Detail"):
        assert f'id="{anchor}"' in rendered


def test_external_reference_detector_reads_markup_not_text():
    """incident.yaml's notes may hold a pasted HTML snippet: escaped, it is text and loads nothing
    (it used to fail the report); the same snippet as markup is caught."""
    text = ('<p>Notes: customer pasted &lt;img src=https://cdn.example/x.png&gt; and '
            'src=https://cdn.example/a.js, url(//cdn.example/y.css)</p>')
    assert external_references(text) == []
    assert len(external_references('<p>x</p><img src=https://cdn.example/x.png><a href="//cdn.example/">')) == 2
    assert len(external_references('<div style="background: url(https://cdn.example/y.png)"></div>')) == 1


def test_external_reference_detector_catches_cdn_loads():
    page = ('<script src="https://cdn.example/require.js"></script>'
            "<link rel=stylesheet href=//cdn.example/x.css><style>@import url(x.css)</style>"
            '<img src="data:image/png;base64,AAAA">')
    assert len(external_references(page)) == 3
    assert toc_html('<h2 id="a&amp;b">A &amp; B</h2>').count("<li") == 1
