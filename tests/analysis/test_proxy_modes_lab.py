"""natlens analyze on lab bundles in kube-proxy's nftables and iptables modes (root tests).

nftables mode, ipMode VIP: the client's node DNATs pod -> VIP to the Service's endpoints
itself: no connection reaches the load balancer, so none can loop back, whatever the policy.
The analysis must say so plainly, with the rule trace as the reason, and must not read an
endpoint on the client's node as the load balancer's pick of that node.

iptables mode, ipMode Proxy, Local: kube-proxy has no rule for the LB IP, the pod IP leaves,
loopbacks time out; the words name iptables mode's rules and no Cluster remedy.

Needs root and network namespaces (skips with the reason otherwise); two small lab runs
(with `any` captures), about 3 s each.
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


def _joined(a, bundle) -> pd.DataFrame:
    gt = pd.read_json(bundle / "ground-truth" / "connections.jsonl", lines=True)
    m = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left")
    assert m["journey"].notna().all() and len(m) == len(gt)
    return m


@pytest.fixture(scope="module")
def iptables_proxy(tmp_path_factory):
    from natlens.lab.run import run

    out = tmp_path_factory.mktemp("ipt") / "ipt-proxy"
    # the client's default 1.5 s connect timeout: it retransmits its SYN once, so the captures
    # show its retries answered from the wrong address (at 1 s it gives up before retrying, the
    # capture ends, and the outcome is rightly unknown)
    run(out, ["Local"], connections=12, nodes=2, any_capture=True, prefix=f"nlb{os.getpid()}-",
        proxy_mode="iptables", ip_mode="Proxy", timeout=1.5)
    return out, analyze(out)


def test_every_connection_was_dnated_on_the_client_node_and_none_looped_back(a, bundle):
    m = _joined(a, bundle)
    assert m["node_dnat_x"].notna().all() and len(m) == 2 * N
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


def test_iptables_proxy_agrees_with_ground_truth(iptables_proxy):
    bundle, a = iptables_proxy
    m = _joined(a, bundle)
    assert ((m["outcome_y"] == "established") == (m["outcome_x"] == "connected")).all()
    assert set(m.loc[m["outcome_x"] == "failed", "outcome_y"]) <= {"timed out"}
    assert ((m["loopback_y"] == "yes") == m["loopback_x"].astype(bool)).all()
    assert (m["lb_backend"] == m["lb_node"]).all() and (m["node_dnat_y"] == "no").all()
    assert ((m["snat_y"] == "yes") == m["snat_x"].astype(bool)).all()


def test_iptables_proxy_words_name_its_rules_and_no_cluster_remedy(iptables_proxy):
    bundle, a = iptables_proxy
    s = a.summary()
    [r] = s["rules"]
    assert (r["proxy_mode"], r["ingress"], r["vip"], r["returning_syn"]) == ("iptables", "Proxy", "none", "any")
    if not s["loopback"]["hits"]:
        pytest.skip("the load balancer sent no connection back to node-1 this time (p = 1/4096)")
    v = s["verdict"]
    assert "kube-proxy (iptables mode) has no rule for its LB IP" in v["root_cause"]
    assert "KUBE-EXT-" in v["root_cause"] and "local endpoint" not in v["root_cause"]
    assert not any("externalTrafficPolicy: Cluster" in x for x in v["remediation"])
    assert "kube-proxy (iptables mode) DNATs pod traffic to the VIP on the node" in v["remediation"][0]
