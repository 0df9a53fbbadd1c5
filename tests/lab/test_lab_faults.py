"""The lab's faults: each way a connection can fail, on the real kernel, with ground truth.

Root tests (skip with the reason without root or network namespaces): five small runs at
once under different prefixes, one per fault in a proxy mode / ipMode where it acts:

* no-endpoints, nftables + VIP: the client's node rejects pod -> VIP (ICMP port
  unreachable from its cni0 address; the kernel rate-limits those ICMP errors past a
  burst of 6 per destination, so the rest time out): dropped-by-rule.
* no-endpoints, ipvs: Local has no healthy node, the LB drops (no-reply); Cluster goes
  to node-2, whose IPVS NodePort has no real server (ICMP, rewritten by the LB to come
  from the VIP): dropped-by-rule.
* refused, nftables + VIP: the endpoints answer RST on port 8081: refused.
* blackhole, ipvs: node-1 drops the SYN in routing, nothing leaves its NIC: no-reply.
* reply-drop, ipvs: the VPC drops SYN-ACKs to node-1: reply-lost (loopbacks unaffected).

Unit tests (no root): the failure derivation on hand-made records and conntrack text, the
plan's fault checks, and the CLI's --fault argument.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import netns_unavailable_reason, run_labs
from labhelpers import ACK, RST, SYN, ground_truth, syns, tcp_packets

from natlens.capture import read_capture
from natlens.cli import main
from natlens.cli.lab import tally_line
from natlens.errors import NatlensError
from natlens.lab import bundle, faults, netns, rules
from natlens.lab.topology import plan

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
root = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PID = os.getpid()
N = 6  # connections per Service
CLIENT, VIPS = "198.18.16.100", {"web-local": "198.19.0.10", "web-cluster": "198.19.0.11"}
RUNS = {  # name: (fault, proxy mode, ipMode, prefix tag)
    "noep-nft": ("no-endpoints", "nftables", "VIP", "e"),
    "noep-ipvs": ("no-endpoints", "ipvs", "VIP", "v"),
    "refused": ("refused", "nftables", "VIP", "r"),
    "blackhole": ("blackhole", "ipvs", "VIP", "b"),
    "reply-drop": ("reply-drop", "ipvs", "VIP", "d"),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return run_labs(tmp_path_factory.mktemp("faults"), {
        name: {"policies": ["Local", "Cluster"], "connections": N, "nodes": 2, "any_capture": True,
               "prefix": f"nlf{PID}{tag}-", "proxy_mode": proxy_mode, "ip_mode": ip_mode, "timeout": 1.0,
               "fault": fault}
        for name, (fault, proxy_mode, ip_mode, tag) in RUNS.items()})


def _icmp_unreachables(path: Path) -> list[dict]:
    """ICMP port unreachables of a capture: source, destination and the quoted packet."""
    df = read_capture(path).packets
    df = df[(df["proto"] == 1) & (df["icmp_type"] == 3) & (df["icmp_code"] == 3)]
    cols = ["src", "dst", "icmp_orig_src", "icmp_orig_dst", "icmp_orig_sport", "icmp_orig_dport"]
    return df[cols].astype(object).to_dict("records")


def _by_service(conns: list[dict]) -> dict[str, list[dict]]:
    return {name: [c for c in conns if c["service"] == name] for name in VIPS}


@root
@pytest.mark.root
def test_no_endpoints_nftables_vip_is_rejected_on_the_clients_node(bundles):
    bundle_dir = bundles["noep-nft"]
    facts, conns = ground_truth(bundle_dir)
    assert len(conns) == 2 * N
    assert {c["error"] for c in conns} <= {"ECONNREFUSED", "timeout"}
    refused = [c for c in conns if c["error"] == "ECONNREFUSED"]
    assert refused  # the first ICMP errors to the pod are never rate-limited
    for c in conns:
        assert c["failure"] == "dropped-by-rule", c
        assert c["failure_at"].startswith("node-1: kube-proxy reject (no endpoints)"), c
        assert c["failure_at"].endswith("ICMP error rate-limited") == (c["error"] == "timeout")
        assert c["lb_node"] is None and c["node_dnat"] is None, c  # never DNATed, never left
    # The reject's ICMP comes from node-1's cni0 address, not from the VIP, and quotes the SYN.
    icmp = _icmp_unreachables(bundle_dir / "nodes" / "node-1" / "any.pcap")
    assert {(p["src"], p["dst"]) for p in icmp} == {("198.18.16.1", CLIENT)}
    quoted = {(p["icmp_orig_dst"], p["icmp_orig_sport"]) for p in icmp}
    assert {(c["dst"], c["sport"]) for c in refused} <= quoted
    # what was not answered was rate-limited by node-1's kernel
    timeouts = len(conns) - len(refused)
    counters = facts["icmp"]["node-1"]
    assert counters["OutDestUnreachs"] >= len(refused)
    if "OutRateLimitHost" in counters:
        assert counters["OutRateLimitHost"] >= timeouts
    nft = (bundle_dir / "nodes" / "node-1" / "nft-ruleset.txt").read_text()
    assert "198.19.0.10 . tcp . 80 comment" in nft and "goto reject-chain" in nft
    assert "198.18.16.10" not in nft  # no endpoint anywhere in kube-proxy's table
    assert {t["policy"]: t["failures"] for t in facts["services"]} == {
        "Local": {"dropped-by-rule": N}, "Cluster": {"dropped-by-rule": N}}


@root
@pytest.mark.root
def test_no_endpoints_ipvs_lb_drops_local_and_node_2_refuses_cluster(bundles):
    bundle_dir = bundles["noep-ipvs"]
    facts, conns = ground_truth(bundle_dir)
    by = _by_service(conns)
    for c in by["web-local"]:  # no node passes the health check: the LB drops
        assert (c["error"], c["failure"]) == ("timeout", "no-reply"), c
        assert c["failure_at"] == "vpc: LB has no healthy backend for 198.19.0.10:80 (drop)"
    assert "ip daddr 198.19.0.10 tcp dport 80 drop" in (
        bundle_dir / "ground-truth" / "lb.nft").read_text()
    assert any(c["error"] == "ECONNREFUSED" for c in by["web-cluster"])
    for c in by["web-cluster"]:
        assert c["lb_node"] == "node-2" and c["failure"] == "dropped-by-rule", c
        assert c["failure_at"].startswith("node-2: IPVS 198.18.0.12:30081 has no real server"), c
    # node-2 sends the ICMP from its own address; the LB's reverse NAT makes it the VIP's
    n2 = _icmp_unreachables(bundle_dir / "nodes" / "node-2" / "eth0.pcap")
    assert {(p["src"], p["dst"], p["icmp_orig_dport"]) for p in n2} == {
        ("198.18.0.12", "198.18.0.11", 30081)}
    n1 = _icmp_unreachables(bundle_dir / "nodes" / "node-1" / "eth0.pcap")
    assert {(p["src"], p["icmp_orig_dst"], p["icmp_orig_dport"]) for p in n1} == {
        ("198.19.0.11", "198.19.0.11", 80)}
    ipvsadm = (bundle_dir / "nodes" / "node-2" / "ipvsadm.txt").read_text()
    assert "-A -t 198.18.0.12:30081 -s rr" in ipvsadm and "-a " not in ipvsadm
    svcs = json.loads((bundle_dir / "cluster" / "services.json").read_text())["items"]
    assert {json.dumps(s["spec"]["selector"]) for s in svcs} == {'{"app": "web-v2"}'}
    pods = json.loads((bundle_dir / "cluster" / "pods.json").read_text())["items"]
    assert sum(p["metadata"]["labels"] == {"app": "web"} for p in pods) == 2  # still running


@root
@pytest.mark.root
def test_refused_endpoints_answer_rst(bundles):
    bundle_dir = bundles["refused"]
    facts, conns = ground_truth(bundle_dir)
    assert [c["error"] for c in conns] == ["ECONNREFUSED"] * (2 * N)
    assert {c["failure"] for c in conns} == {"refused"}
    assert all("8081: nothing listening" in c["failure_at"] for c in conns)
    pkts = tcp_packets(bundle_dir / "nodes" / "node-1" / "any.pcap")
    rsts = [p for p in pkts if p["flags"] & RST and p["dst"] == CLIENT]
    assert {p["sport"] for p in rsts} >= {8081}  # from the endpoint, before the reverse NAT
    assert {c["sport"] for c in conns} <= {p["dport"] for p in rsts}
    nft = (bundle_dir / "nodes" / "node-1" / "nft-ruleset.txt").read_text()
    assert "dnat to 198.18.16.10:8081" in nft and "dnat to 198.18.17.10:8081" in nft
    svcs = json.loads((bundle_dir / "cluster" / "services.json").read_text())["items"]
    assert {s["spec"]["ports"][0]["targetPort"] for s in svcs} == {8081}
    assert facts["command"]["fault"] == "refused" and facts["fault"]["name"] == "refused"


@root
@pytest.mark.root
def test_blackhole_drops_the_syn_on_node_1(bundles):
    bundle_dir = bundles["blackhole"]
    facts, conns = ground_truth(bundle_dir)
    for c in conns:
        assert (c["outcome"], c["error"], c["failure"]) == ("failed", "timeout", "no-reply"), c
        assert c["failure_at"] == f"node-1: blackhole route {VIPS[c['service']]}/32", c
    routes = json.loads((bundle_dir / "nodes" / "node-1" / "ip-route.json").read_text())
    assert {r["dst"] for r in routes if r.get("type") == "blackhole"} == set(VIPS.values())
    node2 = json.loads((bundle_dir / "nodes" / "node-2" / "ip-route.json").read_text())
    assert not [r for r in node2 if r.get("type") == "blackhole"]
    # The pod's SYNs reach node-1 (its any capture) but never its NIC.
    inside = {p["sport"] for p in syns(tcp_packets(bundle_dir / "nodes" / "node-1" / "any.pcap"))
              if p["src"] == CLIENT and p["dst"] in VIPS.values()}
    assert {c["sport"] for c in conns} <= inside
    assert not [p for p in tcp_packets(bundle_dir / "nodes" / "node-1" / "eth0.pcap")
                if p["dst"] in VIPS.values()]
    assert "198.19.0" not in (bundle_dir / "ground-truth" / "lb-conntrack.txt").read_text()
    notes = yaml.safe_load((bundle_dir / "incident.yaml").read_text())["notes"]
    assert "Fault injected (blackhole)" in notes


@root
@pytest.mark.root
def test_reply_drop_loses_syn_acks_to_node_1(bundles):
    bundle_dir = bundles["reply-drop"]
    facts, conns = ground_truth(bundle_dir)
    by = _by_service(conns)
    for c in by["web-cluster"]:  # SNATed to node-1, so the LB always picks node-2
        assert (c["error"], c["lb_node"], c["lb_ct_state"]) == ("timeout", "node-2", "SYN_RECV")
        assert c["failure"] == "reply-lost" and c["failure_at"] == "vpc: nft drop of SYN-ACKs to node-1"
    for c in by["web-local"]:  # the pod IP: loopbacks via node-1 keep their SYN-ACK on node-1
        assert c["error"] == "timeout", c
        assert c["failure"] == ("loopback" if c["lb_node"] == "node-1" else "reply-lost"), c
    lb = (bundle_dir / "ground-truth" / "lb.nft").read_text()
    assert "table ip natlens_fault" in lb and 'oifname "node-1"' in lb and "drop" in lb
    # node-2 sends SYN-ACKs out of its NIC; none of them reach node-1's
    lost = [c for c in conns if c["failure"] == "reply-lost"]
    n2 = {p["dport"] for p in tcp_packets(bundle_dir / "nodes" / "node-2" / "eth0.pcap")
          if p["flags"] & (SYN | ACK) == SYN | ACK and p["dst"] in (CLIENT, "198.18.0.11")}
    assert {c["wire_sport"] for c in lost} <= n2
    n1 = [p for p in tcp_packets(bundle_dir / "nodes" / "node-1" / "eth0.pcap")
          if p["flags"] & (SYN | ACK) == SYN | ACK and p["src"] in VIPS.values()]
    assert not n1
    tally = {t["policy"]: t for t in facts["services"]}
    assert tally["Cluster"]["failures"] == {"reply-lost": N}
    assert sum(tally["Local"]["failures"].values()) == N


@root
@pytest.mark.root
def test_fault_runs_leave_nothing_behind(bundles):
    for *_, tag in RUNS.values():
        assert netns.existing(f"nlf{PID}{tag}-") == []


# --- without root: the derivation, the plan, the CLI --------------------------------------

def _rec(service: str, sport: int, error: str | None, dst: str | None = None) -> dict:
    return {"service": service, "src": CLIENT, "sport": sport, "dst": dst or VIPS[service],
            "dport": 80, "outcome": "connected" if error is None else "failed", "error": error}


def _derive(topo, recs, node_ct: str = "", vpc_ct: str = "", others: dict | None = None):
    cts = {"node-1": node_ct, **(others or {})}
    return bundle.failures(bundle.enrich(recs, topo, node_ct, vpc_ct, cts), topo, vpc_ct)


def test_no_endpoints_on_the_clients_node_refused_or_rate_limited():
    topo = plan(["Local", "Cluster"], 2, proxy_mode="nftables", fault="no-endpoints")
    got = _derive(topo, [_rec("web-local", 40001, "ECONNREFUSED"),
                         _rec("web-cluster", 40002, "timeout"), _rec("web-local", 40003, None)])
    assert [(g["failure"], g["failure_at"]) for g in got] == [
        ("dropped-by-rule", "node-1: kube-proxy reject (no endpoints)"),
        ("dropped-by-rule", "node-1: kube-proxy reject (no endpoints); ICMP error rate-limited"),
        (None, None)]


CT_IPVS_NODE1 = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40001 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.11 sport=40002 dport=80 [UNREPLIED] src=198.19.0.11 dst=198.18.0.11 sport=80 dport=61234 mark=0 use=1
"""
CT_IPVS_VPC = """\
tcp      6 117 SYN_SENT src=198.18.0.11 dst=198.19.0.11 sport=61234 dport=80 [UNREPLIED] src=198.18.0.12 dst=198.18.0.11 sport=30081 dport=61234 mark=0 use=1
"""


def test_no_endpoints_ipvs_lb_drop_and_empty_virtual_server():
    topo = plan(["Local", "Cluster"], 2, fault="no-endpoints")
    got = _derive(topo, [_rec("web-local", 40001, "timeout"),
                         _rec("web-cluster", 40002, "ECONNREFUSED")], CT_IPVS_NODE1, CT_IPVS_VPC)
    assert (got[0]["failure"], got[0]["failure_at"]) == (
        "no-reply", "vpc: LB has no healthy backend for 198.19.0.10:80 (drop)")
    assert got[1]["lb_node"] == "node-2"
    assert (got[1]["failure"], got[1]["failure_at"]) == (
        "dropped-by-rule", "node-2: IPVS 198.18.0.12:30081 has no real server (ICMP port unreachable)")
    t = {row["policy"]: row["failures"] for row in bundle.tally(got, topo)}
    assert t == {"Local": {"no-reply": 1}, "Cluster": {"dropped-by-rule": 1}}


def test_refused_and_blackhole_from_the_clients_error():
    topo = plan(["Local"], 2, proxy_mode="nftables", fault="refused")
    got = _derive(topo, [_rec("web-local", 40001, "ECONNREFUSED"), _rec("web-local", 40002, "timeout")])
    assert (got[0]["failure"], got[0]["failure_at"]) == (
        "refused", "endpoints web-1, web-2 port 8081: nothing listening")
    assert (got[1]["failure"], got[1]["failure_at"]) == ("unknown", None)
    topo = plan(["Local"], 2, fault="blackhole")
    got = _derive(topo, [_rec("web-local", 40001, "timeout")])
    assert (got[0]["failure"], got[0]["failure_at"]) == (
        "no-reply", "node-1: blackhole route 198.19.0.10/32")


CT_DROP_NODE1 = """\
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40001 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40002 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40002 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40003 dport=80 [UNREPLIED] src=198.19.0.10 dst=198.18.16.100 sport=80 dport=40003 mark=0 use=1
"""
CT_DROP_VPC = """\
tcp      6 57 SYN_RECV src=198.18.16.100 dst=198.19.0.10 sport=40001 dport=80 src=198.18.0.12 dst=198.18.16.100 sport=30080 dport=40001 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40002 dport=80 [UNREPLIED] src=198.18.0.11 dst=198.18.16.100 sport=30080 dport=40002 mark=0 use=1
tcp      6 117 SYN_SENT src=198.18.16.100 dst=198.19.0.10 sport=40003 dport=80 [UNREPLIED] src=198.18.0.12 dst=198.18.16.100 sport=30080 dport=40003 mark=0 use=1
"""


def test_reply_lost_needs_the_lbs_syn_recv_and_a_loopback_stays_a_loopback():
    topo = plan(["Local"], 2, fault="reply-drop")
    got = _derive(topo, [_rec("web-local", p, "timeout") for p in (40001, 40002, 40003)],
                  CT_DROP_NODE1, CT_DROP_VPC)
    assert [(g["lb_node"], g["failure"]) for g in got] == [
        ("node-2", "reply-lost"), ("node-1", "loopback"), ("node-2", "unknown")]
    assert got[0]["failure_at"] == "vpc: nft drop of SYN-ACKs to node-1"
    assert got[1]["failure_at"] == "vpc: LB sent it back to node-1, the client's own node"
    assert set(bundle.FAILURES) >= {g["failure"] for g in got}
    # under blackhole, a SYN that left node-1 and that the LB forwarded was not blackholed
    got = _derive(plan(["Local"], 2, fault="blackhole"), [_rec("web-local", 40003, "timeout")],
                  CT_DROP_NODE1, CT_DROP_VPC)
    assert (got[0]["lb_node"], got[0]["failure"]) == ("node-2", "unknown")


def test_without_a_fault_a_plain_failure_is_unknown():
    topo = plan(["Local"], 2)
    got = _derive(topo, [_rec("web-local", 40001, "timeout"), _rec("web-local", 40002, None)])
    assert [(g["failure"], g["failure_at"]) for g in got] == [("unknown", None), (None, None)]


def test_plan_carries_the_fault_into_rules_and_the_lb():
    topo = plan(["Local", "Cluster"], 2, proxy_mode="iptables", fault="no-endpoints")
    assert len(topo.endpoints) == 2 and topo.backends == []
    assert topo.lb_pool(topo.services[0]) == [] and len(topo.lb_pool(topo.services[1])) == 2
    assert "ip daddr 198.19.0.10 tcp dport 80 drop" in rules.lb_nft(topo)
    text = rules.iptables_mode_rules(topo, topo.nodes[0])
    assert "has no endpoints" in text and "KUBE-SEP-" not in text
    assert all(s.endpoints == [] for s in rules.generate_services(topo, topo.nodes[0]))
    assert topo.to_dict()["fault"] == "no-endpoints"
    topo = plan(["Local"], 2, fault="refused")
    assert topo.services[0].target_port == faults.REFUSED_PORT == 8081
    assert "198.18.16.10 . 8081" in rules.ipvs_standin(rules.virtual_servers(topo, topo.nodes[0]))
    assert 'oifname "node-1" tcp flags & (syn | ack) == syn | ack drop' in faults.reply_drop_nft(
        plan(["Local"], 2, fault="reply-drop"))
    assert faults.expected(plan(["Local"], 2)) is None
    assert set(faults.expected(plan(["Local"], 2, fault="blackhole"))) == {"Local", "Cluster"}


@pytest.mark.parametrize("proxy_mode, ip_mode, ok", [
    ("nftables", "VIP", False), ("iptables", "VIP", False), ("ipvs", "VIP", True),
    ("nftables", "Proxy", True), ("iptables", "Proxy", True)])
def test_blackhole_needs_traffic_that_leaves_the_node(proxy_mode, ip_mode, ok):
    if ok:
        assert plan(["Local"], 2, proxy_mode=proxy_mode, ip_mode=ip_mode, fault="blackhole")
        return
    with pytest.raises(NatlensError, match="use --proxy-mode ipvs or --ip-mode Proxy"):
        plan(["Local"], 2, proxy_mode=proxy_mode, ip_mode=ip_mode, fault="blackhole")


def test_cli_rejects_an_unknown_fault_in_one_line(tmp_path, capsys):
    assert main(["lab", "run", "--fault", "bogus", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("natlens: error: unknown fault 'bogus': use no-endpoints, refused, "
                   "blackhole, unreachable or reply-drop")
    assert not (tmp_path / "b").exists()


def test_cli_refuses_blackhole_where_the_node_dnats_the_vip(tmp_path, capsys):
    argv = ["lab", "run", "--fault", "blackhole", "--proxy-mode", "nftables", "--ip-mode", "VIP",
            "--out", str(tmp_path / "b"), "--prefix", f"nlf{PID}x-"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("natlens: error: --fault blackhole needs pod -> VIP traffic to leave "
                          "the node") and "nftables" in err and "VIP" in err
    assert not (tmp_path / "b").exists()  # refused before anything was built


def test_tally_line_counts_failures_per_mechanism():
    s = {"service": "default/web-local", "key": "198.19.0.10:80/tcp", "policy": "Local",
         "connections": 6, "failed": 6, "loopback": 2, "snat": 0,
         "by_lb_node": {"node-1": 2, "node-2": 4}, "failures": {"loopback": 2, "reply-lost": 4}}
    assert tally_line(s) == ("default/web-local 198.19.0.10:80/tcp Local: 6 connections, 6 failed, "
                             "2 loopback, 0 SNATed; LB picked node-1 2, node-2 4; failures: "
                             "loopback 2, reply-lost 4")
    assert not tally_line(dict(s, failures={})).endswith("}")
    assert "failures" not in tally_line(dict(s, failures={}))


def test_unreachable_from_the_clients_error_and_the_lbs_pick():
    topo = plan(["Local"], prefix="nlt-", proxy_mode="ipvs", fault="unreachable")
    base = {"service": "web-local", "outcome": "failed", "loopback": None, "asymmetric": None,
            "node_dnat": None, "lb_node": None}
    out = bundle.failures([dict(base, error="EHOSTUNREACH"), dict(base, error="timeout"),
                           dict(base, error="timeout", loopback=True, lb_node="node-1")], topo, "")
    assert [(r["failure"], r["failure_at"]) for r in out] == [
        ("unreachable", "vpc: unreachable route 198.18.0.12/32"),
        ("no-reply", "vpc: unreachable route 198.18.0.12/32; ICMP error rate-limited"),
        ("loopback", "vpc: LB sent it back to node-1, the client's own node")]
    with pytest.raises(NatlensError, match="--fault unreachable needs pod -> VIP traffic to leave the node"):
        plan(["Local"], prefix="nlt-", proxy_mode="nftables", ip_mode="VIP", fault="unreachable")
    assert "unreachable route 198.18.0.12/32" in faults.where(topo)
