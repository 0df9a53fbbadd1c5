"""The lab's plan and generated rules, checked without root (pure functions)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from natlens.errors import NatlensError
from natlens.lab import bundle, netns, rules
from natlens.lab.topology import LAB_NET, plan


@pytest.mark.parametrize("nodes", [2, 3, 4])
def test_every_address_is_in_the_test_range(nodes):
    topo = plan(["Local", "Cluster"], nodes, prefix="nlx-")
    text = "\n".join([rules.lb_nft(topo)] + [
        rules.kube_proxy_iptables(topo, n) + rules.kube_proxy_ipsets(topo, n)
        + rules.ipvs_standin(rules.virtual_servers(topo, n)) for n in topo.nodes])
    text += str(topo.to_dict())
    addrs = set(re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text))
    assert addrs
    for a in addrs:
        assert ipaddress.ip_network(a, strict=False).subnet_of(LAB_NET), a
    assert all(ns.startswith("nlx-") for ns in [topo.vpc_ns] + [n.ns for n in topo.nodes]
               + [p.ns for p in topo.pods])


def test_client_shares_a_node_with_an_endpoint_and_endpoints_span_nodes():
    topo = plan(["Local"], 3)
    assert topo.client.node == "node-1"
    assert {p.node for p in topo.endpoints} == {"node-1", "node-2"}
    assert [n.name for n in topo.lb_pool(topo.services[0])] == ["node-1", "node-2"]
    topo = plan(["Cluster"], 3)
    assert [n.name for n in topo.lb_pool(topo.services[0])] == ["node-1", "node-2", "node-3"]


@pytest.mark.parametrize("bad", [(["Local"], 1), (["Local"], 5), ([], 2), (["local"], 2)])
def test_bad_plans_are_one_line_errors(bad):
    with pytest.raises(NatlensError):
        plan(*bad)


def _lb_rules(text: str) -> list[tuple[str | None, list[str]]]:
    """(source match or None, [node IPs the rule can pick]) per DNAT rule."""
    out = []
    for line in text.splitlines():
        if "dnat" in line or line.strip().endswith("drop"):
            src = re.match(r"\s*ip saddr ([\d.]+)", line)
            out.append((src.group(1) if src else None, re.findall(r": (\S+) \. \d+", line)))
    return out


def test_lb_never_sends_a_flow_back_to_its_source_node():
    topo = plan(["Cluster"], 3)
    ips = [n.ip for n in topo.nodes]
    got = _lb_rules(rules.lb_nft(topo))
    assert got[-1] == (None, ips)  # pod sources (Local: no SNAT) may land anywhere
    for src, picks in got[:-1]:
        assert src in ips and src not in picks and sorted(picks + [src]) == sorted(ips)
    # The catch-all rule comes last, after every per-source rule.
    assert "jhash ip saddr . tcp sport . ip daddr . tcp dport" in rules.lb_nft(topo)


def test_lb_local_pool_is_the_nodes_with_endpoints():
    topo = plan(["Local"], 4)
    got = _lb_rules(rules.lb_nft(topo))
    assert got[-1] == (None, ["198.18.0.11", "198.18.0.12"])
    assert ("198.18.0.11", ["198.18.0.12"]) in got


def test_ipsets_and_ipvs_follow_the_policy():
    topo = plan(["Local", "Cluster"], 3)
    n1, n3 = topo.node("node-1"), topo.node("node-3")
    sets = rules.kube_proxy_ipsets(topo, n1).splitlines()
    assert "add KUBE-LOAD-BALANCER 198.19.0.10,tcp:80" in sets
    assert "add KUBE-LOAD-BALANCER 198.19.0.11,tcp:80" in sets
    assert "add KUBE-LOAD-BALANCER-LOCAL 198.19.0.10,tcp:80" in sets
    assert "add KUBE-LOAD-BALANCER-LOCAL 198.19.0.11,tcp:80" not in sets
    assert "add KUBE-NODE-PORT-LOCAL-TCP 30080" in sets
    assert "add KUBE-NODE-PORT-LOCAL-TCP 30081" not in sets
    assert "add KUBE-LOOP-BACK 198.18.16.10,tcp:8080,198.18.16.10" in sets
    vs = {(v.addr, v.port): v.reals for v in rules.virtual_servers(topo, n3)}
    assert vs[(n3.ip, 30080)] == []  # Local, no endpoint on node-3
    assert vs[(n3.ip, 30081)] == [("198.18.16.10", 8080), ("198.18.17.10", 8080)]
    assert "198.19.0" not in rules.ipvsadm_save(list(rules.virtual_servers(topo, n1)))
    nft = rules.ipvs_standin(rules.virtual_servers(topo, n3))
    assert "30080" not in nft and "ip daddr 198.18.0.13 tcp dport 30081" in nft


def test_kube_proxy_rules_in_design_shape():
    text = rules.kube_proxy_iptables(plan(["Local"], 2), plan(["Local"], 2).nodes[0])
    assert text.count("*nat") == 1 and text.count("COMMIT") == 2
    assert ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring '
            'SNAT" -j MASQUERADE --random-fully') in text.splitlines()


CT_NODE = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40001 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.18.0.11 sport=40001 dport=30080 [UNREPLIED] src=198.18.16.10 dst=198.18.16.100 sport=8080 dport=40001 mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.16.100 dst=198.19.0.11 sport=40002 dport=80 src=198.19.0.11 dst=198.18.0.11 sport=80 dport=61234 [ASSURED] mark=0 use=1
udp      17 29 src=198.18.16.100 dst=198.18.0.1 sport=5000 dport=53 [UNREPLIED] src=198.18.0.1 dst=198.18.16.100 sport=53 dport=5000 mark=0 use=1
"""
CT_VPC = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 [UNREPLIED] src=198.18.0.11 dst=198.18.16.100 sport=30080 dport=40001 mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.0.11 dst=198.19.0.11 sport=61234 dport=80 src=198.18.0.12 dst=198.18.0.11 sport=30081 dport=61234 [ASSURED] mark=0 use=1
"""


def test_ground_truth_join_through_both_conntrack_tables():
    topo = plan(["Local", "Cluster"], 2)
    recs = [{"service": "web-local", "src": "198.18.16.100", "sport": 40001,
             "dst": "198.19.0.10", "dport": 80, "outcome": "failed"},
            {"service": "web-cluster", "src": "198.18.16.100", "sport": 40002,
             "dst": "198.19.0.11", "dport": 80, "outcome": "connected"},
            {"service": "web-cluster", "src": "198.18.16.100", "sport": 40003,
             "dst": "198.19.0.11", "dport": 80, "outcome": "failed"}]
    got = bundle.enrich(recs, topo, CT_NODE, CT_VPC)
    assert (got[0]["snat"], got[0]["lb_node"], got[0]["loopback"]) == (False, "node-1", True)
    assert got[0]["node_ct_state"] == "SYN_SENT"
    assert (got[1]["wire_src"], got[1]["wire_sport"]) == ("198.18.0.11", 61234)
    assert (got[1]["snat"], got[1]["lb_node"], got[1]["loopback"]) == (True, "node-2", False)
    assert got[2]["snat"] is None and got[2]["lb_node"] is None  # not in conntrack: no guess
    t = {row["policy"]: row for row in bundle.tally(got, topo)}
    assert (t["Local"]["failed"], t["Local"]["loopback_failed"]) == (1, 1)
    assert (t["Cluster"]["snat"], t["Cluster"]["by_lb_node"]) == (1, {"node-1": 0, "node-2": 1})
    assert [e.proto for e in bundle.parse_conntrack(CT_NODE)] == ["tcp"] * 3 + ["udp"]


def test_cluster_json_is_kubectl_shaped():
    docs = bundle.cluster_json(plan(["Local", "Cluster"], 2), "2026-01-01T00:00:00Z")
    assert {d["kind"] for d in docs.values()} == {"List"}
    svc = docs["services.json"]["items"][1]
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
    assert "healthCheckNodePort" not in svc["spec"]
    assert docs["services.json"]["items"][0]["spec"]["healthCheckNodePort"] == 32080
    pod = docs["pods.json"]["items"][0]
    assert pod["spec"]["nodeName"] and pod["status"]["podIP"]


def test_not_root_or_missing_tool_names_the_fix(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(NatlensError, match="needs root"):
        netns.require()
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda t: None if t == "nft" else "/bin/" + t)
    with pytest.raises(NatlensError, match=r"`nft`.*Debian package nftables"):
        netns.require()


def test_clean_refuses_a_too_broad_prefix():
    with pytest.raises(NatlensError):
        netns.clean("n")

