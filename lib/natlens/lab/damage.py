"""Damaging a copy of an incident bundle on purpose, the way real captures go wrong.

Why: the lab's sample bundles are perfect (every capture from the first packet to the
last, one clock for every node); real incidents are not. tcpdump is killed halfway
(the file ends in a half-written record), the kernel drops packets under load, a disk or
a writer corrupts a record's length, a
capture starts late, a node's clock is off by seconds, a node has no capture at all,
or only the NICs were captured. These functions make such bundles from the lab's, so a
test can check that the analysis never says the opposite of the ground truth on them.

Every function works on a COPY (:func:`copy_bundle`): raw data is immutable, and the
functions refuse to write under this checkout's ``data/`` folder or any
``ground-truth/`` folder. Captures are changed at the record level (classic pcap,
micro- and nanosecond, either byte order; the records' bytes are kept as they are, only
which records remain and their timestamps change); pcapng or anything else is a
NatlensError naming the file. Each function returns what it did (:class:`Damage`, or
the files it removed) so a test can state it.

    d = copy_bundle("data/samples/mixed", tmp / "mixed")
    cut(d / "nodes/node-1/any.pcap", 0.5, mid_record=True)
    drop(d / "nodes/node-2/eth0.pcap", 0.1, seed=1)
    shift_clock(d / "nodes/node-2", +2.5)
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from natlens.errors import NatlensError
from natlens.nodefiles import find_node_files

# magic -> (struct byte order, timestamp units per second)
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
FILE_HEADER, RECORD_HEADER = 24, 16
MAX_RECORD = 1 << 24  # a record longer than this is corruption, not a packet
RAW_DATA = (Path(__file__).resolve().parents[3] / "data").resolve()  # this checkout's raw inputs


@dataclass(frozen=True)
class Damage:
    """What one damage did to one capture file.

    ``removed`` are the file-order indexes (0-based, in the file as it was) of the whole
    records taken out; ``partial_bytes`` the length of the half-written record the file
    now ends with (0: it ends on a record boundary); ``shift_ns`` how far every
    timestamp moved.
    """

    path: Path
    what: str
    records_before: int
    kept: int
    removed: tuple[int, ...] = ()
    partial_bytes: int = 0
    shift_ns: int = 0

    def __str__(self) -> str:
        s = f"{self.path.parent.name}/{self.path.name}: {self.what}: kept {self.kept} of {self.records_before} records"
        return s + (f", then {self.partial_bytes} bytes of a half-written one" if self.partial_bytes else "")


@dataclass
class _Pcap:
    """A classic pcap file split into its header, whole records and a half-written tail."""

    path: Path
    header: bytes
    order: str  # "<" or ">"
    per_second: int  # timestamp units per second
    records: list[bytes]  # 16-byte record header + captured bytes each, in file order
    tail: bytes  # a record the file ends in the middle of (a killed tcpdump); b"" if none

    def ts_ns(self, rec: bytes) -> int:
        """A record's timestamp in ns since the epoch."""
        sec, frac = struct.unpack_from(self.order + "II", rec)
        return sec * 1_000_000_000 + frac * (1_000_000_000 // self.per_second)

    def times(self) -> list[int]:
        return [self.ts_ns(r) for r in self.records]


def _guard(path: Path) -> Path:
    """`path`, resolved; NatlensError if it is raw data (the lab's samples, a ground truth)."""
    p = Path(path).resolve()
    if p == RAW_DATA or RAW_DATA in p.parents:
        raise NatlensError("is raw data and never changed; damage a copy (copy_bundle)", path=str(path))
    if "ground-truth" in p.parts:
        raise NatlensError("is in a ground-truth folder, which damage never changes", path=str(path))
    return p


def _read(path: Path) -> _Pcap:
    """Parse a classic pcap file; NatlensError naming it for pcapng or anything else."""
    path = _guard(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NatlensError(f"cannot read the capture: {e.strerror}", path=str(path)) from e
    if raw[:4] == PCAPNG_MAGIC:
        raise NatlensError("is pcapng; damage works on classic pcap records only "
                           "(convert with: editcap -F pcap)", path=str(path), where=0)
    if raw[:4] not in PCAP_MAGICS:
        raise NatlensError(f"not a classic pcap file (starts with 0x{raw[:4].hex()})",
                           path=str(path), where=0)
    if len(raw) < FILE_HEADER:
        raise NatlensError(f"pcap header cut short ({len(raw)} of 24 bytes)", path=str(path), where=0)
    order, per_second = PCAP_MAGICS[raw[:4]]
    records, off = [], FILE_HEADER
    while off + RECORD_HEADER <= len(raw):
        caplen = struct.unpack_from(order + "I", raw, off + 8)[0]
        if caplen > MAX_RECORD:
            raise NatlensError(f"record length {caplen} is not a packet's (corrupt file)",
                               path=str(path), where=off)
        end = off + RECORD_HEADER + caplen
        if end > len(raw):
            break
        records.append(raw[off:end])
        off = end
    return _Pcap(path, raw[:FILE_HEADER], order, per_second, records, raw[off:])


def _write(p: _Pcap, records: list[bytes], tail: bytes = b"") -> None:
    """Replace the file with `records` (and a half-written `tail`), atomically."""
    tmp = p.path.with_name(p.path.name + ".damage-tmp")
    tmp.write_bytes(p.header + b"".join(records) + tail)
    os.replace(tmp, p.path)


def _check_fraction(path: Path, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise NatlensError(f"{name} must be between 0 and 1, not {value}", path=str(path))


def copy_bundle(src: str | Path, dst: str | Path) -> Path:
    """Copy a bundle (captures, dumps, cluster JSON, ground truth) to `dst`, which must not exist.

    Symlinks are followed, so the copy shares no file with the source and damaging it
    cannot reach the raw data. Returns `dst`.
    """
    src, dst = Path(src), Path(dst)
    _guard(dst)
    if not (src / "nodes").is_dir():
        raise NatlensError("is not an incident bundle (no nodes/ folder)", path=str(src))
    if dst.exists():
        raise NatlensError("already exists; copy_bundle writes a new folder", path=str(dst))
    if src.resolve() in dst.resolve().parents:
        raise NatlensError(f"is inside the bundle it would copy ({src})", path=str(dst))
    shutil.copytree(src, dst, symlinks=False)
    return dst


def _half_record(rec: bytes) -> bytes:
    """The first half of a record, as a killed tcpdump leaves its last one: always short of whole."""
    data = len(rec) - RECORD_HEADER
    return rec[:RECORD_HEADER // 2] if data == 0 else rec[:RECORD_HEADER + data // 2]


def cut(path: str | Path, at_fraction: float, mid_record: bool = False) -> Damage:
    """Keep the records up to `at_fraction` of the capture's time span, as a capture stopped then.

    The file keeps its records in file order up to the first one later than
    first + at_fraction * (last - first); everything from there on is removed (a capture
    stops once, it does not skip). With `mid_record` the file then ends with the first half
    of the next record, as a killed tcpdump leaves it (when the cut keeps every record, the
    last one is the one left half-written). A half-written tail the file already had is
    dropped when records are cut after it.
    """
    p = _read(Path(path))
    _check_fraction(p.path, "at_fraction", at_fraction)
    times = p.times()
    if not times:
        raise NatlensError("has no records to cut", path=str(p.path))
    stop = min(times) + round(at_fraction * (max(times) - min(times)))
    keep = next((i for i, t in enumerate(times) if t > stop), len(times))
    tail = p.tail if keep == len(times) else b""
    if mid_record:
        keep = min(keep, len(times) - 1)
        tail = _half_record(p.records[keep])
    _write(p, p.records[:keep], tail)
    what = f"cut at {at_fraction:.0%} of the time span" + (", mid-record" if mid_record else "")
    return Damage(p.path, what, len(times), keep, tuple(range(keep, len(times))), len(tail))


def drop(path: str | Path, fraction: float, seed: int) -> Damage:
    """Remove round(fraction * records) records picked at random with `seed`, as a kernel drops them.

    The same file, fraction and seed always remove the same records. A half-written
    tail stays where it is.
    """
    p = _read(Path(path))
    _check_fraction(p.path, "fraction", fraction)
    n = len(p.records)
    gone = sorted(random.Random(seed).sample(range(n), round(fraction * n)))
    out = set(gone)
    _write(p, [r for i, r in enumerate(p.records) if i not in out], p.tail)
    return Damage(p.path, f"dropped {fraction:.0%} (seed {seed})", n, n - len(gone), tuple(gone),
                  len(p.tail))


def bad_lengths(path: str | Path, fraction: float, seed: int, caplen: int = 1 << 20) -> Damage:
    """Overwrite the captured length of round(fraction * records) records picked at random
    with `seed` by `caplen` (default 1 MiB: more than a record can hold), as a corrupted disk
    or a broken writer leaves them. The records' bytes stay in the file; a reader loses those
    records (``removed``) and must find the next one after each.
    """
    p = _read(Path(path))
    _check_fraction(p.path, "fraction", fraction)
    n = len(p.records)
    hit = sorted(random.Random(seed).sample(range(n), round(fraction * n)))
    out = list(p.records)
    for i in hit:
        rec = bytearray(out[i])
        struct.pack_into(p.order + "I", rec, 8, caplen)
        out[i] = bytes(rec)
    _write(p, out, p.tail)
    return Damage(p.path, f"lengths of {fraction:.0%} of the records made {caplen:,} (seed {seed})", n,
                  n - len(hit), tuple(hit), len(p.tail))


def late_start(path: str | Path, seconds: float) -> Damage:
    """Remove every record of the capture's first `seconds`, as a capture started that late.

    Removed: records earlier than the capture's first timestamp + `seconds`.
    """
    p = _read(Path(path))
    if seconds < 0:
        raise NatlensError(f"a late start is a positive number of seconds, not {seconds}",
                           path=str(p.path))
    times = p.times()
    start = min(times, default=0) + round(seconds * 1_000_000_000)
    gone = tuple(i for i, t in enumerate(times) if t < start)
    out = set(gone)
    _write(p, [r for i, r in enumerate(p.records) if i not in out], p.tail)
    return Damage(p.path, f"started {seconds:g} s late", len(times), len(times) - len(gone), gone,
                  len(p.tail))


def _shifted(p: _Pcap, rec: bytes, units: int) -> bytes:
    """`rec` with its timestamp moved by `units` (the file's own units: exact, no rounding)."""
    sec, frac = struct.unpack_from(p.order + "II", rec)
    sec, frac = divmod(sec * p.per_second + frac + units, p.per_second)
    if not 0 <= sec <= 0xFFFFFFFF:
        raise NatlensError("a shifted timestamp leaves the pcap range (1970 to 2106)", path=str(p.path))
    return struct.pack(p.order + "II", sec, frac) + rec[8:]


def shift_clock(node_dir: str | Path, seconds: float) -> list[Damage]:
    """Move every timestamp of every capture of one node by `seconds`: a node's clock that is off.

    All the node's captures are read and shifted before any is written, so a pcapng among
    them, or a timestamp the shift would take out of range, leaves the node as it was. The shift is exact in each file's units (round(seconds * units per second));
    ``shift_ns`` says how much. A half-written tail whose record header is whole is
    shifted too.
    """
    node = _guard(Path(node_dir))
    if not node.is_dir():
        raise NatlensError("is not a node directory", path=str(node_dir))
    shifted = []
    for p in [_read(c) for c in find_node_files(node).captures]:
        units = round(seconds * p.per_second)
        recs = [_shifted(p, r, units) for r in p.records]
        tail = _shifted(p, p.tail, units) if len(p.tail) >= RECORD_HEADER else p.tail
        shifted.append((p, recs, tail, units * (1_000_000_000 // p.per_second)))
    for p, recs, tail, _ in shifted:  # written only once every file could be shifted
        _write(p, recs, tail)
    return [Damage(p.path, f"clock shifted by {seconds:+g} s", len(recs), len(recs),
                   partial_bytes=len(tail), shift_ns=shift_ns)
            for p, recs, tail, shift_ns in shifted]


def remove_captures(node_dir: str | Path) -> list[Path]:
    """Delete every capture of one node (its dumps stay): a node nobody captured on.

    Returns the files removed.
    """
    node = _guard(Path(node_dir))
    if not node.is_dir():
        raise NatlensError("is not a node directory", path=str(node_dir))
    gone = find_node_files(node).captures
    for c in gone:
        c.unlink()
    return gone


def nic_only(bundle: str | Path) -> list[Path]:
    """Delete every node's ``any`` capture, leaving only the NIC captures (eth0.pcap and the like).

    The common incident: only the node's interface was captured, not the pods' side of the
    NAT. Returns the files removed.
    """
    root = _guard(Path(bundle))
    if not (root / "nodes").is_dir():
        raise NatlensError("is not an incident bundle (no nodes/ folder)", path=str(bundle))
    gone = []
    for node in sorted(d for d in (root / "nodes").iterdir() if d.is_dir()):
        gone += [c for c in find_node_files(node).captures if c.name.split(".")[0] == "any"]
    for c in gone:
        c.unlink()
    return gone
