"""NAT-surviving fingerprints of each connection's first originator packet.

Why: NAT rewrites addresses and ports but keeps the IP ID, the TCP timestamp value
and the payload, so they pair the copies of one connection across capture points
when there is no handshake to join on (UDP has no ISN; a capture may miss a SYN).
``orig_dir`` says whether the originator's first packet came in or went out here.
``orig_ttl`` is that packet's TTL (IPv6: hop limit): every router, and a node
forwarding a pod's packet, takes one off, so on a node's NIC it tells a packet the
node sent itself from one it forwarded (natlens.journeys.hostnet). ``orig_seq`` is its
TCP sequence number, which NAT keeps too: where the capture missed the SYN, it is the
client's ISN + 1 + the bytes sent before, and joins the record to its journey;
``resp_ack``, the ack number of the responder's first ACK, does the same for a record
that holds only the server's packets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens._grouped import first_where
from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles
from natlens.connections.usable import column


@dataclass(frozen=True)
class Fingerprints:
    """Per connection; -1 / None / NA where the originator sent nothing (or no payload)."""

    ip_id: np.ndarray  # IP ID of the originator's first packet (-1: none)
    tsval: np.ndarray  # its TCP timestamp value (-1: none)
    payload_hash: pd.api.extensions.ExtensionArray  # UInt64: hash of the originator's first payload (NA: none)
    direction: np.ndarray  # object: "in" / "out" of the originator's first packet, or None
    ttl: np.ndarray  # its TTL / hop limit (-1: none)
    seq: np.ndarray  # its TCP sequence number (-1: none, or not TCP)
    resp_ack: np.ndarray  # the ack number of the responder's first ACK (-1: none)


def fingerprints(packets: pd.DataFrame, s: Sorted, c: Cut, r: Roles) -> Fingerprints:
    """IP ID, TSval, TTL, TCP sequence number and direction of the originator's first packet,
    hash of its first payload."""
    f_o_row = first_where(c.conn, r.is_orig, c.nc)
    first = s.rows[np.maximum(f_o_row, 0)]
    seen = f_o_row >= 0
    f_o_data = first_where(c.conn, r.is_orig & (s.plen > 0), c.nc)
    hash_col = packets.get("payload_hash")
    hashes, no_hash = np.zeros(c.nc, np.uint64), np.ones(c.nc, bool)
    if hash_col is not None and (f_o_data >= 0).any():
        sel = f_o_data >= 0
        got = hash_col.iloc[s.rows[f_o_data[sel]]]
        hashes[sel] = got.fillna(0).to_numpy(np.uint64)
        no_hash[sel] = got.isna().to_numpy()
    # UInt64, never object: a hash of 2^63 or more is kept exactly (and Parquet can write it)
    orig_hash = pd.arrays.IntegerArray(hashes, no_hash)
    dir_col = packets.get("direction")
    orig_dir = np.full(c.nc, None, dtype=object)
    if dir_col is not None and seen.any():
        vals = dir_col.iloc[s.rows[f_o_row[seen]]].astype(object).to_numpy()
        orig_dir[seen] = np.where(pd.isna(vals), None, vals)
    return Fingerprints(
        ip_id=np.where(seen, column(packets, "ip_id", -1, np.int64)[first], -1),
        tsval=np.where(seen, column(packets, "tsval", -1, np.int64)[first], -1),
        payload_hash=orig_hash, direction=orig_dir,
        ttl=np.where(seen, column(packets, "ttl", -1, np.int64)[first], -1),
        seq=np.where(seen & s.is_tcp[np.maximum(f_o_row, 0)], s.seq[np.maximum(f_o_row, 0)], -1),
        resp_ack=_first_resp_ack(s, c, r))


def _first_resp_ack(s: Sorted, c: Cut, r: Roles) -> np.ndarray:
    """The ack number of each connection's first responder packet with the ACK flag (-1: none)."""
    f_r_ack = first_where(c.conn, ~r.is_orig & s.ackf, c.nc)
    return np.where(f_r_ack >= 0, s.ack[np.maximum(f_r_ack, 0)], -1)
