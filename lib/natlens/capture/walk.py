"""Find where each record of a capture starts (the only sequential step of reading).

Uses the compiled helper `_walk` when it was built at install time; otherwise a
pure-Python loop with the same results (about 20x slower on large files).
"""

from __future__ import annotations

import struct
import warnings

import numpy as np

try:
    from natlens.capture import _walk as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None

# Why a walk stopped.
END, BAD_LENGTH, STOP_TYPE, FULL = 0, 1, 2, 3  # FULL: never, the output fits every record

_warned = False


def _walk_py(buf, start, lenpos, add, big, minlen, maxlen, align, stop_type, out):
    u32 = struct.Struct(">I" if big else "<I").unpack_from
    n, off, count, cap = len(buf), start, 0, len(out)
    while off + lenpos + 4 <= n:
        if stop_type >= 0 and u32(buf, off)[0] == stop_type:
            return count, off, STOP_TYPE
        length = u32(buf, off + lenpos)[0] + add
        if length < minlen or length > maxlen or (align > 1 and length % align):
            return count, off, BAD_LENGTH
        if off + length > n:
            break
        if count == cap:
            return count, off, FULL
        out[count] = off
        count += 1
        off += length
    return count, off, END


def walk(
    buf: memoryview | bytes | bytearray,
    start: int,
    *,
    lenpos: int,
    add: int,
    big_endian: bool,
    minlen: int,
    maxlen: int,
    align: int = 1,
    stop_type: int = -1,
    end: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """Follow a chain of length-prefixed records from `start`.

    Each record is `add + u32 at (offset + lenpos)` bytes long. Returns the record
    offsets, the offset where the walk stopped and why (END, BAD_LENGTH, STOP_TYPE).
    `end` limits the walk to buf[:end] (the rest is padding).
    """
    global _warned
    view = memoryview(buf)[: end if end is not None else len(buf)]
    out = np.empty(max(1, (len(view) - start) // max(minlen, 1) + 1), dtype=np.int64)
    if _compiled is not None:
        count, off, status = _compiled.walk(
            view, start, lenpos, add, big_endian, minlen, maxlen, align, stop_type, memoryview(out)
        )
    else:
        if not _warned:
            warnings.warn("natlens: compiled record walk not built; using the slow Python walk",
                          RuntimeWarning, stacklevel=2)
            _warned = True
        count, off, status = _walk_py(
            view, start, lenpos, add, big_endian, minlen, maxlen, align, stop_type, out
        )
    return out[:count], off, status
