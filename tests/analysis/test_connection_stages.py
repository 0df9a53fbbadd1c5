"""Each stage of natlens.connections on a few hand-built packets.

The expected values come from the definitions the stages follow, not from running
them: Zeek's conn.log documentation (conn_state, history letters, byte counts),
Zeek's conn_state() and update_last_seq() logic for the cases the documentation
leaves open, Wireshark's tcp.analysis.initial_rtt, and the module docstrings for
natlens' own rules (cutting flows, capture-end versus timeout).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from natlens.connections.counters import count
from natlens.connections.ending import ending
from natlens.connections.fingerprints import fingerprints
from natlens.connections.flows import cut_connections, sort_flows
from natlens.connections.handshake import handshake
from natlens.connections.history import history, zero_windows
from natlens.connections.roles import roles
from natlens.connections.seqspace import content_gaps, payload_bytes, sequence_space
from natlens.connections.states import CLOSED, ESTABLISHED, RESET, closes, conn_states, final_state
from natlens.connections.usable import interface_copies, usable_packets
from natlens.vocab import ACK, END_CAPTURE, END_FIN, END_RST, END_TIMEOUT, FIN, PSH, RST, SYN

C, S = ("10.0.0.1", 40000), ("10.0.0.2", 80)  # client, server
ISN_C, ISN_S = 1000, 5000
SA, PA, FA, RA = SYN | ACK, PSH | ACK, FIN | ACK, RST | ACK


def pkt(t, src, dst, flags=0, seq=0, ack=0, plen=0, proto=6, **extra):
    """One packet-table row (time in seconds)."""
    row = {"capture": "x", "ts_ns": int(round(t * 1e9)), "src": src[0], "sport": src[1],
           "dst": dst[0], "dport": dst[1], "proto": proto, "tcp_flags": flags, "seq": seq,
           "ack": ack, "ip_len": 40 + plen, "payload_len": plen, "window": 100}
    row.update(extra)
    return row


def table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["record"] = range(len(df))
    return df


def opening(t=0.0):
    """SYN, SYN-ACK, ACK: client ISN 1000, server ISN 5000."""
    return [pkt(t, C, S, SYN, ISN_C), pkt(t + 0.010, S, C, SA, ISN_S, ISN_C + 1),
            pkt(t + 0.011, C, S, ACK, ISN_C + 1, ISN_S + 1)]


class Run:
    """Every stage on one table, in the order connections_with_index calls them."""

    def __init__(self, rows, capture_end_ns=None):
        self.packets = table(rows)
        self.u = usable_packets(self.packets)
        self.s = sort_flows(self.packets, self.u)
        self.c = cut_connections(self.s)
        self.r = roles(self.s, self.c)
        self.k = count(self.s, self.c, self.r)
        self.sq = sequence_space(self.s, self.c, self.r)
        self.bytes = payload_bytes(self.s, self.c, self.sq)
        self.gaps = content_gaps(self.s, self.c, self.r, self.sq)
        self.zero_win = zero_windows(self.s, self.c, self.r, self.sq)
        self.history = history(self.s, self.c, self.r, self.sq, self.zero_win, self.gaps).tolist()
        self.hs = handshake(self.s, self.c, self.r, self.k.t_first)
        self.cl = closes(self.s, self.c, self.r)
        self.state = conn_states(self.s, self.c, self.r, self.sq, self.cl, self.k, self.bytes,
                                 np.asarray(self.history)).tolist()
        end_ns = self.u.last_ns if capture_end_ns is None else capture_end_ns
        self.end = ending(self.c, self.cl, self.hs, self.k, end_ns, self.s.n).tolist()
        self.fp = fingerprints(self.packets, self.s, self.c, self.r)

    def names(self, e):
        return [(self.s.names[x >> 16], int(x & 0xFFFF)) for x in e]


# --- usable packets -------------------------------------------------------------------


def test_only_tcp_and_udp_with_ports_make_connections_the_rest_is_counted():
    rows = [pkt(0, C, S, SYN, ISN_C), pkt(0.1, C, S, proto=1, sport=None, dport=None),
            pkt(0.2, C, S, proto=17, sport=None, dport=None),  # a later fragment: no ports
            pkt(0.3, C, S, proto=132), pkt(0.4, C, S, proto=58, sport=None, dport=None)]
    u = usable_packets(table(rows))
    assert u.rows.tolist() == [0]
    assert u.skipped == {"icmp": 1, "no-ports": 1, "other-protocol": 1, "icmpv6": 1}
    assert u.last_ns == int(0.4e9)


def test_an_sll1_packet_repeated_unchanged_within_1ms_is_an_interface_copy():
    one = dict(linktype=113, ip_id=7, tsval=99)
    rows = [pkt(0, C, S, SYN, ISN_C, **one), pkt(0.0002, C, S, SYN, ISN_C, **one),  # copy
            pkt(0.3, C, S, SYN, ISN_C, **one),  # same headers 300 ms later: a retransmission
            pkt(0.3001, C, S, SYN, ISN_C, linktype=113, ip_id=8, tsval=99)]  # other IP ID
    assert interface_copies(table(rows)).tolist() == [False, True, False, False]
    sll2 = [dict(r, linktype=276) for r in rows]  # SLL2 names the interface: no guessing
    assert not interface_copies(table(sll2)).any()
    u = usable_packets(table(rows))
    assert u.rows.tolist() == [0, 2, 3] and u.skipped == {"interface-copy": 1}


# --- sorting into flows and cutting connections -----------------------------------------


def test_rows_are_sorted_by_time_within_a_flow():
    other = ("10.0.0.3", 40001)
    rows = [pkt(0.2, C, S, ACK, ISN_C + 1, ISN_S + 1), pkt(0.0, C, S, SYN, ISN_C),
            pkt(0.05, other, S, SYN, 7), pkt(0.1, S, C, SA, ISN_S, ISN_C + 1)]
    s = sort_flows(table(rows), usable_packets(table(rows)))
    c = cut_connections(s)
    assert c.nc == 2
    for i in range(c.nc):
        ts = s.ts[c.starts[i]:c.lasts[i] + 1]
        assert (np.diff(ts) >= 0).all()
    assert sorted(len(s.rows[c.conn == i]) for i in range(2)) == [1, 3]
    assert sorted(s.rows[c.conn == c.conn[s.rows.tolist().index(1)]].tolist()) == [0, 1, 3]


def test_a_new_isn_on_the_same_5tuple_is_a_new_connection_a_retransmitted_syn_is_not():
    rows = [pkt(0, C, S, SYN, ISN_C), pkt(1.0, C, S, SYN, ISN_C),  # retransmission
            pkt(5.0, C, S, SYN, 777777)]  # port reuse with a new ISN
    r = Run(rows)
    assert r.c.nc == 2
    assert r.k.orig_pkts.tolist() == [2, 1]


def test_udp_is_cut_after_60_s_of_silence():
    q, a = ("10.0.0.1", 53000), ("10.0.0.2", 53)
    rows = [pkt(0, q, a, proto=17, plen=20), pkt(0.01, a, q, proto=17, plen=80),
            pkt(59.0, q, a, proto=17, plen=20),  # 58.99 s later: same connection
            pkt(120.0, q, a, proto=17, plen=20)]  # 61 s later: a new one
    assert Run(rows).k.orig_pkts.tolist() == [2, 1]


def test_each_interface_and_vlan_is_its_own_record():
    rows = [dict(p, ifindex=i) for i in (3, 4) for p in opening()]
    rows += [dict(p, vlan=10) for p in opening(1.0)]
    r = Run(rows)
    assert r.c.nc == 3
    assert sorted(r.s.iface[r.c.starts].tolist()) == [-1, 3, 4]


# --- roles ----------------------------------------------------------------------------------


def test_the_sender_of_the_first_syn_is_the_originator_even_from_a_server_port():
    r = Run([pkt(0, S, C, SYN, ISN_C)])
    assert r.names(r.r.orig_e) == [S] and not r.r.flip.any()


@pytest.mark.parametrize("server", [S, ("10.0.0.2", 40001)])
def test_a_first_syn_ack_flips_the_roles(server):
    """Also from a port no heuristic knows (natlens' deliberate difference from Zeek)."""
    r = Run([pkt(0, server, C, SA, ISN_S, ISN_C + 1), pkt(0.001, C, server, ACK, ISN_C + 1, ISN_S + 1)])
    assert r.r.flip.tolist() == [True]
    assert r.names(r.r.orig_e) == [C] and r.names(r.r.resp_e) == [server]
    assert r.history == ["^hA"]


@pytest.mark.parametrize(("src", "dst", "flipped"), [
    (("10.0.0.2", 80), ("10.0.0.1", 40000), True),  # only the source is a likely server port
    (("10.0.0.1", 40000), ("10.0.0.2", 80), False),
    (("10.0.0.1", 40000), ("10.0.0.2", 40001), False),  # neither: first sender originates
    (("10.0.0.2", 443), ("10.0.0.1", 8080), True),  # both likely: natlens takes the lower one
    (("10.0.0.2", 8080), ("10.0.0.1", 443), False),
])
def test_midstream_tcp_roles_follow_likely_server_ports(src, dst, flipped):
    r = Run([pkt(0, src, dst, ACK, 10, 20), pkt(0.001, dst, src, ACK, 20, 10)])
    assert r.r.flip.tolist() == [flipped]
    assert r.names(r.r.orig_e) == [dst if flipped else src]


def test_udp_reply_first_from_a_server_port_flips():
    q, a = ("10.0.0.1", 53000), ("10.0.0.2", 53)
    r = Run([pkt(0, a, q, proto=17, plen=80)])
    assert r.names(r.r.orig_e) == [q] and r.history == ["^d"] and r.state == ["SHR"]


# --- counters ---------------------------------------------------------------------------------


def test_packets_and_ip_bytes_per_side_and_time_span():
    rows = opening() + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),
                        pkt(0.2, S, C, PA, ISN_S + 1, ISN_C + 101, plen=300)]
    k = Run(rows).k
    assert (k.orig_pkts.tolist(), k.resp_pkts.tolist()) == ([3], [2])
    assert (k.orig_ip_bytes.tolist(), k.resp_ip_bytes.tolist()) == ([40 * 3 + 100], [40 * 2 + 300])
    assert (k.t_first.tolist(), k.t_last.tolist()) == ([0], [int(0.2e9)])


# --- sequence space -----------------------------------------------------------------------------


def test_relative_sequence_numbers_start_at_the_isn_and_survive_wraparound():
    isn = 2**32 - 10
    rows = [pkt(0, C, S, SYN, isn), pkt(0.01, S, C, SA, ISN_S, (isn + 1) % 2**32),
            pkt(0.02, C, S, PA, (isn + 1) % 2**32, ISN_S + 1, plen=100),
            pkt(0.03, C, S, PA, (isn + 101) % 2**32, ISN_S + 1, plen=100)]
    r = Run(rows)
    client = r.r.is_orig
    assert r.sq.rel[client].tolist() == [0, 1, 101]  # Wireshark: SYN 0, first byte 1
    assert r.sq.end_rel[client].tolist() == [1, 101, 201]
    assert r.bytes[0].tolist() == [200]


def test_without_a_syn_the_first_byte_seen_is_relative_1():
    rows = [pkt(0, C, S, PA, 123456, 99, plen=50), pkt(0.1, C, S, PA, 123506, 99, plen=50)]
    r = Run(rows)
    assert r.sq.rel.tolist() == [1, 51]


def test_a_resent_segment_is_a_retransmission_an_extending_overlap_is_not():
    rows = opening() + [
        pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),  # bytes 1-100
        pkt(0.3, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),  # the same again: T
        pkt(0.4, C, S, PA, ISN_C + 51, ISN_S + 1, plen=100),  # 51-150: new bytes, not T
        pkt(0.5, C, S, PA, ISN_C + 21, ISN_S + 1, plen=10),  # 21-30, old: T
    ]
    r = Run(rows)
    assert r.sq.rxmit[r.r.is_orig].tolist() == [False, False, False, True, False, True]
    assert r.history == ["ShADT"]  # T once: the second is the 2nd, logged at the 10th
    assert r.bytes[0].tolist() == [150]


def test_payload_bytes_count_sequence_space_and_acks_not_captured_bytes():
    rows = opening() + [
        pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),
        # headers-only capture: 400 bytes on the wire, none captured
        pkt(0.2, S, C, PA, ISN_S + 1, ISN_C + 101, plen=400, caplen=54, wirelen=454),
        # the server's next 500 bytes were not captured at all; the client acks them
        pkt(0.3, C, S, ACK, ISN_C + 101, ISN_S + 901),
        pkt(0.4, C, S, FA, ISN_C + 101, ISN_S + 901),  # the FIN's sequence number is no byte
    ]
    r = Run(rows)
    assert (r.bytes[0].tolist(), r.bytes[1].tolist()) == ([100], [900])


def test_after_its_rst_an_endpoint_moves_its_sequence_space_no_more():
    rows = opening() + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),
                        pkt(0.2, C, S, RST, ISN_C + 101),
                        pkt(0.3, C, S, PA, ISN_C + 101, ISN_S + 1, plen=200)]
    r = Run(rows)
    assert r.sq.after_rst.tolist() == [False] * 5 + [True]
    assert r.bytes[0].tolist() == [100]


def test_udp_bytes_are_payload_lengths():
    q, a = ("10.0.0.1", 53000), ("10.0.0.2", 53)
    r = Run([pkt(0, q, a, proto=17, plen=20), pkt(0.01, a, q, proto=17, plen=80),
             pkt(0.02, q, a, proto=17, plen=5)])
    assert (r.bytes[0].tolist(), r.bytes[1].tolist()) == ([25], [80])
    assert r.history == ["Dd"] and r.state == ["SF"]


def test_an_ack_beyond_the_captured_data_is_a_gap_of_the_acked_side():
    rows = opening() + [
        pkt(0.1, S, C, PA, ISN_S + 1, ISN_C + 1, plen=100),  # server bytes 1-100, captured
        pkt(0.2, C, S, ACK, ISN_C + 1, ISN_S + 101),  # acks what was seen: no gap
        pkt(0.3, C, S, ACK, ISN_C + 1, ISN_S + 301),  # acks 200 bytes never seen: gap
    ]
    r = Run(rows)
    assert r.gaps.tolist() == [False] * 5 + [True]
    assert r.history == ["ShAdg"]  # the gap is in the server's (responder's) stream


def test_an_ack_on_a_fin_skips_silently():
    rows = opening() + [pkt(0.1, S, C, PA, ISN_S + 1, ISN_C + 1, plen=100),
                        pkt(0.3, C, S, FA, ISN_C + 1, ISN_S + 301)]
    r = Run(rows)
    assert not r.gaps.any() and r.history == ["ShAdF"]


def test_a_headers_only_segment_acked_is_a_gap():
    rows = opening() + [pkt(0.1, S, C, PA, ISN_S + 1, ISN_C + 1, plen=100, caplen=54, wirelen=154),
                        pkt(0.2, C, S, ACK, ISN_C + 1, ISN_S + 101)]
    assert Run(rows).history == ["ShAdg"]


# --- history ------------------------------------------------------------------------------------


def test_a_normal_connection_reads_ShADadFf():
    rows = opening() + [
        pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),
        pkt(0.11, S, C, ACK, ISN_S + 1, ISN_C + 101),
        pkt(0.2, S, C, PA, ISN_S + 1, ISN_C + 101, plen=300),
        pkt(0.21, C, S, ACK, ISN_C + 101, ISN_S + 301),  # a second pure ACK: no second A
        pkt(0.3, C, S, FA, ISN_C + 101, ISN_S + 301),
        pkt(0.31, S, C, FA, ISN_S + 301, ISN_C + 102),
        pkt(0.32, C, S, ACK, ISN_C + 102, ISN_S + 302),
    ]
    r = Run(rows)
    assert r.history == ["ShADadFf"]
    assert r.state == ["SF"] and r.end == [END_FIN]


def test_syn_repeats_only_at_a_new_sequence_number():
    same = [pkt(0, C, S, SYN, ISN_C), pkt(1, C, S, SYN, ISN_C)]
    assert Run(same).history == ["S"]
    # a second FIN at a new sequence number (more data came in between) is a second F
    rows = opening() + [pkt(0.1, C, S, FA, ISN_C + 1, ISN_S + 1),
                        pkt(0.2, C, S, FA, ISN_C + 1, ISN_S + 1, plen=10)]
    assert Run(rows).history == ["ShAFF"]


@pytest.mark.parametrize(("n", "letters"), [(1, "T"), (9, "T"), (10, "TT"), (99, "TT"), (100, "TTT")])
def test_retransmissions_are_logged_at_the_1st_10th_100th(n, letters):
    rows = opening() + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10)]
    rows += [pkt(0.2 + i * 0.001, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10) for i in range(n)]
    assert Run(rows).history == ["ShAD" + letters]


def test_zero_windows_are_scaled_and_not_counted_on_a_rst_or_after_the_peer_closed():
    rows = opening() + [pkt(0.1 + i * 0.01, C, S, ACK, ISN_C + 1, ISN_S + 1, window=0)
                        for i in range(10)]
    assert Run(rows).history == ["ShAWW"]
    rows = opening() + [pkt(0.1, S, C, FA, ISN_S + 1, ISN_C + 1),
                        pkt(0.2, C, S, ACK, ISN_C + 1, ISN_S + 2, window=0),  # peer closed
                        pkt(0.3, C, S, RST, ISN_C + 1, 0, window=0)]
    r = Run(rows)
    assert not r.zero_win.any() and r.history == ["ShAfR"]


def test_fin_with_rst_is_I_syn_with_fin_is_Q():
    assert Run(opening() + [pkt(0.1, C, S, FIN | RST, ISN_C + 1)]).history == ["ShAI"]
    assert Run([pkt(0, C, S, SYN | FIN, ISN_C)]).history == ["Q"]


# --- conn_state (Zeek's definitions) --------------------------------------------------------------


def _ack(t, src, dst, seq, ack, flags=ACK):
    return pkt(t, src, dst, flags, seq, ack)


STATES = {
    # attempt seen, no reply
    "S0": [pkt(0, C, S, SYN, ISN_C), pkt(1, C, S, SYN, ISN_C)],
    # established, not terminated
    "S1": opening() + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10)],
    # normal establishment and termination
    "SF": opening() + [_ack(0.1, C, S, ISN_C + 1, ISN_S + 1, FA), _ack(0.2, S, C, ISN_S + 1, ISN_C + 2, FA),
                       _ack(0.3, C, S, ISN_C + 2, ISN_S + 2)],
    # connection attempt rejected
    "REJ": [pkt(0, C, S, SYN, ISN_C), pkt(0.001, S, C, RA, 0, ISN_C + 1)],
    # established, close attempt by the originator, no reply from the responder
    "S2": opening() + [_ack(0.1, C, S, ISN_C + 1, ISN_S + 1, FA)],
    # established, close attempt by the responder, no reply from the originator
    "S3": opening() + [_ack(0.1, S, C, ISN_S + 1, ISN_C + 1, FA)],
    # established, originator aborted
    "RSTO": opening() + [pkt(0.1, C, S, RST, ISN_C + 1)],
    # established, responder aborted
    "RSTR": opening() + [pkt(0.1, S, C, RST, ISN_S + 1)],
    # originator sent a SYN then a RST, never a SYN-ACK from the responder
    "RSTOS0": [pkt(0, C, S, SYN, ISN_C), pkt(0.5, C, S, RST, ISN_C + 1)],
    # responder sent a SYN-ACK then a RST, never a SYN from the originator
    "RSTRH": [pkt(0, S, C, SA, ISN_S, ISN_C + 1), pkt(0.5, S, C, RST, ISN_S + 1)],
    # originator sent a SYN then a FIN, never a SYN-ACK ("half open")
    "SH": [pkt(0, C, S, SYN, ISN_C), pkt(0.5, C, S, FIN, ISN_C + 1)],
    # responder sent a SYN-ACK then a FIN, never a SYN from the originator
    "SHR": [pkt(0, S, C, SA, ISN_S, ISN_C + 1), pkt(0.5, S, C, FA, ISN_S + 1, ISN_C + 1)],
    # no SYN seen, just midstream traffic
    "OTH": [pkt(0, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10),
            pkt(0.1, S, C, ACK, ISN_S + 1, ISN_C + 11)],
}


@pytest.mark.parametrize("state", list(STATES))
def test_conn_state_follows_zeeks_definitions(state):
    assert Run(STATES[state]).state == [state]


def test_syn_synack_then_rst_from_the_client_is_rsto_not_rej():
    """The responder answered (SYN-ACK), so it was not rejected; the originator aborted,
    and with a SYN-ACK seen it is not RSTOS0 either (Zeek: a half-open scan of an open port)."""
    r = Run(opening()[:2] + [pkt(0.02, C, S, RST, ISN_C + 1)])
    assert r.state == ["RSTO"] and r.history == ["ShR"] and r.end == [END_RST]


def test_an_endpoint_is_reset_by_its_rst_unless_it_had_closed_and_so_had_its_peer():
    est = np.array([ESTABLISHED] * 5)
    my_fin = np.array([-1, 3, 3, 3, 7])  # the last: our FIN after our RST changes nothing
    my_rst = np.array([5, 5, 5, 5, 5])
    peer_fin = np.array([-1, -1, 4, 9, 9])  # the peer's FIN before / after our RST both count
    assert final_state(est, my_fin, my_rst, peer_fin).tolist() == [RESET, RESET, CLOSED, CLOSED,
                                                                   RESET]
    # the whole connection: both FINs, then a RST from the client, is a normal close
    rows = opening() + [_ack(0.1, C, S, ISN_C + 1, ISN_S + 1, FA), _ack(0.2, S, C, ISN_S + 1, ISN_C + 2, FA),
                        pkt(0.3, C, S, RST, ISN_C + 2)]
    r = Run(rows)
    assert r.state == ["SF"] and r.end == [END_FIN]


def test_a_missed_syn_still_establishes_but_an_ack_before_any_syn_is_midstream():
    """Zeek's machine: the originator's pure ACK after the responder's SYN-ACK establishes it;
    one before any SYN leaves it PARTIAL (midstream), so the pair is OTH, not S1."""
    missed = opening()[1:] + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10)]
    assert Run(missed).state == ["S1"]
    early = [pkt(0, C, S, ACK, ISN_C + 1, ISN_S + 1), pkt(0.01, S, C, SA, ISN_S, ISN_C + 1),
             pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10)]
    assert Run(early).state == ["OTH"]


def test_udp_states():
    q, a = ("10.0.0.1", 53000), ("10.0.0.2", 53)
    assert Run([pkt(0, q, a, proto=17, plen=20)]).state == ["S0"]
    assert Run([pkt(0, q, a, proto=17, plen=20), pkt(0.01, a, q, proto=17, plen=80)]).state == ["SF"]


# --- handshake ---------------------------------------------------------------------------------


def test_handshake_rtt_is_from_the_last_syn_before_the_synack_connect_from_the_first():
    rows = [pkt(0, C, S, SYN, ISN_C), pkt(1.0, C, S, SYN, ISN_C),  # one retransmission
            pkt(1.010, S, C, SA, ISN_S, ISN_C + 1), pkt(1.011, C, S, ACK, ISN_C + 1, ISN_S + 1),
            pkt(1.050, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100),
            pkt(1.100, S, C, PA, ISN_S + 1, ISN_C + 101, plen=500)]
    hs = Run(rows).hs
    assert hs.client_isn.tolist() == [ISN_C] and hs.server_isn.tolist() == [ISN_S]
    assert hs.established.tolist() == [True] and hs.syn_count.tolist() == [2]
    assert hs.syn_ts[0] == 0 and hs.synack_ts[0] == pytest.approx(1.010)
    assert hs.ack_ts[0] == pytest.approx(1.011)
    assert hs.handshake_rtt[0] == pytest.approx(0.011)  # Wireshark's initial_rtt
    assert hs.connect[0] == pytest.approx(1.011)
    assert hs.first_byte[0] == pytest.approx(1.100)


def test_the_handshake_ack_is_pure_when_it_carries_no_data_and_no_fin():
    data = pkt(0.012, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100)
    hs = Run(opening() + [data]).hs
    assert (hs.ack_pure.tolist(), hs.pure_ack_seen.tolist()) == ([True], [True])
    # the pure ACK lost: the data is taken for the handshake ACK, and no pure one came
    hs = Run(opening()[:2] + [data]).hs
    assert hs.established.tolist() == [True] and hs.ack_ts[0] == pytest.approx(0.012)
    assert (hs.ack_pure.tolist(), hs.pure_ack_seen.tolist()) == ([False], [False])
    # reordered: the data before the pure ACK of the SYN-ACK
    hs = Run(opening()[:2] + [pkt(0.0105, C, S, PA, ISN_C + 1, ISN_S + 1, plen=100), opening()[2]]).hs
    assert (hs.ack_pure.tolist(), hs.pure_ack_seen.tolist()) == ([False], [True])
    # a FIN acking the SYN-ACK is no pure ACK, nor is an ACK of the server's data
    fin = Run(opening()[:2] + [pkt(0.011, C, S, FA, ISN_C + 1, ISN_S + 1)]).hs
    assert (fin.ack_pure.tolist(), fin.pure_ack_seen.tolist()) == ([False], [False])
    later = Run(opening()[:2] + [data, pkt(0.02, S, C, PA, ISN_S + 1, ISN_C + 101, plen=10),
                                 pkt(0.021, C, S, ACK, ISN_C + 101, ISN_S + 11)]).hs
    assert later.pure_ack_seen.tolist() == [False]
    assert Run(opening()[:2]).hs.ack_pure.tolist() == [False]  # no ACK at all


def test_an_ack_that_does_not_ack_the_synack_does_not_establish():
    rows = opening()[:2] + [pkt(0.011, C, S, ACK, ISN_C + 1, ISN_S + 7)]
    hs = Run(rows).hs
    assert hs.established.tolist() == [False]
    assert np.isnan(hs.handshake_rtt[0]) and np.isnan(hs.connect[0]) and np.isnan(hs.ack_ts[0])


def test_without_a_syn_the_client_isn_comes_from_the_synack():
    rows = opening()[1:]
    hs = Run(rows).hs
    assert hs.client_isn.tolist() == [ISN_C] and hs.established.tolist() == [True]
    assert np.isnan(hs.handshake_rtt[0]) and np.isnan(hs.syn_ts[0])


# --- how it ended -------------------------------------------------------------------------------


def test_rst_unless_both_sides_had_sent_a_fin_before_it():
    fins = opening() + [_ack(0.1, C, S, ISN_C + 1, ISN_S + 1, FA), _ack(0.2, S, C, ISN_S + 1, ISN_C + 2, FA)]
    assert Run(fins + [pkt(0.3, C, S, RST, ISN_C + 2)]).end == [END_FIN]
    assert Run(fins[:-1] + [pkt(0.3, S, C, RST, ISN_S + 1)]).end == [END_RST]
    # the client's RST came before the server's FIN
    crossed = fins[:-1] + [pkt(0.15, C, S, RST, ISN_C + 2), fins[-1]]
    assert Run(crossed).end == [END_RST]
    assert Run(STATES["REJ"]).end == [END_RST]


def _ns(t):
    return int(round(t * 1e9))


def test_a_lone_syn_times_out_once_the_next_retransmission_is_overdue():
    one = [pkt(0, C, S, SYN, ISN_C)]  # next SYN due at 1 s, overdue after 1.25 s
    assert Run(one, capture_end_ns=_ns(1.2)).end == [END_CAPTURE]
    assert Run(one, capture_end_ns=_ns(1.3)).end == [END_TIMEOUT]
    two = [pkt(0, C, S, SYN, ISN_C), pkt(1.0, C, S, SYN, ISN_C)]  # next due 2 s after the last
    assert Run(two, capture_end_ns=_ns(1.0 + 2.4)).end == [END_CAPTURE]
    assert Run(two, capture_end_ns=_ns(1.0 + 2.6)).end == [END_TIMEOUT]


def test_an_open_connection_times_out_after_zeeks_inactivity_timeouts():
    est = opening() + [pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10)]
    assert Run(est, capture_end_ns=_ns(0.1 + 299)).end == [END_CAPTURE]
    assert Run(est, capture_end_ns=_ns(0.1 + 301)).end == [END_TIMEOUT]
    q, a = ("10.0.0.1", 53000), ("10.0.0.2", 53)
    udp = [pkt(0, q, a, proto=17, plen=20)]
    assert Run(udp, capture_end_ns=_ns(59)).end == [END_CAPTURE]
    assert Run(udp, capture_end_ns=_ns(61)).end == [END_TIMEOUT]


# --- NAT fingerprints ---------------------------------------------------------------------------


def test_fingerprints_are_the_originators_first_packet_and_first_payload():
    rows = opening()
    rows[0].update(ip_id=111, tsval=9001, direction="out")
    rows[1].update(ip_id=222, tsval=7000, direction="in")
    rows[2].update(ip_id=112, tsval=9002, direction="out")
    rows.append(pkt(0.1, C, S, PA, ISN_C + 1, ISN_S + 1, plen=10, ip_id=113, payload_hash=0xABC,
                    direction="out"))
    fp = Run(rows).fp
    assert fp.ip_id.tolist() == [111] and fp.tsval.tolist() == [9001]
    assert fp.direction.tolist() == ["out"] and fp.payload_hash.tolist() == [0xABC]


def test_no_fingerprint_when_the_originator_sent_nothing():
    rows = [pkt(0, S, C, SA, ISN_S, ISN_C + 1, ip_id=5, tsval=6, direction="in")]
    fp = Run(rows).fp
    assert fp.ip_id.tolist() == [-1] and fp.tsval.tolist() == [-1]
    assert fp.direction.tolist() == [None] and pd.isna(fp.payload_hash[0])
