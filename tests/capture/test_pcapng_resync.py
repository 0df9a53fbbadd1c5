"""PcapngFile.resync on Buffer objects: after damage, the first plausible block (known
type, sane and matching lengths, a valid interface, followed by a block header or the
end of the file) at a 4-aligned file offset, or how many bytes hold no candidate."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from corpus import eth, ip4, udp

from natlens.capture import walk as walker
from natlens.capture.buffer import PAD, Buffer
from natlens.capture.pcapng import PcapngFile
from natlens.capture.write import Interface, pcapng_section

FRAME = eth(ip4(udp(sport=4), 17))
EPB_LEN = 32 + len(FRAME) + (-len(FRAME) % 4)
SHB_LEN, IDB_LEN = 28, 20


def buffer(data: bytes) -> Buffer:
    raw = np.zeros(len(data) + PAD, np.uint8)
    raw[: len(data)] = np.frombuffer(data, np.uint8)
    return Buffer(raw, len(data))


def section(big: bool = False, packets: int = 4) -> bytes:
    return pcapng_section([Interface(1)], [(0, 10**18, FRAME)] * packets, big_endian=big)


def opened(data: bytes) -> tuple[PcapngFile, Buffer]:
    """A format state that has read the file's first section header and interface."""
    fmt = PcapngFile.from_header("x", data[:12])
    buf = buffer(data)
    fmt.parse(buffer(data[: SHB_LEN + IDB_LEN]), 0)
    return fmt, buf


def fresh(data: bytes) -> tuple[PcapngFile, Buffer]:
    """A format state that has read nothing yet (parse reads the section header)."""
    return PcapngFile.from_header("x", data[:12]), buffer(data)


def epb(k: int) -> int:
    return SHB_LEN + IDB_LEN + k * EPB_LEN


@pytest.mark.parametrize("big", [False, True])
def test_damaged_length_mid_file(big):
    data = bytearray(section(big))
    o = ">" if big else "<"
    data[epb(1) + 4 : epb(1) + 8] = struct.pack(o + "I", 7)  # impossible length
    fmt, buf = fresh(bytes(data))
    rec, stop, status = fmt.parse(buf, 0, eof=True)
    assert (stop, status) == (epb(1), walker.BAD_LENGTH)
    # the damaged block's own offset is no candidate; the next EPB is
    assert fmt.resync(buf, stop, 0, eof=True) == (epb(2), epb(2))
    # with file_pos not a multiple of 4, the candidates move with it
    assert fmt.resync(buffer(bytes(data[2:])), epb(1) - 1, 2, eof=True) == (epb(2) - 2, epb(2) - 2)
    # from the start, the interface block is the first candidate
    assert fmt.resync(buffer(bytes(data[2:])), 0, 2, eof=True) == (SHB_LEN - 2, SHB_LEN - 2)


def test_damaged_section_header_lands_on_next_section_and_parse_switches_order():
    first, second = bytearray(section(False)), section(True)
    data = bytes(first) + second
    damaged = bytearray(data)
    damaged[len(first) + 8 : len(first) + 12] = b"\0\0\0\0"  # the second SHB's magic
    fmt, buf = fresh(bytes(damaged))
    rec, stop, status = fmt.parse(buf, 0, eof=True)
    assert (len(rec), stop, status) == (4, len(first), walker.BAD_LENGTH)
    # the second section's interface block (big-endian) does not read as one in the
    # first's order, and its packets name no interface: nothing before the end is found
    assert fmt.resync(buf, stop, 0, eof=True) == (None, len(damaged))
    # an intact big-endian section header after garbage is found, and parse starts there
    garbage = b"\xff" * 12
    data2 = bytes(first) + garbage + second
    fmt, buf = fresh(data2)
    _, stop, status = fmt.parse(buf, 0, eof=True)
    assert status == walker.BAD_LENGTH and stop == len(first)
    found, _ = fmt.resync(buf, stop, 0, eof=True)
    assert found == len(first) + len(garbage)
    rec, stop, status = fmt.parse(buf, found, eof=True)
    assert (len(rec), stop, status) == (4, len(data2), walker.END)
    assert fmt.big_endian and fmt.sections == 2


def test_garbage_between_blocks():
    data = section()
    cut = epb(2)
    noisy = data[:cut] + b"\x06\x00\x00\x00\x99" * 7 + b"\0" + data[cut:]  # 36 bytes
    fmt, buf = fresh(noisy)
    _, stop, status = fmt.parse(buf, 0, eof=True)
    assert (stop, status) == (cut, walker.BAD_LENGTH)
    assert fmt.resync(buf, stop, 0, eof=True) == (cut + 36, cut + 36)


def test_candidate_cut_by_buffer_end_is_undecided():
    data = section()
    fmt, _ = opened(data)
    # garbage then an EPB whose end is beyond the buffer: not decidable yet
    chunk = b"\xee" * 8 + data[epb(0) : epb(0) + EPB_LEN - 8]
    assert fmt.resync(buffer(chunk), 0, 1000, eof=False) == (None, 8)
    # the same bytes at the end of the file: no candidate at all
    assert fmt.resync(buffer(chunk), 0, 1000, eof=True) == (None, len(chunk))
    # a whole block whose next header is not in the buffer yet: undecided too
    chunk2 = b"\xee" * 8 + data[epb(0) : epb(1) + 4]
    assert fmt.resync(buffer(chunk2), 0, 1000, eof=False) == (None, 8)
    # ... and confirmed once the next header is there
    chunk3 = b"\xee" * 8 + data[epb(0) : epb(1) + 12]
    assert fmt.resync(buffer(chunk3), 0, 1000, eof=False) == (8, 8)


def test_eof_cases():
    data = section()
    fmt, _ = opened(data)
    last = data[epb(3):]
    # the last block of the file ends exactly at eof: confirmed without a next header
    assert fmt.resync(buffer(b"\x01" * 4 + last), 0, 0, eof=True) == (4, 4)
    # not at eof, the same block waits for what follows
    assert fmt.resync(buffer(b"\x01" * 4 + last), 0, 0, eof=False) == (None, 4)
    # nothing plausible at all
    assert fmt.resync(buffer(b"\xab" * 64), 0, 0, eof=True) == (None, 64)
    assert fmt.resync(buffer(b""), 0, 0, eof=True) == (None, 0)
    # not at eof, only the last bytes (a header could start there) are kept
    got = fmt.resync(buffer(b"\xab" * 64), 0, 0, eof=False)
    assert got[0] is None and 52 <= got[1] <= 64


def test_packet_of_an_unknown_interface_is_no_candidate():
    data = bytearray(section())
    data[epb(2) + 8 : epb(2) + 12] = struct.pack("<I", 1)  # interface 1: the section has one
    fmt, buf = opened(bytes(data))
    assert fmt.resync(buf, epb(1) + 4, 0, eof=True) == (epb(3), epb(3))


def test_trailing_length_must_match():
    data = bytearray(section())
    data[epb(2) + EPB_LEN - 4 : epb(2) + EPB_LEN] = struct.pack("<I", EPB_LEN + 8)
    fmt, buf = opened(bytes(data))
    assert fmt.resync(buf, epb(1) + 4, 0, eof=True) == (epb(3), epb(3))


def test_search_spans_windows(monkeypatch):
    """A candidate past the first window is found (the window size only bounds memory)."""
    import natlens.capture.pcapng as ng

    monkeypatch.setattr(ng, "RESYNC_WINDOW", 64)
    data = section()
    fmt, _ = opened(data)
    chunk = b"\xab" * 200 + data[epb(0):]
    assert fmt.resync(buffer(chunk), 0, 0, eof=True) == (200, 200)
