"""Many pcapng sections (alternating byte order) and interfaces (ids restart per section):
every packet gets its own section's interface, the tally covers every section, tiny
chunks and the Python walk give the same table; a wrong trailing length stops the walk
at that block."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from corpus import eth, ip4, udp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import read_capture
from natlens.capture import walk as walker
from natlens.capture.buffer import PAD, Buffer
from natlens.capture.pcapng import PcapngFile
from natlens.capture.write import Interface, pcapng_section

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
T0 = 1_700_000_000_000_000_000
LINKTYPES = {1: lambda sport: eth(ip4(udp(sport=sport), 17)), 101: lambda sport: ip4(udp(sport=sport), 17)}

section = st.tuples(
    st.booleans(),  # big-endian
    st.lists(st.tuples(st.sampled_from(sorted(LINKTYPES)), st.sampled_from([6, 9, 0x80 | 20, 3])),
             min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**12)), max_size=6),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 100), st.integers(0, 100)), max_size=2),
)


def build(sections) -> tuple[bytes, list[dict], int]:
    """The file and, per packet, what the read must give (sport numbers the packets)."""
    data, want, drops = b"", [], 0
    for big, ifaces, pkts, stats in sections:
        itfs = [Interface(lt, tsresol=r) for lt, r in ifaces]
        rows = []
        for i, dt in pkts:
            i %= len(itfs)
            sport = len(want) + 1
            rows.append((i, T0 + dt, LINKTYPES[itfs[i].linktype](sport)))
            want.append(dict(sport=sport, iface=i, linktype=itfs[i].linktype,
                             ts=_floor(T0 + dt, itfs[i].tsresol)))
        stats = [(i % len(itfs), a, b) for i, a, b in stats]
        last: dict[int, int] = {}
        for i, a, b in stats:  # counters are cumulative: the largest counts
            last[i] = max(last.get(i, 0), a + b)
        drops += sum(last.values())
        data += pcapng_section(itfs, rows, big_endian=big, statistics=stats)
    return data, want, drops


def _floor(ts: int, tsresol: int) -> int:
    if tsresol & 0x80:
        k = tsresol & 0x7F
        return ((ts << k) // 10**9) * 10**9 >> k
    unit = 10 ** (9 - tsresol)
    return ts // unit * unit


@SETTINGS
@given(st.lists(section, min_size=1, max_size=8))
def test_many_sections_and_interfaces(tmp_path, monkeypatch, sections):
    data, want, drops = build(sections)
    path = tmp_path / "s.pcapng"
    path.write_bytes(data)
    cap = read_capture(path)
    pk = cap.packets
    assert pk["sport"].tolist() == [w["sport"] for w in want]
    assert pk["iface"].tolist() == [w["iface"] for w in want]
    assert pk["linktype"].tolist() == [w["linktype"] for w in want]
    assert pk["ts_ns"].tolist() == [w["ts"] for w in want]
    info = cap.info
    assert info.sections == len(sections)
    assert info.interfaces == sum(len(s[1]) for s in sections)
    assert info.linktypes == sorted({lt for s in sections for lt, _ in s[1]})
    assert info.records == info.decoded == len(want) and not info.warnings
    stats = sum(len(s[3]) for s in sections)
    assert info.other_blocks == ({"interface-statistics": stats} if stats else {})
    assert info.dropped == (drops if stats else None)
    small = read_capture(path, chunk_bytes=96)
    assert small.packets.equals(pk)
    assert small.info.to_dict() == info.to_dict()
    monkeypatch.setattr(walker, "_compiled", None)
    monkeypatch.setattr(walker, "_warned", True)
    slow = read_capture(path, chunk_bytes=200)
    assert slow.packets.equals(pk) and slow.info.to_dict() == info.to_dict()


def test_more_blocks_than_one_walker_output_alternating_order(tmp_path):
    """Over walker.OUT_CAP blocks in one chunk, byte order switching every section: the
    resumed walk keeps the order it reached."""
    le = pcapng_section([Interface(1)], [(0, T0, LINKTYPES[1](7))])
    be = pcapng_section([Interface(101)], [(0, T0, LINKTYPES[101](8))], big_endian=True)
    n = walker.OUT_CAP // 6 + 10  # 3 blocks a section
    path = tmp_path / "alt.pcapng"
    path.write_bytes((le + be) * n)
    cap = read_capture(path)
    assert cap.info.sections == 2 * n and cap.info.interfaces == 2 * n
    assert cap.info.decoded == 2 * n and cap.info.linktypes == [1, 101]
    assert cap.packets["sport"].tolist() == [7, 8] * n


def buffer(data: bytes) -> Buffer:
    raw = np.zeros(len(data) + PAD, np.uint8)
    raw[: len(data)] = np.frombuffer(data, np.uint8)
    return Buffer(raw, len(data))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("big", [False, True])
def test_trailing_length_mismatch_stops_at_that_block(monkeypatch, compiled, big):
    frame = LINKTYPES[1](9)
    data = bytearray(pcapng_section([Interface(1)], [(0, T0, frame)] * 3, big_endian=big))
    epb_len = 32 + len(frame) + (-len(frame) % 4)
    second = 28 + 20 + epb_len  # SHB, IDB, first EPB
    data[second + epb_len - 4 : second + epb_len] = struct.pack(">I" if big else "<I", epb_len + 4)
    if not compiled:
        monkeypatch.setattr(walker, "_compiled", None)
        monkeypatch.setattr(walker, "_warned", True)
    fmt = PcapngFile.from_header("x", bytes(data[:12]))
    rec, stop, status = fmt.parse(buffer(bytes(data)), 0, eof=True)
    assert (len(rec), stop, status) == (1, second, walker.BAD_LENGTH)


@pytest.mark.parametrize("compiled", [True, False])
def test_walkers_agree_on_section_marks(monkeypatch, compiled):
    data = pcapng_section([Interface(1)], [], big_endian=True) + pcapng_section([Interface(1)], [])
    if not compiled:
        monkeypatch.setattr(walker, "_compiled", None)
        monkeypatch.setattr(walker, "_warned", True)
    offs, stop, status = walker.walk(data, 0, lenpos=4, add=0, big_endian=False, minlen=12,
                                     maxlen=1 << 26, align=4, section_type=0x0A0D0D0A, trailer=True)
    bit = walker.ORDER_BIT
    assert offs.tolist() == [0 | bit, 28 | bit, 48, 76] and (stop, status) == (96, walker.END)
