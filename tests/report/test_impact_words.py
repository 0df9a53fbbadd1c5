"""The impact line's share in words: never "about one in 1" for 70 %."""

from __future__ import annotations

import pytest

from natlens.report.text import _impact, share_in_words


@pytest.mark.parametrize(("part", "whole", "words"), [
    (14, 20, "about 7 in 10"),     # nftables-local: 70 % is not "one in 1"
    (11, 20, "about one in 2"),    # loopback-local: 55 %
    (8, 20, "about 4 in 10"),      # 40 % is not "one in 2"
    (7, 20, "about one in 3"),     # 35 %
    (1, 25, "about one in 25"),
    (3, 10_000, "about one in 3,333"),
    (19, 20, "nearly all"),        # 95 %: tenths round to ten, but one connected
    (20, 20, "all of them"),
    (0, 20, "none of them"),
])
def test_share_in_words(part, whole, words):
    assert share_in_words(part, whole) == words


def test_the_impact_line_of_fourteen_failures_in_twenty():
    s = {"connections": {"total": 20, "failed": 14, "timeouts": 14, "resets": 0, "unknown": 0},
         "loopback": {"hits": 11, "failed": 11, "by_node": {"node-1": 11}}}
    text = _impact(s)
    assert text.startswith("14 of 20 connections (70.0 %) failed, about 7 in 10.")
    assert "one in 1" not in text and "Loopback accounts for 11 of these failures (78.6 %)" in text
