"""Capture quality as evidence, and a verdict that says first what the evidence cannot show.

Hand-built capture entries, records and journeys: each rule of natlens.findings.quality
and the verdict's wording when outcomes are unknown (never "none failed" then).
"""

from __future__ import annotations

import pandas as pd

from natlens.findings.quality import capture_quality, unknown_outcomes
from natlens.findings.verdict import make_verdict

T0 = 1_795_675_192.0  # 2026-11-26 06:39:52 UTC
NO_LOGS: dict = {}  # no collect-node.log


def cap(label, first, last, *, unread=0, dropped=None):
    node = label.split("/")[0]
    return {"node": node, "file": f"nodes/{label}.pcap", "label": label, "first_ts": first,
            "last_ts": last, "unread_bytes": unread, "dropped": dropped}


def record(journey, capture, *, end="fin", history="ShADadFf", rtt=0.001, pure=True):
    return {"journey": journey, "capture": capture, "end": end, "history": history, "proto": "tcp",
            "handshake_rtt": rtt, "ack_pure": pure, "pure_ack_seen": pure}


def journeys(*rows):
    """(id, outcome, loopback, client_node, ts) rows."""
    return pd.DataFrame([{"journey": j, "outcome": o, "loopback": lb, "client_node": n, "lb_backend": "node-2",
                          "ts": ts, "established": o == "established"} for j, o, lb, n, ts in rows])


def test_a_capture_that_ends_early_and_cut_short_says_so_and_names_the_journeys_it_cut():
    inputs = [cap("node-1/any", T0, T0 + 2.0, unread=84), cap("node-1/eth0", T0, T0 + 6.0),
              cap("node-2/eth0", T0 + 0.1, T0 + 6.0)]
    recs = pd.DataFrame([record("J0", "node-1/any", end="capture-end", history="S"),
                         record("J0", "node-1/eth0", end="timeout", history="S"),
                         record("J1", "node-1/any"), record("J1", "node-1/eth0")])
    j = journeys(("J0", "unknown", "yes", "node-1", T0 + 1.9), ("J1", "established", "no", "node-1", T0 + 0.5),
                 ("J2", "established", "no", "node-1", T0 + 3.0))
    q = capture_quality(inputs, NO_LOGS, j, recs, {})
    assert [x["file"] for x in q] == [c["file"] for c in inputs]
    any_q = q[0]
    assert any_q["cut_short"] and any_q["ends_early_s"] == 4.0 and any_q["starts_late_s"] == 0.0
    # J0 was cut there with its outcome unknown; J2 began after its last packet
    assert any_q["cut_records"] == 1 and any_q["journeys_affected"] == ["J0", "J2"]
    assert any(x.startswith("nodes/node-1/any.pcap is cut short") for x in any_q["limits"])
    assert ("nodes/node-1/any.pcap ends 4.0 s before the last capture, before 1 connection (J2) of node-1 "
            "that other captures saw") in any_q["limits"]
    assert q[1]["limits"] == [] and q[1]["journeys_affected"] == []
    assert q[2]["starts_late_s"] == 0.1 and q[2]["limits"] == []  # 0.1 s is not late
    said = unknown_outcomes(j, q)
    assert said == ("the outcome of 1 of 3 connections is unknown because nodes/node-1/any.pcap ends at "
                    "06:39:54 UTC, 4.0 s before the other captures, cut short mid-record while 1 of them was "
                    "still open")


def test_drops_gaps_and_lost_acks_are_counted_per_capture():
    inputs = [cap("node-1/any", T0, T0 + 5, dropped=184), cap("node-1/eth0", T0, T0 + 5)]
    # J0's pure ACK is missing at two interfaces of the any capture (it took the data for it)
    recs = pd.DataFrame([record("J0", "node-1/any", rtt=0.214, pure=False),
                         record("J0", "node-1/any", rtt=0.2141, pure=False), record("J0", "node-1/eth0", rtt=0.0027),
                         record("J1", "node-1/any", history="ShADgadFf"), record("J1", "node-1/eth0")])
    j = journeys(("J0", "established", "no", "node-1", T0), ("J1", "established", "no", "node-1", T0 + 1))
    q = capture_quality(inputs, NO_LOGS, j, recs, {})
    assert q[0]["dropped"] == {"pcapng": 184, "collect_log": None}
    assert (q[0]["lost_acks"], q[0]["tcp_gaps"]) == (1, 1)
    assert q[0]["journeys_affected"] == ["J0", "J1"]
    assert (q[1]["lost_acks"], q[1]["tcp_gaps"], q[1]["journeys_affected"]) == (0, 0, [])
    assert "nodes/node-1/any.pcap: the capturing host dropped 184 packets (pcapng interface statistics)" \
        in q[0]["limits"]
    assert unknown_outcomes(j, q) is None


def test_a_late_capture_affects_the_journeys_of_its_node_before_it_started():
    inputs = [cap("node-1/eth0", T0, T0 + 9), cap("node-2/eth0", T0 + 4, T0 + 9)]
    j = journeys(("J0", "established", "no", "node-1", T0 + 1), ("J1", "established", "no", "node-1", T0 + 5))
    q = capture_quality(inputs, NO_LOGS, j, pd.DataFrame([record("J0", "node-1/eth0")]), {})
    assert q[1]["starts_late_s"] == 4.0 and q[1]["journeys_affected"] == ["J0"]  # J0's backend is node-2
    assert q[1]["limits"] == ["nodes/node-2/eth0.pcap starts 4.0 s after the first capture, after 1 connection "
                              "(J0) of node-2 that other captures saw had begun"]
    assert q[0]["limits"] == []


def test_a_quiet_capture_whose_last_packet_is_early_is_not_called_short():
    # a pcap does not say when tcpdump stopped: without a journey of its node after it, nothing is wrong
    inputs = [cap("node-1/eth0", T0, T0 + 9), cap("node-2/eth0", T0, T0 + 1)]
    j = journeys(("J0", "established", "no", "node-1", T0 + 0.5), ("J1", "established", "no", "node-1", T0 + 5))
    j["lb_backend"] = ["node-2", "node-1"]
    q = capture_quality(inputs, NO_LOGS, j, pd.DataFrame([record("J0", "node-2/eth0")]), {})
    assert q[1]["ends_early_s"] == 8.0 and q[1]["limits"] == [] and q[1]["journeys_affected"] == []


def test_clock_offsets_are_applied_before_comparing_capture_windows():
    inputs = [cap("node-1/eth0", T0, T0 + 9), cap("node-2/eth0", T0 + 2.5, T0 + 11.5)]
    q = capture_quality(inputs, NO_LOGS, journeys(), pd.DataFrame(columns=list(record("J", "c"))),
                        {"node-2": 2.5})
    assert [(x["starts_late_s"], x["ends_early_s"]) for x in q] == [(0.0, 0.0), (0.0, 0.0)]


def snat_row(**kw):
    row = {"service": "198.19.0.10:80/tcp", "source_node": "node-1", "policy": "Local", "connections": 3,
           "snat": 0, "ratio": 0.0, "unknown_snat": 0, "loopback": 2, "loopback_failed": 0, "failed": 0}
    row.update(kw)
    return pd.DataFrame([row])


def test_loopbacks_of_unknown_outcome_never_read_as_none_failed():
    j = journeys(("J0", "unknown", "yes", "node-1", T0), ("J1", "unknown", "yes", "node-1", T0 + 1),
                 ("J2", "established", "no", "node-1", T0 + 2))
    q = [dict(cap("node-1/any", T0, T0 + 1.5, unread=10), starts_late_s=0.0, ends_early_s=3.0, cut_short=True,
              dropped={"pcapng": None, "collect_log": None}, cut_records=2, tcp_gaps=0, lost_acks=0, journeys_affected=["J0", "J1"], journeys_cut=["J0"],
              journeys_after=["J1"],
              journeys_before=[], limits=[])]
    v = make_verdict(j, snat_row(), quality=q)
    assert "none of them failed" not in v["headline"] and "none failed" not in v["headline"]
    assert v["headline"] == ("2 of 3 connections were load-balancer loopbacks (sent back to their own node); "
                             "the outcome of 2 of them is unknown")
    assert v["evidence"] == ("The outcome of 2 of 3 connections is unknown because nodes/node-1/any.pcap "
                             "ends at 06:39:53 UTC, 3.0 s before the other captures, cut short mid-record while "
                             "1 of them was still open; nodes/node-1/any.pcap ends at 06:39:53 UTC, 3.0 s before "
                             "the other captures, cut short mid-record, before 1 of them began.")
    assert "the mechanism's prediction, not an observation" in v["root_cause"]


def test_no_failure_with_unknown_outcomes_is_not_all_established():
    j = journeys(("J0", "unknown", "no", "node-1", T0), ("J1", "established", "no", "node-1", T0 + 1))
    v = make_verdict(j, snat_row(loopback=0), quality=[])
    assert v["headline"] == ("1 of 2 connections were established and the outcome of 1 is unknown; no "
                             "load-balancer loopback seen")
    assert v["root_cause"].startswith("The captures do not show how 1 connection ended: it may have failed; none "
                                      "of the other 1 did.")
    assert v["evidence"] == "The outcome of 1 of 2 connections is unknown: no capture point shows how they ended."


def test_clean_evidence_has_no_evidence_statement():
    j = journeys(("J0", "established", "no", "node-1", T0))
    v = make_verdict(j, snat_row(loopback=0), quality=[])
    assert v["evidence"] is None and v["headline"].startswith("All 1 connections were established")


def test_a_client_node_without_captures_is_said_first_and_hedges_the_headline():
    from natlens.findings.quality import blind_spots

    j = journeys(("J0", "established", "no", "node-1", T0), ("J1", "established", "no", "node-1", T0 + 1))
    assert blind_spots(j, []) == []
    said = blind_spots(j, ["node-1", "node-3"])
    assert said[0].startswith("node-1 has no capture, yet it is the client node of 2 connections seen elsewhere")
    assert said[1] == "No capture from node-3: what happened on it is seen only where the other nodes' captures show it."
    v = make_verdict(j, snat_row(loopback=0), quality=[], uncaptured=["node-1"])
    assert v["evidence"].startswith("node-1 has no capture")
    assert v["headline"].endswith("node-1, the clients' node, has no capture, so loopbacks to it cannot be seen")
    assert make_verdict(j, snat_row(loopback=0), quality=[], uncaptured=["node-3"])["headline"] == (
        "All 2 connections were established; no load-balancer loopback seen")


def test_a_failure_whose_loopback_is_unknown_is_not_read_as_another_cause():
    j = journeys(("J0", "timed out", "yes", "node-1", T0), ("J1", "timed out", "unknown", "node-1", T0 + 1),
                 ("J2", "established", "no", "node-1", T0 + 2))
    v = make_verdict(j, snat_row(loopback=1, loopback_failed=1), quality=[])
    assert v["headline"].startswith("2 of 3 connections failed: 1 load-balancer loopback; the loopbacks are "
                                    "node-1's connections")
    assert "whether the other 1 failed connection was a loopback is unknown" in v["headline"]


def test_a_lossy_capture_is_named_as_lossy_not_as_ending_early():
    q = [dict(cap("node-1/eth0", T0, T0 + 9), starts_late_s=0.0, ends_early_s=0.0, cut_short=False, cut_records=1,
              dropped={"pcapng": None, "collect_log": None}, tcp_gaps=3, lost_acks=0, journeys_affected=["J0"], journeys_cut=["J0"], journeys_after=[],
              journeys_before=[], limits=[])]
    said = unknown_outcomes(journeys(("J0", "unknown", "no", "node-1", T0)), q)
    assert said == ("the outcome of 1 of 1 connections is unknown because nodes/node-1/eth0.pcap lost packets and "
                    "ends at 06:40:01 UTC with 1 of them still open there (their last packets may be among "
                    "those it lost)")


def test_unreadable_bytes_name_the_time_they_cover_and_the_journeys_there():
    """A capture that skipped bytes after an impossible record length: the span's journeys
    are affected (its own record that overlaps it, and this node's journey other captures
    saw start in it, which left no record here at all); one outside is not."""
    dmg = cap("node-1/any", T0, T0 + 6.0)
    dmg.update(skipped_bytes={"bad-length": 4096},
               damaged=[{"at": 1000, "bytes": 4096, "after_ns": int((T0 + 1.0) * 1e9),
                         "until_ns": int((T0 + 2.0) * 1e9)}])
    inputs = [dmg, cap("node-1/eth0", T0, T0 + 6.0)]
    recs = pd.DataFrame([{**record("J0", "node-1/any", end="capture-end", history="S"), "ts": T0 + 0.5,
                          "last_ts": T0 + 1.2},
                         {**record("J2", "node-1/any"), "ts": T0 + 3.0, "last_ts": T0 + 3.1},
                         {**record("J1", "node-1/eth0"), "ts": T0 + 1.5, "last_ts": T0 + 1.6}])
    j = journeys(("J0", "unknown", "no", "node-1", T0 + 0.5), ("J1", "established", "no", "node-1", T0 + 1.5),
                 ("J2", "established", "no", "node-1", T0 + 3.0))
    q = capture_quality(inputs, NO_LOGS, j, recs, {})
    d = q[0]
    assert d["damaged_bytes"] == 4096 and d["journeys_damaged"] == ["J0", "J1"]
    assert d["damaged"] == [{"after_ts": T0 + 1.0, "until_ts": T0 + 2.0, "bytes": 4096}]
    assert set(d["journeys_affected"]) >= {"J0", "J1"} and "J2" not in d["journeys_affected"]
    assert ("nodes/node-1/any.pcap: 4,096 bytes with impossible record lengths were skipped (one place, "
            "between 06:39:53.000 and 06:39:54.000 UTC, node clock): the packets in them are lost; "
            "2 connections (J0, J1) were open there") in d["limits"]
    assert q[1]["damaged_bytes"] == 0 and q[1]["journeys_damaged"] == []
    assert "holds unreadable bytes (impossible record lengths, skipped) where 1 of them was open" in \
        unknown_outcomes(j, q)
