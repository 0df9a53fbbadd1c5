"""Clock offsets between nodes, from connections seen on both (NTP-style).

Why: a journey crosses nodes whose capture clocks differ; without correction a SYN
seems to arrive before it left. With the SYN passing node A then B and the SYN-ACK
passing back, offset(B - A) = ((syn_B - syn_A) + (synack_B - synack_A)) / 2; the
median over connections, chained from a reference node. Captures of one node share a
clock.
"""

from __future__ import annotations

import pandas as pd

OFFSET_WINDOW_S = 120.0  # how far apart two nodes' clocks may be when estimating offsets


def clock_offsets(conns: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Seconds to subtract from each node's timestamps to put them on one clock, and why.

    The reference node (offset 0) is the one with the most records; nodes that share
    no measurable connection with the others keep 0 and are named in the notes.
    """
    nodes = sorted(conns["node"].dropna().unique().tolist())
    if len(nodes) <= 1:
        return {n: 0.0 for n in nodes}, []
    counts = conns["node"].value_counts()
    ref = max(nodes, key=lambda n: (counts.get(n, 0), n))
    return _chain(ref, nodes, _pair_offsets(conns))


def _pair_offsets(conns: pd.DataFrame) -> pd.DataFrame:
    """Median offset and connection count for each pair of nodes that saw one connection."""
    c = conns[conns["client_isn"].notna() & conns["syn_ts"].notna() & conns["synack_ts"].notna()
              & (conns["syn_retransmits"] == 0)]
    c = c[["node", "client_isn", "syn_ts", "synack_ts"]].copy()
    c["client_isn"] = c["client_isn"].astype("int64")
    # one record per (node, isn): the earliest (the same SYN seen twice on a node has one clock)
    c = c.sort_values("syn_ts").drop_duplicates(["node", "client_isn"])
    m = c.merge(c, on="client_isn", suffixes=("_a", "_b"))
    m = m[(m["node_a"] < m["node_b"]) & ((m["syn_ts_b"] - m["syn_ts_a"]).abs() < OFFSET_WINDOW_S)]
    m = m.assign(off=((m["syn_ts_b"] - m["syn_ts_a"]) + (m["synack_ts_b"] - m["synack_ts_a"])) / 2)
    return m.groupby(["node_a", "node_b"])["off"].agg(["median", "count"]).reset_index()


def _chain(ref: str, nodes: list[str], pairs: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Offsets of every node from the reference, through the best-measured pairs first."""
    offsets = {ref: 0.0}
    notes = []
    edges: dict[str, list[tuple[str, float, int]]] = {}
    for r in pairs.itertuples():
        edges.setdefault(r.node_a, []).append((r.node_b, r.median, r.count))
        edges.setdefault(r.node_b, []).append((r.node_a, -r.median, r.count))
    todo = [ref]
    while todo:
        a = todo.pop()
        for b, off, cnt in sorted(edges.get(a, []), key=lambda e: -e[2]):
            if b not in offsets:
                offsets[b] = offsets[a] + off
                notes.append(f"clock of {b} relative to {ref}: {offsets[b] * 1e3:+.3f} ms "
                             f"(median over {cnt} connections seen on {a} and {b})")
                todo.append(b)
    for n in nodes:
        if n not in offsets:
            offsets[n] = 0.0
            notes.append(f"clock of {n}: no connection seen both there and on another node; "
                         "its offset is unknown and taken as 0")
    return offsets, notes
