"""A three-namespace lab (used by test_kernel_truth.py and test_kernel_truth_nft.py) for the kernel truth test: client -> node (rules here) -> peer.

    client  c0 198.18.1.2-.6/24 ----- n-c 198.18.1.1/24   node   n-p 198.18.2.1/24 ----- p0 198.18.2.2/24  peer
                                      kube-ipvs0 198.18.5.1, .2 (as kube-proxy IPVS mode binds VIPs)
                                      routes 198.18.3/24, 198.18.4/24, 198.18.6/24 via the peer

The peer drops everything, so nothing answers; the node's conntrack table shows
the NAT decision of each first packet (original vs reply tuple). Namespaces have a
per-run prefix and are always deleted.

``Lab.load`` swaps in iptables rules and ipsets; ``Lab.load_nft`` swaps in a whole
nft rule set (optionally with iptables-nft rules and ipsets beside it) and returns
what the kernel prints back: ``nft list ruleset``, ``nft -j list ruleset``,
iptables-save and ipset save.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from natlens.netfilter import NodeRules, parse_ip_addr, parse_ipset, parse_iptables_save
from natlens.netfilter.node import parse_ip_route

# tests/conftest.py by path: "from conftest import" gets whichever conftest pytest imported
# last (tests/report's when both directories are collected, `pytest tests/report tests/netfilter`).
_spec = importlib.util.spec_from_file_location("natlens_tests_conftest", Path(__file__).parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
netns_unavailable_reason = _conftest.netns_unavailable_reason

SENDER = r"""
import json, socket, sys, time
socks = []
for src, sport, dst, dport, proto in json.loads(sys.argv[1]):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((src, sport))
        s.setblocking(False)
        if proto == "tcp":
            s.connect_ex((dst, dport))
        else:
            s.sendto(b"natlens", (dst, dport))
    except OSError:
        pass
    socks.append(s)
time.sleep(0.15)
for s in socks:
    s.close()
"""

CLIENT_IPS = [f"198.18.1.{i}" for i in range(2, 7)]
NODE_IPS = ["198.18.1.1", "198.18.2.1", "198.18.5.1", "198.18.5.2"]
EMPTY_TABLES = "".join(f"*{t}\nCOMMIT\n" for t in ("raw", "mangle", "nat", "filter", "security"))
# Conntrack runs in a namespace only once some rule needs it; this one (a LOG, which the model
# passes over) makes it run even for rule sets with no NAT, so "no entry" always means dropped.
CT_ON = ("*security\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         '-A OUTPUT -m conntrack --ctstate INVALID -j LOG --log-prefix "natlens-ct-on "\nCOMMIT\n')


# The nft counterpart of CT_ON, for rule sets with no ct expression and no nat chain: a
# native table of its own (iptables-nft keeps out of it) whose one rule never matches a
# first packet, so the model passes over it.
NFT_CT_ON = ("table ip natlens-ct-on {\n\tchain output {\n"
             "\t\ttype filter hook output priority 50; policy accept;\n"
             "\t\tct state invalid counter\n\t}\n}\n")


@dataclass
class NftLoaded:
    """What the kernel prints back after Lab.load_nft: the model reads these, not the input."""

    text: str       # nft list ruleset
    json: str       # nft -j list ruleset
    iptables: str   # iptables-save (the iptables-nft tables, as iptables sees them)
    ipset: str      # ipset save


def _run(args: list[str], input: str | None = None, check: bool = True) -> str:
    r = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Lab:
    def __init__(self, prefix: str):
        self.c, self.n, self.p = prefix + "c", prefix + "n", prefix + "p"

    def ns(self, ns: str, *args: str, input: str | None = None, check: bool = True) -> str:
        return _run(["ip", "netns", "exec", ns, *args], input=input, check=check)

    def build(self) -> None:
        for ns in (self.c, self.n, self.p):
            _run(["ip", "netns", "add", ns])
        c, n, p = self.c, self.n, self.p
        _run(["ip", "link", "add", "n-c", "netns", n, "type", "veth", "peer", "name", "c0", "netns", c])
        _run(["ip", "link", "add", "n-p", "netns", n, "type", "veth", "peer", "name", "p0", "netns", p])
        # kube-ipvs0 holds VIPs as in IPVS mode (a dummy there; a veth here: no dummy module needed)
        self.ns(n, "ip", "link", "add", "kube-ipvs0", "type", "veth", "peer", "name", "kd1")
        for ns in (c, n, p):
            self.ns(ns, "ip", "link", "set", "lo", "up")
        for ip in CLIENT_IPS:
            self.ns(c, "ip", "addr", "add", f"{ip}/24", "dev", "c0")
        self.ns(c, "ip", "link", "set", "c0", "up")
        self.ns(c, "ip", "route", "add", "default", "via", "198.18.1.1")
        self.ns(n, "ip", "addr", "add", "198.18.1.1/24", "dev", "n-c")
        self.ns(n, "ip", "addr", "add", "198.18.2.1/24", "dev", "n-p")
        self.ns(n, "ip", "addr", "add", "198.18.5.1/32", "dev", "kube-ipvs0")
        self.ns(n, "ip", "addr", "add", "198.18.5.2/32", "dev", "kube-ipvs0")
        for dev in ("n-c", "n-p", "kube-ipvs0", "kd1"):
            self.ns(n, "ip", "link", "set", dev, "up")
        for net in ("198.18.3.0/24", "198.18.4.0/24", "198.18.6.0/24"):
            self.ns(n, "ip", "route", "add", net, "via", "198.18.2.2")
        self.ns(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        self.ns(p, "ip", "addr", "add", "198.18.2.2/24", "dev", "p0")
        self.ns(p, "ip", "link", "set", "p0", "up")
        self.ns(p, "ip", "route", "add", "default", "via", "198.18.2.1")
        self.ns(p, "iptables", "-A", "INPUT", "-j", "DROP")

    def destroy(self) -> None:
        for ns in (self.c, self.n, self.p):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def load(self, iptables: str, ipset: str) -> tuple[str, str]:
        """Swap the node's rules and sets; returns what iptables-save / ipset save print back."""
        self.ns(self.n, "iptables-restore", input=EMPTY_TABLES)
        self.ns(self.n, "ipset", "destroy")
        if ipset.strip():
            self.ns(self.n, "ipset", "restore", input=ipset)
        self.ns(self.n, "iptables-restore", input=iptables + CT_ON)
        self.ns(self.n, "conntrack", "-F", check=False)
        return self.ns(self.n, "iptables-save"), self.ns(self.n, "ipset", "save")

    def load_nft(self, nft: str, iptables: str = "", ipset: str = "",
                 ct_on: bool = True) -> NftLoaded:
        """Replace the node's whole nft rule set: ``nft flush ruleset``, ipsets, ``nft -f -``.

        ``iptables`` (iptables-restore input) is loaded after the nft rule set, so its
        tables live in nft too (nf_tables backend) and, at an equal priority, their base
        chains were registered after the nft ones. ``ct_on`` adds NFT_CT_ON.
        """
        n = self.n
        self.ns(n, "nft", "flush", "ruleset")   # also the iptables-nft tables: no set is in use
        self.ns(n, "ipset", "destroy")
        if ipset.strip():
            self.ns(n, "ipset", "restore", input=ipset)
        self.ns(n, "nft", "-f", "-", input=nft + (NFT_CT_ON if ct_on else ""))
        if iptables.strip():
            self.ns(n, "iptables-restore", input=iptables)
        self.ns(n, "conntrack", "-F", check=False)
        return self.listings()

    def nft_apply(self, commands: str) -> NftLoaded:
        """Run one more ``nft -f -`` transaction (an agent restarting, say); the new listings."""
        self.ns(self.n, "nft", "-f", "-", input=commands)
        self.ns(self.n, "conntrack", "-F", check=False)
        return self.listings()

    def listings(self) -> NftLoaded:
        """What the node's nft, iptables-save and ipset print now."""
        n = self.n
        return NftLoaded(self.ns(n, "nft", "list", "ruleset"), self.ns(n, "nft", "-j", "list", "ruleset"),
                         self.ns(n, "iptables-save"), self.ns(n, "ipset", "save"))

    def node_dumps(self) -> tuple[str, str]:
        return self.ns(self.n, "ip", "-o", "addr"), self.ns(self.n, "ip", "route")

    def send(self, from_client: list, from_node: list) -> dict[tuple, dict]:
        """Send first packets [(src, sport, dst, dport, proto)]; -> {(proto, src, sport): conntrack}.

        Reads conntrack's NEW events, not the table: an entry killed at once (a local RST
        answering a SYN) still had its NAT decision in the event, and the event's mark is the
        one at confirmation, before any answer (RST, ICMP error) passed the rules.
        """
        ev = subprocess.Popen(["ip", "netns", "exec", self.n, "conntrack", "-E", "-e", "NEW"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.15)
        procs = []
        for ns, pkts in ((self.c, from_client), (self.n, from_node)):
            if pkts:
                procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER,
                                               json.dumps(pkts)]))
        for pr in procs:
            pr.wait(timeout=30)
        time.sleep(0.05)
        ev.terminate()
        events = parse_conntrack(ev.communicate(timeout=10)[0])
        self.ns(self.n, "conntrack", "-F", check=False)
        return events


def parse_conntrack(text: str) -> dict[tuple, dict]:
    entries = {}
    for line in text.splitlines():
        toks = line.split()
        if not toks or "=" not in line:
            continue
        kv: dict[str, list[str]] = {}
        for t in toks:
            if "=" in t:
                k, _, v = t.partition("=")
                kv.setdefault(k, []).append(v)
        proto = next((t for t in toks if t in ("tcp", "udp")), "")
        if "src" not in kv or len(kv["src"]) < 2 or "sport" not in kv:
            continue
        e = {"orig_src": kv["src"][0], "orig_dst": kv["dst"][0], "orig_sport": int(kv["sport"][0]),
             "orig_dport": int(kv["dport"][0]), "reply_src": kv["src"][1], "reply_dst": kv["dst"][1],
             "reply_sport": int(kv["sport"][1]), "reply_dport": int(kv["dport"][1]),
             "mark": int(kv.get("mark", ["0"])[0])}
        entries[(proto, e["orig_src"], e["orig_sport"])] = e
    return entries


def _lab(tools: tuple[str, ...], prefix: str):
    """Build the lab (skip when namespaces or a tool are missing), yield it, always delete it."""
    reason = netns_unavailable_reason("iptables-restore", "ipset", "conntrack", *tools)
    if reason:
        pytest.skip(reason)
    lab = Lab(f"{prefix}-{os.getpid()}-")
    try:
        lab.build()
    except RuntimeError as exc:
        lab.destroy()
        pytest.skip(f"cannot build the namespace lab: {exc}")
    try:
        yield lab
    finally:
        lab.destroy()


def kernel_lab_fixture():
    """The lab for iptables rule sets (test_kernel_truth.py)."""
    yield from _lab((), "nlnf")


def kernel_nft_lab_fixture():
    """The lab for nft rule sets (test_kernel_truth_nft.py): needs nft, own namespace names."""
    yield from _lab(("nft",), "nlnft")


# the iptables comparison: the model's paths against what conntrack saw


def _expected(path, src: str, sport: int, dst: str, dport: int) -> tuple:
    if not path.conntrack:
        return ("absent",)
    rdst, _, rport = (path.dnat_to or f"{dst}:{dport}").rpartition(":")
    return ("present", rdst, int(rport), path.snat_to if path.snat else src, path.ctmark)


def _observed(entry, src: str) -> tuple:
    if entry is None:
        return ("absent",)
    return ("present", entry["reply_src"], entry["reply_sport"], entry["reply_dst"], entry["mark"])


def run_case(lab: Lab, iptables: str, ipset: str, packets: list[tuple], stats: dict) -> list[str]:
    """packets: (src, sport, dst, dport, proto, local). Returns disagreements (empty = agree)."""
    saved_rules, saved_sets = lab.load(iptables, ipset)
    addr, route = lab.node_dumps()
    node = NodeRules(parse_iptables_save(saved_rules, "iptables-save"), parse_ipset(saved_sets, "ipset"),
                     None, parse_ip_addr(addr), routes=parse_ip_route(route))
    seen = lab.send([p[:5] for p in packets if not p[5]], [p[:5] for p in packets if p[5]])
    bad = []
    for src, sport, dst, dport, proto, local in packets:
        v = node.explain(src, dst, dport, proto, sport=sport, in_iface=None if local else "n-c",
                         local=local)
        if v.undecided:
            stats["undecided"] += 1
            bad.append(f"{proto} {src}:{sport}->{dst}:{dport} local={local}: undecided {v.undecided}")
            continue
        got = _observed(seen.get((proto, src, sport)), src)
        options = [_expected(p, src, sport, dst, dport) for p in v.paths]
        stats["compared"] += 1
        stats["branched"] += len(options) > 1
        stats["outcomes"].add(got[0] if got[0] == "absent" else
                              ("dnat" if got[1] != dst else "") + ("snat" if got[3] != src else ""))
        if got not in options:
            bad.append(f"{proto} {src}:{sport}->{dst}:{dport} local={local}: kernel {got}, model "
                       f"{options}\n  " + "\n  ".join(v.trace))
    return bad
