"""Clock offsets between nodes, from connections seen on both (NTP-style), applied only
when they are measurable.

Why: a journey crosses nodes whose capture clocks may differ; uncorrected, a SYN seems
to arrive before it left. But nodes synced by NTP (or lab nodes sharing one kernel
clock) differ by less than natlens can measure, and "correcting" them by noise puts an
ACK before the SYN-ACK it answers. So an offset is applied only when the captures prove
it, and every decision is a note with its numbers.

How: a connection seen on nodes A and B, with its SYN reaching A first (A's SYN ->
SYN-ACK time encloses B's: the SYN-ACK comes back through B first), bounds the offset o
of B's clock from A's (o is subtracted from B's times): syn_B - o >= syn_A,
synack_B - o <= synack_A and ack_B - o >= ack_A (where both saw the ACK and it is one
packet: A's SYN-ACK -> ACK time within B's). Both records must hold one transmission of
the SYN (its TCP timestamp value; without one, a connection whose SYN was never sent
twice): a retransmission one node saw instead of the first SYN would bound the offset by
the retransmission interval. Times one tick (TICK_S) apart have no order. The bounds of all connections of a pair intersect to the feasible interval. The
estimate is the NTP one, ((syn_B - syn_A) + (synack_B - synack_A)) / 2, its median over
the connections, and its spread their IQR. The rule for each pair:

* 0 in the feasible interval (one clock as far as every connection's SYN/SYN-ACK/ACK
  order can tell), or a median not larger than its spread: no offset (0; the note says
  how many connections' order 0 reverses, which the hop tables then show causally);
* else the median, clamped into the feasible interval (it reverses no connection's order);
* an empty interval (the connections contradict each other: clock drift during the
  capture, connections joined by mistake): no offset, unless the median is far outside
  its spread (FAR_SPREADS); then the median, with the number of connections it reverses.

Offsets are chained from the reference node (the one with the most records) through the
pairs with a consistent measurement first, the best-measured first. Captures of one node
share a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

OFFSET_WINDOW_S = 120.0  # how far apart two nodes' clocks may be when estimating offsets
TICK_S = 1e-6  # pcap's microseconds (and float rounding): two times within it have no order
FAR_SPREADS = 10.0  # contradicting constraints: the median is applied only this many spreads out


@dataclass(frozen=True)
class PairClock:
    """The offset of ``b``'s clock from ``a``'s (seconds to subtract from b's times) as
    applied, whether the connections' order is consistent with one offset, and why."""

    a: str
    b: str
    offset: float
    count: int
    consistent: bool
    why: str


@dataclass(frozen=True)
class ClockChain:
    """Every node's offset from the reference node, the notes that say why, and the nodes
    whose times compare with the reference's (``measured``: the reference and every node
    reached through pairs whose connections fit one offset)."""

    offsets: dict[str, float]
    notes: list[str]
    measured: frozenset[str]


def clock_offsets(conns: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Seconds to subtract from each node's timestamps to put them on one clock, and why.

    The reference node (offset 0) is the one with the most records; nodes that share
    no measurable connection with the others keep 0 and are named in the notes, as is
    every pair whose offset is not applied (see the module docstring for the rule).
    """
    chain = clock_chain(conns)
    return chain.offsets, chain.notes


def clock_chain(conns: pd.DataFrame) -> ClockChain:
    """clock_offsets, with the nodes whose clocks it measured (conns: connection records,
    or the journeys' records, which carry the same columns)."""
    nodes = sorted(conns["node"].dropna().astype(str).unique().tolist())
    if len(nodes) <= 1:
        return ClockChain({n: 0.0 for n in nodes}, [], frozenset(nodes))
    counts = conns["node"].value_counts()
    ref = max(nodes, key=lambda n: (counts.get(n, 0), n))
    pairs = connection_bounds(conns)
    clocks = [pair_clock(a, b, g) for (a, b), g in pairs.groupby(["node_a", "node_b"])]
    return _chain(ref, nodes, clocks)


def connection_bounds(conns: pd.DataFrame) -> pd.DataFrame:
    """One row per connection seen on two nodes (node_a < node_b): ``est`` (NTP estimate of
    b's offset from a), ``lo`` .. ``hi`` (the offsets its SYN/SYN-ACK/ACK order allows, a tick of slack).

    Each node contributes its record with the earliest SYN of that ISN (its most upstream
    sighting), among those that saw the SYN-ACK and no SYN retransmission (which SYN the
    SYN-ACK answers would be a guess). The two records must hold one SYN transmission
    (``syn_copy``): a client's retransmitted SYN may take another way than its first (a
    new endpoint pick once its RST ended the first conntrack entry), and one node's first
    SYN against the other's retransmission bounds the offset by the retransmission interval.
    """
    copy = syn_copy(conns).to_numpy(dtype=object)
    use = (conns["client_isn"].notna() & conns["syn_ts"].notna() & conns["synack_ts"].notna()
           & (conns["syn_retransmits"] == 0)).to_numpy(dtype=bool) & pd.notna(copy)
    c = conns.loc[use, ["node", "client_isn", "syn_ts", "synack_ts", "ack_ts"]].assign(syn_copy=copy[use])
    c["client_isn"] = c["client_isn"].astype("int64")
    # one record per (node, SYN): the earliest (the same SYN seen twice on a node has one clock)
    c = c.sort_values("syn_ts", kind="stable").drop_duplicates(["node", "client_isn", "syn_copy"])
    m = c.merge(c, on=["client_isn", "syn_copy"], suffixes=("_a", "_b"))
    m = m[(m["node_a"] < m["node_b"]) & ((m["syn_ts_b"] - m["syn_ts_a"]).abs() < OFFSET_WINDOW_S)]
    d_syn = (m["syn_ts_b"] - m["syn_ts_a"]).to_numpy(dtype=float)
    d_synack = (m["synack_ts_b"] - m["synack_ts_a"]).to_numpy(dtype=float)
    d_ack = (m["ack_ts_b"] - m["ack_ts_a"]).to_numpy(dtype=float)
    lo, hi = np.minimum(d_syn, d_synack), np.maximum(d_syn, d_synack)
    # the ACK goes the SYN's way: it bounds o on the SYN's side. Not when it contradicts the
    # connection's own SYN-ACK bound: then the two records' first ACKs are not one packet (the
    # upstream capture missed it), whatever the clocks. A tie within a tick has no direction.
    a_first = (d_synack < d_syn - 2 * TICK_S) & (d_ack >= d_synack - 2 * TICK_S)
    b_first = (d_synack > d_syn + 2 * TICK_S) & (d_ack <= d_synack + 2 * TICK_S)
    hi = np.where(a_first, np.minimum(hi, d_ack), hi)  # NaN (an ACK not seen) compares False
    lo = np.where(b_first, np.maximum(lo, d_ack), lo)
    return pd.DataFrame({"node_a": m["node_a"].to_numpy(), "node_b": m["node_b"].to_numpy(),
                         "isn": m["client_isn"].to_numpy(), "est": (d_syn + d_synack) / 2,
                         "lo": lo - TICK_S, "hi": hi + TICK_S})


def syn_copy(conns: pd.DataFrame) -> pd.Series:
    """Which transmission of its client's SYN each record's first SYN is: its TCP timestamp
    value (NAT keeps it, a retransmission carries a new one), as a string; without one "-"
    when no record of that ISN saw the SYN sent twice (there was one transmission), else
    None: which SYN it is cannot be told."""
    tsval = conns["orig_tsval"] if "orig_tsval" in conns else pd.Series(pd.NA, index=conns.index)
    tsval = pd.to_numeric(tsval, errors="coerce").to_numpy(dtype=float)
    known = ~np.isnan(tsval) & (tsval >= 0) & conns["syn_ts"].notna().to_numpy()
    most = conns["syn_retransmits"].fillna(0).groupby(conns["client_isn"].to_numpy()).transform("max")
    out = np.where(most.fillna(0).to_numpy() > 0, None, "-").astype(object)
    out[known] = [str(int(v)) for v in tsval[known]]
    return pd.Series(out, index=conns.index, dtype=object)


def reversed_by(offset: float, bounds: pd.DataFrame) -> int:
    """How many connections' SYN/SYN-ACK/ACK order `offset` reverses (outside their bounds)."""
    return int(((bounds["lo"] > offset) | (bounds["hi"] < offset)).sum())


def pair_clock(a: str, b: str, bounds: pd.DataFrame) -> PairClock:
    """The rule of the module docstring for one pair of nodes, with the note that says why."""
    n = len(bounds)
    med = float(bounds["est"].median())
    spread = float(bounds["est"].quantile(0.75) - bounds["est"].quantile(0.25))
    lo, hi = float(bounds["lo"].max()), float(bounds["hi"].min())
    ms = f"median {med * 1e3:+.3f} ms, spread {spread * 1e3:.3f} ms"
    conn = "connection's" if n == 1 else f"{n} connections'"
    if lo <= hi and lo <= 0.0 <= hi:
        return PairClock(a, b, 0.0, n, True, f"{b} and {a} agree within the measurement ({ms}, 0 is "
                         f"consistent with {'the' if n == 1 else 'all'} {conn} SYN/SYN-ACK/ACK "
                         f"order, which allows {lo * 1e3:+.3f} .. {hi * 1e3:+.3f} ms): "
                         "no offset applied")
    if lo <= hi and abs(med) <= spread:
        return PairClock(a, b, 0.0, n, True, f"{b} and {a}: the offset is not larger than its spread "
                         f"({ms} over {n} connections): no offset applied; taken as 0 it puts "
                         f"{reversed_by(0.0, bounds)} of them out of SYN/SYN-ACK/ACK order, "
                         "shown in causal order in their hop tables")
    if lo <= hi:
        off = min(max(med, lo), hi)
        how = "inside" if off == med else f"the median {med * 1e3:+.3f} ms clamped into"
        return PairClock(a, b, off, n, True, f"clock of {b} relative to {a}: {off * 1e3:+.3f} ms "
                         f"({ms} over {n} connections seen on both; {how} the {lo * 1e3:+.3f} .. "
                         f"{hi * 1e3:+.3f} ms that their SYN/SYN-ACK/ACK order allows)")
    clash = (f"the SYN/SYN-ACK/ACK order of the {n} connections seen on {a} and {b} fits no single "
             f"offset (it needs at least {lo * 1e3:+.3f} and at most {hi * 1e3:+.3f} ms: clock drift "
             "during the capture, or connections joined by mistake)")
    if abs(med) > FAR_SPREADS * max(spread, TICK_S):
        return PairClock(a, b, med, n, False, f"clock of {b} relative to {a}: {med * 1e3:+.3f} ms, "
                         f"though {clash}; the {ms} is far outside its spread, so it is applied: "
                         f"it reverses the order of {reversed_by(med, bounds)} of them")
    return PairClock(a, b, 0.0, n, False, f"clock of {b} relative to {a}: {clash}; the {ms} is not "
                     f"far outside its spread: no offset applied (taken as 0, "
                     f"{reversed_by(0.0, bounds)} of them are out of order)")


def _chain(ref: str, nodes: list[str], clocks: list[PairClock]) -> ClockChain:
    """Offsets of every node from the reference: repeatedly the best link from a node already
    placed to one not yet placed (consistent pairs first, then the most connections)."""
    offsets = {ref: 0.0}
    measured = {ref}
    notes: list[str] = []
    links = clocks + [PairClock(c.b, c.a, -c.offset, c.count, c.consistent, c.why) for c in clocks]
    while True:
        out = [c for c in links if c.a in offsets and c.b not in offsets]
        if not out:
            break
        best = min(out, key=lambda c: (not c.consistent, -c.count, c.a, c.b))
        offsets[best.b] = offsets[best.a] + best.offset
        if best.consistent and best.a in measured:
            measured.add(best.b)
        via = "" if best.a == ref else f"; {best.b} relative to {ref}: {offsets[best.b] * 1e3:+.3f} ms"
        notes.append(best.why + via)
    for n in nodes:
        if n not in offsets:
            offsets[n] = 0.0
            notes.append(f"clock of {n}: no connection seen both there and on another node; "
                         "its offset is unknown and taken as 0")
    return ClockChain(offsets, notes, frozenset(measured))
