"""The verdict's sentences about mechanism and remedy, chosen by what the client node's rules do.

Why: "the node DNATs the SYN to a local endpoint" and "switch to externalTrafficPolicy:
Cluster" are true of kube-proxy's IPVS mode as on TKE, not of every node: nftables and
iptables mode send a looped-back SYN from a pod to any endpoint, and with ipMode Proxy (or
a hostname-only ingress) kube-proxy has no rule for the LB IP, so no policy makes it SNAT
pod traffic. Each sentence here is picked by a fact of findings.mechanism (the netfilter
model's walk on that node), and names that fact's evidence where the reader needs it; with
no fact (no dumps) the words stay those that need no rule to be true.
"""

from __future__ import annotations

from natlens.findings.mechanism import Mechanism

MODE_NAME = {"ipvs": "IPVS", "iptables": "iptables", "nftables": "nftables"}
REMEDIATION = [
    "Switch the Service to externalTrafficPolicy: Cluster: pod-to-VIP traffic is then SNATed to "
    "the node IP, and a load balancer that never sends a connection back to the node whose address "
    "is its source (Tencent CLB) cannot loop it back (external clients' source IPs are then no "
    "longer preserved).",
    "Or SNAT pod-to-VIP traffic on the nodes (a MASQUERADE rule for pod CIDR -> VIP:port, or the "
    "CNI/kube-proxy option that does it), keeping Local for external clients.",
    "Or change the load balancer: an AWS NLB: turn off client IP preservation or use IP targets (it "
    "then proxies, and a connection it sends back to its node works); Azure, Alibaba and Tencent TKE "
    "document no such option: call the ClusterIP, or let kube-proxy take the VIP on the nodes "
    "(status.loadBalancer.ingress ipMode VIP).",
    "From inside the cluster, call the Service's ClusterIP (or its DNS name) instead of the "
    "load balancer VIP.",
]
RETURN_TO_SOME = ("The SYN comes back to that node's NodePort, which DNATs it to one of the Service's endpoints; the "
                  "SYN-ACK reaches the client from nodeIP:NodePort instead of the VIP; the client resets it, "
                  "retransmits its SYN to the same backend, and the connect times out.")
RETURN_TO_LOCAL = ("That node DNATs the SYN to a local endpoint and answers from nodeIP:NodePort instead of the "
                   "VIP; the client resets that SYN-ACK, retransmits its SYN to the same backend, and the "
                   "connect times out.")


def mode_words(m: Mechanism | None) -> str:
    """ "kube-proxy (nftables mode)", or "kube-proxy" when the mode is not known."""
    mode = MODE_NAME.get(m.proxy_mode.value) if m is not None else None
    return f"kube-proxy ({mode} mode)" if mode else "kube-proxy"


def why_it_leaves(m: Mechanism | None) -> str:
    """Why pod-to-VIP traffic left the node, as far as the node's rules show it."""
    if m is None or m.vip.value not in ("none", "dnat"):
        return "pod-to-VIP traffic leaves the node"
    if m.vip.value == "dnat":
        return (f"pod-to-VIP traffic left the node, although {m.node}'s rules in the dump DNAT it to an endpoint "
                "on the node (the rule trace): the rules in force when the loopbacks happened were not "
                "these")
    return (f"on {m.node} {mode_words(m)} has no rule for its LB IP{_ingress_reason(m)}: pod-to-VIP "
            "traffic leaves the node whatever the policy, with no kube-proxy rule to SNAT it")


def _ingress_reason(m: Mechanism) -> str:
    """' (the ingress has ipMode Proxy: cluster/services.json)', or '' when the ipMode does not explain it."""
    if m.ingress.value == "Proxy":
        return " (its ingress has ipMode Proxy in cluster/services.json)"
    if m.ingress.value == "hostname":
        host = m.ingress.evidence.split("hostname-only ingress (", 1)[-1].split(":", 1)[0]
        return f" (its ingress is the hostname {host} only: no IP, so no kube-proxy rule)"
    if "hostname-only ingress" in m.ingress.evidence:
        return f" ({m.ingress.evidence.split('(', 1)[-1].rstrip(')')})"
    return ""


def loopback_mechanism(m: Mechanism | None, only_loopbacks_failed: bool) -> str:
    """From "so the load balancer sees the pod's own IP" to the time-out: where the node sends
    the returning SYN (a local endpoint, or any endpoint), with what the captures saw."""
    head = "so the load balancer sees the pod's own IP and may pick the client's own node. "
    tail = (" Only connections hashed to the client's own node fail, hence the sporadic failures."
            if only_loopbacks_failed else " Connections hashed to the client's own node fail this way.")
    where = returning_to(m)
    if where == "local":
        return head + RETURN_TO_LOCAL + tail
    if where == "unknown":
        return head + RETURN_TO_SOME + tail
    rule = f" ({_rule_name(m.returning_syn.rule)})" if m is not None and m.returning_syn.rule else ""
    return (head + f"The SYN comes back to that node's NodePort from the pod's address, and {m.node}'s rules "
            f"send a SYN from a pod address to any of the Service's endpoints{rule}, on this node or on another"
            f"{_seen(m)}. Either way the SYN-ACK reaches the client from nodeIP:NodePort instead of the VIP; the "
            "client resets it and retransmits its SYN to the same backend node, and the connect times out." + tail)


def returning_to(m: Mechanism | None) -> str:
    """Where the client's node sends a looped-back SYN: its rules' walk (local, any) when the
    model answered; else what the captures show (an endpoint on another node: any; only local
    ones: local); else unknown."""
    if m is not None and m.returning_syn.value in ("local", "any"):
        return m.returning_syn.value
    if m is None:
        return "unknown"
    nodes = {m.looped_nodes.get(e) for e in m.looped}
    if nodes - {None, m.node}:
        return "any"
    return "local" if nodes == {m.node} else "unknown"


def _rule_name(line: str) -> str:
    """A trace line as the reader needs it: 'kube-proxy's "short-circuit pod traffic" rule in
    chain external-...' or 'nat/KUBE-EXT-... #1: -s 10.0.0.0/16 -> KUBE-SVC-...'."""
    if "short-circuit pod traffic" in line:
        chain = line.split(" rule ", 1)[0].split(" ")[-2] if " rule " in line else ""
        return f'kube-proxy\'s "short-circuit pod traffic" rule{f" in chain {chain}" if chain else ""}'
    return rule_text(line)


def rule_text(line: str) -> str:
    """A trace line without the walk's bookkeeping: '... vmap @service-ips -> external-X' for
    '... vmap @service-ips (verdict goto external-X)', '... -> KUBE-EXT-X' for '... (matched)'."""
    line = line.strip()
    if line.endswith(")") and " (verdict goto " in line:
        head, target = line.rsplit(" (verdict goto ", 1)
        return f"{head} -> {target[:-1]}"
    return line.split(" (matched")[0].split(" (verdict")[0]


def _seen(m: Mechanism) -> str:
    """': in these captures to 198.18.16.10:8080 (node-1) in 9 and to ... in 3 connections', or ''."""
    if not m.looped:
        return ""
    parts = [f"to {e} ({m.looped_nodes.get(e) or 'node unknown'}) in {n}" for e, n in sorted(m.looped.items())]
    return (": in these captures " + " and ".join(parts) + f" connection{'s' if sum(m.looped.values()) > 1 else ''}"
            + (" (a retransmitted SYN may go to another endpoint than the first)" if len(m.looped) > 1 else ""))


def not_a_fix(m: Mechanism | None, policy: str) -> str:
    """' Switching to ... Cluster is no fix here: ...' when the policy cannot help (no kube-proxy
    rule for the LB IP)."""
    if m is None or m.vip.value != "none":
        return ""
    what = ("The Cluster policy does not help here" if policy == "Cluster" else
            "Switching to externalTrafficPolicy: Cluster is no fix here")
    return (f" {what}: with no kube-proxy rule for the LB IP, nothing SNATs pod traffic to it under Cluster "
            "either, and it can loop back the same way.")


def masquerade_rules(m: Mechanism | None) -> str:
    """The node's kube-proxy masquerade rules by the names its mode gives them."""
    if m is not None and m.proxy_mode.value == "nftables":
        return "kube-proxy's nft mark-for-masquerade and masquerading chains"
    return "kube-proxy's KUBE-MARK-MASQ / MASQUERADE rules"


def remediation(m: Mechanism | None, policy: str) -> list[str]:
    """What to change, for what the node's rules do with pod traffic to the VIP."""
    return [text for _, text in remediation_steps(m, policy)]


def remediation_steps(m: Mechanism | None, policy: str) -> list[tuple[str | None, str]]:
    """The remediation as (fix kind of natlens.cloud.FIX_KINDS, text) steps, so that each can
    carry the cloud's exact command for the Service (None: a step with no single command)."""
    if m is not None and m.vip.value == "none":
        return [
            ("node-intercepts-vip", "Let pod traffic to the VIP stay on the node: with an ingress IP of ipMode VIP "
             "(status.loadBalancer.ingress[].ipMode, which the load-balancer controller sets) "
             f"{mode_words(m)} DNATs pod traffic to the VIP on the node, so it never reaches the load balancer "
             "and cannot loop back."),
            ("snat-on-node", "Or SNAT pod traffic to the LB IP to the node's IP: the CNI's masquerade or "
             "ip-masq-agent (take the LB IP out of its non-masquerade destinations). Tencent CLB then never picks "
             "the client's node; an AWS NLB with client IP preservation may still pick it (turn preservation off "
             "or use IP targets)."),
            ("cluster-ip", "Or, from inside the cluster, call the Service's ClusterIP (or its DNS name) instead of "
             "the load balancer's address."),
            ("no-client-ip-preservation", "Or change the load balancer: an AWS NLB: turn off client IP preservation "
             "or use IP targets (it then proxies, and a connection it sends back to its node works)."),
        ]
    steps: list[tuple[str | None, str]] = list(zip(
        ("cluster-policy", "snat-on-node", "no-client-ip-preservation", "cluster-ip"), REMEDIATION, strict=True))
    if policy == "Cluster":
        steps[0] = (None, "Make the Cluster policy take effect: pod-to-VIP traffic must be SNATed to the node IP by "
                    f"{masquerade_rules(m)} (see rule_trace for where the packet skipped them).")
    return steps


def node_dnat_sentence(m: Mechanism | None, svc: str, node: str, dnated: int, total: int) -> str:
    """' Service x from node-1: 10 of 10 connections DNATed on node-1 itself ...' (no loopback possible)."""
    why = ""
    if m is not None and m.vip.value == "dnat":
        mode = MODE_NAME.get(m.proxy_mode.value)
        ingress = f"ingress ipMode {m.ingress.value}" if m.ingress.value in ("VIP", "Proxy") else ""
        about = "; ".join(x for x in (f"kube-proxy in {mode} mode" if mode else "", ingress) if x)
        rule = f": {rule_text(m.vip.rule)}" if m.vip.rule else ""
        why = (f": {node}'s rules{f' ({about})' if about else ''} DNAT pod traffic to the VIP to the Service's "
               f"endpoints on the node (see the rule trace{rule})")
    return (f" {svc} from {node}: {dnated} of {total} connections were DNATed to an endpoint on {node} itself "
            f"and never reached the load balancer{why}, so no loopback is possible for pod traffic.")
