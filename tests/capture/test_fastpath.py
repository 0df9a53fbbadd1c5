"""The compiled one-pass decode of the common packet (capture.fastpath) is a shortcut: every
table and tally it helps make equals the numpy decoders' alone, on the corpus (every link
type, tunnel, fragment, option layout and snaplen cut) and on generated Ethernet/IPv4/TCP|UDP
frames whose lengths, offsets and options disagree in every way."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from corpus import build, eth, ip4, tcp, udp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import fastpath, read_table
from natlens.capture.write import write_pcap

pytestmark = pytest.mark.skipif(fastpath._compiled is None,
                                reason="the compiled fast path (natlens.capture._ipv4) was not built")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def both(path, monkeypatch):
    """(table, info) with the fast path, and with the numpy decoders alone."""
    fast = read_table(path)
    with monkeypatch.context() as m:
        m.setattr(fastpath, "_compiled", None)
        slow = read_table(path)
    return fast, slow


def assert_same(fast, slow) -> None:
    (ft, fi), (st_, si) = fast, slow
    assert ft.schema == st_.schema
    for name in ft.schema.names:
        assert ft[name].equals(st_[name]), name
    assert (fi.records, fi.decoded, fi.skipped) == (si.records, si.decoded, si.skipped)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


def test_corpus_reads_the_same(corpus, monkeypatch):
    for name, path in corpus.items():
        try:
            assert_same(*both(path, monkeypatch))
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from e


def test_takes_the_common_packets_and_leaves_the_rest(corpus, monkeypatch):
    """It decodes untagged Ethernet/IPv4 TCP and UDP, and leaves VLAN, IPv6, ICMP, fragments,
    tunnels and other link types to the numpy decoders (so a change that made it take nothing,
    or take what it must not, fails here, not only in the bench)."""
    taken = []
    real = fastpath.decode

    def spy(f, rec):
        left = real(f, rec)
        taken.append((f.n - len(left), rec.linktype[np.setdiff1d(np.arange(f.n), left)]))
        return left

    monkeypatch.setattr(fastpath, "decode", spy)
    table, _ = read_table(corpus["eth-ns-le"])
    n_taken = sum(t for t, _ in taken)
    common = table.filter(_common(table)).num_rows
    assert n_taken == common > 0
    taken.clear()
    read_table(corpus["sll2"])
    assert sum(t for t, _ in taken) == 0


def _common(table: pa.Table):
    """Rows the fast path must take: untagged, untunnelled IPv4 TCP or UDP, not to a tunnel's
    port (whether that is a tunnel is tunnel.py's to decide)."""
    plain = pc.and_(pc.is_null(table["vlan"]), pc.is_null(table["tunnel"]))
    plain = pc.and_(plain, pc.invert(pc.fill_null(pc.is_in(table["dport"], value_set=pa.array([4789, 8472, 6081], "int32")), False)))
    v4 = pc.equal(table["ip_version"], 4)
    l4 = pc.is_in(table["proto"], value_set=pa.array([6, 17], "int16"))
    return pc.and_(pc.and_(plain, v4), pc.fill_null(l4, False))


@st.composite
def frames(draw):
    """An Ethernet/IPv4/TCP|UDP frame with any header lengths, options and trailer."""
    proto = draw(st.sampled_from([6, 17]))
    payload = draw(st.binary(max_size=80))
    if proto == 6:
        opts = draw(st.binary(max_size=40))
        opts += b"\0" * (-len(opts) % 4)
        seg = tcp(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)),
                  flags=draw(st.integers(0, 0x1FF)), opts=opts, data=payload,
                  seq=draw(st.integers(0, 2**32 - 1)), ack=draw(st.integers(0, 2**32 - 1)))
        l4 = bytearray(bytes(seg))
        if draw(st.booleans()):  # a data offset that disagrees with the options
            l4[12] = (draw(st.integers(0, 15)) << 4) | (l4[12] & 0x0F)
    else:
        l4 = bytearray(bytes(udp(sport=draw(st.integers(0, 65535)),
                                 dport=draw(st.sampled_from([53, 4789, 8472, 6081, 443])), data=payload)))
        if draw(st.booleans()):
            l4[4:6] = struct.pack(">H", draw(st.sampled_from([0, 1, 7, 8, len(l4), len(l4) + 1, 65535])))
    opts = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2]))
    pkt = bytearray(ip4(bytes(l4), proto, id=draw(st.integers(0, 65535)), ttl=draw(st.integers(0, 255)),
                        off=draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001])), opts=opts))
    if draw(st.booleans()):  # a total length that disagrees with the bytes
        pkt[2:4] = struct.pack(">H", draw(st.sampled_from([0, 19, 20, len(pkt) - 1, len(pkt) + 9, 65535])))
    if draw(st.booleans()):
        pkt[0] = draw(st.sampled_from([0x44, 0x45, 0x46, 0x4F, 0x65]))
    return eth(bytes(pkt)) + draw(st.binary(max_size=30)), draw(st.sampled_from([262144, 34, 40, 54, 60, 70]))


@SETTINGS
@given(st.lists(frames(), min_size=1, max_size=12))
def test_generated_frames_read_the_same(tmp_path, monkeypatch, batch):
    path = tmp_path / "gen.pcap"
    ts = 1_700_000_000_000_000_000
    # one file per snaplen of the batch's first frame: write_pcap cuts every frame at it
    write_pcap(path, [(ts + i, f) for i, (f, _) in enumerate(batch)], snaplen=batch[0][1], nanosecond=True)
    assert_same(*both(path, monkeypatch))
