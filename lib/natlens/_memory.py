"""Give the memory a finished stage freed back to the system, and hold off the cyclic
garbage collector while a stage makes many small containers.

Why: glibc's malloc and Arrow's pool keep freed memory for reuse, so a process's resident
size after reading a big capture stays near its peak (about twice what the connection
records hold), and the next stage's peak starts from there. Private to natlens.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
from collections.abc import Iterator

import pyarrow as pa


def give_back() -> None:
    """Return the free memory of Arrow's pool and of malloc's heap to the system (malloc_trim:
    glibc only; elsewhere only Arrow's)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (as before it, after): making a list per
    journey (500,000 of them) sets the collector off hundreds of times, each walking every
    tracked object, which took ~3x the making itself. For blocks that make no reference cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
