"""Netfilter model: iptables-save / ipset / ipvsadm dumps -> "what happens to this packet".

    node = load_node("incident/nodes/node-a")
    v = node.explain("10.244.1.5", "198.18.10.1", 80)        # pod -> LB VIP
    v.snat, v.snat_to, v.dnat_to, v.verdict, v.trace, v.undecided
    kube_services(node)   # per Service VIP:port: externalTrafficPolicy, SNAT on egress

Modules: iptables (parser: iptables-save, and iptables -S / grep pastes), ipset, ipvs (parsers), walk/ (the walk: packet,
state, verdict, matches, targets, walker, ipvs, hooks), node (NodeRules,
load_node), kubeproxy (Service view), conntrack (conntrack -L parser), generate
(kube-proxy-shaped dumps for tests and bench).
"""

from natlens.netfilter.ipset import parse_ipset
from natlens.netfilter.iptables import merge_rulesets, parse_iptables, parse_iptables_save
from natlens.netfilter.ipvs import parse_ipvsadm
from natlens.netfilter.kubeproxy import ServicePolicy, kube_services
from natlens.netfilter.node import NodeRules, load_files, load_node, parse_ip_addr
from natlens.netfilter.walk import Branch, Packet, Verdict

__all__ = ["Branch", "NodeRules", "Packet", "ServicePolicy", "Verdict", "kube_services",
           "load_files", "load_node", "merge_rulesets", "parse_ip_addr", "parse_ipset", "parse_iptables",
           "parse_iptables_save", "parse_ipvsadm"]
