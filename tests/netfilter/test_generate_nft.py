"""kube_proxy_nftables: the shapes kube-proxy writes, and nft itself accepts the text.

The structural tests pin what the kernel truth test relies on (chain names, the
external-chain rules of Local and Cluster services, the no-endpoint verdicts); the
loading tests hand the text to ``nft -f`` in a namespace of their own, for every
version, both families, with and without a nodeport-ips set.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from nflab import netns_unavailable_reason

from natlens.netfilter.generate import NftDump, Service, kube_proxy_nftables

VERSIONS = ["1.31", "1.32", "current"]


def _services(v6: bool = False) -> list[Service]:
    """Cluster, Local with and without a local endpoint, ClusterIP-only, no endpoints."""
    a = (lambda x: f"::ffff:198.18.{x}") if v6 else (lambda x: f"198.18.{x}")
    return [
        Service("default/web:http", a("6.1"), 80, node_port=30080, lb_ips=[a("3.1")],
                external_ips=[a("5.1")], policy="Cluster",
                endpoints=[(a("4.1"), 8080, False), (a("1.5"), 8080, True)]),
        Service("default/api:https", a("6.2"), 443, node_port=30443, lb_ips=[a("3.2")],
                policy="Local", endpoints=[(a("1.6"), 8443, True), (a("4.2"), 8443, False)]),
        Service("default/dns:dns", a("6.3"), 53, proto="udp", node_port=30053, lb_ips=[a("3.3")],
                external_ips=[a("3.4")], policy="Local", endpoints=[(a("4.2"), 53, False)]),
        Service("kube-system/metrics:", a("6.4"), 443, endpoints=[(a("4.1"), 10250, False)]),
        Service("default/gone:http", a("6.5"), 80, node_port=30099, lb_ips=[a("3.5")],
                external_ips=[a("3.6")]),
    ]


def _dump(version: str = "current", family: int = 4, node_ips: bool = True) -> NftDump:
    v6 = family == 6
    return kube_proxy_nftables(
        _services(v6), node_ips=(["::ffff:198.18.2.1"] if v6 else ["198.18.1.1", "198.18.2.1"])
        if node_ips else [], cluster_cidr="::ffff:198.18.1.0/124" if v6 else "198.18.1.4/30",
        service_cidr="::ffff:198.18.6.0/120" if v6 else "198.18.6.0/24", version=version,
        family=family)


def _rules(text: str, chain_prefix: str) -> list[str]:
    """The rules of the chains whose names start with chain_prefix, without 'add rule ip kube-proxy'."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if parts[:2] == ["add", "rule"] and parts[4].startswith(chain_prefix):
            out.append(parts[4])
    return out


# ----------------------------------------------------------------- shapes


def test_names_are_hashed_the_kube_proxy_way():
    """The hash of kube-proxy's own test: ns1/svc1:p80 -> service-ULMVA6XW-ns1/svc1/tcp/p80."""
    d = kube_proxy_nftables([Service("ns1/svc1:p80", "198.18.6.41", 80,
                                     endpoints=[("198.18.4.1", 80, False)])],
                            node_ips=["198.18.2.1"], cluster_cidr="198.18.1.0/24")
    assert "add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80" in d.nft
    assert "endpoint-" in d.nft and "ns1/svc1/tcp/p80__198.18.4.1/80" in d.nft


@pytest.mark.parametrize("version", VERSIONS)
def test_base_chains_of_each_version(version):
    t = _dump(version).nft
    assert t.splitlines()[1] == 'add table ip kube-proxy { comment "rules for kube-proxy" ; }'
    if version == "current":
        assert "add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }" in t
        assert "add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }" in t
        for hook in ("forward", "input", "output"):
            assert f"add chain ip kube-proxy filter-{hook} {{ type filter hook {hook} priority 0 ; }}" in t
    else:
        for hook in ("prerouting", "input", "forward", "output"):
            assert f"add chain ip kube-proxy filter-{hook} {{ type filter hook {hook} priority -110 ; }}" in t
    if version == "1.31":
        assert "add rule ip kube-proxy filter-input ct state new jump endpoints-check" in t
        assert "cluster-ips" not in t and "service-endpoints-check" not in t
    else:
        assert "add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check" in t
        assert "add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check" in t
        assert ("add rule ip kube-proxy cluster-ips-check ip daddr { 198.18.6.0/24 } drop comment "
                '"Drop traffic to unallocated ClusterIPs"') in t
    assert ("filter-output-post-dnat { type filter hook output priority -90 ; }" in t) == (version == "1.32")
    for line in ["add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }",
                 "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }",
                 "add rule ip kube-proxy nat-output jump services",
                 "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
                 "add rule ip kube-proxy masquerading mark and 0x4000 == 0 return",
                 "add rule ip kube-proxy masquerading mark set mark xor 0x4000",
                 "add rule ip kube-proxy masquerading masquerade fully-random",
                 "add element ip kube-proxy nodeport-ips { 198.18.2.1 }",
                 "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
                 "add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap "
                 "@service-nodeports",
                 "add rule ip kube-proxy reject-chain reject"]:
        assert line in t, line


@pytest.mark.parametrize("version", VERSIONS)
def test_service_chains_cluster_and_local(version):
    t = _dump(version).nft
    web = [r for r in _rules(t, "external-") if "default/web" in r]
    assert [r.split(" ", 1)[1] for r in web] == [
        "jump mark-for-masquerade", f"goto {web[1].split()[-1]}"]
    api = [r.split(" ", 1)[1] for r in _rules(t, "external-") if "default/api" in r]
    assert api[0].startswith("ip saddr 198.18.1.4/30 goto service-") and api[0].endswith(
        'comment "short-circuit pod traffic"')
    assert api[1] == 'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"'
    assert api[2].startswith("fib saddr type local goto service-") and "short-circuit local" in api[2]
    assert api[3].startswith("goto local-") and len(api) == 4
    local = [r for r in _rules(t, "local-") if "default/api" in r]
    assert len(local) == 1 and "numgen random mod 1 vmap { 0 : goto endpoint-" in local[0]
    spread = [r for r in _rules(t, "service-") if "default/web" in r and "numgen" in r]
    assert "numgen random mod 2 vmap { 0 : goto endpoint-" in spread[0] and " , 1 : goto " in spread[0]
    ep = [r.split(" ", 1)[1] for r in _rules(t, "endpoint-") if "__198.18.1.5/8080" in r]
    assert ep == ["ip saddr 198.18.1.5 jump mark-for-masquerade", "meta l4proto tcp dnat to 198.18.1.5:8080"]
    masq = [r.split(" ", 1)[1] for r in _rules(t, "service-") if "default/web" in r][0]
    dport = "" if version == "current" else "tcp dport 80 "
    assert masq == f"ip daddr 198.18.6.1 {dport}ip saddr != 198.18.1.4/30 jump mark-for-masquerade"


def test_no_endpoints_reject_and_no_local_endpoints_drop():
    t = _dump().nft
    gone = 'comment "default/gone:http" : goto reject-chain }'
    for key in ("198.18.6.5 . tcp . 80", "198.18.3.5 . tcp . 80", "198.18.3.6 . tcp . 80"):
        assert f"add element ip kube-proxy no-endpoint-services {{ {key} {gone}" in t
    assert f"add element ip kube-proxy no-endpoint-nodeports {{ tcp . 30099 {gone}" in t
    assert "gone" not in "".join(_rules(t, ""))            # no chain of its own
    dns = 'comment "default/dns:dns" : drop }'
    assert f"add element ip kube-proxy no-endpoint-services {{ 198.18.3.3 . udp . 53 {dns}" in t
    assert f"add element ip kube-proxy no-endpoint-nodeports {{ udp . 30053 {dns}" in t
    ext = [r for r in _rules(t, "external-") if "default/dns" in r]
    assert len(ext) == 3 and not any("local-" in r for r in ext)   # short-circuits only
    assert "add element ip kube-proxy service-nodeports { udp . 30053 : goto external-" in t


def test_ip6_and_match_all_node_ports():
    t6 = _dump(family=6).nft
    assert t6.splitlines()[1].startswith("add table ip6 kube-proxy")
    assert "type ipv6_addr . inet_proto . inet_service : verdict" in t6
    assert "dnat to [::ffff:198.18.4.1]:8080" in t6 and " ip daddr" not in t6
    assert "__..ffff.198.18.4.1/8080" in t6
    t = _dump(node_ips=False).nft
    assert "nodeport-ips" not in t
    assert ("services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap "
            "@service-nodeports") in t
    with pytest.raises(ValueError, match="version"):
        kube_proxy_nftables([], node_ips=[], cluster_cidr="198.18.1.0/24", version="1.20")


# ----------------------------------------------------------------- nft accepts it


@pytest.fixture(scope="module")
def netns():
    reason = netns_unavailable_reason("nft")
    if reason:
        pytest.skip(reason)
    name = f"nlgen-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.root
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("node_ips", [True, False])
def test_nft_loads_it(netns, version, family, node_ips):
    """nft -f takes the whole text, and lists every chain and element back."""
    d = _dump(version, family, node_ips)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
    r = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=d.nft,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"],
                            capture_output=True, text=True, check=True).stdout
    chains = [line.split()[4] for line in d.nft.splitlines() if line.startswith("add chain")]
    for c in chains:
        assert f"chain {c} {{" in listed, c
    assert listed.count("goto reject-chain") == 4 and "numgen random mod 2" in listed
