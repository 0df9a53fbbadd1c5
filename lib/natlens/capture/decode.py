"""Records of one chunk -> rows of the packet table, plus the count of skipped records
by reason. Every step works on all packets at once (numpy), not packet by packet."""

from __future__ import annotations

import functools
import ipaddress

import numpy as np
import pandas as pd
import pyarrow as pa

from natlens.capture import fastpath, ip, link, transport, tunnel
from natlens.capture.frame import Frame
from natlens.capture.records import DIR_IN, DIR_OUT, Records
from natlens.capture.schema import (
    ANOMALIES,
    ARROW_SCHEMA,
    CODED_SCHEMA,
    CODED_TEXT,
    MALFORMED,
    SKIP_REASONS,
)

# Records decoded at once. Small enough that the packet bytes a batch touches stay in
# the CPU cache while every header field is read (each read is one pass over them).
BATCH = 32768


def decode(rec: Records, capture: str, numbers: np.ndarray, coded: bool = False
           ) -> tuple[pa.Table, dict[str, int]]:
    """Decode all records; `numbers` is each record's index in the file. Returns the table
    of decoded packets (``coded``: its text columns as dictionaries, CODED_SCHEMA) and the
    skip tally."""
    tables, tally = [], {}
    for start in range(0, len(rec), BATCH):
        table, skipped = _decode(rec.slice(start, start + BATCH), capture, numbers[start:start + BATCH], coded)
        tables.append(table)
        for reason, count in skipped.items():
            tally[reason] = tally.get(reason, 0) + count
    if len(tables) == 1:
        return tables[0], tally
    return pa.concat_tables(tables), tally


def _decode(rec: Records, capture: str, numbers: np.ndarray, coded: bool) -> tuple[pa.Table, dict[str, int]]:
    f = Frame(rec)
    f.skip(np.flatnonzero(rec.bad), MALFORMED)
    rows = fastpath.decode(f, rec)  # the common packets at once; the numpy decoders get the rest
    link.decode(f, rec.linktype, rows)
    rows = f.live(rows)
    ip.decode(f, rows)
    rows = f.live(rows)
    transport.decode(f, rows)
    tunnel.decode(f, f.live(rows))
    counts = np.bincount(f.reason, minlength=len(SKIP_REASONS))
    tally = {SKIP_REASONS[i]: int(c) for i, c in enumerate(counts) if i and c}
    return _table(f, rec, capture, numbers, coded), tally


def _table(f: Frame, rec: Records, capture: str, numbers: np.ndarray, coded: bool) -> pa.Table:
    keep = np.flatnonzero(f.reason == 0)
    n = len(keep)
    if n == f.n:  # nothing skipped: no need to select rows
        keep = slice(None)
    v, ok = f.values, f.valid

    def num(name: str) -> pa.Array:
        typ = ARROW_SCHEMA.field(name).type
        valid = ok[name][keep]
        if not valid.any():
            return pa.nulls(n, typ)
        values = v[name][keep]
        if valid.all():
            return pa.array(values, type=typ)
        return pa.array(values, type=typ, mask=~valid)

    direction = np.asarray(rec.direction[keep], np.int8).copy()
    has_type = ok["pkttype"][keep]
    direction[has_type] = np.where(v["pkttype"][keep][has_type] == 4, DIR_OUT, DIR_IN)
    labels = functools.partial(_labels, coded=coded)
    src, dst = _addresses(v["ip_version"][keep], [("src_hi", "src_lo"), ("dst_hi", "dst_lo")],
                          v, keep, coded)
    outer = ok["outer_version"][keep]
    if outer.any():
        osrc, odst = _addresses(np.where(outer, v["outer_version"][keep], 0),
                                [("outer_src_hi", "outer_src_lo"), ("outer_dst_hi", "outer_dst_lo")],
                                v, keep, coded)
    else:
        osrc = odst = labels(np.full(n, -1, np.int32), [])
    quoted = ok["icmp_orig_version"][keep]
    if quoted.any():
        qsrc, qdst = _addresses(np.where(quoted, v["icmp_orig_version"][keep], 0),
                                [("icmp_orig_src_hi", "icmp_orig_src_lo"),
                                 ("icmp_orig_dst_hi", "icmp_orig_dst_lo")], v, keep, coded)
    else:
        qsrc = qdst = labels(np.full(n, -1, np.int32), [])
    ts_valid = rec.ts_valid[keep]
    columns = {
        "capture": labels(np.zeros(n, np.int32), [capture]),
        "record": pa.array(np.asarray(numbers, np.int64)[keep]),
        "ts_ns": pa.array(rec.ts_ns[keep], mask=None if ts_valid.all() else ~ts_valid),
        "linktype": pa.array(rec.linktype[keep]),
        "iface": pa.array(rec.iface[keep]),
        "ifindex": num("ifindex"),
        "pkttype": num("pkttype"),
        "direction": labels(direction.astype(np.int32) - 1, ["in", "out"]),
        "caplen": pa.array(rec.caplen[keep].astype(np.int32)),
        "wirelen": pa.array(rec.wirelen[keep].astype(np.int64)),
        "vlan": num("vlan"),
        "vlan_inner": num("vlan_inner"),
        "tunnel": labels(np.where(ok["tunnel"][keep], v["tunnel"][keep], 0).astype(np.int32) - 1,
                          [tunnel.NAMES[i] for i in sorted(tunnel.NAMES)]),
        "outer_src": osrc,
        "outer_dst": odst,
        "vni": num("vni"),
        "ip_version": num("ip_version"),
        "src": src,
        "dst": dst,
        "icmp_orig_src": qsrc,
        "icmp_orig_dst": qdst,
        "anomaly": anomaly_names(rec.anomaly[keep], coded),
    }
    for name in ARROW_SCHEMA.names:
        if name not in columns:
            columns[name] = num(name)
    schema = CODED_SCHEMA if coded else ARROW_SCHEMA
    return pa.table([columns[name] for name in schema.names], schema=schema)


def anomaly_names(bits: np.ndarray, coded: bool = False) -> pa.Array:
    """The `anomaly` column: each record's anomaly bits as comma-separated names."""
    if not bits.any():
        return _labels(np.full(len(bits), -1, np.int32), [], coded)
    uniq, codes = np.unique(bits, return_inverse=True)
    names = [",".join(name for i, (name, _) in enumerate(ANOMALIES) if int(u) >> i & 1) for u in uniq]
    return _labels(np.where(uniq[codes] == 0, -1, codes).astype(np.int32), names, coded)


def anomaly_tally(bits: np.ndarray) -> dict[str, int]:
    """How many records carry each anomaly."""
    if not bits.any():
        return {}
    out = {}
    for i, (name, _) in enumerate(ANOMALIES):
        n = int(np.count_nonzero(bits & (1 << i)))
        if n:
            out[name] = n
    return out


def _labels(codes: np.ndarray, names: list[str], coded: bool = False) -> pa.Array:
    """A text column from small integer codes (-1 = null): strings, or (``coded``) the codes
    with the names as their dictionary."""
    mask = codes < 0
    if mask.all():
        return pa.nulls(len(codes), CODED_TEXT if coded else pa.string())
    indices = pa.array(np.maximum(codes, 0).astype(np.int32), mask=mask if mask.any() else None)
    labels = pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string()))
    return labels if coded else labels.dictionary_decode()


def _addresses(version: np.ndarray, pairs: list[tuple[str, str]], v: dict, keep: np.ndarray,
               coded: bool):
    """Address columns as text; each distinct address is formatted once."""
    halves = [(v[h][keep], v[lo][keep]) for h, lo in pairs]
    n = len(version)
    codes = [np.full(n, -1, np.int64) for _ in pairs]
    names: list[str] = []
    v4 = version == 4
    if v4.any():
        allv4 = np.concatenate([lo[v4] for _, lo in halves])
        c, uniq = pd.factorize(allv4)
        for i, cc in enumerate(np.split(c, len(pairs))):
            codes[i][v4] = cc
        names += [str(ipaddress.IPv4Address(int(x))) for x in uniq]
    v6 = version == 6
    if v6.any():
        m = int(v6.sum())
        keys = np.empty(m * len(pairs), dtype=[("hi", "<u8"), ("lo", "<u8")])
        keys["hi"] = np.concatenate([hi[v6] for hi, _ in halves])
        keys["lo"] = np.concatenate([lo[v6] for _, lo in halves])
        uniq, c = np.unique(keys, return_inverse=True)
        base = len(names)
        for i, cc in enumerate(np.split(c.ravel(), len(pairs))):
            codes[i][v6] = cc + base
        names += [str(ipaddress.IPv6Address((int(h) << 64) | int(lo))) for h, lo in uniq]
    return [_labels(c.astype(np.int32), names, coded) for c in codes]
