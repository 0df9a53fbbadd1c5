"""The SNAT table: per (Service, source node), how many connections were SNATed, and what the
node's netfilter rules predict.

Why: the customer's question is "does traffic from this node to this VIP leave SNATed,
and why?". The captures answer the first half (journeys' ``snat`` decision: "unknown"
ones are left out of the ratio, which is None when none is known); the netfilter model
(natlens.netfilter) answers the second for a packet from the client to the VIP, and
``predicted_by_rules`` says whether the two agree (None: the rules could not be
evaluated).

Rows are per (Service, source node, ``host_network``: the journeys' yes / no / unknown),
since the node's own connections take another path through its rules than its pods'.
The counts agree: connections = snat + no_snat + unknown_snat.
"""

from __future__ import annotations

import pandas as pd

from natlens.bundle import Bundle
from natlens.errors import NatlensError
from natlens.vocab import NO, UNKNOWN, YES, is_failed

SNAT_COLUMNS = ["service", "source_node", "host_network", "policy", "connections", "snat", "no_snat",
                "ratio", "predicted_by_rules", "rule_trace", "failed", "loopback", "loopback_failed",
                "unknown_snat"]

Prediction = tuple[bool | None, list[str]]  # (SNAT predicted, the rule trace or why not)


def snat_table(journeys: pd.DataFrame, bundle: Bundle | None) -> tuple[pd.DataFrame, list[str]]:
    """One row per (service, source node, host network); and notes on rules that could not be
    read or walked."""
    rows, notes = [], []
    journeys = journeys.assign(host_network=journeys["host_network"].where(
        journeys["host_network"].isin([YES, NO]), UNKNOWN))
    keys = ["service", "client_node", "host_network"]
    for (svc, node, host), g in journeys.groupby(keys, sort=True, dropna=False):
        node = UNKNOWN if pd.isna(node) else node
        n_snat, n_no = int((g["snat"] == YES).sum()), int((g["snat"] == NO).sum())
        ratio = n_snat / (n_snat + n_no) if n_snat + n_no else None
        (pred, trace), why = _row_prediction(g, bundle, node, _asked_as_node(g, host))
        notes += why
        if host == NO and g["client_is_node"].fillna(False).astype(bool).any():
            trace = [*trace, "the pods behind the node's IP are not known (the node forwarded their "
                     "packets: their TTL): the rules were asked about a forwarded packet from that IP"]
        agree = None
        if pred is not None and ratio is not None:
            agree = (ratio == 1.0) if pred else (ratio == 0.0)
        lb = g[g["loopback"] == YES]
        rows.append({"service": svc, "source_node": node, "host_network": host,
                     "policy": g["policy"].mode().iloc[0] if not g["policy"].empty else UNKNOWN,
                     "connections": len(g), "snat": n_snat, "no_snat": n_no, "ratio": ratio,
                     "predicted_by_rules": agree, "rule_trace": trace,
                     "failed": int(is_failed(g["outcome"]).sum()),
                     "loopback": len(lb), "loopback_failed": int(is_failed(lb["outcome"]).sum()),
                     "unknown_snat": len(g) - n_snat - n_no})
    return pd.DataFrame(rows, columns=SNAT_COLUMNS), notes


def _asked_as_node(g: pd.DataFrame, host: str) -> bool:
    """Whether the rules are asked about the node's own packet (nat/OUTPUT) rather than a pod's
    forwarded one: host-network clients; for an undecided row, clients whose source is a node IP
    (the rules' answer then holds for host-network clients only, and the ratio is unknown)."""
    if host == UNKNOWN:
        return bool(g["client_is_node"].fillna(False).astype(bool).all())
    return host == YES


def _row_prediction(g: pd.DataFrame, bundle: Bundle | None, node: str, is_node: bool
                    ) -> tuple[Prediction, list[str]]:
    """The rules' prediction for every distinct client of the row (the rules may treat two pods
    differently, and then the row has no single prediction); and notes on rules not used."""
    if bundle is None:
        return (None, ["no dumps in the bundle"]), []
    found, notes = {}, []
    for c in g.drop_duplicates(["client_h", "vip", "vport", "proto"]).itertuples():
        found[c.client_h], why = rules_prediction(bundle, node, c.client_h, c.vip, int(c.vport), c.proto,
                                                  is_node)
        notes += why
    pred, trace = next(iter(found.values()))
    if len({p for p, _ in found.values()}) > 1:
        return (None, ["undecided: the rules treat this row's clients differently"] + [
            f"{h}: {'SNAT' if p else 'no SNAT' if p is not None else 'undecided'}: " + " | ".join(t)
            for h, (p, t) in found.items()]), notes
    return (pred, trace), notes


def rules_prediction(bundle: Bundle, node: str, client_h: str, vip: str, port: int, proto: str,
                     client_is_node: bool) -> tuple[Prediction, list[str]]:
    """(SNAT predicted, trace) by the node's netfilter model for client -> VIP, or (None, why)
    when it cannot say; and a note when bad or unreadable dumps were the reason. A bug in
    natlens is raised."""
    try:
        nd = bundle.node(node)
    except KeyError:
        return (None, [f"no dumps for node {node}"]), []
    if nd.iptables is None and nd.nft is None:
        return (None, [f"{node}: no iptables-save or nft dump"]), []
    try:
        bridge = next((a.ifname for a in nd.addresses() if a.ifname.startswith(("cni", "cbr", "docker"))),
                      None)
        v = nd.rules().explain(client_h, vip, port, proto=proto, local=client_is_node,
                               in_iface=None if client_is_node else bridge)
    except (NatlensError, OSError) as exc:
        note = (f"{exc}: {node}'s rules not used for {client_h} -> {vip}:{port}"
                if isinstance(exc, NatlensError) else
                f"{node}: the rules could not be read for {client_h} -> {vip}:{port} ({exc})")
        return (None, [f"netfilter model failed: {exc}"]), [note]
    if v.undecided:
        return (None, list(v.trace) + [f"undecided: {u}" for u in v.undecided]), []
    if v.snat is None:  # probabilistic branches disagree: no single prediction
        return (None, list(v.trace) + ["undecided: the rule paths disagree on SNAT"]), []
    return (v.snat, list(v.trace)), []


def decisive_rules(trace: list[str], snatted: bool | None) -> list[str]:
    """The rule-trace lines that decide a SNAT row, for a reader who has one minute: why the packet
    is (or is not) marked for masquerade, then the rule that masquerades it or lets it go as it is.

    SNATed: the matched jump to KUBE-MARK-MASQ / mark-for-masquerade, then the matched MASQUERADE
    or SNAT. Not SNATed: the matched RETURN in kube-proxy's nat chains before routing (IPVS mode's
    Local policy returns before marking); else the external-traffic chain's rule that sent the
    packet on unmarked (iptables' KUBE-EXT- "pod traffic" jump to KUBE-SVC- or its KUBE-SVL- jump,
    nftables' external- chain "short-circuit pod traffic" goto); else, when nothing DNATed it, the
    lookup that found no Service for the VIP (nftables' ``@service-ips`` with no element); then
    postrouting's "not marked" return. [] when `snatted` is unknown or the trace holds none of
    these (a trace of why the rules were not walked).
    """
    if snatted is None:
        return []
    lines = [t.strip() for t in trace]
    routed = next((i for i, t in enumerate(lines) if t.startswith("routing:")), len(lines))
    before, after = lines[:routed], lines[routed:]
    if snatted:
        why = _first(before, lambda t: _took(t) and ("KUBE-MARK-MASQ" in t.split(":", 1)[-1]
                                                      or "mark-for-masquerade" in t))
        how = _first(after, lambda t: _took(t) and any(w in t for w in ("MASQUERADE", "masquerade", "SNAT",
                                                                          "snat to")))
    else:
        dnatted = any(_took(t) and ("DNAT" in t or "dnat to" in t) for t in before)
        why = (_first(before, lambda t: _took(t) and t.startswith("nat/KUBE-") and t.endswith("-> RETURN (matched)"))
               or _first(before, _external_unmarked)
               or ("" if dnatted else _first(before, lambda t: "@service-ips" in t and "(no element)" in t)))
        how = _first(after, lambda t: _took(t) and "mark" in t and ("RETURN" in t or "return" in t))
    return [x for x in (why, how) if x]


def _external_unmarked(line: str) -> bool:
    """A taken rule of kube-proxy's external-traffic chain that sends the packet on without the
    masquerade mark: iptables ``nat/KUBE-EXT-...: ... -> KUBE-SVC-|KUBE-SVL-... (matched)``,
    nftables ``external-... rule ... goto service-|local-... (verdict goto ...)``."""
    if not _took(line):
        return False
    if line.startswith("nat/KUBE-EXT-"):
        target = line.rsplit("->", 1)[-1]
        return "KUBE-SVC-" in target or "KUBE-SVL-" in target
    words = line.split(" ", 3)  # family, table, chain, the rest
    return (len(words) == 4 and words[2].startswith("external-")
            and ("(verdict goto service-" in line or "(verdict goto local-" in line))


def _took(line: str) -> bool:
    """The walk took this rule (iptables' "(matched)", nftables' "(verdict ...)")."""
    return line.endswith("(matched)") or "(verdict " in line


def _first(lines: list[str], test) -> str:
    return next((t for t in lines if test(t)), "")
