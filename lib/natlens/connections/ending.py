"""How each connection ended as seen at this capture point: rst, fin, timeout or capture-end.

Why: a capture that stopped while a connection was still retrying must not read as
a failure (journeys call that outcome "unknown"), and a SYN that got no answer
long enough is a timed-out connect. Rules, first match wins: ``rst`` a RST came,
unless both sides had sent a FIN before it; ``fin`` either side sent a FIN;
``timeout`` silent, before the capture ended, for longer than the next SYN
retransmission was due (a SYN-only attempt: Linux's initial RTO of 1 s, doubled per
retry, + 25 %) or than Zeek's inactivity timeout (300 s TCP, 60 s UDP; for UDP that
is only going idle, not a failure); else ``capture-end``.
"""

from __future__ import annotations

import numpy as np

from natlens.connections.counters import Counters
from natlens.connections.flows import UDP_INACTIVITY_S, Cut
from natlens.connections.handshake import Handshake
from natlens.connections.states import Closes
from natlens.vocab import END_CAPTURE, END_FIN, END_RST, END_TIMEOUT

TCP_INACTIVITY_S = 300.0  # Zeek tcp_inactivity_timeout
SYN_RTO_S = 1.0  # Linux initial SYN retransmission timeout; doubles per retry
SYN_RTO_SLACK = 1.25  # a retransmission is overdue 25 % after it was due


def silence_limit_ns(c: Cut, hs: Handshake, k: Counters) -> np.ndarray:
    """Per connection: how long it may be silent before it has timed out (ns).

    After n SYNs and nothing back the next SYN is due 1 s x 2**(n-1) after the last.
    """
    syn_cnt = hs.syn_count
    syn_wait = np.where(syn_cnt > 0,
                        SYN_RTO_SLACK * SYN_RTO_S * np.power(2.0, np.maximum(syn_cnt - 1, 0)), 0)
    syn_only = c.tcp & ~hs.established & (k.resp_pkts == 0) & (syn_cnt > 0)
    return np.where(syn_only, syn_wait, np.where(c.tcp, TCP_INACTIVITY_S, UDP_INACTIVITY_S)) * 1e9


def ending(c: Cut, cl: Closes, hs: Handshake, k: Counters, capture_end_ns: int,
           n_rows: int) -> np.ndarray:
    """Per connection: "rst" | "fin" | "timeout" | "capture-end" (see module doc).

    ``capture_end_ns`` is when the capture stopped; ``n_rows`` the number of sorted
    packet rows (the rows in ``cl`` are below it).
    """
    any_rst = np.minimum(np.where(cl.rst_o >= 0, cl.rst_o, n_rows),
                         np.where(cl.rst_r >= 0, cl.rst_r, n_rows))
    both_fin_before = (cl.fin_o >= 0) & (cl.fin_r >= 0) & (np.maximum(cl.fin_o, cl.fin_r) < any_rst)
    idle_ns = capture_end_ns - k.t_last
    return np.where((any_rst < n_rows) & ~both_fin_before, END_RST,
                    np.where((cl.fin_o >= 0) | (cl.fin_r >= 0), END_FIN,
                             np.where(idle_ns > silence_limit_ns(c, hs, k), END_TIMEOUT, END_CAPTURE)))
