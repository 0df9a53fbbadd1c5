"""Clock offsets between nodes: applied only when the captures measure them, and said why.

Hand-built connection tables (a connection seen on two nodes: its SYN, SYN-ACK and ACK
times on each node's own clock) for each branch of the rule in natlens.journeys.clocks,
then the lab's samples (one kernel clock: no offset) and copies of them whose pcap
timestamps of one node are shifted (the shift comes back, the hop tables stay causal).
"""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze, hops
from natlens.journeys import clock_offsets
from natlens.journeys.clocks import connection_bounds

T0 = 1_700_000_000.0
US = 1e-6
NOTE_NUMBERS = re.compile(r"median ([+-]\d+\.\d+) ms, spread (\d+\.\d+) ms")


def seen(client: str, server: str, clock: dict[str, float], n: int = 20, seed: int = 1,
         isn0: int = 10_000, start: float = T0, drift: float = 0.0) -> list[dict]:
    """n connections from a client behind node `client` to a server behind node `server`,
    each recorded on both: the SYN passes `client` then `server`, the SYN-ACK back, then
    the client's ACK. `clock[node]`: what the node's clock reads ahead of true time;
    `drift`: seconds the server node's clock gains over the n connections."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = start + i * 0.5
        d_syn, d_back, think, client_rtt, d_ack = rng.uniform(20, 150, 5) * US
        # asymmetric paths (the way back slower): the NTP midpoint is off zero by tens of us
        d_back += 80 * US
        up = {"syn_ts": t, "synack_ts": t + d_syn + think + d_back,
              "ack_ts": t + d_syn + think + d_back + client_rtt}
        down = {"syn_ts": t + d_syn, "synack_ts": t + d_syn + think,
                "ack_ts": up["ack_ts"] + d_ack}
        gained = drift * i / max(n - 1, 1)
        for node, times, extra in ((client, up, 0.0), (server, down, gained)):
            rows.append({"node": node, "client_isn": isn0 + i, "syn_retransmits": 0,
                         **{k: v + clock.get(node, 0.0) + extra for k, v in times.items()}})
    return rows


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["node", "client_isn", "syn_ts", "synack_ts", "ack_ts",
                                       "syn_retransmits"])


def note_about(notes: list[str], node: str) -> str:
    hits = [n for n in notes if node in n]
    assert len(hits) == 1, notes
    return hits[0]


def rel(offsets: dict[str, float], node: str, ref: str = "node-a") -> float:
    """`node`'s offset from `ref`'s (the reference node is whichever has the most records)."""
    return offsets[node] - offsets[ref]


def causal(conns: pd.DataFrame, offsets: dict[str, float]) -> bool:
    """Every connection's SYN/SYN-ACK/ACK order holds on the corrected clocks (1 us of slack)."""
    b = connection_bounds(conns)
    o = b["node_b"].map(offsets) - b["node_a"].map(offsets)
    return bool(((b["lo"] <= o) & (o <= b["hi"])).all())


# --- the rule, on hand-built connections --------------------------------------------------

def test_one_clock_gets_no_offset_and_the_note_says_why():
    conns = table(seen("node-a", "node-b", {}))
    offsets, notes = clock_offsets(conns)
    assert offsets == {"node-a": 0.0, "node-b": 0.0}
    note = note_about(notes, "node-b")
    assert "agree within the measurement" in note and note.endswith("no offset applied")
    assert "0 is consistent with all 20 connections' SYN/SYN-ACK/ACK order" in note
    median, spread = (float(x) for x in NOTE_NUMBERS.search(note).groups())
    assert abs(median) > 0.02  # the NTP estimate alone would have "corrected" the asymmetry


@pytest.mark.parametrize("skew", [2.5, -0.8])
def test_a_skewed_node_is_measured_within_a_ms_and_applied(skew):
    conns = table(seen("node-a", "node-b", {"node-b": skew}))
    offsets, notes = clock_offsets(conns)
    assert abs(rel(offsets, "node-b") - skew) < 0.001, notes
    assert abs(rel(offsets, "node-b") - skew) < 200 * US  # the causal order bounds it tighter still
    note = note_about(notes, "node-b")
    shown = re.match(r"clock of node-b relative to node-a: ([+-]\d+\.\d+) ms \(", note)
    assert abs(float(shown.group(1)) - rel(offsets, "node-b") * 1e3) < 0.001
    assert "that their SYN/SYN-ACK/ACK order allows" in note and "no offset" not in note
    assert causal(conns, offsets)


def test_skews_chained_from_the_reference_either_way_round():
    """node-a (most records) is the reference; node-b's clients call node-a, node-a's call
    node-c, and node-d is only ever seen with node-c: its offset goes through node-c."""
    clock = {"node-b": 2.5, "node-c": -0.8, "node-d": 0.3}
    conns = table(seen("node-b", "node-a", clock, isn0=1) + seen("node-a", "node-c", clock, isn0=100)
                  + seen("node-c", "node-d", clock, n=5, isn0=200)
                  + seen("node-a", "node-b", clock, n=3, isn0=300))
    offsets, notes = clock_offsets(conns)
    assert offsets["node-a"] == 0.0
    for node, skew in clock.items():
        assert abs(offsets[node] - skew) < 0.001, (node, notes)
    shown = re.search(r"; node-d relative to node-a: ([+-]\d+\.\d+) ms$", note_about(notes, "node-d"))
    assert abs(float(shown.group(1)) - offsets["node-d"] * 1e3) < 0.001
    assert causal(conns, offsets)


def test_an_offset_below_its_spread_is_not_applied():
    """Four connections whose SYN/SYN-ACK order allows only +0.02 .. +0.03 ms, but whose
    estimates scatter over -0.09 .. +0.16 ms: the median is within its spread."""
    rows = []
    for i, (lo_us, hi_us) in enumerate([(-200, 30), (20, 300), (-100, 50), (10, 200)]):
        # node-a upstream: d_synack = lo bounds the offset from below, d_syn = hi from above
        rows += [{"node": "node-a", "client_isn": i, "syn_ts": T0 + i, "synack_ts": T0 + i + 0.001,
                  "ack_ts": np.nan, "syn_retransmits": 0},
                 {"node": "node-b", "client_isn": i, "syn_ts": T0 + i + hi_us * US,
                  "synack_ts": T0 + i + 0.001 + lo_us * US, "ack_ts": np.nan, "syn_retransmits": 0}]
    offsets, notes = clock_offsets(table(rows))
    assert offsets == {"node-a": 0.0, "node-b": 0.0}
    note = note_about(notes, "node-b")
    assert "not larger than its spread" in note and "no offset applied" in note
    median, spread = (float(x) for x in NOTE_NUMBERS.search(note).groups())
    assert 0 < median <= spread
    assert "taken as 0 it puts 2 of them out of SYN/SYN-ACK/ACK order" in note


def test_contradicting_constraints_apply_nothing():
    """node-b's clock drifts 2 ms during the capture: each connection is tight, no single
    offset fits them all, and the median is not far outside its spread."""
    conns = table(seen("node-a", "node-b", {}, drift=0.002))
    offsets, notes = clock_offsets(conns)
    assert offsets["node-b"] == 0.0
    note = note_about(notes, "node-b")
    assert "fits no single offset" in note and "clock drift" in note
    assert "no offset applied" in note and "of them are out of order" in note


def test_contradicting_constraints_with_a_clear_median_apply_it_and_count_the_reversed():
    """A +2.5 s skew measured on 20 connections, and 2 pairs of records joined by mistake
    (one ISN; node-b's record is another connection 1 s later): the median stands far
    outside its spread, so it is applied, and the note counts the 2 it reverses."""
    clock = {"node-b": 2.5}
    wrong_a = seen("node-a", "node-b", clock, n=2, isn0=5000, start=T0 + 100, seed=7)
    wrong_b = seen("node-a", "node-b", clock, n=2, isn0=5000, start=T0 + 101, seed=8)
    conns = table(seen("node-a", "node-b", clock) + [r for r in wrong_a if r["node"] == "node-a"]
                  + [r for r in wrong_b if r["node"] == "node-b"])
    bounds = connection_bounds(conns)
    assert len(bounds) == 22 and bounds["lo"].max() > bounds["hi"].min()  # they contradict
    offsets, notes = clock_offsets(conns)
    assert abs(rel(offsets, "node-b") - 2.5) < 0.001
    note = note_about(notes, "node-b")
    assert "fits no single offset" in note and "far outside its spread, so it is applied" in note
    assert note.endswith("it reverses the order of 2 of them")


def test_a_node_without_a_shared_connection_keeps_0_and_is_named():
    rows = seen("node-a", "node-b", {"node-b": 2.5})
    rows += [{"node": "node-c", "client_isn": 90_000 + i, "syn_ts": T0 + i, "synack_ts": T0 + i + 0.001,
              "ack_ts": T0 + i + 0.002, "syn_retransmits": 0} for i in range(3)]
    offsets, notes = clock_offsets(table(rows))
    assert offsets["node-c"] == 0.0 and abs(rel(offsets, "node-b") - 2.5) < 0.001
    assert ("clock of node-c: no connection seen both there and on another node; its offset is "
            "unknown and taken as 0") in notes


def test_one_node_needs_no_offset():
    assert clock_offsets(table(seen("node-a", "node-a", {}, n=3))) == ({"node-a": 0.0}, [])


def test_an_ack_the_upstream_capture_missed_does_not_bind():
    """The client node's capture lost the handshake ACK: its first ACK of the SYN-ACK is a
    later packet. That says nothing about the clocks, and the offset stays 0."""
    rows = seen("node-a", "node-b", {})
    for r in rows[:4:2]:
        r["ack_ts"] += 0.2  # node-a's rows of the first two connections
    offsets, notes = clock_offsets(table(rows))
    assert offsets["node-b"] == 0.0 and "agree within the measurement" in note_about(notes, "node-b")


# --- the lab's samples ----------------------------------------------------------------------

@pytest.mark.parametrize("sample", ["loopback-local", "cluster-ok", "mixed"])
def test_lab_captures_share_one_clock(sample):
    """The lab's nodes share one kernel clock: no node gets an offset, and each says why."""
    a = analyze(samples_dir() / sample)
    assert set(a.offsets.values()) == {0.0}, a.offsets
    ref = max(a.offsets, key=lambda n: ((a.connections["node"] == n).sum(), n))
    for node in set(a.offsets) - {ref}:
        assert any(n.startswith(f"{node} and ") and "agree within the measurement" in n
                   and n.endswith("no offset applied") for n in a.inferred), (node, a.inferred)


def shift_pcap(path: Path, seconds: float) -> None:
    """Add `seconds` to every record's timestamp of a pcap file (either byte order, us or ns)."""
    data = bytearray(path.read_bytes())
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(order + "I", magic)[0] in (0xA1B2C3D4, 0xA1B23C4D), f"{path}: not a pcap"
    per_s = 10**9 if struct.unpack(order + "I", magic)[0] == 0xA1B23C4D else 10**6
    shift = round(seconds * per_s)
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(order + "IIII", data, at)
        sec, frac = divmod(sec * per_s + frac + shift, per_s)
        struct.pack_into(order + "II", data, at, sec, frac)
        at += 16 + caplen
    assert at == len(data), f"{path}: records do not end at the end of the file"
    path.write_bytes(bytes(data))


def _causal_violations(a, offsets: dict[str, float]) -> list[str]:
    """Hops shown above a cause on another node, for every journey: a packet acking A above
    the other side's segment ending at A (the SYN-ACK above the SYN it answers, the client's
    ACK above the SYN-ACK...), every sighting of it when no capture saw it twice on one
    interface and 5-tuple (one record), else the earliest. seq/ack come from the packet
    tables (the hop table does not carry them)."""
    keys = ["capture", "ts_ns", "src", "dst", "sport", "dport"]
    fields = ["seq", "ack", "tcp_flags", "payload_len", "ifindex"]
    # a packet seen twice in one ns on one capture (two interfaces): either copy will do
    pk = pd.concat([p.assign(capture=cap)[keys + fields] for cap, p in ((c, h.in_connections()) for c, h in a._hops.items())],
                   ignore_index=True).drop_duplicates(keys)
    bad = []
    for jid in a.journeys["journey"]:
        h = a.journey_hops(jid)
        h = h.assign(ts_ns=h["ts_ns"] + h["node"].map(lambda n: int(round(offsets.get(n, 0.0) * 1e9))))
        h = h.merge(pk, on=keys, how="left", validate="many_to_one")
        f = h["tcp_flags"].fillna(0).astype("int64")
        size = h["payload_len"].fillna(0).astype("int64") + (f & 0x02 > 0).astype("int64") \
            + (f & 0x01 > 0).astype("int64")
        end = (h["seq"].astype("float64") + size) % 2**32
        for i in np.flatnonzero(f & 0x10):
            causes = np.flatnonzero((size > 0) & (end == float(h["ack"].iloc[i])))
            if not causes.size:
                continue
            twice = h.iloc[causes].groupby(["capture", "ifindex", "src", "sport", "dst", "dport"],
                                          dropna=False).size().max() > 1
            for j in causes[:1] if twice else causes:
                if h["node"].iloc[j] != h["node"].iloc[i] and j > i:
                    bad.append(f"{jid}: {h['note'].iloc[i]} ({h['capture'].iloc[i]}) above "
                               f"{h['note'].iloc[j]} ({h['capture'].iloc[j]})")
    return bad


@pytest.mark.parametrize(("sample", "node", "skew"), [("loopback-local", "node-2", 2.5),
                                                      ("mixed", "node-3", -0.8)])
def test_a_shifted_capture_gets_its_offset_back_and_hops_stay_causal(tmp_path, sample, node, skew):
    """A copy of a sample with every pcap of one node shifted: the offset comes back within
    1 ms, every hop table shows causes before effects, and the journeys are the same."""
    src = samples_dir() / sample
    dst = shutil.copytree(src, tmp_path / sample)
    for cap in (dst / "nodes" / node).glob("*.pcap"):
        shift_pcap(cap, skew)
    base, a = analyze(src), analyze(dst)
    others = {n: o for n, o in a.offsets.items() if n != node}
    assert set(others.values()) == {0.0} and abs(a.offsets[node] - skew) < 0.001, (a.offsets, a.inferred)
    assert any(n.startswith(f"clock of {node} relative to ") for n in a.inferred), a.inferred
    assert _causal_violations(a, a.offsets) == []
    cols = ["client_p", "lb_backend", "loopback", "snat", "outcome"]
    assert (a.journeys[cols].sort_values(cols).reset_index(drop=True)
            .equals(base.journeys[cols].sort_values(cols).reset_index(drop=True)))


def test_the_checker_finds_what_the_old_offset_did(monkeypatch):
    """The lab's one clock with node-2 moved by the +0.044 ms natlens used to infer: plain
    time order has effects above their causes (so the check above can fail); journey_hops
    does not show them."""
    a = analyze(samples_dir() / "loopback-local")
    a.offsets = {"node-1": 0.0, "node-2": 4.4465e-05}
    assert _causal_violations(a, a.offsets) == []
    monkeypatch.setattr(hops, "causal_order", lambda h: np.arange(len(h)))  # time order only
    assert len(_causal_violations(a, a.offsets)) > 0


# --- which SYN: a retransmission one node saw instead of the first ---------------------------

def _retransmitted(tsvals: bool) -> pd.DataFrame:
    """The nftables-local J17 shape: node-a saw the first SYN (looped back to a local endpoint)
    and the retransmission 1.02 s later; node-b saw only the retransmission (the node picked an
    endpoint on node-b for it). Each record holds one SYN and its SYN-ACK."""
    t, rtx = T0, T0 + 1.02
    rows = [{"node": "node-a", "client_isn": 7, "syn_retransmits": 0, "orig_tsval": 1000,
             "syn_ts": t, "synack_ts": t + 50 * US, "ack_ts": None},
            {"node": "node-a", "client_isn": 7, "syn_retransmits": 0, "orig_tsval": 2020,
             "syn_ts": rtx + 10 * US, "synack_ts": rtx + 90 * US, "ack_ts": None},
            {"node": "node-a", "client_isn": 7, "syn_retransmits": 1, "orig_tsval": 1000,
             "syn_ts": t - 10 * US, "synack_ts": None, "ack_ts": None},
            {"node": "node-b", "client_isn": 7, "syn_retransmits": 0, "orig_tsval": 2020,
             "syn_ts": rtx + 30 * US, "synack_ts": rtx + 60 * US, "ack_ts": None}]
    conns = pd.DataFrame(rows)
    if not tsvals:
        conns["orig_tsval"] = None
    return conns


def test_clock_bounds_pair_records_of_one_syn_transmission():
    b = connection_bounds(_retransmitted(tsvals=True))
    assert len(b) == 1  # node-a's copy of the retransmission against node-b's, not the first SYN
    assert b["lo"].iloc[0] <= 0.0 <= b["hi"].iloc[0]
    assert abs(b["est"].iloc[0]) < 100 * US


def test_without_tcp_timestamps_a_retransmitted_syn_bounds_no_clock():
    assert connection_bounds(_retransmitted(tsvals=False)).empty
    once = _retransmitted(tsvals=False).iloc[[0]].assign(node="node-b")  # one SYN, never sent again
    both = pd.concat([_retransmitted(tsvals=False).iloc[[0]], once]).assign(client_isn=8)
    assert len(connection_bounds(both)) == 1
