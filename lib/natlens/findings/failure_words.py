"""The counts and words of the failure mechanisms (findings.failures): summary.json's
``failures``, the verdict's tally and sentences, and the remedy for each mechanism seen.

Why: "16 failed: 10 load-balancer loopbacks, 6 answers from the wrong source" is the line
the customer reads first, and every failed connection must be in it; each number comes
from the journeys' ``failure`` column, each sentence names a journey that shows it.
"""

from __future__ import annotations

import re

import pandas as pd

from natlens.vocab import (
    DROPPED_BY_RULE,
    FAILURES,
    LOOPBACK,
    NO_REPLY,
    REFUSED,
    REPLY_LOST,
    RESET_BY_CLIENT,
    UNKNOWN,
    UNREACHABLE,
    WRONG_SOURCE_REPLY,
    is_failed,
)

# mechanism -> (one, many): the tally's words
NAMES = {
    LOOPBACK: ("load-balancer loopback", "load-balancer loopbacks"),
    WRONG_SOURCE_REPLY: ("answer from the wrong source", "answers from the wrong source"),
    DROPPED_BY_RULE: ("dropped by a node's rules", "dropped by a node's rules"),
    UNREACHABLE: ("refused by an ICMP error", "refused by ICMP errors"),
    REFUSED: ("refused by the server (RST)", "refused by the server (RST)"),
    RESET_BY_CLIENT: ("reset by the client", "reset by the client"),
    REPLY_LOST: ("answer lost on the way back", "answers lost on the way back"),
    NO_REPLY: ("never answered", "never answered"),
    UNKNOWN: ("whose cause the captures cannot show", "whose cause the captures cannot show"),
}
# What each mechanism means, for the report's table
MEANING = {
    LOOPBACK: "the load balancer sent the connection back to the client's own node",
    WRONG_SOURCE_REPLY: "a SYN-ACK reached the client from another address than the one it called "
                        "(asymmetric return, missing reverse NAT), and the client reset it",
    DROPPED_BY_RULE: "a node's netfilter rules drop or reject the client's packet (the rule is named)",
    UNREACHABLE: "an ICMP error about the client's packet came back, from a route or router no rule explains",
    REFUSED: "the server's side answered the SYN with a RST",
    RESET_BY_CLIENT: "the client reset an answer from the address it called",
    REPLY_LOST: "an answer seen at one capture point never reached the client",
    NO_REPLY: "no capture point saw an answer to the SYN",
    UNKNOWN: "the captures cannot show why (the reason is given)",
}


def _plural(n: int, mech: str) -> str:
    one, many = NAMES[mech]
    return f"{n} {one if n == 1 else many}"


def _failed(journeys: pd.DataFrame) -> pd.DataFrame:
    """The failed journeys, with a ``failure`` column (unknown where findings.failures did not run)."""
    failed = journeys[is_failed(journeys["outcome"])]
    if "failure" not in failed:
        failed = failed.assign(failure=UNKNOWN, failure_evidence="findings.failures did not run",
                               failure_at="")
    return failed


def counts(journeys: pd.DataFrame) -> dict[str, int]:
    """Failed journeys per mechanism, most first (ties in the vocabulary's order)."""
    failed = _failed(journeys)
    c = failed["failure"].fillna(UNKNOWN).value_counts()
    order = sorted(c.index, key=lambda m: (-int(c[m]), FAILURES.index(m) if m in FAILURES else 99))
    return {str(m): int(c[m]) for m in order}


def tally(journeys: pd.DataFrame) -> str:
    """"11 load-balancer loopbacks, 3 answers from the wrong source" ("" when none failed, or
    findings.failures has not run on these journeys)."""
    if "failure" not in journeys:
        return ""
    return ", ".join(_plural(n, m) for m, n in counts(journeys).items())


def summary(journeys: pd.DataFrame) -> dict:
    """summary.json's ``failures``: the counts per mechanism, per (Service, source node), the
    journeys of each, and those the captures cannot explain with why."""
    failed = _failed(journeys)
    by = []
    for (svc, node), g in failed.groupby([failed["service"].fillna("unknown"),
                                          failed["client_node"].fillna("unknown")], sort=True):
        by.append({"service": str(svc), "source_node": str(node), "failed": int(len(g)), "by_mechanism": counts(g)})
    unknown = failed[failed["failure"].fillna(UNKNOWN) == UNKNOWN]
    return {"failed": int(len(failed)), "by_mechanism": counts(failed), "by_service": by,
            "unexplained": int(len(unknown)),
            "unexplained_why": [{"journey": str(r.journey), "why": str(r.failure_evidence)}
                                for r in unknown.itertuples()],
            "journeys": {m: failed.loc[failed["failure"].fillna(UNKNOWN) == m, "journey"].astype(str).tolist()
                         for m in counts(failed)}}


def _ids(g: pd.DataFrame, most: int = 8) -> str:
    ids = g["journey"].astype(str).tolist()
    return ", ".join(ids[:most]) + (", ..." if len(ids) > most else "")


def sentences(journeys: pd.DataFrame, skip: tuple[str, ...] = (LOOPBACK,)) -> str:
    """One sentence per mechanism (but ``skip``), most first: how many, which, and what the first
    of them shows."""
    failed = _failed(journeys)
    out = ""
    for mech, n in counts(failed).items():
        if mech in skip:
            continue
        g = failed[failed["failure"].fillna(UNKNOWN) == mech]
        first = g.iloc[0]
        ev = str(first["failure_evidence"])
        out += (f" {n} failed {'connection' if n == 1 else 'connections'} ({_ids(g)}): {NAMES[mech][0 if n == 1 else 1]}"
                f"; {first['journey']}: {_lower_first(ev)}.")
    return out


def _lower_first(text: str) -> str:
    """The evidence mid-sentence: "the SYN-ACK ...", but "ICMP ..." and "SYN ..." stay."""
    word = text.split(" ", 1)[0]
    return text if word.isupper() or not text else text[0].lower() + text[1:]


def remedies(journeys: pd.DataFrame, loopback_fixes: bool) -> list[str]:
    """What to change for each mechanism that occurred (besides the loopback's own fixes)."""
    if "failure" not in journeys:
        return []
    c = counts(journeys)
    failed = _failed(journeys)
    first = {m: failed[failed["failure"].fillna(UNKNOWN) == m].iloc[0] for m in c}
    out = []
    for mech in c:
        f = first[mech]
        text = _remedy(mech, f, loopback_fixes)
        if text:
            out.append(text)
    return out


def _remedy(mech: str, f: pd.Series, loopback_fixes: bool) -> str:
    """One mechanism's remedy, naming the place and rule of its first journey."""
    at, ev = str(f["failure_at"]), str(f["failure_evidence"])
    if mech == WRONG_SOURCE_REPLY:
        return ("For the answers from the wrong source: " + (
            "ipMode VIP, SNAT to the node's IP or the ClusterIP (above) cover them too: each keeps the "
            "pod's own address off the load balancer's path, so no other node DNATs it to an endpoint "
            "without SNAT." if loopback_fixes else
            "SNAT pod traffic to the load balancer's address on the client's node (or call the Service's "
            "ClusterIP from inside the cluster), so that the node the load balancer picks answers through "
            "its own reverse NAT."))
    if mech == DROPPED_BY_RULE:
        endpoints = "a Service that has no endpoints" in ev
        return (f"For the connections dropped by a node's rules ({at}): " + (
            f"kube-proxy rejects the Service {f['service']} because it has no ready endpoints: check its "
            "EndpointSlices, its selector and the pods' readiness." if endpoints else "find who wrote that rule (see the evidence) and why it drops "
                                           "this traffic."))
    if mech == UNREACHABLE:
        return f"For the ICMP errors ({at}): check the routes and firewalls of the address that sent them."
    if mech == REFUSED:
        return (f"For the refused connections ({at}): nothing listens there: check the Service's targetPort "
                "against the container's port, and that the server is running.")
    if mech == NO_REPLY:
        route = re.search(r"(\S+)'s routes drop it: (.+?) \(ip route\)", ev)
        if route:
            return (f"For the connections never answered ({at}): {route.group(1)}'s route "
                    f"\"{route.group(2)}\" drops them: remove or correct that route.")
        return (f"For the connections never answered ({at}): check what lies beyond that capture point: "
                "routes (a blackhole), security groups, the load balancer's health checks and backends.")
    if mech == REPLY_LOST:
        return (f"For the answers lost on the way back ({at}): check the return path between those points: "
                "security groups or firewalls that drop return traffic, asymmetric routing.")
    if mech == RESET_BY_CLIENT:
        return f"For the connections the client reset ({at}): check the client's own socket handling."
    if mech == UNKNOWN:
        return ("For the failures natlens cannot explain: capture on every node of the path (the pod's "
                "interface and the node's NIC, `tcpdump -i any`), without drops (see the evidence).")
    return ""
