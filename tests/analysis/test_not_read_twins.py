"""A dump found twice (another name, format or folder) is read once; the other copy is listed as
not read with what it is and which file was read, never as a file natlens cannot read."""

from __future__ import annotations

import shutil

from analysis_helpers import samples_dir

from natlens.bundle import load_bundle
from natlens.findings.notes import unread_files
from natlens.nodefiles import find_node_files

NFT_TEXT = """table ip kube-proxy {
\tchain services {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr 198.19.0.10 tcp dport 80 counter packets %d bytes 0 dnat to 198.18.16.10:8080
\t}
}
"""
NFT_JSON = ('{"nftables": [{"metainfo": {"json_schema_version": 1}},'
            ' {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},'
            ' {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 1,'
            ' "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},'
            ' {"rule": {"family": "ip", "table": "kube-proxy", "chain": "services", "handle": 2, "expr": ['
            '{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "%s"}},'
            '{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},'
            '{"counter": {"packets": 0, "bytes": 0}},'
            '{"dnat": {"addr": "198.18.16.10", "port": 8080}}]}}]}')


def _bundle(tmp_path, text: str, js: str):
    node = tmp_path / "nodes" / "node-1"
    node.mkdir(parents=True)
    (node / "nft-ruleset.txt").write_text(text)
    (node / "nft-ruleset.json").write_text(js)
    return load_bundle(tmp_path)


def test_the_other_copy_of_a_dump_names_the_file_read(tmp_path):
    (tmp_path / "iptables-save.txt").write_text("*nat\nCOMMIT\n")
    (tmp_path / "iptables-rules.txt").write_text("*nat\nCOMMIT\n")
    f = find_node_files(tmp_path)
    assert f.iptables == tmp_path / "iptables-save.txt"
    assert f.not_read == [tmp_path / "iptables-rules.txt"]
    assert f.alternates == {tmp_path / "iptables-rules.txt": ("iptables", tmp_path / "iptables-save.txt")}


def test_nft_text_beside_the_json_is_the_same_rule_set_read_from_the_json(tmp_path):
    b = _bundle(tmp_path, NFT_TEXT % 42, NFT_JSON % "198.19.0.10")  # counters differ: still the same
    assert b.node("node-1").nft.name == "nft-ruleset.json"
    [(f, why)] = b.not_read
    assert f == "nodes/node-1/nft-ruleset.txt"
    assert why.startswith("the same nft rule set as nodes/node-1/nft-ruleset.json, in the other format")
    assert "not a capture" not in why
    assert unread_files(b) == [f"{f} not read: {why}"]


def test_nft_text_that_differs_from_the_json_says_so(tmp_path):
    b = _bundle(tmp_path, NFT_TEXT % 0, NFT_JSON % "198.19.0.99")
    [(_, why)] = b.not_read
    assert "the two differ in table ip kube-proxy" in why and "natlens read nodes/node-1/nft-ruleset.json" in why


def test_nftables_local_reports_its_text_listings_as_the_json_read(tmp_path):
    d = tmp_path / "b"
    shutil.copytree(samples_dir() / "nftables-local", d, ignore=shutil.ignore_patterns("*.pcap"))
    b = load_bundle(d)
    reasons = dict(b.not_read)
    for n in ("node-1", "node-2"):
        assert reasons[f"nodes/{n}/nft-ruleset.txt"].startswith(
            f"the same nft rule set as nodes/{n}/nft-ruleset.json, in the other format")
