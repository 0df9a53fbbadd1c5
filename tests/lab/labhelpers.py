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
    """TCP packets of a capture as plain dicts (src, dst, sport, dport, flags, seq, ack,
    direction, ts_ns)."""
    df = read_capture(path).packets
    df = df[df["proto"] == 6]
    cols = ["src", "dst", "sport", "dport", "tcp_flags", "seq", "ack", "direction", "ts_ns"]
    out = []
    for row in df[cols].astype(object).to_dict("records"):
        row["flags"] = int(row.pop("tcp_flags"))
        for k in ("sport", "dport", "seq", "ack"):
            row[k] = int(row[k])
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


def nic_view(bundle: Path, facts: dict, svc_name: str, node: str = "node-1") -> dict[int, dict]:
    """Per client source port, what the client node's NIC capture shows for one Service.

    ``went``: ISNs of SYNs leaving for the VIP from the pod; ``came_back``: ISNs of SYNs
    from the pod arriving at this node's NodePort; ``answered``: a SYN-ACK came from the VIP.
    """
    svc = service(facts, svc_name)
    me, client_ip = node_ip(facts, node), facts["client"]["ip"]
    pkts = tcp_packets(Path(bundle) / "nodes" / node / "eth0.pcap")
    view: dict[int, dict] = {}
    for p in syns(pkts):
        if p["src"] != client_ip:
            continue
        if (p["dst"], p["dport"]) == (svc["vip"], svc["port"]):
            view.setdefault(p["sport"], {"went": set(), "came_back": set(), "answered": False})
            view[p["sport"]]["went"].add(p["seq"])
    for p in syns(pkts):
        if p["src"] == client_ip and (p["dst"], p["dport"]) == (me, svc["node_port"]):
            view.setdefault(p["sport"], {"went": set(), "came_back": set(), "answered": False})
            view[p["sport"]]["came_back"].add(p["seq"])
    for p in synacks(pkts):
        if ((p["src"], p["sport"]) == (svc["vip"], svc["port"]) and p["dst"] == client_ip
                and p["dport"] in view):
            view[p["dport"]]["answered"] = True
    return view


def _client_views(bundle: Path, facts: dict, conns: list[dict], svc_name: str) -> list[tuple[dict, dict]]:
    """Each of the Service's client connections with what the client node's NIC saw of it;
    every SYN on the NIC is one of them and every one left the node."""
    view = nic_view(bundle, facts, svc_name)
    mine = [c for c in conns if c["service"] == svc_name]
    assert set(view) == {c["sport"] for c in mine}, "every SYN on the NIC is a client connection"
    for c in mine:
        assert view[c["sport"]]["went"], c
    return [(c, view[c["sport"]]) for c in mine]


def assert_loopback_signature(bundle: Path, facts: dict, conns: list[dict], svc_name: str) -> None:
    """Failed connections loop back on the client node's NIC (same ISN), others do not."""
    for c, v in _client_views(bundle, facts, conns, svc_name):
        if c["outcome"] == "failed":
            assert v["came_back"] == v["went"] and not v["answered"], (c, v)
        else:
            assert not v["came_back"] and v["answered"], (c, v)


def assert_nic_matches_ground_truth(bundle: Path, facts: dict, conns: list[dict],
                                    svc_name: str) -> None:
    """Loopbacks come back on the client node's NIC (same ISN), nothing else does, and only
    connected ones are answered from the VIP (an asymmetric failure is answered elsewhere)."""
    for c, v in _client_views(bundle, facts, conns, svc_name):
        assert (v["came_back"] == v["went"]) if c["loopback"] else not v["came_back"], (c, v)
        assert v["answered"] == (c["outcome"] == "connected"), (c, v)
