"""Write pcap and pcapng files: for test corpora, benchmarks and exporting packets.

pcapng output can hold several interfaces, each with its own link type and
timestamp resolution (the case dpkt 1.9.8 reads wrong).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass


def write_pcap(path: str | os.PathLike, packets: Iterable[tuple[int, bytes] | tuple[int, bytes, int]],
               *, linktype: int = 1, nanosecond: bool = False, big_endian: bool = False,
               snaplen: int = 262144) -> None:
    """packets: (ts_ns, frame) or (ts_ns, frame, original length)."""
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    unit = 1 if nanosecond else 1000
    with open(path, "wb") as fh:
        fh.write(struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for pkt in packets:
            ts_ns, frame = pkt[0], pkt[1]
            wirelen = pkt[2] if len(pkt) > 2 else len(frame)
            frame = frame[:snaplen]
            sec, frac = divmod(ts_ns, 1_000_000_000)
            fh.write(struct.pack(o + "IIII", sec, frac // unit, len(frame), wirelen))
            fh.write(frame)


@dataclass
class Interface:
    """A pcapng interface: link type, timestamp resolution (if_tsresol byte), name."""

    linktype: int
    tsresol: int = 6
    name: str = ""
    snaplen: int = 0
    tsoffset: int = 0


def _option(code: int, value: bytes, o: str) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes, o: str) -> bytes:
    length = 12 + len(body)
    return struct.pack(o + "II", btype, length) + body + struct.pack(o + "I", length)


def _units(ts_ns: int, tsresol: int) -> int:
    if tsresol & 0x80:
        return (ts_ns << (tsresol & 0x7F)) // 1_000_000_000
    exp = tsresol
    return ts_ns // 10 ** (9 - exp) if exp <= 9 else ts_ns * 10 ** (exp - 9)


def pcapng_section(interfaces: list[Interface], packets: Iterable[tuple], *, big_endian: bool = False,
                   statistics: Iterable[tuple[int, int, int]] = (), units: bool = False) -> bytes:
    """One pcapng section as bytes: SHB, IDBs, EPBs, ISBs. Concatenate several for a
    multi-section file. `units`: each packet's second field is the raw timestamp in the
    interface's units (any u64, for tests of values ns cannot hold), not ns."""
    o = ">" if big_endian else "<"
    out = [_block(0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1), o)]
    for itf in interfaces:
        opts = b""
        if itf.name:
            opts += _option(2, itf.name.encode(), o)
        if itf.tsresol != 6:
            opts += _option(9, bytes([itf.tsresol]), o)
        if itf.tsoffset:
            opts += _option(14, struct.pack(o + "q", itf.tsoffset), o)
        if opts:
            opts += struct.pack(o + "HH", 0, 0)
        out.append(_block(1, struct.pack(o + "HHI", itf.linktype, 0, itf.snaplen) + opts, o))
    for pkt in packets:
        iface, ts, frame = pkt[0], pkt[1], pkt[2]
        flags = pkt[3] if len(pkt) > 3 else None
        itf = interfaces[iface]
        stamp = ts if units else _units(ts - itf.tsoffset * 1_000_000_000, itf.tsresol)
        body = struct.pack(o + "IIIII", iface, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame))
        body += frame + b"\0" * (-len(frame) % 4)
        if flags is not None:
            body += _option(2, struct.pack(o + "I", flags), o) + struct.pack(o + "HH", 0, 0)
        out.append(_block(6, body, o))
    for iface, ifdrop, osdrop in statistics:
        body = struct.pack(o + "III", iface, 0, 0) + _option(5, struct.pack(o + "Q", ifdrop), o)
        body += _option(7, struct.pack(o + "Q", osdrop), o) + struct.pack(o + "HH", 0, 0)
        out.append(_block(5, body, o))
    return b"".join(out)


def write_pcapng(path: str | os.PathLike, interfaces: list[Interface],
                 packets: Iterable[tuple], *, big_endian: bool = False,
                 statistics: Iterable[tuple[int, int, int]] = ()) -> None:
    """packets: (interface id, ts_ns, frame[, epb_flags]) as Enhanced Packet Blocks;
    statistics: (interface id, isb_ifdrop, isb_osdrop) as Interface Statistics Blocks at the end."""
    with open(path, "wb") as fh:
        fh.write(pcapng_section(interfaces, packets, big_endian=big_endian, statistics=statistics))
