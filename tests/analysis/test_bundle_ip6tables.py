"""ip6tables-save.txt is a dump the netfilter model reads: the bundle must not call it unread."""

from __future__ import annotations

import shutil

from analysis_helpers import samples_dir

from natlens.bundle import load_bundle


def test_ip6tables_dump_is_read_not_listed_as_unread(tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(samples_dir() / "loopback-local", dst)
    dump = dst / "nodes" / "node-1" / "ip6tables-save.txt"
    dump.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    b = load_bundle(dst)
    assert b.node("node-1").ip6tables == dump
    assert not any("ip6tables" in f for f, _ in b.not_read)
