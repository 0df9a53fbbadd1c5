"""Who is the originator and who the responder of each connection, as Zeek decides.

Why: every per-side figure (packets, bytes, history letter case, conn_state) is
relative to the originator. Zeek's rule: the sender of the first packet is the
originator, except that the roles are flipped (a ``^`` in the history) when that
packet is not a pure SYN and either is a SYN-ACK (we always flip on a first
SYN-ACK; Zeek only by port heuristics) or its source port is a likely server port
and its destination port is not (when both are, a TCP packet without SYN flips if
its source port is the lower).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natlens.connections.flows import Cut, Sorted

# Ports a server plausibly listens on (Zeek's likely_server_ports is built from
# its analyzers' ports; this is the same idea for the services seen in clusters).
LIKELY_SERVER_PORTS = frozenset(
    [1080, 1433, 1521, 1812, 2049, 2379, 2380, 3128, 3306, 3389, 4789, 5060, 5353, 5355,
     5432, 5672, 6081, 6379, 6443, 8000, 8008, 8080, 8443, 8888, 9000, 9090, 9200, 9300,
     9092, 10250, 11211, 15672, 27017]
)


def likely_server(port: np.ndarray) -> np.ndarray:
    """True for a port below 1024 or in LIKELY_SERVER_PORTS."""
    lut = np.zeros(65536, dtype=bool)
    lut[:1024] = True
    lut[list(LIKELY_SERVER_PORTS)] = True
    return lut[np.clip(port, 0, 65535)]


@dataclass(frozen=True)
class Roles:
    """Originator and responder endpoint of each connection; the side of each row."""

    flip: np.ndarray  # per connection: the first packet came from the responder ("^")
    orig_e: np.ndarray  # per connection: originator endpoint (address code << 16 | port)
    resp_e: np.ndarray  # per connection: responder endpoint
    is_orig: np.ndarray  # per row: sent by the originator
    d: np.ndarray  # per row: 0 originator, 1 responder (int64)


def roles(s: Sorted, c: Cut) -> Roles:
    """Zeek's originator/responder of each connection from its first packet (see module doc)."""
    f0 = c.starts
    sp0 = s.e_src[f0] & 0xFFFF
    dp0 = s.e_dst[f0] & 0xFFFF
    ls_s, ls_d = likely_server(sp0), likely_server(dp0)
    port_flip = ls_s & np.where(ls_d, c.tcp & ~s.syn[f0] & (sp0 < dp0), True)
    flip = ~s.syn_only[f0] & (s.synack[f0] | port_flip)
    orig_e = np.where(flip, s.e_dst[f0], s.e_src[f0])
    resp_e = np.where(flip, s.e_src[f0], s.e_dst[f0])
    is_orig = s.e_src == orig_e[c.conn]
    return Roles(flip=flip, orig_e=orig_e, resp_e=resp_e, is_orig=is_orig,
                 d=(~is_orig).astype(np.int64))
