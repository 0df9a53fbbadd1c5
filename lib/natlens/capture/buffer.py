"""Vectorized reads of fixed-width fields at many byte offsets of one buffer.

A chunk of a capture file is held once, as bytes padded with zeros; strided
numpy views let one fancy-index gather read a big-endian u16/u32 (or a
little-endian u64) at every given offset, aligned or not. Callers check that a
field lies within the captured bytes before trusting what it reads; the padding
only keeps reads a little past the end in bounds.
"""

from __future__ import annotations

import functools

import numpy as np

PAD = 512  # zero bytes after the data: the furthest any decoder reads past a checked offset


class Buffer:
    """One chunk of a capture file and typed views of it."""

    def __init__(self, raw: np.ndarray, length: int):
        """`raw` holds `length` bytes of data followed by at least PAD zero bytes."""
        if len(raw) < length + PAD:
            raise ValueError("buffer needs PAD bytes of zeros after the data")
        self.raw = raw
        self.length = length
        n = len(raw)
        mem = raw.data
        self.u8 = raw
        self.be16 = np.ndarray((n - 1,), dtype=">u2", buffer=mem, strides=(1,))
        self.be32 = np.ndarray((n - 3,), dtype=">u4", buffer=mem, strides=(1,))
        self.le16 = np.ndarray((n - 1,), dtype="<u2", buffer=mem, strides=(1,))
        self.le32 = np.ndarray((n - 3,), dtype="<u4", buffer=mem, strides=(1,))
        self.be64 = np.ndarray((n - 7,), dtype=">u8", buffer=mem, strides=(1,))

    def window(self, at: np.ndarray, width: int) -> np.ndarray:
        """`width` bytes at each offset, as rows of a 2-D array: one pass over memory
        instead of one per field."""
        rows = np.lib.stride_tricks.as_strided(self.raw, shape=(len(self.raw) - width, width),
                                               strides=(1, 1), writeable=False)
        return rows[at]

    def u16(self, at: np.ndarray, big: bool = True) -> np.ndarray:
        return (self.be16 if big else self.le16)[at]

    def u32(self, at: np.ndarray, big: bool = True) -> np.ndarray:
        return (self.be32 if big else self.le32)[at]


@functools.lru_cache(maxsize=256)
def _field(width: int, offset: int, fmt: str) -> np.dtype:
    return np.dtype({"names": ["v"], "formats": [fmt], "offsets": [offset], "itemsize": width})


def _column(win: np.ndarray, k: int, fmt: str) -> np.ndarray:
    """The field at column k of each (C-contiguous) window row, as a strided view: no copy."""
    win = np.ascontiguousarray(win)
    return win.view(_field(win.shape[1], k, fmt)).ravel()["v"]


def be16(win: np.ndarray, k: int) -> np.ndarray:
    """Big-endian u16 at column k of each window row."""
    return _column(win, k, ">u2")


def be32(win: np.ndarray, k: int) -> np.ndarray:
    """Big-endian u32 at column k of each window row."""
    return _column(win, k, ">u4")


def be64(win: np.ndarray, k: int) -> np.ndarray:
    """Big-endian u64 at column k of each window row."""
    return _column(win, k, ">u8")
