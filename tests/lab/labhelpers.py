"""Reading a lab bundle back for the lab's tests: ground truth and TCP packets of a capture."""

from __future__ import annotations

import json
from pathlib import Path

from natlens.capture import read_capture
from natlens.lab.bundle import read_jsonl

SYN, RST, ACK = 0x02, 0x04, 0x10


def ground_truth(bundle: Path) -> tuple[dict, list[dict]]:
    """lab.json and connections.jsonl of a bundle."""
    gt = Path(bundle) / "ground-truth"
    return json.loads((gt / "lab.json").read_text()), read_jsonl(gt / "connections.jsonl")


def tcp_packets(path: Path) -> list[dict]:
    """TCP packets of a capture as plain dicts (src, dst, sport, dport, flags, seq, direction)."""
    df = read_capture(path).packets
    df = df[df["proto"] == 6]
    cols = ["src", "dst", "sport", "dport", "tcp_flags", "seq", "direction", "ts_ns"]
    out = []
    for row in df[cols].astype(object).to_dict("records"):
        row["flags"] = int(row.pop("tcp_flags"))
        row["sport"], row["dport"], row["seq"] = int(row["sport"]), int(row["dport"]), int(row["seq"])
        out.append(row)
    return out


def syns(packets: list[dict]) -> list[dict]:
    """Pure SYNs (no ACK)."""
    return [p for p in packets if p["flags"] & SYN and not p["flags"] & ACK]


def synacks(packets: list[dict]) -> list[dict]:
    return [p for p in packets if p["flags"] & SYN and p["flags"] & ACK]


def node_ip(facts: dict, name: str) -> str:
    return next(n["ip"] for n in facts["topology"]["nodes"] if n["name"] == name)


def service(facts: dict, name: str) -> dict:
    return next(s for s in facts["topology"]["services"] if s["name"] == name)
