"""Writing the lab's incident bundle (DESIGN.md section 2) and its ground truth.

* ``cluster/``: kubectl-shaped JSON (``kubectl get nodes|pods -A|svc -A -o json``).
* ``incident.yaml``: title, UTC time window, notes, services of interest.
* ``ground-truth/connections.jsonl``: the client's own record of every connection,
  joined with the kernel's conntrack tables of the client's node and of the LB:
  the source the connection had on the wire (SNATed or not), the endpoint the
  node itself DNATed the VIP to (iptables/nftables mode with ipMode VIP), the
  node the LB picked, the source that node saw from the LB (``lb_src``: the wire
  source, or the VIP when the LB proxies), and whether that pick was the client's
  own node (a loopback);
  then, for every failed connection, the mechanism the lab knows broke it
  (:func:`failures`: ``failure`` from :data:`FAILURES`, ``failure_at``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml

from natlens.lab.faults import NO_ENDPOINTS_SELECTOR, REFUSED_PORT, where
from natlens.lab.topology import Service, Topology
from natlens.netfilter.conntrack import parse_conntrack
from natlens.vocab import PROXY


def _kube_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "items": items, "kind": "List",
            "metadata": {"resourceVersion": ""}}


def _meta(name: str, ts: str, namespace: str | None = None, **extra) -> dict:
    meta = {"name": name, "creationTimestamp": ts, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def cluster_json(topo: Topology, created: str) -> dict[str, dict]:
    """nodes.json, pods.json and services.json contents for ``topo``."""
    nodes = [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": _meta(n.name, created, labels={"kubernetes.io/hostname": n.name,
                                                   "kubernetes.io/os": "linux"}),
        "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": n.ip},
                                 {"type": "Hostname", "address": n.name}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    } for n in topo.nodes]
    pods = []
    for p in topo.pods:
        node = topo.node(p.node)
        image = "natlens/lab-server" if p.role == "endpoint" else "natlens/lab-client"
        container = {"name": p.name.split("-")[0], "image": image}
        if p.role == "endpoint":
            container["ports"] = [{"containerPort": 8080, "protocol": "TCP"}]
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(p.name, created, "default", labels=dict(p.labels)),
            "spec": {"nodeName": p.node, "containers": [container]},
            "status": {"phase": "Running", "hostIP": node.ip, "podIP": p.ip,
                       "podIPs": [{"ip": p.ip}]},
        })
    services = []
    # no-endpoints: a selector no pod matches (the web pods keep running, unselected)
    selector = dict(NO_ENDPOINTS_SELECTOR if topo.fault == "no-endpoints" else {"app": "web"})
    for s in topo.services:
        spec = {
            "type": "LoadBalancer", "clusterIP": s.cluster_ip, "clusterIPs": [s.cluster_ip],
            "externalTrafficPolicy": s.policy, "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"], "sessionAffinity": "None", "selector": selector,
            "ports": [{"name": "http", "protocol": "TCP", "port": s.port,
                       "targetPort": s.target_port, "nodePort": s.node_port}],
        }
        if s.health_check_node_port:
            spec["healthCheckNodePort"] = s.health_check_node_port
        services.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": _meta(s.name, created, s.namespace),
            "spec": spec,
            # the run's --ip-mode: VIP (kube-proxy may handle the VIP on the node) or Proxy
            # (kube-proxy ignores it, traffic to it leaves the node)
            "status": {"loadBalancer": {"ingress": [{"ip": s.vip, "ipMode": topo.ip_mode}]}},
        })
    return {"nodes.json": _kube_list(nodes), "pods.json": _kube_list(pods),
            "services.json": _kube_list(services)}


def write_cluster(topo: Topology, out: Path, created: str) -> None:
    (out / "cluster").mkdir(parents=True, exist_ok=True)
    for name, doc in cluster_json(topo, created).items():
        (out / "cluster" / name).write_text(json.dumps(doc, indent=2) + "\n")


def utc_iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_incident_yaml(out: Path, topo: Topology, title: str, start: float, end: float,
                        notes: str) -> None:
    doc = {
        "title": title,
        "window": {"start": utc_iso(start), "end": utc_iso(end)},
        "services": [f"{s.namespace}/{s.name}" for s in topo.services],
        "source": "natlens lab run",
        "notes": notes,
    }
    (out / "incident.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, width=100))


def enrich(records: list[dict], topo: Topology, client_node_ct: str, vpc_ct: str,
           node_cts: dict[str, str] | None = None) -> list[dict]:
    """Add the wire source, SNAT, DNAT on the node, the LB's pick and loopback to each record.

    The client node's conntrack maps pod:port -> the source the packet left with
    (reply tuple's destination); the VPC's conntrack maps that source to the
    nodeIP:NodePort the LB chose (reply tuple's source). When the node's own reply
    tuple comes from somewhere other than the VIP, kube-proxy DNATed the VIP on the
    node (``node_dnat`` = that endpoint): the connection never went to the LB, so
    ``loopback`` is False and ``lb_node`` None. With ``node_cts`` (every node's
    conntrack text by node name) the LB's node tells where it sent the connection:
    ``backend`` (endpoint ip:port), ``backend_snat``, and ``asymmetric`` (not SNATed
    and the endpoint on another node than the LB's pick, so its answer reaches the pod
    without passing the reverse NAT: from the wrong source, like a loopback). Records
    that cannot be joined keep None, never a guess.
    """
    by_orig_node = {e.orig: e for e in parse_conntrack(client_node_ct) if e.proto == "tcp"}
    by_orig_vpc = {e.orig: e for e in parse_conntrack(vpc_ct) if e.proto == "tcp"}
    by_node = {name: {e.orig: e for e in parse_conntrack(text) if e.proto == "tcp"}
               for name, text in (node_cts or {}).items()}
    node_by_ip = {n.ip: n.name for n in topo.nodes}
    out = []
    for r in records:
        r = dict(r, wire_src=None, wire_sport=None, snat=None, node_dnat=None, lb_node=None,
                 lb_src=None, loopback=None, backend=None, backend_snat=None, asymmetric=None,
                 node_ct_state=None, lb_ct_state=None)
        e = by_orig_node.get((r["src"], r["dst"], r["sport"], r["dport"]))
        if e:
            r["wire_src"], r["wire_sport"] = e.reply[1], e.reply[3]
            r["snat"] = (r["wire_src"], r["wire_sport"]) != (r["src"], r["sport"])
            r["node_ct_state"] = e.state
            if (e.reply[0], e.reply[2]) != (r["dst"], r["dport"]):
                r["node_dnat"] = f"{e.reply[0]}:{e.reply[2]}"
                r["loopback"] = False
            else:
                _lb_side(r, topo, by_orig_vpc, by_node, node_by_ip)
        out.append(r)
    return out


def _lb_side(r: dict, topo: Topology, by_orig_vpc: dict, by_node: dict[str, dict],
             node_by_ip: dict[str, str]) -> None:
    """The LB's pick for record ``r`` (from the VPC's conntrack), then what that node did.

    ``lb_src`` is the reply tuple's destination: where the picked node answers, so the
    source it saw (the wire source, or the VIP when the LB SNATs to it: ``proxy``).
    """
    lb = by_orig_vpc.get((r["wire_src"], r["dst"], r["wire_sport"], r["dport"]))
    if not lb:
        return
    r["lb_node"] = node_by_ip.get(lb.reply[0])
    r["lb_src"] = lb.reply[1]
    r["lb_ct_state"] = lb.state
    r["loopback"] = r["lb_node"] == topo.client.node
    # On the picked node the connection is wire_src -> nodeIP:NodePort (the LB's reply source).
    e = by_node.get(r["lb_node"] or "", {}).get((lb.reply[1], lb.reply[0], lb.reply[3],
                                                  lb.reply[2]))
    if not e:
        return
    r["backend"] = f"{e.reply[0]}:{e.reply[2]}"
    r["backend_snat"] = (e.reply[1], e.reply[3]) != (e.orig[0], e.orig[2])
    backend_node = next((p.node for p in topo.pods if p.ip == e.reply[0]), None)
    r["asymmetric"] = (not r["loopback"] and not r["backend_snat"]
                       and backend_node not in (None, r["lb_node"]))


# failure: why a connection failed, as the lab knows it (None for a connected one)
FAILURES = ("loopback", "wrong-source-reply", "dropped-by-rule", "unreachable", "refused", "no-reply",
            "reply-lost", "unknown")


def failures(records: list[dict], topo: Topology, vpc_ct: str) -> list[dict]:
    """Add ``failure`` and ``failure_at`` to each record :func:`enrich` made.

    ``failure`` is one of :data:`FAILURES` for a failed connection, None for a connected
    one; ``failure_at`` says in a few words where the lab broke it (None when unknown).
    Derived from the client's own record (outcome, error), the kernels' conntrack
    tables as :func:`enrich` joined them, the VPC's conntrack text ``vpc_ct`` and the
    fault the lab applied (``topo.fault``), never from the captures, so the analysis of
    the captures can be checked against it. The loopback and the wrong-source reply come
    first: they fail whatever the fault (a loopback through a proxying LB does not fail
    by itself, so its failure is the fault's).
    """
    by_orig_vpc = {e.orig: e for e in parse_conntrack(vpc_ct) if e.proto == "tcp"}
    out = []
    for r in records:
        failure, at = (None, None) if r["outcome"] != "failed" else _failure(r, topo, by_orig_vpc)
        out.append(dict(r, failure=failure, failure_at=at))
    return out


def _failure(r: dict, topo: Topology, by_orig_vpc: dict) -> tuple[str, str | None]:
    """(failure, failure_at) of one failed, enriched record."""
    client = topo.client.node
    svc = next((s for s in topo.services if s.name == r["service"]), None)
    if r.get("loopback") and topo.lb != PROXY:
        return "loopback", _loopback_at(r, topo, svc)
    if r.get("asymmetric"):
        return "wrong-source-reply", (f"{r['lb_node']}: DNAT to {r['backend']} without SNAT, "
                                      "answered from there")
    refused, timeout = r.get("error") == "ECONNREFUSED", r.get("error") == "timeout"
    left = not r.get("node_dnat") and r.get("lb_node") is None  # the LB never forwarded it
    if topo.fault == "no-endpoints" and (refused or timeout) and svc:
        if timeout and left and not topo.lb_ip_on_node and not topo.lb_pool(svc):
            return "no-reply", f"vpc: LB has no healthy backend for {svc.vip}:{svc.port} (drop)"
        # A time-out here is the same reject whose ICMP error the node's kernel rate-limited
        # (icmp_ratelimit: a burst of 6 per destination, then 1/s).
        return "dropped-by-rule", _reject_at(r, topo, svc) + (
            "; ICMP error rate-limited" if timeout else "")
    if topo.fault == "refused" and refused:
        return "refused", _refused_at(r, topo)
    if topo.fault == "blackhole" and timeout and svc and left and r.get("node_ct_state") is None:
        return "no-reply", f"{client}: blackhole route {svc.vip}/32"
    if topo.fault == "unreachable" and left and (r.get("error") == "EHOSTUNREACH" or timeout):
        # the router's ICMP error, or past its rate limit nothing: no answer reached the client
        route = where(topo)
        return ("unreachable", route) if not timeout else ("no-reply", f"{route}; ICMP error rate-limited")
    if topo.fault == "reply-drop" and timeout and _vpc_state(r, by_orig_vpc) == "SYN_RECV":
        return "reply-lost", f"vpc: nft drop of SYN-ACKs to {client}"
    return "unknown", None


def _loopback_at(r: dict, topo: Topology, svc: Service | None) -> str:
    """Where a loopback died: on the client node's eth0 when the LB sent it the node's own
    address (``any-backend`` and a SNATed source: the kernel's source validation drops the
    SYN there, a martian), else at the LB's pick (a pod source, looped back to its node)."""
    node = topo.node(topo.client.node)
    if r.get("lb_src") == node.ip:
        dst = f"{node.ip}:{svc.node_port}" if svc else node.ip
        return (f"{node.name} eth0: SYN from its own address {node.ip} to {dst} dropped as a "
                "martian source (the LB sent it back to the client's own node)")
    return f"vpc: LB sent it back to {node.name}, the client's own node"


def _reject_at(r: dict, topo: Topology, svc: Service) -> str:
    """Which node refused a connection to a Service without endpoints, and how.

    The node the LB picked when it forwarded the connection, else the client's node
    (kube-proxy handled the VIP there). IPVS mode has no reject rule: the NodePort's
    virtual server has no real server and IPVS answers ICMP port unreachable.
    """
    node = r.get("lb_node") or topo.client.node
    if topo.proxy_mode == "ipvs":
        addr = (f"{topo.node(node).ip}:{svc.node_port}" if r.get("lb_node")
                else f"{svc.cluster_ip}:{svc.port}")
        return f"{node}: IPVS {addr} has no real server (ICMP port unreachable)"
    return f"{node}: kube-proxy reject (no endpoints)"


def _refused_at(r: dict, topo: Topology) -> str:
    """The endpoint that answered RST, when a conntrack entry still names it, else all of
    them: conntrack deletes an entry whose only reply is a RST at once, so a refused
    connection usually has none left on any node."""
    endpoint = r.get("node_dnat") or r.get("backend")
    if not endpoint:
        pods = ", ".join(p.name for p in topo.backends)
        return f"endpoints {pods} port {REFUSED_PORT}: nothing listening"
    ip = endpoint.rpartition(":")[0]
    pod = next((p.name for p in topo.pods if p.ip == ip), "endpoint")
    return f"{pod} {endpoint}: nothing listening"


def _vpc_state(r: dict, by_orig_vpc: dict) -> str | None:
    """The TCP state of the VPC router's conntrack entry for the connection as it left the
    client's node (to the VIP, or to the endpoint the node DNATed it to); None if none."""
    if r.get("wire_src") is None:
        return None
    dst, dport = r["dst"], r["dport"]
    if r.get("node_dnat"):
        ip, _, port = r["node_dnat"].rpartition(":")
        dst, dport = ip, int(port)
    e = by_orig_vpc.get((r["wire_src"], dst, r["wire_sport"], dport))
    return e.state if e else None


def tally(records: list[dict], topo: Topology) -> list[dict]:
    """Per service: connections, failed, SNATed, DNATed on the node, loopbacks (and loopbacks
    that failed), asymmetric returns, the LB's picks per node, and the failed connections
    per mechanism (``failures``, from :func:`failures`)."""
    out = []
    for s in topo.services:
        rs = [r for r in records if r["service"] == s.name]
        out.append({
            "service": f"{s.namespace}/{s.name}", "key": s.key, "policy": s.policy,
            "connections": len(rs),
            "failed": sum(r["outcome"] == "failed" for r in rs),
            "snat": sum(bool(r.get("snat")) for r in rs),
            "node_dnat": sum(bool(r.get("node_dnat")) for r in rs),
            "loopback": sum(bool(r.get("loopback")) for r in rs),
            "loopback_failed": sum(bool(r.get("loopback")) and r["outcome"] == "failed"
                                   for r in rs),
            "asymmetric": sum(bool(r.get("asymmetric")) for r in rs),
            "by_lb_node": {n.name: sum(r.get("lb_node") == n.name for r in rs)
                           for n in topo.nodes},
            "failures": {f: k for f in FAILURES
                         if (k := sum(r.get("failure") == f for r in rs))},
        })
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
