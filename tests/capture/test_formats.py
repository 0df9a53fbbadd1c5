"""File formats, timestamps, lossless accounting, the ingest CLI and Parquet output."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import numpy as np
import pyarrow.parquet as pq
import pytest
from corpus import T0, build, eth, ip4, ip6, sll, sll2, tcp, timestamps, udp

from natlens.capture import read_capture, write_parquet
from natlens.capture import walk as walker
from natlens.capture.pcap import HEADER_LEN
from natlens.capture.write import Interface, write_pcap, write_pcapng

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("corpus"))


def _frames(n: int) -> list[bytes]:
    return [eth(ip4(tcp(sport=1000 + i, flags=0x10, data=bytes([i]) * (i % 50)), 6, id=i))
            for i in range(n)]


# ------------------------------------------------------------------ timestamps


@pytest.mark.parametrize("ns", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_magic_variants_known_times(tmp_path, ns, big):
    frames = _frames(20)
    ts = timestamps(len(frames))
    path = tmp_path / "x.pcap"
    write_pcap(path, zip(ts, frames, strict=True), nanosecond=ns, big_endian=big)
    cap = read_capture(path)
    want = ts if ns else [t // 1000 * 1000 for t in ts]
    assert cap.packets["ts_ns"].tolist() == want
    assert cap.packets["sport"].tolist() == list(range(1000, 1020))
    assert cap.info.format == "pcap" and cap.info.linktypes == [1]
    assert (cap.info.first_ts_ns, cap.info.last_ts_ns) == (want[0], want[-1])


def test_pcapng_per_interface_resolution(tmp_path):
    """Each interface keeps its own if_tsresol (and if_tsoffset): exact ns values."""
    ifaces = [Interface(1, 6), Interface(1, 9), Interface(101, 0x80 | 20), Interface(1, 3),
              Interface(1, 9, tsoffset=1_000_000_000), Interface(1, 0x80 | 40, tsoffset=T0 // 10**9)]
    t = T0 + 987_654_321
    pkts = [(i, t, eth(ip4(udp(sport=i + 1), 17)) if i != 2 else ip4(udp(sport=3), 17))
            for i in range(len(ifaces))]
    path = tmp_path / "res.pcapng"
    write_pcapng(path, ifaces, pkts)
    got = read_capture(path).packets.set_index("iface")["ts_ns"].to_dict()
    assert got[0] == t // 1000 * 1000  # microseconds
    assert got[1] == t  # nanoseconds
    assert got[2] == ((t << 20) // 10**9) * 10**9 >> 20  # 2^-20 s, floored both ways
    assert got[3] == t // 10**6 * 10**6  # milliseconds
    assert got[4] == t  # offset of 10^9 s removed by the writer, added back by the reader
    assert abs(got[5] - t) <= 1  # 2^-40 s: finer than a ns


def test_dpkt_pcapng_gets_multi_resolution_wrong(files):
    """Why natlens reads pcapng itself: dpkt 1.9.8 applies one resolution to all
    interfaces, so packets of the ns / 2^-20 / ms interfaces land years off."""
    path = files["multi-le"]
    cap = read_capture(path).packets
    with open(path, "rb") as fh:
        dpkt_ts = [float(ts) for ts, _ in dpkt.pcapng.Reader(fh)]
    ours = cap.set_index("record")
    off_by_far = [r for r in ours.index if abs(dpkt_ts[r] - ours.loc[r, "ts_ns"] / 1e9) > 1]
    by_iface = ours.loc[off_by_far, "iface"].unique().tolist()
    assert set(by_iface) == {1, 2, 3}  # every interface but the first is read wrong by dpkt
    # ... while natlens has every packet within the corpus' time span
    assert ours["ts_ns"].between(T0 - 10**9, T0 + 10**12).all()


def test_directions_pkttype_ifindex(files):
    """SLL pkttype (4 = outgoing) and SLL2 ifindex survive; pcapng epb_flags give direction."""
    pk = read_capture(files["sll2"]).packets
    assert pk["ifindex"].isin([1, 2, 3]).all()
    assert ((pk["pkttype"] == 4) == (pk["direction"] == "out")).all()
    assert pk["direction"].notna().all()
    ng = read_capture(files["multi-le"]).packets
    eth0 = ng[ng["iface"] == 0]
    # corpus: epb_flags cycle None, 1 (in), 2 (out), 0 over the Ethernet records
    assert set(eth0["direction"].dropna()) == {"in", "out"} and eth0["direction"].isna().any()
    assert (ng[ng["iface"] == 2]["direction"] == "in").all()
    assert ng[ng["iface"] == 3]["pkttype"].notna().all()


def test_vlan_and_qinq(files):
    pk = read_capture(files["eth-ns-le"]).packets
    tagged = pk[pk["vlan"].notna()]
    pairs = {(int(v), None if i is None else int(i))
             for v, i in zip(tagged["vlan"], tagged["vlan_inner"].astype(object).where(
                 tagged["vlan_inner"].notna(), None), strict=True)}
    # 802.1Q; 802.1ad + 802.1Q (QinQ, VLAN 4095); three tags 0x9100/0x8100/0x8100 (outer two kept);
    # a VLAN-tagged frame inside (untagged) VXLAN: `vlan` describes the captured frame, so null
    assert pairs == {(100, None), (300, 4095), (1, 2)}
    inner_tagged = pk[(pk["tunnel"] == "vxlan") & (pk["vni"] == 5)]
    assert len(inner_tagged) == 1 and inner_tagged["vlan"].isna().all()


def test_tunnels_keep_outer_fields(files):
    pk = read_capture(files["eth-ns-le"]).packets
    vx = pk[(pk["tunnel"] == "vxlan") & (pk["outer_dport"] == 4789) & (pk["vni"] == 123)].iloc[0]
    assert (vx["outer_src"], vx["outer_dst"], vx["outer_sport"]) == ("198.18.1.1", "198.18.1.2", 49000)
    assert (vx["src"], vx["dst"], vx["sport"], vx["dport"], vx["ttl"]) == ("10.0.0.1", "10.0.0.2", 1111, 2222, 9)
    v6 = pk[pk["outer_dport"] == 8472].iloc[0]
    assert (v6["vni"], v6["ip_version"], v6["src"]) == (0xFFFFFF, 6, "fd00::1")
    gn = pk[pk["tunnel"] == "geneve"]
    assert set(gn["vni"]) == {0xABCDE, 42} and (gn["sport"] == 1111).all()
    ii = pk[pk["tunnel"] == "ipip"]
    assert set(ii["outer_src"]) == {"198.18.3.1", "198.18.3.3", "2001:db8::a"}
    assert ii["outer_sport"].isna().all() and ii["vni"].isna().all()


# ------------------------------------------------------------------ lossless accounting


def test_payload_hash_independent_of_neighbours(tmp_path):
    """The same payload hashes the same whatever else is in the chunk (the hash is how
    pre- and post-NAT copies of one packet are paired across captures)."""
    short = eth(ip4(udp(data=b"hello"), 17))
    long_ = eth(ip4(udp(data=b"L" * 40), 17))
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_pcap(a, [(T0, short)])
    write_pcap(b, [(T0, short), (T0 + 1000, long_)])
    ha = read_capture(a).packets["payload_hash"].tolist()
    hb = read_capture(b).packets["payload_hash"].tolist()
    assert ha[0] == hb[0] and hb[0] != hb[1]


def test_snaplen_and_tally_invariant(files):
    for name, path in files.items():
        info = read_capture(path).info
        assert info.records == info.decoded + sum(info.skipped.values()), name
    snap = read_capture(files["eth-snap54"])
    assert snap.info.skipped["snaplen-truncated"] > 0
    assert (snap.packets["caplen"] <= 54).all()
    assert (snap.packets["wirelen"] >= snap.packets["caplen"]).all()


@pytest.mark.parametrize("chunk", [None, 50, 333])
def test_cut_short_pcap(tmp_path, chunk):
    """tcpdump killed mid-record: all complete records, one cut-short, a warning with
    the byte offset where the partial record starts."""
    frames = _frames(30)
    full = tmp_path / "full.pcap"
    write_pcap(full, zip(timestamps(30), frames, strict=True))
    data = full.read_bytes()
    start_of_last = len(data) - 16 - len(frames[-1])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: start_of_last + 16 + 5])
    kw = {"chunk_bytes": chunk} if chunk else {}
    cap = read_capture(cut, **kw)
    assert cap.info.decoded == 29 and cap.info.records == 30
    assert cap.info.skipped == {"cut-short": 1}
    assert cap.packets["sport"].tolist() == list(range(1000, 1029))
    assert len(cap.info.warnings) == 1 and f"@{start_of_last}:" in cap.info.warnings[0]


def test_cut_inside_record_header(tmp_path):
    frames = _frames(3)
    path = tmp_path / "hdr.pcap"
    write_pcap(path, zip(timestamps(3), frames, strict=True))
    data = path.read_bytes()
    path.write_bytes(data + b"\x01\x02\x03")  # 3 bytes of a next record header
    cap = read_capture(path)
    assert cap.info.decoded == 3 and cap.info.skipped == {"cut-short": 1}
    assert f"@{len(data)}:" in cap.info.warnings[0]


@pytest.mark.parametrize("chunk", [None, 64])
def test_cut_short_pcapng(files, tmp_path, chunk):
    data = files["multi-be"].read_bytes()
    whole = read_capture(files["multi-be"])
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-30])
    kw = {"chunk_bytes": chunk} if chunk else {}
    cap = read_capture(cut, **kw)
    assert cap.info.records == whole.info.records
    assert cap.info.skipped["cut-short"] == 1
    assert cap.info.decoded == whole.info.decoded - (1 if whole.packets["record"].iloc[-1]
                                                     == whole.info.records - 1 else 0)
    assert "cut short" in cap.info.warnings[0] and "@" in cap.info.warnings[0]


def test_pcapng_two_sections_of_different_byte_order(files, tmp_path):
    """A second Section Header Block resets interfaces and may switch byte order."""
    le, be = files["multi-le"], files["multi-be"]
    both = tmp_path / "both.pcapng"
    both.write_bytes(le.read_bytes() + be.read_bytes())
    for chunk in (None, 200):
        kw = {"chunk_bytes": chunk} if chunk else {}
        cap = read_capture(both, **kw)
        one = read_capture(le)
        assert cap.info.records == 2 * one.info.records
        assert cap.info.decoded == 2 * one.info.decoded
        assert cap.packets["ts_ns"].tolist() == 2 * one.packets["ts_ns"].tolist()
        assert cap.packets["src"].tolist() == 2 * one.packets["src"].tolist()


def test_pcapng_simple_packet_block_has_no_time(tmp_path):
    """SPB: no interface id (interface 0), no timestamp (null ts_ns), counted and decoded."""
    path = tmp_path / "spb.pcapng"
    frame = eth(ip4(udp(sport=7), 17))
    write_pcapng(path, [Interface(1)], [(0, T0, frame)])
    pad = b"\0" * (-len(frame) % 4)
    spb = struct.pack("<III", 3, 16 + len(frame) + len(pad), len(frame)) + frame + pad
    spb += struct.pack("<I", len(spb) + 4)
    path.write_bytes(path.read_bytes() + spb)
    cap = read_capture(path)
    assert cap.info.records == 2 and cap.info.decoded == 2
    assert cap.packets["ts_ns"].isna().tolist() == [False, True]
    assert cap.packets["sport"].tolist() == [7, 7]


def test_linktype_unknown_and_sll_nonip(tmp_path):
    path = tmp_path / "x.pcap"
    write_pcap(path, [(T0, b"\0" * 40)], linktype=147)
    cap = read_capture(path)
    assert cap.info.skipped == {"unknown-linktype": 1} and cap.info.decoded == 0
    path2 = tmp_path / "y.pcap"
    write_pcap(path2, [(T0, sll(b"\0" * 30, 0, etype=0x88CC)),
                       (T0, sll2(ip6(bytes(udp()), 17), 4, 9, etype=0x86DD))], linktype=113)
    cap2 = read_capture(path2)
    # the SLL2 frame read as SLL v1: its header fields land elsewhere, but it is counted
    assert cap2.info.records == 2 == cap2.info.decoded + sum(cap2.info.skipped.values())
    assert cap2.info.skipped.get("non-ip", 0) >= 1


# ------------------------------------------------------------------ walk


def test_walk_python_fallback_agrees_with_compiled(files):
    if walker._compiled is None:
        pytest.skip("compiled _walk not built")
    rng = np.random.default_rng(7)
    bufs = [np.frombuffer(p.read_bytes(), np.uint8) for p in files.values()]
    bufs += [rng.integers(0, 256, n, dtype=np.uint8) for n in (0, 3, 17, 100, 4096)]
    for big_data in bufs:
        for start, lenpos, add, minlen, maxlen, align, stop in [
            (HEADER_LEN, 8, 16, 16, 1 << 24, 1, -1), (0, 4, 0, 12, 1 << 26, 4, 0x0A0D0D0A),
            (0, 0, 0, 1, 1 << 31, 1, -1), (5, 2, 3, 4, 1000, 2, 7),
        ]:
            for big in (False, True):
                for end in (len(big_data), len(big_data) // 2):
                    if start > end:
                        continue
                    view = memoryview(big_data)[:end]
                    out_c = np.empty(end + 1, np.int64)
                    out_p = np.empty(end + 1, np.int64)
                    c = walker._compiled.walk(view, start, lenpos, add, big, minlen, maxlen, align,
                                              stop, memoryview(out_c))
                    p = walker._walk_py(view, start, lenpos, add, big, minlen, maxlen, align, stop,
                                        out_p)
                    assert c == p
                    assert (out_c[: c[0]] == out_p[: p[0]]).all()


# ------------------------------------------------------------------ CLI and Parquet


def natlens(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib"))
    return subprocess.run([sys.executable, "-m", "natlens", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_errors(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pcap"
    text.write_text("hello, this is not a capture\n")
    short = tmp_path / "short.pcap"
    short.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    for bad, words in [(empty, "empty"), (text, "not a pcap"), (tmp_path, "directory"),
                       (tmp_path / "missing.pcap", "no such file"), (short, "cut short")]:
        r = natlens("ingest", str(bad), "--out", str(tmp_path / "out"), "--no-progress")
        assert r.returncode == 2, (bad, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("natlens: error:"), r.stderr
        assert str(bad) in lines[0] and words in lines[0]
        assert "Traceback" not in r.stderr


def test_cli_json_tally_and_parquet(files, tmp_path):
    out = tmp_path / "out"
    paths = [files["eth-snap54"], files["multi-le"]]
    r = natlens("ingest", *map(str, paths), "--out", str(out), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    tallies = json.loads(r.stdout)
    assert [t["label"] for t in tallies] == ["eth-snap54", "multi-le"]
    for t, path in zip(tallies, paths, strict=True):
        info = read_capture(path).info
        assert (t["records"], t["decoded"], t["skipped"]) == (info.records, info.decoded, info.skipped)
        assert t["records"] == t["decoded"] + sum(t["skipped"].values())
        assert json.loads((out / f"{t['label']}.tally.json").read_text())["skipped"] == info.skipped


def test_parquet_round_trip(files, tmp_path):
    for name in ("multi-be", "eth-us-le"):
        info = write_parquet(files[name], tmp_path, chunk_bytes=300)
        table = pq.read_table(tmp_path / f"{info.label}.packets.parquet")
        assert table.schema.metadata[b"schema"] == b"natlens.packets/3"
        mem = read_capture(files[name]).packets
        disk = table.to_pandas(types_mapper=__import__("pandas").ArrowDtype)
        assert list(disk.columns) == list(mem.columns)
        assert disk.dtypes.tolist() == mem.dtypes.tolist()
        assert disk.equals(mem)


def test_parquet_of_capture_without_ip(tmp_path):
    path = tmp_path / "arp.pcap"
    import corpus

    write_pcap(path, [(T0, corpus.eth(bytes(dpkt.arp.ARP()), 0x0806))])
    info = write_parquet(path, tmp_path / "o")
    table = pq.read_table(tmp_path / "o" / "arp.packets.parquet")
    assert table.num_rows == 0 and info.skipped == {"arp": 1}
    assert table.schema.metadata[b"schema"] == b"natlens.packets/3"


def test_packet_before_its_interface_block_is_malformed_at_any_chunk_size(tmp_path):
    """An EPB naming an interface whose IDB comes later in the file is counted malformed;
    before the fix the answer depended on where a chunk boundary fell."""
    path = tmp_path / "order.pcapng"
    frame = eth(ip4(udp(), 17))
    write_pcapng(path, [Interface(1), Interface(1)], [(0, T0, frame), (1, T0, frame)])
    d = path.read_bytes()
    shb, idb0, idb1, rest = d[:28], d[28:48], d[48:68], d[68:]
    path.write_bytes(shb + idb0 + rest + idb1)
    for chunk in [None, *range(60, 260, 8)]:
        kw = {"chunk_bytes": chunk} if chunk else {}
        info = read_capture(path, **kw).info
        assert (info.decoded, info.skipped) == (1, {"malformed": 1}), chunk


def test_reading_with_python_walk_equals_compiled(files, monkeypatch, tmp_path):
    """The whole read, not just the walk, is the same without the compiled helper."""
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(files["multi-be"].read_bytes()[:-9])
    paths = [files["eth-ns-le"], files["multi-le"], cut]
    want = [read_capture(p, chunk_bytes=200) for p in paths]
    monkeypatch.setattr(walker, "_compiled", None)
    monkeypatch.setattr(walker, "_warned", True)
    for p, w in zip(paths, want, strict=True):
        got = read_capture(p, chunk_bytes=200)
        assert got.info.to_dict() == w.info.to_dict()
        assert got.packets.equals(w.packets)


def test_pcapng_statistics_blocks_give_the_packets_the_host_dropped(tmp_path):
    from natlens.capture.write import Interface, write_pcapng

    frame = bytes(14)  # content does not matter here
    path = tmp_path / "stats.pcapng"
    # Statistics are cumulative: the last block of an interface counts, not the sum.
    write_pcapng(path, [Interface(1), Interface(1)], [(0, 1_000, frame), (1, 2_000, frame)],
                 statistics=[(0, 3, 0), (0, 7, 1), (1, 0, 2)])
    info = read_capture(path).info
    assert info.dropped == 7 + 1 + 2
    assert info.other_blocks == {"interface-statistics": 3}
    assert info.records == 2


def test_pcap_does_not_know_its_drops(files):
    assert read_capture(files["eth-us-le"]).info.dropped is None


def test_a_tally_that_cannot_be_written_leaves_no_table(tmp_path, zeek_traces):
    from natlens.errors import NatlensError

    (tmp_path / "get.tally.json").mkdir()  # the table is written, then the tally cannot be
    with pytest.raises(NatlensError, match=r"get\.tally\.json: cannot write: Is a directory$"):
        write_parquet(zeek_traces / "http-get" / "get.pcap", tmp_path, overwrite=True)
    assert not (tmp_path / "get.packets.parquet").exists() and (tmp_path / "get.tally.json").is_dir()
