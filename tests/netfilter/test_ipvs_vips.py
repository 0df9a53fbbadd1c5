"""IPVS mode: which virtual addresses are local (bound to kube-ipvs0), and on what evidence.

IPVS takes a packet only when routing finds its address local. The ip addr dump settles
it; without one, kube-proxy's own sets do: cluster and external IPs are always bound,
KUBE-IPVS-IPS lists exactly what was bound, and a LoadBalancer IP is bound upstream but
not on TKE, so without either dump it is undecided, saying what to give.
"""

from __future__ import annotations

from natlens.netfilter import NodeRules, parse_ip_addr, parse_ipset, parse_ipvsadm
from natlens.netfilter import parse_iptables_save as ipt
from natlens.netfilter.generate import Service, kube_proxy_ipvs

POD, SELF_POD, CLUSTER_IP, LB_IP, NODE = "198.18.1.3", "198.18.1.2", "198.18.5.1", "198.18.3.1", "198.18.2.1"
SVC = [Service("default/web:http", CLUSTER_IP, 80, node_port=30080, lb_ips=[LB_IP], policy="Local",
               endpoints=[(SELF_POD, 8080, True), ("198.18.4.2", 8080, False)])]


def _node(version: str = "1.23", sets: bool = True, addr: str | None = None, **kw) -> NodeRules:
    d = kube_proxy_ipvs(SVC, node_ips=[NODE], cluster_cidr="198.18.1.0/24", version=version, **kw)
    return NodeRules(ipt(d.iptables, "iptables-save.txt"), parse_ipset(d.ipset, "ipset.txt") if sets else None,
                     parse_ipvsadm(d.ipvsadm, "ipvsadm.txt"), parse_ip_addr(addr) if addr else None,
                     local_ips=None if addr else [NODE])


def test_cluster_ip_is_local_from_the_cluster_ip_set_and_ipvs_dnats_it():
    v = _node().explain(POD, CLUSTER_IP, 80, in_iface="n-c")
    assert not v.undecided
    assert v.dnat_to == [f"{SELF_POD}:8080", "198.18.4.2:8080"]
    assert any("is a local address (in ipset KUBE-CLUSTER-IP: kube-proxy's IPVS mode binds every "
               "cluster IP to kube-ipvs0) -> INPUT" in line for line in v.trace)


def test_a_pod_calling_its_own_service_is_hairpin_snated():
    v = _node().explain(SELF_POD, CLUSTER_IP, 80, in_iface="n-c")
    back = [p for p in v.paths if p.dnat_to == f"{SELF_POD}:8080"][0]
    assert back.snat is True and any("KUBE-LOOP-BACK" in d for d in back.decided_by)
    other = [p for p in v.paths if p.dnat_to == "198.18.4.2:8080"][0]
    assert other.snat is False


def test_lb_ip_without_an_ip_addr_dump_is_undecided_saying_what_to_give():
    v = _node().explain(POD, LB_IP, 80, in_iface="n-c")
    assert v.snat is None and len(v.undecided) == 1
    assert "LoadBalancer IP (ipset KUBE-LOAD-BALANCER)" in v.undecided[0]
    assert "give ip-addr.txt" in v.undecided[0]


def test_the_ip_addr_dump_settles_it_and_the_trace_says_so():
    addr = (f"1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0    inet {NODE}/24 scope global eth0\n"
            f"3: kube-ipvs0    inet {CLUSTER_IP}/32 scope global kube-ipvs0\n")
    n = _node(addr=addr)
    v = n.explain(POD, LB_IP, 80, in_iface="cni0")
    assert not v.undecided and v.snat is False and v.paths[0].outcome == "forwarded"
    assert any("not local (an IPVS virtual address not bound on the node: not in the ip addr dump)" in line
               for line in v.trace)
    assert n.explain(POD, CLUSTER_IP, 80, in_iface="cni0").dnat_to  # bound: IPVS takes it


def test_kube_ipvs_ips_lists_what_was_bound():
    n = _node("1.28", ipvs_ips=[CLUSTER_IP])
    assert n.explain(POD, LB_IP, 80, in_iface="n-c").paths[0].outcome == "forwarded"
    assert n.explain(POD, CLUSTER_IP, 80, in_iface="n-c").dnat_to
    bound = _node("1.28", ipvs_ips=[CLUSTER_IP, LB_IP])
    v = bound.explain(POD, LB_IP, 80, in_iface="n-c")
    assert v.dnat_to == [f"{SELF_POD}:8080"]  # Local: only the local endpoint behind the LB IP
    assert any("in ipset KUBE-IPVS-IPS: kube-proxy bound it to kube-ipvs0" in line for line in v.trace)


def test_ipvsadm_without_the_ipset_dump_cannot_tell_a_cluster_ip_from_an_lb_ip():
    v = _node(sets=False).explain(POD, CLUSTER_IP, 80, in_iface="n-c")
    assert v.snat is None and "no ipset dump" in v.undecided[0]


def test_a_node_address_is_local_whatever_ipvs_says():
    v = _node().explain("198.18.6.9", NODE, 30080, in_iface="eth0")
    assert not any("undecided" in line for line in v.trace[:3])
    assert any(f"routing: {NODE} is a local address -> INPUT" in line for line in v.trace)


def test_a_virtual_service_without_real_servers_drops_as_ip_vs_leave_does():
    d = kube_proxy_ipvs([Service("default/none:http", CLUSTER_IP, 80, endpoints=[])], node_ips=[NODE],
                        cluster_cidr="198.18.1.0/24", version="1.23")
    n = NodeRules(ipt(d.iptables, "i"), parse_ipset(d.ipset, "s"), parse_ipvsadm(d.ipvsadm, "v"),
                  local_ips=[NODE])
    v = n.explain(POD, CLUSTER_IP, 80, in_iface="n-c")
    assert v.paths[0].outcome == "dropped" and not v.undecided
    assert "ip_vs_leave" in v.paths[0].decided_by[0] and v.paths[0].conntrack is False


def test_ipvs_vaddr_and_vport_match_the_virtual_service():
    d = kube_proxy_ipvs(SVC, node_ips=[NODE], cluster_cidr="198.18.1.0/24", version="1.23")
    out_filter = (f"-A OUTPUT -m ipvs --vaddr {CLUSTER_IP}/32 --vport 80 -j MARK --set-xmark 0x77/0xffffffff\n"
                  f"-A OUTPUT -m ipvs --vaddr {CLUSTER_IP}/32 --vport 81 -j MARK --set-xmark 0x99/0xffffffff\n")
    rules = d.iptables.replace("-A OUTPUT -j KUBE-FIREWALL\n", "-A OUTPUT -j KUBE-FIREWALL\n" + out_filter)
    n = NodeRules(ipt(rules, "i"), parse_ipset(d.ipset, "s"), parse_ipvsadm(d.ipvsadm, "v"), local_ips=[NODE])
    v = n.explain(POD, CLUSTER_IP, 80, in_iface="n-c")
    assert not v.undecided and {p.mark for p in v.paths} == {0x77}
