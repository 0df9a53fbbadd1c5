"""Slow and lossy paths: where, between two capture points, a journey's packets lost time.

Why: a connection that takes 700 ms to connect on a sub-millisecond network is a
finding even when it succeeds, and "which two capture points the time went between"
is what tells the node, the interface and the direction to look at. The loopback
finding explains failures; these explain slowness and losses.

    from natlens.findings.paths import path_problems, dominant_problem
    problems = path_problems(a.service_journeys, a.records, a.offsets)
    dominant_problem(problems, a.service_journeys)   # for the verdict, or None

The problems table (PROBLEM_COLUMNS; one row per problem, sorted by count, largest first):

=============  ==========================================================================
kind           one of KINDS (below)
count          number of journeys that show it (len(journeys))
of             TCP journeys examined (the "of 20" of the sentence)
journeys       list of journey ids ("J3"), in journey order
services       list of the Services those journeys called
between        "<from point> -> <to point>" where the time went or the packet vanished,
from_point     in the packet's own direction of travel; None when no two points are known
to_point       (syn-retransmit and connect-mode rows take the commonest location their
               journeys' lost/delayed rows found)
delay_ms_min   the time lost, ms, over the row's journeys: the step between the two points
delay_ms_max   (delayed), the retransmission that got through (syn-lost), the connect time
               (connect-mode); NaN when no time is known (a packet that never arrived)
note           what limits the answer (clocks compared through an estimated offset, ...);
               "" when nothing does
text           the finding in plain words ("10 of 20 connections: the SYN-ACK took ...")
=============  ==========================================================================

A capture point is one interface as one node's captures saw it, named by the capture
label, with the interface when the capture is an ``any`` capture: "node-2/eth0",
"node-2/any (cni0)", "node-2/any (ifindex 5)" (an interface the node's ip-addr dump does
not name). The same interface in two captures of one node (``any`` and ``eth0.pcap``) is
one point: the earliest sighting counts, so a packet one capture missed is not "lost".

Which journeys: the TCP ones of the table given (pass Analysis.service_journeys: what the
verdict is about); loopback journeys included (their retransmissions are real, and
dominant_problem leaves them to the loopback finding).

Path order: a journey's points in the order its SYN passed them (clock-corrected SYN
times, within one clock domain); the SYN and the client's ACK travel that way, the
SYN-ACK and the server's data the other. A record that saw no SYN (NAT at a bridge can
show the SYN-ACK under other addresses than the SYN) lends its times to the record of
the same point that saw the SYN, else is left out (its place on the path is unknown).
A step is one packet's only when both points saw the same transmission of the client's
SYN (``findings.transmissions``: the SYN's TCP timestamp value, which NAT keeps; the
SYN-ACK, ACK and data by the SYN they follow): a retransmitted SYN may go another way than
the first (kube-proxy's nftables and iptables modes pick an endpoint per conntrack entry),
and one point's first SYN against another's retransmission is a retransmission interval
that no packet took. A synless record lends its times only to a record that saw the SYN
they answer.

Kinds and their rules (one function each; thresholds are the constants below):

syn-delayed, synack-delayed, ack-delayed (the client's handshake ACK; its request follows
    it), data-delayed (the server's first payload byte): ``delayed_steps``. The step
    between two consecutive points of the path that saw the packet. Delayed: the step is
    >= DELAY_MIN_S (100 ms: far above any transit inside a data centre or a busy node,
    and below TCP's 200 ms minimum RTO and the 1 s SYN RTO, so a delay that makes TCP
    retransmit is caught) AND >= DELAY_FACTOR (10) x the link's usual transit: the lower
    quartile (BASELINE_QUANTILE) of every step between the same two points, over all
    journeys and all four packets, both directions. Why not the median of that step: when
    half the journeys are delayed (cluster-ok) the median is the delay itself; the same
    two points crossed the other way (the SYN where the SYN-ACK was held) and the
    undelayed journeys keep the quartile at the link's real transit. Why the factor: on a
    WAN link that normally takes 60 ms only a step from 600 ms is a delay, not jitter.
    A SYN step where the later point saw fewer SYNs is a loss, not a delay (below). The
    row's ``note`` says when the later point's capture missed first copies of the same
    journey's packet elsewhere (``capture_misses``: it saw a packet after another capture
    of the same interface, or after the next point on the way did): the delay may then
    be partly the capture's.
syn-lost: ``lost_syns``: the later point saw fewer SYNs than the earlier one (the first
    ones vanished between them; a retransmission got through, ``delay_ms`` is what that
    cost), and its capture was running at the first SYN; or ``unanswered_syns``: a
    journey answered nowhere whose SYN was last seen at a point after which every other
    journey's SYN went on to one same point, whose capture ran LOSS_GRACE_S (1 s) past
    the last sighting, and never got there.
synack-lost: ``lost_synacks``: the SYN-ACK was seen on its way back but never at the
    next point towards the client (the point its SYN passed before), whose capture ran
    LOSS_GRACE_S past the last sighting.
syn-retransmit: ``syn_retransmissions``: journeys whose client sent its SYN more than
    once (the journey's syn_retransmits), with how many of them are loopbacks (whose
    SYN-ACK the client resets) and, when the SYNs were lost between two points, where.
connect-mode: ``connect_modes``: journeys whose connect time sits within MODE_TOLERANCE
    (10 %) of 1, 3, 7, 15, 31 or 63 s (MODES_S): Linux sends the SYN again after 1 s,
    then 2, 4 ... s later, so a connect at 1 s means one SYN (or its SYN-ACK) was lost,
    at 3 s two, and so on.

Clocks: two points of one node share a clock and are compared as they are. Points of
two nodes are compared through the clock offsets only when both nodes' offsets were
measured (``clock_domains``; an unmeasured node keeps offset 0, indistinguishable from
the reference): steps to and from an unmeasured node are not timed (a delay there is not
found), and the table's ``attrs["notes"]`` says so. A row whose two points are on two
nodes says in its ``note`` that they were compared through the measured offset.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import pandas as pd

from natlens._grouped import distinct_text, group_ids, is_in, rows_where, shared_text
from natlens.connections import SYN_RTO_S  # Linux's initial SYN retransmission timeout, doubling
from natlens.findings.transmissions import (
    UNKNOWN_TX,
    answered_tx,
    syn_transmissions,
    syn_tx,
    tx_groups,
)
from natlens.journeys.clocks import clock_chain
from natlens.vocab import ESTABLISHED, YES

SYN_DELAYED = "syn-delayed"
SYNACK_DELAYED = "synack-delayed"
ACK_DELAYED = "ack-delayed"
DATA_DELAYED = "data-delayed"
SYN_LOST = "syn-lost"
SYNACK_LOST = "synack-lost"
SYN_RETRANSMIT = "syn-retransmit"
CONNECT_MODE = "connect-mode"
# in order of precedence for dominant_problem's ties: located problems before symptoms
KINDS = (SYNACK_DELAYED, SYN_DELAYED, SYN_LOST, SYNACK_LOST, ACK_DELAYED, DATA_DELAYED,
         CONNECT_MODE, SYN_RETRANSMIT)

PROBLEM_COLUMNS = ["kind", "count", "of", "journeys", "services", "between", "from_point",
                   "to_point", "delay_ms_min", "delay_ms_max", "note", "text"]

DELAY_MIN_S = 0.100  # a step this long is a delay (see the module docstring)
DELAY_FACTOR = 10.0  # ... when it is also this many times the link's usual transit
BASELINE_QUANTILE = 25  # percentile of a link's steps taken as its usual transit
LOSS_GRACE_S = 1.0  # the next point's capture ran this long past the last sighting
MIN_RTO_S = 0.2  # TCP's minimum retransmission timeout: a "retransmission" sooner is a missed copy
NEGATIVE_S = 0.001  # a step below -1 ms: the earlier point's capture missed the packet
MODES_S = tuple(SYN_RTO_S * (2 ** k - 1) for k in range(1, 7))  # 1, 3, 7, 15, 31, 63 s
MODE_TOLERANCE = 0.10
REFERENCE = "reference"  # the clock domain of the reference node and every measured node

# events: (column, kind when delayed, direction: +1 with the SYN, -1 back to the client, words)
EVENTS = (("syn", SYN_DELAYED, 1, "the SYN"), ("synack", SYNACK_DELAYED, -1, "the SYN-ACK"),
          ("ack", ACK_DELAYED, 1, "the client's handshake ACK"),
          ("data", DATA_DELAYED, -1, "the server's first data"))
_EVENT_COLS = ("syn", "synack", "ack", "data")


def path_problems(journeys: pd.DataFrame, records: pd.DataFrame, offsets: dict[str, float],
                  known_clocks: Collection[str] | None = None, lossy: Collection[str] = ()) -> pd.DataFrame:
    """One row per slow or lossy path problem of the TCP `journeys` (see module docstring).

    `records` are the journeys' connection records (natlens.journeys.RECORD_COLUMNS),
    `offsets` the seconds to subtract per node (Analysis.offsets). `known_clocks`: the
    nodes whose offset was measured (default: derived from the records, as
    natlens.journeys.clocks measures them). `lossy`: the captures known to have lost packets
    (findings.quality): a packet missing there, or first seen late there, is not a finding.
    ``attrs["notes"]`` lists what limited the answer.
    """
    tcp = journeys[journeys["proto"] == "tcp"] if "proto" in journeys else journeys
    of = len(tcp)
    if not of or records.empty:
        table = _table([])
        table.attrs["notes"] = []
        return table
    keep = is_in(records["journey"], tcp["journey"])
    names, recs = _numbered(rows_where(records, keep))
    domains = clock_domains(records, offsets, known_clocks)
    sights = sightings(recs, offsets, domains)
    obs = observations(sights)
    spans, caps = capture_spans(records, offsets), point_captures(sights)
    st = steps(obs)
    misses = capture_misses(sights, st, caps)
    found = [delayed_steps(st, link_baselines(st), misses, caps), lost_syns(st, caps, spans),
             unanswered_syns(st, obs, caps, spans), lost_synacks(obs, caps, spans)]
    hits = _named(pd.concat([f for f in found if not f.empty] or [_empty_hits()], ignore_index=True), names)
    hits = not_capture_losses(hits, tcp, caps, set(lossy))
    rows = _grouped_rows(hits, tcp, of)
    rows += syn_retransmissions(tcp, hits, of) + connect_modes(tcp, hits, of)
    table = _table(rows)
    table.attrs["notes"] = clock_notes(obs, domains)
    return table


def _numbered(records: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """(the journey ids in text order, the records with each journey id as its number there).
    Why: the stages group, sort and match on the journey dozens of times, and an integer does
    that far faster than text (500,000 journeys: ~1 s); numbered in text order, every group and
    sort comes out in the order the text gives, and _named turns the hits back into text."""
    codes, names = pd.factorize(records["journey"], sort=True)
    return np.asarray(names, dtype=object), records.assign(journey=codes)


def _named(hits: pd.DataFrame, names: np.ndarray) -> pd.DataFrame:
    """The hits with their journey numbers (_numbered) as the journey ids again."""
    return hits.assign(journey=names[hits["journey"].to_numpy(dtype=np.int64)]) if len(hits) else hits


def clock_domains(records: pd.DataFrame, offsets: dict[str, float],
                  known_clocks: Collection[str] | None = None) -> dict[str, str]:
    """Each node's clock domain: REFERENCE for the reference node and every node whose
    offset to it was measured (``known_clocks``; default: as natlens.journeys.clocks
    measures them from these records), else the node's own name (its times only compare
    with themselves)."""
    nodes = sorted({*distinct_text(records["node"]), *offsets})
    if known_clocks is None:
        known_clocks = clock_chain(records[records["journey"].notna()]).measured if len(nodes) > 1 else nodes
    return {n: REFERENCE if n in known_clocks else n for n in nodes}


def point_labels(records: pd.DataFrame) -> pd.DataFrame:
    """Each record's capture point: ``key`` (one per node and interface) and ``label``
    ("node-2/eth0", "node-2/any (cni0)", "node-2/any (ifindex 5)"), and ``own``: True when
    the capture is of that one interface (its label is preferred for the point)."""
    w = pd.DataFrame({"node": records["node"].astype(str), "capture": records["capture"].astype(str),
                      "point": records["point"].astype(object).where(records["point"].notna(), ""),
                      "iface": pd.to_numeric(records["iface"], errors="coerce").fillna(-1).astype(int)},
                     index=records.index)
    u = w.drop_duplicates().reset_index(drop=True)  # a few per capture: name them once
    named = u["point"] != ""
    own = named & (u["capture"].str.rsplit("/", n=1).str[-1] == u["point"])
    iface = "ifindex " + u["iface"].astype(str)
    u["key"] = np.where(named, u["node"] + "|" + u["point"], u["capture"] + "|" + iface)
    u["label"] = np.where(own, u["capture"], u["capture"] + " (" + np.where(named, u["point"], iface) + ")")
    u["own"] = own.to_numpy(dtype=bool)
    out = w.merge(u, on=["node", "capture", "point", "iface"], how="left")
    return pd.DataFrame({"key": out["key"].to_numpy(dtype=object), "label": out["label"].to_numpy(dtype=object),
                         "own": out["own"].to_numpy(dtype=bool)}, index=records.index)


_LEG = ["orig_h", "orig_p", "resp_h", "resp_p"]  # the addresses at one hop: a point's leg


def sightings(records: pd.DataFrame, offsets: dict[str, float],
              domains: dict[str, str]) -> pd.DataFrame:
    """One row per record: its journey, capture point (``key``, ``label``), leg (the
    addresses at that hop, _LEG), capture, clock domain, when it first saw the SYN, SYN-ACK,
    client ACK and server's first data (``syn`` ... clock-corrected seconds) and how many
    SYNs (``syns``).

    A record that saw no SYN (NAT at a bridge can show the SYN-ACK under other addresses)
    lends its times to the SYN-carrying record of the same point that lacks them, else is
    dropped: without its SYN its place on the path is unknown.
    """
    if records.empty:
        return _empty_obs()
    used = ["journey", "node", "capture", *_LEG, "ts", "syn_ts", "synack_ts", "ack_ts", "first_byte", "syn_retransmits"]
    r = records[[*used, *(["orig_tsval"] if "orig_tsval" in records else [])]].join(point_labels(records))
    off = r["node"].map(offsets).fillna(0.0).astype(float)
    start = r["syn_ts"].where(r["syn_ts"].notna(), r["ts"])
    o = pd.DataFrame({
        "journey": r["journey"] if r["journey"].dtype.kind in "iu" else r["journey"].astype(object),  # _numbered
        "node": r["node"].astype(str).astype(object),
        "key": r["key"], "label": r["label"], "own": r["own"],
        "capture": r["capture"].astype(str).astype(object), **{c: r[c] for c in _LEG},
        "syn": r["syn_ts"] - off, "synack": r["synack_ts"] - off, "ack": r["ack_ts"] - off,
        "data": start + r["first_byte"] - off,
        "syns": np.where(r["syn_ts"].notna(), r["syn_retransmits"].fillna(0).astype(int) + 1, 0),
        "syn_id": _syn_tsval(r),
    })
    o["domain"] = o["node"].map(domains).fillna(o["node"]).astype(object)
    return _lend_synless(o)


def _syn_tsval(r: pd.DataFrame) -> pd.Series:
    """The TCP timestamp value of each record's first SYN (NaN: no SYN, or no timestamps):
    which transmission of the SYN it is (findings.transmissions)."""
    if "orig_tsval" not in r:
        return pd.Series(np.nan, index=r.index)
    tsval = pd.to_numeric(r["orig_tsval"], errors="coerce").astype(float)
    return tsval.where(r["syn_ts"].notna() & (tsval >= 0))


def observations(sights: pd.DataFrame) -> pd.DataFrame:
    """The sightings merged per journey, capture point and leg, in path order (``order``: the
    order the SYN passed them, within each clock domain). Two captures of one interface are
    one point: the earliest sighting of each event, the most SYNs, the label of the
    interface's own capture."""
    if sights.empty:
        return _empty_obs()
    o = sights.sort_values(["own"], ascending=False, kind="stable")
    agg = {"node": "first", "label": "first", "domain": "first", "syns": "max",
           **{c: "min" for c in _EVENT_COLS}}
    keys = ["journey", "key", *_LEG]
    first_id = sights.sort_values("syn", kind="stable").groupby(keys, sort=False)["syn_id"].first()
    o = o.groupby(keys, sort=False).agg(agg)
    o["syn_id"] = first_id.reindex(o.index)  # the TSval of the earliest SYN seen there
    o = o.reset_index()
    o = o.sort_values(["journey", "domain", "syn"], kind="stable").reset_index(drop=True)
    o["order"] = o.groupby(["journey", "domain"]).cumcount()
    return o


def capture_misses(sights: pd.DataFrame, st: pd.DataFrame, caps: dict[str, set[str]]
                   ) -> dict[tuple[str, str], set[str]]:
    """(journey, event) -> the captures that missed the first copy of that packet somewhere:
    a capture that saw it more than NEGATIVE_S after another capture of the same interface
    did, or every capture of a point that saw it after the next point on its way did (a
    negative step). A delay measured into such a capture may be partly the capture's."""
    out: dict[tuple[str, str], set[str]] = {}
    if not sights.empty:
        grp = sights.groupby(["journey", "key", *_LEG], sort=False)
        for col in _EVENT_COLS:
            late = sights[sights[col] - grp[col].transform("min") > NEGATIVE_S]
            for j, c in zip(late["journey"], late["capture"], strict=True):
                out.setdefault((j, col), set()).add(c)
    if not st.empty:
        neg = st[st["dt"] < -NEGATIVE_S]
        for j, ev, pt in zip(neg["journey"], neg["event"], neg["from_point"], strict=True):
            out.setdefault((j, ev), set()).update(caps.get(pt, {pt}))
    return out


def _lend_synless(o: pd.DataFrame) -> pd.DataFrame:
    """Records without a SYN: their event times go to the same journey's record at the same
    point that saw the SYN and lacks most of those times (nearest SYN first), if that record
    saw the SYN transmission they answer (``_answers_its_syns``); then they are dropped."""
    lent = ["synack", "ack", "data"]
    synless = o[o["syn"].isna()]
    if synless.empty:
        return o
    has_syn = o[o["syn"].notna()]
    m = synless[["journey", "key", *lent]].reset_index(names="src").merge(
        has_syn[["journey", "key", "syn", *lent]].reset_index(names="dst"),
        on=["journey", "key"], suffixes=("", "_t"))
    m = m[_answers_its_syns(o, m)]
    if not m.empty:
        m["gaps"] = m[[c + "_t" for c in lent]].isna().sum(axis=1)
        m["near"] = (m["syn"] - m[lent].min(axis=1)).abs().fillna(0.0)
        m = m.sort_values(["src", "gaps", "near"], ascending=[True, False, True], kind="stable")
        m = m.drop_duplicates("src")
        fill = m.groupby("dst")[lent].min()
        o = o.copy()
        for c in lent:
            cur = o.loc[fill.index, c]
            o.loc[fill.index, c] = cur.where(cur.notna(), fill[c])
    return o.drop(index=synless.index)


def _answers_its_syns(o: pd.DataFrame, m: pd.DataFrame) -> np.ndarray:
    """Per candidate (``m``: a synless record ``src`` and a SYN record ``dst`` of one point),
    whether the synless record's first packet follows a SYN transmission the SYN record saw
    (from its first to its last SYN; findings.transmissions). Unknown transmissions: True.

    Why: with br_netfilter a bridge shows a SYN-ACK under other addresses than its SYN; in a
    journey whose retransmitted SYN went elsewhere it is the retransmission's answer, and
    lent to the first SYN's record it would make a step of a second, not of one packet."""
    txs = syn_transmissions(o)
    if m.empty or txs.empty:
        return np.ones(len(m), dtype=bool)
    first = pd.Series(syn_tx(o, txs), index=o.index)
    src = o.loc[m["src"]].assign(_e=o.loc[m["src"], ["synack", "ack", "data"]].min(axis=1))
    answers = answered_tx(src.reset_index(drop=True).assign(synack=src["_e"].to_numpy()), "synack", txs)
    lo = first.loc[m["dst"]].to_numpy()
    hi = lo + o.loc[m["dst"], "syns"].to_numpy(dtype=np.int64) - 1
    unknown = (lo == UNKNOWN_TX) | (answers == UNKNOWN_TX)
    return unknown | ((answers >= lo) & (answers <= hi))


def point_captures(sights: pd.DataFrame) -> dict[str, set[str]]:
    """Each capture point's label -> the captures that see its interface (an ``any`` capture
    and the interface's own capture are both "there")."""
    if sights.empty:
        return {}
    kc = sights[["key", "capture"]].drop_duplicates()
    key_caps: dict[str, set[str]] = {}
    for k, c in zip(kc["key"], kc["capture"], strict=True):
        key_caps.setdefault(k, set()).add(c)
    pairs = sights[["key", "label"]].drop_duplicates()
    return {str(lab): key_caps[k] for k, lab in zip(pairs["key"], pairs["label"], strict=True)}


def capture_spans(records: pd.DataFrame, offsets: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Each capture's first and last packet (clock-corrected s), from its records: when a
    packet could have been seen there."""
    if records.empty:
        return {}
    off = records["node"].map(offsets).fillna(0.0).astype(float)
    t = pd.DataFrame({"capture": records["capture"].astype(str), "lo": records["ts"] - off,
                      "hi": records["last_ts"].fillna(records["ts"]) - off})
    g = t.groupby("capture").agg(lo=("lo", "min"), hi=("hi", "max"))
    return {c: (float(r.lo), float(r.hi)) for c, r in g.iterrows()}


def _covered(captures: Iterable[str], spans: dict[str, tuple[float, float]], lo: float,
             hi: float) -> bool:
    """Whether one of `captures` was running from `lo` to `hi` (clock-corrected s)."""
    return any(c in spans and spans[c][0] <= lo and spans[c][1] >= hi for c in captures)


def steps(obs: pd.DataFrame) -> pd.DataFrame:
    """Every step of every event between two consecutive points of one journey and clock
    domain that saw it, in the event's direction of travel: ``dt`` seconds (negative: the
    earlier point's capture missed the first copy).

    A step is one packet's only when both points saw the same transmission of the SYN
    (findings.transmissions: by the SYN's TSval, the others by the SYN they follow);
    ``same_syn`` says so for SYN steps (True, False, None: no TSval to tell). Other pairs
    are left out, but for a SYN step whose later point saw fewer SYNs and a later first
    one: that may be the first SYNs lost between the two (lost_syns).
    """
    cols = ["journey", "event", "from_point", "to_point", "from_node", "to_node", "t_from", "dt",
            "syns_from", "syns_to", "link", "same_syn"]
    if obs.empty:
        return pd.DataFrame(columns=cols)
    group = group_ids(obs["journey"], obs["domain"])
    arr = {c: shared_text(obs[c]) for c in ("journey", "label", "node")}
    code, uniq = pd.factorize(obs["label"])  # a link: its two points' codes, smaller first
    syns = obs["syns"].to_numpy()
    txs = syn_transmissions(obs)
    groups = tx_groups(obs, txs) if len(txs) else None
    parts = []
    for col, _kind, direction, _words in EVENTS:
        t = obs[col].to_numpy(dtype=float)
        tx = syn_tx(obs, txs, groups) if col == "syn" else answered_tx(obs, col, txs, groups)
        idx = np.flatnonzero(~np.isnan(t))  # obs is in path order within each group
        if idx.size < 2:
            continue
        a, b = idx[:-1], idx[1:]
        known = (tx[a] != UNKNOWN_TX) & (tx[b] != UNKNOWN_TX)
        same = ~known | (tx[a] == tx[b])
        keep = (group[a] == group[b]) & (same | ((col == "syn") & (syns[b] < syns[a])))
        a, b, known, same = a[keep], b[keep], known[keep], same[keep]
        first, second = (a, b) if direction > 0 else (b, a)
        parts.append(pd.DataFrame({
            "journey": arr["journey"][a], "event": col,
            "from_point": arr["label"][first], "to_point": arr["label"][second],
            "from_node": arr["node"][first], "to_node": arr["node"][second],
            "t_from": t[first], "dt": t[second] - t[first],
            "syns_from": syns[first], "syns_to": syns[second],
            "link": np.minimum(code[a], code[b]) * len(uniq) + np.maximum(code[a], code[b]),
            "same_syn": np.where(known & (col == "syn"), same, None).astype(object)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def link_baselines(st: pd.DataFrame) -> pd.Series:
    """The usual transit of each link (the unordered pair of points; index: steps' ``link``):
    the lower quartile of its steps over every journey and event, both directions,
    negative steps counted as 0."""
    if st.empty:
        return pd.Series(dtype=float)
    dt = st["dt"].astype(float).clip(lower=0.0)
    return dt.groupby(st["link"].to_numpy()).agg(
        lambda v: float(np.percentile(v, BASELINE_QUANTILE, method="lower")))


def delayed_steps(st: pd.DataFrame, baselines: pd.Series,
                  misses: dict[tuple[str, str], set[str]] | None = None,
                  caps: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """Steps that are delays: >= DELAY_MIN_S and >= DELAY_FACTOR x the link's baseline; a
    SYN step whose later point saw fewer SYNs is a loss (lost_syns), not a delay.

    ``suspect`` names the later point's captures that missed a first copy of the same
    packet of the same journey (`misses`, from capture_misses; `caps`: point label -> its
    captures): part of such a delay may be the capture's, not the network's.
    """
    if st.empty:
        return _empty_hits()
    base = st["link"].map(baselines).fillna(0.0)
    hit = (st["dt"] >= DELAY_MIN_S) & (st["dt"] >= DELAY_FACTOR * base)
    hit &= ~((st["event"] == "syn") & (st["syns_to"] < st["syns_from"]))
    d = st[hit]
    if d.empty:
        return _empty_hits()
    misses, caps = misses or {}, caps or {}
    suspect = [", ".join(sorted(misses.get((j, ev), set()) & caps.get(pt, {pt})))
               for j, ev, pt in zip(d["journey"], d["event"], d["to_point"], strict=True)]
    kind = d["event"].map({col: kind for col, kind, _, _ in EVENTS})
    return _hits(kind, d, d["dt"], suspect)


def lost_syns(st: pd.DataFrame, caps: dict[str, set[str]],
              spans: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """SYN steps where the later point saw fewer SYNs although its capture ran at the first:
    the first SYNs vanished between the two points; ``dt`` is what the retransmission cost."""
    if st.empty:
        return _empty_hits()
    d = st[(st["event"] == "syn") & (st["syns_to"] < st["syns_from"])
           & (st["same_syn"] != True)]  # noqa: E712 (None: no TSval to tell)
    keep = np.array([_covered(caps.get(q, ()), spans, t, t)
                     for q, t in zip(d["to_point"], d["t_from"], strict=True)], dtype=bool)
    d = d[keep]
    return _hits(pd.Series(SYN_LOST, index=d.index), d, d["dt"])


def unanswered_syns(st: pd.DataFrame, obs: pd.DataFrame, caps: dict[str, set[str]],
                    spans: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Journeys answered nowhere whose SYN was last seen at a point P after which every
    other journey's SYN went on to one same point Q, whose capture covered the time, and
    that never saw it: the SYN was lost between P and Q."""
    if obs.empty:
        return _empty_hits()
    answered = obs[["synack", "data"]].notna().any(axis=1).groupby(obs["journey"]).any()
    quiet = obs[obs["journey"].isin(answered.index[~answered])]
    one_domain = quiet.groupby("journey")["domain"].nunique() == 1
    seen = quiet[quiet["journey"].isin(one_domain.index[one_domain]) & quiet["syn"].notna()]
    if seen.empty:
        return _empty_hits()
    syn = st[st["event"] == "syn"]
    succ = syn.groupby("from_point")["to_point"].agg(lambda s: set(s))
    labels = seen.groupby("journey")["label"].agg(lambda s: set(s))
    last = seen.sort_values("syn", kind="stable").groupby("journey").tail(1)
    node_of = dict(zip(obs["label"], obs["node"], strict=True))
    rows = []
    for r in last.itertuples():
        nxt = succ.get(r.label, set())
        q = next(iter(nxt)) if len(nxt) == 1 else None
        if q is None or q in labels[r.journey]:
            continue
        if _covered(caps.get(q, ()), spans, float(r.syn), float(r.syn) + LOSS_GRACE_S):
            rows.append({"journey": r.journey, "kind": SYN_LOST, "from_point": r.label,
                         "to_point": q, "nodes": (r.node, node_of.get(q, r.node)),
                         "delay_s": np.nan, "suspect": ""})
    return pd.DataFrame(rows) if rows else _empty_hits()


def lost_synacks(obs: pd.DataFrame, caps: dict[str, set[str]],
                 spans: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The SYN-ACK seen on its way back but never at the next point towards the client (the
    one its SYN passed before), whose capture ran LOSS_GRACE_S past the last sighting."""
    if obs.empty:
        return _empty_hits()
    o = obs.sort_values(["journey", "domain", "order"], kind="stable")
    grp = o.groupby(["journey", "domain"], sort=False)
    # the point nearest the client (first in path order) saw the SYN-ACK: it came back
    first_has = o["synack"].where(grp.cumcount() == 0).groupby(
        [o["journey"], o["domain"]]).transform("max").notna()
    cand = o[~first_has & grp["synack"].transform("count").gt(0)]
    rows = []
    for (jid, _dom), g in cand.groupby(["journey", "domain"], sort=False):
        last = g.loc[g["synack"].idxmax()]
        before = g[(g["order"] < last["order"]) & (g["key"] != last["key"])]
        if before.empty:
            continue
        q = before.iloc[-1]
        if g.loc[g["key"] == q["key"], "synack"].notna().any():
            continue
        t = float(last["synack"])
        if _covered(caps.get(q["label"], ()), spans, t, t + LOSS_GRACE_S):
            rows.append({"journey": jid, "kind": SYNACK_LOST, "from_point": last["label"],
                         "to_point": q["label"], "nodes": (last["node"], q["node"]),
                         "delay_s": np.nan, "suspect": ""})
    return pd.DataFrame(rows) if rows else _empty_hits()


def not_capture_losses(hits: pd.DataFrame, journeys: pd.DataFrame, caps: dict[str, set[str]],
                       lossy: set[str]) -> pd.DataFrame:
    """The hits that are the network's, not the capture's: a SYN-ACK the client ACKed reached
    it (established), so it was not lost; a SYN "lost" and seen again sooner than TCP's
    minimum retransmission timeout was a copy the capture missed; and where every capture of
    the later point is known to lose packets, a packet missing there, or first seen there a
    retransmission timeout late (or ``suspect``), says nothing: the capture may have missed
    the first copy."""
    if hits.empty:
        return hits
    est = set(journeys.loc[journeys["outcome"] == ESTABLISHED, "journey"]) if "outcome" in journeys else set()
    arrived = (hits["kind"] == SYNACK_LOST) & hits["journey"].isin(est)
    copy = (hits["kind"] == SYN_LOST) & (hits["delay_s"] < MIN_RTO_S)
    at_lossy = np.array([caps.get(q, {q}) <= lossy for q in hits["to_point"]], dtype=bool)
    retried = hits["delay_s"] >= MIN_RTO_S  # a first copy the capture missed looks like this too
    doubtful = at_lossy & (hits["kind"].isin([SYN_LOST, SYNACK_LOST]) | (hits["suspect"].fillna("") != "")
                           | retried)
    return hits[~(arrived | copy | doubtful)].reset_index(drop=True)


def syn_retransmissions(journeys: pd.DataFrame, hits: pd.DataFrame, of: int) -> list[dict]:
    """One row for the journeys whose client sent its SYN more than once: how many times,
    how many are loopbacks, and where the SYNs were lost when a syn-lost row found it."""
    j = journeys[pd.to_numeric(journeys["syn_retransmits"], errors="coerce").fillna(0) > 0]
    if j.empty:
        return []
    ids = list(j["journey"])
    n = pd.to_numeric(j["syn_retransmits"]).astype(int)
    where = _commonest(hits[hits["kind"] == SYN_LOST], ids)
    times = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    text = (f"{_of(len(ids), of)}: the client sent its SYN again ({times} time"
            f"{'s' if n.max() > 1 else ''} each)")
    loops = int((j["loopback"] == YES).sum()) if "loopback" in j else 0
    if loops:
        text += f"; {loops} of them load-balancer loopbacks, whose SYN-ACK the client resets"
    if where:
        text += f"; SYNs were lost from {where[0]} to {where[1]}"
    return [_row(SYN_RETRANSMIT, j, of, where, np.nan, np.nan, "", text)]


def connect_modes(journeys: pd.DataFrame, hits: pd.DataFrame, of: int) -> list[dict]:
    """One row per SYN retransmission time (1, 3, 7 ... s) that journeys' connect times sit
    at (within MODE_TOLERANCE): each such connect waited for that many lost SYNs or
    SYN-ACKs. Located where their lost/delayed rows put the time, when they did."""
    ms = pd.to_numeric(journeys["connect_ms"], errors="coerce")
    rows = []
    for k, mode in enumerate(MODES_S, start=1):
        at = journeys[(ms - mode * 1e3).abs() <= MODE_TOLERANCE * mode * 1e3]
        if at.empty:
            continue
        ids = list(at["journey"])
        near = hits[hits["kind"].isin([SYN_LOST, SYNACK_LOST, SYN_DELAYED, SYNACK_DELAYED])]
        where = _commonest(near, ids)
        lo, hi = float(ms[at.index].min()), float(ms[at.index].max())
        text = (f"{_of(len(ids), of)} took {_ms_range(lo, hi)} to connect: {mode:g} s is when Linux "
                f"has sent its SYN {k + 1} times ({k} SYN{'s' if k > 1 else ''} or SYN-ACK"
                f"{'s' if k > 1 else ''} lost or unanswered)")
        if where:
            text += f"; the time went from {where[0]} to {where[1]}"
        rows.append(_row(CONNECT_MODE, at, of, where, lo, hi, "", text))
    return rows


def clock_notes(obs: pd.DataFrame, domains: dict[str, str]) -> list[str]:
    """What the clocks limit: nodes of the journeys whose offset was not measured."""
    unknown = sorted({n for n in obs["node"].unique() if domains.get(n, n) != REFERENCE})
    if not unknown:
        return []
    return [f"clock offset of {', '.join(unknown)} not measured: path steps between "
            f"{'it' if len(unknown) == 1 else 'them'} and other nodes were not timed "
            "(a delay there is not found), only steps within each node"]


def dominant_problem(problems: pd.DataFrame, journeys: pd.DataFrame) -> dict | None:
    """The problem kind that touches the most journeys (loopback journeys not counted: the
    loopback finding explains them), with one sentence for the verdict; None when none.

    Rows of one kind at different points are one problem (the sentence names each place).
    Ties go to the kind first in KINDS (a located delay or loss before its symptoms).
    Returns {kind, count, of, journeys, between: [...], delay_ms_min, delay_ms_max, text},
    nulls as None.
    """
    if problems is None or problems.empty:
        return None
    loops = set(journeys.loc[journeys["loopback"] == YES, "journey"]) if "loopback" in journeys else set()
    best = None
    for kind, g in problems.groupby("kind"):
        ids = sorted({j for js in g["journeys"] for j in js} - loops, key=_journey_number)
        rank = (len(ids), -KINDS.index(kind) if kind in KINDS else -len(KINDS))
        if ids and (best is None or rank > best[0]):
            best = (rank, kind, g, ids)
    if best is None:
        return None
    _, kind, g, ids = best
    lo, hi = g["delay_ms_min"].min(), g["delay_ms_max"].max()
    places = [b for b in g["between"] if isinstance(b, str)]
    text = g.iloc[0]["text"] if len(g) == 1 else _combined_text(g, len(ids), int(g["of"].iloc[0]))
    return {"kind": kind, "count": len(ids), "of": int(g["of"].iloc[0]), "journeys": ids,
            "between": places, "delay_ms_min": None if pd.isna(lo) else float(lo),
            "delay_ms_max": None if pd.isna(hi) else float(hi), "text": text}


def _combined_text(g: pd.DataFrame, n: int, of: int) -> str:
    """One sentence for several rows of one kind: the first row's words, each place with its count."""
    words = {kind: w for _, kind, _, w in EVENTS}.get(g["kind"].iloc[0])
    places = "; ".join(f"{r.count} from {r.from_point} to {r.to_point}" for r in g.itertuples()
                       if isinstance(r.between, str))
    lo, hi = g["delay_ms_min"].min(), g["delay_ms_max"].max()
    if words and pd.notna(lo):
        return f"{_of(n, of)}: {words} took {_ms_range(lo, hi)} ({places})"
    return "; ".join(g["text"])


def _grouped_rows(hits: pd.DataFrame, journeys: pd.DataFrame, of: int) -> list[dict]:
    """The located hits as rows: one per kind and pair of points, the worst step per journey."""
    rows = []
    if hits.empty:
        return rows
    by_id = journeys.set_index("journey")
    for (kind, a, b), g in hits.groupby(["kind", "from_point", "to_point"], sort=False):
        worst = g.groupby("journey")["delay_s"].max()
        ids = sorted(worst.index, key=_journey_number)
        lo, hi = (worst.min() * 1e3, worst.max() * 1e3) if worst.notna().any() else (np.nan, np.nan)
        rows.append(_row(kind, by_id.loc[ids].reset_index(), of, (a, b), lo, hi, _note(g),
                         _located_text(kind, len(ids), of, a, b, lo, hi, g)))
    return rows


def _note(g: pd.DataFrame) -> str:
    """What limits a located row: clocks of two nodes, a capture that missed packets."""
    notes = []
    nodes = g["nodes"].iloc[0]
    if nodes[0] != nodes[1]:
        notes.append(f"{nodes[0]} and {nodes[1]} compared through their measured clock offset")
    suspect = sorted({c for s in g["suspect"] if s for c in str(s).split(", ")})
    if suspect:
        n = g.loc[g["suspect"].astype(bool), "journey"].nunique()
        notes.append(f"{', '.join(suspect)} missed earlier copies of these packets elsewhere on "
                     f"the path of {n} of them: part of the time may be the capture's, not the network's")
    return "; ".join(notes)


def _located_text(kind: str, n: int, of: int, a: str, b: str, lo: float, hi: float,
                  g: pd.DataFrame) -> str:
    """The sentence of a delayed or lost row."""
    head = _of(n, of)
    if kind == SYN_LOST:
        if pd.isna(lo):
            return f"{head}: the SYN seen at {a} never reached {b} (no answer anywhere)"
        return (f"{head}: the first SYN seen at {a} never reached {b}; a retransmission did, "
                f"{_ms_range(lo, hi)} later")
    if kind == SYNACK_LOST:
        return f"{head}: the SYN-ACK seen at {a} never reached {b}"
    words = {k: w for _, k, _, w in EVENTS}[kind]
    text = f"{head}: {words} took {_ms_range(lo, hi)} from {a} to {b}"
    worst = g.groupby("journey")["delay_s"].max()
    if kind in (SYN_DELAYED, SYNACK_DELAYED) and all(_near_mode(v) for v in worst):
        text += " (a retransmission interval: the first was probably lost and sent again)"
    return text


def _near_mode(seconds: float) -> bool:
    """Whether a delay sits at a retransmission interval (1, 2, 4 ... s or 1, 3, 7 ... s)."""
    return any(abs(seconds - m) <= MODE_TOLERANCE * m for m in (1.0, 2.0, 4.0, 8.0, 16.0, *MODES_S))


def _row(kind: str, j: pd.DataFrame, of: int, where: tuple[str, str] | None, lo: float,
         hi: float, note: str, text: str) -> dict:
    """One row of the table (PROBLEM_COLUMNS) for the journeys `j`."""
    ids = sorted(j["journey"], key=_journey_number)
    services = sorted({str(s) for s in j["service"].dropna()}) if "service" in j else []
    return {"kind": kind, "count": len(ids), "of": of, "journeys": ids, "services": services,
            "between": f"{where[0]} -> {where[1]}" if where else None,
            "from_point": where[0] if where else None, "to_point": where[1] if where else None,
            "delay_ms_min": lo, "delay_ms_max": hi, "note": note, "text": text}


def _table(rows: list[dict]) -> pd.DataFrame:
    """The rows as PROBLEM_COLUMNS, largest count first (ties: KINDS order); text columns
    hold None, never NaN, where they are empty."""
    t = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in PROBLEM_COLUMNS})
    t = t.astype({"count": "int64", "of": "int64", "delay_ms_min": float, "delay_ms_max": float})
    t["delay_ms_min"] = t["delay_ms_min"].round(3)
    t["delay_ms_max"] = t["delay_ms_max"].round(3)
    rank = t["kind"].map({k: i for i, k in enumerate(KINDS)}).astype(float)
    order = np.lexsort((np.arange(len(t)), rank.to_numpy(), -t["count"].to_numpy()))
    return t.iloc[order].reset_index(drop=True)


def _hits(kind: pd.Series, d: pd.DataFrame, delay: pd.Series,
          suspect: list[str] | None = None) -> pd.DataFrame:
    """Rule results, one row per journey and step: what the rows of the table are made of."""
    if d.empty:
        return _empty_hits()
    return pd.DataFrame({"journey": d["journey"].to_numpy(), "kind": kind.to_numpy(),
                         "from_point": d["from_point"].to_numpy(), "to_point": d["to_point"].to_numpy(),
                         "nodes": list(zip(d["from_node"], d["to_node"], strict=True)),
                         "delay_s": delay.astype(float).to_numpy(),
                         "suspect": suspect if suspect is not None else [""] * len(d)})


_HIT_COLUMNS = ("journey", "kind", "from_point", "to_point", "nodes", "delay_s", "suspect")


def _empty_hits() -> pd.DataFrame:
    """No rule result (the columns of _hits)."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in _HIT_COLUMNS})


def _empty_obs() -> pd.DataFrame:
    """No sighting (the columns of sightings / observations)."""
    cols = ["journey", "key", *_LEG, "node", "label", "own", "domain", "syns", "capture",
            *_EVENT_COLS, "order"]
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})


def _commonest(hits: pd.DataFrame, ids: list[str]) -> tuple[str, str] | None:
    """The pair of points most of `ids`' hits name, or None."""
    h = hits[hits["journey"].isin(ids)]
    if h.empty:
        return None
    top = h.drop_duplicates(["journey", "from_point", "to_point"]).groupby(
        ["from_point", "to_point"]).size().sort_values(ascending=False, kind="stable")
    return top.index[0]


def _of(n: int, of: int) -> str:
    """'3 of 20 connections'."""
    return f"{n} of {of} connection{'s' if of != 1 else ''}"


def _ms_range(lo: float, hi: float) -> str:
    """'570-760 ms', '4.2 ms': whole ms from 10 ms up."""

    def one(v: float) -> str:
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    return f"{one(lo)} ms" if one(lo) == one(hi) else f"{one(lo)}-{one(hi)} ms"


def _journey_number(jid: str) -> tuple[int, str]:
    """Sort key of a journey id: J2 before J10."""
    s = str(jid)
    return (int(s[1:]), s) if s[1:].isdigit() else (1 << 62, s)
