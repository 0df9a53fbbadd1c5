"""Packet table of one capture point -> one record per TCP/UDP connection, like Zeek's conn.log.

Why: a journey across NAT is assembled from what each capture point saw of a
connection, and a customer can check each record against Zeek or Wireshark.

Everything is vectorized (numpy on the packet columns, no per-packet Python):
packets are grouped by flow (protocol, both endpoints, interface, VLAN, VNI),
sorted by time, and a flow is cut into connections at every SYN that carries a
new ISN (a reused 5-tuple is a new connection) and, for UDP, after 60 s of
silence. Roles follow Zeek: the sender of the first packet is the originator,
except that the roles are flipped ("^" in the history) when the first packet
is a SYN-ACK, or when it is not a SYN and only its source port is a likely
server port.

Columns (times: ``ts``/``*_ts`` float seconds since the epoch UTC, durations float seconds)

=================  ===========================================================
ts, ts_ns          first packet of the connection (float s / int ns)
uid                ``<capture>#<n>``, unique within an incident
orig_h, orig_p     originator address and port (Zeek ``id.orig_h``/``id.orig_p``)
resp_h, resp_p     responder address and port
proto              "tcp" | "udp"
duration           last packet - first packet (0.0 for one packet; Zeek leaves it unset)
orig_bytes         payload bytes: TCP from sequence numbers as Zeek does (so bytes
resp_bytes         the capture missed still count), UDP the sum of payload lengths
conn_state         Zeek's: S0 S1 SF REJ S2 S3 RSTO RSTR RSTOS0 RSTRH SH SHR OTH
history            Zeek's letters (S H A D F R I Q T G W ^; upper case = originator)
orig_pkts ...      orig_pkts, orig_ip_bytes, resp_pkts, resp_ip_bytes (IP total lengths)
capture, node      capture label (``node/label`` in an incident) and node name
iface              SLL2 interface index or pcapng interface id (-1 when unknown)
vlan, vni          outer VLAN id / tunnel VNI the packets carried (-1 when none)
client_isn         originator's SYN sequence number; when no SYN was seen, the
                   SYN-ACK's ack - 1 (the ISN survives NAT: the journey key)
server_isn         responder's SYN-ACK sequence number
syn_ts             first SYN from the originator; ``synack_ts`` first SYN-ACK from the
                   responder; ``ack_ts`` the originator's ACK of that SYN-ACK
handshake_rtt      ack_ts - the last SYN before the SYN-ACK (Wireshark's
                   tcp.analysis.initial_rtt), seconds; NaN when the handshake was not seen
connect            ack_ts - syn_ts: connect time including SYN retransmissions
syn_retransmits    originator SYNs with this ISN beyond the first
first_byte         first responder payload byte - syn_ts (or - ts without a SYN)
end                "rst" | "fin" | "timeout" | "capture-end": how it ended as seen here;
                   "timeout" = silent, before the capture ended, for longer than the next
                   SYN retransmission was due (SYN-only; Linux RTO 1 s doubling, +25 %)
                   or than Zeek's inactivity timeout (300 s TCP, 60 s UDP); for UDP that is only
                   going idle, not a failure (journeys say answered / unanswered)
established        the three-way handshake completed as seen here
last_ts            last packet of the connection
orig_dir           direction of the originator's first packet at this point ("in"/"out")
orig_ip_id         IP ID, TCP timestamp value and payload hash of the originator's
orig_tsval         first packet: they survive NAT and help pair copies of one
orig_hash          connection across capture points (UDP has no ISN)
=================  ===========================================================

Deliberate differences from Zeek (tests/analysis/test_connections_zeek.py):
ICMP and other protocols make no records (counted in ``attrs["skipped"]``); for
tunnelled packets the inner connection is recorded, not the outer UDP flow; a
first SYN-ACK always flips the roles (Zeek only does so by port heuristics); no
'C' (checksum) letters, since the packet table does not verify checksums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# Zeek endpoint states.
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

TCP_INACTIVITY_S = 300.0  # Zeek tcp_inactivity_timeout
UDP_INACTIVITY_S = 60.0  # Zeek udp_inactivity_timeout
SYN_RTO_S = 1.0  # Linux initial SYN retransmission timeout; doubles per retry

# Ports a server plausibly listens on (Zeek's likely_server_ports is built from
# its analyzers' ports; this is the same idea for the services seen in clusters).
LIKELY_SERVER_PORTS = frozenset(
    [1080, 1433, 1521, 1812, 2049, 2379, 2380, 3128, 3306, 3389, 4789, 5060, 5353, 5355,
     5432, 5672, 6081, 6379, 6443, 8000, 8008, 8080, 8443, 8888, 9000, 9090, 9200, 9300,
     9092, 10250, 11211, 15672, 27017]
)

COLUMNS = [
    "ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "duration",
    "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
    "resp_pkts", "resp_ip_bytes", "capture", "node", "iface", "vlan", "vni",
    "client_isn", "server_isn", "syn_ts", "synack_ts", "ack_ts", "handshake_rtt",
    "connect", "syn_retransmits", "first_byte", "end", "established", "ts_ns", "last_ts",
    "orig_dir", "orig_ip_id", "orig_tsval", "orig_hash",
]

_SHIFT = np.int64(1) << np.int64(36)  # per-group offset for grouped running maxima
_M32 = np.int64(0xFFFFFFFF)


def _likely_server(port: np.ndarray) -> np.ndarray:
    lut = np.zeros(65536, dtype=bool)
    lut[:1024] = True
    lut[list(LIKELY_SERVER_PORTS)] = True
    return lut[np.clip(port, 0, 65535)]


def _col(df: pd.DataFrame, name: str, fill, dtype) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), fill, dtype=dtype)
    s = df[name]
    return s.fillna(fill).to_numpy(dtype=dtype) if s.hasnans else s.to_numpy(dtype=dtype)


def _first_where(gid: np.ndarray, mask: np.ndarray, n: int, last: bool = False) -> np.ndarray:
    """Index of the first (or last) row of each group (gid sorted) where mask holds; -1 if none."""
    out = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    if idx.size:
        g = gid[idx]
        keep = np.ones(idx.size, dtype=bool)
        if last:
            np.not_equal(g[1:], g[:-1], out=keep[:-1])
        else:
            np.not_equal(g[1:], g[:-1], out=keep[1:])
        out[g[keep]] = idx[keep]
    return out


def _last_where(gid: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    return _first_where(gid, mask, n, last=True)


def _grouped_cummax(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Running maximum restarting at each group (gid non-decreasing, |values| < 2**35)."""
    off = gid.astype(np.int64) * _SHIFT
    return np.maximum.accumulate(values + off) - off


def join_groups(gid: np.ndarray, chars: np.ndarray, n: int, sep: str = "") -> np.ndarray:
    """Concatenate the strings of each group (gid non-decreasing) in order: one join, then slices."""
    out = np.full(n, "", dtype=object)
    if not len(gid):
        return out
    parts = chars.astype(str).tolist()
    lens = np.fromiter((len(x) for x in parts), dtype=np.int64, count=len(parts)) + len(sep)
    text = sep.join(parts) + sep
    ends = np.cumsum(lens)
    starts = ends - lens
    first = _first_where(gid, np.ones(len(gid), dtype=bool), n)
    last = _last_where(gid, np.ones(len(gid), dtype=bool), n)
    has = np.flatnonzero(first >= 0)
    a, b = starts[first[has]], ends[last[has]] - len(sep)
    out[has] = [text[i:j] for i, j in zip(a.tolist(), b.tolist(), strict=True)]
    return out


def _take(arr: np.ndarray, idx: np.ndarray, fill):
    out = np.where(idx >= 0, arr[np.maximum(idx, 0)], fill)
    return out


def _signed32(x: np.ndarray) -> np.ndarray:
    x = x & _M32
    return x - ((x >= (1 << 31)).astype(np.int64) << 32)


def connections(packets: pd.DataFrame, *, node: str | None = None,
                capture: str | None = None, capture_end_ns: int | None = None) -> pd.DataFrame:
    """One record per TCP/UDP connection seen in one capture's packet table (see module doc)."""
    return connections_with_index(packets, node=node, capture=capture,
                                  capture_end_ns=capture_end_ns)[0]


COPY_WINDOW_NS = 1_000_000  # copies of one packet on two interfaces are microseconds apart


def interface_copies(packets: pd.DataFrame) -> np.ndarray:
    """Packets of a Linux cooked v1 (SLL) `any` capture that repeat one just seen.

    SLL v1 records no interface index, so the copies of one packet crossing a veth,
    the bridge and the NIC unchanged cannot be told apart by interface; they are the
    same packet when every header field (IP ID, TCP seq/ack/flags/timestamps, payload)
    matches within COPY_WINDOW_NS. A retransmission differs in IP ID or TSval, or
    comes hundreds of ms later. SLL2 captures keep each copy apart by ifindex instead.
    """
    n = len(packets)
    out = np.zeros(n, dtype=bool)
    if not n or "linktype" not in packets:
        return out
    sll1 = np.flatnonzero(_col(packets, "linktype", -1, np.int64) == 113)
    if sll1.size < 2:
        return out
    keys = ["src", "dst", "proto", "sport", "dport", "ip_id", "seq", "ack", "tcp_flags", "tsval",
            "payload_len", "payload_hash"]
    sub = packets.iloc[sll1][[k for k in keys if k in packets]]
    key = sub.astype(object).fillna(-1).groupby(list(sub.columns), sort=False).ngroup().to_numpy()
    ts = _col(packets, "ts_ns", 0, np.int64)[sll1]
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    dup = np.zeros(sll1.size, dtype=bool)
    dup[1:] = (k[1:] == k[:-1]) & (t[1:] - t[:-1] <= COPY_WINDOW_NS)
    out[sll1[order[dup]]] = True
    return out


def connections_with_index(packets: pd.DataFrame, *, node: str | None = None,
                           capture: str | None = None, capture_end_ns: int | None = None
                           ) -> tuple[pd.DataFrame, np.ndarray]:
    """Like connections(), plus for every packet row the row number of its connection (-1: none).

    ``capture`` names the capture point in ``uid``/``capture`` (default: the packets'
    ``capture`` column); ``capture_end_ns`` is when the capture stopped (default: its
    last packet), used to tell a timeout from a capture that simply ended.
    """
    n_all = len(packets)
    if capture is None:
        capture = str(packets["capture"].iloc[0]) if n_all and "capture" in packets else "capture"
    proto = _col(packets, "proto", -1, np.int64)
    sport = _col(packets, "sport", -1, np.int64)
    dport = _col(packets, "dport", -1, np.int64)
    usable = ((proto == 6) | (proto == 17)) & (sport >= 0) & (dport >= 0)
    copy = interface_copies(packets) & usable
    usable &= ~copy
    skipped: dict[str, int] = {}
    if (~usable).any():
        reason = np.where(copy, "interface-copy", np.where(proto == 1, "icmp", np.where(
            proto == 58, "icmpv6", np.where((proto == 6) | (proto == 17), "no-ports", "other-protocol"))))
        r, c = np.unique(reason[~usable], return_counts=True)
        skipped = {str(k): int(v) for k, v in zip(r, c, strict=True)}
    rows = np.flatnonzero(usable)
    ts_all = _col(packets, "ts_ns", 0, np.int64)
    if capture_end_ns is None:
        capture_end_ns = int(ts_all.max()) if n_all else 0
    packet_conn = np.full(n_all, -1, dtype=np.int64)
    if rows.size == 0:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})
        empty.attrs.update(packets=n_all, used=0, skipped=skipped)
        return empty, packet_conn

    sub = packets.iloc[rows] if rows.size != n_all else packets
    proto, sport, dport = proto[rows], sport[rows], dport[rows]
    ts = ts_all[rows]
    record = _col(sub, "record", 0, np.int64) if "record" in sub else np.arange(rows.size)
    flags = _col(sub, "tcp_flags", 0, np.int64)
    seq = _col(sub, "seq", 0, np.int64)
    ack = _col(sub, "ack", 0, np.int64)
    window = _col(sub, "window", -1, np.int64)
    ip_len = _col(sub, "ip_len", 0, np.int64)
    plen = _col(sub, "payload_len", 0, np.int64)
    ifindex = _col(sub, "ifindex", -1, np.int64)
    iface = np.where(ifindex >= 0, ifindex, _col(sub, "iface", -1, np.int64))
    vlan = _col(sub, "vlan", -1, np.int64)
    vni = _col(sub, "vni", -1, np.int64)

    # Addresses as integer codes, endpoints as code*65536+port.
    addr_codes, addr_names = pd.factorize(pd.concat([sub["src"], sub["dst"]], ignore_index=True))
    src_c = addr_codes[: rows.size].astype(np.int64)
    dst_c = addr_codes[rows.size:].astype(np.int64)
    e_src = (src_c << 16) | sport
    e_dst = (dst_c << 16) | dport
    lo = np.minimum(e_src, e_dst)
    hi = np.maximum(e_src, e_dst)
    flow = pd.DataFrame({"p": proto, "lo": lo, "hi": hi, "i": iface, "v": vlan, "n": vni}
                        ).groupby(["p", "lo", "hi", "i", "v", "n"], sort=False).ngroup().to_numpy()

    order = np.lexsort((record, ts, flow))
    flow, proto, ts, flags, seq, ack = flow[order], proto[order], ts[order], flags[order], seq[order], ack[order]
    window, ip_len, plen, e_src, e_dst = window[order], ip_len[order], plen[order], e_src[order], e_dst[order]
    n = ts.size
    is_tcp = proto == 6
    syn = is_tcp & ((flags & SYN) != 0)
    syn_only = syn & ((flags & ACK) == 0)
    synack = syn & ((flags & ACK) != 0)
    fin = is_tcp & ((flags & FIN) != 0)
    rst = is_tcp & ((flags & RST) != 0)
    ackf = is_tcp & ((flags & ACK) != 0)

    # --- cut flows into connections -------------------------------------------------
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(flow[1:], flow[:-1], out=new[1:])
    ar = np.arange(n)
    last_syn = np.maximum.accumulate(np.where(syn_only, ar, -1))
    prev_syn = np.empty(n, dtype=np.int64)
    prev_syn[0] = -1
    prev_syn[1:] = last_syn[:-1]
    valid_prev = (prev_syn >= 0) & (flow[np.maximum(prev_syn, 0)] == flow)
    new |= syn_only & (~valid_prev | (seq[np.maximum(prev_syn, 0)] != seq))
    gap = np.zeros(n, dtype=bool)
    gap[1:] = (ts[1:] - ts[:-1]) > int(UDP_INACTIVITY_S * 1e9)
    new |= gap & ~is_tcp
    conn = np.cumsum(new) - 1
    nc = int(conn[-1]) + 1
    starts = np.flatnonzero(new)

    # --- roles ----------------------------------------------------------------------
    f0 = starts
    first_synonly = syn_only[f0]
    first_synack = synack[f0]
    sp0 = e_src[f0] & 0xFFFF
    dp0 = e_dst[f0] & 0xFFFF
    ls_s, ls_d = _likely_server(sp0), _likely_server(dp0)
    c_tcp = is_tcp[f0]
    port_flip = ls_s & np.where(ls_d, c_tcp & ~syn[f0] & (sp0 < dp0), True)
    flip = ~first_synonly & (first_synack | port_flip)
    orig_e = np.where(flip, e_dst[f0], e_src[f0])
    resp_e = np.where(flip, e_src[f0], e_dst[f0])
    is_orig = e_src == orig_e[conn]
    d = (~is_orig).astype(np.int64)  # 0 orig, 1 resp

    # --- counters ---------------------------------------------------------------------
    o = is_orig
    orig_pkts = np.bincount(conn, weights=o, minlength=nc).astype(np.int64)
    resp_pkts = np.bincount(conn, weights=~o, minlength=nc).astype(np.int64)
    orig_ipb = np.bincount(conn, weights=ip_len * o, minlength=nc).astype(np.int64)
    resp_ipb = np.bincount(conn, weights=ip_len * ~o, minlength=nc).astype(np.int64)
    t_first = ts[starts]
    ends = np.r_[starts[1:], n] - 1
    t_last = ts[ends]

    # --- per (conn, direction) sequence arithmetic -------------------------------------
    cd = conn * 2 + d
    o2 = np.argsort(cd, kind="stable")
    cd2 = cd[o2]
    ncd = nc * 2
    first_cd = _first_where(cd2, np.ones(n, dtype=bool), ncd)  # index into o2 order
    has_cd = first_cd >= 0
    first_row_cd = np.where(has_cd, o2[np.maximum(first_cd, 0)], -1)  # main-order index
    start_seq = np.where(syn[np.maximum(first_row_cd, 0)], seq[np.maximum(first_row_cd, 0)],
                         seq[np.maximum(first_row_cd, 0)] - 1)
    seg_len = plen + syn + fin - np.where(rst, plen, 0)
    rel = _signed32(seq - start_seq[cd])
    end_rel = rel + seg_len
    # rows after the endpoint's first RST no longer move its sequence space (Zeek)
    first_rst_cd = _first_where(cd2, rst[o2], ncd)
    rank = np.empty(n, dtype=np.int64)
    rank[o2] = np.arange(n)  # position within o2 (time order within cd)
    frr = first_rst_cd[cd]
    after_rst = (frr >= 0) & (rank > frr)
    # last_seq before each packet: 1 (relative) before the endpoint's first packet, with or
    # without a SYN, since start_seq is the ISN or the first packet's seq - 1
    init_last = np.ones(ncd, dtype=np.int64)
    v = np.where(after_rst, -(1 << 34), end_rel)[o2]
    cm = _grouped_cummax(v, cd2)
    prev_max = np.empty(n, dtype=np.int64)
    prev_max[0] = 0
    prev_max[1:] = cm[:-1]
    is_first_cd = np.zeros(n, dtype=bool)
    is_first_cd[first_cd[has_cd]] = True
    prev_max = np.where(is_first_cd, init_last[cd2], np.maximum(prev_max, init_last[cd2]))
    rxmit_o2 = (plen[o2] > 0) & ~rst[o2] & ~syn[o2] & ~after_rst[o2] & is_tcp[o2] & \
        (end_rel[o2] <= prev_max) & ~is_first_cd
    rxmit = np.empty(n, dtype=bool)
    rxmit[o2] = rxmit_o2
    last_rel = np.full(ncd, 0, dtype=np.int64)
    np.maximum.at(last_rel, cd2, np.where(after_rst[o2], 0, end_rel[o2]))
    # AckSeq: the peer's acks of this endpoint, after this endpoint's first packet
    peer_cd = conn * 2 + (1 - d)
    ack_rel = _signed32(ack - start_seq[peer_cd])
    peer_first_row = first_row_cd[peer_cd]
    ack_ok = ackf & ~rst & (peer_first_row >= 0) & (ar >= peer_first_row)
    acked = np.zeros(ncd, dtype=np.int64)
    np.maximum.at(acked, peer_cd[ack_ok], ack_rel[ack_ok])
    fin_cnt = np.bincount(cd, weights=fin, minlength=ncd)
    size = np.maximum(last_rel, acked)
    size = np.where(size > 0, size - 1, 0)
    size = np.where((fin_cnt > 0) & (size > 0), size - 1, size)
    udp_bytes = np.bincount(cd, weights=plen, minlength=ncd).astype(np.int64)

    # --- gaps: the peer acks bytes whose content this capture does not hold -----------
    # Zeek's reassembler keeps a point up to which an endpoint's data was delivered
    # (payload fully captured) or skipped; an ack beyond it is a content gap, except
    # acks on FIN/RST packets, which skip silently.
    caplen = _col(sub, "caplen", -1, np.int64)[order]
    wirelen = _col(sub, "wirelen", -1, np.int64)[order]
    whole = (caplen < 0) | (wirelen < 0) | (caplen >= wirelen)
    delivered = ((plen > 0) | fin) & whole & ~rst & ~after_rst
    big_neg = -(1 << 34)
    o_dend = _grouped_cummax(np.where(is_orig & is_tcp & delivered, end_rel, 1), conn)
    r_dend = _grouped_cummax(np.where(~is_orig & is_tcp & delivered, end_rel, 1), conn)
    # acks of the originator's data come from the responder, and vice versa
    o_ack = _grouped_cummax(np.where(~is_orig & ack_ok, ack_rel, big_neg), conn)
    r_ack = _grouped_cummax(np.where(is_orig & ack_ok, ack_rel, big_neg), conn)
    prev = np.where(is_orig, np.roll(r_ack, 1), np.roll(o_ack, 1))
    prev[new] = big_neg
    point = np.maximum(np.where(is_orig, r_dend, o_dend), prev)
    gap_first = ack_ok & ~fin & ~rst & (ack_rel > point)

    # --- zero windows ----------------------------------------------------------------------
    o_fin = _grouped_cummax(np.where(is_orig & fin, 1, 0), conn)
    r_fin = _grouped_cummax(np.where(~is_orig & fin, 1, 0), conn)
    peer_closed_before = np.where(is_orig, r_fin, o_fin) > 0
    zero_win = is_tcp & (window == 0) & ~rst & ~after_rst & ~peer_closed_before

    # --- history -------------------------------------------------------------------------
    nbits = syn.astype(np.int8) + fin + rst
    code = np.full(n, "", dtype="<U1")
    code = np.where(is_tcp & (nbits > 1), np.where(fin & rst, "I", "Q"), code)
    one = is_tcp & (nbits == 1)
    code = np.where(one & syn, np.where(ackf, "H", "S"), code)
    code = np.where(one & fin, "F", code)
    code = np.where(one & rst, "R", code)
    code = np.where(is_tcp & (nbits == 0) & (plen > 0), "D", code)
    code = np.where(is_tcp & (nbits == 0) & (plen == 0) & ackf, "A", code)
    code = np.where(~is_tcp, "D", code)
    # repeat marker for S/H, F, R: letter again when at a different sequence number
    marker = np.where(fin & one, rel + plen, rel)
    ev_rows, ev_sub, ev_char = [], [], []
    kind = np.where(one & syn, 1, np.where(one & fin, 2, np.where(one & rst, 3, 0)))
    has = code != ""
    hdf = pd.DataFrame({"c": conn, "d": d, "code": code, "kind": kind, "m": marker})
    dup_first = hdf.duplicated(["c", "d", "code"]).to_numpy()
    add = has & ~dup_first
    rep = has & (kind > 0)
    if rep.any():
        ri = np.flatnonzero(rep)
        r = hdf.iloc[ri]
        prevm = r.groupby(["c", "d", "kind"], sort=False)["m"].shift(1)
        again = prevm.notna().to_numpy() & (prevm.to_numpy() != r["m"].to_numpy())
        add[ri[again]] = True
    ev_rows.append(np.flatnonzero(add))
    ev_sub.append(np.zeros(int(add.sum()), dtype=np.int64))
    ev_char.append(code[add])

    def scaled(mask: np.ndarray, letter: str, sub_order: int, side_is_orig: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if not idx.size:
            return
        side = side_is_orig[idx]
        k = pd.DataFrame({"c": conn[idx], "s": side}).groupby(["c", "s"], sort=False).cumcount().to_numpy() + 1
        lg = np.log10(k)
        keep = np.isclose(lg, np.round(lg))
        ev_rows.append(idx[keep])
        ev_sub.append(np.full(int(keep.sum()), sub_order))
        ev_char.append(np.where(side[keep], letter, letter.lower()))

    scaled(zero_win, "W", 1, is_orig)
    scaled(rxmit, "T", 2, is_orig)
    scaled(gap_first, "G", 3, ~is_orig)  # the gap belongs to the endpoint being acked
    ev_r = np.concatenate(ev_rows)
    ev_s = np.concatenate(ev_sub)
    ev_c = np.concatenate(ev_char)
    ev_side_orig = np.where(ev_s == 3, ~is_orig[ev_r], is_orig[ev_r])
    ev_c = np.where(ev_side_orig | (ev_s > 0), ev_c, np.char.lower(ev_c))
    eo = np.lexsort((ev_s, ev_r))
    history = join_groups(conn[ev_r[eo]], ev_c[eo], nc)
    history = np.char.add(np.where(flip, "^", ""), history.astype(str))

    # --- handshake ---------------------------------------------------------------------
    f_syn = _first_where(conn, syn_only & is_orig, nc)
    syn_cnt = np.bincount(conn, weights=syn_only & is_orig, minlength=nc).astype(np.int64)
    f_synack = _first_where(conn, synack & ~is_orig, nc)
    server_isn = _take(seq, f_synack, -1)
    client_isn = np.where(f_syn >= 0, _take(seq, f_syn, -1),
                          np.where(f_synack >= 0, (_take(ack, f_synack, 0) - 1) & _M32, -1))
    synack_ts = _take(ts, f_synack, -1)
    hs_ack = is_orig & ackf & ~syn & ~rst & (f_synack[conn] >= 0) & (ts >= synack_ts[conn]) & \
        (ack == ((server_isn[conn] + 1) & _M32))
    f_ack = _first_where(conn, hs_ack, nc)
    l_syn = _last_where(conn, syn_only & is_orig & (f_synack[conn] >= 0) & (ts <= synack_ts[conn]), nc)
    syn_ts = _take(ts, f_syn, -1)
    ack_ts = _take(ts, f_ack, -1)
    established = (f_synack >= 0) & (f_ack >= 0)
    hs_rtt = np.where(established & (l_syn >= 0), (ack_ts - _take(ts, l_syn, 0)) / 1e9, np.nan)
    connect = np.where(established & (f_syn >= 0), (ack_ts - syn_ts) / 1e9, np.nan)
    f_data = _first_where(conn, ~is_orig & (plen > 0) & ~rst, nc)
    t0 = np.where(f_syn >= 0, syn_ts, t_first)
    first_byte = np.where(f_data >= 0, (_take(ts, f_data, 0) - t0) / 1e9, np.nan)

    # --- endpoint states (Zeek's machine, from the order of control packets) -------------
    c_tcp = is_tcp[starts]
    fo = first_row_cd[0::2]
    fr = first_row_cd[1::2]
    fo_flags = _take(flags, fo, 0)
    o_syn_only = (fo >= 0) & ((fo_flags & (SYN | ACK)) == SYN)
    o_synack = (fo >= 0) & ((fo_flags & (SYN | ACK)) == (SYN | ACK))
    pure_ack0 = ackf & ~syn & ~fin & ~rst & (plen == 0)
    r_sig_mask = ~is_orig & ~(pure_ack0 & o_syn_only[conn])
    r_sig = _first_where(conn, r_sig_mask, nc)
    r_sig_syn = (r_sig >= 0) & syn[np.maximum(r_sig, 0)]
    r_base = np.where(fr < 0, INACTIVE, np.where(r_sig_syn, ESTABLISHED,
                                                 np.where(r_sig < 0, INACTIVE, PARTIAL)))
    f_r_syn = _first_where(conn, ~is_orig & syn, nc)
    o_ack_first = (fo >= 0) & ((fo_flags & ACK) != 0) & ((fo_flags & (SYN | FIN | RST)) == 0) & \
        (f_r_syn >= 0) & (f_r_syn < np.maximum(fo, 0))
    o_base = np.where(fo < 0, INACTIVE, np.where(
        o_syn_only, np.where(f_r_syn >= 0, ESTABLISHED, SYN_SENT),
        np.where(o_synack, SYN_ACK_SENT, np.where(o_ack_first, ESTABLISHED, PARTIAL))))
    fin_o = _first_where(conn, fin & is_orig, nc)
    fin_r = _first_where(conn, fin & ~is_orig, nc)
    rst_o = _first_where(conn, rst & is_orig, nc)
    rst_r = _first_where(conn, rst & ~is_orig, nc)

    def final_state(base, my_fin, my_rst, peer_fin):
        st = np.where(my_fin >= 0, CLOSED, base)
        closed_first = (my_fin >= 0) & (my_rst > my_fin)
        peer_closed = (peer_fin >= 0) & (peer_fin < my_rst)
        reset = (my_rst >= 0) & ~(closed_first & peer_closed)
        # a FIN after the RST is ignored; a peer FIN after our FIN+RST restores CLOSED
        back = closed_first & (peer_fin > my_rst)
        return np.where(reset & ~back, RESET, st)

    os_ = final_state(o_base, fin_o, rst_o, fin_r)
    rs_ = final_state(r_base, fin_r, rst_r, fin_o)
    osz, rsz = size[0::2], size[1::2]
    o_in = (os_ == INACTIVE) | (os_ == PARTIAL)
    r_in = (rs_ == INACTIVE) | (rs_ == PARTIAL)
    rstos0 = pd.Series(history).str.match(r"^\^?S[^HAFGIQ]*R").to_numpy()
    state = np.select(
        [rs_ == RESET,
         os_ == RESET,
         (rs_ == CLOSED) & (os_ == CLOSED),
         os_ == CLOSED,
         rs_ == CLOSED,
         (os_ == SYN_SENT) & (rs_ == INACTIVE),
         (os_ == ESTABLISHED) & (rs_ == ESTABLISHED)],
        [np.where((os_ == SYN_SENT) | (os_ == SYN_ACK_SENT) | ((os_ == RESET) & (osz == 0) & (rsz == 0)),
                  "REJ", np.where(o_in, "RSTRH", "RSTR")),
         np.where(r_in & rstos0, "RSTOS0", "RSTO"),
         "SF",
         np.where(r_in, "SH", "S2"),
         np.where(o_in, "SHR", "S3"),
         "S0",
         "S1"],
        "OTH")
    udp_state = np.where(orig_pkts > 0, np.where(resp_pkts > 0, "SF", "S0"),
                         np.where(resp_pkts > 0, "SHR", "OTH"))
    state = np.where(c_tcp, state, udp_state)
    orig_bytes = np.where(c_tcp, osz, udp_bytes[0::2])
    resp_bytes = np.where(c_tcp, rsz, udp_bytes[1::2])

    # --- how it ended ------------------------------------------------------------------
    any_rst = np.minimum(np.where(rst_o >= 0, rst_o, n), np.where(rst_r >= 0, rst_r, n))
    both_fin_before = (fin_o >= 0) & (fin_r >= 0) & (np.maximum(fin_o, fin_r) < any_rst)
    idle_ns = capture_end_ns - t_last
    # a SYN-only attempt has timed out once the next retransmission is overdue (+25 %)
    syn_wait = np.where(syn_cnt > 0, 1.25 * SYN_RTO_S * np.power(2.0, np.maximum(syn_cnt - 1, 0)), 0)
    syn_only_conn = c_tcp & ~established & (resp_pkts == 0) & (syn_cnt > 0)
    limit = np.where(syn_only_conn, syn_wait,
                     np.where(c_tcp, TCP_INACTIVITY_S, UDP_INACTIVITY_S)) * 1e9
    end = np.where((any_rst < n) & ~both_fin_before, "rst",
                   np.where((fin_o >= 0) | (fin_r >= 0), "fin",
                            np.where(idle_ns > limit, "timeout", "capture-end")))

    # --- NAT-surviving fingerprints of the originator's first packet -------------------
    f_o_row = _first_where(conn, is_orig, nc)
    src_rows = rows[order]  # packet-table row of each sorted row
    ip_id_all = _col(packets, "ip_id", -1, np.int64)
    tsval_all = _col(packets, "tsval", -1, np.int64)
    f_o_data = _first_where(conn, is_orig & (plen > 0), nc)
    hash_col = packets.get("payload_hash")
    orig_hash = np.full(nc, pd.NA, dtype=object)
    if hash_col is not None and (f_o_data >= 0).any():
        sel = f_o_data >= 0
        orig_hash[sel] = hash_col.iloc[src_rows[f_o_data[sel]]].to_numpy()
    dir_col = packets.get("direction")
    orig_dir = np.full(nc, None, dtype=object)
    if dir_col is not None and (f_o_row >= 0).any():
        sel = f_o_row >= 0
        vals = dir_col.iloc[src_rows[f_o_row[sel]]].astype(object).to_numpy()
        orig_dir[sel] = np.where(pd.isna(vals), None, vals)

    names = np.asarray(addr_names, dtype=object)
    out = pd.DataFrame({
        "ts": t_first / 1e9,
        "orig_h": names[orig_e >> 16],
        "orig_p": (orig_e & 0xFFFF).astype(np.int32),
        "resp_h": names[resp_e >> 16],
        "resp_p": (resp_e & 0xFFFF).astype(np.int32),
        "proto": np.where(c_tcp, "tcp", "udp"),
        "duration": (t_last - t_first) / 1e9,
        "orig_bytes": orig_bytes.astype(np.int64),
        "resp_bytes": resp_bytes.astype(np.int64),
        "conn_state": state,
        "history": history,
        "orig_pkts": orig_pkts,
        "orig_ip_bytes": orig_ipb,
        "resp_pkts": resp_pkts,
        "resp_ip_bytes": resp_ipb,
        "capture": capture,
        "node": node,
        "iface": iface[order][starts],
        "vlan": vlan[order][starts],
        "vni": vni[order][starts],
        "client_isn": pd.array(np.where(client_isn >= 0, client_isn, 0), dtype="Int64"),
        "server_isn": pd.array(np.where(server_isn >= 0, server_isn, 0), dtype="Int64"),
        "syn_ts": np.where(f_syn >= 0, syn_ts / 1e9, np.nan),
        "synack_ts": np.where(f_synack >= 0, synack_ts / 1e9, np.nan),
        "ack_ts": np.where(f_ack >= 0, ack_ts / 1e9, np.nan),
        "handshake_rtt": hs_rtt,
        "connect": connect,
        "syn_retransmits": np.maximum(syn_cnt - 1, 0),
        "first_byte": first_byte,
        "end": end,
        "established": established,
        "ts_ns": t_first,
        "last_ts": t_last / 1e9,
        "orig_dir": orig_dir,
        "orig_ip_id": pd.array(np.where(f_o_row >= 0, ip_id_all[src_rows[np.maximum(f_o_row, 0)]], -1),
                               dtype="Int64"),
        "orig_tsval": pd.array(np.where(f_o_row >= 0, tsval_all[src_rows[np.maximum(f_o_row, 0)]], -1),
                               dtype="Int64"),
        "orig_hash": orig_hash,
    })
    for c in ("client_isn", "server_isn"):
        out.loc[(client_isn if c == "client_isn" else server_isn) < 0, c] = pd.NA
    for c in ("orig_ip_id", "orig_tsval"):
        out.loc[out[c] < 0, c] = pd.NA
    if "node" in out and node is None:
        out["node"] = pd.Series([None] * nc, dtype=object)
    # stable, readable order: by start time
    rank_c = np.lexsort((np.arange(nc), t_first))
    out = out.iloc[rank_c].reset_index(drop=True)
    inv = np.empty(nc, dtype=np.int64)
    inv[rank_c] = np.arange(nc)
    out.insert(1, "uid", [f"{capture}#{i}" for i in range(nc)])
    packet_conn[src_rows] = inv[conn]
    out.attrs.update(packets=n_all, used=int(rows.size), skipped=skipped)
    return out[COLUMNS], packet_conn

