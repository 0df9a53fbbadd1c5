"""The report's "Why each connection failed": every mechanism with its count, one worked
journey each (where it died, why, its path, its hops), and the same under anonymization."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from natlens import report

NFT = Path(__file__).resolve().parents[2] / "data" / "samples" / "nftables-local"


@pytest.fixture(scope="module")
def d():
    return report.load(NFT)


def test_the_table_counts_every_failure_by_mechanism(d):
    t = report.tables.failures(d)
    assert t["failure"].tolist() == ["loopback", "wrong-source-reply"]
    assert t["connections"].tolist() == [11, 3]
    assert t["connections"].sum() == d.summary["connections"]["failed"]
    assert t.loc[1, "journeys"] == "J1, J3, J11"
    assert "Every failed connection has a cause the captures show" in report.text.failures_intro(d)._repr_html_()


def test_one_worked_journey_per_mechanism_with_where_why_path_and_hops(d):
    html = report.text.failure_journeys(d)._repr_html_()
    heads = re.findall(r"<h4>(.*?)</h4>", html)
    assert len(heads) == 2
    assert heads[0].startswith("Load-balancer loopbacks (<code>loopback</code>): journey <code>J0</code>")
    assert heads[1].startswith("Answers from the wrong source (<code>wrong-source-reply</code>): journey "
                               "<code>J1</code> (and 2 more)")
    assert "<b>Where it died:</b> node-1 veth-client: the client got the SYN-ACK from 198.18.16.10:8080" in html
    assert "which DNATed it to 198.18.16.10:8080 (an endpoint on the client&#x27;s own node) without SNAT" in html
    assert "SYN-ACK from 198.18.16.10:8080: node-1 veth-web-1 -&gt; node-1 veth-client -&gt; client" in html
    assert html.count("<table") == 2 and "SYN-ACK to the client from 198.18.16.10:8080" in html
    # the first attempt only: no hop a second or more after the first (the retransmitted SYN's round)
    assert "up to the client's first retransmitted SYN" in html and "report.tables" not in html
    first = report.tables.compact_hops(d, "J1", first_attempt=True)
    every = report.tables.compact_hops(d, "J1")
    assert 0 < len(first) < len(every) and first["since_first_us"].max() < 500_000
    assert every["note"].str.contains("the SYN-ACK's last capture point", regex=False).sum() == 1
    assert (first["capture"] == "node-1/any (veth-client)").any() and (first["capture"] == "node-1/eth0").any()


def test_the_executive_summary_says_why_they_failed(d):
    html = report.text.executive_summary(d)._repr_html_()
    assert "Why they failed: 11 load-balancer loopbacks, 3 answers from the wrong source" in html


def test_anonymized_the_section_shows_no_real_address():
    a = report.load(NFT, anonymize=True)
    html = report.text.failure_journeys(a)._repr_html_() + report.tables.failures(a).to_string()
    for real in ("198.18.16.10", "198.18.16.100", "198.19.0.10", "198.18.0.12"):
        assert real not in html
    assert "wrong-source-reply" in html
