"""findings.mechanism's decisions on hand-built rule sets, inventories and records, and the
verdict's words (findings.wording) each fact picks.

The rule sets: kube-proxy iptables mode from natlens.netfilter.generate (with and without a
rule for the LB IP: ipMode VIP / Proxy), and the committed samples' IPVS-mode and
nftables-mode node dumps.
"""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import mechanism as M
from natlens.findings import wording as W
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.netfilter import NodeRules, load_node, parse_iptables_save
from natlens.netfilter.generate import Service, kube_proxy_iptables

POD, NODE1, VIP, WEB1, WEB2 = "198.18.16.100", "198.18.0.11", "198.19.0.10", "198.18.16.10", "198.18.17.10"
CIDR = "198.18.16.0/20"
ADDRS = {"eth0": [(0xC612000B, 24, 4)], "cni0": [(0xC6121001, 24, 4)]}  # 198.18.0.11/24, 198.18.16.1/24


def _inventory(ip_mode="Proxy", source="cluster/services.json", hostname=None) -> Inventory:
    nodes = pd.DataFrame([{"name": f"node-{i}", "internal_ip": f"198.18.0.1{i}", "addresses": (f"198.18.0.1{i}",),
                           "pod_cidr": f"198.18.1{5 + i}.0/24", "pod_cidrs": (f"198.18.1{5 + i}.0/24",), "source": "t"}
                          for i in (1, 2)], columns=NODE_COLUMNS)
    rows = [{"namespace": "default", "name": "web", "type": "LoadBalancer", "cluster_ip": "198.18.128.10",
             "cluster_ips": ("198.18.128.10",), "lb_ip": VIP, "port": 80, "proto": "tcp", "node_port": 30080,
             "target_port": 8080, "policy": "Local", "source": source, "ip_mode": ip_mode, "lb_hostname": None}]
    if hostname:
        rows.append({**rows[0], "name": "other", "lb_ip": None, "ip_mode": None, "lb_hostname": hostname})
    return Inventory(nodes=nodes, pods=pd.DataFrame(columns=POD_COLUMNS),
                     services=pd.DataFrame(rows, columns=SERVICE_COLUMNS))


def _iptables(lb: bool, policy: str = "Local") -> NodeRules:
    svc = Service("default/web:http", "198.18.128.10", 80, node_port=30080, lb_ips=[VIP] if lb else [],
                  policy=policy, endpoints=[(WEB1, 8080, True), (WEB2, 8080, False)])
    return NodeRules(parse_iptables_save(kube_proxy_iptables([svc], cluster_cidr=CIDR).iptables),
                     addresses=ADDRS, name="node-1")


# --- proxy_mode -----------------------------------------------------------------------------
def test_proxy_mode_from_what_the_dumps_hold():
    assert M.proxy_mode(_iptables(lb=True), ["n/iptables-save.txt"]).value == "iptables"
    ipvs = load_node(samples_dir() / "loopback-local" / "nodes" / "node-1")
    assert M.proxy_mode(ipvs, []).value == "ipvs"
    nft = load_node(samples_dir() / "nftables-local" / "nodes" / "node-1")
    f = M.proxy_mode(nft, ["nodes/node-1/nft-ruleset.json"])
    assert f.value == "nftables" and f.evidence.startswith("nodes/node-1/nft-ruleset.json: kube-proxy's nft table")
    bare = NodeRules(parse_iptables_save("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"), name="n")
    assert M.proxy_mode(bare, []).value == "none"


# --- ingress_mode ---------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "want"), [("Proxy", "Proxy"), ("VIP", "VIP"), (None, "unset")])
def test_ingress_mode_from_cluster_services(mode, want):
    f = M.ingress_mode(_inventory(mode), VIP, 80, "tcp")
    assert f.value == want and "cluster/services.json: default/web" in f.evidence


def test_ingress_mode_unknown_without_cluster_json_and_a_hostname_ingress_is_named():
    assert M.ingress_mode(_inventory(source="node-1 netfilter model"), VIP, 80, "tcp").value == "unknown"
    f = M.ingress_mode(_inventory(hostname="web.elb.example"), "198.19.9.9", 80, "tcp")
    assert f.value == "unknown" and "default/other has a hostname-only ingress (web.elb.example)" in f.evidence


# --- vip_on_node: what the node does with pod -> VIP ------------------------------------------
def test_ip_mode_vip_in_iptables_mode_dnats_the_vip_on_the_node():
    f = M.vip_on_node(_iptables(lb=True), POD, VIP, 80, "tcp", "cni0")
    assert f.value == "dnat" and f"DNAT to {WEB1}:8080" in f.evidence and f"DNAT to {WEB2}:8080" in f.evidence
    assert f.rule.startswith("nat/KUBE-SERVICES #") and f"-d {VIP}/32" in f.rule


def test_no_kube_proxy_rule_for_the_lb_ip_is_none_whatever_the_policy():
    for policy in ("Local", "Cluster"):
        f = M.vip_on_node(_iptables(lb=False, policy=policy), POD, VIP, 80, "tcp", "cni0")
        assert f.value == "none" and f.evidence.endswith(f"no kube-proxy rule for {VIP}:80/tcp on the node")


def test_ipvs_mode_holds_the_vip_and_decides_snat_by_policy():
    ipvs = load_node(samples_dir() / "loopback-local" / "nodes" / "node-1")
    f = M.vip_on_node(ipvs, POD, VIP, 80, "tcp", "cni0")
    assert f.value == "policy" and "ipset KUBE-LOAD-BALANCER-LOCAL has it" in f.evidence


# --- returning_syn: where a looped-back SYN goes ---------------------------------------------
def test_a_pod_source_is_short_circuited_to_any_endpoint_in_iptables_mode():
    f = M.returning_syn(_iptables(lb=False), _inventory(), "node-1", POD, NODE1, 30080, "tcp", "eth0")
    assert f.value == "any" and f.rule.startswith("nat/KUBE-EXT-") and f"-s {CIDR}" in f.rule


def test_nftables_mode_names_its_short_circuit_rule():
    nft = load_node(samples_dir() / "nftables-local" / "nodes" / "node-1")
    f = M.returning_syn(nft, _inventory(), "node-1", POD, NODE1, 30080, "tcp", "eth0")
    assert f.value == "any" and 'comment "short-circuit pod traffic"' in f.rule


def test_ipvs_mode_sends_it_to_a_local_endpoint():
    ipvs = load_node(samples_dir() / "loopback-local" / "nodes" / "node-1")
    f = M.returning_syn(ipvs, _inventory(), "node-1", POD, NODE1, 30080, "tcp", "eth0")
    assert f.value == "local" and f.rule == "" and "ipvs: TCP 198.18.0.11:30080" in f.evidence


def test_returning_syn_unknown_without_a_node_port():
    f = M.returning_syn(_iptables(lb=False), _inventory(), "node-1", POD, NODE1, None, "tcp", "eth0")
    assert f.value == "unknown" and "NodePort is not known" in f.evidence


# --- looped_endpoints: what the captures show -------------------------------------------------
def test_looped_endpoints_count_connections_per_endpoint():
    j = pd.DataFrame({"journey": ["J0", "J1", "J2"], "loopback": ["yes", "yes", "no"],
                      "client_node": "node-1", "client_h": POD, "vip": VIP})
    rec = [("J0", "node-1", VIP, 1.0), ("J0", "node-1", NODE1, 1.0), ("J0", "node-1", WEB2, 1.0),
           ("J0", "node-1", WEB1, 2.0), ("J0", "node-2", WEB2, 1.0),  # another node's copy: not counted
           ("J1", "node-1", WEB1, 1.0), ("J1", "node-1", WEB1, None),  # no SYN: not counted
           ("J2", "node-1", WEB2, 1.0)]  # not a loopback
    r = pd.DataFrame([{"journey": a, "node": n, "orig_h": POD, "resp_h": h, "resp_p": 8080, "syn_ts": t}
                      for a, n, h, t in rec])
    count, nodes = M.looped_endpoints(j, r, _inventory())
    assert count == {f"{WEB1}:8080": 2, f"{WEB2}:8080": 1}
    assert nodes == {f"{WEB1}:8080": "node-1", f"{WEB2}:8080": "node-2"}


# --- the words each fact picks ----------------------------------------------------------------
def _mech(mode="nftables", vip="none", back="any", ingress="Proxy", rule="", looped=None) -> M.Mechanism:
    fact = M.Fact
    return M.Mechanism("198.19.0.10:80/tcp", "node-1", fact(mode, "m"), fact(ingress, "i"), fact(vip, "v"),
                       fact(back, "r", rule), looped or {}, {f"{WEB1}:8080": "node-1", f"{WEB2}:8080": "node-2"})


def test_no_rule_for_the_lb_ip_means_cluster_is_no_fix_and_ip_mode_vip_is():
    m = _mech()
    steps = W.remediation(m, "Local")
    assert not any("externalTrafficPolicy: Cluster" in s for s in steps)
    assert "ipMode VIP" in steps[0] and "kube-proxy (nftables mode) DNATs pod traffic to the VIP" in steps[0]
    assert any("ClusterIP" in s for s in steps) and any("ip-masq-agent" in s for s in steps)
    assert "Switching to externalTrafficPolicy: Cluster is no fix here" in W.not_a_fix(m, "Local")
    assert W.not_a_fix(m, "Cluster").startswith(" The Cluster policy does not help here")
    assert "ipMode Proxy in cluster/services.json" in W.why_it_leaves(m)


def test_ipvs_mode_keeps_the_ipvs_words_and_remedies():
    m = _mech(mode="ipvs", vip="policy", back="local")
    assert W.remediation(m, "Local")[0].startswith("Switch the Service to externalTrafficPolicy: Cluster")
    assert W.not_a_fix(m, "Local") == "" and W.why_it_leaves(m) == "pod-to-VIP traffic leaves the node"
    assert "That node DNATs the SYN to a local endpoint" in W.loopback_mechanism(m, True)
    assert W.loopback_mechanism(m, True).endswith("Only connections hashed to the client's own node fail, "
                                                  "hence the sporadic failures.")
    assert W.loopback_mechanism(m, False).endswith("Connections hashed to the client's own node fail this way.")


def test_a_cluster_policy_names_the_masquerade_rules_of_the_nodes_mode():
    assert "KUBE-MARK-MASQ" in W.remediation(_mech(mode="ipvs", vip="policy"), "Cluster")[0]
    nft = W.remediation(_mech(mode="nftables", vip="policy"), "Cluster")[0]
    assert "mark-for-masquerade and masquerading chains" in nft and "KUBE-MARK-MASQ" not in nft


def test_any_endpoint_words_name_the_rule_and_what_the_captures_saw():
    rule = ('ip kube-proxy external-X #1 rule ip saddr 198.18.16.0/20 goto service-X comment '
            '"short-circuit pod traffic" (verdict goto service-X)')
    text = W.loopback_mechanism(_mech(rule=rule, looped={f"{WEB1}:8080": 9, f"{WEB2}:8080": 3}), False)
    assert "local endpoint" not in text
    assert 'kube-proxy\'s "short-circuit pod traffic" rule in chain external-X' in text
    assert f"to {WEB1}:8080 (node-1) in 9 and to {WEB2}:8080 (node-2) in 3 connections" in text


def test_node_dnat_sentence_says_no_loopback_is_possible_and_shows_the_rule():
    m = _mech(mode="iptables", vip="dnat", ingress="VIP")
    m.vip = M.Fact("dnat", "v", f"nat/KUBE-SERVICES #2: -d {VIP}/32 -p tcp --dport 80 -> KUBE-EXT-X (matched)")
    text = W.node_dnat_sentence(m, "Service default/web", "node-1", 8, 8)
    assert "8 of 8 connections were DNATed to an endpoint on node-1 itself and never reached the load balancer" in text
    assert "(kube-proxy in iptables mode; ingress ipMode VIP)" in text
    assert f"-d {VIP}/32 -p tcp --dport 80 -> KUBE-EXT-X)" in text and "(matched)" not in text
    assert text.endswith("so no loopback is possible for pod traffic.")


def test_without_the_rules_walk_the_captures_decide_where_the_returning_syn_went():
    unknown = M.Fact("unknown", "no NodePort")
    m = _mech(back="unknown", looped={f"{WEB2}:8080": 2})
    m.returning_syn = unknown
    assert W.returning_to(m) == "any" and "to any of the Service's endpoints" in W.loopback_mechanism(m, True)
    m.looped = {f"{WEB1}:8080": 2}
    assert W.returning_to(m) == "local"
    m.looped, m.looped_nodes = {"198.18.99.9:8080": 1}, {}  # an endpoint no inventory places
    assert W.returning_to(m) == "unknown"
    text = W.loopback_mechanism(m, True)
    assert "local endpoint" not in text and "DNATs it to one of the Service's endpoints" in text
    assert W.returning_to(None) == "unknown"


def test_the_node_port_of_the_walk_comes_from_the_loopbacks_when_the_inventory_lacks_it():
    j = pd.DataFrame({"journey": ["J0", "J1"], "loopback": ["yes", "no"]})
    r = pd.DataFrame([{"journey": "J0", "resp_h": NODE1, "resp_p": 30080, "syn_ts": 1.0},
                      {"journey": "J1", "resp_h": NODE1, "resp_p": 31111, "syn_ts": 1.0}])
    assert M._looped_node_port(j, r, NODE1) == 30080
    assert M._looped_node_port(j, r, None) is None
