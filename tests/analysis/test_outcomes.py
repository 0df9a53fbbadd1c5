"""A journey's outcome says only what the client's record shows (UDP idle is no timeout)."""

from __future__ import annotations

import pandas as pd

from natlens.connections import connections
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.journeys import build_journeys

NONE = Inventory(nodes=pd.DataFrame(columns=NODE_COLUMNS), pods=pd.DataFrame(columns=POD_COLUMNS),
                 services=pd.DataFrame(columns=SERVICE_COLUMNS))


def _udp(t, src, sport, dst, dport, ip_id, h):
    return {"ts_ns": int(t * 1e9), "src": src, "dst": dst, "proto": 17, "sport": sport, "dport": dport,
            "ip_len": 48, "payload_len": 20, "ip_id": ip_id, "payload_hash": h}


def _syn(t, ip_id):
    return {"ts_ns": int(t * 1e9), "src": "10.0.0.1", "dst": "10.0.0.2", "proto": 6, "sport": 40000,
            "dport": 80, "tcp_flags": 0x02, "seq": 7, "ack": 0, "ip_len": 40, "payload_len": 0,
            "window": 100, "ip_id": ip_id}


def _journeys(rows, end_s):
    df = pd.DataFrame(rows)
    df["record"] = range(len(df))
    c = connections(df, node="n1", capture="n1/eth0", capture_end_ns=int(end_s * 1e9))
    return build_journeys(c, NONE)[0].sort_values("client_p").reset_index(drop=True)


def test_udp_answered_then_idle_is_answered_not_timed_out():
    rows = [_udp(0.0, "10.0.0.1", 5555, "10.0.0.53", 53, 1, "q1"),
            _udp(0.001, "10.0.0.53", 53, "10.0.0.1", 5555, 2, "r1"),
            _udp(0.0, "10.0.0.1", 5556, "10.0.0.53", 53, 3, "q2")]
    j = _journeys(rows, 100.0)  # both silent for 100 s: the records' end is "timeout"
    assert j["outcome"].tolist() == ["answered", "unanswered"]
    assert not j["outcome_evidence"].str.contains("SYN").any()
    assert "1 packet(s) out, 1 back" in j.at[0, "outcome_evidence"]
    # the capture ended a second later: whether the second is answered is not known
    assert _journeys(rows, 1.0)["outcome"].tolist() == ["answered", "unknown"]


def test_syn_retransmitted_until_the_capture_ended_is_not_timed_out():
    # SYN, retransmission 1 s later, capture stops 1 s after that (the next was due at +2 s)
    j = _journeys([_syn(0.0, 1), _syn(1.0, 2)], 2.0)
    assert j["outcome"].tolist() == ["unknown"]
    assert "unknown (capture ended)" in j.at[0, "outcome_evidence"]
    # silent past the next retransmission: the record's end is "timeout", the journey timed out
    assert _journeys([_syn(0.0, 1), _syn(1.0, 2)], 6.0)["outcome"].tolist() == ["timed out"]
