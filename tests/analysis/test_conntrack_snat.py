"""SNAT from the node's conntrack dump when the captures start after the node's SNAT.

With only eth0 captures a SNATed pod's connection shows as nodeIP:port -> VIP, which a
host-network client would show too; the client node's conntrack.txt tells them apart.
"""

from __future__ import annotations

import json

import pytest
from analysis_helpers import nic_only

from natlens.findings import analyze
from natlens.netfilter.conntrack import parse_conntrack


@pytest.fixture
def eth0_only(tmp_path):
    """cluster-ok with only the NICs captured: conntrack.txt names the pods behind the node IP."""
    return nic_only("cluster-ok", tmp_path / "cluster-eth0")


def _truth(bundle):
    lines = (bundle / "ground-truth" / "connections.jsonl").read_text().splitlines()
    return {(r["wire_src"], r["wire_sport"]): r for r in map(json.loads, lines)}


def test_conntrack_names_the_pod_behind_the_node_ip(eth0_only):
    a = analyze(eth0_only)
    truth = _truth(eth0_only)
    j = a.journeys
    assert len(j) == len(truth) and (j["snat"] == "yes").all()
    for row in j.itertuples():
        host, port = row.snat_to.rsplit(":", 1)
        gt = truth[(host, int(port))]
        assert (row.client_h, int(row.client_p)) == (gt["src"], gt["sport"])
        assert "conntrack.txt:" in row.snat_evidence
    (svc,) = a.summary()["snat"]
    assert (svc["snat"], svc["ratio"], svc["predicted_by_rules"]) == (len(truth), 1.0, True)


def test_without_conntrack_snat_comes_from_the_ttl_on_the_nic(eth0_only):
    # a pod's packet is forwarded by the node: TTL 63 on the NIC where the node's own start at 64
    for ct in eth0_only.glob("nodes/*/conntrack.txt"):
        ct.unlink()
    a = analyze(eth0_only)
    j = a.journeys
    assert (j["snat"] == "yes").all() and (j["host_network"] == "no").all()
    assert j["snat_evidence"].str.contains("TTL 63, one less than the initial TTL 64", regex=False).all()
    assert j["snat_evidence"].str.contains("initial TTL assumed", regex=False).all()  # said so
    (row,) = a.summary()["snat"]
    assert (row["ratio"], row["host_network"], row["unknown"]) == (1.0, "no", 0)


def test_parse_conntrack_lines_and_snat_flag():
    text = ("tcp      6 119 TIME_WAIT src=198.18.16.100 dst=198.19.0.10 sport=58700 dport=80 "
            "src=198.19.0.10 dst=198.18.0.11 sport=80 dport=23022 [ASSURED] mark=0 use=1\n"
            "icmp     1 29 src=198.18.0.1 dst=198.18.0.2 type=8 code=0 id=1 src=198.18.0.2 "
            "dst=198.18.0.1 type=0 code=0 id=1 mark=0 use=1\n"
            "udp      17 29 src=198.18.0.12 dst=198.18.16.10 sport=53 dport=53 "
            "src=198.18.16.10 dst=198.18.0.12 sport=53 dport=53 mark=0 use=1\n")
    tcp, udp = parse_conntrack(text)
    assert (tcp.line, tcp.state, tcp.orig, tcp.snat) == (
        1, "TIME_WAIT", ("198.18.16.100", "198.19.0.10", 58700, 80), True)
    assert (udp.line, udp.state, udp.snat) == (3, None, False)
