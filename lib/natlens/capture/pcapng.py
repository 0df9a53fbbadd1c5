"""pcapng files: several sections and interfaces, each with its own link type and clock.

Reads the Section Header, Interface Description, Enhanced Packet, Simple Packet
and (obsolete) Packet blocks. Each interface keeps its own timestamp resolution
(if_tsresol) and offset (if_tsoffset); dpkt 1.9.8 applies the first interface's
resolution to every packet, which is wrong for multi-interface files.
Other blocks (name resolution, statistics, secrets, custom) are counted by type.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from natlens.capture import walk as walker
from natlens.capture.buffer import Buffer
from natlens.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Records, concat, empty
from natlens.capture.schema import ANOMALY_BITS
from natlens.errors import NatlensError

SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
MAX_BLOCK = 1 << 26
BLOCK_NAMES = {NRB: "name-resolution", ISB: "interface-statistics", 0xA: "decryption-secrets",
               0xBAD: "custom", 0x40000BAD: "custom"}


@dataclass
class Interface:
    """One capture interface of a pcapng section (an IDB)."""

    linktype: int
    snaplen: int
    name: str = ""
    tsresol: int = 6  # the if_tsresol byte: 10^-n, or 2^-n with the top bit set
    tsoffset: int = 0  # seconds added to every timestamp

    def to_ns(self, units: np.ndarray) -> np.ndarray:
        """Timestamp units (u64) -> ns since the epoch, exactly for decimal resolutions."""
        if self.tsresol & 0x80:
            # Integer arithmetic: via float64 the result was off by up to ~100 ns at 2^-20.
            k = self.tsresol & 0x7F
            units = units.astype(np.uint64)
            sec = (units >> np.uint64(k)).astype(np.int64)
            frac = units & np.uint64((1 << k) - 1)
            if k > 34:  # keep frac * 10^9 within 64 bits; what is dropped is < 0.06 ns
                frac >>= np.uint64(k - 34)
                k = 34
            ns = sec * 1_000_000_000 + ((frac * np.uint64(1_000_000_000)) >> np.uint64(k)).astype(np.int64)
        else:
            exp = self.tsresol
            units = units.astype(np.int64)
            if exp <= 9:
                ns = units * 10 ** (9 - exp)
            else:
                ns = units // 10 ** (exp - 9) if exp <= 27 else np.zeros_like(units)
        return ns + self.tsoffset * 1_000_000_000


@dataclass
class PcapngFile:
    """The state of reading one pcapng file across chunks."""

    path: str
    big_endian: bool = False
    interfaces: list[Interface] = field(default_factory=list)
    other_blocks: Counter = field(default_factory=Counter)
    # packets the capturing host says it lost (Interface Statistics Blocks: isb_ifdrop +
    # isb_osdrop, cumulative), by (section, interface id)
    drops: dict[tuple[int, int], int] = field(default_factory=dict)
    section: int = 0

    @classmethod
    def from_header(cls, path: str, header: bytes) -> PcapngFile:
        if len(header) < 12:
            raise NatlensError("pcapng section header cut short", path=path, where=0)
        magic = header[8:12]
        if magic == b"\x1a\x2b\x3c\x4d":
            big = True
        elif magic == b"\x4d\x3c\x2b\x1a":
            big = False
        else:
            raise NatlensError(f"pcapng section header has a bad byte-order magic 0x{magic.hex()}",
                               path=path, where=8)
        return cls(path, big_endian=big)

    @property
    def data_start(self) -> int:
        return 0

    @property
    def linktypes(self) -> list[int]:
        return sorted({i.linktype for i in self.interfaces})

    resync_step = 4  # blocks start on 4-byte boundaries

    def resync(self, buf: Buffer, start: int, file_pos: int, eof: bool) -> tuple[int | None, int]:
        """Placeholder until the block search lands: no resynchronization (the old behaviour)."""
        return None, (buf.length if eof else start)

    def holds_packet(self, head: np.ndarray) -> bool:
        """Whether an incomplete block starting with `head` is a packet block; a cut
        statistics or name block is no lost packet. Unknown (under 4 bytes): yes."""
        if len(head) < 4:
            return True
        btype = int.from_bytes(bytes(head[:4]), "big" if self.big_endian else "little")
        return btype in (EPB, SPB, PB)

    @property
    def interface_count(self) -> int:
        return len(self.interfaces)

    @property
    def sections(self) -> int:
        return self.section + 1

    def parse(self, buf: Buffer, start: int, eof: bool = False) -> tuple[Records, int, int]:
        """Packet records of buf[start:], handling section and interface blocks on the way."""
        parts: list[Records] = []
        off = start
        while True:
            offs, stop, status = walker.walk(
                buf.raw, off, lenpos=4, add=0, big_endian=self.big_endian, minlen=12,
                maxlen=MAX_BLOCK, align=4, stop_type=SHB, end=buf.length,
            )
            if len(offs):
                parts.append(self._blocks(buf, offs))
            if status != walker.STOP_TYPE:
                break
            nxt = self._section(buf, stop)
            if nxt is None:  # the section header is not all in this chunk yet
                status = walker.END
                break
            if nxt < 0:
                status = walker.BAD_LENGTH
                break
            off = nxt
        if not parts:
            return empty(buf), stop, status
        if len(parts) == 1:
            return parts[0], stop, status
        return concat(buf, parts), stop, status

    def _section(self, buf: Buffer, off: int) -> int | None:
        """Start a new section at `off`: the offset after its header block, None if the
        block is not all in this chunk yet, -1 if it is unreadable."""
        if off + 12 > buf.length:
            return None
        magic = bytes(buf.raw[off + 8 : off + 12])
        if magic not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
            return -1
        big = magic == b"\x1a\x2b\x3c\x4d"
        length = int(buf.u32(np.array([off + 4]), big)[0])
        if length < 28 or length % 4 or length > MAX_BLOCK:
            return -1
        self.big_endian = big
        if off + length > buf.length:
            return None
        self.interfaces = []
        self.section += 1
        return off + length

    def _interface(self, buf: Buffer, off: int, length: int) -> None:
        order = ">" if self.big_endian else "<"
        raw = bytes(buf.raw[off : off + length])
        if length < 20:  # no room for the link type: its packets count as unknown-linktype
            self.interfaces.append(Interface(-1, 0))
            self.other_blocks["bad-interface-block"] += 1
            return
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", raw, 8)
        iface = Interface(linktype, snaplen)
        for code, value in _options(raw, 16, length - 4, order):
            if code == 2:
                iface.name = value.decode("utf-8", "replace")
            elif code == 9 and value and (value[0] & 0x7F) <= 63:
                iface.tsresol = value[0]
            elif code == 14 and len(value) == 8:
                offset = struct.unpack(order + "q", value)[0]
                iface.tsoffset = offset if abs(offset) < 1 << 32 else 0
        self.interfaces.append(iface)

    def _statistics(self, buf: Buffer, off: int, length: int) -> None:
        """An Interface Statistics Block: keep the interface's drop counters (cumulative)."""
        if length < 24:
            return
        order = ">" if self.big_endian else "<"
        raw = bytes(buf.raw[off : off + length])
        iface = struct.unpack_from(order + "I", raw, 8)[0]
        lost = 0
        for code, value in _options(raw, 20, length - 4, order):
            if code in (5, 7) and len(value) == 8:  # isb_ifdrop, isb_osdrop
                lost += struct.unpack(order + "Q", value)[0]
        key = (self.section, iface)
        self.drops[key] = max(self.drops.get(key, 0), lost)

    def _blocks(self, buf: Buffer, offs: np.ndarray) -> Records:
        big = self.big_endian
        types = buf.u32(offs, big)
        lengths = buf.u32(offs + 4, big).astype(np.int64)
        # Interfaces defined before each block: a packet may only use those, whatever
        # chunk its interface block happens to fall in.
        defined = len(self.interfaces) + np.cumsum(types == IDB)
        for i in np.flatnonzero(types == IDB):
            self._interface(buf, int(offs[i]), int(lengths[i]))
        is_pkt = (types == EPB) | (types == SPB) | (types == PB)
        for t, c in zip(*np.unique(types[~is_pkt & (types != IDB)], return_counts=True), strict=True):
            self.other_blocks[BLOCK_NAMES.get(int(t), f"type-0x{int(t):x}")] += int(c)
        for i in np.flatnonzero(types == ISB):
            self._statistics(buf, int(offs[i]), int(lengths[i]))
        idx = np.flatnonzero(is_pkt)
        offs, types, lengths, defined = offs[idx], types[idx], lengths[idx], defined[idx]
        n = len(offs)
        simple = types == SPB
        iface = np.where(types == PB, buf.u16(offs + 8, big), buf.u32(offs + 8, big)).astype(np.int64)
        iface[simple] = 0
        hi = buf.u32(offs + 12, big).astype(np.uint64)
        lo = buf.u32(offs + 16, big).astype(np.uint64)
        units = (hi << np.uint64(32)) | lo
        caplen = buf.u32(offs + 20, big).astype(np.int64)
        wirelen = buf.u32(offs + 24, big).astype(np.int64)
        data = offs + 28
        # Simple packet blocks: no interface id, no time; the length is the original length.
        wirelen[simple] = buf.u32(offs[simple] + 8, big)
        caplen[simple] = np.minimum(wirelen[simple], lengths[simple] - 16)
        data[simple] = offs[simple] + 12
        bad = (iface >= defined) | (lengths < np.where(simple, 16, 32))
        bad |= data + caplen > offs + lengths - 4
        bad |= buf.u32(offs + lengths - 4, big).astype(np.int64) != lengths
        caplen[bad] = 0
        linktype = np.zeros(n, np.int32)
        ts_ns = np.zeros(n, np.int64)
        for i, itf in enumerate(self.interfaces):
            sel = (iface == i) & ~bad
            linktype[sel] = itf.linktype
            ts_ns[sel] = itf.to_ns(units[sel])
            if itf.snaplen:
                sel &= simple
                caplen[sel] = np.minimum(caplen[sel], itf.snaplen)
        direction = np.full(n, DIR_UNKNOWN, np.int8)
        opt = np.flatnonzero(~simple & ~bad)
        if len(opt):
            start = data[opt] + ((caplen[opt] + 3) & ~3)
            flags = _epb_flags(buf, start, offs[opt] + lengths[opt] - 4, big)
            d = flags & 3
            direction[opt[d == 1]] = DIR_IN
            direction[opt[d == 2]] = DIR_OUT
        return Records(
            buf=buf, off=data, caplen=caplen, wirelen=wirelen, ts_ns=ts_ns,
            ts_valid=~simple & ~bad, iface=np.where(bad, -1, iface).astype(np.int32),
            linktype=linktype, direction=direction, bad=bad,
            anomaly=np.where(~bad & (wirelen < caplen), ANOMALY_BITS["wirelen-below-caplen"], 0).astype(np.uint16),
        )


def _epb_flags(buf: Buffer, cur: np.ndarray, end: np.ndarray, big: bool) -> np.ndarray:
    """The epb_flags option (code 2) of each block, 0 where absent; a vectorized TLV walk."""
    flags = np.zeros(len(cur), np.int64)
    live = np.flatnonzero(cur + 4 <= end)
    cur = cur.copy()
    for _ in range(32):
        if not len(live):
            break
        c = cur[live]
        code = buf.u16(c, big)
        length = buf.u16(c + 2, big).astype(np.int64)
        hit = (code == 2) & (length == 4) & (c + 8 <= end[live])
        flags[live[hit]] = buf.u32(c[hit] + 4, big)
        nxt = c + 4 + ((length + 3) & ~3)
        cur[live] = nxt
        keep = (code != 0) & ~hit & (nxt + 4 <= end[live])
        live = live[keep]
    return flags


def _options(raw: bytes, start: int, end: int, order: str):
    """(code, value) of the options of one block, for the few non-packet blocks."""
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", raw, pos)
        if code == 0:
            return
        yield code, raw[pos + 4 : pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)
