"""`natlens explain`: what the node's netfilter rules do to one packet, rule by rule.

    natlens explain --iptables iptables-save.txt|iptables-S.txt [--table T] [--ip6tables ip6tables-save.txt]
                    [--nft nft-ruleset.txt|.json] [--ipset ipset.txt] [--ipvs ipvsadm.txt]
                    [--ip-addr ip-addr.txt] [--local-ip IP ...] --src IP --dst IP --dport N
                    [--proto tcp] [--sport N] [--in-iface IF | --local] [--json]
    natlens explain --node INCIDENT_DIR/nodes/NODE --src ... --dst ... --dport ...
    natlens explain --node INCIDENT_DIR/nodes/NODE --services [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from natlens.errors import NatlensError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="walk a packet through a node's iptables/nft/ipset/ipvs dumps: SNATed or not, and why",
        description="Walk the first packet of a connection through a node's netfilter dumps the "
        "way the kernel orders tables and hooks; print the verdict (SNAT, DNAT, dropped) and a "
        "trace of every rule evaluated. A rule the model cannot evaluate makes the answer "
        "'undecided', naming it. --services lists kube-proxy's Service VIPs with their "
        "externalTrafficPolicy and whether pod traffic to them is SNATed.",
    )
    src = p.add_argument_group("dumps (either --node, or --iptables and/or --nft)")
    src.add_argument("--node", metavar="DIR", help="node directory of an incident bundle "
                     "(iptables-save.txt, ip6tables-save.txt, nft-ruleset.json/.txt, ipset-save.txt, "
                     "ipvsadm.txt, ip-addr.txt/.json, ip-route.txt)")
    src.add_argument("--iptables", metavar="FILE", action="append", default=[],
                     help="iptables-save output, or iptables -S / iptables -t TABLE -S output, or a "
                     "grep of either (repeatable: one iptables -S file per table; default: none)")
    src.add_argument("--table", choices=["raw", "mangle", "nat", "filter", "security"],
                     help="the table of an --iptables file whose lines do not show it (a grep of "
                     "iptables -t TABLE -S); a file named iptables-S-<table>.txt needs none")
    src.add_argument("--nft", metavar="FILE", help="nft list ruleset (text), nft -j list ruleset (JSON) "
                     "or an nft -f file: kube-proxy's nftables mode writes no iptables rules")
    src.add_argument("--ip6tables", metavar="FILE", help="ip6tables-save output (without it an "
                     "IPv6 packet is undecided: iptables-save holds only IPv4 rules)")
    src.add_argument("--ipset", metavar="FILE", help="ipset save or ipset list output")
    src.add_argument("--ipvs", metavar="FILE", help="ipvsadm -Ln or ipvsadm -S -n output")
    src.add_argument("--ip-addr", metavar="FILE", help="ip -o addr / ip addr / ip -j addr output")
    src.add_argument("--ip-route", metavar="FILE", help="ip route output (egress interface)")
    src.add_argument("--local-ip", metavar="IP", action="append", default=[],
                     help="an address of the node (repeatable; adds to ip-addr; default: none)")
    pk = p.add_argument_group("packet")
    pk.add_argument("--src", metavar="IP", help="source address (required unless --services)")
    pk.add_argument("--dst", metavar="IP", help="destination address, e.g. the LB VIP (required unless --services)")
    pk.add_argument("--dport", type=int, metavar="N", help="destination port (required unless --services)")
    pk.add_argument("--sport", type=int, metavar="N", help="source port (default 40000)")
    pk.add_argument("--proto", default="tcp", choices=["tcp", "udp", "sctp"], help="protocol (default tcp)")
    pk.add_argument("--in-iface", metavar="IF", help="interface it arrives on (forwarded/incoming)")
    pk.add_argument("--out-iface", metavar="IF", help="egress interface, if known")
    pk.add_argument("--local", action="store_true", help="generated on the node (OUTPUT path)")
    pk.add_argument("--mark", type=lambda s: int(s, 0), default=0, metavar="MARK", help="initial packet mark, e.g. 0x4000 (default 0)")
    p.add_argument("--services", action="store_true",
                   help="list kube-proxy Service VIPs, their policy and SNAT instead (SNAT for a "
                   "packet from --src, default: an address of the cluster CIDR that is no Service "
                   "endpoint; --in-iface/--out-iface apply to it)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from natlens.netfilter import load_files, load_node

    if bool(args.node) == bool(args.iptables or args.nft):
        raise NatlensError("give either --node DIR or --iptables FILE and/or --nft FILE")
    if args.node and args.table:
        raise NatlensError("--table goes with --iptables FILE; in a node directory, name an "
                           "iptables -S file iptables-S-<table>.txt")
    if args.node:
        node = load_node(args.node, local_ips=args.local_ip)
    else:
        node = load_files(args.iptables, args.ipset, args.ipvs, args.ip_addr, args.local_ip,
                          ip_route=args.ip_route, ip6tables=args.ip6tables, nft=args.nft,
                          table=args.table)
    for note in node.ruleset.notes + (node.nft.notes if node.nft is not None else []):
        print(f"natlens: note: {note}", file=sys.stderr)
    if args.services:
        return _services(node, args)
    missing = [f"--{n}" for n in ("src", "dst", "dport") if getattr(args, n) is None]
    if missing:
        raise NatlensError(f"missing {' '.join(missing)} (or use --services)")
    v = node.explain(args.src, args.dst, args.dport, args.proto, sport=args.sport,
                     in_iface=args.in_iface, local=args.local, out_iface=args.out_iface,
                     mark=args.mark)
    if args.json:
        print(json.dumps(v.to_json(), indent=2))
        return 0
    for why in v.partial:
        print(f"partial dump: {why}: the answer is what the rules shown do")
    print("\n".join(v.trace))
    print()
    snat = {True: f"yes, to {v.snat_to or '?'}", False: "no", None: "undecided"}[v.snat]
    print(f"verdict: {v.verdict}")
    print(f"SNAT: {snat}")
    if v.dnat_to:
        print(f"DNAT: {', '.join(v.dnat_to)}")
    for u in v.undecided:
        print(f"undecided: {u}")
    return 0


def _services(node, args: argparse.Namespace) -> int:
    """--services: one line per Service port, its evidence indented; what limits the
    listing is said first (stderr), and a listing with nothing read at all is an error."""
    from natlens.netfilter import kube_services
    from natlens.netfilter.kubeproxy import services_notes

    if not (node.ruleset.tables or node.nft is not None or node.sets or node.ipvs):
        raise NatlensError("nothing to list: the dumps given hold no rules, ipsets or IPVS services",
                           path=node.ruleset.path)
    svcs = kube_services(node, pod_ip=args.src, in_iface=args.in_iface, out_iface=args.out_iface)
    for note in services_notes(node):
        print(f"natlens: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps([s.to_dict() for s in svcs], indent=2))
        return 0
    for s in svcs:
        snat = {True: "SNATed", False: "not SNATed", None: "SNAT unknown"}[s.snat_on_egress]
        nps = f" nodePort {','.join(map(str, s.node_ports))}" if s.node_ports else ""
        print(f"{s.kind:<12} {s.vip}:{s.port}/{s.proto:<4} {s.policy:<8} {snat}{nps}"
              + (f"  {s.name}" if s.name else "")
              + (f"  endpoints {', '.join(s.endpoints)}" if s.endpoints else ""))
        for e in s.evidence:
            print(f"    {e}")
    return 0
