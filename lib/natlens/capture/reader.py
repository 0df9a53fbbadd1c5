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
from natlens.capture.pcap import MAGICS, PcapFile
from natlens.capture.pcapng import PcapngFile
from natlens.capture.schema import CUT_SHORT, SKIP_REASONS
from natlens.errors import NatlensError

CHUNK_BYTES = 64 << 20  # file bytes decoded at once: bounds the memory of a streamed read
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


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
            "other_blocks": dict(self.other_blocks), "dropped": self.dropped,
            "unread_bytes": self.unread_bytes,
            "first_ts_ns": self.first_ts_ns, "last_ts_ns": self.last_ts_ns,
        }


CAPTURE_SUFFIX = re.compile(r"\.(pcapng|pcap|cap|ntar|dmp)\d*$", re.IGNORECASE)


def default_label(path: str | os.PathLike) -> str:
    """The capture point a file is named after: its name without the capture suffix
    (any.pcap -> any, rotated any.pcap3 -> any, 802.1ad_QinQ.pcap -> 802.1ad_QinQ)."""
    return CAPTURE_SUFFIX.sub("", Path(path).name) or Path(path).name


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
) -> Iterator[pa.Table | CaptureInfo]:
    """Yield the packet table chunk by chunk (pyarrow Tables), then the CaptureInfo.

    Memory stays bounded by `chunk_bytes` (plus the largest record) whatever the file
    size. `progress`, if given, is called with the number of bytes consumed.
    """
    fmt, size = open_capture(path)
    p = str(path)
    info = CaptureInfo(path=p, label=label or default_label(p),
                       format="pcapng" if isinstance(fmt, PcapngFile) else "pcap", size=size)
    tally: Counter = Counter()
    anomalies: Counter = Counter()
    record_index = 0
    file_pos = fmt.data_start  # file offset of buf[0]
    raw = np.zeros(chunk_bytes + PAD, np.uint8)
    have = 0  # bytes of raw holding data not yet walked
    eof = False
    with open(p, "rb") as fh:
        fh.seek(fmt.data_start)
        while True:
            if not eof and have < chunk_bytes:
                got = fh.readinto(memoryview(raw)[have:chunk_bytes])
                eof = got == 0 or fh.tell() >= size
                have += got
            raw[have : have + PAD] = 0
            buf = Buffer(raw, have)
            rec, stop, status = fmt.parse(buf, 0, eof=eof)
            if len(rec):
                table, skipped = decode(rec, info.label, record_index)
                record_index += len(rec)
                tally.update(skipped)
                anomalies.update(anomaly_tally(rec.anomaly))
                info.decoded += table.num_rows
                _times(info, rec)
                yield table
            if progress is not None:
                progress(stop)
            if status == walker.BAD_LENGTH:
                info.unread_bytes = size - (file_pos + stop)
                info.warnings.append(
                    f"{p}@{file_pos + stop}: impossible record length; the remaining "
                    f"{info.unread_bytes} bytes were not read")
                break
            if stop == 0 and len(rec) == 0 and not eof:
                # One record larger than the buffer: grow it to hold the record.
                raw = np.concatenate([raw, np.zeros(len(raw), np.uint8)])
                chunk_bytes = len(raw) - PAD
                continue
            # Keep the unwalked tail (a record cut by the chunk boundary) for the next round.
            tail = have - stop
            raw[:tail] = raw[stop:have].copy()
            have, file_pos = tail, file_pos + stop
            if eof:
                if have:
                    info.unread_bytes = have
                    if fmt.holds_packet(raw[:have]):
                        tally[SKIP_REASONS[CUT_SHORT]] += 1
                        record_index += 1
                    info.warnings.append(
                        f"{p}@{file_pos}: file cut short in the middle of a record "
                        f"({have} bytes); all complete records were read")
                break
    info.records = record_index
    info.skipped = {k: tally[k] for k in SKIP_REASONS if tally.get(k)}
    info.anomalies = dict(anomalies)
    info.linktypes, info.sections, info.interfaces = fmt.linktypes, fmt.sections, fmt.interface_count
    if isinstance(fmt, PcapngFile):
        info.other_blocks = dict(fmt.other_blocks)
        if fmt.drops:
            info.dropped = sum(fmt.drops.values())
    yield info


def _times(info: CaptureInfo, rec) -> None:
    """First and last timestamp over every record with a time, decoded or not."""
    ts = rec.ts_ns[rec.ts_valid]
    if len(ts):
        lo, hi = int(ts.min()), int(ts.max())
        info.first_ts_ns = lo if info.first_ts_ns is None else min(info.first_ts_ns, lo)
        info.last_ts_ns = hi if info.last_ts_ns is None else max(info.last_ts_ns, hi)
