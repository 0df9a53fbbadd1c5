"""kube-proxy's view of a node: which Service VIP:port has which externalTrafficPolicy.

Read from the dumps alone (no cluster API), DESIGN.md section 2:

* IPVS mode: membership of KUBE-LOAD-BALANCER / KUBE-EXTERNAL-IP in their -LOCAL
  twins and of KUBE-NODE-PORT-<PROTO> in KUBE-NODE-PORT-LOCAL-<PROTO>; node ports are
  tied to a VIP when ipvsadm shows the same real servers behind both.
* iptables mode: the KUBE-SERVICES rule for the VIP and where its chain leads:
  KUBE-EXT-X -> KUBE-SVL-X (1.24+) or KUBE-FW-X / KUBE-NODEPORTS -> KUBE-XLB-X (older)
  means Local, otherwise Cluster; node ports from KUBE-NODEPORTS, tied by the chain
  hash kube-proxy shares between KUBE-SVC-/EXT-/SVL-/FW-/XLB- of one service port.

Whether pod traffic to the VIP is SNATed is not read off a rule: the packet model
walks a packet from a pod address (taken from the cluster CIDR in kube-proxy's own
rules) through the node, so the answer is the same one `natlens explain` gives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from natlens.netfilter import kubeproxy_nft
from natlens.netfilter.iptables import format_net
from natlens.netfilter.walk import PROTO_NUM, ip_str
from natlens.vocab import UNKNOWN

_PROTO_NAME = {v: k for k, v in PROTO_NUM.items() if k in ("tcp", "udp", "sctp")}


NOT_APPLICABLE = "n/a"  # ServicePolicy.policy of a cluster IP (see ServicePolicy)


@dataclass
class ServicePolicy:
    vip: str
    port: int
    proto: str
    kind: str                       # LoadBalancer, ExternalIP, ClusterIP, NodePort
    policy: str                     # Local, Cluster, unknown, or NOT_APPLICABLE ("n/a") for a
                                    # ClusterIP: externalTrafficPolicy governs only traffic from
                                    # outside (LB VIP, external IP, node port), never a cluster IP
    snat_on_egress: bool | None
    node_ports: list[int] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    name: str | None = None         # "namespace/name:port" when a rule comment or chain name says so
    endpoints: list[str] = field(default_factory=list)  # "ip:port" the rules DNAT to (nftables mode)
    no_endpoints: str | None = None  # nftables mode: "drop"/"reject" when a no-endpoint map has it

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def kube_services(node, pod_ip: str | None = None,
                  lb_ips: list[tuple[str, int, str]] | None = None) -> list[ServicePolicy]:
    """Every Service VIP:port kube-proxy set up on this node, with its policy and SNAT.

    IPVS, iptables and nftables mode (the last from the node's nft dump). SNAT is
    evaluated for a packet from pod_ip, by default an address of the cluster CIDR found
    in kube-proxy's rules. lb_ips (VIP, port, proto) are the LoadBalancer ingress IPs the
    cluster reports: one with no rule on the node is listed too, as traffic that leaves.
    """
    if "KUBE-LOAD-BALANCER" in node.sets or "KUBE-CLUSTER-IP" in node.sets or \
            node.ruleset.chain("nat", "KUBE-LOAD-BALANCER") is not None:
        out = _ipvs_mode(node)
    else:
        out = _iptables_mode(node)
    nft_mode = kubeproxy_nft.is_nftables_mode(node.nft)
    if nft_mode:
        out += kubeproxy_nft.services(node.nft)
    out += _without_rules(out, lb_ips or [])
    pod, why = (pod_ip, "given") if pod_ip else \
        (kubeproxy_nft.pod_source(node.nft) if nft_mode and not out_of_iptables(node) else pod_source(node))
    for sp in out:
        if sp.kind == "NodePort" or pod is None:
            if pod is None:
                sp.evidence.append(f"SNAT not evaluated: {why}")
            continue
        v = node.explain(pod, sp.vip, sp.port, sp.proto)
        sp.snat_on_egress = v.snat
        sp.evidence.append(f"packet model, pod {pod} ({why}) -> {sp.vip}:{sp.port}/{sp.proto}: "
                           f"{v.verdict}" + (f"; undecided: {v.undecided[0]}" if v.undecided else ""))
    return out


def _without_rules(found: list[ServicePolicy], lb_ips: list[tuple[str, int, str]]) -> list[ServicePolicy]:
    """LB ingress IPs kube-proxy wrote no rule for: pod traffic to them leaves the node."""
    have = {(s.vip, s.port, s.proto) for s in found}
    return [ServicePolicy(ip, int(port), proto.lower(), "LoadBalancer", UNKNOWN, None, evidence=[
        "no kube-proxy rule for this LoadBalancer IP on the node (ingress ipMode Proxy, or a "
        "hostname-only ingress): pod traffic to it leaves the node for the load balancer, and "
        "only the CNI's or other rules decide whether it is SNATed"])
        for ip, port, proto in lb_ips if (ip, int(port), proto.lower()) not in have]


def out_of_iptables(node) -> bool:
    """Whether the iptables dump holds kube-proxy's own rules (iptables or IPVS mode)."""
    return node.ruleset.chain("nat", "KUBE-SERVICES") is not None


def pod_source(node) -> tuple[str | None, str]:
    """A pod address to test with: the second address of the cluster CIDR kube-proxy uses."""
    nat = node.ruleset.tables.get("nat", {})
    for name in ("KUBE-SERVICES", *[c for c in nat if c.startswith(("KUBE-SVC-", "KUBE-EXT-",
                                                                    "KUBE-XLB-"))]):
        ch = nat.get(name)
        if ch is None:
            continue
        for r in ch.rules:
            if r.src and len(r.src[1]) == 1 and r.src[1][0][1] != 0xFFFFFFFF:
                net = ipaddress.ip_network(format_net(r.src[1][0]))
                return str(net.network_address + 2), f"cluster CIDR {net} from {r.table}/{r.chain} #{r.index}"
    return None, "no cluster CIDR in kube-proxy's rules"


def _members(node, name: str) -> list[tuple]:
    s = node.sets.get(name)
    return [e.key for e in s.entries] if s is not None and s.dims is not None else []


def _ipvs_mode(node) -> list[ServicePolicy]:
    out: list[ServicePolicy] = []
    by_vs = {vs.key: vs for vs in node.ipvs}

    def backends(ip: str, port: int, proto: str):
        vs = by_vs.get((proto, ip, port))
        return frozenset((r.addr, r.port) for r in vs.real_servers) if vs else None

    for kind, base in (("LoadBalancer", "KUBE-LOAD-BALANCER"), ("ExternalIP", "KUBE-EXTERNAL-IP")):
        local = set(_members(node, base + "-LOCAL"))
        for key in _members(node, base):
            ip, pnum, port = key
            proto = _PROTO_NAME.get(pnum, str(pnum))
            is_local = key in local
            out.append(ServicePolicy(
                ip_str(ip), port, proto, kind, "Local" if is_local else "Cluster", None,
                evidence=[f"ipset {base} has {ip_str(ip)},{proto}:{port}",
                          f"ipset {base}-LOCAL {'has' if is_local else 'lacks'} it"]))
    lb_vips = {(s.vip, s.port, s.proto) for s in out}
    for ip, pnum, port in _members(node, "KUBE-CLUSTER-IP"):
        proto = _PROTO_NAME.get(pnum, str(pnum))
        if (ip_str(ip), port, proto) in lb_vips:
            continue
        out.append(ServicePolicy(ip_str(ip), port, proto, "ClusterIP", NOT_APPLICABLE, None,
                                 evidence=[f"ipset KUBE-CLUSTER-IP has {ip_str(ip)},{proto}:{port}; "
                                           "externalTrafficPolicy does not apply to a cluster IP"]))
    # node ports
    node_ips = {ip_str(a) for name, addrs in node.addresses.items() if name not in ("lo",)
                for a, _, v in addrs if v == 4 and (a >> 24) != 127}
    for proto in ("tcp", "udp", "sctp"):
        P = proto.upper()
        local = {k[0] for k in _members(node, f"KUBE-NODE-PORT-LOCAL-{P}")}
        for (np,) in _members(node, f"KUBE-NODE-PORT-{P}"):
            linked, note = [], None
            for vs in node.ipvs:
                if vs.proto == proto and vs.port == np and (not node_ips or vs.addr in node_ips):
                    be = frozenset((r.addr, r.port) for r in vs.real_servers)
                    cands = [(s, backends(s.vip, s.port, proto)) for s in out
                             if s.proto == proto and s.kind != "NodePort"]
                    # same real servers; for Local, the node port has only the local ones
                    pick = [s for s, b in cands if b and b == be] or \
                           [s for s, b in cands if b and be and be < b]
                    if len({s.vip for s in pick if s.kind == "ClusterIP"}) == 1 or len(pick) == 1:
                        linked = pick
                    elif pick:
                        note = ("not tied to a VIP: the same real servers serve "
                                + ", ".join(f"{s.vip}:{s.port}" for s in pick))
                    break
            policy = "Local" if np in local else "Cluster"
            ev = [f"bitmap KUBE-NODE-PORT-{P} has {np}",
                  f"KUBE-NODE-PORT-LOCAL-{P} {'has' if np in local else 'lacks'} it"]
            for s in linked:
                s.node_ports.append(np)
                s.evidence.append(f"node port {np}: same ipvs real servers as {s.vip}:{s.port}")
                if s.policy == UNKNOWN:
                    s.policy = policy
                    s.evidence += ev
            out.append(ServicePolicy("*", np, proto, "NodePort", policy, None, [np],
                                     ev + ([note] if note else [])))
    return out


def _iptables_mode(node) -> list[ServicePolicy]:
    nat = node.ruleset.tables.get("nat", {})
    out: list[ServicePolicy] = []
    svc_chain = nat.get("KUBE-SERVICES")
    if svc_chain is None:
        return out
    by_hash: dict[str, list[ServicePolicy]] = {}
    for r in svc_chain.rules:
        if not (r.dst and not r.dst[0] and r.target and r.target.startswith("KUBE-")):
            continue
        port = _dport(r)
        if port is None:
            continue
        vip = format_net(r.dst[1][0]).split("/")[0]
        proto = r.proto[1] if r.proto else "tcp"
        comment = r.comment() or ""
        kind = ("LoadBalancer" if "loadbalancer" in comment else
                "ExternalIP" if "external IP" in comment else "ClusterIP")
        policy, ev = _chain_policy(nat, r.target)
        if kind == "ClusterIP" and r.target.startswith(("KUBE-SVC-", "KUBE-SVL-")):
            policy = NOT_APPLICABLE  # KUBE-SVL- here is internalTrafficPolicy, not external
            ev = ["externalTrafficPolicy does not apply to a cluster IP"]
        sp = ServicePolicy(vip, port, proto, kind, policy, None,
                           evidence=[f"nat/KUBE-SERVICES #{r.index}: {r.describe()}", *ev],
                           name=comment.rsplit(" ", 2)[0] if comment else None)
        out.append(sp)
        by_hash.setdefault(r.target.rsplit("-", 1)[-1], []).append(sp)
    np_chain = nat.get("KUBE-NODEPORTS")
    for r in np_chain.rules if np_chain else []:
        port = _dport(r)
        if port is None or not r.target or r.target == "KUBE-MARK-MASQ":
            continue
        policy, ev = _chain_policy(nat, r.target)
        h = r.target.rsplit("-", 1)[-1]
        for sp in by_hash.get(h, []):
            sp.node_ports.append(port)
            sp.evidence.append(f"nat/KUBE-NODEPORTS #{r.index}: {r.describe()}")
            if sp.policy == UNKNOWN:
                sp.policy = policy
        out.append(ServicePolicy("*", port, r.proto[1] if r.proto else "tcp", "NodePort", policy, None,
                                 [port], [f"nat/KUBE-NODEPORTS #{r.index}: {r.describe()}", *ev],
                                 name=r.comment()))
    return out


def _dport(rule) -> int | None:
    for m in rule.matches:
        o = m.get("--dport") or m.get("--destination-port")
        if o and o.args[0].isdigit():
            return int(o.args[0])
    return None


def _chain_policy(nat: dict, start: str) -> tuple[str, list[str]]:
    """Follow a service's chains: reaching KUBE-SVL-/KUBE-XLB- means Local."""
    if start.startswith(("KUBE-SVL-", "KUBE-XLB-")):
        return "Local", [f"jumps to {start}"]
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in nat:
            continue
        seen.add(name)
        for r in nat[name].rules:
            t = r.target or ""
            if t.startswith(("KUBE-SVL-", "KUBE-XLB-")):
                return "Local", [f"nat/{name} #{r.index}: -> {t} (local endpoints only)"]
            if t.startswith(("KUBE-EXT-", "KUBE-FW-")):
                todo.append(t)
    if start.startswith(("KUBE-EXT-", "KUBE-FW-", "KUBE-SVC-")):
        return "Cluster", [f"{start} never leads to a KUBE-SVL-/KUBE-XLB- chain"]
    return UNKNOWN, [f"{start}: not a kube-proxy service chain"]
