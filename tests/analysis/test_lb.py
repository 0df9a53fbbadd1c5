"""How the load balancer picks a backend (findings.lb), each decision on hand-built journeys.

A journey row is what natlens.journeys gives (SNAT, the load balancer's pick, loopback,
outcome); a record is one capture point's view of it, with the addresses there.
"""

from __future__ import annotations

import pandas as pd
import pytest

from natlens.findings.lb import CHANCE_LIMIT, lb_findings, lb_picks, loop_mode
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.vocab import (
    ANSWERED_FROM_NODE,
    ANSWERED_VIA_LB,
    ANY_BACKEND,
    AVOIDS_SOURCE,
    DROPPED_ON_ARRIVAL,
    PROXY,
    UNKNOWN,
)

POD, NODE1, NODE2, NODE3, VIP = "198.18.16.100", "198.18.0.11", "198.18.0.12", "198.18.0.13", "198.19.0.10"
NODE_IP = {"node-1": NODE1, "node-2": NODE2, "node-3": NODE3}
SVC = f"{VIP}:80/tcp"
T = 1_800_000_000.0


def _inventory() -> Inventory:
    nodes = pd.DataFrame([{"name": n, "internal_ip": ip, "addresses": (ip,), "pod_cidr": f"198.18.{15 + i}.0/24",
                           "pod_cidrs": (f"198.18.{15 + i}.0/24",), "source": "t"}
                          for i, (n, ip) in enumerate(NODE_IP.items(), start=1)], columns=NODE_COLUMNS)
    return Inventory(nodes=nodes, pods=pd.DataFrame(columns=POD_COLUMNS),
                     services=pd.DataFrame(columns=SERVICE_COLUMNS))


INV = _inventory()


def journey(i: int, picked: str | None, *, snat: str = "yes", node: str = "node-1", outcome: str = "established",
            policy: str = "Cluster", **kw) -> dict:
    """Journey Ji from a pod on ``node``: SNATed to the node's IP (or not), sent to ``picked``."""
    row = {"journey": f"J{i}", "service": SVC, "vip": VIP, "vport": 80, "client_node": node, "client_h": POD,
           "client_p": 40000 + i, "client_is_node": False, "snat": snat,
           "snat_to": f"{NODE_IP[node]}:{50000 + i}" if snat == "yes" else None,
           "lb_backend": picked, "lb_backend_evidence": f"{picked} eth0: after the LB's DNAT to a node",
           "loopback": "yes" if picked == node else ("no" if picked else "unknown"),
           "loopback_evidence": f"sent to {picked}", "outcome": outcome, "node_dnat": "no", "policy": policy}
    row.update(kw)
    return row


def arrival(j: dict, src: str | None = None, answered: bool = False) -> dict:
    """The journey's SYN arriving at the picked node's NodePort from ``src`` (default: as it left)."""
    left = j["snat_to"].split(":")[0] if j["snat"] == "yes" else j["client_h"]
    return {"journey": j["journey"], "node": j["lb_backend"], "orig_h": src or left, "orig_p": 1,
            "resp_h": NODE_IP[j["lb_backend"]], "resp_p": 30080, "syn_ts": T, "ts": T, "ts_corr": T,
            "synack_ts": T + 1e-4 if answered else float("nan")}


def leaving(j: dict) -> dict:
    """The journey's SYN leaving its client's node for the VIP (the node is captured)."""
    return {"journey": j["journey"], "node": j["client_node"], "orig_h": POD, "orig_p": j["client_p"], "resp_h": VIP,
            "resp_p": 80, "syn_ts": T, "ts": T, "ts_corr": T, "synack_ts": float("nan")}


def find(journeys: list[dict], records: list[dict], captured: bool = True):
    """The one finding of the journeys, their client nodes captured (their SYN seen leaving) or not."""
    j = pd.DataFrame(journeys)
    r = pd.DataFrame(records + ([leaving(x) for x in journeys] if captured else []))
    (f,) = lb_findings(j, r if len(r) else None, INV)
    return f


def test_a_snated_connection_sent_back_to_its_own_node_is_any_backend_and_dropped_on_arrival():
    js = [journey(0, "node-1", outcome="timed out"), journey(1, "node-2"), journey(2, "node-2")]
    f = find(js, [arrival(j, answered=j["lb_backend"] == "node-2") for j in js])
    assert f.behaviour == ANY_BACKEND
    assert f.node_source == (1, 3)
    assert "J0: left node-1 as 198.18.0.11" in f.evidence and "sent it to node-1" in f.evidence
    assert f.loops == {DROPPED_ON_ARRIVAL: 1} and f.failure_mode == DROPPED_ON_ARRIVAL
    assert f.examples[DROPPED_ON_ARRIVAL] == "J0"


def test_a_node_source_loop_that_was_answered_where_it_arrived_is_not_called_dropped():
    js = [journey(0, "node-1", outcome="timed out")]
    f = find(js, [arrival(js[0], answered=True)])
    assert f.behaviour == ANY_BACKEND and f.loops == {UNKNOWN: 1}


def test_enough_snated_connections_never_sent_back_is_avoids_source():
    js = [journey(i, "node-2") for i in range(10)]
    f = find(js, [arrival(j, answered=True) for j in js])
    assert f.behaviour == AVOIDS_SOURCE
    assert f.chance == pytest.approx(0.5 ** 10) and f.chance < CHANCE_LIMIT
    assert f.node_source == (0, 10) and "2 nodes" in f.evidence


def test_few_snated_connections_never_sent_back_prove_nothing():
    js = [journey(i, "node-2") for i in range(3)]
    f = find(js, [arrival(j, answered=True) for j in js])
    assert f.behaviour == UNKNOWN and f.chance == pytest.approx(0.125)
    assert "no proof" in f.evidence and "12%" in f.evidence


def test_a_source_node_outside_the_pool_is_not_counted():
    """Local: the LB's pool is the nodes with endpoints; node-3's SNATed connections could not go
    back to node-3 anyway, so they say nothing about avoiding it."""
    js = [journey(i, "node-2", node="node-3", policy="Local") for i in range(12)]
    js += [journey(20, "node-1", snat="no", policy="Local", outcome="timed out")]
    f = find(js, [])
    assert f.node_source == (0, 0) and f.behaviour == UNKNOWN
    assert "12 connections came from a node's own address, but their node (node-3) may not be in" in f.evidence


def test_every_arrival_from_the_load_balancers_own_address_is_proxy_and_its_loopbacks_work():
    js = [journey(0, "node-1"), journey(1, "node-2"), journey(2, "node-1", snat="no")]
    f = find(js, [arrival(j, src=VIP, answered=True) for j in js])
    assert f.behaviour == PROXY and f.rewritten == (3, 3)
    assert f"arrived at node-1 from {VIP}" in f.evidence
    assert f.loops == {ANSWERED_VIA_LB: 2} and f.failure_mode == ANSWERED_VIA_LB


def test_arrivals_rewritten_only_sometimes_are_unknown():
    js = [journey(0, "node-2"), journey(1, "node-2")]
    f = find(js, [arrival(js[0], src=VIP), arrival(js[1])])
    assert f.behaviour == UNKNOWN and "1 of 2 arrivals" in f.evidence


def test_pod_sources_only_cannot_show_whether_it_avoids_the_source():
    js = [journey(i, "node-1" if i % 2 else "node-2", snat="no", policy="Local",
                  outcome="timed out" if i % 2 else "established") for i in range(10)]
    answer = [{"journey": j["journey"], "node": "node-1", "orig_h": POD, "orig_p": j["client_p"], "resp_h": NODE1,
               "resp_p": 30080, "syn_ts": T, "ts": T, "ts_corr": T, "synack_ts": T + 1e-4}
              for j in js if j["lb_backend"] == "node-1"]
    f = find(js, answer)
    assert f.behaviour == UNKNOWN and "from a pod's address" in f.evidence
    assert f.pod_source == (5, 10)
    assert f.loops == {ANSWERED_FROM_NODE: 5} and f.failure_mode == ANSWERED_FROM_NODE


def test_connections_the_clients_node_dnated_itself_never_reached_the_load_balancer():
    js = [journey(i, None, node_dnat="yes") for i in range(5)] + [journey(9, "node-1", outcome="timed out")]
    picks = lb_picks(pd.DataFrame(js), None, INV)
    assert list(picks["journey"]) == ["J9"]


def test_unknown_snat_arriving_from_the_nodes_own_address_is_no_rewrite():
    js = [journey(0, "node-2", snat="unknown")]
    picks = lb_picks(pd.DataFrame(js), pd.DataFrame([arrival({**js[0], "snat": "yes", "snat_to": NODE1 + ":1"})]),
                     INV)
    assert picks.iloc[0]["left_with"] is None and picks.iloc[0]["rewritten"] == "no"
    assert not picks.iloc[0]["node_source"]  # not known to have left with the node's address


def test_loop_mode_is_unknown_without_the_evidence_for_one():
    row = pd.DataFrame([journey(0, "node-1", outcome="timed out")])
    picks = lb_picks(row, None, INV)  # no record: the arrival was not captured
    assert loop_mode(picks.iloc[0]) == UNKNOWN


def test_no_journeys_no_findings():
    assert lb_findings(pd.DataFrame(columns=list(journey(0, None))), None, INV) == []


def test_the_failure_mode_is_the_commonest_decided_one_not_a_lost_packets_unknown():
    js = [journey(i, "node-1", outcome="timed out") for i in range(3)]
    f = find(js, [arrival(js[0])])  # only J0's arrival was captured: J1 and J2 are undecided
    assert f.loops == {UNKNOWN: 2, DROPPED_ON_ARRIVAL: 1} and f.failure_mode == DROPPED_ON_ARRIVAL
    assert "1 of 3 failed loopbacks (J0" in f.failure_evidence


def test_loopbacks_of_unknown_outcome_have_no_failure_mode():
    js = [journey(0, "node-1", outcome="unknown")]
    f = find(js, [arrival(js[0])])
    assert f.loops == {UNKNOWN: 1} and f.failure_mode == UNKNOWN


def test_a_source_node_without_a_capture_cannot_show_a_loop_so_nothing_is_concluded():
    """node-1 has no capture: the only picks seen are those sent to node-2, so never seeing one
    come back proves nothing."""
    js = [journey(i, "node-2") for i in range(10)] + [journey(20 + i, None) for i in range(10)]
    f = find(js, [arrival(j, answered=True) for j in js if j["lb_backend"]], captured=False)
    assert f.behaviour == UNKNOWN and "node-1 has no capture" in f.evidence


def test_picks_not_seen_for_some_node_source_connections_leave_avoids_source_unproven():
    js = [journey(i, "node-2") for i in range(10)] + [journey(20, None)]
    f = find(js, [arrival(j, answered=True) for j in js if j["lb_backend"]])
    assert f.behaviour == UNKNOWN and f.node_source == (0, 10)
    assert "but 1 more came from a node's own address" in f.evidence and "no capture shows" in f.evidence


def test_a_rewritten_loopback_that_failed_is_not_called_answered():
    js = [journey(0, "node-1", outcome="timed out"), journey(1, "node-2")]
    f = find(js, [arrival(j, src=VIP) for j in js])
    assert f.behaviour == PROXY and f.loops == {UNKNOWN: 1} and f.failure_mode == UNKNOWN


def test_picks_of_journeys_none_of_which_was_snated_read_the_pods_source():
    """No journey SNATed: ``snat_to`` is all missing, as floats in a table of Arrow text columns."""
    js = pd.DataFrame([journey(i, "node-2", snat="no") for i in range(3)]).astype({"snat_to": float})
    js = js.astype({c: "str" for c in ("journey", "service", "client_h", "snat", "loopback", "outcome")})
    picks = lb_picks(js, None, INV)
    assert list(picks["left_with"]) == [POD] * 3 and not picks["node_source"].any()
    assert "uids" not in picks and "hop_list" not in picks  # only the columns decided from are copied
