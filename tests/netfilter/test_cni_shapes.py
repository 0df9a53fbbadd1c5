"""The CNIs' documented rules beside kube-proxy (tests/netfilter/cni/): parse, walk, list.

Each CNI directory holds what iptables-save prints on a node running that CNI and
kube-proxy (iptables mode): ``iptables-save.txt`` with the lab's interface names,
``original.txt`` with the CNI's own (cni0, cali+, docker0, eni+, eth0 ...), and the
CNI's ipsets. manifest.json says where each rule comes from, how names and addresses
map back, and which packets get which outcome. No root needed; test_kernel_truth_cni.py
checks the same files against the kernel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from natlens.cli import main
from natlens.netfilter import kube_services, load_files

CNI_DIR = Path(__file__).resolve().parent / "cni"
MANIFEST = json.loads((CNI_DIR / "manifest.json").read_text())
CNIS = list(MANIFEST["cnis"])
LAB = MANIFEST["lab"]
NODE_IPS = ["198.18.1.1", "198.18.2.1", "198.18.5.1", "198.18.5.2"]
LAB_IFACES = {"n-c", "n-c+", "n-p", "kube-ipvs0", "lo"}
KEPT = {"vlan+", "vethwe-bridge"}  # names with no lab counterpart, kept (manifest notes say why)


def _files(cni: str) -> tuple[Path, Path, str | None]:
    f = MANIFEST["cnis"][cni]["files"]
    return CNI_DIR / f["iptables"], CNI_DIR / f["original"], str(CNI_DIR / f["ipset"]) if f["ipset"] else None


def _lab_node(cni: str):
    lab, _, ipset = _files(cni)
    return load_files(str(lab), ipset, None, ip_addr=str(CNI_DIR / LAB["ip_addr"]),
                      ip_route=str(CNI_DIR / LAB["ip_route"]))


def _renamed(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\b(n-c|n-p)\b", lambda m: names[m.group(1)], text)


def _original_node_files(cni: str, tmp_path: Path) -> tuple[Path, Path]:
    """The lab's ip addr / ip route under the CNI's own interface names."""
    names = MANIFEST["cnis"][cni]["original_node"]
    addr = tmp_path / "ip-addr.txt"
    addr.write_text(_renamed((CNI_DIR / LAB["ip_addr"]).read_text(), names))
    route = tmp_path / "ip-route.txt"
    route.write_text(_renamed((CNI_DIR / LAB["ip_route"]).read_text(), names))
    return addr, route


def _ifaces(text: str) -> set[str]:
    return set(re.findall(r"(?:^|\s)(?:-i|-o)\s+(?:!\s+)?(\S+)", text, re.M))


# ----------------------------------------------------------------- the files


@pytest.mark.parametrize("cni", CNIS)
def test_every_file_parses(cni):
    lab, original, ipset = _files(cni)
    for path in (lab, original):
        node = load_files(str(path), ipset, None, local_ips=NODE_IPS)
        assert node.ruleset.tables.get("nat", {}).get("KUBE-SERVICES") is not None, path
        assert not getattr(node.ruleset, "partial", None), path


@pytest.mark.parametrize("cni", CNIS)
def test_lab_copy_is_the_original_with_lab_interface_names(cni):
    """The two files differ only where an interface is named, as the manifest maps it."""
    lab, original, _ = _files(cni)
    subst = MANIFEST["cnis"][cni]["substitutions"]["interfaces (original -> lab)"]
    lab_text, orig_text = lab.read_text(), original.read_text()
    assert _ifaces(lab_text) <= LAB_IFACES | KEPT, _ifaces(lab_text) - LAB_IFACES - KEPT
    assert not _ifaces(orig_text) & {"n-c", "n-c+", "n-p"}
    mapped = re.sub(r"((?:^|\s)(?:-i|-o)\s+(?:!\s+)?)(\S+)", lambda m: m.group(1) + subst.get(m.group(2),
                    m.group(2)), orig_text, flags=re.M)
    assert mapped.splitlines()[1:] == lab_text.splitlines()[1:]
    used = _ifaces(orig_text)
    assert used <= set(subst) | KEPT | {"lo"}, used - set(subst)
    for name in used - KEPT:  # the real names really are in the original
        assert name in subst


def test_addresses_are_only_the_test_range():
    """198.18.0.0/15 (and the loopback, multicast and wildcard ranges rules name) only."""
    allowed = re.compile(r"^(198\.1[89]\.|127\.0\.0\.|224\.0\.0\.0/4$|0\.0\.0\.0)")
    for path in sorted(CNI_DIR.glob("*/*.txt")) + [CNI_DIR / LAB["ip_addr"], CNI_DIR / LAB["ip_route"]]:
        for ip in re.findall(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?)", path.read_text()):
            assert allowed.match(ip), f"{path}: {ip}"


# ----------------------------------------------------------------- the manifest's packets


def _cases(only_named: bool = False):
    out = []
    for cni in CNIS:
        for p in MANIFEST["cnis"][cni]["packets"]:
            if only_named and not (p.get("out_iface") or p["local"]):
                continue
            out.append(pytest.param(cni, p, id=f"{cni}: {p['name']}"))
    return out


def _check_paths(v, expected: list[dict], where: str) -> None:
    got = sorted((p.outcome, p.dnat_to, p.snat_to if p.snat else None) for p in v.paths)
    want = sorted((e["outcome"], e["dnat_to"], e["snat_to"]) for e in expected)
    assert not v.undecided, f"{where}: undecided {v.undecided}"
    assert got == want, f"{where}: model {got}, expected {want}\n" + "\n".join(v.trace)
    for e in expected:
        p = next(p for p in v.paths if (p.outcome, p.dnat_to, p.snat_to if p.snat else None) ==
                 (e["outcome"], e["dnat_to"], e["snat_to"]))
        if "by" in e:
            assert any(e["by"] in d for d in p.decided_by), f"{where}: {e['by']!r} not in {p.decided_by}"
        if "ctmark" in e:
            assert p.ctmark == e["ctmark"], f"{where}: ctmark {p.ctmark:#x}, expected {e['ctmark']:#x}"


@pytest.mark.parametrize("cni,pkt", _cases())
def test_manifest_packet_on_the_lab_copy(cni, pkt):
    node = _lab_node(cni)
    v = node.explain(pkt["src"], pkt["dst"], pkt["dport"], pkt["proto"], sport=pkt["sport"],
                     in_iface=pkt["in_iface"], local=pkt["local"], out_iface=pkt.get("out_iface"))
    _check_paths(v, pkt["paths"], f"{cni} {pkt['name']}")


@pytest.mark.parametrize("cni,pkt", _cases(only_named=True))
def test_manifest_packet_on_the_original(cni, pkt, tmp_path):
    """The same packet under the CNI's own interface names gives the same paths."""
    _, original, ipset = _files(cni)
    names = MANIFEST["cnis"][cni]["original_node"]
    addr, route = _original_node_files(cni, tmp_path)
    node = load_files(str(original), ipset, None, ip_addr=str(addr), ip_route=str(route))
    out = names[pkt["out_iface"]] if pkt.get("out_iface") else None
    v = node.explain(pkt["src"], pkt["dst"], pkt["dport"], pkt["proto"], sport=pkt["sport"],
                     in_iface=names.get(pkt["in_iface"]) if pkt["in_iface"] else None,
                     local=pkt["local"], out_iface=out)
    _check_paths(v, pkt["paths"], f"{cni} (original names) {pkt['name']}")


# ----------------------------------------------------------------- kube_services and the CLI on the originals

SERVICE_ROWS = {("ClusterIP", "198.18.5.1", 80): "n/a", ("ClusterIP", "198.18.5.2", 443): "n/a",
                ("ClusterIP", "198.18.5.2", 53): "n/a", ("ClusterIP", "198.18.5.1", 6379): "n/a",
                ("LoadBalancer", "198.18.6.1", 80): "Cluster", ("LoadBalancer", "198.18.6.2", 443): "Local",
                ("LoadBalancer", "198.18.6.3", 6379): "Local", ("NodePort", "*", 30080): "Cluster",
                ("NodePort", "*", 30443): "Local"}
ENDPOINT_IPS = {"198.18.1.2", "198.18.1.5", "198.18.1.6", "198.18.3.1", "198.18.3.2", "198.18.3.3"}


def _probe(evidence: list[str]) -> str | None:
    for e in evidence:
        m = re.search(r"packet model, pod (\S+)", e)
        if m:
            return m.group(1)
    return None


@pytest.mark.parametrize("cni", CNIS)
def test_kube_services_on_the_original(cni):
    """kube-proxy's Services read from a node that has the CNI's rules too; the probe pod
    is no endpoint (the pod CIDR's .2 is the cache Service's only endpoint here)."""
    _, original, ipset = _files(cni)
    node = load_files(str(original), ipset, None, local_ips=NODE_IPS)
    got = {(s.kind, s.vip, s.port): s for s in kube_services(node)}
    assert {k: s.policy for k, s in got.items()} == SERVICE_ROWS
    assert got[("LoadBalancer", "198.18.6.1", 80)].node_ports == [30080]
    cache = got[("LoadBalancer", "198.18.6.3", 6379)]
    probe = _probe(cache.evidence)
    assert probe is not None and probe not in ENDPOINT_IPS, cache.evidence
    assert cache.snat_on_egress is not True, cache.evidence  # no hairpin: the probe is not the endpoint


def _services_json(capsys, args: list[str]) -> dict:
    assert main(["explain", *args, "--services", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return {(r["kind"], r["vip"], r["port"]): r for r in rows}


def _expected_snat(cni: str, vip: str, port: int) -> bool | None:
    """What the manifest's pod packet to this VIP says: True/False when every path agrees."""
    for p in MANIFEST["cnis"][cni]["packets"]:
        if p["src"] == "198.18.1.3" and p["dst"] == vip and p["dport"] == port and not p["local"]:
            vals = {e["snat_to"] is not None for e in p["paths"] if e["outcome"] != "dropped"}
            return vals.pop() if len(vals) == 1 else None
    raise KeyError((vip, port))


@pytest.mark.parametrize("cni", CNIS)
def test_cli_services_uses_the_interface_given(cni, capsys, tmp_path):
    """`explain --iptables original.txt --services --in-iface <the CNI's pod interface>`:
    the pod packet of each row arrives on that interface, so rules matching -i decide it,
    and the rows agree with the manifest's pod -> VIP packets."""
    _, original, ipset = _files(cni)
    names = MANIFEST["cnis"][cni]["original_node"]
    addr, route = _original_node_files(cni, tmp_path)
    base = ["--iptables", str(original), "--ip-addr", str(addr), "--ip-route", str(route)]
    if ipset:
        base += ["--ipset", ipset]
    rows = _services_json(capsys, [*base, "--in-iface", names["n-c"], "--src", "198.18.1.3"])
    for vip, port in (("198.18.6.1", 80), ("198.18.6.2", 443), ("198.18.6.3", 6379), ("198.18.5.1", 80),
                      ("198.18.5.2", 53)):
        kind = "LoadBalancer" if vip.startswith("198.18.6.") else "ClusterIP"
        row = rows[(kind, vip, port)]
        assert row["snat_on_egress"] == _expected_snat(cni, vip, port), (cni, vip, row["evidence"])
        assert any(f"in via {names['n-c']}" in e for e in row["evidence"]), row["evidence"]
    # where the CNI's rules match the pod interface, the interface is what decided the rows
    pod_if = names["n-c"]
    if any(p == pod_if or (p.endswith("+") and pod_if.startswith(p[:-1])) for p in _ifaces(original.read_text())):
        bare = _services_json(capsys, [*base, "--src", "198.18.1.3"])
        assert {k: r["snat_on_egress"] for k, r in bare.items()} != \
            {k: r["snat_on_egress"] for k, r in rows.items()}


@pytest.mark.parametrize("cni", CNIS)
def test_cli_services_default_probe(cni, capsys, tmp_path):
    """Without --src the probe pod is chosen by natlens: still no endpoint, still the pod interface."""
    _, original, ipset = _files(cni)
    names = MANIFEST["cnis"][cni]["original_node"]
    addr, route = _original_node_files(cni, tmp_path)
    args = ["--iptables", str(original), "--ip-addr", str(addr), "--ip-route", str(route),
            "--in-iface", names["n-c"]] + (["--ipset", ipset] if ipset else [])
    rows = _services_json(capsys, args)
    cache = rows[("LoadBalancer", "198.18.6.3", 6379)]
    assert _probe(cache["evidence"]) not in ENDPOINT_IPS | {None}, cache["evidence"]
    assert cache["snat_on_egress"] is False, cache["evidence"]
