"""Netfilter state of the lab: kube-proxy's rules in each proxy mode, the IPVS stand-in, the LB.

* IPVS mode (the default): :func:`kube_proxy_iptables` and :func:`kube_proxy_ipsets`
  write what kube-proxy in IPVS mode installs on a node (iptables nat/filter +
  ipsets), in the shape DESIGN.md section 1 shows. They are loaded with
  iptables-restore / ipset restore, so a node's iptables-save.txt and
  ipset-save.txt are what a real node would show.
* iptables and nftables modes: the rules come from natlens.netfilter.generate
  (``kube_proxy_iptables`` / ``kube_proxy_nftables``, kube-proxy-shaped: KUBE-SVC-/
  SEP-/EXT-/SVL- chains, or the ``kube-proxy`` nft table) for the lab's Services
  as :func:`generate_services` converts them, endpoints flagged per node. Their
  own KUBE-MARK-MASQ / masquerade rules do the SNAT; the lab adds nothing.
* ipMode (:attr:`Topology.lb_ip_in_rules`): with Proxy the LB IP is left out of
  kube-proxy's rules in every mode (no ipset member, no KUBE-EXT- match, no nft
  element), so pod -> VIP traffic leaves the node as the pod sent it.
* IPVS itself is missing from the lab's kernel. :func:`ipvs_standin` emulates
  each IPVS virtual server (ClusterIP:port and NodePort on the node's
  addresses, scheduler rr, masquerading forward) with an nftables DNAT in its
  own table ``natlens_ipvs`` hooked at nat prerouting/output one step after
  iptables' nat chains (priority -99 (dstnat+1)); one without real servers answers
  SYNs with ICMP port unreachable, as ip_vs_leave does. A native nft table does not appear
  in iptables-save, so the dumps stay those of a real node; the virtual servers
  go to ipvsadm.txt (:func:`ipvsadm_save`, ``ipvsadm -S -n`` format) exactly as
  ipvsadm would list them. Both are made from one list (:func:`virtual_servers`).
* :func:`lb_nft` is the cloud load balancer in the VPC namespace: VIP:port is
  DNATed to nodeIP:NodePort, the node picked by ``jhash`` of the 5-tuple
  (source address and port, VIP and port, fixed seed) so every packet of a
  connection, retransmits included, goes to the same node. The pool is the
  Service's healthy nodes (:meth:`Topology.lb_pool`); a Service no node is healthy
  for is dropped, as a cloud LB without a healthy backend does. What the LB does
  with a flow whose source is one of its backends is ``Topology.lb``:

  - ``avoids-source`` (the default; Tencent CLB-like): the pool minus the node whose
    IP is the packet's source (one ``ip saddr`` rule per pool node, before the
    catch-all): the LB never sends a flow back to the backend it came from. That is
    why Cluster (source SNATed to the node IP) works and Local (source: the pod IP)
    loops back.
  - ``any-backend`` (AWS NLB with client IP preservation): one jhash over the whole
    pool for every source, so a node's own SNATed connection may go back to that
    node. Its SYN then arrives on the node's eth0 with the node's own address as
    source and the kernel drops it as a martian (``accept_local`` 0, the default; the
    lab adds no rule for it), so under Cluster those connections time out.
  - ``proxy`` (an LB that SNATs to its own address, e.g. an NLB without client IP
    preservation): the whole pool as for ``any-backend``, and a nat postrouting rule
    SNATs each flow it DNATed (``ct original ip daddr`` the VIP, to the NodePort) to the
    VIP, as an internal single-IP LB does. The node answers the VIP, the reply is
    routed back to the VPC and conntrack un-NATs it there, so even a flow sent back to
    its own node connects.
"""

from __future__ import annotations

from dataclasses import dataclass

from natlens.lab.topology import CLUSTER_CIDR, Node, Service, Topology
from natlens.netfilter import generate
from natlens.vocab import AVOIDS_SOURCE, PROXY

MASQ_MARK = "0x4000"
LB_SEED = 0x6E6C  # "nl": fixed, so a given 5-tuple always lands on the same node


@dataclass
class VirtualServer:
    """One IPVS virtual server: address, port, scheduler and its real servers."""

    addr: str
    port: int
    reals: list[tuple[str, int]]
    scheduler: str = "rr"


def virtual_servers(topo: Topology, node: Node) -> list[VirtualServer]:
    """What kube-proxy programs into IPVS on ``node``.

    ClusterIP:port -> every endpoint. NodePort on each node address -> every
    endpoint (Cluster) or the node's own endpoints only (Local). The LB VIP gets
    none: TKE's kube-proxy does not bind it to kube-ipvs0 (it is only in the ipsets,
    with ipMode VIP), and with ipMode Proxy no kube-proxy programs it at all.
    """
    out = []
    for s in topo.services:
        every = [(p.ip, s.target_port) for p in topo.backends]
        local = [(p.ip, s.target_port) for p in topo.local_endpoints(node.name)]
        out.append(VirtualServer(s.cluster_ip, s.port, every))
        reals = local if s.policy == "Local" else every
        for addr in (node.ip, node.bridge_ip):
            out.append(VirtualServer(addr, s.node_port, reals))
    return out


def ipvsadm_save(vss: list[VirtualServer]) -> str:
    """``ipvsadm -S -n`` text for the virtual servers."""
    lines = []
    for vs in vss:
        lines.append(f"-A -t {vs.addr}:{vs.port} -s {vs.scheduler}")
        for ip, port in vs.reals:
            lines.append(f"-a -t {vs.addr}:{vs.port} -r {ip}:{port} -m -w 1")
    return "\n".join(lines) + "\n"


def ipvs_standin(vss: list[VirtualServer]) -> str:
    """nft script emulating the virtual servers with DNAT (round robin via numgen).

    A virtual server without real servers gets no DNAT: IPVS's ip_vs_leave answers its
    SYNs with ICMP port unreachable and drops them at LOCAL_IN, emulated by a reject in
    an input chain at IPVS's priority (98, NF_IP_PRI_NAT_SRC - 2); other packets to it
    reach the local stack, as with IPVS. Locally sent packets pass input too (via lo).
    """
    rules, empty = [], []
    for vs in vss:
        if not vs.reals:
            empty.append(f"ip daddr {vs.addr} tcp dport {vs.port} tcp flags & (syn | ack) == syn "
                         "reject with icmp type port-unreachable")
            continue
        targets = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(vs.reals))
        rules.append(f"ip daddr {vs.addr} tcp dport {vs.port} "
                     f"dnat ip to numgen inc mod {len(vs.reals)} map {{ {targets} }}")
    body = "\n".join("    " + r for r in rules)
    chains = []
    for hook in ("prerouting", "output"):
        chains.append(f"  chain {hook} {{\n    type nat hook {hook} priority -99; "
                      f"policy accept;\n{body}\n  }}")
    if empty:
        rejects = "\n".join("    " + r for r in empty)
        chains.append("  chain input {\n    type filter hook input priority 98; "
                      f"policy accept;\n{rejects}\n  }}")
    return "table ip natlens_ipvs {\n" + "\n".join(chains) + "\n}\n"


def kube_proxy_ipsets(topo: Topology, node: Node) -> str:
    """``ipset restore`` input: kube-proxy's IPVS-mode sets for ``node``."""
    hashopts = "family inet hashsize 1024 maxelem 65536"
    sets: dict[str, tuple[str, list[str]]] = {
        "KUBE-CLUSTER-IP": (f"hash:ip,port {hashopts}", []),
        "KUBE-LOAD-BALANCER": (f"hash:ip,port {hashopts}", []),
        "KUBE-LOAD-BALANCER-LOCAL": (f"hash:ip,port {hashopts}", []),
        "KUBE-LOAD-BALANCER-FW": (f"hash:ip,port {hashopts}", []),
        "KUBE-LOAD-BALANCER-SOURCE-IP": (f"hash:ip,port,ip {hashopts}", []),
        "KUBE-LOAD-BALANCER-SOURCE-CIDR": (f"hash:ip,port,net {hashopts}", []),
        "KUBE-EXTERNAL-IP": (f"hash:ip,port {hashopts}", []),
        "KUBE-EXTERNAL-IP-LOCAL": (f"hash:ip,port {hashopts}", []),
        "KUBE-LOOP-BACK": (f"hash:ip,port,ip {hashopts}", []),
        "KUBE-NODE-PORT-TCP": ("bitmap:port range 0-65535", []),
        "KUBE-NODE-PORT-LOCAL-TCP": ("bitmap:port range 0-65535", []),
        "KUBE-NODE-PORT-UDP": ("bitmap:port range 0-65535", []),
        "KUBE-NODE-PORT-LOCAL-UDP": ("bitmap:port range 0-65535", []),
        "KUBE-HEALTH-CHECK-NODE-PORT": ("bitmap:port range 0-65535", []),
    }
    for s in topo.services:
        sets["KUBE-CLUSTER-IP"][1].append(f"{s.cluster_ip},tcp:{s.port}")
        if topo.lb_ip_in_rules:  # ipMode Proxy: kube-proxy ignores the LB IP
            sets["KUBE-LOAD-BALANCER"][1].append(f"{s.vip},tcp:{s.port}")
        sets["KUBE-NODE-PORT-TCP"][1].append(str(s.node_port))
        if s.policy == "Local":
            if topo.lb_ip_in_rules:
                sets["KUBE-LOAD-BALANCER-LOCAL"][1].append(f"{s.vip},tcp:{s.port}")
            sets["KUBE-NODE-PORT-LOCAL-TCP"][1].append(str(s.node_port))
            sets["KUBE-HEALTH-CHECK-NODE-PORT"][1].append(str(s.health_check_node_port))
    for p in topo.local_endpoints(node.name):
        for s in topo.services:
            entry = f"{p.ip},tcp:{s.target_port},{p.ip}"
            if entry not in sets["KUBE-LOOP-BACK"][1]:
                sets["KUBE-LOOP-BACK"][1].append(entry)
    lines = []
    for name, (spec, members) in sets.items():
        lines.append(f"create {name} {spec}")
        lines.extend(f"add {name} {m}" for m in members)
    return "\n".join(lines) + "\n"


def kube_proxy_iptables(topo: Topology, node: Node) -> str:
    """``iptables-restore`` input: kube-proxy's IPVS-mode nat and filter rules."""
    c = '-m comment --comment'
    nat = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING {c} "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT {c} "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING {c} "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-LOAD-BALANCER {c} "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}
-A KUBE-NODE-PORT -p tcp {c} "Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp {c} "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING {c} "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0
-A KUBE-POSTROUTING {c} "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES {c} "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES ! -s {CLUSTER_CIDR} {c} "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
COMMIT
"""
    filt = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
-A INPUT {c} "kubernetes health check rules" -j KUBE-NODE-PORT
-A FORWARD {c} "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD {c} "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT
-A KUBE-FORWARD {c} "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT {c} "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
COMMIT
"""
    return nat + filt


def lb_nft(topo: Topology) -> str:
    """nft script for the VPC namespace: the cloud LB's DNAT from each VIP to NodePorts.

    The per-source rules exist only for ``avoids-source``; ``proxy`` adds a nat
    postrouting chain that SNATs every flow the LB DNATed to its VIP (module docstring).
    """
    rules, snat = [], []
    for s in topo.services:
        rules.append(f"# {s.namespace}/{s.name} {s.key} externalTrafficPolicy={s.policy} "
                     f"lb={topo.lb}")
        rules.extend(_lb_service_rules(topo, s))
        if topo.lb == PROXY:
            # after the DNAT: a flow to one of the pool's NodePorts that was sent to the VIP
            snat.append(f"ct original ip daddr {s.vip} tcp dport {s.node_port} "
                        f"snat ip to {s.vip}")
    chains = ["  chain prerouting {\n    type nat hook prerouting priority dstnat; "
              "policy accept;\n" + "".join(f"    {r}\n" for r in rules) + "  }\n"]
    if snat:
        chains.append("  chain postrouting {\n    type nat hook postrouting priority srcnat; "
                      "policy accept;\n" + "".join(f"    {r}\n" for r in snat) + "  }\n")
    return "table ip natlens_lb {\n" + "".join(chains) + "}\n"


def _lb_service_rules(topo: Topology, s: Service) -> list[str]:
    """The DNAT rules of one Service: per-source rules (``avoids-source`` only), then the
    catch-all over the healthy pool, or a drop when no node is healthy."""
    pool = topo.lb_pool(s)
    match = f"ip daddr {s.vip} tcp dport {s.port}"
    if not pool:  # no node passes the health check: a cloud LB drops
        return [f"{match} drop"]

    def dnat(nodes: list[Node]) -> str:
        targets = ", ".join(f"{i} : {n.ip} . {s.node_port}" for i, n in enumerate(nodes))
        return (f"dnat ip to jhash ip saddr . tcp sport . ip daddr . tcp dport "
                f"mod {len(nodes)} seed {LB_SEED:#x} map {{ {targets} }}")

    out = []
    if topo.lb == AVOIDS_SOURCE:  # a flow from a backend never goes back to that backend
        for n in pool:
            others = [m for m in pool if m is not n]
            out.append(f"ip saddr {n.ip} {match} {dnat(others) if others else 'drop'}")
    out.append(f"{match} {dnat(pool)}")
    return out


def generate_services(topo: Topology, node: Node) -> list[generate.Service]:
    """The lab's Services as natlens.netfilter.generate sees them, from ``node``'s side.

    Every endpoint pod backs every Service (none under the no-endpoints fault);
    ``on this node`` is what Local NodePorts keep. The LB IP is listed only when
    kube-proxy writes rules for it (ipMode VIP).
    """
    local = {p.name for p in topo.local_endpoints(node.name)}
    return [generate.Service(
        name=f"{s.namespace}/{s.name}:http", cluster_ip=s.cluster_ip, port=s.port,
        proto="tcp", node_port=s.node_port,
        lb_ips=[s.vip] if topo.lb_ip_in_rules else [], policy=s.policy,
        endpoints=[(p.ip, s.target_port, p.name in local) for p in topo.backends])
        for s in topo.services]


def iptables_mode_rules(topo: Topology, node: Node) -> str:
    """``iptables-restore`` input: kube-proxy 1.28 iptables-mode rules for ``node``."""
    return generate.kube_proxy_iptables(generate_services(topo, node),
                                        cluster_cidr=CLUSTER_CIDR, version="1.28").iptables


def nftables_mode_rules(topo: Topology, node: Node) -> str:
    """``nft -f`` input: kube-proxy's nftables-mode table for ``node``.

    NodePorts answer on the node's primary address only (kube-proxy's nftables-mode
    default for --nodeport-addresses).
    """
    return generate.kube_proxy_nftables(generate_services(topo, node), node_ips=[node.ip],
                                        cluster_cidr=CLUSTER_CIDR, version="current").nft


def apply(topo: Topology, lab) -> None:
    """Load the LB into the VPC and kube-proxy's state into each node, per proxy mode.

    IPVS mode also gets the IPVS stand-in (table natlens_ipvs); the other modes have
    no such table, so the node's nft rule set is the real node's.
    """
    lab.sh("nft", "-f", "-", ns=topo.vpc_ns, stdin=lb_nft(topo))
    for n in topo.nodes:
        if topo.proxy_mode == "ipvs":
            lab.sh("ipset", "restore", ns=n.ns, stdin=kube_proxy_ipsets(topo, n))
            lab.sh("iptables-restore", ns=n.ns, stdin=kube_proxy_iptables(topo, n))
            lab.sh("nft", "-f", "-", ns=n.ns, stdin=ipvs_standin(virtual_servers(topo, n)))
        elif topo.proxy_mode == "iptables":
            lab.sh("iptables-restore", ns=n.ns, stdin=iptables_mode_rules(topo, n))
        else:
            lab.sh("nft", "-f", "-", ns=n.ns, stdin=nftables_mode_rules(topo, n))
