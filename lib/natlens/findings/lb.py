"""How the load balancer picks a backend, measured from the captures: the finding the loopback's
mechanism and its fixes rest on.

Why: the founding incident's fix (SNAT to the node IP, externalTrafficPolicy Cluster) works only
for a load balancer that never sends a flow back to the backend whose address is its source, as
Tencent's CLB. An AWS NLB with client IP preservation may send a node's own, SNATed connection
back to that node, which drops it on arrival (its source is the node's own address); a proxying
load balancer rewrites the source to its own address, so a connection sent back to its node is
answered through it and works. Which one the incident had is read from the captures, never from
the cloud's name: natlens.cloud says what the provider documents, beside it, as documentation.

One ``LbFinding`` per Service (VIP:port/proto) of the Service journeys:

  behaviour      avoids-source | any-backend | proxy | unknown (natlens.vocab.LB_BEHAVIOURS),
                 with ``evidence``: the journeys and records that decide it, or why nothing does
  node_source    (sent back to the source's node, of): connections that reached the load
                 balancer from a node's own address (SNATed, or a host-network client), among
                 those whose pick is known and whose node was in the pool
  pod_source     (sent to the client's node, of): the same for connections from a pod's address
  rewritten      (arrivals whose source the load balancer rewrote, arrivals whose source is seen)
  chance         the chance that a load balancer picking among the pool's nodes at random would
                 have avoided the source's node in every node-source connection (None: none)
  loops          {loop mode: loopbacks}: how each connection sent back to its own node ended
                 (natlens.vocab.LOOP_MODES), ``failure_mode`` the commonest of the failed ones
  documented     what the provider documents for the Service's load balancer (natlens.cloud's
                 LbProfile: cloud, kind, documented, evidence, note), beside the measurement
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from natlens._grouped import distinct_text
from natlens.inventory import Inventory
from natlens.vocab import (
    ANSWERED_FROM_NODE,
    ANSWERED_VIA_LB,
    ANY_BACKEND,
    AVOIDS_SOURCE,
    DROPPED_ON_ARRIVAL,
    ESTABLISHED,
    FAILED,
    NO,
    PROXY,
    UNKNOWN,
    YES,
    is_failed,
)

# Below this chance, never once picking the source's node is no accident: the load balancer avoids it.
CHANCE_LIMIT = 0.01


@dataclass
class LbFinding:
    """What the captures show of one Service's load balancer; see the module docstring."""

    service: str
    behaviour: str
    evidence: str
    node_source: tuple[int, int] = (0, 0)
    pod_source: tuple[int, int] = (0, 0)
    rewritten: tuple[int, int] = (0, 0)
    chance: float | None = None
    loops: dict[str, int] = field(default_factory=dict)
    failure_mode: str = UNKNOWN
    failure_evidence: str = ""
    examples: dict[str, str] = field(default_factory=dict)  # what -> journey id, for the words
    documented: dict | None = None  # natlens.cloud's LbProfile as a dict: what the provider documents

    @property
    def node_source_loops(self) -> bool:
        """The Service's loopbacks are mostly a node's own connections sent back to it (not pods')."""
        return self.behaviour == ANY_BACKEND and self.node_source[0] >= max(self.pod_source[0], 1)

    def to_dict(self) -> dict:
        """As summary.json's ``lb_behaviour[]`` entry (plain JSON values)."""
        return {"service": self.service, "behaviour": self.behaviour, "evidence": self.evidence,
                "node_source": {"to_source_node": self.node_source[0], "of": self.node_source[1]},
                "pod_source": {"to_client_node": self.pod_source[0], "of": self.pod_source[1]},
                "rewritten": {"rewritten": self.rewritten[0], "of": self.rewritten[1]},
                "chance_if_any_backend": self.chance, "loops": dict(self.loops),
                "failure_mode": self.failure_mode, "failure_mode_evidence": self.failure_evidence or None,
                "documented": dict(self.documented) if self.documented else None}


def lb_findings(journeys: pd.DataFrame, records: pd.DataFrame | None, inventory: Inventory) -> list[LbFinding]:
    """One LbFinding per Service of the Service journeys, in service order."""
    if journeys.empty:
        return []
    picks = lb_picks(journeys, records, inventory)
    captured = distinct_text(records["node"]) if records is not None and len(records) else set()
    return [_finding(str(svc), g, captured) for svc, g in picks.groupby("service", sort=True)]


# the journey columns the load-balancer findings read (the others, lists and long text among
# them, are not copied)
_USED = ["journey", "service", "policy", "vip", "vport", "proto", "client_h", "client_p", "client_node",
         "client_is_node", "snat", "snat_to", "node_dnat", "lb_backend", "lb_backend_evidence", "loopback",
         "loopback_evidence", "outcome"]


def lb_picks(journeys: pd.DataFrame, records: pd.DataFrame | None, inventory: Inventory) -> pd.DataFrame:
    """Per journey that reached the load balancer: the address it reached it from (``left_with``),
    whether that is its node's own (``node_source``), the node picked (``picked``), whether that is
    the source's node, the source the picked node saw (``lb_src``) and whether the load balancer
    rewrote it (``rewritten``: yes / no / unknown), and how a loopback ended (``loop_mode``); with
    the journey columns these are decided from (_USED)."""
    j = journeys[journeys["node_dnat"] != YES] if "node_dnat" in journeys else journeys
    j = j.loc[j["service"].notna(), [c for c in _USED if c in j]]
    j["left_with"] = left_with(j)
    j["node_source"] = _node_of(j["left_with"], inventory).eq(j["client_node"]) & j["client_node"].notna()
    j["picked"] = j["lb_backend"]
    j["to_own"] = j["picked"].notna() & (j["picked"] == j["client_node"])
    arrivals = _arrivals(j, records, inventory)
    j["lb_src"] = j["journey"].map(arrivals["lb_src"]).astype(object)
    j["arrival_answered"] = j["journey"].map(arrivals["answered"]).astype(object)
    j["rewritten"] = rewritten(j, inventory)
    j["answered_elsewhere"] = j["journey"].isin(_answered_elsewhere(j, records))
    loops = j["loopback"] == YES
    j["loop_mode"] = pd.Series([loop_mode(r) for r in j[loops].astype(object).itertuples()],  # Arrow columns
                               index=j.index[loops], dtype=object)                          # iterate slowly
    return j


def _node_of(addresses: pd.Series, inventory: Inventory) -> pd.Series:
    """The node each address is one of the own addresses of (None: none), looked up once per address."""
    nodes = {a: inventory.node_ip(a) for a in addresses.dropna().unique()}
    return addresses.map(nodes).astype(object)


def left_with(j: pd.DataFrame) -> pd.Series:
    """The source address each connection reached the load balancer with: the node's after SNAT
    (``snat_to``'s address), the client's own when not SNATed or when the client is the node
    itself; None: not known (SNAT unknown)."""
    to = j["snat_to"].astype(object)  # no SNAT seen anywhere: all missing, maybe as floats
    to = to.where(to.map(lambda v: isinstance(v, str) and v != ""))
    host = to.str.rsplit(":", n=1).str[0].str.strip("[]")
    own = (j["snat"] == NO) | j["client_is_node"].map(lambda v: v is True or v == True)  # noqa: E712
    out = pd.Series([None] * len(j), index=j.index, dtype=object)
    out[own] = j.loc[own, "client_h"].astype(str)
    snated = (j["snat"] == YES) & host.notna()
    out[snated] = host[snated]
    return out


def _arrivals(j: pd.DataFrame, records: pd.DataFrame | None, inventory: Inventory) -> pd.DataFrame:
    """Per journey (index): the source of its first SYN seen arriving at the picked node's own
    address (the load balancer's DNAT to nodeIP:NodePort), ``lb_src``, and whether a SYN-ACK
    answered it there, ``answered``; journeys no capture shows arriving are not in it."""
    empty = pd.DataFrame(columns=["lb_src", "answered"])
    if records is None or records.empty:
        return empty
    want = j.loc[j["picked"].notna(), ["journey", "picked"]]
    r = records[records["journey"].isin(want["journey"]) & records["syn_ts"].notna()].merge(want, on="journey")
    r = r[(_node_of(r["resp_h"].astype(object), inventory) == r["picked"]) & (r["node"] == r["picked"])]
    if r.empty:
        return empty
    r = r.sort_values("ts_corr" if "ts_corr" in r else "ts").drop_duplicates("journey")
    return pd.DataFrame({"lb_src": r["orig_h"].astype(str).to_numpy(),
                         "answered": r["synack_ts"].notna().to_numpy()}, index=r["journey"].to_numpy())


def rewritten(j: pd.DataFrame, inventory: Inventory) -> pd.Series:
    """yes: the picked node saw another source (``lb_src``) than the one the connection left its
    node with; no: the same; unknown: the arrival is not seen. With the SNAT unknown, the pod's
    address or its node's arriving is no rewrite, and anything else is unknown."""
    src, left = j["lb_src"], j["left_with"]
    seen, known = src.notna(), left.notna()
    kept = (src == j["client_h"].astype(str)) | (_node_of(src, inventory).eq(j["client_node"])
                                                 & j["client_node"].notna())
    out = pd.Series(UNKNOWN, index=j.index, dtype=object)
    out[seen & known] = np.where(src[seen & known] == left[seen & known], NO, YES)
    out[seen & ~known & kept] = NO
    return out


def _answered_elsewhere(j: pd.DataFrame, records: pd.DataFrame | None) -> set[str]:
    """The journeys whose client got a SYN-ACK from another address than the VIP it called, on
    its own node (a looped-back SYN answered by the node from nodeIP:NodePort)."""
    if records is None or records.empty:
        return set()
    r = records[records["synack_ts"].notna()].merge(
        j[["journey", "client_node", "client_h", "client_p", "vip"]], on="journey")
    hit = r[(r["node"] == r["client_node"]) & (r["orig_h"] == r["client_h"]) & (r["orig_p"] == r["client_p"])
            & (r["resp_h"] != r["vip"])]
    return set(hit["journey"])


def loop_mode(j) -> str:
    """How a connection the load balancer sent back to its own node ended (a named decision on
    one row of ``lb_picks``): answered via the load balancer (it rewrote the source and the
    handshake completed); dropped on arrival (it came back from the node's own address and
    nothing answered it there: Linux drops a packet whose source is one of its own addresses as
    a martian); answered from the node (from a pod's address: the client got a SYN-ACK from
    another address than the VIP, the node's NodePort, and the connect failed); else unknown."""
    failed = j.outcome in FAILED
    if j.rewritten == YES and j.outcome == ESTABLISHED:
        return ANSWERED_VIA_LB
    if failed and j.node_source and j.rewritten == NO and j.arrival_answered is False:
        return DROPPED_ON_ARRIVAL
    if failed and not j.node_source and j.answered_elsewhere:
        return ANSWERED_FROM_NODE
    return UNKNOWN


def _finding(svc: str, g: pd.DataFrame, captured: set[str]) -> LbFinding:
    """The behaviour of one Service's load balancer from its journeys' picks. A connection from a
    node's own address counts only where it could have been seen coming back: its node is
    captured, its pick is known, and its node is in the pool (the nodes the load balancer sent the
    Service's connections to; under Cluster every node)."""
    pool = set(g.loc[g["picked"].notna(), "picked"].astype(str))
    cluster = (g["policy"] == "Cluster").any()
    ns_all = g[g["node_source"]]
    ns = ns_all[ns_all["picked"].notna() & ns_all["client_node"].isin(captured)
                & (ns_all["client_node"].isin(pool) | cluster)]
    pods = g[~g["node_source"] & g["left_with"].notna() & g["picked"].notna()]
    seen = g[g["rewritten"] != UNKNOWN]
    f = LbFinding(svc, UNKNOWN, "", (int(ns["to_own"].sum()), len(ns)), (int(pods["to_own"].sum()), len(pods)),
                  (int((seen["rewritten"] == YES).sum()), len(seen)))
    full = pool | (set(ns["client_node"].astype(str)) if cluster else set())
    f.chance = _chance(ns, full)
    f.behaviour, f.evidence, f.examples = behaviour(g, ns, seen, f.chance, len(full))
    if f.behaviour == UNKNOWN and len(ns_all) > len(ns) and not len(ns) and not f.rewritten[0]:
        f.evidence = _not_counted(ns_all, captured, pool, cluster)
    elif f.behaviour == AVOIDS_SOURCE and len(ns_all) > len(ns):
        f.behaviour, f.evidence = UNKNOWN, (f"{f.evidence}; but {len(ns_all) - len(ns)} more came from a node's own "
                                            "address where the captures cannot show where it went: "
                                            + _not_counted(ns_all.drop(ns.index), captured, pool, cluster))
    _loops(f, g)
    return f


def _not_counted(ns: pd.DataFrame, captured: set[str], pool: set[str], cluster: bool) -> str:
    """Why connections from a node's own address tell nothing of the load balancer's pick."""
    blind = sorted(set(ns["client_node"].astype(str)) - captured)
    if blind:
        return (f"{len(ns)} connections came from a node's own address, but {', '.join(blind)} has no capture, so "
                "one sent back to it cannot be seen")
    if ns["picked"].isna().any():
        return (f"{len(ns)} connections came from a node's own address, but where the load balancer sent "
                f"{int(ns['picked'].isna().sum())} of them no capture shows")
    nodes = ", ".join(sorted(set(ns["client_node"].astype(str)) - pool))
    return (f"{len(ns)} connections came from a node's own address, but their node ({nodes}) may not be in the load "
            "balancer's pool: no connection of this Service was sent to it, and its policy is not known to be "
            "Cluster (under which every node is)")


def _chance(ns: pd.DataFrame, pool: set[str]) -> float | None:
    """The chance that picking uniformly among ``pool`` avoids the source's node every time."""
    if ns.empty or len(pool) < 2:
        return None
    return (1 - 1 / len(pool)) ** len(ns)


def behaviour(g: pd.DataFrame, ns: pd.DataFrame, seen: pd.DataFrame, chance: float | None,
              pool_size: int) -> tuple[str, str, dict[str, str]]:
    """The named decision: (behaviour, evidence, example journeys). proxy: every arrival whose
    source is seen has one the load balancer rewrote; any-backend: a connection from a node's own
    address was sent to that node; avoids-source: none of enough such connections was (the
    chance of that at random is below CHANCE_LIMIT); else unknown, saying why."""
    re_ = seen[seen["rewritten"] == YES]
    if len(re_) and len(re_) == len(seen):
        x = re_.iloc[0]
        return PROXY, (f"{len(re_)} of {len(seen)} connections seen arriving at a node came from an address "
                       f"the load balancer (or a NAT between it and the nodes) put there ({x['journey']}: left as {x['left_with']}, arrived at "
                       f"{x['picked']} from {x['lb_src']})"), {"rewritten": str(x["journey"])}
    if len(re_):
        return UNKNOWN, (f"{len(re_)} of {len(seen)} arrivals had their source rewritten, the others not: "
                         "two kinds of load balancer (or of listener) in one Service?"), {}
    back = ns[ns["to_own"]]
    if len(back):
        x = back.iloc[0]
        return ANY_BACKEND, (f"{len(back)} of {len(ns)} connections from a node's own address were sent back to "
                             f"that node ({x['journey']}: left {x['client_node']} as {x['left_with']}, the load "
                             f"balancer sent it to {x['picked']}: {x['lb_backend_evidence']})"), \
            {"node_source_loop": str(x["journey"])}
    if chance is not None and chance < CHANCE_LIMIT:
        return AVOIDS_SOURCE, (f"none of {len(ns)} connections from a node's own address was sent back to that "
                               f"node; a load balancer picking among the {pool_size} nodes at random for each "
                               f"connection would have done so at least once with a probability of "
                               f"{_percent(1 - chance)} (one that hashes only the source address, or keeps "
                               "affinity to it, picks once per node and is not told apart)"), {}
    if len(ns):
        return UNKNOWN, (f"none of {len(ns)} connections from a node's own address was sent back to that node, "
                         f"but with so few that is no proof (by chance alone: {chance:.0%})" if chance is not None
                         else f"{len(ns)} connections from a node's own address, and no other node in the pool "
                         "the captures show"), {}
    if g["left_with"].notna().any() and not g["node_source"].any():
        return UNKNOWN, ("every connection reached the load balancer from a pod's address, which it cannot tell "
                         "from any other: any load balancer may send those back to the client's node, so the "
                         "captures do not show whether it avoids a node's own address"), {}
    if not g["left_with"].notna().any():
        return UNKNOWN, "no capture shows the source the connections reached the load balancer with", {}
    return UNKNOWN, "no capture shows where the load balancer sent the connections", {}


def _percent(p: float) -> str:
    """'99.7%', or 'more than 99.9%' (never a rounded 100%)."""
    return "more than 99.9%" if p > 0.999 else f"{p:.1%}"


def _loops(f: LbFinding, g: pd.DataFrame) -> None:
    """The loop modes of the Service's loopbacks, and the commonest among the failed ones."""
    loops = g[g["loopback"] == YES]
    f.loops = dict(Counter(loops["loop_mode"].astype(str)).most_common())
    failed = loops[is_failed(loops["outcome"])]
    if failed.empty:  # none failed: answered through the load balancer only if every one was seen so
        f.failure_mode = ANSWERED_VIA_LB if len(loops) and set(f.loops) == {ANSWERED_VIA_LB} else UNKNOWN
        return
    decided = Counter(m for m in failed["loop_mode"].astype(str) if m != UNKNOWN)  # a lost packet decides none
    if not decided:
        f.failure_mode = UNKNOWN
        f.failure_evidence = f"none of the {len(failed)} failed loopbacks shows how it ended"
        return
    mode, n = decided.most_common(1)[0]
    x = failed[failed["loop_mode"] == mode].iloc[0]
    f.failure_mode = mode
    f.failure_evidence = f"{n} of {len(failed)} failed loopbacks ({x['journey']}: {x['loopback_evidence']})"
    f.examples.setdefault(mode, str(x["journey"]))
