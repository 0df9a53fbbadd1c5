"""`natlens analyze` on broken or partial bundles: an error when nothing is usable, else warnings.

Each case is a copy of the lab's loopback-local sample with one thing broken, run through the
CLI in-process: an error is one `natlens: error:` line and exit 2; partial input still gives
the findings, with one `natlens: warning:` line per problem naming the file (and place).
"""

from __future__ import annotations

import re
import shutil

import pytest
from analysis_helpers import samples_dir

from natlens.cli import main
from natlens.errors import NatlensError
from natlens.findings import analyze


@pytest.fixture()
def bundle(tmp_path):
    d = tmp_path / "incident"
    shutil.copytree(samples_dir() / "loopback-local", d)
    return d


def _run(capsys, *argv):
    rc = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()]


def test_no_captures_is_an_error(bundle, capsys):
    for f in bundle.glob("nodes/*/*.pcap"):
        f.unlink()
    with pytest.raises(NatlensError, match="no captures"):
        analyze(bundle)
    rc, out, err = _run(capsys, bundle)
    assert rc == 2 and out == ""
    assert len(err) == 1 and err[0].startswith(f"natlens: error: {bundle / 'nodes'}: no captures")


def test_node_without_iptables_dump_is_a_warning(bundle, capsys):
    (bundle / "nodes" / "node-1" / "iptables-save.txt").unlink()
    rc, out, err = _run(capsys, bundle)
    assert rc == 0 and "loopback: 11 hits" in out
    assert err == [f"natlens: warning: {bundle / 'nodes' / 'node-1'}: no iptables or nft dump "
                   "(iptables-save.txt, iptables-rules.txt, iptables.txt, nft-ruleset.json, nft-ruleset.txt): "
                   "the rules cannot say whether it SNATs"]


def test_a_node_with_only_an_nft_dump_is_not_without_rules(bundle, capsys):
    (bundle / "nodes" / "node-1" / "iptables-save.txt").unlink()
    (bundle / "nodes" / "node-1" / "nft-ruleset.txt").write_text("table ip filter {\n}\n")
    rc, out, err = _run(capsys, bundle)
    assert rc == 0 and not [e for e in err if "no iptables or nft dump" in e]


def test_truncated_capture_is_a_warning_with_its_offset(bundle, capsys):
    pcap = bundle / "nodes" / "node-2" / "eth0.pcap"
    data = pcap.read_bytes()
    pcap.write_bytes(data[: len(data) - 10])  # tcpdump killed inside the last record
    rc, out, err = _run(capsys, bundle)
    assert rc == 0 and "verdict:" in out
    assert len(err) == 1
    assert re.match(rf"natlens: warning: {re.escape(str(pcap))}@\d+: file cut short", err[0])
    assert any("file cut short" in x for x in analyze(bundle).summary()["inputs"]["inferred"])


def test_malformed_iptables_line_is_a_warning_naming_the_line(bundle, capsys):
    dump = bundle / "nodes" / "node-1" / "iptables-save.txt"
    lines = dump.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("-A KUBE-SERVICES"))
    lines[n] = "-A KUBE-SERVICES -m set --match-set"
    dump.write_text("\n".join(lines) + "\n")
    rc, out, err = _run(capsys, bundle)
    assert rc == 0 and "loopback: 11 hits" in out
    assert len(err) == 1 and err[0].startswith(f"natlens: warning: {dump}:{n + 1}: ")
