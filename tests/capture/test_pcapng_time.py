"""pcapng timestamps are exact integers for every if_tsresol and if_tsoffset; a value that
int64 ns since the epoch cannot hold is null with the ts-out-of-range anomaly, never a
wrapped or made-up one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from corpus import eth, ip4, udp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import read_capture
from natlens.capture.pcapng import Interface as NgInterface
from natlens.capture.pcapng import units_to_ns
from natlens.capture.write import Interface, pcapng_section

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
INT64 = (-(2**63), 2**63 - 1)


def exact(units: int, tsresol: int, tsoffset: int) -> int | None:
    """floor(units * 10^9 / resolution) + tsoffset * 10^9 in Python ints, None if int64
    cannot hold it."""
    div = 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    ns = units * 10**9 // div + tsoffset * 10**9
    return ns if INT64[0] <= ns <= INT64[1] else None


edge_units = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1,
                     9_223_372_036, 9_223_372_037, 9_223_372_036_854_775, 9_223_372_036_854_776]),
    st.integers(2**63 - 2**40, 2**63 + 2**40), st.integers(2**64 - 2**40, 2**64 - 1),
    st.integers(9_223_372_000, 9_223_372_100))
resolutions = st.one_of(st.sampled_from([0, 1, 3, 6, 9, 10, 12, 18, 19, 20, 27, 40, 127]),
                        st.integers(0, 127), st.integers(0, 127).map(lambda k: 0x80 | k))
offsets = st.one_of(st.sampled_from([0, 1, -1, 2**31, -(2**31), 2**32, 9_223_372_036, -9_223_372_037,
                                     2**63 - 1, -(2**63), -(2**62)]),
                    st.integers(-(2**63), 2**63 - 1), st.integers(-(2**34), 2**34))


@SETTINGS
@given(st.lists(st.tuples(edge_units, resolutions, offsets), min_size=1, max_size=40))
def test_units_to_ns_is_exact_or_out_of_range(rows):
    units = np.array([u for u, _, _ in rows], np.uint64)
    res = np.array([r for _, r, _ in rows], np.int16)
    off = np.array([o for _, _, o in rows], np.int64)
    ns, ok = units_to_ns(units, res, off)
    for i, (u, r, o) in enumerate(rows):
        want = exact(u, r, o)
        assert bool(ok[i]) == (want is not None), (u, r, o)
        if want is not None:
            assert int(ns[i]) == want, (u, r, o)


@pytest.mark.parametrize(("units", "tsresol", "tsoffset"), [
    (2**64 - 1, 6, 0),  # wrapped negative as u64 -> int64 before
    (2**63, 9, 0),
    (10**10, 0, 0),  # seconds resolution: 10^19 ns overflows int64
    (1_700_000_000, 0, 2**40),  # an offset that overflows
    (0, 6, -(2**63)),
])
def test_wrap_values_are_out_of_range(units, tsresol, tsoffset):
    ns, ok = NgInterface(1, 0, tsresol, tsoffset).to_ns(np.array([units], np.uint64))
    assert not ok[0] and ns[0] == 0


def test_boundaries_of_int64_are_exact():
    # the largest and smallest int64 ns, reached through seconds + offset
    units = np.array([9_223_372_036_854_775_807, 9_223_372_036_854_775_808, 145_224_192], np.uint64)
    ns, ok = units_to_ns(units, np.array([9, 9, 9]), np.array([0, 0, -9_223_372_037]))
    assert ok.tolist() == [True, False, True]
    assert ns.tolist() == [2**63 - 1, 0, -(2**63)]


FRAME = eth(ip4(udp(sport=5), 17))


@SETTINGS
@given(st.lists(st.tuples(edge_units, resolutions, offsets), min_size=1, max_size=8),
       st.booleans())
def test_read_capture_nulls_out_of_range_times(tmp_path, rows, big):
    """Through the whole read: a row's ts_ns is the exact value or null with the anomaly."""
    ifaces = [Interface(1, tsresol=r, tsoffset=o) for _, r, o in rows]
    path = tmp_path / "t.pcapng"
    path.write_bytes(pcapng_section(ifaces, [(i, u, FRAME) for i, (u, _, _) in enumerate(rows)],
                                    big_endian=big, units=True))
    pk = read_capture(path).packets
    assert len(pk) == len(rows)
    for (u, r, o), ts, anomaly in zip(rows, pk["ts_ns"], pk["anomaly"], strict=True):
        want = exact(u, r, o)
        if want is None:
            assert pd.isna(ts)
            assert anomaly == "ts-out-of-range"
        else:
            assert int(ts) == want and pd.isna(anomaly)


def test_caplen_over_snaplen_is_flagged_and_decoded(tmp_path):
    path = tmp_path / "s.pcapng"
    path.write_bytes(pcapng_section([Interface(1, snaplen=30), Interface(1, snaplen=0)],
                                    [(0, 10**18, FRAME), (1, 10**18, FRAME)]))
    cap = read_capture(path)
    assert cap.packets["anomaly"].fillna("").tolist() == ["caplen-over-snaplen", ""]
    assert cap.packets["sport"].tolist() == [5, 5]  # still decoded: the block is consistent
    assert cap.info.anomalies == {"caplen-over-snaplen": 1}
