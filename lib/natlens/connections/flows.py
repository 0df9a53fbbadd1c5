"""Usable packets -> sorted by flow and time -> cut into connections.

Why: everything after this works on one order, the rows of each connection
contiguous and in time order, so that per-connection firsts, lasts and running
maxima are single numpy passes (``natlens._grouped``). A flow is one protocol,
one pair of endpoints, one interface, VLAN and VNI (each interface's copy of an
``any`` capture is its own record). A flow is cut at every pure SYN whose
sequence number differs from the flow's previous pure SYN (a reused 5-tuple with a
new ISN is a new connection), and, for UDP, after Zeek's inactivity timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens._grouped import group_ids, group_order
from natlens.connections.usable import Usable, column
from natlens.vocab import ACK, FIN, RST, SYN

UDP_INACTIVITY_S = 60.0  # Zeek udp_inactivity_timeout


@dataclass(frozen=True)
class Sorted:
    """The usable packets' columns, sorted by flow, then time, then record number."""

    rows: np.ndarray  # packet-table row of each sorted row
    flow: np.ndarray  # flow id
    ts: np.ndarray  # int ns
    flags: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    window: np.ndarray  # -1 when unknown
    ip_len: np.ndarray
    plen: np.ndarray  # payload length
    caplen: np.ndarray  # -1 when unknown
    wirelen: np.ndarray  # -1 when unknown
    e_src: np.ndarray  # source endpoint: address code << 16 | port
    e_dst: np.ndarray  # destination endpoint
    iface: np.ndarray  # SLL2 ifindex, else pcapng interface id, else -1
    vlan: np.ndarray
    vni: np.ndarray
    names: np.ndarray  # address of each address code (object)
    is_tcp: np.ndarray
    syn: np.ndarray  # TCP flag masks
    syn_only: np.ndarray
    synack: np.ndarray
    fin: np.ndarray
    rst: np.ndarray
    ackf: np.ndarray

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.ts.size)


def sort_flows(packets: pd.DataFrame, u: Usable) -> Sorted:
    """The usable rows' columns, grouped into flows and sorted by (flow, time, record)."""
    rows = u.rows
    sub = packets.iloc[rows] if rows.size != len(packets) else packets
    record = column(sub, "record", 0, np.int64) if "record" in sub else np.arange(rows.size)
    ifindex = column(sub, "ifindex", -1, np.int64)
    iface = np.where(ifindex >= 0, ifindex, column(sub, "iface", -1, np.int64))
    vlan = column(sub, "vlan", -1, np.int64)
    vni = column(sub, "vni", -1, np.int64)
    # addresses as integer codes, endpoints as code*65536+port
    addr_codes, addr_names = pd.factorize(pd.concat([sub["src"], sub["dst"]], ignore_index=True))
    e_src = (addr_codes[: rows.size].astype(np.int64) << 16) | u.sport
    e_dst = (addr_codes[rows.size:].astype(np.int64) << 16) | u.dport
    lo, hi = np.minimum(e_src, e_dst), np.maximum(e_src, e_dst)
    flow = group_ids(u.proto, lo, hi, iface, vlan, vni)
    order = group_order(flow, u.ts, record)
    flags = column(sub, "tcp_flags", 0, np.int64)[order]
    is_tcp = u.proto[order] == 6
    syn = is_tcp & ((flags & SYN) != 0)
    has_ack = (flags & ACK) != 0
    return Sorted(
        rows=rows[order], flow=flow[order], ts=u.ts[order], flags=flags,
        seq=column(sub, "seq", 0, np.int64)[order], ack=column(sub, "ack", 0, np.int64)[order],
        window=column(sub, "window", -1, np.int64)[order],
        ip_len=column(sub, "ip_len", 0, np.int64)[order],
        plen=column(sub, "payload_len", 0, np.int64)[order],
        caplen=column(sub, "caplen", -1, np.int64)[order],
        wirelen=column(sub, "wirelen", -1, np.int64)[order],
        e_src=e_src[order], e_dst=e_dst[order],
        iface=iface[order], vlan=vlan[order], vni=vni[order],
        names=np.asarray(addr_names, dtype=object),
        is_tcp=is_tcp, syn=syn, syn_only=syn & ~has_ack, synack=syn & has_ack,
        fin=is_tcp & ((flags & FIN) != 0), rst=is_tcp & ((flags & RST) != 0), ackf=is_tcp & has_ack)


@dataclass(frozen=True)
class Cut:
    """Sorted rows cut into connections: rows [starts[i], lasts[i]] are connection i."""

    conn: np.ndarray  # connection of each sorted row, 0..nc-1, non-decreasing
    new: np.ndarray  # row starts a connection
    starts: np.ndarray  # first row of each connection
    lasts: np.ndarray  # last row of each connection
    tcp: np.ndarray  # connection is TCP

    @property
    def nc(self) -> int:
        """Number of connections."""
        return int(self.starts.size)


def cut_connections(s: Sorted) -> Cut:
    """Cut each flow at a pure SYN with a new ISN and, for UDP, after 60 s of silence."""
    n = s.n
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(s.flow[1:], s.flow[:-1], out=new[1:])
    last_syn = np.maximum.accumulate(np.where(s.syn_only, np.arange(n), -1))
    prev_syn = np.empty(n, dtype=np.int64)
    prev_syn[0] = -1
    prev_syn[1:] = last_syn[:-1]
    valid_prev = (prev_syn >= 0) & (s.flow[np.maximum(prev_syn, 0)] == s.flow)
    new |= s.syn_only & (~valid_prev | (s.seq[np.maximum(prev_syn, 0)] != s.seq))
    silence = np.zeros(n, dtype=bool)
    silence[1:] = (s.ts[1:] - s.ts[:-1]) > int(UDP_INACTIVITY_S * 1e9)
    new |= silence & ~s.is_tcp
    starts = np.flatnonzero(new)
    return Cut(conn=np.cumsum(new) - 1, new=new, starts=starts, lasts=np.r_[starts[1:], n] - 1,
               tcp=s.is_tcp[starts])
