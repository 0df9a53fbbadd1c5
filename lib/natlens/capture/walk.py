"""Find where each record of a capture starts (the only sequential step of reading).

Uses the compiled helper `_walk` when it was built at install time; otherwise a
pure-Python loop with the same results (about 20x slower on large files).
"""

from __future__ import annotations

import struct
import threading
import warnings

import numpy as np

try:
    from natlens.capture import _walk as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None

# Why a walk stopped.
END, BAD_LENGTH, STOP_TYPE, FULL = 0, 1, 2, 3  # FULL: internal, walk() resumes until done

BYTE_ORDER_MAGIC = 0x1A2B3C4D  # pcapng section header, bytes 8..12, in the section's order
SECTION_MINLEN = 28
ORDER_BIT = 1 << 62  # with section_type: set in an offset whose block is big-endian
# Offsets found per helper call: the output buffer is this size (reused per thread), so a
# call costs O(records found), not O(buffer bytes / minlen) as when it was sized per call.
OUT_CAP = 1 << 16

_warned = False
_scratch = threading.local()


def _walk_py(buf, start, lenpos, add, big, minlen, maxlen, align, stop_type, out,
             section_type=-1, trailer=False):
    """The compiled walk, line by line in Python (see _walk.c for the contract)."""
    u32 = struct.Struct(">I" if big else "<I").unpack_from
    n, off, count, cap = len(buf), start, 0, len(out)
    while off + lenpos + 4 <= n:
        btype = u32(buf, off)[0]
        section = False
        if section_type >= 0 and btype == section_type:
            if off + 12 > n:
                break
            if u32(buf, off + 8)[0] != BYTE_ORDER_MAGIC:
                other = struct.Struct("<I" if big else ">I").unpack_from
                if other(buf, off + 8)[0] != BYTE_ORDER_MAGIC:
                    return count, off, STOP_TYPE
                big = not big
                u32 = other
            section = True
        elif stop_type >= 0 and btype == stop_type:
            return count, off, STOP_TYPE
        length = u32(buf, off + lenpos)[0] + add
        if (length < minlen or length > maxlen or (align > 1 and length % align)
                or (section and length < SECTION_MINLEN)):
            return count, off, BAD_LENGTH
        if off + length > n:
            break
        if trailer and u32(buf, off + length - 4)[0] != length:
            return count, off, BAD_LENGTH
        if count == cap:
            return count, off, FULL
        out[count] = off | (ORDER_BIT if section_type >= 0 and big else 0)
        count += 1
        off += length
    return count, off, END


def _out() -> np.ndarray:
    out = getattr(_scratch, "out", None)
    if out is None:
        out = _scratch.out = np.empty(OUT_CAP, dtype=np.int64)
    return out


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
    section_type: int = -1,
    trailer: bool = False,
) -> tuple[np.ndarray, int, int]:
    """Follow a chain of length-prefixed records from `start`.

    Each record is `add + u32 at (offset + lenpos)` bytes long. Returns the record
    offsets, the offset where the walk stopped and why (END, BAD_LENGTH, STOP_TYPE).
    `end` limits the walk to buf[:end] (the rest is padding). pcapng only:
    `section_type` walks through section headers, each setting the byte order from its
    magic (STOP_TYPE at one with no valid magic), and marks each offset of a big-endian
    block with ORDER_BIT; `trailer` checks each block's trailing length.
    """
    global _warned
    view = memoryview(buf)[: end if end is not None else len(buf)]
    out = _out()
    if _compiled is None and not _warned:
        warnings.warn("natlens: compiled record walk not built; using the slow Python walk",
                      RuntimeWarning, stacklevel=2)
        _warned = True
    parts = []
    off, big = start, big_endian
    while True:
        if _compiled is not None:
            count, off, status = _compiled.walk(view, off, lenpos, add, big, minlen, maxlen, align,
                                                stop_type, memoryview(out), section_type, trailer)
        else:
            count, off, status = _walk_py(view, off, lenpos, add, big, minlen, maxlen, align,
                                          stop_type, out, section_type, trailer)
        parts.append(out[:count].copy())
        if status != FULL:
            break
        if section_type >= 0 and count:  # resume in the byte order the walk had reached
            big = bool(out[count - 1] & ORDER_BIT)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), off, status
