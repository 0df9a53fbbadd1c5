"""The report reads a node's rules where the analysis did: a tarballed node is not missing."""

from __future__ import annotations

import shutil
import tarfile

from natlens import report
from natlens.report import tables, text


def _tarball_node(sample, tmp_path):
    d = tmp_path / "tarred"
    shutil.copytree(sample, d)
    node = d / "nodes" / "node-1"
    with tarfile.open(d / "nodes" / "node-1.tar.gz", "w:gz") as tf:
        tf.add(node, arcname="node-1")
    shutil.rmtree(node)
    return d


def test_a_tarballed_node_is_in_kube_services_and_its_trace_works(sample, tmp_path):
    d = report.load(_tarball_node(sample, tmp_path))
    services = tables.kube_services(d)
    assert set(services["node"]) == {"node-1", "node-2"}
    trace = str(text.netfilter_trace(d, node="node-1", src="198.18.16.100", dst="198.19.0.10", dport=80))
    assert "KUBE-LOAD-BALANCER" in trace and "on node-1" in trace


def test_the_report_uses_the_rules_the_analysis_read(sample, tmp_path, monkeypatch):
    from natlens import netfilter

    bare = tmp_path / "no-cluster"  # without cluster/ the inventory reads every node's rules
    shutil.copytree(sample, bare, ignore=shutil.ignore_patterns("cluster"))
    d = report.load(bare)
    monkeypatch.setattr(netfilter, "load_node", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert set(tables.kube_services(d)["node"]) == {"node-1", "node-2"}  # no second read
    assert "node-2" in str(text.netfilter_trace(d, node="node-2", src="198.18.16.100",
                                                dst="198.19.0.10", dport=80))


def test_a_node_whose_rules_cannot_be_read_says_so_in_the_services_table(sample, tmp_path):
    d = tmp_path / "bad-dump"
    shutil.copytree(sample, d)
    (d / "nodes" / "node-2" / "iptables-save.txt").write_text("*nat\n-A NO-SUCH-CHAIN -j ACCEPT\n")
    t = tables.kube_services(report.load(d))
    bad = t[t["node"] == "node-2"]
    assert len(bad) == 1 and bad["evidence"].iloc[0].startswith("rules not read: ")
    assert "iptables-save.txt" in bad["evidence"].iloc[0]
    assert (t["node"] == "node-1").sum() >= 1
