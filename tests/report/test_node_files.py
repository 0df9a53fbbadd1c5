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


def test_the_report_uses_the_rules_the_analysis_read(sample, monkeypatch):
    from natlens import netfilter

    d = report.load(sample)
    for node in d.analysis.bundle.nodes:  # read once (the analysis reads those it needs)
        d.analysis.rules(node.name)
    monkeypatch.setattr(netfilter, "load_node", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert not tables.kube_services(d).empty  # no second read of the dumps
    assert "node-1" in str(text.netfilter_trace(d, node="node-1", src="198.18.16.100",
                                                dst="198.19.0.10", dport=80))
