"""A capture too big to hold, in parts: split by 5-tuple, made into records part by part, merged.

Why: the stages hold several arrays per packet; a big capture's records are made with a
part of its packets in memory at a time. Every stage looks only at the packets of one
5-tuple (either direction, any interface: a packet's copies on other interfaces too) and
the ICMP errors quoting it, so a part holds whole 5-tuples and the ICMP errors about them
(by the tuple they quote), and the records of all parts, put in start order (start time,
then the first packet's place in the capture), are the records of the whole table.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads near-equal keys apart
_ICMP = (1, 58)


def flow_parts(packets: pa.Table, parts: int) -> np.ndarray:
    """The part (0..parts-1) of every packet of ``packets``: the same for every packet of one
    5-tuple, in either direction, and for an ICMP error quoting it."""
    proto = _ints(packets["proto"])
    quoted = np.isin(proto, _ICMP) & ~_null(packets["icmp_orig_src"]) & ~_null(packets["icmp_orig_dst"])

    def pick(outer: str, inner: str) -> np.ndarray:  # the quoted packet's field for a quoting ICMP error
        return np.where(quoted, _ints(packets[inner]), _ints(packets[outer]))

    a = np.where(quoted, _address_hash(packets["icmp_orig_src"]), _address_hash(packets["src"]))
    b = np.where(quoted, _address_hash(packets["icmp_orig_dst"]), _address_hash(packets["dst"]))
    ea = (a << np.uint64(16)) | pick("sport", "icmp_orig_sport").astype(np.uint64)
    eb = (b << np.uint64(16)) | pick("dport", "icmp_orig_dport").astype(np.uint64)
    key = (np.minimum(ea, eb) * _MIX) ^ np.maximum(ea, eb) ^ pick("proto", "icmp_orig_proto").astype(np.uint64)
    return ((key * _MIX) >> np.uint64(32)) % np.uint64(parts)


def _ints(col: pa.ChunkedArray) -> np.ndarray:
    """An integer column as int64, null as 0."""
    return pc.fill_null(col, 0).to_numpy().astype(np.int64)


def _null(col: pa.ChunkedArray) -> np.ndarray:
    """True where the column is null."""
    return pc.is_null(col).to_numpy(zero_copy_only=False)


def _address_hash(col: pa.ChunkedArray) -> np.ndarray:
    """A 32-bit hash of each address (CRC-32 of its text; null: that of ""), text or coded
    (capture.CODED_SCHEMA: each distinct address of a chunk hashed once)."""
    if not pa.types.is_dictionary(col.type):
        return _coded_hash(pc.dictionary_encode(pc.fill_null(col, "")).combine_chunks())
    if not col.num_chunks:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([_coded_hash(c) for c in col.chunks])


def _coded_hash(codes: pa.DictionaryArray) -> np.ndarray:
    names = codes.dictionary.to_pylist() + [""]  # a null code: the last
    crc = np.fromiter((zlib.crc32(n.encode()) for n in names), dtype=np.uint64, count=len(names))
    return crc[pc.fill_null(codes.indices, len(names) - 1).to_numpy(zero_copy_only=False)]


def start_order(ts_ns: np.ndarray, first_row: np.ndarray) -> np.ndarray:
    """The order of records by start time, then by their first packet's row in the capture."""
    return np.lexsort((first_row, ts_ns))


def uids(capture: str, n: int) -> list[str]:
    """The uids of ``n`` records of ``capture`` in start order."""
    return [f"{capture}#{i}" for i in range(n)]


def merged(parts: Iterable[tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]], n_packets: int,
           capture: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The records of every part as one table in start order, with the record of each of the
    capture's ``n_packets`` rows. A part is (its records in start order, its packets' record,
    its records' first packet row, the capture rows of its packets)."""
    tables, firsts, empty = [], [], None
    packet_conn = np.full(n_packets, -1, dtype=np.int64)
    attrs = {"packets": 0, "used": 0, "skipped": {}}
    made = 0
    for out, conn, first, rows in parts:
        attrs["packets"] += out.attrs["packets"]
        attrs["used"] += out.attrs["used"]
        for k, v in out.attrs["skipped"].items():
            attrs["skipped"][k] = attrs["skipped"].get(k, 0) + v
        packet_conn[rows] = np.where(conn >= 0, conn + made, -1)
        if len(out):
            tables.append(out)
            firsts.append(rows[first])
            made += len(out)
        else:
            empty = out
    if not tables:
        out = empty if empty is not None else pd.DataFrame()
        out.attrs.update(attrs)
        return out, packet_conn
    out = pd.concat(tables, ignore_index=True)
    rank = start_order(out["ts_ns"].to_numpy(), np.concatenate(firsts))
    out = out.iloc[rank].reset_index(drop=True)
    inv = np.empty(made, dtype=np.int64)
    inv[rank] = np.arange(made)
    packet_conn = np.where(packet_conn >= 0, inv[np.maximum(packet_conn, 0)], -1)
    out["uid"] = uids(capture, made)
    attrs["skipped"] = {k: v for k, v in sorted(attrs["skipped"].items()) if v}
    out.attrs.update(attrs)
    return out, packet_conn
