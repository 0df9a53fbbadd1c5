"""The contracts users' scripts rely on (DESIGN.md sections 2, 4 and 5).

* summary.json: every key, its type and meaning, checked by a plain-Python validator
  over the lab's samples and over edge bundles built here (no traffic to any VIP, no
  cluster/ and no dumps, ICMP only, an empty capture, only failed connections, no SNAT
  evidence); strict JSON (no NaN).
* The connections and journeys column lists are pinned, so a change is deliberate
  (and goes with the docs, which must name every column).
* Nothing lost silently: every record is a packet or counted, every packet is in a
  connection or counted, every capture is in inputs, every unread file is listed.
* The verdict: plain words, exact numbers, the remediation options DESIGN lists.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from analysis_helpers import ipv4, pcap_file, samples_dir, tcp

from natlens import connections as connections_mod
from natlens import journeys as journeys_mod
from natlens.bundle import CAPTURE_SUFFIXES
from natlens.capture.schema import ANOMALIES
from natlens.capture.schema import COLUMNS as PACKET_COLUMNS
from natlens.findings import FAILURE_COLUMNS, analyze
from natlens.vocab import FAILURES, LB_BEHAVIOURS, LOOP_MODES, PROXY

# --- summary.json validator (DESIGN.md section 5 + the additive keys findings.py documents) ---

SERVICE = re.compile(r"^[0-9a-fA-F.:]+:\d{1,5}/(tcp|udp)$")
DIST_KEYS = {"count", "p50", "p90", "p99", "max"}


def _keys(d: dict, required: set[str], additive: set[str] = frozenset(), where: str = "") -> None:
    assert isinstance(d, dict), f"{where}: not an object"
    missing = required - set(d)
    extra = set(d) - required - additive
    assert not missing, f"{where}: missing {sorted(missing)}"
    assert not extra, f"{where}: undocumented keys {sorted(extra)}"


def _count(v, where: str) -> int:
    assert type(v) is int and v >= 0, f"{where}: {v!r} is not a count"
    return v


def _counts(d: dict, where: str) -> int:
    assert isinstance(d, dict), where
    for k, v in d.items():
        assert isinstance(k, str) and k, f"{where}: key {k!r}"
        _count(v, f"{where}.{k}")
    return sum(d.values())


RULE_KEYS = {"service", "source_node", "files", "proxy_mode", "proxy_mode_evidence", "ingress", "ingress_evidence",
             "vip", "vip_evidence", "returning_syn", "returning_syn_evidence", "returning_syn_rule",
             "looped_back_to"}


def validate_summary(s: dict) -> None:
    """Raise AssertionError naming the key when `s` is not natlens.summary/1."""
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN / Infinity anywhere
    _keys(s, {"schema", "incident", "inputs", "connections", "snat", "loopback", "latency_ms", "verdict"},
          {"problems", "rules", "failures", "lb_behaviour", "scope"})
    assert s["schema"] == "natlens.summary/1"
    assert isinstance(s["incident"], str) and s["incident"]

    inp = s["inputs"]
    _keys(inp, {"captures", "inferred"}, {"not_read", "quality", "uncaptured_nodes"}, "inputs")
    assert isinstance(inp["captures"], list)
    for i, c in enumerate(inp["captures"]):
        w = f"inputs.captures[{i}]"
        _keys(c, {"node", "file", "records", "decoded", "skipped"},
              {"connections", "not_in_connections", "skipped_bytes", "anomalies"}, w)
        assert set(c.get("skipped_bytes", {})) <= {"bad-length", "cut-short"}, w
        _counts(c.get("skipped_bytes", {}), w + ".skipped_bytes")
        assert set(c.get("anomalies", {})) <= {name for name, _ in ANOMALIES}, w
        _counts(c.get("anomalies", {}), w + ".anomalies")
        assert isinstance(c["node"], str) and isinstance(c["file"], str) and c["file"]
        assert c["file"].endswith(CAPTURE_SUFFIXES) and not c["file"].startswith("/"), w
        records, decoded = _count(c["records"], w), _count(c["decoded"], w)
        assert records == decoded + _counts(c["skipped"], w + ".skipped"), f"{w}: a record is unaccounted"
        if "not_in_connections" in c:
            assert _counts(c["not_in_connections"], w + ".not_in_connections") <= decoded
            _count(c["connections"], w)
    assert all(isinstance(x, str) and x for x in inp["inferred"])
    for i, x in enumerate(inp.get("not_read", [])):
        _keys(x, {"file", "reason"}, where=f"inputs.not_read[{i}]")
        assert isinstance(x["file"], str) and isinstance(x["reason"], str) and x["reason"]

    c = s["connections"]
    _keys(c, {"total", "failed", "timeouts", "resets"}, {"unknown"}, where="connections")
    for k in c:
        _count(c[k], f"connections.{k}")
    assert c["failed"] == c["timeouts"] + c["resets"] <= c["total"]
    assert c["failed"] + c.get("unknown", 0) <= c["total"]

    assert isinstance(s["snat"], list)
    per_row = 0
    for i, r in enumerate(s["snat"]):
        w = f"snat[{i}]"
        _keys(r, {"service", "source_node", "policy", "connections", "snat", "ratio",
                  "predicted_by_rules", "rule_trace"}, {"host_network", "no_snat", "unknown"}, where=w)
        assert r.get("host_network", "no") in ("yes", "no", "unknown"), f"{w}.host_network"
        assert SERVICE.match(r["service"]), f"{w}.service {r['service']!r} is not VIP:port/proto"
        assert isinstance(r["source_node"], str) and r["source_node"]
        assert r["policy"] in ("Local", "Cluster", "unknown"), w
        n, k = _count(r["connections"], w), _count(r["snat"], w)
        assert n >= 1 and k <= n, w
        if "no_snat" in r:  # the row's counts agree with its unknowns
            assert k + _count(r["no_snat"], w) + _count(r["unknown"], w) == n, f"{w}: counts disagree"
        per_row += n
        if r["ratio"] is None:
            assert k == 0, f"{w}: SNATed connections but no ratio"
        else:
            assert type(r["ratio"]) is float and 0.0 <= r["ratio"] <= 1.0, w
            assert k == 0 or r["ratio"] > 0, w
        assert r["predicted_by_rules"] in (True, False, None), w
        assert isinstance(r["rule_trace"], list) and all(isinstance(x, str) for x in r["rule_trace"]), w
    assert per_row == c["total"], "snat rows do not cover every connection once"

    lb = s["loopback"]
    _keys(lb, {"hits", "failed", "by_node"}, where="loopback")
    assert _count(lb["failed"], "loopback.failed") <= _count(lb["hits"], "loopback.hits") <= c["total"]
    assert lb["failed"] <= c["failed"]
    assert _counts(lb["by_node"], "loopback.by_node") == lb["hits"]
    assert all(v > 0 for v in lb["by_node"].values())

    lat = s["latency_ms"]
    _keys(lat, {"handshake", "connect", "first_byte"}, where="latency_ms")
    for name, d in lat.items():
        w = f"latency_ms.{name}"
        _keys(d, DIST_KEYS, where=w)
        n = _count(d["count"], w)
        assert n <= c["total"], w
        vals = [d[k] for k in ("p50", "p90", "p99", "max")]
        if n == 0:
            assert vals == [None] * 4, f"{w}: percentiles of no sample must be null"
        else:
            assert all(type(v) is float and math.isfinite(v) and v >= 0 for v in vals), w
            assert vals == sorted(vals), f"{w}: p50 <= p90 <= p99 <= max"

    for i, m in enumerate(s.get("rules", [])):
        w = f"rules[{i}]"
        _keys(m, RULE_KEYS, where=w)
        assert m["proxy_mode"] in ("ipvs", "iptables", "nftables", "none", "unknown"), w
        assert m["ingress"] in ("VIP", "Proxy", "unset", "unknown"), w
        assert m["vip"] in ("dnat", "policy", "none", "unknown"), w
        assert m["returning_syn"] in ("local", "any", "none", "unknown"), w
        assert all(isinstance(m[k], str) and m[k] for k in RULE_KEYS if k.endswith("_evidence")), w
        assert all(_count(x["connections"], w) > 0 for x in m["looped_back_to"]), w
    assert {(m["service"], m["source_node"]) for m in s.get("rules", [])} <= \
        {(r["service"], r["source_node"]) for r in s["snat"]}, "rules[] for a row the SNAT table lacks"

    v = s["verdict"]
    _keys(v, {"loopback_detected", "headline", "root_cause", "remediation"},
          {"evidence", "problem", "lb_behaviour", "lb_failure_mode"}, where="verdict")
    assert v.get("problem") is None or v["problem"]["text"] in v["headline"] + v["root_cause"]
    for i, q in enumerate(inp.get("quality", [])):
        w = f"inputs.quality[{i}]"
        _keys(q, {"node", "file", "first_ts", "last_ts", "span_s", "starts_late_s", "ends_early_s", "cut_short",
                  "dropped", "tcp_gaps", "lost_acks", "cut_records", "journeys_affected", "journeys_cut",
                  "journeys_before", "journeys_after", "limits", "damaged_bytes", "damaged",
                  "journeys_damaged"}, where=w)
        assert set(q["journeys_damaged"]) <= set(q["journeys_affected"]), w
        assert q["damaged_bytes"] == inp["captures"][i].get("skipped_bytes", {}).get("bad-length", 0), w
        assert q["file"] == inp["captures"][i]["file"], f"{w}: not in the order of inputs.captures"
        assert set(q["journeys_cut"]) | set(q["journeys_before"]) | set(q["journeys_after"]) \
            <= set(q["journeys_affected"]), w
    assert v.get("evidence") is None or (isinstance(v["evidence"], str) and v["evidence"])
    assert type(v["loopback_detected"]) is bool
    assert v["loopback_detected"] == (lb["hits"] > 0)
    assert isinstance(v["headline"], str) and v["headline"] and isinstance(v["root_cause"], str)
    assert isinstance(v["remediation"], list) and all(isinstance(x, str) and x for x in v["remediation"])
    failed = s["failures"]["failed"] if "failures" in s else 0
    harmless = (v.get("lb_behaviour") == PROXY and v.get("lb_failure_mode") == "answered-via-lb"
                and lb["failed"] == 0)  # loopbacks each seen answered through the LB
    assert bool(v["remediation"]) == ((v["loopback_detected"] and not harmless) or failed > 0)
    if "failures" in s:
        validate_failures(s["failures"], c["failed"])
    if "lb_behaviour" in s:
        validate_lb(s["lb_behaviour"], s, v)


def validate_lb(found: list, s: dict, v: dict) -> None:
    """summary.json's lb_behaviour: one entry per Service of the SNAT table, its behaviour and loop
    modes from the vocabulary, its counts consistent, and the verdict naming one of them."""
    assert isinstance(found, list)
    services = {r["service"] for r in s["snat"]}
    assert {x["service"] for x in found} <= services | {None}, "lb_behaviour for a Service the SNAT table lacks"
    for i, x in enumerate(found):
        w = f"lb_behaviour[{i}]"
        _keys(x, {"service", "behaviour", "evidence", "node_source", "pod_source", "rewritten",
                  "chance_if_any_backend", "loops", "failure_mode", "failure_mode_evidence", "documented"}, where=w)
        doc = x["documented"]
        assert doc is None or (doc["behaviour"] in LB_BEHAVIOURS and isinstance(doc["evidence"], str)), w
        assert x["behaviour"] in LB_BEHAVIOURS and isinstance(x["evidence"], str) and x["evidence"], w
        for k, part in (("node_source", "to_source_node"), ("pod_source", "to_client_node"),
                        ("rewritten", "rewritten")):
            assert 0 <= _count(x[k][part], w) <= _count(x[k]["of"], w), f"{w}.{k}"
        assert x["chance_if_any_backend"] is None or 0 <= x["chance_if_any_backend"] <= 1, w
        assert set(x["loops"]) <= set(LOOP_MODES) and x["failure_mode"] in LOOP_MODES, w
        loops = sum(_count(n, w) for n in x["loops"].values())
        assert loops <= s["loopback"]["hits"], f"{w}: more loop modes than loopbacks"
        assert (x["behaviour"] == "any-backend") == (x["node_source"]["to_source_node"] > 0
                                                     and x["rewritten"]["rewritten"] == 0), w
    assert v.get("lb_behaviour", "unknown") in LB_BEHAVIOURS
    assert v.get("lb_failure_mode", "unknown") in LOOP_MODES


def validate_failures(f: dict, failed: int) -> None:
    """summary.json's failures: every failed connection has one mechanism of the vocabulary, the
    counts add up per mechanism, per (Service, source node) and per journey list."""
    _keys(f, {"failed", "by_mechanism", "by_service", "unexplained", "unexplained_why", "journeys"},
          where="failures")
    assert _count(f["failed"], "failures.failed") == failed, "failures.failed is not connections.failed"
    assert _counts(f["by_mechanism"], "failures.by_mechanism") == failed
    assert set(f["by_mechanism"]) <= set(FAILURES), f"failures: mechanisms outside the vocabulary {f['by_mechanism']}"
    assert list(f["by_mechanism"].values()) == sorted(f["by_mechanism"].values(), reverse=True), "most first"
    assert f["unexplained"] == f["by_mechanism"].get("unknown", 0) == len(f["unexplained_why"])
    assert all(x["why"] and x["journey"] in f["journeys"]["unknown"] for x in f["unexplained_why"])
    assert sum(_count(b["failed"], "failures.by_service") for b in f["by_service"]) == failed
    for b in f["by_service"]:
        assert _counts(b["by_mechanism"], "failures.by_service[].by_mechanism") == b["failed"]
    assert {m: len(ids) for m, ids in f["journeys"].items()} == f["by_mechanism"]


# --- edge bundles --------------------------------------------------------------------


_pcap, _ipv4 = pcap_file, ipv4


def _syn(src: str, sport: int, dst: str, dport: int, isn: int) -> bytes:
    return tcp(src, sport, dst, dport, 0x02, isn)


def _syn_only(tmp: Path, label: str) -> Path:
    """Two client pods' SYNs to the sample's VIP, each retransmitted, never answered."""
    d = tmp / f"syn-only-{label}"
    shutil.copytree(samples_dir() / "loopback-local" / "cluster", d / "cluster")
    (d / "nodes" / "node-1").mkdir(parents=True)
    t0 = 1_800_000_000.0
    pk = []
    for i, sport in enumerate((41000, 41002)):
        for dt in (0.0, 1.0, 3.0):
            pk.append((t0 + i * 0.1 + dt, _syn("198.18.16.100", sport, "198.19.0.10", 80, 1000 + i)))
    # the capture runs on, silent, past the next retransmission (due at +7 s): they timed out
    pk.append((t0 + 10.0, _ipv4("198.18.16.100", "198.18.0.12", 1, b"\x08\x00\x00\x00\x00\x01\x00\x02")))
    pk.sort()
    _pcap(d / "nodes" / "node-1" / f"{label}.pcap", pk)
    (d / "nodes" / "node-1" / "ip-addr.json").write_text(json.dumps(
        [{"ifindex": 2, "ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.18.0.11",
                                                          "prefixlen": 24}]}]))
    # an ICMP echo too: decoded, but in no connection
    _pcap(d / "nodes" / "node-1" / "icmp.pcap",
          [(t0, _ipv4("198.18.16.100", "198.18.0.12", 1, b"\x08\x00\x00\x00\x00\x01\x00\x01"))])
    return d


def _edge_bundles(tmp: Path, z: Path) -> dict[str, Path]:
    out = {}
    # cluster/ names a VIP, the captures hold other traffic only; plus files natlens does not read
    d = tmp / "no-vip-traffic"
    shutil.copytree(samples_dir() / "loopback-local" / "cluster", d / "cluster")
    (d / "nodes" / "node-1").mkdir(parents=True)
    shutil.copy(z / "wikipedia" / "wikipedia.pcap", d / "nodes" / "node-1" / "eth0.pcap")
    (d / "nodes" / "node-1" / "notes.txt").write_text("tcpdump -i eth0 -w eth0.pcap\n")
    (d / "nodes" / "node-1" / "eth1.pcap.gz").write_bytes(b"\x1f\x8b")
    (d / "nodes" / "stray.pcap").write_bytes(b"")
    (d / "cluster" / "endpoints.json").write_text("{}")
    (d / "README.txt").write_text("from the customer\n")
    out["no-vip-traffic"] = d
    # no cluster/, no dumps: nothing says what a VIP is
    d = tmp / "no-cluster-no-dumps"
    (d / "nodes" / "n").mkdir(parents=True)
    shutil.copy(z / "wikipedia" / "wikipedia.pcap", d / "nodes" / "n" / "eth0.pcap")
    shutil.copy(z / "linux-sll2" / "linux_dlt_sll2.pcap", d / "nodes" / "n" / "any.pcap")
    out["no-cluster-no-dumps"] = d
    # ICMP only (inside VXLAN)
    d = tmp / "icmp-only"
    (d / "nodes" / "n").mkdir(parents=True)
    shutil.copy(z / "vxlan" / "vxlan.pcap", d / "nodes" / "n" / "eth0.pcap")
    out["icmp-only"] = d
    # an empty capture (header only) next to a real one
    d = tmp / "empty-capture"
    (d / "nodes" / "n").mkdir(parents=True)
    _pcap(d / "nodes" / "n" / "eth0.pcap", [])
    shutil.copy(z / "http-get" / "get.pcap", d / "nodes" / "n" / "any.pcap")
    out["empty-capture"] = d
    # only failed connections: no latency sample; SNAT seen on eth0 (pod IP left the NIC)
    out["syn-only"] = _syn_only(tmp, "eth0")
    # the same on a pod-side interface: no SNAT evidence at all
    out["no-snat-evidence"] = _syn_only(tmp, "veth1")
    return out


@pytest.fixture(scope="module")
def edges(tmp_path_factory, zeek_traces):
    return _edge_bundles(tmp_path_factory.mktemp("edges"), zeek_traces)


@pytest.fixture(scope="module")
def sample_analyses():
    s = samples_dir()
    return {name: analyze(s / name) for name in ("loopback-local", "cluster-ok", "mixed", "any-backend-cluster")}


def _bundle_captures(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.glob("nodes/*/**/*")
            if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES)}


def _check_accounting(a, d: Path) -> None:
    s = a.summary()
    assert {c["file"] for c in s["inputs"]["captures"]} == _bundle_captures(d)
    used = a.connections.groupby("capture")[["orig_pkts", "resp_pkts"]].sum().sum(axis=1) \
        if len(a.connections) else pd.Series(dtype="int64")
    for c, raw in zip(s["inputs"]["captures"], a.inputs, strict=True):
        label = f"{c['node']}/{Path(c['file']).stem}"
        in_conns = int(used.get(label, 0))
        assert c["decoded"] == in_conns + sum(c["not_in_connections"].values()), \
            f"{c['file']}: decoded packets neither in a connection nor counted"
        assert c["connections"] == int((a.connections["capture"] == label).sum()) if len(a.connections) \
            else c["connections"] == 0
        assert raw["file"] == c["file"]


@pytest.mark.parametrize("name", ["loopback-local", "cluster-ok", "mixed", "any-backend-cluster"])
def test_summary_of_samples_is_the_contract(sample_analyses, name):
    a = sample_analyses[name]
    s = a.summary()
    validate_summary(s)
    _check_accounting(a, samples_dir() / name)
    assert s["inputs"]["not_read"] == []  # the lab writes nothing natlens ignores
    # round trip through strict JSON is lossless
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_summary_of_edge_bundles(edges):
    got = {}
    for name, d in edges.items():
        a = analyze(d)
        s = a.summary()
        validate_summary(s)
        _check_accounting(a, d)
        got[name] = (a, s)

    a, s = got["no-vip-traffic"]
    # cluster/ names the VIP; 34 TCP connections in the capture, none to it: zeros, no rows, nulls
    assert s["connections"] == {"total": 0, "failed": 0, "timeouts": 0, "resets": 0, "unknown": 0}
    assert s["snat"] == [] and s["loopback"] == {"hits": 0, "failed": 0, "by_node": {}}
    assert all(d == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
               for d in s["latency_ms"].values())
    assert "198.19.0.10:80/tcp" in s["verdict"]["headline"] and "34 connection records" in s["verdict"]["headline"]
    assert {x["file"] for x in s["inputs"]["not_read"]} == {
        "nodes/node-1/notes.txt", "nodes/node-1/eth1.pcap.gz", "nodes/stray.pcap",
        "cluster/endpoints.json", "README.txt"}
    assert any("not read" in x and "notes.txt" in x for x in s["inputs"]["inferred"])

    a, s = got["no-cluster-no-dumps"]
    assert any("no load-balancer VIP known" in x for x in s["inputs"]["inferred"])
    cap = {c["file"]: c for c in s["inputs"]["captures"]}
    assert cap["nodes/n/any.pcap"]["not_in_connections"] == {"icmp": 2, "icmpv6": 2}
    # 9 with the client's record, 1 mid-stream without it: counted and named as such
    assert s["connections"]["total"] == 10 and s["verdict"]["loopback_detected"] is False
    assert any(x.startswith("1 connection seen without the client's own record") for x in s["inputs"]["inferred"])

    a, s = got["icmp-only"]
    assert s["inputs"]["captures"][0]["not_in_connections"] == {"icmp": 8}
    assert s["connections"]["total"] == 0 and s["snat"] == []

    a, s = got["empty-capture"]
    cap = {c["file"]: c for c in s["inputs"]["captures"]}
    assert cap["nodes/n/eth0.pcap"] == {"node": "n", "file": "nodes/n/eth0.pcap", "records": 0, "decoded": 0,
                                        "skipped": {}, "skipped_bytes": {}, "anomalies": {}, "connections": 0,
                                        "not_in_connections": {}}

    a, s = got["syn-only"]
    assert s["connections"] == {"total": 2, "failed": 2, "timeouts": 2, "resets": 0, "unknown": 0}
    assert all(d["count"] == 0 and d["p50"] is None for d in s["latency_ms"].values())
    (row,) = s["snat"]
    assert (row["service"], row["policy"], row["connections"], row["snat"], row["ratio"]) == \
        ("198.19.0.10:80/tcp", "Local", 2, 0, 0.0)
    assert row["predicted_by_rules"] is None  # no iptables-save dump: the rules cannot say
    cap = {c["file"]: c for c in s["inputs"]["captures"]}
    assert cap["nodes/node-1/icmp.pcap"]["not_in_connections"] == {"icmp": 1}

    a, s = got["no-snat-evidence"]
    (row,) = s["snat"]
    assert (row["connections"], row["snat"], row["ratio"]) == (2, 0, None)
    assert (a.journeys["snat"] == "unknown").all()


# --- tables ------------------------------------------------------------------------

CONNECTION_COLUMNS = [
    "ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "duration",
    "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
    "resp_pkts", "resp_ip_bytes", "capture", "node", "iface", "vlan", "vni",
    "client_isn", "server_isn", "syn_ts", "synack_ts", "ack_ts", "ack_pure", "pure_ack_seen",
    "handshake_rtt", "connect", "syn_retransmits", "first_byte", "end", "established", "ts_ns", "last_ts",
    "orig_dir", "orig_ip_id", "orig_tsval", "orig_hash", "orig_ttl", "orig_seq", "resp_ack",
    "icmp_ts", "icmp_type", "icmp_code", "icmp_src", "icmp_quotes", "icmp_errors",
]
JOURNEY_COLUMNS = [
    "journey", "ts", "client_node", "client_h", "client_p", "client_is_node", "host_network",
    "host_network_evidence", "service", "vip", "vport", "proto",
    "policy", "snat", "snat_to", "snat_evidence", "node_dnat", "node_dnat_evidence", "lb_backend",
    "lb_backend_evidence",
    "loopback", "loopback_evidence", "outcome", "outcome_evidence", "established",
    "handshake_ms", "connect_ms", "first_byte_ms", "syn_retransmits", "latency_from", "path",
    "hops", "captures", "client_uid", "uids", "hop_list",
]

RECORD_COLUMNS = [*CONNECTION_COLUMNS, "journey", "ts_corr", "point"]


def _documented(doc: str, columns: list[str]) -> list[str]:
    return [c for c in columns if not re.search(rf"(?<!\w){re.escape(c)}(?!\w)", doc)]


def test_column_lists_are_pinned_and_documented():
    """Changing a column is a contract change: update this list, the docs and the schema version."""
    assert connections_mod.COLUMNS == CONNECTION_COLUMNS
    assert journeys_mod.JOURNEY_COLUMNS == JOURNEY_COLUMNS
    assert journeys_mod.RECORD_COLUMNS == RECORD_COLUMNS
    assert _documented(connections_mod.__doc__, CONNECTION_COLUMNS) == []
    assert _documented(journeys_mod.__doc__, JOURNEY_COLUMNS) == []
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert _documented(readme, CONNECTION_COLUMNS) == []
    names = [n for n, _, _ in PACKET_COLUMNS]
    assert len(names) == len(set(names)) and "ts_ns" in names and "ts" not in names


def test_tables_have_the_pinned_columns_and_time_types(sample_analyses):
    a = sample_analyses["mixed"]
    assert list(a.connections.columns) == CONNECTION_COLUMNS
    assert list(a.journeys.columns) == JOURNEY_COLUMNS + FAILURE_COLUMNS
    failed = a.journeys["outcome"].isin(["reset", "timed out"])
    assert a.journeys.loc[failed, FAILURE_COLUMNS].notna().all().all()
    assert a.journeys.loc[~failed, FAILURE_COLUMNS].isna().all().all()
    assert set(a.journeys.loc[failed, "failure"]) <= set(FAILURES)
    hops = a.journey_hops(a.loopback["journey"].iloc[0])
    assert hops["ts_ns"].is_monotonic_increasing and (hops["ts"] == hops["ts_ns"] / 1e9).all()
    for df in (a.connections, a.journeys, hops):
        for c in df.columns:
            if c == "ts" or c.endswith("_ts"):  # float seconds since the epoch
                assert pd.api.types.is_float_dtype(df[c]), c
                assert df[c].dropna().between(1e9, 4e9).all(), c
            if c.endswith("_ns"):
                assert df[c].dtype == "int64", c
    c = a.connections
    assert (c["ts_ns"] // 1000 == (c["ts"] * 1e6).round().astype("int64")).mean() > 0.99
    # journeys: every hop with its addresses; the client's hop starts from the original 5-tuple
    for j in a.journeys.itertuples():
        assert len(j.hop_list) == len(j.uids) == j.hops
        assert any(f"{j.client_h}:{j.client_p} -> {j.vip}:{j.vport}" in h for h in j.hop_list)
    assert set(a.journeys["snat"]) <= {"yes", "no", "unknown"}
    assert set(a.journeys["loopback"]) <= {"yes", "no", "unknown"}
    assert set(a.journeys["outcome"]) <= {"established", "reset", "timed out", "unknown", "answered",
                                        "unanswered"}
    assert a.journeys["snat_evidence"].notna().all() and a.journeys["loopback_evidence"].notna().all()


# --- the verdict -------------------------------------------------------------------------


def test_verdict_words_numbers_and_remediation(sample_analyses):
    s = sample_analyses["cluster-ok"].summary()
    v = s["verdict"]
    assert v["loopback_detected"] is False and v["remediation"] == []
    # the lab's slow path leads: the SYN-ACK held inside a node, between its bridge and its NIC
    assert v["headline"] == ("10 of 20 connections: the SYN-ACK took 574-759 ms (5 from node-1/any (cni0) to "
                             "node-1/eth0; 5 from node-2/any (cni0) to node-2/eth0). All 20 connections were "
                             "established; no load-balancer loopback seen")
    assert v["root_cause"].startswith("The time went between node-1/any (cni0) -> node-1/eth0; node-2/any "
                                      "(cni0) -> node-2/eth0: inside the node")
    assert v["problem"]["kind"] == "synack-delayed" and v["problem"]["count"] == 10
    assert "20 of 20 connections SNATed to the node IP" in v["root_cause"]

    a = sample_analyses["mixed"]
    s = a.summary()
    v = s["verdict"]
    lb = a.journeys[a.journeys["loopback"] == "yes"]
    assert set(lb["service"]) == {"198.19.0.10:80/tcp"}
    n_local = int((a.journeys["service"] == "198.19.0.10:80/tcp").sum())
    assert v["headline"].startswith(f"{s['connections']['failed']} of {s['connections']['total']} connections "
                                    f"failed: {s['loopback']['failed']} load-balancer loopbacks; ")
    assert "the loopbacks are node-1's connections to" in v["headline"]
    assert f"sent back to node-1 ({len(lb)} of its {n_local})" in v["headline"]
    # the Service that loops back is named (namespace/name from cluster/, and its VIP); not the other
    assert "default/web-local (198.19.0.10:80/tcp)" in v["headline"]
    assert "web-cluster" not in v["headline"] and "198.19.0.11" not in v["headline"]
    assert "externalTrafficPolicy Local" in v["root_cause"]
    assert "No loopback for Service default/web-cluster" in v["root_cause"]
    text = " ".join(v["remediation"])
    for must in ("externalTrafficPolicy: Cluster", "SNAT pod-to-VIP", "AWS NLB", "client IP preservation",
                 "Azure", "Alibaba", "Tencent TKE", "ClusterIP"):
        assert must in text, must
    assert not re.search(r"\bnan\b|\bNone\b|\bNaN\b", v["headline"] + v["root_cause"] + text)


def test_any_backend_verdict_root_cause_mechanism_and_remediation(sample_analyses):
    """An LB that sends a node's own SNATed connection back to it (an AWS NLB with client IP
    preservation): the verdict says so, tells the martian drop, and offers no fix it refutes."""
    a = sample_analyses["any-backend-cluster"]
    s = a.summary()
    v = s["verdict"]
    gt = [json.loads(x) for x in (samples_dir() / "any-backend-cluster" / "ground-truth" / "connections.jsonl")
          .read_text().splitlines()]
    failed = sum(c["outcome"] == "failed" for c in gt)
    assert (v["lb_behaviour"], v["lb_failure_mode"]) == ("any-backend", "dropped-on-arrival")
    assert v["headline"].startswith(f"{failed} of {len(gt)} connections failed: {failed} load-balancer loopbacks;")
    root = v["root_cause"]
    assert f"the load balancer still sent {failed} of {len(gt)} of them back to node-1" in root
    assert "martian source" in root and "externalTrafficPolicy Cluster, which SNATs, does not fix it" in root
    assert "so the load balancer sees the pod's own IP" not in root  # the TKE mechanism is not this one
    assert "KUBE-MARK-MASQ" not in root
    steps = " ".join(v["remediation"])
    assert "externalTrafficPolicy: Cluster" not in steps and "SNAT pod-to-VIP" not in steps
    assert "web-cluster.default.svc.cluster.local:80" in steps and "client IP preservation" in steps
    (lb,) = s["lb_behaviour"]
    assert lb["node_source"] == {"to_source_node": failed, "of": len(gt)}
    assert lb["loops"] == {"dropped-on-arrival": failed}
