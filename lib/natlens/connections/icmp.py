"""Which connection each ICMP error is about.

Why: when a firewall rejects a client's SYN (kube-proxy's "has no endpoints" REJECT
answers with ICMP port unreachable), that ICMP error is the only evidence of what
happened to the connection. The packet table keeps what an error quotes
(``icmp_orig_*``, natlens.packets/2); this stage ties the error to the record.

An ICMP/ICMPv6 error of a capture is about a connection record of the same capture when

- its quoted (src, dst, proto, sport, dport) is the record's originator -> responder
  tuple (orig_h, resp_h, proto, orig_p, resp_p): it quotes a packet the originator sent
  (``icmp_quotes`` "orig"), or the responder -> originator tuple ("resp");
- for TCP, the quoted sequence number lies in that side's sequence space: from its ISN
  (client_isn / server_isn) to ISN + that side's payload bytes + 2 (SYN and FIN),
  modulo 2**32. Not checked when that ISN is unknown (no handshake seen) or the quote
  ends before the sequence number (only 4 transport bytes quoted);
- its time is between the record's first packet and ICMP_AFTER_S after its last.

Among several such records: first those on the ICMP packet's own interface, VLAN and
VNI (each interface's copy of an ``any`` capture is its own record), then the latest to
start (a reused 5-tuple: the connection that was running when the error came).

The errors attached to a record get its row in the per-packet index (so a journey's hops
show them) and leave the ``icmp``/``icmpv6`` reasons of ``not_in_connections``; an error
about no record stays there. They are about the connection, not of it: no Zeek counter
(packets, bytes, history, conn_state) changes. In a Linux cooked v1 ``any`` capture the
repeats of an attached error on other interfaces (usable.interface_copies, on the ICMP
fields) are counted as ``interface-copy``, like a TCP packet's repeats, and not in
``icmp_errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens.connections.usable import column, interface_copies

ICMP_AFTER_S = 120.0  # an error comes within a few RTTs; 120 s is generous for slow paths
M32 = 1 << 32
ICMP_COLUMNS = ["icmp_ts", "icmp_type", "icmp_code", "icmp_src", "icmp_quotes", "icmp_errors"]
REASON = {1: "icmp", 58: "icmpv6"}  # the not_in_connections reason an ICMP packet leaves
_KEY = ["src", "dst", "proto", "sport", "dport"]
_COPY_KEYS = ["src", "dst", "proto", "ip_id", "ip_len", "icmp_type", "icmp_code", "icmp_orig_src",
              "icmp_orig_dst", "icmp_orig_proto", "icmp_orig_sport", "icmp_orig_dport", "icmp_orig_seq"]


@dataclass(frozen=True)
class Attached:
    """The ICMP errors about a record: packet-table rows, each one's record row and side."""

    rows: np.ndarray  # packet-table rows, sorted
    conn: np.ndarray  # the record row (of the table in start order) of each
    quotes: np.ndarray  # "orig" | "resp": whose packet each quotes
    copies: np.ndarray  # packet-table rows: repeats of attached errors on other interfaces


def errors(packets: pd.DataFrame) -> pd.DataFrame:
    """The ICMP/ICMPv6 rows whose quote holds a TCP/UDP 5-tuple, with what they are matched on."""
    proto = column(packets, "proto", -1, np.int64)
    qproto = column(packets, "icmp_orig_proto", -1, np.int64)
    sport = column(packets, "icmp_orig_sport", -1, np.int64)
    dport = column(packets, "icmp_orig_dport", -1, np.int64)
    ok = ((proto == 1) | (proto == 58)) & ((qproto == 6) | (qproto == 17)) & (sport >= 0) & (dport >= 0)
    if "icmp_orig_src" in packets and "icmp_orig_dst" in packets:
        ok &= (packets["icmp_orig_src"].notna() & packets["icmp_orig_dst"].notna()).to_numpy()
    else:
        ok[:] = False
    rows = np.flatnonzero(ok)
    sub = packets.iloc[rows]
    ifindex = column(sub, "ifindex", -1, np.int64)
    return pd.DataFrame({
        "row": rows, "ip_proto": proto[rows],
        "src": sub["icmp_orig_src"].astype(object).to_numpy() if rows.size else [],
        "dst": sub["icmp_orig_dst"].astype(object).to_numpy() if rows.size else [],
        "proto": qproto[rows], "sport": sport[rows], "dport": dport[rows],
        "qseq": column(sub, "icmp_orig_seq", -1, np.int64),
        "ts": column(sub, "ts_ns", 0, np.int64),
        "iface": np.where(ifindex >= 0, ifindex, column(sub, "iface", -1, np.int64)),
        "vlan": column(sub, "vlan", -1, np.int64), "vni": column(sub, "vni", -1, np.int64),
    })


def sides(table: pd.DataFrame) -> pd.DataFrame:
    """Each record twice: as the tuple of a packet its originator sent, and its responder's."""
    n = len(table)
    conn = np.arange(n)
    proto = np.where(table["proto"].to_numpy() == "tcp", 6, 17)
    h = {k: table[k].astype(object).to_numpy() for k in ("orig_h", "resp_h")}
    p = {k: table[k].to_numpy(dtype=np.int64) for k in ("orig_p", "resp_p")}
    isn = {k: column(table, k, -1, np.int64) for k in ("client_isn", "server_isn")}
    size = {k: column(table, k, 0, np.int64) for k in ("orig_bytes", "resp_bytes")}
    orig = pd.DataFrame({"conn": conn, "side": 0, "src": h["orig_h"], "dst": h["resp_h"], "proto": proto,
                         "sport": p["orig_p"], "dport": p["resp_p"], "isn": isn["client_isn"],
                         "nbytes": size["orig_bytes"]})
    resp = pd.DataFrame({"conn": conn, "side": 1, "src": h["resp_h"], "dst": h["orig_h"], "proto": proto,
                         "sport": p["resp_p"], "dport": p["orig_p"], "isn": isn["server_isn"],
                         "nbytes": size["resp_bytes"]})
    return pd.concat([orig, resp], ignore_index=True)


def attach(packets: pd.DataFrame, table: pd.DataFrame) -> Attached:
    """Which record (row of ``table``, one capture's records in start order) each ICMP error
    of ``packets`` (that capture's packet table) is about (module doc)."""
    none = np.zeros(0, dtype=np.int64)
    err = errors(packets)
    if err.empty or table.empty:
        return Attached(none, none, np.zeros(0, dtype=object), none)
    pairs = err.merge(sides(table), on=_KEY)
    first = column(table, "ts_ns", 0, np.int64)[pairs["conn"]]
    last = column(table, "last_ts", 0.0, np.float64)[pairs["conn"]] * 1e9
    ts, qseq, isn = pairs["ts"].to_numpy(), pairs["qseq"].to_numpy(), pairs["isn"].to_numpy()
    in_space = ((qseq - isn) % M32) <= pairs["nbytes"].to_numpy() + 2
    unchecked = (pairs["proto"].to_numpy() != 6) | (isn < 0) | (qseq < 0)
    pairs = pairs[(ts >= first) & (ts <= last + ICMP_AFTER_S * 1e9) & (unchecked | in_space)]
    ctx = ["iface", "vlan", "vni"]
    rec = table[ctx].to_numpy(dtype=np.int64)[pairs["conn"]]
    same = (pairs[ctx].to_numpy(dtype=np.int64) == rec).all(axis=1)
    best = pairs.assign(same=same).sort_values(["row", "same", "conn", "side"],
                                               ascending=[True, False, False, True])
    best = best.drop_duplicates("row")
    rows = best["row"].to_numpy(dtype=np.int64)
    copy = interface_copies(packets.iloc[err["row"].to_numpy()], keys=_COPY_KEYS)
    copies = np.isin(rows, err["row"].to_numpy()[copy])
    keep = ~copies
    return Attached(rows=rows[keep], conn=best["conn"].to_numpy(dtype=np.int64)[keep],
                    quotes=np.where(best["side"].to_numpy()[keep] == 0, "orig", "resp").astype(object),
                    copies=rows[copies])


def record_columns(packets: pd.DataFrame, n: int, a: Attached) -> dict[str, object]:
    """The ICMP_COLUMNS of ``n`` records from the errors attached to them."""
    ts = column(packets, "ts_ns", 0, np.int64)[a.rows]
    order = np.lexsort((a.rows, ts, a.conn))  # per record, its first error first
    conn = a.conn[order]
    head = np.flatnonzero(np.r_[True, conn[1:] != conn[:-1]]) if conn.size else conn
    at, pick = conn[head], a.rows[order][head]
    out_ts = np.full(n, np.nan)
    out_ts[at] = ts[order][head] / 1e9
    types, codes = pd.array([pd.NA] * n, dtype="Int16"), pd.array([pd.NA] * n, dtype="Int16")
    types[at] = column(packets, "icmp_type", -1, np.int64)[pick]
    codes[at] = column(packets, "icmp_code", -1, np.int64)[pick]
    src = np.full(n, None, dtype=object)
    src[at] = packets["src"].astype(object).to_numpy()[pick] if at.size else []
    quotes = np.full(n, None, dtype=object)
    quotes[at] = a.quotes[order][head]
    return {"icmp_ts": out_ts, "icmp_type": types, "icmp_code": codes, "icmp_src": src,
            "icmp_quotes": quotes, "icmp_errors": np.bincount(a.conn, minlength=n).astype(np.int64)}


def about_connections(packets: pd.DataFrame, table: pd.DataFrame, packet_conn: np.ndarray,
                      skipped: dict[str, int]) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """The records with ICMP_COLUMNS, the per-packet index with each attached error's record,
    and ``skipped`` (not_in_connections) without the attached errors (their copies moved to
    ``interface-copy``): decoded packets = indexed packets + sum(skipped) still holds."""
    a = attach(packets, table)
    table = table.assign(**record_columns(packets, len(table), a))
    packet_conn = packet_conn.copy()
    packet_conn[a.rows] = a.conn
    proto = column(packets, "proto", -1, np.int64)
    out = dict(skipped)
    for rows, moved_to in ((a.rows, None), (a.copies, "interface-copy")):
        for p, reason in REASON.items():
            k = int((proto[rows] == p).sum())
            if k:
                out[reason] -= k
                if moved_to:
                    out[moved_to] = out.get(moved_to, 0) + k
    return table, packet_conn, {k: v for k, v in sorted(out.items()) if v}
