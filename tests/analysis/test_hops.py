"""The worked journey: every packet of one client connection, each said in plain words."""

from __future__ import annotations

import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze


@pytest.fixture(scope="module")
def local():
    return analyze(samples_dir() / "loopback-local")


def _first_index(notes, text):
    return next(i for i, n in enumerate(notes) if n.startswith(text))


def test_loopback_journey_tells_the_story_in_order(local):
    jid = local.loopback.iloc[0]["journey"]
    hops = local.journey_hops(jid)
    notes = list(hops["note"])
    steps = ["SYN from the client to the VIP", "SYN after the load balancer's DNAT to node-1's NodePort",
             "SYN DNATed to the endpoint", "SYN-ACK to the client from", "the client resets"]
    at = [_first_index(notes, s) for s in steps]
    assert at == sorted(at)
    assert hops["ts_ns"].is_monotonic_increasing
    # the wrong-source SYN-ACK is not from the VIP the client called
    wrong = hops[hops["note"].str.startswith("SYN-ACK to the client from")]
    assert not (wrong["src"] == local.loopback.iloc[0]["vip"]).any()


def test_snat_journey_names_the_node_address():
    a = analyze(samples_dir() / "cluster-ok")
    j = a.journeys.iloc[0]
    notes = list(a.journey_hops(j["journey"])["note"])
    assert f"SYN to the VIP, SNATed to {j['snat_to']}" in notes
    assert "SYN-ACK from the VIP" in notes


def test_report_hops_show_microseconds_since_the_first(local):
    from natlens import report

    d = report.load(samples_dir() / "loopback-local")
    t = report.tables.hops(d)
    assert t["since_first_us"].iloc[0] == 0 and (t["since_first_us"].diff().dropna() >= 0).all()
    assert t["ts"].str.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$").all()
    assert "ts_ns" not in t.columns
