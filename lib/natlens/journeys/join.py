"""Connection records of all capture points -> journey numbers (which records are one connection).

Why: addresses and ports change at every NAT; what survives is the client's ISN (also
derivable from a SYN-ACK's ack), so TCP records are joined on the ISN and time
proximity, never the 5-tuple alone. UDP records are joined on the first payload's
hash and IP ID (IPv6: hash and client port). Records whose handshake the capture lost
join through copies of their first packet or one node's conntrack uniqueness.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import per_distinct
from natlens.inventory import UPLINK

JOIN_WINDOW_S = 5.0  # margin between the times records of one connection span (after clock correction)
SEQ_WINDOW = 1 << 20  # a mid-stream client packet's sequence number is at most this far past the ISN
M32_SPAN = 1 << 32


def join_records(conns: pd.DataFrame, offsets: dict[str, float],
                 ifnames: dict[tuple[str, int], str]) -> pd.DataFrame:
    """The records with clock-corrected times (``ts_corr``, ``syn_corr``), their journey number
    (``jn``) and the interface name of their capture point (``point``)."""
    r = conns.copy(deep=False)  # pandas copies on write: the new columns are the only new memory
    off = r["node"].map(offsets).fillna(0.0)
    r["ts_corr"] = r["ts"] - off
    r["syn_corr"] = r["syn_ts"] - off
    r["jn"] = assign_journeys(r, offsets)
    r["point"] = capture_point(r, ifnames)
    return r


def _cluster(key: np.ndarray, ts: np.ndarray, window: float, end: np.ndarray | None = None) -> np.ndarray:
    """Group ids: same key and times that overlap: each record starts within `window` of the
    latest end (`end`, default its start) of the records with that key before it."""
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    e = (ts if end is None else np.maximum(end, ts))[order]
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        reach = pd.Series(e).groupby(k).cummax().to_numpy()
        new[1:] = (k[1:] != k[:-1]) | ((t[1:] - reach[:-1]) > window)
    gid = np.empty(len(order), dtype=np.int64)
    gid[order] = np.cumsum(new) - 1
    return gid


def assign_journeys(conns: pd.DataFrame, offsets: dict[str, float]) -> pd.Series:
    """Journey number for every connection record (TCP on ISN, UDP on first payload).

    TCP records with one ISN join when the times they span (first packet .. last packet)
    overlap, with JOIN_WINDOW_S of margin: a point that saw only a late retransmission of
    the SYN (+7 s, +15 s) still joins the record that saw the first one.
    """
    n = len(conns)
    jid = np.full(n, -1, dtype=np.int64)
    ts = conns["ts"].to_numpy(dtype=float) - conns["node"].map(offsets).fillna(0.0).to_numpy(dtype=float)
    span = np.nan_to_num(conns["last_ts"].to_numpy(dtype=float) - conns["ts"].to_numpy(dtype=float))
    tcp = (conns["proto"] == "tcp").to_numpy() & conns["client_isn"].notna().to_numpy()
    nxt = 0
    if tcp.any():
        g = _cluster(conns.loc[tcp, "client_isn"].astype("int64").to_numpy(), ts[tcp], JOIN_WINDOW_S,
                     ts[tcp] + span[tcp])
        jid[tcp] = g
        nxt = int(g.max()) + 1
    udp = (conns["proto"] == "udp").to_numpy() & conns["orig_hash"].notna().to_numpy()
    if udp.any():
        # IPv6 has no IP ID: the payload hash alone would chain identical probes of different
        # clients, so the client's port stands in for it there (a NAT that rewrites it splits them)
        ip_id = conns.loc[udp, "orig_ip_id"]
        second = np.where(ip_id.notna(), "id" + ip_id.astype(str), "port" + conns.loc[udp, "orig_p"].astype(str))
        h = pd.factorize(pd.Series(list(zip(conns.loc[udp, "orig_hash"].astype(str), second, strict=True))))[0]
        g = _cluster(h.astype(np.int64), ts[udp], JOIN_WINDOW_S)
        jid[udp] = g + nxt
        nxt += int(g.max()) + 1
    nxt = _join_mid_stream(conns, jid, ts, nxt)
    rest = jid < 0
    jid[rest] = nxt + np.arange(int(rest.sum()))
    return pd.Series(jid, index=conns.index)


def _join_mid_stream(conns: pd.DataFrame, jid: np.ndarray, ts: np.ndarray, nxt: int) -> int:
    """Journeys for TCP records whose handshake the capture missed (packets dropped, the
    capture started late); returns the next free journey number.

    Two such records are one connection when their first packets are copies of one packet
    (same IP ID, TCP timestamp and payload hash, which survive NAT, close in time), or when they are on
    one node with the same addresses and ports (either way round) and overlapping times:
    one node's conntrack cannot hold two live connections with one 5-tuple, or when their
    first client packet's sequence number lies just past one journey's ISN (NAT keeps it).
    A group that so meets exactly one journey joins it; one that meets none becomes a
    journey of its own.
    """
    lost = np.flatnonzero((jid < 0) & (conns["proto"] == "tcp").to_numpy())
    if not lost.size:
        return nxt
    cols = ["node", "orig_h", "orig_p", "resp_h", "resp_p"]
    span = np.nan_to_num(conns["last_ts"].to_numpy(dtype=float) - conns["ts"].to_numpy(dtype=float))
    rows = pd.DataFrame({c: conns[c].to_numpy() for c in cols})
    rows["i"], rows["j"], rows["t0"], rows["t1"] = np.arange(len(conns)), jid, ts, ts + span
    flipped = rows.rename(columns={"orig_h": "resp_h", "orig_p": "resp_p", "resp_h": "orig_h",
                                   "resp_p": "orig_p"})
    want = rows.iloc[lost]
    pairs = pd.concat([want.merge(k, on=cols, suffixes=("", "_o")) for k in (rows, flipped)],
                      ignore_index=True)
    pairs = pairs[(pairs["i"] != pairs["i_o"]) & (pairs["t0"] <= pairs["t1_o"] + JOIN_WINDOW_S)
                  & (pairs["t1"] >= pairs["t0_o"] - JOIN_WINDOW_S)]
    links = list(zip(pairs["i"], pairs["i_o"], strict=True))
    key = ["orig_ip_id", "orig_tsval", "orig_hash"]  # what survives NAT; a bare ACK has no hash
    copies = conns.iloc[lost][key].astype(object).assign(i=lost, t=ts[lost])
    # a 16-bit IP ID alone matches by chance: a TCP timestamp or a payload hash must match too
    copies = copies[copies["orig_ip_id"].notna()
                    & (copies["orig_tsval"].notna() | copies["orig_hash"].notna())].fillna("-")
    for _, g in copies.groupby(key):
        g = g.sort_values("t")
        close = np.diff(g["t"].to_numpy()) <= JOIN_WINDOW_S
        links += [(a, b) for a, b, c in zip(g["i"].iloc[:-1], g["i"].iloc[1:], close, strict=True) if c]
    links += _seq_links(conns, jid, ts, lost)
    parent = {int(i): int(i) for i in lost}

    def root(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[root(int(a))] = root(int(b))
    groups: dict[int, list[int]] = {}
    met_by: dict[int, set[int]] = {}
    for i in lost:
        groups.setdefault(root(int(i)), []).append(int(i))
    for a, b in links:  # journeys a group meets: records that have one, linked to a member
        for x in (int(a), int(b)):
            if jid[x] >= 0:
                met_by.setdefault(root(x), set()).add(int(jid[x]))
    for r, members in groups.items():
        met = met_by.get(r, set())
        if len(met) == 1:
            jid[members] = met.pop()
        elif not met:
            jid[members] = nxt
            nxt += 1
    return nxt


def _seq_links(conns: pd.DataFrame, jid: np.ndarray, ts: np.ndarray, lost: np.ndarray) -> list[tuple[int, int]]:
    """(lost record, record of a journey) pairs where the lost record's first client packet
    carries a sequence number (or, with only the server's packets, the server acks one) just
    past exactly one journey's ISN (ISN + 1 .. ISN + SEQ_WINDOW, modulo 2^32) at overlapping
    times: NAT keeps sequence numbers, so it is that connection's. A number that fits two
    journeys links to neither."""
    if "orig_seq" not in conns:
        return []
    seq = conns["orig_seq"].to_numpy(dtype="float64", na_value=np.nan)
    acked = conns["resp_ack"].to_numpy(dtype="float64", na_value=np.nan)
    seq = np.where(np.isnan(seq), acked, seq)  # only the server's packets: what it acked of the client
    known = np.flatnonzero((jid >= 0) & conns["client_isn"].notna().to_numpy())
    want = lost[~np.isnan(seq[lost])]
    if not known.size or not want.size:
        return []
    isn = conns["client_isn"].to_numpy(dtype="float64", na_value=np.nan)[known]
    order = np.argsort(isn)
    ext = np.concatenate([isn[order], isn[order] + M32_SPAN])  # an ISN near 2^32 wraps
    idx = np.concatenate([known[order], known[order]])
    span = np.nan_to_num(conns["last_ts"].to_numpy(dtype=float) - conns["ts"].to_numpy(dtype=float))
    s = seq[want] + np.where(seq[want] < SEQ_WINDOW, M32_SPAN, 0)
    lo, hi = np.searchsorted(ext, s - SEQ_WINDOW, side="left"), np.searchsorted(ext, s - 1, side="right")
    links = []
    for i, a, b in zip(want[hi > lo], lo[hi > lo], hi[hi > lo], strict=True):  # the few with a candidate
        hits = [int(k) for k in idx[a:b] if abs(ts[k] - ts[i]) <= JOIN_WINDOW_S + span[k]]
        if len({int(jid[k]) for k in hits}) == 1:
            links.append((int(i), hits[0]))
    return links


def capture_point(conns: pd.DataFrame, ifnames: dict[tuple[str, int], str]) -> pd.Series:
    """Interface name of each record's capture point: the label of a per-interface capture
    (eth0.pcap), else the SLL2/pcapng interface named by the node's ip-addr dump (`any`,
    a capture tool's file); None when unknown."""
    known = set(ifnames.values())

    def point(capture, node, iface) -> str | None:
        label = str(capture).split("/")[-1]
        per_iface = label in known or (UPLINK.match(label) is not None and label != "any")
        return label if per_iface else ifnames.get((node, int(iface)))

    return pd.Series(per_distinct(point, conns["capture"], conns["node"], conns["iface"]), index=conns.index,
                     dtype=object)


