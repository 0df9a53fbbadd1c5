"""Faults: each way a connection can fail, put into the lab on purpose, one per run.

Why: the loopback is one failure among several that look alike from the client (a
time-out or a refused connect). With ``natlens lab run --fault NAME`` the lab breaks
the path in one known place, so the analysis can be checked against a ground truth for
every mechanism, not only the loopback:

* ``no-endpoints``: every Service selects a label no pod has (the endpoint pods keep
  running). kube-proxy writes its no-endpoint rules (iptables: filter "has no
  endpoints" REJECT; nftables: the no-endpoint-* maps; IPVS: virtual servers without
  real servers, which answer ICMP port unreachable), and under Local the LB's health
  check finds no node, so it drops.
* ``refused``: every Service's targetPort is :data:`REFUSED_PORT`, where nothing
  listens; the endpoint's kernel answers the SYN with a RST.
* ``blackhole``: node-1 (the client's node) has a blackhole route for every LB VIP, so
  the pod's SYN to the VIP is dropped by routing and never leaves its NIC. Only
  meaningful when pod -> VIP traffic leaves the node (``Topology.lb_ip_on_node`` false).
* ``reply-drop``: the VPC router drops the TCP SYN-ACKs it forwards to node-1 (nft
  table ``natlens_fault``), as a security group dropping return traffic.
* ``unreachable``: the VPC router's route to node-2 is an ``unreachable`` route, so what
  the LB sends to node-2 gets ICMP host unreachable from the router (EHOSTUNREACH at the
  client); past a burst the router's kernel rate-limits those errors and the SYN is
  dropped silently. Only meaningful when pod -> VIP traffic leaves the node.

The topology (:mod:`natlens.lab.topology`) carries the fault into kube-proxy's rules
and the LB's pool; :func:`apply` adds what is not kube-proxy's: routes and the VPC's
drop rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natlens.errors import NatlensError
from natlens.vocab import PROXY

if TYPE_CHECKING:
    from natlens.lab.netns import Lab
    from natlens.lab.topology import Topology

REFUSED_PORT = 8081  # the refused fault's targetPort: the servers listen on 8080 only
NO_ENDPOINTS_SELECTOR = {"app": "web-v2"}  # what the Services select under no-endpoints
FAULT_TABLE = "natlens_fault"
UNREACHABLE_NODE = "node-2"  # the unreachable fault's node: the VPC cannot route to it

FAULTS = {
    "no-endpoints": "every Service selects app=web-v2, which no pod has, so no Service has an "
                    "endpoint (the web pods keep running): kube-proxy writes its no-endpoint "
                    "rules on every node and, under Local, the LB's health check finds no "
                    "healthy node and the LB drops",
    "refused": f"every Service's targetPort is {REFUSED_PORT}, where nothing listens (the "
               "servers listen on 8080), so each endpoint's kernel answers the SYN with a RST",
    "blackhole": "node-1, the client's node, has a blackhole route for every LB VIP (/32), so "
                 "the pod's SYN to the VIP is dropped by routing on node-1 and never leaves "
                 "its NIC",
    "unreachable": f"the VPC router's route to {UNREACHABLE_NODE} is an unreachable route, so what "
                   f"the LB sends to {UNREACHABLE_NODE} gets ICMP host unreachable from the router "
                   "(rate-limited: past a burst the SYN is dropped silently)",
    "reply-drop": "the VPC router drops every TCP SYN-ACK it forwards to node-1 (nft table "
                  f"{FAULT_TABLE}, forward hook), as a security group dropping return traffic: "
                  "what the LB sends to another node loses its SYN-ACK on the way back",
}


def check_name(fault: str | None) -> str | None:
    """``fault`` itself, or a one-line NatlensError naming the faults there are."""
    if fault is None or fault in FAULTS:
        return fault
    *rest, last = FAULTS
    raise NatlensError(f"unknown fault {fault!r}: use {', '.join(rest)} or {last}")


def check(topo: Topology) -> None:
    """Refuse a fault that cannot act in this proxy mode / ipMode (a one-line NatlensError).

    A blackhole route for the VIP only matters when the pod's packet is routed towards
    the VIP; when kube-proxy DNATs it on the node (iptables or nftables mode, ipMode
    VIP) the route is never looked up.
    """
    check_name(topo.fault)
    if topo.fault in ("blackhole", "unreachable") and topo.lb_ip_on_node:
        raise NatlensError(
            f"--fault {topo.fault} needs pod -> VIP traffic to leave the node, but with "
            f"--proxy-mode {topo.proxy_mode} --ip-mode {topo.ip_mode} kube-proxy DNATs the VIP "
            "on the node before routing: use --proxy-mode ipvs or --ip-mode Proxy")


def reply_drop_nft(topo: Topology) -> str:
    """nft script for the VPC namespace: drop SYN-ACKs forwarded towards the client's node."""
    node = topo.client.node
    return (f"table ip {FAULT_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f'    oifname "{node}" tcp flags & (syn | ack) == syn | ack drop '
            f'comment "fault reply-drop: SYN-ACKs to {node}"\n  }}\n}}\n')


def apply(topo: Topology, lab: Lab) -> None:
    """Put the topology's fault into the namespaces: blackhole routes or the VPC's drop.

    no-endpoints and refused need nothing here: they are in kube-proxy's rules and the
    LB's pool already (the topology's backends and targetPort).
    """
    if topo.fault == "blackhole":
        ns = topo.node(topo.client.node).ns
        for s in topo.services:
            lab.sh("ip", "-n", ns, "route", "add", "blackhole", f"{s.vip}/32")
    elif topo.fault == "reply-drop":
        lab.sh("nft", "-f", "-", ns=topo.vpc_ns, stdin=reply_drop_nft(topo))
    elif topo.fault == "unreachable":
        lab.sh("ip", "-n", topo.vpc_ns, "route", "replace", "unreachable", f"{topo.node(UNREACHABLE_NODE).ip}/32")


def where(topo: Topology) -> str:
    """Where the lab breaks the path, in a few words (lab.json's fault entry)."""
    node = topo.client.node
    return {
        "no-endpoints": "kube-proxy's rules on every node, and the LB's pool",
        "refused": f"the endpoints' port {REFUSED_PORT}",
        "blackhole": f"{node}: " + ", ".join(f"blackhole route {s.vip}/32" for s in topo.services),
        "reply-drop": f"vpc: nft drop of SYN-ACKs to {node}",
        "unreachable": f"vpc: unreachable route {topo.node(UNREACHABLE_NODE).ip}/32",
    }.get(topo.fault or "", "")


def describe(topo: Topology) -> dict | None:
    """lab.json's ``fault`` entry: the name, a sentence saying what it does, and where."""
    if not topo.fault:
        return None
    return {"name": topo.fault, "description": FAULTS[topo.fault], "where": where(topo)}


def expected(topo: Topology) -> dict[str, str] | None:
    """What each policy is expected to do under the run's fault (lab.json), or None."""
    if not topo.fault:
        return None
    return {policy: _expected_one(topo, policy) for policy in ("Local", "Cluster")}


def _expected_one(topo: Topology, policy: str) -> str:
    """One policy's expected outcome under the fault, in the lab's proxy mode and ipMode."""
    loops = topo.loopback_fails(policy)
    loop_note = ("; what the LB sends back to the client's node loops back and times out, "
                 "as without the fault") if loops else ""
    if topo.fault == "no-endpoints":
        if topo.lb_ip_on_node:
            return ("the client's node rejects pod -> VIP itself (kube-proxy's no-endpoint "
                    "reject): ICMP port unreachable from its cni0 address, ECONNREFUSED; past "
                    "a burst of 6 the node's kernel rate-limits those ICMP errors and the rest "
                    "time out")
        if policy == "Local":
            return ("no node has a local endpoint, so none passes the LB's health check: the "
                    "LB drops every connection and all time out")
        how = ("its IPVS virtual server has no real server" if topo.proxy_mode == "ipvs"
               else "kube-proxy's no-endpoint reject")
        return (f"the LB forwards to another node's NodePort, where {how}: ICMP port "
                "unreachable, which the LB's reverse NAT makes come from the VIP, "
                "ECONNREFUSED (a time-out once that node rate-limits its ICMP errors)"
                f"{loop_note}")
    if topo.fault == "refused":
        return (f"each endpoint answers the SYN with a RST (nothing listens on {REFUSED_PORT}): "
                f"ECONNREFUSED{loop_note}")
    if topo.fault == "blackhole":
        return (f"{topo.client.node} drops the SYN to the VIP in routing (blackhole route): "
                "nothing leaves its NIC and every connection times out")
    if topo.fault == "unreachable":
        return (f"what the LB sends to {UNREACHABLE_NODE} gets ICMP host unreachable from the VPC "
                "router (EHOSTUNREACH), or, past its ICMP rate limit, no answer (a time-out)"
                f"{loop_note}")
    if topo.lb_ip_on_node:
        return ("the client's node DNATs the VIP itself: what goes to web-1 (same node) "
                "connects, what goes to web-2 loses its SYN-ACK in the VPC and times out")
    if topo.lb == PROXY:
        return ("the LB SNATs every connection to the VIP, so every SYN-ACK comes back through "
                "the VPC, is un-NATed there towards node-1 and dropped: every connection times "
                "out, the looped ones too")
    return ("what the LB sends to another node loses its SYN-ACK in the VPC and times out"
            f"{loop_note}")
