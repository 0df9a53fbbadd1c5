"""pcapng files: several sections and interfaces, each with its own link type and clock.

Reads the Section Header, Interface Description, Enhanced Packet, Simple Packet
and (obsolete) Packet blocks. Each interface keeps its own timestamp resolution
(if_tsresol) and offset (if_tsoffset); dpkt 1.9.8 applies the first interface's
resolution to every packet, which is wrong for multi-interface files.
Other blocks (name resolution, statistics, secrets, custom) are counted by type.

Reading is linear in the number of blocks, sections and interfaces, and its memory
does not grow with them: one walker call covers every section of a chunk that has the
current byte order, all blocks of a chunk are handled at once with numpy, and only the
current section's interfaces are kept (packet interface ids are per section).
Timestamps are computed exactly in integers; one that int64 ns since the epoch cannot
hold is null with the "ts-out-of-range" anomaly, never wrapped.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from natlens.capture import walk as walker
from natlens.capture.buffer import Buffer
from natlens.capture.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, Records, empty
from natlens.capture.schema import ANOMALY_BITS
from natlens.errors import NatlensError

SHB, IDB, PB, SPB, NRB, ISB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0xA
MAX_BLOCK = 1 << 26
BLOCK_NAMES = {NRB: "name-resolution", ISB: "interface-statistics", DSB: "decryption-secrets",
               0xBAD: "custom", 0x40000BAD: "custom"}
# Block types a resynchronization may land on: those of draft-ietf-opsawg-pcapng's
# registry (7 IRIG timestamp, 8 ARINC 429, 9 systemd journal export are requested ones).
KNOWN_TYPES = (IDB, PB, SPB, NRB, ISB, EPB, 7, 8, 9, DSB, 0xBAD, 0x40000BAD)
LE_MAGIC, BE_MAGIC = b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"
RESYNC_WINDOW = 1 << 20  # candidate bytes examined at once by resync, at most
FIRST_WINDOW = 4096  # the first window: the next block is usually near
U64 = np.uint64
NS = 1_000_000_000
# int64 ns = S * 10^9 + f (0 <= f < 10^9) holds for S in [S_MIN, S_MAX], and for one more
# second at each end when f is small (large) enough.
S_MAX, F_MAX = divmod(2**63 - 1, NS)  # 9223372036, 854775807
S_MIN, F_MIN = divmod(-(2**63), NS)  # -9223372037, 145224192


def _mulshift(frac: np.ndarray, k: int) -> np.ndarray:
    """floor(frac * 10^9 / 2^k) exactly for u64 frac and 1 <= k <= 127 (128-bit product)."""
    a, b = frac >> U64(32), frac & U64(0xFFFFFFFF)
    hi_part, lo_part = a * U64(NS), b * U64(NS)  # each < 2^62
    lo = (hi_part << U64(32)) + lo_part  # wraps: the carry goes into hi
    hi = (hi_part >> U64(32)) + (lo < lo_part).astype(U64)
    if k < 64:
        return ((lo >> U64(k)) | (hi << U64(64 - k))).astype(np.int64)
    return (hi >> U64(k - 64)).astype(np.int64)


def _split(units: np.ndarray, tsresol: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamp units (u64) of one if_tsresol -> whole seconds (u64) and the ns within
    the second (floored, < 10^9), exactly for every resolution byte."""
    zero = np.zeros(len(units), np.int64)
    if tsresol & 0x80:
        k = tsresol & 0x7F
        if k == 0:
            return units, zero
        if k >= 64:
            return np.zeros(len(units), U64), _mulshift(units, k)
        return units >> U64(k), _mulshift(units & U64((1 << k) - 1), k)
    per_sec = 10**tsresol
    if per_sec >= 2**64:
        sec, frac = np.zeros(len(units), U64), units
    else:
        sec, frac = units // U64(per_sec), units % U64(per_sec)
    if tsresol <= 9:
        return sec, (frac * U64(10 ** (9 - tsresol))).astype(np.int64)
    div = 10 ** (tsresol - 9)
    return sec, (frac // U64(div)).astype(np.int64) if div < 2**64 else zero


def _with_offset(sec: np.ndarray, frac: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sec + offset) * 10^9 + frac as int64 ns, and whether it fits: checked exactly in
    u64 (offset is an int64 of seconds, sec a u64), computed modulo 2^64 where it fits."""
    off_u = offset.astype(np.int64).view(U64)
    neg = offset < 0
    mag = np.where(neg, ~off_u + U64(1), off_u)  # |offset|, exact up to 2^63
    s_hi = np.where(frac <= F_MAX, S_MAX, S_MAX - 1).astype(U64)  # largest S for this frac
    s_lo = np.where(frac >= F_MIN, -S_MIN, -S_MIN - 1).astype(U64)  # -(smallest S)
    # offset >= 0: sec <= s_hi - offset; offset < 0: |offset| - (-s_lo) <= sec <= s_hi + |offset|
    hi = np.where(neg, s_hi + mag, s_hi - mag)
    lo = np.where(neg & (mag > s_lo), mag - s_lo, U64(0))
    ok = (sec <= hi) & (sec >= lo) & (neg | (mag <= s_hi))
    total = (sec + off_u) * U64(NS) + frac.view(U64)
    return np.where(ok, total.view(np.int64), 0), ok


def units_to_ns(units: np.ndarray, tsresol: np.ndarray, tsoffset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Timestamp units (u64) -> (ns since the epoch as int64, whether it fits).

    ns = floor(units * 10^9 / resolution) + tsoffset * 10^9, exactly, for every
    if_tsresol byte (10^-n or 2^-n) and int64 if_tsoffset; where int64 cannot hold
    the result, ns is 0 and the flag False (never a wrapped value). Grouped by the
    distinct resolutions (at most 256), not by interface.
    """
    units = units.astype(U64)
    sec = np.zeros(len(units), U64)
    frac = np.zeros(len(units), np.int64)
    tsresol = np.asarray(tsresol)
    for r in np.unique(tsresol):
        sel = np.flatnonzero(tsresol == r)
        sec[sel], frac[sel] = _split(units[sel], int(r))
    return _with_offset(sec, frac, np.asarray(tsoffset, np.int64))


@dataclass
class Interface:
    """One capture interface of a pcapng section (an IDB)."""

    linktype: int
    snaplen: int
    tsresol: int = 6  # the if_tsresol byte: 10^-n, or 2^-n with the top bit set
    tsoffset: int = 0  # seconds added to every timestamp

    def to_ns(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Timestamp units (u64) -> (ns since the epoch, whether int64 holds it)."""
        n = len(units)
        return units_to_ns(units, np.full(n, self.tsresol), np.full(n, self.tsoffset, np.int64))


class _Interfaces:
    """The interfaces of the current section as growable numpy columns (amortized
    doubling): a chunk's packets gather their link type, snaplen and clock from them."""

    COLUMNS = (("linktype", np.int32), ("snaplen", np.int64), ("tsresol", np.int16),
               ("tsoffset", np.int64))

    def __init__(self) -> None:
        self.n = 0
        self.cols = {name: np.zeros(16, dt) for name, dt in self.COLUMNS}

    def view(self) -> dict[str, np.ndarray]:
        """The columns of the interfaces defined so far (views, no copies)."""
        return {name: col[: self.n] for name, col in self.cols.items()}

    def reset(self) -> None:
        self.n = 0

    def extend(self, new: dict[str, np.ndarray]) -> None:
        """Append interfaces given as columns."""
        k = len(new["linktype"])
        if self.n + k > len(self.cols["linktype"]):
            size = max(2 * (self.n + k), 16)
            for name, col in self.cols.items():
                grown = np.zeros(size, col.dtype)
                grown[: self.n] = col[: self.n]
                self.cols[name] = grown
        for name, col in self.cols.items():
            col[self.n : self.n + k] = new[name]
        self.n += k


@dataclass
class PcapngFile:
    """The state of reading one pcapng file across chunks. Holds the current section's
    interfaces and running totals only, so memory does not grow with the file."""

    path: str
    big_endian: bool = False
    other_blocks: Counter = field(default_factory=Counter)
    section: int = 0  # section headers read so far
    ifaces: _Interfaces = field(default_factory=_Interfaces)
    linktype_counts: Counter = field(default_factory=Counter)  # interfaces per link type
    interfaces_total: int = 0  # interface blocks of every section
    # packets the capturing host says it lost (Interface Statistics Blocks: isb_ifdrop +
    # isb_osdrop, cumulative): the current section's by interface id, earlier ones summed
    section_drops: dict[int, int] = field(default_factory=dict)
    earlier_drops: int = 0
    statistics_seen: bool = False
    # a section header or interface block of the open section was unreadable: which
    # interface its later packets name is not known until the next section header
    interfaces_unknown: bool = False
    version: tuple[int, int] = (1, 0)  # of the first section header

    @classmethod
    def from_header(cls, path: str, header: bytes) -> PcapngFile:
        """The state for a file starting with `header` (its first 12+ bytes)."""
        if len(header) < 12:
            raise NatlensError("pcapng section header cut short", path=path, where=0)
        magic = header[8:12]
        if magic not in (BE_MAGIC, LE_MAGIC):
            raise NatlensError(f"pcapng section header has a bad byte-order magic 0x{magic.hex()}",
                               path=path, where=8)
        big = magic == BE_MAGIC
        version = (struct.unpack(">HH" if big else "<HH", header[12:16]) if len(header) >= 16 else (1, 0))
        return cls(path, big_endian=big, version=tuple(version))

    @property
    def data_start(self) -> int:
        """Blocks start at offset 0: the section header is one of them."""
        return 0

    @property
    def linktypes(self) -> list[int]:
        """Distinct link types of every interface of every section."""
        return sorted(self.linktype_counts)

    @property
    def interface_count(self) -> int:
        """Interface Description Blocks of every section."""
        return self.interfaces_total

    @property
    def sections(self) -> int:
        """Section Header Blocks read."""
        return self.section

    @property
    def drops(self) -> dict[tuple[int, int], int]:
        """Drops by (section, interface) for the current section; key (-1, -1) holds the
        sum over earlier sections (kept summed so memory does not grow). Empty: no
        statistics block was read."""
        if not self.statistics_seen:
            return {}
        out = {(-1, -1): self.earlier_drops} if self.section > 1 else {}
        out.update({(self.section - 1, i): v for i, v in self.section_drops.items()})
        return out

    @property
    def dropped(self) -> int | None:
        """Packets lost over every section and interface; None without statistics blocks."""
        return sum(self.drops.values()) if self.statistics_seen else None

    resync_step = 4  # blocks start on 4-byte boundaries
    VERSION_NAME = "pcapng section version"
    MAJOR, MINOR, VERSION_AT = 1, 0, 12  # the section version this reader reads, and where

    def after_bad(self, head: np.ndarray) -> str:
        """The block that could not be read began with `head`. A section header or an
        interface block lost means the interfaces the section's later packets name are
        not known (they would take another interface's link type and clock): those
        packets count malformed until the next section header. Says so, or ''."""
        btype = self._type(head)
        if btype not in (SHB, IDB):
            return ""
        self.interfaces_unknown = True
        what = "a section header" if btype == SHB else "an interface description"
        return (f"; it was {what}, so the interfaces the next packets name are unknown: they count "
                "malformed until the next section header")

    def ends_whole(self, buf: Buffer, start: int) -> bool:
        """Whether buf[start:] (the file's last bytes, one block that claims to run past
        them) is a whole block whose leading length is damaged: its trailing length says it
        ends exactly at the end of the file. Else it was cut short (tcpdump killed)."""
        n = buf.length - start
        if n < 12 or n % 4:
            return False
        order = "big" if self.big_endian else "little"
        return int.from_bytes(bytes(buf.raw[buf.length - 4 : buf.length]), order) == n

    def why_bad(self, buf: Buffer, off: int) -> str:
        """What is wrong with the block at `off`, for the warning."""
        head = buf.raw[off : off + 12]
        if len(head) < 12:
            return "block header cut short"
        order = "big" if self.big_endian else "little"
        length = int.from_bytes(bytes(head[4:8]), order)
        if int.from_bytes(bytes(head[:4]), order) == SHB and bytes(head[8:12]) not in (BE_MAGIC, LE_MAGIC):
            return "section header with no valid byte-order magic"
        if length < 12 or length % 4 or length > MAX_BLOCK:
            return f"block length {length:,} is impossible"
        if off + length <= buf.length:
            trailer = int.from_bytes(bytes(buf.raw[off + length - 4 : off + length]), order)
            if trailer != length:
                return f"block length {length:,} differs from its trailing length {trailer:,}"
        return f"block length {length:,} runs past the end of the file and no block follows it"

    def holds_packet(self, head: np.ndarray) -> bool:
        """Whether an incomplete block starting with `head` is a packet block; a cut
        statistics or name block is no lost packet. Unknown (under 4 bytes): yes."""
        btype = self._type(head)
        return btype is None or btype in (EPB, SPB, PB)

    def _type(self, head: np.ndarray) -> int | None:
        """The block type `head` starts with (None: fewer than 4 bytes)."""
        if len(head) < 4:
            return None
        return int.from_bytes(bytes(head[:4]), "big" if self.big_endian else "little")

    def parse(self, buf: Buffer, start: int, eof: bool = False) -> tuple[Records, int, int]:
        """Packet records of buf[start:], handling section and interface blocks on the
        way: one walk over the chunk, whatever its sections and their byte orders (a
        section header at `start` too). A section header with no valid byte-order magic
        stops the walk as BAD_LENGTH."""
        offs, stop, status = walker.walk(
            buf.raw, start, lenpos=4, add=0, big_endian=self.big_endian, minlen=12,
            maxlen=MAX_BLOCK, align=4, end=buf.length, section_type=SHB, trailer=True,
        )
        if status == walker.STOP_TYPE:
            status = walker.BAD_LENGTH
        if not len(offs):
            return empty(buf), stop, status
        return self._blocks(buf, offs), stop, status

    def _blocks(self, buf: Buffer, offs: np.ndarray) -> Records:
        """All blocks of one walk at once: sections, interfaces, statistics, packets.
        `offs` carry each block's byte order in walker.ORDER_BIT."""
        order = (offs & walker.ORDER_BIT) != 0
        offs = offs & ~walker.ORDER_BIT
        self.big_endian = bool(order[-1])
        big = bool(order[0]) if order.all() or not order.any() else order
        types = _u32(buf, offs, big)
        lengths = _u32(buf, offs + 4, big).astype(np.int64)
        is_shb, is_idb = types == SHB, types == IDB
        shb_pos = np.flatnonzero(is_shb)
        sec_rel = np.cumsum(is_shb)  # 0: the section open before this walk, k: after the kth
        idb_seen = np.cumsum(is_idb)  # interface blocks of this walk up to each block
        k0 = self.ifaces.n
        new = _interfaces(buf, offs[is_idb], lengths[is_idb], _sub(big, is_idb))
        table = {name: np.concatenate([col, new[name]]) for name, col in self.ifaces.view().items()}
        # Interface blocks of this walk before each section's header; -k0 for the open one.
        first = np.concatenate([[-k0], idb_seen[shb_pos]]).astype(np.int64)
        is_pkt = (types == EPB) | (types == SPB) | (types == PB)
        others = types[~is_pkt & ~is_idb & ~is_shb]
        for t, c in zip(*np.unique(others, return_counts=True), strict=True):
            self.other_blocks[BLOCK_NAMES.get(int(t), f"type-0x{int(t):x}")] += int(c)
        self._statistics(buf, offs, lengths, types, sec_rel, order)
        self._tally(new, idb_seen, shb_pos)
        idx = np.flatnonzero(is_pkt)
        s = sec_rel[idx]
        defined = idb_seen[idx] - first[s]
        if self.interfaces_unknown:
            defined = np.where(s == 0, -1, defined)  # every id is unknown: malformed
            self.interfaces_unknown = not len(shb_pos)
        return _packets(buf, offs[idx], types[idx], lengths[idx], _sub(big, idx), table,
                        defined=defined, base=k0 + first[s])

    def _tally(self, new: dict[str, np.ndarray], idb_seen: np.ndarray, shb_pos: np.ndarray) -> None:
        """Count the walk's sections and interfaces; keep the last section's interfaces."""
        good = new["linktype"] >= 0
        lt, c = np.unique(new["linktype"][good], return_counts=True)
        self.linktype_counts.update(dict(zip(lt.tolist(), c.tolist(), strict=True)))
        self.interfaces_total += len(new["linktype"])
        self.section += len(shb_pos)
        if len(shb_pos):
            self.ifaces.reset()
            keep = int(idb_seen[shb_pos[-1]])  # interfaces of the last section start here
            new = {name: col[keep:] for name, col in new.items()}
        self.ifaces.extend(new)

    def _statistics(self, buf: Buffer, offs: np.ndarray, lengths: np.ndarray, types: np.ndarray,
                    sec_rel: np.ndarray, order: np.ndarray) -> None:
        """Interface Statistics Blocks: keep each interface's drop counters (cumulative, so
        the largest); a section's are summed into earlier_drops when the next one starts."""
        current = 0
        for i in np.flatnonzero((types == ISB) | (types == SHB)):
            if types[i] == SHB or sec_rel[i] != current:
                self.earlier_drops += sum(self.section_drops.values())
                self.section_drops = {}
                current = int(sec_rel[i])
                continue
            length = int(lengths[i])
            if length < 24:  # no room for the interface id: counted by type only
                continue
            raw = bytes(buf.raw[int(offs[i]) : int(offs[i]) + length])
            o = ">" if order[i] else "<"
            iface = struct.unpack_from(o + "I", raw, 8)[0]
            lost = 0
            for code, value in _options(raw, 20, length - 4, o):
                if code in (5, 7) and len(value) == 8:  # isb_ifdrop, isb_osdrop
                    lost += struct.unpack(o + "Q", value)[0]
            self.section_drops[iface] = max(self.section_drops.get(iface, 0), lost)
            self.statistics_seen = True

    def resync(self, buf: Buffer, start: int, file_pos: int, eof: bool) -> tuple[int | None, int]:
        """Find the first plausible block at or after `start` (file offset a multiple of 4).

        buf.raw[:buf.length] holds file bytes from file offset `file_pos`. A candidate
        has a known type (a section header needs a valid byte-order magic, either
        order), a length >= 12 (28 for a section header), a multiple of 4, at most
        MAX_BLOCK, the same trailing length, for EPB/PB an interface id of the current
        section (unless its interfaces were lost), and is followed by a block of a known
        type (whose own length may be damaged) or by exactly the end of the file. Returns (off, off) for the first one; else (None, safe): no candidate
        starts before `safe` (the reader may drop those bytes); safe is the offset of
        the first candidate not decidable yet (its block or the next header beyond
        buf, not eof), or buf.length. Vectorized over windows that grow from FIRST_WINDOW
        to RESYNC_WINDOW bytes, so the work is linear in the bytes skipped.
        """
        lo, width = start + (-(file_pos + start) % 4), FIRST_WINDOW
        while lo < buf.length:
            pos = np.arange(lo, min(lo + width, buf.length), 4, dtype=np.int64)
            verdict = self._candidates(buf, pos, eof)
            hit = np.flatnonzero(verdict != 0)
            if len(hit):
                off = int(pos[hit[0]])
                return (off, off) if verdict[hit[0]] == 1 else (None, off)
            lo, width = lo + width, min(2 * width, RESYNC_WINDOW)  # near first: linear in the bytes skipped
        return None, buf.length

    def _candidates(self, buf: Buffer, pos: np.ndarray, eof: bool) -> np.ndarray:
        """Per offset: 1 a confirmed block, 2 undecided (needs more bytes), 0 none."""
        n = buf.length
        ok, big, length = _header(buf, pos, self.big_endian)
        need_head = pos + 12 > n  # the header (with a section magic) is not all here
        end = pos + length
        inside = end <= n
        at = np.where(ok & inside, end, 0)
        ok &= ~inside | (_u32(buf, at - 4, big).astype(np.int64) == length)
        btype = _u32(buf, pos, big)
        pkt = (btype == EPB) | (btype == PB)
        iface = np.where(btype == PB, _u16(buf, pos + 8, big), _u32(buf, pos + 8, big))
        if not self.interfaces_unknown:  # else every id is unknown: read them, count them malformed
            ok &= ~pkt | (iface.astype(np.int64) < self.ifaces.n)
        # what follows need only be a block type: its length may be the next damage
        nxt_ok = np.isin(_u32(buf, np.where(inside, end, 0), big), (*KNOWN_TYPES, SHB))
        nxt_here = end + 12 <= n
        at_end = eof & (end == n)
        confirmed = ok & inside & ~need_head & (at_end | (nxt_here & nxt_ok))
        if eof:
            return confirmed.astype(np.int8)
        # a short next header may still be a plausible one once more bytes arrive
        undecided = need_head | (ok & (~inside | ~nxt_here))
        return np.where(confirmed, 1, np.where(undecided, 2, 0)).astype(np.int8)


def _u32(buf: Buffer, at: np.ndarray, big: np.ndarray | bool) -> np.ndarray:
    """u32 at each offset in each offset's byte order (offsets clipped into the buffer)."""
    at = np.clip(at, 0, buf.length)
    if isinstance(big, bool | np.bool_):
        return buf.u32(at, bool(big))
    return np.where(big, buf.be32[at], buf.le32[at])


def _u16(buf: Buffer, at: np.ndarray, big: np.ndarray | bool) -> np.ndarray:
    """u16 at each offset in each offset's byte order (offsets clipped into the buffer)."""
    at = np.clip(at, 0, buf.length)
    if isinstance(big, bool | np.bool_):
        return buf.u16(at, bool(big))
    return np.where(big, buf.be16[at], buf.le16[at])


def _sub(big: np.ndarray | bool, idx: np.ndarray) -> np.ndarray | bool:
    """The byte orders of a selection of blocks: one bool when they all share it."""
    return big if isinstance(big, bool) else big[idx]


def _header(buf: Buffer, pos: np.ndarray, big: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether a plausible block header starts at each offset (known type, possible
    length; a section header's byte-order magic sets its order), each header's byte
    order and length. Only reads; whether the block fits is the caller's question."""
    pos = np.clip(pos, 0, buf.length)
    shb = buf.le32[pos] == SHB  # the same in both orders
    le = buf.raw[pos + 8] == LE_MAGIC[0]
    magic_ok = np.where(le, buf.le32[pos + 8] == 0x1A2B3C4D, buf.be32[pos + 8] == 0x1A2B3C4D)
    order = np.where(shb, ~le, big)
    btype = _u32(buf, pos, order)
    length = _u32(buf, pos + 4, order).astype(np.int64)
    known = np.isin(btype, KNOWN_TYPES) | (shb & magic_ok)
    ok = known & (length >= np.where(shb, 28, 12)) & (length % 4 == 0) & (length <= MAX_BLOCK)
    return ok, order, length


def _scan_options(buf: Buffer, cur: np.ndarray, end: np.ndarray, big: np.ndarray | bool,
                  want: dict[int, tuple[int, int]]) -> dict[int, np.ndarray]:
    """Where the first option of each wanted code (with a value length in [min, max])
    starts its value in each block, -1 where absent; a vectorized TLV walk that goes
    on until every block's options end (linear in the options read)."""
    found = {code: np.full(len(cur), -1, np.int64) for code in want}
    live = np.flatnonzero(cur + 4 <= end)
    cur = cur.copy()
    while len(live):
        c, b = cur[live], _sub(big, live)
        code = _u16(buf, c, b)
        length = _u16(buf, c + 2, b).astype(np.int64)
        for wanted, (lo, hi) in want.items():
            hit = (code == wanted) & (length >= lo) & (length <= hi) & (c + 4 + length <= end[live])
            hit &= found[wanted][live] < 0
            found[wanted][live[hit]] = c[hit] + 4
        nxt = c + 4 + ((length + 3) & ~3)
        cur[live] = nxt
        live = live[(code != 0) & (nxt + 4 <= end[live])]
    return found


def _interfaces(buf: Buffer, offs: np.ndarray, lengths: np.ndarray, big: np.ndarray | bool
                ) -> dict[str, np.ndarray]:
    """Interface Description Blocks -> columns of _Interfaces. One too short to hold a
    link type gets -1 (its packets count as unknown-linktype)."""
    short = lengths < 20
    linktype = np.where(short, -1, _u16(buf, offs + 8, big)).astype(np.int32)
    snaplen = np.where(short, 0, _u32(buf, offs + 12, big)).astype(np.int64)
    opts = _scan_options(buf, offs + 16, np.where(short, 0, offs + lengths - 4), big,
                         {9: (1, 0xFFFF), 14: (8, 8)})
    tsresol = np.full(len(offs), 6, np.int16)
    has = opts[9] >= 0
    tsresol[has] = buf.raw[opts[9][has]]
    tsoffset = np.zeros(len(offs), np.int64)
    has = opts[14] >= 0
    at, big_at = opts[14][has], _sub(big, has)
    hi, lo = _u32(buf, at, big_at).astype(U64), _u32(buf, at + 4, big_at).astype(U64)
    hi, lo = np.where(big_at, hi, lo), np.where(big_at, lo, hi)
    tsoffset[has] = ((hi << U64(32)) | lo).view(np.int64)
    return {"linktype": linktype, "snaplen": snaplen, "tsresol": tsresol, "tsoffset": tsoffset}


def _packets(buf: Buffer, offs: np.ndarray, types: np.ndarray, lengths: np.ndarray,
             big: np.ndarray | bool, table: dict[str, np.ndarray], defined: np.ndarray, base: np.ndarray) -> Records:
    """EPB, SPB and PB records. `table`: the interfaces the walk can refer to; a packet's
    interface id i is row base + i of it, valid if i < defined (its section's so far)."""
    n = len(offs)
    simple = types == SPB
    iface = np.where(types == PB, _u16(buf, offs + 8, big), _u32(buf, offs + 8, big)).astype(np.int64)
    iface[simple] = 0
    units = (_u32(buf, offs + 12, big).astype(U64) << U64(32)) | _u32(buf, offs + 16, big).astype(U64)
    caplen = _u32(buf, offs + 20, big).astype(np.int64)
    wirelen = _u32(buf, offs + 24, big).astype(np.int64)
    data = offs + 28
    # Simple packet blocks: no interface id, no time; the length is the original length.
    wirelen[simple] = _u32(buf, offs + 8, big)[simple]
    caplen[simple] = np.minimum(wirelen[simple], lengths[simple] - 16)
    data[simple] = offs[simple] + 12
    bad = (iface >= defined) | (lengths < np.where(simple, 16, 32))
    bad |= data + caplen > offs + lengths - 4
    row = np.where(bad, 0, base + iface)
    if len(table["linktype"]) == 0:
        row = np.zeros(n, np.int64)
        table = {name: np.zeros(1, col.dtype) for name, col in table.items()}
    caplen[bad] = 0
    linktype = np.where(bad, 0, table["linktype"][row]).astype(np.int32)
    snaplen = np.where(bad, 0, table["snaplen"][row])
    timed = ~simple & ~bad
    ts_ns, fits = units_to_ns(units, table["tsresol"][row], table["tsoffset"][row])
    cut = simple & (snaplen > 0)
    caplen[cut] = np.minimum(caplen[cut], snaplen[cut])
    anomaly = np.where(~bad & (wirelen < caplen), ANOMALY_BITS["wirelen-below-caplen"], 0)
    anomaly |= np.where(timed & ~fits, ANOMALY_BITS["ts-out-of-range"], 0)
    anomaly |= np.where(timed & (snaplen > 0) & (caplen > snaplen), ANOMALY_BITS["caplen-over-snaplen"], 0)
    direction = np.full(n, DIR_UNKNOWN, np.int8)
    opt = np.flatnonzero(timed)
    if len(opt):
        start = data[opt] + ((caplen[opt] + 3) & ~3)
        b = _sub(big, opt)
        at = _scan_options(buf, start, offs[opt] + lengths[opt] - 4, b, {2: (4, 4)})[2]
        d = np.where(at >= 0, _u32(buf, np.maximum(at, 0), b), 0) & 3
        direction[opt[d == 1]] = DIR_IN
        direction[opt[d == 2]] = DIR_OUT
    return Records(
        buf=buf, off=data, caplen=caplen, wirelen=wirelen, ts_ns=np.where(timed & fits, ts_ns, 0),
        ts_valid=timed & fits, iface=np.where(bad, -1, iface).astype(np.int32),
        linktype=linktype, direction=direction, bad=bad, anomaly=anomaly.astype(np.uint16),
    )


def _options(raw: bytes, start: int, end: int, order: str):
    """(code, value) of the options of one block, for the few non-packet blocks."""
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", raw, pos)
        if code == 0:
            return
        yield code, raw[pos + 4 : pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)
