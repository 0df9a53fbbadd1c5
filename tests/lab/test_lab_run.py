"""The lab on the real kernel: outcomes asserted from ground truth and from the captures.

Needs root, network namespaces and the lab's tools (skips with the reason otherwise;
CI runs as root). Three scenarios, run once per module: Local (2 nodes, eth0 + any
captures), and at the same time, under two prefixes, Cluster (2 nodes) and mixed
Local + Cluster (3 nodes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import netns_unavailable_reason, run_labs
from labhelpers import (
    RST,
    assert_loopback_signature,
    ground_truth,
    node_ip,
    service,
    synacks,
    syns,
    tcp_packets,
)

import natlens
from natlens.errors import NatlensError
from natlens.lab import netns
from natlens.lab.run import Testbed, run

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
pytestmark = [pytest.mark.root, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

PID = os.getpid()
N = 20


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "local"
    run(out, ["Local"], connections=N, nodes=2, any_capture=True, prefix=f"nlt{PID}l-")
    return out


@pytest.fixture(scope="module")
def cluster_and_mixed(tmp_path_factory) -> dict[str, Path]:
    """Two labs at the same time under different prefixes (they must not collide)."""
    jobs = {"cluster": (["Cluster"], 2), "mixed": (["Local", "Cluster"], 3)}
    return run_labs(tmp_path_factory.mktemp("lab"), {
        name: {"policies": policies, "connections": N, "nodes": nodes, "prefix": f"nlt{PID}{name[0]}-"}
        for name, (policies, nodes) in jobs.items()})


def test_local_about_half_fail_each_failure_a_loopback(local):
    facts, conns = ground_truth(local)
    assert len(conns) == N
    failed = [c for c in conns if c["outcome"] == "failed"]
    # LB pool = node-1 and node-2 (both have an endpoint): half the picks are the client's node.
    assert 0.15 * N <= len(failed) <= 0.85 * N, [c["lb_node"] for c in conns]
    for c in conns:
        assert c["snat"] is False, c  # Local: the pod IP leaves the node
        assert c["lb_node"] in ("node-1", "node-2"), c
        assert c["loopback"] == (c["lb_node"] == facts["client"]["node"])
        assert (c["outcome"] == "failed") == c["loopback"], c
    assert all(c["error"] == "timeout" for c in failed)
    ok = [c for c in conns if c["outcome"] == "connected"]
    assert all(c["served_by"] == "web-2" for c in ok)  # Local: node-2's own endpoint
    tally = facts["services"][0]
    assert tally["failed"] == tally["loopback"] == tally["loopback_failed"] == len(failed)


def test_local_loopback_on_the_client_nodes_nic(local):
    """Each failed SYN leaves for the VIP and comes back, same ISN, to this node's NodePort."""
    facts, conns = ground_truth(local)
    assert_loopback_signature(local, facts, conns, "web-local")


def test_local_any_capture_shows_dnat_wrong_source_and_rst(local):
    facts, conns = ground_truth(local)
    svc = facts["topology"]["services"][0]
    web1 = next(p["ip"] for p in facts["topology"]["pods"] if p["name"] == "web-1")
    me = node_ip(facts, "node-1")
    client_ip = facts["client"]["ip"]
    pkts = tcp_packets(local / "nodes" / "node-1" / "any.pcap")
    assert {p["direction"] for p in pkts} >= {"in", "out"}
    vip = (svc["vip"], svc["port"])
    wrong_sources = {(web1, svc["target_port"]), (me, svc["node_port"])}
    for c in [c for c in conns if c["outcome"] == "failed"]:
        mine = [p for p in pkts if c["sport"] in (p["sport"], p["dport"])]
        # DNATed to the local endpoint,
        assert any(p["dst"] == web1 and p["dport"] == svc["target_port"]
                   for p in syns(mine) if p["src"] == client_ip), c
        # which answers the pod from the wrong source (never from the VIP),
        sa = [p for p in synacks(mine) if p["dst"] == client_ip]
        assert sa and {(p["src"], p["sport"]) for p in sa} <= wrong_sources, sa
        assert vip not in {(p["src"], p["sport"]) for p in sa}
        # and the pod resets it.
        assert any(p["flags"] & RST and p["src"] == client_ip for p in mine), c


def test_cluster_all_connect_snat_to_node_ip(cluster_and_mixed):
    bundle = cluster_and_mixed["cluster"]
    facts, conns = ground_truth(bundle)
    svc = facts["topology"]["services"][0]
    me = node_ip(facts, "node-1")
    assert [c["outcome"] for c in conns] == ["connected"] * N
    assert all(c["snat"] and c["wire_src"] == me and c["lb_node"] == "node-2" for c in conns)
    pkts = tcp_packets(bundle / "nodes" / "node-1" / "eth0.pcap")
    to_vip = [p for p in syns(pkts) if (p["dst"], p["dport"]) == (svc["vip"], svc["port"])]
    assert to_vip and {p["src"] for p in to_vip} == {me}
    assert {p["sport"] for p in to_vip} == {c["wire_sport"] for c in conns}
    # Nothing comes back to the client's node's NodePort: the LB never picks it.
    assert not [p for p in syns(pkts) if p["dport"] == svc["node_port"]]
    node2 = tcp_packets(bundle / "nodes" / "node-2" / "eth0.pcap")
    assert {p["sport"] for p in syns(node2) if p["src"] == me
            and p["dport"] == svc["node_port"]} == {c["wire_sport"] for c in conns}


def test_mixed_local_and_cluster_services_both_used(cluster_and_mixed):
    bundle = cluster_and_mixed["mixed"]
    facts, conns = ground_truth(bundle)
    me, client_ip = node_ip(facts, "node-1"), facts["client"]["ip"]
    loc, clu = service(facts, "web-local"), service(facts, "web-cluster")
    assert loc["lb_pool"] == ["node-1", "node-2"]  # node-3 has no endpoint
    assert clu["lb_pool"] == ["node-1", "node-2", "node-3"]
    by = {name: [c for c in conns if c["service"] == name] for name in ("web-local", "web-cluster")}
    assert len(by["web-local"]) == len(by["web-cluster"]) == N
    assert all((c["outcome"] == "failed") == c["loopback"] and not c["snat"]
               for c in by["web-local"])
    assert any(c["loopback"] for c in by["web-local"])
    assert_loopback_signature(bundle, facts, conns, "web-local")
    assert all(c["outcome"] == "connected" and c["snat"] and c["lb_node"] != "node-1"
               for c in by["web-cluster"])
    # node-3 has no endpoint: under Cluster it forwards to web-1/web-2 on other nodes.
    via3 = [c for c in by["web-cluster"] if c["lb_node"] == "node-3"]
    assert via3 and {c["served_by"] for c in via3} <= {"web-1", "web-2"}
    pkts = syns(tcp_packets(bundle / "nodes" / "node-1" / "eth0.pcap"))
    assert {p["src"] for p in pkts if p["dst"] == loc["vip"]} == {client_ip}
    assert {p["src"] for p in pkts if p["dst"] == clu["vip"]} == {me}


def test_bundle_layout_and_kubectl_shapes(local):
    facts, conns = ground_truth(local)
    node_dir = local / "nodes" / "node-1"
    for name in ("eth0.pcap", "any.pcap", "iptables-save.txt", "ipset-save.txt", "ipvsadm.txt",
                 "conntrack.txt", "ip-addr.json", "ip-route.json", "collect-node.log"):
        assert (node_dir / name).stat().st_size > 0, name
    # tcpdump's counters, in collect-node.sh's words, so the analysis can report drops
    from natlens.bundle import capture_drops, load_node

    assert set(capture_drops(load_node(node_dir))) == {"eth0", "any"}
    import json

    nodes = json.loads((local / "cluster" / "nodes.json").read_text())["items"]
    pods = json.loads((local / "cluster" / "pods.json").read_text())["items"]
    svcs = json.loads((local / "cluster" / "services.json").read_text())["items"]
    ips = {n["metadata"]["name"]: [a["address"] for a in n["status"]["addresses"]
                                   if a["type"] == "InternalIP"] for n in nodes}
    assert ips == {"node-1": ["198.18.0.11"], "node-2": ["198.18.0.12"]}
    assert all(n["spec"]["podCIDR"] for n in nodes)
    client = next(p for p in pods if p["metadata"]["name"] == "client")
    assert (client["status"]["podIP"], client["spec"]["nodeName"]) == (facts["client"]["ip"], "node-1")
    (svc,) = svcs
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local"
    assert svc["spec"]["ports"][0]["nodePort"] == 30080
    # the default run: IPVS mode as on TKE, ipMode VIP (in the ipsets, not bound)
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "198.19.0.10", "ipMode": "VIP"}]
    assert (facts["proxy_mode"], facts["ip_mode"]) == ("ipvs", "VIP")
    # the IPVS stand-in is not node state: no nft-ruleset files, its table in ground-truth/
    assert not list(node_dir.glob("nft-ruleset.*"))
    assert "table ip natlens_ipvs" in (local / "ground-truth" / "ipvs-standin-node-1.nft").read_text()
    # kube-proxy's rules as the kernel holds them, in DESIGN.md section 1's shape.
    saved = (node_dir / "iptables-save.txt").read_text()
    for line in (
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER',
        '-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN',
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ):
        assert line in saved.splitlines(), line
    assert "natlens" not in saved.lower()  # the IPVS stand-in is not an iptables rule
    ipsets = (node_dir / "ipset-save.txt").read_text().splitlines()
    assert "add KUBE-LOAD-BALANCER-LOCAL 198.19.0.10,tcp:80" in ipsets
    assert "add KUBE-NODE-PORT-LOCAL-TCP 30080" in ipsets
    assert "-a -t 198.18.0.11:30080 -r 198.18.16.10:8080 -m -w 1" in (
        node_dir / "ipvsadm.txt").read_text()
    incident = yaml.safe_load((local / "incident.yaml").read_text())
    assert incident["title"] and incident["services"] == ["default/web-local"]
    assert incident["window"]["start"] < incident["window"]["end"]
    assert [c["label"] for c in facts["captures"]] == ["eth0", "any"] * 2
    assert all("0 packets dropped by kernel" in c["tcpdump"] for c in facts["captures"])


def test_labs_leave_nothing_behind(local, cluster_and_mixed):
    for tag in "lcm":
        assert netns.existing(f"nlt{PID}{tag}-") == []


def test_failure_inside_a_testbed_cleans_up():
    prefix = f"nlt{PID}x-"
    with pytest.raises(RuntimeError), Testbed(["Local"], 2, prefix=prefix) as bed:
        assert len(netns.existing(prefix)) == 6  # vpc, 2 nodes, 2 web pods, client
        servers = [p.pid for p in bed.lab.procs]
        raise RuntimeError("boom")
    assert netns.existing(prefix) == []
    for pid in servers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie_or_gone(pid)


def test_same_prefix_twice_is_refused():
    prefix = f"nlt{PID}d-"
    with Testbed(["Cluster"], 2, prefix=prefix):
        with pytest.raises(NatlensError, match="exist already"):
            Testbed(["Cluster"], 2, prefix=prefix).start()
        assert len(netns.existing(prefix)) == 6  # the first lab is untouched
    assert netns.existing(prefix) == []


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _natlens(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`natlens ...` in a child process (importable from this checkout even if not installed)."""
    env = dict(env or os.environ)
    lib = str(Path(natlens.__file__).resolve().parents[1])
    env["PYTHONPATH"] = lib + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "natlens", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_cleans_up(tmp_path, sig):
    prefix = f"nlt{PID}s{int(sig)}-"
    out = tmp_path / "bundle"
    p = _natlens("lab", "run", "--policy", "Local", "--connections", "200", "--out", str(out),
                 "--prefix", prefix)
    deadline = time.monotonic() + 60
    while not (out / "nodes" / "node-1" / "eth0.pcap").exists():  # captures are running
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert netns.existing(prefix) == []
    leftovers = [d for d in Path("/proc").iterdir() if d.name.isdigit()
                 and str(out).encode() in _cmdline(d)]
    assert leftovers == []
    assert not (out / "ground-truth" / "lab.json").exists()  # no bundle claims to be complete


def _cmdline(d: Path) -> bytes:
    try:
        return (d / "cmdline").read_bytes()
    except OSError:
        return b""


def test_missing_tool_is_one_line_naming_the_package(tmp_path):
    import shutil

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "iptables-restore", "iptables-save", "ipset", "nft", "conntrack"):
        (bindir / tool).symlink_to(shutil.which(tool))
    p = _natlens("lab", "run", "--out", str(tmp_path / "b"), env={**os.environ, "PATH": str(bindir)})
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "tcpdump" in err and "Debian package tcpdump" in err
    assert not (tmp_path / "b").exists()
