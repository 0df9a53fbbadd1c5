"""The lab's network: a routed VPC, nodes, pods behind a bridge, LoadBalancer Services.

Addressing (all inside 198.18.0.0/15, the range reserved for network tests):

=====================  ==========================================================
VPC router / gateway   198.18.0.1 (on every VPC-side veth, /32, with proxy ARP)
node-i eth0            198.18.0.(10+i)/24, default via 198.18.0.1
node-i pod CIDR        198.18.(15+i).0/24 on bridge cni0 (.1 is the node's side)
endpoint pod web-i     198.18.(15+i).10   (on node-1 and node-2 only)
client pod             198.18.16.100      (on node-1, beside endpoint web-1)
cluster CIDR           198.18.16.0/20
service CIDR           198.18.128.0/20    (ClusterIPs 198.18.128.10+k; on kube-ipvs0 in IPVS mode)
LoadBalancer VIPs      198.19.0.(10+k)    (not bound anywhere on the nodes)
=====================  ==========================================================

The proxy mode (``ipvs``, ``iptables``, ``nftables``) and the LoadBalancer ingress's
``ipMode`` (``VIP``, ``Proxy``) decide whether kube-proxy handles pod -> VIP traffic
on the node (:attr:`Topology.lb_ip_on_node`) or lets it leave for the LB. The LB's
behaviour (:data:`LB_MODES`, the words of :mod:`natlens.vocab`) decides what it does
with a flow from one of its own backends: ``avoids-source`` (the default) never sends
it back there, ``any-backend`` may (the node then sees its own address arriving),
``proxy`` may too but SNATs every flow to the VIP, so the node answers the LB
(:mod:`natlens.lab.rules`, :func:`~natlens.lab.rules.lb_nft`).

Nodes are joined by routing through the VPC namespace, one veth per node, never
by a shared bridge: with br_netfilter a bridge shared by all nodes lets the
return packet bypass the VPC's reverse NAT and hides the very loopback the lab
is there to show (DESIGN.md section 6). Endpoints live on node-1 and node-2 only,
so with three or four nodes some nodes have no endpoint (they forward, under
Cluster, and are left out of the LB's pool under Local), and Local fails about
half of the time for any node count.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from natlens.errors import NatlensError
from natlens.lab import faults
from natlens.lab.netns import Lab
from natlens.vocab import ANY_BACKEND, AVOIDS_SOURCE, PROXY

POLICIES = ("Local", "Cluster")
PROXY_MODES = ("ipvs", "iptables", "nftables")
IP_MODES = ("VIP", "Proxy")
# How the lab's LB picks a node (vocab's LB_BEHAVIOURS, less "unknown": the lab knows)
LB_MODES = (AVOIDS_SOURCE, ANY_BACKEND, PROXY)
VPC_GATEWAY = "198.18.0.1"
CLUSTER_CIDR = "198.18.16.0/20"
SERVICE_CIDR = "198.18.128.0/20"
CLIENT_NODE = "node-1"
ENDPOINT_NODES = ("node-1", "node-2")
PORT, TARGET_PORT = 80, 8080
LAB_NET = ipaddress.ip_network("198.18.0.0/15")


@dataclass
class Node:
    name: str
    ip: str
    pod_cidr: str
    ns: str = ""

    @property
    def bridge_ip(self) -> str:
        """The node's address on cni0, the pods' default gateway."""
        return str(ipaddress.ip_network(self.pod_cidr)[1])


@dataclass
class Pod:
    name: str
    node: str
    ip: str
    role: str  # "endpoint" | "client"
    ns: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Service:
    name: str
    policy: str  # "Local" | "Cluster"
    vip: str
    cluster_ip: str
    node_port: int
    health_check_node_port: int | None
    port: int = PORT
    target_port: int = TARGET_PORT
    namespace: str = "default"

    @property
    def key(self) -> str:
        """VIP:port/proto, the way summary.json names a service."""
        return f"{self.vip}:{self.port}/tcp"


@dataclass
class Topology:
    prefix: str
    nodes: list[Node]
    pods: list[Pod]
    services: list[Service]
    vpc_ns: str = ""
    proxy_mode: str = "ipvs"
    ip_mode: str = "VIP"
    fault: str | None = None  # one of natlens.lab.faults.FAULTS, or None
    lb: str = AVOIDS_SOURCE  # one of LB_MODES: what the LB does with a flow from a backend

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def client(self) -> Pod:
        return next(p for p in self.pods if p.role == "client")

    @property
    def endpoints(self) -> list[Pod]:
        """Endpoint pods (app=web), each running a server, whatever the Services select."""
        return [p for p in self.pods if p.role == "endpoint"]

    @property
    def backends(self) -> list[Pod]:
        """The pods every Service's endpoints are: all endpoint pods (app=web), or none
        under the no-endpoints fault (the Services select a label no pod has)."""
        return [] if self.fault == "no-endpoints" else self.endpoints

    def local_endpoints(self, node: str) -> list[Pod]:
        """The Services' endpoints on ``node`` (what Local keeps and the health check sees)."""
        return [p for p in self.backends if p.node == node]

    def lb_pool(self, svc: Service) -> list[Node]:
        """The LB's backends: nodes passing its health check.

        Local: only nodes with a local endpoint answer healthCheckNodePort (none at all
        under the no-endpoints fault). Cluster: every node forwards, so every node is
        healthy.
        """
        if svc.policy == "Local":
            return [n for n in self.nodes if self.local_endpoints(n.name)]
        return list(self.nodes)

    def loops_back(self, policy: str) -> bool:
        """Whether the LB can send the client pod's connections to a Service of ``policy``
        back to the pod's own node.

        Never when kube-proxy DNATs the VIP on the node (it does not reach the LB). A pod
        source (Local, or no kube-proxy rule for the LB IP: nothing SNATs) is no backend's
        address, so every LB may pick the pod's node; a node source (Cluster: SNATed to
        the node IP) only an LB that does not avoid the source.
        """
        if self.lb_ip_on_node:
            return False
        return policy == "Local" or not self.lb_ip_in_rules or self.lb != AVOIDS_SOURCE

    def loopback_fails(self, policy: str) -> bool:
        """Whether such a looped connection fails: yes, unless the LB proxies (its SNAT to
        the VIP makes the node answer the LB, which un-NATs the reply)."""
        return self.loops_back(policy) and self.lb != PROXY

    @property
    def lb_ip_in_rules(self) -> bool:
        """Whether kube-proxy writes rules for the LB IP at all.

        ipMode Proxy: no (upstream kube-proxy ignores such an ingress in every mode,
        only ClusterIP and NodePort get rules). ipMode VIP: yes.
        """
        return self.ip_mode == "VIP"

    @property
    def lb_ip_on_node(self) -> bool:
        """Whether pod -> VIP traffic is DNATed on the node and never reaches the LB.

        iptables and nftables modes with ipMode VIP: yes. IPVS mode: never, as on
        TKE, whose kube-proxy puts the VIP in its ipsets (the SNAT decision) but
        binds no IPVS virtual server to it, so the packet leaves the node.
        """
        return self.lb_ip_in_rules and self.proxy_mode != "ipvs"

    def to_dict(self) -> dict:
        """The plan as plain data (for ground-truth/lab.json)."""
        return {
            "prefix": self.prefix,
            "proxy_mode": self.proxy_mode,
            "ip_mode": self.ip_mode,
            "lb_ip_on_node": self.lb_ip_on_node,
            "fault": self.fault,
            "lb": self.lb,
            "vpc": {"namespace": self.vpc_ns, "gateway": VPC_GATEWAY},
            "cluster_cidr": CLUSTER_CIDR,
            "service_cidr": SERVICE_CIDR,
            "nodes": [{"name": n.name, "ip": n.ip, "pod_cidr": n.pod_cidr, "namespace": n.ns}
                      for n in self.nodes],
            "pods": [{"name": p.name, "node": p.node, "ip": p.ip, "role": p.role,
                      "namespace": p.ns} for p in self.pods],
            "services": [{"name": s.name, "namespace": s.namespace, "policy": s.policy,
                          "vip": s.vip, "port": s.port, "cluster_ip": s.cluster_ip,
                          "node_port": s.node_port, "target_port": s.target_port,
                          "health_check_node_port": s.health_check_node_port,
                          "lb_pool": [n.name for n in self.lb_pool(s)]}
                         for s in self.services],
        }


def plan(policies: list[str], nodes: int = 2, prefix: str = "nl-", proxy_mode: str = "ipvs",
         ip_mode: str = "VIP", fault: str | None = None, lb: str = AVOIDS_SOURCE) -> Topology:
    """Addresses and names for a lab with one LoadBalancer Service per policy given.

    ``proxy_mode`` is kube-proxy's mode on every node, ``ip_mode`` every Service's
    ``status.loadBalancer.ingress[].ipMode``, ``fault`` the one fault of the run
    (:mod:`natlens.lab.faults`; ``refused`` moves every targetPort to where nothing
    listens), ``lb`` the cloud LB's behaviour (:data:`LB_MODES`). All are checked here
    so that a bad value, or a fault that cannot act in this mode, is a one-line error
    before anything is built.
    """
    faults.check_name(fault)
    if lb not in LB_MODES:
        raise NatlensError(f"unknown LB behaviour {lb!r}: use {', '.join(LB_MODES[:-1])} "
                           f"or {LB_MODES[-1]}")
    if proxy_mode not in PROXY_MODES:
        raise NatlensError(f"unknown proxy mode {proxy_mode!r}: use ipvs, iptables or nftables")
    if ip_mode not in IP_MODES:
        raise NatlensError(f"unknown ipMode {ip_mode!r}: use VIP or Proxy")
    if not 2 <= nodes <= 4:
        raise NatlensError(f"--nodes must be 2, 3 or 4, not {nodes}")
    if not policies:
        raise NatlensError("give at least one --policy (Local or Cluster)")
    for p in policies:
        if p not in POLICIES:
            raise NatlensError(f"unknown policy {p!r}: use Local or Cluster")
    node_list = [Node(f"node-{i}", f"198.18.0.{10 + i}", f"198.18.{15 + i}.0/24",
                      ns=f"{prefix}node-{i}") for i in range(1, nodes + 1)]
    pods: list[Pod] = []
    for n in node_list:
        if n.name in ENDPOINT_NODES:
            i = n.name.split("-")[1]
            pods.append(Pod(f"web-{i}", n.name, str(ipaddress.ip_network(n.pod_cidr)[10]),
                            "endpoint", ns=f"{prefix}{n.name}-web", labels={"app": "web"}))
    first = node_list[0]
    pods.append(Pod("client", first.name, str(ipaddress.ip_network(first.pod_cidr)[100]),
                    "client", ns=f"{prefix}{first.name}-client", labels={"app": "client"}))
    services = []
    for k, policy in enumerate(policies):
        services.append(Service(
            name=f"web-{policy.lower()}" if policies.count(policy) == 1 else f"web-{policy.lower()}-{k}",
            policy=policy, vip=f"198.19.0.{10 + k}", cluster_ip=f"198.18.128.{10 + k}",
            node_port=30080 + k,
            health_check_node_port=32080 + k if policy == "Local" else None,
            target_port=faults.REFUSED_PORT if fault == "refused" else TARGET_PORT))
    topo = Topology(prefix, node_list, pods, services, vpc_ns=f"{prefix}vpc",
                    proxy_mode=proxy_mode, ip_mode=ip_mode, fault=fault, lb=lb)
    faults.check(topo)
    return topo


def build(topo: Topology, lab: Lab) -> None:
    """Create namespaces, links, addresses, routes and sysctls for ``topo``."""
    vpc = lab.ns("vpc")
    assert vpc == topo.vpc_ns
    lab.sysctl(vpc, {"net/ipv4/ip_forward": 1,
                     "net/ipv4/conf/all/send_redirects": 0,
                     "net/ipv4/conf/default/send_redirects": 0})
    for n in topo.nodes:
        _build_node(topo, lab, n)
    for p in topo.pods:
        node = topo.node(p.node)
        ns = lab.ns(p.ns[len(topo.prefix):])
        host_if = f"veth-{p.name}"[:15]
        lab.sh("ip", "-n", node.ns, "link", "add", host_if, "type", "veth",
               "peer", "name", "eth0", "netns", ns)
        lab.sh("ip", "-n", node.ns, "link", "set", host_if, "master", "cni0", "up")
        plen = ipaddress.ip_network(node.pod_cidr).prefixlen
        lab.sh("ip", "-n", ns, "addr", "add", f"{p.ip}/{plen}", "dev", "eth0")
        lab.sh("ip", "-n", ns, "link", "set", "eth0", "up")
        lab.sh("ip", "-n", ns, "route", "add", "default", "via", node.bridge_ip)


def _build_node(topo: Topology, lab: Lab, n: Node) -> None:
    """One node: its NIC routed to the VPC, cni0, kube-ipvs0 (IPVS mode) and sysctls."""
    vpc = topo.vpc_ns
    ns = lab.ns(n.name)
    assert ns == n.ns
    # The node's NIC is a veth whose other end is the VPC router's port.
    lab.sh("ip", "-n", vpc, "link", "add", n.name, "type", "veth",
           "peer", "name", "eth0", "netns", ns)
    lab.sh("ip", "-n", vpc, "addr", "add", f"{VPC_GATEWAY}/32", "dev", n.name)
    lab.sh("ip", "-n", vpc, "link", "set", n.name, "up")
    # proxy ARP as a cloud VPC answers ARP: at once (the kernel's default delays a proxy reply by
    # up to 0.8 s, which made a node's first packet to another node's IP wait that long)
    lab.sysctl(vpc, {f"net/ipv4/conf/{n.name}/proxy_arp": 1, f"net/ipv4/neigh/{n.name}/proxy_delay": 0})
    lab.sh("ip", "-n", vpc, "route", "add", f"{n.ip}/32", "dev", n.name)
    lab.sh("ip", "-n", vpc, "route", "add", n.pod_cidr, "via", n.ip, "dev", n.name)
    lab.sh("ip", "-n", ns, "addr", "add", f"{n.ip}/24", "dev", "eth0")
    lab.sh("ip", "-n", ns, "link", "set", "eth0", "up")
    lab.sh("ip", "-n", ns, "route", "add", "default", "via", VPC_GATEWAY)
    lab.sh("ip", "-n", ns, "link", "add", "cni0", "type", "bridge")
    lab.sh("ip", "-n", ns, "addr", "add",
           f"{n.bridge_ip}/{ipaddress.ip_network(n.pod_cidr).prefixlen}", "dev", "cni0")
    lab.sh("ip", "-n", ns, "link", "set", "cni0", "up")
    if topo.proxy_mode == "ipvs":
        _kube_ipvs0(topo, lab, ns)
    # A Kubernetes node: forwarding on, loose about the source of the looped-back SYN
    # (it arrives on eth0 from a pod address routed via cni0), br_netfilter on, as the
    # kubelet requires.
    settings: dict[str, str | int] = {
        "net/ipv4/ip_forward": 1,
        "net/ipv4/conf/all/rp_filter": 0, "net/ipv4/conf/default/rp_filter": 0,
        "net/ipv4/conf/eth0/rp_filter": 0,
        "net/ipv4/conf/all/accept_redirects": 0,
        "net/ipv4/conf/eth0/accept_redirects": 0,
    }
    if bridge_netfilter_available():
        settings["net/bridge/bridge-nf-call-iptables"] = 1
    lab.sysctl(ns, settings)


def _kube_ipvs0(topo: Topology, lab: Lab, ns: str) -> None:
    """kube-proxy IPVS mode binds every ClusterIP to the dummy device kube-ipvs0.

    Never the LB VIP: the lab's IPVS mode is TKE's, which leaves it unbound (and
    with ipMode Proxy no kube-proxy binds it). iptables and nftables modes have no
    such device. kube-ipvs0 is left down; a kernel without the dummy driver gets an
    empty bridge instead (its local routes are the same, which is all that matters).
    """
    if lab.sh("ip", "-n", ns, "link", "add", "kube-ipvs0", "type", "dummy", check=False,
              ok=True) is None:
        lab.sh("ip", "-n", ns, "link", "add", "kube-ipvs0", "type", "bridge")
    for s in topo.services:
        lab.sh("ip", "-n", ns, "addr", "add", f"{s.cluster_ip}/32", "dev", "kube-ipvs0")


def bridge_netfilter_available() -> bool:
    """Whether br_netfilter is in the kernel (its sysctls exist)."""
    return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
