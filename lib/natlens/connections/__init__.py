"""Packet table of one capture point -> one record per TCP/UDP connection, like Zeek's conn.log.

Why: a journey across NAT is assembled from what each capture point saw of a
connection, and a customer can check each record against Zeek or Wireshark.

Everything is vectorized (numpy on the packet columns, no per-packet Python).
``connections_with_index`` is a list of stages, each a module of this package:

usable        which packets make connections; the rest counted by reason
flows         grouped by flow (protocol, both endpoints, interface, VLAN, VNI),
              sorted by time, cut into connections at every SYN that carries a
              new ISN (a reused 5-tuple is a new connection) and, for UDP, after
              60 s of silence
roles         Zeek's originator/responder: the sender of the first packet, flipped
              ("^" in the history) when that packet is a SYN-ACK, or is not a SYN
              and only its source port is a likely server port
counters      packets and IP bytes per side, first and last packet
seqspace      relative sequence numbers, retransmissions, payload bytes as Zeek
              counts them, content gaps
history       Zeek's history letters
handshake     ISNs, handshake RTT, connect time, time to first byte
states        Zeek's conn_state from the endpoints' states
ending        rst / fin / timeout / capture-end
fingerprints  IP ID, TSval, TTL, sequence number, payload hash, direction of the first
              originator packet
icmp          which record each ICMP error is about (the packet it quotes): the
              error joins that record's packets in the index, not its counters
parts         a capture too big to hold: split by 5-tuple (flow_parts), each part made
              into records apart (part_records, in other processes too), merged in start
              order (merged): the records the whole table gives

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
ack_pure           that ACK was a pure one: no payload, no FIN (boolean, NA: none seen)
pure_ack_seen      a pure ACK of the SYN-ACK from the originator was seen, that one or one
                   after its data (boolean, NA: no ACK of the SYN-ACK seen): a point
                   without one, where another point of its journey saw a pure handshake
                   ACK, lost the client's ACK and took its next packet for it
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
orig_ttl           TTL (IPv6: hop limit) of the originator's first packet (NA: none); on a
                   node's NIC one less than the node's initial TTL when the node forwarded
                   it (a pod's packet), the initial TTL itself when the node sent it
orig_seq           TCP sequence number of the originator's first packet (NA: none, UDP):
                   NAT keeps it, so a record whose SYN the capture missed joins its
                   journey on it (the client's ISN + 1 + the bytes sent before)
resp_ack           ack number of the responder's first ACK (NA: none): the same for a
                   record that holds only the server's packets
icmp_ts            time of the first ICMP/ICMPv6 error about this connection (NaN: none):
                   one that quotes a packet of it (``connections.icmp``), e.g. the port
                   unreachable of a REJECT rule, the only evidence of a rejected SYN
icmp_type          ICMP / ICMPv6 type and code of that first error (Int16, NA: none;
icmp_code          3/3 port unreachable, 3/1 host unreachable, 11 time exceeded, ...)
icmp_src           source address of that first error: who rejected it (None: none)
icmp_quotes        "orig" | "resp": whose packet that first error quotes (None: none)
icmp_errors        how many ICMP errors are about this connection (0: none); they are
                   not in the Zeek counters (orig_pkts, history, ...): about it, not of it
=================  ===========================================================

Deliberate differences from Zeek (tests/analysis/test_connections_zeek.py):
ICMP and other protocols make no records (counted in ``attrs["skipped"]``, except
the ICMP errors about a record, which the index gives that record's row); for
tunnelled packets the inner connection is recorded, not the outer UDP flow; a
first SYN-ACK always flips the roles (Zeek only does so by port heuristics); no
'C' (checksum) letters, since the packet table does not verify checksums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens.connections.counters import Counters, count
from natlens.connections.ending import SYN_RTO_S, TCP_INACTIVITY_S, ending
from natlens.connections.fingerprints import Fingerprints, fingerprints
from natlens.connections.flows import UDP_INACTIVITY_S, Cut, Sorted, cut_connections, sort_flows
from natlens.connections.handshake import Handshake, handshake
from natlens.connections.history import history, zero_windows
from natlens.connections.icmp import ICMP_AFTER_S, ICMP_COLUMNS, about_connections
from natlens.connections.parts import flow_parts, merged, start_order, uids
from natlens.connections.roles import LIKELY_SERVER_PORTS, Roles, roles
from natlens.connections.seqspace import content_gaps, payload_bytes, sequence_space
from natlens.connections.states import (
    CLOSED,
    ESTABLISHED,
    INACTIVE,
    PARTIAL,
    RESET,
    SYN_ACK_SENT,
    SYN_SENT,
    closes,
    conn_states,
)
from natlens.connections.usable import COPY_WINDOW_NS, interface_copies, usable_packets

__all__ = [
    "COLUMNS", "CONNECTION_PACKET_COLUMNS", "COPY_WINDOW_NS", "ICMP_AFTER_S", "LIKELY_SERVER_PORTS", "SYN_RTO_S", "TCP_INACTIVITY_S",
    "UDP_INACTIVITY_S", "INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED",
    "CLOSED", "RESET", "connections", "connections_with_index", "flow_parts",
    "interface_copies", "merged", "part_records",
]

_BASE_COLUMNS = [
    "ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "duration",
    "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
    "resp_pkts", "resp_ip_bytes", "capture", "node", "iface", "vlan", "vni",
    "client_isn", "server_isn", "syn_ts", "synack_ts", "ack_ts", "ack_pure", "pure_ack_seen",
    "handshake_rtt",
    "connect", "syn_retransmits", "first_byte", "end", "established", "ts_ns", "last_ts",
    "orig_dir", "orig_ip_id", "orig_tsval", "orig_hash", "orig_ttl", "orig_seq", "resp_ack",
]
COLUMNS = [*_BASE_COLUMNS, *ICMP_COLUMNS]


def connections(packets: pd.DataFrame, *, node: str | None = None,
                capture: str | None = None, capture_end_ns: int | None = None) -> pd.DataFrame:
    """One record per TCP/UDP connection seen in one capture's packet table (see module doc)."""
    return connections_with_index(packets, node=node, capture=capture,
                                  capture_end_ns=capture_end_ns)[0]


# The packet-table columns the stages read (the rest of natlens.packets need not be held).
CONNECTION_PACKET_COLUMNS = [
    "record", "ts_ns", "linktype", "iface", "ifindex", "direction", "caplen", "wirelen", "vlan", "vni",
    "src", "dst", "ip_id", "ttl", "ip_len", "proto", "sport", "dport", "tcp_flags", "seq", "ack", "window",
    "tsval", "payload_len", "payload_hash", "icmp_type", "icmp_code", "icmp_orig_src", "icmp_orig_dst",
    "icmp_orig_proto", "icmp_orig_sport", "icmp_orig_dport", "icmp_orig_seq"]


def connections_with_index(packets: pd.DataFrame, *, node: str | None = None,
                           capture: str | None = None, capture_end_ns: int | None = None
                           ) -> tuple[pd.DataFrame, np.ndarray]:
    """Like connections(), plus for every packet row the row number of its connection (-1: none).

    An ICMP error about a connection (``connections.icmp``) gets that connection's row too,
    and is then not in ``attrs["skipped"]``: packets = indexed rows + sum(skipped).

    ``capture`` names the capture point in ``uid``/``capture`` (default: the packets'
    ``capture`` column); ``capture_end_ns`` is when the capture stopped (default: its
    last packet), used to tell a timeout from a capture that simply ended.
    """
    if capture is None:
        capture = str(packets["capture"].iloc[0]) if len(packets) and "capture" in packets else "capture"
    out, packet_conn, _ = _records(packets, node, capture, capture_end_ns)
    return out, packet_conn


def part_records(packets: pd.DataFrame, rows: np.ndarray, *, node: str | None, capture: str,
                 capture_end_ns: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The records of one part (``rows``: its packets' rows in the capture's table), as
    ``parts.merged`` takes them: parts can be made apart (in other processes) and merged."""
    return (*_records(packets, node, capture, capture_end_ns), rows)


def _records(packets: pd.DataFrame, node: str | None, capture: str, capture_end_ns: int | None
             ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The stages: (records in start order, each packet row's record, each record's first packet row)."""
    u = usable_packets(packets)
    attrs = {"packets": len(packets), "used": int(u.rows.size), "skipped": u.skipped}
    if not u.rows.size:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})
        empty.attrs.update(attrs)
        return empty, np.full(len(packets), -1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    s = sort_flows(packets, u)
    c = cut_connections(s)
    r = roles(s, c)
    k = count(s, c, r)
    sq = sequence_space(s, c, r)
    size = payload_bytes(s, c, sq)
    hist = history(s, c, r, sq, zero_windows(s, c, r, sq), content_gaps(s, c, r, sq))
    hs = handshake(s, c, r, k.t_first)
    cl = closes(s, c, r)
    state = conn_states(s, c, r, sq, cl, k, size, hist)
    end = ending(c, cl, hs, k, u.last_ns if capture_end_ns is None else capture_end_ns, s.n)
    out = _table(s, c, r, k, size, state, hist, hs, end, fingerprints(packets, s, c, r),
                 capture=capture, node=node)
    out, packet_conn, first_row = _in_start_order(out, s, c, len(packets), capture)
    out, packet_conn, attrs["skipped"] = about_connections(packets, out, packet_conn, u.skipped)
    out = out[COLUMNS]
    out.attrs.update(attrs)
    return out, packet_conn, first_row


def _nullable(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Int64 with NA where values < 0 (the stages' "unknown")."""
    return pd.arrays.IntegerArray(np.where(values >= 0, values, 0).astype(np.int64), values < 0)


def _table(s: Sorted, c: Cut, r: Roles, k: Counters, size: tuple[np.ndarray, np.ndarray],
           state: np.ndarray, hist: np.ndarray, hs: Handshake, end: np.ndarray, fp: Fingerprints,
           *, capture: str, node: str | None) -> pd.DataFrame:
    """The stages' per-connection results as the connections table (without uid), in cut order."""
    f0 = c.starts
    return pd.DataFrame({
        "ts": k.t_first / 1e9,
        "orig_h": s.names[r.orig_e >> 16],
        "orig_p": (r.orig_e & 0xFFFF).astype(np.int32),
        "resp_h": s.names[r.resp_e >> 16],
        "resp_p": (r.resp_e & 0xFFFF).astype(np.int32),
        "proto": np.where(c.tcp, "tcp", "udp"),
        "duration": (k.t_last - k.t_first) / 1e9,
        "orig_bytes": size[0].astype(np.int64),
        "resp_bytes": size[1].astype(np.int64),
        "conn_state": state,
        "history": hist,
        "orig_pkts": k.orig_pkts,
        "orig_ip_bytes": k.orig_ip_bytes,
        "resp_pkts": k.resp_pkts,
        "resp_ip_bytes": k.resp_ip_bytes,
        "capture": capture,
        "node": node if node is not None else pd.Series([None] * c.nc, dtype=object),
        "iface": s.iface[f0],
        "vlan": s.vlan[f0],
        "vni": s.vni[f0],
        "client_isn": _nullable(hs.client_isn),
        "server_isn": _nullable(hs.server_isn),
        "syn_ts": hs.syn_ts,
        "synack_ts": hs.synack_ts,
        "ack_ts": hs.ack_ts,
        "ack_pure": pd.arrays.BooleanArray(hs.ack_pure, np.isnan(hs.ack_ts)),
        "pure_ack_seen": pd.arrays.BooleanArray(hs.pure_ack_seen, np.isnan(hs.ack_ts)),
        "handshake_rtt": hs.handshake_rtt,
        "connect": hs.connect,
        "syn_retransmits": np.maximum(hs.syn_count - 1, 0),
        "first_byte": hs.first_byte,
        "end": end,
        "established": hs.established,
        "ts_ns": k.t_first,
        "last_ts": k.t_last / 1e9,
        "orig_dir": fp.direction,
        "orig_ip_id": _nullable(fp.ip_id),
        "orig_tsval": _nullable(fp.tsval),
        "orig_hash": fp.payload_hash,
        "orig_ttl": _nullable(fp.ttl),
        "orig_seq": _nullable(fp.seq),
        "resp_ack": _nullable(fp.resp_ack),
    })


def _in_start_order(out: pd.DataFrame, s: Sorted, c: Cut, n_packets: int, capture: str
                    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The table in a stable, readable order (by start time, then by the place of the first
    packet in the capture: an order a capture read in parts gives too) with its uids, and the
    connection row of every packet-table row (-1: in none), and each record's first packet row."""
    first_row = np.minimum.reduceat(s.rows, c.starts)
    rank = start_order(out["ts_ns"].to_numpy(), first_row)
    out = out.iloc[rank].reset_index(drop=True)
    inv = np.empty(c.nc, dtype=np.int64)
    inv[rank] = np.arange(c.nc)
    out.insert(1, "uid", uids(capture, c.nc))
    packet_conn = np.full(n_packets, -1, dtype=np.int64)
    packet_conn[s.rows] = inv[c.conn]
    return out[_BASE_COLUMNS], packet_conn, first_row[rank]
