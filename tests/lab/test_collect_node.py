"""scripts/collect-node.sh run inside a lab node's namespace, as on a real node."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, netns_unavailable_reason
from labhelpers import syns, tcp_packets

from natlens.bundle import load_node
from natlens.lab.run import Testbed
from natlens.netfilter.conntrack import parse_conntrack

REASON = netns_unavailable_reason("iptables-restore", "ipset", "nft", "conntrack", "tcpdump")
pytestmark = [pytest.mark.root, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
SCRIPT = REPO / "scripts" / "collect-node.sh"


def _collect(ns: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["ip", "netns", "exec", ns, "bash", str(SCRIPT), *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def bed():
    with Testbed(["Local"], 2, prefix=f"nlt{os.getpid()}c-") as b:
        yield b


def test_collects_the_node_directory_while_traffic_flows(bed, tmp_path):
    node = bed.topo.node("node-1")
    # an IPv6 rule in the node's namespace (no address, no traffic): ip6tables-save must keep it
    subprocess.run(["ip", "netns", "exec", node.ns, "ip6tables", "-t", "nat", "-N", "NLT-V6"],
                   check=True)
    records: list[dict] = []
    client = threading.Thread(target=lambda: (time.sleep(0.7), records.extend(
        bed.run_client(tmp_path / "conns.jsonl", connections=6))))
    client.start()
    r = _collect(node.ns, "-d", "4", "-n", "node-1", "-o", str(tmp_path / "bundle"))
    client.join()
    assert r.returncode == 0, r.stderr
    d = tmp_path / "bundle" / "nodes" / "node-1"
    assert r.stdout.strip() == str(d)
    sports = {c["sport"] for c in records}
    assert len(sports) == 6
    for name in ("any.pcap", "eth0.pcap", "iptables-save.txt", "ipset-save.txt",
                 "conntrack.txt", "ip-addr.json", "ip-route.json", "collect-node.log"):
        assert (d / name).stat().st_size > 0, name
    assert "KUBE-LOAD-BALANCER-LOCAL" in (d / "iptables-save.txt").read_text()
    assert "add KUBE-LOAD-BALANCER 198.19.0.10,tcp:80" in (d / "ipset-save.txt").read_text()
    assert "198.18.0.11" in (d / "ip-addr.json").read_text()
    assert ":NLT-V6 - [0:0]" in (d / "ip6tables-save.txt").read_text()
    # nft's view: iptables-nft's tables (and here the lab's IPVS stand-in), text and JSON
    assert "table ip nat" in (d / "nft-ruleset.txt").read_text()
    assert json.loads((d / "nft-ruleset.json").read_text())["nftables"]
    assert "NLT-V6" not in (d / "iptables-save.txt").read_text()
    log = (d / "collect-node.log").read_text()
    assert "ok ip6tables-save -> ip6tables-save.txt" in log
    assert "ok nft list ruleset -> nft-ruleset.txt" in log
    assert "ok nft -j list ruleset -> nft-ruleset.json" in log
    # IPv6 conntrack entries are appended to conntrack.txt, after (not over) the IPv4 ones
    assert "ok conntrack -L -f ipv6 >> conntrack.txt" in log
    ct = parse_conntrack((d / "conntrack.txt").read_text())
    assert ct.skipped == 0 and sports <= {e.orig[2] for e in ct if e.orig[1] == "198.19.0.10"}
    # No IPVS in this kernel / no ipvsadm here: a note, not a failure.
    assert "ipvsadm" in log and ("skipped ipvsadm" in log or "failed ipvsadm" in log)
    assert "duration 4s reached" in log
    # The primary NIC is the default route's interface; both captures hold the client's SYNs.
    for cap in ("eth0.pcap", "any.pcap"):
        seen = {p["sport"] for p in syns(tcp_packets(d / cap)) if p["dst"] == "198.19.0.10"}
        assert sports <= seen, cap


def test_size_limit_stops_the_capture_and_missing_tools_are_notes(bed, tmp_path):
    node = bed.topo.node("node-2")
    # Only bash basics, ip and tcpdump: iptables-save, ipset, conntrack, ipvsadm are missing.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "tcpdump", "bash", "awk", "date", "stat", "sleep", "mkdir", "tee",
                 "head", "tr", "wc", "rm", "cat", "uname", "id", "grep", "hostname", "mv"):
        src = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                             text=True).stdout.strip()
        if src.startswith("/"):
            (bindir / tool).symlink_to(src)
    stop = threading.Event()

    def traffic() -> None:  # keep packets flowing on node-2 until the script is done
        while not stop.is_set():
            bed.run_client(tmp_path / "c.jsonl", connections=10, timeout=0.5)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        r = _collect(node.ns, "-d", "600", "-s", "0.005", "-n", "node-2", "-o",
                     str(tmp_path / "b"), path=str(bindir))
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    d = tmp_path / "b" / "nodes" / "node-2"
    log = (d / "collect-node.log").read_text()
    assert "size limit 0.005 MB reached" in log
    for tool, pkg in (("iptables-save", "iptables"), ("ip6tables-save", "iptables"), ("ipset", "ipset"),
                      ("conntrack", "conntrack"), ("ipvsadm", "ipvsadm"), ("nft", "nftables")):
        assert f"Debian package {pkg}" in log, tool
    assert not (d / "iptables-save.txt").exists() and not (d / "ip6tables-save.txt").exists()
    assert "skipped ip6tables-save: not installed" in log
    assert "skipped nft list ruleset: nft not installed (Debian package nftables)" in log
    assert not list(d.glob("nft-ruleset.*"))
    assert (d / "ip-addr.json").exists() and (d / "eth0.pcap").exists()


def test_legacy_tables_win_and_the_log_says_why_the_nft_dump_is_not_read(bed, tmp_path):
    node = bed.topo.node("node-2")
    legacy = [["iptables-legacy", "-t", "nat", "-N", "NLT-LEGACY"],
              ["ip6tables-legacy", "-t", "nat", "-N", "NLT-LEGACY6"]]
    if any(subprocess.run(["bash", "-c", f"command -v {c[0]}"], capture_output=True).returncode
           for c in legacy):
        pytest.skip("iptables-legacy / ip6tables-legacy not installed")
    try:
        for cmd in legacy:
            subprocess.run(["ip", "netns", "exec", node.ns, *cmd], check=True)
        r = _collect(node.ns, "-d", "0", "-A", "-n", "node-2", "-o", str(tmp_path / "b"))
    finally:
        for cmd in legacy:  # the chain goes; the empty legacy nat table changes nothing
            subprocess.run(["ip", "netns", "exec", node.ns, cmd[0], "-t", "nat", "-X", cmd[-1]],
                           capture_output=True)
    assert r.returncode == 0, r.stderr
    d = tmp_path / "b" / "nodes" / "node-2"
    assert ":NLT-LEGACY - [0:0]" in (d / "iptables-save.txt").read_text()
    assert ":NLT-LEGACY6 - [0:0]" in (d / "ip6tables-save.txt").read_text()
    assert "KUBE-LOAD-BALANCER-LOCAL" in (d / "iptables-nft-save.txt").read_text()
    assert (d / "ip6tables-nft-save.txt").exists()
    log = (d / "collect-node.log").read_text()
    for t in ("iptables", "ip6tables"):
        assert (f"{t}-legacy tables present: {t}-save.txt is {t}-legacy-save (kube-proxy's rules);"
                f" the nf_tables rules are kept in {t}-nft-save.txt for reference only - natlens"
                " does not read it") in log, log
    # what the bundle reader does with them: the legacy rules are read, the nft dump is not
    nd = load_node(d)
    assert nd.iptables == d / "iptables-save.txt"
    assert d / "iptables-nft-save.txt" in nd.not_read


def test_nftables_mode_node_keeps_kube_proxy_in_the_nft_dumps(tmp_path):
    """kube-proxy nftables mode: iptables-save has no KUBE rule, nft-ruleset.* have it all."""
    with Testbed(["Local"], 2, prefix=f"nlt{os.getpid()}f-", proxy_mode="nftables") as b:
        r = _collect(b.topo.node("node-1").ns, "-d", "0", "-A", "-n", "node-1",
                     "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    d = tmp_path / "b" / "nodes" / "node-1"
    assert "KUBE" not in (d / "iptables-save.txt").read_text()
    assert "table ip kube-proxy" in (d / "nft-ruleset.txt").read_text()
    doc = json.loads((d / "nft-ruleset.json").read_text())
    assert [o["table"]["name"] for o in doc["nftables"] if "table" in o] == ["kube-proxy"]
    log = (d / "collect-node.log").read_text()
    assert "ok nft -j list ruleset -> nft-ruleset.json" in log


def test_refuses_to_run_without_root(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "-o", str(tmp_path / "x")], capture_output=True,
                       text=True, env={**os.environ, "PATH": "/usr/bin:/bin"}, user=65534)
    assert r.returncode == 2 and "must run as root" in r.stderr
    assert not Path(tmp_path / "x").exists()
