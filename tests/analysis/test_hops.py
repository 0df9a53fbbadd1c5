"""The worked journey: every packet of one client connection, each said in plain words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from analysis_helpers import samples_dir

from natlens.capture.hopfile import HopWriter
from natlens.findings import analyze
from natlens.findings.captures import HopPackets, hop_dir
from natlens.findings.hops import journey_hops
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory


@pytest.fixture(scope="module")
def local():
    return analyze(samples_dir() / "loopback-local")


def _first_index(notes, text):
    return next(i for i, n in enumerate(notes) if n.startswith(text))


def test_loopback_journey_tells_the_story_in_order(local):
    jid = local.loopback.iloc[0]["journey"]
    hops = local.journey_hops(jid)
    notes = list(hops["note"])
    steps = ["SYN from the client to the VIP", "SYN after the load balancer's DNAT to node-1's NodePort",
             "SYN DNATed to the endpoint", "SYN-ACK to the client from", "the client resets"]
    at = [_first_index(notes, s) for s in steps]
    assert at == sorted(at)
    assert hops["ts_ns"].is_monotonic_increasing
    # the wrong-source SYN-ACK is not from the VIP the client called
    wrong = hops[hops["note"].str.startswith("SYN-ACK to the client from")]
    assert not (wrong["src"] == local.loopback.iloc[0]["vip"]).any()


def test_snat_journey_names_the_node_address():
    a = analyze(samples_dir() / "cluster-ok")
    j = a.journeys.iloc[0]
    notes = list(a.journey_hops(j["journey"])["note"])
    assert f"SYN to the VIP, SNATed to {j['snat_to']}" in notes
    assert "SYN-ACK from the VIP" in notes


def test_report_hops_show_microseconds_since_the_first(local):
    from natlens import report

    d = report.load(samples_dir() / "loopback-local")
    t = report.tables.hops(d)
    assert t["since_first_us"].iloc[0] == 0 and (t["since_first_us"].diff().dropna() >= 0).all()
    assert t["ts"].str.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$").all()
    assert "ts_ns" not in t.columns


# --- causal order: a hop table never shows an effect before its cause ----------------------

NONE = Inventory(nodes=pd.DataFrame(columns=NODE_COLUMNS), pods=pd.DataFrame(columns=POD_COLUMNS),
                 services=pd.DataFrame(columns=SERVICE_COLUMNS))
JOURNEY = pd.Series({"client_h": "10.0.0.1", "client_p": 40000, "vip": "10.9.9.9", "vport": 80,
                     "snat_to": None})
CLIENT, VIP, EP = ("10.0.0.1", 40000), ("10.9.9.9", 80), ("10.0.2.5", 8080)
X, Y = 1000, 777000  # client / server ISN


def _pkt(t_us, a, b, flags, seq, ack=0, plen=0):
    return {"ts_ns": 1_700_000_000_000_000_000 + int(t_us * 1000), "src": a[0], "sport": a[1],
            "dst": b[0], "dport": b[1], "tcp_flags": flags, "seq": seq, "ack": ack, "payload_len": plen}


def _hops(points: dict[str, list[dict]], offsets=None) -> pd.DataFrame:
    """journey_hops over hand-made captures: {"node/capture": packets}, one record each."""
    spill = hop_dir()
    hops = {}
    for i, (cap, rows) in enumerate(points.items()):  # as findings.captures keeps them: on disk
        table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        with HopWriter(spill / f"{i}.arrow", table.schema) as w:
            w.write(table)
        hops[cap] = HopPackets([spill / f"{i}.arrow"], np.zeros(len(rows), dtype=np.int64))
    records = pd.DataFrame({"capture": list(points), "node": [c.split("/")[0] for c in points],
                            "uid": [f"{c}#0" for c in points]})
    return journey_hops(JOURNEY, records, hops, offsets or {}, NONE)


def _two_nodes(n2_us: float) -> dict[str, list[dict]]:
    """The client on n1 calls the VIP; n2 sees it after DNAT to the endpoint. True times in us;
    n2's clock reads n2_us off."""
    n1 = [_pkt(0, CLIENT, VIP, 0x02, X), _pkt(250, VIP, CLIENT, 0x12, Y, X + 1),
          _pkt(300, CLIENT, VIP, 0x10, X + 1, Y + 1), _pkt(500, CLIENT, VIP, 0x18, X + 1, Y + 1, 40),
          _pkt(750, VIP, CLIENT, 0x10, Y + 1, X + 41)]
    n2 = [_pkt(100 + n2_us, CLIENT, EP, 0x02, X), _pkt(150 + n2_us, EP, CLIENT, 0x12, Y, X + 1),
          _pkt(400 + n2_us, CLIENT, EP, 0x10, X + 1, Y + 1),
          _pkt(600 + n2_us, CLIENT, EP, 0x18, X + 1, Y + 1, 40),
          _pkt(650 + n2_us, EP, CLIENT, 0x10, Y + 1, X + 41)]
    return {"n1/eth0": n1, "n2/eth0": n2}


def _shown_above(h: pd.DataFrame, effect: str, cause: str) -> bool:
    """Every hop whose note starts with `effect` is below every hop whose note starts with `cause`."""
    e = np.flatnonzero(h["note"].str.startswith(effect))
    c = np.flatnonzero(h["note"].str.startswith(cause))
    return bool(e.size and c.size and e.min() > c.max())


def test_uncorrected_clock_is_shown_in_causal_order_and_said_so():
    """n2's clock 1 ms behind and not corrected: by time its SYN-ACK would come before the
    client's SYN; the table puts every effect after its causes and each such hop says why."""
    h = _hops(_two_nodes(-1000))
    assert not h["ts_ns"].is_monotonic_increasing  # times are not rewritten
    by_time = h.sort_values("ts_ns", kind="stable")
    assert by_time.iloc[1]["flags"] == "SA"  # what time order alone would show: SYN-ACK second
    rows = {(r.node, r.flags): i for i, r in enumerate(h.itertuples()) if r.flags != "A"}
    assert rows[("n1", "S")] < rows[("n2", "SA")] and rows[("n2", "S")] < rows[("n1", "SA")]
    assert _shown_above(h, "ACK from the client", "SYN-ACK")  # the client's ACK after every SYN-ACK
    acks = h[(h["src"] == EP[0]) & (h["flags"] == "A")].index.min()
    assert acks > h[(h["node"] == "n1") & (h["flags"] == "AP")].index.max()  # the server's ACK after the data
    for node, g in h.groupby("node"):  # each node's own packets keep their order
        assert g["ts_ns"].is_monotonic_increasing, node
    moved = h[h["note"].str.contains("causal order")]
    assert len(moved) >= 1 and (moved["node"] == "n2").all()
    assert moved["note"].str.contains(r"n2's clock is not on n1's: shown in causal order").all()
    assert "0.850 ms before that of the n1 hop above" in moved.iloc[0]["note"]
    assert moved.iloc[0]["note"].startswith("SYN-ACK")
    above = [h["ts_ns"].iloc[:i].max() for i in moved.index]
    assert (moved["ts_ns"].to_numpy() < np.array(above)).all()  # only hops shown out of time order


def test_corrected_clock_is_plain_time_order():
    h = _hops(_two_nodes(-1000), offsets={"n2": -0.001})
    assert h["ts_ns"].is_monotonic_increasing
    assert not h["note"].str.contains("causal order").any()
    assert list(h["flags"][:4]) == ["S", "S", "SA", "SA"]


def test_a_capture_that_missed_the_cause_keeps_its_own_clock():
    """One node's capture starts with a SYN-ACK and sees the client's retransmitted SYN later:
    its own clock says so, and nothing is moved."""
    n1 = [_pkt(0, VIP, CLIENT, 0x12, Y, X + 1), _pkt(1_000_000, CLIENT, VIP, 0x02, X)]
    h = _hops({"n1/any": n1})
    assert list(h["flags"]) == ["SA", "S"] and not h["note"].str.contains("causal order").any()


def test_after_a_retransmission_only_the_first_sighting_binds():
    """The first SYN-ACK was lost on its way back to n1; the client sent its SYN again 1 s
    later. n2's first SYN-ACK answers the first SYN: it need not follow the second one."""
    n1 = [_pkt(0, CLIENT, VIP, 0x02, X), _pkt(1_000_000, CLIENT, VIP, 0x02, X),
          _pkt(1_000_250, VIP, CLIENT, 0x12, Y, X + 1), _pkt(1_000_300, CLIENT, VIP, 0x10, X + 1, Y + 1)]
    n2 = [_pkt(100, CLIENT, EP, 0x02, X), _pkt(150, EP, CLIENT, 0x12, Y, X + 1),
          _pkt(1_000_100, CLIENT, EP, 0x02, X), _pkt(1_000_150, EP, CLIENT, 0x12, Y, X + 1),
          _pkt(1_000_400, CLIENT, EP, 0x10, X + 1, Y + 1)]
    h = _hops({"n1/eth0": n1, "n2/eth0": n2})
    assert h["ts_ns"].is_monotonic_increasing and not h["note"].str.contains("causal order").any()


def test_old_lab_offset_reversed_the_handshake_and_now_cannot(local):
    """The lab's nodes share one clock; the +0.044 ms natlens used to infer for node-2 put
    node-2's copy of the client's ACK before node-1's copy of the SYN-ACK it answers. Given
    that offset the table still shows the SYN-ACK first, and says the clocks disagree."""
    jid = next(j for j in local.journeys["journey"]
               if local.records.loc[local.records["journey"] == j, "node"].nunique() > 1
               and local.journeys.set_index("journey").loc[j, "outcome"] == "established")
    row = local.journeys[local.journeys["journey"] == jid].iloc[0]
    rec = local.records[local.records["journey"] == jid]
    bad = {"node-1": 0.0, "node-2": 4.4465e-05}
    h = journey_hops(row, rec, local._hops, bad, local.inventory)
    by_time = h.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    first_ack = by_time.index[(by_time["node"] == "node-2")
                               & by_time["note"].str.startswith("ACK from the client")].min()
    last_synack = by_time.index[(by_time["node"] == "node-1") & by_time["flags"].eq("SA")].max()
    assert first_ack < last_synack  # the symptom, by time alone
    assert _shown_above(h[h["note"].str.startswith(("SYN-ACK", "ACK from the client"))],
                        "ACK from the client", "SYN-ACK")
    assert h["note"].str.contains("node-2's clock is not on node-1's: shown in causal order").any()
    assert sorted(h["ts_ns"]) == sorted(by_time["ts_ns"])  # every packet, its time unchanged


@pytest.mark.parametrize("sample", ["loopback-local", "cluster-ok", "mixed"])
def test_lab_hop_tables_are_in_time_order(sample):
    """One kernel clock, no offset: every journey's table is plain time order, nothing moved."""
    a = analyze(samples_dir() / sample)
    for jid in a.journeys["journey"]:
        h = a.journey_hops(jid)
        assert h["ts_ns"].is_monotonic_increasing, jid
        assert not h["note"].str.contains("causal order").any(), jid
