"""ip-addr.json of an unexpected shape: one NatlensError line naming the file and the entry."""

from __future__ import annotations

import json
import shutil

import pytest
from analysis_helpers import samples_dir

from natlens.bundle import load_bundle
from natlens.cli import main
from natlens.errors import NatlensError


@pytest.fixture()
def node_dir(tmp_path):
    d = tmp_path / "incident"
    shutil.copytree(samples_dir() / "loopback-local", d)
    return d / "nodes" / "node-1"


def _addresses(node_dir):
    return load_bundle(node_dir.parent.parent).node(node_dir.name).addresses()


@pytest.mark.parametrize(("doc", "why"), [
    ([1, 2], r"\[0\]: not an interface object"),
    ({"ifname": "eth0"}, "expected a list of interfaces"),
    ([{"ifname": "eth0", "addr_info": {"local": "198.18.0.11"}}], r"\[0\] \(eth0\): addr_info is not a list"),
    ([{"ifname": "eth0", "addr_info": [{"local": "198.18.0.11", "prefixlen": "x"}]}],
     r"\[0\] \(eth0\): addr_info\[0\]: local '198.18.0.11' / prefixlen 'x' is not"),
    ([{"ifname": "eth0", "addr_info": [{"local": "no-ip", "prefixlen": 24}]}],
     r"\[0\] \(eth0\): addr_info\[0\]: local 'no-ip'"),
])
def test_bad_shape_names_file_and_entry(node_dir, doc, why):
    f = node_dir / "ip-addr.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(NatlensError, match=why) as exc:
        _addresses(node_dir)
    assert str(exc.value).startswith(f"{f}: ") and "\n" not in str(exc.value)


def test_cli_prints_one_line_not_a_traceback(node_dir, capsys):
    (node_dir / "ip-addr.json").write_text(json.dumps([{"ifname": "eth0", "addr_info": [
        {"local": "198.18.0.11", "prefixlen": "x"}]}]))
    rc = main(["analyze", str(node_dir.parent.parent)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert err == [f"natlens: error: {node_dir / 'ip-addr.json'}: [0] (eth0): addr_info[0]: local "
                   "'198.18.0.11' / prefixlen 'x' is not an address and prefix length"]


def test_well_formed_json_still_reads(node_dir):
    addrs = _addresses(node_dir)
    assert ("eth0", 2, "198.18.0.11", 24) in {(a.ifname, a.ifindex, a.ip, a.prefixlen) for a in addrs}
    assert ("lo", 1, "127.0.0.1", 8) in {(a.ifname, a.ifindex, a.ip, a.prefixlen) for a in addrs}
