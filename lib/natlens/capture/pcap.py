"""Classic libpcap files: microsecond and nanosecond, either byte order."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

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
MAX_RECORD = 1 << 24  # a record longer than this is corruption, not a packet


@dataclass
class PcapFile:
    """The state of reading one pcap file: its header and how to walk records."""

    path: str
    big_endian: bool
    ns_per_unit: int
    snaplen: int
    linktype: int
    version: tuple[int, int]

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

    def holds_packet(self, head: np.ndarray) -> bool:
        """Whether an incomplete record starting with `head` is a packet (always, in pcap)."""
        return True

    @property
    def linktypes(self) -> list[int]:
        return [self.linktype]

    sections = interface_count = 1

    def parse(self, buf: Buffer, start: int, eof: bool = False) -> tuple[Records, int, int]:
        """Records of buf[start:]; returns them, where parsing stopped and why. `eof`:
        buf ends where the file does."""
        offs, stop, status = walker.walk(
            buf.raw, start, lenpos=8, add=RECORD_HEADER, big_endian=self.big_endian,
            minlen=RECORD_HEADER, maxlen=RECORD_HEADER + MAX_RECORD, end=buf.length,
        )
        hdr = buf.window(offs, RECORD_HEADER).view(">u4" if self.big_endian else "<u4")
        hdr = hdr.astype(np.int64)
        sec, frac, caplen, wirelen = hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3]
        n = len(offs)
        recs = Records(
            buf=buf,
            off=offs + RECORD_HEADER,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=sec * 1_000_000_000 + frac * self.ns_per_unit,
            ts_valid=np.ones(n, bool),
            iface=np.zeros(n, np.int32),
            linktype=np.full(n, self.linktype, np.int32),
            direction=np.full(n, DIR_UNKNOWN, np.int8),
            bad=np.zeros(n, bool),
            anomaly=np.where(wirelen < caplen, ANOMALY_BITS["wirelen-below-caplen"], 0).astype(np.uint16),
        )
        return recs, stop, status
