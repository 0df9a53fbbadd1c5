"""Each endpoint's TCP sequence space: relative sequence numbers, retransmissions, acks,
payload bytes as Zeek computes them, and content gaps.

Why: Zeek's ``orig_bytes``/``resp_bytes`` come from sequence numbers, not from the
bytes captured (a headers-only capture still counts them), and its 'T' (retransmission)
and 'G' (gap) history letters are statements about sequence space; a customer checks
our records against Zeek's. All figures are relative to the endpoint's ISN: its SYN's
sequence number, or without a SYN its first packet's sequence number - 1, so that the
first payload byte is at 1, as in Wireshark's relative sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natlens._grouped import first_where, grouped_cummax
from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles

M32 = np.int64(0xFFFFFFFF)
_NEVER = -(1 << 34)  # below every relative sequence number: "no value yet"


def signed32(x: np.ndarray) -> np.ndarray:
    """A difference of 32-bit sequence numbers as a signed value (wraparound-safe)."""
    x = x & M32
    return x - ((x >= (1 << 31)).astype(np.int64) << 32)


@dataclass(frozen=True)
class SeqSpace:
    """Per row and per endpoint ((connection, side) ``cd = 2 * conn + d``) sequence figures."""

    cd: np.ndarray  # per row: its endpoint
    first_row_cd: np.ndarray  # per endpoint: its first row (-1: the side sent nothing)
    rel: np.ndarray  # per row: relative sequence number
    end_rel: np.ndarray  # per row: relative sequence number after the segment
    after_rst: np.ndarray  # per row: the sender already sent a RST (Zeek ignores its seq)
    rxmit: np.ndarray  # per row: a retransmission (payload that adds no new sequence space)
    ack_rel: np.ndarray  # per row: ack relative to the peer's ISN
    ack_ok: np.ndarray  # per row: the ack counts (ACK flag, no RST, after the peer's first packet)


def sequence_space(s: Sorted, c: Cut, r: Roles) -> SeqSpace:
    """Relative sequence numbers and acks, Zeek's retransmissions, rows after the sender's RST.

    A segment occupies its payload plus one for SYN and one for FIN (a RST's payload
    does not count). After an endpoint's first RST its packets no longer move its
    sequence space, as in Zeek.
    """
    cd = c.conn * 2 + r.d
    o2 = np.argsort(cd, kind="stable")  # endpoint order, time order within one
    cd2 = cd[o2]
    ncd = c.nc * 2
    first_cd = first_where(cd2, np.ones(s.n, dtype=bool), ncd)  # index into o2 order
    has_cd = first_cd >= 0
    first_row_cd = np.where(has_cd, o2[np.maximum(first_cd, 0)], -1)
    f = np.maximum(first_row_cd, 0)
    start_seq = np.where(s.syn[f], s.seq[f], s.seq[f] - 1)
    seg_len = s.plen + s.syn + s.fin - np.where(s.rst, s.plen, 0)
    rel = signed32(s.seq - start_seq[cd])
    end_rel = rel + seg_len
    first_rst_cd = first_where(cd2, s.rst[o2], ncd)
    rank = np.empty(s.n, dtype=np.int64)
    rank[o2] = np.arange(s.n)  # position within o2 (time order within cd)
    frr = first_rst_cd[cd]
    after_rst = (frr >= 0) & (rank > frr)
    is_first = np.zeros(s.n, dtype=bool)  # in o2 order
    is_first[first_cd[has_cd]] = True
    rxmit = np.empty(s.n, dtype=bool)
    rxmit[o2] = _retransmissions(s, o2, cd2, is_first, end_rel, after_rst)
    # acks of an endpoint's data come from its peer, after the endpoint's first packet
    peer_cd = c.conn * 2 + (1 - r.d)
    ack_rel = signed32(s.ack - start_seq[peer_cd])
    peer_first_row = first_row_cd[peer_cd]
    ack_ok = s.ackf & ~s.rst & (peer_first_row >= 0) & (np.arange(s.n) >= peer_first_row)
    return SeqSpace(cd=cd, first_row_cd=first_row_cd, rel=rel, end_rel=end_rel,
                    after_rst=after_rst, rxmit=rxmit, ack_rel=ack_rel, ack_ok=ack_ok)


def _retransmissions(s: Sorted, o2: np.ndarray, cd2: np.ndarray, is_first: np.ndarray,
                     end_rel: np.ndarray, after_rst: np.ndarray) -> np.ndarray:
    """In endpoint order o2: TCP payload ending at or before the highest sequence number the
    endpoint sent earlier (at least 1, its ISN + 1); not its first packet, a SYN or a RST."""
    cm = grouped_cummax(np.where(after_rst, _NEVER, end_rel)[o2], cd2)
    prev_max = np.empty(s.n, dtype=np.int64)
    prev_max[0] = 0
    prev_max[1:] = cm[:-1]
    prev_max = np.where(is_first, 1, np.maximum(prev_max, 1))
    return (s.plen[o2] > 0) & ~s.rst[o2] & ~s.syn[o2] & ~after_rst[o2] & s.is_tcp[o2] & \
        (end_rel[o2] <= prev_max) & ~is_first


def payload_bytes(s: Sorted, c: Cut, sq: SeqSpace) -> tuple[np.ndarray, np.ndarray]:
    """Per connection: (orig_bytes, resp_bytes). TCP as Zeek: the highest sequence number an
    endpoint sent or its peer acked, less the SYN's and the FIN's; UDP: the payload lengths."""
    ncd = c.nc * 2
    last_rel = np.zeros(ncd, dtype=np.int64)
    np.maximum.at(last_rel, sq.cd, np.where(sq.after_rst, 0, sq.end_rel))
    acked = np.zeros(ncd, dtype=np.int64)
    peer_cd = sq.cd ^ 1
    np.maximum.at(acked, peer_cd[sq.ack_ok], sq.ack_rel[sq.ack_ok])
    fin_cnt = np.bincount(sq.cd, weights=s.fin, minlength=ncd)
    size = np.maximum(last_rel, acked)
    size = np.where(size > 0, size - 1, 0)
    size = np.where((fin_cnt > 0) & (size > 0), size - 1, size)
    udp_bytes = np.bincount(sq.cd, weights=s.plen, minlength=ncd).astype(np.int64)
    return (np.where(c.tcp, size[0::2], udp_bytes[0::2]),
            np.where(c.tcp, size[1::2], udp_bytes[1::2]))


def content_gaps(s: Sorted, c: Cut, r: Roles, sq: SeqSpace) -> np.ndarray:
    """Per row: an ack beyond what the capture holds of the peer's data (Zeek's 'G' gap).

    Zeek's reassembler keeps a point up to which an endpoint's data was delivered
    (payload fully captured) or skipped; an ack beyond it is a content gap, except
    acks on FIN/RST packets, which skip silently. On a headers-only capture every
    ack of new data is a gap.
    """
    is_orig, conn = r.is_orig, c.conn
    whole = (s.caplen < 0) | (s.wirelen < 0) | (s.caplen >= s.wirelen)
    delivered = ((s.plen > 0) | s.fin) & whole & ~s.rst & ~sq.after_rst
    o_dend = grouped_cummax(np.where(is_orig & s.is_tcp & delivered, sq.end_rel, 1), conn)
    r_dend = grouped_cummax(np.where(~is_orig & s.is_tcp & delivered, sq.end_rel, 1), conn)
    # acks of the originator's data come from the responder, and vice versa
    o_ack = grouped_cummax(np.where(~is_orig & sq.ack_ok, sq.ack_rel, _NEVER), conn)
    r_ack = grouped_cummax(np.where(is_orig & sq.ack_ok, sq.ack_rel, _NEVER), conn)
    prev = np.where(is_orig, np.roll(r_ack, 1), np.roll(o_ack, 1))
    prev[c.new] = _NEVER
    point = np.maximum(np.where(is_orig, r_dend, o_dend), prev)
    return sq.ack_ok & ~s.fin & ~s.rst & (sq.ack_rel > point)
