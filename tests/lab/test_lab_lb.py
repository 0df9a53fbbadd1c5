"""The lab's LB behaviours (``natlens lab run --lb``) on the real kernel, with ground truth.

Root tests (skip with the reason without root or network namespaces): three runs at once
under different prefixes, one per behaviour, each with a Local and a Cluster Service
called by the client pod on node-1 (kube-proxy IPVS mode, the default):

* avoids-source (the default): the LB never sends node-1's SNATed Cluster connections
  back to node-1, so Cluster always works; Local (pod source) loops back and times out.
* any-backend: the LB hashes over the whole pool. A Cluster connection it sends back to
  node-1 arrives on node-1's eth0 with node-1's own address as source and the kernel drops
  it as a martian (accept_local 0, its default; no rule drops it): it times out. Local
  loops back as with avoids-source.
* proxy: the LB also SNATs to the VIP, so node-1 answers the VIP through the VPC, whose
  conntrack un-NATs the reply: nothing fails, loopbacks included.

Unit tests (no root): lb_nft's text per behaviour, plan()'s check of the behaviour, the
topology's loopback predicates, the ground truth's lb_src and failure per behaviour, the
CLI's --lb and the expected outcomes' words.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import netns_unavailable_reason, run_labs
from labhelpers import (
    ACK,
    assert_loopback_signature,
    ground_truth,
    nic_view,
    synacks,
    syns,
    tcp_packets,
)

from natlens.cli import build_parser, main
from natlens.errors import NatlensError
from natlens.lab import bundle, netns, rules
from natlens.lab.run import LB_NOTES, expected
from natlens.lab.topology import LB_MODES, plan
from natlens.netfilter.conntrack import parse_conntrack
from natlens.vocab import ANY_BACKEND, AVOIDS_SOURCE, PROXY

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
root = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PID = os.getpid()
N = 16  # connections per Service: P(the LB never picks node-1 in one Service) = 2**-16
CLIENT, NODE1, NODE2 = "198.18.16.100", "198.18.0.11", "198.18.0.12"
VIPS = {"web-local": "198.19.0.10", "web-cluster": "198.19.0.11"}
NODE_PORTS = {"web-local": 30080, "web-cluster": 30081}
ENDPOINTS = {"198.18.16.10", "198.18.17.10"}
RUNS = {AVOIDS_SOURCE: "s", ANY_BACKEND: "a", PROXY: "p"}  # behaviour: prefix tag


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return run_labs(tmp_path_factory.mktemp("lb"), {
        lb: {"policies": ["Local", "Cluster"], "connections": N, "nodes": 2, "any_capture": True,
             "prefix": f"nll{PID}{tag}-", "timeout": 1.5, "lb": lb}
        for lb, tag in RUNS.items()})


def _by_service(conns: list[dict]) -> dict[str, list[dict]]:
    out = {name: [c for c in conns if c["service"] == name] for name in VIPS}
    assert all(len(rs) == N for rs in out.values()), {k: len(v) for k, v in out.items()}
    return out


def _split(rs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(picked node-1, picked another node): both must be there for a test to say anything."""
    mine = [c for c in rs if c["lb_node"] == "node-1"]
    others = [c for c in rs if c["lb_node"] != "node-1"]
    assert mine and others, [c["lb_node"] for c in rs]
    return mine, others


def _assert_lab_records(facts: dict, bundle_dir: Path, lb: str) -> None:
    """lab.json, the topology and incident.yaml name the run's behaviour."""
    assert facts["command"]["lb"] == facts["topology"]["lb"] == facts["lb"]["behaviour"] == lb
    title = yaml.safe_load((bundle_dir / "incident.yaml").read_text())["title"]
    notes = yaml.safe_load((bundle_dir / "incident.yaml").read_text())["notes"]
    if lb == AVOIDS_SOURCE:
        assert ", LB " not in title and "LB behaviour" not in notes
    else:
        assert title.endswith(f", LB {lb}") and f"LB behaviour {lb}. {LB_NOTES[lb]}" in notes
    # the kernel's defaults decide: nobody accepts local sources, rp_filter off (the lab's)
    for node, values in facts["source_sysctls"].items():
        assert values == {f"{dev}.{key}": 0 for key in ("accept_local", "rp_filter")
                          for dev in ("all", "default", "eth0")}, node


@root
@pytest.mark.root
def test_avoids_source_cluster_never_picks_node_1_and_local_loops_back(bundles):
    d = bundles[AVOIDS_SOURCE]
    facts, conns = ground_truth(d)
    _assert_lab_records(facts, d, AVOIDS_SOURCE)
    by = _by_service(conns)
    for c in by["web-cluster"]:
        assert (c["lb_node"], c["outcome"], c["failure"]) == ("node-2", "connected", None), c
        assert c["snat"] and c["lb_src"] == c["wire_src"] == NODE1, c
    mine, others = _split(by["web-local"])
    for c in mine:  # the pod source: no backend's address, so node-1 may be picked
        assert (c["outcome"], c["error"], c["failure"]) == ("failed", "timeout", "loopback"), c
        assert c["failure_at"] == "vpc: LB sent it back to node-1, the client's own node", c
    assert all(c["outcome"] == "connected" and c["failure"] is None for c in others)
    assert {c["lb_src"] for c in by["web-local"]} == {CLIENT}
    assert_loopback_signature(d, facts, conns, "web-local")
    assert "\t\tip saddr 198.18.0.11 ip daddr 198.19.0.11 tcp dport 80 dnat" in (
        d / "ground-truth" / "lb.nft").read_text()
    assert facts["lb"]["excludes"] == "the node whose IP is the packet's source"


@root
@pytest.mark.root
def test_any_backend_cluster_connections_sent_back_to_node_1_time_out(bundles):
    d = bundles[ANY_BACKEND]
    facts, conns = ground_truth(d)
    _assert_lab_records(facts, d, ANY_BACKEND)
    by = _by_service(conns)
    mine, others = _split(by["web-cluster"])
    for c in mine:
        assert (c["outcome"], c["error"], c["failure"], c["loopback"]) == (
            "failed", "timeout", "loopback", True), c
        assert c["snat"] and c["lb_src"] == c["wire_src"] == NODE1, c
        assert c["failure_at"] == ("node-1 eth0: SYN from its own address 198.18.0.11 to "
                                   "198.18.0.11:30081 dropped as a martian source (the LB sent "
                                   "it back to the client's own node)"), c
    for c in others:
        assert (c["lb_node"], c["outcome"], c["failure"], c["loopback"]) == (
            "node-2", "connected", None, False), c
        assert c["lb_src"] == NODE1, c
    t = next(t for t in facts["services"] if t["policy"] == "Cluster")
    assert t["failed"] == t["loopback_failed"] == len(mine) and t["failures"] == {"loopback": len(mine)}
    # Local: the pod source loops back exactly as with avoids-source
    lmine, lothers = _split(by["web-local"])
    assert all(c["failure"] == "loopback" and c["lb_src"] == CLIENT for c in lmine)
    assert all(c["outcome"] == "connected" for c in lothers)
    assert_loopback_signature(d, facts, conns, "web-local")
    lb_nft = (d / "ground-truth" / "lb.nft").read_text()  # what the kernel holds
    assert "\t\tip saddr" not in lb_nft and lb_nft.count("dnat ip to jhash") == 2


@root
@pytest.mark.root
def test_any_backend_syn_arrives_on_node_1_eth0_and_the_kernel_drops_it(bundles):
    """The captures: each looped SYN (and its retransmits) comes in on node-1's eth0 with
    node-1's own address as source; nothing answers it, and it never reaches an endpoint."""
    d = bundles[ANY_BACKEND]
    facts, conns = ground_truth(d)
    mine, others = _split(_by_service(conns)["web-cluster"])
    eth0 = tcp_packets(d / "nodes" / "node-1" / "eth0.pcap")
    anyp = tcp_packets(d / "nodes" / "node-1" / "any.pcap")
    isn = {p["sport"]: p["seq"] for p in syns(eth0) if (p["src"], p["dst"]) == (NODE1, VIPS["web-cluster"])}
    arrivals = 0
    for c in mine:
        port, seq = c["wire_sport"], isn[c["wire_sport"]]  # NAT keeps the ISN
        arrived = [p for p in syns(eth0) if (p["src"], p["sport"], p["dst"], p["dport"]) == (
            NODE1, port, NODE1, 30081)]
        assert arrived and {p["seq"] for p in arrived} == {seq}, c  # the SYN it sent
        assert not [p for p in eth0 + anyp if (p["dst"], p["dport"]) == (NODE1, port)], c
        assert not [p for p in eth0 + anyp if p["flags"] & ACK and p["ack"] == (seq + 1) % 2**32], c
        # after the NodePort's DNAT it would leave for an endpoint: it never does (the any
        # capture may lose packets, see its tcpdump counters: a subset, not equality)
        seen = {p["dst"] for p in anyp if p["seq"] == seq and not p["flags"] & ACK}
        assert seen <= {VIPS["web-cluster"], NODE1}, (c, seen)
        arrivals += NODE1 in seen
    assert arrivals, "the any capture saw none of the looped SYNs arrive"
    for c in others:  # the control: the same SYN sent to node-2 is answered through the LB
        assert [p for p in synacks(eth0) if (p["src"], p["dst"], p["dport"]) == (
            VIPS["web-cluster"], NODE1, c["wire_sport"])], c
    # nothing the lab wrote drops it: no DROP in node-1's iptables, no drop in the IPVS stand-in
    ipt = (d / "nodes" / "node-1" / "iptables-save.txt").read_text()
    assert "-j DROP" not in ipt and "-j REJECT" not in ipt
    assert "drop" not in (d / "ground-truth" / "ipvs-standin-node-1.nft").read_text()
    assert not [p for p in tcp_packets(d / "nodes" / "node-2" / "eth0.pcap")
                if p["sport"] in {c["wire_sport"] for c in mine}]


@root
@pytest.mark.root
def test_proxy_picks_node_1_and_nothing_fails(bundles):
    d = bundles[PROXY]
    facts, conns = ground_truth(d)
    _assert_lab_records(facts, d, PROXY)
    assert facts["lb"]["snat"] == {"198.19.0.10:80/tcp": "198.19.0.10",
                                   "198.19.0.11:80/tcp": "198.19.0.11"}
    for name, rs in _by_service(conns).items():
        mine, _ = _split(rs)
        for c in rs:
            assert (c["outcome"], c["failure"], c["failure_at"]) == ("connected", None, None), c
            assert c["lb_src"] == VIPS[name] and c["backend"], c
        assert all(c["loopback"] for c in mine)
    t = {t["policy"]: t for t in facts["services"]}
    assert t["Local"]["failed"] == t["Cluster"]["failed"] == 0
    assert t["Local"]["loopback"] > 0 and t["Cluster"]["loopback"] > 0


@root
@pytest.mark.root
def test_proxy_loopback_is_answered_through_the_vpc(bundles):
    """On node-1's eth0: the SYN leaves for the VIP, comes back from the VIP to the NodePort
    (same ISN), node-1 answers the VIP, and the VPC's un-NATed SYN-ACK reaches the pod."""
    d = bundles[PROXY]
    facts, conns = ground_truth(d)
    eth0 = tcp_packets(d / "nodes" / "node-1" / "eth0.pcap")
    for name, rs in _by_service(conns).items():
        vip, node_port = VIPS[name], NODE_PORTS[name]
        view = nic_view(d, facts, name) if name == "web-local" else None
        left = {p["sport"]: p["seq"] for p in syns(eth0)
                if p["dst"] == vip and p["src"] in (CLIENT, NODE1)}
        from_lb = {p["seq"]: p for p in syns(eth0) if (p["src"], p["dst"], p["dport"]) == (
            vip, NODE1, node_port)}
        answers = {p["dport"] for p in synacks(eth0) if (p["src"], p["sport"], p["dst"]) == (
            NODE1, node_port, vip)}
        for c in rs:
            seq = left[c["wire_sport"]]
            if c["loopback"]:
                assert from_lb[seq]["sport"] in answers, c
            else:
                assert seq not in from_lb, c
            assert [p for p in synacks(eth0) if (p["src"], p["dport"]) == (vip, c["wire_sport"])
                    and p["dst"] == c["wire_src"]], c
            if view is not None:
                assert view[c["sport"]]["answered"], c
    assert "snat to 198.19.0.10" in (d / "ground-truth" / "lb.nft").read_text()
    # every flow the LB forwarded is answered to the VIP (its SNAT), never to the client
    lb_ct = [e for e in parse_conntrack((d / "ground-truth" / "lb-conntrack.txt").read_text())
             if e.proto == "tcp" and e.orig[1] in VIPS.values()]
    assert len(lb_ct) == 2 * N and all(e.reply[1] == e.orig[1] for e in lb_ct), lb_ct


@root
@pytest.mark.root
def test_lb_runs_leave_nothing_behind(bundles):
    for tag in RUNS.values():
        assert netns.existing(f"nll{PID}{tag}-") == []


# --- without root: the rules, the plan, the ground truth, the CLI ------------------------

def _dnat_rules(text: str) -> list[tuple[str | None, str, list[str]]]:
    """(source match or None, VIP, [node IPs the rule can pick]) per DNAT rule of lb_nft."""
    import re

    out = []
    for line in text.splitlines():
        if "dnat" in line:
            src = re.match(r"\s*ip saddr ([\d.]+)", line)
            vip = re.search(r"ip daddr ([\d.]+)", line).group(1)
            out.append((src.group(1) if src else None, vip, re.findall(r": (\S+) \. \d+", line)))
    return out


@pytest.mark.parametrize("nodes", [2, 3])
def test_lb_nft_per_behaviour(nodes):
    ips = [f"198.18.0.{10 + i}" for i in range(1, nodes + 1)]
    avoid = rules.lb_nft(plan(["Cluster"], nodes, lb=AVOIDS_SOURCE))
    got = _dnat_rules(avoid)
    assert [src for src, _, _ in got] == ips + [None]
    assert all(src not in picks for src, _, picks in got[:-1])
    assert "postrouting" not in avoid and "snat" not in avoid
    anyb = rules.lb_nft(plan(["Cluster"], nodes, lb=ANY_BACKEND))
    assert _dnat_rules(anyb) == [(None, "198.19.0.10", ips)]  # the source's node included
    assert "postrouting" not in anyb and "snat" not in anyb
    prox = rules.lb_nft(plan(["Local", "Cluster"], nodes, lb=PROXY))
    assert _dnat_rules(prox) == [(None, "198.19.0.10", ips[:2]), (None, "198.19.0.11", ips)]
    assert "type nat hook postrouting priority srcnat; policy accept;" in prox
    assert "ct original ip daddr 198.19.0.10 tcp dport 30080 snat ip to 198.19.0.10" in prox
    assert "ct original ip daddr 198.19.0.11 tcp dport 30081 snat ip to 198.19.0.11" in prox
    for text in (avoid, anyb, prox):
        assert text.startswith("table ip natlens_lb {\n  chain prerouting {\n") and text.endswith("}\n")


def test_lb_nft_without_a_healthy_node_drops_in_every_behaviour():
    for lb in LB_MODES:
        text = rules.lb_nft(plan(["Local"], 2, fault="no-endpoints", lb=lb))
        assert "ip daddr 198.19.0.10 tcp dport 80 drop" in text and "dnat" not in text, lb


def test_plan_checks_the_lb_and_carries_it():
    assert plan(["Local"]).lb == AVOIDS_SOURCE == LB_MODES[0]
    assert LB_MODES == (AVOIDS_SOURCE, ANY_BACKEND, PROXY)
    topo = plan(["Local", "Cluster"], 2, lb=ANY_BACKEND)
    assert topo.lb == ANY_BACKEND and topo.to_dict()["lb"] == ANY_BACKEND
    for bad in ("unknown", "Proxy", "", "avoid-source"):
        with pytest.raises(NatlensError) as e:
            plan(["Local"], 2, lb=bad)
        assert str(e.value) == (f"unknown LB behaviour {bad!r}: use avoids-source, any-backend "
                                "or proxy")


@pytest.mark.parametrize("lb, proxy_mode, ip_mode, loops, fails", [
    (AVOIDS_SOURCE, "ipvs", "VIP", {"Local": True, "Cluster": False}, {"Local": True, "Cluster": False}),
    (ANY_BACKEND, "ipvs", "VIP", {"Local": True, "Cluster": True}, {"Local": True, "Cluster": True}),
    (PROXY, "ipvs", "VIP", {"Local": True, "Cluster": True}, {"Local": False, "Cluster": False}),
    (ANY_BACKEND, "nftables", "VIP", {"Local": False, "Cluster": False},
     {"Local": False, "Cluster": False}),
    (AVOIDS_SOURCE, "iptables", "Proxy", {"Local": True, "Cluster": True},
     {"Local": True, "Cluster": True}),
])
def test_which_policies_loop_back_and_fail(lb, proxy_mode, ip_mode, loops, fails):
    topo = plan(["Local"], 2, proxy_mode=proxy_mode, ip_mode=ip_mode, lb=lb)
    assert {p: topo.loops_back(p) for p in loops} == loops
    assert {p: topo.loopback_fails(p) for p in fails} == fails


CT_NODE1 = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.11 sport=40001 dport=80 [UNREPLIED] src=198.19.0.11 dst=198.18.0.11 sport=80 dport=61001 mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.16.100 dst=198.19.0.11 sport=40002 dport=80 src=198.19.0.11 dst=198.18.0.11 sport=80 dport=61002 [ASSURED] mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.16.100 dst=198.19.0.10 sport=40003 dport=80 src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40003 [ASSURED] mark=0 use=1
"""
CT_VPC_ANY = """\
tcp      6 117 SYN_SENT src=198.18.0.11 dst=198.19.0.11 sport=61001 dport=80 [UNREPLIED] src=198.18.0.11 dst=198.18.0.11 sport=30081 dport=61001 mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.0.11 dst=198.19.0.11 sport=61002 dport=80 src=198.18.0.12 dst=198.18.0.11 sport=30081 dport=61002 [ASSURED] mark=0 use=1
"""
CT_VPC_PROXY = """\
tcp      6 117 SYN_SENT src=198.18.0.11 dst=198.19.0.11 sport=61001 dport=80 [UNREPLIED] src=198.18.0.11 dst=198.19.0.11 sport=30081 dport=61001 mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.0.11 dst=198.19.0.11 sport=61002 dport=80 src=198.18.0.12 dst=198.19.0.11 sport=30081 dport=61002 [ASSURED] mark=0 use=1
tcp      6 118 TIME_WAIT src=198.18.16.100 dst=198.19.0.10 sport=40003 dport=80 src=198.18.0.11 dst=198.19.0.10 sport=30080 dport=40003 [ASSURED] mark=0 use=1
"""


def _recs(first_failed: bool = True) -> list[dict]:
    def rec(service, sport, error):
        return {"service": service, "src": CLIENT, "sport": sport, "dst": VIPS[service], "dport": 80,
                "outcome": "failed" if error else "connected", "error": error}
    return [rec("web-cluster", 40001, "timeout" if first_failed else None),
            rec("web-cluster", 40002, None), rec("web-local", 40003, None)]


def _derive(topo, vpc_ct: str, recs: list[dict]) -> list[dict]:
    return bundle.failures(bundle.enrich(recs, topo, CT_NODE1, vpc_ct, {"node-1": CT_NODE1}),
                           topo, vpc_ct)


def test_ground_truth_any_backend_loop_dies_on_node_1_eth0():
    got = _derive(plan(["Local", "Cluster"], 2, lb=ANY_BACKEND), CT_VPC_ANY, _recs())
    assert [(g["lb_node"], g["lb_src"], g["loopback"]) for g in got] == [
        ("node-1", NODE1, True), ("node-2", NODE1, False), (None, None, None)]
    assert (got[0]["failure"], got[0]["failure_at"]) == (
        "loopback", "node-1 eth0: SYN from its own address 198.18.0.11 to 198.18.0.11:30081 "
                    "dropped as a martian source (the LB sent it back to the client's own node)")
    assert [(g["failure"], g["failure_at"]) for g in got[1:]] == [(None, None)] * 2


def test_ground_truth_proxy_lb_src_is_the_vip_and_a_loopback_is_no_failure():
    topo = plan(["Local", "Cluster"], 2, lb=PROXY)
    got = _derive(topo, CT_VPC_PROXY, _recs(first_failed=False))
    assert [(g["lb_node"], g["lb_src"], g["loopback"]) for g in got] == [
        ("node-1", "198.19.0.11", True), ("node-2", "198.19.0.11", False),
        ("node-1", "198.19.0.10", True)]
    assert all(g["failure"] is None for g in got)
    # a proxied loopback that fails anyway failed for another reason, not the loopback
    got = _derive(topo, CT_VPC_PROXY, _recs())
    assert (got[0]["loopback"], got[0]["failure"]) == (True, "unknown")
    got = _derive(plan(["Local", "Cluster"], 2, lb=PROXY, fault="reply-drop"),
                  CT_VPC_PROXY.replace("SYN_SENT", "SYN_RECV"), _recs())
    assert (got[0]["failure"], got[0]["failure_at"]) == (
        "reply-lost", "vpc: nft drop of SYN-ACKs to node-1")


def test_ground_truth_avoids_source_pod_loopback_keeps_its_words():
    ct = ("tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40003 dport=80 "
          "[UNREPLIED] src=198.18.0.11 dst=198.18.16.100 sport=30080 dport=40003 mark=0 use=1\n")
    recs = _recs()[2:]
    recs[0].update(outcome="failed", error="timeout")
    (got,) = _derive(plan(["Local"], 2), ct, recs)
    assert (got["lb_src"], got["failure"], got["failure_at"]) == (
        CLIENT, "loopback", "vpc: LB sent it back to node-1, the client's own node")


def test_cli_lb_is_case_insensitive_defaults_to_avoids_source_and_names_the_choices(capsys):
    parser = build_parser()
    assert parser.parse_args(["lab", "run", "--out", "/tmp/x"]).lb == AVOIDS_SOURCE
    assert parser.parse_args(["lab", "run", "--out", "/tmp/x", "--lb", "Any-Backend"]).lb == ANY_BACKEND
    assert parser.parse_args(["lab", "run", "--out", "/tmp/x", "--lb", "proxy"]).lb == PROXY
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "run", "--out", "/tmp/x", "--lb", "nlb"])
    assert "use avoids-source, any-backend or proxy, not 'nlb'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lab", "run", "--help"])
    assert "--lb avoids-source|any-backend|proxy" in capsys.readouterr().out


def test_cli_bad_lb_builds_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["lab", "run", "--lb", "bogus", "--out", str(tmp_path / "b")])
    assert e.value.code == 2 and "argument --lb" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_expected_words_follow_the_behaviour():
    avoid = expected(plan(["Local", "Cluster"], 2))
    assert "never picks the client's node" in avoid["Cluster"]
    anyb = expected(plan(["Local", "Cluster"], 2, lb=ANY_BACKEND))
    assert "martian source" in anyb["Cluster"] and anyb["Local"] == avoid["Local"]
    prox = expected(plan(["Local", "Cluster"], 2, lb=PROXY))
    assert all("every connection connects" in v for v in prox.values())
    # kube-proxy DNATs the VIP on the node: the LB's behaviour does not matter
    on_node = [expected(plan(["Local"], 2, proxy_mode="nftables", lb=lb)) for lb in LB_MODES]
    assert on_node[0] == on_node[1] == on_node[2]
    assert set(LB_NOTES) == set(LB_MODES)
