"""One capture cut into spans read apart (capture.spans, one per core): the spans hold the
records reading the whole file finds, numbered as there, and their tallies combine into the
whole file's; a cut is never made after damage, and pcapng stays one span."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pcap_damage import SETTINGS, T0, build, frames, patch

from natlens.capture import CaptureInfo, Span, combined, iter_tables, spans
from natlens.capture.write import Interface, write_pcapng

REPO = Path(__file__).resolve().parents[2]


def _read(path: Path, span: Span | None = None) -> tuple[pa.Table, CaptureInfo]:
    tables, info = [], None
    for item in iter_tables(path, span=span):
        if isinstance(item, CaptureInfo):
            info = item
        else:
            tables.append(item)
    return pa.concat_tables(tables), info


def _same_as_whole(path: Path, n: int) -> list[Span]:
    whole, info = _read(path)
    cuts = spans(path, n)
    read = [_read(path, s) for s in cuts]
    assert pa.concat_tables([t for t, _ in read]).equals(whole), (path, n)
    assert combined([i for _, i in read]).to_dict() == info.to_dict(), (path, n)
    return cuts


def _captures(zeek_traces: Path) -> list[Path]:
    return sorted([*(REPO / "data" / "samples").rglob("*.pcap*"), *zeek_traces.rglob("*.pcap*")])


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_capture_read_in_spans_gives_what_the_whole_file_gives(zeek_traces, n):
    files = _captures(zeek_traces)
    assert len(files) >= 20
    cut = 0
    for f in files:
        got = _same_as_whole(f, n)
        assert got[0].first_record == 0 and got[-1].end == f.stat().st_size
        assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))
        cut += len(got) > 1
    assert cut >= 10  # most pcap files are cut


def test_a_span_numbers_its_records_as_the_whole_file_does(tmp_path):
    path = tmp_path / "c.pcap"
    offsets = build(path, [100] * 50)
    cuts = spans(path, 2)
    assert len(cuts) == 2 and cuts[1].start in offsets
    assert cuts[1].first_record == offsets.index(cuts[1].start)
    second, info = _read(path, cuts[1])
    assert second["record"][0].as_py() == cuts[1].first_record
    assert info.records == 50 - cuts[1].first_record


def test_a_pcapng_file_is_one_span(tmp_path):
    """A pcapng block may depend on interfaces described anywhere before it."""
    path = tmp_path / "c.pcapng"
    write_pcapng(path, [Interface(1)], [(0, T0 + i, f) for i, f in enumerate(frames([80] * 40))])
    assert spans(path, 4) == [Span(0, path.stat().st_size, 0)]


def test_no_cut_is_made_after_an_impossible_length(tmp_path):
    path = tmp_path / "bad.pcap"
    offsets = build(path, [200] * 40)
    patch(path, offsets[5] + 8, "<I", 1 << 30)  # record 5's caplen: before the first cut
    assert spans(path, 4) == [Span(24, path.stat().st_size, 0)]


@SETTINGS
@given(which=st.floats(0.3, 1, exclude_max=True), n=st.integers(2, 6))
def test_damage_after_a_cut_is_read_as_in_the_whole_file(tmp_path, which, n):
    """The resynchronization, its warning and the damaged bytes are the same whichever span holds them."""
    path = tmp_path / "late.pcap"
    offsets = build(path, [150 + i % 7 for i in range(60)])
    patch(path, offsets[int(which * 60)] + 8, "<I", 1 << 30)
    cuts = _same_as_whole(path, n)
    info = combined([_read(path, s)[1] for s in cuts])
    assert info.resyncs == 1 and info.skipped.get("bad-length") == 1


def test_a_span_ends_where_it_says_even_if_the_file_goes_on(tmp_path):
    """A span's last record is the one before the next span's first: reading stops at its end."""
    path = tmp_path / "c.pcap"
    offsets = build(path, [60] * 30)
    first, info = _read(path, Span(24, offsets[10], 0))
    assert first.num_rows == 10 and info.records == 10 and not info.warnings


def test_damage_after_a_clock_step_at_the_cut_is_read_as_in_the_whole_file(tmp_path):
    """The last span resynchronizes near the time a whole read has at its cut, not near its own
    records' median: here the clock steps 10 days just after the cut, so that median is the new
    time, while the whole read's reference is still the old one. In the damaged record's bytes
    lie two fake record headers at the new time: near a reference (one follower needed) they
    pass; far from it (two whole records needed) they do not."""
    from natlens.capture.write import write_pcap

    pkts = frames([200] * 60)
    step = 10 * 86_400 * 10**9
    write_pcap(tmp_path / "step.pcap", [(T0 + i * 1_000_000 + (step if i >= 40 else 0), f)
                                        for i, f in enumerate(pkts)])
    path = tmp_path / "step.pcap"
    offsets, off = [], 24
    for f in pkts:
        offsets.append(off)
        off += 16 + len(f)
    cuts = spans(path, 2)
    k = offsets.index(cuts[1].start)  # the last span's first record: before the step, and most of its
    assert len(cuts) == 2 and k < 40 and 40 - k < 56 - 40  # records before the damage after it
    bad = offsets[56]
    patch(path, bad + 8, "<I", 1 << 30)  # record 56's caplen: impossible
    new_sec = (T0 + step) // 10**9
    fake = bad + 16 + 60  # in its payload: header A, 16 bytes, header B, 16 bytes, zeros
    patch(path, fake, "<IIII", new_sec, 0, 16, 16)
    patch(path, fake + 32, "<IIII", new_sec, 0, 16, 16)
    patch(path, fake + 64, "<IIII", 0, 0, 0, 0)
    whole, info = _read(path)
    assert info.resyncs == 1 and whole.num_rows == 59  # the whole read skips the fakes
    assert spans(path, 2) == cuts
    _same_as_whole(path, 2)
