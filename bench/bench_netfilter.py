"""Netfilter model speed: kube-proxy dumps of 10,000 Services in each proxy mode.

Generates the dump (lib/natlens/netfilter/generate.py: KUBE-SVC-/SEP-/EXT-/SVL-,
statistic branches, node ports; well over 100,000 rules), writes it to a temp
file, then times:

* load: read + parse + compile every rule (what `natlens explain` does first);
* query: NodeRules.explain for pod -> cluster IP, pod -> LB VIP and
  outside -> node port packets (mean and worst, after the first query);
* the same for an IPVS-mode dump of 10,000 Services (big ipsets, few rules);
* the same for an nftables-mode rule set of 10,000 Services (verdict maps), as the
  ``nft -f`` command file kube-proxy writes (the parser reads it like nft list ruleset).

The baseline, in the same process, is reading the file and splitting every line
into tokens (str.split): the least any parser costs. Prints ratios against it.

    python bench/bench_netfilter.py [--services 10000] [--queries 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import subprocess
import tempfile
import time

from natlens.netfilter import NodeRules, load_files
from natlens.netfilter.generate import (
    kube_proxy_iptables,
    kube_proxy_ipvs,
    kube_proxy_nftables,
    many_services,
)

ADDR = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0    inet 198.18.0.10/16 brd 198.18.255.255 scope global eth0\n")


def baseline(path: str) -> float:
    t = time.perf_counter()
    with open(path) as f:
        n = sum(len(line.split()) for line in f)
    assert n > 0
    return time.perf_counter() - t


def time_queries(node: NodeRules, packets: list[tuple], label: str) -> None:
    t = time.perf_counter()
    node.explain(*packets[0][:3])  # the first query builds the chain indexes it walks
    first = time.perf_counter() - t
    times = []
    for src, dst, dport, in_iface in packets:
        t = time.perf_counter()
        v = node.explain(src, dst, dport, in_iface=in_iface)
        times.append(time.perf_counter() - t)
        assert not v.undecided, v.undecided
    times.sort()
    print(f"  {label}: {len(times)} queries  mean {1000 * sum(times) / len(times):.2f} ms  "
          f"p50 {1000 * times[len(times) // 2]:.2f} ms  max {1000 * times[-1]:.2f} ms  "
          f"(first {1000 * first:.1f} ms)")


def load_and_queries(node: NodeRules, load: float, base: float, svcs: list, queries: int,
                     rng: random.Random) -> None:
    """The load line, then pod -> cluster IP, pod -> LB VIP and outside -> node port queries."""
    print(f"  load (parse + compile): {load:.2f} s   baseline (read + split): {base:.2f} s   "
          f"ratio {load / base:.1f}x")
    pods = [f"198.18.{128 + rng.randrange(100)}.{rng.randrange(2, 250)}" for _ in range(queries)]
    picks = [svcs[rng.randrange(len(svcs))] for _ in range(queries)]
    time_queries(node, [(p, s.cluster_ip, s.port, "cni0") for p, s in zip(pods, picks, strict=True)],
                 "pod -> cluster IP")
    time_queries(node, [(p, s.lb_ips[0], s.port, "cni0") for p, s in zip(pods, picks, strict=True)],
                 "pod -> LB VIP   ")
    time_queries(node, [("198.18.64.9", "198.18.0.10", s.node_port, "eth0") for s in picks],
                 "outside -> node port")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=300)
    a = ap.parse_args()
    rng = random.Random(1)
    svcs = many_services(a.services)
    with tempfile.TemporaryDirectory() as tmp:
        addr = os.path.join(tmp, "ip-addr.txt")
        with open(addr, "w") as f:
            f.write(ADDR)
        for mode in ("iptables", "ipvs"):
            t = time.perf_counter()
            if mode == "iptables":
                d = kube_proxy_iptables(svcs, cluster_cidr="198.18.128.0/17")
            else:
                d = kube_proxy_ipvs(svcs, node_ips=["198.18.0.10"], cluster_cidr="198.18.128.0/17")
            gen = time.perf_counter() - t
            ipt = os.path.join(tmp, f"{mode}.txt")
            ips = os.path.join(tmp, f"{mode}-ipset.txt")
            ipv = os.path.join(tmp, f"{mode}-ipvs.txt")
            for path, text in ((ipt, d.iptables), (ips, d.ipset), (ipv, d.ipvsadm)):
                with open(path, "w") as f:
                    f.write(text)
            base = baseline(ipt) + (baseline(ips) if d.ipset else 0)
            t = time.perf_counter()
            node = load_files(ipt, ips if d.ipset else None, ipv if d.ipvsadm else None, addr)
            load = time.perf_counter() - t
            rules = node.ruleset.rule_count()
            members = sum(len(s.entries) for s in node.sets.values())
            print(f"{mode} mode, {a.services} services: {rules:,} rules, "
                  f"{sum(len(c) for c in node.ruleset.tables.values()):,} chains, {members:,} set "
                  f"members, {len(node.ipvs):,} ipvs services ({os.path.getsize(ipt) / 1e6:.1f} MB; "
                  f"generated in {gen:.1f} s)")
            load_and_queries(node, load, base, svcs, a.queries, rng)
        nftables_mode(svcs, tmp, addr, a.queries, rng)


def nftables_mode(svcs: list, tmp: str, addr: str, queries: int, rng: random.Random) -> None:
    """nftables mode: generate, list through the kernel's nft where it can (root), then
    load (parse + compile) each format and query; the same ratios as above.

    nft refuses two elements with one key, so only the first 2,768 Services keep their
    node port (the 30000-32767 range; the other modes' dumps reuse ports)."""
    svcs = [dataclasses.replace(s, node_port=s.node_port if i < 2768 else None)
            for i, s in enumerate(svcs)]
    t = time.perf_counter()
    d = kube_proxy_nftables(svcs, node_ips=["198.18.0.10"], cluster_cidr="198.18.128.0/17")
    gen = time.perf_counter() - t
    files = {"nft -f commands": os.path.join(tmp, "nft-ruleset.nft")}
    with open(files["nft -f commands"], "w") as f:
        f.write(d.nft)
    files.update(_kernel_listings(d.nft, tmp))
    for label, path in files.items():
        base = baseline(path)
        t = time.perf_counter()
        node = load_files(None, None, None, addr, nft=path)
        load = time.perf_counter() - t
        nft = node.nft
        chains = sum(len(t.chains) for t in nft.tables.values())
        elements = sum(len(s.elements) for t in nft.tables.values() for s in t.sets.values())
        print(f"nftables mode ({label}), {len(svcs)} services: {nft.rule_count():,} rules, {chains:,} "
              f"chains, {elements:,} map/set elements ({os.path.getsize(path) / 1e6:.1f} MB; generated "
              f"in {gen:.1f} s)")
        load_and_queries(node, load, base, svcs[:2768], queries, rng)


def _kernel_listings(rules: str, tmp: str) -> dict[str, str]:
    """`nft list ruleset` and `nft -j list ruleset` of the rule set loaded into a throwaway
    network namespace: what a real node's dumps look like. Empty without root or nft."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        print("  (not root or no nft: the kernel's own listings are not measured)")
        return {}
    ns = f"nlbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                       check=True, capture_output=True)
        out = {}
        for label, flag, name in (("nft list ruleset", [], "nft-ruleset.txt"),
                                  ("nft -j list ruleset", ["-j"], "nft-ruleset.json")):
            text = subprocess.run(["ip", "netns", "exec", ns, "nft", *flag, "list", "ruleset"],
                                  check=True, capture_output=True, text=True).stdout
            out[label] = os.path.join(tmp, name)
            with open(out[label], "w") as f:
                f.write(text)
        return out
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
