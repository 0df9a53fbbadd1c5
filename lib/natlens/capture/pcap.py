"""Classic libpcap files: microsecond and nanosecond, either byte order."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from natlens.capture import link
from natlens.capture import walk as walker
from natlens.capture.buffer import Buffer
from natlens.capture.records import DIR_UNKNOWN, Records
from natlens.capture.schema import ANOMALY_BITS
from natlens.errors import NatlensError

MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
HEADER_LEN = 24
RECORD_HEADER = 16
MAX_WIRELEN = 1 << 24  # a resynchronization candidate claiming more on the wire is no packet
NEAR_S = 86_400  # a candidate record's time is within a day of the records around it
SEARCH_WINDOW = 1 << 20  # bytes of candidate offsets examined at once while resynchronizing, at most
FIRST_WINDOW = 4096  # the first window: the next record is usually near


@dataclass
class PcapFile:
    """The state of reading one pcap file: its header and how to walk records.

    A record longer than the file's snaplen is implausible; it is read only if a record
    header libpcap would read follows it, with 1 or more bytes captured (some writers and fuzzers set a snaplen smaller than what they wrote: from
    then on the snaplen is not trusted, as libpcap never does). Longer than libpcap's limit for the link
    type (link.max_caplen) it is impossible. Either way the reader resynchronizes.
    """

    path: str
    big_endian: bool
    ns_per_unit: int
    snaplen: int
    linktype: int
    version: tuple[int, int]
    trust_snaplen: bool = True
    last_sec: int | None = None  # time of the last record read: resynchronization looks near it

    @classmethod
    def from_header(cls, path: str, header: bytes) -> PcapFile:
        if len(header) < HEADER_LEN:
            raise NatlensError(f"pcap header cut short ({len(header)} of 24 bytes)",
                               path=path, where=0)
        order, unit = MAGICS[header[:4]]
        major, minor, _tz, _sigfigs, snaplen, network = struct.unpack(order + "HHiIII", header[4:24])
        # The top bits of the link-type field may carry the FCS length (pcap spec, section 5);
        # decoders bound packets by their IP lengths, so a trailing FCS needs no handling.
        return cls(path, order == ">", unit, snaplen, network & 0x03FFFFFF, (major, minor))

    @property
    def data_start(self) -> int:
        return HEADER_LEN

    @property
    def linktypes(self) -> list[int]:
        return [self.linktype]

    sections = interface_count = 1
    VERSION_NAME = "pcap version"
    MAJOR, MINOR, VERSION_AT = 2, 4, 4  # the version this reader reads, and where the file says it
    resync_step = 1  # a pcap record may start at any byte

    @property
    def units_per_second(self) -> int:
        """Steps of the record's time fraction in a second (10^6, or 10^9 for ns files)."""
        return 1_000_000_000 // self.ns_per_unit

    @property
    def max_caplen(self) -> int:
        """The most bytes a record of this file can hold."""
        return link.max_caplen(self.linktype)

    @property
    def plausible_caplen(self) -> int:
        """The most bytes a record is expected to hold: the snaplen while it is trusted."""
        if self.trust_snaplen and 0 < self.snaplen < self.max_caplen:
            return self.snaplen
        return self.max_caplen

    def holds_packet(self, head: np.ndarray) -> bool:
        """Whether an incomplete record starting with `head` is a packet (always, in pcap)."""
        return True

    def ends_whole(self, buf: Buffer, start: int) -> bool:
        """A pcap record has no trailing length: a record running past the end of the file
        is taken as cut short unless a record header follows it (reader)."""
        return False

    def after_bad(self, head: np.ndarray) -> str:
        """Nothing else depends on a lost pcap record."""
        return ""

    def why_bad(self, buf: Buffer, off: int) -> str:
        """What is wrong with the record header at `off`, for the warning."""
        caplen = self._caplen(buf, off)
        if caplen > self.max_caplen:
            return (f"record length {caplen:,} is more than a linktype-{self.linktype} record can "
                    f"hold ({self.max_caplen:,})")
        if caplen > self.plausible_caplen:
            return (f"record length {caplen:,} is more than the snaplen ({self.snaplen:,}) and no "
                    "record header follows it")
        return f"record length {caplen:,} runs past the end of the file and no record header follows it"

    def parse(self, buf: Buffer, start: int, eof: bool = False) -> tuple[Records, int, int]:
        """Records of buf[start:]; returns them, where parsing stopped and why. `eof`:
        buf ends where the file does."""
        offs, stop, status = self.walk(buf, start)
        if status == walker.BAD_LENGTH and self.trust_snaplen and self._caplen(buf, stop) <= self.max_caplen:
            verdict = self._follows(buf, np.array([stop]), eof, self._fits)[0]
            if verdict == UNDECIDED:
                status = walker.END
            elif verdict == YES:
                self.trust_snaplen = False
                more, stop, status = self.walk(buf, stop)
                offs = np.concatenate([offs, more])
        return self._records(buf, offs), stop, status

    def _keep_time(self, sec: np.ndarray) -> None:
        """Move the time resynchronization looks near over the seconds of records just read."""
        self.last_sec = kept_time(self.last_sec, sec)

    def _caplen(self, buf: Buffer, off: int) -> int:
        return int(buf.u32(np.array([off + 8]), self.big_endian)[0])

    def walk(self, buf: Buffer, start: int) -> tuple[np.ndarray, int, int]:
        """The offsets of the chain of plausible records from `start` (walk.walk's result)."""
        return walker.walk(buf.raw, start, lenpos=8, add=RECORD_HEADER, big_endian=self.big_endian,
                           minlen=RECORD_HEADER, maxlen=RECORD_HEADER + self.plausible_caplen,
                           end=buf.length)

    def _records(self, buf: Buffer, offs: np.ndarray) -> Records:
        hdr = buf.window(offs, RECORD_HEADER).view(">u4" if self.big_endian else "<u4")
        hdr = hdr.astype(np.int64)
        sec, frac, caplen, wirelen = hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3]
        n = len(offs)
        bad_frac = frac >= self.units_per_second
        self._keep_time(sec[~bad_frac])
        anomaly = np.zeros(n, np.uint16)
        for bits, flagged in ((ANOMALY_BITS["ts-fraction-invalid"], bad_frac),
                              (ANOMALY_BITS["wirelen-below-caplen"], wirelen < caplen),
                              (ANOMALY_BITS["caplen-over-snaplen"], (caplen > self.snaplen) & (self.snaplen > 0))):
            if flagged.any():
                anomaly[flagged] |= bits
        ts_ns = sec * 1_000_000_000 + frac * self.ns_per_unit
        if bad_frac.any():
            ts_ns[bad_frac] = 0
        return Records(
            buf=buf,
            off=offs + RECORD_HEADER,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts_ns,
            ts_valid=~bad_frac,
            iface=np.zeros(n, np.int32),
            linktype=np.full(n, self.linktype, np.int32),
            direction=np.full(n, DIR_UNKNOWN, np.int8),
            bad=np.zeros(n, bool),
            anomaly=anomaly,
        )

    # ------------------------------------------------------------ resynchronization

    def plausible(self, buf: Buffer, at: np.ndarray, near: np.ndarray | None,
                  limit: int) -> np.ndarray:
        """Whether a record header at each offset (16 bytes in buf) could be a real one:
        1..`limit` bytes captured of no more on the wire, a valid time fraction and, given
        `near` (seconds), a time within a day of it."""
        big = self.big_endian
        caplen = buf.u32(at + 8, big).astype(np.int64)
        wirelen = buf.u32(at + 12, big).astype(np.int64)
        ok = (caplen > 0) & (caplen <= limit) & (caplen <= wirelen)
        ok &= wirelen <= MAX_WIRELEN
        if near is None:
            return ok & (buf.u32(at + 4, big) < self.units_per_second)
        return ok & self._timely(buf, at, near)

    def _follows(self, buf: Buffer, at: np.ndarray, eof: bool, header_ok) -> np.ndarray:
        """For each record header at `at`: YES if the file ends right after its record or
        a header follows it that passes `header_ok(buf, offsets, times of the records at
        `at`)`; NO if not; UNDECIDED if buf ends first and more of the file is to come."""
        nxt = at + RECORD_HEADER + buf.u32(at + 8, self.big_endian).astype(np.int64)
        out = np.full(len(at), NO, np.int8)
        inside = nxt + RECORD_HEADER <= buf.length
        if inside.any():
            sec = buf.u32(at[inside], self.big_endian).astype(np.int64)
            out[inside] = np.where(header_ok(buf, nxt[inside], sec), YES, NO)
        if eof:
            out[nxt == buf.length] = YES
        else:
            out[~inside] = UNDECIDED
        return out

    def _fits(self, buf: Buffer, at: np.ndarray, _near: np.ndarray) -> np.ndarray:
        """Whether the header at each offset holds a record libpcap would read: 1 to the
        link type's limit of bytes captured (zero bytes, the commonest garbage, do not
        pass). What makes a record over the snaplen real; its time and original length
        are not asked for (fuzzed and broken writers leave those wrong)."""
        caplen = buf.u32(at + 8, self.big_endian).astype(np.int64)
        return (caplen >= 1) & (caplen <= self.max_caplen)

    def _timely(self, buf: Buffer, at: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Whether the header at each offset has a valid time within a day of `near`."""
        sec = buf.u32(at, self.big_endian).astype(np.int64)
        frac = buf.u32(at + 4, self.big_endian)
        return (np.abs(sec - near) <= NEAR_S) & (frac < self.units_per_second)

    def resync(self, buf: Buffer, start: int, file_pos: int, eof: bool) -> tuple[int | None, int]:
        """The first offset >= start where a plausible record starts that is followed by
        another (or by the end of the file): (offset, offset). Else (None, safe): no
        candidate before `safe`, which is where the search resumes with more data.

        A candidate near the last good record's time (tells record headers from packet
        bytes) needs one follower with a near time; one far from it (the clock stepped)
        needs two whole plausible records after it, each near the one before."""
        ref = None if self.last_sec is None else np.int64(self.last_sec)
        limit = self.plausible_caplen
        pos, width = start, FIRST_WINDOW
        while pos + RECORD_HEADER <= buf.length:
            at = np.arange(pos, min(pos + width, buf.length - RECORD_HEADER + 1))
            cand = at[self.plausible(buf, at, None, limit)]
            if len(cand):
                verdict = self._verdict(buf, cand, eof, ref, limit)
                hit = np.flatnonzero(verdict != NO)
                if len(hit):
                    first = int(cand[hit[0]])
                    return (first, first) if verdict[hit[0]] == YES else (None, first)
            pos, width = int(at[-1]) + 1, min(2 * width, SEARCH_WINDOW)  # linear in the bytes skipped
        return None, (buf.length if eof else max(start, buf.length - RECORD_HEADER + 1))


    def _verdict(self, buf: Buffer, cand: np.ndarray, eof: bool, ref, limit: int) -> np.ndarray:
        """YES / NO / UNDECIDED per candidate header (see resync)."""
        sec = buf.u32(cand, self.big_endian).astype(np.int64)
        near = np.ones(len(cand), bool) if ref is None else np.abs(sec - ref) <= NEAR_S
        out = self._follows(buf, cand, eof, self._timely)
        far = np.flatnonzero(~near)
        if len(far):
            def whole(b, at, t):
                return self.plausible(b, at, t, limit)
            c = cand[far]
            first = self._follows(buf, c, eof, whole)
            nxt = c + RECORD_HEADER + buf.u32(c + 8, self.big_endian).astype(np.int64)
            inside = (first == YES) & (nxt + RECORD_HEADER <= buf.length)
            second = np.where(inside, self._follows(buf, np.where(inside, nxt, c), eof, whole), first)
            out[far] = np.where((first == NO) | (second == NO), NO,
                                np.where((first == UNDECIDED) | (second == UNDECIDED), UNDECIDED, YES))
        return out


NO, YES, UNDECIDED = 0, 1, 2


def kept_time(last_sec: int | None, sec: np.ndarray) -> int | None:
    """The time resynchronization looks near after records with times ``sec`` (seconds, in file
    order) were read, given ``last_sec`` before them (None: no record yet): the last record's that
    is within a day of it (a record read from damaged bytes does not move it far), or, when none
    is, of two consecutive records that agree with each other."""
    if not len(sec):
        return last_sec
    ref = int(np.median(sec)) if last_sec is None else last_sec  # an odd first one is outvoted
    near = sec[np.abs(sec - ref) <= NEAR_S]
    if len(near):
        return int(near[-1])
    if len(sec) >= 2 and abs(int(sec[-1]) - int(sec[-2])) <= NEAR_S:
        return int(sec[-1])  # the reference itself was the odd one (a first record's bad time)
    return ref
