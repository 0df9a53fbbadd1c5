"""Services without endpoints, generated as kube-proxy writes them (the lab's no-endpoints fault).

iptables mode: no nat chain for the service, only filter REJECTs ("<svc> has no endpoints")
in KUBE-SERVICES (cluster IP) and KUBE-EXTERNAL-SERVICES (LB IP, node port). nftables mode:
the no-endpoint-services / no-endpoint-nodeports maps send every address to reject-chain.
"""

from __future__ import annotations

from natlens.netfilter import NodeRules, parse_ip_addr
from natlens.netfilter import parse_iptables_save as ipt
from natlens.netfilter.generate import Service, kube_proxy_iptables, kube_proxy_nftables

NONE = Service("default/web:http", "198.18.128.10", 80, node_port=30080,
               lb_ips=["198.19.0.10"], policy="Local", endpoints=[])
SOME = Service("default/api:http", "198.18.128.11", 80, node_port=30081,
               lb_ips=["198.19.0.11"], endpoints=[("198.18.16.10", 8080, True)])
ADDR = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0    inet 198.18.0.11/24 brd 198.18.0.255 scope global eth0\n"
        "3: cni0    inet 198.18.16.1/24 brd 198.18.16.255 scope global cni0\n")
REJECT = "-j REJECT --reject-with icmp-port-unreachable"


def test_iptables_mode_rejects_in_the_filter_table_and_writes_no_nat_chain():
    text = kube_proxy_iptables([NONE, SOME], cluster_cidr="198.18.16.0/20").iptables
    nat, _, filt = text.partition("*filter")
    assert "default/web:http" not in nat  # no KUBE-SVC-/EXT-/SVL-, no KUBE-SERVICES jump
    assert "default/api:http" in nat
    lines = filt.splitlines()
    assert (f'-A KUBE-SERVICES -d 198.18.128.10/32 -p tcp -m comment --comment "default/web:http '
            f'has no endpoints" -m tcp --dport 80 {REJECT}') in lines
    assert (f'-A KUBE-EXTERNAL-SERVICES -d 198.19.0.10/32 -p tcp -m comment --comment '
            f'"default/web:http has no endpoints" -m tcp --dport 80 {REJECT}') in lines
    assert (f'-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/web:http has no '
            f'endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 {REJECT}') in lines
    for jump in ('-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes '
                 'externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
                 '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service '
                 'portals" -j KUBE-SERVICES'):
        assert jump in lines
    assert "default/api:http" not in filt and filt.rstrip().endswith("COMMIT")


def test_iptables_mode_with_every_endpoint_has_no_filter_table():
    assert "*filter" not in kube_proxy_iptables([SOME], cluster_cidr="198.18.16.0/20").iptables


def test_the_model_rejects_pod_to_vip_of_a_service_without_endpoints():
    text = kube_proxy_iptables([NONE], cluster_cidr="198.18.16.0/20").iptables
    n = NodeRules(ipt(text, "iptables-save.txt"), None, None, parse_ip_addr(ADDR))
    v = n.explain("198.18.16.100", "198.19.0.10", 80, in_iface="cni0")
    assert v.verdict == "dropped", (v.verdict, v.trace)
    assert v.trace[-1] == ("filter/KUBE-EXTERNAL-SERVICES #1: -d 198.19.0.10/32 -p tcp --dport 80 "
                           "-> REJECT --reject-with icmp-port-unreachable (matched)")
    assert not any(step.startswith("nat/KUBE-EXT-") for step in v.trace)


def test_nftables_mode_sends_every_address_to_the_reject_chain():
    text = kube_proxy_nftables([NONE], node_ips=["198.18.0.11"],
                               cluster_cidr="198.18.16.0/20").nft
    for key in ("198.18.128.10 . tcp . 80", "198.19.0.10 . tcp . 80"):
        assert (f'add element ip kube-proxy no-endpoint-services {{ {key} comment '
                f'"default/web:http" : goto reject-chain }}') in text
    assert ('add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 comment '
            '"default/web:http" : goto reject-chain }') in text
    assert "add rule ip kube-proxy reject-chain reject" in text
    assert "add element ip kube-proxy service-ips" not in text
    assert "add chain ip kube-proxy endpoint-" not in text
