"""A big capture made into records in parts (connections.parts): the same records, index and
accounting as one table gives, on every sample and Zeek trace; a 5-tuple and the ICMP errors
quoting it share a part; parts merge in start order."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from analysis_helpers import samples_dir

from natlens.capture import ARROW_SCHEMA
from natlens.connections import flow_parts, merged
from natlens.findings import analyze
from natlens.findings import captures as caps
from natlens.findings.captures import hop_dir, read_one


def _all_captures(zeek_traces):
    return sorted([*samples_dir().rglob("*.pcap*"), *zeek_traces.rglob("*.pcap*")])


def test_every_capture_read_in_parts_gives_what_one_table_gives(zeek_traces, monkeypatch):
    files = _all_captures(zeek_traces)
    assert len(files) >= 20
    spanned = 0
    for i, f in enumerate(files):
        whole = read_one("n", str(f), f, hop_dir(), "natlens-t1a")
        monkeypatch.setattr(caps, "PART_BYTES", max(1, f.stat().st_size // 3))  # 3 or 4 parts
        parts = read_one("n", str(f), f, hop_dir(), "natlens-t1b", 2 if i % 5 == 0 else 1)
        monkeypatch.undo()
        pd.testing.assert_frame_equal(whole.connections, parts.connections, obj=str(f))
        assert whole.connections.attrs == parts.connections.attrs, f
        assert np.array_equal(whole.hops.conn, parts.hops.conn), f
        assert caps.read_hops(whole.hops.files).equals(caps.read_hops(parts.hops.files)), f
        for row in np.unique(whole.hops.conn)[:50]:
            pd.testing.assert_frame_equal(whole.hops.of(row), parts.hops.of(row), obj=str(f))
        spanned += len(parts.hops.files) > 1  # decoded in spans, one process each
        assert whole.input == parts.input, f
    assert spanned >= 3


def test_an_analysis_in_parts_is_the_analysis(monkeypatch):
    one = analyze(samples_dir() / "mixed")
    monkeypatch.setattr(caps, "PART_BYTES", 20_000)
    two = analyze(samples_dir() / "mixed")
    assert json.dumps(one.summary(), default=str) == json.dumps(two.summary(), default=str)
    pd.testing.assert_frame_equal(one.journeys, two.journeys)
    for jid in one.journeys["journey"]:
        pd.testing.assert_frame_equal(one.journey_hops(jid), two.journey_hops(jid))
    assert not [d for d in hop_dir().glob("*-parts-*") if d.is_dir()]  # the parts went once made into records


def _table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    full = {c: cols.get(c, [None] * n) for c in ("proto", "src", "dst", "sport", "dport", "icmp_orig_src",
                                                   "icmp_orig_dst", "icmp_orig_proto", "icmp_orig_sport",
                                                   "icmp_orig_dport")}
    return pa.table({c: pa.array(v, type=ARROW_SCHEMA.field(c).type) for c, v in full.items()})


def test_both_directions_and_the_icmp_errors_quoting_a_tuple_share_its_part():
    rng = np.random.default_rng(1)
    n = 2000
    a = [f"198.18.{i % 200}.{rng.integers(1, 250)}" for i in range(n)]
    b = [f"198.19.0.{rng.integers(1, 250)}" for _ in range(n)]
    sp, dp = rng.integers(1024, 65535, n).tolist(), rng.integers(1, 1024, n).tolist()
    there = flow_parts(_table(proto=[6] * n, src=a, dst=b, sport=sp, dport=dp), 7)
    back = flow_parts(_table(proto=[6] * n, src=b, dst=a, sport=dp, dport=sp), 7)
    icmp = flow_parts(_table(proto=[1] * n, src=["198.18.255.1"] * n, dst=a, sport=[None] * n, dport=[None] * n,
                             icmp_orig_src=a, icmp_orig_dst=b, icmp_orig_proto=[6] * n,
                             icmp_orig_sport=sp, icmp_orig_dport=dp), 7)
    assert np.array_equal(there, back) and np.array_equal(there, icmp)
    assert set(there.tolist()) == set(range(7))  # spread over every part
    assert min(np.bincount(there.astype(np.int64))) > n / 7 / 2


def _part(ts: list[int], first: list[int], rows: list[int], conn: list[int], skipped: dict):
    out = pd.DataFrame({"ts_ns": ts, "uid": [f"x#{i}" for i in range(len(ts))]})
    out.attrs.update({"packets": len(rows), "used": len(rows), "skipped": skipped})
    return out, np.array(conn), np.array(first), np.array(rows)


def test_parts_merge_in_start_order_then_by_first_packet():
    # part A: records at t=10 (first packet row 0) and t=30 (row 3); part B: t=10 (row 1), t=20 (row 2)
    a = _part([10, 30], [0, 1], rows=[0, 3, 5], conn=[0, 1, -1], skipped={"icmp": 1})
    b = _part([10, 20], [0, 1], rows=[1, 2, 4], conn=[0, 1, 1], skipped={"icmp": 2, "arp": 0})
    out, packet_conn = merged([a, b], 6, "n/eth0")
    assert out["ts_ns"].tolist() == [10, 10, 20, 30] and out["uid"].tolist() == [f"n/eth0#{i}" for i in range(4)]
    assert packet_conn.tolist() == [0, 1, 2, 3, 2, -1]
    assert out.attrs == {"packets": 6, "used": 6, "skipped": {"icmp": 3}}


@pytest.mark.parametrize("parts", [1, 2, 16])
def test_flow_parts_are_in_range(parts):
    t = _table(proto=[6, 17, 1, 0], src=["198.18.0.1", "198.18.0.2", "198.18.0.3", None],
               dst=["198.18.0.9", "198.18.0.8", "198.18.0.7", None], sport=[1, 2, None, None], dport=[3, 4, None, None])
    p = flow_parts(t, parts)
    assert p.shape == (4,) and (p < parts).all()
