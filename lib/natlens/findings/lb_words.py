"""The verdict's sentences about the load balancer's behaviour, and the fixes that work for it.

Why: a fix is only right for the behaviour the captures show. SNAT to the node IP and
externalTrafficPolicy Cluster stop a loop only where the load balancer never sends a flow back
to the node whose address is its source (Tencent's CLB); where it sends a node's own, SNATed
connection back (an AWS NLB with client IP preservation) they are no fix, and the captures
refute them; a proxying load balancer needs none. Each sentence is picked by findings.lb's
measured behaviour; natlens.cloud adds what the provider documents (labelled as such) and the
exact command for this Service.
"""

from __future__ import annotations

from natlens import cloud
from natlens.findings.lb import LbFinding
from natlens.inventory import Inventory
from natlens.vocab import (
    ANSWERED_FROM_NODE,
    ANSWERED_VIA_LB,
    ANY_BACKEND,
    AVOIDS_SOURCE,
    DROPPED_ON_ARRIVAL,
    PROXY,
    UNKNOWN,
)

# The fixes that work where the load balancer sends a node's own connection back, best first
# (natlens.cloud.FIX_KINDS), and those such a load balancer refutes: they leave the loop in place
ANY_BACKEND_FIXES = ("no-client-ip-preservation", "ip-targets", "node-intercepts-vip", "cluster-ip")
REFUTED = ("cluster-policy", "snat-on-node")
CAVEAT = (" An AWS NLB with client IP preservation may still send it back to its node, and these captures do not "
          "show which kind of load balancer this one is.")
BEHAVIOUR_NAME = {
    AVOIDS_SOURCE: "never sends a connection back to the node whose address is its source",
    ANY_BACKEND: "picks any backend, also the node a connection comes from",
    PROXY: "proxies: it replaces the source with its own address",
    UNKNOWN: "not shown by these captures",
}
LOOP_NAME = {  # how a loopback ended (natlens.vocab.LOOP_MODES), in words
    ANSWERED_FROM_NODE: "answered from nodeIP:NodePort, which the client resets",
    DROPPED_ON_ARRIVAL: "dropped on arrival (its source is the node's own address)",
    ANSWERED_VIA_LB: "answered through the load balancer (it works)",
    UNKNOWN: "how it ended is not shown",
}


def lb_of(lbs: list[LbFinding] | None, service: str) -> LbFinding | None:
    """The finding of one Service, None when there is none."""
    return next((f for f in lbs or [] if f.service == service), None)


def _split(name: str | None) -> tuple[str | None, str | None]:
    """'default/web' -> ('default', 'web'); a bare or missing name -> (None, name)."""
    if not name:
        return None, None
    ns, _, n = name.rpartition("/")
    return (ns or None), n


def profile(inventory: Inventory, name: str | None) -> cloud.LbProfile:
    """What the provider documents for the Service's load balancer (natlens.cloud)."""
    return cloud.lb_profile(inventory, *_split(name))


def with_documented(lbs: list[LbFinding], inventory: Inventory, names: dict[str, str]) -> list[LbFinding]:
    """The findings, each with what its provider documents (natlens.cloud), for the summary."""
    for f in lbs:
        p = profile(inventory, names.get(f.service))
        f.documented = {"cloud": p.cloud, "kind": p.kind, "behaviour": p.documented, "evidence": p.evidence,
                        "note": p.note}
    return lbs


def behaviour_sentence(f: LbFinding | None, svc: str) -> str:
    """' The load balancer of Service x picks any backend ...: <evidence>.' (measured), '' when unknown."""
    if f is None or f.behaviour == UNKNOWN:
        return ""
    return f" The load balancer of the {svc} {BEHAVIOUR_NAME[f.behaviour]}: {f.evidence}."


def documented_sentence(p: cloud.LbProfile, f: LbFinding | None) -> str:
    """What the provider documents, said as documentation, and whether the captures agree ('' when
    no cloud is known: there is nothing documented to say)."""
    if p.cloud is None or (p.documented == UNKNOWN and not p.note):
        return ""
    said = f" By the provider's documentation ({p.kind}): {p.note.rstrip('.')}."
    measured = f.behaviour if f is not None else UNKNOWN
    if p.documented == PROXY and f is not None and f.rewritten[1] and not f.rewritten[0]:
        return said + (f" The captures show otherwise: none of the {f.rewritten[1]} connections seen arriving at a "
                       "node had its source rewritten, as a proxy would; check that the setting took effect.")
    if measured == UNKNOWN or p.documented == UNKNOWN:
        return said + (" These captures do not show which behaviour this one has." if measured == UNKNOWN else "")
    if measured == p.documented:
        return said + " The captures agree."
    return said + f" The captures show otherwise ({measured}); natlens goes by the captures."


def node_source_loop(f: LbFinding, svc: str, pol_text: str, node: str, why_snat: str,
                     back: tuple[int, int]) -> str:
    """The loop of a node's own connection: SNATed, sent back to its node (``back``: loopbacks of
    the row, of its connections), dropped on arrival."""
    ex = f.examples.get(DROPPED_ON_ARRIVAL) or f.examples.get("node_source_loop", "")
    return (f"The {svc} {pol_text}; its connections left {node} SNATed to the node's IP ({why_snat}), and the "
            f"load balancer still sent {back[0]} of {back[1]} of them back to {node}"
            f"{f' ({ex})' if ex else ''}: it {BEHAVIOUR_NAME[ANY_BACKEND]}. The SYN then arrives at {node}'s "
            f"NodePort from {node}'s own address, and the kernel drops a packet whose source is one of its own "
            "addresses (a martian source): nothing answers it, the client retransmits its SYN to the same node "
            "and the connect times out. SNAT to the node's IP does not prevent this loop, and "
            "externalTrafficPolicy Cluster, which SNATs, does not fix it.")


def proxied(f: LbFinding, svc: str) -> str:
    """Loopbacks through a proxying load balancer: answered through it, harmless."""
    return (f"The load balancer of the {svc} proxies: {f.evidence}. A connection it sends back to the client's "
            "own node therefore comes from the load balancer's address and is answered through it, so the "
            "loopbacks are harmless.")


def elsewhere(seen: LbFinding, svc: str) -> str:
    """What another Service's load balancer of the incident was seen to do, where this one's is
    not shown: the same kind of load balancer would do the same."""
    if seen.behaviour == ANY_BACKEND:
        how = (" and they were dropped on arrival (their source is the node's own address)"
               if seen.failure_mode == DROPPED_ON_ARRIVAL else "")
        return (f" The load balancer of the {svc} sent connections SNATed to the node's IP back to their own node "
                f"too ({seen.node_source[0]} of {seen.node_source[1]}{how}): if this Service's load balancer is "
                "of the same kind, SNAT and externalTrafficPolicy Cluster will not stop its loops either.")
    return f" The load balancer of the {svc}, in the same incident, {BEHAVIOUR_NAME[seen.behaviour]}: {seen.evidence}."


def any_backend_fixes(p: cloud.LbProfile, inventory: Inventory, name: str | None, port: int | None,
                      vip_on_node: str = UNKNOWN) -> list[str]:
    """The fixes that work for a load balancer that sends a node's own connection back to it, each
    with its command and its cost; never SNAT or Cluster. ``vip_on_node`` is findings.mechanism's
    ``vip`` fact: "policy" (the node's kube-proxy holds the VIP without DNATing it, whatever the
    ipMode) leaves out the ipMode fix, which the rules show is not enough."""
    out = []
    for kind in ANY_BACKEND_FIXES:
        if kind == "node-intercepts-vip" and vip_on_node == "policy":
            continue
        fx = cloud.fix(kind, inventory, *_split(name), port)
        if fx is not None:
            out.append(fx.text + _how(fx))
    if p.cloud is None:  # no cloud known: the load balancers' own settings, named
        out.append("Or change the load balancer so that it proxies: on an AWS NLB turn off client IP preservation "
                   "(target group attribute preserve_client_ip.enabled=false) or use IP targets; Azure, Alibaba "
                   "and Tencent document no such option.")
    return out


def _how(fx: cloud.Fix | None) -> str:
    """' How: <command> (cost: <cost>).' for a fix, '' for none (the report puts the command in a box)."""
    return f" How: {fx.command} (cost: {fx.cost})." if fx is not None else ""


def with_commands(steps: list[tuple[str | None, str]], f: LbFinding | None, p: cloud.LbProfile,
                  inventory: Inventory, name: str | None, port: int | None,
                  elsewhere: LbFinding | None = None) -> list[str]:
    """Each step with the cloud's exact command for this Service where it has one; for a load
    balancer whose behaviour is unknown, the steps it may refute say for which ones they work
    (and which Service of the incident had a load balancer that refuted them). A cloud whose own
    fix for the load balancer does not exist loses that generic step; one that has it, says it."""
    b = f.behaviour if f is not None else UNKNOWN
    out = []
    for kind, text in steps:
        fx = cloud.fix(kind, inventory, *_split(name), port) if kind else None
        if kind == "no-client-ip-preservation" and p.cloud is not None:
            if fx is None:
                continue  # the generic "change the load balancer" step: nothing documented on this cloud
            text = fx.text
        if b == UNKNOWN and kind in REFUTED and p.documented != AVOIDS_SOURCE:
            if elsewhere is not None and elsewhere.behaviour == ANY_BACKEND:
                text += (f" The load balancer of {elsewhere.service} in this incident sent SNATed connections back "
                         "to their node: if this one is of the same kind, this will not help.")
            elif "NLB" not in text:
                text += CAVEAT
        out.append(text + _how(fx))
    return out
