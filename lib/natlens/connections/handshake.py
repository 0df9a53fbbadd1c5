"""The TCP three-way handshake of each connection as seen at this capture point.

Why: the client ISN is the key that joins one connection's records across NAT
(journeys), and handshake timings are the latency a client saw. Definitions:
``handshake_rtt`` is Wireshark's ``tcp.analysis.initial_rtt`` (the last SYN before
the SYN-ACK -> the originator's ACK of that SYN-ACK); ``connect`` is from the first
SYN to that ACK, SYN retransmissions included; ``first_byte`` is from the first SYN
(or the first packet, without a SYN) to the responder's first payload byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natlens._grouped import first_where, last_where, take
from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles
from natlens.connections.seqspace import M32


@dataclass(frozen=True)
class Handshake:
    """Per connection; times in float seconds (NaN: not seen), ISNs -1 when unknown."""

    client_isn: np.ndarray  # the originator's SYN seq, else the SYN-ACK's ack - 1
    server_isn: np.ndarray  # the responder's SYN-ACK seq
    syn_ts: np.ndarray  # the originator's first SYN
    synack_ts: np.ndarray  # the responder's first SYN-ACK
    ack_ts: np.ndarray  # the originator's ACK of that SYN-ACK
    ack_pure: np.ndarray  # that ACK was pure: no payload, no FIN (False also where not seen)
    pure_ack_seen: np.ndarray  # a pure ACK of the SYN-ACK seen, that one or a later one
    handshake_rtt: np.ndarray  # seconds
    connect: np.ndarray  # seconds
    first_byte: np.ndarray  # seconds
    syn_count: np.ndarray  # originator SYNs (int)
    established: np.ndarray  # SYN-ACK and its ACK both seen


def handshake(s: Sorted, c: Cut, r: Roles, t_first: np.ndarray) -> Handshake:
    """ISNs, handshake times and time to first byte of each connection (see module doc).

    The handshake ACK is the originator's first ACK (no SYN/RST), not before the
    SYN-ACK, acking exactly the server ISN + 1.
    """
    conn, nc, is_orig, ts = c.conn, c.nc, r.is_orig, s.ts
    o_syn = s.syn_only & is_orig
    f_syn = first_where(conn, o_syn, nc)
    syn_cnt = np.bincount(conn, weights=o_syn, minlength=nc).astype(np.int64)
    f_synack = first_where(conn, s.synack & ~is_orig, nc)
    server_isn = take(s.seq, f_synack, -1)
    client_isn = np.where(f_syn >= 0, take(s.seq, f_syn, -1),
                          np.where(f_synack >= 0, (take(s.ack, f_synack, 0) - 1) & M32, -1))
    synack_ts = take(ts, f_synack, -1)
    seen_synack = f_synack[conn] >= 0
    hs_ack = is_orig & s.ackf & ~s.syn & ~s.rst & seen_synack & (ts >= synack_ts[conn]) & \
        (s.ack == ((server_isn[conn] + 1) & M32))
    f_ack = first_where(conn, hs_ack, nc)
    l_syn = last_where(conn, o_syn & seen_synack & (ts <= synack_ts[conn]), nc)
    syn_ts = take(ts, f_syn, -1)
    ack_ts = take(ts, f_ack, -1)
    established = (f_synack >= 0) & (f_ack >= 0)
    f_data = first_where(conn, ~is_orig & (s.plen > 0) & ~s.rst, nc)
    t0 = np.where(f_syn >= 0, syn_ts, t_first)
    return Handshake(
        client_isn=client_isn, server_isn=server_isn,
        syn_ts=np.where(f_syn >= 0, syn_ts / 1e9, np.nan),
        synack_ts=np.where(f_synack >= 0, synack_ts / 1e9, np.nan),
        ack_ts=np.where(f_ack >= 0, ack_ts / 1e9, np.nan),
        ack_pure=(f_ack >= 0) & (take(s.plen, f_ack, 1) == 0) & ~take(s.fin, f_ack, True),
        pure_ack_seen=first_where(conn, hs_ack & ~s.fin & (s.plen == 0), nc) >= 0,
        handshake_rtt=np.where(established & (l_syn >= 0), (ack_ts - take(ts, l_syn, 0)) / 1e9, np.nan),
        connect=np.where(established & (f_syn >= 0), (ack_ts - syn_ts) / 1e9, np.nan),
        first_byte=np.where(f_data >= 0, (take(ts, f_data, 0) - t0) / 1e9, np.nan),
        syn_count=syn_cnt, established=established)
