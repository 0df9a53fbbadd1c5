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
    assert "ip daddr 198.18.0.13 tcp dport 30081 dnat" in nft
    # no real server: no DNAT, IPVS's ICMP port unreachable (ip_vs_leave) instead
    assert "tcp dport 30080 dnat" not in nft
    assert ("ip daddr 198.18.0.13 tcp dport 30080 tcp flags & (syn | ack) == syn reject with icmp "
            "type port-unreachable") in nft


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



# --- proxy modes and ipMode ----------------------------------------------------------------


def _mode_rules(topo) -> str:
    """Every rule text the lab loads into the nodes for the plan's proxy mode."""
    out = []
    for n in topo.nodes:
        if topo.proxy_mode == "ipvs":
            out += [rules.kube_proxy_iptables(topo, n), rules.kube_proxy_ipsets(topo, n),
                    rules.ipvs_standin(rules.virtual_servers(topo, n))]
        elif topo.proxy_mode == "iptables":
            out.append(rules.iptables_mode_rules(topo, n))
        else:
            out.append(rules.nftables_mode_rules(topo, n))
    return "\n".join(out)


@pytest.mark.parametrize("proxy_mode", ["ipvs", "iptables", "nftables"])
@pytest.mark.parametrize("ip_mode", ["VIP", "Proxy"])
def test_every_mode_uses_test_addresses_and_proxy_leaves_the_lb_ip_out(proxy_mode, ip_mode):
    topo = plan(["Local", "Cluster"], 3, prefix="nlx-", proxy_mode=proxy_mode, ip_mode=ip_mode)
    text = _mode_rules(topo)
    addrs = set(re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text))
    assert addrs and all(ipaddress.ip_network(a, strict=False).subnet_of(LAB_NET) for a in addrs)
    # ipMode Proxy: no rule, set member or element for an LB IP, in any mode
    assert ("198.19.0.10" in text) == (ip_mode == "VIP"), proxy_mode
    assert ("198.19.0.11" in text) == (ip_mode == "VIP"), proxy_mode
    assert "198.18.128.10" in text and "30080" in text  # ClusterIP and NodePort stay
    assert topo.lb_ip_on_node == (ip_mode == "VIP" and proxy_mode != "ipvs")
    assert topo.to_dict()["proxy_mode"] == proxy_mode and topo.to_dict()["ip_mode"] == ip_mode


@pytest.mark.parametrize("bad", [{"proxy_mode": "userspace"}, {"proxy_mode": "IPVS"},
                                 {"ip_mode": "vip"}, {"ip_mode": "Hostname"}])
def test_bad_modes_are_one_line_errors(bad):
    with pytest.raises(NatlensError, match="proxy mode|ipMode"):
        plan(["Local"], 2, **bad)


def test_generated_services_flag_endpoints_per_node():
    topo = plan(["Local"], 3, proxy_mode="iptables")
    by_node = {n.name: rules.generate_services(topo, n) for n in topo.nodes}
    (s1,), (s3,) = by_node["node-1"], by_node["node-3"]
    assert (s1.name, s1.cluster_ip, s1.port, s1.node_port, s1.lb_ips, s1.policy) == (
        "default/web-local:http", "198.18.128.10", 80, 30080, ["198.19.0.10"], "Local")
    assert s1.endpoints == [("198.18.16.10", 8080, True), ("198.18.17.10", 8080, False)]
    assert all(not local for _, _, local in s3.endpoints)
    assert rules.generate_services(plan(["Local"], 2, ip_mode="Proxy"), topo.nodes[0])[0].lb_ips == []


def test_iptables_mode_rules_are_kube_proxys():
    topo = plan(["Local"], 2, proxy_mode="iptables")
    n1, n2 = topo.nodes
    text = rules.iptables_mode_rules(topo, n1).splitlines()
    assert any(ln.startswith("-A KUBE-SERVICES -d 198.19.0.10/32 -p tcp") and "-j KUBE-EXT-" in ln
               for ln in text)
    svl = [ln for ln in text if ln.startswith("-A KUBE-SVL-")]
    assert svl and all("KUBE-MARK-DROP" not in ln for ln in svl)  # node-1 has web-1
    assert "KUBE-SVL-" in rules.iptables_mode_rules(topo, n2)


def test_nftables_mode_rules_load_as_one_table():
    topo = plan(["Local", "Cluster"], 2, proxy_mode="nftables")
    text = rules.nftables_mode_rules(topo, topo.nodes[0])
    tables = set(re.findall(r"^add table (\S+ \S+)", text, re.M))
    assert tables == {"ip kube-proxy"}
    assert "add element ip kube-proxy nodeport-ips { 198.18.0.11 }" in text
    assert "masquerade" in text and "natlens_ipvs" not in text


def test_expected_and_notes_name_the_mode():
    from natlens.lab.run import expected, mode_notes

    tke = plan(["Local"], 2)
    assert "SNATed to the node IP" in expected(tke)["Cluster"]
    assert "not bound to kube-ipvs0" in mode_notes(tke)
    on_node = plan(["Local"], 2, proxy_mode="nftables")
    assert all("never reaches the LB" in t for t in expected(on_node).values())
    proxy = plan(["Local"], 2, proxy_mode="nftables", ip_mode="Proxy")
    assert "asymmetric" in expected(proxy)["Local"] and "loop back" in expected(proxy)["Cluster"]
    assert mode_notes(proxy).startswith("kube-proxy nftables mode, LoadBalancer ingress ipMode Proxy")
    assert "asymmetric" not in expected(plan(["Local"], 2, ip_mode="Proxy"))["Local"]


def test_services_json_carries_the_ip_mode():
    for ip_mode in ("VIP", "Proxy"):
        docs = bundle.cluster_json(plan(["Local"], 2, ip_mode=ip_mode), "2026-01-01T00:00:00Z")
        (svc,) = docs["services.json"]["items"]
        assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "198.19.0.10",
                                                             "ipMode": ip_mode}]


CT_NODE_DNAT = """\
tcp      6 118 TIME_WAIT src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 src=198.18.17.10 dst=198.18.16.100 sport=8080 dport=40001 [ASSURED] mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40002 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40002 mark=0 use=1
"""
CT_VPC_2 = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40002 dport=80 [UNREPLIED] src=198.18.0.12 dst=198.18.16.100 sport=30080 dport=40002 mark=0 use=1
"""
CT_NODE2 = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.18.0.12 sport=40002 dport=30080 [UNREPLIED] src=198.18.16.10 dst=198.18.16.100 sport=8080 dport=40002 mark=0 use=1
"""


def test_ground_truth_dnat_on_the_node_and_asymmetric_return():
    topo = plan(["Local"], 2, proxy_mode="nftables", ip_mode="Proxy")
    recs = [{"service": "web-local", "src": "198.18.16.100", "sport": sport,
             "dst": "198.19.0.10", "dport": 80, "outcome": outcome}
            for sport, outcome in ((40001, "connected"), (40002, "failed"))]
    got = bundle.enrich(recs, topo, CT_NODE_DNAT, CT_VPC_2,
                        {"node-1": CT_NODE_DNAT, "node-2": CT_NODE2})
    # 40001: the node DNATed the VIP itself; the LB never saw it
    assert (got[0]["node_dnat"], got[0]["loopback"], got[0]["lb_node"]) == (
        "198.18.17.10:8080", False, None)
    assert got[0]["snat"] is False and got[0]["backend"] is None
    # 40002: the LB sent it to node-2, which DNATed it un-SNATed to web-1 on node-1
    assert (got[1]["lb_node"], got[1]["loopback"], got[1]["backend"], got[1]["backend_snat"],
            got[1]["asymmetric"]) == ("node-2", False, "198.18.16.10:8080", False, True)
    (t,) = bundle.tally(got, topo)
    assert (t["node_dnat"], t["asymmetric"], t["loopback"]) == (1, 1, 0)
    # without the nodes' conntrack the LB side stays unknown, never guessed
    assert bundle.enrich(recs, topo, CT_NODE_DNAT, CT_VPC_2)[1]["asymmetric"] is None


def test_cli_modes_are_case_insensitive_and_default_to_ipvs_vip():
    from natlens.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["lab", "run", "--out", "/tmp/x"])
    assert (args.proxy_mode, args.ip_mode) == ("ipvs", "VIP")
    args = parser.parse_args(["lab", "run", "--out", "/tmp/x", "--proxy-mode", "NFTables",
                              "--ip-mode", "proxy"])
    assert (args.proxy_mode, args.ip_mode) == ("nftables", "Proxy")
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "run", "--out", "/tmp/x", "--proxy-mode", "userspace"])
