"""Per-side packet and IP-byte counts and the first and last packet time of each connection.

Why: Zeek's ``orig_pkts``/``resp_pkts`` and ``orig_ip_bytes``/``resp_ip_bytes``
count every packet each side sent and its IP total length, whatever its content;
``ts`` and ``duration`` come from the first and last packet (of either side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles


@dataclass(frozen=True)
class Counters:
    """Per connection: packets and IP bytes of each side, first and last packet time (ns)."""

    orig_pkts: np.ndarray
    resp_pkts: np.ndarray
    orig_ip_bytes: np.ndarray
    resp_ip_bytes: np.ndarray
    t_first: np.ndarray
    t_last: np.ndarray


def count(s: Sorted, c: Cut, r: Roles) -> Counters:
    """Packets and IP total lengths per side, and the time span, of each connection."""
    o, nc = r.is_orig, c.nc
    return Counters(
        orig_pkts=np.bincount(c.conn, weights=o, minlength=nc).astype(np.int64),
        resp_pkts=np.bincount(c.conn, weights=~o, minlength=nc).astype(np.int64),
        orig_ip_bytes=np.bincount(c.conn, weights=s.ip_len * o, minlength=nc).astype(np.int64),
        resp_ip_bytes=np.bincount(c.conn, weights=s.ip_len * ~o, minlength=nc).astype(np.int64),
        t_first=s.ts[c.starts], t_last=s.ts[c.lasts])
