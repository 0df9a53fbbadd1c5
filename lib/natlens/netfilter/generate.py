"""kube-proxy-shaped dumps, generated: fixtures for tests, the kernel truth test and the bench.

``kube_proxy_ipvs`` writes what kube-proxy in IPVS mode leaves on a node (nat and
filter rules, the KUBE-* ipsets, ipvsadm -S -n), in the shape of a chosen release:

* "1.18": KUBE-POSTROUTING masquerades marked packets in one rule; KUBE-MARK-DROP
  and the kubelet's filter KUBE-FIREWALL (drops mark 0x8000).
* "1.23": the mark is cleared before MASQUERADE (RETURN / --set-xmark 0x4000/0x0 /
  MASQUERADE --random-fully); KUBE-FIREWALL blocks localnet only.
* "1.28": as 1.23 plus KUBE-PROXY-FIREWALL and KUBE-IPVS-FILTER with KUBE-IPVS-IPS.

``kube_proxy_iptables`` writes iptables-mode rules: KUBE-SVC-/KUBE-SEP- with
statistic branches, KUBE-EXT-/KUBE-SVL- (1.24+) or KUBE-FW-/KUBE-XLB- (older),
KUBE-NODEPORTS; a service without endpoints gets only the filter table's "has no
endpoints" REJECTs. Addresses are whatever the caller passes in Service objects.

``kube_proxy_nftables`` writes the ``ip`` (or ``ip6``) ``kube-proxy`` table of
nftables mode as ``nft -f`` commands, in the form knftables dumps it (the
expectations of kube-proxy's proxier_test.go): ``add table`` / ``add chain`` /
``add set`` / ``add map`` / ``add rule`` / ``add element``. Per service port:
service-HASH-ns/name/proto/port (all endpoints, ``numgen random mod N vmap``),
external-HASH-... (Cluster: mark for masquerade; Local: short-circuit pod and node
traffic, then local-HASH-... or the drop elements of the no-endpoint maps),
endpoint-HASH-...__ip/port (hairpin mark, ``dnat to``); HASH is kube-proxy's 8
base32 characters of sha256. The shape of a release:

* "1.31" (also "1.29", "1.30"): filter-prerouting/-input/-forward/-output at
  priority -110 (dstnat-10); one endpoints-check chain holds both no-endpoint maps;
  the ClusterIP masquerade rule matches ``ip daddr X tcp dport P``.
* "1.32": endpoints-check split into service-endpoints-check and
  nodeport-endpoints-check (input only); cluster-ips set and cluster-ips-check
  (reject unknown ports of cluster IPs, drop unallocated ones of the service CIDR),
  jumped to from filter-forward and filter-output-post-dnat (priority -90).
* "current" (kubernetes master): filter-prerouting-pre-dnat and
  filter-output-pre-dnat at -110 hold only the firewall check; filter-input,
  filter-forward and filter-output at priority 0 (after DNAT); the ClusterIP
  masquerade rule matches the address only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field


@dataclass
class Service:
    name: str                   # "namespace/name:portname"
    cluster_ip: str
    port: int
    proto: str = "tcp"
    node_port: int | None = None
    lb_ips: list[str] = field(default_factory=list)
    external_ips: list[str] = field(default_factory=list)
    policy: str = "Cluster"     # externalTrafficPolicy
    endpoints: list[tuple[str, int, bool]] = field(default_factory=list)  # (ip, port, on this node)


@dataclass
class Dump:
    iptables: str
    ipset: str
    ipvsadm: str = ""


def _chain_id(prefix: str, *parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest().upper()
    return f"{prefix}{h[:16]}"


def _set(lines: list[str], name: str, stype: str, members: list[str], extra: str = "") -> None:
    if stype.startswith("bitmap"):
        lines.append(f"create {name} {stype} range 0-65535")
    else:
        lines.append(f"create {name} {stype} family inet hashsize 1024 maxelem 65536{extra}")
    lines += [f"add {name} {m}" for m in sorted(set(members))]


# kube-proxy's IPVS-mode ipsets, in ipset save order (KUBE-IPVS-IPS, 1.28+, comes last)
_IPVS_SETS = [("KUBE-CLUSTER-IP", "hash:ip,port"), ("KUBE-LOAD-BALANCER", "hash:ip,port"),
              ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port"), ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
              ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
              ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
              ("KUBE-EXTERNAL-IP", "hash:ip,port"), ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port"),
              ("KUBE-LOOP-BACK", "hash:ip,port,ip"), ("KUBE-NODE-PORT-TCP", "bitmap:port"),
              ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port"), ("KUBE-NODE-PORT-UDP", "bitmap:port"),
              ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port"), ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port")]


def _ipvs_service(members: dict[str, list[str]], vs_lines: list[str], s: Service,
                  node_ips: list[str]) -> None:
    """One service's set members and virtual services (cluster IP, LB/external IPs, node ports)."""
    pp = f"{s.proto}:{s.port}"
    local = s.policy == "Local"
    members["KUBE-CLUSTER-IP"].append(f"{s.cluster_ip},{pp}")
    vips = [(s.cluster_ip, s.port)] + [(ip, s.port) for ip in s.lb_ips + s.external_ips]
    for ips, name in ((s.lb_ips, "KUBE-LOAD-BALANCER"), (s.external_ips, "KUBE-EXTERNAL-IP")):
        for ip in ips:
            members[name].append(f"{ip},{pp}")
            if local:
                members[f"{name}-LOCAL"].append(f"{ip},{pp}")
    if s.node_port:
        P = "TCP" if s.proto == "tcp" else "UDP"
        members[f"KUBE-NODE-PORT-{P}"].append(str(s.node_port))
        if local:
            members[f"KUBE-NODE-PORT-LOCAL-{P}"].append(str(s.node_port))
        vips += [(ip, s.node_port) for ip in node_ips]
    for ep, port, _ in s.endpoints:
        members["KUBE-LOOP-BACK"].append(f"{ep},{s.proto}:{port},{ep}")
    flag = "-t" if s.proto == "tcp" else "-u"
    for ip, port in vips:
        vs_lines.append(f"-A {flag} {ip}:{port} -s rr")
        local_only = local and (ip, port) != (s.cluster_ip, s.port)
        for ep, eport, on_node in s.endpoints:
            if local_only and not on_node:
                continue
            vs_lines.append(f"-a {flag} {ip}:{port} -r {ep}:{eport} -m -w 1")


def _ipvs_nat_head(old: bool) -> list[str]:
    """*nat up to KUBE-MARK-MASQ: chains, hooks, KUBE-LOAD-BALANCER (and KUBE-FIREWALL before 1.19)."""
    nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]"]
    chains = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-LOAD-BALANCER", "KUBE-NODE-PORT",
              "KUBE-MARK-MASQ"]
    if old:
        chains += ["KUBE-MARK-DROP", "KUBE-FIREWALL"]
    nat += [f":{c} - [0:0]" for c in chains]
    c_svc = '-m comment --comment "kubernetes service portals"'
    nat += [f"-A PREROUTING {c_svc} -j KUBE-SERVICES", f"-A OUTPUT {c_svc} -j KUBE-SERVICES",
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
    if old:
        nat += ["-A KUBE-FIREWALL -j KUBE-MARK-DROP",
                "-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + "
                "port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW "
                "dst,dst -j KUBE-FIREWALL"]
    nat += ['-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port '
            'with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst '
            "-j RETURN",
            "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ"]
    if old:
        nat.append("-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000")
    nat.append("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000")
    return nat


def _ipvs_nat(old: bool, ext: bool, cluster_cidr: str) -> list[str | None]:
    """The nat table of IPVS mode (None: a rule this shape leaves out)."""
    nat: list[str | None] = list(_ipvs_nat_head(old))
    for proto in ("tcp", "udp"):
        P = proto.upper()
        nat.append(f'-A KUBE-NODE-PORT -p {proto} -m comment --comment "Kubernetes nodeport {P} port '
                   f'with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-{P} '
                   "dst -j RETURN")
        nat.append(f'-A KUBE-NODE-PORT -p {proto} -m comment --comment "Kubernetes nodeport {P} port '
                   f'for masquerade purpose" -m set --match-set KUBE-NODE-PORT-{P} dst -j KUBE-MARK-MASQ')
    loopback = ('-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip '
                'for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE')
    if old:
        nat += ['-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                "-m mark --mark 0x4000/0x4000 -j MASQUERADE", loopback]
    else:
        nat += [loopback, "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
                '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                "-j MASQUERADE --random-fully"]
    nat += ['-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set '
            "KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
            f'-A KUBE-SERVICES ! -s {cluster_cidr} -m comment --comment "Kubernetes service cluster ip + '
            'port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ',
            '-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with '
            'externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN'
            if ext else None,
            '-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for '
            'masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ'
            if ext else None,
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
            "-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT",
            "COMMIT"]
    return nat


def _ipvs_filter(old: bool, new_fw: bool) -> list[str]:
    """The filter table: KUBE-FIREWALL, KUBE-FORWARD, KUBE-NODE-PORT (+ 1.28's IPVS filters)."""
    flt = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":KUBE-FIREWALL - [0:0]", ":KUBE-FORWARD - [0:0]", ":KUBE-NODE-PORT - [0:0]"]
    if new_fw:
        flt += [":KUBE-IPVS-FILTER - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
                ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]"]
        flt += ['-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
                '-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL']
    flt += ['-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT',
            "-A INPUT -j KUBE-FIREWALL"]
    if new_fw:
        flt.append('-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL')
    flt += ['-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
            "-A OUTPUT -j KUBE-FIREWALL"]
    if old:
        flt.append('-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked '
                   'packets" -m mark --mark 0x8000/0x8000 -j DROP')
    flt += ['-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming '
            'localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
            '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark '
            "0x4000/0x4000 -j ACCEPT",
            '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
            "--ctstate RELATED,ESTABLISHED -j ACCEPT",
            '-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set '
            "--match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT"]
    if new_fw:
        flt += ["-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN",
                "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
                "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN",
                "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
                "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
                "-j REJECT --reject-with icmp-port-unreachable",
                '-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + '
                'port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW '
                "dst,dst -j KUBE-SOURCE-RANGES-FIREWALL",
                "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP"]
    flt.append("COMMIT")
    return flt


def kube_proxy_ipvs(services: list[Service], *, node_ips: list[str], cluster_cidr: str,
                    version: str = "1.28", ipvs_ips: list[str] | None = None) -> Dump:
    """IPVS-mode nat/filter rules, ipsets and ipvsadm -S -n for these services."""
    old = version < "1.19"
    new_fw = version >= "1.28"
    members: dict[str, list[str]] = {name: [] for name, _ in _IPVS_SETS}
    vs_lines: list[str] = []
    for s in services:
        _ipvs_service(members, vs_lines, s, node_ips)
    st: list[str] = []
    for name, stype in _IPVS_SETS:
        _set(st, name, stype, members[name])
    if new_fw:
        _set(st, "KUBE-IPVS-IPS", "hash:ip",
             ipvs_ips if ipvs_ips is not None else sorted({s.cluster_ip for s in services}))
    nat = _ipvs_nat(old, bool(members["KUBE-EXTERNAL-IP"]), cluster_cidr)
    flt = _ipvs_filter(old, new_fw)
    ipt = "\n".join(x for x in [f"# Generated by natlens generate (kube-proxy {version} IPVS mode)",
                                *nat, *flt] if x is not None) + "\n"
    return Dump(ipt, "\n".join(st) + "\n", "\n".join(vs_lines) + "\n")


@dataclass
class _IptablesRules:
    """iptables-mode nat rules by where they go in the dump."""

    decl: list[str] = field(default_factory=list)       # chains to declare
    svc_rules: list[str] = field(default_factory=list)  # KUBE-SERVICES
    np_rules: list[str] = field(default_factory=list)   # KUBE-NODEPORTS
    body: list[str] = field(default_factory=list)       # the per-service chains


def _svc_chains(out: _IptablesRules, s: Service, svc: str, cluster_cidr: str) -> list[tuple]:
    """KUBE-SERVICES -> KUBE-SVC- -> KUBE-SEP- (DNAT) of one service; returns its endpoints."""
    p = s.proto
    out.decl.append(svc)
    cm = f'-m comment --comment "{s.name} cluster IP"'
    out.svc_rules.append(f"-A KUBE-SERVICES -d {s.cluster_ip}/32 -p {p} {cm} -m {p} --dport {s.port} -j {svc}")
    out.body.append(f"-A {svc} ! -s {cluster_cidr} -d {s.cluster_ip}/32 -p {p} {cm} -m {p} "
                    f"--dport {s.port} -j KUBE-MARK-MASQ")
    seps = []
    for ep, port, on_node in s.endpoints:
        sep = _chain_id("KUBE-SEP-", s.name, ep, str(port))
        out.decl.append(sep)
        seps.append((sep, ep, port, on_node))
        c = f'-m comment --comment "{s.name}"'
        out.body.extend([f"-A {sep} -s {ep}/32 {c} -j KUBE-MARK-MASQ",
                         f"-A {sep} -p {p} {c} -m {p} -j DNAT --to-destination {ep}:{port}"])
    _spread(out.body, svc, s.name, seps)
    return seps


def _external_old(out: _IptablesRules, s: Service, svc: str, ext: str, loc: str) -> None:
    """Before 1.24: KUBE-FW- only for load balancers; node ports jump to SVC / XLB directly."""
    p = s.proto
    local = s.policy == "Local"
    target = loc if local else svc
    if s.lb_ips:
        out.decl.append(ext)
        for ip in s.lb_ips:
            out.svc_rules.append(f'-A KUBE-SERVICES -d {ip}/32 -p {p} -m comment --comment '
                                 f'"{s.name} loadbalancer IP" -m {p} --dport {s.port} -j {ext}')
        if not local:
            out.body.append(f'-A {ext} -m comment --comment "{s.name} loadbalancer IP" -j KUBE-MARK-MASQ')
        out.body.extend([f'-A {ext} -m comment --comment "{s.name} loadbalancer IP" -j {target}',
                         f'-A {ext} -m comment --comment "{s.name} loadbalancer IP" -j KUBE-MARK-DROP'])
    if s.node_port:
        if not local:
            out.np_rules.append(f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{s.name}" '
                                f"-m {p} --dport {s.node_port} -j KUBE-MARK-MASQ")
        out.np_rules.append(f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{s.name}" '
                            f"-m {p} --dport {s.node_port} -j {target}")


def _external_new(out: _IptablesRules, s: Service, svc: str, ext: str, loc: str, cluster_cidr: str) -> None:
    """1.24+: LB IPs and node ports go to KUBE-EXT-, which leads to KUBE-SVC- or KUBE-SVL-."""
    p = s.proto
    out.decl.append(ext)
    for ip in s.lb_ips:
        out.svc_rules.append(f'-A KUBE-SERVICES -d {ip}/32 -p {p} -m comment --comment '
                             f'"{s.name} loadbalancer IP" -m {p} --dport {s.port} -j {ext}')
    if s.node_port:
        out.np_rules.append(f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{s.name}" '
                            f"-m {p} --dport {s.node_port} -j {ext}")
    if s.policy == "Local":
        out.body.extend([f'-A {ext} -s {cluster_cidr} -m comment --comment "pod traffic for {s.name} '
                         f'external destinations" -j {svc}',
                         f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {s.name} external '
                         f'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
                         f'-A {ext} -m comment --comment "route LOCAL traffic for {s.name} external '
                         f'destinations" -m addrtype --src-type LOCAL -j {svc}',
                         f"-A {ext} -j {loc}"])
    else:
        out.body.extend([f'-A {ext} -m comment --comment "masquerade traffic for {s.name} external '
                         f'destinations" -j KUBE-MARK-MASQ', f"-A {ext} -j {svc}"])


def _local_chain(out: _IptablesRules, s: Service, svc: str, loc: str, seps: list[tuple],
                 old: bool, cluster_cidr: str) -> None:
    """KUBE-SVL- (KUBE-XLB- before 1.24): only the endpoints on this node, else drop."""
    out.decl.append(loc)
    if old:
        out.body.extend([f'-A {loc} -s {cluster_cidr} -m comment --comment "Redirect pods trying to reach '
                         f'external loadbalancer VIP to clusterIP" -j {svc}',
                         f'-A {loc} -m comment --comment "masquerade LOCAL traffic for {s.name} LB IP" '
                         "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                         f'-A {loc} -m comment --comment "route LOCAL traffic for {s.name} LB IP to '
                         f'service chain" -m addrtype --src-type LOCAL -j {svc}'])
    local_seps = [x for x in seps if x[3]]
    if local_seps:
        _spread(out.body, loc, s.name, local_seps)
    else:
        out.body.append(f'-A {loc} -m comment --comment "{s.name} has no local endpoints" '
                        "-j KUBE-MARK-DROP")


def _iptables_head(version: str, decl: list[str]) -> list[str]:
    """The nat table's chains and the rules kube-proxy writes whatever the services."""
    head = [f"# Generated by natlens generate (kube-proxy {version} iptables mode)", "*nat",
            ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]", ":KUBE-MARK-DROP - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
            ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-SERVICES - [0:0]"]
    head += [f":{c} - [0:0]" for c in dict.fromkeys(decl)]
    head += ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
             "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
             "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
             "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
             "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
             '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
             "-j MASQUERADE --random-fully"]
    return head


def _no_endpoint_filter(services: list[Service]) -> list[str]:
    """The filter table kube-proxy writes for services without any endpoint (1.28's shape).

    Such a service gets no nat chain at all, only REJECTs (ICMP port unreachable): its
    cluster IP in filter KUBE-SERVICES (jumped to from FORWARD and OUTPUT), its LB and
    external IPs and its node port (``--dst-type LOCAL``) in KUBE-EXTERNAL-SERVICES
    (from INPUT and FORWARD), all for new connections only. Empty when every service has
    an endpoint, so such dumps stay nat-only as before.
    """
    svc, ext = [], []
    reject = "-j REJECT --reject-with icmp-port-unreachable"
    for s in services:
        if s.endpoints:
            continue
        p, c = s.proto, f'-m comment --comment "{s.name} has no endpoints"'
        svc.append(f"-A KUBE-SERVICES -d {s.cluster_ip}/32 -p {p} {c} -m {p} --dport {s.port} {reject}")
        ext += [f"-A KUBE-EXTERNAL-SERVICES -d {ip}/32 -p {p} {c} -m {p} --dport {s.port} {reject}"
                for ip in s.external_ips + s.lb_ips]
        if s.node_port:
            ext.append(f"-A KUBE-EXTERNAL-SERVICES -p {p} {c} -m addrtype --dst-type LOCAL "
                       f"-m {p} --dport {s.node_port} {reject}")
    if not svc:
        return []
    new = "-m conntrack --ctstate NEW -m comment --comment"
    return ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":KUBE-EXTERNAL-SERVICES - [0:0]", ":KUBE-SERVICES - [0:0]",
            f'-A INPUT {new} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
            f'-A FORWARD {new} "kubernetes service portals" -j KUBE-SERVICES',
            f'-A FORWARD {new} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
            f'-A OUTPUT {new} "kubernetes service portals" -j KUBE-SERVICES',
            *svc, *ext, "COMMIT"]


def kube_proxy_iptables(services: list[Service], *, cluster_cidr: str, version: str = "1.28") -> Dump:
    """iptables-mode nat rules (KUBE-SVC-/SEP-/EXT-/SVL-, or FW-/XLB- before 1.24).

    A service without endpoints has no nat rule, only filter REJECTs
    (:func:`_no_endpoint_filter`), as kube-proxy's syncProxyRules writes it.
    """
    old = version < "1.24"
    out = _IptablesRules()
    for s in services:
        if not s.endpoints:
            continue
        svc = _chain_id("KUBE-SVC-", s.name, s.proto)
        ext = _chain_id("KUBE-FW-" if old else "KUBE-EXT-", s.name, s.proto)
        loc = _chain_id("KUBE-XLB-" if old else "KUBE-SVL-", s.name, s.proto)
        seps = _svc_chains(out, s, svc, cluster_cidr)
        if not (s.lb_ips or s.node_port or s.external_ips):
            continue
        if old:
            _external_old(out, s, svc, ext, loc)
        else:
            _external_new(out, s, svc, ext, loc, cluster_cidr)
        if s.policy == "Local":
            _local_chain(out, s, svc, loc, seps, old, cluster_cidr)
    tail = ['-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
            'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS', "COMMIT"]
    head = _iptables_head(version, out.decl)
    filt = _no_endpoint_filter(services)
    return Dump("\n".join(head + out.svc_rules + out.np_rules + out.body + tail + filt) + "\n", "")


def _spread(body: list[str], chain: str, name: str, seps: list) -> None:
    n = len(seps)
    for i, (sep, ep, port, _) in enumerate(seps):
        c = f'-m comment --comment "{name} -> {ep}:{port}"'
        if i < n - 1:
            prob = 1.0 / (n - i)
            body.append(f"-A {chain} {c} -m statistic --mode random --probability {prob:.11f} -j {sep}")
        else:
            body.append(f"-A {chain} {c} -j {sep}")


def many_services(n: int, *, endpoints: int = 2, local_every: int = 2) -> list[Service]:
    """n services with addresses from 198.18.0.0/15: cluster IPs 198.19.0.0/17, LB IPs
    198.19.128.0/18, endpoints in 198.18.128.0/17; every local_every-th one is Local."""
    cip = int(ipaddress.IPv4Address("198.19.0.1"))
    lbip = int(ipaddress.IPv4Address("198.19.128.1"))
    pod = int(ipaddress.IPv4Address("198.18.128.2"))
    out = []
    for i in range(n):
        eps = [(str(ipaddress.IPv4Address(pod + (i * endpoints + k) % 32000)), 8080, k == 0)
               for k in range(endpoints)]
        out.append(Service(f"ns{i % 50}/svc-{i}:http", str(ipaddress.IPv4Address(cip + i)), 80,
                           node_port=30000 + i % 2768,
                           lb_ips=[str(ipaddress.IPv4Address(lbip + i))],
                           policy="Local" if i % local_every == 0 else "Cluster", endpoints=eps))
    return out


# ----------------------------------------------------------------- kube-proxy nftables mode


@dataclass
class NftDump:
    """An nft rule set in ``nft -f`` command syntax (``add table ...`` / ``add rule ...``)."""

    nft: str


_NFT_MASQ_MARK = "0x4000"       # kube-proxy's default --masquerade-bit 14
_NFT_NAME_BASE_MAX = 256 - 16   # knftables.NameLengthMax minus the longest chain prefix
# version -> shape: "endpoints" (1.29-1.31), "post-dnat" (1.32), "pre-dnat" (current)
_NFT_SHAPES = {"1.29": "endpoints", "1.30": "endpoints", "1.31": "endpoints",
               "1.32": "post-dnat", "current": "pre-dnat", "master": "pre-dnat"}


@dataclass
class _NftFamily:
    """The words that differ between an ip and an ip6 kube-proxy table."""

    family: str     # "ip" / "ip6": the table family and the address match keyword
    addr: str       # "ipv4_addr" / "ipv6_addr": the set key type
    loopback: str   # what --nodeport-addresses never accepts

    def ep(self, ip: str, port: int) -> str:
        """An endpoint as a dnat target: 10.0.0.1:80, [fd00::1]:80."""
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _nft_family(family: int) -> _NftFamily:
    if family == 6:
        return _NftFamily("ip6", "ipv6_addr", "::1")
    if family == 4:
        return _NftFamily("ip", "ipv4_addr", "127.0.0.0/8")
    raise ValueError(f"family must be 4 or 6, not {family!r}")


def _nft_hashed(name: str) -> str:
    """kube-proxy's hashAndTruncate: 8 base32 characters of sha256(name), a dash, the name.

    The hash keeps names unique and tells apart chains whose names differ in one digit.
    """
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    out = f"{digest[:8]}-{name}"
    return out if len(out) <= _NFT_NAME_BASE_MAX else out[:_NFT_NAME_BASE_MAX - 3] + "..."


def _nft_port_name(s: Service) -> str:
    """'namespace/name:port' -> 'namespace/name/proto/port', the servicePortName kube-proxy hashes."""
    svc, _, port = s.name.partition(":")
    return f"{svc}/{s.proto}/{port}"


def _nft_ep_chain(s: Service, ip: str, port: int) -> str:
    """endpoint-HASH-ns/name/proto/port__ip/port (an IPv6 endpoint's colons become dots)."""
    return "endpoint-" + _nft_hashed(f"{_nft_port_name(s)}__{ip.replace(':', '.')}/{port}")


def _nft_chains(version: str) -> tuple[str, list[tuple[str, str, str, int]], list[tuple[str, str]]]:
    """The shape, base chains (name, type, hook, priority) and jumps (from, to) of a version.

    The base chains and the rules jumping from them are what changed between releases:
    1.29-1.31 filter everything at dstnat-10 through one endpoints-check chain; 1.32
    split it into service-/nodeport-endpoints-check and added cluster-ips-check in a
    filter-output-post-dnat chain (dstnat+10); current kube-proxy filters at priority 0,
    keeping only the firewall (LoadBalancerSourceRanges) checks before DNAT.
    """
    shape = _NFT_SHAPES.get(version)
    if shape is None:
        raise ValueError(f"no kube-proxy nftables shape for version {version!r}: "
                         f"one of {', '.join(_NFT_SHAPES)}")
    nat = [("nat-prerouting", "nat", "prerouting", -100), ("nat-output", "nat", "output", -100),
           ("nat-postrouting", "nat", "postrouting", 100)]
    nat_jumps = [("nat-output", "services"), ("nat-prerouting", "services"),
                 ("nat-postrouting", "masquerading")]
    if shape == "pre-dnat":
        base = [("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
                ("filter-output-pre-dnat", "filter", "output", -110),
                ("filter-forward", "filter", "forward", 0), ("filter-input", "filter", "input", 0),
                ("filter-output", "filter", "output", 0)]
        jumps = [("filter-input", "nodeport-endpoints-check"),
                 ("filter-input", "service-endpoints-check"),
                 ("filter-forward", "service-endpoints-check"),
                 ("filter-output", "service-endpoints-check"),
                 ("filter-prerouting-pre-dnat", "firewall-check"),
                 ("filter-output-pre-dnat", "firewall-check")]
        jumps += nat_jumps + [("filter-forward", "cluster-ips-check"),
                              ("filter-output", "cluster-ips-check")]
        return shape, base + nat, jumps
    base = [(f"filter-{h}", "filter", h, -110) for h in ("prerouting", "input", "forward", "output")]
    if shape == "endpoints":
        jumps = [("filter-input", "endpoints-check"), ("filter-forward", "endpoints-check"),
                 ("filter-output", "endpoints-check"), ("filter-prerouting", "firewall-check"),
                 ("filter-output", "firewall-check")]
        return shape, base + nat, jumps + nat_jumps
    base.append(("filter-output-post-dnat", "filter", "output", -90))
    jumps = [("filter-input", "nodeport-endpoints-check"),
             ("filter-input", "service-endpoints-check"),
             ("filter-forward", "service-endpoints-check"),
             ("filter-output", "service-endpoints-check"),
             ("filter-prerouting", "firewall-check"), ("filter-output", "firewall-check")]
    jumps += nat_jumps + [("filter-forward", "cluster-ips-check"),
                          ("filter-output-post-dnat", "cluster-ips-check")]
    return shape, base + nat, jumps


def _nft_maps(t: str, fam: _NftFamily, shape: str) -> list[str]:
    """The sets and verdict maps every kube-proxy table has (cluster-ips from 1.32 on)."""
    svc_key = f"{fam.addr} . inet_proto . inet_service : verdict"
    port_key = "inet_proto . inet_service : verdict"
    out = [f'add set {t} cluster-ips {{ type {fam.addr} ; comment "Active ClusterIPs" ; }}']
    if shape == "endpoints":
        out = []
    return out + [
        f'add map {t} no-endpoint-services {{ type {svc_key} ; comment "vmap to drop or reject '
        'packets to services with no endpoints" ; }',
        f'add map {t} no-endpoint-nodeports {{ type {port_key} ; comment "vmap to drop or reject '
        'packets to service nodeports with no endpoints" ; }',
        f'add map {t} firewall-ips {{ type {svc_key} ; comment "destinations that are subject to '
        'LoadBalancerSourceRanges" ; }',
        f'add map {t} service-ips {{ type {svc_key} ; comment "ClusterIP, ExternalIP and '
        'LoadBalancer IP traffic" ; }',
        f'add map {t} service-nodeports {{ type {port_key} ; comment "NodePort traffic" ; }}']


def _nft_setup(version: str, fam: _NftFamily, node_ips: list[str],
               service_cidr: str | None) -> list[str]:
    """What kube-proxy's setupNFTables writes whatever the services: chains, maps, dispatch.

    An empty ``node_ips`` is ``--nodeport-addresses`` matching every local address: no
    nodeport-ips set, node ports matched with ``fib daddr type local`` instead.
    """
    shape, base, jumps = _nft_chains(version)
    t, ipx = f"{fam.family} kube-proxy", fam.family
    out = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    out += [f"add chain {t} {n} {{ type {ty} hook {h} priority {p} ; }}" for n, ty, h, p in base]
    regular = dict.fromkeys([to for _, to in jumps] + ["mark-for-masquerade"])
    out += [f"add chain {t} {c}" for c in regular]
    out.append(f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / '
               '@no-endpoint-nodeports" ; }')
    out += [f"add rule {t} {src} {'' if src.startswith('nat-') else 'ct state new '}jump {to}"
            for src, to in jumps]
    m = _NFT_MASQ_MARK
    out += [f"add rule {t} mark-for-masquerade mark set mark or {m}",
            f"add rule {t} masquerading mark and {m} == 0 return",
            f"add rule {t} masquerading mark set mark xor {m}",
            f"add rule {t} masquerading masquerade fully-random"]
    out += _nft_maps(t, fam, shape)
    if shape != "endpoints":
        out.append(f"add rule {t} cluster-ips-check {ipx} daddr @cluster-ips reject comment "
                   '"Reject traffic to invalid ports of ClusterIPs"')
        if service_cidr:
            out.append(f"add rule {t} cluster-ips-check {ipx} daddr {{ {service_cidr} }} drop "
                       'comment "Drop traffic to unallocated ClusterIPs"')
    if node_ips:
        out.append(f'add set {t} nodeport-ips {{ type {fam.addr} ; comment "IPs that accept '
                   'NodePort traffic" ; }')
        out += [f"add element {t} nodeport-ips {{ {ip} }}" for ip in node_ips]
        to_node = f"{ipx} daddr @nodeport-ips"
    else:
        to_node = f"fib daddr type local {ipx} daddr != {fam.loopback}"
    svc_check, np_check = (("endpoints-check", "endpoints-check") if shape == "endpoints" else
                           ("service-endpoints-check", "nodeport-endpoints-check"))
    if shape != "endpoints" and not node_ips:
        to_node_np = f"{ipx} daddr != {fam.loopback}"   # only jumped to from filter-input
    else:
        to_node_np = to_node
    out += [f"add rule {t} reject-chain reject",
            f"add rule {t} {svc_check} {ipx} daddr . meta l4proto . th dport vmap @no-endpoint-services",
            f"add rule {t} {np_check} {to_node_np} meta l4proto . th dport vmap @no-endpoint-nodeports",
            f"add rule {t} firewall-check {ipx} daddr . meta l4proto . th dport vmap @firewall-ips",
            f"add rule {t} services {ipx} daddr . meta l4proto . th dport vmap @service-ips",
            f"add rule {t} services {to_node} meta l4proto . th dport vmap @service-nodeports"]
    return out


@dataclass
class _NftService:
    """One service port's chain names and what its rules send where."""

    svc: str            # service-HASH-...: the Cluster policy chain (all endpoints)
    ext: str            # external-HASH-...: NodePort, LoadBalancer and external IP traffic
    loc: str            # local-HASH-...: Local policy (this node's endpoints only)
    has_eps: bool
    external: bool      # reachable from outside: a node port, LB IPs or external IPs
    local: bool         # externalTrafficPolicy Local (and reachable from outside)
    local_eps: list[tuple[str, int, bool]]


def _nft_service_info(s: Service) -> _NftService:
    base = _nft_hashed(_nft_port_name(s))
    external = bool(s.node_port or s.lb_ips or s.external_ips)
    local = external and s.policy == "Local"
    return _NftService(f"service-{base}", f"external-{base}", f"local-{base}", bool(s.endpoints),
                       external, local, [e for e in s.endpoints if e[2]])


def _nft_spread(t: str, chain: str, s: Service, eps: list[tuple[str, int, bool]]) -> str:
    """The load-balancing rule: numgen random mod N vmap { i : goto endpoint-... , ... }."""
    arms = " , ".join(f"{i} : goto {_nft_ep_chain(s, ip, port)}" for i, (ip, port, _) in enumerate(eps))
    return f"add rule {t} {chain} numgen random mod {len(eps)} vmap {{ {arms} }}"


def _nft_service_chains(t: str, fam: _NftFamily, s: Service, info: _NftService, shape: str,
                        cluster_cidr: str) -> tuple[list[str], list[str]]:
    """The chains of one service port that has endpoints: service-, external-, local-, endpoint-.

    Returns (chain declarations, rules), in syncProxyRules' order: every chain a rule or
    map element names is declared before it is named.
    """
    ipx = fam.family
    eps = [(_nft_ep_chain(s, ip, port), ip, port) for ip, port, _ in s.endpoints]
    chains = [ep for ep, _, _ in eps] + [info.svc]
    if info.local and info.local_eps:
        chains.append(info.loc)
    if info.external:
        chains.append(info.ext)
    dport = "" if shape == "pre-dnat" else f"{s.proto} dport {s.port} "  # current: address only
    rules = [f"add rule {t} {info.svc} {ipx} daddr {s.cluster_ip} {dport}{ipx} saddr != "
             f"{cluster_cidr} jump mark-for-masquerade"]
    if info.external and not info.local:
        rules += [f"add rule {t} {info.ext} jump mark-for-masquerade",
                  f"add rule {t} {info.ext} goto {info.svc}"]
    elif info.external:
        rules += [f"add rule {t} {info.ext} {ipx} saddr {cluster_cidr} goto {info.svc} "
                  'comment "short-circuit pod traffic"',
                  f"add rule {t} {info.ext} fib saddr type local jump mark-for-masquerade "
                  'comment "masquerade local traffic"',
                  f"add rule {t} {info.ext} fib saddr type local goto {info.svc} "
                  'comment "short-circuit local traffic"']
        if info.local_eps:
            rules.append(f"add rule {t} {info.ext} goto {info.loc}")
    rules.append(_nft_spread(t, info.svc, s, s.endpoints))
    if info.local and info.local_eps:
        rules.append(_nft_spread(t, info.loc, s, info.local_eps))
    for ep, ip, port in eps:
        rules += [f"add rule {t} {ep} {ipx} saddr {ip} jump mark-for-masquerade",
                  f"add rule {t} {ep} meta l4proto {s.proto} dnat to {fam.ep(ip, port)}"]
    return [f"add chain {t} {c}" for c in chains], rules


def _nft_service_elements(t: str, s: Service, info: _NftService, shape: str) -> list[str]:
    """One service port's map elements: where its addresses and node port go, or why not.

    No endpoints at all: every address rejects (goto reject-chain). Local policy with no
    endpoint on this node: outside traffic to external addresses is dropped, while pods and
    the node itself are short-circuited to the Cluster chain first (in the prerouting/output
    nat chains, before the filter chains look at @no-endpoint-services).
    """
    key = f"{s.proto} . {s.port}"
    comment = f'comment "{s.name}"'
    out = [f"add element {t} cluster-ips {{ {s.cluster_ip} }}"] if shape != "endpoints" else []
    if info.has_eps:
        out.append(f"add element {t} service-ips {{ {s.cluster_ip} . {key} : goto {info.svc} }}")
    else:
        out.append(f"add element {t} no-endpoint-services {{ {s.cluster_ip} . {key} {comment} : "
                   "goto reject-chain }")
    verdict = None
    if not info.has_eps:
        verdict = "goto reject-chain"
    elif info.local and not info.local_eps:
        verdict = "drop"
    for ip in s.external_ips + s.lb_ips:
        if info.has_eps:
            out.append(f"add element {t} service-ips {{ {ip} . {key} : goto {info.ext} }}")
        if verdict:
            out.append(f"add element {t} no-endpoint-services {{ {ip} . {key} {comment} : {verdict} }}")
    if s.node_port:
        np = f"{s.proto} . {s.node_port}"
        if info.has_eps:
            out.append(f"add element {t} service-nodeports {{ {np} : goto {info.ext} }}")
        if verdict:
            out.append(f"add element {t} no-endpoint-nodeports {{ {np} {comment} : {verdict} }}")
    return out


def kube_proxy_nftables(services: list[Service], *, node_ips: list[str], cluster_cidr: str,
                        service_cidr: str | None = None, version: str = "current",
                        family: int = 4) -> NftDump:
    """kube-proxy nftables-mode rules for these services, as ``nft -f`` commands.

    The ``ip``/``ip6 kube-proxy`` table in the shape of a release (see the module
    docstring): base chains, the dispatch maps, and per service port the service-,
    external-, local- and endpoint- chains with kube-proxy's hashed names. ``node_ips``
    fill the nodeport-ips set (empty: node ports on every local address);
    ``cluster_cidr`` is the pod CIDR the local-traffic detector matches;
    ``service_cidr`` (1.32+) makes cluster-ips-check drop unallocated cluster IPs.
    Session affinity and loadBalancerSourceRanges are not generated.
    """
    fam = _nft_family(family)
    shape = _nft_chains(version)[0]
    t = f"{fam.family} kube-proxy"
    out = [f"# Generated by natlens generate (kube-proxy {version} nftables mode)",
           *_nft_setup(version, fam, node_ips, service_cidr)]
    for s in services:
        info = _nft_service_info(s)
        out.append(f"# {s.name}")
        chains, rules = (_nft_service_chains(t, fam, s, info, shape, cluster_cidr)
                         if info.has_eps else ([], []))
        out += chains + _nft_service_elements(t, s, info, shape) + rules
    return NftDump("\n".join(out) + "\n")
