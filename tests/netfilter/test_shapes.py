"""Real kube-proxy dump shapes, release by release (tests/netfilter/shapes/): the Service
listing and documented first packets, without a kernel.

Each shape is what a node running that kube-proxy release leaves (manifest.json names the
release and the source it was written from). Per shape: ``kube_services`` lists exactly the
manifest's rows (one per Service port and node port, no duplicate, none missing), and
``NodeRules.explain`` gives each documented packet the DNAT, SNAT and outcome that the
release's rules give it, with no undecided path.
"""

from __future__ import annotations

from collections import Counter

import pytest
from shapes import SHAPES_DIR, load_shapes, manifest

from natlens.netfilter import kube_services, parse_iptables_save
from natlens.netfilter.walk import ip_int

SHAPES = load_shapes()
IDS = [s.name for s in SHAPES]
PACKETS = [(s, p) for s in SHAPES for p in s.packets]


def _row(sp) -> tuple:
    return (sp.kind, sp.vip, sp.port, sp.proto, sp.policy)


def _fmt(rows) -> str:
    return "\n  ".join(" ".join(map(str, r)) for r in sorted(rows))


def test_manifest_names_every_shape_directory_and_its_source():
    on_disk = {p.name for p in SHAPES_DIR.iterdir() if p.is_dir()}
    assert on_disk == set(IDS)
    for s in SHAPES:
        assert s.mode in ("iptables", "ipvs") and s.release and s.covers
        assert s.sources and all(src.get("path") and (src.get("commit") or src.get("index_id"))
                                 for src in s.sources), s.name
        for f in s.files:
            assert s.path(f), f"{s.name}/{f} is missing"
        # only addresses the lab routes (kernel_truth_shapes loads these very files)
        text = "".join(s.text(f) for f in s.files)
        for a in ("10.", "172.", "192.168."):
            assert f" {a}" not in text and f",{a}" not in text, (s.name, a)
        assert len(set(s.rows)) == len(s.rows), f"{s.name}: duplicate rows in the manifest"
    assert manifest()["cluster_cidr"] == "198.18.1.0/24"


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dump_parses_and_compiles(shape):
    """The files load as a node: every rule compiles, every ipset and ipvsadm line parses."""
    node = shape.node()
    assert node.check() > 0
    assert parse_iptables_save(shape.text("iptables-save.txt"), "iptables-save.txt").tables.get("nat")
    if shape.mode == "ipvs":
        assert node.sets and node.ipvs


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_services_rows_are_exactly_the_releases_service_ports(shape):
    """One row per Service port (cluster IP, LB IP, external IP) and per node port; Local for a
    Local Service even with no local endpoint; "n/a" for cluster IPs; no row twice (the
    pre-1.21 KUBE-SERVICES lists a cluster IP twice: the KUBE-MARK-MASQ rule is not a row)."""
    got = [_row(sp) for sp in kube_services(shape.node())]
    want = list(shape.rows)
    dup = [r for r, n in Counter(got).items() if n > 1]
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not (dup or missing or extra), (
        f"{shape.name} (kube-proxy {shape.release}):\n duplicated:\n  {_fmt(dup)}\n missing:\n  {_fmt(missing)}"
        f"\n unexpected:\n  {_fmt(extra)}")


@pytest.mark.parametrize(("shape", "pkt"), PACKETS,
                         ids=[f"{s.name}:{p.name.split(' (')[0]}:{p.dst}:{p.dport}" for s, p in PACKETS])
def test_documented_packet(shape, pkt):
    node = shape.node()
    v = node.explain(pkt.src, pkt.dst, pkt.dport, pkt.proto, local=pkt.local)
    where = f"{shape.name} (kube-proxy {shape.release}): {pkt.name}: {pkt.why}\n  " + "\n  ".join(v.trace)
    assert not v.undecided, f"undecided {v.undecided}\n{where}"
    assert {p.outcome for p in v.paths} == {pkt.outcome}, f"outcomes {[p.outcome for p in v.paths]}\n{where}"
    assert v.dnat_to == list(pkt.dnat), f"DNAT {v.dnat_to}\n{where}"
    if pkt.dnat:
        assert all(p.dnat_to for p in v.paths), f"a path is not DNATed\n{where}"
    if pkt.snat is not None:
        assert [p.snat for p in v.paths] == [pkt.snat] * len(v.paths), f"SNAT {[p.snat for p in v.paths]}\n{where}"
    if pkt.affinity:
        # ClientIP affinity: -m recent --rcheck forks into a returning and a new client
        given = [" ".join(p.given) for p in v.paths]
        assert any("not in recent list" in g for g in given), f"no new-client path {given}\n{where}"
        assert any("recent list" in g and "not in recent list" not in g for g in given), \
            f"no returning-client path {given}\n{where}"
    if pkt.nfacct:
        assert any("nfacct" in line and "(matched)" in line for line in v.trace), \
            f"the -m nfacct node-port rule did not pass the packet\n{where}"


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.mode == "ipvs"], ids=lambda s: s.name)
def test_ipvs_cluster_ips_are_local_from_the_dumps_alone(shape):
    """With no ip addr dump and no local_ips for them, the cluster IPs are kube-ipvs0's:
    KUBE-CLUSTER-IP (and KUBE-IPVS-IPS, 1.28+) name them, so IPVS DNATs the pod's packet."""
    node = shape.node(local_ips=list(manifest()["node_ips"]))
    v = node.explain("198.18.1.3", "198.18.5.1", 80)
    assert not v.undecided and v.dnat_to == ["198.18.4.1:8080", "198.18.4.2:8080"], v.trace


def test_ipvs_master_binds_every_vip_in_kube_ipvs_ips():
    """1.28+: KUBE-IPVS-IPS lists every address kube-proxy bound: LB IPs are local too."""
    s = next(s for s in SHAPES if s.name == "ipvs-master")
    ips = {e for line in s.text("ipset-save.txt").splitlines() if line.startswith("add KUBE-IPVS-IPS ")
           for e in line.split()[2:3]}
    assert {"198.18.5.1", "198.18.5.2", "198.18.3.1", "198.18.3.2", "198.18.3.3", "198.18.3.12",
            "198.18.3.4"} <= ips
    node = s.node()
    assert all(node.is_local(ip_int(ip)) for ip in ips)
