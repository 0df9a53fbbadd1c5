"""The model against the real kernel: same rules, same packets, compare the NAT decisions.

Each case loads a rule set and ipsets into the node namespace (iptables-restore,
ipset restore), sends first packets through it (forwarded from the client
namespace, and generated on the node itself), and reads conntrack's original and
reply tuples: reply source = where the packet was DNATed to, reply destination =
what it was SNATed to, no entry = dropped, mark = the connection mark. The model
reads the kernel's own iptables-save / ipset save / ip addr / ip route output and
must predict exactly that, packet by packet (for a statistic branch, the kernel's
outcome must be one of the model's paths).

Cases: kube-proxy IPVS-mode rule sets (1.18, 1.23, 1.28 shapes; Local and Cluster
services), iptables-mode rule sets (1.22 and 1.28 shapes), and random rule sets.
"""

from __future__ import annotations

import random

import pytest
from nflab import CLIENT_IPS, NODE_IPS, kernel_lab_fixture, run_case

from natlens.netfilter.generate import Service, kube_proxy_iptables, kube_proxy_ipvs

pytestmark = [pytest.mark.root, pytest.mark.slow]

kernel_lab = pytest.fixture(scope="module")(kernel_lab_fixture)

REMOTE = ["198.18.2.2", "198.18.3.1", "198.18.3.2", "198.18.3.3", "198.18.4.1", "198.18.4.2"]
PORTS = [80, 443, 53, 8080, 30080]


def _packets(rng: random.Random, n_client: int, n_node: int, dsts: list[str], ports: list[int]):
    out = []
    sport = 20000
    for i in range(n_client + n_node):
        local = i >= n_client
        src = rng.choice(["198.18.1.1", "198.18.2.1"]) if local else rng.choice(CLIENT_IPS)
        sport += 1
        out.append((src, sport, rng.choice(dsts), rng.choice(ports),
                    "tcp" if rng.random() < 0.7 else "udp", local))
    return out


# ----------------------------------------------------------------- kube-proxy rule sets


def _services() -> list[Service]:
    return [
        Service("default/web:http", "198.18.5.1", 80, node_port=30080, lb_ips=["198.18.3.1"],
                policy="Cluster", endpoints=[("198.18.4.1", 8080, True), ("198.18.4.2", 8080, False)]),
        Service("default/api:https", "198.18.5.2", 443, node_port=30443, lb_ips=["198.18.3.2"],
                policy="Local", endpoints=[("198.18.4.1", 8443, True)]),
        Service("default/dns:dns", "198.18.5.2", 53, proto="udp", node_port=30053,
                lb_ips=["198.18.3.3"], policy="Local", endpoints=[("198.18.4.2", 53, False)]),
    ]


def _kube_packets() -> list[tuple]:
    pk = []
    sport = 21000
    for src in CLIENT_IPS[:2]:  # pods behind the node
        for dst, dport, proto in [("198.18.3.1", 80, "tcp"), ("198.18.3.2", 443, "tcp"),
                                  ("198.18.3.3", 53, "udp"), ("198.18.5.1", 80, "tcp"),
                                  ("198.18.2.1", 30080, "tcp"), ("198.18.2.1", 30443, "tcp"),
                                  ("198.18.5.2", 9999, "tcp"), ("198.18.4.1", 8080, "tcp")]:
            sport += 1
            pk.append((src, sport, dst, dport, proto, False))
    for dst, dport, proto in [("198.18.3.1", 80, "tcp"), ("198.18.3.2", 443, "tcp"),
                              ("198.18.3.3", 53, "udp"), ("198.18.4.2", 53, "udp")]:
        sport += 1
        pk.append(("198.18.2.1", sport, dst, dport, proto, True))  # hostNetwork process
    return pk


@pytest.mark.parametrize("version", ["1.18", "1.23", "1.28"])
def test_kube_proxy_ipvs_mode(kernel_lab, version):
    d = kube_proxy_ipvs(_services(), node_ips=["198.18.2.1"], cluster_cidr="198.18.1.0/24",
                        version=version)
    stats = {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set()}
    bad = run_case(kernel_lab, d.iptables, d.ipset, _kube_packets(), stats)
    assert not bad, "\n".join(bad[:5])
    # the founding incident: Cluster LB VIP is SNATed on egress, Local is not
    assert {"snat", ""} <= stats["outcomes"]
    assert stats["compared"] == len(_kube_packets())


@pytest.mark.parametrize("version", ["1.22", "1.28"])
def test_kube_proxy_iptables_mode(kernel_lab, version):
    d = kube_proxy_iptables(_services(), cluster_cidr="198.18.1.0/24", version=version)
    stats = {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set()}
    bad = run_case(kernel_lab, d.iptables, "", _kube_packets(), stats)
    assert not bad, "\n".join(bad[:5])
    assert "dnat" in stats["outcomes"] and stats["branched"] > 0


# ----------------------------------------------------------------- random rule sets

NETS = ["198.18.1.2/32", "198.18.1.3", "198.18.1.0/24", "198.18.1.0/255.255.255.252", "198.18.3.0/24",
        "198.18.3.1/32", "198.18.0.0/16", "198.18.5.0/30", "198.18.2.1/32", "198.18.4.0/25",
        "198.18.3.0/31", "198.18.2.0/24"]
SETS = {
    "S-IP": ("hash:ip", lambda r: r.choice(CLIENT_IPS + REMOTE + NODE_IPS)),
    "S-IPP": ("hash:ip,port", lambda r: f"{r.choice(REMOTE + NODE_IPS + CLIENT_IPS)},"
              f"{r.choice(['tcp', 'udp'])}:{r.choice(PORTS)}"),
    "S-IPPI": ("hash:ip,port,ip", lambda r: f"{r.choice(REMOTE + NODE_IPS)},{r.choice(['tcp', 'udp'])}:"
               f"{r.choice(PORTS)},{r.choice(CLIENT_IPS + NODE_IPS)}"),
    "S-IPPN": ("hash:ip,port,net", lambda r: f"{r.choice(REMOTE + NODE_IPS)},tcp:{r.choice(PORTS)},"
               f"{r.choice(['198.18.1.0/24', '198.18.1.2/31', '198.18.2.0/24'])}"),
    "S-NET": ("hash:net", lambda r: r.choice(["198.18.1.0/24", "198.18.3.0/25", "198.18.4.0/24",
                                              "198.18.1.4/30 nomatch", "198.18.3.1/32 nomatch",
                                              "198.18.5.0/24"])),
    "S-NETP": ("hash:net,port", lambda r: f"{r.choice(['198.18.3.0/24', '198.18.1.0/24', '198.18.5.0/30'])},"
               f"{r.choice(['tcp', 'udp'])}:{r.choice(PORTS)}"),
    "S-PORT": ("bitmap:port", lambda r: str(r.choice(PORTS))),
}
DIMS = {"hash:ip": 1, "hash:ip,port": 2, "hash:ip,port,ip": 3, "hash:ip,port,net": 3, "hash:net": 1,
        "hash:net,port": 2, "bitmap:port": 1}


def _gen_sets(r: random.Random) -> str:
    lines = []
    for name, (stype, member) in SETS.items():
        opts = " range 0-65535" if stype.startswith("bitmap") else " family inet"
        if r.random() < 0.3 and not stype.startswith("bitmap"):
            opts += " timeout 0 comment"
        lines.append(f"create {name} {stype}{opts}")
        for m in {member(r) for _ in range(r.randint(1, 5))}:
            extra = ""
            if "timeout" in opts and r.random() < 0.5:
                extra = f' timeout 3600 comment "entry {r.randint(1, 9)}"'
            lines.append(f"add {name} {m}{extra}")
    return "\n".join(lines) + "\n"


def _predicate(r: random.Random, hook: str) -> str:
    """One random match that iptables-restore accepts at this hook."""
    kinds = ["s", "d", "proto", "ports", "multiport", "mark", "connmark", "set", "addrtype",
             "ctstate", "comment", "iprange"]
    if hook in ("PREROUTING", "INPUT", "FORWARD"):
        kinds.append("in")
    if hook in ("OUTPUT", "POSTROUTING", "FORWARD"):
        kinds.append("out")
    k = r.choice(kinds)
    neg = "! " if r.random() < 0.25 else ""
    if k == "s":
        return f"{neg}-s {r.choice(NETS)}"
    if k == "d":
        return f"{neg}-d {r.choice(NETS)}"
    if k == "proto":
        return f"{neg}-p {r.choice(['tcp', 'udp'])}"
    if k == "ports":
        p = r.choice(["tcp", "udp"])
        opt = r.choice(["--dport", "--sport"])
        val = r.choice([str(r.choice(PORTS)), "20000:20010", "30000:32767", "50:90", "20005:"])
        if opt == "--sport" and r.random() < 0.5:
            val = str(r.randint(20001, 20012))
        return f"-p {p} -m {p} {neg}{opt} {val}"
    if k == "multiport":
        p = r.choice(["tcp", "udp"])
        ports = ",".join(str(x) for x in r.sample(PORTS, 2)) + r.choice(["", ",8000:8100"])
        return f"-p {p} -m multiport {neg}--{r.choice(['dports', 'ports'])} {ports}"
    if k == "mark":
        return f"-m mark {neg}--mark {r.choice(['0x1', '0x1/0x1', '0x4000/0x4000', '0x0/0x4000', '0x3/0x3'])}"
    if k == "connmark":
        return f"-m connmark {neg}--mark {r.choice(['0x10/0x10', '0x0', '0x20/0x30'])}"
    if k == "set":
        name = r.choice(list(SETS))
        n = DIMS[SETS[name][0]] + r.choice([0, 0, 0, 1, -1])
        flags = ",".join(r.choice(["src", "dst"]) for _ in range(max(1, n)))
        return f"-m set {neg}--match-set {name} {flags}"
    if k == "addrtype":
        t = r.choice(["LOCAL", "LOCAL", "UNICAST", "BROADCAST,MULTICAST"])
        return f"-m addrtype {neg}--{r.choice(['src', 'dst'])}-type {t}"
    if k == "ctstate":
        return f"-m conntrack {neg}--ctstate {r.choice(['NEW', 'ESTABLISHED,RELATED', 'DNAT', 'NEW,DNAT', 'SNAT'])}"
    if k == "comment":
        return f'-m comment --comment "random rule {r.randint(1, 99)} -j not-a-target"'
    if k == "iprange":
        return f"-m iprange {neg}--{r.choice(['src', 'dst'])}-range {r.choice(['198.18.1.2-198.18.1.4', '198.18.3.1-198.18.4.1'])}"
    if k == "in":
        return f"{neg}-i {r.choice(['n-c', 'n+', 'lo', 'eth+'])}"
    return f"{neg}-o {r.choice(['n-p', 'n-c', 'n+', 'lo'])}"


def _target(r: random.Random, table: str, hook: str, user_chains: list[str]) -> str:
    choices = ["RETURN", "ACCEPT", "MARK", "MARK", "LOG", ""]
    if user_chains:
        choices += ["JUMP", "JUMP", "GOTO"]
    if table == "mangle":
        choices += ["MARK", "CONNMARK", "CONNMARK"]
    if table == "filter":
        choices += ["DROP", "REJECT"]
    if table == "nat" and hook in ("PREROUTING", "OUTPUT"):
        choices += ["DNAT", "DNAT", "DNAT", "REDIRECT"]
    if table == "nat" and hook == "POSTROUTING":
        choices += ["SNAT", "MASQUERADE", "MASQUERADE", "MASQUERADE"]
    if table == "nat" and hook == "INPUT":
        choices += ["SNAT"]
    t = r.choice(choices)
    if t == "JUMP":
        return f"-j {r.choice(user_chains)}"
    if t == "GOTO":
        return f"-g {r.choice(user_chains)}"
    if t == "MARK":
        return "-j MARK " + r.choice(["--set-xmark 0x1/0x1", "--set-mark 0x4000", "--or-mark 0x2",
                                      "--xor-mark 0x1", "--and-mark 0xfffffffe", "--set-xmark 0x4000/0x0"])
    if t == "CONNMARK":
        return "-j CONNMARK " + r.choice(["--set-xmark 0x10/0x10", "--save-mark", "--restore-mark",
                                          "--set-mark 0x20/0x30", "--save-mark --mask 0x3"])
    if t == "DNAT":
        return "-j DNAT --to-destination " + r.choice(["198.18.3.2", "198.18.4.1:8080", "198.18.4.2:443",
                                                         "198.18.5.1:80", "198.18.2.2:53"])
    if t == "REDIRECT":
        return "-j REDIRECT" + r.choice(["", " --to-ports 8080"])
    if t == "SNAT":
        return "-j SNAT --to-source " + r.choice(["198.18.6.1", "198.18.2.1", "198.18.6.7"])
    if t == "MASQUERADE":
        return "-j MASQUERADE" + r.choice(["", " --random-fully"])
    if t == "LOG":
        return '-j LOG --log-prefix "nl: "'
    if t == "REJECT":
        return "-j REJECT --reject-with icmp-port-unreachable"
    return f"-j {t}" if t else ""


def _statistic(r: random.Random) -> str:
    return f"-m statistic --mode random --probability {r.choice(['0.5', '0.25'])}"


def _gen_rules(r: random.Random, with_statistic: bool) -> str:
    hooks = {"raw": ["PREROUTING", "OUTPUT"],
             "mangle": ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
             "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
             "filter": ["INPUT", "FORWARD", "OUTPUT"]}
    out = []
    for table, hl in hooks.items():
        decl, body = [], []
        for hook in hl:
            policy = "DROP" if table == "filter" and r.random() < 0.15 else "ACCEPT"
            decl.append(f":{hook} {policy} [0:0]")
            # user chains private to this hook (iptables checks -i/-o and targets per hook)
            users = [f"U-{hook[:4]}-{i}" for i in range(r.randint(0, 3))]
            decl += [f":{u} - [0:0]" for u in users]
            for ci, chain in enumerate([hook, *users]):
                later = users[ci:] if chain != hook else users
                for _ in range(r.randint(1, 5) if chain == hook else r.randint(1, 4)):
                    preds: list[str] = []
                    for _ in range(r.choice([0, 1, 1, 2, 2, 3])):
                        p = _predicate(r, hook)
                        flag = p.replace("! ", "")[:2]
                        if any(q.replace("! ", "")[:2] == flag for q in preds if flag in
                               ("-s", "-d", "-i", "-o", "-p")) or ("-p " in p and any(
                                "-p " in q for q in preds)):
                            continue  # iptables allows each of -s -d -i -o -p once
                        preds.append(p)
                    preds.sort(key=lambda q: "-p " not in q)  # multiport needs -p first
                    if with_statistic and r.random() < 0.1:
                        preds.append(_statistic(r))
                    tgt = _target(r, table, hook, later)
                    needs_proto = "--to-ports" in tgt or ("DNAT" in tgt and tgt.count(":") == 1)
                    if needs_proto and not any(q.startswith("-p ") for q in preds):
                        if any("-p " in q for q in preds):  # only "! -p x": drop the port
                            tgt = tgt.split(":")[0] if "DNAT" in tgt else "-j REDIRECT"
                        else:
                            preds.insert(0, f"-p {r.choice(['tcp', 'udp'])}")
                    body.append(" ".join(x for x in [f"-A {chain}", *preds, tgt] if x))
            if table == "mangle" and hook in ("POSTROUTING", "INPUT"):
                body.append(f"-A {hook} -j CONNMARK --save-mark --nfmask 0xffff --ctmask 0xffff")
        out += [f"*{table}", *decl, *body, "COMMIT"]
    return "\n".join(out) + "\n"


def test_random_rule_sets(kernel_lab):
    """40 random rule sets x 10 packets: the model agrees with conntrack on every packet."""
    stats = {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set()}
    bad_all = []
    for seed in range(40):
        r = random.Random(seed)
        rules = _gen_rules(r, with_statistic=seed % 4 == 3)
        sets = _gen_sets(r)
        pk = _packets(r, 7, 3, REMOTE + NODE_IPS, PORTS)
        try:
            bad = run_case(kernel_lab, rules, sets, pk, stats)
        except RuntimeError as exc:  # the generator wrote something iptables-restore refuses
            pytest.fail(f"seed {seed}: {exc}\n{rules}")
        bad_all += [f"seed {seed}: {b}" for b in bad]
    assert not bad_all, f"{len(bad_all)} disagreements, first:\n" + "\n".join(bad_all[:3])
    assert stats["compared"] >= 400
    # the random rule sets exercise every kind of outcome
    assert {"absent", "dnat", "snat", "dnatsnat", ""} <= stats["outcomes"], stats["outcomes"]
