"""The walk's own types: Undecided answers, SnatTo, MarkOp/Target, Frame and Branch."""

from __future__ import annotations

import dataclasses

import pytest

import natlens.netfilter
from natlens.netfilter import NodeRules, parse_ip_addr
from natlens.netfilter import parse_iptables_save as ipt
from natlens.netfilter.generate import Service, kube_proxy_iptables
from natlens.netfilter.walk import Branch, Packet, SnatTo, Undecided, Walker, WalkState
from natlens.netfilter.walk.matches import CompiledRule, Compiler, rule_matches
from natlens.netfilter.walk.targets import MARK, MarkOp, compile_target
from natlens.netfilter.walk.walker import Frame

ADDR = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0    inet 198.18.0.5/24 brd 198.18.0.255 scope global eth0\n"
        "3: cni0    inet 198.18.64.1/24 brd 198.18.64.255 scope global cni0\n")


def _node(rules: str, addr: str | None = ADDR) -> NodeRules:
    return NodeRules(ipt(rules, "iptables-save.txt"), None, None, parse_ip_addr(addr) if addr else None)


def _answer(node: NodeRules, rule_line: str, **pkt):
    """rule_matches for one rule written into nat PREROUTING, against a packet from a pod."""
    rule = next(ipt(f"*nat\n:PREROUTING ACCEPT [0:0]\n{rule_line}\nCOMMIT\n").rules())
    st = WalkState.start(Packet(**{"src": "198.18.64.5", "dst": "198.18.10.1", "dport": 80,
                                   "in_iface": "cni0", **pkt}))
    st.hook = "PREROUTING"
    return rule_matches(CompiledRule(rule, Compiler(node).compile(rule)), st)


NOTHING = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"


def test_an_unknown_match_makes_the_rule_undecided_with_its_reason():
    assert _answer(_node(NOTHING), "-A PREROUTING -p tcp -m socket --transparent -j RETURN") == \
        Undecided("match -m socket not modelled")


def test_a_definite_no_wins_over_an_undecided_check():
    n = _node(NOTHING)
    assert _answer(n, "-A PREROUTING -m socket --transparent -m mark --mark 0x1 -j RETURN") is False
    assert _answer(n, "-A PREROUTING -p udp -m socket --transparent -j RETURN") is False


def test_undecided_survives_a_probability_and_an_unknown_interface_comes_first():
    n = _node(NOTHING)
    u = _answer(n, "-A PREROUTING -m statistic --mode random --probability 0.5 -m socket -j RETURN")
    assert isinstance(u, Undecided) and u.reason == "match -m socket not modelled"
    u = _answer(n, "-A PREROUTING -i eth0 -m socket -j RETURN", in_iface=None)
    assert u == Undecided("incoming interface unknown (give --in-iface) for -i")


def test_checks_answer_bool_or_probability_never_a_string():
    n = _node(NOTHING)
    assert _answer(n, "-A PREROUTING -p tcp --dport 80 -j RETURN") is True
    assert _answer(n, "-A PREROUTING -m statistic --mode random --probability 0.25 -j RETURN") == 0.25
    assert _answer(n, "-A PREROUTING -m statistic --mode nth --every 4 -j RETURN") == 0.25
    # two statistic matches in one rule: the probabilities multiply
    assert _answer(n, "-A PREROUTING -m statistic --mode random --probability 0.5 "
                      "-m statistic --mode random ! --probability 0.75 -j RETURN") == 0.125


def test_addrtype_without_node_addresses_is_undecided():
    u = _answer(_node(NOTHING, addr=None), "-A PREROUTING -m addrtype --dst-type LOCAL -j RETURN")
    assert u == Undecided("node addresses unknown (give ip-addr.txt or --local-ip) for -m addrtype")


def test_undecided_is_a_frozen_value():
    u = Undecided("why")
    assert u == Undecided("why") and hash(u) == hash(Undecided("why"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.reason = "other"


SNAT_PORT = """*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 198.18.64.0/24 -j SNAT --to-source 198.18.6.1:1024-2048
COMMIT
"""
MASQ = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"


def _postrouting(rules: str, out_iface: str | None, addr: str | None = ADDR) -> WalkState:
    node = _node(rules, addr)
    st = WalkState.start(Packet("198.18.64.5", "198.18.70.9", 80, in_iface="cni0", out_iface=out_iface))
    [st] = Walker(node).run_table(st, "nat", "POSTROUTING")
    return st


def test_snat_records_address_and_port_and_rewrites_the_source():
    st = _postrouting(SNAT_PORT, "eth0")
    assert st.snat == SnatTo("198.18.6.1", 1024) and st.snat.known
    assert st.sport == 1024 and st.src == 0xC6120601  # 198.18.6.1


def test_masquerade_takes_the_egress_interface_address():
    assert _postrouting(MASQ, "cni0").snat == SnatTo("198.18.64.1")
    assert _postrouting(MASQ, "eth0").snat == SnatTo("198.18.0.5")


def test_masquerade_to_an_unknown_address_is_snated_to_unknown_and_says_why():
    st = _postrouting(MASQ, "tun9")
    assert st.snat is not None and not st.snat.known and st.snat.address is None
    assert st.snat.unknown_why == "MASQUERADE to the address of tun9 (unknown)"
    assert st.src == 0xC6124005  # the source stays the pod's: the new one is not known
    v = _node(MASQ).explain("198.18.64.5", "198.18.70.9", 80, in_iface="cni0", out_iface="tun9")
    [b] = v.paths
    assert (b.snat, b.snat_to, v.snat, v.snat_to) == (True, None, True, None)
    assert v.verdict == "forwarded via tun9, SNAT to ?"
    assert b.trace[-1] == "MASQUERADE to the address of tun9 (unknown)"


def test_snat_to_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SnatTo("198.18.6.1").address = "198.18.6.2"


@pytest.mark.parametrize(("opts", "before", "after"), [
    ("--set-xmark 0x4000/0x4000", 0x1, 0x4001),
    ("--set-xmark 0x0/0x4000", 0x4001, 0x1),
    ("--set-mark 0x4000", 0x1, 0x4000),
    ("--set-mark 0x2/0x3", 0x5, 0x6),
    ("--or-mark 0x2", 0x1, 0x3),
    ("--and-mark 0xfffffffe", 0x3, 0x2),
    ("--xor-mark 0x1", 0x3, 0x2),
])
def test_mark_targets_compile_to_the_kernels_xor_and_clear(opts, before, after):
    rs = ipt(f"*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j MARK {opts}\nCOMMIT\n")
    rule = next(rs.rules())
    tgt = compile_target(rule, rs.tables["mangle"])
    assert tgt.kind == MARK and isinstance(tgt.op, MarkOp)
    assert tgt.op.apply(before) == after


def test_a_frame_copy_walks_on_by_itself():
    chain = ipt("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j RETURN\nCOMMIT\n").tables["nat"]["PREROUTING"]
    f = Frame(chain, None, "nat/PREROUTING")
    trace: list[str] = []
    assert f.next_rule(trace) == 0
    g = f.copy()
    assert f.next_rule(trace) is None  # the chain has one rule
    assert (g.pos, g.last) == (1, 0)
    assert g.next_rule(trace) is None and trace == []


def test_branches_carry_their_probability_and_the_conditions_that_lead_there():
    eps = [("198.18.64.7", 8080, True), ("198.18.64.8", 8080, True), ("198.18.70.9", 8080, False)]
    d = kube_proxy_iptables([Service("ns/web:http", "198.18.10.1", 80, endpoints=eps)],
                            cluster_cidr="198.18.64.0/18")
    v = _node(d.iptables).explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    assert all(isinstance(b, Branch) for b in v.paths)
    assert sorted(b.dnat_to for b in v.paths) == [f"{ip}:{port}" for ip, port, _ in eps]
    assert [b.probability for b in v.paths] == [0.333333] * 3
    assert sum(b.probability for b in v.paths) == pytest.approx(1.0, abs=1e-5)
    svc = next(c for c in d.iptables.split() if c.startswith("KUBE-SVC-"))
    conditions = {b.dnat_to: [c.removeprefix(f"nat/{svc} ") for c in b.conditions] for b in v.paths}
    assert conditions == {"198.18.64.7:8080": ["#2 taken (p=0.3333)"],
                          "198.18.64.8:8080": ["#2 not taken (p=0.6667)", "#3 taken (p=0.5)"],
                          "198.18.70.9:8080": ["#2 not taken (p=0.6667)", "#3 not taken (p=0.5)"]}
    assert list(v.paths[0].to_dict()) == [f.name for f in dataclasses.fields(Branch)]


def test_each_branch_lists_only_its_own_decisions():
    # decided_by was shared between forked branches: each DNAT was listed in every branch
    eps = [("198.18.64.7", 8080, True), ("198.18.64.8", 8080, True)]
    d = kube_proxy_iptables([Service("ns/web:http", "198.18.10.1", 80, endpoints=eps)],
                            cluster_cidr="198.18.64.0/18")
    v = _node(d.iptables).explain("198.18.64.5", "198.18.10.1", 80, in_iface="cni0")
    for b in v.paths:
        dnats = [x for x in b.decided_by if x.startswith("DNAT by")]
        assert len(dnats) == 1 and b.dnat_to.split(":")[0] in dnats[0], b.decided_by


def test_the_package_exports_branch_not_path():
    assert natlens.netfilter.Branch is Branch
    assert "Branch" in natlens.netfilter.__all__
    assert not hasattr(natlens.netfilter, "Path")
