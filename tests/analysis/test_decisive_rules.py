"""findings.snat.decisive_rules: the rule lines the report highlights as the reason for a SNAT
row, for each proxy mode's trace (the lines are the netfilter model's, as in rule_trace)."""

from __future__ import annotations

from pathlib import Path

from natlens.findings.snat import decisive_rules
from natlens.netfilter.node import load_files, load_node

IPVS_LOCAL = [
    "packet tcp 198.18.16.100:40000 -> 198.19.0.10:80 in via cni0",
    "nat/PREROUTING #1: -> KUBE-SERVICES (matched)",
    "nat/KUBE-SERVICES #1: -m set --match-set KUBE-LOAD-BALANCER dst,dst -> KUBE-LOAD-BALANCER (matched)",
    "nat/KUBE-LOAD-BALANCER #1: -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -> RETURN (matched)",
    "nat/KUBE-SERVICES #2: ! -s 198.18.16.0/20 -m set --match-set KUBE-CLUSTER-IP dst,dst -> KUBE-MARK-MASQ (no match)",
    "routing: 198.19.0.10 is not local -> out via eth0",
    "filter/KUBE-FORWARD #2: -m conntrack --ctstate RELATED,ESTABLISHED -> ACCEPT (no match)",
    "nat/KUBE-POSTROUTING #1: -m set --match-set KUBE-LOOP-BACK dst,dst,src -> MASQUERADE (no match)",
    "nat/KUBE-POSTROUTING #2: -m mark ! --mark 0x4000/0x4000 -> RETURN (matched)",
]
IPVS_CLUSTER = [
    "nat/KUBE-LOAD-BALANCER #1: -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -> RETURN (no match)",
    "nat/KUBE-LOAD-BALANCER #2: -> KUBE-MARK-MASQ (matched)",
    "nat/KUBE-MARK-MASQ #1: -> MARK --set-xmark 0x4000/0x4000 (matched)",
    "nat/KUBE-SERVICES #2: ! -s 198.18.16.0/20 -m set --match-set KUBE-CLUSTER-IP dst,dst -> KUBE-MARK-MASQ (no match)",
    "routing: 198.19.0.10 is not local -> out via eth0",
    "nat/KUBE-POSTROUTING #1: -m set --match-set KUBE-LOOP-BACK dst,dst,src -> MASQUERADE (no match)",
    "nat/KUBE-POSTROUTING #2: -m mark ! --mark 0x4000/0x4000 -> RETURN (no match)",
    "nat/KUBE-POSTROUTING #4: -> MASQUERADE --random-fully (matched)",
]
NFT_NO_RULE = [
    "ip kube-proxy nat-prerouting #1 rule jump services (verdict jump services)",
    "ip kube-proxy services #1 rule ip daddr . meta l4proto . th dport vmap @service-ips (no element)",
    "routing: 198.19.0.10 is not local -> out via eth0",
    "ip kube-proxy masquerading #1 rule meta mark & 0x00004000 == 0x00000000 return (verdict return)",
]


def test_ipvs_local_returns_before_marking_and_postrouting_lets_it_go():
    assert decisive_rules(IPVS_LOCAL, False) == [IPVS_LOCAL[3], IPVS_LOCAL[-1]]


def test_snated_row_shows_the_mark_and_the_masquerade_that_matched():
    assert decisive_rules(IPVS_CLUSTER, True) == [IPVS_CLUSTER[1], IPVS_CLUSTER[-1]]


def test_nftables_without_a_service_ip_names_the_lookup_that_found_none():
    assert decisive_rules(NFT_NO_RULE, False) == [NFT_NO_RULE[1], NFT_NO_RULE[-1]]


def test_rules_not_taken_are_never_decisive():
    # the LOOP-BACK MASQUERADE did not match: a SNATed verdict must not point at it
    trace = [t for t in IPVS_CLUSTER if "random-fully" not in t]
    assert decisive_rules(trace, True) == [IPVS_CLUSTER[1]]
    assert all("(no match)" not in x for x in decisive_rules(IPVS_LOCAL, False))


def test_unknown_snat_or_a_trace_of_why_not_walked_has_none():
    assert decisive_rules(IPVS_LOCAL, None) == []
    assert decisive_rules(["no dumps in the bundle"], False) == []


REPO = Path(__file__).resolve().parents[2]


def test_iptables_local_pod_traffic_jump_skips_the_mark():
    # kube-proxy's iptables mode, Local policy: pod traffic to the LB VIP goes from KUBE-EXT- to the
    # cluster-wide KUBE-SVC- chain, which marks only sources outside the pod range
    rules = load_files(str(REPO / "tests/netfilter/shapes/iptables-1.28/iptables-save.txt"))
    v = rules.explain("198.18.1.7", "198.18.3.1", 80, in_iface="cni0")
    assert v.snat is False
    assert decisive_rules(list(v.trace), False) == [
        "nat/KUBE-EXT-OUSMSW52X3WXZNQU #1: -s 198.18.1.0/24 -> KUBE-SVC-OUSMSW52X3WXZNQU (matched)",
        "nat/KUBE-POSTROUTING #1: -m mark ! --mark 0x4000/0x4000 -> RETURN (matched)"]


def test_nftables_short_circuit_beats_a_service_ips_miss_that_a_later_rule_made_good():
    # the VIP of the node port is not in @service-ips, but @service-nodeports took the packet on to
    # the external chain, whose pod short-circuit is why it is not marked
    rules = load_node(REPO / "data/samples/nftables-local/nodes/node-1")
    v = rules.explain("198.18.16.5", "198.18.0.11", 30080, in_iface="cni0")
    why, how = decisive_rules(list(v.trace), v.snat)
    assert v.snat is False and why.startswith("ip kube-proxy external-MW3VTDQO-default/web-local/tcp/http #1 rule ")
    assert '"short-circuit pod traffic" (verdict goto service-' in why
    assert how.startswith("ip kube-proxy masquerading #1 rule meta mark & 0x00004000 == 0x00000000 return")
