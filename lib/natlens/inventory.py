"""Nodes, pods and services of an incident: from kubectl JSON, or inferred from the node dumps.

Why: a journey is only readable with names ("pod web-1 on node-a called
LB 10.0.0.9:80 of default/checkout, Local"). ``cluster/*.json`` is used when the
bundle has it; otherwise (DESIGN.md section 2) node IPs come from ``ip-addr.*``,
pod CIDRs from the bridge address, VIPs, NodePorts and the policy from the
kube-proxy ipsets (through the netfilter model where the rules can be read). Every
inferred fact is listed in ``Inventory.inferred`` with the file it came from.

Tables (pandas); a node, pod or service may have several addresses (dual stack): the
list columns hold all of them, the single ones the first IPv4 one (else the first):
  nodes     name, internal_ip, addresses (InternalIPs, ExternalIPs), pod_cidr, pod_cidrs, source,
            provider_id (spec.providerID), cloud ("aws" | "azure" | "gcp" | "alibaba" | "tencent",
            from the providerID's scheme; None when there is none or natlens does not know it)
  pods      namespace, name, ip, ips (podIPs), node, host_network, source
  services  namespace, name, type, cluster_ip, cluster_ips, lb_ip, port, proto, node_port,
            target_port, policy ("Local" | "Cluster" | "unknown"), source, ip_mode (the ingress's
            status.loadBalancer.ingress[].ipMode: "VIP" | "Proxy", None when not set or not
            known), lb_hostname (a hostname-only ingress: its hostname, lb_ip None), lb_class
            (spec.loadBalancerClass), lb_annotations (the annotations that decide the cloud load
            balancer's behaviour, LB_ANNOTATIONS: a sorted tuple of (key, value); () when none)
            (one row per port and load-balancer ingress)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import pandas as pd

from natlens import netfilter
from natlens.bundle import Bundle, NodeDir
from natlens.errors import NatlensError
from natlens.netfilter.ipset import parse_ipset
from natlens.netfilter.kubeproxy_nft import EXTERNAL

NODE_COLUMNS = ["name", "internal_ip", "addresses", "pod_cidr", "pod_cidrs", "source", "provider_id", "cloud"]
POD_COLUMNS = ["namespace", "name", "ip", "ips", "node", "host_network", "source"]
SERVICE_COLUMNS = ["namespace", "name", "type", "cluster_ip", "cluster_ips", "lb_ip", "port", "proto",
                   "node_port", "target_port", "policy", "source", "ip_mode", "lb_hostname", "lb_class",
                   "lb_annotations"]

# spec.providerID -> cloud, by the scheme each cloud's controller writes (never guessed from
# anything else): aws:///<zone>/i-<id> (cloud-provider-aws), azure:///subscriptions/...
# (cloud-provider-azure), gce://<project>/<zone>/<name> (GCE/GKE), alicloud://<region>.<instance>
# or bare <region>.i-<id> (cloud-provider-alibaba-cloud's NodeFromProviderID), qcloud:///<zone>/ins-<id>
# (TKE). Anything else is None.
PROVIDER_SCHEMES = (("aws://", "aws"), ("azure://", "azure"), ("gce://", "gcp"), ("alicloud://", "alibaba"),
                    ("qcloud://", "tencent"))
ALIBABA_BARE_ID = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+\.i-[0-9a-z]+$")  # cn-hangzhou.i-bp1...
CLOUDS = ("aws", "azure", "gcp", "alibaba", "tencent")

# The annotations that decide what a cloud's load balancer does with a node's own connection
# (natlens.cloud reads them): exact keys, and prefixes of whole annotation families.
LB_ANNOTATIONS = frozenset({
    "service.beta.kubernetes.io/aws-load-balancer-type",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes",
    "service.beta.kubernetes.io/aws-load-balancer-internal",
    "service.beta.kubernetes.io/aws-load-balancer-scheme",
    "service.beta.kubernetes.io/azure-load-balancer-internal",
    "service.beta.kubernetes.io/azure-disable-load-balancer-floating-ip",
    "service.kubernetes.io/tke-existed-lbid",
    "service.kubernetes.io/loadbalance-id",
    "service.kubernetes.io/local-svc-only-bind-node-with-pod",
    "service.beta.kubernetes.io/backend-type",  # ACK: "eni" puts the pods behind the CLB, "ecs" the nodes
    "networking.gke.io/load-balancer-type",
    "cloud.google.com/load-balancer-type",
})
LB_ANNOTATION_PREFIXES = ("service.cloud.tencent.com/", "service.kubernetes.io/qcloud-",
                          "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-",
                          "service.beta.kubernetes.io/alicloud-loadbalancer-")  # ACK's pre-2019 spelling

# Interfaces that carry the node's own address (not pods, not kube-proxy dummies).
UPLINK = re.compile(r"^(eth|ens|enp|eno|en|bond|wlan|em)\w*")
# Interfaces that bridge a node's pods (their address is the pods' gateway).
BRIDGE = re.compile(r"^(cni|cbr|docker|kube-bridge|br)\w*")


@dataclass
class Inventory:
    nodes: pd.DataFrame
    pods: pd.DataFrame
    services: pd.DataFrame
    inferred: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # every address maps to its node / pod / service, not just the primary one (dual stack)
        self._node_ip: dict[str, str] = {}
        self._cidrs = []
        for r in self.nodes.itertuples():
            for ip in _every(r.internal_ip, getattr(r, "addresses", None)):
                self._node_ip.setdefault(ip, r.name)
            for c in _every(r.pod_cidr, getattr(r, "pod_cidrs", None)):
                self._cidrs.append((ipaddress.ip_network(c, strict=False), r.name))
        self._pod_ip = {ip: r for r in self.pods.itertuples() if not r.host_network
                        for ip in _every(r.ip, getattr(r, "ips", None))}
        self._svc: dict[tuple[str, int, str], int] = {}
        for i, r in enumerate(self.services.itertuples()):
            if _present(r.port):
                for ip in _every(r.lb_ip, r.cluster_ip, getattr(r, "cluster_ips", None)):
                    self._svc.setdefault((ip, int(r.port), r.proto), i)

    def node_ip(self, ip: str) -> str | None:
        """The node one of whose addresses (InternalIP, ExternalIP; any family) this is."""
        return self._node_ip.get(_norm(ip))

    def pod(self, ip: str):
        """The (non-host-network) pod with this IP (any of its podIPs), or None."""
        return self._pod_ip.get(_norm(ip))

    def node_of(self, ip: str) -> str | None:
        """The node an address lives on: node IP, pod IP, or inside a node's pod CIDR."""
        ip = _norm(ip)
        if ip in self._node_ip:
            return self._node_ip[ip]
        p = self._pod_ip.get(ip)
        if p is not None and _present(p.node):
            return p.node
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net, name in self._cidrs:
            if a.version == net.version and a in net:
                return name
        return None

    def is_pod_ip(self, ip: str) -> bool:
        ip = _norm(ip)
        if ip in self._pod_ip:
            return True
        if ip in self._node_ip:
            return False
        return self.node_of(ip) is not None

    def service(self, ip: str, port: int, proto: str = "tcp") -> dict | None:
        """The service whose LB ingress IP, cluster IP (any of clusterIPs) or NodePort on a node IP this is."""
        s = self.services
        if s.empty:
            return None
        ip = _norm(ip)
        i = self._svc.get((ip, int(port), proto))
        if i is not None:
            return s.iloc[i].to_dict()
        if ip in self._node_ip:
            m = s[(s["proto"] == proto) & (s["node_port"] == port)]
            if not m.empty:
                return m.iloc[0].to_dict()
        return None

    def vips(self) -> set[tuple[str, int, str]]:
        """Load-balancer ingress (VIP, port, proto) of every service."""
        s = self.services[self.services["lb_ip"].notna()]
        return {(r.lb_ip, int(r.port), r.proto) for r in s.itertuples()}


def _present(v) -> bool:
    """A table cell that holds a value (not None, not NaN, not "")."""
    return v is not None and v == v and v != ""


def _norm(ip: str) -> str:
    """One spelling per IPv6 address (fd00:0::1 and fd00::1 are the same)."""
    if isinstance(ip, str) and ":" in ip:
        try:
            return str(ipaddress.ip_address(ip))
        except ValueError:
            pass
    return ip


def _every(*vals) -> list[str]:
    """The addresses in some cells (single values or lists), normalised, each once, in order."""
    out: list[str] = []
    for v in vals:
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, str) and x and _norm(x) not in out:
                out.append(_norm(x))
    return out


_KIND = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object",
         (int, str): "an integer or a name"}


class _Item:
    """One item of a kubectl JSON list, read with type checks.

    A field of the wrong type is a NatlensError naming the file and the item
    ("cluster/nodes.json: items[1] (node-2): status.addresses is not a list"); an absent
    or null field is simply None: every field is optional.
    """

    def __init__(self, path: str, i: int, obj) -> None:
        self.path, self.where, self.obj = path, f"items[{i}]", obj
        if not isinstance(obj, dict):
            self.fail(f"is not an object but {obj!r:.40}")
        name, ns = self.get("metadata.name", str), self.get("metadata.namespace", str)
        if name:
            self.where += f" ({ns}/{name})" if ns else f" ({name})"

    def fail(self, what: str):
        raise NatlensError(f"{self.where}: {what}", path=self.path)

    def get(self, dotted: str, kind, obj=None, label: str = ""):
        """obj's (default: the item's) field at a dotted path; None when absent or null."""
        cur, walked = self.obj if obj is None else obj, label
        for k in dotted.split("."):
            if cur is None:
                return None
            if not isinstance(cur, dict):
                self.fail(f"{walked} is not an object")
            cur, walked = cur.get(k), f"{walked}.{k}" if walked else k
        if cur is None:
            return None
        if not isinstance(cur, kind) or (type(cur) is bool and kind is not bool):
            self.fail(f"{walked} is not {_KIND[kind]} but {cur!r:.40}")
        return cur

    def each(self, dotted: str) -> list[tuple[str, dict]]:
        """The objects of a list field, each with its label (status.addresses[0], ...)."""
        out = []
        for j, x in enumerate(self.get(dotted, list) or []):
            if not isinstance(x, dict):
                self.fail(f"{dotted}[{j}] is not an object but {x!r:.40}")
            out.append((f"{dotted}[{j}]", x))
        return out

    def ips(self, label: str, values, network: bool = False) -> list[str]:
        """Addresses (or networks) of a field, each checked; "None" (a headless service) is none."""
        out = []
        for j, v in enumerate(values if isinstance(values, list) else [values]):
            where = f"{label}[{j}]" if isinstance(values, list) else label
            if v is None or v == "None" or v == "":
                continue
            if not isinstance(v, str):
                self.fail(f"{where} is not {_KIND[str]} but {v!r:.40}")
            try:
                ipaddress.ip_network(v, strict=False) if network else ipaddress.ip_address(v)
            except ValueError:
                self.fail(f"{where} {v!r:.50} is not an IP {'network' if network else 'address'}")
            out.append(v)
        return out


def _items(bundle: Bundle, kind: str) -> list[_Item]:
    doc = bundle.cluster.get(kind) or {}
    path = str(bundle.path / "cluster" / f"{kind}.json")
    return [_Item(path, i, x) for i, x in enumerate(doc.get("items", []) or [])]


def _primary(addrs: list[str]) -> str | None:
    """The address a single-address column shows: the first IPv4 one (what SNAT and the
    captures of an IPv4 service use), else the first one."""
    return next((a for a in addrs if ":" not in a), addrs[0] if addrs else None)


def from_cluster(bundle: Bundle) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three tables from kubectl JSON (missing kinds give empty tables).

    Every address is kept: all InternalIP and ExternalIP of a node (``addresses``; InternalIPs
    first), all podIPs of a pod (``ips``), all clusterIPs of a service (``cluster_ips``). The
    single-address columns show the first IPv4 one, else the first. A field of the wrong
    type raises NatlensError naming the file and the item.
    """
    nodes = [_node_row(n) for n in _items(bundle, "nodes")]
    pods, services = [], []
    for p in _items(bundle, "pods"):
        ips = _every(p.ips("status.podIP", p.get("status.podIP", str)),
                     [ip for label, x in p.each("status.podIPs")
                      for ip in p.ips(f"{label}.ip", p.get("ip", str, x, label))])
        pods.append({"namespace": p.get("metadata.namespace", str), "name": p.get("metadata.name", str),
                     "ip": _primary(ips), "ips": tuple(ips), "node": p.get("spec.nodeName", str),
                     "host_network": bool(p.get("spec.hostNetwork", bool)), "source": "cluster/pods.json"})
    for s in _items(bundle, "services"):
        services += _service_rows(s)
    return (pd.DataFrame(nodes, columns=NODE_COLUMNS), pd.DataFrame(pods, columns=POD_COLUMNS),
            pd.DataFrame(services, columns=SERVICE_COLUMNS))


def _node_row(n: _Item) -> dict:
    """One node's row: every InternalIP and ExternalIP, its pod CIDRs, its providerID and the
    cloud that providerID names."""
    by_type: dict[str, list[str]] = {"InternalIP": [], "ExternalIP": []}
    for label, a in n.each("status.addresses"):
        t = n.get("type", str, a, label)
        if t in by_type:
            by_type[t] += n.ips(f"{label}.address", n.get("address", str, a, label))
    internal, external = _every(by_type["InternalIP"]), _every(by_type["ExternalIP"])
    cidrs = _every(n.ips("spec.podCIDR", n.get("spec.podCIDR", str), network=True),
                   n.ips("spec.podCIDRs", n.get("spec.podCIDRs", list) or [], network=True))
    provider_id = n.get("spec.providerID", str) or None
    return {"name": n.get("metadata.name", str), "internal_ip": _primary(internal),
            "addresses": tuple(_every(internal, external)),
            "pod_cidr": _primary(cidrs), "pod_cidrs": tuple(cidrs), "source": "cluster/nodes.json",
            "provider_id": provider_id, "cloud": cloud_of(provider_id)}


def cloud_of(provider_id: str | None) -> str | None:
    """The cloud a node's spec.providerID names by its scheme (PROVIDER_SCHEMES, or Alibaba's bare
    "<region>.i-<id>"); None when there is none or the scheme is not one natlens knows."""
    if not isinstance(provider_id, str) or not provider_id:
        return None
    for scheme, cloud in PROVIDER_SCHEMES:
        if provider_id.startswith(scheme):
            return cloud
    return "alibaba" if ALIBABA_BARE_ID.match(provider_id) else None


def _service_rows(s: _Item) -> list[dict]:
    """One row per port and load-balancer ingress of a Service."""
    ingress = _ingress(s) or [(None, None, None)]
    stype = s.get("spec.type", str)
    policy = s.get("spec.externalTrafficPolicy", str) or \
        ("Cluster" if stype in ("LoadBalancer", "NodePort") else "unknown")
    cips = _every(s.ips("spec.clusterIP", s.get("spec.clusterIP", str)),
                  s.ips("spec.clusterIPs", s.get("spec.clusterIPs", list) or []))
    lb_class, annotations = s.get("spec.loadBalancerClass", str) or None, _lb_annotations(s)
    rows = []
    for label, port in s.each("spec.ports"):
        proto = s.get("protocol", str, port, label) or "TCP"
        for lb, ip_mode, hostname in ingress:
            rows.append({
                "namespace": s.get("metadata.namespace", str), "name": s.get("metadata.name", str),
                "type": stype, "cluster_ip": _primary(cips), "cluster_ips": tuple(cips),
                "lb_ip": lb, "port": s.get("port", int, port, label), "proto": proto.lower(),
                "node_port": s.get("nodePort", int, port, label),
                "target_port": s.get("targetPort", (int, str), port, label),
                "policy": policy, "source": "cluster/services.json", "ip_mode": ip_mode,
                "lb_hostname": hostname, "lb_class": lb_class, "lb_annotations": annotations})
    return rows


def _lb_annotations(s: _Item) -> tuple[tuple[str, str], ...]:
    """The Service's annotations that decide its load balancer's behaviour (LB_ANNOTATIONS and
    LB_ANNOTATION_PREFIXES), sorted; an annotation value that is not a string is a NatlensError
    naming it (kubectl JSON holds strings only)."""
    out = []
    for key, value in (s.get("metadata.annotations", dict) or {}).items():
        if key not in LB_ANNOTATIONS and not key.startswith(LB_ANNOTATION_PREFIXES):
            continue
        if not isinstance(value, str):
            s.fail(f"metadata.annotations[{key!r}] is not {_KIND[str]} but {value!r:.40}")
        out.append((key, value))
    return tuple(sorted(out))


IP_MODES = ("VIP", "Proxy")  # status.loadBalancer.ingress[].ipMode (Kubernetes 1.29+)


def _ingress(s: _Item) -> list[tuple[str | None, str | None, str | None]]:
    """(IP, ipMode, hostname) of each load-balancer ingress of a Service: an ingress with an IP
    gives its IP and ipMode (None when not set); a hostname-only ingress (AWS's NLB/ELB) gives
    (None, None, hostname). An ipMode other than VIP or Proxy is a NatlensError naming it."""
    out = []
    for label, i in s.each("status.loadBalancer.ingress"):
        host = s.get("hostname", str, i, label) or None
        mode = s.get("ipMode", str, i, label) or None
        if mode is not None and mode not in IP_MODES:
            s.fail(f"{label}.ipMode is {mode!r:.20}, not VIP or Proxy")
        ips = s.ips(f"{label}.ip", s.get("ip", str, i, label))
        out += [(ip, mode, None) for ip in ips] or ([(None, None, host)] if host else [])
    return out


def _host_address(ip: str) -> bool:
    """Not loopback, not link-local: an address traffic between nodes can use."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (a.is_loopback or a.is_link_local)


def infer_node(bundle: Bundle, node: NodeDir, inferred: list[str]) -> dict:
    """Addresses and pod CIDRs of one node from its interface addresses.

    The node's addresses are those of its uplink (eth*, ens*, ...), both families; the pod
    CIDRs are the networks of its bridge (cni0, cbr0, ...). Link-local and loopback are not.
    """
    row = {"name": node.name, "internal_ip": None, "addresses": (), "pod_cidr": None,
           "pod_cidrs": (), "source": None, "provider_id": None, "cloud": None}
    addrs = [a for a in node.addresses() if _host_address(a.ip)]
    if not addrs:
        return row
    src = bundle.display_path(node, node.ip_addr)
    up = [a for a in addrs if UPLINK.match(a.ifname)]
    if up:
        row["addresses"] = tuple(_every([a.ip for a in up]))
        row["internal_ip"] = _primary(list(row["addresses"]))
        inferred.append(f"{node.name}: InternalIP {', '.join(row['addresses'])} from {src} "
                        f"({', '.join(dict.fromkeys(a.ifname for a in up))})")
    br = [a for a in addrs if BRIDGE.match(a.ifname)]
    if br:
        row["pod_cidrs"] = tuple(_every([a.network for a in br]))
        row["pod_cidr"] = _primary(list(row["pod_cidrs"]))
        inferred.append(f"{node.name}: pod CIDR {', '.join(row['pod_cidrs'])} from {src} "
                        f"({', '.join(dict.fromkeys(a.ifname for a in br))} address)")
    row["source"] = src
    return row


_PROTO_NAME = {6: "tcp", 17: "udp", 132: "sctp"}
# What a Service inferred from a node's dumps cannot say: the dumps hold no Service objects.
NOT_FROM_CLUSTER = {"lb_class": None, "lb_annotations": ()}


def _lb_members(sets: dict) -> dict[tuple[str, int, str], bool]:
    """(VIP, port, proto) -> Local?, from KUBE-LOAD-BALANCER(-LOCAL) and their IPv6 twins KUBE-6-*."""
    out: dict[tuple[str, int, str], bool] = {}
    for base in ("KUBE-LOAD-BALANCER", "KUBE-6-LOAD-BALANCER"):
        s = sets.get(base)
        if s is None or s.type != "hash:ip,port":
            continue
        v6 = s.header.get("family") == "inet6" or base.startswith("KUBE-6-")
        local = sets.get(base + "-LOCAL")
        local_keys = {e.key for e in local.entries} if local is not None else set()
        for e in s.entries:
            ip, pnum, port = e.key
            addr = str(ipaddress.IPv6Address(ip) if v6 else ipaddress.IPv4Address(ip))
            out.setdefault((addr, port, _PROTO_NAME.get(pnum, str(pnum))), e.key in local_keys)
    return out


def _node_ports(sets: dict, proto: str) -> list[int]:
    """NodePorts of one protocol: members of KUBE-NODE-PORT-<PROTO> (and KUBE-6-NODE-PORT-<PROTO>)."""
    return sorted({e.key[0] for name in (f"KUBE-NODE-PORT-{proto.upper()}", f"KUBE-6-NODE-PORT-{proto.upper()}")
                   if name in sets and sets[name].type == "bitmap:port" for e in sets[name].entries})


def infer_services(bundle: Bundle, inferred: list[str]) -> pd.DataFrame:
    """LB VIPs, NodePorts and policies from the kube-proxy ipsets of every node.

    Uses the netfilter model's kube_services() on the node's rules; where they cannot be
    read (no iptables dump, or a bad one) it reads ipset membership directly: KUBE-LOAD-BALANCER holds "VIP,tcp:port", and
    a member also in KUBE-LOAD-BALANCER-LOCAL has externalTrafficPolicy Local.
    """
    rows: dict[tuple, dict] = {}
    for node in bundle.nodes:
        if node.iptables is not None or node.nft is not None:
            try:
                found = netfilter.kube_services(node.rules())
                for sp in found:
                    if sp.kind == "NodePort":  # "*:port": tied to an LB VIP below when unambiguous
                        continue
                    key = (sp.vip, int(sp.port), str(sp.proto).lower())
                    if key not in rows:
                        outside = sp.kind in ("LoadBalancer", "ExternalIP", EXTERNAL)
                        rows[key] = {"namespace": None, "name": None, "type": sp.kind,
                                     "cluster_ip": None if outside else sp.vip,
                                     "cluster_ips": () if outside else (sp.vip,),
                                     "lb_ip": sp.vip if outside else None, "port": int(sp.port),
                                     "proto": str(sp.proto).lower(),
                                     "node_port": (list(sp.node_ports) or [None])[0],
                                     "target_port": None,  # cluster IP: "n/a" -> "unknown", as kubectl's
                                     "policy": "unknown" if sp.policy == "n/a" else sp.policy,
                                     "source": f"{node.name} netfilter model", **NOT_FROM_CLUSTER}
                        inferred.append(f"service {sp.vip}:{sp.port}/{sp.proto} ({sp.kind}): policy "
                                        f"{sp.policy} from the netfilter model of {node.name} "
                                        f"({'; '.join(sp.evidence)})")
                for proto in ("tcp", "udp", "sctp"):
                    _tie_node_port(rows, proto, [p for sp in found if sp.kind == "NodePort" and sp.proto.lower() == proto
                                                 for p in (sp.node_ports or [sp.port])], node.name, inferred)
                if found:
                    continue
            except NatlensError as exc:  # bad dumps (the parsers' only error): say so; bugs propagate
                inferred.append(f"{node.name}: netfilter model could not read the rules ({exc})")
        if node.ipset is None:
            continue
        src = bundle.display_path(node, node.ipset)
        try:
            sets = parse_ipset(node.ipset.read_text(errors="replace"), str(node.ipset))
        except NatlensError as exc:
            inferred.append(f"{node.name}: the ipsets could not be read ({exc})")
            continue
        for (ip, port_i, proto), is_local in _lb_members(sets).items():
            key = (ip, port_i, proto)
            if key in rows:
                continue
            policy = "Local" if is_local else "Cluster"
            rows[key] = {"namespace": None, "name": None, "type": "LoadBalancer", "cluster_ip": None,
                         "cluster_ips": (),
                         "lb_ip": ip, "port": port_i, "proto": proto, "node_port": None,
                         "target_port": None, "policy": policy, "source": src, **NOT_FROM_CLUSTER}
            why = "member of KUBE-LOAD-BALANCER-LOCAL" if policy == "Local" else \
                "in KUBE-LOAD-BALANCER but not KUBE-LOAD-BALANCER-LOCAL"
            inferred.append(f"service {ip}:{port_i}/{proto}: LB VIP, policy {policy} "
                            f"from {src} ({why})")
        for proto in ("tcp", "udp", "sctp"):
            _tie_node_port(rows, proto, _node_ports(sets, proto), src, inferred)
    return pd.DataFrame(list(rows.values()), columns=SERVICE_COLUMNS)


def _tie_node_port(rows: dict[tuple, dict], proto: str, node_ports: list[int], source: str,
                   inferred: list[str]) -> None:
    """A single NodePort of a protocol belongs to the single LB VIP of that protocol without
    guessing; more are ambiguous."""
    lbs = [k for k in rows if k[2] == proto and rows[k]["lb_ip"] is not None and rows[k]["node_port"] is None]
    ports = sorted(set(node_ports))
    if len(ports) == 1 and len(lbs) == 1:
        rows[lbs[0]]["node_port"] = ports[0]
        inferred.append(f"service {lbs[0][0]}:{lbs[0][1]}/{proto}: NodePort {ports[0]} from {source} "
                        f"(the only {proto.upper()} NodePort and the only {proto.upper()} LB VIP)")


def build_inventory(bundle: Bundle) -> Inventory:
    """Inventory from cluster/ where present, completed by inference from the node dumps."""
    inferred: list[str] = []
    nodes, pods, services = from_cluster(bundle)
    known = set(nodes["name"])
    extra = []
    for node in bundle.nodes:
        if node.name in known:
            r = nodes.index[nodes["name"] == node.name][0]
            if not nodes.at[r, "internal_ip"] or not nodes.at[r, "pod_cidr"]:
                inf = infer_node(bundle, node, inferred)
                for k, ks in (("internal_ip", "addresses"), ("pod_cidr", "pod_cidrs")):
                    if not nodes.at[r, k] and inf[k]:
                        nodes.at[r, k] = inf[k]
                        nodes.at[r, ks] = tuple(_every(nodes.at[r, ks], inf[ks]))
            continue
        extra.append(infer_node(bundle, node, inferred))
    if extra:
        nodes = pd.concat([nodes, pd.DataFrame(extra, columns=NODE_COLUMNS)], ignore_index=True) \
            if len(nodes) else pd.DataFrame(extra, columns=NODE_COLUMNS)
    if services.empty:
        services = infer_services(bundle, inferred)
    return Inventory(nodes=nodes, pods=pods, services=services, inferred=inferred)
