"""The lab in kube-proxy's iptables and nftables modes, with ipMode VIP and Proxy, on the
real kernel: outcomes from ground truth, the client node's NIC capture, and the dumps.

Needs root and network namespaces (skips with the reason otherwise). Three small runs at
once under different prefixes: iptables + VIP and nftables + VIP (Local and Cluster: the
node DNATs pod -> VIP itself, nothing reaches the LB, every connection connects) and
nftables + Proxy with Local (no rule for the LB IP: the pod IP leaves, some connections
loop back to the client's node and time out).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import netns_unavailable_reason, run_labs
from labhelpers import (
    assert_nic_matches_ground_truth,
    ground_truth,
    node_ip,
    service,
    syns,
    tcp_packets,
)

from natlens.lab import netns
from natlens.netfilter.conntrack import parse_conntrack

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
pytestmark = [pytest.mark.root, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

PID = os.getpid()
N = 8  # per Service: the runs are about outcomes per connection, not rates
RUNS = {  # name: (proxy mode, ipMode, policies, prefix tag)
    "iptables-vip": ("iptables", "VIP", ["Local", "Cluster"], "i"),
    "nftables-vip": ("nftables", "VIP", ["Local", "Cluster"], "n"),
    "nftables-proxy": ("nftables", "Proxy", ["Local"], "p"),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return run_labs(tmp_path_factory.mktemp("modes"), {
        name: {"policies": policies, "connections": N if ip_mode == "VIP" else 2 * N, "nodes": 2,
               "prefix": f"nlt{PID}{tag}-", "proxy_mode": proxy_mode, "ip_mode": ip_mode, "timeout": 1.0}
        for name, (proxy_mode, ip_mode, policies, tag) in RUNS.items()})


def _services_json(bundle: Path) -> list[dict]:
    return json.loads((bundle / "cluster" / "services.json").read_text())["items"]


@pytest.mark.parametrize("name", ["iptables-vip", "nftables-vip"])
def test_vip_mode_dnats_on_the_node_and_nothing_reaches_the_lb(bundles, name):
    bundle = bundles[name]
    facts, conns = ground_truth(bundle)
    assert len(conns) == 2 * N
    assert [c["outcome"] for c in conns] == ["connected"] * len(conns)
    endpoints = {f"{p['ip']}:8080": p["name"] for p in facts["topology"]["pods"]
                 if p["role"] == "endpoint"}
    for c in conns:
        # the node's conntrack: DNATed to an endpoint on the node, the LB never saw it
        assert c["node_dnat"] in endpoints and endpoints[c["node_dnat"]] == c["served_by"], c
        assert c["loopback"] is False and c["lb_node"] is None, c
        # Local: pod traffic is not masqueraded; Cluster: it is (KUBE-EXT- / external- chain)
        assert c["snat"] is (c["service"] == "web-cluster"), c
    # The LB's conntrack (the VPC router's: it also tracks what it forwards) has no VIP.
    vips = {s["vip"] for s in facts["topology"]["services"]}
    lb_ct = parse_conntrack((bundle / "ground-truth" / "lb-conntrack.txt").read_text())
    assert not [e for e in lb_ct if e.orig[1] in vips]
    # On the client node's NIC nothing goes to a VIP.
    pkts = tcp_packets(bundle / "nodes" / "node-1" / "eth0.pcap")
    assert not [p for p in pkts if p["dst"] in vips or p["src"] in vips]
    assert {s["policy"]: s["node_dnat"] for s in facts["services"]} == {"Local": N, "Cluster": N}
    assert {t["loopback"] for t in facts["services"]} == {0}


def test_nftables_proxy_local_loops_back_and_times_out(bundles):
    bundle = bundles["nftables-proxy"]
    facts, conns = ground_truth(bundle)
    assert len(conns) == 2 * N
    loops = [c for c in conns if c["loopback"]]
    assert loops, [c["lb_node"] for c in conns]  # P(no loopback in 16) = 2**-16
    for c in conns:
        assert c["snat"] is False and c["node_dnat"] is None, c  # the pod IP leaves the node
        assert c["lb_node"] in ("node-1", "node-2"), c
        assert c["loopback"] == (c["lb_node"] == "node-1"), c
        assert c["backend"] in ("198.18.16.10:8080", "198.18.17.10:8080"), c
    assert all(c["outcome"] == "failed" and c["error"] == "timeout" for c in loops)
    # node-2 short-circuits the pod source to every endpoint: to web-1 (on node-1), not
    # SNATed, web-1 answers the pod directly, and that connection times out too.
    for c in conns:
        if c["lb_node"] == "node-2":
            assert c["asymmetric"] == (c["backend"] == "198.18.16.10:8080"), c
            assert (c["outcome"] == "connected") == (not c["asymmetric"]), c
    ok = [c for c in conns if c["outcome"] == "connected"]
    assert all(c["served_by"] == "web-2" and c["lb_node"] == "node-2" for c in ok)
    tally = facts["services"][0]
    assert tally["failed"] == tally["loopback"] + tally["asymmetric"]
    assert tally["loopback_failed"] == tally["loopback"] == len(loops)
    # The client node's NIC: each loopback's SYN leaves for the VIP and comes back with the
    # same ISN to this node's NodePort; what went to node-2 does not come back.
    assert_nic_matches_ground_truth(bundle, facts, conns, "web-local")


def test_iptables_mode_dumps(bundles):
    bundle = bundles["iptables-vip"]
    node_dir = bundle / "nodes" / "node-1"
    saved = (node_dir / "iptables-save.txt").read_text()
    assert "-j KUBE-EXT-" in saved and "-j KUBE-SVL-" in saved and "-j KUBE-SEP-" in saved
    assert any("-d 198.19.0.10/32" in ln and "loadbalancer IP" in ln for ln in saved.splitlines())
    assert "MASQUERADE --random-fully" in saved
    assert "--match-set" not in saved and "natlens" not in saved.lower()
    for name in ("ipset-save.txt", "ipvsadm.txt"):
        assert not (node_dir / name).exists(), name
    # nft's own view of the node (iptables-nft's tables), as collect-node.sh saves it
    assert "table ip nat" in (node_dir / "nft-ruleset.txt").read_text()
    assert json.loads((node_dir / "nft-ruleset.json").read_text())["nftables"]
    assert not list((bundle / "ground-truth").glob("ipvs-standin-*"))
    facts, _ = ground_truth(bundle)
    assert (facts["proxy_mode"], facts["ip_mode"], facts["ipvs"]) == ("iptables", "VIP", None)


@pytest.mark.parametrize("name", ["nftables-vip", "nftables-proxy"])
def test_nftables_mode_dumps(bundles, name):
    bundle = bundles[name]
    facts, _ = ground_truth(bundle)
    ip_mode = RUNS[name][1]
    for n in ("node-1", "node-2"):
        node_dir = bundle / "nodes" / n
        assert "KUBE" not in (node_dir / "iptables-save.txt").read_text()
        text = (node_dir / "nft-ruleset.txt").read_text()
        assert "table ip kube-proxy" in text and "natlens" not in text
        assert "masquerade fully-random" in text
        assert f"elements = {{ {node_ip(facts, n)} }}" in text  # nodeport-ips
        assert ("198.19.0.10 . tcp . 80 : goto external-" in text) == (ip_mode == "VIP")
        tables = [o["table"]["name"] for o in json.loads((node_dir / "nft-ruleset.json")
                                                           .read_text())["nftables"]
                  if "table" in o]
        assert tables == ["kube-proxy"]
        for f in ("ipset-save.txt", "ipvsadm.txt"):
            assert not (node_dir / f).exists(), f
    assert not list((bundle / "ground-truth").glob("ipvs-standin-*"))
    assert (facts["proxy_mode"], facts["ip_mode"]) == ("nftables", ip_mode)
    assert facts["command"]["proxy_mode"] == "nftables"
    assert facts["topology"]["lb_ip_on_node"] is (ip_mode == "VIP")
    for svc in _services_json(bundle):
        assert svc["status"]["loadBalancer"]["ingress"] == [
            {"ip": service(facts, svc["metadata"]["name"])["vip"], "ipMode": ip_mode}]
    notes = yaml.safe_load((bundle / "incident.yaml").read_text())["notes"]
    assert f"kube-proxy nftables mode, LoadBalancer ingress ipMode {ip_mode}" in notes


def test_runs_leave_nothing_behind(bundles):
    for _, _, _, tag in RUNS.values():
        assert netns.existing(f"nlt{PID}{tag}-") == []


def test_proxy_mode_syns_leave_from_the_pod_ip(bundles):
    facts, conns = ground_truth(bundles["nftables-proxy"])
    vip = service(facts, "web-local")["vip"]
    pkts = syns(tcp_packets(bundles["nftables-proxy"] / "nodes" / "node-1" / "eth0.pcap"))
    assert {p["src"] for p in pkts if p["dst"] == vip} == {facts["client"]["ip"]}
