"""Zeek's conn_state of each connection, from its endpoints' TCP states.

Why: conn_state is how Zeek users read a connection at a glance (S0: a SYN and
nothing back; REJ: refused; SF: normal close), and journeys use it for outcomes.
Each endpoint's state follows Zeek's machine from the order of its control packets
(INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET), and the
pair of final states maps to Zeek's documented conn_state values:

S0 attempt seen, no reply; S1 established, not terminated; SF normal establishment
and termination; REJ attempt rejected; S2 / S3 established, close attempt by the
originator / responder only (no reply from the other); RSTO / RSTR established,
the originator / responder aborted (RST); RSTOS0 the originator sent a SYN then a
RST, never a SYN-ACK from the responder; RSTRH the responder sent a SYN-ACK then a
RST, never a SYN from the originator; SH the originator sent a SYN then a FIN, no
SYN-ACK ("half open"); SHR the responder sent a SYN-ACK then a FIN, no SYN from the
originator; OTH no SYN seen, just midstream traffic.
UDP: SF both sides sent, S0 only the originator, SHR only the responder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens._grouped import first_where, take
from natlens.connections.counters import Counters
from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles
from natlens.connections.seqspace import SeqSpace
from natlens.vocab import ACK, FIN, RST, SYN

# Zeek endpoint states.
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)


@dataclass(frozen=True)
class Closes:
    """Per connection: the sorted row of each side's first FIN and first RST (-1: none)."""

    fin_o: np.ndarray
    fin_r: np.ndarray
    rst_o: np.ndarray
    rst_r: np.ndarray


def closes(s: Sorted, c: Cut, r: Roles) -> Closes:
    """Each side's first FIN and first RST."""
    return Closes(fin_o=first_where(c.conn, s.fin & r.is_orig, c.nc),
                  fin_r=first_where(c.conn, s.fin & ~r.is_orig, c.nc),
                  rst_o=first_where(c.conn, s.rst & r.is_orig, c.nc),
                  rst_r=first_where(c.conn, s.rst & ~r.is_orig, c.nc))


def opening_states(s: Sorted, c: Cut, r: Roles, sq: SeqSpace) -> tuple[np.ndarray, np.ndarray]:
    """Per connection: (originator, responder) state after the opening, before any FIN/RST.

    Originator: its first packet a pure SYN -> SYN_SENT (ESTABLISHED once the responder
    sent a SYN), a SYN-ACK -> SYN_ACK_SENT, a pure ACK after the responder's SYN ->
    ESTABLISHED, anything else PARTIAL. Responder: ESTABLISHED if its first packet
    (not counting pure ACKs to a pure SYN) is a SYN, INACTIVE if it sent nothing else,
    else PARTIAL.
    """
    conn, nc = c.conn, c.nc
    fo, fr = sq.first_row_cd[0::2], sq.first_row_cd[1::2]
    fo_flags = take(s.flags, fo, 0)
    o_syn_only = (fo >= 0) & ((fo_flags & (SYN | ACK)) == SYN)
    o_synack = (fo >= 0) & ((fo_flags & (SYN | ACK)) == (SYN | ACK))
    pure_ack0 = s.ackf & ~s.syn & ~s.fin & ~s.rst & (s.plen == 0)
    r_sig = first_where(conn, ~r.is_orig & ~(pure_ack0 & o_syn_only[conn]), nc)
    r_sig_syn = (r_sig >= 0) & s.syn[np.maximum(r_sig, 0)]
    r_open = np.where(fr < 0, INACTIVE, np.where(r_sig_syn, ESTABLISHED,
                                                 np.where(r_sig < 0, INACTIVE, PARTIAL)))
    f_r_syn = first_where(conn, ~r.is_orig & s.syn, nc)
    o_ack_first = (fo >= 0) & ((fo_flags & ACK) != 0) & ((fo_flags & (SYN | FIN | RST)) == 0) & \
        (f_r_syn >= 0) & (f_r_syn < np.maximum(fo, 0))
    o_open = np.where(fo < 0, INACTIVE, np.where(
        o_syn_only, np.where(f_r_syn >= 0, ESTABLISHED, SYN_SENT),
        np.where(o_synack, SYN_ACK_SENT, np.where(o_ack_first, ESTABLISHED, PARTIAL))))
    return o_open, r_open


def final_state(opening: np.ndarray, my_fin: np.ndarray, my_rst: np.ndarray,
                peer_fin: np.ndarray) -> np.ndarray:
    """One endpoint's last state (rows of its first FIN/RST and the peer's first FIN, -1: none).

    CLOSED after its FIN, RESET after its RST; a FIN after its RST changes nothing,
    and a RST after its FIN leaves it CLOSED when the peer sent a FIN too (before or
    after that RST).
    """
    st = np.where(my_fin >= 0, CLOSED, opening)
    closed_first = (my_fin >= 0) & (my_rst > my_fin)
    peer_closed = (peer_fin >= 0) & (peer_fin < my_rst)
    reset = (my_rst >= 0) & ~(closed_first & peer_closed)
    back = closed_first & (peer_fin > my_rst)
    return np.where(reset & ~back, RESET, st)


def conn_states(s: Sorted, c: Cut, r: Roles, sq: SeqSpace, cl: Closes, k: Counters,
                bytes_: tuple[np.ndarray, np.ndarray], history: np.ndarray) -> np.ndarray:
    """Per connection: Zeek's conn_state (see module doc) from the endpoints' final states."""
    o_open, r_open = opening_states(s, c, r, sq)
    os_ = final_state(o_open, cl.fin_o, cl.rst_o, cl.fin_r)
    rs_ = final_state(r_open, cl.fin_r, cl.rst_r, cl.fin_o)
    osz, rsz = bytes_
    o_in = (os_ == INACTIVE) | (os_ == PARTIAL)
    r_in = (rs_ == INACTIVE) | (rs_ == PARTIAL)
    rstos0 = pd.Series(history).str.match(r"^\^?S[^HAFGIQ]*R").to_numpy()
    state = np.select(
        [rs_ == RESET,
         os_ == RESET,
         (rs_ == CLOSED) & (os_ == CLOSED),
         os_ == CLOSED,
         rs_ == CLOSED,
         (os_ == SYN_SENT) & (rs_ == INACTIVE),
         (os_ == ESTABLISHED) & (rs_ == ESTABLISHED)],
        [np.where((os_ == SYN_SENT) | (os_ == SYN_ACK_SENT) | ((os_ == RESET) & (osz == 0) & (rsz == 0)),
                  "REJ", np.where(o_in, "RSTRH", "RSTR")),
         np.where(r_in & rstos0, "RSTOS0", "RSTO"),
         "SF",
         np.where(r_in, "SH", "S2"),
         np.where(o_in, "SHR", "S3"),
         "S0",
         "S1"],
        "OTH")
    udp_state = np.where(k.orig_pkts > 0, np.where(k.resp_pkts > 0, "SF", "S0"),
                         np.where(k.resp_pkts > 0, "SHR", "OTH"))
    return np.where(c.tcp, state, udp_state)
