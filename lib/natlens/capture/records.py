"""What the file formats hand to the decoders: packet records of one chunk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from natlens.capture.buffer import Buffer

# Direction as recorded by the capture (pcapng epb_flags, SLL packet type).
DIR_UNKNOWN, DIR_IN, DIR_OUT = 0, 1, 2


@dataclass
class Records:
    """Packet records found in one chunk of a capture file, in file order."""

    buf: Buffer
    off: np.ndarray  # int64: where each packet's captured bytes start in buf
    caplen: np.ndarray  # int64: captured bytes
    wirelen: np.ndarray  # int64: original length on the wire
    ts_ns: np.ndarray  # int64: ns since the epoch (UTC)
    ts_valid: np.ndarray  # bool: False where the format records no time (pcapng SPB)
    iface: np.ndarray  # int32: pcapng interface id (0 for pcap)
    linktype: np.ndarray  # int32 per record
    direction: np.ndarray  # int8: DIR_* from pcapng epb_flags
    bad: np.ndarray  # bool: the container says the record is unusable (counted "malformed")
    anomaly: np.ndarray  # uint16: schema.ANOMALY_BITS of the record's container fields

    def __len__(self) -> int:
        return len(self.off)

    def slice(self, start: int, stop: int) -> Records:
        """Records start..stop of this chunk (views, no copies)."""
        return Records(self.buf, *(getattr(self, name)[start:stop] for name in ARRAYS))


ARRAYS = ("off", "caplen", "wirelen", "ts_ns", "ts_valid", "iface", "linktype", "direction", "bad",
          "anomaly")


def empty(buf: Buffer) -> Records:
    z = np.empty(0, np.int64)
    return Records(buf, z, z, z, z, np.empty(0, bool), np.empty(0, np.int32),
                   np.empty(0, np.int32), np.empty(0, np.int8), np.empty(0, bool), np.empty(0, np.uint16))


def concat(buf: Buffer, parts: list[Records]) -> Records:
    """The records of several parts of one chunk, in order."""
    return Records(buf, *(np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS))
