"""The incident report of the shipped sample, end to end: papermill, HTML, summary.json,
escaping of hostile strings, and anonymization."""

from __future__ import annotations

import contextlib
import hashlib
import html
import ipaddress
import json
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import KEY_HEX, REPO, XSS_COMMENT, XSS_FILE, XSS_HOST, images_in

from natlens.cli import main
from natlens.report.anonymize import Anonymizer, bundle_anonymizer
from natlens.report.execute import check_completed
from natlens.report.render import external_references

SECTIONS = ["By Service", "default/web-local (198.19.0.10:80/tcp)", "Executive summary", "Evidence quality", "Timeline", "Why each connection failed",
            "SNAT per Service and node", "Rule trace", "How the load balancer picks a backend",
            "Loopback evidence", "One journey, hop by hop", "Latency", "Slow and lossy paths", "Remediation",
            "Appendix",
            "Inputs", "What was inferred", "Parameters", "Tool versions"]


def _ips(text: str) -> set[str]:
    out = set()
    for m in re.findall(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", text):
        with contextlib.suppress(ValueError):
            out.add(str(ipaddress.ip_address(m)))
    return out


def test_report_files_sit_together(sample_report):
    out = sample_report.out_dir
    assert {p.name for p in out.iterdir()} >= {"report.html", "summary.json", "report.ipynb", "report.log"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "natlens.summary/1"
    assert check_completed(out / "report.ipynb") is None


def test_summary_json_is_the_analysis_summary(sample, sample_report):
    from natlens.findings import analyze

    expected = json.loads(json.dumps(analyze(sample, progress=False).summary(), default=str))
    assert json.loads((sample_report.out_dir / "summary.json").read_text()) == expected


def test_html_is_self_contained_without_code_and_with_toc(sample_report):
    page = sample_report.html.read_text()
    assert external_references(page) == []
    assert "<script" not in page
    for code in ("report.load(", "report.tables", "import ", "incident_dir = "):
        assert code not in page
    nav = re.search(r'<nav class="natlens-toc".*?</nav>', page, re.S).group(0)
    toc = re.findall(r">([^<>]+)</a></li>", nav)
    assert toc == SECTIONS
    assert images_in(page) >= 3  # timeline, SNAT ratio, latency CDFs


def test_html_says_the_verdict_with_exact_numbers(sample_report):
    page = sample_report.html.read_text()
    s = json.loads((sample_report.out_dir / "summary.json").read_text())
    banner = re.search(r'<div class="natlens-banner (verdict-\w+)" id="verdict">(.*?)</div>', page, re.S)
    assert banner, "no verdict banner"
    v = s["verdict"]
    assert banner.group(1) == ("verdict-bad" if v["loopback_detected"] else banner.group(1))
    assert ("Loopback detected" in banner.group(2)) == v["loopback_detected"]
    assert v["headline"] in html.unescape(banner.group(2))
    summary_html = re.search(r'<div class="natlens-summary">(.*?)</div>', page, re.S).group(1)
    c = s["connections"]
    assert f"<strong>{c['total']:,}</strong> connections" in summary_html
    assert f"<strong>{c['failed']:,}</strong> of them failed" in summary_html
    assert f"{c['timeouts']:,} timed out" in summary_html
    if s["loopback"]["hits"]:
        assert f"<strong>{s['loopback']['hits']:,}</strong> connections were sent" in summary_html
    assert "Impact." in summary_html
    text = html.unescape(page)
    for step in v["remediation"]:  # its words, then its command on a line of its own, then its cost
        words, _, how = step.partition(" How: ")
        assert words in text
        if how:
            command = how.rpartition(" (cost: ")[0]
            assert f'<pre class="natlens-trace">{html.escape(command, quote=False)}</pre>' in page \
                or f'<pre class="natlens-trace">{html.escape(command)}</pre>' in page


def test_appendix_lists_every_input_with_sha256(sample, sample_report):
    page = sample_report.html.read_text()
    for p in sorted(sample.rglob("*")):
        if p.is_file():
            assert hashlib.sha256(p.read_bytes()).hexdigest() in page, p
    for pkg in ("papermill", "nbconvert", "pandas", "natlens"):
        assert f"<td>{pkg}</td>" in page


def test_inputs_table_tallies_every_capture(sample):
    from natlens import report

    d = report.load(sample)
    t = report.tables.inputs(d).set_index("file")
    caps = d.summary["inputs"]["captures"]
    assert caps
    for c in caps:
        row = t.loc[c["file"]]
        assert (row["records"], row["decoded"]) == (c["records"], c["decoded"])
        assert row["records"] == row["decoded"] + row["skipped"]
    assert set(t.index) == {p.relative_to(sample).as_posix() for p in sample.rglob("*") if p.is_file()}


def test_papermill_cli_runs_the_notebook_as_users_expect(sample, tmp_path):
    out = tmp_path / "out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(REPO / "notebooks" / "incident_report.ipynb"),
                        str(out), "-p", "incident_dir", str(sample), "-p", "out_dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert check_completed(out) is None
    assert (tmp_path / "summary.json").is_file()
    nb = nbformat.read(str(out), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", ["snat", "loopback", "latency", "netfilter_trace"])
def test_deep_dive_notebooks_run_on_the_sample(sample, tmp_path, name):
    from natlens.report.execute import execute

    r = execute(REPO / "notebooks" / f"{name}.ipynb", tmp_path / "out.ipynb",
                {"incident_dir": str(sample)}, cwd=tmp_path)
    assert r.ok, r.error


def test_hostile_strings_are_escaped(hostile_report):
    page = hostile_report.html.read_text()
    assert "<script" not in page
    assert XSS_HOST not in page and XSS_COMMENT not in page and XSS_FILE not in page
    # The hostile capture file name is shown (inputs, hop tables), escaped.
    assert "&lt;img src=x onerror=natlensXssFile()&gt;" in page
    # Wherever the hostile comment or Host header shows up, it shows up escaped.
    for marker in ("natlensXssRule", "natlensXssHost"):
        for m in re.finditer(marker, page):
            assert page[m.start() - 12: m.start()].endswith("&lt;script&gt;"), page[m.start() - 40: m.end()]


@pytest.fixture(scope="module")
def anonymized(hostile, key_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("anon")
    rc = main(["report", str(hostile), "--out", str(out), "--anonymize", "--key-file", str(key_file)])
    assert rc == 0
    return out


def test_anonymized_report_maps_every_address_consistently(hostile, hostile_report, anonymized):
    plain_summary = (hostile_report.out_dir / "summary.json").read_text()
    plain_page = hostile_report.html.read_text()
    real = _ips(plain_summary) | _ips(plain_page)
    assert real, "the plain report shows no addresses to anonymize"
    an = bundle_anonymizer(bytes.fromhex(KEY_HEX), hostile)  # the names the report maps too
    for name in ("report.html", "summary.json", "report.ipynb"):
        text = (anonymized / name).read_text()
        leaked = sorted(ip for ip in real if ip in _ips(text) and an.ip(ip) != ip)
        assert not leaked, f"{name} shows real addresses {leaked[:5]}"
    page = (anonymized / "report.html").read_text()
    anon_summary = json.loads((anonymized / "summary.json").read_text())
    assert anon_summary == an.value(json.loads(plain_summary))
    for row in anon_summary["snat"]:
        assert row["service"] in page or row["service"].replace("/", "&#x2F;") in page
    assert "anonymized (Crypto-PAn" in page
    assert "natlensXssHost" not in page  # payload-derived strings are dropped


def test_anonymized_figures_label_mapped_addresses(hostile, key_file):
    from natlens import report

    d = report.load(hostile, anonymize=True, key_file=key_file)
    real = report.load(hostile)
    fig = report.figures.snat_ratio(d)
    labels = " ".join(t.get_text() for ax in fig.axes for t in ax.get_yticklabels())
    an = Anonymizer(bytes.fromhex(KEY_HEX))
    for svc in real.snat["service"].astype(str):
        vip = svc.split(":")[0]
        assert vip not in labels and an.ip(vip) in labels


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incident directory not found" in err


def test_time_window_and_services_scope_every_table_and_the_summary(sample):
    import pandas as pd

    from natlens import report

    full = report.load(sample)
    ts = full.journeys["ts"].sort_values()
    mid = pd.Timestamp(ts.iloc[len(ts) // 2], unit="s", tz="UTC").isoformat()
    d = report.load(sample, start=mid, services=[full.snat["service"].iloc[0]])
    assert 0 < len(d.journeys) < len(full.journeys)
    assert (d.journeys["ts"] >= ts.iloc[len(ts) // 2] - 1e-6).all()
    assert list(d.snat["service"]) == [full.snat["service"].iloc[0]]
    assert d.summary["connections"]["total"] == len(d.journeys)  # the summary is scoped too
    assert d.summary["scope"]["journeys"] == {"in": len(d.journeys), "out": len(full.journeys) - len(d.journeys)}
    banner = report.text.banner(d)
    assert "<strong>Filtered.</strong> This report covers only" in banner
    assert f"{len(d.journeys)} of the incident&#x27;s {len(full.journeys)} connections" in banner


def test_a_service_the_incident_does_not_have_is_an_error(sample):
    """An unknown Service used to give empty tables and a whole-incident summary."""
    from natlens import report
    from natlens.errors import NatlensError

    with pytest.raises(NatlensError, match=r"unknown Service '198.19.0.99:443/tcp'; the incident's "
                                           r"Services: default/web-local \(198.19.0.10:80/tcp\)"):
        report.load(sample, services=["198.19.0.99:443/tcp"])
