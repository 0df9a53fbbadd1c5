"""The committed sample incidents (data/samples/, made by `natlens lab run`): small, complete,
and true to their ground truth. No root needed: they are files."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO
from labhelpers import (
    assert_loopback_signature,
    assert_nic_matches_ground_truth,
    ground_truth,
    node_ip,
    syns,
    tcp_packets,
)

from natlens.capture import read_capture

SAMPLES = REPO / "data" / "samples"
LAB_SAMPLES = ["loopback-local", "cluster-ok", "mixed", "any-backend-cluster"]


@pytest.mark.parametrize("name", LAB_SAMPLES)
def test_sample_is_small_and_complete(name):
    d = SAMPLES / name
    assert sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) < 1_000_000
    facts, conns = ground_truth(d)
    assert yaml.safe_load((d / "incident.yaml").read_text())["title"]
    for f in ("nodes.json", "pods.json", "services.json"):
        assert json.loads((d / "cluster" / f).read_text())["kind"] == "List"
    for n in facts["topology"]["nodes"]:
        nd = d / "nodes" / n["name"]
        for f in ("eth0.pcap", "any.pcap", "iptables-save.txt", "ipset-save.txt", "ipvsadm.txt"):
            assert (nd / f).is_file(), nd / f
        for f in ("eth0.pcap", "any.pcap"):
            info = read_capture(nd / f).info
            # Every record decodes, except ARP (counted, not an IP packet).
            assert info.records == info.decoded + info.skipped.get("arp", 0), info
    # The tally in lab.json is the connections file's.
    for t in facts["services"]:
        rs = [c for c in conns if c["service"] == t["service"].split("/")[1]]
        assert t["connections"] == len(rs) == 20
        assert t["failed"] == sum(c["outcome"] == "failed" for c in rs)


def test_loopback_local_sample():
    d = SAMPLES / "loopback-local"
    facts, conns = ground_truth(d)
    failed = [c for c in conns if c["outcome"] == "failed"]
    assert failed and len(failed) < len(conns)
    assert all(c["loopback"] and c["error"] == "timeout" for c in failed)
    assert not any(c["snat"] for c in conns)
    assert_loopback_signature(d, facts, conns, "web-local")


def test_cluster_ok_sample():
    d = SAMPLES / "cluster-ok"
    facts, conns = ground_truth(d)
    assert all(c["outcome"] == "connected" and c["snat"] for c in conns)
    me = node_ip(facts, "node-1")
    pkts = syns(tcp_packets(d / "nodes" / "node-1" / "eth0.pcap"))
    assert {p["src"] for p in pkts if p["dst"] == "198.19.0.10"} == {me}


def test_mixed_sample():
    facts, conns = ground_truth(SAMPLES / "mixed")
    by = {t["policy"]: t for t in facts["services"]}
    assert by["Local"]["failed"] == by["Local"]["loopback_failed"] > 0
    assert by["Cluster"]["failed"] == 0 and by["Cluster"]["snat"] == 20
    assert_loopback_signature(SAMPLES / "mixed", facts, conns, "web-local")


def test_any_backend_cluster_sample():
    """--lb any-backend, Cluster: the LB sends some of node-1's SNATed connections back to
    node-1, whose kernel drops the SYN arriving from its own address; exactly those fail."""
    d = SAMPLES / "any-backend-cluster"
    facts, conns = ground_truth(d)
    assert (facts["command"]["lb"], facts["lb"]["behaviour"], facts["command"]["policies"]) == (
        "any-backend", "any-backend", ["Cluster"])
    me = node_ip(facts, "node-1")
    failed = [c for c in conns if c["outcome"] == "failed"]
    assert failed and len(failed) < len(conns)
    assert failed == [c for c in conns if c["lb_node"] == "node-1"]
    assert all(c["snat"] and c["lb_src"] == c["wire_src"] == me for c in conns)
    assert all(c["error"] == "timeout" and c["failure"] == "loopback" and c["failure_at"]
               .startswith(f"node-1 eth0: SYN from its own address {me} to {me}:30080")
               for c in failed)
    # each looped SYN came in on node-1's eth0 from node-1's own address; none was answered
    pkts = tcp_packets(d / "nodes" / "node-1" / "eth0.pcap")
    came = {p["sport"] for p in syns(pkts) if (p["src"], p["dst"], p["dport"]) == (me, me, 30080)}
    assert came == {c["wire_sport"] for c in failed}
    assert not [p for p in pkts if p["dst"] == me and p["dport"] in came]
    assert facts["source_sysctls"]["node-1"]["eth0.accept_local"] == 0


def test_nftables_local_sample():
    """kube-proxy nftables mode, ipMode Proxy, Local: nft dumps only; loopbacks and
    asymmetric returns (node-2 short-circuits the pod source to web-1) time out."""
    d = SAMPLES / "nftables-local"
    assert sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) < 1_000_000
    facts, conns = ground_truth(d)
    assert (facts["proxy_mode"], facts["ip_mode"], facts["command"]["any"]) == (
        "nftables", "Proxy", True)
    (svc,) = json.loads((d / "cluster" / "services.json").read_text())["items"]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "198.19.0.10", "ipMode": "Proxy"}]
    for n in ("node-1", "node-2"):
        nd = d / "nodes" / n
        assert "table ip kube-proxy" in (nd / "nft-ruleset.txt").read_text()
        assert json.loads((nd / "nft-ruleset.json").read_text())["nftables"]
        assert "KUBE" not in (nd / "iptables-save.txt").read_text()
        assert not (nd / "ipvsadm.txt").exists() and not (nd / "ipset-save.txt").exists()
        for f in ("eth0.pcap", "any.pcap"):
            info = read_capture(nd / f).info
            assert info.records == info.decoded + info.skipped.get("arp", 0), info
    assert len(conns) == 20 and not any(c["snat"] for c in conns)
    failed = [c for c in conns if c["outcome"] == "failed"]
    assert failed and len(failed) < len(conns)
    assert all(c["error"] == "timeout" and (c["loopback"] or c["asymmetric"]) for c in failed)
    assert any(c["loopback"] for c in conns) and any(c["asymmetric"] for c in conns)
    (t,) = facts["services"]
    assert t["failed"] == len(failed) == t["loopback"] + t["asymmetric"]
    assert_nic_matches_ground_truth(d, facts, conns, "web-local")
