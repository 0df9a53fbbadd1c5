"""Matches and targets met on real nodes: recent (session affinity), nfacct, garbled NAT lines.

Each answers as the kernel would, or says undecided naming the rule's file:line; a
branch's record (decided_by, outcome words) is its own.
"""

from __future__ import annotations

import pytest

from natlens.netfilter import NodeRules, parse_ipset, parse_iptables_save, parse_ipvsadm
from natlens.netfilter.generate import (
    Service,
    kube_proxy_iptables,
    kube_proxy_ipvs,
    kube_proxy_nftables,
)
from natlens.netfilter.nft import parse_nft

HEAD = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
AFFINITY = HEAD + """:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-A1 - [0:0]
:KUBE-SEP-A2 - [0:0]
-A PREROUTING -d 198.18.5.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAA
-A KUBE-SVC-AAA -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A1 --mask 255.255.255.255 --rsource -j KUBE-SEP-A1
-A KUBE-SVC-AAA -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A2 --mask 255.255.255.255 --rsource -j KUBE-SEP-A2
-A KUBE-SVC-AAA -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A1
-A KUBE-SVC-AAA -j KUBE-SEP-A2
-A KUBE-SEP-A1 -p tcp -m recent --set --name KUBE-SEP-A1 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 198.18.4.1:8080
-A KUBE-SEP-A2 -p tcp -m recent --set --name KUBE-SEP-A2 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 198.18.4.2:8080
COMMIT
"""


def _node(text: str) -> NodeRules:
    return NodeRules(parse_iptables_save(text, "dump.txt"), local_ips=["198.18.2.1"])


def test_recent_follows_a_returning_and_a_new_client():
    v = _node(AFFINITY).explain("198.18.1.2", "198.18.5.1", 80, in_iface="n-c")
    assert not v.undecided
    got = sorted((p.dnat_to, tuple(p.given), p.probability) for p in v.paths)
    a1, a2 = "source in recent list KUBE-SEP-A1", "source in recent list KUBE-SEP-A2"
    n1, n2 = "source not in recent list KUBE-SEP-A1", "source not in recent list KUBE-SEP-A2"
    assert got == [("198.18.4.1:8080", (a1,), 1.0), ("198.18.4.1:8080", (n1, n2), 0.5),
                   ("198.18.4.2:8080", (n1, a2), 1.0), ("198.18.4.2:8080", (n1, n2), 0.5)]
    assert "if source in recent list KUBE-SEP-A1: forwarded" in v.verdict
    assert any("a returning client" in c for p in v.paths for c in p.conditions)


def test_recent_negated_check_swaps_the_branches():
    text = AFFINITY.replace("-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A1",
                            "-m recent ! --rcheck --seconds 10800 --reap --name KUBE-SEP-A1")
    v = _node(text).explain("198.18.1.2", "198.18.5.1", 80, in_iface="n-c")
    first = [p for p in v.paths if p.given[:1] == ["source not in recent list KUBE-SEP-A1"]]
    assert [p.dnat_to for p in first] == ["198.18.4.1:8080"]


def test_recent_option_not_modelled_is_undecided():
    text = AFFINITY.replace("--rcheck --seconds 10800 --reap --name KUBE-SEP-A1",
                            "--rcheck --seconds 10800 --reap --name KUBE-SEP-A1 --frobnicate")
    v = _node(text).explain("198.18.1.2", "198.18.5.1", 80, in_iface="n-c")
    assert v.undecided and "--frobnicate not modelled" in v.undecided[0]


def test_nfacct_counts_and_matches():
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -d 127.0.0.0/8 -p tcp -m nfacct --nfacct-name localhost_nps_accepted_pkts -j DROP\n"
            "COMMIT\n")
    n = _node(text)
    v = n.explain("127.0.0.1", "127.0.0.1", 30080, local=True)
    assert not v.undecided and v.paths[0].outcome == "dropped"
    assert "nfacct" in v.paths[0].decided_by[0]


def test_garbled_nat_targets_are_undecided_naming_file_and_line():
    text = HEAD + ("-A PREROUTING -d 198.18.5.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination  --random "
                   "--to-destination\n"
                   "-A PREROUTING -d 198.18.5.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 0.0.0.0:0\n"
                   "-A POSTROUTING -d 198.18.4.9/32 -j SNAT --to-source 198.18.2.1:0\nCOMMIT\n")
    n = _node(text)
    for dst, line in (("198.18.5.1", 6), ("198.18.5.2", 7), ("198.18.4.9", 8)):
        v = n.explain("198.18.1.2", dst, 80, in_iface="n-c")
        assert v.snat is None and v.dnat_to == [], dst
        assert f"dump.txt:{line}" in v.undecided[0] and "garbled" in v.undecided[0], v.undecided
    assert n.explain("198.18.1.2", "198.18.4.1", 80, in_iface="n-c").undecided == []  # matches nothing


THREE = [Service("default/web:http", "198.18.5.1", 80, endpoints=[
    ("198.18.4.1", 8080, True), ("198.18.4.2", 8080, False), ("198.18.4.3", 8080, False)])]


def _ipvs_node() -> NodeRules:
    d = kube_proxy_ipvs(THREE, node_ips=["198.18.2.1"], cluster_cidr="198.18.1.0/24")
    return NodeRules(parse_iptables_save(d.iptables, "i"), parse_ipset(d.ipset, "s"),
                     parse_ipvsadm(d.ipvsadm, "v"), local_ips=["198.18.2.1"])


def _nft_node() -> NodeRules:
    d = kube_proxy_nftables(THREE, node_ips=["198.18.2.1"], cluster_cidr="198.18.1.0/24")
    return NodeRules(None, nft=parse_nft(d.nft, "nft.txt"), local_ips=["198.18.2.1"])


@pytest.mark.parametrize("mode", ["iptables", "ipvs", "nftables"])
def test_each_path_keeps_its_own_decisions(mode):
    n = {"iptables": lambda: _node(kube_proxy_iptables(THREE, cluster_cidr="198.18.1.0/24").iptables),
         "ipvs": _ipvs_node, "nftables": _nft_node}[mode]()
    v = n.explain("198.18.1.2", "198.18.5.1", 80, in_iface="n-c")
    assert sorted(p.dnat_to for p in v.paths) == ["198.18.4.1:8080", "198.18.4.2:8080", "198.18.4.3:8080"]
    for p in v.paths:
        dnats = [d for d in p.decided_by if d.startswith("DNAT")]
        assert len(dnats) == 1, p.decided_by
        # the DNAT that decided it names this path's endpoint (ipvs: the virtual service)
        ip, port = p.dnat_to.split(":")
        assert mode == "ipvs" or (ip in dnats[0] and port in dnats[0]), (p.dnat_to, dnats)


def test_a_packet_from_the_node_is_sent_out_not_forwarded():
    one = [Service("default/web:http", "198.18.5.1", 80, endpoints=[("198.18.4.1", 8080, False)])]
    n = _node(kube_proxy_iptables(one, cluster_cidr="198.18.1.0/24", version="1.28").iptables)
    local = n.explain("198.18.2.1", "198.18.5.1", 80, local=True)
    assert local.paths[0].outcome == "sent out" and local.verdict.startswith("sent out, DNAT to")
    direct = n.explain("198.18.2.1", "198.18.4.1", 8080, local=True, out_iface="n-p")
    assert direct.verdict == "sent out via n-p, not SNATed"
    fwd = n.explain("198.18.1.2", "198.18.5.1", 80, in_iface="n-c", out_iface="n-p")
    assert fwd.paths[0].outcome == "forwarded"


RPF = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
       "-A PREROUTING -m mark --mark 0x40000/0x40000 -m rpfilter --validmark --invert -j DROP\n"
       "-A PREROUTING -s 198.18.7.0/24 -m rpfilter --loose --invert -j DROP\nCOMMIT\n")
ROUTES = "default via 198.18.2.2 dev n-p\n198.18.1.0/24 dev n-c scope link\n198.18.2.0/24 dev n-p scope link\n"


def _rpf_node(routes: str | None = ROUTES) -> NodeRules:
    from natlens.netfilter.node import parse_ip_route
    return NodeRules(parse_iptables_save(RPF, "raw.txt"), local_ips=["198.18.2.1"],
                     routes=parse_ip_route(routes) if routes else None)


@pytest.mark.parametrize("src,iface,outcome", [
    ("198.18.1.3", "n-c", "forwarded"),    # the route back leaves by n-c: passes
    ("198.18.1.3", "n-p", "dropped"),      # spoofed: the route back is via n-c
    ("198.18.9.9", "n-p", "forwarded"),    # the default route leaves by n-p
    ("198.18.2.1", "n-p", "dropped"),      # a local source without --accept-local fails
])
def test_rpfilter_follows_the_route_back_to_the_source(src, iface, outcome):
    v = _rpf_node().explain(src, "198.18.6.1", 80, in_iface=iface, mark=0x40000)
    assert v.paths[0].outcome == outcome, v.trace


def test_rpfilter_loose_wants_any_route_and_needs_the_routes():
    assert _rpf_node().explain("198.18.7.5", "198.18.6.1", 80, in_iface="n-c").paths[0].outcome == "forwarded"
    no_routes = _rpf_node(None).explain("198.18.1.3", "198.18.6.1", 80, in_iface="n-c", mark=0x40000)
    assert no_routes.undecided and "ip-route.txt" in no_routes.undecided[0]
    blind = _rpf_node().explain("198.18.1.3", "198.18.6.1", 80, mark=0x40000)
    assert "incoming interface unknown" in blind.undecided[0]
