"""Every packet of one journey, hop by hop, on one clock, with what each packet is.

Why: the worked example of a report and the first thing an engineer checks: the SYN
leaving, coming back to the NodePort, the SYN-ACK from the wrong source, the client's
RST. Each note says it in a network engineer's words.

A hop table never shows an effect before its cause. After the clock offsets, a packet
that acks sequence number A comes after the other side's segment that ends at A: the
SYN-ACK after the SYN it answers (its ack is the client's ISN + 1), the client's ACK after
the SYN-ACK, a response after the request it acks. When no capture saw that segment twice
(no retransmission), the ack comes after all of its sightings (they are all on its way to
the receiver), else after the earliest. Sequence numbers survive NAT, like the ISN the
journeys are joined on. Where a node's clock could not be corrected and the times say
otherwise, the table is in causal order: each node's own packets keep their order (one
node, one clock), effects move after their causes, and each hop shown out of time order
says so in its note, with how far apart the clocks are at least. Times are never changed.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from natlens.findings.captures import HopPackets
from natlens.inventory import Inventory
from natlens.vocab import ACK, FIN, RST, SYN, SYN_ACK, flag_text, icmp_words

HOP_COLUMNS = ["capture", "node", "point", "ts", "ts_ns", "src", "dst", "sport", "dport", "flags", "note"]
M32 = 0xFFFFFFFF


def journey_hops(journey: pd.Series, records: pd.DataFrame, hops: dict[str, HopPackets],
                 offsets: dict[str, float], inventory: Inventory) -> pd.DataFrame:
    """The packets of the journey's records (``records``: its rows of the records table; ``hops``:
    each capture's packets, findings.captures), in time order on the reference clock, in causal
    order where the clocks contradict it."""
    parts = []
    for r in records.itertuples():
        if r.capture not in hops:
            continue
        p = hops[r.capture].of(int(str(r.uid).rsplit("#", 1)[1]))
        if p.empty:
            continue
        p["capture"], p["node"], p["rec"] = r.capture, r.node, r.uid
        p["point"] = getattr(r, "point", None)  # the interface, where the capture names it
        p["ts_ns"] = p["ts_ns"].astype("int64") - int(round(offsets.get(r.node, 0.0) * 1e9))
        p["ts"] = p["ts_ns"] / 1e9
        parts.append(p)
    if not parts:
        return pd.DataFrame(columns=HOP_COLUMNS)
    h = pd.concat(parts, ignore_index=True).sort_values(["ts_ns", "capture"], kind="stable")
    h = h.reset_index(drop=True)
    h = h.iloc[causal_order(h)].reset_index(drop=True)
    h["flags"] = [flag_text(f) for f in h["tcp_flags"].fillna(-1).astype(int)]
    h["note"] = [hop_note(pk, journey, inventory) + late for pk, late in
                 zip(h.itertuples(), out_of_time_notes(h), strict=True)]
    if isinstance(journey.get("failure"), str):
        h["note"] = h["note"] + last_sightings(h)
    return h[HOP_COLUMNS].reset_index(drop=True)


def last_sightings(h: pd.DataFrame) -> pd.Series:
    """For a failed journey, where each packet of its handshake was seen last: the last row of
    the client's SYN and of the SYN-ACK say so ("" elsewhere)."""
    flags = h["tcp_flags"].fillna(-1).astype(int)
    tcp = flags >= 0
    out = pd.Series("", index=h.index, dtype=object)
    for mask, what in ((tcp & (flags & SYN != 0) & (flags & ACK == 0), "SYN"),
                       (tcp & (flags & SYN_ACK == SYN_ACK), "SYN-ACK")):
        if mask.any():
            out.loc[h.index[mask][-1]] = f"; the {what}'s last capture point"
    return out


def causal_edges(h: pd.DataFrame) -> list[tuple[int, int]]:
    """(cause, effect) row pairs of a time-sorted hop table, between nodes: a packet that acks
    sequence number A comes after the segment of the other side that ends at A (its SYN, data
    or FIN): after every sighting of it when no capture saw it twice, else after the earliest.
    Each other node's last such cause, before each node's first such effect (a node's own rows
    keep their order anyway)."""
    flags = h["tcp_flags"].fillna(0).astype(int).to_numpy()
    tcp = h["seq"].notna().to_numpy()
    seq = h["seq"].fillna(0).astype("int64").to_numpy()
    size = h["payload_len"].fillna(0).astype("int64").to_numpy() + ((flags & SYN) != 0) + ((flags & FIN) != 0)
    rows = pd.DataFrame({"pos": np.arange(len(h)), "node": h["node"].to_numpy(), "rec": h["rec"].to_numpy()})
    causes = rows[tcp & (size > 0)].assign(key=((seq + size) & M32)[tcp & (size > 0)])
    acks = tcp & ((flags & ACK) != 0)
    effects = rows[acks].assign(key=h["ack"].fillna(0).astype("int64").to_numpy()[acks])
    causes = causes[causes["key"].isin(effects["key"])]
    if causes.empty:
        return []
    seen_twice = causes.groupby(["key", "rec"]).size().groupby(level="key").max() > 1
    earliest = causes.groupby("key")["pos"].transform("min") == causes["pos"]
    causes = causes[~causes["key"].map(seen_twice).to_numpy() | earliest.to_numpy()]
    last = causes.groupby(["key", "node"], as_index=False)["pos"].max()
    first = effects.groupby(["key", "node"], as_index=False)["pos"].min()
    e = last.merge(first, on="key", suffixes=("_c", "_e"))
    e = e[e["node_c"] != e["node_e"]]
    return list(zip(e["pos_c"].astype(int), e["pos_e"].astype(int), strict=True))


def causal_order(h: pd.DataFrame) -> np.ndarray:
    """Row order of a time-sorted hop table: the time order, except that no effect comes
    before its cause; each node's rows keep their order. The earliest row that may come next
    comes next (a cycle, from contradicting evidence, is broken by the time order)."""
    edges = causal_edges(h)
    n = len(h)
    if all(c < e for c, e in edges):
        return np.arange(n)
    succ: list[list[int]] = [[] for _ in range(n)]
    last: dict[str, int] = {}
    for i, nd in enumerate(h["node"]):
        if nd in last:
            succ[last[nd]].append(i)
        last[nd] = i
    for c, e in edges:
        succ[c].append(e)
    indeg = np.zeros(n, dtype=np.int64)
    for s in succ:
        indeg[s] += 1
    ready = [i for i in range(n) if indeg[i] == 0]
    done = np.zeros(n, dtype=bool)
    out: list[int] = []
    while len(out) < n:
        i = heapq.heappop(ready) if ready else int(np.flatnonzero(~done)[0])
        if done[i]:
            continue
        done[i] = True
        out.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0 and not done[j]:
                heapq.heappush(ready, j)
    return np.array(out, dtype=np.int64)


def out_of_time_notes(h: pd.DataFrame) -> list[str]:
    """For each hop shown after one with a later time (causal order), the words that say so."""
    ts, node = h["ts_ns"].to_numpy(dtype=np.int64), h["node"].to_numpy()
    notes, top = [], -1
    for i in range(len(h)):
        if top >= 0 and ts[i] < ts[top]:
            ms = f"{(ts[top] - ts[i]) / 1e6:.3f} ms"
            notes.append(f" ({node[i]}'s clock is not on {node[top]}'s: shown in causal order, though "
                         f"its time is {ms} before that of the {node[top]} hop above; the two clocks "
                         "differ by at least that)" if node[top] != node[i] else
                         f" (shown in causal order, though its time is {ms} before that of a hop "
                         "above on the same node: the captures contradict each other)")
        else:
            notes.append("")
        if top < 0 or ts[i] > ts[top]:
            top = i
    return notes


def hop_note(pk, jr: pd.Series, inventory: Inventory) -> str:
    """What one packet of a journey is, in a network engineer's words."""
    flags = -1 if pd.isna(pk.tcp_flags) else int(pk.tcp_flags)
    if flags < 0 and not pd.isna(getattr(pk, "icmp_type", None)):
        return _icmp_note(pk)
    src, dst = f"{pk.src}:{pk.sport}", f"{pk.dst}:{pk.dport}"
    client = pk.src == jr["client_h"] and pk.sport == jr["client_p"]
    who = "the client" if client else src
    if flags >= 0 and flags & RST:
        return "the client resets: it never sent a SYN to " + dst if client else f"RST from {src}"
    if flags >= 0 and flags & SYN and not flags & ACK:
        return _syn_note(pk, jr, inventory, client, src, dst)
    if flags >= 0 and flags & SYN_ACK == SYN_ACK:
        if src == _vip(jr):
            return "SYN-ACK from the VIP"
        if pk.dst == jr["client_h"] and pk.dport == jr["client_p"]:
            return f"SYN-ACK to the client from {src}, not from the VIP it called"
        return f"SYN-ACK from {src}"
    if flags >= 0 and flags & FIN:
        return f"FIN from {who}"
    if pk.payload_len and not pd.isna(pk.payload_len):
        return f"{int(pk.payload_len)} bytes of data from {who}"
    return f"ACK from {who}"


def _icmp_note(pk) -> str:
    """An ICMP error about one of the journey's packets: what it says and whose packet it quotes."""
    code = -1 if pd.isna(pk.icmp_code) else int(pk.icmp_code)
    words = icmp_words(int(pk.icmp_type), code, ":" in str(pk.src))
    quoted = getattr(pk, "icmp_orig_src", None)
    about = (f" about {quoted}:{int(pk.icmp_orig_sport)} -> {pk.icmp_orig_dst}:{int(pk.icmp_orig_dport)}"
             if isinstance(quoted, str) and not pd.isna(getattr(pk, "icmp_orig_sport", None)) else "")
    return f"ICMP {words} from {pk.src} to {pk.dst}{about}"


def _vip(jr: pd.Series) -> str:
    """The address:port the client called."""
    return f"{jr['vip']}:{int(jr['vport'])}" if not pd.isna(jr["vport"]) else str(jr["vip"])


def _syn_note(pk, jr: pd.Series, inventory: Inventory, client: bool, src: str, dst: str) -> str:
    """A SYN: the client's own, after SNAT, or after the load balancer's / kube-proxy's DNAT."""
    if dst == _vip(jr):
        if client:
            return "SYN from the client to the VIP"
        snat_to = jr.get("snat_to")
        if snat_to and src == snat_to:
            return f"SYN to the VIP, SNATed to {src}"
        return f"SYN to the VIP from {src}"
    node = inventory.node_ip(pk.dst)
    if node:
        return f"SYN after the load balancer's DNAT to {node}'s NodePort {dst}"
    return f"SYN DNATed to the endpoint {dst}"
