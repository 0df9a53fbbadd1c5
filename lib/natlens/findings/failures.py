"""Why each failed connection failed, and where it died: one mechanism per failed journey.

Why: the customer's question is not "was it a loopback?" but "why did each connection
fail, and where?". Every journey whose outcome is a failure (reset, timed out) gets one
mechanism from natlens.vocab's FAILURES, as a named decision with its evidence (the
records and capture points that show it). The rules are tried in this order; the first
the evidence shows wins:

  loopback            the load balancer sent it back to the client's own node (the journey's
                      loopback decision); the evidence says how it then failed
  dropped-by-rule     the node where its SYN was last seen arriving drops or rejects it: the
                      netfilter model's walk of that packet there, with the rule (an ICMP error
                      from that node, when captured, is named too)
  unreachable         an ICMP error about the client's packet (destination unreachable, time
                      exceeded) that no rule natlens sees explains: a route, a router, the LB
  refused             a RST from the server side answered the SYN
  wrong-source-reply  a SYN-ACK reached the client from another address:port than the one it
                      called (an asymmetric return, a missing reverse NAT): the client resets it
  reset-by-client     the client reset a SYN-ACK from the address it called
  reply-lost          a SYN-ACK seen at one capture point never reached the client: between
                      the last point that saw it and the client
  no-reply            no capture point saw an answer to the SYN: the last point that saw it
                      (and, where a route on that node drops it, the route)
  unknown             the captures cannot show it, with the reason (e.g. a capture that lost
                      packets where the answer would be)

Columns (FAILURE_COLUMNS, added to the journeys tables; None for journeys that did not fail):

  failure            the mechanism
  failure_evidence   the decision's evidence, in words, naming records and rules
  failure_at         where it died: the last capture point and hop that saw each packet of
                     its handshake ("SYN last seen at node-2 eth0 (198.18.16.100:36414 ->
                     198.18.0.12:30080)")
  failure_path       the handshake's way through the capture points, with the NAT between
                     them: "SYN: client -> node-1 veth-client -> node-1 eth0 -> LB (DNAT to
                     node-2 198.18.0.12:30080) -> node-2 eth0 -> ... | SYN-ACK from ...: ..."

A "hop" is a capture point: a node and its interface ("node-1 eth0", "node-1 cni0"), or
the capture's label when the interface is not known. The client's side is the capture point
of the client's own record (the pod's veth in an ``any`` capture, else the node's NIC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens.errors import NatlensError
from natlens.inventory import BRIDGE, UPLINK, Inventory
from natlens.netfilter import NodeRules, Verdict
from natlens.vocab import (
    DROPPED_BY_RULE,
    LOOPBACK,
    NO_REPLY,
    REFUSED,
    REPLY_LOST,
    RESET_BY_CLIENT,
    UNKNOWN,
    UNREACHABLE,
    WRONG_SOURCE_REPLY,
    YES,
    icmp_ends_connect,
    icmp_words,
    is_failed,
)

FAILURE_COLUMNS = ["failure", "failure_evidence", "failure_at", "failure_path"]
RulesOf = Callable[[str], "NodeRules | None"]


@dataclass(frozen=True)
class Failure:
    """One failed journey's mechanism, its evidence and where it died."""

    mechanism: str
    evidence: str
    at: str


@dataclass
class Context:
    """What the rules need beyond the journey: the inventory, each node's netfilter model
    (None when its dumps are missing or unreadable) and the captures that lose packets."""

    inventory: Inventory
    rules_of: RulesOf
    lossy: frozenset[str] = frozenset()


def explain_failures(journeys: pd.DataFrame, records: pd.DataFrame | None, ctx: Context) -> pd.DataFrame:
    """FAILURE_COLUMNS for every journey (same index); None where the journey did not fail."""
    out = {c: [None] * len(journeys) for c in FAILURE_COLUMNS}
    failed = is_failed(journeys["outcome"]).to_numpy()
    if failed.any():
        chosen = journeys[failed]
        recs = sightings(records[records["journey"].isin(chosen["journey"])] if records is not None
                         else pd.DataFrame(columns=["journey"]), chosen)
        groups: dict[str, list] = {}
        for row in recs.itertuples(index=False):
            groups.setdefault(row.journey, []).append(row)
        for pos, j in zip(np.flatnonzero(failed), chosen.to_dict("records"), strict=True):
            rows = groups.get(j["journey"], [])
            f = classify_failure(j, rows, ctx)
            for c, v in zip(FAILURE_COLUMNS, (f.mechanism, f.evidence, f.at, journey_path(j, rows, ctx.inventory)),
                            strict=True):
                out[c][pos] = v
    return pd.DataFrame(out, index=journeys.index, dtype=object)


def classify_failure(j, rows, ctx: Context) -> Failure:
    """The first of the rules (module docstring) that the journey's records show. ``j``: the
    journey (a mapping), ``rows``: its sightings (``sightings``, a DataFrame or its rows)."""
    rows = _rows(rows)
    if not rows:
        return Failure(UNKNOWN, "no connection record of it in the captures", "not seen")
    for rule in (loopback, icmp_error, refused, wrong_source_reply, reset_by_client, reply_lost):
        f = rule(j, rows, ctx)
        if f is not None:
            return f
    return no_reply(j, rows, ctx)


def _rows(rows) -> list:
    """A journey's sightings as rows (attribute access), in time order."""
    return list(rows.itertuples(index=False)) if isinstance(rows, pd.DataFrame) else list(rows)


# --- the records of one journey, as sightings of its handshake's packets ----------------------

SIGHTING_COLUMNS = ["journey", "uid", "capture", "node", "iface", "point", "orig_h", "orig_p", "resp_h", "resp_p",
                    "proto", "established", "ts_corr", "orig_dir", "icmp_errors", "icmp_ts", "icmp_type",
                    "icmp_code", "icmp_src", "icmp_quotes"]


def sightings(records: pd.DataFrame, journeys: pd.DataFrame) -> pd.DataFrame:
    """The journeys' records with what the rules read: the hop label, the clock-corrected
    times of the first SYN and SYN-ACK seen there, whether the point is the client's side,
    the history's letters, and the ICMP error about it (none: 0 errors)."""
    r = records.copy()
    for c, default in (("point", None), ("orig_dir", None), ("icmp_errors", 0), ("icmp_ts", np.nan),
                       ("icmp_type", None), ("icmp_code", None), ("icmp_src", None), ("icmp_quotes", None)):
        if c not in r:
            r[c] = default
    if r.empty:
        return r.reindex(columns=[*SIGHTING_COLUMNS, "t_syn", "t_synack", "hop", "near", "letters"])
    shift = r["ts_corr"].astype(float) - r["ts"].astype(float)
    r["t_syn"] = r["syn_ts"].astype(float) + shift
    r["t_synack"] = r["synack_ts"].astype(float) + shift
    r["hop"] = hop_labels(r)
    key = r["journey"].map(client_side(r, journeys))
    r["near"] = [isinstance(k, tuple) and (c, i) == k for k, c, i in zip(key, r["capture"], r["iface"], strict=True)]
    r["letters"] = r["history"].fillna("").astype(str)
    r["established"] = r["established"].fillna(False).astype(bool)
    r["icmp_errors"] = r["icmp_errors"].fillna(0).astype(int)
    r["icmp_quotes"] = r["icmp_quotes"].astype(object).where(r["icmp_quotes"].notna(), None)
    r = r.sort_values(["journey", "ts_corr"], kind="stable")
    return r[[*SIGHTING_COLUMNS, "t_syn", "t_synack", "hop", "near", "letters"]]


def client_side(r: pd.DataFrame, journeys: pd.DataFrame) -> pd.Series:
    """Per journey, the (capture, interface) nearest the client that carries its packets to the
    address it called, before any NAT: the pod's veth, else the node's bridge, else its NIC;
    else the capture point of the client's own record.

    Why: an answer "reached the client" where it is seen there; a capture that started late
    leaves the client's own record on the NIC, while its veth still shows later packets."""
    j = journeys.set_index("journey")
    called = r.join(j[["client_h", "client_p", "client_node", "vip", "vport"]], on="journey")
    pre = called[(called["node"] == called["client_node"]) & (called["orig_h"] == called["client_h"])
                 & (called["orig_p"] == called["client_p"]) & (called["resp_h"] == called["vip"])
                 & (called["resp_p"] == called["vport"])]
    point = pre["point"].where(pre["point"].notna(), "").astype(str)
    rank = np.select([point == "", point.str.match(UPLINK), point.str.match(BRIDGE)], [3, 2, 1], 0)
    best = pre.assign(_rank=rank).sort_values(["_rank", "ts_corr"]).drop_duplicates("journey")
    side = dict(zip(best["journey"], zip(best["capture"], best["iface"], strict=True), strict=True))
    where = dict(zip(r["uid"], zip(r["capture"], r["iface"], strict=True), strict=True))
    return pd.Series({jid: side.get(jid, where.get(uid)) for jid, uid in j["client_uid"].items()}, dtype=object)


def hop_labels(r: pd.DataFrame) -> pd.Series:
    """"node-1 eth0" where the interface is known, else the capture's label ("node-1/any")."""
    point = r["point"] if "point" in r else pd.Series(None, index=r.index, dtype=object)
    tail = r["capture"].astype(str).str.rsplit("/", n=1).str[-1]
    name = point.where(point.notna(), tail.where(tail != "any"))
    return pd.Series(np.where(name.notna(), r["node"].astype(str) + " " + name.fillna("").astype(str),
                              r["capture"].astype(str)), index=r.index, dtype=object)


def _tuple(row) -> str:
    return f"{row.orig_h}:{row.orig_p} -> {row.resp_h}:{row.resp_p}"


def _called(j) -> str:
    return f"{j['vip']}:{int(j['vport'])}" if not pd.isna(j["vport"]) else str(j["vip"])


def _seen(t: float) -> bool:
    return t == t  # not NaN


def _answer_to_client(rows: list) -> list:
    """The client's side's records that saw a SYN-ACK, earliest first."""
    return sorted((x for x in rows if x.near and _seen(x.t_synack)), key=lambda x: x.t_synack)


def _client_reset(row) -> bool:
    """The client reset what it got at that point (its RST after the SYN-ACK)."""
    h = row.letters
    return "R" in h and "h" in h and h.index("R") > h.index("h")


def _fatal_icmp(row) -> bool:
    """An ICMP error about the client's packet there that ends a connect."""
    return (row.icmp_errors > 0 and row.icmp_quotes == "orig"
            and icmp_ends_connect(row.icmp_type, row.icmp_code, ":" in str(row.icmp_src)))


# --- the rules, in order ---------------------------------------------------------------------

def loopback(j, rows: list, ctx: Context) -> Failure | None:
    """The load balancer sent it back to the client's own node; how it then failed."""
    if j.get("loopback") != YES:
        return None
    got = _answer_to_client(rows)
    if got:
        a = got[0]
        how = (f"the SYN-ACK reached the client at {a.hop} from {a.resp_h}:{a.resp_p}, not from "
               f"{_called(j)}, the address it called" + (", and the client reset it" if _client_reset(a) else ""))
        at = f"{a.hop}: the client got the SYN-ACK from {a.resp_h}:{a.resp_p}"
    else:
        last = _last_syn(rows)
        how = "no answer reached the client"
        at = f"SYN last seen at {last.hop} ({_tuple(last)})" if last is not None else "not seen"
        if last is not None and ctx.inventory.node_ip(str(last.orig_h)) == last.node == ctx.inventory.node_ip(
                str(last.resp_h)):  # a node's own SNATed connection, sent back to it by the load balancer
            how = (f"it came back to {last.node} from {last.node}'s own address {last.orig_h}, which the kernel "
                   "drops on arrival (a martian source), so no answer reached the client")
    return Failure(LOOPBACK, f"{j['loopback_evidence']}; {how}", at)


def icmp_error(j, rows: list, ctx: Context) -> Failure | None:
    """An ICMP error about the client's packet: dropped-by-rule when the rules of the node that
    sent it reject that packet, else unreachable."""
    hit = sorted((x for x in rows if _fatal_icmp(x)), key=lambda x: x.icmp_ts)
    if not hit:
        return None
    e = hit[0]
    words = icmp_words(int(e.icmp_type), int(e.icmp_code), ":" in str(e.icmp_src))
    seen = f"ICMP {words} from {e.icmp_src} about the client's packet {_tuple(e)}, seen at {e.hop}"
    if str(e.icmp_src) == str(j["vip"]):
        seen += " (from the load balancer's address: the load balancer, or a router behind its NAT, sent it)"
    node = ctx.inventory.node_ip(str(e.icmp_src)) or str(e.node)
    asked = _asked_at(rows, node, j, ctx)
    if asked is not None and asked[0] is not None:
        return Failure(DROPPED_BY_RULE, f"{seen}; {asked[1]}", f"{asked[2]}: rejected by {node}'s rules")
    why = f"; {asked[1]}" if asked is not None else ""
    return Failure(UNREACHABLE, seen + why, f"{e.hop}: ICMP {words} from {e.icmp_src}")


def refused(j, rows: list, ctx: Context) -> Failure | None:
    """A RST from the server side answered the SYN (Zeek's lower-case r before any handshake)."""
    rst = [x for x in rows if "r" in x.letters and not x.established]
    if not rst:
        return None
    called = _called(j)
    # the sighting nearest the server: after the NAT, where it still comes from the endpoint itself
    beyond = [x for x in rst if f"{x.resp_h}:{x.resp_p}" != called]
    first = max(beyond, key=lambda x: x.ts_corr) if beyond else min(rst, key=lambda x: x.ts_corr)
    near = [x for x in rst if x.near]
    reached = (f"; it reached the client at {near[0].hop} from {near[0].resp_h}:{near[0].resp_p}"
               if near and near[0].hop != first.hop else "")
    return Failure(REFUSED, f"{first.hop}: the SYN to {first.resp_h}:{first.resp_p} was answered by a RST "
                   f"from {first.resp_h}:{first.resp_p} (nothing listening, or a reset by the server's side)"
                   f"{reached}", f"{first.hop}: RST from {first.resp_h}:{first.resp_p}")


def wrong_source_reply(j, rows: list, ctx: Context) -> Failure | None:
    """A SYN-ACK reached the client from another address:port than the one it called."""
    called = _called(j)
    wrong = [x for x in _answer_to_client(rows) if f"{x.resp_h}:{x.resp_p}" != called]
    if not wrong:
        return None
    a = wrong[0]
    ev = (f"the SYN-ACK reached the client at {a.hop} from {a.resp_h}:{a.resp_p}, not from {called}, the "
          "address it called" + (", and the client reset it" if _client_reset(a) else ""))
    return Failure(WRONG_SOURCE_REPLY, ev + _why_wrong_source(j, rows, str(a.resp_h), ctx.inventory),
                   f"{a.hop}: the client got the SYN-ACK from {a.resp_h}:{a.resp_p}")


def _why_wrong_source(j, rows: list, source: str, inventory: Inventory) -> str:
    """Where the SYN was DNATed to that source without SNAT: the answer went straight back."""
    dnat = sorted((x for x in rows if x.resp_h == source and _seen(x.t_syn) and x.orig_h == j["client_h"]
                   and x.node != j["client_node"]), key=lambda x: x.t_syn)
    if not dnat:
        return ""
    d = dnat[0]
    home = inventory.node_of(source)
    where = ("an endpoint on the client's own node" if home and home == j["client_node"] else
             f"an endpoint on {home}" if home else "that address")
    return (f"; the load balancer sent the SYN to {d.node}, which DNATed it to {source}:{d.resp_p} ({where}) "
            f"without SNAT ({d.hop}: {_tuple(d)}), so the answer went back to the client's address "
            f"directly, never through {d.node}'s reverse NAT")


def reset_by_client(j, rows: list, ctx: Context) -> Failure | None:
    """The client reset a SYN-ACK from the address it called."""
    reset = [x for x in _answer_to_client(rows) if _client_reset(x)]
    if not reset:
        return None
    a = reset[0]
    return Failure(RESET_BY_CLIENT, f"{a.hop}: the SYN-ACK from {a.resp_h}:{a.resp_p}, the address the client "
                   "called, reached it and the client answered with a RST (its socket was gone or it did "
                   "not expect it)", f"{a.hop}: the client's RST")


def reply_lost(j, rows: list, ctx: Context) -> Failure | None:
    """A SYN-ACK seen at one capture point that never reached the client's side."""
    seen = [x for x in rows if _seen(x.t_synack)]
    if not seen or _answer_to_client(rows):
        return None
    last = max(seen, key=lambda x: x.t_synack)
    near = [x for x in rows if x.near]
    nearer = f"the client's side ({near[0].hop})" if near else "the client"
    blind = sorted({x.capture for x in near} & ctx.lossy)
    if blind:
        return Failure(UNKNOWN, f"the SYN-ACK was last seen at {last.hop} ({last.resp_h}:{last.resp_p} -> "
                       f"{last.orig_h}:{last.orig_p}) and not at the client's side, but {', '.join(blind)} "
                       "lost packets: it may have reached the client unseen", f"SYN-ACK last seen at {last.hop}")
    return Failure(REPLY_LOST, f"the SYN-ACK from {last.resp_h}:{last.resp_p} was last seen at {last.hop} "
                   f"({last.resp_h}:{last.resp_p} -> {last.orig_h}:{last.orig_p}) and never at {nearer}: it was "
                   f"lost between {last.hop} and {nearer}",
                   f"between {last.hop} and {nearer}: the SYN-ACK")


def no_reply(j, rows: list, ctx: Context) -> Failure:
    """Nothing answered the SYN: the last point that saw it, and what that node does with it."""
    last = _last_syn(rows)
    if last is None:
        return Failure(UNKNOWN, "no capture point shows the client's SYN (the captures start after it, or "
                       "miss its way)", "not seen")
    at = f"SYN last seen at {last.hop} ({_tuple(last)})"
    where = sorted({x.capture for x in rows} & ctx.lossy)
    if where:
        return Failure(UNKNOWN, f"no capture point shows an answer, but {', '.join(where)} lost packets: an "
                       f"answer may be one it lost ({at})", at)
    asked = _asked_at(rows, str(last.node), j, ctx, last)
    if asked is not None and asked[0] is not None:
        return Failure(DROPPED_BY_RULE, f"{at}; {asked[1]}", f"{asked[2]}: dropped by {last.node}'s rules")
    ev = f"no capture point saw an answer to the SYN; {at}"
    if asked is not None:
        ev += f"; {asked[1]}"
    elif _leaving(last, j):
        ev += (f"; it left {last.node} there and no capture saw it again: lost beyond it (the load balancer, "
               "the network, or a node not captured)")
    return Failure(NO_REPLY, ev, at)


def _last_syn(rows: list):
    """The record where the client's SYN was seen last (clock-corrected), None: no SYN seen."""
    syn = [x for x in rows if _seen(x.t_syn)]
    return max(syn, key=lambda x: x.t_syn) if syn else None


def _leaving(row, j) -> bool:
    """The record's packets were leaving its node (an egress point), as far as the record tells."""
    if row.orig_dir in ("in", "out"):
        return row.orig_dir == "out"
    return row.node == j["client_node"] and bool(UPLINK.match(str(row.point or "")))


# --- the netfilter model, asked about the packet where it was last seen -----------------------

def _asked_at(rows: list, node: str, j, ctx: Context, row=None) -> tuple[str | None, str, str] | None:
    """(the rule that drops or rejects it, the words, the hop) for the client's SYN as it arrived
    at ``node`` (its last sighting there); (None, why not, hop) when the model does not drop it
    or the node drops it by a route; None when nothing can be asked (no arriving SYN, no rules)."""
    if row is None:
        row = _last_syn([x for x in rows if x.node == node])
        if row is None:
            return None
    if _leaving(row, j):
        return None
    rules = ctx.rules_of(node)
    if rules is None:
        return None
    drop = _route_drop(rules, str(row.resp_h))
    if drop:
        return None, f"{node}'s routes drop it: {drop} (ip route)", row.hop
    iface = row.point if isinstance(row.point, str) else None
    try:
        v = rules.explain(str(row.orig_h), str(row.resp_h), int(row.resp_p), proto=str(row.proto),
                          in_iface=iface)
    except NatlensError as exc:
        return None, f"the netfilter model could not walk it on {node}: {exc}", row.hop
    return _dropped(v, node, row, iface)


def _route_drop(rules: NodeRules, dst: str) -> str | None:
    try:
        return rules.route_drop(dst)
    except ValueError:
        return None


def _dropped(v: Verdict, node: str, row, iface: str | None) -> tuple[str | None, str, str]:
    """The model's answer in words: the rule when every way the packet can go ends dropped."""
    asked = f"{node}'s rules, asked about {_tuple(row)} in via {iface or 'its interface'}"
    if v.paths and all(p.outcome == "dropped" for p in v.paths):
        rule = _drop_rule(v.trace)
        why = " (kube-proxy's reject of a Service that has no endpoints)" if no_endpoints_rule(rule) else ""
        return rule, f"{asked}: dropped by {rule}{why}", row.hop
    if v.undecided:
        return None, f"{asked}: undecided ({v.undecided[0]})", row.hop
    return None, f"{asked}: {v.verdict} (no rule drops it)", row.hop


def _drop_rule(trace: list[str]) -> str:
    """The trace line that drops or rejects the packet (the last one saying so), after the line
    that sent it there when that is a jump or goto ("... vmap @no-endpoint-services (verdict
    goto reject-chain) | reject-chain #1 rule reject")."""
    words = ("DROP", "REJECT", "drop", "reject", "dropped")
    lines = [t.strip() for t in trace]
    hits = [i for i, t in enumerate(lines) if any(w in t for w in words) and "no match" not in t
            and "no element" not in t]
    if not hits:
        return "the rules (see the trace)"
    last = hits[-1]
    chain = lines[last].split(" #", 1)[0].rsplit(" ", 1)[-1]
    via = [t for t in lines[:last] if f"goto {chain})" in t or f"jump {chain})" in t or f"-> {chain}" in t]
    return " | ".join([*via[-1:], lines[last]])


def no_endpoints_rule(rule: str) -> bool:
    """Whether a dropping rule is kube-proxy's for a Service without endpoints: its only REJECTs
    (filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES, "has no endpoints") and nftables mode's
    no-endpoint maps."""
    return ("no endpoints" in rule or "no-endpoint" in rule
            or ("REJECT" in rule and ("KUBE-EXTERNAL-SERVICES" in rule or "KUBE-SERVICES" in rule)))


# --- the path ----------------------------------------------------------------------------------

def journey_path(j, rows, inventory: Inventory) -> str:
    """The handshake's way through the capture points: the SYN's, then each answer's."""
    rows = _rows(rows)
    if not rows:
        return ""
    parts = [f"SYN: {_leg(sorted((x for x in rows if _seen(x.t_syn)), key=lambda x: x.t_syn), inventory, 'syn', j)}"]
    ans = sorted((x for x in rows if _seen(x.t_synack)), key=lambda x: x.t_synack)
    if ans:
        leg = f"SYN-ACK from {ans[0].resp_h}:{ans[0].resp_p}: {_leg(ans, inventory, 'answer', j)}"
        reached = [x for x in ans if x.near]
        if reached:
            leg += " -> client" + (", which resets it" if _client_reset(reached[0]) else "")
        parts.append(leg)
    icmp = sorted((x for x in rows if x.icmp_errors > 0 and x.icmp_quotes == "orig"), key=lambda x: x.icmp_ts)
    if icmp:
        e = icmp[0]
        words = icmp_words(int(e.icmp_type), int(e.icmp_code), ":" in str(e.icmp_src))
        parts.append(f"ICMP {words} from {e.icmp_src}: " + " -> ".join(dict.fromkeys(x.hop for x in icmp))
                     + (" -> client" if any(x.near for x in icmp) else ""))
    rst = sorted((x for x in rows if "r" in x.letters), key=lambda x: x.ts_corr)
    if rst and not ans:
        parts.append(f"RST from {rst[0].resp_h}:{rst[0].resp_p}: " + " -> ".join(dict.fromkeys(x.hop for x in rst)))
    return " | ".join(parts)


def _leg(rows: list, inventory: Inventory, kind: str, j) -> str:
    """One packet's hops in time order, with "(DNAT to ...)" / "(SNAT to ...)" where the
    addresses change between two hops, and "LB (...)" where the load balancer changed them."""
    out: list[str] = ["client"] if kind == "syn" and any(x.near for x in rows) else []
    prev = None
    for row in rows:
        now = (row.orig_h, row.orig_p, row.resp_h, row.resp_p)
        if prev is not None and now != prev:
            out.append(_nat_words(prev, now, inventory, kind, j))
        if not out or out[-1] != row.hop:
            out.append(row.hop)
        prev = now
    return " -> ".join(out) if out else "not seen"


def _nat_words(before: tuple, after: tuple, inventory: Inventory, kind: str, j) -> str:
    """What changed between two sightings of one packet, in NAT words."""
    words = []
    if (before[2], before[3]) != (after[2], after[3]):
        to = f"{after[2]}:{after[3]}"
        node = inventory.node_ip(str(after[2]))
        if kind == "syn" and node and f"{before[2]}:{before[3]}" == _called(j):
            words.append(f"LB (DNAT to {node} {to})")
        else:
            words.append(f"(DNAT to {to})" if kind == "syn" else f"(reply from {to})")
    if (before[0], before[1]) != (after[0], after[1]):
        words.append(f"(SNAT to {after[0]}:{after[1]})" if kind == "syn" else f"(reply to {after[0]}:{after[1]})")
    return " ".join(words)
