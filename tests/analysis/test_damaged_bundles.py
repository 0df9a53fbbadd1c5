"""Evidence under imperfect captures: on damaged copies of the lab's bundles, the analysis
may know less, but never says the opposite of the ground truth.

Each case copies one sample (data/samples) to the test's tmp_path, damages the copy
(natlens.lab.damage: captures cut short, packets dropped, records with impossible lengths,
a late start, a node without
captures, a node's clock off, NIC-only) and analyzes it. For every client connection of
the ground truth that has a journey:

* outcome: "established" only if the client connected, "timed out"/"reset" only if it
  failed; "unknown" is always allowed;
* loopback, snat: "yes"/"no" as the ground truth has it, or "unknown";
* lb_backend: the node the load balancer picked (conntrack's), or None;
* connect_ms, where given: within 1 ms of the client's own connect() time; and given for a
  connected journey wherever a capture holds its whole handshake and every SYN.

A connection may have no journey when every capture of it was removed, but not while a
capture holding its client's SYN (client pod:port -> VIP:port) survives. The summary
never counts more failures than there were, and the verdict never says nothing failed
while an outcome is unknown. Where clocks are at stake (the lab's one-clock captures
as they are, one node's clock shifted) no journey's hops show an effect before its
cause. Every problem found is reported, with sample, damage, journey, natlens vs truth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from analysis_helpers import expected_failure, samples_dir

from natlens.capture import read_capture
from natlens.findings import analyze
from natlens.lab.damage import (
    bad_lengths,
    copy_bundle,
    cut,
    drop,
    late_start,
    nic_only,
    remove_captures,
    shift_clock,
)
from natlens.nodefiles import find_node_files

SAMPLES = ["loopback-local", "cluster-ok", "mixed", "nftables-local"]
SEED = 20240501
CONNECT_TOLERANCE_MS = 1.0
RETRY_GAP_NS = 500_000_000  # a client SYN this long after its first is a retransmission (Linux: 1 s)
NOTHING_FAILED = [re.compile(p, re.I) for p in (
    r"none of them failed", r"none failed", r"\bAll \d+ connections were established", r"No failure")]


@dataclass(frozen=True)
class Roles:
    """The sample's nodes by role (from ground-truth/lab.json)."""

    client: str  # the client pod's node
    endpoint: str  # a node with an endpoint of the Services, not the client's: the LB's other pick


def roles(sample_dir: Path) -> Roles:
    lab = json.loads((sample_dir / "ground-truth" / "lab.json").read_text())
    client = lab["client"]["node"]
    endpoint = next(p["node"] for p in lab["topology"]["pods"]
                    if p["role"] == "endpoint" and p["node"] != client)
    return Roles(client, endpoint)


def capture(d: Path, node: str, name: str) -> Path:
    return d / "nodes" / node / f"{name}.pcap"


def dropping(role: str, name: str, percent: int, d: Path, r: Roles) -> list:
    """A seeded `percent`% drop on the capture `name` of the node with `role`."""
    return [drop(capture(d, getattr(r, role), name), percent / 100, SEED)]


# damage id -> what it does to the copy `d`; returns what was done (Damage records or paths)
DAMAGES: dict[str, Callable[[Path, Roles], list]] = {
    "one-clock-unchanged": lambda d, r: [],
    "client-any-cut-50": lambda d, r: [cut(capture(d, r.client, "any"), 0.5)],
    "client-any-cut-80": lambda d, r: [cut(capture(d, r.client, "any"), 0.8)],
    "client-any-cut-80-mid-record": lambda d, r: [cut(capture(d, r.client, "any"), 0.8, mid_record=True)],
    "endpoint-eth0-cut-50-mid-record": lambda d, r: [
        cut(capture(d, r.endpoint, "eth0"), 0.5, mid_record=True)],
    **{f"client-any-drop-{p}": partial(dropping, "client", "any", p) for p in (5, 10, 20)},
    **{f"endpoint-eth0-drop-{p}": partial(dropping, "endpoint", "eth0", p) for p in (5, 10, 20)},
    "client-any-bad-lengths-2": lambda d, r: [bad_lengths(capture(d, r.client, "any"), 0.02, SEED)],
    "endpoint-eth0-bad-lengths-5": lambda d, r: [bad_lengths(capture(d, r.endpoint, "eth0"), 0.05, SEED)],
    "client-any-late-start-0.5s": lambda d, r: [late_start(capture(d, r.client, "any"), 0.5)],
    "client-node-no-captures": lambda d, r: remove_captures(d / "nodes" / r.client),
    "endpoint-node-no-captures": lambda d, r: remove_captures(d / "nodes" / r.endpoint),
    "endpoint-clock+2.5s": lambda d, r: shift_clock(d / "nodes" / r.endpoint, +2.5),
    "endpoint-clock-0.8s": lambda d, r: shift_clock(d / "nodes" / r.endpoint, -0.8),
    "nic-only": lambda d, r: nic_only(d),
}
CLOCK_CASES = {"one-clock-unchanged", "endpoint-clock+2.5s", "endpoint-clock-0.8s"}
CASES = [(s, dmg) for s in SAMPLES for dmg in DAMAGES if dmg != "nic-only"] + [
    ("loopback-local", "nic-only"), ("cluster-ok", "nic-only")]


# ---- what survived the damage -------------------------------------------------------------

def client_syns(d: Path) -> dict[tuple, list[str]]:
    """(src, sport, dst, dport) of every pure SYN in the bundle's captures -> captures holding it."""
    seen: dict[tuple, list[str]] = {}
    for node in sorted((d / "nodes").iterdir()):
        for cap in find_node_files(node).captures:
            p = read_capture(cap).packets
            p = p[(p["proto"] == 6) & ((p["tcp_flags"] & 0x12) == 0x02)]
            for key in set(zip(p["src"], p["sport"].astype(int), p["dst"], p["dport"].astype(int),
                               strict=True)):
                seen.setdefault(key, []).append(f"{node.name}/{cap.name}")
    return seen


# ---- the checks: each returns the problems it found, one line each ------------------------

def conn_name(t) -> str:
    return f"{t.src}:{t.sport} -> {t.dst}:{t.dport}"


def check_outcome(j, t) -> list[str]:
    """established <=> connected; timed out / reset => failed; unknown always allowed."""
    said, truth = j.outcome, t.outcome
    if said == "unknown" or (said in ("established", "timed out", "reset")
                             and (said == "established") == (truth == "connected")):
        return []
    why = f" ({t.error})" if truth == "failed" else ""
    return [f"outcome: natlens says {said!r}, the client {truth}{why}"]


def check_yes_no(j, t, column: str) -> list[str]:
    """loopback / snat: yes or no as the ground truth has it, or unknown."""
    said, truth = getattr(j, column), "yes" if bool(getattr(t, column)) else "no"
    if said == "unknown" or said == truth:
        return []
    return [f"{column}: natlens says {said!r}, ground truth {truth!r}"]


def check_lb_backend(j, t) -> list[str]:
    said = j.lb_backend
    if said is None or pd.isna(said) or said == t.lb_node:
        return []
    return [f"lb_backend: natlens says {said!r}, the LB's conntrack picked {t.lb_node!r}"]


def check_connect_ms(j, t) -> list[str]:
    """connect_ms, where natlens gives one, within 1 ms of the client's connect() time."""
    if pd.isna(j.connect_ms):
        return []
    if pd.isna(t.connect_s):
        return [f"connect_ms: natlens gives {j.connect_ms:.3f} ms, but the client's connect() "
                f"never completed ({t.outcome}, {t.error})"]
    want = t.connect_s * 1000
    if abs(j.connect_ms - want) <= CONNECT_TOLERANCE_MS:
        return []
    return [f"connect_ms: natlens gives {j.connect_ms:.3f} ms, the client measured {want:.3f} ms "
            f"(off by {j.connect_ms - want:+.3f} ms, more than {CONNECT_TOLERANCE_MS} ms)"]


def check_journeys(a, truth: pd.DataFrame, syns: dict[tuple, list[str]]) -> list[str]:
    """Per ground-truth connection: its journeys agree with the truth, and it has one if it must."""
    by_client = {k: g for k, g in a.journeys.groupby(["client_h", "client_p", "vip", "vport"])}
    problems = []
    for t in truth.itertuples():
        key = (t.src, t.sport, t.dst, t.dport)
        js = by_client.get(key)
        if js is None:
            if key in syns:
                problems.append(f"{conn_name(t)}: no journey, yet its client's SYN is in "
                                f"{', '.join(syns[key])}")
            continue
        for j in js.itertuples():
            found = (check_outcome(j, t) + check_yes_no(j, t, "loopback")
                     + check_yes_no(j, t, "snat") + check_lb_backend(j, t) + check_connect_ms(j, t)
                     + check_connect_given(a, j, t) + check_failure(j, t))
            problems += [f"{j.journey} ({conn_name(t)}): {p}" for p in found]
    return problems


def check_failure(j, t) -> list[str]:
    """A failed journey's mechanism is the ground truth's, or unknown (with its reason)."""
    if not isinstance(j.failure, str):
        return []
    want = expected_failure(t)
    if j.failure == want or (j.failure == "unknown" and j.failure_evidence):
        return []
    return [f"failure: natlens says {j.failure!r} ({j.failure_evidence}), ground truth {want!r}"]


def check_connect_given(a, j, t) -> list[str]:
    """Where a capture holds the packets (a record of the journey with the whole handshake and
    every SYN the journey's records saw), a connected journey has its connect time."""
    if t.outcome != "connected" or not pd.isna(j.connect_ms):
        return []
    r = a.records[a.records["journey"] == j.journey]
    full = r[r["connect"].notna() & (r["syn_retransmits"] >= r["syn_retransmits"].max())]
    if full.empty:
        return []
    return [f"connect_ms: none given, yet {', '.join(sorted(set(full['capture'])))} saw the whole handshake "
            f"(latency_from says {j.latency_from!r})"]


def check_summary(a, truth: pd.DataFrame) -> list[str]:
    """No more failures counted than there were; no "nothing failed" while an outcome is unknown."""
    s = a.summary()
    problems = []
    failed = int((truth["outcome"] == "failed").sum())
    if s["connections"]["failed"] > failed:
        problems.append(f"summary: connections.failed is {s['connections']['failed']}, "
                        f"but only {failed} of the {len(truth)} connections failed")
    unknown = a.journeys.loc[a.journeys["outcome"] == "unknown", "journey"].tolist()
    if unknown:
        for where, text in (("headline", s["verdict"]["headline"]),
                            ("root_cause", s["verdict"]["root_cause"]),
                            ("verdict.headline", a.verdict["headline"]),
                            ("verdict.root_cause", a.verdict["root_cause"])):
            hits = [m.group(0) for p in NOTHING_FAILED if (m := p.search(text or ""))]
            if hits:
                problems.append(f"{where} says {hits[0]!r} while {len(unknown)} journey(s) have an "
                                f"unknown outcome ({', '.join(unknown[:5])}): {text!r}")
    missed = sorted(set(truth.loc[truth["outcome"] == "failed", "src"].map(client_node_of(a))) - {None}
                    & set(s["inputs"]["uncaptured_nodes"]))
    for node in missed:  # failures natlens cannot see: the verdict must say why, first
        if not (s["verdict"]["evidence"] or "").startswith(f"{node} has no capture"):
            problems.append(f"verdict.evidence does not say first that {node}, where failed connections "
                            f"started, has no capture: {s['verdict']['evidence']!r}")
    return problems


def client_node_of(a) -> Callable[[str], str | None]:
    """The node of a client address, as the analysis's inventory places it."""
    return lambda ip: a.inventory.node_of(ip)


def check_snat_ratios(a, want: float) -> list[str]:
    rows = a.summary()["snat"]
    if not rows:
        return [f"summary: no SNAT row (ground truth: ratio {want})"]
    return [f"summary SNAT row {r['service']} from {r['source_node']}: ratio {r['ratio']!r} "
            f"({r['snat']} of {r['connections']}), ground truth {want}"
            for r in rows if r["ratio"] != want]


def check_causality(a, journey: str, client: tuple[str, int]) -> list[str]:
    """In one journey's hops (one clock, offsets subtracted) no effect comes before its cause.

    * nothing before the client's first SYN (the cause of every hop of the journey);
    * every capture point's first SYN-ACK before the client's first answer to it (its ACK,
      or its reset of a wrong SYN-ACK): the SYN-ACK the client answers passed every capture
      point on its way before the client could answer. Forward packets are those on one of
      the SYNs' 4-tuples (client -> server direction, before and after each NAT).
    """
    h = a.journey_hops(journey)
    if h.empty:
        return [f"{journey}: journey_hops is empty"]
    syn = h["flags"] == "S"
    mine = syn & (h["src"] == client[0]) & (h["sport"] == client[1])
    if not mine.any():
        return [f"{journey}: journey_hops holds no SYN from the client {client[0]}:{client[1]}"]
    first_syn = h.loc[mine, "ts_ns"].min()
    problems = [f"{journey}: {r.capture} {r.flags} {r.src}:{r.sport} -> {r.dst}:{r.dport} "
                f"({r.note}) at {r.ts_ns} is {(first_syn - r.ts_ns) / 1e6:.3f} ms before the "
                f"client's first SYN" for r in h[h["ts_ns"] < first_syn].head(3).itertuples()]
    fwd = set(zip(h.loc[syn, "src"], h.loc[syn, "sport"], h.loc[syn, "dst"], h.loc[syn, "dport"],
                  strict=True))
    on_fwd = pd.Series([k in fwd for k in zip(h["src"], h["sport"], h["dst"], h["dport"],
                                             strict=True)], index=h.index, dtype=bool)
    answer = on_fwd & ~h["flags"].str.contains("S") & h["flags"].str.contains("A|R")
    # the first attempt's SYN-ACKs only: a retransmitted SYN may take another way (another
    # endpoint), and its SYN-ACK comes after the client's answer to the first one
    retry = h.loc[mine & (h["ts_ns"] > first_syn + RETRY_GAP_NS), "ts_ns"]
    synack = (h["flags"] == "SA") & (h["ts_ns"] < (retry.min() if len(retry) else float("inf")))
    if answer.any() and synack.any():
        first = next(h[answer].sort_values("ts_ns").itertuples())
        for cap, ts in h[synack].groupby("capture")["ts_ns"].min().items():
            if ts > first.ts_ns:  # the same timestamp is not "before" (us-resolution captures)
                problems.append(
                    f"{journey}: the first SYN-ACK at {cap} (at {ts}) is {(ts - first.ts_ns) / 1e6:.3f} "
                    f"ms after the client's answer to it ({first.capture} {first.flags} "
                    f"{first.src}:{first.sport} -> {first.dst}:{first.dport} at {first.ts_ns}, "
                    f"{first.note})")
    return problems


# ---- the test ----------------------------------------------------------------------------

@pytest.mark.parametrize(("sample", "damage"), CASES, ids=[f"{s}/{d}" for s, d in CASES])
def test_damaged_bundle_never_contradicts_the_ground_truth(tmp_path, sample, damage):
    src = samples_dir() / sample
    d = copy_bundle(src, tmp_path / sample)
    did = DAMAGES[damage](d, roles(src))
    a = analyze(d)
    truth = pd.read_json(src / "ground-truth" / "connections.jsonl", lines=True)
    problems = check_journeys(a, truth, client_syns(d)) + check_summary(a, truth)
    if sample == "cluster-ok" and damage == "nic-only":
        problems += check_snat_ratios(a, 1.0)
    if damage in CLOCK_CASES:
        for j in a.journeys.itertuples():
            problems += check_causality(a, j.journey, (j.client_h, j.client_p))
    what = "; ".join(str(x) if not isinstance(x, Path) else f"removed {x.relative_to(d / 'nodes')}"
                     for x in did) or "nothing changed"
    assert not problems, (f"{sample} / {damage} ({what}): {len(problems)} contradictions of the "
                          "ground truth:\n  " + "\n  ".join(problems))


def test_records_with_impossible_lengths_are_said_with_the_journeys_they_hide(tmp_path):
    """Three records of the client's any.pcap get a 1 MiB length: the analysis reads on after
    each, counts them bad-length with their bytes, and names the time and the journeys
    that lost packets there, in the capture's limits and the summary's inputs."""
    src = samples_dir() / "loopback-local"
    d = copy_bundle(src, tmp_path / "s")
    r = roles(src)
    path = capture(d, r.client, "any")
    before = read_capture(path).info
    did = bad_lengths(path, 3 / before.records, SEED)
    assert len(did.removed) == 3
    a = analyze(d)
    s = a.summary()
    file = f"nodes/{r.client}/any.pcap"
    entry = next(c for c in s["inputs"]["captures"] if c["file"] == file)
    assert entry["records"] == before.records  # nothing after a bad record is lost
    assert entry["skipped"].get("bad-length") == sum(
        1 for i, k in enumerate(did.removed) if i == 0 or did.removed[i - 1] != k - 1)
    assert entry["skipped_bytes"]["bad-length"] > 0
    q = next(x for x in s["inputs"]["quality"] if x["file"] == file)
    assert q["damaged_bytes"] == entry["skipped_bytes"]["bad-length"]
    assert len(q["damaged"]) == entry["skipped"]["bad-length"]
    assert q["journeys_damaged"] and set(q["journeys_damaged"]) <= set(q["journeys_affected"])
    assert any("impossible record lengths were skipped" in x for x in q["limits"])
    # said first, in the verdict's evidence, with how many connections were open there
    assert (f"{file} holds {q['damaged_bytes']:,} unreadable bytes (impossible record lengths, skipped): "
            f"{len(q['journeys_damaged'])} connection") in s["verdict"]["evidence"]
    truth = pd.read_json(src / "ground-truth" / "connections.jsonl", lines=True)
    assert not check_journeys(a, truth, client_syns(d)) + check_summary(a, truth)
