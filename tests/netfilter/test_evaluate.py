"""The packet walk without a kernel: the founding incident's rules, branches, IPVS, undecided."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from natlens.cli import main
from natlens.netfilter import (
    NodeRules,
    kube_services,
    load_node,
    parse_ip_addr,
    parse_ipset,
    parse_ipvsadm,
)
from natlens.netfilter import parse_iptables_save as ipt
from natlens.netfilter.generate import Service, kube_proxy_iptables, kube_proxy_ipvs
from natlens.netfilter.kubeproxy import NOT_APPLICABLE

# DESIGN.md section 1, verbatim
INCIDENT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
COMMIT
"""
SETS = """create KUBE-LOAD-BALANCER hash:ip,port family inet
add KUBE-LOAD-BALANCER 198.18.10.1,tcp:80
add KUBE-LOAD-BALANCER 198.18.10.2,tcp:80
create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet
add KUBE-LOAD-BALANCER-LOCAL 198.18.10.2,tcp:80
"""
ADDR = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0    inet 198.18.0.5/24 brd 198.18.0.255 scope global eth0\n"
        "3: cni0    inet 198.18.64.1/24 brd 198.18.64.255 scope global cni0\n")


def node(rules=INCIDENT, sets=SETS, addr=ADDR, ipvs=None) -> NodeRules:
    return NodeRules(ipt(rules, "iptables-save.txt"), parse_ipset(sets) if sets is not None else None,
                     parse_ipvsadm(ipvs) if ipvs else None, parse_ip_addr(addr) if addr else None)


def test_cluster_policy_vip_is_snated_to_the_uplink():
    v = node().explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    assert (v.snat, v.snat_to, v.dnat_to, v.undecided) == (True, "198.18.0.5", [], [])
    assert "nat/KUBE-LOAD-BALANCER #2: -> KUBE-MARK-MASQ (matched)" in v.trace
    assert "nat/KUBE-POSTROUTING #3: -> MASQUERADE --random-fully (matched)" in v.trace
    assert v.verdict.startswith("forwarded via eth0") and "SNAT to 198.18.0.5" in v.verdict


def test_local_policy_vip_leaves_with_the_pod_address():
    v = node().explain("198.18.64.5", "198.18.10.2", 80, in_iface="cni0")
    assert v.snat is False and v.snat_to is None
    assert ("nat/KUBE-LOAD-BALANCER #1: -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst "
            "-> RETURN (matched)") in v.trace
    assert "nat/KUBE-POSTROUTING #1: -m mark ! --mark 0x4000/0x4000 -> RETURN (matched)" in v.trace
    j = v.to_json()
    assert set(j) >= {"snat", "snat_to", "dnat_to", "verdict", "trace", "undecided"}
    assert json.loads(json.dumps(j))["snat"] is False


def test_without_the_ipset_dump_the_answer_is_undecided_and_names_the_rule():
    v = node(sets=None).explain("198.18.64.5", "198.18.10.2", 80, in_iface="cni0")
    assert v.snat is None and v.verdict == "undecided"
    assert v.undecided[0].startswith("nat/KUBE-SERVICES #1 (iptables-save.txt:13)")
    assert "no ipset dump given" in v.undecided[0]


UNKNOWN = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p udp -m socket --transparent -j RETURN
-A PREROUTING -p tcp -m socket --transparent -j RETURN
-A POSTROUTING -j MASQUERADE
COMMIT
"""


def test_unknown_match_is_undecided_only_when_it_could_matter():
    v = node(UNKNOWN).explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    # rule 1 cannot match (udp), rule 2 could: the model says so rather than guess
    assert "nat/PREROUTING #1: -p udp -m socket --transparent -> RETURN (no match)" in v.trace
    assert v.snat is None and len(v.undecided) == 1
    assert "nat/PREROUTING #2" in v.undecided[0] and "-m socket not modelled" in v.undecided[0]
    v = node(UNKNOWN).explain("198.18.64.5", "198.18.10.1", 53, proto="sctp", in_iface="cni0")
    assert v.snat is True and not v.undecided


BRANCHES = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SVC - [0:0]
-A PREROUTING -d 198.18.10.1/32 -p tcp -m tcp --dport 80 -j SVC
-A SVC -m statistic --mode random --probability 0.25 -j DNAT --to-destination 198.18.64.5:8080
-A SVC -j DNAT --to-destination 198.18.70.9:8080
-A POSTROUTING -s 198.18.64.5/32 -d 198.18.64.5/32 -j MASQUERADE
COMMIT
"""


def test_statistic_follows_both_ways_and_reports_both():
    v = node(BRANCHES).explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    assert [p.probability for p in v.paths] == [0.75, 0.25]
    assert v.dnat_to == ["198.18.64.5:8080", "198.18.70.9:8080"]
    hairpin = v.paths[1]  # the pod reached itself: the hairpin rule masquerades
    assert hairpin.snat and hairpin.snat_to == "198.18.64.1" and hairpin.out_iface == "cni0"
    assert v.paths[0].snat is False and v.snat is None  # the paths disagree: no single answer
    assert any(line.startswith("== path 2 (p=0.25)") for line in v.trace)


GOTO = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:CHK - [0:0]
-A FORWARD -i cni+ -g CHK
-A FORWARD -j ACCEPT
-A CHK -d 198.18.10.0/24 -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -j MARK --or-mark 0x2
-A PREROUTING -j MARK --xor-mark 0x3
-A PREROUTING -j MARK --set-mark 0x10/0xf0
-A PREROUTING -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff
COMMIT
"""


def test_goto_falls_back_to_the_base_chain_policy_and_marks_combine():
    n = node(GOTO, sets="")
    ok = n.explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    assert ok.verdict.startswith("forwarded") and ok.paths[0].mark == 0x11
    assert ok.paths[0].ctmark == 0x11  # (0|2)^3 = 1, then set 0x10 under 0xf0
    dropped = n.explain("198.18.64.5", "198.18.99.1", 80, in_iface="cni0")
    assert dropped.verdict == "dropped" and dropped.snat is False
    assert "filter/FORWARD: policy DROP" in dropped.trace


def test_addrtype_needs_node_addresses():
    d = kube_proxy_ipvs([Service("d/a:p", "198.18.5.1", 80, node_port=30080, endpoints=[])],
                        node_ips=["198.18.0.5"], cluster_cidr="198.18.64.0/18")
    v = node(d.iptables, d.ipset, addr=None).explain("198.18.64.5", "198.18.0.5", 30080, in_iface="cni0")
    assert v.snat is None and "node addresses unknown" in v.undecided[0]


def test_ipvs_step_dnat_and_hairpin_loopback():
    svcs = [Service("d/web:http", "198.18.5.1", 80, endpoints=[("198.18.64.5", 8080, True),
                                                              ("198.18.70.9", 8080, False)])]
    d = kube_proxy_ipvs(svcs, node_ips=["198.18.0.5"], cluster_cidr="198.18.64.0/18")
    addr = ADDR + "4: kube-ipvs0    inet 198.18.5.1/32 scope global kube-ipvs0\n"
    v = node(d.iptables, d.ipset, addr, d.ipvsadm).explain("198.18.64.5", "198.18.5.1", 80,
                                                           in_iface="cni0")
    assert v.dnat_to == ["198.18.64.5:8080", "198.18.70.9:8080"]
    by = {p.dnat_to: p for p in v.paths}
    assert by["198.18.64.5:8080"].snat and by["198.18.64.5:8080"].snat_to == "198.18.64.1"  # KUBE-LOOP-BACK
    assert by["198.18.70.9:8080"].snat is False
    assert any(t.startswith("ipvs: TCP 198.18.5.1:80 rr -> 198.18.70.9:8080 Masq") for t in v.trace)
    # the same node without the ipvsadm dump: the VIP is just a local address
    v = node(d.iptables, d.ipset, addr).explain("198.18.64.5", "198.18.5.1", 80, in_iface="cni0")
    assert v.verdict.startswith("delivered locally") and v.dnat_to == []


def test_kube_services_ipvs_and_iptables_modes():
    svcs = [Service("d/web:http", "198.18.5.1", 80, node_port=30080, lb_ips=["198.18.10.1"],
                    policy="Cluster", endpoints=[("198.18.70.9", 8080, False)]),
            Service("d/api:https", "198.18.5.2", 443, node_port=30443, lb_ips=["198.18.10.2"],
                    policy="Local", endpoints=[("198.18.64.7", 8443, True)])]
    for version in ("1.18", "1.23", "1.28"):
        d = kube_proxy_ipvs(svcs, node_ips=["198.18.0.5"], cluster_cidr="198.18.64.0/18", version=version)
        got = {(s.kind, s.vip, s.port): s for s in kube_services(node(d.iptables, d.ipset, ipvs=d.ipvsadm))}
        lb1, lb2 = got[("LoadBalancer", "198.18.10.1", 80)], got[("LoadBalancer", "198.18.10.2", 443)]
        assert (lb1.policy, lb1.snat_on_egress, lb1.node_ports) == ("Cluster", True, [30080]), version
        assert (lb2.policy, lb2.snat_on_egress, lb2.node_ports) == ("Local", False, [30443]), version
        assert "ipset KUBE-LOAD-BALANCER-LOCAL has it" in lb2.evidence
        assert got[("NodePort", "*", 30443)].policy == "Local"
    for version in ("1.22", "1.28"):
        d = kube_proxy_iptables(svcs, cluster_cidr="198.18.64.0/18", version=version)
        got = {(s.kind, s.vip, s.port): s for s in kube_services(node(d.iptables, None))}
        lb1, lb2 = got[("LoadBalancer", "198.18.10.1", 80)], got[("LoadBalancer", "198.18.10.2", 443)]
        assert (lb1.policy, lb2.policy) == ("Cluster", "Local"), version
        assert lb1.name == "d/web:http" and lb2.node_ports == [30443]
        # iptables mode short-circuits pod -> LB VIP to the endpoints: DNAT, and SNAT for Cluster
        assert lb1.snat_on_egress is True and lb2.snat_on_egress is False


def test_cli_json_and_errors(tmp_path, capsys):
    d = tmp_path / "node-a"
    d.mkdir()
    (d / "iptables-save.txt").write_text(INCIDENT)
    (d / "ipset-save.txt").write_text(SETS)
    (d / "ip-addr.txt").write_text(ADDR)
    assert main(["explain", "--node", str(d), "--src", "198.18.64.5", "--dst", "198.18.10.1",
                 "--dport", "80", "--in-iface", "cni0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["snat"], out["snat_to"], out["dnat_to"], out["undecided"]) == (True, "198.18.0.5", [], [])
    assert load_node(d).explain("198.18.64.5", "198.18.10.2", 80).snat is False
    assert main(["explain", "--iptables", str(d / "iptables-save.txt"), "--ipset", str(d / "ipset-save.txt"),
                 "--local-ip", "198.18.0.5", "--src", "198.18.64.5", "--dst", "198.18.10.2",
                 "--dport", "80"]) == 0
    # without the ip addr dump, whether the LB IP is bound to kube-ipvs0 is not shown (TKE: not)
    out = capsys.readouterr().out
    assert "SNAT: undecided" in out and "whether kube-proxy bound it to kube-ipvs0" in out
    assert main(["explain", "--iptables", str(d / "iptables-save.txt"), "--ipset", str(d / "ipset-save.txt"),
                 "--ip-addr", str(d / "ip-addr.txt"), "--src", "198.18.64.5", "--dst", "198.18.10.2",
                 "--dport", "80"]) == 0
    assert "SNAT: no" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 80 -j DNAT\nCOMMIT\n")
    assert main(["explain", "--iptables", str(bad), "--src", "198.18.64.5", "--dst", "198.18.10.2",
                 "--dport", "80"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"natlens: error: {bad}:3: ") and "DNAT" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("policy", ["Local", "Cluster"])
def test_local_generated_packet_to_lb_vip(policy):
    """A hostNetwork process: OUTPUT path; Cluster masquerades, Local does not."""
    svcs = [Service("d/a:p", "198.18.5.1", 80, lb_ips=["198.18.10.1"], policy=policy,
                    endpoints=[("198.18.70.9", 8080, False)])]
    d = kube_proxy_ipvs(svcs, node_ips=["198.18.0.5"], cluster_cidr="198.18.64.0/18")
    v = node(d.iptables, d.ipset).explain("198.18.0.5", "198.18.10.1", 80, local=True)
    assert v.snat is (policy == "Cluster") and v.trace[1].startswith("nat/OUTPUT #1")


def test_cluster_ip_has_no_external_traffic_policy():
    """externalTrafficPolicy governs LB, external-IP and node-port traffic only: a cluster IP
    shows "n/a" even when its Service's node port is Local (it used to inherit "Local")."""
    svcs = [Service("d/np:http", "198.18.5.3", 80, node_port=30080, lb_ips=[], policy="Local",
                    endpoints=[("198.18.64.7", 8080, True)])]
    shapes = [("ipvs " + v, kube_proxy_ipvs(svcs, node_ips=["198.18.0.5"], cluster_cidr="198.18.64.0/18",
                                            version=v)) for v in ("1.18", "1.28")]
    shapes += [("iptables " + v, kube_proxy_iptables(svcs, cluster_cidr="198.18.64.0/18", version=v))
               for v in ("1.22", "1.28")]
    for shape, d in shapes:
        got = {(s.kind, s.vip, s.port): s for s in kube_services(node(d.iptables, d.ipset, ipvs=d.ipvsadm))}
        cip = got[("ClusterIP", "198.18.5.3", 80)]
        assert cip.policy == NOT_APPLICABLE == "n/a", shape
        assert any("does not apply to a cluster IP" in e for e in cip.evidence), shape
        assert got[("NodePort", "*", 30080)].policy == "Local", shape


SAMPLE_NODE = Path(__file__).resolve().parents[2] / "data" / "samples" / "loopback-local" / "nodes" / "node-1"


def test_cli_services_cluster_ip_policy_text_and_json(capsys):
    """The shipped sample (IPVS, a Local LB and a NodePort Service): the README's --services."""
    sample_node = SAMPLE_NODE
    assert main(["explain", "--node", str(sample_node), "--services"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if not ln.startswith(" ")]
    policy = {(r[0], r[1]): r[2] for r in rows}
    assert policy[("ClusterIP", "198.18.128.10:80/tcp")] == "n/a"
    assert policy[("LoadBalancer", "198.19.0.10:80/tcp")] == "Local"
    assert policy[("NodePort", "*:30080/tcp")] == "Local"
    assert main(["explain", "--node", str(sample_node), "--services", "--json"]) == 0
    js = {(s["kind"], s["vip"], s["port"]): s["policy"] for s in json.loads(capsys.readouterr().out)}
    assert js == {("LoadBalancer", "198.19.0.10", 80): "Local", ("ClusterIP", "198.18.128.10", 80): "n/a",
                  ("NodePort", "*", 30080): "Local"}
