"""natlens analyze on a lab bundle in kube-proxy nftables mode with ipMode VIP (root test).

The client's node DNATs pod -> VIP to the Service's endpoints itself: no connection reaches
the load balancer, so none can loop back, whatever the policy. The analysis must say so
plainly, with the rule trace as the reason, and must not read an endpoint on the client's
node as the load balancer's pick of that node (a "loopback" that never left it).

Needs root and network namespaces (skips with the reason otherwise); one small lab run
(Local and Cluster, 6 connections each, with `any` captures), about 3 s.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from analysis_helpers import netns_unavailable_reason

from natlens.findings import analyze

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
pytestmark = [pytest.mark.root, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
N = 6


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from natlens.lab.run import run

    out = tmp_path_factory.mktemp("vip") / "nft-vip"
    run(out, ["Local", "Cluster"], connections=N, nodes=2, any_capture=True, prefix=f"nla{os.getpid()}-",
        proxy_mode="nftables", ip_mode="VIP", timeout=1.0)
    return out


@pytest.fixture(scope="module")
def a(bundle):
    return analyze(bundle)


def test_every_connection_was_dnated_on_the_client_node_and_none_looped_back(a, bundle):
    gt = pd.read_json(bundle / "ground-truth" / "connections.jsonl", lines=True)
    assert gt["node_dnat"].notna().all() and len(gt) == 2 * N
    m = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left")
    assert m["journey"].notna().all()
    assert (m["node_dnat_y"] == "yes").all(), m["node_dnat_evidence"].tolist()
    assert (m["loopback_y"] == "no").all() and m["lb_backend"].isna().all()
    assert m["loopback_evidence"].str.startswith("it never left its node: ").all()
    assert (m["outcome_y"] == "established").all()
    # SNAT as the node's conntrack recorded it: Cluster masquerades, Local keeps the pod IP
    known = m["snat_y"] != "unknown"
    assert ((m.loc[known, "snat_y"] == "yes") == m.loc[known, "snat_x"].astype(bool)).all()
    assert known.sum() >= N


def test_the_verdict_says_no_loopback_is_possible_and_why(a):
    s = a.summary()
    v = s["verdict"]
    assert v["loopback_detected"] is False and s["loopback"]["hits"] == 0
    assert v["headline"].endswith("none reached the load balancer: the client's node DNATed the VIP to the "
                                  "Service's endpoints itself, so no loopback is possible for pod traffic")
    for svc in ("default/web-local", "default/web-cluster"):
        assert f"Service {svc}" in v["root_cause"]
    assert v["root_cause"].count("never reached the load balancer: node-1's rules (kube-proxy in nftables "
                                 "mode; ingress ipMode VIP) DNAT pod traffic to the VIP") == 2
    assert "@service-ips" in v["root_cause"]  # the rule that takes the VIP, from the walk
    assert "never picks the client's own node" not in v["root_cause"]  # it never got there
    assert v["remediation"] == []
    rules = {r["service"]: r for r in s["rules"]}
    assert {r["vip"] for r in rules.values()} == {"dnat"} and {r["ingress"] for r in rules.values()} == {"VIP"}
    assert {r["proxy_mode"] for r in rules.values()} == {"nftables"}
