"""ICMP errors attached to the connection record they are about (natlens.connections.icmp).

Expected values come from the rule in the icmp module's docstring (the quoted 5-tuple is
one side's, the quoted TCP seq lies in that side's sequence space, the error comes between
the record's first packet and 120 s after its last; the latest record wins), written out
by hand for each table, not from running the stage.
"""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import ipv4, pcap_file, tcp

from natlens.capture import read_capture
from natlens.connections import COLUMNS, connections_with_index
from natlens.connections.icmp import ICMP_COLUMNS
from natlens.findings import analyze
from natlens.vocab import ACK, PSH, SYN

C, S = ("10.0.0.1", 40000), ("10.96.0.10", 80)  # client, Service VIP
NODE = "10.0.0.254"  # the node whose REJECT rule answers
ISN_C, ISN_S = 1000, 5000
T0 = 1_700_000_000.0
BASE = [c for c in COLUMNS if c not in ICMP_COLUMNS]


def pkt(t, src, dst, flags=0, seq=0, ack=0, plen=0, proto=6, **extra):
    """One TCP/UDP packet-table row (time in seconds after T0)."""
    row = {"capture": "x", "ts_ns": int(round((T0 + t) * 1e9)), "src": src[0], "sport": src[1],
           "dst": dst[0], "dport": dst[1], "proto": proto, "tcp_flags": flags if proto == 6 else None,
           "seq": seq if proto == 6 else None, "ack": ack if proto == 6 else None,
           "ip_len": 40 + plen, "payload_len": plen, "window": 100}
    row.update(extra)
    return row


def err(t, quoted_src, quoted_dst, seq=None, proto=6, frm=NODE, to=None, kind=3, code=3, v6=False, **extra):
    """An ICMP (ICMPv6) error from `frm` quoting a packet quoted_src -> quoted_dst."""
    row = {"capture": "x", "ts_ns": int(round((T0 + t) * 1e9)), "src": frm, "dst": to or quoted_src[0],
           "proto": 58 if v6 else 1, "ip_len": 56, "icmp_type": kind, "icmp_code": code,
           "icmp_orig_src": quoted_src[0], "icmp_orig_dst": quoted_dst[0], "icmp_orig_proto": proto,
           "icmp_orig_sport": quoted_src[1], "icmp_orig_dport": quoted_dst[1], "icmp_orig_seq": seq}
    row.update(extra)
    return row


def table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["record"] = range(len(df))
    for c in ("sport", "dport", "tcp_flags", "seq", "ack", "icmp_type", "icmp_code", "icmp_orig_proto",
              "icmp_orig_sport", "icmp_orig_dport", "icmp_orig_seq", "payload_len"):
        if c in df:
            df[c] = df[c].astype("Int64")
    return df


def run(rows):
    """connections_with_index of the rows, with the accounting identity checked."""
    pk = table(rows)
    conns, idx = connections_with_index(pk)
    assert len(pk) == int((idx >= 0).sum()) + sum(conns.attrs["skipped"].values())
    return pk, conns, idx


def rejected_syn():
    """A client's SYN and its retransmission, both answered with port unreachable."""
    return [pkt(0.0, C, S, SYN, ISN_C), err(0.0003, C, S, ISN_C),
            pkt(1.0, C, S, SYN, ISN_C), err(1.0003, C, S, ISN_C)]


def established(t=0.0, isn_c=ISN_C, isn_s=ISN_S):
    """Handshake, a 100-byte request and a 50-byte response."""
    return [pkt(t, C, S, SYN, isn_c), pkt(t + 0.01, S, C, SYN | ACK, isn_s, isn_c + 1),
            pkt(t + 0.011, C, S, ACK, isn_c + 1, isn_s + 1),
            pkt(t + 0.02, C, S, PSH | ACK, isn_c + 1, isn_s + 1, plen=100),
            pkt(t + 0.03, S, C, PSH | ACK, isn_s + 1, isn_c + 101, plen=50)]


def test_port_unreachable_quoting_the_syn_is_attached():
    pk, conns, idx = run(rejected_syn())
    (r,) = conns.itertuples()
    assert r.icmp_ts == pytest.approx(T0 + 0.0003, abs=1e-6)
    assert (r.icmp_type, r.icmp_code, r.icmp_src, r.icmp_quotes, r.icmp_errors) == (3, 3, NODE, "orig", 2)
    assert str(conns["icmp_type"].dtype) == "Int16" and str(conns["icmp_code"].dtype) == "Int16"
    assert list(conns.columns) == COLUMNS and COLUMNS[-len(ICMP_COLUMNS):] == ICMP_COLUMNS
    # the index gives both errors the record's row; they are not counted as skipped ICMP
    assert idx.tolist() == [0, 0, 0, 0]
    assert conns.attrs["skipped"] == {}


def test_counters_are_not_changed_by_the_errors():
    """Zeek's counters describe the connection's own packets: the errors are only about it."""
    _, with_icmp, _ = run(rejected_syn())
    _, without, _ = run([p for p in rejected_syn() if p["proto"] == 6])
    pd.testing.assert_frame_equal(with_icmp[BASE], without[BASE], check_exact=True)
    assert (with_icmp.loc[0, "orig_pkts"], with_icmp.loc[0, "resp_pkts"], with_icmp.loc[0, "history"],
            with_icmp.loc[0, "conn_state"]) == (2, 0, "S", "S0")
    assert without.loc[0, "icmp_errors"] == 0 and np.isnan(without.loc[0, "icmp_ts"])
    assert pd.isna(without.loc[0, "icmp_type"]) and without.loc[0, "icmp_quotes"] is None
    assert without.loc[0, "icmp_src"] is None


def test_error_quoting_the_responders_packet_says_resp():
    # a router on the way back says the server's response could not be delivered to the client
    rows = established() + [err(0.031, S, C, ISN_S + 1, frm="10.0.0.253", to=S[0], kind=3, code=1)]
    _, conns, idx = run(rows)
    (r,) = conns.itertuples()
    assert (r.icmp_quotes, r.icmp_type, r.icmp_code, r.icmp_src, r.icmp_errors) == ("resp", 3, 1, "10.0.0.253", 1)
    assert idx[-1] == 0


@pytest.mark.parametrize(("offset", "attached"), [
    (0, True),  # the SYN itself
    (1 + 100, True),  # the FIN after the 100 request bytes
    (100 + 2, True),  # the end of the space: ISN + orig_bytes + 2
    (100 + 3, False),  # one past it
    (2**31, False),  # nowhere near
    (-1, False),  # just before the ISN
])
def test_quoted_seq_must_lie_in_that_sides_space(offset, attached):
    rows = established() + [err(0.05, C, S, (ISN_C + offset) % 2**32)]
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == int(attached)
    assert idx[-1] == (0 if attached else -1)
    assert conns.attrs["skipped"] == ({} if attached else {"icmp": 1})


def test_sequence_space_wraps_modulo_2_32():
    isn = 2**32 - 10
    rows = established(isn_c=isn) + [err(0.05, C, S, 90)]  # 100 bytes after isn: past the wrap
    _, conns, _ = run(rows)
    assert conns.loc[0, "icmp_errors"] == 1


@pytest.mark.parametrize(("offset", "attached"), [(1, True), (50 + 2, True), (50 + 3, False), (1000, False)])
def test_responders_space_is_checked_too(offset, attached):
    """The responder's space: from server_isn to server_isn + resp_bytes (50) + 2."""
    rows = established() + [err(0.05, S, C, ISN_S + offset, frm="10.0.0.253", to=S[0])]
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == int(attached) and idx[-1] == (0 if attached else -1)


def test_unknown_isn_or_seq_skips_the_seq_check():
    # mid-stream: no SYN, no SYN-ACK, so neither ISN is known; any quoted seq fits
    rows = [pkt(0.0, C, S, PSH | ACK, 77_000, 1, plen=10), err(0.01, C, S, 123)]
    _, conns, _ = run(rows)
    assert pd.isna(conns.loc[0, "client_isn"]) and conns.loc[0, "icmp_errors"] == 1
    # a quote cut after the ports (4 transport bytes): no seq to check
    rows = [pkt(0.0, C, S, SYN, ISN_C), err(0.01, C, S, None)]
    _, conns, _ = run(rows)
    assert conns.loc[0, "icmp_errors"] == 1


@pytest.mark.parametrize("quoted", [
    ((C[0], C[1] + 1), S),  # another client port
    (C, (S[0], 443)),  # another destination port
    (("10.0.0.9", C[1]), S),  # another client
])
def test_a_different_tuple_is_not_attached(quoted):
    rows = rejected_syn()[:1] + [err(0.0003, quoted[0], quoted[1], ISN_C)]
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == 0 and idx[-1] == -1
    assert conns.attrs["skipped"] == {"icmp": 1}


def test_a_different_protocol_is_not_attached():
    rows = [pkt(0.0, C, S, proto=17, plen=20), err(0.001, C, S, proto=6, seq=0)]
    _, conns, idx = run(rows)
    assert conns.loc[0, "proto"] == "udp" and idx[-1] == -1
    rows[1]["icmp_orig_proto"] = 17
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == 1 and idx[-1] == 0


@pytest.mark.parametrize(("t", "attached"), [(-0.001, False), (0.0, True), (1.0 + 119.9, True),
                                              (1.0 + 120.1, False)])
def test_time_window_from_first_packet_to_120_s_after_the_last(t, attached):
    rows = [pkt(0.0, C, S, SYN, ISN_C), pkt(1.0, C, S, SYN, ISN_C), err(t, C, S, ISN_C)]
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == int(attached)
    assert idx[-1] == (0 if attached else -1)


def test_reused_tuple_attaches_to_the_right_record():
    """Two connections on one 5-tuple (the second SYN carries a new ISN): the seq picks the
    first one's error; the second one's goes to the latest record running at its time."""
    rows = established(0.0) + established(10.0, isn_c=900_000, isn_s=700_000) + [
        err(10.5, C, S, 900_000 + 1), err(10.6, C, S, ISN_C + 1)]
    pk, conns, idx = run(rows)
    assert conns["ts"].tolist() == pytest.approx([T0, T0 + 10.0], abs=1e-6)
    assert conns["icmp_errors"].tolist() == [1, 1]
    assert idx[-2:].tolist() == [1, 0]
    assert conns.loc[0, "icmp_ts"] == pytest.approx(T0 + 10.6, abs=1e-6)
    # UDP has no seq: both records fit (the first ended < 120 s before); the latest wins
    udp = [pkt(0.0, C, S, proto=17, plen=8), pkt(70.0, C, S, proto=17, plen=8),
           err(70.001, C, S, proto=17)]
    _, conns, idx = run(udp)
    assert len(conns) == 2 and conns["icmp_errors"].tolist() == [0, 1] and idx[-1] == 1


def test_the_first_error_describes_the_record():
    rows = rejected_syn()
    rows[3].update(icmp_type=3, icmp_code=13, src="10.0.0.250")  # the retransmission: admin prohibited
    _, conns, _ = run(rows[::-1])  # table order is not time order: the latest error comes first
    assert (conns.loc[0, "icmp_code"], conns.loc[0, "icmp_src"]) == (3, NODE)
    assert conns.loc[0, "icmp_ts"] == pytest.approx(T0 + 0.0003, abs=1e-6)


def test_icmpv6_error_leaves_the_icmpv6_reason():
    c6, s6 = ("fd00::1", 40000), ("fd00:96::10", 80)
    rows = [pkt(0.0, c6, s6, SYN, ISN_C), err(0.001, c6, s6, ISN_C, frm="fd00::fe", v6=True, kind=1, code=4),
            err(0.002, c6, s6, ISN_C + 9, frm="fd00::fe", v6=True, kind=1, code=4)]  # out of the space
    _, conns, idx = run(rows)
    assert (conns.loc[0, "icmp_type"], conns.loc[0, "icmp_code"], conns.loc[0, "icmp_errors"]) == (1, 4, 1)
    assert idx.tolist() == [0, 0, -1] and conns.attrs["skipped"] == {"icmpv6": 1}


def test_echo_and_errors_without_a_record_stay_in_not_in_connections():
    rows = [pkt(0.0, C, S, SYN, ISN_C),
            {"capture": "x", "ts_ns": int(T0 * 1e9) + 5, "src": C[0], "dst": NODE, "proto": 1,
             "ip_len": 84, "icmp_type": 8, "icmp_code": 0}]
    _, conns, idx = run(rows)
    assert idx.tolist() == [0, -1] and conns.attrs["skipped"] == {"icmp": 1}
    # a table whose only packets are ICMP errors: no record, every error counted
    _, conns, idx = run([err(0.0, C, S, ISN_C), err(0.1, C, S, ISN_C)])
    assert conns.empty and list(conns.columns) == COLUMNS and conns.attrs["skipped"] == {"icmp": 2}


def test_interface_prefers_the_record_on_the_errors_interface():
    """An SLL2 `any` capture: each interface's copy of the connection is its own record;
    each copy of the error belongs to the record on its interface."""
    rows = [pkt(0.0, C, S, SYN, ISN_C, ifindex=5), pkt(0.00001, C, S, SYN, ISN_C, ifindex=2),
            err(0.0003, C, S, ISN_C, ifindex=5)]
    _, conns, idx = run(rows)
    assert conns["iface"].tolist() == [5, 2] and idx[-1] == 0
    assert conns["icmp_errors"].tolist() == [1, 0]


def test_sll1_interface_copies_of_an_error_count_once():
    """Linux cooked v1 names no interface: an error repeated unchanged within 1 ms is one
    error (its repeats are interface copies, as for TCP), though both are about the record."""
    lt = {"linktype": 113, "ip_id": 7}
    rows = [pkt(0.0, C, S, SYN, ISN_C, linktype=113, ip_id=1), err(0.0003, C, S, ISN_C, **lt),
            err(0.00031, C, S, ISN_C, **lt)]
    _, conns, idx = run(rows)
    assert conns.loc[0, "icmp_errors"] == 1 and idx.tolist() == [0, 0, -1]
    assert conns.attrs["skipped"] == {"interface-copy": 1}


def _syn(seq: int) -> bytes:
    return tcp(C[0], C[1], S[0], S[1], SYN, seq)


def _unreachable(quote: bytes, frm: str = NODE) -> bytes:
    return ipv4(frm, C[0], 1, struct.pack("!BBHI", 3, 3, 0, 0) + quote)


def test_from_a_pcap_and_in_the_analysis(tmp_path):
    """End to end: the capture layer's quote, the record's columns, and summary.json's
    accounting, with an error on another capture of the node that is about nothing there."""
    node = tmp_path / "bundle" / "nodes" / "node-1"
    node.mkdir(parents=True)
    pcap_file(node / "eth0.pcap", [(T0, _syn(ISN_C)), (T0 + 0.0002, _unreachable(_syn(ISN_C))),
                                   (T0 + 0.5, _unreachable(_syn(ISN_C + 5000)))])  # another seq
    pcap_file(node / "veth1.pcap", [(T0 + 0.0002, _unreachable(_syn(ISN_C)))])  # no record here
    pk = read_capture(node / "eth0.pcap").packets
    conns, idx = connections_with_index(pk)
    assert (conns.loc[0, "icmp_errors"], conns.loc[0, "icmp_quotes"]) == (1, "orig")
    assert idx.tolist() == [0, 0, -1]
    a = analyze(tmp_path / "bundle")
    caps = {c["file"]: c for c in a.summary()["inputs"]["captures"]}
    assert caps["nodes/node-1/eth0.pcap"]["not_in_connections"] == {"icmp": 1}
    assert caps["nodes/node-1/veth1.pcap"]["not_in_connections"] == {"icmp": 1}
    assert caps["nodes/node-1/veth1.pcap"]["connections"] == 0
    (rec,) = a.connections.itertuples()
    assert (rec.capture, rec.icmp_errors, rec.icmp_src, rec.icmp_type) == ("node-1/eth0", 1, NODE, 3)
    hops = a.journey_hops(a.journeys["journey"].iloc[0])  # the ICMP error among the journey's hops
    assert len(hops) == 2 and hops.loc[0, "flags"] == "S" and hops.loc[1, "flags"] == ""
    assert hops.loc[1, "note"].startswith(f"ICMP port unreachable from {NODE} to ")
    assert " about " in hops.loc[1, "note"]
