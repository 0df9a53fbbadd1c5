"""pcap records with lengths and times the packet table cannot take as they are: a
huge caplen mid-file (resynchronize, count the bytes), wrapped and invalid values
(flag, never wrap), a record over the snaplen that is real (read it), and a file cut
short (still "cut-short", not a resync)."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from corpus import eth, ip4, tcp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import read_capture
from natlens.capture.write import write_pcap

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
T0 = 1_764_000_000 * 10**9  # late 2025, in ns


def frames(sizes: list[int]) -> list[bytes]:
    """Ethernet/IPv4/TCP frames with `size` payload bytes each (distinct ports per record)."""
    return [eth(ip4(tcp(sport=20000 + i, data=bytes((i + j) % 251 for j in range(n))), dpkt.ip.IP_PROTO_TCP))
            for i, n in enumerate(sizes)]


def build(path: Path, sizes: list[int], *, snaplen: int = 262144, gap_ns: int = 1_000_000) -> list[int]:
    """Write a pcap of TCP records; returns the file offset of each record header."""
    pkts = frames(sizes)
    write_pcap(path, [(T0 + i * gap_ns, f) for i, f in enumerate(pkts)], snaplen=snaplen)
    offsets, off = [], 24
    for f in pkts:
        offsets.append(off)
        off += 16 + min(len(f), snaplen)
    return offsets


def patch(path: Path, at: int, fmt: str, *values: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, at, *values)
    path.write_bytes(bytes(data))


sizes = st.lists(st.integers(0, 600), min_size=2, max_size=40)


@SETTINGS
@given(sizes=sizes, which=st.floats(0, 1, exclude_max=True),
       caplen=st.one_of(st.integers(262145, 2**32 - 1), st.just(1 << 20), st.just((1 << 24) + 1)),
       chunk=st.sampled_from([None, 96, 4096]))
def test_huge_length_mid_file_resynchronizes(tmp_path, sizes, which, caplen, chunk):
    """One corrupted caplen costs that record only: reading resumes at the next record,
    the bad one is counted "bad-length" and the bytes skipped are exactly its own."""
    path = tmp_path / "bad.pcap"
    offsets = build(path, sizes)
    k = int(which * len(sizes))
    patch(path, offsets[k] + 8, "<I", caplen)
    kw = {"chunk_bytes": chunk} if chunk else {}
    cap = read_capture(path, **kw)
    info = cap.info
    assert info.records == len(sizes)
    assert info.skipped == {"bad-length": 1}
    assert info.decoded == len(sizes) - 1
    assert sorted(cap.packets["sport"]) == [20000 + i for i in range(len(sizes)) if i != k]
    record_bytes = (offsets[k + 1] if k + 1 < len(offsets) else path.stat().st_size) - offsets[k]
    assert info.skipped_bytes == {"bad-length": record_bytes}
    assert info.resyncs == 1
    assert info.unread_bytes == 0
    # where the damage is, in time: packets between these two may be missing
    assert info.damaged == [{"at": offsets[k], "bytes": record_bytes,
                             "after_ns": T0 + (k - 1) * 1_000_000 if k else None,
                             "until_ns": T0 + (k + 1) * 1_000_000 if k + 1 < len(sizes) else None}]
    [warning] = info.warnings
    assert f"@{offsets[k]}:" in warning and f"{record_bytes:,} bytes" in warning
    if k + 1 < len(offsets):
        assert f"record at byte {offsets[k + 1]:,}" in warning


def test_bad_first_record_and_several_bad_ones(tmp_path):
    """Without a record before it (no time to compare with), and twice in one file."""
    path = tmp_path / "bad.pcap"
    offsets = build(path, [10, 20, 30, 40, 50, 60])
    for k in (0, 3):
        patch(path, offsets[k] + 8, "<I", 5_000_000)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (6, 4, {"bad-length": 2})
    assert info.skipped_bytes["bad-length"] == (offsets[1] - offsets[0]) + (offsets[4] - offsets[3])
    assert info.resyncs == 2 and len(info.warnings) == 2


def test_one_record_over_16_mib_is_counted(tmp_path):
    """The only record claims more than any packet: 1 record, bad-length, all its bytes skipped."""
    path = tmp_path / "one.pcap"
    build(path, [100])
    patch(path, 24 + 8, "<I", (1 << 24) + 5)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (1, 0, {"bad-length": 1})
    assert info.skipped_bytes == {"bad-length": path.stat().st_size - 24}
    assert "no plausible record after it" in info.warnings[0]


def test_length_past_the_end_of_the_file_with_records_after_it(tmp_path):
    """A caplen within the link type's limit but past the end of a small file: the records
    after it are read (a bad length), not dropped as a cut-short tail."""
    path = tmp_path / "past.pcap"
    offsets = build(path, [40] * 30)
    patch(path, offsets[5] + 8, "<I", 200_000)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (30, 29, {"bad-length": 1})
    assert info.skipped_bytes == {"bad-length": offsets[6] - offsets[5]}
    assert info.unread_bytes == 0


@pytest.mark.parametrize("cut", [3, 16, 40])
def test_cut_short_is_still_cut_short(tmp_path, cut):
    """tcpdump killed mid-write: the last record is counted cut-short, its bytes too."""
    path = tmp_path / "cut.pcap"
    offsets = build(path, [40] * 5)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[4] + cut])
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (5, 4, {"cut-short": 1})
    assert info.skipped_bytes == {"cut-short": cut}
    assert info.unread_bytes == cut and info.resyncs == 0


def test_record_over_the_snaplen_that_is_real_is_read(tmp_path):
    """A writer whose snaplen is smaller than what it wrote: the record is followed by the
    next header, so it is read, flagged caplen-over-snaplen."""
    path = tmp_path / "snap.pcap"
    offsets = build(path, [10, 300, 20, 400])
    patch(path, 16, "<I", 200)  # the file header's snaplen
    cap = read_capture(path)
    info = cap.info
    assert (info.records, info.decoded, info.skipped) == (4, 4, {})
    assert info.anomalies == {"caplen-over-snaplen": 2}
    flagged = cap.packets.loc[cap.packets["anomaly"].notna(), "record"].tolist()
    assert flagged == [1, 3] and set(cap.packets["anomaly"].dropna()) == {"caplen-over-snaplen"}
    assert offsets  # the records' offsets were used to build the file


@SETTINGS
@given(wirelen=st.integers(2**31, 2**32 - 1), sec=st.sampled_from([0, 2**31, 2**32 - 1]),
       nanosecond=st.booleans())
def test_wide_values_are_kept_exactly(tmp_path, wirelen, sec, nanosecond):
    """u32 fields above 2^31 are not wrapped: wirelen and the seconds are the file's."""
    path = tmp_path / "wide.pcap"
    frame = frames([8])[0]
    ts = sec * 10**9 + 123_456_000
    write_pcap(path, [(ts, frame, wirelen)], nanosecond=nanosecond)
    cap = read_capture(path)
    row = cap.packets.iloc[0]
    assert row["wirelen"] == wirelen
    assert row["ts_ns"] == ts
    assert pd_isna(row["anomaly"])
    assert cap.info.first_ts_ns == cap.info.last_ts_ns == ts


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@SETTINGS
@given(frac=st.integers(0, 2**32 - 1), nanosecond=st.booleans())
def test_time_fraction_out_of_range_is_flagged_not_carried(tmp_path, frac, nanosecond):
    """A microsecond field of 10^6 or more (tcpdump: "invalid us") makes the time unknown."""
    path = tmp_path / "frac.pcap"
    build(path, [8, 8])
    if nanosecond:
        data = bytearray(path.read_bytes())
        data[:4] = struct.pack("<I", 0xA1B23C4D)
        path.write_bytes(bytes(data))
    patch(path, 24 + 4, "<I", frac)
    cap = read_capture(path)
    limit = 10**9 if nanosecond else 10**6
    first = cap.packets.iloc[0]
    if frac >= limit:
        assert pd_isna(first["ts_ns"]) and first["anomaly"] == "ts-fraction-invalid"
        assert cap.info.anomalies == {"ts-fraction-invalid": 1}
        assert cap.info.first_ts_ns == cap.info.last_ts_ns  # only the second record has a time
    else:
        unit = 1 if nanosecond else 1000
        assert first["ts_ns"] == (T0 // 10**9) * 10**9 + frac * unit
        assert cap.info.anomalies == {}


def test_wirelen_below_caplen_is_kept_and_flagged(tmp_path):
    path = tmp_path / "short.pcap"
    build(path, [30])
    patch(path, 24 + 12, "<I", 10)
    cap = read_capture(path)
    assert cap.packets.loc[0, "wirelen"] == 10
    assert cap.packets.loc[0, "anomaly"] == "wirelen-below-caplen"


def test_times_cover_records_that_are_not_decoded(tmp_path):
    """first/last_ts_ns span every record with a time, an ARP frame at either end too."""
    path = tmp_path / "arp.pcap"
    arp = eth(b"\x00" * 28, etype=0x0806)
    tcp_frame = frames([4])[0]
    write_pcap(path, [(T0, arp), (T0 + 5000, tcp_frame), (T0 + 9000, arp)])
    info = read_capture(path).info
    assert info.skipped == {"arp": 2}
    assert (info.first_ts_ns, info.last_ts_ns) == (T0, T0 + 9000)


@SETTINGS
@given(sizes=sizes, damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                              st.integers(262145, 2**32 - 1)), min_size=1, max_size=4))
def test_chunk_size_does_not_change_a_resync(tmp_path, sizes, damage):
    path = tmp_path / "many.pcap"
    offsets = build(path, sizes)
    for where, caplen in damage:
        patch(path, offsets[int(where * len(sizes))] + 8, "<I", caplen)
    whole, small = read_capture(path), read_capture(path, chunk_bytes=96)
    assert small.info.to_dict() == whole.info.to_dict()
    assert small.packets.equals(whole.packets)
    hit = sorted({int(w * len(sizes)) for w, _ in damage})
    runs = sum(1 for i, k in enumerate(hit) if i == 0 or hit[i - 1] != k - 1)
    # every undamaged record is read; a run of damaged ones is one bad-length resync
    assert whole.info.skipped == {"bad-length": runs}
    assert whole.info.decoded == len(sizes) - len(hit)
    assert whole.info.records == whole.info.decoded + runs


def test_a_format_version_natlens_does_not_know_is_said(tmp_path):
    path = tmp_path / "v.pcap"
    build(path, [8])
    patch(path, 4, "<HH", 1, 4)
    info = read_capture(path).info
    assert info.decoded == 1
    assert info.warnings == [f"{path}@4: pcap version 1.4, not 2.x: read as 2.4"]


def test_a_record_over_the_snaplen_followed_by_zeros_is_not_taken(tmp_path):
    """Zero bytes after an over-long record do not pass as the next header: the record is
    a bad length, and every record after it is still read (no records invented from
    the zeros, no time of 1970 taken as the file's)."""
    path = tmp_path / "zeros.pcap"
    pkts = [frames([8])[0] + b"\0" * 1000 for _ in range(50)]
    write_pcap(path, [(T0 + i * 10**9, f) for i, f in enumerate(pkts)], snaplen=65535)
    off = 24 + 3 * (16 + len(pkts[0]))
    patch(path, off + 8, "<I", 70_000)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (50, 49, {"bad-length": 1})
    assert info.first_ts_ns == T0 and info.anomalies == {}


def test_a_first_record_with_a_wrong_time_does_not_stop_a_later_resync(tmp_path):
    """The first record's time is 1970 (a broken writer); the records after it agree with
    each other, so a damaged record later is still resynchronized on."""
    path = tmp_path / "t.pcap"
    offsets = build(path, [10] * 10)
    patch(path, 24, "<I", 7)  # the first record's seconds
    patch(path, offsets[6] + 8, "<I", 1 << 20)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (10, 9, {"bad-length": 1})
    assert info.skipped_bytes == {"bad-length": offsets[7] - offsets[6]}


def test_a_clock_step_of_days_moves_the_reference_with_it(tmp_path):
    """The capturing host's clock steps 3 days forward mid-file (records chunked so the
    step starts a new walk); damage after the step is still resynchronized on."""
    path = tmp_path / "step.pcap"
    pkts = frames([10] * 12)
    step = 3 * 86_400 * 10**9
    write_pcap(path, [(T0 + i * 10**6 + (step if i >= 4 else 0), f) for i, f in enumerate(pkts)])
    offsets = [24 + i * (16 + len(pkts[0])) for i in range(12)]
    patch(path, offsets[3] + 8, "<I", 1 << 20)  # a walk ends at record 3; 4.. are after the step
    patch(path, offsets[9] + 8, "<I", 1 << 20)
    info = read_capture(path).info
    assert (info.records, info.decoded, info.skipped) == (12, 10, {"bad-length": 2})
    assert info.resyncs == 2 and info.unread_bytes == 0
