"""Length checks like tcpdump's: an ICMP/ICMPv6 message shorter than its 8-byte header per
the IP length is malformed (never read from the Ethernet padding after it), and an IPv6
payload length of 0 is a Jumbo Payload (RFC 2675), a BIG TCP packet, an empty payload or
malformed, as tcpdump's print-ip6.c decides."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference

from natlens.capture import read_capture
from natlens.capture.write import write_pcap

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
T0 = 1_700_000_000 * 10**9
MACS = b"\x02" * 6 + b"\x04" * 6
SRC6, DST6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")


def ipv4(payload: bytes, proto: int, total: int | None = None) -> bytes:
    total = 20 + len(payload) if total is None else total
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 7, 0, 64, proto, 0,
                       bytes([198, 18, 0, 1]), bytes([198, 19, 0, 2])) + payload


def ipv6(payload: bytes, nxt: int, plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return struct.pack(">IHBB", 0x60000000, plen, nxt, 64) + SRC6 + DST6 + payload


def ether(l3: bytes, etype: int, padding: bytes) -> bytes:
    """An Ethernet frame padded to the 60-byte minimum with `padding`'s bytes, and
    `padding` after it when the frame is longer (a trailer, as some NICs leave)."""
    frame = MACS + struct.pack(">H", etype) + l3
    fill = max(60 - len(frame), len(padding))
    return frame + (padding * (fill // max(len(padding), 1) + 1))[:fill]


def read(tmp_path, frames, snaplen: int = 262144):
    """Read the frames written as a pcap; the independent reference decoder must agree
    on the tally and the length fields (the corpus of test_differential has none of
    these shapes)."""
    path = tmp_path / "l.pcap"
    write_pcap(path, [(T0 + i, f) for i, f in enumerate(frames)], snaplen=snaplen)
    cap = read_capture(path)
    rows, tally, _ = reference(path)
    assert cap.info.skipped == dict(tally)
    fields = ["ip_len", "proto", "payload_len", "icmp_type", "icmp_code"]
    have = cap.packets[fields].astype(object).where(cap.packets[fields].notna(), None)
    assert have.to_dict("records") == [{k: r[k] for k in fields} for r in rows]
    return cap


TCP = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x10, 1000, 0, 0)


@SETTINGS
@given(v6=st.booleans(), n=st.integers(0, 12), body=st.binary(min_size=12, max_size=12),
       padding=st.binary(min_size=1, max_size=24))
def test_short_icmp_is_malformed_not_read_from_padding(tmp_path, v6, n, body, padding):
    msg = body[:n]
    l3 = ipv6(msg, 58) if v6 else ipv4(msg, 1)
    cap = read(tmp_path, [ether(l3, 0x86DD if v6 else 0x0800, padding)])
    if n < 8:
        assert cap.info.skipped == {"malformed": 1} and cap.info.decoded == 0
        return
    assert cap.info.skipped == {} and cap.info.decoded == 1
    row = cap.packets.iloc[0]
    assert (row["proto"], row["ip_len"]) == ((58, 40 + n) if v6 else (1, 20 + n))
    assert (row["icmp_type"], row["icmp_code"]) == (msg[0], msg[1])


@SETTINGS
@given(v6=st.booleans(), n=st.integers(0, 12), kept=st.integers(0, 3),
       padding=st.binary(min_size=1, max_size=8))
def test_icmp_cut_by_the_snaplen(tmp_path, v6, n, kept, padding):
    """Fewer than 4 ICMP bytes captured: snaplen-truncated when the IP length says the
    message is long enough, malformed when even the IP length says it is too short."""
    msg = bytes([8, 0]) + b"\x01" * (n - 2) if n >= 2 else b"\x08" * n
    l3 = ipv6(msg, 58) if v6 else ipv4(msg, 1)
    frame = ether(l3, 0x86DD if v6 else 0x0800, padding)
    cap = read(tmp_path, [frame], snaplen=14 + (40 if v6 else 20) + kept)
    assert cap.info.skipped == {"malformed" if n < 8 else "snaplen-truncated": 1}


def hbh(nxt: int, options: bytes) -> bytes:
    """A hop-by-hop header holding `options`, padded (Pad1 / PadN) to a multiple of 8."""
    rest = -(2 + len(options)) % 8
    pad = b"\x00" if rest == 1 else (b"\x01" + bytes([rest - 2]) + b"\0" * (rest - 2) if rest else b"")
    body = options + pad
    return bytes([nxt, (2 + len(body)) // 8 - 1]) + body


leading = st.sampled_from([b"", b"\x00", b"\x00\x00\x00", b"\x01\x00", b"\x01\x02\0\0"])


@SETTINGS
@given(value=st.integers(65536, 2**32 - 1), pre=leading, data=st.binary(min_size=0, max_size=40),
       padding=st.binary(min_size=1, max_size=8))
def test_valid_jumbo_payload_gives_the_length(tmp_path, value, pre, data, padding):
    header = hbh(6, pre + b"\xc2\x04" + struct.pack(">I", value))
    l3 = ipv6(header + TCP + data, 0, plen=0)
    cap = read(tmp_path, [ether(l3, 0x86DD, padding)])
    assert cap.info.skipped == {} and cap.info.decoded == 1
    row = cap.packets.iloc[0]
    assert (row["ip_len"], row["proto"], row["sport"]) == (40 + value, 6, 40000)
    assert row["payload_len"] == value - len(header) - 20


@SETTINGS
@given(kind=st.sampled_from(["small", "optlen2", "optlen6", "none", "overrun"]),
       value=st.integers(0, 65535), pre=leading, nxt=st.sampled_from([6, 17, 58]),
       padding=st.binary(min_size=1, max_size=8))
def test_hop_by_hop_without_a_valid_jumbo_option_is_malformed(tmp_path, kind, value, pre, nxt,
                                                              padding):
    option = {"small": b"\xc2\x04" + struct.pack(">I", value),
              "optlen2": b"\xc2\x02\0\0", "optlen6": b"\xc2\x06" + struct.pack(">I", 100000) + b"\0\0",
              "none": b"\x05\x02\0\0", "overrun": b"\x01\x20"}[kind]
    header = hbh(nxt, pre + option)
    l3 = ipv6(header + TCP + b"x" * 30, 0, plen=0)
    cap = read(tmp_path, [ether(l3, 0x86DD, padding)])
    assert cap.info.skipped == {"malformed": 1} and cap.info.decoded == 0


@SETTINGS
@given(nxt=st.sampled_from([6, 17, 58, 59, 60]), data=st.binary(min_size=0, max_size=40),
       padding=st.binary(min_size=1, max_size=8))
def test_zero_payload_length_without_hop_by_hop(tmp_path, nxt, data, padding):
    """TCP/UDP: a BIG TCP packet, the length is the captured bytes; No Next Header: an
    empty packet; ICMPv6 and an extension header: nothing to hold them, malformed."""
    transport = {6: TCP, 17: struct.pack(">HHHH", 5000, 53, 0, 0), 58: b"\x80\0\0\0\0\1\0\1",
                 59: b"", 60: b"\x06\x00" + b"\0" * 6}[nxt]
    l3 = ipv6(transport + data, nxt, plen=0)
    frame = ether(l3, 0x86DD, padding)
    cap = read(tmp_path, [frame])
    if nxt in (58, 60):
        assert cap.info.skipped == {"malformed": 1}
        return
    assert cap.info.skipped == {} and cap.info.decoded == 1
    row = cap.packets.iloc[0]
    if nxt == 59:
        assert (row["ip_len"], row["proto"]) == (40, 59)
        return
    ip_len = len(frame) - 14  # the capture decides, trailer included, as for IPv4 GSO
    assert (row["ip_len"], row["proto"]) == (ip_len, nxt)
    assert row["payload_len"] == ip_len - 40 - (20 if nxt == 6 else 8)


@SETTINGS
@given(proto=st.sampled_from([1, 6, 17, 47]), data=st.binary(min_size=8, max_size=40),
       padding=st.binary(min_size=1, max_size=8))
def test_ipv4_total_length_zero_is_presumed_tso_only_for_tcp_and_udp(tmp_path, proto, data, padding):
    transport = {6: TCP, 17: struct.pack(">HHHH", 5000, 53, 0, 0)}.get(proto, b"")
    l3 = ipv4(transport + data, proto, total=0)
    frame = ether(l3, 0x0800, padding)
    cap = read(tmp_path, [frame])
    if proto not in (6, 17):
        assert cap.info.skipped == {"malformed": 1}
        return
    assert cap.info.decoded == 1
    assert cap.packets.iloc[0]["ip_len"] == len(frame) - 14
