"""Every packet of one journey, hop by hop, on one clock, with what each packet is.

Why: the worked example of a report and the first thing an engineer checks: the SYN
leaving, coming back to the NodePort, the SYN-ACK from the wrong source, the client's
RST. Each note says it in a network engineer's words.
"""

from __future__ import annotations

import pandas as pd

from natlens.inventory import Inventory
from natlens.vocab import ACK, FIN, RST, SYN, SYN_ACK, flag_text

HOP_COLUMNS = ["capture", "node", "ts", "ts_ns", "src", "dst", "sport", "dport", "flags", "note"]


def journey_hops(journey: pd.Series, records: pd.DataFrame, packets: dict[str, pd.DataFrame],
                 packet_conn: dict, offsets: dict[str, float], inventory: Inventory) -> pd.DataFrame:
    """The packets of the journey's records (``records``: its rows of the records table)."""
    parts = []
    for r in records.itertuples():
        pk, pc = packets.get(r.capture), packet_conn.get(r.capture)
        if pk is None or pc is None:
            continue
        p = pk[pc == int(str(r.uid).rsplit("#", 1)[1])].copy()
        if p.empty:
            continue
        p["capture"], p["node"] = r.capture, r.node
        p["ts_ns"] = p["ts_ns"].astype("int64") - int(round(offsets.get(r.node, 0.0) * 1e9))
        p["ts"] = p["ts_ns"] / 1e9
        parts.append(p)
    if not parts:
        return pd.DataFrame(columns=HOP_COLUMNS)
    h = pd.concat(parts, ignore_index=True).sort_values(["ts_ns", "capture"], kind="stable")
    h["flags"] = [flag_text(f) for f in h["tcp_flags"].fillna(-1).astype(int)]
    h["note"] = [hop_note(pk, journey, inventory) for pk in h.itertuples()]
    return h[HOP_COLUMNS].reset_index(drop=True)


def hop_note(pk, jr: pd.Series, inventory: Inventory) -> str:
    """What one packet of a journey is, in a network engineer's words."""
    flags = -1 if pd.isna(pk.tcp_flags) else int(pk.tcp_flags)
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


def _vip(jr: pd.Series) -> str:
    return f"{jr['vip']}:{int(jr['vport'])}" if not pd.isna(jr["vport"]) else str(jr["vip"])


def _syn_note(pk, jr: pd.Series, inventory: Inventory, client: bool, src: str, dst: str) -> str:
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
