"""What each cloud DOCUMENTS about its load balancer for one Service, and the fixes that exist there.

Why: the loopback's mechanism and its fix depend on the load balancer behind the VIP (an NLB
with client IP preservation may send a node's own connection back to it; Tencent's CLB never
sends a flow to the backend whose address is its source; a Classic ELB proxies). The
providers document that behaviour; this module says which documented case a Service is in,
from the fields it was read from (the nodes' spec.providerID, the Service's
loadBalancerClass and annotations: natlens.inventory), with the document it comes from.
It is documentation, not evidence: what the load balancer did is measured from the captures
(findings.lb), and the caller weighs the two.

    from natlens.cloud import lb_profile, fix
    p = lb_profile(inventory, "default", "web")   # LbProfile: cloud, kind, documented, evidence, note
    f = fix("cluster-policy", inventory, "default", "web", 80)   # Fix, or None where it does not exist

The cloud of a Service is the cloud of the cluster's nodes (every node whose providerID names
one must agree); nothing is guessed from anything else (no providerID, a scheme natlens does
not know, or nodes that disagree: cloud None, and the evidence says which).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from natlens.inventory import Inventory
from natlens.vocab import ANY_BACKEND, AVOIDS_SOURCE, PROXY, UNKNOWN

FIX_KINDS = ("cluster-policy", "snat-on-node", "no-client-ip-preservation", "ip-targets", "cluster-ip",
             "node-intercepts-vip")


@dataclass(frozen=True)
class Fix:
    """One way to stop the loop for one Service."""

    kind: str  # one of FIX_KINDS
    text: str  # one sentence: what to change and why it stops the loop
    command: str  # the exact command for this Service (or, for a config change, what to change where)
    cost: str  # what it costs


@dataclass(frozen=True)
class LbProfile:
    """What the provider documents about the load balancer of one Service."""

    cloud: str | None  # aws | azure | gcp | alibaba | tencent | None
    kind: str  # aws-nlb-instance, aws-nlb-ip, aws-clb, azure-lb, gcp-ilb, gcp-netlb, alibaba-clb,
    #            alibaba-nlb, tencent-clb, unknown
    documented: str  # vocab.AVOIDS_SOURCE | ANY_BACKEND | PROXY | UNKNOWN: a node's own connection
    evidence: str  # the fields it was read from
    note: str  # one sentence of what the docs say, with the doc it comes from


# The documents each note cites.
DOC_AWS_NLB_LOOPBACK = ("docs.aws.amazon.com/elasticloadbalancing/latest/network/"
                        "load-balancer-troubleshooting.html#loopback-timeout")
DOC_AWS_NLB_PRESERVE = ("docs.aws.amazon.com/elasticloadbalancing/latest/network/"
                        "edit-target-group-attributes.html#client-ip-preservation")
DOC_AWS_CLB = "docs.aws.amazon.com/elasticloadbalancing/latest/classic/enable-proxy-protocol.html"
DOC_AWS_LBC = "kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/service/annotations/"
DOC_AZURE_ILB = "learn.microsoft.com/azure/load-balancer/load-balancer-overview#limitations"
DOC_AZURE_ANNOTATIONS = "kubernetes-sigs.github.io/cloud-provider-azure/topics/loadbalancer/"
DOC_GCP_ILB = "cloud.google.com/load-balancing/docs/internal"
DOC_GCP_NETLB = "cloud.google.com/load-balancing/docs/network"
DOC_ALIBABA_CLB = "alibabacloud.com/help/en/slb/the-endpoint-of-the-slb-instance-timed-out"
DOC_ALIBABA_L4 = ("alibabacloud.com/help/en/slb/classic-load-balancer/use-cases/"
                  "enable-proxy-protocol-for-a-layer-4-listener-to-retrieve-client-ip-addresses")
DOC_TENCENT_CLB = "github.com/imroc/kubernetes-guide tencent/faq/clb-loopback.md, TKE's CLB loopback FAQ (CLB 回环问题)"

AWS = "service.beta.kubernetes.io/aws-load-balancer-"
AWS_LBC_CLASS = "service.k8s.aws/nlb"
AZURE_INTERNAL = "service.beta.kubernetes.io/azure-load-balancer-internal"
AZURE_NO_FLOATING_IP = "service.beta.kubernetes.io/azure-disable-load-balancer-floating-ip"
GKE_TYPE = ("networking.gke.io/load-balancer-type", "cloud.google.com/load-balancer-type")  # new, legacy
GKE_CLASS_PREFIX = "networking.gke.io/l4-regional-"  # -internal, -external (and their -legacy twins)
ALIBABA = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
ALIBABA_OLD = "service.beta.kubernetes.io/alicloud-loadbalancer-"  # ACK still reads the pre-2019 spelling
ALIBABA_BACKEND_TYPE = "service.beta.kubernetes.io/backend-type"
ALIBABA_NLB_CLASS = "alibabacloud.com/nlb"
TENCENT_DIRECT = "service.cloud.tencent.com/direct-access"
TENCENT_INTERNAL = "service.kubernetes.io/qcloud-loadbalancer-internal-subnetid"

CLOUD_NAMES = {"aws": "AWS", "azure": "Azure", "gcp": "Google Cloud", "alibaba": "Alibaba Cloud",
               "tencent": "Tencent Cloud"}
# Who writes status.loadBalancer.ingress[].ipMode (the cloud's load-balancer controller).
IPMODE_WRITER = {"azure": "cloud-provider-azure (the cloud-controller-manager)",
                 "gcp": "GKE's service controller", "alibaba": "ACK's cloud-controller-manager (CCM)",
                 "tencent": "TKE's service-controller", None: "the cluster's load-balancer controller"}
# The ip-masq-agent ConfigMap each cloud documents (kube-system).
MASQ_CONFIG = {"gcp": "ip-masq-agent", "tencent": "ip-masq-agent-config"}


@dataclass(frozen=True)
class _Service:
    """What the inventory holds of one Service (its rows' shared fields)."""

    namespace: str | None
    name: str | None
    found: bool = False
    from_cluster: bool = False  # read from cluster/services.json (else inferred from the dumps)
    type: str | None = None
    policy: str | None = None
    lb_class: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    protos: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    lb_ips: tuple[str, ...] = ()
    cluster_ip: str | None = None

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def where(self) -> str:
        return f"cluster/services.json: {self.label}"

    def ann(self, key: str) -> str | None:
        return self.annotations.get(key)


def _present(v) -> bool:
    """A table cell that holds a value (not None, not NaN, not "")."""
    return v is not None and not (isinstance(v, float) and v != v) and v is not pd.NA and v != ""


def _service(inventory: Inventory, namespace: str | None, name: str | None) -> _Service:
    """The Service's shared fields from its rows in the inventory (found False: no such rows)."""
    s = inventory.services
    if name is None or s.empty or "name" not in s:
        return _Service(namespace, name)
    rows = s[(s["name"] == name) & (s["namespace"] == namespace)]
    if rows.empty:
        return _Service(namespace, name)
    r = rows.iloc[0]

    def col(c: str):
        return r[c] if c in rows and _present(r[c]) else None

    def each(c: str) -> tuple:
        return tuple(dict.fromkeys(v for v in rows.get(c, ()) if _present(v)))

    anns = col("lb_annotations")
    return _Service(
        # "captures": a hostname-only ingress of cluster/services.json whose address the captures showed
        namespace, name, found=True, from_cluster=col("source") in ("cluster/services.json", "captures"),
        type=col("type"),
        policy=col("policy"), lb_class=col("lb_class"), annotations=dict(anns) if anns else {},
        protos=tuple(str(p) for p in each("proto")), ports=tuple(int(p) for p in each("port")),
        lb_ips=each("lb_ip"), cluster_ip=col("cluster_ip"))


def cluster_cloud(inventory: Inventory) -> tuple[str | None, str]:
    """(cloud, evidence): the cloud every node whose spec.providerID names one agrees on; None
    (and why) when no node's does, or they disagree. Nodes whose providerID is missing or of a
    scheme natlens does not know are named in the evidence, never counted for a cloud."""
    n = inventory.nodes
    if n.empty:
        return None, "no nodes in the inventory (no cluster/nodes.json): no providerID to read"
    pids = [(r.name, r.provider_id, r.cloud if _present(r.cloud) else None)
            for r in n.reindex(columns=["name", "provider_id", "cloud"]).itertuples() if _present(r.provider_id)]
    if not pids:
        if "source" in n and not (n["source"] == "cluster/nodes.json").any():
            return None, "no cluster/nodes.json (the nodes were inferred from their dumps, which hold no providerID)"
        return None, "cluster/nodes.json: no node has a spec.providerID"
    clouds = sorted({c for _, _, c in pids if c})
    unknown = [f"{nm} spec.providerID {pid!r} (a scheme natlens does not know)" for nm, pid, c in pids if not c]
    if not clouds:
        return None, "cluster/nodes.json: " + "; ".join(unknown[:3])
    if len(clouds) > 1:
        named = ", ".join(f"{nm} {c}" for nm, _, c in pids if c)
        return None, f"cluster/nodes.json: the nodes' providerIDs name different clouds ({named}): natlens names none"
    first = next((nm, pid) for nm, pid, c in pids if c)
    agree = sum(1 for _, _, c in pids if c)
    ev = f"cluster/nodes.json: {first[0]} spec.providerID {first[1]}"
    if agree > 1:
        ev += f" ({agree} nodes' providerIDs name {clouds[0]})"
    missing = len(n) - len(pids)
    extra = unknown[:2] + ([f"{missing} node(s) without spec.providerID"] if missing else [])
    return clouds[0], ev + (f"; not counted: {', '.join(extra)}" if extra else "")


def lb_profile(inventory: Inventory, namespace: str | None, name: str | None) -> LbProfile:
    """What the cloud documents about the load balancer of Service namespace/name: the kind of
    load balancer its annotations and loadBalancerClass make, what the provider's docs say it
    does with a node's own connection, the fields it was read from and the doc. UNKNOWN (kind
    "unknown") when the cloud, the Service or its load balancer is not known, with the reason."""
    cloud, cloud_ev = cluster_cloud(inventory)
    svc = _service(inventory, namespace, name)
    if cloud is None:
        return LbProfile(None, "unknown", UNKNOWN, cloud_ev,
                         "no cloud known from the nodes' providerIDs: natlens says nothing of what the load "
                         "balancer is documented to do")
    why_not = _not_the_clouds_lb(svc, cloud)
    if why_not:
        return LbProfile(cloud, "unknown", UNKNOWN, f"{cloud_ev}; {why_not}",
                         f"natlens does not know which {cloud} load balancer this is: nothing documented applies")
    kind, documented, svc_ev, note = _PROFILES[cloud](svc)
    return LbProfile(cloud, kind, documented, f"{cloud_ev}; {svc_ev}", note)


def _not_the_clouds_lb(svc: _Service, cloud: str) -> str | None:
    """Why the Service's load balancer is not one natlens can name from its fields, or None."""
    if not svc.found:
        return (f"no Service {svc.label} in the inventory" if svc.name is not None
                else "the Service has no name (inferred from the node dumps): its annotations are unknown")
    if not svc.from_cluster:
        return f"{svc.label} was inferred from the node dumps: its annotations and loadBalancerClass are unknown"
    if svc.type != "LoadBalancer":
        return f"{svc.where} spec.type {svc.type}: no cloud load balancer"
    known = {"aws": (AWS_LBC_CLASS,), "alibaba": (ALIBABA_NLB_CLASS,)}.get(cloud, ())
    if svc.lb_class and svc.lb_class not in known and not (cloud == "gcp" and svc.lb_class.startswith(GKE_CLASS_PREFIX)):
        return (f"{svc.where} spec.loadBalancerClass {svc.lb_class}: not a class of {cloud}'s own controller, "
                "so another controller made its load balancer")
    return None


def _aws(svc: _Service) -> tuple[str, str, str, str]:
    """AWS: no aws-load-balancer-type (and no class) is the in-tree Classic ELB; "nlb" the in-tree
    NLB (instance targets); "external" or class service.k8s.aws/nlb the AWS Load Balancer
    Controller's NLB (target type default instance); "nlb-ip" its legacy IP-target NLB."""
    lb_type = svc.ann(AWS + "type")
    ev = [f"{svc.where} annotation {AWS}type={lb_type}" if lb_type is not None else f"{svc.where} no {AWS}type"]
    if svc.lb_class == AWS_LBC_CLASS:
        ev.append(f"spec.loadBalancerClass {AWS_LBC_CLASS} (the AWS Load Balancer Controller)")
    elif lb_type is None:
        return ("aws-clb", PROXY, ", ".join(ev) + " (the in-tree controller's default: a Classic Load Balancer)",
                f"AWS ({DOC_AWS_CLB}): a Classic Load Balancer's TCP listener opens its own connection to the "
                "instance, which sees the load balancer's address (the client's only through proxy protocol)")
    elif lb_type not in ("nlb", "external", "nlb-ip"):
        return "unknown", UNKNOWN, ", ".join(ev) + " (a type natlens does not know)", \
            "natlens knows no AWS documentation for this load-balancer type"
    target, target_ev = _aws_target(svc, lb_type)
    ev.append(target_ev)
    if target not in ("instance", "ip"):
        return "unknown", UNKNOWN, ", ".join(ev), f"AWS documents instance and ip targets only ({DOC_AWS_LBC})"
    preserve, preserve_ev = _aws_preserve(svc, target)
    internal, scheme_ev = _aws_internal(svc, lb_type)
    ev += [preserve_ev, scheme_ev]
    kind = f"aws-nlb-{target}"
    if preserve is None:
        return kind, UNKNOWN, ", ".join(ev), f"AWS ({DOC_AWS_NLB_PRESERVE}): preserve_client_ip.enabled is true or false"
    if not preserve:
        return (kind, PROXY, ", ".join(ev),
                f"AWS ({DOC_AWS_NLB_PRESERVE}): without client IP preservation the target sees the NLB's private "
                "address as the source, so a target's own connection is answered back through the NLB")
    if not internal:
        return (kind, UNKNOWN, ", ".join(ev),
                f"AWS ({DOC_AWS_NLB_LOOPBACK}) documents the hairpin failure for internal NLBs; a node reaches an "
                "internet-facing one from a public or NAT address, which the docs say nothing about")
    return (kind, ANY_BACKEND, ", ".join(ev),
            f"AWS ({DOC_AWS_NLB_LOOPBACK}): an internal NLB with client IP preservation does not support hairpinning: "
            "a target's connection through it succeeds only when routed to another target, else it times out")


def _aws_target(svc: _Service, lb_type: str) -> tuple[str, str]:
    """The NLB's target type and where it comes from."""
    if lb_type == "nlb-ip":
        return "ip", "IP targets (type nlb-ip, the AWS Load Balancer Controller's legacy spelling)"
    if lb_type == "nlb" and svc.lb_class != AWS_LBC_CLASS:
        return "instance", "instance targets (the in-tree controller registers the nodes)"
    t = svc.ann(AWS + "nlb-target-type")
    if t is None:
        return "instance", "target type instance (default)"
    return t, f"annotation {AWS}nlb-target-type={t}"


def _aws_preserve(svc: _Service, target: str) -> tuple[bool | None, str]:
    """Whether the target group preserves the client's IP: target-group-attributes'
    preserve_client_ip.enabled, else the default (instance: on; ip: off for TCP, on for UDP)."""
    attrs = _attributes(svc.ann(AWS + "target-group-attributes"))
    v = attrs.get("preserve_client_ip.enabled")
    if v is not None:
        on = {"true": True, "false": False}.get(v.strip().lower())
        return on, f"target-group-attributes preserve_client_ip.enabled={v}" + ("" if on is not None else " (not true or false)")
    if target == "instance":
        return True, "preserve_client_ip not set (instance targets: enabled by default)"
    if "udp" in svc.protos:
        return True, "preserve_client_ip not set (IP targets, UDP: always enabled)"
    return False, "preserve_client_ip not set (IP targets, TCP: disabled by default)"


def _aws_internal(svc: _Service, lb_type: str) -> tuple[bool, str]:
    """Whether the NLB is internal: aws-load-balancer-scheme, the deprecated -internal, else the
    default (the AWS Load Balancer Controller: internal; the in-tree controller: internet-facing)."""
    scheme, internal = svc.ann(AWS + "scheme"), svc.ann(AWS + "internal")
    if scheme is not None:
        return scheme.strip().lower() == "internal", f"scheme {scheme}"
    if internal is not None:
        return internal.strip().lower() not in ("false", ""), f"annotation {AWS}internal={internal}"
    if lb_type == "nlb" and svc.lb_class != AWS_LBC_CLASS:
        return False, "no scheme annotation (the in-tree controller's default: internet-facing)"
    return True, "no scheme annotation (the AWS Load Balancer Controller's default: internal)"


def _attributes(value: str | None) -> dict[str, str]:
    """'k=v,k=v' (a target-group-attributes annotation) as a dict, in order."""
    out: dict[str, str] = {}
    for kv in (value or "").split(","):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _azure(svc: _Service) -> tuple[str, str, str, str]:
    """Azure: one Standard load balancer; internal by azure-load-balancer-internal "true"; floating
    IP on unless azure-disable-load-balancer-floating-ip is "true"."""
    internal = (svc.ann(AZURE_INTERNAL) or "").strip().lower() == "true"
    floating = (svc.ann(AZURE_NO_FLOATING_IP) or "").strip().lower() != "true"
    ev = [f"{svc.where} " + (f"annotation {AZURE_INTERNAL}={svc.ann(AZURE_INTERNAL)}"
                             if svc.ann(AZURE_INTERNAL) is not None else f"no {AZURE_INTERNAL} (public)"),
          ("floating IP enabled (default: the packet reaches the node addressed to the frontend IP)" if floating
           else f"{AZURE_NO_FLOATING_IP}=true (the packet reaches the node addressed to the node's IP)")]
    if not internal:
        return ("azure-lb", UNKNOWN, ", ".join(ev),
                f"Azure ({DOC_AZURE_ILB}) documents the failure of a backend's flow to its own internal load "
                "balancer's frontend; for a public frontend it says nothing natlens can apply")
    return ("azure-lb", ANY_BACKEND, ", ".join(ev),
            f"Azure ({DOC_AZURE_ILB}): an outbound flow from a backend-pool VM to the frontend of its own internal "
            "load balancer fails when it is mapped back to that VM (both legs of the flow do not match)")


def _gcp(svc: _Service) -> tuple[str, str, str, str]:
    """GKE: networking.gke.io/load-balancer-type (or the legacy cloud.google.com/...) "Internal",
    or class networking.gke.io/l4-regional-internal, is the internal passthrough NLB; else the
    external passthrough NLB."""
    key = next((k for k in GKE_TYPE if svc.ann(k) is not None), None)
    by_class = svc.lb_class is not None and svc.lb_class.startswith(GKE_CLASS_PREFIX + "internal")
    internal = by_class or (key is not None and svc.ann(key).strip().lower() == "internal")
    ev = (f"{svc.where} spec.loadBalancerClass {svc.lb_class}" if svc.lb_class
          else f"{svc.where} annotation {key}={svc.ann(key)}" if key else f"{svc.where} no load-balancer-type annotation")
    if internal:
        return ("gcp-ilb", UNKNOWN, ev + " (internal passthrough Network Load Balancer)",
                f"Google Cloud ({DOC_GCP_ILB}): each backend VM gets a local route for the load balancer's IP (GKE "
                "nodes through iptables), so a node's traffic to the VIP stays on the node and never reaches it")
    return ("gcp-netlb", UNKNOWN, ev + " (external passthrough Network Load Balancer, the default)",
            f"Google Cloud ({DOC_GCP_NETLB}): the load balancer is not a proxy and delivers packets with their "
            "source and destination unchanged; the docs say nothing of a backend reaching its own frontend")


def _alibaba(svc: _Service) -> tuple[str, str, str, str]:
    """Alibaba ACK: a CLB (layer 4 for TCP/UDP ports) unless class alibabacloud.com/nlb."""
    if svc.lb_class == ALIBABA_NLB_CLASS:
        return ("alibaba-nlb", UNKNOWN, f"{svc.where} spec.loadBalancerClass {ALIBABA_NLB_CLASS}",
                "natlens knows no Alibaba documentation of an NLB backend reaching its own NLB")
    addr = svc.ann(ALIBABA + "address-type") or svc.ann(ALIBABA_OLD + "address-type")
    backend = svc.ann(ALIBABA_BACKEND_TYPE)
    ev = [f"{svc.where} " + (f"address-type {addr}" if addr else "no address-type annotation (default internet)"),
          f"{ALIBABA_BACKEND_TYPE}={backend}" + (" (the pods' ENIs are the backends)" if backend == "eni" else "")
          if backend else "no backend-type annotation (the CCM's configured default)"]
    return ("alibaba-clb", ANY_BACKEND, ", ".join(ev),
            f"Alibaba Cloud ({DOC_ALIBABA_CLB}): a backend server's connection to the address of its own layer-4 "
            f"CLB fails (a layer-4 listener passes the client's address to the backend: {DOC_ALIBABA_L4})")


def _tencent(svc: _Service) -> tuple[str, str, str, str]:
    """Tencent TKE: a CLB (internal with qcloud-loadbalancer-internal-subnetid); direct-access
    puts the pods behind it instead of the nodes' NodePorts."""
    subnet, direct = svc.ann(TENCENT_INTERNAL), svc.ann(TENCENT_DIRECT)
    ev = [f"{svc.where} " + (f"annotation {TENCENT_INTERNAL}={subnet} (internal)" if subnet
                             else f"no {TENCENT_INTERNAL} (public)"),
          f"{TENCENT_DIRECT}={direct} (the pods are the real servers)" if direct and direct.lower() == "true"
          else "the nodes' NodePorts are the real servers (no direct-access)"]
    return ("tencent-clb", AVOIDS_SOURCE, ", ".join(ev),
            f"Tencent Cloud ({DOC_TENCENT_CLB}): a layer-4 CLB passes the client's address through but never "
            "forwards to a real server whose address is the source; a pod's address is not its node's, so a pod's "
            "un-SNATed connection can still be sent back to its own node")


_PROFILES: dict[str, Callable[[_Service], tuple[str, str, str, str]]] = {
    "aws": _aws, "azure": _azure, "gcp": _gcp, "alibaba": _alibaba, "tencent": _tencent}


def fix(kind: str, inventory: Inventory, namespace: str | None, name: str | None,
        port: int | None) -> Fix | None:
    """One fix of FIX_KINDS for Service namespace/name (port: the Service port the clients call),
    with its exact command and cost; None where it does not exist on the Service's cloud or
    does not apply to the Service (its spec already has it: externalTrafficPolicy Cluster,
    client IP preservation off, IP targets). A fix is returned even where the docs say it
    may not help (the caller decides by the measured behaviour); its text says so. A Service
    without a name gets <namespace>/<name> placeholders. An unknown kind is a ValueError."""
    if kind not in FIX_KINDS:
        raise ValueError(f"fix kind {kind!r} is not one of {', '.join(FIX_KINDS)}")
    profile = lb_profile(inventory, namespace, name)
    svc = _service(inventory, namespace, name)
    return _FIXES[kind](_Ctx(profile, svc, namespace or "<namespace>", name or "<name>", port))


@dataclass(frozen=True)
class _Ctx:
    """What every fix is built from."""

    profile: LbProfile
    svc: _Service
    ns: str
    name: str
    port: int | None

    @property
    def vip(self) -> str:
        return self.svc.lb_ips[0] if self.svc.lb_ips else "the load balancer's address"

    @property
    def svc_port(self) -> str:
        p = self.port if self.port is not None else (self.svc.ports[0] if self.svc.ports else None)
        return str(p) if p is not None else "<port>"

    def caveat(self) -> str:
        """Why the docs say a SNATed connection may still loop, or ''."""
        if self.profile.documented != ANY_BACKEND:
            return ""
        return (f" ({CLOUD_NAMES.get(self.profile.cloud, self.profile.cloud)} documents that a backend's own connection may still be sent back to it: "
                "this helps only if the captures show the load balancer avoids the source's backend)")


def _cluster_policy(c: _Ctx) -> Fix | None:
    """externalTrafficPolicy Cluster (any cloud: it is Kubernetes'); None when the Service has it already."""
    if c.svc.found and c.svc.policy == "Cluster":
        return None
    patch = json.dumps({"spec": {"externalTrafficPolicy": "Cluster"}}, separators=(",", ":"))
    return Fix("cluster-policy",
               "Set externalTrafficPolicy to Cluster: kube-proxy then SNATs pod traffic to the VIP to the node's "
               "address, and a load balancer that never sends a flow to its source's backend sends it to another "
               "node" + c.caveat() + ".",
               f"kubectl -n {c.ns} patch service {c.name} -p '{patch}'",
               "the pods no longer see external clients' source IPs, and traffic may take an extra hop between nodes")


def _snat_on_node(c: _Ctx) -> Fix:
    """Masquerade pod -> VIP on the node: a config change (ip-masq-agent, the CNI), named per cloud."""
    cm = MASQ_CONFIG.get(c.profile.cloud)
    where = (f"kubectl -n kube-system edit configmap {cm}" if cm
             else "kubectl -n kube-system get daemonset,configmap | grep -i masq")
    return Fix("snat-on-node",
               f"Masquerade pod traffic to {c.vip} to the node's address (ip-masq-agent or the CNI's masquerade "
               "setting), so the load balancer sees the node's own address and one that avoids the source's "
               "backend sends it elsewhere" + c.caveat() + ".",
               f"{where}  # a config change, not one command: the agent's nonMasqueradeCIDRs (or the CNI's "
               f"SNAT exclusions) must not cover {c.vip}, so pod traffic to it is masqueraded",
               f"the backends see the node's address instead of pod addresses for traffic to {c.vip}; narrowing "
               "nonMasqueradeCIDRs masquerades every destination taken out of it")


def _no_client_ip_preservation(c: _Ctx) -> Fix | None:
    """preserve_client_ip.enabled=false on an AWS NLB's TCP target group, the other attributes kept."""
    if not c.profile.kind.startswith("aws-nlb") or "udp" in c.svc.protos:
        return None  # AWS NLB TCP target groups only (UDP: preservation cannot be disabled)
    if c.profile.documented == PROXY:
        return None  # already off
    if c.svc.ann(AWS + "type") == "nlb" and c.svc.lb_class != AWS_LBC_CLASS:
        return None  # the in-tree controller reads no target-group attributes: ip-targets recreates it instead
    attrs = _attributes(c.svc.ann(AWS + "target-group-attributes"))
    attrs["preserve_client_ip.enabled"] = "false"  # the annotation is replaced whole: keep the others
    value = ",".join(f"{k}={v}" for k, v in attrs.items())
    return Fix("no-client-ip-preservation",
               "Turn off the NLB target group's client IP preservation: the target then sees the NLB's private "
               "address as the source and answers through the NLB, so a node's own connection no longer loops.",
               f"kubectl -n {c.ns} annotate service {c.name} "
               f"{shlex.quote(AWS + 'target-group-attributes=' + value)} --overwrite",
               "the pods no longer see client IPs (the NLB's address instead; proxy protocol v2 can carry them); "
               "the annotation is the AWS Load Balancer Controller's")


def _ip_targets(c: _Ctx) -> Fix | None:
    """An AWS NLB with IP targets (the AWS Load Balancer Controller); an in-tree NLB must be recreated."""
    if not c.profile.kind.startswith("aws-nlb") or c.profile.kind == "aws-nlb-ip":
        return None  # AWS NLB only; IP targets already
    cost = ("needs the AWS Load Balancer Controller and pods with VPC addresses (Amazon VPC CNI); IP targets (TCP) "
            "do not preserve client IPs by default, so the pods see the NLB's address")
    text = ("Register the pods as IP targets: the NLB then sends to pod addresses and, for TCP, does not preserve "
            "the client's IP, so the target answers through the NLB and a node's own connection no longer loops.")
    if c.svc.ann(AWS + "type") == "nlb" and c.svc.lb_class != AWS_LBC_CLASS:
        edit = (f".metadata.annotations[\"{AWS}type\"]=\"external\" | .metadata.annotations[\"{AWS}nlb-target-type\"]"
                "=\"ip\" | del(.metadata.resourceVersion, .metadata.uid, .metadata.creationTimestamp, .status)")
        cmd = (f"kubectl -n {c.ns} get service {c.name} -o json | jq '{edit}' > {c.name}.json && "
               f"kubectl -n {c.ns} delete service {c.name} && kubectl -n {c.ns} create -f {c.name}.json")
        cost += ("; AWS says not to change aws-load-balancer-type on an existing Service: it is recreated, with a new "
                 "load balancer (new address and hostname)")
        return Fix("ip-targets", text, cmd, cost)
    return Fix("ip-targets", text,
               f"kubectl -n {c.ns} annotate service {c.name} {AWS}nlb-target-type=ip --overwrite", cost)


def _cluster_ip(c: _Ctx) -> Fix:
    """Call the Service by its DNS name (the ClusterIP) from inside the cluster: any cloud."""
    dns = f"{c.name}.{c.ns}.svc.cluster.local:{c.svc_port}"
    cip = f" (ClusterIP {c.svc.cluster_ip}:{c.svc_port})" if c.svc.cluster_ip else ""
    return Fix("cluster-ip",
               f"Call {dns}{cip} from inside the cluster instead of {c.vip}: kube-proxy DNATs it to an endpoint "
               "on the client's node, so the connection never reaches the load balancer.",
               dns,
               "none for in-cluster callers; needs a config change in the client (or a CoreDNS rewrite of the load "
               "balancer's name to the Service's)")


def _node_intercepts_vip(c: _Ctx) -> Fix | None:
    """kube-proxy DNATs pod -> VIP on the node (ipMode VIP or unset); not on AWS, whose ingress is a hostname."""
    if c.profile.cloud == "aws":
        return None  # AWS publishes a hostname: kube-proxy has no address to intercept
    writer = IPMODE_WRITER.get(c.profile.cloud, IPMODE_WRITER[None])
    tke = ("; TKE's kube-proxy in IPVS mode does not bind the VIP to kube-ipvs0, so on TKE this also needs "
           "iptables or nftables mode") if c.profile.cloud == "tencent" else ""
    return Fix("node-intercepts-vip",
               f"Let kube-proxy take pod traffic to {c.vip} on the node (ingress ipMode VIP or unset, which "
               f"{writer} writes{tke}): it is DNATed to an endpoint before it leaves, so it never reaches the load "
               "balancer.",
               f"kubectl -n {c.ns} get service {c.name} -o jsonpath='{{.status.loadBalancer.ingress[*].ipMode}}'  "
               f"# must print VIP or nothing; {writer} sets it",
               "in-cluster callers bypass the load balancer: its features (proxy protocol, TLS termination, access "
               "lists) do not apply to them")


_FIXES: dict[str, Callable[[_Ctx], Fix | None]] = {
    "cluster-policy": _cluster_policy, "snat-on-node": _snat_on_node,
    "no-client-ip-preservation": _no_client_ip_preservation, "ip-targets": _ip_targets,
    "cluster-ip": _cluster_ip, "node-intercepts-vip": _node_intercepts_vip}
