"""The working state of decoding one chunk: where each packet's next header starts,
where its captured bytes end, why it was skipped, and the columns filled so far."""

from __future__ import annotations

import numpy as np

from natlens.capture.buffer import Buffer
from natlens.capture.records import Records
from natlens.capture.schema import MALFORMED, SNAPLEN

# Numeric columns the decoders fill, with their numpy dtypes (addresses are kept as
# two u64 halves until the table is built; IPv4 sits in the low half).
NUMERIC = {
    "ifindex": np.int64, "pkttype": np.int8, "vlan": np.int32, "vlan_inner": np.int32,
    "vni": np.int32, "ip_version": np.int8, "ip_id": np.int32, "ttl": np.int16,
    "ip_len": np.int64, "proto": np.int16, "sport": np.int32, "dport": np.int32,
    "tcp_flags": np.int16, "seq": np.int64, "ack": np.int64, "window": np.int32,
    "tsval": np.int64, "tsecr": np.int64, "payload_len": np.int64, "payload_hash": np.uint64,
    "icmp_type": np.int16, "icmp_code": np.int16, "tunnel": np.int8,
    "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
    "outer_version": np.int8, "outer_src_hi": np.uint64, "outer_src_lo": np.uint64,
    "outer_dst_hi": np.uint64, "outer_dst_lo": np.uint64,
    "outer_sport": np.int32, "outer_dport": np.int32,
    "icmp_orig_version": np.int8, "icmp_orig_src_hi": np.uint64, "icmp_orig_src_lo": np.uint64,
    "icmp_orig_dst_hi": np.uint64, "icmp_orig_dst_lo": np.uint64, "icmp_orig_proto": np.int16,
    "icmp_orig_sport": np.int32, "icmp_orig_dport": np.int32, "icmp_orig_seq": np.int64,
}
# Columns that describe one packet above the link layer: reset when a tunnel's inner
# packet replaces the outer one in its row.
PACKET_LEVEL = ["ip_version", "ip_id", "ttl", "ip_len", "proto", "sport", "dport", "tcp_flags",
                "seq", "ack", "window", "tsval", "tsecr", "payload_len", "payload_hash",
                "icmp_type", "icmp_code", "src_hi", "src_lo", "dst_hi", "dst_lo",
                "icmp_orig_version", "icmp_orig_src_hi", "icmp_orig_src_lo", "icmp_orig_dst_hi",
                "icmp_orig_dst_lo", "icmp_orig_proto", "icmp_orig_sport", "icmp_orig_dport",
                "icmp_orig_seq"]


class Frame:
    """Per-row decoding state for the records of one chunk."""

    def __init__(self, rec: Records):
        n = len(rec)
        self.n = n
        self.buf: Buffer = rec.buf
        self.pos = rec.off.copy()  # start of the next header to decode
        self.end = rec.off + rec.caplen  # end of the captured bytes
        self.cut = rec.caplen < rec.wirelen  # the snaplen cut this packet
        self.reason = np.zeros(n, np.int8)
        self.ethertype = np.zeros(n, np.int64)
        self.l3 = np.zeros(n, np.int64)  # start of the IP header
        self.ip_end = np.zeros(n, np.int64)  # end of the IP packet per its own length
        self.values = {k: np.zeros(n, dt) for k, dt in NUMERIC.items()}
        self.valid = {k: np.zeros(n, bool) for k in NUMERIC}

    def set(self, name: str, rows: np.ndarray, values) -> None:
        if len(rows) == self.n:  # rows are sorted and distinct: all of them
            self.values[name][:] = values
            self.valid[name][:] = True
        else:
            self.values[name][rows] = values
            self.valid[name][rows] = True

    def clear(self, names: list[str], rows: np.ndarray) -> None:
        for name in names:
            self.valid[name][rows] = False

    def need(self, rows: np.ndarray, nbytes) -> np.ndarray:
        """Rows (of `rows`) whose next `nbytes` are captured; the others are skipped as
        snaplen-truncated or malformed. Returns the rows that remain."""
        short = self.pos[rows] + nbytes > self.end[rows]
        if short.any():
            self.skip(rows[short], np.where(self.cut[rows[short]], SNAPLEN, MALFORMED))
            return rows[~short]
        return rows

    def skip(self, rows: np.ndarray, reason) -> None:
        """Mark rows as not decodable for `reason` (the first reason given wins)."""
        fresh = self.reason[rows] == 0
        if np.ndim(reason):
            reason = np.asarray(reason)[fresh]
        self.reason[rows[fresh]] = reason

    def live(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.reason[rows] == 0]
