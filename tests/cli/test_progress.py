"""Progress bars: on a terminal, for captures worth waiting on; never in pipes and logs."""

from __future__ import annotations

import sys
from pathlib import Path

from natlens.cli import analyze

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "loopback-local"


def test_analyze_bar_only_on_a_terminal_for_big_captures(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(analyze, "MIN_BYTES", 0)
    assert not analyze._worth_a_bar(str(SAMPLE))  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert analyze._worth_a_bar(str(SAMPLE))
    monkeypatch.setattr(analyze, "MIN_BYTES", 32 << 20)
    assert not analyze._worth_a_bar(str(SAMPLE))  # the sample's captures are well under 32 MiB
