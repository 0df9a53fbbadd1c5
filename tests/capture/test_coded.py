"""Coded packet tables (iter_tables(coded=True), CODED_SCHEMA): the same packets with their text
as dictionary codes, for tables that are only moved between processes. plain() must give back
exactly the text table, and a flow's part must not depend on which form it was computed from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from natlens.capture import ARROW_SCHEMA, CODED_SCHEMA, CaptureInfo, iter_tables, plain
from natlens.connections import flow_parts

REPO = Path(__file__).resolve().parents[2]


def _tables(path: Path, coded: bool) -> list[pa.Table]:
    return [t for t in iter_tables(path, coded=coded, chunk_bytes=1 << 16) if not isinstance(t, CaptureInfo)]


def _captures(zeek_traces: Path) -> list[Path]:
    return sorted([*(REPO / "data" / "samples").rglob("*.pcap*"), *zeek_traces.rglob("*.pcap*")])


def test_every_capture_coded_is_its_text_table_once_made_plain(zeek_traces):
    files = _captures(zeek_traces)
    assert len(files) >= 20
    seen_text = set()
    for f in files:
        text, coded = _tables(f, False), _tables(f, True)
        assert len(text) == len(coded), f
        for t, c in zip(text, coded, strict=True):
            assert c.schema.equals(CODED_SCHEMA), f
            assert all(pa.types.is_dictionary(c.schema.field(n).type)
                       for n in ARROW_SCHEMA.names if ARROW_SCHEMA.field(n).type == pa.string())
            back = plain(c)
            assert back.schema.equals(ARROW_SCHEMA, check_metadata=True), f
            assert back.equals(t), f
            seen_text |= {n for n in ("src", "icmp_orig_src", "outer_src", "anomaly")
                          if t[n].null_count < len(t)}
    assert {"src", "outer_src"} <= seen_text  # the corpus holds addresses and tunnels (ICMP quotes: below)


def test_plain_keeps_columns_that_are_not_packet_columns():
    coded = pa.table({"src": pa.array(["198.18.0.1", None]).dictionary_encode(), "row": pa.array([3, 4])})
    back = plain(coded)
    assert back.schema.field("src").type == pa.string()
    assert back["src"].to_pylist() == ["198.18.0.1", None]
    assert back["row"].to_pylist() == [3, 4]


@pytest.mark.parametrize("parts", [2, 7])
def test_a_flow_has_the_same_part_from_text_or_codes(zeek_traces, parts):
    checked = 0
    for f in _captures(zeek_traces):
        text, coded = _tables(f, False), _tables(f, True)
        for t, c in zip(text, coded, strict=True):
            assert np.array_equal(flow_parts(t, parts), flow_parts(c, parts)), f
            checked += len(t)
    assert checked > 5_000


def test_a_null_address_code_hashes_as_the_empty_text():
    text = pa.table({"proto": pa.array([1, 1], pa.int16()), "src": ["198.18.0.1", "198.18.0.2"],
                     "dst": ["198.18.0.3", "198.18.0.3"], "sport": pa.array([None, None], pa.int32()),
                     "dport": pa.array([None, None], pa.int32()),
                     "icmp_orig_src": pa.array([None, "198.18.0.9"]), "icmp_orig_dst": pa.array([None, None], pa.string()),
                     "icmp_orig_sport": pa.array([None, None], pa.int32()),
                     "icmp_orig_dport": pa.array([None, None], pa.int32()),
                     "icmp_orig_proto": pa.array([None, None], pa.int16())})
    coded = text
    for n in ("src", "dst", "icmp_orig_src", "icmp_orig_dst"):
        coded = coded.set_column(coded.schema.get_field_index(n), n, pc.dictionary_encode(text[n]))
    assert np.array_equal(flow_parts(text, 5), flow_parts(coded, 5))

