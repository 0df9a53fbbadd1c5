"""natlens' connections as a Zeek conn.log (natlens.connections.zeek_log, `analyze --out`).

The strong check: on every real trace in ../shared/data/zeek-traces, natlens' conn.log and
Zeek's own conn.log of the same capture, read by the same reader, have the same header
directives, the same fields and types (natlens' extra fields after Zeek's) and agree on
every field natlens matches Zeek on (test_connections_zeek.py's FIELDS, payload bytes where
Zeek logs them, proto, ip_proto, tunnel_parents and which durations are unset). The fields
natlens does not know (service, local_orig/resp, missed_bytes) are Zeek's unset "-".
Zeek tooling: the PyPI reader parsezeeklogs (in requirements.txt) reads every line typed.
Debian packages no Zeek, so zeek-cut is not tested.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import samples_dir
from test_connections_zeek import FIELDS, read_zeek_conn, traces

from natlens.capture import read_capture
from natlens.connections import connections
from natlens.connections.zeek_log import CONN_FIELDS, write_conn_log
from natlens.errors import NatlensError

KEY = ["orig_h", "orig_p", "resp_h", "resp_p", "proto"]
DIRECTIVES = ["separator", "set_separator", "empty_field", "unset_field", "path", "open",
              "fields", "types"]
FIXED = datetime(2026, 12, 1, 17, 0, 5, tzinfo=timezone.utc)


def header(path: Path) -> tuple[list[str], dict[str, str], str]:
    """The directive names in order, their values, and the last line."""
    lines = path.read_text().splitlines()
    names, values = [], {}
    for line in lines:
        if not line.startswith("#") or line.startswith("##"):
            continue
        # "#separator \x09" has a space; the baselines' masked "#open XXXX-..." too
        name, value = re.split(r"[\t ]", line[1:], maxsplit=1)
        names.append(name)
        values[name] = value
    return names, values, lines[-1]


CELL = {
    "time": re.compile(r"\d+\.\d{6}"), "interval": re.compile(r"\d+\.\d{6}"),
    "count": re.compile(r"\d+"), "int": re.compile(r"-?\d+"), "port": re.compile(r"\d{1,5}"),
    "bool": re.compile(r"[TF]"), "enum": re.compile(r"[a-z]+"),
}


def strict_rows(path: Path) -> pd.DataFrame:
    """Every data line checked against the #types header as Zeek's reader would parse it:
    the right number of cells, each one Zeek's unset "-" or a value of its type."""
    names, values, last = header(path)
    fields, types = values["fields"].split("\t"), values["types"].split("\t")
    assert len(fields) == len(types) and last.startswith("#close\t")
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    for n, cells in enumerate(rows):
        assert len(cells) == len(fields), f"line {n}: {len(cells)} cells for {len(fields)} fields"
        for f, t, v in zip(fields, types, cells, strict=True):
            assert v.lower() not in ("nan", "none", "<na>", "nat", "inf", ""), (n, f, v)
            if v == "-":
                continue
            if t == "addr":
                ipaddress.ip_address(v)
            elif t in CELL:
                assert CELL[t].fullmatch(v), (n, f, t, v)
            else:
                assert "\t" not in v and "\n" not in v, (n, f, v)
    return pd.DataFrame(rows, columns=fields)


def ours_for(cap: Path, tmp_path: Path) -> Path:
    return write_conn_log(connections(read_capture(cap).packets), tmp_path / f"{cap.stem}.conn.log",
                          now=lambda: FIXED)


def test_header_fields_and_types_are_zeeks(zeek_traces, tmp_path):
    for name, cap, log in traces(zeek_traces):
        ours = ours_for(cap, tmp_path)
        o_names, o_values, o_last = header(ours)
        z_names, z_values, z_last = header(log)
        assert o_names == z_names == [*DIRECTIVES, "close"], name
        for d in ("separator", "set_separator", "empty_field", "unset_field", "path"):
            assert o_values[d] == z_values[d], (name, d)
        assert o_values["open"] == "2026-12-01-17-00-05" and o_last == "#close\t2026-12-01-17-00-05"
        z_fields = z_values["fields"].split("\t")
        o_fields = o_values["fields"].split("\t")
        assert o_fields[:len(z_fields)] == z_fields == [f for f, _, _ in CONN_FIELDS], name
        assert o_values["types"].split("\t")[:len(z_fields)] == z_values["types"].split("\t"), name
        assert all(f == "vlan" or f.startswith("natlens_") for f in o_fields[len(z_fields):])


def test_agrees_with_zeeks_conn_log_read_by_the_same_reader(zeek_traces, tmp_path):
    compared = 0
    for name, cap, log in traces(zeek_traces):
        if "vxlan" in name:  # natlens records the tunnel's inner flows, Zeek the outer UDP ones
            continue
        path = ours_for(cap, tmp_path)
        strict_rows(path)
        ours, zeek = read_zeek_conn(path), read_zeek_conn(log)
        zeek = zeek[zeek["proto"].isin(["tcp", "udp"])]  # natlens makes no ICMP records
        m = zeek.merge(ours, on=KEY, how="outer", suffixes=("_zeek", ""), indicator=True)
        assert (m["_merge"] == "both").all(), f"{name}: 5-tuples differ\n{m[KEY + ['_merge']]}"
        for f in [*FIELDS, "ip_proto", "tunnel_parents"]:
            bad = m[m[f + "_zeek"].astype(str) != m[f].astype(str)]
            assert bad.empty, f"{name}: {f} differs\n{bad[KEY + [f + '_zeek', f]]}"
        logged = m["orig_bytes_zeek"] != "-"
        for f in ("orig_bytes", "resp_bytes"):
            assert (m.loc[logged, f + "_zeek"] == m.loc[logged, f]).all(), f"{name}: {f} differs"
        # Zeek leaves the duration unset for a connection of no duration; so does natlens.
        assert ((m["duration_zeek"] == "-") == (m["duration"] == "-")).all(), name
        for f in ("service", "local_orig", "local_resp", "missed_bytes"):
            assert (m[f] == "-").all(), f"{name}: {f} is not natlens' to know"
        compared += len(m)
    assert compared >= 30


def test_vlan_is_zeeks_vlan_field(zeek_traces, tmp_path):
    """http-vlan-0's baseline holds only Zeek's vlan-logging columns: VLAN id 0."""
    cut = (zeek_traces / "http-vlan-0" / "zeek-conn.log.cut").read_text().splitlines()
    names = cut[1].split("\t")
    want = dict(zip(names, cut[2].split("\t"), strict=True))["vlan"]
    ours = read_zeek_conn(ours_for(zeek_traces / "http-vlan-0" / "http-vlan-0.pcap", tmp_path))
    assert ours["vlan"].tolist() == [want] == ["0"]
    get = read_zeek_conn(ours_for(zeek_traces / "http-get" / "get.pcap", tmp_path))
    assert get["vlan"].tolist() == ["-"]  # no VLAN tag: unset, not -1


def test_parsezeeklogs_reads_every_line_typed(zeek_traces, tmp_path):
    import parsezeeklogs as pzl
    for name, cap, log in traces(zeek_traces):
        if "vxlan" in name:
            continue
        with pzl.ZeekLog(ours_for(cap, tmp_path)) as r:
            ours = list(r)
            assert r.skipped == 0 and r.path == "conn"
        table = connections(read_capture(cap).packets).sort_values("ts_ns", kind="stable")
        assert [x["ts"] for x in ours] == pytest.approx(table["ts"].tolist(), abs=1e-6)
        assert [x["uid"] for x in ours] == table["uid"].tolist()
        assert all(isinstance(x["orig_pkts"], int) and isinstance(x["id.resp_p"], int) for x in ours)
        assert all(x["service"] is None and x["tunnel_parents"] is None for x in ours)
        # Zeek's own log, by the same reader (its ts is masked in the baseline: not read).
        fields = [f for f, _, _ in CONN_FIELDS if f != "ts"]
        with pzl.ZeekLog(log, fields=fields) as r:
            zeek = [x for x in r if x["proto"] in ("tcp", "udp")]
            assert r.skipped == 0
        key = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
        by_key = {tuple(x[k] for k in key): x for x in ours}
        assert set(by_key) == {tuple(x[k] for k in key) for x in zeek}, name
        same = ("conn_state", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
                "ip_proto")
        for z in zeek:
            o = by_key[tuple(z[k] for k in key)]
            assert {f: o[f] for f in same} == {f: z[f] for f in same}, name
            if z["orig_bytes"] is not None:
                assert (o["orig_bytes"], o["resp_bytes"]) == (z["orig_bytes"], z["resp_bytes"])


def test_analyze_out_writes_every_record_with_its_journey_and_interface(tmp_path):
    from natlens.cli import main

    out = tmp_path / "out"
    assert main(["analyze", str(samples_dir() / "mixed"), "--out", str(out)]) == 0
    rows = strict_rows(out / "conn.log")
    conns = pd.read_parquet(out / "connections.parquet")
    assert sorted(rows["uid"]) == sorted(conns["uid"]) and len(rows) == len(conns)
    byuid = rows.set_index("uid").loc[conns["uid"]]
    assert (byuid["orig_pkts"].astype(int).to_numpy() == conns["orig_pkts"].to_numpy()).all()
    assert (byuid["natlens_capture"].to_numpy() == conns["capture"].to_numpy()).all()
    assert set(rows["natlens_iface"]) >= {"eth0", "cni0", "veth-client"}
    assert set(rows["natlens_journey"]) <= set(pd.read_parquet(out / "journeys.parquet")["journey"])
    assert rows["natlens_journey"].str.fullmatch(r"J\d+").all()
    ts = rows["ts"].tolist()
    assert ts == sorted(ts, key=float)


def _table(**changes) -> pd.DataFrame:
    """Two hand-built records in the connections table's columns."""
    base = {
        "ts_ns": [1_700_000_000_123_456_789, 1_700_000_001_000_000_000], "uid": ["c#0", "c#1"],
        "orig_h": ["198.18.0.1", "2001:db8::1"], "orig_p": [40000, 40001],
        "resp_h": ["198.18.0.2", "2001:db8::2"], "resp_p": [80, 53], "proto": ["tcp", "udp"],
        "duration": [0.5, 0.0], "orig_bytes": [10, 20], "resp_bytes": [0, 0],
        "conn_state": ["SF", "S0"], "history": ["ShADadFf", "D"], "orig_pkts": [5, 1],
        "orig_ip_bytes": [300, 48], "resp_pkts": [4, 0], "resp_ip_bytes": [200, 0],
        "capture": ["node-1/eth0", "node-1/eth0"], "node": ["node-1", "node-1"],
        "iface": [0, 0], "vlan": [-1, -1], "vni": [-1, -1],
    }
    base.update(changes)
    return pd.DataFrame(base)


def test_nan_none_and_na_are_unset_never_nan_or_none(tmp_path):
    t = _table(duration=[np.nan, 0.0], orig_bytes=pd.array([20, None], dtype="Int64"),
               resp_bytes=[7.0, 0.0],  # float counts (from a join) are still integers
               node=[None, np.nan], history=["", "D"], vni=[4789, -1])
    t["journey"], t["point"] = [None, "J1"], [np.nan, pd.NA]
    rows = strict_rows(write_conn_log(t, tmp_path / "conn.log"))
    text = (tmp_path / "conn.log").read_text()
    assert not re.search(r"(?i)(^|\t)(nan|none|<na>|nat)(\t|$)", text, re.M)
    assert "20.0" not in text and "7.0" not in text
    assert rows["duration"].tolist() == ["-", "-"]
    assert rows["orig_bytes"].tolist() == ["20", "-"] and rows["resp_bytes"].tolist() == ["7", "0"]
    assert rows["natlens_node"].tolist() == ["-", "-"] and rows["history"].tolist() == ["-", "D"]
    assert rows["natlens_journey"].tolist() == ["-", "J1"] and rows["natlens_iface"].tolist() == ["-", "-"]
    assert rows["natlens_vni"].tolist() == ["4789", "-"] and rows["natlens_ifindex"].tolist() == ["0", "0"]
    assert rows["ts"].tolist() == ["1700000000.123457", "1700000001.000000"]
    assert rows["ip_proto"].tolist() == ["6", "17"]


def test_strings_are_escaped_as_zeek_does(tmp_path):
    import parsezeeklogs as pzl
    labels = ["odd\tname\\x", "-", "(empty)", ""]
    t = pd.concat([_table(), _table()], ignore_index=True)
    t["uid"], t["ts_ns"] = [f"c#{i}" for i in range(4)], [1_700_000_000_000_000_000 + i for i in range(4)]
    t["capture"] = labels
    path = write_conn_log(t, tmp_path / "conn.log")
    rows = strict_rows(path)
    assert rows["natlens_capture"].tolist() == ["odd\\x09name\\x5cx", "\\x2d", "\\x28empty)", "(empty)"]
    with pzl.ZeekLog(path) as r:
        assert [x["natlens_capture"] for x in r] == labels
    # A file name's bytes that are not UTF-8 (Python's surrogate escapes) are written as \xHH.
    t["capture"] = pd.Series(["bad\udcff", "é", "ok", "ok"], dtype=object)
    rows = strict_rows(write_conn_log(t, tmp_path / "conn.log"))
    assert rows["natlens_capture"].tolist()[:2] == ["bad\\xff", "é"]


def test_bad_tables_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(NatlensError, match=r"conn\.log: .*no column history"):
        write_conn_log(_table().drop(columns="history"), tmp_path / "conn.log")
    with pytest.raises(NatlensError, match=r"negative orig_pkts -3 in record c#1"):
        write_conn_log(_table(orig_pkts=[1, -3]), tmp_path / "conn.log")
    with pytest.raises(NatlensError, match=r"orig_bytes.*not integer"):
        write_conn_log(_table(orig_bytes=[1.5, 2.0]), tmp_path / "conn.log")
    with pytest.raises(NatlensError, match=r"protocol 'icmp' is neither tcp nor udp"):
        write_conn_log(_table(proto=["tcp", "icmp"]), tmp_path / "conn.log")
    with pytest.raises(NatlensError, match=r"missing-dir/conn\.log: cannot write"):
        write_conn_log(_table(), tmp_path / "missing-dir" / "conn.log")


def test_an_empty_table_is_a_header_only_log(tmp_path):
    rows = strict_rows(write_conn_log(_table().iloc[0:0], tmp_path / "conn.log"))
    assert rows.empty and list(rows.columns)[:2] == ["ts", "uid"]


def test_a_log_written_in_slices_is_the_log_written_at_once(tmp_path, monkeypatch):
    from natlens.connections import zeek_log

    t = pd.concat([_table()] * 5, ignore_index=True)
    t["uid"], t["ts_ns"] = [f"c#{i}" for i in range(10)], [1_700_000_000_000_000_000 + 7 * i for i in range(10)]
    t.loc[3, "capture"], t.loc[4, "history"] = "odd\tname", ""
    fixed = lambda: datetime(2026, 1, 1, tzinfo=timezone.utc)  # noqa: E731
    whole = write_conn_log(t, tmp_path / "whole.log", now=fixed).read_text()
    monkeypatch.setattr(zeek_log, "LOG_ROWS", 3)
    assert write_conn_log(t, tmp_path / "sliced.log", now=fixed).read_text() == whole


def test_a_log_that_fails_part_way_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from natlens.connections import zeek_log

    monkeypatch.setattr(zeek_log, "LOG_ROWS", 1)  # the bad record is in the second slice
    path = tmp_path / "conn.log"
    path.write_text("old\n")
    with pytest.raises(NatlensError, match="negative orig_pkts"):
        write_conn_log(_table(orig_pkts=[1, -3]), path)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["conn.log"]
