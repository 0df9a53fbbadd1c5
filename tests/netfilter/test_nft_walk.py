"""The nft walk on hand-built rule sets (libnftables-json statements): one rule kind per test.

The kernel truth tests (test_kernel_truth_nft.py) check the same against the real
kernel; these pin down each statement's meaning where it is cheap to read.
"""

from __future__ import annotations

import pytest

from natlens.netfilter import NodeRules, parse_ip_addr, parse_iptables_save
from natlens.netfilter.nft import NftChain, NftElement, NftRule, NftRuleset, NftSet, NftTable

ADDRS = parse_ip_addr("1: lo    inet 127.0.0.1/8 scope host lo\n"
                      "2: eth0    inet 198.18.0.11/24 brd 198.18.0.255 scope global eth0\n"
                      "3: cni0    inet 198.18.16.1/24 brd 198.18.16.255 scope global cni0\n")
POD, NODE_IP, VIP, EP = "198.18.16.100", "198.18.0.11", "198.19.0.10", "198.18.17.10"

DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
L4 = {"meta": {"key": "l4proto"}}
DPORT = {"payload": {"protocol": "th", "field": "dport"}}
MARK = {"meta": {"key": "mark"}}


def match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def prefix(addr: str, n: int) -> dict:
    return {"prefix": {"addr": addr, "len": n}}


class Table:
    """A table under construction: chains of statement lists, sets."""

    def __init__(self, family: str = "ip", name: str = "t"):
        self.t = NftTable(family, name)

    def chain(self, name: str, *rules: list, hook: str | None = None, prio: int = 0,
              type: str = "filter", policy: str = "accept") -> Table:
        ch = NftChain(self.t.family, self.t.name, name, type if hook else None, hook,
                      prio if hook else None, policy, path="t.json", lineno=1)
        for i, expr in enumerate(rules, 1):
            ch.rules.append(NftRule(self.t.family, self.t.name, name, expr, f"rule{i} of {name}",
                                    "t.json", 10 * i, index=i))
        self.t.chains[name] = ch
        return self

    def map(self, name: str, key: tuple, data: str | None, elements: list) -> Table:
        self.t.sets[name] = NftSet(self.t.family, self.t.name, name, key, data,
                                   elements=[NftElement(k, v) for k, v in elements])
        return self


def node(*tables: Table, iptables: str | None = None) -> NodeRules:
    rs = NftRuleset({(t.t.family, t.t.name): t.t for t in tables}, path="t.json", format="json")
    ipt = parse_iptables_save(iptables, "iptables-save.txt") if iptables else None
    return NodeRules(ipt, None, None, ADDRS, nft=rs)


def kube_like(local: bool) -> Table:
    """kube-proxy nftables mode, one LoadBalancer Service with two endpoints."""
    svc, ext = "service-X-default/web/tcp/http", "external-X-default/web/tcp/http"
    ep = [f"endpoint-{i}" for i in (1, 2)]
    t = Table("ip", "kube-proxy")
    t.chain("nat-prerouting", [{"jump": {"target": "services"}}], hook="prerouting", prio=-100, type="nat")
    t.chain("nat-output", [{"jump": {"target": "services"}}], hook="output", prio=-100, type="nat")
    t.chain("nat-postrouting", [{"jump": {"target": "masquerading"}}], hook="postrouting", prio=100,
            type="nat")
    t.chain("masquerading", [match({"&": [MARK, 0x4000]}, 0), {"return": None}],
            [{"mangle": {"key": MARK, "value": {"^": [MARK, 0x4000]}}}],
            [{"masquerade": {"flags": ["fully-random"]}}])
    t.chain("mark-for-masquerade", [{"mangle": {"key": MARK, "value": {"|": [MARK, 0x4000]}}}])
    t.chain("services", [{"vmap": {"key": {"concat": [DADDR, L4, DPORT]}, "data": "@service-ips"}}])
    t.chain(svc, [match(DADDR, "198.18.128.10"), match(SADDR, prefix("198.18.16.0", 20), "!="),
                  {"jump": {"target": "mark-for-masquerade"}}],
            [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}},
                       "data": {"set": [[0, {"goto": {"target": ep[0]}}], [1, {"goto": {"target": ep[1]}}]]}}}])
    ext_rules = [[match(SADDR, prefix("198.18.16.0", 20)), {"goto": {"target": svc}}],
                 [match({"fib": {"result": "type", "flags": ["saddr"]}}, "local"),
                  {"jump": {"target": "mark-for-masquerade"}}],
                 [match({"fib": {"result": "type", "flags": ["saddr"]}}, "local"), {"goto": {"target": svc}}]]
    if local:
        ext_rules.append([{"goto": {"target": ep[0]}}])
    else:
        ext_rules = [[{"jump": {"target": "mark-for-masquerade"}}], [{"goto": {"target": svc}}]]
    t.chain(ext, *ext_rules)
    for name, ip in zip(ep, (EP, "198.18.18.10"), strict=True):
        t.chain(name, [match(SADDR, ip), {"jump": {"target": "mark-for-masquerade"}}],
                [match(L4, "tcp"), {"dnat": {"addr": ip, "port": 8080}}])
    t.map("service-ips", ("ipv4_addr", "inet_proto", "inet_service"), "verdict", [
        ({"concat": ["198.18.128.10", "tcp", 80]}, {"goto": {"target": svc}}),
        ({"concat": [VIP, "tcp", 80]}, {"goto": {"target": ext}})])
    return t


def test_cluster_ip_from_a_pod_is_dnat_to_either_endpoint_and_not_snated():
    v = node(kube_like(local=True)).explain(POD, "198.18.128.10", 80, in_iface="cni0")
    assert not v.undecided, v.trace
    assert v.dnat_to == [f"{EP}:8080", "198.18.18.10:8080"]
    assert [p.probability for p in v.paths] == [0.5, 0.5]
    assert v.snat is False
    assert any("ip kube-proxy services #1 rule" in line and "(verdict goto service-X" in line
               for line in v.trace)


def test_lb_vip_from_a_pod_short_circuits_to_the_service_under_local():
    """ipMode VIP: the LB IP is in service-ips, so the node DNATs it (never leaves to the LB)."""
    v = node(kube_like(local=True)).explain(POD, VIP, 80, in_iface="cni0")
    assert v.dnat_to == [f"{EP}:8080", "198.18.18.10:8080"] and v.snat is False


def test_lb_vip_from_outside_under_cluster_is_masqueraded():
    v = node(kube_like(local=False)).explain("198.18.0.1", VIP, 80, in_iface="eth0")
    assert not v.undecided, v.trace
    assert v.snat is True
    assert {p.snat_to for p in v.paths} == {"198.18.17.1"} or v.snat_to is not None


def test_lb_vip_from_outside_under_local_goes_to_the_local_endpoint_unsnated():
    v = node(kube_like(local=True)).explain("198.18.0.1", VIP, 80, in_iface="eth0")
    assert v.dnat_to == [f"{EP}:8080"] and v.snat is False


def test_host_process_to_the_vip_is_masqueraded_by_the_fib_local_rule():
    v = node(kube_like(local=True)).explain(NODE_IP, VIP, 80, local=True)
    assert not v.undecided, v.trace
    assert v.snat is True


def test_an_address_without_a_map_element_passes_untouched():
    v = node(kube_like(local=True)).explain(POD, "198.19.0.99", 80, in_iface="cni0")
    assert v.dnat_to == [] and v.snat is False
    assert any("(no element)" in line for line in v.trace)


def test_policy_drop_and_priority_order_across_tables():
    """A filter chain at -150 drops before a nat chain at -100 ever DNATs."""
    drop = Table("ip", "guard").chain("pre", [match(DPORT, 80), {"drop": None}], hook="prerouting",
                                     prio=-150)
    v = node(kube_like(local=True), drop).explain(POD, VIP, 80, in_iface="cni0")
    assert v.paths[0].outcome == "dropped" and v.dnat_to == []


def test_ct_state_is_invalid_before_conntrack_and_new_after():
    CT = {"ct": {"key": "state"}}
    early = Table("ip", "a").chain("raw", [match(CT, "new", "in"), {"drop": None}], hook="prerouting",
                                   prio=-300)
    late = Table("ip", "b").chain("flt", [match(CT, "new", "in"), {"drop": None}], hook="prerouting",
                                  prio=-150)
    assert node(early).explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome == "forwarded"
    assert node(late).explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome == "dropped"


def test_notrack_skips_the_nat_core():
    raw = Table("ip", "raw").chain("pre", [{"notrack": None}], hook="prerouting", prio=-300)
    v = node(kube_like(local=True), raw).explain(POD, VIP, 80, in_iface="cni0")
    assert v.dnat_to == [] and not v.paths[0].conntrack


def test_unknown_statement_is_undecided_naming_the_rule():
    t = Table("ip", "x").chain("pre", [{"unparsed": "frobnicate 3"}], hook="prerouting", prio=0)
    v = node(t).explain(POD, VIP, 80, in_iface="cni0")
    assert v.paths[0].outcome == "undecided"
    assert "t.json:10" in v.undecided[0] and "frobnicate 3" in v.undecided[0]


def test_xt_compat_statement_says_to_give_iptables_save():
    t = Table("ip", "x").chain("pre", [{"xt": {"type": "match", "name": "set"}}, {"accept": None}],
                               hook="prerouting", prio=0)
    v = node(t).explain(POD, VIP, 80, in_iface="cni0")
    assert "iptables-save" in v.undecided[0]


def test_mark_arithmetic_and_mark_match_with_mask():
    t = Table("ip", "m").chain("pre", [{"mangle": {"key": MARK, "value": {"|": [MARK, 0x4000]}}}],
                               [match({"&": [MARK, 0x4000]}, 0x4000), {"drop": None}],
                               hook="prerouting", prio=-150)
    assert node(t).explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome == "dropped"


def test_numgen_match_forks_with_its_probability():
    t = Table("ip", "n").chain("pre", [match({"numgen": {"mode": "random", "mod": 4, "offset": 0}}, 0),
                                       {"drop": None}], hook="prerouting", prio=0)
    v = node(t).explain(POD, VIP, 80, in_iface="cni0")
    assert sorted((p.outcome, p.probability) for p in v.paths) == [("dropped", 0.25), ("forwarded", 0.75)]


@pytest.mark.parametrize("pattern, hit", [("cni*", True), ("cni0", True), ("eth*", False)])
def test_iifname_wildcards(pattern, hit):
    t = Table("inet", "w").chain("pre", [match({"meta": {"key": "iifname"}}, pattern), {"drop": None}],
                                 hook="prerouting", prio=0)
    out = node(t).explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome
    assert (out == "dropped") == hit


def test_tcp_dport_does_not_match_udp():
    t = Table("ip", "u").chain("pre", [match({"payload": {"protocol": "tcp", "field": "dport"}}, 53),
                                       {"drop": None}], hook="prerouting", prio=0)
    assert node(t).explain(POD, VIP, 53, "udp", in_iface="cni0").paths[0].outcome == "forwarded"
    assert node(t).explain(POD, VIP, 53, "tcp", in_iface="cni0").paths[0].outcome == "dropped"


def test_iptables_nft_tables_are_walked_once_from_iptables_save():
    """nft lists iptables-nft's tables too; with iptables-save given they are not walked twice."""
    ipt = ("# Generated by iptables-save v1.8.9 (nf_tables)\n*nat\n:POSTROUTING ACCEPT [0:0]\n"
           "-A POSTROUTING -s 198.18.16.0/20 -j MASQUERADE\nCOMMIT\n")
    shadow = Table("ip", "nat").chain("POSTROUTING", [{"xt": {"type": "target", "name": "MASQUERADE"}}],
                                      hook="postrouting", prio=100, type="nat")
    v = node(shadow, iptables=ipt).explain(POD, "198.18.0.1", 80, in_iface="cni0")
    assert not v.undecided, v.trace
    assert v.snat is True and v.snat_to == NODE_IP
    assert any("iptables-nft's" in line for line in v.trace)


def test_nat_chains_run_until_one_binds():
    """Two nat chains at postrouting: the first to masquerade wins, the next does not run."""
    first = Table("ip", "a").chain("post", [{"snat": {"addr": "198.18.0.99"}}], hook="postrouting",
                                   prio=90, type="nat")
    second = Table("ip", "b").chain("post", [{"masquerade": None}], hook="postrouting", prio=110,
                                    type="nat")
    v = node(second, first).explain(POD, "198.18.0.1", 80, in_iface="cni0")
    assert v.snat_to == "198.18.0.99"


def test_a_set_with_unread_elements_makes_a_miss_undecided():
    t = Table("ip", "s").chain("pre", [match(DADDR, "@vips"), {"drop": None}], hook="prerouting", prio=0)
    t.map("vips", ("ipv4_addr",), None, [("198.19.0.10", None)])
    t.t.sets["vips"].unparsed.append("198.19.0.$VIP")
    n = node(t)
    assert n.explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome == "dropped"  # a hit is a hit
    v = n.explain(POD, "198.19.0.11", 80, in_iface="cni0")
    assert v.paths[0].outcome == "undecided" and "could not read" in v.undecided[0]


def test_ct_status_compares_the_whole_word_or_one_bit():
    """After DNAT the word also holds DST_NAT_DONE: '== dnat' is false, 'dnat' is true."""
    STATUS = {"ct": {"key": "status"}}
    for op, dropped in (("==", False), ("in", True), ("!=", True), ("!", False)):
        t = kube_like(local=True)
        guard = Table("ip", "g").chain("flt", [match(STATUS, "dnat", op), {"drop": None}],
                                       hook="prerouting", prio=-50)
        out = node(t, guard).explain(POD, VIP, 80, in_iface="cni0").paths[0].outcome
        assert (out == "dropped") == dropped, op


def test_a_tie_across_tables_that_changes_the_answer_is_undecided():
    a = Table("ip", "a").chain("post", [{"snat": {"addr": "198.18.0.99"}}], hook="postrouting",
                               prio=100, type="nat")
    b = Table("ip", "b").chain("post", [{"masquerade": None}], hook="postrouting", prio=100, type="nat")
    v = node(a, b).explain(POD, "198.18.0.1", 80, in_iface="cni0")
    assert v.paths[0].outcome == "undecided"
    assert "orders give different answers" in v.undecided[0]
    same = Table("ip", "c").chain("post", [{"snat": {"addr": "198.18.0.99"}}], hook="postrouting",
                                  prio=100, type="nat")
    v = node(a, same).explain(POD, "198.18.0.1", 80, in_iface="cni0")
    assert not v.undecided and v.snat_to == "198.18.0.99"
