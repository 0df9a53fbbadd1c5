"""`natlens lab`: reproduce the LB loopback incident in network namespaces (needs root)."""

from __future__ import annotations

import argparse

from natlens.errors import NatlensError
from natlens.vocab import AVOIDS_SOURCE


def _policies(values: list[str] | None) -> list[str]:
    """--policy Local --policy Cluster, or --policy Local,Cluster; case-insensitive."""
    out = []
    for v in values or ["Local"]:
        for p in v.split(","):
            name = p.strip().capitalize()
            if name not in ("Local", "Cluster"):
                raise NatlensError(f"--policy must be Local or Cluster, not {p!r}")
            out.append(name)
    return out


def _run(args: argparse.Namespace) -> int:
    from natlens.lab.faults import check_name
    from natlens.lab.run import run

    facts = run(args.out, _policies(args.policy), connections=args.connections,
                nodes=args.nodes, any_capture=args.any, prefix=args.prefix,
                timeout=args.timeout, concurrency=args.concurrency, title=args.title,
                proxy_mode=args.proxy_mode, ip_mode=args.ip_mode,
                fault=check_name(args.fault), lb=args.lb)
    for s in facts["services"]:
        print(tally_line(s))
    print(f"bundle: {args.out}")
    return 0


def tally_line(s: dict) -> str:
    """One Service's tally from lab.json, in words: what the run did."""
    picks = ", ".join(f"{node} {n}" for node, n in s["by_lb_node"].items())
    on_node = f", {s['node_dnat']} DNATed on the node" if s.get("node_dnat") else ""
    asym = f", {s['asymmetric']} asymmetric" if s.get("asymmetric") else ""
    why = ", ".join(f"{name} {n}" for name, n in (s.get("failures") or {}).items())
    return (f"{s['service']} {s['key']} {s['policy']}: {s['connections']} connections, "
            f"{s['failed']} failed, {s['loopback']} loopback{asym}, {s['snat']} SNATed{on_node}; "
            f"LB picked {picks}" + (f"; failures: {why}" if why else ""))


def _proxy_mode(value: str) -> str:
    """--proxy-mode, case-insensitive: ipvs, iptables or nftables."""
    mode = value.strip().lower()
    if mode not in ("ipvs", "iptables", "nftables"):
        raise argparse.ArgumentTypeError(f"use ipvs, iptables or nftables, not {value!r}")
    return mode


def _ip_mode(value: str) -> str:
    """--ip-mode, case-insensitive: VIP or Proxy (the spelling Kubernetes uses)."""
    mode = {"vip": "VIP", "proxy": "Proxy"}.get(value.strip().lower())
    if mode is None:
        raise argparse.ArgumentTypeError(f"use VIP or Proxy, not {value!r}")
    return mode


def _lb(value: str) -> str:
    """--lb, case-insensitive: avoids-source, any-backend or proxy (natlens.vocab's words)."""
    from natlens.lab.topology import LB_MODES

    mode = value.strip().lower()
    if mode not in LB_MODES:
        raise argparse.ArgumentTypeError(f"use {', '.join(LB_MODES[:-1])} or {LB_MODES[-1]}, "
                                         f"not {value!r}")
    return mode


def _clean(args: argparse.Namespace) -> int:
    from natlens.lab.netns import clean, require

    require(["ip"])
    removed = clean(args.prefix)
    print(f"removed {len(removed)} namespaces" + (f": {' '.join(removed)}" if removed else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("lab", help="reproduce the LB loopback incident (root, netns)",
                              description=__doc__)
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="build the lab, make connections, write an incident bundle")
    r.add_argument("--policy", action="append", metavar="Local|Cluster",
                   help="externalTrafficPolicy; repeat (or comma-separate) for one Service "
                        "each, e.g. --policy Local,Cluster (default Local)")
    r.add_argument("--proxy-mode", type=_proxy_mode, default="ipvs",
                   metavar="ipvs|iptables|nftables",
                   help="kube-proxy's mode on the nodes (default ipvs: TKE's, the VIP is in "
                        "the ipsets but not bound, so pod -> VIP traffic leaves the node)")
    r.add_argument("--ip-mode", type=_ip_mode, default="VIP", metavar="VIP|Proxy",
                   help="the LoadBalancer ingress's ipMode (default VIP: in iptables and "
                        "nftables modes kube-proxy handles the VIP on the node; Proxy: no "
                        "kube-proxy rule for it, traffic to it goes to the LB)")
    r.add_argument("--lb", type=_lb, default=AVOIDS_SOURCE,
                   metavar="avoids-source|any-backend|proxy",
                   help="what the cloud LB does with a flow from one of its own nodes (default "
                        "avoids-source: never sends it back there, as Tencent CLB; any-backend: "
                        "may, as an AWS NLB with client IP preservation, and the node drops its "
                        "own address arriving as a martian; proxy: may, but SNATs every flow "
                        "to the VIP, so the reply goes back through the LB and works)")
    r.add_argument("--fault", metavar="NAME",
                   help="break the path in one known place (default none): no-endpoints (no "
                        "Service has an endpoint), refused (targetPort where nothing "
                        "listens), blackhole (node-1 routes the VIPs to a blackhole; needs "
                        "traffic to leave the node: ipvs mode or --ip-mode Proxy), reply-drop "
                        "(the VPC drops SYN-ACKs to node-1), unreachable (the VPC's route to "
                        "node-2 is unreachable: ICMP host unreachable; needs traffic to leave "
                        "the node)")
    r.add_argument("--connections", type=int, default=20, metavar="N",
                   help="connections per Service (default 20)")
    r.add_argument("--out", required=True, metavar="DIR", help="bundle directory (new or empty)")
    r.add_argument("--nodes", type=int, default=2, choices=range(2, 5), metavar="2..4",
                   help="number of nodes (default 2)")
    r.add_argument("--any", action="store_true", help="also capture `tcpdump -i any` per node")
    r.add_argument("--prefix", help="namespace name prefix (default nl<pid>-)")
    r.add_argument("--timeout", type=float, default=1.5, metavar="SECONDS",
                   help="the client's connect timeout (default 1.5)")
    r.add_argument("--concurrency", type=int, default=10, metavar="N",
                   help="connections the client has open at once (default 10)")
    r.add_argument("--title", help="incident.yaml title (default: a description of the run)")
    r.set_defaults(func=_run)
    c = sub.add_parser("clean", help="remove namespaces left by a killed lab")
    c.add_argument("--prefix", required=True, help="namespace name prefix, e.g. nl1234-")
    c.set_defaults(func=_clean)
