"""Connections, journeys and bundle reading on small hand-made inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile

import pandas as pd
import pytest
from analysis_helpers import reshape, samples_dir

from natlens.bundle import load_bundle
from natlens.connections import connections
from natlens.errors import NatlensError
from natlens.findings import analyze
from natlens.inventory import build_inventory
from natlens.journeys import build_journeys, clock_offsets


def pkt(t, src, sport, dst, dport, flags, seq, ack=0, plen=0):
    return {"capture": "x", "record": 0, "ts_ns": int(t * 1e9), "src": src, "dst": dst, "proto": 6,
            "sport": sport, "dport": dport, "tcp_flags": flags, "seq": seq, "ack": ack,
            "ip_len": 40 + plen, "payload_len": plen, "window": 100}


def handshake(t, isn, sport=40000, isn_s=5000):
    c, s = ("10.0.0.1", sport), ("10.0.0.2", 80)
    return [pkt(t, *c, *s, 0x02, isn), pkt(t + 0.001, *s, *c, 0x12, isn_s, isn + 1),
            pkt(t + 0.002, *c, *s, 0x10, isn + 1, isn_s + 1)]


def table(rows):
    df = pd.DataFrame(rows)
    df["record"] = range(len(df))
    return df


def test_reused_5tuple_with_new_isn_is_a_new_connection():
    rows = handshake(0.0, 1000) + handshake(1.0, 900000)
    rows.append(pkt(1.5, "10.0.0.1", 40000, "10.0.0.2", 80, 0x02, 900000))  # retransmission, same ISN
    c = connections(table(rows))
    assert len(c) == 2
    assert c["client_isn"].tolist() == [1000, 900000]
    assert c["syn_retransmits"].tolist() == [0, 1]
    assert c["handshake_rtt"].round(6).tolist() == [0.002, 0.002]
    assert c["conn_state"].tolist() == ["S1", "S1"]


def test_syn_only_timeout_versus_capture_end():
    rows = [pkt(0.0, "10.0.0.1", 1, "10.0.0.2", 80, 0x02, 7), pkt(1.0, "10.0.0.1", 1, "10.0.0.2", 80, 0x02, 7)]
    # the next SYN was due 2 s after the last one: 1 s later the capture just ended, 5 s later it timed out
    assert connections(table(rows), capture_end_ns=int(2.0e9))["end"].tolist() == ["capture-end"]
    c = connections(table(rows), capture_end_ns=int(6.0e9))
    assert c["end"].tolist() == ["timeout"] and c["conn_state"].tolist() == ["S0"]


def test_clock_offset_is_recovered_and_journeys_survive_it():
    """Shift one node's clock by 2.5 s: the estimate finds it and the journeys are unchanged."""
    a = analyze(samples_dir() / "loopback-local")
    conns = a.connections
    shifted = conns.copy()
    on2 = shifted["node"] == "node-2"
    for col in ("ts", "syn_ts", "synack_ts", "ack_ts", "last_ts"):
        shifted.loc[on2, col] += 2.5
    off, notes = clock_offsets(shifted)
    assert abs((off["node-2"] - off["node-1"]) - 2.5) < 0.001, notes
    j, _, _ = build_journeys(shifted, a.inventory, offsets=off)
    j = j[j["vip"] == "198.19.0.10"]
    base = a.journeys.set_index("client_p")[["lb_backend", "loopback", "snat"]]
    assert j.set_index("client_p")[["lb_backend", "loopback", "snat"]].sort_index().equals(base.sort_index())


def test_retina_shaped_node_and_tarball(tmp_path):
    """A capture tool's node (pcap, iptables-rules.txt, ip-resources.txt), unpacked or tarred."""
    src = samples_dir() / "loopback-local"
    d = reshape(src, tmp_path / "inc", keep=lambda n, c: c == "any", cluster=False)
    for node in ("node-1", "node-2"):
        nd = d / "nodes" / node
        (nd / "any.pcap").rename(nd / f"{node}-20240501T101010.pcap")
        (nd / "iptables-save.txt").rename(nd / "iptables-rules.txt")
        addrs = json.loads((nd / "ip-addr.json").read_text())
        lines = []
        for link in addrs:
            lines.append(f"{link['ifindex']}: {link['ifname']}: <UP> mtu 1500")
            lines += [f"    inet {a['local']}/{a['prefixlen']} scope global {link['ifname']}"
                      for a in link.get("addr_info", []) if a.get("family") == "inet"]
        (nd / "ip-resources.txt").write_text("\n".join(lines) + "\n")
        (nd / "ip-addr.json").unlink()
    with tarfile.open(d / "nodes" / "node-2.tar.gz", "w:gz") as tf:
        tf.add(d / "nodes" / "node-2", arcname="node-2-capture")
    shutil.rmtree(d / "nodes" / "node-2")
    b = load_bundle(d)
    assert [n.name for n in b.nodes] == ["node-1", "node-2"]
    assert all(n.shape == "retina" and n.iptables and len(n.captures) == 1 for n in b.nodes)
    inv = build_inventory(b)
    assert set(inv.nodes["internal_ip"]) == {"198.18.0.11", "198.18.0.12"}
    a = analyze(d)
    s = a.summary()
    assert s["snat"][0]["policy"] == "Local" and s["snat"][0]["ratio"] == 0.0
    gt = pd.read_json(src / "ground-truth" / "connections.jsonl", lines=True)
    assert s["loopback"]["hits"] == int(gt["loopback"].astype(bool).sum())


def test_bad_input_is_one_line_error(tmp_path):
    with pytest.raises(NatlensError, match="incident directory not found"):
        load_bundle(tmp_path / "missing")
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "services.json").write_text('{"items": [\n  {"a": 1,}\n]}')
    with pytest.raises(NatlensError) as e:
        load_bundle(tmp_path)
    assert "services.json:2" in str(e.value)
    r = subprocess.run([sys.executable, "-m", "natlens", "analyze", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "services.json:2" in r.stderr


def test_cli_json_is_the_summary():
    d = samples_dir() / "cluster-ok"
    r = subprocess.run([sys.executable, "-m", "natlens", "analyze", str(d), "--json"],
                       capture_output=True, text=True, check=True)
    s = json.loads(r.stdout)
    assert s["schema"] == "natlens.summary/1"
    assert set(s) == {"schema", "incident", "inputs", "connections", "snat", "loopback",
                      "latency_ms", "verdict", "problems", "rules", "failures", "lb_behaviour", "scope"}
    assert s["scope"] is None  # no --service/--start/--end
    assert s["snat"][0]["ratio"] == 1.0 and s["loopback"]["hits"] == 0
    assert [x["behaviour"] for x in s["lb_behaviour"]] == ["avoids-source"]
    r = subprocess.run([sys.executable, "-m", "natlens", "analyze", str(d)],
                       capture_output=True, text=True, check=True)
    assert "SNAT per service" in r.stdout and "verdict:" in r.stdout


def test_analyze_out_writes_summary_and_parquet_tables(tmp_path):
    from natlens.cli import main
    from natlens.findings import analyze as run_analysis

    bundle = samples_dir() / "mixed"
    assert main(["analyze", str(bundle), "--out", str(tmp_path), "--no-progress"]) == 0
    a = run_analysis(bundle)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(a.summary()))
    for name in ("connections", "journeys", "service_journeys", "snat", "latency"):
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(back.columns) == list(getattr(a, name).columns)
        assert len(back) == len(getattr(a, name))
    j = pd.read_parquet(tmp_path / "journeys.parquet")
    assert list(j["uids"].iloc[0]) == list(a.journeys["uids"].iloc[0])
