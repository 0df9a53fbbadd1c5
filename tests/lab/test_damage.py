"""natlens.lab.damage: each damage does exactly what it says, on a copy, and refuses bad input.

Files are written with natlens.capture.write and read back with a parser of this test's
own (struct, record by record), so damage.py is not checked against itself.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from natlens.capture import read_capture
from natlens.capture.write import Interface, write_pcap, write_pcapng
from natlens.errors import NatlensError
from natlens.lab import damage
from natlens.lab.damage import (
    copy_bundle,
    cut,
    drop,
    late_start,
    nic_only,
    remove_captures,
    shift_clock,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "loopback-local"
T0 = 1_795_675_192_123_456_789  # ns; not a whole number of microseconds
FORMATS = [(ns, be) for ns in (False, True) for be in (False, True)]
FORMAT_IDS = ["us-le", "us-be", "ns-le", "ns-be"]


def frame(i: int) -> bytes:
    """A record's bytes: different lengths, recognisable content."""
    return bytes([i % 256]) * (20 + 7 * i)


def make(path: Path, times_ns: list[int], *, nanosecond=False, big_endian=False) -> Path:
    write_pcap(path, [(t, frame(i)) for i, t in enumerate(times_ns)],
               nanosecond=nanosecond, big_endian=big_endian)
    return path


def parse(path: Path) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """(sec, frac, data) of every whole record, and the bytes after the last whole one."""
    raw = path.read_bytes()
    order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, off = [], 24
    while off + 16 <= len(raw):
        sec, frac, caplen, _ = struct.unpack_from(order + "IIII", raw, off)
        if off + 16 + caplen > len(raw):
            break
        out.append((sec, frac, raw[off + 16: off + 16 + caplen]))
        off += 16 + caplen
    return out, raw[off:]


def ns_of(rec, nanosecond: bool) -> int:
    return rec[0] * 1_000_000_000 + rec[1] * (1 if nanosecond else 1000)


def seconds(n: int, step_ns: int = 1_000_000_000) -> list[int]:
    return [T0 + i * step_ns for i in range(n)]


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
def test_nothing_removed_leaves_the_file_byte_identical(tmp_path, nanosecond, big_endian):
    p = make(tmp_path / "eth0.pcap", seconds(6), nanosecond=nanosecond, big_endian=big_endian)
    before = p.read_bytes()
    assert drop(p, 0.0, seed=1).removed == ()
    assert late_start(p, 0.0).removed == ()
    assert cut(p, 1.0).kept == 6
    assert p.read_bytes() == before


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
def test_cut_keeps_the_first_part_of_the_time_span(tmp_path, nanosecond, big_endian):
    p = make(tmp_path / "any.pcap", seconds(10), nanosecond=nanosecond, big_endian=big_endian)
    whole, _ = parse(p)
    d = cut(p, 0.5)  # span 9 s: records at 0..4 s are within 4.5 s
    recs, tail = parse(p)
    assert (d.records_before, d.kept, d.removed, d.partial_bytes) == (10, 5, (5, 6, 7, 8, 9), 0)
    assert recs == whole[:5] and tail == b""


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
def test_cut_mid_record_ends_in_a_half_written_record(tmp_path, nanosecond, big_endian):
    p = make(tmp_path / "any.pcap", seconds(10), nanosecond=nanosecond, big_endian=big_endian)
    original = p.read_bytes()
    whole, _ = parse(p)
    d = cut(p, 0.8, mid_record=True)  # within 7.2 s: records 0..7; record 8 half-written
    recs, tail = parse(p)
    assert recs == whole[:8] and d.kept == 8 and d.removed == (8, 9)
    assert 0 < len(tail) == d.partial_bytes
    # the file is exactly a prefix of the original, ending inside record 8
    assert original.startswith(p.read_bytes())
    rec8 = 16 + len(whole[8][2])
    assert 16 <= len(tail) < rec8
    info = read_capture(p).info
    assert any("cut short in the middle of a record" in w for w in info.warnings), info.warnings
    assert info.records == 9 and info.skipped  # 8 whole records, one cut short


def test_cut_mid_record_of_everything_half_writes_the_last_record(tmp_path):
    p = make(tmp_path / "any.pcap", seconds(4))
    whole, _ = parse(p)
    d = cut(p, 1.0, mid_record=True)
    recs, tail = parse(p)
    assert recs == whole[:3] and d.removed == (3,) and 0 < len(tail) < 16 + len(whole[3][2])


def test_cut_mid_record_of_an_empty_record_stops_inside_its_header(tmp_path):
    p = tmp_path / "eth0.pcap"
    write_pcap(p, [(T0, b"abcd"), (T0 + 10**9, b"")])
    d = cut(p, 0.0, mid_record=True)
    recs, tail = parse(p)
    assert len(recs) == 1 and d.partial_bytes == len(tail) == 8


def test_cut_is_in_file_order(tmp_path):
    """A capture stops once: a record after the cut point in the file goes, even if its time is earlier."""
    p = make(tmp_path / "any.pcap", [T0, T0 + 2 * 10**9, T0 + 1 * 10**9, T0 + 10 * 10**9])
    d = cut(p, 0.15)  # cutoff T0 + 1.5 s: the second record is past it, so it and all after go
    assert d.kept == 1 and d.removed == (1, 2, 3)


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
def test_drop_removes_the_fraction_asked_and_only_those(tmp_path, nanosecond, big_endian):
    p = make(tmp_path / "eth0.pcap", seconds(200, 1_000_000), nanosecond=nanosecond,
             big_endian=big_endian)
    whole, _ = parse(p)
    d = drop(p, 0.1, seed=7)
    recs, tail = parse(p)
    assert len(d.removed) == 20 and d.kept == 180 == len(recs) and tail == b""
    assert recs == [r for i, r in enumerate(whole) if i not in set(d.removed)]


def test_seeded_drop_is_reproducible(tmp_path):
    times = seconds(300, 1_000_000)
    a, b, c = (make(tmp_path / f"{n}.pcap", times) for n in "abc")
    da, db, dc = drop(a, 0.2, seed=42), drop(b, 0.2, seed=42), drop(c, 0.2, seed=43)
    assert da.removed == db.removed and a.read_bytes() == b.read_bytes()
    assert da.removed != dc.removed and len(dc.removed) == 60


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
def test_late_start_removes_the_first_seconds(tmp_path, nanosecond, big_endian):
    times = seconds(20, 100_000_000)  # 0.0, 0.1, ... 1.9 s
    p = make(tmp_path / "any.pcap", times, nanosecond=nanosecond, big_endian=big_endian)
    whole, _ = parse(p)
    d = late_start(p, 0.55)
    recs, _ = parse(p)
    assert d.removed == tuple(range(6)) and recs == whole[6:]


@pytest.mark.parametrize(("nanosecond", "big_endian"), FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("shift", [2.5, -0.8, 1e-6, -123.000001])
def test_shift_clock_moves_every_timestamp_exactly(tmp_path, nanosecond, big_endian, shift):
    node = tmp_path / "node-2"
    node.mkdir()
    times = seconds(12, 123_457_001)
    make(node / "eth0.pcap", times, nanosecond=nanosecond, big_endian=big_endian)
    make(node / "any.pcap", times[::2], nanosecond=not nanosecond, big_endian=not big_endian)
    (node / "iptables-save.txt").write_text("*nat\nCOMMIT\n")
    before = {name: parse(node / name)[0] for name in ("eth0.pcap", "any.pcap")}
    done = {d.path.name: d for d in shift_clock(node, shift)}
    assert set(done) == {"eth0.pcap", "any.pcap"}
    for name, ns_file in (("eth0.pcap", nanosecond), ("any.pcap", not nanosecond)):
        want = round(shift * 1e9) if ns_file else round(shift * 1e6) * 1000
        assert done[name].shift_ns == want
        assert want == {2.5: 2_500_000_000, -0.8: -800_000_000}.get(shift, want)
        after = parse(node / name)[0]
        assert len(after) == len(before[name])
        for old, new in zip(before[name], after, strict=True):
            assert ns_of(new, ns_file) - ns_of(old, ns_file) == want  # exact, in ns
            assert 0 <= new[1] < (10**9 if ns_file else 10**6) and new[2] == old[2]
    assert (node / "iptables-save.txt").read_text() == "*nat\nCOMMIT\n"


def test_a_shift_that_cannot_be_done_leaves_every_capture_of_the_node_as_it_was(tmp_path):
    node = tmp_path / "node-2"
    node.mkdir()
    late = make(node / "any.pcap", seconds(3))
    early = make(node / "eth0.pcap", [5 * 10**9, 6 * 10**9])  # 1970: 10 s back is before 0
    before = late.read_bytes(), early.read_bytes()
    with pytest.raises(NatlensError, match="pcap range") as e:
        shift_clock(node, -10.0)
    assert "eth0.pcap" in str(e.value)
    assert (late.read_bytes(), early.read_bytes()) == before


def test_shift_clock_shifts_a_half_written_tail_header(tmp_path):
    node = tmp_path / "node-1"
    node.mkdir()
    p = make(node / "any.pcap", seconds(5))
    cut(p, 0.5, mid_record=True)
    _, tail_before = parse(p)
    (d,) = shift_clock(node, 1.0)
    _, tail = parse(p)
    assert d.partial_bytes == len(tail) == len(tail_before)
    assert struct.unpack_from("<I", tail)[0] == struct.unpack_from("<I", tail_before)[0] + 1
    assert tail[8:] == tail_before[8:]


def test_remove_captures_and_nic_only(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip("data/samples is missing from this checkout")
    d = copy_bundle(SAMPLE, tmp_path / "b")
    node1 = d / "nodes" / "node-1"
    (node1 / ".rotated").mkdir()
    make(node1 / ".rotated" / "eth0.1.pcap", seconds(2))
    make(node1 / "extra.cap", seconds(2))
    gone = remove_captures(node1)
    assert {p.relative_to(node1).as_posix() for p in gone} == {
        "any.pcap", "eth0.pcap", "extra.cap", ".rotated/eth0.1.pcap"}
    assert not list(node1.rglob("*.pcap")) and not list(node1.rglob("*.cap"))
    assert (node1 / "iptables-save.txt").is_file() and (node1 / "conntrack.txt").is_file()
    gone = nic_only(d)
    assert [p.relative_to(d).as_posix() for p in gone] == ["nodes/node-2/any.pcap"]
    assert sorted(p.relative_to(d).as_posix() for p in d.glob("nodes/*/*.pcap")) == [
        "nodes/node-2/eth0.pcap"]


def test_the_source_is_never_touched(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip("data/samples is missing from this checkout")
    before = tree_hash(SAMPLE)
    d = copy_bundle(SAMPLE, tmp_path / "copy")
    assert tree_hash(d) == before
    cut(d / "nodes/node-1/any.pcap", 0.5, mid_record=True)
    drop(d / "nodes/node-2/eth0.pcap", 0.2, seed=1)
    late_start(d / "nodes/node-1/eth0.pcap", 0.3)
    shift_clock(d / "nodes/node-2", -0.8)
    remove_captures(d / "nodes/node-2")
    nic_only(d)
    assert tree_hash(SAMPLE) == before
    assert tree_hash(d / "ground-truth") == {k.split("/", 1)[1]: v for k, v in before.items()
                                             if k.startswith("ground-truth/")}
    # the raw data itself is refused, and stays as it was
    for call in (lambda: cut(SAMPLE / "nodes/node-1/any.pcap", 0.5),
                 lambda: drop(SAMPLE / "nodes/node-1/eth0.pcap", 0.5, seed=1),
                 lambda: shift_clock(SAMPLE / "nodes/node-2", 1.0),
                 lambda: remove_captures(SAMPLE / "nodes/node-2"),
                 lambda: nic_only(SAMPLE)):
        with pytest.raises(NatlensError, match="raw data"):
            call()
    assert tree_hash(SAMPLE) == before


def test_copy_bundle_refuses_what_is_not_a_fresh_copy(tmp_path):
    (tmp_path / "b" / "nodes").mkdir(parents=True)
    (tmp_path / "taken").mkdir()
    with pytest.raises(NatlensError, match="already exists"):
        copy_bundle(tmp_path / "b", tmp_path / "taken")
    with pytest.raises(NatlensError, match="inside the bundle"):
        copy_bundle(tmp_path / "b", tmp_path / "b" / "sub")
    with pytest.raises(NatlensError, match="not an incident bundle"):
        copy_bundle(tmp_path / "taken", tmp_path / "new")
    with pytest.raises(NatlensError, match="raw data"):
        copy_bundle(tmp_path / "b", damage.RAW_DATA / "samples" / "never-written")
    assert not (damage.RAW_DATA / "samples" / "never-written").exists()


def test_pcapng_is_refused_naming_the_file_and_the_node_is_left_as_it_was(tmp_path):
    node = tmp_path / "node-1"
    node.mkdir()
    good = make(node / "any.pcap", seconds(3))
    ng = node / "eth0.pcapng"
    write_pcapng(ng, [Interface(1)], [(0, T0, frame(1))])
    before = good.read_bytes()
    for call in (lambda: cut(ng, 0.5), lambda: drop(ng, 0.5, seed=1),
                 lambda: late_start(ng, 1.0), lambda: shift_clock(node, 2.5)):
        with pytest.raises(NatlensError, match="pcapng") as e:
            call()
        assert str(ng) in str(e.value)
    assert good.read_bytes() == before


@pytest.mark.parametrize(("content", "message"), [
    (b"GET / HTTP/1.1\r\n\r\n" * 3, "not a classic pcap"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "header cut short"),
    (b"", "not a classic pcap"),
    (b"\xd4\xc3\xb2\xa1" + b"\0" * 20 + struct.pack("<IIII", 0, 0, 1 << 30, 60), "corrupt"),
])
def test_other_files_are_refused_naming_the_file(tmp_path, content, message):
    p = tmp_path / "eth0.pcap"
    p.write_bytes(content)
    with pytest.raises(NatlensError, match=message) as e:
        drop(p, 0.1, seed=1)
    assert str(p) in str(e.value) and p.read_bytes() == content


def test_impossible_requests_are_refused(tmp_path):
    p = make(tmp_path / "eth0.pcap", seconds(3))
    before = p.read_bytes()
    for call, message in ((lambda: cut(p, 1.5), "between 0 and 1"),
                          (lambda: drop(p, -0.1, seed=1), "between 0 and 1"),
                          (lambda: late_start(p, -1.0), "positive"),
                          (lambda: shift_clock(tmp_path / "no-node", 1.0), "not a node directory"),
                          (lambda: remove_captures(p), "not a node directory"),
                          (lambda: nic_only(tmp_path), "not an incident bundle"),
                          (lambda: cut(tmp_path / "missing.pcap", 0.5), "cannot read"),
                          (lambda: shift_clock(tmp_path, -1e12), "pcap range")):
        with pytest.raises(NatlensError, match=message):
            call()
    assert p.read_bytes() == before
    gt = tmp_path / "ground-truth"
    gt.mkdir()
    with pytest.raises(NatlensError, match="ground-truth"):
        drop(make(gt / "x.pcap", seconds(2)), 0.5, seed=1)
