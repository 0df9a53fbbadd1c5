"""Every capture of a bundle -> connection records, with what each capture holds and lacks.

Why: the analysis needs, per capture, its connection records (natlens.connections),
the packets of each record for the hop-by-hop view, and the accounting that proves
nothing was lost (records = decoded + skipped; decoded = packets in connections +
not_in_connections). Warnings say where a capture may miss packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from natlens.bundle import Bundle, NodeDir
from natlens.capture import read_capture
from natlens.connections import connections_with_index

# The packet columns journey_hops shows; the rest of the packet table is not kept.
HOP_PACKET_COLUMNS = ["ts_ns", "src", "dst", "sport", "dport", "tcp_flags", "seq", "ack", "payload_len",
                      "ip_id", "direction", "ifindex", "icmp_type", "icmp_code", "icmp_orig_src", "icmp_orig_dst",
                      "icmp_orig_sport", "icmp_orig_dport"]


@dataclass
class CaptureSet:
    """What natlens read from the captures of one bundle."""

    inputs: list[dict] = field(default_factory=list)  # summary.json's inputs.captures[], in order
    connections: pd.DataFrame = field(default_factory=pd.DataFrame)
    packets: dict[str, pd.DataFrame] = field(default_factory=dict)  # capture label -> hop packets
    packet_conn: dict[str, np.ndarray] = field(default_factory=dict)  # label -> record of each packet
    ifnames: dict[tuple[str, int], str] = field(default_factory=dict)  # (node, ifindex) -> name
    warnings: list[str] = field(default_factory=list)


def read_captures(bundle: Bundle, progress: bool = False) -> CaptureSet:
    """Read every capture of every node, one at a time (with a progress bar if asked)."""
    out = CaptureSet()
    todo = [(n, c) for n in bundle.nodes for c in n.captures]
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        todo = tqdm(todo, desc="captures", unit="file")
    parts = []
    for node, path in todo:
        out.ifnames.update({(node.name, k): v for k, v in node.ifnames().items()})
        one = read_one(bundle, node, path)
        out.inputs.append(one.input)
        out.packets[one.label], out.packet_conn[one.label] = one.packets, one.packet_conn
        out.warnings += one.warnings
        parts.append(one.connections)
    out.connections = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out


@dataclass
class OneCapture:
    """What one capture file gave: its label, inputs entry, records, hop packets, warnings."""

    label: str
    input: dict
    connections: pd.DataFrame
    packets: pd.DataFrame
    packet_conn: np.ndarray
    warnings: list[str]


def read_one(bundle: Bundle, node: NodeDir, path: Path) -> OneCapture:
    """One capture's connection records, with its accounting and the packets of each record."""
    label = f"{node.name}/{path.stem}"
    cap = read_capture(path, label=path.stem)
    info = cap.info
    warnings = list(info.warnings)
    if info.dropped:
        warnings.append(f"{path}: the capturing host dropped {info.dropped:,} packets (pcapng "
                        "interface statistics): records there may miss handshakes or retransmissions")
    conns, idx = connections_with_index(cap.packets, node=node.name, capture=label,
                                        capture_end_ns=info.last_ts_ns)
    entry = {"node": node.name, "file": bundle.display_path(node, path), "records": int(info.records),
             "decoded": int(info.decoded), "skipped": dict(info.skipped), "connections": len(conns),
             "not_in_connections": dict(conns.attrs.get("skipped", {})),
             # for findings.quality (not in summary.json's inputs.captures):
             "label": label, "first_ts": None if info.first_ts_ns is None else info.first_ts_ns / 1e9,
             "last_ts": None if info.last_ts_ns is None else info.last_ts_ns / 1e9,
             "unread_bytes": int(info.unread_bytes), "dropped": info.dropped,
             "skipped_bytes": dict(info.skipped_bytes), "anomalies": dict(info.anomalies),
             "damaged": [dict(d) for d in info.damaged]}
    keep = [c for c in HOP_PACKET_COLUMNS if c in cap.packets.columns]
    # the index also gives an ICMP error the row of the record it is about (connections.icmp):
    # journey_hops shows it among the connection's packets
    sel = idx >= 0
    return OneCapture(label, entry, conns, cap.packets.loc[sel, keep].reset_index(drop=True), idx[sel],
                      warnings)
