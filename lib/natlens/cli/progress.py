"""Progress bars for long work: shown on a terminal for inputs worth waiting on."""

from __future__ import annotations

import sys
from pathlib import Path

MIN_BYTES = 32 << 20  # smaller files finish before a bar is worth drawing


def worth_a_bar(incident: str) -> bool:
    """A bar on a terminal, for an incident whose captures are big enough to wait on."""
    if not sys.stderr.isatty():
        return False
    nodes = Path(incident) / "nodes"
    size = sum(f.stat().st_size for f in nodes.rglob("*.pcap*") if f.is_file()) if nodes.is_dir() else 0
    return size >= MIN_BYTES
