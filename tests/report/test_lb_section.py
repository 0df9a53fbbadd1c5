"""The report's "How the load balancer picks a backend", its summary line, the banner and the
remediation's commands, on the any-backend sample (an NLB-like LB that sends node-1's SNATed
connections back to node-1) and the founding (TKE-like) one."""

from __future__ import annotations

from pathlib import Path

import pytest

from natlens import report

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


@pytest.fixture(scope="module")
def any_backend():
    return report.load(SAMPLES / "any-backend-cluster")


@pytest.fixture(scope="module")
def founding():
    return report.load(SAMPLES / "loopback-local")


def test_the_section_names_the_behaviour_its_evidence_and_how_the_loopbacks_ended(any_backend):
    html = report.text.lb_intro(any_backend)._repr_html_()
    assert "<code>198.19.0.10:80/tcp</code>: picks any backend, also the node a connection comes from" in html
    assert "10 of 20 connections from a node&#x27;s own address were sent back to that node" in html
    assert "Its loopbacks: 10 dropped on arrival (its source is the node&#x27;s own address)." in html
    t = report.tables.lb(any_backend)
    assert t.iloc[0].tolist() == ["198.19.0.10:80/tcp", "any-backend", "10 of 20", "0 of 0", "0 of 20"]
    intro = report.text.loopback_intro(any_backend)._repr_html_()
    assert "the node drops it on arrival" in intro and "From a pod" not in intro


def test_a_behaviour_the_captures_do_not_show_is_said_to_be_unknown(founding):
    html = report.text.lb_intro(founding)._repr_html_()
    assert "not shown by these captures" in html and "from a pod&#x27;s address" in html
    summary = report.text.executive_summary(founding)._repr_html_()
    assert "would send a node's own connection back to it is not shown by these captures" in summary


def test_each_fix_shows_its_command_to_copy_and_its_cost(any_backend):
    html = report.text.remediation(any_backend)._repr_html_()
    assert '<pre class="natlens-trace">web-cluster.default.svc.cluster.local:80</pre>' in html
    assert "What it costs: none for in-cluster callers" in html
    assert "externalTrafficPolicy: Cluster" not in html


@pytest.mark.parametrize("behaviour, failed, want", [("proxy", 0, "verdict-ok"), ("proxy", 2, "verdict-bad"),
                                                     ("any-backend", 0, "verdict-bad"), ("unknown", 0, "verdict-bad")])
def test_the_banner_is_red_for_loopbacks_unless_a_proxy_answered_them_all(behaviour, failed, want):
    summary = {"verdict": {"loopback_detected": True, "lb_behaviour": behaviour, "problem": None,
                           "lb_failure_mode": "answered-via-lb" if behaviour == "proxy" else "unknown"},
               "connections": {"total": 20, "failed": failed, "unknown": 0},
               "loopback": {"hits": 5, "failed": failed}}
    assert report.text.verdict_class(summary) == want
    assert report.text.harmless_loopbacks(summary) == (want == "verdict-ok")


def test_proxied_loopbacks_whose_end_is_not_seen_are_not_called_harmless():
    summary = {"verdict": {"loopback_detected": True, "lb_behaviour": "proxy", "lb_failure_mode": "unknown",
                           "problem": None},
               "connections": {"total": 20, "failed": 0, "unknown": 5}, "loopback": {"hits": 5, "failed": 0}}
    assert not report.text.harmless_loopbacks(summary) and report.text.verdict_class(summary) == "verdict-bad"
