"""Read a capture file in bounded chunks: the file format finds the records, the
decoders turn them into packet-table rows, and the tally counts every record."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from natlens.capture import walk as walker
from natlens.capture.buffer import PAD, Buffer
from natlens.capture.decode import anomaly_tally, decode
from natlens.capture.pcap import MAGICS, PcapFile, kept_time
from natlens.capture.pcapng import PcapngFile
from natlens.capture.records import concat
from natlens.capture.schema import BAD_LENGTH, CUT_SHORT, SKIP_REASONS
from natlens.errors import NatlensError

CHUNK_BYTES = 64 << 20  # file bytes decoded at once: bounds the memory of a streamed read
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass(frozen=True)
class Span:
    """Part of a capture file read on its own: bytes [start, end), whose first record is
    record number ``first_record`` of the file; ``last_sec``: the time a whole read of a pcap
    file resynchronizes near when it reaches ``start`` (None: its own records' then), so a span
    damaged after a clock step near its start is read as the whole file is."""

    start: int
    end: int
    first_record: int
    last_sec: int | None = None


@dataclass
class CaptureInfo:
    """What reading one capture file found: the per-capture tally of DESIGN.md section 4.

    Invariant: records == decoded + sum(skipped.values()). Bytes that belong to no
    record (skipped to resynchronize after a "bad-length" record, or a record the file
    ends in) are counted in skipped_bytes by reason and said in a warning.
    """

    path: str
    label: str
    format: str = ""
    size: int = 0
    records: int = 0
    decoded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    linktypes: list[int] = field(default_factory=list)  # of every section and interface
    sections: int = 0
    interfaces: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)  # records per schema.ANOMALIES name
    skipped_bytes: dict[str, int] = field(default_factory=dict)  # bytes in no record, by reason
    resyncs: int = 0  # times reading skipped bytes to find the next record
    # where: [{"at": file offset, "bytes": n, "after_ns": time of the record before (None:
    # none), "until_ns": of the record after (None: none)}], the first MAX_DAMAGED of them
    damaged: list[dict] = field(default_factory=list)
    other_blocks: dict[str, int] = field(default_factory=dict)
    dropped: int | None = None  # packets the capturing host lost (pcapng statistics); None: unknown
    unread_bytes: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None

    def to_dict(self) -> dict:
        return {
            "path": self.path, "label": self.label, "format": self.format, "size": self.size,
            "records": self.records, "decoded": self.decoded, "skipped": dict(self.skipped),
            "warnings": list(self.warnings), "linktypes": list(self.linktypes),
            "sections": self.sections, "interfaces": self.interfaces,
            "anomalies": dict(self.anomalies), "skipped_bytes": dict(self.skipped_bytes),
            "resyncs": self.resyncs, "damaged": [dict(d) for d in self.damaged],
            "other_blocks": dict(self.other_blocks), "dropped": self.dropped,
            "unread_bytes": self.unread_bytes,
            "first_ts_ns": self.first_ts_ns, "last_ts_ns": self.last_ts_ns,
        }


CAPTURE_SUFFIX = re.compile(r"\.(pcapng|pcap|cap|ntar|dmp)\d*$", re.IGNORECASE)


def default_label(path: str | os.PathLike) -> str:
    """The capture point a file is named after: its name without the capture suffix
    (any.pcap -> any, rotated any.pcap3 -> any, 802.1ad_QinQ.pcap -> 802.1ad_QinQ)."""
    name = Path(path).name
    stem = CAPTURE_SUFFIX.sub("", name)
    return name if stem in ("", ".", "..") else stem  # "..pcap" stays itself, never a directory


def open_capture(path: str | os.PathLike) -> tuple[PcapFile | PcapngFile, int]:
    """Check that `path` is a capture file and read its header; returns the format
    state and the file size. Raises NatlensError with a one-line reason otherwise."""
    p = str(path)
    if not os.path.exists(p):
        raise NatlensError("no such file", path=p)
    if os.path.isdir(p):
        raise NatlensError("is a directory, not a capture file", path=p)
    try:
        size = os.path.getsize(p)
        with open(p, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise NatlensError(f"cannot read: {exc.strerror}", path=p) from None
    if size == 0:
        raise NatlensError("empty file (0 bytes), not a capture", path=p)
    if head[:4] in MAGICS:
        return PcapFile.from_header(p, head), size
    if head[:4] == PCAPNG_MAGIC:
        return PcapngFile.from_header(p, head), size
    raise NatlensError(f"not a pcap or pcapng file (starts with 0x{head[:4].hex()})", path=p, where=0)


def iter_tables(
    path: str | os.PathLike,
    label: str | None = None,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    progress=None,
    span: Span | None = None,
    coded: bool = False,
) -> Iterator[pa.Table | CaptureInfo]:
    """Yield the packet table chunk by chunk (pyarrow Tables), then the CaptureInfo.

    Memory stays bounded by `chunk_bytes` (plus the largest record) whatever the file
    size. `progress`, if given, is called with the number of bytes consumed. After a
    record whose length is impossible, reading resynchronizes on the next plausible
    record header (the format's `resync`): the bad record is counted "bad-length" and
    the bytes skipped are counted and said in a warning. `span` (from ``spans``): read only
    that part of the file, its records numbered as in the whole file; the CaptureInfo then
    counts that part (``combined`` makes the file's of them). ``coded``: tables of
    CODED_SCHEMA (text as dictionaries: schema.plain makes them ARROW_SCHEMA's).
    """
    fmt, size = open_capture(path)
    p = str(path)
    info = CaptureInfo(path=p, label=label or default_label(p),
                       format="pcapng" if isinstance(fmt, PcapngFile) else "pcap", size=size)
    span = span or Span(fmt.data_start, size, 0)
    if fmt.version[0] != fmt.MAJOR and span.start == fmt.data_start:
        info.warnings.append(f"{p}@{fmt.VERSION_AT}: {fmt.VERSION_NAME} {fmt.version[0]}.{fmt.version[1]}, "
                             f"not {fmt.MAJOR}.x: read as {fmt.MAJOR}.{fmt.MINOR}")
    if span.last_sec is not None:
        fmt.last_sec = span.last_sec
    st = _Stream(p, fmt, span, chunk_bytes, progress, coded)
    with st:
        while True:
            if st.need_more:
                yield from st.flush(info)  # before the buffer's bytes move
                st.refill()
            buf = st.buf
            if st.searching:
                if not _search(st, buf, info):
                    break
                continue
            rec, stop, status = fmt.parse(buf, st.at, eof=st.eof)
            st.take(rec, info)
            st.advance(stop)
            if status == walker.BAD_LENGTH:
                _bad_record(st, buf, info)
            elif not st.eof:
                st.need_more = True  # a record cut by the chunk's end: read on
            elif not _ends_in_record(st, buf, info):
                break
        yield from st.flush(info)
    _finish(st, info)
    yield info


class _Stream:
    """A capture file read into one buffer, in chunks: what is in it, where reading is
    (a cursor: nothing moves until the buffer is refilled) and what was counted."""

    def __init__(self, path: str, fmt, span: Span, chunk_bytes: int, progress, coded: bool = False):
        self.path, self.fmt, self.chunk_bytes, self.progress = path, fmt, chunk_bytes, progress
        self.coded = coded
        self.size = span.end  # where reading ends: the file's size, or the span's end
        self.raw = np.zeros(chunk_bytes + PAD, np.uint8)
        self.have = 0  # bytes of raw holding file data
        self.at = 0  # the first byte of raw not yet walked or skipped
        self.base = span.start  # file offset of raw[0]
        self.eof = False
        self.need_more = True
        self.buf = Buffer(self.raw, 0)
        self.pending: list[tuple] = []  # (Records, their record numbers) not decoded yet
        self.searching = False  # skipping bytes to the next plausible record
        self.bad_at = 0  # file offset of the record that started the search
        self.bad_why = ""
        self.tally: Counter = Counter()
        self.anomalies: Counter = Counter()
        self.skipped_bytes: Counter = Counter()
        self.resyncs = 0
        self.first_record = self.next_record = span.first_record  # index in the file of the next record found
        self.last_ts_ns: int | None = None  # of the last record read with a time, in file order
        self.damaged: list[dict] = []

    def __enter__(self) -> _Stream:
        self.fh = open(self.path, "rb")  # noqa: SIM115 - closed by __exit__
        self.fh.seek(self.base)
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    @property
    def pos(self) -> int:
        """File offset of the cursor."""
        return self.base + self.at

    def refill(self) -> None:
        """Move the unread bytes to the front and top the buffer up from the file; grow it
        when one record (or an undecided resynchronization candidate) fills it whole."""
        self.need_more = False
        if self.at == 0 and self.have >= self.chunk_bytes:
            self.raw = np.concatenate([self.raw, np.zeros(len(self.raw), np.uint8)])
            self.chunk_bytes = len(self.raw) - PAD
        elif self.at:
            tail = self.have - self.at
            self.raw[:tail] = self.raw[self.at:self.have].copy()
            self.have, self.base, self.at = tail, self.base + self.at, 0
        if not self.eof and self.have < self.chunk_bytes:
            want = min(self.chunk_bytes, self.have + max(0, self.size - self.fh.tell()))
            got = self.fh.readinto(memoryview(self.raw)[self.have:want])
            self.eof = got == 0 or self.fh.tell() >= self.size
            self.have += got
        self.raw[self.have : self.have + PAD] = 0
        self.buf = Buffer(self.raw, self.have)

    def advance(self, to: int) -> None:
        """The bytes up to buf offset `to` are walked or skipped."""
        if self.progress is not None and to > self.at:
            self.progress(to - self.at)
        self.at = to

    def take(self, rec, info: CaptureInfo) -> None:
        """Records found: numbered in file order now, decoded at the next flush."""
        if not len(rec):
            return
        numbers = np.arange(self.next_record, self.next_record + len(rec), dtype=np.int64)
        self.next_record += len(rec)
        self.pending.append((rec, numbers))
        self.anomalies.update(anomaly_tally(rec.anomaly))
        ts = rec.ts_ns if rec.ts_valid.all() else rec.ts_ns[rec.ts_valid]
        if len(ts):
            _times(info, ts)
            if self.damaged and self.damaged[-1]["until_ns"] is None:
                self.damaged[-1]["until_ns"] = int(ts[0])
            self.last_ts_ns = int(ts[-1])

    def flush(self, info: CaptureInfo) -> Iterator[pa.Table]:
        """Decode the records taken since the last flush, as one table."""
        if not self.pending:
            return
        parts, self.pending = self.pending, []
        rec = parts[0][0] if len(parts) == 1 else concat(self.buf, [r for r, _ in parts])
        numbers = parts[0][1] if len(parts) == 1 else np.concatenate([n for _, n in parts])
        table, skipped = decode(rec, info.label, numbers, self.coded)
        self.tally.update(skipped)
        info.decoded += table.num_rows
        yield table

    def count_bad(self, head: np.ndarray) -> None:
        """The record at the cursor is unreadable: one record, if it is a packet's."""
        if self.fmt.holds_packet(head):
            self.tally[SKIP_REASONS[BAD_LENGTH]] += 1
            self.next_record += 1

    def skip(self, nbytes: int, reason: str) -> None:
        """Bytes at the cursor that are in no record."""
        self.skipped_bytes[SKIP_REASONS[reason]] += nbytes
        self.advance(self.at + nbytes)


MAX_RESYNC_WARNINGS = 20
MAX_DAMAGED = 100


def _bad_record(st: _Stream, buf: Buffer, info: CaptureInfo) -> None:
    """A record with an impossible length at the cursor: count it, search from after it."""
    head = st.raw[st.at : min(st.at + 4, st.have)]
    st.bad_why = st.fmt.why_bad(buf, st.at) + st.fmt.after_bad(head)
    st.bad_at = st.pos
    st.count_bad(head)
    st.skip(min(st.fmt.resync_step, st.have - st.at), BAD_LENGTH)
    st.searching = True


def _search(st: _Stream, buf: Buffer, info: CaptureInfo) -> bool:
    """One step of the search for the next plausible record; False when the file ends."""
    found, safe = st.fmt.resync(buf, st.at, st.base, st.eof)
    if found is None and not st.eof:
        st.skip(max(safe, st.at) - st.at, BAD_LENGTH)
        st.need_more = True  # no candidate before `safe`: search on with more of the file
        return True
    st.skip((found if found is not None else st.have) - st.at, BAD_LENGTH)
    st.searching = False
    st.resyncs += 1
    gone = st.pos - st.bad_at
    if len(st.damaged) < MAX_DAMAGED:
        st.damaged.append({"at": st.bad_at, "bytes": gone, "after_ns": st.last_ts_ns, "until_ns": None})
    if found is not None:
        _warn(st, info, f"{st.path}@{st.bad_at}: {st.bad_why}; skipped {gone:,} bytes to the next "
              f"plausible record at byte {st.pos:,} (records in them are not counted)")
        return True
    _warn(st, info, f"{st.path}@{st.bad_at}: {st.bad_why}; no plausible record after it: the "
          f"remaining {gone:,} bytes were not read")
    return False


def _ends_in_record(st: _Stream, buf: Buffer, info: CaptureInfo) -> bool:
    """At the end of the file with bytes left: a record whose length runs past the end.
    If a plausible record follows its header, or its block's trailing length says it ends
    at the end of the file, it was a bad length (True: read on); else the file was cut
    short in the middle of the record (tcpdump killed)."""
    left = st.have - st.at
    if not left:
        return False
    found, _ = st.fmt.resync(buf, st.at + st.fmt.resync_step, st.base, True)
    if found is not None or st.fmt.ends_whole(buf, st.at):
        _bad_record(st, buf, info)
        return True
    info.unread_bytes = left
    if st.fmt.holds_packet(st.raw[st.at : st.have]):
        st.tally[SKIP_REASONS[CUT_SHORT]] += 1
        st.next_record += 1
    info.warnings.append(f"{st.path}@{st.pos}: file cut short in the middle of a record "
                         f"({left} bytes); all complete records were read")
    st.skip(left, CUT_SHORT)
    return False


def _warn(st: _Stream, info: CaptureInfo, text: str) -> None:
    if st.resyncs <= MAX_RESYNC_WARNINGS:
        info.warnings.append(text)


def _finish(st: _Stream, info: CaptureInfo) -> None:
    fmt = st.fmt
    info.records = st.next_record - st.first_record
    info.skipped = {k: st.tally[k] for k in SKIP_REASONS if st.tally.get(k)}
    info.anomalies = dict(st.anomalies)
    info.skipped_bytes = {k: st.skipped_bytes[k] for k in SKIP_REASONS if st.skipped_bytes.get(k)}
    info.resyncs = st.resyncs
    info.damaged = st.damaged
    if st.resyncs > MAX_RESYNC_WARNINGS:
        info.warnings.append(f"{st.path}: {st.resyncs - MAX_RESYNC_WARNINGS:,} more resynchronizations "
                             f"after bad record lengths ({info.skipped_bytes.get('bad-length', 0):,} "
                             "bytes skipped in all)")
    info.linktypes, info.sections, info.interfaces = fmt.linktypes, fmt.sections, fmt.interface_count
    if isinstance(fmt, PcapngFile):
        info.other_blocks = dict(fmt.other_blocks)
        info.dropped = fmt.dropped


def _times(info: CaptureInfo, ts: np.ndarray) -> None:
    """Widen the capture's first and last timestamp to cover `ts` (every record with a
    time, decoded or not)."""
    lo, hi = int(ts.min()), int(ts.max())
    info.first_ts_ns = lo if info.first_ts_ns is None else min(info.first_ts_ns, lo)
    info.last_ts_ns = hi if info.last_ts_ns is None else max(info.last_ts_ns, hi)


def spans(path: str | os.PathLike, n: int) -> list[Span]:
    """The capture cut into up to ``n`` spans of about equal size, to be read apart (one per core).

    Why: one big capture is decoded at the speed of one core. Each cut is at a record that a
    walk of the record headers from the file's start reaches with no impossible length, so the
    spans hold exactly the records reading the whole file finds, and every span but the last is
    undamaged. A pcapng file is one span (a block may depend on interfaces described anywhere
    before it), as is a pcap file damaged before the first cut.
    """
    fmt, size = open_capture(path)
    if n <= 1 or not isinstance(fmt, PcapFile):
        return [Span(fmt.data_start, size, 0)]
    length = size - fmt.data_start
    targets = [fmt.data_start + length * k // n for k in range(1, n)]
    starts = [Span(fmt.data_start, size, 0)] + _cuts(str(path), fmt, size, targets)
    ends = [s.start for s in starts[1:]] + [size]
    return [Span(s.start, end, s.first_record, s.last_sec) for s, end in zip(starts, ends, strict=True)]


def _cuts(path: str, fmt: PcapFile, size: int, targets: list[int]) -> list[Span]:
    """The start of a span at the first record at or after each target offset (its ``end``: the
    file's), for the targets a walk from the file's start reaches before any impossible length.
    The walk reads the records in the batches a whole read parses, and so keeps the time it
    resynchronizes near."""
    st = _Stream(path, fmt, Span(fmt.data_start, size, 0), CHUNK_BYTES, None)
    cuts: list[Span] = []
    walked = 0  # records before the buffer's cursor
    last_sec = None
    with st:
        while targets:
            st.refill()
            offs, stop, status = fmt.walk(st.buf, st.at)
            at = offs + st.base
            sec = st.buf.u32(offs, fmt.big_endian).astype(np.int64)
            timed = st.buf.u32(offs + 4, fmt.big_endian) < fmt.units_per_second
            while targets and (i := int(np.searchsorted(at, targets[0]))) < len(at):
                if not cuts or cuts[-1].start < at[i]:  # a record bigger than a span: one cut for both
                    cuts.append(Span(int(at[i]), size, walked + i, kept_time(last_sec, sec[:i][timed[:i]])))
                targets.pop(0)
            last_sec = kept_time(last_sec, sec[timed])
            walked += len(offs)
            st.at = stop
            if status != walker.END or st.eof:
                break
    return cuts


def combined(parts: list[CaptureInfo]) -> CaptureInfo:
    """The tally of a whole capture from the tallies of its spans (in file order) read apart."""
    first = parts[0]
    out = CaptureInfo(path=first.path, label=first.label, format=first.format, size=first.size,
                      linktypes=list(first.linktypes), sections=first.sections, interfaces=first.interfaces,
                      other_blocks=dict(first.other_blocks), dropped=first.dropped)
    for name in ("skipped", "anomalies", "skipped_bytes"):
        total: Counter = Counter()
        for part in parts:
            total.update(getattr(part, name))
        setattr(out, name, dict(total) if name == "anomalies" else {k: total[k] for k in SKIP_REASONS if total[k]})
    for name in ("records", "decoded", "resyncs", "unread_bytes"):
        setattr(out, name, sum(getattr(part, name) for part in parts))
    out.warnings = [w for part in parts for w in part.warnings]
    out.damaged = [d for part in parts for d in part.damaged][:MAX_DAMAGED]
    firsts = [p.first_ts_ns for p in parts if p.first_ts_ns is not None]
    lasts = [p.last_ts_ns for p in parts if p.last_ts_ns is not None]
    out.first_ts_ns, out.last_ts_ns = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
    return out
