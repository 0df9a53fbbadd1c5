"""Connections of all capture points -> one journey per client connection, across NAT and nodes.

A client connection is seen as several connection records: in the pod's netns or
on its veth (pod IP -> VIP), on the node's NIC (after SNAT, or not), on the
backend node (after the load balancer's DNAT to nodeIP:NodePort), on the
endpoint's veth (after kube-proxy's DNAT), and, in a loopback, as a SYN-ACK from
the wrong source. Addresses and ports differ at each point; what survives NAT is
the client's ISN (also derivable from a SYN-ACK's ack), so records are joined on
the ISN and time proximity (never the 5-tuple alone). UDP records are joined on
the first payload's hash and IP ID (IPv6: hash and client port).

Clock offsets between nodes are estimated from records of one connection seen on
two nodes, NTP-style: with the SYN passing both and the SYN-ACK passing back,
offset(B - A) = ((syn_B - syn_A) + (synack_B - synack_A)) / 2, the median over
connections, chained from a reference node. Captures of one node share a clock.

Each journey is classified with the evidence behind it, and "unknown" when the
captures do not show it:
  snat       "yes" | "no" | "unknown"  (and snat_to: the address it left with)
  lb_backend the node the load balancer sent the connection to (None: unknown)
  loopback   "yes" | "no" | "unknown"  (backend node == the client's own node)
  outcome    TCP: "established" | "reset" | "timed out" | "unknown"; UDP: "answered" |
             "unanswered" (no reply within 60 s of capture) | "unknown". "timed out" is the
             client record's end "timeout" (silent past its next SYN retransmission), or a
             capture that ended while the client retried a SYN whose SYN-ACK came from the
             wrong address and was reset by it (a loopback: its retries cannot succeed)

Journey columns (JOURNEY_COLUMNS; **contract**, pinned by tests/analysis/test_contracts.py).
Times: ``ts`` float seconds since the epoch (UTC) on the reference node's clock (clock
offsets subtracted); latencies in ms as seen at the client's own capture point.

=====================  ======================================================================
journey                "J<n>", in time order
ts                     earliest over its records of the record's first SYN (a record without one:
                       its first packet), clock-corrected, float s
client_node            node the client lives on: its IP's node in the inventory, else the
                       node a copy of its SYN was seen leaving towards the VIP; None: unknown
client_h, client_p     the original source address/port (the client's own record)
client_is_node         bool: that source is a node's IP (a host-network client; when ``snat`` is
                       unknown possibly a pod SNATed before every capture point)
service                "VIP:port/proto" (the LB VIP, else the NodePort's Service, else the
                       client's destination)
vip, vport, proto      the original destination and protocol ("tcp" | "udp")
policy                 the Service's externalTrafficPolicy: Local | Cluster | unknown
snat                   yes | no | unknown; ``snat_to`` the address:port it left with when yes;
snat_evidence          the record (capture: src:sport -> dst:dport) that shows it, or why unknown
lb_backend             node the load balancer sent it to (None: not in the captures);
lb_backend_evidence    the record after the LB's DNAT that shows it
loopback               yes | no | unknown, ``loopback_evidence`` why
outcome                established | reset | timed out | unknown (UDP: answered | unanswered |
                       unknown), ``outcome_evidence`` the client record's conn_state, history,
                       SYNs (UDP: packets each way) and end
established            bool
handshake_ms           SYN -> SYN-ACK -> ACK (last SYN), connect_ms (first SYN -> ACK,
connect_ms             includes SYN retransmissions), first_byte_ms (first SYN -> first
first_byte_ms          response byte); NaN when not seen
syn_retransmits        client SYNs beyond the first
path                   "<loopback|remote|unknown>/<snat|no-snat|snat-unknown>", for grouping
hops                   number of connection records (capture points x interfaces) joined
captures               capture labels that saw it, comma separated
client_uid             uid of the client's own record; ``uids`` all records in time order
hop_list               one string per record, same order as ``uids``:
                       "<capture> (<interface>): src:sport -> dst:dport", the addresses and
                       ports at that hop (the interface when an ``any`` capture names it)
=====================  ======================================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import join_groups
from natlens.inventory import UPLINK, Inventory
from natlens.netfilter.conntrack import Entry

JOIN_WINDOW_S = 5.0  # margin between the times records of one connection span (after clock correction)
OFFSET_WINDOW_S = 120.0  # how far apart two nodes' clocks may be when estimating offsets

JOURNEY_COLUMNS = [
    "journey", "ts", "client_node", "client_h", "client_p", "client_is_node", "service", "vip", "vport", "proto",
    "policy", "snat", "snat_to", "snat_evidence", "lb_backend", "lb_backend_evidence",
    "loopback", "loopback_evidence", "outcome", "outcome_evidence", "established",
    "handshake_ms", "connect_ms", "first_byte_ms", "syn_retransmits", "path",
    "hops", "captures", "client_uid", "uids", "hop_list",
]


def clock_offsets(conns: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Seconds to subtract from each node's timestamps to put them on one clock, and why.

    The reference node (offset 0) is the one with the most records; nodes that share
    no measurable connection with the others keep 0 and are named in the notes.
    """
    nodes = sorted(conns["node"].dropna().unique().tolist())
    if len(nodes) <= 1:
        return {n: 0.0 for n in nodes}, []
    c = conns[conns["client_isn"].notna() & conns["syn_ts"].notna() & conns["synack_ts"].notna()
              & (conns["syn_retransmits"] == 0)]
    c = c[["node", "client_isn", "syn_ts", "synack_ts"]].copy()
    c["client_isn"] = c["client_isn"].astype("int64")
    # one record per (node, isn): the earliest (the same SYN seen twice on a node has one clock)
    c = c.sort_values("syn_ts").drop_duplicates(["node", "client_isn"])
    m = c.merge(c, on="client_isn", suffixes=("_a", "_b"))
    m = m[(m["node_a"] < m["node_b"]) & ((m["syn_ts_b"] - m["syn_ts_a"]).abs() < OFFSET_WINDOW_S)]
    m = m.assign(off=((m["syn_ts_b"] - m["syn_ts_a"]) + (m["synack_ts_b"] - m["synack_ts_a"])) / 2)
    pairs = m.groupby(["node_a", "node_b"])["off"].agg(["median", "count"]).reset_index()
    counts = conns["node"].value_counts()
    ref = max(nodes, key=lambda n: (counts.get(n, 0), n))
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
    one node's conntrack cannot hold two live connections with one 5-tuple. A group that
    so meets exactly one journey joins it; one that meets none becomes a journey of its own.
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


def _point(conns: pd.DataFrame, ifnames: dict[tuple[str, int], str]) -> pd.Series:
    """Interface name of each record's capture point: the label of a per-interface capture
    (eth0.pcap), else the SLL2/pcapng interface named by the node's ip-addr dump (`any`,
    a capture tool's file); None when unknown."""
    label = conns["capture"].astype(str).str.split("/").str[-1]
    known = set(ifnames.values())
    per_iface = label.isin(known) | (label.str.match(UPLINK) & (label != "any"))
    named = pd.Series([ifnames.get((n, int(i))) for n, i in zip(conns["node"], conns["iface"], strict=True)],
                      index=conns.index, dtype=object)
    return pd.Series(np.where(per_iface, label, named), index=conns.index, dtype=object)


def snat_from_conntrack(cl: pd.DataFrame, conntrack: dict[str, tuple[str, list[Entry]]]) -> None:
    """Decide SNAT from the client node's conntrack dump where the captures cannot.

    A capture on the node's NIC alone shows a SNATed pod's connection only as
    nodeIP:port -> VIP. The node's conntrack entry for it (reply tuple towards that
    nodeIP:port) names the pod that opened it, or shows the node itself did.
    """
    todo = cl.index[cl["client_is_node"].fillna(False).astype(bool) & (cl["snat"] == "unknown")]
    index: dict[str, dict] = {}
    for j in todo:
        node = cl.at[j, "client_node"]
        if node not in conntrack or pd.isna(cl.at[j, "client_p"]) or pd.isna(cl.at[j, "vport"]):
            continue
        if node not in index:
            index[node] = {}
            for e in conntrack[node][1]:
                index[node].setdefault((e.proto, e.reply[1], e.reply[3], e.orig[1], e.orig[3]), []).append(e)
        key = (cl.at[j, "proto"], cl.at[j, "client_h"], int(cl.at[j, "client_p"]), cl.at[j, "vip"],
               int(cl.at[j, "vport"]))
        found = index[node].get(key)
        if not found:
            continue
        # one tuple twice (an old TIME_WAIT entry and a new one): decide only if they agree
        if len({(e.orig[0], e.orig[2], bool(e.snat)) for e in found}) > 1:
            cl.at[j, "snat_evidence"] = (
                f"{conntrack[node][0]}:" + ",".join(str(e.line) for e in found) + ": entries for "
                f"{key[1]}:{key[2]} -> {key[3]}:{key[4]} name different clients; the dump cannot tell "
                "which is this connection")
            continue
        e = found[-1]
        where = f"{conntrack[node][0]}:{e.line}"
        if e.snat:
            cl.at[j, "snat"] = "yes"
            cl.at[j, "snat_to"] = f"{e.reply[1]}:{e.reply[3]}"
            cl.at[j, "snat_evidence"] = (
                f"{where}: {e.orig[0]}:{e.orig[2]} -> {e.orig[1]}:{e.orig[3]} left as "
                f"{e.reply[1]}:{e.reply[3]} (the node's conntrack entry: SNATed)")
            cl.at[j, "client_h"], cl.at[j, "client_p"] = e.orig[0], e.orig[2]
            cl.at[j, "client_is_node"] = False
        else:
            cl.at[j, "snat_evidence"] = (
                f"{where}: the node itself opened {e.orig[0]}:{e.orig[2]} -> {e.orig[1]}:{e.orig[3]} "
                "(a host-network client: its source is already the node IP)")


def build_journeys(conns: pd.DataFrame, inventory: Inventory,
                   ifnames: dict[tuple[str, int], str] | None = None,
                   offsets: dict[str, float] | None = None,
                   conntrack: dict[str, tuple[str, list[Entry]]] | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Journeys from the connection records of all captures of an incident.

    `conntrack` maps a node to (its dump's file name, its conntrack entries): where the
    captures start only after the node's SNAT, its conntrack table tells the pod behind it.

    Returns (journeys, records, notes): one journey row per client connection
    (JOURNEY_COLUMNS), the connection records with their ``journey`` and clock-corrected
    ``ts_corr``, and notes on the clock offsets.
    """
    notes: list[str] = []
    if offsets is None:
        offsets, notes = clock_offsets(conns)
    if conns.empty:
        return pd.DataFrame(columns=JOURNEY_COLUMNS), conns.assign(journey=[], ts_corr=[]), notes
    r = conns.copy()
    r["ts_corr"] = r["ts"] - r["node"].map(offsets).fillna(0.0)
    r["syn_corr"] = r["syn_ts"] - r["node"].map(offsets).fillna(0.0)
    r["jn"] = assign_journeys(r, offsets)
    r["point"] = _point(r, ifnames or {})

    # address facts, computed once per distinct address
    addrs = pd.unique(pd.concat([r["orig_h"], r["resp_h"]], ignore_index=True))
    node_of = {a: inventory.node_of(a) for a in addrs}
    node_ip = {a: inventory.node_ip(a) for a in addrs}
    r["orig_node"] = r["orig_h"].map(node_of)
    r["orig_is_node"] = r["orig_h"].map(node_ip).notna()
    r["resp_node"] = r["resp_h"].map(node_of)
    r["resp_is_node"] = r["resp_h"].map(node_ip).notna()
    svc_rows = inventory.services
    vip_keys = set()
    np_map: dict[tuple[int, str], tuple[str, int]] = {}
    policy: dict[tuple[str, int, str], str] = {}
    if not svc_rows.empty:
        for s in svc_rows.itertuples():
            if s.lb_ip is not None and not pd.isna(s.lb_ip):
                vip_keys.add((s.lb_ip, int(s.port), s.proto))
                policy[(s.lb_ip, int(s.port), s.proto)] = s.policy
                if s.node_port is not None and not pd.isna(s.node_port):
                    np_map[(int(s.node_port), s.proto)] = (s.lb_ip, int(s.port))
    r["to_vip"] = pd.MultiIndex.from_arrays([r["resp_h"].astype(object), r["resp_p"].astype("int64"),
                                             r["proto"].astype(object)]).isin(list(vip_keys)) \
        if vip_keys else False

    # --- the client's own record: earliest SYN (not a stray SYN-ACK), else earliest ------
    r["_has_syn"] = r["syn_ts"].notna()
    r["_t"] = r["syn_corr"].fillna(r["ts_corr"])
    first = r.sort_values(["jn", "_has_syn", "to_vip", "_t"], ascending=[True, False, False, True])
    first = first.drop_duplicates("jn")
    first = first[first["_has_syn"] | ~first["history"].str.startswith("^")].set_index("jn")
    cl = pd.DataFrame(index=pd.Index(sorted(r["jn"].unique()), name="jn"))
    cl["client_uid"] = first["uid"]
    cl["client_h"] = first["orig_h"]
    cl["client_p"] = first["orig_p"]
    cl["client_node"] = first["orig_node"].where(first["orig_node"].notna() & ~first["orig_is_node"],
                                                 first["orig_h"].map(node_ip))
    # an address the inventory does not place: the node where a copy of the SYN was seen
    # leaving towards the load balancer's VIP (the LB never delivers a packet to its VIP to
    # a node, so that node sent it); a record elsewhere (the backend node) says nothing
    leaving = r["to_vip"] & ((r["orig_dir"] == "out")
                             | (r["orig_dir"].isna() & r["point"].fillna("").str.match(UPLINK)))
    sent_from = r[leaving].sort_values("_t").drop_duplicates("jn").set_index("jn")["node"]
    cl["client_node"] = cl["client_node"].fillna(sent_from.reindex(cl.index))
    cl["client_node_ip"] = cl["client_node"].map(
        {row.name: row.internal_ip for row in inventory.nodes.itertuples()})
    cl["client_is_node"] = first["orig_is_node"]
    # service: a VIP seen in the journey, else the NodePort's service, else the client's dst
    vip_rec = r[r["to_vip"]].sort_values("_t").drop_duplicates("jn").set_index("jn")
    cl["vip"] = vip_rec["resp_h"]
    cl["vport"] = vip_rec["resp_p"]
    if np_map:
        npr = r[r["resp_is_node"]].copy()
        npr["_svc"] = [np_map.get((int(p), pr)) for p, pr in zip(npr["resp_p"], npr["proto"], strict=True)]
        npr = npr[npr["_svc"].notna()].sort_values("_t").drop_duplicates("jn").set_index("jn")
        miss = cl["vip"].isna() & cl.index.isin(npr.index)
        idx = cl.index[miss]
        cl.loc[idx, "vip"] = [npr.at[j, "_svc"][0] for j in idx]
        cl.loc[idx, "vport"] = [npr.at[j, "_svc"][1] for j in idx]
    earliest = r.sort_values("_t").drop_duplicates("jn").set_index("jn")
    cl["vip"] = cl["vip"].fillna(first["resp_h"]).fillna(earliest["resp_h"])  # no client record: the
    cl["vport"] = cl["vport"].fillna(first["resp_p"]).fillna(earliest["resp_p"])  # responder as recorded
    # a journey without the client's record (a stray SYN-ACK, mid-stream packets) keeps the
    # protocol of its records; its client, SNAT and outcome stay unknown
    cl["proto"] = first["proto"].reindex(cl.index).fillna(r.sort_values("_t").groupby("jn")["proto"].first())
    r = r.merge(cl[["client_h", "client_p", "client_node", "client_node_ip", "client_is_node", "vip", "vport"]],
                left_on="jn", right_index=True, how="left")
    pre_lb = (r["resp_h"] == r["vip"]) & (r["resp_p"] == r["vport"])
    on_client = r["node"] == r["client_node"]
    egress_pt = r["point"].fillna("").str.match(UPLINK) | (r["point"].isna() & (r["orig_dir"] == "out"))

    def first_ev(mask: pd.Series, text: pd.Series) -> pd.Series:
        sel = r[mask].assign(_ev=text[mask]).sort_values("_t").drop_duplicates("jn").set_index("jn")
        return sel["_ev"]

    where = r["capture"].astype(str)
    four = r["orig_h"] + ":" + r["orig_p"].astype(str) + " -> " + r["resp_h"] + ":" + r["resp_p"].astype(str)
    hop = where + ": " + four

    # --- SNAT -----------------------------------------------------------------------------
    snat_yes = pre_lb & on_client & (r["orig_h"] == r["client_node_ip"]) & ~r["client_is_node"].fillna(False)
    # the source it left with is the client's own only says "no SNAT" when that source is known
    # not to be the node's IP: a pod IP, or a node whose IP is known and differs
    cl["client_is_pod"] = [inventory.is_pod_ip(h) if isinstance(h, str) else False for h in cl["client_h"]]
    pod_src = cl["client_is_pod"] | (cl["client_node_ip"].notna() & (cl["client_node_ip"] != cl["client_h"]))
    r = r.merge(pod_src.rename("_pod_src"), left_on="jn", right_index=True, how="left")
    pod_src_r = r["_pod_src"].fillna(False).astype(bool)
    snat_no = pre_lb & on_client & egress_pt & (r["orig_h"] == r["client_h"]) & pod_src_r \
        & ~r["client_is_node"].fillna(False)
    remote = ~on_client & (r["orig_h"] == r["client_h"]) & ~pre_lb & pod_src_r & ~r["client_is_node"].fillna(False)
    remote_yes = ~on_client & ~pre_lb & (r["orig_h"] == r["client_node_ip"]) & ~r["client_is_node"].fillna(False)
    ev_yes = first_ev(snat_yes, hop + " (left with the node IP)")
    ev_no = first_ev(snat_no, hop + " (left the node's NIC with the pod IP)")
    ev_ryes = first_ev(remote_yes, hop + " (arrived from the client node's IP)")
    ev_rno = first_ev(remote, hop + " (arrived with the client pod's IP)")
    snat_to = first_ev(snat_yes | remote_yes, r["orig_h"] + ":" + r["orig_p"].astype(str))
    cl["snat"] = "unknown"
    cl["snat_evidence"] = None
    for ev, val in ((ev_rno, "no"), (ev_ryes, "yes"), (ev_no, "no"), (ev_yes, "yes")):
        cl.loc[ev.index, "snat"] = val
        cl.loc[ev.index, "snat_evidence"] = ev
    cl["snat_to"] = snat_to.reindex(cl.index)
    cl.loc[cl["snat"] != "yes", "snat_to"] = None
    hostnet = cl["client_is_node"].fillna(False) & (cl["snat"] == "unknown")
    cl.loc[hostnet, "snat_evidence"] = (
        "the first capture point already shows the node's IP as the source: SNATed on the way, or a "
        "host-network client; a pod-side or `any` capture would tell")
    src_unknown = cl["snat_evidence"].isna() & ~pod_src & ~cl["client_is_node"].fillna(False)
    cl.loc[src_unknown, "snat_evidence"] = (
        "the source " + cl.loc[src_unknown, "client_h"].astype(str) + " is neither a known pod IP "
        "nor a node IP natlens knows (no cluster/, no ip-addr dump): the pod's or the node's address?")
    cl.loc[cl["snat_evidence"].isna(), "snat_evidence"] = \
        "no capture shows the connection after it left the client's node"
    if conntrack:
        snat_from_conntrack(cl, conntrack)

    # --- the load balancer's pick --------------------------------------------------------------
    post = ~pre_lb & r["resp_node"].notna() & ((r["resp_h"] != r["client_h"]) | (r["resp_p"] != r["client_p"]))
    post_node = r["resp_node"].where(post)
    ev_b = first_ev(post & r["resp_is_node"], hop + " (after the LB's DNAT to a node)")
    ev_b2 = first_ev(post & ~r["resp_is_node"], hop + " (DNAT to an endpoint)")
    b_node = r[post].assign(_n=post_node[post]).sort_values(["jn", "resp_is_node", "_t"],
                                                             ascending=[True, False, True])
    b_node = b_node.drop_duplicates("jn").set_index("jn")["_n"]
    cl["lb_backend"] = b_node.reindex(cl.index)
    cl["lb_backend_evidence"] = ev_b.reindex(cl.index).fillna(ev_b2.reindex(cl.index))
    # --- loopback ------------------------------------------------------------------------------
    cl["loopback"] = np.where(cl["lb_backend"].isna() | cl["client_node"].isna(), "unknown",
                              np.where(cl["lb_backend"] == cl["client_node"], "yes", "no"))
    cl["loopback_evidence"] = np.where(
        cl["loopback"] == "yes", "the connection came back to its own node " + cl["client_node"].astype(str)
        + ": " + cl["lb_backend_evidence"].astype(str),
        np.where(cl["loopback"] == "no", "the load balancer sent it to " + cl["lb_backend"].astype(str)
                 + ": " + cl["lb_backend_evidence"].astype(str), None))
    # without the backend's captures: a SYN-ACK from the VIP, or a SYN that left the
    # client's NIC with no copy of it on the client's node addressed elsewhere than the VIP
    # (the NodePort or endpoint it is DNATed to when it comes back), rules a loopback out
    vip_ans = first_ev(pre_lb & on_client & r["synack_ts"].notna(),
                       where + ": SYN-ACK from " + r["resp_h"] + ":" + r["resp_p"].astype(str)
                       + " (the VIP answered; a loopback is answered by the node itself)")
    came_back = set(r.loc[on_client & ~pre_lb, "jn"])
    left = first_ev(on_client & egress_pt & pre_lb & ~r["jn"].isin(came_back),
                    where + ": the SYN left towards the VIP and no copy came back to the node")
    unk = cl["loopback"] == "unknown"
    for ev in (left.reindex(cl.index[unk]).dropna(), vip_ans.reindex(cl.index[unk]).dropna()):
        cl.loc[ev.index, "loopback"] = "no"
        cl.loc[ev.index, "loopback_evidence"] = ev
    back = cl.index[(cl["loopback"] == "unknown") & cl.index.isin(list(came_back))]
    cl.loc[back, "loopback_evidence"] = (
        "a copy of the SYN came back to the client's node addressed elsewhere than the VIP, but "
        "natlens cannot tell whether to this node's NodePort (its addresses are not known)")
    nowhere = (cl["loopback"] == "unknown") & cl["client_node"].isna()
    cl.loc[nowhere, "loopback_evidence"] = (
        "the client's node is not known: " + cl.loc[nowhere, "client_h"].astype(str) + " is in no "
        "inventory and no capture shows its SYN leaving a node towards the VIP")
    cl.loc[cl["loopback_evidence"].isna(), "loopback_evidence"] = \
        "no capture shows where the load balancer sent it"

    # --- outcome and latency, from the client's own record -------------------------------------
    f = first.reindex(cl.index)
    est = f["established"].fillna(False).astype(bool)
    rst_states = f["conn_state"].isin(["REJ", "RSTR", "RSTRH", "RSTOS0", "RSTO"]) | (f["end"] == "rst")
    cl["established"] = est
    # a SYN-ACK from elsewhere than the address called, reset by the client: the load
    # balancer keeps the 5-tuple on that backend, so every retransmission meets the same
    # fate (DESIGN.md section 1) and the connect cannot complete
    rejected = (r["orig_h"] == r["client_h"]) & (r["orig_p"] == r["client_p"]) & ~pre_lb \
        & r["history"].str.contains("h", regex=False) & r["history"].str.contains("R", regex=False)
    wrong_answer = cl.index.isin(list(set(r.loc[rejected, "jn"])))
    udp = (f["proto"] == "udp").to_numpy()
    syn_only = ~est & (f["resp_pkts"].fillna(0) == 0)
    cl["outcome"] = np.select(
        [udp & (f["resp_pkts"].fillna(0) > 0), udp & (f["end"] == "timeout"), udp,
         est, rst_states, f["end"] == "timeout",
         syn_only & (f["end"] == "capture-end") & (f["syn_retransmits"].fillna(0) > 0) & wrong_answer],
        ["answered", "unanswered", "unknown", "established", "reset", "timed out", "timed out"],
        "unknown")
    cl.loc[f["uid"].isna(), "outcome"] = "unknown"
    ended = f["end"].map({"capture-end": "unknown (capture ended)"}).fillna(f["end"]).astype(str)
    head = f["capture"].astype(str) + ": " + f["conn_state"].astype(str) + " " + f["history"].astype(str)
    cl["outcome_evidence"] = np.where(
        udp, head + ", " + f["orig_pkts"].fillna(0).astype(int).astype(str) + " packet(s) out, "
        + f["resp_pkts"].fillna(0).astype(int).astype(str) + " back, ended " + ended,
        head + ", " + (f["syn_retransmits"].fillna(0) + 1).astype(int).astype(str) + " SYN(s), ended "
        + ended + np.where((cl["outcome"] == "timed out") & (f["end"] != "timeout"),
                           "; each SYN was answered from the wrong address and reset by the client",
                           ""))
    cl["handshake_ms"] = f["handshake_rtt"] * 1e3
    cl["connect_ms"] = f["connect"] * 1e3
    cl["first_byte_ms"] = f["first_byte"] * 1e3
    cl["syn_retransmits"] = f["syn_retransmits"]
    cl["ts"] = r.groupby("jn")["_t"].min()
    cl["policy"] = [policy.get((v, int(p) if not pd.isna(p) else -1, pr), "unknown")
                    for v, p, pr in zip(cl["vip"], cl["vport"], cl["proto"], strict=True)]
    cl["service"] = cl["vip"].astype(str) + ":" + cl["vport"].astype("Int64").astype(str) + "/" + \
        cl["proto"].astype(str)
    loop = cl["loopback"].map({"yes": "loopback", "no": "remote"}).fillna("unknown")
    sn = cl["snat"].map({"yes": "snat", "no": "no-snat"}).fillna("snat-unknown")
    cl["path"] = loop + "/" + sn
    srt = r.sort_values(["jn", "_t"], kind="stable")
    jn_sorted = srt["jn"].to_numpy()
    cl["hops"] = r.groupby("jn").size()
    caps = srt[["jn", "capture"]].drop_duplicates()
    cl["captures"] = join_groups(caps["jn"].to_numpy(), caps["capture"].to_numpy(dtype=object),
                                 int(jn_sorted.max()) + 1, ", ")[cl.index.to_numpy()]
    bounds = np.flatnonzero(np.diff(jn_sorted)) + 1
    uid_lists = [list(x) for x in np.split(srt["uid"].to_numpy(dtype=object), bounds)]
    cl["uids"] = pd.Series(uid_lists, index=pd.unique(jn_sorted)).reindex(cl.index)
    label = where.str.split("/").str[-1]
    iface = np.where(r["point"].notna() & (r["point"] != label), " (" + r["point"].astype(str) + ")", "")
    hop_at = where + iface + ": " + four
    hop_lists = [list(x) for x in np.split(hop_at.loc[srt.index].to_numpy(dtype=object), bounds)]
    cl["hop_list"] = pd.Series(hop_lists, index=pd.unique(jn_sorted)).reindex(cl.index)
    cl["client_is_node"] = cl["client_is_node"].fillna(False).astype(bool)
    cl = cl.sort_values("ts").reset_index()
    cl["journey"] = [f"J{i}" for i in range(len(cl))]
    jmap = dict(zip(cl["jn"], cl["journey"], strict=True))
    r["journey"] = r["jn"].map(jmap)
    records = r.drop(columns=["jn", "_has_syn", "_t"])
    return cl[JOURNEY_COLUMNS], records, notes
