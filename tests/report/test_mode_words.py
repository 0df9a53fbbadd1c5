"""The report's sections say what the rules on the client's node do, in its proxy mode: the
SNAT section, the rule trace's sources and the loopback evidence (IPVS sample and nftables
sample), anonymized like the rest of the report."""

from __future__ import annotations

import ipaddress
import re

import pytest
from conftest import KEY_HEX, SAMPLES

from natlens import report
from natlens.report import text


@pytest.fixture(scope="module")
def nft():
    return report.load(SAMPLES / "nftables-local")


@pytest.fixture(scope="module")
def ipvs():
    return report.load(SAMPLES / "loopback-local")


def test_the_snat_section_says_what_the_nodes_rules_do(nft, ipvs):
    assert "returns before marking" not in text.snat_intro(nft)
    assert ("On node-1, kube-proxy (nftables mode) has no rule for the Service's LB IP (ingress ipMode Proxy): "
            "nothing of kube-proxy's marks pod traffic to it for masquerade under either policy") in text.snat_intro(nft)
    assert "(IPVS mode) keeps the VIP in its ipsets" in text.snat_intro(ipvs)
    assert "it returns before marking the packet for masquerade" in text.snat_intro(ipvs)


def test_the_rule_trace_names_the_dumps_it_comes_from(nft, ipvs):
    t = text.rule_trace_intro(nft)
    assert "<code>nft-ruleset.json</code>" in t and "ipset" not in t
    assert "<code>ipset-save.txt</code>" in text.rule_trace_intro(ipvs)


def test_the_loopback_evidence_says_where_the_node_sends_the_returning_syn(nft, ipvs):
    assert "any endpoint, on this node or another" in text.loopback_intro(nft)
    assert "a local endpoint" not in text.loopback_intro(nft)
    assert "is DNATed to a local endpoint," in text.loopback_intro(ipvs)
    trace = text.returning_syn_trace(nft)
    assert "node-1: 198.18.16.100 -&gt; 198.18.0.11:30080/tcp in via eth0</h4>" in trace
    assert "short-circuit pod traffic" in trace and "DNAT to 198.18.17.10:8080" in trace


def test_the_returning_syn_trace_is_anonymized(tmp_path):
    key = tmp_path / "k"
    key.write_text(KEY_HEX)
    d = report.load(SAMPLES / "nftables-local", anonymize=True, key_file=key)
    trace = text.returning_syn_trace(d)
    # The client node is named by its pseudonym (natlens.report.pseudonyms), as everywhere.
    assert trace and "node-1" not in trace and re.search(r"node-[0-9a-f]{8}: ", trace)
    shown = set(re.findall(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", trace))
    real = {"198.18.16.100", "198.18.0.11", "198.18.16.10", "198.18.17.10"}
    assert shown and not shown & real
    assert all(ipaddress.ip_address(x) for x in shown)


def test_an_address_inside_an_nft_chain_name_is_mapped():
    from natlens.report.anonymize import Anonymizer

    an = Anonymizer(bytes.fromhex(KEY_HEX))
    chain = "endpoint-H6PHLDW2-default/web-local/tcp/http__198.18.16.10/8080"
    out = an.text(chain)
    # The chain's hash of namespace/name is keyed too (natlens.report.pseudonyms); no names are known here.
    assert "198.18.16.10" not in out and "H6PHLDW2" not in out
    assert out == an.names.hashes(chain).replace("198.18.16.10", an.ip("198.18.16.10"))
    assert an.text("v1.2.3.4x") == "v1.2.3.4x"  # glued to letters: not an address
