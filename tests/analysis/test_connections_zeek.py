"""connections() against Zeek's own conn.log and tshark's handshake RTT on real traces.

Compared per 5-tuple: packets, IP bytes, conn_state, history and (where Zeek sets
them) payload bytes. Deliberate differences (see natlens.connections): no ICMP
records, inner (not outer) connections of tunnelled packets, duration covers every
packet (Zeek stops the clock once both sides closed).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from natlens.capture import read_capture
from natlens.connections import COLUMNS, connections

FIELDS = ["orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "conn_state", "history"]


def read_zeek_conn(path: Path) -> pd.DataFrame:
    names = None
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(line.split("\t"))
    z = pd.DataFrame(rows, columns=names)
    z = z.rename(columns={"id.orig_h": "orig_h", "id.orig_p": "orig_p",
                          "id.resp_h": "resp_h", "id.resp_p": "resp_p"})
    for c in ("orig_p", "resp_p", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"):
        z[c] = z[c].astype(int)
    return z


def traces(root: Path):
    for log in sorted(root.glob("*/zeek-conn*.log")):
        caps = sorted(log.parent.glob("*.pcap*"))
        if caps:
            yield log.parent.name, caps[0], log


def test_matches_zeek_conn_log(zeek_traces):
    compared = 0
    for name, cap_path, log in traces(zeek_traces):
        cap = read_capture(cap_path)
        ours = connections(cap.packets)
        assert list(ours.columns) == COLUMNS
        zeek = read_zeek_conn(log)
        zeek = zeek[zeek["proto"].isin(["tcp", "udp"])]
        if "vxlan" in name:  # we record the inner flows of the tunnel, Zeek the outer UDP ones
            continue
        key = ["orig_h", "orig_p", "resp_h", "resp_p", "proto"]
        m = zeek.merge(ours, on=key, how="outer", suffixes=("_zeek", ""), indicator=True)
        assert (m["_merge"] == "both").all(), f"{name}: 5-tuples differ\n{m[key + ['_merge']]}"
        for f in FIELDS:
            bad = m[m[f + "_zeek"].astype(str) != m[f].astype(str)]
            assert bad.empty, f"{name}: {f} differs\n{bad[key + [f + '_zeek', f]]}"
        has_bytes = m["orig_bytes_zeek"] != "-"
        for f in ("orig_bytes", "resp_bytes"):
            z = m.loc[has_bytes, f + "_zeek"].astype(int)
            assert (z == m.loc[has_bytes, f]).all(), f"{name}: {f} differs"
        compared += len(m)
    assert compared >= 30


def test_retransmissions_gaps_and_flip(zeek_traces):
    """Headers-only capture: Zeek's G/g (acked bytes never seen) and t; a missed SYN flips roles."""
    c = connections(read_capture(zeek_traces / "retransmit-fast009" / "retransmit-fast009.pcap").packets)
    assert c["history"].tolist() == ["ShADaGdgtR"]
    assert c["end"].tolist() == ["rst"]
    m = connections(read_capture(zeek_traces / "missing-syn" / "missing-syn.pcap").packets)
    assert m["history"].tolist() == ["^hADdFaf"]
    assert m["orig_p"].tolist() == [56730]
    # no SYN seen: the client ISN still comes from the SYN-ACK's ack number
    assert m["client_isn"].notna().all() and m["handshake_rtt"].isna().all()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")
def test_handshake_rtt_matches_tshark(zeek_traces):
    checked = 0
    for cap_path in sorted(zeek_traces.glob("*/*.pcap")):
        out = subprocess.run(
            ["tshark", "-r", str(cap_path), "-Y", "tcp.analysis.initial_rtt", "-T", "fields",
             "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport",
             "-e", "tcp.analysis.initial_rtt"],
            capture_output=True, text=True, check=True).stdout
        want = {}
        for line in out.splitlines():
            src, sport, dst, dport, rtt = line.split("\t")
            want[frozenset([(src, int(sport)), (dst, int(dport))])] = float(rtt)
        ours = connections(read_capture(cap_path).packets)
        ours = ours[ours["handshake_rtt"].notna()]
        assert len(ours) == len(want), cap_path.name
        for r in ours.itertuples():
            key = frozenset([(r.orig_h, r.orig_p), (r.resp_h, r.resp_p)])
            assert abs(r.handshake_rtt - want[key]) <= 10e-6, (cap_path.name, key)
            checked += 1
    assert checked >= 10
