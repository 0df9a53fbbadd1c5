"""A journey's outcome says only what the client's record shows (UDP idle is no timeout)."""

from __future__ import annotations

import pandas as pd
import pytest

from natlens.connections import connections
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.journeys import build_journeys

NONE = Inventory(nodes=pd.DataFrame(columns=NODE_COLUMNS), pods=pd.DataFrame(columns=POD_COLUMNS),
                 services=pd.DataFrame(columns=SERVICE_COLUMNS))


def _udp(t, src, sport, dst, dport, ip_id, h):
    return {"ts_ns": int(t * 1e9), "src": src, "dst": dst, "proto": 17, "sport": sport, "dport": dport,
            "ip_len": 48, "payload_len": 20, "ip_id": ip_id,
            "payload_hash": int.from_bytes(h.encode(), "big")}  # a uint64, as the packet table has it


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


def _syn_at(t, src, sport, dst, dport, isn, ip_id):
    return {"ts_ns": int(t * 1e9), "src": src, "dst": dst, "proto": 6, "sport": sport, "dport": dport,
            "tcp_flags": 0x02, "seq": isn, "ack": 0, "ip_len": 40, "payload_len": 0, "window": 100,
            "ip_id": ip_id}


def test_a_point_that_saw_only_a_late_retransmission_joins_the_journey():
    # the client's node sees SYNs at +0, +1, +3, +7, +15; the backend node only the one at +15
    client = pd.DataFrame([_syn_at(t, "10.0.0.1", 40000, "10.1.0.9", 80, 4242, i)
                           for i, t in enumerate((0.0, 1.0, 3.0, 7.0, 15.0))])
    backend = pd.DataFrame([_syn_at(15.0001, "10.0.0.1", 40000, "10.2.0.2", 30080, 4242, 4)])
    parts = [connections(df.assign(record=range(len(df))), node=node, capture=f"{node}/eth0",
                         capture_end_ns=int(40e9)) for node, df in (("n1", client), ("n2", backend))]
    j, rec, _ = build_journeys(pd.concat(parts, ignore_index=True), NONE, offsets={"n1": 0.0, "n2": 0.0})
    assert len(j) == 1 and j.at[0, "hops"] == 2
    # another connection that happens to reuse the ISN a minute later stays apart
    later = pd.DataFrame([_syn_at(75.0, "10.0.0.1", 40000, "10.2.0.2", 30080, 4242, 9)])
    parts.append(connections(later.assign(record=0), node="n2", capture="n2/any", capture_end_ns=int(90e9)))
    j, _, _ = build_journeys(pd.concat(parts, ignore_index=True), NONE, offsets={"n1": 0.0, "n2": 0.0})
    assert sorted(j["hops"]) == [1, 2]


def _build(*parts):
    conns = [connections(pd.DataFrame(rows).assign(record=range(len(rows))), node=node, capture=f"{node}/{label}",
                         capture_end_ns=int(5e9)) for node, label, rows in parts]
    return build_journeys(pd.concat(conns, ignore_index=True), NONE, offsets={"n1": 0.0, "n2": 0.0})[0]


def test_ipv6_udp_probes_of_two_clients_with_one_payload_stay_apart():
    probe = [_udp(1.0, "fd00::1", 5000, "fd00::53", 53, None, "same"),
             _udp(1.0001, "fd00::2", 6000, "fd00::53", 53, None, "same")]
    for p in probe:
        del p["ip_id"]
    j = _build(("n1", "eth0", probe))
    assert len(j) == 2 and sorted(j["client_h"]) == ["fd00::1", "fd00::2"]


def test_mid_stream_records_are_not_linked_on_the_ip_id_alone():
    def ack(t, src, sport, dst, dport):  # a bare ACK: no timestamp option, no payload
        return {"ts_ns": int(t * 1e9), "src": src, "dst": dst, "proto": 6, "sport": sport, "dport": dport,
                "tcp_flags": 0x10, "seq": 100, "ack": 200, "ip_len": 40, "payload_len": 0, "window": 100,
                "ip_id": 777}
    j = _build(("n1", "eth0", [ack(1.0, "10.0.0.1", 40000, "10.1.0.9", 80)]),
               ("n2", "eth0", [ack(1.2, "10.0.0.7", 41000, "10.2.0.2", 30080)]))
    assert len(j) == 2


@pytest.mark.parametrize("seen", ["client ACK", "server ACK only"])
def test_a_record_that_lost_its_syn_joins_its_journey_on_the_sequence_number(tmp_path, seen):
    # node-1's NIC saw only the client's ACK (SYN dropped by the capture) before the LB's DNAT;
    # node-2 saw the whole handshake after it: one journey, joined on seq = ISN + 1
    from analysis_helpers import pcap_file, tcp

    from natlens.findings import analyze

    node1, node2, vip = "198.18.0.11", "198.18.0.12", "198.19.0.10"
    isn, sisn, t = 1_000_000, 5_000_000, 1_795_675_200.0
    for n in ("node-1", "node-2"):
        (tmp_path / "nodes" / n).mkdir(parents=True)
    at_node1 = (tcp(node1, 40000, vip, 80, 0x10, isn + 1, sisn + 1, ip_id=11) if seen == "client ACK"
                else tcp(vip, 80, node1, 40000, 0x10, sisn + 1, isn + 1, ip_id=21))  # acks the client's ISN + 1
    pcap_file(tmp_path / "nodes" / "node-1" / "eth0.pcap", [(t + 0.0003, at_node1)])
    pcap_file(tmp_path / "nodes" / "node-2" / "eth0.pcap",
              [(t + 0.0001, tcp(node1, 40000, node2, 30080, 0x02, isn, ip_id=10)),
               (t + 0.0002, tcp(node2, 30080, node1, 40000, 0x12, sisn, isn + 1, ip_id=20)),
               (t + 0.0004, tcp(node1, 40000, node2, 30080, 0x10, isn + 1, sisn + 1, ip_id=11))])
    j = analyze(tmp_path).journeys
    assert len(j) == 1 and j.iloc[0]["hops"] == 2
