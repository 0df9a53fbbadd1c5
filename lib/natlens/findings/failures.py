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
    out = pd.DataFrame({c: pd.Series(None, index=journeys.index, dtype=object) for c in FAILURE_COLUMNS})
    failed = journeys[is_failed(journeys["outcome"])]
    if failed.empty:
        return out
    recs = sightings(records[records["journey"].isin(failed["journey"])] if records is not None
                     else pd.DataFrame(columns=["journey"]), failed)
    groups = {k: g for k, g in recs.groupby("journey", sort=False)} if len(recs) else {}
    empty = recs.iloc[0:0]
    for idx, j in failed.iterrows():
        r = groups.get(j["journey"], empty)
        f = classify_failure(j, r, ctx)
        out.loc[idx] = [f.mechanism, f.evidence, f.at, journey_path(j, r, ctx.inventory)]
    return out.astype(object).where(out.notna(), None)


def classify_failure(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure:
    """The first of the rules (module docstring) that the journey's records show."""
    if r.empty:
        return Failure(UNKNOWN, "no connection record of it in the captures", "not seen")
    for rule in (loopback, icmp_error, refused, wrong_source_reply, reset_by_client, reply_lost):
        f = rule(j, r, ctx)
        if f is not None:
            return f
    return no_reply(j, r, ctx)


# --- the records of one journey, as sightings of its handshake's packets ----------------------

def sightings(records: pd.DataFrame, journeys: pd.DataFrame) -> pd.DataFrame:
    """The journeys' records with what the rules read: the hop label, the clock-corrected
    times of the first SYN and SYN-ACK seen there, and whether the point is the client's side."""
    if records.empty:
        return records.assign(hop=pd.Series(dtype=object), t_syn=pd.Series(dtype=float),
                              t_synack=pd.Series(dtype=float), near=pd.Series(dtype=bool))
    r = records.copy()
    shift = r["ts_corr"].astype(float) - r["ts"].astype(float)
    r["t_syn"] = r["syn_ts"].astype(float) + shift
    r["t_synack"] = r["synack_ts"].astype(float) + shift
    r["hop"] = hop_labels(r)
    key = r["journey"].map(client_side(r, journeys))
    r["near"] = [isinstance(k, tuple) and (c, i) == k for k, c, i in zip(key, r["capture"], r["iface"], strict=True)]
    r["letters"] = r["history"].fillna("").astype(str)
    return r.sort_values(["journey", "ts_corr"], kind="stable")


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
    side = pd.Series([(c, i) for c, i in zip(best["capture"], best["iface"], strict=True)],
                     index=best["journey"].to_numpy(), dtype=object)
    where = r.set_index("uid")[["capture", "iface"]]
    own = j["client_uid"].map(lambda u: tuple(where.loc[u]) if isinstance(u, str) and u in where.index else None)
    return side.reindex(j.index).where(lambda x: x.notna(), own)


def hop_labels(r: pd.DataFrame) -> pd.Series:
    """"node-1 eth0" where the interface is known, else the capture's label ("node-1/any")."""
    point = r["point"] if "point" in r else pd.Series(None, index=r.index, dtype=object)
    tail = r["capture"].astype(str).str.rsplit("/", n=1).str[-1]
    name = point.where(point.notna(), tail.where(tail != "any"))
    return pd.Series(np.where(name.notna(), r["node"].astype(str) + " " + name.fillna("").astype(str),
                              r["capture"].astype(str)), index=r.index, dtype=object)


def _tuple(row) -> str:
    return f"{row.orig_h}:{row.orig_p} -> {row.resp_h}:{row.resp_p}"


def _called(j: pd.Series) -> str:
    return f"{j['vip']}:{int(j['vport'])}" if not pd.isna(j["vport"]) else str(j["vip"])


def _answer_to_client(r: pd.DataFrame) -> pd.DataFrame:
    """The client's side's records that saw a SYN-ACK, earliest first."""
    return r[r["near"] & r["t_synack"].notna()].sort_values("t_synack")


def _client_reset(row) -> bool:
    """The client reset what it got at that point (its RST after the SYN-ACK)."""
    h = row.letters
    return "R" in h and "h" in h and h.index("R") > h.index("h")


# --- the rules, in order ---------------------------------------------------------------------

def loopback(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """The load balancer sent it back to the client's own node; how it then failed."""
    if j.get("loopback") != YES:
        return None
    got = _answer_to_client(r)
    if len(got):
        a = got.iloc[0]
        how = (f"the SYN-ACK reached the client at {a.hop} from {a.resp_h}:{a.resp_p}, not from "
               f"{_called(j)}, the address it called" + (", and the client reset it" if _client_reset(a) else ""))
        at = f"{a.hop}: the client got the SYN-ACK from {a.resp_h}:{a.resp_p}"
    else:
        last = _last_syn(r)
        how = "no answer reached the client"
        at = f"SYN last seen at {last.hop} ({_tuple(last)})" if last is not None else "not seen"
    return Failure(LOOPBACK, f"{j['loopback_evidence']}; {how}", at)


def icmp_error(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """An ICMP error about the client's packet: dropped-by-rule when the rules of the node that
    sent it reject that packet, else unreachable."""
    if "icmp_errors" not in r:
        return None
    hit = r[(r["icmp_errors"].fillna(0) > 0) & (r["icmp_quotes"] == "orig")]
    hit = hit[[icmp_ends_connect(t, c, ":" in str(s)) for t, c, s in zip(hit["icmp_type"], hit["icmp_code"],
                                                                         hit["icmp_src"], strict=True)]]
    if hit.empty:
        return None
    e = hit.sort_values("icmp_ts").iloc[0]
    words = icmp_words(int(e["icmp_type"]), int(e["icmp_code"]), ":" in str(e["icmp_src"]))
    seen = f"ICMP {words} from {e['icmp_src']} about the client's packet {_tuple(e)}, seen at {e['hop']}"
    node = ctx.inventory.node_ip(str(e["icmp_src"])) or _node_of_hop(r, e)
    asked = _asked_at(r, node, j, ctx) if node else None
    if asked is not None and asked[0] is not None:
        return Failure(DROPPED_BY_RULE, f"{seen}; {asked[1]}", f"{asked[2]}: rejected by {node}'s rules")
    why = f"; {asked[1]}" if asked is not None else ""
    return Failure(UNREACHABLE, seen + why, f"{e['hop']}: ICMP {words} from {e['icmp_src']}")


def refused(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """A RST from the server side answered the SYN (Zeek's lower-case r before any handshake)."""
    rst = r[r["letters"].str.contains("r", regex=False) & ~r["established"].fillna(False).astype(bool)]
    if rst.empty:
        return None
    called = _called(j)
    # the sighting nearest the server: after the NAT, where it still comes from the endpoint itself
    beyond = rst[[f"{h}:{p}" != called for h, p in zip(rst["resp_h"], rst["resp_p"], strict=True)]]
    first = (beyond if len(beyond) else rst).sort_values("ts_corr").iloc[-1 if len(beyond) else 0]
    near = rst[rst["near"]]
    reached = (f"; it reached the client at {near.iloc[0].hop} from {near.iloc[0].resp_h}:{near.iloc[0].resp_p}"
               if len(near) and near.iloc[0].hop != first.hop else "")
    return Failure(REFUSED, f"{first.hop}: the SYN to {first.resp_h}:{first.resp_p} was answered by a RST "
                   f"from {first.resp_h}:{first.resp_p} (nothing listening, or a reset by the server's side)"
                   f"{reached}", f"{first.hop}: RST from {first.resp_h}:{first.resp_p}")


def wrong_source_reply(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """A SYN-ACK reached the client from another address:port than the one it called."""
    got = _answer_to_client(r)
    called = _called(j)
    wrong = got[[f"{h}:{p}" != called for h, p in zip(got["resp_h"], got["resp_p"], strict=True)]]
    if wrong.empty:
        return None
    a = wrong.iloc[0]
    ev = (f"the SYN-ACK reached the client at {a.hop} from {a.resp_h}:{a.resp_p}, not from {called}, the "
          "address it called" + (", and the client reset it" if _client_reset(a) else ""))
    return Failure(WRONG_SOURCE_REPLY, ev + _why_wrong_source(j, r, f"{a.resp_h}", ctx.inventory),
                   f"{a.hop}: the client got the SYN-ACK from {a.resp_h}:{a.resp_p}")


def _why_wrong_source(j: pd.Series, r: pd.DataFrame, source: str, inventory: Inventory) -> str:
    """Where the SYN was DNATed to that source without SNAT: the answer went straight back."""
    dnat = r[(r["resp_h"] == source) & r["t_syn"].notna() & (r["orig_h"] == j["client_h"])
             & (r["node"] != j["client_node"])].sort_values("t_syn")
    if dnat.empty:
        return ""
    d = dnat.iloc[0]
    home = inventory.node_of(source)
    where = ("an endpoint on the client's own node" if home and home == j["client_node"] else
             f"an endpoint on {home}" if home else "that address")
    return (f"; the load balancer sent the SYN to {d.node}, which DNATed it to {source}:{d.resp_p} ({where}) "
            f"without SNAT ({d.hop}: {_tuple(d)}), so the answer went back to the client's address "
            f"directly, never through {d.node}'s reverse NAT")


def reset_by_client(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """The client reset a SYN-ACK from the address it called."""
    got = _answer_to_client(r)
    reset = got[[_client_reset(a) for a in got.itertuples()]]
    if reset.empty:
        return None
    a = reset.iloc[0]
    return Failure(RESET_BY_CLIENT, f"{a.hop}: the SYN-ACK from {a.resp_h}:{a.resp_p}, the address the client "
                   "called, reached it and the client answered with a RST (its socket was gone or it did "
                   "not expect it)", f"{a.hop}: the client's RST")


def reply_lost(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure | None:
    """A SYN-ACK seen at one capture point that never reached the client's side."""
    seen = r[r["t_synack"].notna()]
    if seen.empty or r["near"].any() and _answer_to_client(r).shape[0]:
        return None
    last = seen.sort_values("t_synack").iloc[-1]
    nearer = _client_side_label(j, r)
    blind = sorted({c for c in r.loc[r["near"], "capture"]} & ctx.lossy)
    if blind:
        return Failure(UNKNOWN, f"the SYN-ACK was last seen at {last.hop} ({last.resp_h}:{last.resp_p} -> "
                       f"{last.orig_h}:{last.orig_p}) and not at the client's side, but {', '.join(blind)} "
                       "lost packets: it may have reached the client unseen", f"SYN-ACK last seen at {last.hop}")
    return Failure(REPLY_LOST, f"the SYN-ACK from {last.resp_h}:{last.resp_p} was last seen at {last.hop} "
                   f"({last.resp_h}:{last.resp_p} -> {last.orig_h}:{last.orig_p}) and never at {nearer}: it was "
                   f"lost between {last.hop} and {nearer}",
                   f"between {last.hop} and {nearer}: the SYN-ACK")


def _client_side_label(j: pd.Series, r: pd.DataFrame) -> str:
    """The client's side's capture point, or "the client" when none is captured."""
    near = r[r["near"]]
    return f"the client's side ({near.iloc[0].hop})" if len(near) else "the client"


def no_reply(j: pd.Series, r: pd.DataFrame, ctx: Context) -> Failure:
    """Nothing answered the SYN: the last point that saw it, and what that node does with it."""
    last = _last_syn(r)
    if last is None:
        return Failure(UNKNOWN, "no capture point shows the client's SYN (the captures start after it, or "
                       "miss its way)", "not seen")
    at = f"SYN last seen at {last.hop} ({_tuple(last)})"
    where = sorted(set(r["capture"]) & ctx.lossy)
    if where:
        return Failure(UNKNOWN, f"no capture point shows an answer, but {', '.join(where)} lost packets: an "
                       f"answer may be one it lost ({at})", at)
    asked = _asked_at(r, str(last.node), j, ctx, last)
    if asked is not None and asked[0] is not None:
        return Failure(DROPPED_BY_RULE, f"{at}; {asked[1]}", f"{asked[2]}: dropped by {last.node}'s rules")
    ev = f"no capture point saw an answer to the SYN; {at}"
    if asked is not None:
        ev += f"; {asked[1]}"
    elif _leaving(last, j):
        ev += (f"; it left {last.node} there and no capture saw it again: lost beyond it (the load balancer, "
               "the network, or a node not captured)")
    return Failure(NO_REPLY, ev, at)


def _last_syn(r: pd.DataFrame):
    """The record where the client's SYN was seen last (clock-corrected), None: no SYN seen."""
    syn = r[r["t_syn"].notna()]
    return syn.sort_values("t_syn").iloc[-1] if len(syn) else None


def _node_of_hop(r: pd.DataFrame, e) -> str | None:
    """The node whose capture saw the ICMP error, when it is not from a node's address."""
    return None if e is None else str(e["node"])


def _leaving(row, j: pd.Series) -> bool:
    """The record's packets were leaving its node (an egress point), as far as the record tells."""
    if row.get("orig_dir") in ("in", "out"):
        return row.get("orig_dir") == "out"
    return row.node == j["client_node"] and bool(UPLINK.match(str(row.get("point") or "")))


# --- the netfilter model, asked about the packet where it was last seen -----------------------

def _asked_at(r: pd.DataFrame, node: str, j: pd.Series, ctx: Context,
              row=None) -> tuple[str | None, str, str] | None:
    """(the rule that drops or rejects it, the words, the hop) for the client's SYN as it arrived
    at ``node`` (its last sighting there); (None, why not, hop) when the model does not drop it
    or the node drops it by a route; None when nothing can be asked (no arriving SYN, no rules)."""
    if row is None:
        there = r[(r["node"] == node) & r["t_syn"].notna()]
        if there.empty:
            return None
        row = there.sort_values("t_syn").iloc[-1]
    if _leaving(row, j):
        return None
    rules = ctx.rules_of(node)
    if rules is None:
        return None
    drop = _route_drop(rules, str(row.resp_h))
    if drop:
        return None, f"{node}'s routes drop it: {drop} (ip route)", row.hop
    iface = row.get("point") if isinstance(row.get("point"), str) else None
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

def journey_path(j: pd.Series, r: pd.DataFrame, inventory: Inventory) -> str:
    """The handshake's way through the capture points: the SYN's, then each answer's."""
    if r.empty:
        return ""
    parts = [f"SYN: {_leg(r[r['t_syn'].notna()].sort_values('t_syn'), inventory, 'syn', j)}"]
    ans = r[r["t_synack"].notna()].sort_values("t_synack")
    if len(ans):
        a = ans.iloc[0]
        leg = f"SYN-ACK from {a.resp_h}:{a.resp_p}: {_leg(ans, inventory, 'answer', j)}"
        reached = ans[ans["near"]]
        if len(reached):
            leg += " -> client" + (", which resets it" if _client_reset(reached.iloc[0]) else "")
        parts.append(leg)
    if "icmp_errors" in r:
        icmp = r[(r["icmp_errors"].fillna(0) > 0) & (r["icmp_quotes"] == "orig")].sort_values("icmp_ts")
        if len(icmp):
            e = icmp.iloc[0]
            words = icmp_words(int(e["icmp_type"]), int(e["icmp_code"]), ":" in str(e["icmp_src"]))
            parts.append(f"ICMP {words} from {e['icmp_src']}: " + " -> ".join(dict.fromkeys(icmp["hop"]))
                         + (" -> client" if icmp["near"].any() else ""))
    rst = r[r["letters"].str.contains("r", regex=False)]
    if len(rst) and not len(ans):
        parts.append(f"RST from {rst.iloc[0].resp_h}:{rst.iloc[0].resp_p}: "
                     + " -> ".join(dict.fromkeys(rst.sort_values("ts_corr")["hop"])))
    return " | ".join(parts)


def _leg(rows: pd.DataFrame, inventory: Inventory, kind: str, j: pd.Series) -> str:
    """One packet's hops in time order, with "(DNAT to ...)" / "(SNAT to ...)" where the
    addresses change between two hops, and "LB (...)" where the load balancer changed them."""
    out: list[str] = ["client"] if kind == "syn" and rows["near"].any() else []
    prev = None
    for row in rows.itertuples():
        now = (row.orig_h, row.orig_p, row.resp_h, row.resp_p)
        if prev is not None and now != prev[0]:
            out.append(_nat_words(prev[0], now, inventory, kind, j))
        if not out or out[-1] != row.hop:
            out.append(row.hop)
        prev = (now, row.hop)
    return " -> ".join(out) if out else "not seen"


def _nat_words(before: tuple, after: tuple, inventory: Inventory, kind: str, j: pd.Series) -> str:
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
