"""What the user wrote in incident.yaml (title, window, Services, notes) reaches the report,
escaped; an anonymized report leaves the free text out."""

from __future__ import annotations

import shutil

import pytest
import yaml

from natlens import report


@pytest.fixture
def bundle(sample, tmp_path):
    dst = tmp_path / "inc"
    shutil.copytree(sample, dst)
    doc = yaml.safe_load((dst / "incident.yaml").read_text())
    doc["title"] = "Timeouts to 198.19.0.10 <script>alert(1)</script>"
    doc["notes"] = "Seen from pod 198.18.16.100 only & only on node-1"
    (dst / "incident.yaml").write_text(yaml.safe_dump(doc))
    return dst


def test_title_window_services_and_notes_are_shown_escaped(bundle):
    d = report.load(bundle)
    banner = str(report.text.banner(d)._repr_html_())
    assert "Timeouts to 198.19.0.10 &lt;script&gt;" in banner and "<script>" not in banner
    summary = report.text.executive_summary(d)._repr_html_()
    assert "Reported time window: 2026-11-26T06:39:52.866Z to 2026-11-26T06:39:56.499Z" in summary
    assert "Services of interest: default/web-local" in summary
    assert "198.18.16.100 only &amp; only on node-1" in summary


def test_timeline_shades_the_reported_window(bundle):
    fig = report.figures.timeline(report.load(bundle))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "reported window" in labels


def test_anonymized_report_leaves_the_title_and_notes_out_and_says_so(bundle):
    # Free text can name anything: an anonymized report leaves it out (natlens.report.data).
    d = report.load(bundle, anonymize=True)
    assert "title" not in d.about and "notes" not in d.about and d.about["left_out"] == ["title", "notes"]
    page = report.text.banner(d)._repr_html_() + report.text.executive_summary(d)._repr_html_()
    assert "Timeouts to" not in page and "Seen from pod" not in page
    assert "The title and notes written in incident.yaml are left out" in page
    assert d.about["window"]["start"] == "2026-11-26T06:39:52.866Z"
    assert d.about["services"] and "web-local" not in d.about["services"][0]


def test_no_incident_yaml_no_section(bundle):
    (bundle / "incident.yaml").unlink()
    d = report.load(bundle)
    assert d.about == {}
    assert "As reported" not in report.text.executive_summary(d)._repr_html_()
