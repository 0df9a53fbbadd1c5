"""The decisions about each journey: SNAT, the load balancer's pick, loopback, outcome.

Why: each is a rule a customer may question, so each is one function that returns a
``Decision`` (a value from natlens.vocab plus the evidence for it, per journey) and can
be tested on a hand-built records table. What the records do not show is "unknown"
with the reason, never a guess.

Every function takes the placed records (``client.place_records``: one row per
connection record with its journey ``jn``, time ``_t``, ``pre_lb``, ``on_client``,
``egress``, ``from_client``, ``hop`` and the journey's client as ``j_*`` columns) and
the client table (index: journey number).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from natlens._grouped import concat_rows, distinct_text
from natlens.inventory import BRIDGE, Inventory
from natlens.journeys.client import first_per_journey
from natlens.journeys.evidence import (
    icmp_said,
    missed_syns,
    nearness,
    observations,
    point_label,
    refused,
    wrong_answers,
)
from natlens.netfilter.conntrack import Entry
from natlens.vocab import (
    ANSWERED,
    END_CAPTURE,
    END_TIMEOUT,
    ESTABLISHED,
    NO,
    RESET,
    TIMED_OUT,
    UNANSWERED,
    UNKNOWN,
    YES,
)


@dataclass
class Decision:
    """One decision for every journey (index: journey number): ``value`` and ``evidence``, plus
    named ``detail`` series that belong to it (e.g. SNAT's ``snat_to``)."""

    value: pd.Series
    evidence: pd.Series
    detail: dict[str, pd.Series] = field(default_factory=dict)

    def columns(self, name: str) -> dict[str, pd.Series]:
        """The journey columns of this decision: name, <name>_evidence and the details."""
        return {name: self.value, f"{name}_evidence": self.evidence, **self.detail}


def _first_evidence(r: pd.DataFrame, mask: pd.Series, text: pd.Series) -> pd.Series:
    """Per journey, the text of its earliest record where mask holds."""
    return first_per_journey(r.loc[mask, ["jn", "_t"]].assign(_ev=text[mask]))["_ev"]


def _not_host_network(r: pd.DataFrame) -> pd.Series:
    return ~r["j_client_is_node"].fillna(False).astype(bool)


def pod_source(cl: pd.DataFrame, inventory: Inventory) -> pd.Series:
    """Per journey: the client's source is known not to be its node's IP (a pod IP, or a
    node whose IP is known and differs), so leaving with it means no SNAT."""
    pods = {h: inventory.is_pod_ip(h) for h in cl["client_h"].dropna().unique()}
    is_pod = cl["client_h"].map(pods).fillna(False).astype(bool)
    return is_pod | (cl["client_node_ip"].notna() & (cl["client_node_ip"] != cl["client_h"]))


def classify_snat(r: pd.DataFrame, cl: pd.DataFrame, inventory: Inventory,
                  node_dnat: Decision | None = None) -> Decision:
    """yes / no / unknown: did the connection leave the client's node with the node's IP?

    yes: a record on the client's node (or after it) to the VIP from the node's IP; no: one
    that left the node's NIC (or arrived elsewhere) with the pod's own IP. A connection the
    client's node DNATed itself (``node_dnat`` yes) is judged by its records after that
    DNAT on the node: from the pod's IP (no) or the node's (yes). ``snat_to`` is the
    address:port it left with.
    """
    pod_src = pod_source(cl, inventory)
    pod_r = r["jn"].map(pod_src).fillna(False).astype(bool)
    own, node_ip = r["orig_h"] == r["j_client_h"], r["orig_h"] == r["j_client_node_ip"]
    here, ok = r["pre_lb"] & r["on_client"], _not_host_network(r)
    away = ~r["on_client"] & ~r["pre_lb"]
    yes_here, yes_away = here & node_ip & ok, away & node_ip & ok
    mine = r["jn"].isin(node_dnat.value.index[node_dnat.value == YES]) if node_dnat is not None \
        else pd.Series(False, index=r.index)
    dnat_here = mine & r["on_client"] & ~r["pre_lb"] & ok
    # after the node's DNAT: a source other than the pod's was rewritten (a masquerade); the pod's
    # own source past the bridge (a veth, the NIC: after POSTROUTING) was not
    rewritten = dnat_here & (r["orig_h"] != r["j_client_h"])
    point = r["point"] if "point" in r else pd.Series(None, index=r.index, dtype=object)
    kept = dnat_here & own & pod_r & ~point.fillna("").astype(str).str.match(BRIDGE)
    yes_here |= rewritten
    ev = ((away & own & pod_r & ok, NO, " (arrived with the client pod's IP)"),
          (yes_away, YES, " (arrived from the client node's IP)"),
          (kept, NO, " (DNATed on the client's node, still from the pod IP past its bridge)"),
          (here & r["egress"] & own & pod_r & ok, NO, " (left the node's NIC with the pod IP)"),
          (rewritten, YES, " (DNATed on the client's node and SNATed there)"),
          (yes_here & ~rewritten, YES, " (left with the node IP)"))
    value = pd.Series(UNKNOWN, index=cl.index)
    evidence = pd.Series(None, index=cl.index, dtype=object)
    for mask, val, why in ev:  # later rows win: evidence on the client's node beats evidence after it
        e = _first_evidence(r, mask, r["hop"] + why)
        value.loc[e.index], evidence.loc[e.index] = val, e
    snat_to = _first_evidence(r, yes_here | yes_away, r["orig_h"] + ":" + r["orig_p"].astype(str))
    snat_to = snat_to.reindex(cl.index).where(value == YES, None)
    after = _first_evidence(r, dnat_here, r["hop"]).reindex(cl.index[value == UNKNOWN]).dropna()
    evidence.loc[after.index] = after + (" (DNATed on the client's node; its source there is neither the pod's "
                                         "IP nor the node's InternalIP: another address of the node?)")
    _why_unknown(evidence, value, cl, pod_src)
    return Decision(value, evidence, {"snat_to": snat_to})


def _why_unknown(evidence: pd.Series, value: pd.Series, cl: pd.DataFrame, pod_src: pd.Series) -> None:
    """The reason for every SNAT left unknown (filled into evidence in place)."""
    host = cl["client_is_node"].fillna(False).astype(bool)
    evidence.loc[host & (value == UNKNOWN)] = (
        "the first capture point already shows the node's IP as the source: SNATed on the way, or a "
        "host-network client; a pod-side or `any` capture would tell")
    src_unknown = evidence.isna() & ~pod_src & ~host
    evidence.loc[src_unknown] = concat_rows([
        "the source ", cl.loc[src_unknown, "client_h"].astype(str), " is neither a known pod IP "
        "nor a node IP natlens knows (no cluster/, no ip-addr dump): the pod's or the node's address?"])
    evidence.loc[evidence.isna()] = "no capture shows the connection after it left the client's node"


ConntrackTables = dict[str, tuple[str, list[Entry]]]  # node -> (dump file name, entries)
CaptureSpans = dict[str, tuple[float, float]]  # capture label -> (first, last packet time)


def snat_from_conntrack(snat: Decision, cl: pd.DataFrame, conntrack: ConntrackTables
                        ) -> tuple[Decision, pd.DataFrame]:
    """SNAT from the client node's conntrack dump where the captures cannot decide.

    A capture on the node's NIC alone shows a SNATed pod's connection only as
    nodeIP:port -> VIP. The node's conntrack entry for it (reply tuple towards that
    nodeIP:port) names the pod that opened it, or shows the node itself did. Returns the
    new decision and, for journeys whose client it names, the corrected ``client_h``,
    ``client_p`` and ``client_is_node``.
    """
    value, evidence = snat.value.copy(), snat.evidence.copy()
    snat_to = snat.detail["snat_to"].copy()
    fixes: dict[int, dict] = {}
    todo = cl.index[cl["client_is_node"].fillna(False).astype(bool) & (value == UNKNOWN)]
    index: dict[str, dict] = {}
    for j in todo:
        row = cl.loc[j]
        if row["client_node"] not in conntrack or pd.isna(row["client_p"]) or pd.isna(row["vport"]):
            continue
        name, entries = conntrack[row["client_node"]]
        key = (row["proto"], row["client_h"], int(row["client_p"]), row["vip"], int(row["vport"]))
        found = _reply_index(index, row["client_node"], entries).get(key)
        if not found:
            continue
        val, ev, to, fix = _conntrack_says(name, key, found)
        evidence.loc[j] = ev
        if val is not None:
            value.loc[j], snat_to.loc[j], fixes[j] = val, to, fix
    fixed = pd.DataFrame.from_dict(fixes, orient="index",
                                   columns=["client_h", "client_p", "client_is_node"])
    return Decision(value, evidence, {"snat_to": snat_to}), fixed


def _reply_index(index: dict[str, dict], node: str, entries: list[Entry]) -> dict:
    """The node's entries by (proto, reply dst, reply dport, orig dst, orig dport), built once."""
    if node not in index:
        index[node] = {}
        for e in entries:
            index[node].setdefault((e.proto, e.reply[1], e.reply[3], e.orig[1], e.orig[3]), []).append(e)
    return index[node]


def _conntrack_says(name: str, key: tuple, found: list[Entry]):
    """(value or None, evidence, snat_to, client fix) from the entries for one journey's tuple."""
    # one tuple twice (an old TIME_WAIT entry and a new one): decide only if they agree
    if len({(e.orig[0], e.orig[2], bool(e.snat)) for e in found}) > 1:
        return None, (f"{name}:" + ",".join(str(e.line) for e in found) + f": entries for "
                      f"{key[1]}:{key[2]} -> {key[3]}:{key[4]} name different clients; the dump cannot "
                      "tell which is this connection"), None, None
    e = found[-1]
    where = f"{name}:{e.line}"
    if e.snat:
        return YES, (f"{where}: {e.orig[0]}:{e.orig[2]} -> {e.orig[1]}:{e.orig[3]} left as "
                     f"{e.reply[1]}:{e.reply[3]} (the node's conntrack entry: SNATed)"), \
            f"{e.reply[1]}:{e.reply[3]}", {"client_h": e.orig[0], "client_p": e.orig[2],
                                           "client_is_node": False}
    return None, (f"{where}: the node itself opened {e.orig[0]}:{e.orig[2]} -> {e.orig[1]}:{e.orig[3]} "
                  "(a host-network client: its source is already the node IP)"), None, None


def classify_node_dnat(r: pd.DataFrame, cl: pd.DataFrame, lossy: set[str] = frozenset(),
                       spans: CaptureSpans | None = None) -> Decision:
    """yes / no / unknown: did the client's own node DNAT the VIP to an endpoint, so that the
    connection never reached the load balancer?

    Why: with ipMode VIP, kube-proxy's iptables and nftables modes DNAT pod traffic to the LB
    IP on the node itself; such a connection cannot loop back, and an endpoint on the client's
    node is then no sign that the load balancer picked it. yes: on the client's node, the
    client's own packets to an endpoint (neither the VIP nor a node's address), no copy of
    them to the VIP leaving the node's NIC and none arriving at a node after the load
    balancer, while a capture of that NIC not known to lose packets (``lossy``) ran (the
    packets may come from the node's address: a masquerade after the DNAT). no: a
    copy to the VIP left the NIC, or one arrived at a node's NodePort (after the LB).
    ``spans``: each capture's first and last packet of any kind (an ARP or ICMP packet
    shows the capture ran as well as a connection's), by capture label.
    """
    left = r["pre_lb"] & r["on_client"] & r["egress"]
    via_lb = ~r["pre_lb"] & r["resp_is_node"].fillna(False).astype(bool)
    gone = set(r.loc[left | via_lb, "jn"])
    to_ep = (r["on_client"] & ~r["pre_lb"] & ~r["resp_is_node"].fillna(False).astype(bool)
             & ~r["jn"].isin(gone) & _nic_watched(r, lossy, spans or {}))
    value = pd.Series(UNKNOWN, index=cl.index, dtype=object)
    evidence = pd.Series(None, index=cl.index, dtype=object)
    for mask, val, why in ((via_lb, NO, " (arrived at a node's address after the load balancer)"),
                           (left, NO, " (the SYN to the VIP left the node's NIC: the load balancer got it)"),
                           (to_ep, YES, " (the client's node DNATed the VIP to an endpoint itself: no copy to the "
                            "VIP left its NIC, whose capture ran)")):
        e = _first_evidence(r, mask, r["hop"] + why)
        value.loc[e.index], evidence.loc[e.index] = val, e
    evidence.loc[evidence.isna()] = ("no capture of the client node's NIC shows whether the SYN to the VIP "
                                     "left the node")
    return Decision(value, evidence)


def _nic_watched(r: pd.DataFrame, lossy: set[str], spans: CaptureSpans) -> pd.Series:
    """Per record: a capture of its node that sees the node's NIC (it has records at the uplink:
    an `any` capture or the NIC's own) and is not known to lose packets ran from before the
    record to after it (its first and last packet, at any of its interfaces: ``spans``, else
    its records')."""
    sees = distinct_text(r.loc[r["egress"], "capture"]) - set(lossy)
    nic = r[r["capture"].astype(str).isin(sees)]
    if nic.empty:
        return pd.Series(False, index=r.index)
    ran = nic.assign(_end=nic["last_ts"].fillna(nic["ts"])).groupby(["node", "capture"], observed=True).agg(
        lo=("ts", "min"), hi=("_end", "max")).reset_index()
    ran["capture"] = ran["capture"].astype(str)
    own = ran["capture"].map(spans)
    known = own.notna()
    ran.loc[known, "lo"] = np.minimum(ran.loc[known, "lo"], [s[0] for s in own[known]])
    ran.loc[known, "hi"] = np.maximum(ran.loc[known, "hi"], [s[1] for s in own[known]])
    m = r[["node", "ts"]].reset_index().merge(ran, on="node")
    ok = m[(m["lo"] <= m["ts"]) & (m["hi"] >= m["ts"])]["index"].unique()
    return pd.Series(r.index.isin(ok), index=r.index)


def classify_lb_backend(r: pd.DataFrame, cl: pd.DataFrame, node_dnat: Decision | None = None,
                        uncaptured: frozenset[str] = frozenset()) -> Decision:
    """The node the load balancer sent the connection to (None: not in the captures, or never
    sent: the client's node DNATed the VIP itself, ``node_dnat`` yes).

    The node of the first record after the LB's DNAT to a node's IP; else one after the
    DNAT to an endpoint, read from its source: a node IP other than the client node's is the
    node that got it from the LB and forwarded it (kube-proxy SNATs when it forwards to
    another node's endpoint); the client's own address kept means no node forwarded it, so
    the endpoint's node got it. A source that is the client node's IP, with the endpoint on
    another node, fits both (the LB's pick forwarded it, or sent it there) and decides nothing.
    The client's own address kept decides only while every other node is captured
    (``uncaptured``: the nodes no capture covers): kube-proxy's iptables and nftables modes
    forward a pod's SYN to another node's endpoint without SNAT, and an uncaptured node may
    have done so. An endpoint on the client's own node decides only where the connection is
    known to have reached the load balancer (``node_dnat`` no): with ipMode VIP the node
    DNATs the VIP to its own endpoint and nothing leaves, so, ``node_dnat`` unknown, it names
    no pick.
    """
    post = ~r["pre_lb"] & r["resp_node"].notna() & (
        (r["resp_h"] != r["j_client_h"]) | (r["resp_p"] != r["j_client_p"]))
    to_node = post & r["resp_is_node"]
    ep = post & ~r["resp_is_node"]
    forwarded = ep & r["orig_ip_of_node"].notna() & (r["orig_h"] != r["j_client_node_ip"])
    direct = ep & ((r["orig_h"] == r["j_client_h"]) | (r["resp_node"] == r["j_client_node"]))
    blind = r["resp_node"].map(lambda n: bool(set(uncaptured) - {n})).astype(bool)
    unseen = direct & blind
    direct &= ~blind
    unsure = _home_unsure(r, cl, direct, node_dnat)
    direct &= ~r["jn"].isin(unsure.index)
    rules = ((to_node, r["resp_node"], " (after the LB's DNAT to a node)"),
             (forwarded, r["orig_ip_of_node"], " (DNAT to an endpoint, SNATed by the node that got it from the LB)"),
             (direct, r["resp_node"], " (DNAT to an endpoint, no node forwarded it: the endpoint's node got it)"))
    value = pd.Series(None, index=cl.index, dtype=object)
    evidence = pd.Series(None, index=cl.index, dtype=object)
    for mask, node, why in reversed(rules):  # the first rule wins
        picked = first_per_journey(r.loc[mask, ["jn", "_t"]].assign(_node=node[mask], _ev=r["hop"][mask] + why))
        value.loc[picked.index], evidence.loc[picked.index] = picked["_node"], picked["_ev"]
    maybe = _first_evidence(r, unseen, r["hop"] + (" (DNAT to an endpoint from the client's own address: the "
                                                   "endpoint's node got it, or a node no capture covers ("
                                                   + ", ".join(sorted(uncaptured)) + ") forwarded it without SNAT)"))
    for why in (unsure, maybe):  # no pick: only why not
        why = why.reindex(cl.index[value.isna() & evidence.isna()]).dropna()
        evidence.loc[why.index] = why
    if node_dnat is not None:
        mine = node_dnat.value == YES
        value.loc[mine] = None
        evidence.loc[mine] = "the load balancer never got it: " + node_dnat.evidence[mine].astype(str)
    return Decision(value, evidence)


def _home_unsure(r: pd.DataFrame, cl: pd.DataFrame, direct: pd.Series, node_dnat: Decision | None) -> pd.Series:
    """The journeys whose first record at an endpoint no node forwarded to is on the client's
    own node while ``node_dnat`` is unknown, with why that names no pick: the LB may have sent
    it back, or the node may have DNATed the VIP itself (ipMode VIP) so that it never left."""
    if node_dnat is None:
        return pd.Series(dtype=object)
    first = first_per_journey(r.loc[direct, ["jn", "_t", "hop", "resp_node"]])
    home = first[(first["resp_node"] == cl["client_node"].reindex(first.index))
                 & (node_dnat.value.reindex(first.index) == UNKNOWN)]
    return pd.Series(concat_rows([
        home["hop"].astype(str), " (DNAT to an endpoint on the client's own node: the load balancer sent it back, "
        "or the node DNATed the VIP itself and it never left; ", node_dnat.evidence[home.index].astype(str), ")"]),
        index=home.index, dtype=object)


def classify_loopback(r: pd.DataFrame, cl: pd.DataFrame, backend: Decision,
                      lossy: set[str] = frozenset(), node_dnat: Decision | None = None) -> Decision:
    """yes / no / unknown: did the load balancer send the connection back to its own node?

    Without the backend's captures, a SYN-ACK from the VIP, or a SYN that left the client's
    NIC with no copy of it coming back to the node, rules a loopback out; the latter only at
    a capture not known to lose packets (``lossy``: the returning copy may be one it lost).
    A connection the client's node DNATed itself (``node_dnat`` yes) never left it: no.
    """
    node, picked = cl["client_node"], backend.value
    value = pd.Series(np.where(picked.isna() | node.isna(), UNKNOWN, np.where(picked == node, YES, NO)),
                      index=cl.index)
    evidence = pd.Series(np.where(
        value == YES, "the connection came back to its own node " + node.astype(str) + ": "
        + backend.evidence.astype(str),
        np.where(value == NO, "the load balancer sent it to " + picked.astype(str) + ": "
                 + backend.evidence.astype(str), None)), index=cl.index)
    where = r["capture"].astype(str)
    vip_ans = _first_evidence(r, r["pre_lb"] & r["on_client"] & r["synack_ts"].notna(),
                              where + ": SYN-ACK from " + r["resp_h"] + ":" + r["resp_p"].astype(str)
                              + " (the VIP answered; a loopback is answered by the node itself)")
    came_back = list(set(r.loc[r["on_client"] & ~r["pre_lb"], "jn"]))  # journeys seen again on their node
    leaving = r["on_client"] & r["egress"] & r["pre_lb"] & ~r["jn"].isin(came_back)
    clean = ~r["capture"].astype(str).isin(lossy)
    left = _first_evidence(r, leaving & clean,
                           where + ": the SYN left towards the VIP and no copy came back to the node")
    blind = _first_evidence(r, leaving & ~clean, where + ": the SYN left towards the VIP and no copy came "
                            "back to the node, but that capture lost packets: the copy may be one it lost")
    unk = cl.index[value == UNKNOWN]
    for ev in (left.reindex(unk).dropna(), vip_ans.reindex(unk).dropna()):
        value.loc[ev.index], evidence.loc[ev.index] = NO, ev
    back = (value == UNKNOWN) & cl.index.isin(came_back)
    evidence.loc[back] = (
        "a copy of the SYN came back to the client's node addressed elsewhere than the VIP, but "
        "natlens cannot tell whether to this node's NodePort (its addresses are not known)")
    unsure = (value == UNKNOWN) & backend.value.isna() & backend.evidence.notna()
    evidence.loc[unsure] = concat_rows(["where the load balancer sent it is not known: ",
                                        backend.evidence[unsure].astype(str)])
    nowhere = (value == UNKNOWN) & node.isna()
    evidence.loc[nowhere] = concat_rows([
        "the client's node is not known: ", cl.loc[nowhere, "client_h"].astype(str), " is in no "
        "inventory and no capture shows its SYN leaving a node towards the VIP"])
    blind = blind.reindex(cl.index[(value == UNKNOWN) & evidence.isna()]).dropna()
    evidence.loc[blind.index] = blind
    evidence.loc[evidence.isna()] = "no capture shows where the load balancer sent it"
    if node_dnat is not None:
        mine = node_dnat.value == YES
        value.loc[mine] = NO
        evidence.loc[mine] = "it never left its node: " + node_dnat.evidence[mine].astype(str)
    return Decision(value, evidence)


def classify_outcome(r: pd.DataFrame, cl: pd.DataFrame, record: pd.DataFrame) -> Decision:
    """established / reset / timed out / unknown (UDP: answered / unanswered / unknown), from
    every record of the journey (TCP) or the client's own record (``record``, UDP).

    A definite observation at any capture point (journeys.evidence.observations) wins over
    records that show nothing (cut by the capture's end, or missing packets): established
    over reset over timed out. Not definite: a RST of the client's own refusing an answer
    (``client_refusals``: its socket goes on waiting), and "timed out" at a point that
    missed some of the client's SYNs (``missed_syns``: its retry clock is off); the
    client's own record then decides. A completed handshake at one point and a refused SYN at
    another contradict each other: unknown, with both records named. "timed out" is also a
    capture that ended while the client retried a SYN whose SYN-ACK came from the wrong
    address and was reset by it: the load balancer keeps the 5-tuple on that backend, so
    every retry meets the same fate (DESIGN.md section 1) and the connect cannot complete.
    """
    rank = nearness(r, cl["client_uid"])
    said = _said(r)  # what each record says, worded once
    obs = observations(r)
    obs = obs.where(~((obs == TIMED_OUT) & missed_syns(r)))  # its retry clock is off: not evidence
    value = pd.Series(UNKNOWN, index=cl.index, dtype=object)
    evidence = pd.Series(None, index=cl.index, dtype=object)
    by_own = pd.Series(False, index=cl.index)
    for val in (TIMED_OUT, RESET, ESTABLISHED):  # later ones win
        e = _nearest(r, rank, obs == val, said)
        value.loc[e.index], evidence.loc[e.index], by_own.loc[e.index] = val, e["_ev"], e["_rank"] == 0
    _looped_retries(r, rank, said, value, evidence, by_own)
    _contradictions(r, rank, said, value, evidence)
    _own_record(record, value, evidence, by_own)
    udp = (record["proto"].fillna(cl["proto"]) == "udp").to_numpy()
    value.loc[udp], evidence.loc[udp] = _udp_outcome(record[udp])
    return Decision(value, evidence)


def _nearest(r: pd.DataFrame, rank: pd.Series, mask: pd.Series, said: pd.Series) -> pd.DataFrame:
    """Per journey (index), what the record nearest the client where mask holds says (``_ev``,
    from ``said``) and its nearness (``_rank``)."""
    sel = r.loc[mask, ["jn", "_t"]].assign(_ev=said[mask], _rank=rank[mask])
    return sel.sort_values(["_rank", "_t"]).drop_duplicates("jn").set_index("jn")[["_ev", "_rank"]]


def _said(r: pd.DataFrame) -> pd.Series:
    """What a TCP record says of the connection: where, Zeek's state and history, SYNs, end."""
    ended = r["end"].map({END_CAPTURE: "unknown (capture ended)"}).fillna(r["end"]).astype(str)
    syns = pd.Series(np.where(r["syn_ts"].notna(), (r["syn_retransmits"].fillna(0) + 1).astype(int).astype(str)
                              + " SYN(s)", "no SYN seen"), index=r.index)
    return pd.Series(concat_rows([point_label(r), ": ", r["conn_state"].astype(str), " ", r["history"].astype(str),
                                  ", ", syns, ", ended ", ended, icmp_said(r)]), index=r.index, dtype=object)


def _looped_retries(r: pd.DataFrame, rank: pd.Series, said: pd.Series, value: pd.Series,
                    evidence: pd.Series, by_own: pd.Series) -> None:
    """Timed out: no definite outcome, and the client retried a SYN that was answered from the
    wrong address and reset by it (the retries cannot succeed)."""
    retried = r["from_client"] & r["pre_lb"] & (r["syn_retransmits"].fillna(0) > 0) \
        & r["jn"].isin(set(r.loc[wrong_answers(r), "jn"]))
    e = _nearest(r, rank, retried, said)
    e = e[value.reindex(e.index) == UNKNOWN]
    value.loc[e.index], by_own.loc[e.index] = TIMED_OUT, e["_rank"] == 0
    evidence.loc[e.index] = e["_ev"] + "; each SYN was answered from the wrong address and reset by the client"


def _contradictions(r: pd.DataFrame, rank: pd.Series, said: pd.Series, value: pd.Series,
                    evidence: pd.Series) -> None:
    """Unknown where one point saw the connection made and another saw its SYN refused."""
    no = _nearest(r, rank, refused(r), said)["_ev"]
    both = no.index[value.reindex(no.index) == ESTABLISHED]
    value.loc[both] = UNKNOWN
    evidence.loc[both] = ("the records disagree: " + evidence.loc[both].astype(str) + " (connected), but "
                          + no.loc[both] + " (the SYN refused)")


def _own_record(record: pd.DataFrame, value: pd.Series, evidence: pd.Series, by_own: pd.Series) -> None:
    """The client's own record in the evidence: why an unknown is unknown, and what the client's
    record showed when another point decided."""
    has = record["uid"].notna() & (record["proto"] == "tcp")
    own = pd.Series(None, index=record.index, dtype=object)
    own.loc[has] = _said(record[has])
    unk = has & (value == UNKNOWN) & evidence.isna()
    evidence.loc[unk] = own[unk] + "; no capture point shows how it ended"
    elsewhere = has & (value != UNKNOWN) & ~by_own
    evidence.loc[elsewhere] = evidence[elsewhere] + " (the client's own record: " + own[elsewhere] + ")"
    evidence.loc[evidence.isna()] = "no record of the client's connection"


def _udp_outcome(f: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """answered / unanswered / unknown from the client's own UDP record, with its packets each way."""
    answered = f["resp_pkts"].fillna(0) > 0
    value = pd.Series(np.select([f["uid"].isna(), answered, f["end"] == END_TIMEOUT],
                                [UNKNOWN, ANSWERED, UNANSWERED], UNKNOWN), index=f.index)
    ended = f["end"].map({END_CAPTURE: "unknown (capture ended)"}).fillna(f["end"]).astype(str)
    ev = (f["capture"].astype(str) + ": " + f["conn_state"].astype(str) + " " + f["history"].astype(str)
          + ", " + f["orig_pkts"].fillna(0).astype(int).astype(str) + " packet(s) out, "
          + f["resp_pkts"].fillna(0).astype(int).astype(str) + " back, ended " + ended)
    return value, ev.where(f["uid"].notna(), "no record of the client's connection")
