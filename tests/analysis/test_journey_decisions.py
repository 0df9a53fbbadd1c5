"""Each journey decision on hand-built records: no captures, only the rule and its evidence.

A record table here is what natlens.journeys.client.place_records produces: one row per
connection record, with its journey ``jn``, time ``_t``, where it sits (pre_lb,
on_client, egress, from_client) and the journey's client as ``j_*`` columns.
"""

from __future__ import annotations

import pandas as pd
import pytest

from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.journeys import (
    Decision,
    classify_lb_backend,
    classify_loopback,
    classify_node_dnat,
    classify_outcome,
    classify_snat,
    snat_from_conntrack,
)
from natlens.netfilter.conntrack import parse_conntrack

POD, NODE1, NODE2, VIP = "198.18.16.100", "198.18.0.11", "198.18.0.12", "198.19.0.10"
INV = Inventory(
    nodes=pd.DataFrame([{"name": "node-1", "internal_ip": NODE1, "addresses": [NODE1],
                         "pod_cidr": "198.18.16.0/24", "pod_cidrs": ["198.18.16.0/24"], "source": "t"},
                        {"name": "node-2", "internal_ip": NODE2, "addresses": [NODE2],
                         "pod_cidr": "198.18.17.0/24", "pod_cidrs": ["198.18.17.0/24"], "source": "t"}],
                       columns=NODE_COLUMNS),
    pods=pd.DataFrame([{"namespace": "d", "name": "client", "ip": POD, "ips": [POD], "node": "node-1",
                        "host_network": False, "source": "t"}], columns=POD_COLUMNS),
    services=pd.DataFrame(columns=SERVICE_COLUMNS))
NODE_OF = {NODE1: "node-1", NODE2: "node-2", POD: "node-1", "198.18.17.10": "node-2",
           "198.18.16.10": "node-1"}


def rec(jn, t, node, capture, src, dst, *, client=(POD, 40000), client_node="node-1", egress=False,
        history="S", synack_ts=None):
    """One placed record: src/dst as "addr:port"."""
    (sh, sp), (dh, dp) = (x.rsplit(":", 1) for x in (src, dst))
    ch, cp = client
    client_ip = {"node-1": NODE1, "node-2": NODE2}.get(client_node)
    return {"jn": jn, "_t": t, "node": node, "capture": f"{node}/{capture}", "orig_h": sh,
            "orig_p": int(sp), "resp_h": dh, "resp_p": int(dp), "resp_node": NODE_OF.get(dh),
            "resp_is_node": dh in (NODE1, NODE2), "synack_ts": synack_ts, "history": history,
            "orig_ip_of_node": NODE_OF.get(sh) if sh in (NODE1, NODE2) else None,
            "pre_lb": dh == VIP, "on_client": node == client_node, "egress": egress,
            "from_client": (sh, int(sp)) == (ch, cp), "hop": f"{node}/{capture}: {src} -> {dst}",
            "j_client_h": ch, "j_client_p": cp, "j_client_node": client_node, "j_client_node_ip": client_ip,
            "j_client_is_node": ch in (NODE1, NODE2)}


def clients(*rows):
    """The client table: (jn, client_h, client_p, client_node)."""
    df = pd.DataFrame([{"jn": jn, "client_h": h, "client_p": p, "client_node": n,
                        "client_node_ip": {"node-1": NODE1, "node-2": NODE2}.get(n),
                        "client_is_node": h in (NODE1, NODE2), "vip": VIP, "vport": 80, "proto": "tcp"}
                       for jn, h, p, n in rows])
    return df.set_index("jn")


def records(*rows):
    return pd.DataFrame(rows)


# --- SNAT ------------------------------------------------------------------------------
def test_snat_no_when_the_pod_ip_leaves_the_nic():
    r = records(rec(0, 1.0, "node-1", "any", f"{POD}:40000", f"{VIP}:80"),
                rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True))
    d = classify_snat(r, clients((0, POD, 40000, "node-1")), INV)
    assert d.value[0] == "no" and "left the node's NIC with the pod IP" in d.evidence[0]
    assert "node-1/eth0" in d.evidence[0] and d.detail["snat_to"].isna()[0]


def test_pod_ip_seen_only_inside_the_node_is_not_evidence_of_no_snat():
    # the pod-side copy alone: it may still be SNATed on the way out
    r = records(rec(0, 1.0, "node-1", "any", f"{POD}:40000", f"{VIP}:80"))
    d = classify_snat(r, clients((0, POD, 40000, "node-1")), INV)
    assert d.value[0] == "unknown"
    assert d.evidence[0] == "no capture shows the connection after it left the client's node"


def test_snat_yes_to_the_node_ip_with_the_address_it_left_with():
    r = records(rec(0, 1.0, "node-1", "any", f"{POD}:40000", f"{VIP}:80"),
                rec(0, 1.0, "node-1", "eth0", f"{NODE1}:23022", f"{VIP}:80", egress=True))
    d = classify_snat(r, clients((0, POD, 40000, "node-1")), INV)
    assert (d.value[0], d.detail["snat_to"][0]) == ("yes", f"{NODE1}:23022")
    assert "left with the node IP" in d.evidence[0]


def test_snat_seen_on_the_backend_node_when_the_client_node_has_no_egress_capture():
    r = records(rec(0, 1.0, "node-1", "any", f"{POD}:40000", f"{VIP}:80"),
                rec(0, 1.1, "node-2", "eth0", f"{NODE1}:23022", f"{NODE2}:30080"))
    d = classify_snat(r, clients((0, POD, 40000, "node-1")), INV)
    assert d.value[0] == "yes" and "arrived from the client node's IP" in d.evidence[0]


def test_a_node_ip_source_is_unknown_not_host_network_without_evidence():
    r = records(rec(0, 1.0, "node-1", "eth0", f"{NODE1}:5000", f"{VIP}:80", client=(NODE1, 5000),
                    egress=True))
    d = classify_snat(r, clients((0, NODE1, 5000, "node-1")), INV)
    assert d.value[0] == "unknown" and "host-network client" in d.evidence[0]


def test_a_source_no_inventory_knows_is_unknown_and_says_so():
    r = records(rec(0, 1.0, "node-x", "eth0", "203.0.113.9:5000", f"{VIP}:80",
                    client=("203.0.113.9", 5000), client_node=None, egress=True))
    d = classify_snat(r, clients((0, "203.0.113.9", 5000, None)), INV)
    assert d.value[0] == "unknown" and "neither a known pod IP nor a node IP" in d.evidence[0]


CONNTRACK_SNAT = (f"tcp      6 119 TIME_WAIT src={POD} dst={VIP} sport=40000 dport=80 src={VIP} "
                  f"dst={NODE1} sport=80 dport=23022 [ASSURED] mark=0 use=1\n")


def test_conntrack_names_the_pod_and_leaves_the_input_decision_alone():
    r = records(rec(0, 1.0, "node-1", "eth0", f"{NODE1}:23022", f"{VIP}:80", client=(NODE1, 23022),
                    egress=True))
    cl = clients((0, NODE1, 23022, "node-1"))
    before = classify_snat(r, cl, INV)
    after, fixes = snat_from_conntrack(before, cl, {"node-1": ("n1/conntrack.txt",
                                                               parse_conntrack(CONNTRACK_SNAT))})
    assert before.value[0] == "unknown"  # a new decision, not a mutated one
    assert (after.value[0], after.detail["snat_to"][0]) == ("yes", f"{NODE1}:23022")
    assert after.evidence[0].startswith("n1/conntrack.txt:1: ")
    assert fixes.loc[0].tolist() == [POD, 40000, False]
    assert cl.at[0, "client_h"] == NODE1  # the client table is not rewritten either


def test_conntrack_entries_naming_two_clients_decide_nothing():
    other = CONNTRACK_SNAT.replace(f"src={POD}", "src=198.18.16.101", 1)
    r = records(rec(0, 1.0, "node-1", "eth0", f"{NODE1}:23022", f"{VIP}:80", client=(NODE1, 23022),
                    egress=True))
    cl = clients((0, NODE1, 23022, "node-1"))
    d, fixes = snat_from_conntrack(classify_snat(r, cl, INV), cl,
                                   {"node-1": ("ct.txt", parse_conntrack(CONNTRACK_SNAT + other))})
    assert d.value[0] == "unknown" and fixes.empty
    assert d.evidence[0].startswith("ct.txt:1,2: ") and "name different clients" in d.evidence[0]


# --- the load balancer's pick and loopback -----------------------------------------------
def _lb_records():
    return records(
        rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True),
        rec(0, 1.1, "node-1", "any", f"{POD}:40000", "198.18.16.10:8080"),  # endpoint after DNAT
        rec(0, 1.05, "node-1", "eth0", f"{POD}:40000", f"{NODE1}:30080"),  # came back: NodePort
        rec(1, 2.0, "node-1", "eth0", f"{POD}:40001", f"{VIP}:80", client=(POD, 40001), egress=True),
        rec(1, 2.1, "node-2", "eth0", f"{POD}:40001", f"{NODE2}:30080", client=(POD, 40001)))


def test_lb_backend_prefers_the_node_the_lb_dnat_named_over_an_endpoint():
    cl = clients((0, POD, 40000, "node-1"), (1, POD, 40001, "node-1"))
    d = classify_lb_backend(_lb_records(), cl)
    assert d.value.tolist() == ["node-1", "node-2"]
    assert "30080 (after the LB's DNAT to a node)" in d.evidence[0]


EP1, EP2 = "198.18.16.10:8080", "198.18.17.10:8080"  # endpoints on node-1 and node-2


@pytest.mark.parametrize(("src", "dst", "want"), [
    (f"{NODE2}:30001", EP1, "node-2"),  # node-2 got it and forwarded it to node-1's endpoint, SNATed
    (f"{POD}:40000", EP2, "node-2"),  # the client's address kept: nobody forwarded it
    (f"{NODE1}:30001", EP1, "node-1"),  # the client node's IP, endpoint on the client's node
    (f"{NODE1}:30001", EP2, None),  # the client node's IP, endpoint elsewhere: either fits
])
def test_lb_backend_from_the_endpoint_record_alone(src, dst, want):
    r = records(rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True),
                rec(0, 1.1, "node-x", "any", src, dst))
    d = classify_lb_backend(r, clients((0, POD, 40000, "node-1")))
    assert (None if pd.isna(d.value[0]) else d.value[0]) == want
    assert pd.isna(d.evidence[0]) == (want is None)


def test_loopback_yes_no_from_the_backend():
    r, cl = _lb_records(), clients((0, POD, 40000, "node-1"), (1, POD, 40001, "node-1"))
    d = classify_loopback(r, cl, classify_lb_backend(r, cl))
    assert d.value.tolist() == ["yes", "no"]
    assert d.evidence[0].startswith("the connection came back to its own node node-1: ")
    assert d.evidence[1].startswith("the load balancer sent it to node-2: ")


def test_no_loopback_when_the_syn_left_and_never_came_back():
    r = records(rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True))
    cl = clients((0, POD, 40000, "node-1"))
    d = classify_loopback(r, cl, classify_lb_backend(r, cl))
    assert d.value[0] == "no" and "no copy came back to the node" in d.evidence[0]


def test_a_lossy_capture_cannot_show_that_no_copy_came_back():
    r = records(rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True))
    cl = clients((0, POD, 40000, "node-1"))
    d = classify_loopback(r, cl, classify_lb_backend(r, cl), lossy={"node-1/eth0"})
    assert d.value[0] == "unknown"
    assert d.evidence[0].endswith("but that capture lost packets: the copy may be one it lost")


def test_a_copy_that_came_back_to_an_unknown_address_leaves_loopback_unknown():
    r = records(rec(0, 1.0, "node-1", "eth0", f"{POD}:40000", f"{VIP}:80", egress=True),
                rec(0, 1.1, "node-1", "eth0", f"{POD}:40000", "198.18.99.9:30080"))
    cl = clients((0, POD, 40000, "node-1"))
    d = classify_loopback(r, cl, classify_lb_backend(r, cl))
    assert d.value[0] == "unknown" and "cannot tell whether to this node's NodePort" in d.evidence[0]


def test_loopback_unknown_when_the_client_node_is_unknown():
    r = records(rec(0, 1.0, "node-9", "eth0", f"{POD}:40000", f"{VIP}:80", client_node=None))
    cl = clients((0, POD, 40000, None))
    d = classify_loopback(r, cl, Decision(pd.Series([None], index=cl.index), pd.Series([None], index=cl.index)))
    assert d.value[0] == "unknown" and "the client's node is not known" in d.evidence[0]


# --- outcome -----------------------------------------------------------------------------
def client_record(jn=0, *, state="S1", history="ShAD", end="fin", established=True, syns=0,
                  proto="tcp", resp_pkts=3, orig_pkts=3, uid="n1/eth0#0", capture="eth0", egress=True,
                  dst=f"{VIP}:80"):
    """A placed record of the client's connection that is also the client's own record."""
    row = rec(jn, 1.0 + jn, "node-1", capture, f"{POD}:{40000 + jn}", dst, client=(POD, 40000 + jn),
              egress=egress, history=history)
    row.update({"uid": uid, "conn_state": state, "end": end, "established": established,
                "syn_retransmits": syns, "proto": proto, "resp_pkts": resp_pkts, "orig_pkts": orig_pkts,
                "syn_ts": 1.0 + jn, "point": None})
    return row


def outcome(*recs, placed=None):
    """classify_outcome on records; the client's own record is the first one of each journey."""
    r = pd.DataFrame(placed if placed is not None else recs)
    own = pd.DataFrame(recs).drop_duplicates("jn").set_index("jn")
    cl = clients(*[(j, POD, 40000 + j, "node-1") for j in own.index])
    cl["client_uid"] = own["uid"]
    return classify_outcome(r, cl, own)


@pytest.mark.parametrize(("kw", "want"), [
    ({}, "established"),
    ({"state": "REJ", "history": "Sr", "end": "rst", "established": False, "resp_pkts": 1}, "reset"),
    ({"state": "S0", "history": "S", "end": "timeout", "established": False, "resp_pkts": 0}, "timed out"),
    ({"state": "S0", "history": "S", "end": "capture-end", "established": False, "resp_pkts": 0,
      "syns": 2}, "unknown"),
    ({"proto": "udp", "state": "SF", "history": "Dd", "end": "timeout", "established": False}, "answered"),
    ({"proto": "udp", "state": "S0", "history": "D", "end": "timeout", "established": False,
      "resp_pkts": 0}, "unanswered"),
    ({"proto": "udp", "state": "S0", "history": "D", "end": "capture-end", "established": False,
      "resp_pkts": 0}, "unknown"),
])
def test_outcome_from_the_client_record(kw, want):
    assert outcome(client_record(**kw)).value[0] == want


CUT = {"state": "S0", "history": "S", "end": "capture-end", "established": False, "resp_pkts": 0}


def test_a_definite_observation_elsewhere_beats_a_record_the_capture_cut():
    # the client's own record (the pod's veth in `any`) ends with the capture; the NIC saw the rest
    own = client_record(capture="any", egress=False, **CUT)
    nic = client_record(uid="n1/eth0#1", state="SF", history="ShADadFf")
    d = outcome(own, placed=[own, nic])
    assert d.value[0] == "established"
    assert d.evidence[0].startswith("node-1/eth0: SF ShADadFf")
    assert "(the client's own record: node-1/any: S0 S, 1 SYN(s), ended unknown (capture ended))" in d.evidence[0]


def test_client_data_or_fin_shows_it_connected_though_the_ack_was_lost():
    own = client_record(capture="any", egress=False, **CUT)
    lossy = client_record(uid="n1/eth0#1", state="OTH", history="SDF", established=False, end="fin")
    assert outcome(own, placed=[own, lossy]).value[0] == "established"


def test_silence_at_one_point_does_not_beat_a_handshake_seen_at_another():
    own = client_record(capture="any", egress=False)
    quiet = client_record(uid="n1/eth0#1", state="S0", history="S", end="timeout", established=False)
    d = outcome(own, placed=[own, quiet])
    assert d.value[0] == "established" and d.evidence[0].startswith("node-1/any: S1")


def test_a_handshake_and_a_refused_syn_contradict_and_stay_unknown():
    own = client_record(capture="any", egress=False)
    refused = client_record(uid="n1/eth0#1", state="REJ", history="Sr", end="rst", established=False)
    d = outcome(own, placed=[own, refused])
    assert d.value[0] == "unknown"
    assert d.evidence[0].startswith("the records disagree: node-1/any: S1 ShAD")
    assert "node-1/eth0: REJ Sr, 1 SYN(s), ended rst (the SYN refused)" in d.evidence[0]


def test_an_unknown_outcome_says_what_the_client_record_showed():
    d = outcome(client_record(**CUT))
    assert d.value[0] == "unknown"
    assert d.evidence[0] == ("node-1/eth0: S0 S, 1 SYN(s), ended unknown (capture ended); no capture "
                             "point shows how it ended")


def test_retries_answered_from_the_wrong_source_are_timed_out_even_if_the_capture_ended():
    cr = client_record(syns=2, **CUT)
    wrong = rec(0, 1.0, "node-1", "any", f"{POD}:40000", f"{NODE1}:30080", history="ShR")
    wrong.update({"uid": "n1/any#5", "conn_state": "RSTOS0", "end": "rst", "established": False,
                  "syn_retransmits": 0, "proto": "tcp", "resp_pkts": 1, "orig_pkts": 1, "syn_ts": None,
                  "point": "veth1"})
    d = outcome(cr, placed=[cr, wrong])
    assert d.value[0] == "timed out"
    assert d.evidence[0].endswith("answered from the wrong address and reset by the client")
    assert "3 SYN(s), ended unknown (capture ended)" in d.evidence[0]


def test_a_record_without_a_syn_does_not_claim_one_nor_decide():
    # mid-stream packets joined on the 5-tuple may be an older connection's: they decide nothing
    mid = client_record(state="OTH", history="^fF", established=False, end="fin")
    mid["syn_ts"] = None
    d = outcome(mid)
    assert d.value[0] == "unknown"
    assert d.evidence[0] == "node-1/eth0: OTH ^fF, no SYN seen, ended fin; no capture point shows how it ended"


def test_a_journey_without_the_client_record_has_an_unknown_outcome():
    d = outcome(client_record(uid=None, **CUT))
    assert d.value[0] == "unknown"


def _refusal(jn=0, *, uid="n1/any#7", dst="198.18.17.10:8080", point="cni0"):
    """The client's own RST to a wrong answer, seen alone on the pod bridge after NAT (br_netfilter)."""
    row = rec(jn, 1.2 + jn, "node-1", "any", f"{POD}:{40000 + jn}", dst, history="R")
    row.update({"uid": uid, "conn_state": "RSTO", "end": "rst", "established": False, "syn_retransmits": 0,
                "proto": "tcp", "resp_pkts": 0, "orig_pkts": 1, "syn_ts": None, "point": point})
    return row


def _wrong_answer(jn=0, *, uid="n1/eth0#4"):
    """A SYN-ACK from the endpoint the client never called, reset by the client."""
    row = rec(jn, 1.1 + jn, "node-1", "eth0", f"{POD}:{40000 + jn}", "198.18.17.10:8080", history="ShRh")
    row.update({"uid": uid, "conn_state": "RSTO", "end": "rst", "established": False, "syn_retransmits": 1,
                "proto": "tcp", "resp_pkts": 2, "orig_pkts": 4, "syn_ts": 1.0 + jn, "point": "eth0"})
    return row


def test_the_clients_own_rst_refusing_an_answer_is_not_a_reset():
    # nftables mode: the looped-back SYN went to web-2 on another node; the pod bridge shows the
    # client's RST to it in a record of its own. The client's record (2 SYNs, no answer) decides.
    own = client_record(syns=1, capture="any", egress=False, **CUT)
    d = outcome(own, placed=[own, _wrong_answer(), _refusal()])
    assert d.value[0] == "timed out"
    assert d.evidence[0] == ("node-1/any: S0 S, 2 SYN(s), ended unknown (capture ended); each SYN was "
                             "answered from the wrong address and reset by the client")


def test_a_client_refusal_alone_leaves_the_outcome_unknown():
    own = client_record(syns=1, capture="any", egress=False, **CUT)
    d = outcome(own, placed=[own, _refusal()])
    assert d.value[0] == "unknown"
    assert d.evidence[0].endswith("no capture point shows how it ended")


def test_a_responders_rst_after_the_syn_is_still_a_reset():
    own = client_record(syns=1, capture="any", egress=False, **CUT)
    rst = client_record(uid="n1/eth0#1", state="RSTR", history="Sr", end="rst", established=False)
    d = outcome(own, placed=[own, rst])
    assert d.value[0] == "reset" and d.evidence[0].startswith("node-1/eth0: RSTR Sr")


def test_client_refusals_are_the_records_with_only_client_rsts_before_a_connection():
    from natlens.journeys.evidence import client_refusals
    t = pd.DataFrame({"history": ["R", "ShR", "ShRh", "Sr", "ShADaR", "SR", "S", None],
                      "established": [False, False, False, False, True, False, False, False],
                      "proto": ["tcp"] * 7 + ["udp"]})
    assert client_refusals(t).tolist() == [True, True, True, False, False, True, False, False]


def test_a_point_that_missed_the_first_syn_cannot_show_the_syns_stopping():
    # the retransmitted SYN alone reached web-1's bridge port: that record's "timeout" counts from
    # the retransmission as if it were the first SYN; the client's own record shows 2 SYNs
    own = client_record(syns=1, capture="any", egress=False, **CUT)
    late = client_record(uid="n1/any#94", capture="any", egress=False, state="S0", history="S",
                         end="timeout", established=False, resp_pkts=0, dst="198.18.16.10:8080")
    late.update({"syn_retransmits": 0, "point": "cni0", "pre_lb": False})
    assert outcome(own, placed=[own, late]).value[0] == "unknown"
    d = outcome(own, placed=[own, late, _wrong_answer()])
    assert d.value[0] == "timed out" and d.evidence[0].startswith("node-1/any: S0 S, 2 SYN(s)")


def test_missed_syns_compares_within_the_journey():
    from natlens.journeys.evidence import missed_syns
    t = pd.DataFrame({"jn": [0, 0, 0, 1], "syn_retransmits": [1, 0, 0, 0],
                      "syn_ts": [1.0, 2.0, None, 1.0]})
    assert missed_syns(t).tolist() == [False, True, False, False]


# --- node DNAT: the client's node DNATed the VIP itself (ipMode VIP) -------------------------
WEB1, WEB2 = "198.18.16.10", "198.18.17.10"


def placed(jn, t, capture, src, dst, *, point, egress=False, history="ShADadfF", end=9.0):
    """A record of an `any` capture of node-1 at `point`, with the times _nic_watched reads."""
    row = rec(jn, t, "node-1", capture, src, dst, egress=egress, history=history, client=(POD, 40000 + jn))
    row.update({"point": point, "ts": t, "last_ts": end, "_has_syn": True})
    return row


def _nic(jn=9, t=0.5):
    """Another journey's packet on node-1's NIC: the capture of it ran from t."""
    return placed(jn, t, "any", f"{POD}:{40000 + jn}", f"{VIP}:80", point="eth0", egress=True)


def _vip_dnat(jn, endpoint, *, src=None):
    """pod -> VIP at the pod's veth, then -> endpoint after the node's DNAT (at cni0 and past it)."""
    src = src or f"{POD}:{40000 + jn}"
    local = endpoint == WEB1
    return [placed(jn, 1.0 + jn, "any", f"{POD}:{40000 + jn}", f"{VIP}:80", point=None),
            placed(jn, 1.0 + jn, "any", f"{POD}:{40000 + jn}", f"{endpoint}:8080", point="cni0"),
            placed(jn, 1.0 + jn, "any", src, f"{endpoint}:8080", point=None if local else "eth0",
                   egress=not local)]


def _dnat_clients(*jns):
    return clients(*[(j, POD, 40000 + j, "node-1") for j in jns])


def test_a_vip_dnated_on_the_client_node_is_node_dnat_and_no_loopback():
    r = records(*_vip_dnat(0, WEB1), *_vip_dnat(1, WEB2), _nic())
    cl = _dnat_clients(0, 1, 9)
    d = classify_node_dnat(r, cl)
    assert d.value[[0, 1, 9]].tolist() == ["yes", "yes", "no"]
    assert "the client's node DNATed the VIP to an endpoint itself" in d.evidence[0]
    assert "(the SYN to the VIP left the node's NIC: the load balancer got it)" in d.evidence[9]
    backend = classify_lb_backend(r, cl, d)
    assert backend.value[0] is None and backend.evidence[0].startswith("the load balancer never got it: ")
    loop = classify_loopback(r, cl, backend, node_dnat=d)
    assert loop.value[0] == "no" and loop.evidence[0].startswith("it never left its node: ")
    # without node_dnat the local endpoint reads as the LB's pick of the client's own node
    assert classify_loopback(r, cl, classify_lb_backend(r, cl)).value[0] == "yes"


def test_no_node_dnat_claimed_without_a_clean_capture_of_the_nic():
    r = records(*_vip_dnat(0, WEB1))  # an `any` capture with no record at the NIC
    assert classify_node_dnat(r, _dnat_clients(0)).value[0] == "unknown"
    r = records(*_vip_dnat(0, WEB1), _nic())
    d = classify_node_dnat(r, _dnat_clients(0, 9), lossy={"node-1/any"})  # the NIC's capture lost packets
    assert d.value[0] == "unknown" and "no capture of the client node's NIC" in d.evidence[0]


def test_a_loopback_is_not_node_dnat():
    # the SYN left towards the VIP and came back to the node's NodePort, then went to web-1
    r = records(placed(0, 1.0, "any", f"{POD}:40000", f"{VIP}:80", point="eth0", egress=True),
                placed(0, 1.1, "any", f"{POD}:40000", f"{NODE1}:30080", point="eth0"),
                placed(0, 1.1, "any", f"{POD}:40000", f"{WEB1}:8080", point="cni0"))
    d = classify_node_dnat(r, _dnat_clients(0))
    assert d.value[0] == "no"



def test_the_nic_capture_ran_until_its_last_packet_of_any_kind():
    # node-1/any lost packets; node-1/eth0's last connection packet is at 0.6, before the journey,
    # but the capture ran on (an ICMP echo at 12.0 closes it): the SYN would have been seen leaving
    nic = placed(9, 0.5, "eth0", f"{POD}:40009", f"{VIP}:80", point="eth0", egress=True, end=0.6)
    r = records(*_vip_dnat(0, WEB1), nic)
    cl = _dnat_clients(0, 9)
    lossy = {"node-1/any"}
    assert classify_node_dnat(r, cl, lossy).value[0] == "unknown"
    d = classify_node_dnat(r, cl, lossy, spans={"node-1/eth0": (0.4, 12.0)})
    assert d.value[0] == "yes" and d.evidence[0].startswith("node-1/any: ")
    assert classify_node_dnat(r, cl, lossy, spans={"node-1/eth0": (0.4, 0.9)}).value[0] == "unknown"


def test_a_local_endpoint_names_no_pick_while_node_dnat_is_unknown():
    # the NIC's capture lost packets: whether the SYN left is unknown, so web-1 on the client's
    # node may be the node's own DNAT as well as the load balancer's pick of that node
    r = records(*_vip_dnat(0, WEB1), *_vip_dnat(1, WEB2), _nic())
    cl = _dnat_clients(0, 1, 9)
    d = classify_node_dnat(r, cl, lossy={"node-1/any"})
    assert d.value[[0, 1]].tolist() == ["unknown", "unknown"]
    backend = classify_lb_backend(r, cl, d)
    assert pd.isna(backend.value[0]) and backend.value[1] == "node-2"
    assert "the load balancer sent it back, or the node DNATed the VIP itself" in backend.evidence[0]
    assert "no capture of the client node's NIC" in backend.evidence[0]
    loop = classify_loopback(r, cl, backend, lossy={"node-1/any"}, node_dnat=d)
    assert loop.value[[0, 1]].tolist() == ["unknown", "no"]
    assert loop.evidence[0].startswith("where the load balancer sent it is not known: ")
    # once the SYN is known to have left towards the VIP, the local endpoint is the LB's pick
    left = records(placed(0, 1.0, "any", f"{POD}:40000", f"{VIP}:80", point="eth0", egress=True),
                   placed(0, 1.1, "any", f"{POD}:40000", f"{WEB1}:8080", point="cni0"))
    cl = _dnat_clients(0)
    d = classify_node_dnat(left, cl, lossy={"node-1/any"})
    assert d.value[0] == "no"
    assert classify_loopback(left, cl, classify_lb_backend(left, cl, d), node_dnat=d).value[0] == "yes"

def test_snat_of_a_node_dnated_connection_is_read_after_the_dnat():
    # Local: the pod IP reaches web-1's veth (not SNATed); Cluster: the bridge still shows the pod
    # IP (before POSTROUTING), web-1's veth the masquerade address: SNATed
    r = records(*_vip_dnat(0, WEB1), *_vip_dnat(1, WEB1, src="198.18.16.1:13210"),
                *_vip_dnat(2, WEB2, src=f"{NODE1}:7070"), _nic())
    cl = _dnat_clients(0, 1, 2, 9)
    d = classify_snat(r, cl, INV, classify_node_dnat(r, cl))
    assert d.value[[0, 1, 2]].tolist() == ["no", "yes", "yes"]
    assert "still from the pod IP past its bridge" in d.evidence[0]
    assert d.detail["snat_to"][1] == "198.18.16.1:13210" and d.detail["snat_to"][2] == f"{NODE1}:7070"
    bridge_only = records(*_vip_dnat(0, WEB1)[:2], _nic())  # only the bridge's copy: not evidence
    cl = _dnat_clients(0, 9)
    assert classify_snat(bridge_only, cl, INV, classify_node_dnat(bridge_only, cl)).value[0] == "unknown"


# --- ICMP errors about the client's SYN ----------------------------------------------------
def _with_icmp(row: dict, icmp_type: int, code: int, src: str = "198.18.16.1", quotes: str = "orig") -> dict:
    return dict(row, icmp_errors=1, icmp_ts=row["_t"] + 1e-4, icmp_type=icmp_type, icmp_code=code,
                icmp_src=src, icmp_quotes=quotes)


def test_an_icmp_port_unreachable_on_the_clients_node_refuses_the_connect():
    # kube-proxy's reject of a Service without endpoints: one SYN, an ICMP error, silence
    own = _with_icmp(client_record(capture="any", egress=False, state="S0", history="S", end="timeout",
                                   established=False, resp_pkts=0), 3, 3)
    d = outcome(own)
    assert d.value[0] == "reset"
    assert d.evidence[0] == ("node-1/any: S0 S, 1 SYN(s), ended timeout; ICMP port unreachable from "
                             "198.18.16.1 about the client's packet")


@pytest.mark.parametrize(("icmp_type", "code", "quotes", "node"), [
    (3, 4, "orig", "node-1"),   # fragmentation needed: the path MTU, not a refusal
    (3, 3, "resp", "node-1"),   # about the server's packet, not the client's
    (3, 3, "orig", "node-2"),   # seen on another node: it may still be lost on its way back
])
def test_icmp_that_does_not_reach_or_end_the_connect_decides_nothing(icmp_type, code, quotes, node):
    own = client_record(capture="any", egress=False, state="S0", history="S", end="timeout", established=False,
                        resp_pkts=0)
    far = _with_icmp(client_record(uid="n2/eth0#1", capture="eth0", state="S0", history="S", end="capture-end",
                                   established=False, resp_pkts=0), icmp_type, code, quotes=quotes)
    far.update({"node": node, "capture": f"{node}/eth0", "on_client": node == "node-1"})
    own = dict(own, icmp_errors=0, icmp_ts=float("nan"), icmp_type=None, icmp_code=None, icmp_src=None,
               icmp_quotes=None)
    assert outcome(own, placed=[own, far]).value[0] == "timed out"


# --- lost handshake ACKs: by the packet, not by time ----------------------------------------


def acks(*points):
    """Records of one journey: (capture, SYN -> ACK s, ack_pure, pure_ack_seen) per point."""
    return pd.DataFrame([{"jn": 0, "capture": c, "proto": "tcp", "handshake_rtt": rtt, "ack_pure": first,
                          "pure_ack_seen": seen, "history": "ShADadFf"} for c, rtt, first, seen in points])


def test_a_slow_syn_between_two_points_is_no_lost_ack():
    from natlens.journeys.evidence import lossy_captures, lost_ack

    # the lab run that flaked: the SYN waited 1.1 ms between node-1's NIC and node-2's
    r = acks(("node-1/eth0", 0.00417, True, True), ("node-2/eth0", 0.00306, True, True))
    assert not lost_ack(r).any() and lossy_captures(r, set()) == set()


def test_a_point_that_took_the_clients_data_for_its_pure_ack_lost_it():
    from natlens.journeys.evidence import lossy_captures, lost_ack

    r = acks(("node-1/any", 0.214, False, False), ("node-1/eth0", 0.0027, True, True))
    assert lost_ack(r).tolist() == [True, False] and lossy_captures(r, set()) == {"node-1/any"}
    # however close the times: the packet decides
    assert lost_ack(acks(("a", 0.0027, False, False), ("b", 0.0027, True, True))).tolist() == [True, False]


def test_reordered_or_data_first_handshakes_are_no_loss():
    from natlens.journeys.evidence import lost_ack

    # the data came before the pure ACK at one point: the pure ACK is there, reordered
    assert not lost_ack(acks(("a", 0.0054, False, True), ("b", 0.0053, True, True))).any()
    # the client sent its data first at every point: no point saw a pure handshake ACK
    assert not lost_ack(acks(("a", 0.7597, False, True), ("b", 0.7595, False, False))).any()
    # a point that did not see the handshake, and UDP, decide nothing
    r = acks(("a", float("nan"), pd.NA, pd.NA), ("b", 0.001, True, True))
    assert not lost_ack(r).any()
    assert not lost_ack(acks(("a", 0.5, False, False), ("b", 0.001, True, True)).assign(proto="udp")).any()


def test_latency_comes_from_the_nearest_point_that_kept_the_pure_ack_and_says_why():
    from natlens.journeys.evidence import latency_records

    r = acks(("node-1/any", 0.214, False, False), ("node-1/eth0", 0.0027, True, True)).assign(
        uid=["u0", "u1"], connect=[0.214, 0.0027], syn_retransmits=0, first_byte=[0.3, 0.01], _t=[0.0, 0.0])
    out = latency_records(r, pd.Series([0, 1]))
    assert out.loc[0, "uid"] == "u1"
    assert out.loc[0, "why"] == ("node-1/any lost the client's ACK (no pure ACK of the SYN-ACK there; "
                                 "SYN -> ACK 214.000 ms there, 2.700 ms at the point used)")
    slow_syn = acks(("node-1/any", 0.00422, True, True), ("node-2/eth0", 0.00306, True, True)).assign(
        uid=["u0", "u1"], connect=[0.00422, 0.00306], syn_retransmits=0, first_byte=0.01, _t=0.0)
    assert latency_records(slow_syn, pd.Series([0, 1])).loc[0, "uid"] == "u0"  # the client's view
