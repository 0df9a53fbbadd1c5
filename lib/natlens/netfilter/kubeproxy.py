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


def kube_services(node, pod_ip: str | None = None, lb_ips: list[tuple[str, int, str]] | None = None,
                  in_iface: str | None = None, out_iface: str | None = None) -> list[ServicePolicy]:
    """Every Service VIP:port kube-proxy set up on this node, one row per Service port,
    with its policy and SNAT.

    IPVS, iptables and nftables mode (the last from the node's nft dump). SNAT is
    evaluated for a packet from pod_ip (arriving on in_iface, leaving by out_iface when
    given), by default an address of the cluster CIDR in kube-proxy's rules that is no
    endpoint of any Service. lb_ips (VIP, port, proto) are the LoadBalancer ingress IPs
    the cluster reports: one with no rule on the node is listed too, as traffic that
    leaves. ``services_notes`` says what limits the listing.
    """
    out = _mode_rows(node)
    out += _without_rules(out, lb_ips or [])
    pod, why = (pod_ip, "given") if pod_ip else probe_pod(node, out)
    for sp in out:
        _evaluate_snat(node, sp, pod, why, in_iface, out_iface)
    return out


def services_notes(node) -> list[str]:
    """What limits ``kube_services`` on this node, one line each (empty: nothing known)."""
    notes = list(node.partial(4))
    if _ipvs_mode_shown(node) and not node.sets_known:
        notes.append("IPVS mode (nat/KUBE-LOAD-BALANCER or KUBE-SERVICES' ipset rules) but no ipset "
                     "dump: the Services are members of kube-proxy's ipsets; "
                     + ("listed from ipvsadm without their kind or policy" if node.ipvs else
                        "no ipvsadm dump either, so none can be listed") + "; give ipset-save.txt")
    if not (out_of_iptables(node) or kubeproxy_nft.is_nftables_mode(node.nft) or node.ipvs):
        notes.append("no kube-proxy rules in the dumps (no nat/KUBE-SERVICES chain, no kube-proxy nft "
                     "table, no IPVS service): kube-proxy runs in another mode or not at all here")
    return notes


def _mode_rows(node) -> list[ServicePolicy]:
    """The rows of whichever modes the dumps show, one per Service destination."""
    out = _ipvs_mode(node) if _ipvs_mode_shown(node) else _iptables_mode(node)
    if kubeproxy_nft.is_nftables_mode(node.nft):
        out += kubeproxy_nft.services(node.nft)
    return out


def _ipvs_mode_shown(node) -> bool:
    return "KUBE-LOAD-BALANCER" in node.sets or "KUBE-CLUSTER-IP" in node.sets or \
        node.ruleset.chain("nat", "KUBE-LOAD-BALANCER") is not None


def _evaluate_snat(node, sp: ServicePolicy, pod: str | None, why: str, in_iface: str | None,
                   out_iface: str | None) -> None:
    """Walk a packet from the pod address to the row's VIP; the answer is its SNAT."""
    if sp.kind == "NodePort" or sp.vip == "*":
        return
    if pod is None:
        sp.evidence.append(f"SNAT not evaluated: {why}")
        return
    if ipaddress.ip_address(pod).version != ipaddress.ip_address(sp.vip).version:
        sp.evidence.append(f"SNAT not evaluated: the pod address {pod} ({why}) is not of the VIP's family")
        return
    v = node.explain(pod, sp.vip, sp.port, sp.proto, in_iface=in_iface, out_iface=out_iface)
    sp.snat_on_egress = v.snat
    via = f" in via {in_iface}" if in_iface else ""
    sp.evidence.append(f"packet model, pod {pod} ({why}){via} -> {sp.vip}:{sp.port}/{sp.proto}: "
                       f"{v.verdict}" + (f"; undecided: {v.undecided[0]}" if v.undecided else ""))


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


def probe_pod(node, rows: list[ServicePolicy]) -> tuple[str | None, str]:
    """A pod address to test with, and why it was chosen: in the cluster CIDR kube-proxy's
    rules name, and no endpoint of any Service (a packet from an endpoint to its own
    Service takes the hairpin path, which is not the question) nor a node address."""
    nft_mode = kubeproxy_nft.is_nftables_mode(node.nft) and not out_of_iptables(node)
    net, where = kubeproxy_nft.cluster_cidr(node.nft) if nft_mode else cluster_cidr(node)
    if net is None:
        return None, where
    avoid = {ep.rpartition(":")[0].strip("[]") for sp in rows for ep in sp.endpoints}
    avoid |= _node_ips(node)
    for i, host in enumerate(net.hosts()):
        if i >= _PROBE_TRIES:
            break
        if i > 0 and str(host) not in avoid:  # the first host is often the bridge's own address
            return str(host), f"cluster CIDR {net} from {where}, no Service endpoint"
    return None, f"no address of the cluster CIDR {net} ({where}) is free of Service endpoints"


_PROBE_TRIES = 4096


def _node_ips(node) -> set[str]:
    """The node's own addresses, as text (from ip addr and --local-ip)."""
    return {ip_str(a, v) for addrs in node.addresses.values() for a, _, v in addrs}


def cluster_cidr(node) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, str]:
    """The cluster CIDR kube-proxy's rules test (``! -s CIDR`` before KUBE-MARK-MASQ, or the
    short-circuit ``-s CIDR``), and where; None and why when no rule shows one."""
    nat = node.ruleset.tables.get("nat", {})
    for name in ("KUBE-SERVICES", *[c for c in nat if c.startswith(("KUBE-SVC-", "KUBE-EXT-",
                                                                    "KUBE-XLB-"))]):
        ch = nat.get(name)
        if ch is None:
            continue
        for r in ch.rules:
            if r.src and len(r.src[1]) == 1 and r.src[1][0][1] != 0xFFFFFFFF:
                return ipaddress.ip_network(format_net(r.src[1][0])), f"{r.table}/{r.chain} #{r.index}"
    return None, "no cluster CIDR in kube-proxy's rules (give --src)"


def _members(node, name: str) -> list[tuple]:
    s = node.sets.get(name)
    return [e.key for e in s.entries] if s is not None and s.dims is not None else []


def _ipvs_mode(node) -> list[ServicePolicy]:
    """IPVS mode: the Services are members of kube-proxy's ipsets, endpoints from ipvsadm."""
    if not node.sets_known:
        return _ipvsadm_only(node)
    out: list[ServicePolicy] = []
    by_vs = {vs.key: vs for vs in node.ipvs}

    def backends(ip: str, port: int, proto: str):
        vs = by_vs.get((proto, ip, port))
        return frozenset((r.addr, r.port) for r in vs.real_servers) if vs else None

    _lb_and_cluster_rows(node, out)
    for sp in out:
        vs = by_vs.get((sp.proto, sp.vip, sp.port))
        sp.endpoints = [f"{r.addr}:{r.port}" for r in vs.real_servers] if vs else []
    _node_port_rows(node, out, backends)
    return out


def _ipvsadm_only(node) -> list[ServicePolicy]:
    """Without the ipset dump: one row per IPVS virtual service, kind and policy unknown."""
    node_ips = _node_ips(node)
    return [ServicePolicy(vs.addr, vs.port, vs.proto, UNKNOWN, UNKNOWN, None,
                          evidence=[f"ipvsadm: {vs} (no ipset dump: kind and externalTrafficPolicy "
                                    "unknown)"], endpoints=[f"{r.addr}:{r.port}" for r in vs.real_servers])
            for vs in node.ipvs if vs.addr and vs.addr not in node_ips]


def _lb_and_cluster_rows(node, out: list[ServicePolicy]) -> None:
    """LB and external IPs (Local when in the -LOCAL twin set), then the cluster IPs."""
    for kind, base in (("LoadBalancer", "KUBE-LOAD-BALANCER"), ("ExternalIP", "KUBE-EXTERNAL-IP")):
        local = set(_members(node, base + "-LOCAL"))
        base_keys = set(_members(node, base))
        # current IPVS mode puts a Local external IP only in the -LOCAL set
        for key in _members(node, base) + sorted(local - base_keys):
            ip, pnum, port = key
            proto = _PROTO_NAME.get(pnum, str(pnum))
            is_local = key in local
            out.append(ServicePolicy(
                ip_str(ip), port, proto, kind, "Local" if is_local else "Cluster", None,
                evidence=[f"ipset {base} {'has' if key in base_keys else 'lacks'} {ip_str(ip)},{proto}:{port}",
                          f"ipset {base}-LOCAL {'has' if is_local else 'lacks'} it"]))
    lb_vips = {(s.vip, s.port, s.proto) for s in out}
    for ip, pnum, port in _members(node, "KUBE-CLUSTER-IP"):
        proto = _PROTO_NAME.get(pnum, str(pnum))
        if (ip_str(ip), port, proto) in lb_vips:
            continue
        out.append(ServicePolicy(ip_str(ip), port, proto, "ClusterIP", NOT_APPLICABLE, None,
                                 evidence=[f"ipset KUBE-CLUSTER-IP has {ip_str(ip)},{proto}:{port}; "
                                           "externalTrafficPolicy does not apply to a cluster IP"]))


def _node_port_rows(node, out: list[ServicePolicy], backends) -> None:
    """The node ports of KUBE-NODE-PORT-<PROTO>, tied to a VIP by the same real servers."""
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


def _iptables_mode(node) -> list[ServicePolicy]:
    """iptables mode: one row per KUBE-SERVICES destination and KUBE-NODEPORTS port, plus
    the destinations only the filter table's "has no (local) endpoints" rules show."""
    nat = node.ruleset.tables.get("nat", {})
    svc_chain = nat.get("KUBE-SERVICES")
    if svc_chain is None:
        return []
    rows: dict[tuple, ServicePolicy] = {}
    by_hash: dict[str, list[ServicePolicy]] = {}
    for r in svc_chain.rules:
        sp = _service_row(nat, r)
        if sp is None:
            continue
        if _merge(rows, sp, r):
            by_hash.setdefault(r.target.rsplit("-", 1)[-1], []).append(rows[_row_key(sp)])
    _node_ports(nat, rows, by_hash)
    _filter_rows(node, rows)
    return list(rows.values())


def _row_key(sp: ServicePolicy) -> tuple:
    return (sp.vip, sp.port, sp.proto)


def _merge(rows: dict[tuple, ServicePolicy], sp: ServicePolicy, r) -> bool:
    """Add the row, or the rule's evidence to the row already there (a destination
    kube-proxy writes several rules for: an external IP's two, say); True when new."""
    had = rows.get(_row_key(sp))
    if had is None:
        rows[_row_key(sp)] = sp
        return True
    had.evidence.append(f"{r.table}/{r.chain} #{r.index}: {r.describe()}")
    return False


def _service_row(nat: dict, r) -> ServicePolicy | None:
    """One KUBE-SERVICES rule to a Service's own chain as a row (None for any other rule:
    the pre-1.21 KUBE-MARK-MASQ twin of each cluster IP rule, the node-port jump)."""
    if not (r.dst and not r.dst[0] and r.target and r.target.startswith(_SERVICE_CHAINS)):
        return None
    port = _dport(r)
    if port is None:
        return None
    vip = format_net(r.dst[1][0]).split("/")[0]
    comment = r.comment() or ""
    kind = ("LoadBalancer" if "loadbalancer" in comment.lower() else
            "ExternalIP" if "external IP" in comment else "ClusterIP")
    policy, ev = _chain_policy(nat, r.target)
    if kind == "ClusterIP" and r.target.startswith(("KUBE-SVC-", "KUBE-SVL-")):
        policy = NOT_APPLICABLE  # KUBE-SVL- here is internalTrafficPolicy, not external
        ev = ["externalTrafficPolicy does not apply to a cluster IP"]
    return ServicePolicy(vip, port, r.proto[1] if r.proto else "tcp", kind, policy, None,
                         evidence=[f"nat/KUBE-SERVICES #{r.index}: {r.describe()}", *ev],
                         name=_comment_name(comment), endpoints=_sep_endpoints(nat, r.target))


# KUBE-EXT- rules kube-proxy (1.24+) writes only for externalTrafficPolicy Local
_LOCAL_ONLY = ("pod traffic for ", "masquerade LOCAL traffic for ", "route LOCAL traffic for ")
_SERVICE_CHAINS = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")


def _comment_name(comment: str) -> str | None:
    """'ns/name:port' from kube-proxy's rule comment ('ns/name:port cluster IP', ...)."""
    return comment.split(" ", 1)[0] if comment and "/" in comment.split(" ", 1)[0] else None


def _node_ports(nat: dict, rows: dict[tuple, ServicePolicy], by_hash: dict[str, list[ServicePolicy]]) -> None:
    """KUBE-NODEPORTS: a row per node port, tied to its VIPs by kube-proxy's chain hash."""
    np_chain = nat.get("KUBE-NODEPORTS")
    for r in np_chain.rules if np_chain else []:
        port = _dport(r)
        if port is None or not r.target or not r.target.startswith(_SERVICE_CHAINS):
            continue
        policy, ev = _chain_policy(nat, r.target)
        sp = ServicePolicy("*", port, r.proto[1] if r.proto else "tcp", "NodePort", policy, None,
                           [port], [f"nat/KUBE-NODEPORTS #{r.index}: {r.describe()}", *ev],
                           name=_comment_name(r.comment() or ""), endpoints=_sep_endpoints(nat, r.target))
        if not _merge(rows, sp, r):
            continue
        for vip_row in by_hash.get(r.target.rsplit("-", 1)[-1], []):
            vip_row.node_ports.append(port)
            vip_row.evidence.append(f"nat/KUBE-NODEPORTS #{r.index}: {r.describe()}")
            if vip_row.policy == UNKNOWN:
                vip_row.policy = policy


def _sep_endpoints(nat: dict, start: str) -> list[str]:
    """The endpoints ("ip:port") a Service's chains DNAT to, through its KUBE-SEP- chains."""
    out: set[str] = set()
    for _, r in _reachable_rules(nat, start, ("KUBE-SEP-", *_SERVICE_CHAINS)):
        if r.target == "DNAT" and "--to-destination" in r.target_args:
            i = r.target_args.index("--to-destination")
            ep = r.target_args[i + 1] if i + 1 < len(r.target_args) else ""
            if ep and not ep.startswith("-"):
                out.add(ep)
    return sorted(out)


def _reachable_rules(nat: dict, start: str, follow: tuple[str, ...]):
    """(chain, rule) for every rule of start and of the chains it reaches through targets
    named with these prefixes, each chain once."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in nat:
            continue
        seen.add(name)
        for r in nat[name].rules:
            yield name, r
            if (r.target or "").startswith(follow):
                todo.append(r.target)


def _filter_rows(node, rows: dict[tuple, ServicePolicy]) -> None:
    """The filter table's per-Service rules: "<svc> has no endpoints" (REJECT: a Service
    with no endpoint anywhere, which nat holds no rule for) and "<svc> has no local
    endpoints" (DROP: kube-proxy writes it only for a Local Service with no endpoint on this
    node, whose nat rules alone would read as Cluster). A destination only they show gets
    its row."""
    for ch in node.ruleset.tables.get("filter", {}).values():
        for r in ch.rules:
            comment = r.comment() or ""
            port = _dport(r)
            local = comment.endswith("has no local endpoints")
            if port is None or not (local or comment.endswith("has no endpoints")):
                continue
            sp = _filter_row(rows, r, port, comment)
            sp.evidence.append(f"filter/{r.chain} #{r.index}: {r.describe()} ({comment})")
            if local and sp.policy in ("Cluster", UNKNOWN):
                sp.policy = "Local"
            elif not local:
                sp.no_endpoints = (r.target or "?").lower()


def _filter_row(rows: dict[tuple, ServicePolicy], r, port: int, comment: str) -> ServicePolicy:
    """The row a filter rule is about, made when nat showed none: a cluster IP in filter's
    KUBE-SERVICES, else an external destination (LB or external IP) or a node port."""
    vip = format_net(r.dst[1][0]).split("/")[0] if r.dst and not r.dst[0] else "*"
    key = (vip, port, r.proto[1] if r.proto else "tcp")
    if key not in rows:
        kind = "NodePort" if vip == "*" else "ClusterIP" if r.chain == "KUBE-SERVICES" else kubeproxy_nft.EXTERNAL
        rows[key] = ServicePolicy(vip, port, key[2], kind, NOT_APPLICABLE if kind == "ClusterIP" else UNKNOWN,
                                  None, [port] if vip == "*" else [], [], name=_comment_name(comment))
    return rows[key]


def _dport(rule) -> int | None:
    for m in rule.matches:
        o = m.get("--dport") or m.get("--destination-port")
        if o and o.args[0].isdigit():
            return int(o.args[0])
    return None


def _chain_policy(nat: dict, start: str) -> tuple[str, list[str]]:
    """Follow a service's chains: reaching KUBE-SVL-/KUBE-XLB- means Local, and so do the
    KUBE-EXT- rules kube-proxy writes only for Local (a Service with no local endpoint has
    them without the KUBE-SVL- jump)."""
    if start.startswith(("KUBE-SVL-", "KUBE-XLB-")):
        return "Local", [f"jumps to {start}"]
    local_only = None
    for name, r in _reachable_rules(nat, start, ("KUBE-EXT-", "KUBE-FW-")):
        t = r.target or ""
        if t.startswith(("KUBE-SVL-", "KUBE-XLB-")):
            return "Local", [f"nat/{name} #{r.index}: -> {t} (local endpoints only)"]
        if local_only is None and name.startswith("KUBE-EXT-") and (r.comment() or "").startswith(_LOCAL_ONLY):
            local_only = f"nat/{name} #{r.index}: {r.comment()!r}"
    if local_only:
        return "Local", [f"{local_only}: kube-proxy writes this only for externalTrafficPolicy Local; "
                         "no KUBE-SVL- jump: no endpoint on this node"]
    if start.startswith(("KUBE-EXT-", "KUBE-FW-", "KUBE-SVC-")):
        return "Cluster", [f"{start} never leads to a KUBE-SVL-/KUBE-XLB- chain"]
    return UNKNOWN, [f"{start}: not a kube-proxy service chain"]
