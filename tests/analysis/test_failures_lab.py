"""Every failed connection explained, on the real kernel: natlens' mechanism for each failed
journey against the lab's ground truth (the client's own record, the kernels' conntrack
tables and the fault the lab applied; ground-truth/connections.jsonl ``failure``).

Root tests (skip with the reason without root or network namespaces): seven small lab runs at
once, each with `any` and eth0 captures on both nodes, Services Local and Cluster:

* nftables-mode short-circuit (no fault, ``--proxy-mode nftables --ip-mode Proxy``):
  loopbacks, and answers from the wrong source where node-2 DNATs the pod's SYN to the
  endpoint on the client's node without SNAT;
* no-endpoints, nftables + VIP: node-1's kube-proxy rejects (ICMP, rate-limited past 6);
* no-endpoints, ipvs: the LB drops Local (no healthy node); node-2's IPVS rejects Cluster;
* refused, nftables + VIP: the endpoints answer RST;
* blackhole, ipvs: node-1's route drops the SYN;
* reply-drop, ipvs: the VPC drops SYN-ACKs to node-1 (loopbacks unaffected);
* unreachable, ipvs: the VPC's route to node-2 is unreachable: ICMP host unreachable from the
  router (rewritten to come from the VIP), rate-limited past a burst (then no reply).

For every run: each ground-truth connection has a journey; each failed one has the
mechanism the ground truth says (none "unknown": these captures show everything); the
summary's failures add up, and the verdict names every mechanism.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from analysis_helpers import expected_failure, netns_unavailable_reason, run_labs

from natlens.findings import analyze
from natlens.findings.failure_words import NAMES

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
pytestmark = [pytest.mark.root, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
PID = os.getpid()
N = 6
# name: (fault, proxy mode, ipMode, prefix tag, the client's connect timeout). A client that gives
# up at 0.9 s never retransmits (Linux's first retry is due at 1 s), and the captures (which run
# 0.5 s past it, then see the lab's end-of-capture echo) see it fall silent past that retry's due
# time: timed out. The short-circuit run lets it retry once (1.5 s): its
# retries answered from the wrong source show the time-out there (its capture ends sooner).
RUNS = {
    "short-circuit": (None, "nftables", "Proxy", "s", 1.5),
    "noep-nft": ("no-endpoints", "nftables", "VIP", "e", 0.9),
    "noep-ipvs": ("no-endpoints", "ipvs", "VIP", "v", 0.9),
    "refused": ("refused", "nftables", "VIP", "r", 0.9),
    "blackhole": ("blackhole", "ipvs", "VIP", "b", 0.9),
    "reply-drop": ("reply-drop", "ipvs", "VIP", "d", 0.9),
    "unreachable": ("unreachable", "ipvs", "VIP", "u", 0.9),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple]:
    # the short-circuit run needs the LB to pick node-2 and node-2 to pick web-1 at least once
    # (each 1 in 2): 24 connections miss that 1 time in 1,000
    bundles = run_labs(tmp_path_factory.mktemp("failures"), {
        name: {"policies": ["Local", "Cluster"], "connections": 24 if fault is None else N, "nodes": 2,
               "any_capture": True, "prefix": f"nlx{PID}{tag}-", "proxy_mode": proxy_mode, "ip_mode": ip_mode,
               "timeout": timeout, "fault": fault}
        for name, (fault, proxy_mode, ip_mode, tag, timeout) in RUNS.items()})
    return {name: (analyze(path), joined(path)) for name, path in bundles.items()}


def joined(bundle: Path) -> pd.DataFrame:
    """The ground truth, one row per connection, with what the truth says the failure was."""
    gt = pd.read_json(bundle / "ground-truth" / "connections.jsonl", lines=True)
    gt["want"] = [expected_failure(r) for r in gt.to_dict("records")]
    return gt


def with_journeys(a, gt: pd.DataFrame) -> pd.DataFrame:
    m = gt.merge(a.journeys, left_on=["src", "sport", "dst", "dport"],
                 right_on=["client_h", "client_p", "vip", "vport"], how="left", suffixes=("_gt", ""))
    assert m["journey"].notna().all(), m.loc[m["journey"].isna(), ["src", "sport", "dst"]]
    assert len(m) == len(gt), "a connection has more than one journey"
    return m


@pytest.mark.parametrize("name", list(RUNS))
def test_every_failed_connection_has_the_ground_truths_mechanism(runs, name):
    a, gt = runs[name]
    m = with_journeys(a, gt)
    failed = m[m["outcome_gt"] == "failed"]
    assert len(failed), f"{name}: the fault made no failure"
    assert failed["outcome"].isin(["reset", "timed out"]).all(), failed[["journey", "outcome", "error"]]
    wrong = failed[failed["failure"] != failed["want"]]
    assert wrong.empty, "\n".join(f"{r.journey} {r.src}:{r.sport} ({r.error}, {r.failure_at_gt}): natlens "
                                  f"{r.failure!r} ({r.failure_evidence}), ground truth {r.want!r}"
                                  for r in wrong.itertuples())
    ok = m[m["outcome_gt"] == "connected"]
    assert ok["failure"].isna().all() and (ok["outcome"] == "established").all()


@pytest.mark.parametrize("name", list(RUNS))
def test_the_summary_and_the_verdict_account_for_every_failure(runs, name):
    a, gt = runs[name]
    s = a.summary()
    f = s["failures"]
    want = gt.loc[gt["outcome"] == "failed", "want"].value_counts().to_dict()
    assert f["failed"] == s["connections"]["failed"] == sum(want.values())
    assert f["by_mechanism"] == want and f["unexplained"] == 0
    head = s["verdict"]["headline"]
    assert head.startswith(f"{f['failed']} of {s['connections']['total']} connections failed: ")
    for mech, k in want.items():
        assert f"{k} {NAMES[mech][0 if k == 1 else 1]}" in head, (mech, head)
    assert s["verdict"]["remediation"], "no remedy for the failures"


def _failed(runs, name: str, mech: str) -> pd.DataFrame:
    a, gt = runs[name]
    m = with_journeys(a, gt)
    return m[m["failure"] == mech]


def test_kube_proxys_reject_is_named_with_its_rule_and_the_icmp_error(runs):
    rej = _failed(runs, "noep-nft", "dropped-by-rule")
    assert len(rej) == 2 * N
    assert rej["failure_evidence"].str.contains("node-1's rules, asked about 198.18.16.100:").all()
    assert rej["failure_evidence"].str.contains("no-endpoint").all()
    # the connects the ICMP error refused are "reset", and the error is in the evidence;
    # past the kernel's ICMP rate limit the client timed out, and the rule alone decides
    refused = rej[rej["error"] == "ECONNREFUSED"]
    assert len(refused) and (refused["outcome"] == "reset").all()
    assert refused["failure_evidence"].str.startswith("ICMP port unreachable from 198.18.16.1 about the "
                                                      "client's packet").all()
    assert refused["outcome_evidence"].str.contains("ICMP port unreachable from 198.18.16.1").all()
    silent = rej[rej["error"] == "timeout"]
    assert (silent["outcome"] == "timed out").all()
    assert silent["failure_path"].str.startswith("SYN: client -> node-1 veth-client -> node-1 cni0").all()


def test_ipvs_no_endpoints_the_lb_drops_local_and_node_2_rejects_cluster(runs):
    nr = _failed(runs, "noep-ipvs", "no-reply")
    assert set(nr["service"]) == {"198.19.0.10:80/tcp"} and len(nr) == N
    assert nr["failure_at"].str.startswith("SYN last seen at node-1 eth0 (198.18.16.100:").all()
    assert nr["failure_evidence"].str.contains("it left node-1 there and no capture saw it again").all()
    rej = _failed(runs, "noep-ipvs", "dropped-by-rule")
    assert set(rej["service"]) == {"198.19.0.11:80/tcp"} and len(rej) == N
    assert rej["failure_evidence"].str.contains("node-2").all()
    assert rej["failure_at"].str.endswith("dropped by node-2's rules").all() | \
        rej["failure_at"].str.endswith("rejected by node-2's rules").all()


def test_a_rst_from_the_endpoint_is_refused_with_its_address(runs):
    r = _failed(runs, "refused", "refused")
    assert len(r) == 2 * N and (r["outcome"] == "reset").all()
    assert r["failure_at"].str.match(r"^node-\d (veth-web-\d|eth0|cni0): RST from 198\.18\.1[67]\.10:8081$").all()


def test_a_blackhole_route_is_named_where_the_syn_was_last_seen(runs):
    nr = _failed(runs, "blackhole", "no-reply")
    assert len(nr) == 2 * N
    assert nr["failure_evidence"].str.contains(r"node-1's routes drop it: blackhole 198\.19\.0\.1[01]/32").all()
    assert (nr["failure_at"].str.startswith("SYN last seen at node-1 cni0")
            | nr["failure_at"].str.startswith("SYN last seen at node-1 veth-client")).all()


def test_a_syn_ack_dropped_between_the_nodes_is_reply_lost_between_them(runs):
    lost = _failed(runs, "reply-drop", "reply-lost")
    assert len(lost)
    assert lost["failure_at"].str.startswith("between node-2 eth0 and the client's side (node-1 veth-client)").all()
    loops = _failed(runs, "reply-drop", "loopback")
    assert len(loops) + len(lost) == int((runs["reply-drop"][1]["outcome"] == "failed").sum())


def test_the_short_circuit_answers_come_from_the_endpoint_on_the_clients_node(runs):
    w = _failed(runs, "short-circuit", "wrong-source-reply")
    assert len(w), "the LB sent no Local connection to node-2 in this run"
    for r in w.itertuples():
        assert f"which DNATed it to {r.backend} (an endpoint on the client's own node) without SNAT" \
            in r.failure_evidence
        assert r.failure_path.endswith("-> client, which resets it")


def test_an_icmp_host_unreachable_from_behind_the_lb_is_unreachable(runs):
    un = _failed(runs, "unreachable", "unreachable")
    assert len(un) and (un["outcome"] == "reset").all() and (un["error"] == "EHOSTUNREACH").all()
    assert un["failure_evidence"].str.match(r"^ICMP host unreachable from 198\.19\.0\.1[01] about the client's "
                                            r"packet .* \(from the load balancer's address").all()
    silent = _failed(runs, "unreachable", "no-reply")  # past the router's ICMP rate limit
    assert (silent["error"] == "timeout").all()
    assert silent["failure_at"].str.startswith("SYN last seen at node-1 eth0").all()
