"""Progress bars for long work: shown on a terminal for inputs worth waiting on."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from natlens.nodefiles import CAPTURE_SUFFIXES

MIN_BYTES = 32 << 20  # smaller files finish before a bar is worth drawing


def worth_a_bar(incident: str) -> bool:
    """A bar on a terminal, for an incident whose captures are big enough to wait on."""
    return worth_bars(capture_files(incident))


def worth_bars(files: Sequence[Path]) -> bool:
    """Bars on a terminal, for captures that together are big enough to wait on: one rule
    for ingest, analyze and report."""
    return sys.stderr.isatty() and sum(f.stat().st_size for f in files if f.is_file()) >= MIN_BYTES


def capture_files(incident: str) -> list[Path]:
    """The capture files under the incident's node directories (before the bundle is read: for
    what is worth doing early; none when it is not a bundle)."""
    nodes = Path(incident) / "nodes"
    if not nodes.is_dir():
        return []
    return [f for f in nodes.rglob("*") if f.name.endswith(CAPTURE_SUFFIXES) and f.is_file()]
