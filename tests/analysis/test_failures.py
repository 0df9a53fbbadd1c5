"""Each failure mechanism (findings.failures) on hand-built journeys: the rule that decides it,
its evidence, where the connection died and its path.

The records are what natlens.journeys returns for one journey: one row per capture point
(and interface) that saw it, with the addresses there. Times are on one clock.
"""

from __future__ import annotations

import pandas as pd
import pytest

from natlens.findings import failure_words
from natlens.findings.failures import (
    Context,
    classify_failure,
    explain_failures,
    journey_path,
    sightings,
)
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.netfilter import NodeRules
from natlens.netfilter.iptables import parse_iptables_save

POD, NODE1, NODE2, VIP = "198.18.16.100", "198.18.0.11", "198.18.0.12", "198.19.0.10"
WEB1, WEB2, CIDR = "198.18.16.10", "198.18.17.10", "198.18.16.0/20"
T = 1_800_000_000.0
IFINDEX = {"veth-client": 0, "cni0": 3, "eth0": 2}
NODE2_ADDRS = {"eth0": [(0xC612000C, 24, 4)], "cni0": [(0xC6121101, 24, 4)]}  # 198.18.0.12, 198.18.17.1


def _inventory() -> Inventory:
    nodes = pd.DataFrame([{"name": f"node-{i}", "internal_ip": f"198.18.0.1{i}", "addresses": (f"198.18.0.1{i}",),
                           "pod_cidr": f"198.18.1{5 + i}.0/24", "pod_cidrs": (f"198.18.1{5 + i}.0/24",), "source": "t"}
                          for i in (1, 2)], columns=NODE_COLUMNS)
    return Inventory(nodes=nodes, pods=pd.DataFrame(columns=POD_COLUMNS),
                     services=pd.DataFrame(columns=SERVICE_COLUMNS))


INV = _inventory()


def journey(**kw) -> pd.Series:
    row = {"journey": "J0", "client_h": POD, "client_p": 40000, "client_node": "node-1", "vip": VIP, "vport": 80,
           "service": f"{VIP}:80/tcp", "outcome": "timed out", "loopback": "no",
           "loopback_evidence": "the load balancer sent it to node-2", "client_uid": "node-1/any#0"}
    row.update(kw)
    return pd.Series(row)


def rec(n: int, capture: str, point: str | None, dst: str, dport: int, t: float, history: str = "S", *,
        src: str = POD, sport: int = 40000, synack: float | None = None, orig_dir: str | None = None,
        **kw) -> dict:
    """One connection record of journey J0 (its SYN seen at ``t``, a SYN-ACK at ``synack``)."""
    node = capture.split("/")[0]
    iface = IFINDEX.get(point, 9)  # an any capture names each interface by its index
    r = {"journey": "J0", "uid": f"{capture}#{n}", "capture": capture, "node": node, "iface": iface, "point": point,
         "orig_h": src, "orig_p": sport, "resp_h": dst, "resp_p": dport, "proto": "tcp", "history": history,
         "conn_state": "S0", "established": False, "ts": t, "ts_corr": t,
         "syn_ts": t if "S" in history else float("nan"),
         "synack_ts": synack if synack is not None else float("nan"), "orig_dir": orig_dir}
    r.update(kw)
    return r


def _leaving_client() -> list[dict]:
    """The client's SYN on its veth, the node's bridge and NIC (towards the VIP)."""
    return [rec(0, "node-1/any", "veth-client", VIP, 80, T, orig_dir="in"),
            rec(1, "node-1/any", "cni0", VIP, 80, T + 1e-5, orig_dir="in"),
            rec(2, "node-1/any", "eth0", VIP, 80, T + 2e-5, orig_dir="out")]


def decide(records: list[dict], j: pd.Series | None = None, rules: dict | None = None,
           lossy: frozenset = frozenset()):
    j = journey() if j is None else j
    r = sightings(pd.DataFrame(records), pd.DataFrame([j]))
    ctx = Context(INV, lambda node: (rules or {}).get(node), lossy)
    return classify_failure(j, r, ctx), journey_path(j, r, INV)


def test_a_loopback_says_how_it_then_failed():
    recs = _leaving_client() + [
        rec(3, "node-1/any", "eth0", NODE1, 30080, T + 3e-5, orig_dir="in"),
        rec(4, "node-1/any", "veth-client", NODE1, 30080, T + 4e-5, "^hR", synack=T + 5e-5, orig_dir="in")]
    f, path = decide(recs, journey(loopback="yes", loopback_evidence="the connection came back to node-1"))
    assert f.mechanism == "loopback"
    assert f.evidence == ("the connection came back to node-1; the SYN-ACK reached the client at node-1 veth-client "
                          f"from {NODE1}:30080, not from {VIP}:80, the address it called, and the client reset it")
    assert f.at == f"node-1 veth-client: the client got the SYN-ACK from {NODE1}:30080"
    assert path.startswith(f"SYN: client -> node-1 veth-client -> node-1 cni0 -> node-1 eth0 -> LB (DNAT to node-1 "
                           f"{NODE1}:30080) -> node-1 eth0")
    assert path.endswith("-> client, which resets it")


def test_an_answer_from_the_endpoint_on_the_clients_node_is_a_wrong_source_reply():
    recs = _leaving_client() + [
        rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5),
        rec(6, "node-2/eth0", "eth0", WEB1, 8080, T + 4e-5),
        rec(7, "node-1/any", "eth0", WEB1, 8080, T + 5e-5, orig_dir="in"),
        rec(8, "node-1/any", "veth-client", WEB1, 8080, T + 7e-5, "^hR", synack=T + 7e-5, orig_dir="in")]
    f, path = decide(recs)
    assert f.mechanism == "wrong-source-reply"
    assert f.evidence.startswith(f"the SYN-ACK reached the client at node-1 veth-client from {WEB1}:8080, not "
                                 f"from {VIP}:80, the address it called, and the client reset it; the load balancer "
                                 f"sent the SYN to node-2, which DNATed it to {WEB1}:8080 (an endpoint on the "
                                 "client's own node) without SNAT (node-2 eth0:")
    assert path == (f"SYN: client -> node-1 veth-client -> node-1 cni0 -> node-1 eth0 -> LB (DNAT to node-2 "
                    f"{NODE2}:30080) -> node-2 eth0 -> (DNAT to {WEB1}:8080) -> node-2 eth0 -> node-1 eth0 | "
                    f"SYN-ACK from {WEB1}:8080: node-1 veth-client -> client, which resets it")


def test_a_rst_from_the_server_side_is_refused():
    recs = [rec(0, "node-1/any", "veth-client", WEB1, 8081, T, "Sr", conn_state="REJ", orig_dir="in")]
    f, path = decide(recs)
    assert f.mechanism == "refused"
    assert f.evidence.startswith(f"node-1 veth-client: the SYN to {WEB1}:8081 was answered by a RST from {WEB1}:8081")
    assert f.at == f"node-1 veth-client: RST from {WEB1}:8081"
    assert "RST from" in path


def test_the_client_resetting_an_answer_from_the_vip_is_reset_by_client():
    recs = [rec(0, "node-1/any", "veth-client", VIP, 80, T, "ShR", synack=T + 1e-4, orig_dir="in")]
    f, _ = decide(recs)
    assert f.mechanism == "reset-by-client" and f.at == "node-1 veth-client: the client's RST"


def test_an_answer_seen_on_another_node_that_never_reaches_the_client_is_reply_lost():
    recs = _leaving_client() + [rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5, "Sh", synack=T + 4e-5)]
    f, path = decide(recs)
    assert f.mechanism == "reply-lost"
    assert f.at == "between node-2 eth0 and the client's side (node-1 veth-client): the SYN-ACK"
    assert f"the SYN-ACK from {NODE2}:30080 was last seen at node-2 eth0" in f.evidence
    assert f"SYN-ACK from {NODE2}:30080: node-2 eth0" in path and "-> client" not in path.split("|")[1]


def test_an_answer_missing_where_the_capture_lost_packets_is_unknown_not_lost():
    recs = _leaving_client() + [rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5, "Sh", synack=T + 4e-5)]
    f, _ = decide(recs, lossy=frozenset({"node-1/any"}))
    assert f.mechanism == "unknown" and "node-1/any lost packets" in f.evidence


def test_a_syn_that_left_the_node_unanswered_is_no_reply_beyond_it():
    f, path = decide(_leaving_client())
    assert f.mechanism == "no-reply"
    assert f.at == f"SYN last seen at node-1 eth0 ({POD}:40000 -> {VIP}:80)"
    assert "it left node-1 there and no capture saw it again" in f.evidence
    assert path == "SYN: client -> node-1 veth-client -> node-1 cni0 -> node-1 eth0"


def test_no_reply_where_a_capture_lost_packets_is_unknown():
    f, _ = decide(_leaving_client(), lossy=frozenset({"node-1/any"}))
    assert f.mechanism == "unknown" and "an answer may be one it lost" in f.evidence


NO_ENDPOINTS = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/web:http has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""


def _no_endpoints_node2() -> NodeRules:
    """kube-proxy's iptables-mode rules on node-2 for a Service whose endpoints are all gone."""
    return NodeRules(parse_iptables_save(NO_ENDPOINTS), addresses=NODE2_ADDRS, name="node-2")


def test_a_syn_a_nodes_rules_reject_is_dropped_by_rule_with_the_rule():
    recs = _leaving_client() + [rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5)]
    f, _ = decide(recs, rules={"node-2": _no_endpoints_node2()})
    assert f.mechanism == "dropped-by-rule", f
    assert f"node-2's rules, asked about {POD}:40000 -> {NODE2}:30080 in via eth0: dropped by " in f.evidence
    assert "REJECT" in f.evidence and "(kube-proxy's reject of a Service that has no endpoints)" in f.evidence
    assert f.at == "node-2 eth0: dropped by node-2's rules"


def test_the_same_syn_without_the_nodes_dumps_is_no_reply():
    recs = _leaving_client() + [rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5)]
    f, _ = decide(recs)
    assert f.mechanism == "no-reply" and f.at == f"SYN last seen at node-2 eth0 ({POD}:40000 -> {NODE2}:30080)"


def test_a_blackhole_route_on_the_node_is_named_in_no_reply():
    rules = NodeRules(parse_iptables_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"),
                      addresses={"eth0": [(0xC612000B, 24, 4)], "cni0": [(0xC6121001, 24, 4)]}, name="node-1")
    rules.reject_routes = [(0xC613000A, 32, "blackhole", 4)]  # 198.19.0.10/32
    recs = _leaving_client()[:2]  # seen on the veth and the bridge, never on the NIC
    f, _ = decide(recs, rules={"node-1": rules})
    assert f.mechanism == "no-reply"
    assert f"node-1's routes drop it: blackhole {VIP}/32 (ip route)" in f.evidence
    assert f.at == f"SYN last seen at node-1 cni0 ({POD}:40000 -> {VIP}:80)"


def _icmp(row: dict, src: str, icmp_type: int = 3, code: int = 3, quotes: str = "orig") -> dict:
    return dict(row, icmp_errors=1, icmp_ts=row["ts"] + 1e-4, icmp_type=icmp_type, icmp_code=code, icmp_src=src,
                icmp_quotes=quotes)


def test_an_icmp_port_unreachable_from_a_node_whose_rules_reject_is_dropped_by_rule():
    recs = _leaving_client() + [_icmp(rec(5, "node-2/eth0", "eth0", NODE2, 30080, T + 3e-5), NODE2)]
    f, _ = decide(recs, rules={"node-2": _no_endpoints_node2()})
    assert f.mechanism == "dropped-by-rule"
    assert f.evidence.startswith(f"ICMP port unreachable from {NODE2} about the client's packet {POD}:40000 -> "
                                 f"{NODE2}:30080, seen at node-2 eth0; node-2's rules")


def test_an_icmp_error_from_a_router_is_unreachable():
    recs = [_icmp(r, "198.18.0.1", 3, 1) if r["point"] == "veth-client" else r for r in _leaving_client()]
    f, _ = decide(recs)
    assert f.mechanism == "unreachable"
    assert f.evidence.startswith("ICMP host unreachable from 198.18.0.1 about the client's packet")
    assert f.at == "node-1 veth-client: ICMP host unreachable from 198.18.0.1"


@pytest.mark.parametrize("icmp_type, code", [(3, 4), (0, 0)])
def test_icmp_that_does_not_end_a_connect_is_not_a_failure_cause(icmp_type, code):
    """Fragmentation needed (3/4) only lowers the path MTU; an echo reply is no error."""
    recs = [_icmp(r, "198.18.0.1", icmp_type, code) if r["point"] == "veth-client" else r for r in _leaving_client()]
    assert decide(recs)[0].mechanism == "no-reply"


def test_an_icmp_error_about_the_servers_packet_is_not_the_clients():
    recs = [_icmp(r, "198.18.0.1", quotes="resp") if r["point"] == "veth-client" else r for r in _leaving_client()]
    assert decide(recs)[0].mechanism == "no-reply"


def test_no_syn_seen_and_no_record_are_unknown_with_why():
    f, _ = decide([rec(0, "node-1/any", "veth-client", VIP, 80, T, "A", orig_dir="in")])
    assert f.mechanism == "unknown" and "no capture point shows the client's SYN" in f.evidence
    j = journey()
    r = sightings(pd.DataFrame(columns=["journey"]), pd.DataFrame([j]))
    assert classify_failure(j, r, Context(INV, lambda n: None)).mechanism == "unknown"


def test_only_failed_journeys_get_a_mechanism_and_the_counts_add_up():
    js = pd.DataFrame([journey(), journey(journey="J1", outcome="established"),
                       journey(journey="J2", outcome="reset")])
    recs = pd.DataFrame(_leaving_client() + [dict(r, journey="J1") for r in _leaving_client()]
                        + [rec(0, "node-1/any", "veth-client", WEB1, 8081, T, "Sr", conn_state="REJ", journey="J2",
                               uid="node-1/any#9", orig_dir="in")])
    out = explain_failures(js, recs, Context(INV, lambda n: None))
    assert out["failure"].tolist() == ["no-reply", None, "refused"]
    assert out.loc[1].isna().all()
    s = failure_words.summary(pd.concat([js, out], axis=1))
    assert s["failed"] == 2 and s["by_mechanism"] == {"refused": 1, "no-reply": 1}
    assert s["journeys"] == {"refused": ["J2"], "no-reply": ["J0"]} and s["unexplained"] == 0
    assert failure_words.tally(pd.concat([js, out], axis=1)) == "1 refused by the server (RST), 1 never answered"


def test_the_tally_puts_the_commonest_mechanism_first():
    js = pd.DataFrame([journey(journey=f"J{i}", failure=m, failure_evidence="x", failure_at="y")
                       for i, m in enumerate(["wrong-source-reply", "loopback", "loopback", "unknown"])])
    assert failure_words.tally(js) == ("2 load-balancer loopbacks, 1 answer from the wrong source, 1 whose cause "
                                       "the captures cannot show")
    assert failure_words.summary(js)["unexplained_why"] == [{"journey": "J3", "why": "x"}]


def test_a_node_source_loopback_is_dropped_on_arrival_from_the_nodes_own_address():
    """An LB that sends node-1's SNATed connection back to node-1: the SYN arrives from node-1's own
    address, which the kernel drops (a martian source)."""
    j = journey(loopback="yes", loopback_evidence="the connection came back to its own node node-1")
    f, _ = decide([*_leaving_client(), rec(3, "node-1/eth0", "eth0", NODE1, 30080, T + 1e-3, src=NODE1,
                                           sport=50000, orig_dir="in")], j)
    assert f.mechanism == "loopback"
    assert "it came back to node-1 from node-1's own address 198.18.0.11, which the kernel drops on arrival" \
        in f.evidence
    assert f.at == "SYN last seen at node-1 eth0 (198.18.0.11:50000 -> 198.18.0.11:30080)"


def test_a_pod_source_loopback_without_an_answer_is_not_called_a_martian():
    j = journey(loopback="yes", loopback_evidence="the connection came back to its own node node-1")
    f, _ = decide([*_leaving_client(), rec(3, "node-1/eth0", "eth0", NODE1, 30080, T + 1e-3, orig_dir="in")], j)
    assert f.evidence.endswith("; no answer reached the client") and "martian" not in f.evidence
