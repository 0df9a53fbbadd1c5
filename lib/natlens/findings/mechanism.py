"""What the client node's rules do with a Service's traffic: the facts the verdict's words rest on.

Why: the loopback's mechanism and its fixes depend on kube-proxy's mode and the ingress's
ipMode. IPVS mode as on TKE keeps pod -> VIP traffic un-DNATed and SNATs it by the policy;
iptables and nftables modes DNAT it on the node with ipMode VIP (it never reaches the load
balancer) and have no rule for the LB IP with ipMode Proxy or a hostname-only ingress (it
leaves, un-SNATed whatever the policy); and a SYN that comes back to the node's NodePort goes
to a local endpoint in IPVS mode, but to any endpoint when its source is a pod in nftables
and iptables mode ("short-circuit pod traffic"). So the words come from what the rules on
that node do, not from what IPVS mode would do: each fact below is a named decision (value
and evidence) from the netfilter model's walk of one packet on that node, from
cluster/services.json, or from the captures.

One ``Mechanism`` per (Service, client node) of the SNAT table:

  proxy_mode     ipvs | iptables | nftables | none | unknown: kube-proxy's rules in the dumps
  ingress        VIP | Proxy | unset | hostname | unknown: the ingress's ipMode (unset: kube-proxy
                 treats it as VIP); hostname: a hostname-only ingress, matched to the address the
                 captures show (journeys.ingress); one not matched is named in the evidence
  vip            dnat | policy | none | unknown: pod -> VIP on the node: DNATed there to endpoints;
                 not DNATed, kube-proxy's rules hold the VIP (they SNAT it or not by the policy);
                 no kube-proxy rule for it (it leaves, and nothing of kube-proxy's SNATs it)
  returning_syn  local | any | none | unknown: where the node's rules DNAT a SYN from the pod
                 that comes back to its NodePort (a loopback): local endpoints only, any endpoint
                 (also on other nodes), none
  looped         {endpoint: connections}: where the captures show the node DNATed looped-back SYNs
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from natlens.bundle import Bundle
from natlens.errors import NatlensError
from natlens.inventory import BRIDGE, UPLINK, Inventory
from natlens.netfilter import NodeRules, Verdict, kube_services
from natlens.netfilter.kubeproxy_nft import is_nftables_mode
from natlens.vocab import UNKNOWN, YES


@dataclass(frozen=True)
class Fact:
    """One decision about a node's rules: a value from the module's vocabulary, and why."""

    value: str
    evidence: str
    rule: str = ""  # the rule (a trace line) that decides it, when one does


@dataclass
class Mechanism:
    """The facts for one (Service, client node); see the module docstring."""

    service: str
    node: str
    proxy_mode: Fact
    ingress: Fact
    vip: Fact
    returning_syn: Fact
    looped: dict[str, int] = field(default_factory=dict)
    looped_nodes: dict[str, str] = field(default_factory=dict)  # endpoint -> its node (None: unknown)
    files: list[str] = field(default_factory=list)  # the dumps the facts were read from
    # the looped-back SYN the rules were asked about (src, dst, dport, proto, in_iface), None: not asked
    returning_packet: tuple | None = None

    def to_dict(self) -> dict:
        """As summary.json's ``rules[]`` entry (plain JSON values)."""
        out: dict = {"service": self.service, "source_node": self.node, "files": list(self.files)}
        for name in ("proxy_mode", "ingress", "vip", "returning_syn"):
            f = getattr(self, name)
            out[name], out[f"{name}_evidence"] = f.value, f.evidence
        out["returning_syn_rule"] = self.returning_syn.rule or None
        out["looped_back_to"] = [{"endpoint": e, "node": self.looped_nodes.get(e), "connections": n}
                                 for e, n in sorted(self.looped.items())]
        return out


def mechanisms(journeys: pd.DataFrame, records: pd.DataFrame | None, bundle: Bundle | None,
               inventory: Inventory) -> list[Mechanism]:
    """One Mechanism per (Service, client node) of the Service journeys, in the SNAT table's order."""
    out = []
    keys = journeys[["service", "client_node", "vip", "vport", "proto"]].dropna(subset=["client_node"])
    for (svc, node), g in keys.groupby(["service", "client_node"], sort=True):
        mine = journeys[(journeys["service"] == svc) & (journeys["client_node"] == node)]
        out.append(_one(svc, str(node), g.iloc[0], mine, records, bundle, inventory))
    return out


def _one(svc: str, node: str, key, mine: pd.DataFrame, records: pd.DataFrame | None,
         bundle: Bundle | None, inventory: Inventory) -> Mechanism:
    """The facts of one (Service, client node); the NodePort the rules are asked about is the
    inventory's, else the one the captures show loopbacks coming back to."""
    vip, port, proto = str(key["vip"]), int(key["vport"]), str(key["proto"])
    ingress = ingress_mode(inventory, vip, port, proto)
    looped, nodes = looped_endpoints(mine, records, inventory)
    rules, files, why = node_rules(bundle, node)
    if rules is None:
        none = Fact(UNKNOWN, why)
        return Mechanism(svc, node, none, ingress, none, none, looped, nodes, files)
    pods = mine.loc[~mine["client_is_node"].fillna(False).astype(bool), "client_h"].dropna()
    pod = str(pods.iloc[0]) if len(pods) else None
    node_ip = inventory.nodes.set_index("name")["internal_ip"].get(node)
    node_port = _node_port(inventory, vip, port, proto) or _looped_node_port(mine, records, node_ip)
    uplink = _iface(bundle, node, UPLINK)
    back = (pod, node_ip, node_port, proto, uplink) if pod and node_ip and node_port else None
    return Mechanism(svc, node, proxy_mode(rules, files), ingress,
                     vip_on_node(rules, pod, vip, port, proto, _iface(bundle, node, BRIDGE)),
                     returning_syn(rules, inventory, node, pod, node_ip, node_port, proto, uplink),
                     looped, nodes, files, back)


def node_rules(bundle: Bundle | None, node: str) -> tuple[NodeRules | None, list[str], str]:
    """The node's netfilter model and its dump files, or None and why not."""
    if bundle is None:
        return None, [], "no bundle"
    try:
        nd = bundle.node(node)
    except KeyError:
        return None, [], f"no dumps for node {node} in the bundle"
    files = [bundle.display_path(nd, p) for k, p in nd.dumps().items()
             if k in ("iptables", "ip6tables", "nft", "ipset", "ipvsadm")]
    if nd.iptables is None and nd.nft is None:
        return None, files, f"{node}: no iptables-save or nft dump"
    try:
        return nd.rules(), files, ""
    except NatlensError as exc:
        return None, files, f"{node}'s rules could not be read: {exc}"


def _iface(bundle: Bundle | None, node: str, pattern) -> str | None:
    """The node's first interface whose name matches (its bridge, its uplink), from ip-addr."""
    try:
        return next((a.ifname for a in bundle.node(node).addresses() if pattern.match(a.ifname)), None)
    except (KeyError, AttributeError, NatlensError):
        return None


def _node_port(inventory: Inventory, vip: str, port: int, proto: str) -> int | None:
    """The Service's NodePort (what the load balancer DNATs the VIP to), when the inventory knows it."""
    s = inventory.services
    m = s[(s["lb_ip"] == vip) & (s["port"] == port) & (s["proto"] == proto) & s["node_port"].notna()]
    return int(m["node_port"].iloc[0]) if len(m) else None


def _looped_node_port(journeys: pd.DataFrame, records: pd.DataFrame | None, node_ip: str | None) -> int | None:
    """The port loopbacks came back to on the node's own IP (the Service's NodePort, as the load
    balancer DNATed it), when the inventory does not know it: the commonest in the captures."""
    loops = journeys.loc[journeys["loopback"] == YES, "journey"]
    if records is None or node_ip is None or loops.empty:
        return None
    back = records[records["journey"].isin(loops) & (records["resp_h"] == node_ip) & records["syn_ts"].notna()]
    ports = back.drop_duplicates(["journey", "resp_p"])["resp_p"].value_counts()
    return int(ports.index[0]) if len(ports) else None


def proxy_mode(rules: NodeRules, files: list[str]) -> Fact:
    """Which of kube-proxy's modes wrote the node's rules, from what the dumps hold: the kube-proxy
    nft table's Service dispatch maps (nftables), its IPVS ipsets or KUBE-LOAD-BALANCER chain
    (ipvs), its KUBE-SERVICES chain (iptables); none of these: none."""
    def where(*names: str) -> str:
        hits = [f for f in files if any(n in f.rsplit("/", 1)[-1] for n in names)]
        return ", ".join(hits or files) or "the node's dumps"

    if is_nftables_mode(rules.nft):
        return Fact("nftables", f"{where('nft')}: kube-proxy's nft table with its Service dispatch maps")
    if {"KUBE-LOAD-BALANCER", "KUBE-CLUSTER-IP"} & set(rules.sets) or \
            rules.ruleset.chain("nat", "KUBE-LOAD-BALANCER") is not None:
        return Fact("ipvs", f"{where('iptables', 'ipset', 'ipvs')}: kube-proxy's IPVS-mode ipsets and nat "
                    "chains (KUBE-LOAD-BALANCER)")
    if rules.ruleset.chain("nat", "KUBE-SERVICES") is not None:
        return Fact("iptables", f"{where('iptables')}: kube-proxy's iptables-mode nat chains (KUBE-SERVICES, "
                    "KUBE-SVC-*)")
    return Fact("none", f"{where()}: no kube-proxy rules (no KUBE-SERVICES chain, no kube-proxy nft table)")


def ingress_mode(inventory: Inventory, vip: str, port: int, proto: str) -> Fact:
    """The ipMode of the ingress with this IP, from cluster/services.json: VIP, Proxy, unset
    (Kubernetes then means VIP) or unknown (no such ingress in the inventory, e.g. no
    cluster/); a hostname-only ingress of a LoadBalancer Service is named, since natlens
    cannot tell which addresses its hostname resolves to."""
    s = inventory.services
    rows = s[(s["lb_ip"] == vip) & (s["port"] == port) & (s["proto"] == proto)]
    hosts = s[s["lb_ip"].isna() & s["lb_hostname"].notna()] if "lb_hostname" in s else s.iloc[0:0]
    named = "; ".join(f"{r.namespace}/{r.name} has a hostname-only ingress ({r.lb_hostname}): kube-proxy writes "
                      "no rule for it" for r in hosts.drop_duplicates(["namespace", "name"]).itertuples())
    if len(rows) and rows["source"].iloc[0] == "captures" and isinstance(rows["lb_hostname"].iloc[0], str):
        r = rows.iloc[0]
        return Fact("hostname", f"cluster/services.json: {r['namespace']}/{r['name']} has a hostname-only ingress "
                    f"({r['lb_hostname']}: no IP, so no ipMode and no kube-proxy rule for it); the captures show "
                    f"its load balancer at {vip} (see what was inferred)")
    if rows.empty or "ip_mode" not in rows or rows["source"].iloc[0] != "cluster/services.json":
        return Fact(UNKNOWN, "no cluster/services.json ingress with this IP" + (f" ({named})" if named else ""))
    r = rows.iloc[0]
    who = f"cluster/services.json: {r['namespace']}/{r['name']} status.loadBalancer.ingress {vip}"
    mode = r["ip_mode"]
    if isinstance(mode, str) and mode:
        return Fact(mode, f"{who} ipMode {mode}")
    return Fact("unset", f"{who} without ipMode (Kubernetes then treats it as VIP)")


def vip_on_node(rules: NodeRules, pod: str | None, vip: str, port: int, proto: str,
                bridge: str | None) -> Fact:
    """What the node's rules do with pod -> VIP (the model walks one SYN from the pod, in via
    its bridge): dnat (to endpoints on the node: it never reaches the load balancer), policy
    (not DNATed; kube-proxy's rules hold the VIP and SNAT it or not by the policy), none (no
    kube-proxy rule for the VIP: it leaves, and nothing of kube-proxy's SNATs it)."""
    if pod is None:
        return Fact(UNKNOWN, "no pod client: the rules were not asked")
    v, walked = _walk(rules, pod, vip, port, proto, bridge, f"on {rules.name or 'the node'}")
    if not isinstance(v, Verdict):
        return v
    if v.dnat_to:
        return Fact("dnat", f"{walked} ({_rule_lines(v.trace, ('dnat to', 'DNAT', 'short-circuit'))})",
                    _vip_rule(v.trace, vip))
    held = [sp for sp in kube_services(rules) if (sp.vip, int(sp.port), sp.proto) == (vip, port, proto)
            and sp.kind != "NodePort"]
    if held:
        return Fact("policy", f"{walked}; kube-proxy's rules hold the VIP ({'; '.join(held[0].evidence[:2])})")
    return Fact("none", f"{walked}; no kube-proxy rule for {vip}:{port}/{proto} on the node")


def returning_syn(rules: NodeRules, inventory: Inventory, node: str, pod: str | None, node_ip: str | None,
                  node_port: int | None, proto: str, uplink: str | None) -> Fact:
    """Where the node's rules DNAT a SYN from the pod that the load balancer sent back to the
    node's NodePort (the model walks it in via the uplink): local (only to endpoints on this
    node), any (also to endpoints on other nodes: nftables and iptables mode short-circuit a
    pod source to every endpoint), none (not DNATed), unknown."""
    if pod is None or node_ip is None or node_port is None:
        return Fact(UNKNOWN, "the pod, the node's IP or the Service's NodePort is not known")
    v, walked = _walk(rules, pod, node_ip, node_port, proto, uplink, f"in via {uplink or 'the uplink'}")
    if not isinstance(v, Verdict):
        return v
    if not v.dnat_to:
        return Fact("none", walked)
    away = [e for e in v.dnat_to if inventory.node_of(e.rsplit(":", 1)[0]) != node]
    lines = _rule_lines(v.trace, ("short-circuit", "dnat to", "DNAT", "ipvs:"))
    return Fact("any" if away else "local", f"{walked} ({lines})", _pod_rule(v.trace))


def _walk(rules: NodeRules, src: str, dst: str, port: int, proto: str, iface: str | None,
          how: str) -> tuple[Verdict | Fact, str]:
    """The model's verdict for one SYN and its one-line description, or the unknown Fact
    saying why the walk gave no answer."""
    try:
        v = rules.explain(src, dst, port, proto=proto, in_iface=iface)
    except NatlensError as exc:
        return Fact(UNKNOWN, f"the netfilter model could not walk {src} -> {dst}:{port}: {exc}"), ""
    walked = f"{src} -> {dst}:{port}/{proto} {how}: {v.verdict}"
    if v.undecided:
        return Fact(UNKNOWN, f"{walked}; undecided: {v.undecided[0]}"), walked
    return v, walked


def _vip_rule(trace: list[str], vip: str) -> str:
    """The trace line where the node's rules take the VIP to a Service's chains: nftables mode's
    ``service-ips`` map, iptables mode's ``KUBE-SERVICES -d VIP``; "" when there is none."""
    for t in trace:
        t = t.strip()
        if "no match" not in t and "no element" not in t and ("@service-ips" in t or f"-d {vip}/" in t):
            return t
    return ""


def _pod_rule(trace: list[str]) -> str:
    """The trace line that sends a pod source on to every endpoint: nftables mode's
    "short-circuit pod traffic" rule, iptables mode's ``KUBE-EXT-`` rule matching the cluster
    CIDR (``-s``); "" when the walk has none (IPVS mode, Cluster policy)."""
    for t in trace:
        t = t.strip()
        if "no match" in t:
            continue
        if "short-circuit pod traffic" in t or ("KUBE-EXT-" in t.split(":", 1)[0] and " -s " in f" {t}"):
            return t
    return ""


def _rule_lines(trace: list[str], words: tuple[str, ...], most: int = 3) -> str:
    """The trace lines that decide a DNAT (the first few with one of `words`), joined."""
    hits = [t.strip() for t in trace if any(w in t for w in words) and "no match" not in t
            and "no element" not in t]
    return " | ".join(dict.fromkeys(hits[:most])) or "see the rule trace"


def looped_endpoints(journeys: pd.DataFrame, records: pd.DataFrame | None,
                     inventory: Inventory) -> tuple[dict[str, int], dict[str, str]]:
    """Where the captures show the client's node DNATed its looped-back SYNs: endpoint -> how
    many connections had a SYN DNATed to it (a retransmission may go to another endpoint than
    the first SYN: it counts for both), and endpoint -> its node."""
    loops = journeys[journeys["loopback"] == YES]
    if records is None or loops.empty:
        return {}, {}
    r = records[records["journey"].isin(loops["journey"])].merge(
        loops[["journey", "client_node", "client_h", "vip"]], on="journey")
    nodes_ip = {ip for a in inventory.nodes["addresses"] for ip in (a or ())}
    hit = r[(r["node"] == r["client_node"]) & r["syn_ts"].notna() & (r["resp_h"] != r["vip"])
            & ~r["resp_h"].isin(nodes_ip)]  # from the pod, or from the node when it masqueraded them
    eps = hit.drop_duplicates(["journey", "resp_h", "resp_p"])
    count = Counter(f"{h}:{int(p)}" for h, p in zip(eps["resp_h"], eps["resp_p"], strict=True))
    return dict(count), {e: inventory.node_of(e.rsplit(":", 1)[0]) for e in count}
