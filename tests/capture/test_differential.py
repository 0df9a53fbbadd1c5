"""natlens against the independent dpkt-based reference (reference.py), field by field,
over every Zeek trace and every generated corpus file."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest
from corpus import build
from reference import FIELDS, reference

from natlens.capture import read_capture

COMPARED = ["record", "ts_ns", "linktype", "iface", "caplen", "wirelen", *FIELDS]


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("corpus"))


def compare(path: Path, chunk_bytes: int | None = None) -> None:
    kw = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    cap = read_capture(path, **kw)
    rows, tally, records = reference(path)
    info = cap.info
    assert info.records == records
    only = set(cap.packets["record"]) ^ {r["record"] for r in rows}
    assert not only, f"{path.name}: records a row in only one decoder: {sorted(only)}"
    assert info.skipped == dict(tally), path.name
    assert info.decoded == len(rows) == len(cap.packets)
    assert info.records == info.decoded + sum(info.skipped.values())
    got = cap.packets[COMPARED].astype(object).where(cap.packets[COMPARED].notna(), None)
    mismatches = []
    for want, have in zip(rows, got.to_dict("records"), strict=True):
        diff = {k: (have[k], want[k]) for k in COMPARED if have[k] != want[k]}
        if diff:
            mismatches.append((want["record"], diff))
    assert not mismatches, f"{path.name}: (record, {{field: (natlens, reference)}}): {mismatches[:5]}"


def test_zeek_traces(zeek_traces):
    files = sorted(p for p in zeek_traces.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert len(files) >= 8
    for path in files:
        compare(path)


CORPUS = ["eth-us-le", "eth-us-be", "eth-ns-le", "eth-ns-be", "eth-snap64", "eth-snap54", "sll",
          "sll2", "raw", "multi-le", "multi-be"]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus(corpus_files, name):
    compare(corpus_files[name])


@pytest.mark.parametrize("name", ["eth-ns-le", "multi-be"])
def test_corpus_tiny_chunks(corpus_files, name):
    """Records straddle chunk boundaries everywhere: same result as one chunk."""
    compare(corpus_files[name], chunk_bytes=97)


def test_corpus_covers_every_case(corpus_files):
    """The corpus really exercises what the differential claims to compare."""
    pk = read_capture(corpus_files["multi-le"]).packets
    assert set(pk["linktype"].unique()) == {1, 101, 113, 276}
    assert set(pk["tunnel"].dropna().unique()) == {"vxlan", "geneve", "ipip"}
    assert set(pk["direction"].dropna().unique()) == {"in", "out"}
    assert {4789, 8472, 6081} <= set(pk["outer_dport"].dropna().unique())
    assert pk["tsval"].notna().any() and pk["vlan_inner"].notna().any()
    assert pk["ifindex"].notna().any() and (pk["pkttype"] == 4).any()
    assert set(pk["proto"].dropna().unique()) >= {1, 6, 17, 58, 59}


def test_corpus_covers_icmp_quotes(corpus_files):
    """ICMP errors quote TCP and UDP over IPv4 and IPv6, whole and cut short; echo messages
    whose data looks like a quote stay unread, so the differential compares every case."""
    pk = read_capture(corpus_files["eth-ns-le"]).packets
    icmp = pk[pk["proto"].isin([1, 58])]
    quoted = icmp[icmp["icmp_orig_src"].notna()]
    assert set(quoted["icmp_orig_proto"]) == {6, 17}
    assert set(quoted["icmp_type"]) >= {1, 2, 3, 4, 5, 11, 12}
    assert {":" in a for a in quoted["icmp_orig_src"]} == {True, False}
    assert quoted["icmp_orig_seq"].notna().any() and quoted["icmp_orig_sport"].notna().any()
    assert (quoted["icmp_orig_sport"].notna() & quoted["icmp_orig_seq"].isna()
            & (quoted["icmp_orig_proto"] == 6)).any()  # cut after 4 transport bytes
    assert (quoted["icmp_orig_sport"].isna()).any()  # a later fragment's quote: no ports
    syn = quoted[quoted["icmp_orig_seq"] == 0x01020304].iloc[0]
    assert (syn["icmp_orig_src"], syn["icmp_orig_dst"], syn["icmp_orig_sport"], syn["icmp_orig_dport"]) == \
        ("198.18.0.1", "198.19.0.2", 40000, 80)
    echo = icmp[icmp["icmp_type"].isin([0, 8, 128])]
    assert len(echo) >= 4 and echo["icmp_orig_src"].isna().all()
    # the error types whose quote is cut inside the IP header or is not IPv4 have nothing
    assert (icmp["icmp_type"].isin([1, 2, 3, 4, 5, 11, 12]) & icmp["icmp_orig_src"].isna()).sum() >= 4
    cut = read_capture(corpus_files["eth-snap64"]).packets
    assert (cut["icmp_orig_src"].notna() & cut["icmp_orig_sport"].isna()).any()


def test_pcap_times_agree_with_dpkt(corpus_files, zeek_traces):
    """dpkt's float timestamps agree with ts_ns to within float precision."""
    for path in [corpus_files["eth-us-be"], corpus_files["eth-ns-le"],
                 *sorted(zeek_traces.rglob("*.pcap"))]:
        with open(path, "rb") as fh:
            want = [ts for ts, _ in dpkt.pcap.Reader(fh)]
        cap = read_capture(path)
        have = cap.packets.set_index("record")["ts_ns"]
        for rec, ns in have.items():
            assert abs(ns / 1e9 - float(want[rec])) < 1e-6
