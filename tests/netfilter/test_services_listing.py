"""`--services` on the shapes kube-proxy really writes: one row per Service port, Local
without local endpoints, a probe pod that is no endpoint, the interfaces given, and a
listing that says what limits it."""

from __future__ import annotations

import pytest

from natlens.cli import main
from natlens.netfilter import NodeRules, kube_services, parse_ipset, parse_ipvsadm
from natlens.netfilter import parse_iptables_save as ipt
from natlens.netfilter.generate import Service, kube_proxy_ipvs
from natlens.netfilter.kubeproxy import probe_pod, services_notes

NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
MASQ = ":KUBE-MARK-MASQ - [0:0]\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n"

# kube-proxy 1.19/1.20: every cluster IP twice in KUBE-SERVICES, the node port twice in KUBE-NODEPORTS
OLD = NAT + MASQ + """:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-WEB - [0:0]
:KUBE-SEP-WEB1 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES ! -s 198.18.1.0/24 -d 198.18.5.1/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 198.18.5.1/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-WEB
-A KUBE-SERVICES -d 198.18.3.7/32 -p tcp -m comment --comment "default/web:http external IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 198.18.3.7/32 -p tcp -m comment --comment "default/web:http external IP" -m tcp --dport 80 -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j KUBE-SVC-WEB
-A KUBE-SERVICES -d 198.18.3.7/32 -p tcp -m comment --comment "default/web:http external IP" -m tcp --dport 80 -m addrtype --dst-type LOCAL -j KUBE-SVC-WEB
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j KUBE-MARK-MASQ
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j KUBE-SVC-WEB
-A KUBE-SVC-WEB -m comment --comment "default/web:http" -j KUBE-SEP-WEB1
-A KUBE-SEP-WEB1 -s 198.18.1.2/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-WEB1 -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 198.18.1.2:8080
COMMIT
"""

# 1.24+: a Local Service with no endpoint on this node: KUBE-EXT- without its KUBE-SVL- jump
NO_LOCAL = NAT + MASQ + """:KUBE-SERVICES - [0:0]
:KUBE-SVC-API - [0:0]
:KUBE-EXT-API - [0:0]
:KUBE-SEP-API1 - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 198.18.5.2/32 -p tcp -m comment --comment "default/api:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-API
-A KUBE-SERVICES -d 198.18.3.2/32 -p tcp -m comment --comment "default/api:https loadbalancer IP" -m tcp --dport 443 -j KUBE-EXT-API
-A KUBE-EXT-API -s 198.18.1.0/24 -m comment --comment "pod traffic for default/api:https external destinations" -j KUBE-SVC-API
-A KUBE-EXT-API -m comment --comment "masquerade LOCAL traffic for default/api:https external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-API -m comment --comment "route LOCAL traffic for default/api:https external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-API
-A KUBE-SVC-API ! -s 198.18.1.0/24 -d 198.18.5.2/32 -p tcp -m comment --comment "default/api:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-SVC-API -m comment --comment "default/api:https -> 198.18.6.5:8443" -j KUBE-SEP-API1
-A KUBE-SEP-API1 -p tcp -m comment --comment "default/api:https" -m tcp -j DNAT --to-destination 198.18.6.5:8443
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A KUBE-EXTERNAL-SERVICES -d 198.18.3.2/32 -p tcp -m comment --comment "default/api:https has no local endpoints" -m tcp --dport 443 -j DROP
-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/api:https has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30443 -j DROP
-A KUBE-EXTERNAL-SERVICES -d 198.18.3.9/32 -p tcp -m comment --comment "default/gone:http has no local endpoints" -m tcp --dport 80 -j DROP
COMMIT
"""


def _rows(text: str, **kw) -> list[tuple]:
    n = NodeRules(ipt(text, "iptables-save.txt"), local_ips=["198.18.2.1"])
    return sorted((s.kind, s.vip, s.port, s.proto, s.policy) for s in kube_services(n, **kw))


def test_one_row_per_service_port_on_pre_1_21_dumps():
    assert _rows(OLD) == [("ClusterIP", "198.18.5.1", 80, "tcp", "n/a"),
                          ("ExternalIP", "198.18.3.7", 80, "tcp", "Cluster"),
                          ("NodePort", "*", 30080, "tcp", "Cluster")]


def test_local_without_local_endpoints_is_local():
    assert _rows(NO_LOCAL) == [("ClusterIP", "198.18.5.2", 443, "tcp", "n/a"),
                               ("LoadBalancer", "198.18.3.2", 443, "tcp", "Local"),
                               ("LoadBalancer/ExternalIP", "198.18.3.9", 80, "tcp", "Local"),
                               ("NodePort", "*", 30443, "tcp", "Local")]
    n = NodeRules(ipt(NO_LOCAL, "iptables-save.txt"), local_ips=["198.18.2.1"])
    lb = [s for s in kube_services(n) if s.vip == "198.18.3.2"][0]
    assert any("writes this only for externalTrafficPolicy Local" in e for e in lb.evidence)
    assert any("has no local endpoints" in e for e in lb.evidence)
    assert lb.endpoints == ["198.18.6.5:8443"]


def test_the_probe_pod_is_no_endpoint_of_any_service():
    n = NodeRules(ipt(OLD, "iptables-save.txt"), local_ips=["198.18.2.1"])
    rows = kube_services(n)
    pod, why = probe_pod(n, rows)
    assert pod == "198.18.1.3" and "no Service endpoint" in why  # .2 is default/web's endpoint
    cip = [s for s in rows if s.kind == "ClusterIP"][0]
    assert cip.snat_on_egress is False and "hairpin" not in " ".join(cip.evidence)


def test_services_honour_the_interfaces_given():
    rules = OLD.replace("-A PREROUTING -m comment", "-A PREROUTING -i cni0 -m comment")
    n = NodeRules(ipt(rules, "iptables-save.txt"), local_ips=["198.18.2.1"])
    blind = [s for s in kube_services(n) if s.kind == "ClusterIP"][0]
    assert blind.snat_on_egress is None and "incoming interface unknown" in blind.evidence[-1]
    seen = [s for s in kube_services(n, in_iface="cni0") if s.kind == "ClusterIP"][0]
    assert seen.snat_on_egress is False and "in via cni0" in seen.evidence[-1]
    other = [s for s in kube_services(n, in_iface="eth0") if s.kind == "ClusterIP"][0]
    assert "DNAT" not in other.evidence[-1]  # -i cni0 does not match: no Service rule applies


def test_ipvs_without_the_ipset_dump_lists_ipvsadm_and_says_why():
    d = kube_proxy_ipvs([Service("default/web:http", "198.18.5.1", 80, endpoints=[("198.18.4.1", 8080, False)])],
                        node_ips=["198.18.2.1"], cluster_cidr="198.18.1.0/24")
    n = NodeRules(ipt(d.iptables, "iptables-save.txt"), None, parse_ipvsadm(d.ipvsadm, "ipvsadm.txt"),
                  local_ips=["198.18.2.1"])
    rows = kube_services(n)
    assert [(s.vip, s.kind, s.policy, s.endpoints) for s in rows] == [
        ("198.18.5.1", "unknown", "unknown", ["198.18.4.1:8080"])]
    assert any("no ipset dump" in x for x in services_notes(n))
    with_sets = NodeRules(ipt(d.iptables, "i"), parse_ipset(d.ipset, "s"), parse_ipvsadm(d.ipvsadm, "v"),
                          local_ips=["198.18.2.1"])
    assert services_notes(with_sets) == []


@pytest.mark.parametrize("text,code,said", [
    (NAT + "-A POSTROUTING -s 198.18.1.0/24 ! -o cni0 -j MASQUERADE\nCOMMIT\n", 0, "no kube-proxy rules in the dumps"),
    ("", 2, "nothing to list"),
])
def test_cli_says_why_a_listing_is_empty(tmp_path, capsys, text, code, said):
    f = tmp_path / "iptables-save.txt"
    f.write_text(text)
    assert main(["explain", "--iptables", str(f), "--services"]) == code
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
