"""Writes the CNI dumps in this directory: each CNI's documented rules beside kube-proxy.

    sudo python3 tests/netfilter/cni/build.py      # root: a scratch network namespace

For every CNI (see manifest.json for the upstream file and commit each rule set is
transcribed from) the rules are composed as the CNI and kube-proxy leave them on a node
(which one inserts its jumps first, which one appends), loaded into a scratch namespace
with iptables-restore / ipset restore and read back with iptables-save / ipset save, so
the files are exactly what iptables-save prints. Two iptables files per CNI:

* ``original.txt``: the CNI's own interface names (cni0, cali+, docker0, eni+, eth0 ...);
  parse-only, never loaded into the lab.
* ``iptables-save.txt``: the same rules with the lab's interface names (n-c pod side,
  n-p uplink), loadable into tests/netfilter/nflab.py's lab.

Addresses are the lab's in both (198.18.0.0/15 only); manifest.json maps them back to
each project's defaults. The kube-proxy nat table is natlens.netfilter.generate's
iptables mode (1.28 shape); its filter table (KUBE-FORWARD with the nfacct counter of
1.29+, KUBE-FIREWALL, the canary chains) is transcribed here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "lib"))

from natlens.netfilter.generate import Service, kube_proxy_iptables  # noqa: E402

TABLES = ("raw", "mangle", "nat", "filter")
BUILTIN = {"raw": ("PREROUTING", "OUTPUT"),
           "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
           "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
           "filter": ("INPUT", "FORWARD", "OUTPUT")}

# ------------------------------------------------------------------ the lab's node
#   198.18.1.0/24  this node's pod CIDR (n-c); pods 198.18.1.2-.6
#   198.18.2.0/24  node network (n-p); node 198.18.2.1, peer (another node, gateway) .2
#   198.18.3.0/24  another node's pods (via the peer)
#   198.18.4.0/24, 198.18.6.0/24  outside the cluster (via the peer); LB IPs in 198.18.6/24
#   198.18.5.1, 198.18.5.2  cluster IPs (kd0), service CIDR 198.18.5.0/24
NODE_IP = "198.18.2.1"
POD_CIDR = "198.18.1.0/24"
CLUSTER_NET = "198.18.0.0/22"   # flannel/weave/k3s network: this node's and the other node's pods
SERVICE_CIDR = "198.18.5.0/24"


def services() -> list[Service]:
    return [
        Service("default/web:http", "198.18.5.1", 80, node_port=30080, lb_ips=["198.18.6.1"],
                policy="Cluster", endpoints=[("198.18.3.1", 8080, False), ("198.18.1.6", 8080, True)]),
        Service("default/api:https", "198.18.5.2", 443, node_port=30443, lb_ips=["198.18.6.2"],
                policy="Local", endpoints=[("198.18.1.5", 8443, True), ("198.18.3.2", 8443, False)]),
        Service("kube-system/kube-dns:dns", "198.18.5.2", 53, proto="udp",
                endpoints=[("198.18.3.3", 53, False)]),
        # its only endpoint is the pod CIDR's second address, the one a naive probe picks
        Service("default/cache:redis", "198.18.5.1", 6379, lb_ips=["198.18.6.3"], policy="Local",
                endpoints=[("198.18.1.2", 6379, True)]),
    ]


class Rules:
    """One source's rules: table -> declared user chains, builtin policies, rules by chain."""

    def __init__(self, name: str):
        self.name = name
        self.chains: dict[str, list[str]] = {t: [] for t in TABLES}
        self.policy: dict[tuple[str, str], str] = {}
        self.rules: dict[str, list[tuple[str, str]]] = {t: [] for t in TABLES}  # (chain, rest)

    def chain(self, table: str, *names: str) -> None:
        for n in names:
            if n not in self.chains[table]:
                self.chains[table].append(n)

    def add(self, table: str, chain: str, rest: str) -> None:
        if chain not in BUILTIN[table]:
            self.chain(table, chain)
        self.rules[table].append((chain, rest))

    def text(self, table: str) -> str:
        return "\n".join(f"-A {c} {r}" for c, r in self.rules[table])


def parse_restore(text: str, name: str) -> Rules:
    out = Rules(name)
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and table:
            chain, pol = line[1:].split()[:2]
            if chain in BUILTIN[table]:
                if pol != "ACCEPT":
                    out.policy[(table, chain)] = pol
            else:
                out.chain(table, chain)
        elif line.startswith("-A ") and table:
            _, chain, rest = line.split(" ", 2)
            out.add(table, chain, rest)
    return out


# ------------------------------------------------------------------ kube-proxy

def kube_proxy() -> Rules:
    """kube-proxy iptables mode: generate's nat table plus the filter/mangle chains it and
    the kubelet keep (pkg/proxy/iptables/proxier.go iptablesJumpChains: each jump is
    prepended, so the last one listed ends up first)."""
    kp = parse_restore(kube_proxy_iptables(services(), cluster_cidr=POD_CIDR, version="1.28").iptables,
                       "kube-proxy")
    for t in ("mangle", "nat", "filter"):
        kp.chain(t, "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY")
    kp.chain("filter", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-NODEPORTS",
             "KUBE-PROXY-FIREWALL", "KUBE-SERVICES")
    new = '-m conntrack --ctstate NEW -m comment --comment'
    for chain, rest in [
        ("INPUT", f'{new} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'),
        ("INPUT", '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS'),
        ("INPUT", f'{new} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES'),
        ("INPUT", "-j KUBE-FIREWALL"),
        ("FORWARD", f'{new} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'),
        ("FORWARD", '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'),
        ("FORWARD", f'{new} "kubernetes service portals" -j KUBE-SERVICES'),
        ("FORWARD", f'{new} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES'),
        ("OUTPUT", f'{new} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'),
        ("OUTPUT", f'{new} "kubernetes service portals" -j KUBE-SERVICES'),
        ("OUTPUT", "-j KUBE-FIREWALL"),
        ("KUBE-FIREWALL", '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet '
                          'connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP'),
        ("KUBE-FORWARD", "-m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts "
                         "-j DROP"),
        ("KUBE-FORWARD", '-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 '
                         "-j ACCEPT"),
        ("KUBE-FORWARD", '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
                         "RELATED,ESTABLISHED -j ACCEPT"),
        ("KUBE-NODEPORTS", '-p tcp -m comment --comment "default/api:https health check node port" -m tcp '
                           "--dport 32443 -j ACCEPT"),
    ]:
        kp.add("filter", chain, rest)
    return kp


NFACCT_OBJECTS = ["ct_state_invalid_dropped_pkts"]


# ------------------------------------------------------------------ flannel

def flannel(name: str = "flannel", network: str = CLUSTER_NET, subnet: str = POD_CIDR) -> Rules:
    """flannel-io/flannel pkg/trafficmngr/iptables/iptables.go: masqRules, forwardRules."""
    f = Rules(name)
    c = '-m comment --comment "flanneld masq"'
    f.add("nat", "POSTROUTING", f"{c} -j FLANNEL-POSTRTG")
    f.add("nat", "FLANNEL-POSTRTG", f"-m mark --mark 0x4000/0x4000 {c} -j RETURN")
    f.add("nat", "FLANNEL-POSTRTG", f"-s {subnet} -d {network} {c} -j RETURN")
    f.add("nat", "FLANNEL-POSTRTG", f"-s {network} -d {subnet} {c} -j RETURN")
    f.add("nat", "FLANNEL-POSTRTG", f"! -s {network} -d {subnet} {c} -j RETURN")
    f.add("nat", "FLANNEL-POSTRTG", f"-s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully")
    f.add("nat", "FLANNEL-POSTRTG", f"! -s {network} -d {network} {c} -j MASQUERADE --random-fully")
    fc = '-m comment --comment "flanneld forward"'
    f.add("filter", "FORWARD", f"{fc} -j FLANNEL-FWD")
    f.add("filter", "FLANNEL-FWD", f"-s {network} {fc} -j ACCEPT")
    f.add("filter", "FLANNEL-FWD", f"-d {network} {fc} -j ACCEPT")
    return f


# ------------------------------------------------------------------ Calico (felix, iptables dataplane)

def _cali_hashes(chain: str, rules: list[str]) -> list[str]:
    """felix generictables Chain.RuleHashes: sha224 over the chain name, then chained over
    each rule rendered as '-A <chain> HASH <fragments>'; URL-safe base64, 16 characters."""
    h = hashlib.sha224(chain.encode()).digest()
    out = []
    for r in rules:
        h = hashlib.sha224(h + f"-A {chain} HASH {r}".strip().encode()).digest()
        out.append(base64.urlsafe_b64encode(h).decode().rstrip("=")[:16])
    return out


def _cali_rule(match: str = "", action: str = "", comment: str | None = None) -> str:
    return " ".join(x for x in [f'-m comment --comment "{comment}"' if comment else "", match, action] if x)


def _cali_chain(r: Rules, table: str, chain: str, rules: list[tuple]) -> None:
    """rules: (match, action[, comment]) in felix's fragment syntax (--jump, --in-interface ...)."""
    body = [_cali_rule(*x) for x in rules]
    r.chain(table, chain)
    for h, b in zip(_cali_hashes(chain, body), body, strict=True):
        r.add(table, chain, f'-m comment --comment "cali:{h}" {b}')


CALI_WL = "cali8d5f3c1b2a4"       # the one workload endpoint standing for the lab's client pods
CALI_POLICY = "cali-po-_sK2jR5ZK-8ngT0ZxS1L"
CALI_SA = "_EYj2UQw8vB5pP-HnQq"  # the pods' service account profile


def calico() -> tuple[Rules, Rules, str]:
    """projectcalico/calico felix/rules static.go, nat.go, endpoints.go, dispatch.go
    (iptables renderer: felix/iptables match_builder.go, actions.go). VXLAN on, IPIP off,
    kube-proxy in iptables mode (no KubeIPVSSupport), default mark bits 0xffff0000:
    accept 0x10000, pass 0x20000, scratch0 0x40000, scratch1 0x80000."""
    ins, app = Rules("calico"), Rules("calico-append")
    acc, clear_all = "-m mark --mark 0x10000/0x10000", "--jump MARK --set-mark 0/0xf0000"
    hep = "Host endpoint policy accepted packet."
    for table, hook, target in [("raw", "PREROUTING", "cali-PREROUTING"), ("raw", "OUTPUT", "cali-OUTPUT"),
                                ("mangle", "PREROUTING", "cali-PREROUTING"),
                                ("mangle", "POSTROUTING", "cali-POSTROUTING"),
                                ("nat", "PREROUTING", "cali-PREROUTING"), ("nat", "OUTPUT", "cali-OUTPUT"),
                                ("nat", "POSTROUTING", "cali-POSTROUTING"), ("filter", "INPUT", "cali-INPUT"),
                                ("filter", "FORWARD", "cali-FORWARD"), ("filter", "OUTPUT", "cali-OUTPUT")]:
        h = _cali_hashes(hook, [f"--jump {target}"])[0]
        ins.add(table, hook, f'-m comment --comment "cali:{h}" -j {target}')
    # raw
    _cali_chain(ins, "raw", "cali-PREROUTING", [
        ("", clear_all), ("-p udp --dport 4789", "--jump NOTRACK"),
        ("--in-interface cali+", "--jump MARK --set-mark 0x40000/0x40000"),
        ("-m mark --mark 0x40000/0x40000", "--jump cali-rpf-skip"),
        ("-m mark --mark 0x40000/0x40000 -m rpfilter --invert --validmark", "--jump DROP"),
        ("-m mark --mark 0/0x40000", "--jump cali-from-host-endpoint"), (acc, "--jump ACCEPT")])
    _cali_chain(ins, "raw", "cali-OUTPUT", [
        ("", clear_all), ("", "--jump cali-to-host-endpoint"), ("-p udp --dport 4789", "--jump NOTRACK"),
        (acc, "--jump ACCEPT")])
    ins.chain("raw", "cali-from-host-endpoint", "cali-rpf-skip", "cali-to-host-endpoint")
    # mangle
    _cali_chain(ins, "mangle", "cali-PREROUTING", [
        ("-m conntrack --ctstate RELATED,ESTABLISHED", "--jump ACCEPT"), (acc, "--jump ACCEPT"),
        ("", "--jump cali-from-host-endpoint"), (acc, "--jump ACCEPT", hep)])
    _cali_chain(ins, "mangle", "cali-POSTROUTING", [
        (acc, "--jump RETURN"), ("", clear_all), ("-m conntrack --ctstate DNAT", "--jump cali-to-host-endpoint"),
        (acc, "--jump RETURN", hep)])
    ins.chain("mangle", "cali-from-host-endpoint", "cali-to-host-endpoint")
    # nat
    _cali_chain(ins, "nat", "cali-PREROUTING", [("", "--jump cali-fip-dnat")])
    _cali_chain(ins, "nat", "cali-OUTPUT", [("", "--jump cali-fip-dnat")])
    _cali_chain(ins, "nat", "cali-POSTROUTING", [
        ("", "--jump cali-fip-snat"), ("", "--jump cali-nat-outgoing"),
        ("--out-interface vxlan.calico -m addrtype ! --src-type LOCAL --limit-iface-out "
         "-m addrtype --src-type LOCAL", "--jump MASQUERADE --random-fully")])
    _cali_chain(ins, "nat", "cali-nat-outgoing", [
        ("-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst",
         "--jump MASQUERADE --random-fully")])
    ins.chain("nat", "cali-fip-dnat", "cali-fip-snat")
    # filter
    vx = "-p 17 -m multiport --destination-ports 4789"
    _cali_chain(ins, "filter", "cali-INPUT", [
        (f"{vx} -m set --match-set cali40all-vxlan-net src -m addrtype --dst-type LOCAL", "--jump ACCEPT",
         "Allow IPv4 VXLAN packets from allowed hosts"),
        (f"{vx} -m addrtype --dst-type LOCAL", "--jump DROP", "Drop IPv4 VXLAN packets from non-allowed hosts"),
        ("--in-interface cali+", "--goto cali-wl-to-host"), (acc, "--jump ACCEPT"), ("", clear_all),
        ("", "--jump cali-from-host-endpoint"), (acc, "--jump ACCEPT", hep)])
    _cali_chain(ins, "filter", "cali-wl-to-host", [
        ("", "--jump cali-from-wl-dispatch"), ("", "--jump ACCEPT", "Configured DefaultEndpointToHostAction")])
    _cali_chain(ins, "filter", "cali-FORWARD", [
        ("", "--jump MARK --set-mark 0/0xe0000"), ("-m mark --mark 0/0x10000", "--jump cali-from-hep-forward"),
        ("--in-interface cali+", "--jump cali-from-wl-dispatch"),
        ("--out-interface cali+", "--jump cali-to-wl-dispatch"), ("", "--jump cali-to-hep-forward"),
        ("", "--jump cali-cidr-block")])
    _cali_chain(ins, "filter", "cali-OUTPUT", [
        (acc, "--jump ACCEPT"), ("--out-interface cali+", "--jump RETURN"),
        (f"{vx} -m addrtype --src-type LOCAL -m set --match-set cali40all-vxlan-net dst", "--jump ACCEPT",
         "Allow IPv4 VXLAN packets to other allowed hosts"),
        ("", clear_all), ("-m conntrack ! --ctstate DNAT", "--jump cali-to-host-endpoint"),
        (acc, "--jump ACCEPT", hep)])
    _cali_chain(ins, "filter", "cali-from-wl-dispatch", [
        (f"--in-interface {CALI_WL}", f"--goto cali-fw-{CALI_WL}"), ("", "--jump DROP", "Unknown interface")])
    _cali_chain(ins, "filter", "cali-to-wl-dispatch", [
        (f"--out-interface {CALI_WL}", f"--goto cali-tw-{CALI_WL}"), ("", "--jump DROP", "Unknown interface")])
    ret_prof = "Return if profile accepted"
    for direction, prof in (("fw", "pro"), ("tw", "pri")):
        rules = [("-m conntrack --ctstate RELATED,ESTABLISHED", "--jump ACCEPT"),
                 ("-m conntrack --ctstate INVALID", "--jump DROP"), ("", "--jump MARK --set-mark 0/0x10000")]
        if direction == "fw":
            rules.append((vx, "--jump DROP", "Drop VXLAN encapped packets originating in workloads"))
            rules += [("", "--jump MARK --set-mark 0/0x20000", "Start of policies"),
                      ("-m mark --mark 0/0x20000", f"--jump {CALI_POLICY}"),
                      (acc, "--jump RETURN", "Return if policy accepted"),
                      ("-m mark --mark 0/0x20000", "--jump DROP", "Drop if no policies passed packet")]
        rules += [("", f"--jump cali-{prof}-kns.default"), (acc, "--jump RETURN", ret_prof),
                  ("", f"--jump cali-{prof}-{CALI_SA}"), (acc, "--jump RETURN", ret_prof),
                  ("", "--jump DROP", "Drop if no profiles matched")]
        _cali_chain(ins, "filter", f"cali-{direction}-{CALI_WL}", rules)
        _cali_chain(ins, "filter", f"cali-{prof}-kns.default", [
            ("", "--jump MARK --set-mark 0x10000/0x10000"), (acc, "--jump RETURN")])
        ins.chain("filter", f"cali-{prof}-{CALI_SA}")
    # GlobalNetworkPolicy default.deny-smtp (order 100, egress): Deny tcp/25, then Allow
    _cali_chain(ins, "filter", CALI_POLICY, [
        ("-p tcp -m multiport --destination-ports 25", "--jump DROP"),
        ("", "--jump MARK --set-mark 0x10000/0x10000"), (acc, "--jump RETURN")])
    ins.chain("filter", "cali-cidr-block", "cali-from-hep-forward", "cali-from-host-endpoint",
              "cali-to-hep-forward", "cali-to-host-endpoint")
    # StaticFilterForwardAppendRules: appended to filter FORWARD after everyone else's rules
    body = [_cali_rule(acc, "--jump ACCEPT", "Policy explicitly accepted packet."),
            _cali_rule("", "--jump MARK --set-mark 0x10000/0x10000")]
    for h, b in zip(_cali_hashes("FORWARD", body), body, strict=True):
        app.add("filter", "FORWARD", f'-m comment --comment "cali:{h}" {b}')
    # IP pools 198.18.1.0/24 (this node's blocks) and 198.18.3.0/24 (the other node's), both natOutgoing
    sets = ("create cali40all-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576\n"
            "add cali40all-ipam-pools 198.18.1.0/24\nadd cali40all-ipam-pools 198.18.3.0/24\n"
            "create cali40masq-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576\n"
            "add cali40masq-ipam-pools 198.18.1.0/24\nadd cali40masq-ipam-pools 198.18.3.0/24\n"
            "create cali40all-vxlan-net hash:net family inet hashsize 1024 maxelem 1048576\n"
            "add cali40all-vxlan-net 198.18.2.2/32\n")
    return ins, app, sets


# ------------------------------------------------------------------ Weave Net (router + weave-npc)

WEAVE_NS_INGRESS = "weave-;rGqyMIl1HN^cfDki~Z$3]6!N"   # DefaultAllow ingress, namespace default
WEAVE_NS_EGRESS = "weave-s_+ChJId4Uy_$}G;WdH|~TK)I"    # DefaultAllow egress, namespace default


def weave() -> tuple[Rules, Rules, str]:
    """weaveworks/weave net/bridge.go configureIPTables, net/expose.go exposeNAT,
    prog/weave-npc/main.go createBaseRules, npc/ (WEAVE-NPC-DEFAULT/-EGRESS-DEFAULT
    rules for DefaultAllow namespaces). Bridge 'weave', NPC on, no-masq-local on."""
    top, app = Rules("weave"), Rules("weave-append")
    w = "weave"
    note = "-m comment --comment \"NOTE: this must go before '-j KUBE-FORWARD'\""
    for rest in [f"-i {w} {note} -j WEAVE-NPC-EGRESS", f"-o {w} {note} -j WEAVE-NPC",
                 f"-o {w} -m state --state NEW -j NFLOG --nflog-group 86", f"-o {w} -j DROP",
                 f"-i {w} ! -o {w} -j ACCEPT", f"-o {w} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]:
        top.add("filter", "FORWARD", rest)
    app.add("filter", "INPUT", f"-i {w} -j WEAVE-NPC-EGRESS")
    for rest in ["-m state --state RELATED,ESTABLISHED -j ACCEPT", "-d 224.0.0.0/4 -j ACCEPT",
                 "-m physdev --physdev-out vethwe-bridge --physdev-is-bridged -j ACCEPT",
                 "-m state --state NEW -j WEAVE-NPC-DEFAULT", "-m state --state NEW -j WEAVE-NPC-INGRESS"]:
        top.add("filter", "WEAVE-NPC", rest)
    top.add("filter", "WEAVE-NPC-DEFAULT", f"-m set --match-set {WEAVE_NS_INGRESS} dst -m comment --comment "
            '"DefaultAllow ingress isolation for namespace: default" -j ACCEPT')
    top.chain("filter", "WEAVE-NPC-INGRESS", "WEAVE-NPC-EGRESS-CUSTOM")
    mark = "-m mark ! --mark 0x40000/0x40000"
    for rest in ["-m state --state RELATED,ESTABLISHED -j ACCEPT",
                 "-m physdev --physdev-in vethwe-bridge --physdev-is-bridged -j RETURN",
                 "-m addrtype --dst-type LOCAL -j RETURN", "-d 224.0.0.0/4 -j RETURN",
                 "-m state --state NEW -j WEAVE-NPC-EGRESS-DEFAULT",
                 f"-m state --state NEW {mark} -j WEAVE-NPC-EGRESS-CUSTOM",
                 f"-m state --state NEW {mark} -j NFLOG --nflog-group 86", f"{mark} -j DROP"]:
        top.add("filter", "WEAVE-NPC-EGRESS", rest)
    top.add("filter", "WEAVE-NPC-EGRESS-ACCEPT", "-j MARK --set-xmark 0x40000/0x40000")
    c = '-m comment --comment "DefaultAllow egress isolation for namespace: default"'
    top.add("filter", "WEAVE-NPC-EGRESS-DEFAULT", f"-m set --match-set {WEAVE_NS_EGRESS} src {c} "
            "-j WEAVE-NPC-EGRESS-ACCEPT")
    top.add("filter", "WEAVE-NPC-EGRESS-DEFAULT", f"-m set --match-set {WEAVE_NS_EGRESS} src {c} -j RETURN")
    app.add("nat", "POSTROUTING", "-j WEAVE")
    app.add("nat", "WEAVE", "-m set --match-set weaver-no-masq-local dst -m comment --comment "
            '"Prevent SNAT to locally running containers" -j RETURN')
    app.add("nat", "WEAVE", f"-s {CLUSTER_NET} -d 224.0.0.0/4 -j RETURN")
    app.add("nat", "WEAVE", f"! -s {CLUSTER_NET} -d {CLUSTER_NET} -j MASQUERADE")
    app.add("nat", "WEAVE", f"-s {CLUSTER_NET} ! -d {CLUSTER_NET} -j MASQUERADE")
    # pods of namespace default: 198.18.1.2, .3, .5, .6; 198.18.1.4 is in a namespace with
    # a default-deny policy (no DefaultAllow set has it)
    default_pods = ["198.18.1.2", "198.18.1.3", "198.18.1.5", "198.18.1.6"]
    sets = "create weaver-no-masq-local hash:net family inet hashsize 1024 maxelem 65536\n" \
           f"add weaver-no-masq-local {POD_CIDR}\n"
    for name in (WEAVE_NS_INGRESS, WEAVE_NS_EGRESS):
        sets += f"create {name} hash:ip family inet hashsize 1024 maxelem 65536 comment\n"
        sets += "".join(f'add {name} {ip} comment "namespace: default, pod: {p}"\n'
                        for ip, p in zip(default_pods, ["cache-0", "client-a", "api-0", "web-0"], strict=True))
    return top, app, sets


# ------------------------------------------------------------------ Docker (moby bridge driver, 28.x)

def docker() -> tuple[Rules, Rules]:
    """moby/moby libnetwork/drivers/bridge/internal/iptabler (golden file
    TestIptabler_hairpin=false,internal=false,icc=true,masq=true,snat=false,gwm=nat,bindlh=false),
    libnetwork/firewall_linux.go (DOCKER-USER), setup_ip_forwarding (FORWARD policy DROP).
    Bridge docker0 172.17.0.0/16 (here the pod side), one container 172.17.0.2 publishing 8080->80."""
    top, app = Rules("docker"), Rules("docker-append")
    br, ctr = "docker0", "198.18.1.2"
    top.policy[("filter", "FORWARD")] = "DROP"
    top.add("raw", "PREROUTING", f"-d {ctr}/32 ! -i {br} -j DROP")
    top.add("filter", "FORWARD", "-j DOCKER-USER")
    top.add("filter", "FORWARD", "-j DOCKER-FORWARD")
    top.add("filter", "DOCKER", f"-d {ctr}/32 ! -i {br} -o {br} -p tcp -m tcp --dport 80 -j ACCEPT")
    top.add("filter", "DOCKER", f"! -i {br} -o {br} -j DROP")
    top.add("filter", "DOCKER-BRIDGE", f"-o {br} -j DOCKER")
    top.add("filter", "DOCKER-CT", f"-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    for rest in ["-j DOCKER-CT", "-j DOCKER-ISOLATION-STAGE-1", "-j DOCKER-BRIDGE", f"-i {br} -j ACCEPT"]:
        top.add("filter", "DOCKER-FORWARD", rest)
    top.add("filter", "DOCKER-ISOLATION-STAGE-1", f"-i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2")
    top.add("filter", "DOCKER-ISOLATION-STAGE-2", f"-o {br} -j DROP")
    top.add("filter", "DOCKER-USER", "-j RETURN")
    app.add("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j DOCKER")
    app.add("nat", "OUTPUT", "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER")
    app.add("nat", "POSTROUTING", f"-s {POD_CIDR} ! -o {br} -j MASQUERADE")
    app.add("nat", "DOCKER", f"-i {br} -j RETURN")
    app.add("nat", "DOCKER", f"! -i {br} -p tcp -m tcp --dport 8080 -j DNAT --to-destination {ctr}:80")
    return top, app


# ------------------------------------------------------------------ AWS VPC CNI

def aws_vpc_cni() -> Rules:
    """aws/amazon-vpc-cni-k8s pkg/networkutils/network.go buildIptablesSNATRules /
    buildIptablesConnmarkRules (the chained AWS-SNAT-CHAIN-N / AWS-CONNMARK-CHAIN-N shape,
    one VPC CIDR), veth prefix eni, AWS_VPC_K8S_CNI_RANDOMIZESNAT=prng, connmark 0x80."""
    a = Rules("aws-vpc-cni")
    vpc = CLUSTER_NET  # the VPC: node subnets and pod IPs (198.18.0.0/22 here)
    a.add("nat", "PREROUTING", '-i eni+ -m comment --comment "AWS, outbound connections" -m state --state NEW '
          "-j AWS-CONNMARK-CHAIN-0")
    a.add("nat", "PREROUTING", '-m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark --nfmask 0x80 '
          "--ctmask 0x80")
    a.add("nat", "POSTROUTING", '-m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0')
    a.add("nat", "AWS-CONNMARK-CHAIN-0", f'! -d {vpc} -m comment --comment "AWS CONNMARK CHAIN, VPC CIDR" '
          "-j AWS-CONNMARK-CHAIN-1")
    a.add("nat", "AWS-CONNMARK-CHAIN-1", '-m comment --comment "AWS, CONNMARK" -j CONNMARK --set-xmark 0x80/0x80')
    a.add("nat", "AWS-SNAT-CHAIN-0", f'! -d {vpc} -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-1')
    a.add("nat", "AWS-SNAT-CHAIN-1", '! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL '
          f"-j SNAT --to-source {NODE_IP} --random-fully")
    a.add("mangle", "PREROUTING", '-i eth0 -m comment --comment "AWS, primary ENI" -m addrtype --dst-type LOCAL '
          "--limit-iface-in -j CONNMARK --set-xmark 0x80/0x80")
    a.add("mangle", "PREROUTING", '-i eni+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark '
          "--nfmask 0x80 --ctmask 0x80")
    a.add("mangle", "PREROUTING", '-i vlan+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark '
          "--nfmask 0x80 --ctmask 0x80")
    return a


# ------------------------------------------------------------------ k3s: flannel + kube-router netpol

K3S_PODS = [("default", "cache-0", "198.18.1.2"), ("default", "client-a", "198.18.1.3"),
            ("default", "client-b", "198.18.1.4"), ("default", "api-0", "198.18.1.5"),
            ("default", "web-0", "198.18.1.6")]
K3S_SYNC_VERSION = "1hd2kpz4n9xyz"  # strconv.FormatInt(time.Now().UnixNano(), 36) of one sync


def _kr_hash(prefix: str, text: str) -> str:
    return prefix + base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _kr_uuid(chain: str, spec: list[str]) -> str:
    """kube-router ensureTopLevelChains addUUIDForRuleSpec: ' - <base32(sha256)>' after the comment."""
    return base64.b32encode(hashlib.sha256((chain + "".join(spec)).encode()).digest()).decode()[:16]


def kube_router() -> tuple[Rules, str]:
    """cloudnativelabs/kube-router pkg/controllers/netpol (network_policy_controller.go
    ensureTopLevelChains/ensureDefaultNetworkPolicyChain/ensureExplicitAccept, pod.go,
    policy.go appendRuleToPolicyChain), as embedded by k3s (k3s-io/k3s pkg/agent/netpol).
    One NetworkPolicy default/api-allow-client-a: pods app=api accept tcp/8443 from client-a."""
    k = Rules("kube-router")
    top = {"INPUT": "KUBE-ROUTER-INPUT", "FORWARD": "KUBE-ROUTER-FORWARD", "OUTPUT": "KUBE-ROUTER-OUTPUT"}
    for builtin, custom in top.items():
        spec = ["-m", "comment", "--comment", "kube-router netpol", "-j", custom]
        k.add("filter", builtin, f'-m comment --comment "kube-router netpol - {_kr_uuid(builtin, spec)}" '
              f"-j {custom}")
    for comment, rest in [
        ("allow traffic to primary/secondary cluster IP range", ["-d", SERVICE_CIDR, "-j", "RETURN"]),
        ("allow LOCAL TCP traffic to node ports", ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "multiport",
                                                   "--dports", "30000:32767", "-j", "RETURN"]),
        ("allow LOCAL UDP traffic to node ports", ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "multiport",
                                                   "--dports", "30000:32767", "-j", "RETURN"]),
    ]:
        proto = ["-p", comment.split()[2].lower()] if "node ports" in comment else []
        spec = proto + ["-m", "comment", "--comment", comment] + rest
        uuid = _kr_uuid("KUBE-ROUTER-INPUT", spec)
        k.add("filter", "KUBE-ROUTER-INPUT", " ".join(proto + ["-m", "comment", "--comment",
                                                               f'"{comment} - {uuid}"'] + rest))
    for icmp, ctype in (("echo requests", "echo-request"), ("destination unreachable messages",
                                                            "destination-unreachable"),
                        ("time exceeded messages", "time-exceeded")):
        k.add("filter", "KUBE-NWPLCY-DEFAULT", f'-m comment --comment "allow icmp {icmp}" -p icmp --icmp-type '
              f"{ctype} -j ACCEPT")
    k.add("filter", "KUBE-NWPLCY-DEFAULT", '-j MARK -m comment --comment "rule to mark traffic matching a network '
          'policy" --set-xmark 0x10000/0x10000')
    policy = "api-allow-client-a"
    pchain = _kr_hash("KUBE-NWPLCY-", "default" + policy + K3S_SYNC_VERSION)
    dst_set = _kr_hash("KUBE-DST-", "default" + policy)
    src_set = _kr_hash("KUBE-SRC-", "default" + policy + "ingressrule" + "0" + "pod")
    comment = (f'"rule to ACCEPT traffic from source pods to dest pods selected by policy name {policy} '
               'namespace default"')
    base = f"-m comment --comment {comment} -m set --match-set {src_set} src -m set --match-set {dst_set} dst " \
           "-p TCP --dport 8443"
    k.add("filter", pchain, f"{base} -j MARK --set-xmark 0x10000/0x10000")
    k.add("filter", pchain, f"{base} -m mark --mark 0x10000/0x10000 -j RETURN")
    fw_rules: list[tuple[str, str]] = []
    for ns, pod, ip in K3S_PODS:
        fw = _kr_hash("KUBE-POD-FW-", ns + pod + K3S_SYNC_VERSION)
        # setupPodNetpolRules: every rule inserted at position 1, so the last written is first
        body = ['-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate '
                "RELATED,ESTABLISHED -j ACCEPT",
                '-m comment --comment "rule to permit the traffic traffic to pods when source is the pod\'s local '
                f'node" -m addrtype --src-type LOCAL -d {ip} -j ACCEPT',
                f'-s {ip} -m comment --comment "run through default egress network policy  chain" '
                "-j KUBE-NWPLCY-DEFAULT"]
        if pod == "api-0":
            body.append(f'-d {ip} -m comment --comment "run through nw policy {policy}" -j {pchain}')
        else:
            body.append(f'-d {ip} -m comment --comment "run through default ingress network policy  chain" '
                        "-j KUBE-NWPLCY-DEFAULT")
        body += [f'-m comment --comment "rule to log dropped traffic POD name:{pod} namespace: {ns}" -m mark ! '
                 "--mark 0x10000/0x10000 -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10",
                 f'-m comment --comment "rule to REJECT traffic destined for POD name:{pod} namespace: {ns}" '
                 "-m mark ! --mark 0x10000/0x10000 -j REJECT",
                 "-j MARK --set-mark 0/0x10000",
                 '-m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK '
                 "--set-mark 0x20000/0x20000"]
        for rest in body:
            k.add("filter", fw, rest)
        to = f'"rule to jump traffic destined to POD name:{pod} namespace: {ns} to chain {fw}"'
        frm = f'"rule to jump traffic from POD name:{pod} namespace: {ns} to chain {fw}"'
        fw_rules += [("KUBE-ROUTER-FORWARD", f"-m comment --comment {to} -d {ip} -j {fw}"),
                     ("KUBE-ROUTER-OUTPUT", f"-m comment --comment {to} -d {ip} -j {fw}"),
                     ("KUBE-ROUTER-FORWARD", f"-m physdev --physdev-is-bridged -m comment --comment {to} -d {ip} "
                                             f"-j {fw}")]
        fw_rules += [(c, f"-m comment --comment {frm} -s {ip} -j {fw}")
                     for c in ("KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT")]
        fw_rules.append(("KUBE-ROUTER-FORWARD", f"-m physdev --physdev-is-bridged -m comment --comment {frm} "
                                                f"-s {ip} -j {fw}"))
    for chain, rest in fw_rules:
        k.add("filter", chain, rest)
    for chain in top.values():
        k.add("filter", chain, '-m comment --comment "rule to explicitly ACCEPT traffic that comply to network '
              'policies" -m mark --mark 0x20000/0x20000 -j ACCEPT')
    sets = (f"create {dst_set} hash:ip family inet hashsize 1024 maxelem 65536 timeout 0\n"
            f"add {dst_set} 198.18.1.5 timeout 0\n"
            f"create {src_set} hash:ip family inet hashsize 1024 maxelem 65536 timeout 0\n"
            f"add {src_set} 198.18.1.3 timeout 0\n")
    return k, sets


# ------------------------------------------------------------------ composition

def merge(order: dict[str, list[Rules]], default: list[Rules]) -> str:
    """iptables-restore input: for each builtin chain ('table/CHAIN') its rules from the
    sources in the given order (default: the default list); user chains in any order."""
    out = []
    for t in TABLES:
        srcs = default
        chains: list[str] = []
        for s in srcs:
            chains += [c for c in s.chains[t] if c not in chains]
        if not any(s.rules[t] or s.chains[t] for s in srcs):
            continue
        out.append(f"*{t}")
        for b in BUILTIN[t]:
            pol = next((s.policy[(t, b)] for s in srcs if (t, b) in s.policy), "ACCEPT")
            out.append(f":{b} {pol} [0:0]")
        out += [f":{c} - [0:0]" for c in chains]
        for b in BUILTIN[t]:
            for s in order.get(f"{t}/{b}", srcs):
                out += [f"-A {c} {r}" for c, r in s.rules[t] if c == b]
        for s in srcs:
            out += [f"-A {c} {r}" for c, r in s.rules[t] if c not in BUILTIN[t]]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def subst(text: str, ifaces: dict[str, str]) -> str:
    """Replace interface names after -i/-o/--in-interface/--out-interface (exact names)."""
    def repl(m: re.Match) -> str:
        return m.group(1) + ifaces.get(m.group(2), m.group(2))
    return re.sub(r"((?:^|\s)(?:-i|-o|--in-interface|--out-interface)\s+(?:!\s+)?)(\S+)", repl, text,
                  flags=re.M)


NFACCT_ADD = r"""
import socket, struct, sys
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    nm = name.encode() + b"\0"
    attr = struct.pack("HH", 4 + len(nm), 1) + nm
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0) + attr
    s.send(struct.pack("IHHII", 16 + len(body), 7 << 8, 1 | 4 | 0x400, 1, 0) + body)
    err = struct.unpack("i", s.recv(4096)[16:20])[0]
    if err not in (0, -16, -17):  # EBUSY/EEXIST: it is there already
        sys.exit(f"nfacct {name}: error {err}")
"""


def _ns(ns: str, *args: str, input: str | None = None) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *args], input=input, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _fixed_initval(sets: str) -> str:
    """A hash set's initval is random unless given: derive it from the set name, so that a
    rebuild prints the same ipset save."""
    out = []
    for line in sets.splitlines():
        if line.startswith("create ") and " hash:" in line and "initval" not in line:
            seed = hashlib.sha256(line.split()[1].encode()).hexdigest()[:8]
            line += f" initval 0x{seed}"
        out.append(line)
    return "\n".join(out) + "\n"


def normalise(ns: str, rules: str, sets: str) -> tuple[str, str]:
    """Load into the scratch namespace and read back what iptables-save / ipset save print."""
    empty = "".join(f"*{t}\nCOMMIT\n" for t in TABLES)
    _ns(ns, "iptables-restore", input=empty)
    _ns(ns, "ipset", "destroy")
    if sets:
        _ns(ns, "ipset", "restore", input=_fixed_initval(sets))
    _ns(ns, sys.executable, "-c", NFACCT_ADD, *NFACCT_OBJECTS)
    _ns(ns, "iptables-restore", input=rules)
    saved = _ns(ns, "iptables-save")
    kept = [ln for ln in saved.splitlines() if not ln.startswith("#")]
    return "\n".join(kept) + "\n", _ns(ns, "ipset", "save") if sets else ""


def build() -> dict:
    kp = kube_proxy()
    fl = flannel()
    ci, ca, csets = calico()
    wt, wa, wsets = weave()
    dt, da = docker()
    aws = aws_vpc_cni()
    k3f = flannel("k3s-flannel")
    kr, krsets = kube_router()
    cnis = {
        "flannel": dict(default=[kp, fl], order={}, sets="",
                        ifaces={"cni0": "n-c", "flannel.1": "n-p", "eth0": "n-p"}),
        "calico": dict(default=[ci, kp, ca], order={}, sets=csets,
                       ifaces={"cali+": "n-c+", CALI_WL: "n-c", "vxlan.calico": "n-p", "eth0": "n-p"}),
        "weave": dict(default=[kp, wt, wa], sets=wsets, ifaces={"weave": "n-c", "eth0": "n-p"},
                      order={"filter/FORWARD": [wt, kp, wa], "filter/INPUT": [kp, wa]}),
        "docker": dict(default=[kp, dt, da], sets="", ifaces={"docker0": "n-c", "eth0": "n-p"},
                       order={"filter/FORWARD": [dt, kp, da], "raw/PREROUTING": [dt, kp]}),
        "aws-vpc-cni": dict(default=[kp, aws], order={}, sets="",
                            ifaces={"eni+": "n-c+", "eth0": "n-p"}),
        "k3s": dict(default=[kr, kp, k3f], order={}, sets=krsets,
                    ifaces={"cni0": "n-c", "flannel.1": "n-p", "eth0": "n-p"}),
    }
    ns = f"nlcni-build-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    summary = {}
    try:
        for name, c in cnis.items():
            original = merge(c["order"], c["default"])
            lab = subst(original, c["ifaces"])
            d = HERE / name
            d.mkdir(exist_ok=True)
            head = (f"# natlens tests/netfilter/cni/{name}: {{what}}, written by build.py and read back with "
                    "iptables-save (v1.8.9, nf_tables)\n")
            orig_saved, _ = normalise(ns, original, c["sets"])
            lab_saved, sets_saved = normalise(ns, lab, c["sets"])
            (d / "original.txt").write_text(head.format(what="the CNI's own interface names, parse-only")
                                            + orig_saved)
            (d / "iptables-save.txt").write_text(head.format(what="lab interface names (n-c pods, n-p uplink)")
                                                 + lab_saved)
            if sets_saved:
                (d / "ipset-save.txt").write_text(sets_saved)
            summary[name] = {"ifaces": c["ifaces"], "rules": lab_saved.count("\n-A ")}
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    return summary


# ------------------------------------------------------------------ manifest.json

WEB_R, WEB_L = "198.18.3.1:8080", "198.18.1.6:8080"
API_L, API_R = "198.18.1.5:8443", "198.18.3.2:8443"
DNS, CACHE = "198.18.3.3:53", "198.18.1.2:6379"
FWD, SENT, DROP, LOCAL = "forwarded", "sent out", "dropped", "delivered locally"
KP = "SNAT by nat/KUBE-POSTROUTING"
CNI_NAMES = ("flannel", "calico", "weave", "docker", "aws-vpc-cni", "k3s")


def P(outcome: str, dnat: str | None = None, snat: str | None = None, by: str | None = None,
      ctmark: int | None = None) -> dict:
    d = {"outcome": outcome, "dnat_to": dnat, "snat_to": snat}
    if by:
        d["by"] = by
    if ctmark is not None:
        d["ctmark"] = ctmark
    return d


def packets(cni: str) -> list[dict]:
    """The packets every CNI is checked with, and the paths its rules give them.

    A path: outcome, DNAT endpoint, SNAT address (None: not SNATed), and ``by``: a
    substring of the decision the model must name (Branch.decided_by)."""
    masq = {"flannel": "SNAT by nat/FLANNEL-POSTRTG", "k3s": "SNAT by nat/FLANNEL-POSTRTG",
            "calico": "SNAT by nat/cali-nat-outgoing", "weave": "SNAT by nat/WEAVE",
            "docker": "SNAT by nat/POSTROUTING", "aws-vpc-cni": "SNAT by nat/AWS-SNAT-CHAIN-1"}[cni]
    aws = cni == "aws-vpc-cni"
    mark = 0x80 if aws else None
    zero = 0 if aws else None
    docker = cni == "docker"
    # Docker masquerades everything from its bridge that leaves by another interface
    dk = ("198.18.2.1", "SNAT by nat/POSTROUTING") if docker else (None, None)
    out: list[dict] = []

    def pk(name, src, dst, dport, paths, proto="tcp", in_iface="n-c", out_iface=None, why=""):
        local = in_iface is None
        d = {"name": name, "src": src, "sport": 41000 + len(out), "dst": dst, "dport": dport, "proto": proto,
             "in_iface": in_iface, "local": local}
        if out_iface:
            d["out_iface"] = out_iface
        d["paths"] = paths
        d["why"] = why
        d["kernel"] = (local and src in ("198.18.1.1", "198.18.2.1")) or \
            (in_iface == "n-c" and src in [f"198.18.1.{i}" for i in range(2, 7)])
        out.append(d)

    pk("pod -> internet", "198.18.1.3", "198.18.4.9", 443, [P(FWD, None, "198.18.2.1", masq, mark)],
       out_iface="n-p", why="the CNI's own masquerade (kube-proxy leaves it alone)")
    pk("pod -> internet, udp", "198.18.1.3", "198.18.6.9", 53, [P(FWD, None, "198.18.2.1", masq, mark)],
       proto="udp", out_iface="n-p")
    pk("pod -> other node's pod", "198.18.1.3", "198.18.3.5", 8080, [P(FWD, None, *dk, zero)], out_iface="n-p",
       why="pod-to-pod keeps the pod address" + (" (not behind Docker: its bridge masquerades all)" if docker
                                                 else ""))
    node_lan = {"calico": ("198.18.2.1", masq), "docker": dk}.get(cni, (None, None))
    pk("pod -> node network host", "198.18.1.3", "198.18.2.2", 22, [P(FWD, None, *node_lan, zero)],
       out_iface="n-p", why="outside the IP pools for Calico; inside flannel/weave/k3s's lab network "
       "198.18.0.0/22 (a lab artifact) and inside the VPC for AWS")
    pk("pod -> ClusterIP (Cluster)", "198.18.1.3", "198.18.5.1", 80,
       [P(FWD, WEB_R, *dk), P(FWD, WEB_L)], why="DNAT only: the pod is inside kube-proxy's cluster CIDR")
    pk("pod -> LoadBalancer VIP (Cluster)", "198.18.1.3", "198.18.6.1", 80,
       [P(FWD, WEB_R, "198.18.2.1", KP), P(FWD, WEB_L, "198.18.1.1", KP)],
       why="kube-proxy short-circuits the LB VIP and masquerades it (KUBE-EXT -> KUBE-MARK-MASQ)")
    pk("pod -> LoadBalancer VIP (Local)", "198.18.1.3", "198.18.6.2", 443,
       [P(FWD, API_L), P(FWD, API_R, *dk)], why="externalTrafficPolicy Local: pod traffic goes to every "
       "endpoint (KUBE-EXT -s cluster CIDR -> KUBE-SVC), not SNATed")
    pk("pod -> kube-dns", "198.18.1.3", "198.18.5.2", 53, [P(FWD, DNS, *dk)], proto="udp")
    pk("pod -> Local LB whose endpoint is another local pod", "198.18.1.3", "198.18.6.3", 6379,
       [P(FWD, CACHE)])
    pk("pod -> its own Service (hairpin)", "198.18.1.2", "198.18.6.3", 6379,
       [P(FWD, CACHE, "198.18.1.1", KP)], why="KUBE-SEP -s endpoint -> KUBE-MARK-MASQ")
    pk("pod -> NodePort (Cluster)", "198.18.1.3", "198.18.2.1", 30080,
       [P(FWD, WEB_R, "198.18.2.1", KP), P(FWD, WEB_L, "198.18.1.1", KP)])
    pk("node -> LoadBalancer VIP (Cluster)", "198.18.2.1", "198.18.6.1", 80,
       [P(SENT, WEB_R, "198.18.2.1", KP), P(SENT, WEB_L, "198.18.1.1", KP)], in_iface=None)
    pk("node -> LoadBalancer VIP (Local)", "198.18.2.1", "198.18.6.2", 443,
       [P(SENT, API_L, "198.18.1.1", KP), P(SENT, API_R, "198.18.2.1", KP)], in_iface=None,
       why="hostNetwork traffic to a Local VIP is masqueraded (masquerade LOCAL traffic)")
    node_out = {"flannel": ("198.18.2.1", masq), "k3s": ("198.18.2.1", masq), "weave": ("198.18.2.1", masq),
                "aws-vpc-cni": ("198.18.2.1", masq)}.get(cni, (None, None))
    pk("node -> internet", "198.18.2.1", "198.18.4.9", 443, [P(SENT, None, *node_out, zero)], in_iface=None,
       out_iface="n-p", why="AWS SNATs node traffic to the primary IP too; flannel/weave/k3s match the node "
       "address because the lab network 198.18.0.0/22 holds it (same address either way)")
    pk("node -> kube-dns", "198.18.2.1", "198.18.5.2", 53, [P(SENT, DNS, "198.18.2.1", KP)], proto="udp",
       in_iface=None)
    tunnel = {"calico": ("198.18.2.1", "SNAT by nat/cali-POSTROUTING"), "docker": dk}.get(cni, (None, None))
    pk("node, from its pod-side address, -> other node's pod", "198.18.1.1", "198.18.3.5", 8080,
       [P(SENT, None, *tunnel, zero)], in_iface=None, out_iface="n-p",
       why="Calico: -o <tunnel> -m addrtype ! --src-type LOCAL --limit-iface-out: a local address not "
       "on the tunnel is masqueraded")
    np_paths = [P(FWD, WEB_R, "198.18.2.1", KP, mark), P(FWD, WEB_L, "198.18.1.1", KP, mark)]
    if docker:
        np_paths[1] = P(DROP, WEB_L, None, "filter/DOCKER #2")
    pk("outside -> NodePort (Cluster)", "198.18.4.9", "198.18.2.1", 30080, np_paths, in_iface="n-p",
       why="Docker 28's DOCKER chain drops what enters its bridge from elsewhere (! -i docker0 -o docker0 "
       "-j DROP), kube-proxy's mark notwithstanding" if docker else "")
    through = {"flannel": [P(FWD, None, "198.18.2.1", masq, None)], "k3s": [P(FWD, None, "198.18.2.1", masq)],
               "weave": [P(FWD, None, "198.18.2.1", masq)],
               "docker": [P(DROP, None, None, "filter/FORWARD policy DROP")]}.get(cni, [P(FWD, None, None,
                                                                                        None, zero)])
    pk("outside -> other node's pod, routed through", "198.18.4.9", "198.18.3.5", 443, through,
       in_iface="n-p", out_iface="n-p", why="a non-CNI flow: Docker's FORWARD policy DROP; flannel/weave "
       "masquerade anything from outside their network towards it")
    if cni == "calico":
        pk("pod -> smtp, denied by a GlobalNetworkPolicy", "198.18.1.3", "198.18.4.9", 25,
           [P(DROP, None, None, "filter/cali-po-_sK2jR5ZK-8ngT0ZxS1L #1")], out_iface="n-p")
    if cni == "weave":
        pk("pod outside every DefaultAllow namespace -> internet", "198.18.1.4", "198.18.4.9", 443,
           [P(DROP, None, None, "filter/WEAVE-NPC-EGRESS #8")], out_iface="n-p",
           why="weave-npc: egress not allowed -> NFLOG, then DROP (mark 0x40000 unset)")
        pk("pod outside every DefaultAllow namespace -> ClusterIP", "198.18.1.4", "198.18.5.1", 80,
           [P(DROP, WEB_R, None, "filter/WEAVE-NPC-EGRESS #8"), P(DROP, WEB_L, None, "filter/WEAVE-NPC-EGRESS #8")])
    if docker:
        pk("node -> published port", "198.18.2.1", "198.18.2.1", 8080,
           [P(SENT, "198.18.1.2:80", None, "DNAT by nat/DOCKER")], in_iface=None,
           why="nat/OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER")
        pk("pod -> published port: docker-proxy's job", "198.18.1.3", "198.18.2.1", 8080, [P(LOCAL)],
           why="nat/DOCKER -i docker0 -j RETURN (hairpin off: the userland proxy answers)")
    if cni == "k3s":
        pk("client-b -> api ClusterIP, NetworkPolicy api-allow-client-a", "198.18.1.4", "198.18.5.2", 443,
           [P(DROP, API_L, None, "-> REJECT"), P(FWD, API_R)],
           why="kube-router: the local endpoint's pod firewall rejects, the other node's pod is not policed here")
        pk("client-a -> api ClusterIP, allowed", "198.18.1.3", "198.18.5.2", 443, [P(FWD, API_L), P(FWD, API_R)])
        pk("node -> api pod", "198.18.2.1", "198.18.1.5", 8443, [P(SENT)], in_iface=None, out_iface="n-c",
           why="KUBE-POD-FW: -m addrtype --src-type LOCAL -d pod -j ACCEPT")
    return out


# rule-source references: repository, path, commit (as read from the stored index)
SOURCES = {
    "kube-proxy": [
        {"what": "nat table (iptables mode, 1.28 shape)", "repo": "this repository",
         "file": "lib/natlens/netfilter/generate.py kube_proxy_iptables"},
        {"what": "filter table: iptablesJumpChains (each prepended), KUBE-FORWARD (nfacct counter "
         "ct_state_invalid_dropped_pkts, 1.29+), KUBE-NODEPORTS health check, kubelet's KUBE-FIREWALL, canaries",
         "repo": "kubernetes/kubernetes", "file": "pkg/proxy/iptables/proxier.go",
         "commit": None, "note": "the index holds only an early proxier.go; the chain and rule text follows "
         "syncProxyRules of 1.29-1.31 as EKS/AKS nodes print it"}],
    "flannel": [
        {"what": "FLANNEL-POSTRTG (masqRules), FLANNEL-FWD (forwardRules)", "repo": "flannel-io/flannel",
         "file": "pkg/trafficmngr/iptables/iptables.go", "commit": "07c209467a601e3b938f60dd7b2601c5cb6ef33c"},
        {"what": "KubeProxyMark 0x4000/0x4000", "repo": "flannel-io/flannel", "file": "pkg/trafficmngr/trafficmngr.go",
         "commit": "de8b1f0553e44ad8a3ba3bf751038c09643567f9"}],
    "calico": [
        {"what": "static chains: raw/mangle/nat/filter cali-PREROUTING, cali-INPUT, cali-FORWARD, cali-OUTPUT, "
         "cali-wl-to-host, cali-POSTROUTING (tunnel masquerade), FORWARD append rules",
         "repo": "projectcalico/calico", "file": "felix/rules/static.go",
         "commit": "00b9aad19b300babd79b2883b3df82ef3b03d7f4"},
        {"what": "cali-nat-outgoing", "repo": "projectcalico/calico", "file": "felix/rules/nat.go",
         "commit": "03c4d89f527f8af12a28e5e009050af6dcde3c5f"},
        {"what": "workload endpoint chains (cali-fw-/cali-tw-, profiles, policy)", "repo": "projectcalico/calico",
         "file": "felix/rules/endpoints.go, felix/rules/dispatch.go",
         "commit": "c546f314f4dd441a10f04568975d52793774b10a (endpoints.go)",
         "note": "shape also checked against a published AKS node dump (cali:<hash> comments match)"},
        {"what": "rendering (--in-interface, -m rpfilter --invert --validmark, MARK --set-mark) and the "
         "cali:<hash> rule comments (sha224 chain of '-A <chain> HASH <rule>')", "repo": "projectcalico/calico",
         "file": "felix/iptables/match_builder.go, felix/iptables/actions.go, felix/generictables (RuleHashes)",
         "commit": "2ac9769ca0a5ae62d1e2cd6b93fe4be9a154d6af (match_builder.go), "
         "ba5e1fa815195ae691c6494087e3730ee7f62ada (actions.go)"}],
    "weave": [
        {"what": "filter FORWARD/INPUT steering, nat WEAVE + POSTROUTING jump, no-masq-local",
         "repo": "weaveworks/weave", "file": "net/bridge.go (configureIPTables)",
         "commit": "kuttiproject/weave@8bb2008ace5980000b5e339a91246ccf922a87f2",
         "note": "the maintained fork of weaveworks/weave 2.8; the index's weaveworks copy is an older revision"},
        {"what": "WEAVE masquerade rules", "repo": "weaveworks/weave", "file": "net/expose.go (exposeNAT)",
         "commit": "0434063e21b200f115c35cbb9e8d61ec3d9bcfdf"},
        {"what": "WEAVE-NPC, WEAVE-NPC-EGRESS base rules", "repo": "kuttiproject/weave",
         "file": "prog/weave-npc/main.go (createBaseRules)", "commit": "8bb2008ace5980000b5e339a91246ccf922a87f2"},
        {"what": "WEAVE-NPC-DEFAULT / -EGRESS-DEFAULT bypass rules of a DefaultAllow namespace",
         "repo": "weaveworks/weave", "file": "npc/namespace.go (bypassRules)",
         "commit": "c1d31074185588be935ba0115baae221742de172"}],
    "docker": [
        {"what": "bridge network rules (Docker 28: DOCKER-FORWARD, -CT, -BRIDGE, -ISOLATION-STAGE-1/2, raw "
         "direct-access DROP, nat DOCKER, MASQUERADE -s <subnet> ! -o <bridge>)", "repo": "moby/moby",
         "file": "libnetwork/drivers/bridge/internal/iptabler/testdata/TestIptabler_hairpin=false,internal=false,"
         "icc=true,masq=true,snat=false,gwm=nat,bindlh=false__iptables.golden",
         "commit": "7c04f14d8973c012ee84bb12eea1769cf2252048"},
        {"what": "DOCKER-USER (RETURN, jump at the top of FORWARD)", "repo": "moby/moby",
         "file": "libnetwork/firewall_linux.go", "commit": "20e75cea3efc3900d6dd968c30859700836af72c"},
        {"what": "FORWARD policy DROP when dockerd enables ip_forward", "repo": "moby/moby",
         "file": "libnetwork/drivers/bridge/internal/iptabler/iptabler.go (FilterForwardDrop)",
         "commit": "ee7766b0d1f981c6772458ba53b664a31a192630"}],
    "aws-vpc-cni": [
        {"what": "AWS-SNAT-CHAIN-0/1, AWS-CONNMARK-CHAIN-0/1, nat CONNMARK restore, mangle 'AWS, primary ENI' "
         "CONNMARK rules", "repo": "aws/amazon-vpc-cni-k8s", "file": "pkg/networkutils/network.go "
         "(buildIptablesSNATRules, buildIptablesConnmarkRules)", "commit": None,
         "note": "the chained AWS-SNAT-CHAIN-N shape of the 1.x releases before the per-CIDR RETURN chain; the "
         "index keeps this revision without its commit id (its latest stored commit, 2828d494, has moved "
         "connmark to nftables)"}],
    "k3s": [
        {"what": "embedded network policy controller", "repo": "k3s-io/k3s", "file": "pkg/agent/netpol/netpol.go",
         "commit": "65c750c0c3b39ea4a21c1b3fe6638adc9bc2c85a"},
        {"what": "KUBE-ROUTER-INPUT/FORWARD/OUTPUT, KUBE-NWPLCY-DEFAULT, explicit-accept rules",
         "repo": "cloudnativelabs/kube-router", "file": "pkg/controllers/netpol/network_policy_controller.go",
         "commit": "0ac15b273e3f557d96e4b2c2b1d2bed022bd4f91"},
        {"what": "KUBE-POD-FW-* chains and their jumps", "repo": "cloudnativelabs/kube-router",
         "file": "pkg/controllers/netpol/pod.go", "commit": "ac3d5df9fc5129e66d91d023c902bf51ee44258c"},
        {"what": "KUBE-NWPLCY-* rules (appendRuleToPolicyChain)", "repo": "cloudnativelabs/kube-router",
         "file": "pkg/controllers/netpol/policy.go", "commit": "03d5b6ee832da0c038c59ea48850f5be43cb9f50"},
        {"what": "k3s's flannel: the same FLANNEL-POSTRTG/FLANNEL-FWD (k3s embeds flannel)",
         "repo": "flannel-io/flannel", "file": "pkg/trafficmngr/iptables/iptables.go",
         "commit": "07c209467a601e3b938f60dd7b2601c5cb6ef33c",
         "note": "no interface-matching flannel rule (a '-i wt0'-style one) is documented for k3s: none written"}],
}

ADDRESSES = {
    "kube-proxy": {"service CIDR 10.96.0.0/12": SERVICE_CIDR + " (cluster IPs 198.18.5.1, 198.18.5.2 on kube-ipvs0)",
                   "LoadBalancer ingress IPs": "198.18.6.1-198.18.6.3",
                   "--cluster-cidr (detect-local NodeCIDR)": POD_CIDR},
    "flannel": {"Network 10.244.0.0/16": CLUSTER_NET, "node subnet 10.244.0.0/24": POD_CIDR,
                "other node's subnet 10.244.1.0/24": "198.18.3.0/24", "node (eth0) address": NODE_IP},
    "calico": {"IP pool 192.168.0.0/16 (natOutgoing)": "pools 198.18.1.0/24 and 198.18.3.0/24",
               "VXLAN peer (cali40all-vxlan-net)": "198.18.2.2", "node (eth0) address": NODE_IP},
    "weave": {"IPALLOC_RANGE 10.32.0.0/12": CLUSTER_NET, "this node's allocation (weaver-no-masq-local)": POD_CIDR},
    "docker": {"docker0 172.17.0.0/16 (gateway 172.17.0.1)": "198.18.1.0/24 (198.18.1.1)",
               "container 172.17.0.2 (-p 8080:80)": "198.18.1.2"},
    "aws-vpc-cni": {"VPC CIDR 192.168.0.0/16": CLUSTER_NET, "primary ENI address (SNAT --to-source)": NODE_IP},
    "k3s": {"cluster-cidr 10.42.0.0/16": CLUSTER_NET, "node podCIDR 10.42.0.0/24": POD_CIDR,
            "service-cidr 10.43.0.0/16": SERVICE_CIDR},
}

ORIGINAL_NODE = {  # the lab node's n-c / n-p under each CNI's own names (for the original.txt checks)
    "flannel": {"n-c": "cni0", "n-p": "eth0"},
    # the lab's uplink doubles as the VXLAN tunnel: naming it vxlan.calico keeps the lab's semantics
    "calico": {"n-c": CALI_WL, "n-p": "vxlan.calico"},
    "weave": {"n-c": "weave", "n-p": "eth0"},
    "docker": {"n-c": "docker0", "n-p": "eth0"},
    "aws-vpc-cni": {"n-c": "eni3b9f2c71a0e", "n-p": "eth0"},
    "k3s": {"n-c": "cni0", "n-p": "eth0"},
}

NOTES = {
    "flannel": "Lab artifact: flannel's Network must hold this node's pods (198.18.1/24) and the other node's "
               "(198.18.3/24), so it is 198.18.0.0/22, which also holds the node network 198.18.2/24.",
    "calico": "VXLAN mode; kube-proxy in iptables mode (no KubeIPVSSupport chains). One workload endpoint "
              f"({CALI_WL}) stands for all five client addresses: the lab has one pod-side interface. The lab "
              "uplink n-p doubles as vxlan.calico.",
    "weave": "weave-npc on (WEAVE-NPC*), no-masq-local on; pods 198.18.1.2,.3,.5,.6 in namespace default "
             "(DefaultAllow ingress and egress), 198.18.1.4 in a namespace with a default-deny policy. physdev "
             "names (vethwe-bridge) kept: the lab has no bridge, nothing is ever bridged.",
    "docker": "Docker's bridge is the pod side: the lab's pods are containers on docker0. kube-proxy's rules "
              "beside Docker 28's, FORWARD policy DROP.",
    "aws-vpc-cni": "vlan+ (branch ENIs) kept as is: no lab interface matches it, as on a node without trunk ENIs.",
    "k3s": "k3s = embedded flannel (vxlan) + embedded kube-router network policy + kube-proxy iptables mode. "
           "Five local pods with a pod firewall chain each; NetworkPolicy default/api-allow-client-a "
           "(podSelector app=api, ingress from client-a on TCP 8443).",
}


def manifest(summary: dict) -> dict:
    out = {"lab": {"pod side": "n-c 198.18.1.1/24, pods 198.18.1.2-.6 (client namespace)",
                   "uplink": "n-p 198.18.2.1/24; 198.18.3/24, 198.18.4/24, 198.18.6/24 via 198.18.2.2",
                   "VIPs": "kube-ipvs0 198.18.5.1, 198.18.5.2",
                   "ip_addr": "lab-ip-addr.txt", "ip_route": "lab-ip-route.txt",
                   "kube-proxy services": [
                       {"name": s.name, "cluster_ip": s.cluster_ip, "port": s.port, "proto": s.proto,
                        "node_port": s.node_port, "lb_ips": s.lb_ips, "policy": s.policy,
                        "endpoints": [f"{ip}:{p}" + (" (this node)" if on else "") for ip, p, on in s.endpoints]}
                       for s in services()],
                   "kube-proxy": SOURCES["kube-proxy"], "kube-proxy addresses": ADDRESSES["kube-proxy"],
                   "nfacct objects": NFACCT_OBJECTS},
           "cnis": {}}
    for cni in CNI_NAMES:
        d = HERE / cni
        out["cnis"][cni] = {
            "files": {"iptables": f"{cni}/iptables-save.txt", "original": f"{cni}/original.txt",
                      "ipset": f"{cni}/ipset-save.txt" if (d / "ipset-save.txt").exists() else None},
            "sources": SOURCES[cni],
            "substitutions": {"interfaces (original -> lab)": summary[cni]["ifaces"],
                              "addresses (project default -> lab)": ADDRESSES[cni]},
            "original_node": ORIGINAL_NODE[cni],
            "notes": NOTES[cni],
            "packets": packets(cni),
        }
    return out


if __name__ == "__main__":
    summary = build()
    (HERE / "manifest.json").write_text(json.dumps(manifest(summary), indent=1) + "\n")
    print(json.dumps(summary, indent=2))
