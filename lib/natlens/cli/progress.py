"""Progress bars for long work: shown on a terminal for inputs worth waiting on."""

from __future__ import annotations

MIN_BYTES = 32 << 20  # smaller files finish before a bar is worth drawing
