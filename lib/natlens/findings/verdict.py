"""The verdict: headline, root cause and remediation in plain words, with the exact counts.

Why: this is the paragraph the customer reads first; every number in it comes from the
journeys and the SNAT table, and it says what could not be checked.
"""

from __future__ import annotations

import pandas as pd

from natlens.findings import failure_words, lb_words, wording
from natlens.findings.lb import LbFinding
from natlens.findings.mechanism import Mechanism
from natlens.findings.quality import blind_spots, unknown_outcomes
from natlens.inventory import Inventory
from natlens.vocab import (
    ANSWERED_VIA_LB,
    ANY_BACKEND,
    AVOIDS_SOURCE,
    DROPPED_ON_ARRIVAL,
    LOOPBACK,
    NO,
    PROXY,
    UNKNOWN,
    YES,
    is_failed,
)


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 connection', '2 connections'."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def service_names(inventory: Inventory) -> dict[str, str]:
    """Service key "VIP:port/proto" -> "namespace/name" for the services kubectl JSON names."""
    s = inventory.services
    if s.empty:
        return {}
    s = s[s["lb_ip"].notna() & s["name"].notna()]
    return {f"{r.lb_ip}:{int(r.port)}/{r.proto}": f"{r.namespace}/{r.name}" if r.namespace else str(r.name)
            for r in s.itertuples()}


def _svc_name(key: str, names: dict[str, str]) -> str:
    """'Service default/web (198.19.0.10:80/tcp)' when the inventory names it, else the VIP key."""
    return f"Service {names[key]} ({key})" if names.get(key) else f"Service {key}"


def _snat_sentences(snat: pd.DataFrame, names: dict[str, str], lead: str = "",
                    dnated: set[tuple[str, str]] = frozenset(), lbs: list[LbFinding] | None = None) -> str:
    """' Service a (VIP) from node-1 (policy Cluster): 20 of 20 connections SNATed ...' per row;
    rows whose connections the client's node DNATed itself (``dnated``: (service, node)) never
    reached the load balancer, and say so instead of what the load balancer does."""
    out = ""
    for r in snat.itertuples():
        if r.ratio is None or pd.isna(r.ratio):
            continue
        who = {YES: ", the node's own connections", UNKNOWN: ", the node's or its pods' (not told apart)"}.get(
            getattr(r, "host_network", NO), "")
        why = (" on the node, on their way to an endpoint (they never reached the load balancer)."
               if (r.service, r.source_node) in dnated else _all_snated(lb_words.lb_of(lbs, r.service))
               if r.ratio == 1.0 else ".")
        out += (f"{lead} {_svc_name(r.service, names)} from {r.source_node} (policy {r.policy}{who}): "
                f"{r.snat} of {r.connections - r.unknown_snat} connections SNATed" + why)
    return out


def _all_snated(f: LbFinding | None) -> str:
    """What every connection SNATed to the node IP means, by what the load balancer was seen to do."""
    b = f.behaviour if f is not None else UNKNOWN
    if b == AVOIDS_SOURCE:
        return " to the node IP, and the load balancer never sent one back to the node it came from."
    if b == ANY_BACKEND:
        return " to the node IP, yet the load balancer sends a node's own connections back to it too."
    if b == PROXY:
        return " to the node IP; the load balancer proxies them (it replaces their source with its own)."
    return "; whether the load balancer would ever send such a connection back to its node is not shown."


def _mechanism_of(mechs: list[Mechanism], service: str, node: str) -> Mechanism | None:
    """The facts of one (Service, client node), None when there are none."""
    return next((m for m in mechs if m.service == service and m.node == node), None)


def _dnated(journeys: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    """(service, client node) -> (connections the client's node DNATed itself, connections),
    for the rows where every connection whose node DNAT is known was DNATed on the node."""
    if "node_dnat" not in journeys:
        return {}
    out = {}
    for (svc, node), g in journeys.groupby(["service", "client_node"]):
        yes, known = int((g["node_dnat"] == YES).sum()), int((g["node_dnat"] != UNKNOWN).sum())
        if yes and yes == known:
            out[(svc, node)] = (yes, len(g))
    return out


def make_verdict(journeys: pd.DataFrame, snat: pd.DataFrame, names: dict[str, str] | None = None,
                 quality: list[dict] | None = None, problem: dict | None = None,
                 uncaptured: list[str] | None = None, mechs: list[Mechanism] | None = None,
                 lbs: list[LbFinding] | None = None, inventory: Inventory | None = None) -> dict:
    """Headline, root cause and remediation for the Service journeys, and first of all what
    the evidence cannot show (``evidence``: None when nothing limits the answer).

    ``names`` maps a service key ("VIP:port/proto") to "namespace/name" where known;
    ``quality`` is findings.quality's entry per capture; ``problem`` the dominant slow or
    lossy path (findings.paths.dominant_problem), named beside the loopback finding;
    ``uncaptured`` the nodes no capture covers; ``mechs`` what the client nodes' rules do with
    the Services' traffic (findings.mechanism), which picks the words of the mechanism and the
    remedies; ``lbs`` how each Service's load balancer picks a backend (findings.lb), which decides
    the loop's mechanism and which fixes work; ``inventory`` gives each fix's command.
    """
    names, mechs, lbs = names or {}, mechs or [], lbs or []
    if (journeys["loopback"] == YES).any():
        v = _loopback_verdict(journeys, snat, names, mechs, lbs, inventory)
        if problem:
            v["root_cause"] += f" Besides the loopbacks: {problem['text']}."
    else:
        v = _no_loopback_verdict(journeys, snat, names, mechs, lbs)
        if problem and failure_words.tally(journeys):  # the failures lead; the slow path is beside them
            v["root_cause"] += f" Besides the failures: {problem['text']}."
        elif problem:
            v = _with_problem(v, journeys, problem)
        blind = sorted(set(uncaptured or []) & set(journeys["client_node"].dropna()))
        if blind:
            v["headline"] += (f" in the captures; {', '.join(blind)}, the clients' node, has no capture, so "
                              "loopbacks to it cannot be seen")
    about = v.pop("_service", None)
    return {"evidence": evidence_statement(journeys, quality or [], uncaptured or []), **v, "problem": problem,
            **_lb_keys(lbs, about)}


def _lb_keys(lbs: list[LbFinding], service: str | None) -> dict:
    """The verdict's ``lb_behaviour`` and ``lb_failure_mode``: those of the Service the verdict is
    about (the worst loopback row's; else the only Service's), unknown when none is."""
    f = lb_words.lb_of(lbs, service) if service else (lbs[0] if len(lbs) == 1 else None)
    return {"lb_behaviour": f.behaviour if f is not None else UNKNOWN,
            "lb_failure_mode": f.failure_mode if f is not None else UNKNOWN}


def _with_problem(v: dict, journeys: pd.DataFrame, problem: dict) -> dict:
    """No loopback: the dominant slow or lossy path leads the headline and the root cause."""
    lead = "No failure in the captures."
    rest = v["root_cause"][len(lead):].lstrip() if v["root_cause"].startswith(lead) else v["root_cause"]
    v["headline"] = f"{problem['text']}. {v['headline']}"
    places = problem["between"]
    inside = places and all(b.split("/")[0] == b.split(" -> ")[-1].split("/")[0] for b in places)
    v["root_cause"] = ((f"The time went between {'; '.join(places)}" if places else
                        "natlens cannot name the capture points between which the time went")
                       + (": inside the node, between those capture points, not in the network or "
                          "the load balancer." if inside else ".") + (" " + rest if rest else ""))
    return v


def evidence_statement(journeys: pd.DataFrame, quality: list[dict], uncaptured: list[str] = ()) -> str | None:
    """What limits the answer, in plain words, for the top of the verdict (None: nothing)."""
    parts = blind_spots(journeys, list(uncaptured))
    unknown = unknown_outcomes(journeys, quality)
    if unknown:
        parts.append(unknown[0].upper() + unknown[1:] + ".")
    for q in quality:
        if q.get("damaged_bytes"):
            parts.append(f"{q['file']} holds {q['damaged_bytes']:,} unreadable bytes (impossible record lengths, "
                         f"skipped): {_open_there(q['journeys_damaged'])}.")
        lossy = [x for x in q["limits"] if "dropped" in x or "miss data" in x or "lost the client" in x]
        if lossy and q["journeys_affected"]:
            parts.append(f"{q['file']} lost packets ({'; '.join(x.split(': ', 1)[-1] for x in lossy)}): "
                         f"{plural(len(q['journeys_affected']), 'connection')} affected; natlens used other "
                         "capture points for them where one holds the packets.")
    return " ".join(parts) or None


def _open_there(ids: list[str]) -> str:
    """'3 connections were open there; natlens used ...', or that none was."""
    if not ids:
        return "no Service connection was open there"
    return (f"{plural(len(ids), 'connection')} {'was' if len(ids) == 1 else 'were'} open there; natlens used "
            "other capture points for them where one holds the packets")


def _outcome_counts(journeys: pd.DataFrame, mask: pd.Series) -> tuple[int, int, int]:
    """(connections, failed, outcome unknown) among the journeys where mask holds."""
    return int(mask.sum()), int((mask & is_failed(journeys["outcome"])).sum()), \
        int((mask & (journeys["outcome"] == UNKNOWN)).sum())


def _loopback_headline(journeys: pd.DataFrame, worst: pd.Series, svc: str) -> str:
    """The headline when loopbacks were seen: how many failed, and never "none failed" while
    outcomes are unknown."""
    total = len(journeys)
    lb, lb_failed, lb_unknown = _outcome_counts(journeys, journeys["loopback"] == YES)
    _, failed, unknown = _outcome_counts(journeys, pd.Series(True, index=journeys.index))
    if lb_failed:
        head = _failed_loops_head(journeys, worst, svc, failed, lb_failed)
        failed_unchecked = int((is_failed(journeys["outcome"]) & (journeys["loopback"] == UNKNOWN)).sum())
        if failed_unchecked:
            head += (f"; whether the other {plural(failed_unchecked, 'failed connection')} "
                     f"{'was a loopback' if failed_unchecked == 1 else 'were loopbacks'} is unknown")
        return head + (f"; the outcome of {plural(lb_unknown, 'more loopback')} is unknown" if lb_unknown else "")
    head = f"{lb} of {total} connections were load-balancer loopbacks (sent back to their own node)"
    if lb_unknown:
        seen = lb - lb_unknown
        return (head + f"; the outcome of {lb_unknown} of them is unknown"
                + (f", none of the other {seen} failed" if seen else ""))
    head += f", none of them failed; {plural(failed, 'connection')} failed"
    return head + (f", the outcome of {unknown} is unknown" if unknown else "")


def _failed_loops_head(journeys: pd.DataFrame, worst: pd.Series, svc: str, failed: int, lb_failed: int) -> str:
    """How many failed and why, then whose connections looped, each count said once: "13 of 40
    connections failed: 13 load-balancer loopbacks; the loopbacks are node-1's connections to the
    Service ..., which the load balancer sent back to node-1 (13 of its 20)"."""
    total, node = len(journeys), worst["source_node"]
    why = failure_words.tally(journeys) or plural(lb_failed, "load-balancer loopback")
    loops = int((journeys["loopback"] == YES).sum())
    whose = "the loopbacks are" if int(worst["loopback"]) == loops else f"{worst['loopback']} of the {loops} loopbacks are"
    return (f"{failed} of {total} connections failed: {why}; {whose} {node}'s connections to the {svc}, which the "
            f"load balancer sent back to {node} ({worst['loopback']} of its {worst['connections']})")


def _loopback_verdict(journeys: pd.DataFrame, snat: pd.DataFrame, names: dict[str, str],
                      mechs: list[Mechanism], lbs: list[LbFinding], inventory: Inventory | None) -> dict:
    """Loopbacks were seen: the worst row's Service, why it loops (by what the load balancer was
    seen to do and what its node's rules do), the failures that are not loopbacks, and the fixes."""
    worst = snat.sort_values(["loopback_failed", "loopback"], ascending=False).iloc[0]
    m = _mechanism_of(mechs, worst["service"], worst["source_node"])
    f = lb_words.lb_of(lbs, worst["service"])
    svc = _svc_name(worst["service"], names)
    _, lb_failed, lb_unknown = _outcome_counts(journeys, journeys["loopback"] == YES)
    _, failed, _ = _outcome_counts(journeys, pd.Series(True, index=journeys.index))
    counts = failure_words.counts(journeys) if "failure" in journeys else {}
    first = [k for k, n in counts.items() if n > counts.get(LOOPBACK, 0)]  # commoner than the loopback
    lead = failure_words.sentences(journeys, skip=tuple(k for k in counts if k not in first)).lstrip()
    root = lead + (" The loopbacks: " if lead else "") + _why_it_loops(worst, m, f, svc, lb_failed == failed)
    if lb_unknown and not lb_failed:
        root += (" These captures do not show how the loopbacks ended (their outcome is unknown), so "
                 "that they failed is the mechanism's prediction, not an observation.")
    others = snat[(snat["loopback"] > 0) & (snat.index != worst.name)]
    if len(others):
        root += " Loopbacks were also seen for: " + "; ".join(
            f"{_svc_name(o.service, names)} from {o.source_node}: {o.loopback} of {o.connections} "
            f"({o.loopback_failed} failed)" for o in others.itertuples()) + "."
    seen = _measured_elsewhere(lbs, worst["service"], f)
    if seen is not None:
        root += lb_words.elsewhere(seen, _svc_name(seen.service, names))
    root += (failure_words.sentences(journeys, skip=(LOOPBACK, *first)) if "failure" in journeys
             else _other_failures(journeys))
    root += _snat_sentences(snat[snat["loopback"] == 0], names, " No loopback for", set(_dnated(journeys)), lbs)
    node_loop = _node_loop(worst, f)
    if worst["policy"] == "Cluster" and (m is None or m.vip.value != "none") and not node_loop \
            and not _harmless(f, worst):
        root += (" The policy on record is Cluster, yet connections looped back: check whether "
                 f"{wording.masquerade_rules(m)} for this VIP are in effect (see rule_trace).")
    p = lb_words.profile(inventory, names.get(worst["service"])) if inventory is not None else None
    if p is not None:
        root += lb_words.documented_sentence(p, f)
    return {"loopback_detected": True, "headline": _loopback_headline(journeys, worst, svc), "root_cause": root,
            "remediation": _loop_fixes(worst, m, f, p, inventory, names, lbs)
            + failure_words.remedies(journeys, loopback_fixes=True), "_service": worst["service"]}


def _why_it_loops(worst: pd.Series, m: Mechanism | None, f: LbFinding | None, svc: str, only: bool) -> str:
    """The loop's mechanism for the worst row: a node's own connection dropped on arrival (an
    any-backend load balancer), loopbacks answered through a proxying one, or a pod's un-SNATed
    connection answered from the node (the founding incident's)."""
    pol, ratio = worst["policy"], worst["ratio"]
    known = int(worst["connections"] - worst["unknown_snat"])
    why_snat = (f"none of the {known} whose source the captures show was SNATed" if ratio == 0 else
                f"{worst['snat']} of {worst['connections']} were SNATed" if ratio is not None
                and not pd.isna(ratio) else "whether they were SNATed is not visible in the captures")
    pol_text = (f"has externalTrafficPolicy {pol}" if pol in ("Local", "Cluster") else
                "has an externalTrafficPolicy natlens could not find (no cluster/services.json, and no "
                "kube-proxy rule on the node names it)")
    if _node_loop(worst, f):
        return lb_words.node_source_loop(f, svc, pol_text, str(worst["source_node"]), why_snat,
                                         (int(worst["loopback"]), int(worst["connections"])))
    if _harmless(f, worst):
        return lb_words.proxied(f, svc)
    return (f"The {svc} {pol_text}; {wording.why_it_leaves(m)} ({why_snat}), "
            f"{wording.loopback_mechanism(m, only)}" + wording.not_a_fix(m, pol)
            + lb_words.behaviour_sentence(f, svc))


def _loop_fixes(worst: pd.Series, m: Mechanism | None, f: LbFinding | None, p, inventory: Inventory | None,
                names: dict[str, str], lbs: list[LbFinding]) -> list[str]:
    """The loop's fixes: none for a proxying load balancer whose loopbacks work; those that work
    for an any-backend one; else today's steps, each with its command."""
    if _harmless(f, worst):
        return []
    name, port = names.get(worst["service"]), _port(worst["service"])
    if inventory is None or p is None:
        return wording.remediation(m, worst["policy"])
    b = f.behaviour if f is not None and f.behaviour != UNKNOWN else p.documented
    if b == ANY_BACKEND or _node_loop(worst, f):  # Cluster and SNAT refuted: its own loops are SNATed
        return lb_words.any_backend_fixes(p, inventory, name, port, m.vip.value if m is not None else UNKNOWN)
    return lb_words.with_commands(wording.remediation_steps(m, worst["policy"]), f, p, inventory, name, port,
                                  _measured_elsewhere(lbs, worst["service"], f))


def _node_loop(worst: pd.Series, f: LbFinding | None) -> bool:
    """The worst row's loopbacks are a node's own (SNATed) connections sent back to it: every
    connection of the row whose SNAT is known was SNATed, and its Service's load balancer was seen
    to send such connections back."""
    return f is not None and worst["ratio"] == 1.0 and (f.failure_mode == DROPPED_ON_ARRIVAL or f.node_source_loops)


def _harmless(f: LbFinding | None, worst: pd.Series) -> bool:
    """The loopbacks all worked through a proxying load balancer (each one seen answered via it)."""
    return f is not None and f.behaviour == PROXY and f.failure_mode == ANSWERED_VIA_LB \
        and not int(worst["loopback_failed"])


def _measured_elsewhere(lbs: list[LbFinding], service: str, f: LbFinding | None) -> LbFinding | None:
    """Where this Service's load balancer behaviour is unknown, another Service's of the incident
    that the captures show (the first any-backend one, else the first known one), else None."""
    if f is not None and f.behaviour != UNKNOWN:
        return None
    known = [x for x in lbs if x.service != service and x.behaviour != UNKNOWN]
    return next((x for x in known if x.behaviour == ANY_BACKEND), known[0] if known else None)


def _port(service: str) -> int | None:
    """The port of a Service key 'VIP:port/proto'."""
    try:
        return int(service.rsplit(":", 1)[1].split("/")[0])
    except (IndexError, ValueError):
        return None


def _other_failures(journeys: pd.DataFrame) -> str:
    """The failed connections that were not loopbacks, where the load balancer sent them, and
    that natlens identifies no mechanism for them (the loopback explains only its own)."""
    other = journeys[is_failed(journeys["outcome"]) & (journeys["loopback"] == NO)]
    if other.empty:
        return ""
    ids = ", ".join(other["journey"].astype(str).head(8)) + (", ..." if len(other) > 8 else "")
    where = sorted({str(b) for b in other["lb_backend"].dropna()})
    sent = f": the load balancer sent them to {', '.join(where)}" if where else ""
    wrong = int(other["outcome_evidence"].astype(str).str.contains("answered from the wrong address").sum())
    seen = (f"; {'the client' if wrong == len(other) else f'in {wrong} of them the client'} got "
            f"{'its' if len(other) == 1 else 'their' if wrong == len(other) else 'the'} SYN-ACK from another "
            "address than the VIP and reset it" if wrong else "")
    return (f" {plural(len(other), 'more failed connection')} ({ids}) did not loop back{sent}{seen}; "
            "natlens identifies no mechanism for them.")


def _no_loopback_verdict(journeys: pd.DataFrame, snat: pd.DataFrame, names: dict[str, str],
                         mechs: list[Mechanism], lbs: list[LbFinding] | None = None) -> dict:
    """No loopback seen: the failures (if any), the outcomes not seen, what could not be checked,
    and the Services whose traffic the client's node DNATed itself (no loopback possible)."""
    total, failed, unk_outcome = _outcome_counts(journeys, pd.Series(True, index=journeys.index))
    unknown = int((journeys["loopback"] == UNKNOWN).sum())
    if failed:
        why = failure_words.tally(journeys)
        headline = (f"{failed} of {total} connections failed" + (f": {why}" if why else "")
                    + ("; no load-balancer loopback seen" if unknown else "; none was a load-balancer loopback"))
        if unknown:
            headline += f" ({unknown} could not be checked: no capture shows where the load balancer sent them)"
        root = ("The failures are not the loopback pattern." + failure_words.sentences(journeys)
                if why else "The failures are not the loopback pattern; look at the failed journeys' hops "
                "(journey_hops) for where the SYN or SYN-ACK was lost.")
    elif unk_outcome:
        est = int((journeys["established"]).sum())
        headline = (f"{est} of {total} connections were established and the outcome of {unk_outcome} is "
                    "unknown; no load-balancer loopback seen")
        root = (f"The captures do not show how {plural(unk_outcome, 'connection')} ended: "
                f"{'it' if unk_outcome == 1 else 'they'} may have failed; none of the other "
                f"{total - unk_outcome} did.")
    else:
        headline = f"All {total} connections were established; no load-balancer loopback seen"
        root = "No failure in the captures."
    if failed and unk_outcome:
        headline += f"; the outcome of {unk_outcome} is unknown"
    dnated = _dnated(journeys)
    if dnated and sum(k for k, _ in dnated.values()) == total:
        headline += ("; none reached the load balancer: the client's node DNATed the VIP to the Service's "
                     "endpoints itself, so no loopback is possible for pod traffic")
    for (svc, node), (k, n) in sorted(dnated.items()):
        root += wording.node_dnat_sentence(_mechanism_of(mechs, svc, node), _svc_name(svc, names), node, k, n)
    root += _snat_sentences(snat, names, dnated=set(dnated), lbs=lbs)
    if unknown and not failed:
        root += f" {unknown} journeys' load-balancer pick is not visible in the captures."
    return {"loopback_detected": False, "headline": headline, "root_cause": root,
            "remediation": failure_words.remedies(journeys, loopback_fixes=False) if failed else []}


def no_journeys_verdict(inputs: list[dict], conns: pd.DataFrame, vips: set) -> dict:
    """The verdict when no client connection to a load-balancer Service is in the captures."""
    if not inputs:
        headline = "No captures in the bundle: nothing to say about connections"
        root = "The bundle has no nodes/<node>/*.pcap or *.pcapng files; add captures from the nodes."
    else:
        targets = ", ".join(f"{v}:{p}/{pr}" for v, p, pr in sorted(vips))
        headline = (f"No connection to a load-balancer Service in the captures "
                    f"({plural(len(conns), 'connection record')} in {plural(len(inputs), 'capture')}, "
                    + (f"none to {targets})" if targets else
                       "none a TCP connection whose opening SYN was captured; no VIP is known)"))
        root = ("Nothing to analyse: the captures hold no client connection to the Services' VIPs. "
                "Check that the capture covered the failing calls (time window, node, interface).")
    return {"evidence": None, "loopback_detected": False, "headline": headline, "root_cause": root,
            "remediation": []}
