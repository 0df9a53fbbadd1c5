"""Progress bars for long work: shown on a terminal for inputs worth waiting on."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

MIN_BYTES = 32 << 20  # smaller files finish before a bar is worth drawing


@contextlib.contextmanager
def byte_progress(path: str, *, disable: bool = False) -> Iterator[Callable[[int], None] | None]:
    """A callback advancing a bar over the bytes of `path`, or None when no bar is due."""
    size = os.path.getsize(path)
    if disable or size < MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    with tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(path),
              file=sys.stderr, leave=False) as bar:
        yield bar.update
