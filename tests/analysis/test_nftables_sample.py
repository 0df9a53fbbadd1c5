"""The analysis of data/samples/nftables-local against its ground truth.

kube-proxy nftables mode, ipMode Proxy, externalTrafficPolicy Local: 20 connections, 14 time
out (11 loopbacks, 3 of them DNATed by the client's node to web-2 on node-2, and 3 asymmetric
returns via node-2), 6 connect. What the analysis says must be what happened, or unknown.
"""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze

NAME = "nftables-local"


@pytest.fixture(scope="module")
def sample():
    return samples_dir() / NAME


@pytest.fixture(scope="module")
def a(sample):
    return analyze(sample)


@pytest.fixture(scope="module")
def m(a, sample):
    gt = pd.read_json(sample / "ground-truth" / "connections.jsonl", lines=True)
    j = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left")
    assert j["journey"].notna().all() and len(j) == len(gt) == 20
    return j


def test_every_failure_is_a_time_out_from_the_clients_own_record(a, m):
    failed = m["outcome_x"] == "failed"
    assert (m.loc[failed, "error"] == "timeout").all() and failed.sum() == 14
    assert (m.loc[failed, "outcome_y"] == "timed out").all()
    assert (m.loc[~failed, "outcome_y"] == "established").all()
    # the client's own record decides: not a bridge record holding only its RST
    assert not m["outcome_evidence"].str.contains("no SYN seen").any()
    assert a.summary()["connections"] == {**a.summary()["connections"], "total": 20, "failed": 14,
                                          "timeouts": 14, "resets": 0}


def test_the_rules_facts_are_the_nftables_nodes(a):
    [r] = a.summary()["rules"]
    assert (r["proxy_mode"], r["ingress"], r["vip"], r["returning_syn"]) == ("nftables", "Proxy", "none", "any")
    assert 'comment "short-circuit pod traffic"' in r["returning_syn_rule"]
    assert r["files"] == ["nodes/node-1/iptables-save.txt", "nodes/node-1/nft-ruleset.json"]


def test_the_loopback_mechanism_is_any_endpoint_as_the_captures_show(a, m):
    root = a.summary()["verdict"]["root_cause"]
    assert "That node DNATs the SYN to a local endpoint" not in root
    assert "to any of the Service's endpoints" in root and '"short-circuit pod traffic" rule' in root
    # every endpoint the ground truth says a loopback ended on is among those the verdict names
    [r] = a.summary()["rules"]
    named = {x["endpoint"]: x["node"] for x in r["looped_back_to"]}
    assert set(m.loc[m["loopback_x"].astype(bool), "backend"]) <= set(named)
    assert named["198.18.17.10:8080"] == "node-2" and "198.18.17.10:8080 (node-2)" in root


def test_no_cluster_remedy_where_kube_proxy_has_no_rule_for_the_lb_ip(a):
    v = a.summary()["verdict"]
    assert not any("externalTrafficPolicy: Cluster" in s or "KUBE-MARK-MASQ" in s for s in v["remediation"])
    assert "ipMode VIP" in v["remediation"][0]
    assert "has no rule for its LB IP (its ingress has ipMode Proxy in cluster/services.json)" in v["root_cause"]
    assert "Switching to externalTrafficPolicy: Cluster is no fix here" in v["root_cause"]


def test_the_asymmetric_failures_are_answers_from_the_wrong_source(a, m):
    asym = m[m["asymmetric"].fillna(False).astype(bool)]
    assert sorted(asym["journey"]) == ["J1", "J11", "J3"]
    assert (asym["outcome_y"] == "timed out").all() and (asym["loopback_y"] == "no").all()
    assert (asym["lb_backend"] == asym["lb_node"]).all()
    # each gets its mechanism, with the endpoint's address it was answered from and the node that
    # DNATed it there without SNAT (the ground truth's backend, on the client's own node)
    assert (asym["failure"] == "wrong-source-reply").all()
    for r in asym.itertuples():
        assert f"from {r.backend}, not from 198.19.0.10:80" in r.failure_evidence
        assert f"sent the SYN to {r.lb_node}, which DNATed it to {r.backend} (an endpoint on the client's own " \
               "node) without SNAT" in r.failure_evidence
        assert r.failure_at == f"node-1 veth-client: the client got the SYN-ACK from {r.backend}"
        assert f"LB (DNAT to {r.lb_node} " in r.failure_path and r.failure_path.endswith("-> client, which resets it")
    v = a.summary()["verdict"]
    assert "Only connections hashed to the client's own node fail" not in v["root_cause"]
    assert "natlens identifies no mechanism" not in v["root_cause"]
    assert "3 failed connections (J1, J3, J11): answers from the wrong source; J1: the SYN-ACK reached" \
        in v["root_cause"]
    assert v["headline"].startswith("14 of 20 connections failed: 11 load-balancer loopbacks, 3 answers from "
                                    "the wrong source; the loopbacks are node-1's")
    assert a.summary()["failures"]["by_mechanism"] == {"loopback": 11, "wrong-source-reply": 3}
    assert any("answers from the wrong source" in x for x in v["remediation"])


def test_snat_loopback_and_the_lbs_pick_agree_with_ground_truth(a, m):
    assert ((m["loopback_y"] == "yes") == m["loopback_x"].astype(bool)).all()
    assert (m["lb_backend"] == m["lb_node"]).all()
    assert ((m["snat_y"] == "yes") == m["snat_x"].astype(bool)).all() and (m["snat_y"] != "unknown").all()
    assert (m["node_dnat_y"] == "no").all()  # ipMode Proxy: every SYN to the VIP left the node
    s = a.summary()
    assert s["loopback"] == {"hits": 11, "failed": 11, "by_node": {"node-1": 11}}
    assert s["snat"][0]["ratio"] == 0.0 and s["snat"][0]["predicted_by_rules"] is True


def test_the_cli_lists_each_failure_with_where_it_died(a):
    from natlens.cli.analyze import render

    text = render(a)
    assert "failures: 14 (loopback 11, wrong-source-reply 3), 0 unexplained" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("J1 "))
    assert "wrong-source-reply" in row and "node-1 veth-client: the client got the SYN-ACK from 198.18.16.10:8080" in row
