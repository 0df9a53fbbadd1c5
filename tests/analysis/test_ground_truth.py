"""The analysis against the lab's ground truth (what the client and conntrack recorded).

Local: every failed connection is a loopback hit, SNAT ratio 0. Cluster: no
loopback, SNAT ratio 1. Also with fewer captures (only eth0, only `any`, only the
client's node): what is decided must still be right, the rest "unknown".
"""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest
from analysis_helpers import reshape, samples_dir

from natlens.capture import read_capture
from natlens.connections import connections
from natlens.findings import analyze


@pytest.fixture(scope="module")
def samples():
    return samples_dir()


def joined(a, sample_dir) -> pd.DataFrame:
    gt = pd.read_json(sample_dir / "ground-truth" / "connections.jsonl", lines=True)
    m = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left")
    assert m["journey"].notna().all(), "a client connection has no journey"
    assert len(m) == len(gt) and m["journey"].is_unique
    return m


@pytest.mark.parametrize("name", ["loopback-local", "cluster-ok", "mixed"])
def test_against_ground_truth(samples, name):
    a = analyze(samples / name)
    m = joined(a, samples / name)
    failed = m["outcome_x"] == "failed"
    local = m["policy"] == "Local"
    # every failed connection of a Local service is a loopback hit; none in Cluster
    assert (m.loc[failed, "loopback_y"] == "yes").all()
    assert (m.loc[~local, "loopback_y"] == "no").all()
    assert ((m["loopback_y"] == "yes") == m["loopback_x"].astype(bool)).all()
    # the LB's pick and SNAT as conntrack recorded them
    assert (m["lb_backend"] == m["lb_node"]).all()
    assert ((m["snat_y"] == "yes") == m["snat_x"].astype(bool)).all()
    assert ((m["outcome_y"] == "established") == (m["outcome_x"] == "connected")).all()
    assert (m.loc[failed, "outcome_y"] == "timed out").all()
    s = a.summary()
    for row in s["snat"]:
        assert row["ratio"] == (0.0 if row["policy"] == "Local" else 1.0)
        assert row["predicted_by_rules"] is True, row["rule_trace"]
    assert s["loopback"]["hits"] == int(m["loopback_x"].astype(bool).sum())
    assert s["loopback"]["failed"] == int(failed.sum())
    assert s["verdict"]["loopback_detected"] == bool(failed.any())
    if failed.any():
        assert "Cluster" in s["verdict"]["remediation"][0]
    assert s["connections"]["total"] == len(m) and s["connections"]["failed"] == int(failed.sum())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")
def test_lab_handshake_rtt_matches_tshark(samples):
    """Per eth0 capture: every handshake RTT within 10 us of tshark's initial_rtt.

    (`any` captures hold one connection several times, once per interface, and tshark
    merges those copies into one stream; natlens keeps one record per interface.)"""
    checked = 0
    for cap in sorted(samples.glob("*/nodes/*/eth0.pcap")):
        out = subprocess.run(
            ["tshark", "-r", str(cap), "-Y", "tcp.analysis.initial_rtt", "-T", "fields",
             "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport",
             "-e", "tcp.analysis.initial_rtt"], capture_output=True, text=True, check=True).stdout
        want = {}
        for line in out.splitlines():
            src, sport, dst, dport, rtt = line.split("\t")
            want[frozenset([(src, int(sport)), (dst, int(dport))])] = float(rtt)
        c = connections(read_capture(cap).packets)
        c = c[c["handshake_rtt"].notna()]
        assert len(c) == len(want), cap
        for r in c.itertuples():
            assert abs(r.handshake_rtt - want[frozenset([(r.orig_h, r.orig_p), (r.resp_h, r.resp_p)])]) <= 10e-6
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("shape", ["eth0-only", "any-only", "client-node-only", "no-cluster-json"])
def test_fewer_captures(samples, tmp_path, shape):
    src = samples / "loopback-local"
    keep = {"eth0-only": lambda n, c: c == "eth0",
            "any-only": lambda n, c: c == "any",
            "client-node-only": lambda n, c: n == "node-1",
            "no-cluster-json": lambda n, c: True}[shape]
    d = reshape(src, tmp_path / shape, keep=keep, cluster=shape != "no-cluster-json")
    a = analyze(d)
    m = joined(a, src)
    failed = m["outcome_x"] == "failed"
    assert (m.loc[failed, "loopback_y"] == "yes").all()
    assert (m["snat_y"] == "no").all()
    assert a.summary()["snat"][0]["ratio"] == 0.0
    ok = ~failed
    if shape == "client-node-only":
        # the LB's pick for the working connections happened on a node we have no capture of
        assert m.loc[ok, "lb_backend"].isna().all()
        assert (m.loc[ok, "loopback_y"] == "no").all()  # the SYN left and never came back
        assert any("load balancer chose is not in the captures" in x for x in a.inferred)
    else:
        assert (m["lb_backend"] == m["lb_node"]).all()
    if shape == "no-cluster-json":
        assert a.summary()["snat"][0]["policy"] == "Local"
        assert any("KUBE-LOAD-BALANCER-LOCAL" in x or "netfilter model" in x for x in a.inferred)
        assert any("InternalIP" in x for x in a.inferred)


def test_journey_hops_show_the_loopback(samples):
    a = analyze(samples / "loopback-local")
    j = a.loopback.iloc[0]
    h = a.journey_hops(j["journey"])
    assert h["ts"].is_monotonic_increasing
    # the client's SYN to the VIP, the same SYN back to this node's NodePort, the wrong SYN-ACK, the RST
    assert ((h["dst"] == j["vip"]) & (h["flags"] == "S")).any()
    node_ip = a.inventory.nodes.set_index("name").at[j["client_node"], "internal_ip"]
    assert ((h["dst"] == node_ip) & (h["flags"] == "S")).any()
    assert ((h["src"] == node_ip) & (h["dst"] == j["client_h"]) & (h["flags"] == "SA")).any()
    assert ((h["src"] == j["client_h"]) & (h["flags"] == "R")).any()
