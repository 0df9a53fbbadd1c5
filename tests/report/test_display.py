"""How the report shows tables: readable headers, percentages, fitting the page, still escaped.

Display only (natlens.report.display): the library DataFrames keep their column names.
"""

from __future__ import annotations

import re

import pandas as pd
from conftest import SAMPLES

from natlens import report
from natlens.report.display import header, table_html
from natlens.report.tables import LOOPBACK_COLUMNS


def _headers(page: str) -> list[str]:
    return re.findall(r"<th(?: [^>]*)?>(.*?)</th>", page)


def test_headers_are_readable_and_frames_keep_their_column_names(sample):
    d = report.load(sample)
    loop = report.tables.loopback(d)
    assert list(loop.columns) == LOOPBACK_COLUMNS  # the contract for users' scripts
    assert list(report.tables.snat(d).columns)[-1] == "predicted_by_rules"
    page = table_html(loop.assign(client_node=["a", "b"] * (len(loop) // 2) + ["a"] * (len(loop) % 2)))
    heads = _headers(page)
    assert "client node" in heads and "time (UTC)" in heads and "evidence" in heads
    assert not [h for h in heads if "_" in h], heads
    assert header("client_h") == "client address" and header("lb_backend") == "LB sent it to"
    assert header("syn_retransmits") == "SYN retransmits"
    assert header("predicted_by_rules") == "rules predict this"
    assert header("server_h") == "server address" and header("handshake_ms") == "handshake (ms)"


def test_shares_show_as_percentages_and_booleans_as_words():
    page = table_html(pd.DataFrame({"outcome": ["timed out", "ok"], "connections": [11, 9],
                                    "share": [0.55, 0.45]}))
    assert ">55.0 %</td>" in page and ">45.0 %</td>" in page and "0.55" not in page
    page = table_html(pd.DataFrame({"service": ["a"], "ratio": [None], "snat_ratio": [1.0],
                                    "predicted_by_rules": [True]}))
    assert ">-</td>" in page and ">100.0 %</td>" in page and ">yes</td>" in page


def test_wide_table_says_repeated_values_once_above_and_wraps_long_text_last():
    df = pd.DataFrame({"journey": ["J0", "J1", "J2"], "client_node": ["node-1"] * 3,
                       "client_h": ["198.18.16.100"] * 3, "client_p": [40446, 40470, 40474],
                       "loopback_evidence": [f"the connection came back to its own node node-1: port {p}"
                                             for p in (40446, 40470, 40474)],
                       "service": ["198.19.0.10:80/tcp"] * 3, "outcome": ["timed out"] * 3,
                       "syn_retransmits": [1, 1, 1]})
    page = table_html(df)
    caption = re.search(r"<caption>(.*?)</caption>", page).group(1)
    assert "client address: <b>198.18.16.100</b>" in caption and "SYN retransmits: <b>1</b>" in caption
    assert caption.index("client node") < caption.index("SYN retransmits")  # column order
    assert _headers(page) == ["journey", "client port", "evidence"]  # the varying ones, text last
    assert re.search(r'<th class="natlens-wrap">evidence</th></tr>', page)
    assert page.count('<td class="natlens-wrap">the connection came back') == 3
    # a narrow table, or one row, keeps every column
    assert "<caption>" not in table_html(df.iloc[:1]) and "<caption>" not in table_html(df[["journey", "outcome"]])


def test_display_stays_escaped_in_headers_cells_and_caption():
    hostile = "<script>x()</script>"
    df = pd.DataFrame({hostile: ["a", "b"], "c2": [hostile] * 2, "c3": [1, 2], "c4": [1, 2],
                       "c5": [1, 2], "c6": [1, 2], "c7": [3, 4]})
    page = table_html(df)
    assert "<script>" not in page and page.count("&lt;script&gt;") == 2  # header, caption
    page = table_html(pd.DataFrame({"service": [hostile], "note": [hostile * 5]}))
    assert "<script>" not in page and "&lt;script&gt;x()" in page


def test_long_tables_are_cut_in_the_middle_saying_how_many_rows():
    page = table_html(pd.DataFrame({"n": range(100)}), max_rows=40)
    assert "… 80 more rows …" in page or "more rows" in page
    assert ">0</td>" in page and ">99</td>" in page and ">50</td>" not in page


def test_sample_report_shows_readable_headers_and_percentages(sample_report):
    page = sample_report.html.read_text()
    tables = "".join(re.findall(r"<table.*?</table>", page, re.S))
    for raw in ("client_h", "client_p", "predicted_by_rules", "lb_backend", "syn_retransmits",
                "loopback_evidence", "time_utc", "source_node"):
        assert raw not in tables, raw
    for readable in ("rules predict this", "LB sent it to", "evidence", "when (UTC)",
                     "µs after the first", "SNATed share"):
        assert readable in tables, readable
    assert ">55.0 %</td>" in tables  # 11 of 20 connections timed out
    assert ">0.0 %</td>" in tables   # SNATed share of the Local Service


def test_numpy_booleans_read_yes_no():
    import numpy as np

    from natlens.report.display import cell

    assert (cell(np.bool_(True)), cell(np.False_), cell(True)) == ("yes", "no", "yes")


def test_host_network_rows_are_labelled_in_the_snat_table(sample):
    import pandas as pd

    from natlens import report

    d = report.load(sample)
    assert "host_network" not in report.tables.snat(d).columns  # no host client: not shown
    d.snat = pd.concat([d.snat.assign(host_network=False), d.snat.assign(host_network=True)],
                       ignore_index=True)
    t = report.tables.snat(d)
    assert list(t["host_network"]) == [False, True]
    assert "host-network client" in report.table_html(t)


def test_cluster_ok_names_its_slow_path_in_the_banner_tables_and_remediation():
    from natlens import report
    from natlens.report.text import verdict_class

    d = report.load(SAMPLES / "cluster-ok")
    assert verdict_class(d.summary) == "verdict-warn"  # no failure, but a slow path: not green
    banner = report.text.banner(d)._repr_html_()
    assert "What the evidence cannot show." in banner and "nodes/node-1/any.pcap lost packets" in banner
    assert banner.index("What the evidence cannot show.") < banner.index("No loopback detected.")
    assert "the SYN-ACK took 574-759 ms" in banner
    q = report.tables.capture_quality(d)
    assert list(q["capture"]) == [c["file"] for c in d.summary["inputs"]["captures"]]
    assert q.set_index("capture").loc["nodes/node-1/any.pcap", "lost_acks"] == 3
    limits = report.text.capture_limits(d)._repr_html_()
    assert "nodes/node-1/any.pcap: 3 connection(s) lost the client&#x27;s handshake ACK" in limits
    p = report.tables.problems(d)
    assert set(p["kind"]) >= {"synack-delayed"}
    rem = report.text.remediation(d)._repr_html_()
    assert "No change is needed" not in rem and "node-1/any (cni0) -&gt; node-1/eth0" in rem


def test_unknown_outcomes_are_never_reported_as_none_failed(sample, tmp_path):
    import shutil

    from natlens import report
    from natlens.lab.damage import cut
    from natlens.report.text import verdict_class

    d0 = tmp_path / "cut"
    shutil.copytree(sample, d0)
    cut(d0 / "nodes" / "node-1" / "any.pcap", 0.3, mid_record=True)
    d = report.load(d0)
    c = d.summary["connections"]
    assert c["unknown"] >= 1
    page = report.text.banner(d)._repr_html_() + report.text.executive_summary(d)._repr_html_()
    assert "none of them failed" not in page and "None of the" not in page
    assert "cut short mid-record" in page and "is unknown" in page
    assert verdict_class(d.summary) == "verdict-bad"  # the loopbacks that did fail still show


def test_unreadable_bytes_show_in_the_quality_table(tmp_path):
    """A capture with records of impossible length: its quality row counts the bytes skipped."""
    from natlens import report
    from natlens.lab.damage import bad_lengths, copy_bundle

    d = copy_bundle(SAMPLES / "loopback-local", tmp_path / "b")
    bad_lengths(d / "nodes" / "node-1" / "any.pcap", 0.02, 7)
    data = report.load(d)
    q = report.tables.capture_quality(data).set_index("capture")
    skipped = next(c for c in data.summary["inputs"]["captures"] if c["file"] == "nodes/node-1/any.pcap")
    assert q.loc["nodes/node-1/any.pcap", "unreadable_bytes"] == skipped["skipped_bytes"]["bad-length"] > 0
    assert q.loc["nodes/node-2/eth0.pcap", "unreadable_bytes"] == 0
