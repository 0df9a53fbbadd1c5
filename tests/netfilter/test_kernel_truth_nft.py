"""The nft model against the real kernel: same rule set, same packets, same NAT decisions.

Like test_kernel_truth.py, for nftables: each case loads a whole rule set into the
node namespace (``nft flush ruleset``, ``nft -f -``; optionally iptables-nft rules
and ipsets beside it), sends first packets through it (forwarded from the client
namespace, and generated on the node itself), and reads conntrack's NEW events:
reply source = where the packet was DNATed to, reply destination = what it was
SNATed to, no event = dropped, mark = the connection mark. The model reads what the
kernel prints back, once from ``nft list ruleset`` and once from ``nft -j list
ruleset`` (plus iptables-save / ipset save / ip addr / ip route), and must predict
exactly that, packet by packet (for a numgen branch, the kernel's outcome must be
one of the model's paths).

Cases: kube-proxy nftables-mode rule sets (1.31, 1.32 and current shapes) alone and
beside CNI-like iptables-nft rules, and random nft rule sets. The lab's "pods" are
198.18.1.4/30 in the client namespace (so 198.18.1.2 and .3 are outside clients);
cluster IPs are in 198.18.6.0/24, routed like the endpoints 198.18.4.0/24 to the peer.
"""

from __future__ import annotations

import inspect
import random
from collections import Counter

import pytest
from nflab import CLIENT_IPS, NODE_IPS, kernel_nft_lab_fixture

from natlens.netfilter import NodeRules, parse_ip_addr, parse_ipset, parse_iptables_save
from natlens.netfilter.generate import Service, kube_proxy_nftables
from natlens.netfilter.node import parse_ip_route

pytestmark = [pytest.mark.root, pytest.mark.slow]

kernel_lab = pytest.fixture(scope="module")(kernel_nft_lab_fixture)

POD_CIDR = "198.18.1.4/30"
SERVICE_CIDR = "198.18.6.0/24"
KUBE_NODE_IPS = ["198.18.1.1", "198.18.2.1"]
REMOTE = ["198.18.2.2", "198.18.3.1", "198.18.3.2", "198.18.3.3", "198.18.4.1", "198.18.4.2",
          "198.18.6.1", "198.18.6.9"]
PORTS = [80, 443, 53, 8080, 30080]
VERSIONS = ["1.31", "1.32", "current"]


# ----------------------------------------------------------------- the model


def _parse_nft():
    """The model's nft parser, or skip: it is being written beside these tests."""
    try:
        from natlens.netfilter.nft import parse_nft
    except ImportError:
        pytest.skip("natlens.netfilter.nft has no parse_nft yet")
    if "nft" not in inspect.signature(NodeRules).parameters:
        pytest.skip("NodeRules does not take nft= yet")
    return parse_nft


def _new_stats() -> dict:
    return {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set(), "why": Counter(),
            "by_format": Counter()}


def _expected(path, dst: str, dport: int, src: str) -> tuple:
    if not path.conntrack:
        return ("absent",)
    rdst, _, rport = (path.dnat_to or f"{dst}:{dport}").rpartition(":")
    return ("present", rdst, int(rport), path.snat_to if path.snat else src, path.ctmark)


def _observed(entry) -> tuple:
    if entry is None:
        return ("absent",)
    return ("present", entry["reply_src"], entry["reply_sport"], entry["reply_dst"], entry["mark"])


def _models(loaded, addr: str, route: str) -> list[tuple[str, NodeRules]]:
    """One NodeRules per kernel listing: from the text and from the JSON."""
    parse_nft = _parse_nft()
    rules = parse_iptables_save(loaded.iptables, "iptables-save") if loaded.iptables.strip() else None
    sets = parse_ipset(loaded.ipset, "ipset") if loaded.ipset.strip() else None
    out = []
    for fmt, dump, name in (("text", loaded.text, "nft-ruleset.txt"),
                            ("json", loaded.json, "nft-ruleset.json")):
        out.append((fmt, NodeRules(rules, sets, None, parse_ip_addr(addr), routes=parse_ip_route(route),
                                   nft=parse_nft(dump, name))))
    return out


def run_case_nft(lab, nft: str, packets: list[tuple], stats: dict, *, iptables: str = "",
                 ipset: str = "", then: str = "", strict: bool = True) -> list[str]:
    """packets: (src, sport, dst, dport, proto, local). Returns disagreements (empty = agree).

    ``then``: one more nft transaction after loading (an agent restarting). ``strict``:
    an undecided packet is a disagreement (kube-proxy shapes); otherwise it is only
    counted, by what the model said it could not decide (random rule sets).
    """
    loaded = lab.load_nft(nft, iptables, ipset)
    if then:
        loaded = lab.nft_apply(then)
    addr, route = lab.node_dumps()
    seen = lab.send([p[:5] for p in packets if not p[5]], [p[:5] for p in packets if p[5]])
    bad = []
    for fmt, node in _models(loaded, addr, route):
        for src, sport, dst, dport, proto, local in packets:
            what = f"[{fmt}] {proto} {src}:{sport}->{dst}:{dport} local={local}"
            v = node.explain(src, dst, dport, proto, sport=sport, in_iface=None if local else "n-c",
                             local=local)
            if v.undecided:
                stats["undecided"] += 1
                stats["why"][str(v.undecided)[:160]] += 1
                if strict:
                    bad.append(f"{what}: undecided {v.undecided}")
                continue
            got = _observed(seen.get((proto, src, sport)))
            options = [_expected(p, dst, dport, src) for p in v.paths]
            stats["compared"] += 1
            stats["by_format"][fmt] += 1
            stats["branched"] += len(options) > 1
            stats["outcomes"].add(got[0] if got[0] == "absent" else
                                  ("dnat" if got[1] != dst else "") + ("snat" if got[3] != src else ""))
            if got not in options:
                bad.append(f"{what}: kernel {got}, model {options}\n  " + "\n  ".join(v.trace))
    return bad


def _report(name: str, stats: dict, bad: list[str]) -> None:
    """One summary line per case (pytest -s shows it): what the report counts."""
    print(f"\nNFT-TRUTH {name}: compared={stats['compared']} {dict(stats['by_format'])} "
          f"undecided={stats['undecided']} branched={stats['branched']} disagreements={len(bad)} "
          f"outcomes={sorted(stats['outcomes'])}")
    for why, n in stats["why"].most_common(8):
        print(f"  undecided x{n}: {why}")
    for b in bad[:3]:
        print("  DISAGREE " + b.replace("\n", "\n    "))


# ----------------------------------------------------------------- kube-proxy rule sets


def _services() -> list[Service]:
    """Cluster (LB, external IP on the node, node port), Local with and without a local
    endpoint, a ClusterIP-only service and one with no endpoints at all."""
    return [
        Service("default/web:http", "198.18.6.1", 80, node_port=30080, lb_ips=["198.18.3.1"],
                external_ips=["198.18.5.1"], policy="Cluster",
                endpoints=[("198.18.4.1", 8080, False), ("198.18.1.5", 8080, True)]),
        Service("default/api:https", "198.18.6.2", 443, node_port=30443, lb_ips=["198.18.3.2"],
                policy="Local", endpoints=[("198.18.1.6", 8443, True), ("198.18.4.2", 8443, False)]),
        Service("default/dns:dns", "198.18.6.3", 53, proto="udp", node_port=30053,
                lb_ips=["198.18.3.3"], external_ips=["198.18.3.4"], policy="Local",
                endpoints=[("198.18.4.2", 53, False)]),
        Service("kube-system/metrics:", "198.18.6.4", 443, endpoints=[("198.18.4.1", 10250, False)]),
        Service("default/gone:http", "198.18.6.5", 80, node_port=30099, lb_ips=["198.18.3.5"],
                external_ips=["198.18.3.6"]),
    ]


# (dst, dport, proto): every kind of service address, wrong ports, no service at all
_KUBE_DSTS = [("198.18.3.1", 80, "tcp"), ("198.18.3.2", 443, "tcp"), ("198.18.3.3", 53, "udp"),
              ("198.18.3.4", 53, "udp"), ("198.18.3.5", 80, "tcp"), ("198.18.3.6", 80, "tcp"),
              ("198.18.5.1", 80, "tcp"), ("198.18.6.1", 80, "tcp"), ("198.18.6.2", 443, "tcp"),
              ("198.18.6.3", 53, "udp"), ("198.18.6.4", 443, "tcp"), ("198.18.6.5", 80, "tcp"),
              ("198.18.6.1", 9999, "tcp"), ("198.18.6.77", 80, "tcp"), ("198.18.2.1", 30080, "tcp"),
              ("198.18.1.1", 30443, "tcp"), ("198.18.2.1", 30053, "udp"), ("198.18.2.1", 30099, "tcp"),
              ("198.18.4.1", 8080, "tcp"), ("198.18.3.9", 443, "tcp")]


def _kube_packets() -> list[tuple]:
    """From two pods (one an endpoint: hairpin), an outside client, and the node itself."""
    pk = []
    sport = 21000
    for src in ("198.18.1.4", "198.18.1.5", "198.18.1.2"):
        for dst, dport, proto in _KUBE_DSTS:
            sport += 1
            pk.append((src, sport, dst, dport, proto, False))
    for i, (dst, dport, proto) in enumerate(_KUBE_DSTS):
        sport += 1
        pk.append((KUBE_NODE_IPS[i % 2], sport, dst, dport, proto, True))
    return pk


def _kube_nft(version: str) -> str:
    return kube_proxy_nftables(_services(), node_ips=KUBE_NODE_IPS, cluster_cidr=POD_CIDR,
                               service_cidr=SERVICE_CIDR, version=version).nft


@pytest.mark.parametrize("version", VERSIONS)
def test_kube_proxy_nftables_mode(kernel_lab, version):
    stats = _new_stats()
    bad = run_case_nft(kernel_lab, _kube_nft(version), _kube_packets(), stats)
    _report(f"kube-proxy {version}", stats, bad)
    assert not bad, f"{len(bad)} disagreements, first:\n" + "\n".join(bad[:5])
    assert stats["compared"] == 2 * len(_kube_packets())
    # Cluster LB VIP from outside: DNAT and SNAT; Local from outside: DNAT only; no endpoints: gone
    assert {"dnatsnat", "dnat", "absent", ""} <= stats["outcomes"], stats["outcomes"]


# A CNI beside kube-proxy, in iptables-nft: pod egress masquerade (nat POSTROUTING, the
# same priority as kube-proxy's nat-postrouting), a FORWARD drop, mangle marks saved to
# the connection mark before kube-proxy's masquerading chain clears its bit; the other
# nodes' pod network in an ipset.
CNI_IPSET = "create CNI-NOMASQ hash:net family inet\nadd CNI-NOMASQ 198.18.4.0/24\n"
CNI_IPTABLES = f"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i n-c -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x100/0x100
-A OUTPUT -p udp -j MARK --set-xmark 0x200/0x200
-A POSTROUTING -j CONNMARK --save-mark --nfmask 0xffff --ctmask 0xffff
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-MASQ - [0:0]
-A POSTROUTING -s {POD_CIDR} -m comment --comment "cni pod egress" -j CNI-MASQ
-A CNI-MASQ -d 198.18.1.0/24 -j RETURN
-A CNI-MASQ -m set --match-set CNI-NOMASQ dst -j RETURN
-A CNI-MASQ -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -s 198.18.1.2/32 -d 198.18.4.2/32 -j DROP
-A FORWARD -s 198.18.1.4/30 -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_kube_proxy_nftables_with_iptables_nft(kernel_lab, version):
    """The same services with CNI-like iptables-nft rules in nft tables of their own."""
    stats = _new_stats()
    bad = run_case_nft(kernel_lab, _kube_nft(version), _kube_packets(), stats, iptables=CNI_IPTABLES,
                       ipset=CNI_IPSET)
    _report(f"kube-proxy {version} + iptables-nft", stats, bad)
    assert not bad, f"{len(bad)} disagreements, first:\n" + "\n".join(bad[:5])
    assert stats["compared"] == 2 * len(_kube_packets())
    assert {"dnatsnat", "snat", "absent"} <= stats["outcomes"], stats["outcomes"]


# ----------------------------------------------------------------- random rule sets

HOOKS = {"filter": ["prerouting", "input", "forward", "output", "postrouting"],
         "nat": ["prerouting", "input", "output", "postrouting"]}
# priorities nft accepts per chain type and hook (dstnat only in prerouting, srcnat only in
# postrouting, nat chains after conntrack at -200)
PRIOS = ["raw", "mangle", "filter", "security", "mangle - 5", "filter + 3", "-300", "-160", "-110",
         "-100", "-10", "0", "10", "50", "100", "150", "300"]
NAT_PRIOS = ["mangle", "filter", "security", "filter - 1", "-150", "-110", "-100", "-90", "0", "50",
             "100", "110", "200"]
ANON_IPS = ["198.18.1.2", "198.18.1.4/31", "198.18.3.0/25", "198.18.4.1", "198.18.2.1", "198.18.5.0/30"]
NFT_NETS = ["198.18.1.2", "198.18.1.0/24", "198.18.1.4/30", "198.18.3.0/24", "198.18.3.1", "198.18.0.0/16",
            "198.18.5.0/30", "198.18.2.1", "198.18.4.0/25", "198.18.3.0/31", "198.18.2.0/24"]
PORT_EXPRS = ["80", "443", "53", "8080", "30080", "{ 80, 443 }", "50-90", "30000-32767",
              "{ 53, 8000-8100 }", "!= 8080", "!= { 53, 80 }"]


def _prio(r: random.Random, ctype: str, hook: str) -> str:
    names = list(NAT_PRIOS if ctype == "nat" else PRIOS)
    if hook == "prerouting":
        names += ["dstnat", "dstnat - 10", "dstnat + 5"]
    if hook == "postrouting":
        names += ["srcnat", "srcnat - 5", "srcnat + 10"]
    return r.choice(names)


def _prio_value(prio: str) -> int:
    """The number a priority stands for (for where notrack still works)."""
    named = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
    parts = prio.split()
    base = named.get(parts[0])
    if base is None:
        return int(parts[0])
    return base + (int(parts[2]) * (1 if parts[1] == "+" else -1) if len(parts) == 3 else 0)


def _nft_sets(r: random.Random) -> list[str]:
    """Named sets of one table: plain, interval, concatenated (and a concatenated interval set)."""
    def pick(pool, k):
        return ", ".join(sorted(set(r.choices(pool, k=k))))
    svc = [f"{ip} . {p}" for ip in ("198.18.3.1", "198.18.3.2", "198.18.2.1", "198.18.4.1") for p in PORTS]
    svc3 = [f"{ip} . {pr} . {p}" for ip in ("198.18.3.1", "198.18.2.1", "198.18.6.1")
            for pr in ("tcp", "udp") for p in PORTS]
    return [
        f"\tset s_ip {{\n\t\ttype ipv4_addr\n\t\telements = {{ {pick(CLIENT_IPS + REMOTE + NODE_IPS, 4)} }}\n\t}}",
        "\tset s_net {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { "
        f"{pick(['198.18.1.0/30', '198.18.3.0/25', '198.18.4.0/24', '198.18.1.6', '198.18.5.0/24'], 3)} }}\n\t}}",
        f"\tset s_svc {{\n\t\ttype ipv4_addr . inet_service\n\t\telements = {{ {pick(svc, 5)} }}\n\t}}",
        "\tset s_svc3 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\telements = { "
        f"{pick(svc3, 5)} }}\n\t}}",
        "\tset s_netport {\n\t\ttype ipv4_addr . inet_service\n\t\tflags interval\n\t\telements = { "
        f"{r.choice(['198.18.3.0/24', '198.18.6.0/24'])} . 80, 198.18.1.0/24 . 50-90, "
        f"198.18.4.0/25 . {r.choice(['443', '8000-8100'])} }}\n\t}}",
        "\tmap m_port {\n\t\ttype inet_service : verdict\n\t\telements = { "
        f"80 : {r.choice(['accept', 'drop', 'return'])}, 53 : {r.choice(['accept', 'drop', 'continue'])} }}\n\t}}",
    ]


def _nft_match(r: random.Random, hook: str) -> str:
    """One random match valid at this hook (in an ip or inet table)."""
    kinds = ["saddr", "daddr", "anon", "proto", "dport", "dport", "sport", "mark", "ctstate", "ctstatus",
             "ctmark", "fib", "named", "named", "concat"]
    if hook in ("prerouting", "input", "forward"):
        kinds.append("iif")
    if hook in ("forward", "output", "postrouting"):
        kinds.append("oif")
    k = r.choice(kinds)
    neg = "!= " if r.random() < 0.25 else ""
    if k in ("saddr", "daddr"):
        return f"ip {k} {neg}{r.choice(NFT_NETS)}"
    if k == "anon":
        return f"ip {r.choice(['saddr', 'daddr'])} {neg}{{ {', '.join(sorted(set(r.sample(ANON_IPS, 3))))} }}"
    if k == "proto":
        return r.choice(["meta l4proto tcp", "meta l4proto udp", "meta l4proto != tcp",
                         "meta l4proto { tcp, udp }"])
    if k == "dport":
        return f"{r.choice(['tcp', 'udp', 'th'])} dport {r.choice(PORT_EXPRS)}"
    if k == "sport":
        return f"{r.choice(['tcp', 'udp', 'th'])} sport {r.choice(['20000-20005', '20006-20050', str(r.randint(20001, 20012))])}"
    if k == "mark":
        return "meta mark " + r.choice(["0x1", "& 0x4000 == 0x4000", "and 0x3 != 0x0", "!= 0x10", "0x0"])
    if k == "ctstate":
        return "ct state " + r.choice(["new", "established,related", "invalid", "!= new", "{ new, untracked }"])
    if k == "ctstatus":
        return "ct status " + r.choice(["dnat", "!= dnat", "snat"])
    if k == "ctmark":
        return "ct mark " + r.choice(["0x20", "& 0x30 == 0x20", "!= 0x0"])
    if k == "fib":
        return f"fib {r.choice(['saddr', 'daddr'])} type {neg}local"
    if k == "named":
        return r.choice(["ip saddr @s_ip", "ip daddr @s_ip", "ip daddr @s_net", "ip saddr != @s_net",
                         "ip daddr . th dport @s_svc", "ip daddr . meta l4proto . th dport @s_svc3",
                         "ip daddr . th dport @s_netport"])
    if k == "concat":
        return r.choice(["ip saddr . ip daddr { 198.18.1.2 . 198.18.3.1, 198.18.1.5 . 198.18.4.1 }",
                         "meta l4proto . th dport { tcp . 443, udp . 53 }"])
    if k == "iif":
        return f'iifname {neg}"{r.choice(["n-c", "n*", "lo", "eth*"])}"'
    return f'oifname {neg}"{r.choice(["n-p", "n-c", "n*", "lo"])}"'


def _nat_stmt(r: random.Random, hook: str, fam: str, proto: str | None) -> str:
    """A NAT statement valid at this hook; a port only with one transport protocol matched."""
    ip = " ip" if fam == "inet" else ""
    if hook in ("prerouting", "output"):
        if r.random() < 0.25:
            return "redirect" + (" to :8080" if proto else "")
        dst = r.choice(["198.18.3.2", "198.18.4.1", "198.18.4.2", "198.18.5.1", "198.18.2.2"])
        if proto and r.random() < 0.6:
            dst += f":{r.choice([8080, 443, 53, 80])}"
        if r.random() < 0.15:
            return f"dnat{ip} to ip daddr map {{ 198.18.3.1 : 198.18.4.1, 198.18.6.1 : 198.18.4.2 }}"
        return f"dnat{ip} to {dst}"
    if hook == "postrouting" and r.random() < 0.6:
        return "masquerade" + r.choice(["", " random", " fully-random"])
    return f"snat{ip} to {r.choice(['198.18.6.1', '198.18.2.1', '198.18.6.7'])}"


def _nft_stmt(r: random.Random, c: dict, later: list[str], proto: str | None) -> str:
    """A random statement for chain context c: marks, counters, verdicts, vmaps, NAT, notrack."""
    choices = ["counter", "log", "mark", "mark", "ctmark", "accept", "return", "", "numgen", "vmap",
               "mapvmap"]
    if later:
        choices += ["jump", "jump", "goto"]
    if c["type"] == "filter":
        choices += ["drop"]
        if c["hook"] in ("input", "forward", "output"):
            choices += ["reject", "reject"]
        if c["hook"] in ("prerouting", "output") and _prio_value(c["prio"]) < -200:
            choices += ["notrack", "notrack"]
    if c["type"] == "nat":
        choices += ["nat"] * 6
    t = r.choice(choices)
    verdicts = ["accept", "return"] + (["drop"] if c["type"] == "filter" else [])
    verdicts += [f"jump {x}" for x in later] + [f"goto {x}" for x in later]
    if t == "counter":
        return "counter"
    if t == "log":
        return 'log prefix "nl: "'
    if t == "mark":
        return "meta mark set " + r.choice(["0x1", "0x4000", "meta mark | 0x2", "meta mark ^ 0x1",
                                            "meta mark & 0xfffffffe", "ct mark"])
    if t == "ctmark":
        return "ct mark set " + r.choice(["0x10", "0x20", "meta mark", "ct mark | 0x30"])
    if t in ("jump", "goto"):
        return f"{t} {r.choice(later)}"
    if t == "reject":
        return r.choice(["reject", "reject with icmp type host-unreachable"] +
                        (["reject with tcp reset"] if proto == "tcp" else []))
    if t == "numgen":
        return f"numgen random mod 2 vmap {{ 0 : {r.choice(verdicts)}, 1 : {r.choice(verdicts)} }}"
    if t == "vmap":
        return (f"ip daddr vmap {{ 198.18.3.1 : {r.choice(verdicts)}, 198.18.4.1 : {r.choice(verdicts)}, "
                f"198.18.2.1 : {r.choice(verdicts)} }}")
    if t == "mapvmap":
        return "th dport vmap @m_port"
    if t == "nat":
        return _nat_stmt(r, c["hook"], c["fam"], proto)
    return t


def _one_protocol(preds: list[str]) -> tuple[list[str], str | None]:
    """Make a rule's matches agree on one transport protocol, as nft insists; returns it.

    The first tcp/udp header match or single ``meta l4proto`` decides; later tcp/udp
    header matches are rewritten to it and other l4proto matches dropped.
    """
    proto = None
    out = []
    for p in preds:
        w = p.split()
        single = p.startswith("meta l4proto ") and w[2] in ("tcp", "udp")
        if w[0] in ("tcp", "udp") or single:
            proto = proto or (w[0] if w[0] in ("tcp", "udp") else w[2])
            p = (f"{proto} " + p.split(" ", 1)[1]) if w[0] in ("tcp", "udp") else f"meta l4proto {proto}"
        elif p.startswith("meta l4proto ") and proto:
            continue
        out.append(p)
    if proto and any(p.startswith("meta l4proto ") and p.split()[2] not in ("tcp", "udp") for p in out):
        out = [p for p in out if not (p.startswith("meta l4proto ") and p.split()[2] not in ("tcp", "udp"))]
    several = any(p.startswith("meta l4proto ") and p.split()[2] not in ("tcp", "udp") for p in out)
    return out, (None if several else proto)


def _nft_rule(r: random.Random, c: dict, later: list[str]) -> str:
    """0-3 matches and a statement; a NAT port gets the one transport protocol it needs."""
    preds, proto = _one_protocol([_nft_match(r, c["hook"]) for _ in range(r.choice([0, 1, 1, 2, 2, 3]))])
    stmt = _nft_stmt(r, c, later, proto)
    if not proto and ("dnat" in stmt and stmt.count(":") == 1 or "redirect to" in stmt):
        if any(p.startswith("meta l4proto") for p in preds):   # "!= tcp" or "{ tcp, udp }": no port
            stmt = stmt.rsplit(":", 1)[0] if "dnat" in stmt else "redirect"
        else:
            proto = r.choice(["tcp", "udp"])
            preds.insert(0, f"meta l4proto {proto}")
    if stmt == "reject with tcp reset" and proto != "tcp":
        stmt = "reject"
    if r.random() < 0.15 and stmt not in ("", "counter"):
        stmt = "counter " + stmt
    return " ".join(x for x in [*preds, stmt] if x) or "counter"


def _nft_table(r: random.Random, ti: int) -> str:
    """One table: named sets, 1-4 base chains at random hooks and priorities, private regular chains."""
    fam = r.choice(["ip", "ip", "inet"])
    lines = [f"table {fam} t{ti} {{", *_nft_sets(r)]
    for bi in range(r.randint(1, 4)):
        ctype = r.choice(["filter", "filter", "nat", "nat", "nat"])
        hook = r.choice(HOOKS[ctype])
        c = {"type": ctype, "hook": hook, "prio": _prio(r, ctype, hook), "fam": fam}
        policy = "drop" if ctype == "filter" and r.random() < 0.08 else "accept"
        users = [f"u{bi}_{k}" for k in range(r.randint(0, 3))]
        for ci, chain in enumerate([f"b{bi}", *users]):
            head = [f"\tchain {chain} {{"]
            if ci == 0:
                head.append(f"\t\ttype {ctype} hook {hook} priority {c['prio']}; policy {policy};")
            body = [f"\t\t{_nft_rule(r, c, users[ci:])}"
                    for _ in range(r.randint(1, 5) if ci == 0 else r.randint(1, 4))]
            lines += head + body + ["\t}"]
    return "\n".join(lines + ["}"]) + "\n"


def _gen_nft(r: random.Random) -> str:
    return "".join(_nft_table(r, ti) for ti in range(r.randint(1, 3)))


def _nft_packets(r: random.Random, n_client: int, n_node: int) -> list[tuple]:
    out = []
    sport = 20000
    for i in range(n_client + n_node):
        local = i >= n_client
        src = r.choice(["198.18.1.1", "198.18.2.1"]) if local else r.choice(CLIENT_IPS)
        sport += 1
        out.append((src, sport, r.choice(REMOTE + NODE_IPS), r.choice(PORTS),
                    "tcp" if r.random() < 0.7 else "udp", local))
    return out


def test_random_nft_rule_sets(kernel_lab):
    """80 random rule sets x 10 packets, each read back as text and as JSON."""
    stats = _new_stats()
    bad_all = []
    for seed in range(80):
        r = random.Random(seed)
        nft = _gen_nft(r)
        pk = _nft_packets(r, 7, 3)
        try:
            bad = run_case_nft(kernel_lab, nft, pk, stats, strict=False)
        except RuntimeError as exc:  # the generator wrote something nft refuses
            pytest.fail(f"seed {seed}: {exc}\n{nft}")
        bad_all += [f"seed {seed}: {b}" for b in bad]
    _report("random nft", stats, bad_all)
    assert not bad_all, f"{len(bad_all)} disagreements, first:\n" + "\n".join(bad_all[:3])
    assert stats["compared"] >= 800
    assert {"absent", "dnat", "snat", ""} <= stats["outcomes"], stats["outcomes"]



def test_random_nft_beside_random_iptables_nft(kernel_lab):
    """30 random nft rule sets, each with test_kernel_truth's random iptables rules and
    ipsets loaded after it (iptables-nft: their base chains tie with the nft ones at
    the standard priorities, and were registered later)."""
    from test_kernel_truth import _gen_rules, _gen_sets

    stats = _new_stats()
    bad_all = []
    for seed in range(30):
        r = random.Random(1000 + seed)
        nft, rules, sets = _gen_nft(r), _gen_rules(r, with_statistic=False), _gen_sets(r)
        pk = _nft_packets(r, 7, 3)
        try:
            bad = run_case_nft(kernel_lab, nft, pk, stats, iptables=rules, ipset=sets, strict=False)
        except RuntimeError as exc:
            pytest.fail(f"seed {1000 + seed}: {exc}\n{nft}\n{rules}")
        bad_all += [f"seed {1000 + seed}: {b}" for b in bad]
    _report("random nft + random iptables-nft", stats, bad_all)
    assert not bad_all, f"{len(bad_all)} disagreements, first:\n" + "\n".join(bad_all[:3])
    assert stats["compared"] >= 300

# ----------------------------------------------------------------- a restarted kube-proxy

# A CNI that SNATs pod egress to an address of its own, in iptables-nft: its nat
# POSTROUTING and kube-proxy's nat-postrouting share priority 100, so which SNAT a pod's
# service connection gets depends on which base chain was registered last.
CNI_SNAT_IPTABLES = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s {POD_CIDR} -o n-p -m comment --comment "cni egress" -j SNAT --to-source 198.18.6.7
COMMIT
"""


def _restart(nft: str) -> str:
    """What kube-proxy (1.32+) writes on its first sync after a start: every base chain
    added and deleted, then created again with its jump rules, in the existing table."""
    lines = nft.splitlines()
    base = [ln for ln in lines if ln.startswith("add chain ") and " hook " in ln]
    names = {ln.split()[4]: ln for ln in base}
    out = [f"{verb} chain ip kube-proxy {n}" for n in names for verb in ("add", "delete")]
    for n, ln in names.items():
        out += [ln, f"flush chain ip kube-proxy {n}"]
    out += [ln for ln in lines if ln.startswith("add rule ") and ln.split()[4] in names]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("restarted", [False, True])
@pytest.mark.parametrize("version", ["1.32", "current"])
def test_kube_proxy_beside_a_snat_cni(kernel_lab, version, restarted):
    """kube-proxy loaded before the CNI's iptables-nft rules, then (maybe) restarted.

    Before the restart the CNI's POSTROUTING, registered later, runs first and its SNAT
    wins; after it kube-proxy's nat-postrouting is the later one and its masquerade wins,
    though the listings still show the kube-proxy table first. An undecided answer is
    not a disagreement here (the order is not in the dumps); a wrong one is.
    """
    nft = _kube_nft(version)
    stats = _new_stats()
    pk = [(src, 25000 + i * 10 + k, dst, dport, proto, False) for i, (dst, dport, proto) in
          enumerate([("198.18.3.1", 80, "tcp"), ("198.18.2.1", 30080, "tcp"), ("198.18.5.1", 80, "tcp"),
                     ("198.18.6.1", 80, "tcp"), ("198.18.3.9", 443, "tcp")])
          for k, src in enumerate(["198.18.1.4", "198.18.1.5", "198.18.1.6", "198.18.1.4", "198.18.1.6"])]
    bad = run_case_nft(kernel_lab, nft, pk, stats, iptables=CNI_SNAT_IPTABLES,
                       then=_restart(nft) if restarted else "", strict=False)
    _report(f"kube-proxy {version} + SNAT CNI{' restarted' if restarted else ''}", stats, bad)
    assert not bad, f"{len(bad)} disagreements, first:\n" + "\n".join(bad[:5])
    assert stats["compared"] + stats["undecided"] == 2 * len(pk)


# ----------------------------------------------------------------- ct status, word by word

# nft compiles `ct status dnat` (and `ct status & dnat == 0`, listed back as
# `ct status ! dnat`) to bit tests, but `ct status == dnat`, `!= dnat` and the set
# forms to comparisons of the whole status word, which also holds the *_NAT_DONE bits:
# each rule ORs its own bit into the packet mark, saved as the connection mark.
_CT_STATUS_RULES = [["ct status != dnat", "ct status == dnat", "ct status dnat", "ct status { dnat, snat }",
                     "ct status != { dnat, snat }", "ct state new"],
                    ["ct status & dnat == 0", "ct status & snat != 0"]]


def _ct_status_nft(rules: list[str]) -> str:
    marks = "".join(f"\t\t{m} meta mark set meta mark | {1 << i:#x}\n" for i, m in enumerate(rules))
    chains = "".join(f"\tchain {h} {{\n\t\ttype filter hook {h} priority {p}; policy accept;\n{marks}"
                     "\t\tct mark set meta mark\n\t}\n"
                     for h, p in (("forward", 0), ("input", 0), ("output", -50), ("postrouting", 150)))
    return ("table ip corners {\n\tchain raw {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
            "\t\tip saddr 198.18.1.6 notrack\n\t}\n"
            "\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            "\t\tip daddr 198.18.3.1 dnat to 198.18.4.1\n\t\tip daddr 198.18.5.2 redirect\n\t}\n"
            "\tchain out {\n\t\ttype nat hook output priority -100; policy accept;\n"
            "\t\tip daddr 198.18.3.2 dnat to 198.18.4.2\n\t}\n"
            "\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            "\t\tip saddr 198.18.1.3 masquerade\n\t}\n" + chains + "}\n")


@pytest.mark.parametrize("rules", _CT_STATUS_RULES, ids=["words", "masks"])
def test_ct_status_words(kernel_lab, rules):
    """Bit tests and whole-word comparisons of ct status, after DNAT, redirect, SNAT or none."""
    pk = []
    for i, (src, dst, dport) in enumerate([(s, d, p) for s in ("198.18.1.2", "198.18.1.3", "198.18.1.6")
                                           for d, p in (("198.18.3.1", 80), ("198.18.3.9", 80),
                                                        ("198.18.5.2", 8080), ("198.18.5.1", 80))]):
        pk.append((src, 26000 + i, dst, dport, "tcp" if i % 3 else "udp", False))
    for i, dst in enumerate(["198.18.3.2", "198.18.3.9", "198.18.5.1"]):
        pk.append(("198.18.2.1", 26100 + i, dst, 80, "tcp", True))
    stats = _new_stats()
    bad = run_case_nft(kernel_lab, _ct_status_nft(rules), pk, stats, strict=False)
    _report(f"ct status {rules[0]} ...", stats, bad)
    assert not bad, f"{len(bad)} disagreements, first:\n" + "\n".join(bad[:5])
    assert stats["compared"] + stats["undecided"] == 2 * len(pk)
