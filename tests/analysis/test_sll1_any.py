"""`tcpdump -i any` with an old libpcap writes Linux cooked v1 (SLL) records, which name
no interface: the copies of one packet on the veth, the bridge and the NIC must not be
counted as several packets of one connection."""

from __future__ import annotations

import shutil
import struct

import dpkt
import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.capture.write import write_pcap
from natlens.connections import interface_copies
from natlens.findings import analyze


def _to_sll1(path):
    """Rewrite an SLL2 capture as SLL v1, same packets and times."""
    frames = []
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            proto, _, _ifindex, hatype, pkttype, halen = struct.unpack(">HHIHBB", buf[:12])
            head = struct.pack(">HHH", pkttype, hatype, halen) + buf[12:20] + struct.pack(">H", proto)
            frames.append((round(ts * 1e9), head + buf[20:]))
    write_pcap(path, frames, linktype=113, nanosecond=True)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    sll1 = tmp_path_factory.mktemp("sll1") / "loopback-local"
    shutil.copytree(samples_dir() / "loopback-local", sll1)
    for cap in sll1.glob("nodes/*/any.pcap"):
        _to_sll1(cap)
    return analyze(samples_dir() / "loopback-local"), analyze(sll1)


def test_same_findings_as_sll2(both):
    sll2, sll1 = both
    for key in ("connections", "loopback", "snat"):
        assert sll1.summary()[key] == sll2.summary()[key]


def test_interface_copies_are_counted_not_repeated(both):
    sll2, sll1 = both
    caps = {c["file"]: c for c in sll1.summary()["inputs"]["captures"]}
    any1 = caps["nodes/node-1/any.pcap"]
    copies = any1["not_in_connections"]["interface-copy"]
    assert copies > 0
    assert any1["decoded"] == sum(
        r for r in sll1.connections[sll1.connections["capture"] == "node-1/any"][
            ["orig_pkts", "resp_pkts"]].sum()) + sum(any1["not_in_connections"].values())
    # The SLL2 capture keeps every copy apart (by ifindex): it holds exactly the v1 records'
    # packets plus the copies, so nothing but copies was left out.
    def pkts(a, cap):
        c = a.connections[a.connections["capture"] == cap]
        return int(c["orig_pkts"].sum() + c["resp_pkts"].sum())

    assert pkts(sll2, "node-1/any") == pkts(sll1, "node-1/any") + copies
    assert pkts(sll1, "node-1/any") < pkts(sll2, "node-1/any")


def test_retransmission_is_no_copy():
    base = {"linktype": 113, "src": "198.18.16.100", "dst": "198.19.0.10", "proto": 6,
            "sport": 40000, "dport": 80, "ip_id": 7, "seq": 1, "ack": 0, "tcp_flags": 2,
            "tsval": 100, "payload_len": 0, "payload_hash": None}
    rows = [dict(base, ts_ns=0),
            dict(base, ts_ns=20_000),  # the same packet on another interface: a copy
            dict(base, ts_ns=1_000_000_000, ip_id=8, tsval=1100),  # retransmitted SYN
            dict(base, ts_ns=2_500_000_000),  # identical headers but seconds later
            dict(base, ts_ns=30_000, linktype=276)]  # SLL2: copies are told apart by ifindex
    got = interface_copies(pd.DataFrame(rows))
    assert got.tolist() == [False, True, False, False, False]
