"""`natlens lab run` prints each Service's tally in words, not as a Python dict."""

from __future__ import annotations

from natlens.cli.lab import tally_line


def test_tally_line_reads_like_a_sentence():
    s = {"service": "default/web-local", "key": "198.19.0.10:80/tcp", "policy": "Local",
         "connections": 20, "failed": 6, "loopback": 6, "snat": 0,
         "by_lb_node": {"node-1": 6, "node-2": 14}}
    line = tally_line(s)
    assert line == ("default/web-local 198.19.0.10:80/tcp Local: 20 connections, 6 failed, "
                    "6 loopback, 0 SNATed; LB picked node-1 6, node-2 14")
    assert "{" not in line and "'" not in line
