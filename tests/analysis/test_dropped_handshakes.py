"""`tcpdump -i any` drops packets on busy nodes ("N packets dropped by kernel"): a record
whose SYN and SYN-ACK were lost must still join its connection's journey, not count as
another connection."""

from __future__ import annotations

import json
import shutil

import dpkt
import pytest
from analysis_helpers import samples_dir

from natlens.capture import read_capture
from natlens.capture.write import write_pcap
from natlens.findings import analyze

LOST = 4  # connections whose handshake the `any` capture of the client node loses


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    dst = tmp_path_factory.mktemp("drops") / "cluster-ok"
    shutil.copytree(samples_dir() / "cluster-ok", dst)
    truth = [json.loads(x) for x in (dst / "ground-truth" / "connections.jsonl").read_text().splitlines()]
    ports = {t["sport"] for t in truth[:LOST]} | {t["wire_sport"] for t in truth[:LOST]}
    cap = dst / "nodes" / "node-1" / "any.pcap"
    pk = read_capture(cap).packets
    syn = (pk["tcp_flags"].fillna(0).astype(int) & 0x02) != 0
    mine = pk["sport"].isin(ports) | pk["dport"].isin(ports)
    drop = set(pk.loc[syn & mine, "record"].astype(int))
    assert len(drop) >= 2 * LOST
    with open(cap, "rb") as fh:
        kept = [(round(ts * 1e9), buf) for i, (ts, buf) in enumerate(dpkt.pcap.Reader(fh)) if i not in drop]
    write_pcap(cap, kept, linktype=276, nanosecond=True)
    return dst, truth


def test_every_connection_once_despite_lost_handshakes(dropped):
    bundle, truth = dropped
    a = analyze(bundle)
    s = a.summary()
    assert s["connections"]["total"] == len(truth)
    assert len(a.journeys) == len(truth)
    j = a.journeys.assign(client_p=a.journeys["client_p"].astype(int)).set_index("client_p")
    for t in truth:
        row = j.loc[t["sport"]]
        assert (row["snat"], row["snat_to"], row["outcome"]) == (
            "yes", f"{t['wire_src']}:{t['wire_sport']}", "established")
    # the handshake-less records were kept, inside the journeys of their connections
    lost = a.records[a.records["client_isn"].isna() & (a.records["capture"] == "node-1/any")]
    assert len(lost) >= LOST and lost["journey"].isin(a.journeys["journey"]).all()
