"""pcapng files damaged mid-file, read end to end: a block with a wrong length or a
trailing length that differs costs that block only, garbage between blocks costs its
bytes only, and a lost section header or interface block makes the packets that would
name an unknown interface malformed instead of giving them another interface's link
type and clock. Every case: the bytes skipped are counted and said, and reading in tiny
chunks gives the same result."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
from corpus import eth, ip4, tcp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import read_capture
from natlens.capture.write import Interface, pcapng_section

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
T0 = 1_764_000_000 * 10**9


def frame(i: int, n: int = 10) -> bytes:
    return eth(ip4(tcp(sport=20000 + i, data=bytes(n)), dpkt.ip.IP_PROTO_TCP))


def blocks(data: bytes, big: bool = False) -> list[tuple[int, int, int]]:
    """(offset, type, length) of every block of a well-formed file."""
    o = ">" if big else "<"
    out, off = [], 0
    while off + 8 <= len(data):
        btype, length = struct.unpack_from(o + "II", data, off)
        out.append((off, btype, length))
        off += length
    return out


def section(first: int, count: int, big: bool = False, sizes=None) -> bytes:
    itfs = [Interface(1), Interface(1, tsresol=9)]
    pkts = [(i % 2, T0 + (first + i) * 1_000_000, frame(first + i, (sizes or {}).get(i, 10)))
            for i in range(count)]
    return pcapng_section(itfs, pkts, big_endian=big)


def check_chunks(path: Path):
    whole, small = read_capture(path), read_capture(path, chunk_bytes=96)
    assert small.info.to_dict() == whole.info.to_dict()
    assert small.packets.equals(whole.packets)
    return whole


@SETTINGS
@given(count=st.integers(2, 30), which=st.floats(0, 1, exclude_max=True),
       length=st.one_of(st.integers(12, 2**32 - 1), st.just(1 << 20)), big=st.booleans(),
       trailer=st.booleans())
def test_one_bad_block_length_costs_that_block(tmp_path, count, which, length, big, trailer):
    data = bytearray(section(0, count, big))
    epbs = [b for b in blocks(bytes(data), big) if b[1] == 6]
    off, _, true_length = epbs[int(which * len(epbs))]
    o = ">" if big else "<"
    if trailer:  # the block's own length is right, its trailing copy is not
        struct.pack_into(o + "I", data, off + true_length - 4, true_length + 4)
    elif length == true_length:
        return
    else:
        struct.pack_into(o + "I", data, off + 4, length)
    path = tmp_path / "d.pcapng"
    path.write_bytes(bytes(data))
    cap = check_chunks(path)
    info = cap.info
    k = epbs.index((off, 6, true_length))
    assert (info.records, info.decoded, info.skipped) == (count, count - 1, {"bad-length": 1})
    assert info.skipped_bytes == {"bad-length": true_length}
    assert sorted(cap.packets["sport"]) == [20000 + i for i in range(count) if i != k]
    assert info.damaged[0]["at"] == off and info.damaged[0]["bytes"] == true_length
    [warning] = info.warnings
    assert f"@{off}:" in warning and f" {true_length:,} bytes" in warning


@SETTINGS
@given(count=st.integers(2, 20), where=st.floats(0, 1), words=st.integers(1, 64),
       fill=st.sampled_from([0x00, 0xFF, 0x41]))
def test_garbage_between_blocks_costs_its_bytes_only(tmp_path, count, where, words, fill):
    data = section(0, count)
    cuts = [b[0] for b in blocks(data)][1:] + [len(data)]
    at = cuts[int(where * (len(cuts) - 1))]
    path = tmp_path / "g.pcapng"
    path.write_bytes(data[:at] + bytes([fill]) * (4 * words) + data[at:])
    info = check_chunks(path).info
    assert (info.records, info.decoded) == (count, count)
    assert info.skipped_bytes == {"bad-length": 4 * words}
    assert info.skipped == {}  # no packet block was lost, only bytes that were none


def test_a_lost_section_header_leaves_its_packets_without_an_interface(tmp_path):
    """Section 2's header is damaged: its interface blocks and packets cannot be tied to
    section 1's interfaces (ids restart per section), so they are malformed, and section 3
    reads normally again."""
    s1, s2, s3 = section(0, 4), section(10, 5, sizes={0: 30}), section(20, 3)
    data = bytearray(s1 + s2 + s3)
    struct.pack_into("<I", data, len(s1) + 8, 0xDEADBEEF)  # section 2's byte-order magic
    path = tmp_path / "s.pcapng"
    path.write_bytes(bytes(data))
    cap = check_chunks(path)
    info = cap.info
    assert info.records == 12 and info.decoded == 7
    assert info.skipped == {"malformed": 5}
    assert sorted(cap.packets["sport"]) == [20000 + i for i in (0, 1, 2, 3, 20, 21, 22)]
    shb_len = blocks(bytes(s2))[0][2]
    assert info.skipped_bytes == {"bad-length": shb_len}
    assert "section header" in info.warnings[0] and "unknown" in info.warnings[0]
    assert info.sections == 2  # the damaged one was not read as a section


def test_lost_interface_block_does_not_misnumber_the_rest(tmp_path):
    """The second interface block (nanosecond clock) is damaged: packets of that section
    are not given the first interface's clock, they are malformed until the next section."""
    s1, s2 = section(0, 4), section(10, 2)
    data = bytearray(s1 + s2)
    idbs = [b for b in blocks(bytes(s1)) if b[1] == 1]
    off, _, length = idbs[1]
    struct.pack_into("<I", data, off + 4, length + 8)  # its length now points at garbage
    path = tmp_path / "i.pcapng"
    path.write_bytes(bytes(data))
    info = check_chunks(path).info
    assert info.records == 6 and info.decoded == 2 and info.skipped == {"malformed": 4}
    assert info.skipped_bytes == {"bad-length": length}
    assert "interface description" in info.warnings[0]


def test_a_section_version_natlens_does_not_know_is_said(tmp_path):
    data = bytearray(section(0, 2))
    struct.pack_into("<HH", data, 12, 0, 1)
    path = tmp_path / "v.pcapng"
    path.write_bytes(bytes(data))
    info = read_capture(path).info
    assert info.decoded == 2
    assert info.warnings == [f"{path}@12: pcapng section version 0.1, not 1.x: read as 1.0"]


def test_every_other_block_damaged_still_reads_every_good_one(tmp_path):
    """A good block followed by a damaged one is still a resynchronization point: what
    follows it need only be a known block type."""
    data = bytearray(section(0, 40))
    epbs = [b for b in blocks(bytes(data)) if b[1] == 6]
    for off, _, _ in epbs[::2]:
        struct.pack_into("<I", data, off + 4, 0xFFFFFFF0)
    path = tmp_path / "alt.pcapng"
    path.write_bytes(bytes(data))
    info = check_chunks(path).info
    assert (info.records, info.decoded, info.skipped) == (40, 20, {"bad-length": 20})
    assert info.skipped_bytes == {"bad-length": sum(length for _, _, length in epbs[::2])}


def test_the_only_interface_block_lost_counts_its_packets(tmp_path):
    """With the section's one interface block damaged, its packets are found and counted
    malformed (their interface is unknown), not lost in skipped bytes."""
    data = bytearray(pcapng_section([Interface(1)], [(0, T0 + i, frame(i)) for i in range(5)]))
    idb = [b for b in blocks(bytes(data)) if b[1] == 1][0]
    struct.pack_into("<I", data, idb[0] + 4, 0x7FFFFF0)
    path = tmp_path / "idb.pcapng"
    path.write_bytes(bytes(data))
    info = check_chunks(path).info
    assert (info.records, info.decoded, info.skipped) == (5, 0, {"malformed": 5})
    assert info.skipped_bytes == {"bad-length": idb[2]}
