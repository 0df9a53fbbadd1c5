"""Which packets of a table make connections, and why the others do not.

Why: every decoded packet is either in a connection or counted by reason
(``attrs["skipped"]``, the summary's ``not_in_connections``), so a reader can
account for every record. A packet makes a connection when it is TCP or UDP with
both ports and is not a repeat of one just seen on another interface of a Linux
cooked v1 ``any`` capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens._grouped import group_ids

COPY_WINDOW_NS = 1_000_000  # copies of one packet on two interfaces are microseconds apart
LINKTYPE_LINUX_SLL = 113  # Linux cooked v1: no interface index
_COPY_KEYS = ["src", "dst", "proto", "sport", "dport", "ip_id", "seq", "ack", "tcp_flags", "tsval",
              "payload_len", "payload_hash"]


def column(df: pd.DataFrame, name: str, fill, dtype) -> np.ndarray:
    """Column ``name`` as a numpy array of ``dtype``, missing values (or a missing column) as fill."""
    if name not in df.columns:
        return np.full(len(df), fill, dtype=dtype)
    s = df[name]
    return s.fillna(fill).to_numpy(dtype=dtype) if s.hasnans else s.to_numpy(dtype=dtype)


def interface_copies(packets: pd.DataFrame, keys: list[str] | None = None) -> np.ndarray:
    """Packets of a Linux cooked v1 (SLL) `any` capture that repeat one just seen.

    SLL v1 records no interface index, so the copies of one packet crossing a veth,
    the bridge and the NIC unchanged cannot be told apart by interface; they are the
    same packet when every header field (IP ID, TCP seq/ack/flags/timestamps, payload)
    matches within COPY_WINDOW_NS. A retransmission differs in IP ID or TSval, or
    comes hundreds of ms later. SLL2 captures keep each copy apart by ifindex instead.
    ``keys`` are the fields compared (default: the TCP/UDP ones; connections.icmp
    compares ICMP errors on their type, code and quote).
    """
    n = len(packets)
    out = np.zeros(n, dtype=bool)
    if not n or "linktype" not in packets:
        return out
    sll1 = np.flatnonzero(column(packets, "linktype", -1, np.int64) == LINKTYPE_LINUX_SLL)
    if sll1.size < 2:
        return out
    sub = packets.iloc[sll1][[k for k in (keys or _COPY_KEYS) if k in packets]]
    key = group_ids(*(sub[c] for c in sub.columns))
    ts = column(packets, "ts_ns", 0, np.int64)[sll1]
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    dup = np.zeros(sll1.size, dtype=bool)
    dup[1:] = (k[1:] == k[:-1]) & (t[1:] - t[:-1] <= COPY_WINDOW_NS)
    out[sll1[order[dup]]] = True
    return out


@dataclass(frozen=True)
class Usable:
    """The packet-table rows that make connections, with the columns read to choose them."""

    rows: np.ndarray  # packet-table row numbers, in table order
    skipped: dict[str, int]  # packets in no connection, by reason
    last_ns: int  # time of the table's last packet (0 for an empty table)
    proto: np.ndarray  # of the usable rows
    sport: np.ndarray
    dport: np.ndarray
    ts: np.ndarray


def usable_packets(packets: pd.DataFrame) -> Usable:
    """The TCP/UDP packets with both ports that are not interface copies; the rest counted by reason.

    Reasons: ``interface-copy``, ``icmp``, ``icmpv6``, ``no-ports`` (TCP/UDP without
    ports, e.g. a later IP fragment) and ``other-protocol``.
    """
    proto = column(packets, "proto", -1, np.int64)
    sport = column(packets, "sport", -1, np.int64)
    dport = column(packets, "dport", -1, np.int64)
    tcp_udp = (proto == 6) | (proto == 17)
    usable = tcp_udp & (sport >= 0) & (dport >= 0)
    copy = interface_copies(packets) & usable
    usable &= ~copy
    skipped: dict[str, int] = {}
    if (~usable).any():
        reason = np.where(copy, "interface-copy", np.where(proto == 1, "icmp", np.where(
            proto == 58, "icmpv6", np.where(tcp_udp, "no-ports", "other-protocol"))))
        r, c = np.unique(reason[~usable], return_counts=True)
        skipped = {str(k): int(v) for k, v in zip(r, c, strict=True)}
    rows = np.flatnonzero(usable)
    ts = column(packets, "ts_ns", 0, np.int64)
    return Usable(rows=rows, skipped=skipped, last_ns=int(ts.max()) if len(packets) else 0,
                  proto=proto[rows], sport=sport[rows], dport=dport[rows], ts=ts[rows])
