"""A varied packet corpus built with dpkt, written with natlens.capture.write.

Each frame is built from dpkt objects (or by hand where dpkt has no class: SLL2,
VXLAN, Geneve) so the corpus does not depend on the decoder under test. `build(dir)`
writes it as pcap in all four magic/byte-order variants, per link type, snaplen-cut,
and as pcapng with several interfaces of different link types and timestamp
resolutions (10^-6, 10^-9, 10^-3, 2^-20) and epb_flags directions.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt

from natlens.capture.write import Interface, write_pcap, write_pcapng

T0 = 1_700_000_000_123_456_789  # ns; every packet i is at T0 + i * STEP
STEP = 1_001_001_001
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"


def v4(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, a)


def v6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


def tcp(sport=40000, dport=80, flags=dpkt.tcp.TH_SYN, opts=b"", data=b"", seq=0xFFFFFFF0,
        ack=0x12345678, win=64240) -> dpkt.tcp.TCP:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=win,
                     opts=opts, data=data)
    t.off = (20 + len(opts)) // 4
    return t


def udp(sport=53000, dport=53, data=b"q" * 12) -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, data=data, ulen=8 + len(data))


def ip4(payload, p, src="198.18.0.1", dst="198.19.0.2", id=4242, ttl=63, off=0, opts=b"") -> bytes:
    pkt = dpkt.ip.IP(src=v4(src), dst=v4(dst), p=p, id=id, ttl=ttl, data=payload, opts=opts)
    pkt.hl = (20 + len(opts)) // 4
    pkt._flags_offset = off
    pkt.len = 20 + len(opts) + len(bytes(payload))
    return bytes(pkt)


def ip6(payload: bytes, nxt: int, src="2001:db8::1", dst="2001:db8::2", hlim=60) -> bytes:
    hdr = struct.pack(">IHBB", 0x60000000, len(payload), nxt, hlim) + v6(src) + v6(dst)
    return hdr + payload


def eth(l3: bytes, etype=0x0800, tags=()) -> bytes:
    """Ethernet with VLAN tags given as (tpid, vid), outermost first."""
    out = MAC_B + MAC_A
    for tpid, vid in tags:
        out += struct.pack(">HH", tpid, vid)
    return out + struct.pack(">H", etype) + l3


def sll(l3: bytes, pkttype: int, etype=0x0800) -> bytes:
    return struct.pack(">HHH8sH", pkttype, 1, 6, MAC_A + b"\0\0", etype) + l3


def sll2(l3: bytes, pkttype: int, ifindex: int, etype=0x0800) -> bytes:
    return struct.pack(">HHiHBB8s", etype, 0, ifindex, 1, pkttype, 6, MAC_A + b"\0\0") + l3


def vxlan(inner: bytes, vni: int, flags=0x08) -> bytes:
    return struct.pack(">B3sI", flags, b"\0\0\0", vni << 8) + inner


def geneve(inner: bytes, vni: int, ptype: int, opts: bytes = b"") -> bytes:
    return struct.pack(">BBHI", len(opts) // 4, 0, ptype, vni << 8) + opts + inner


# TCP option blocks, in the orders real stacks (and odd ones) use.
TS = struct.pack(">BBII", 8, 10, 0xDEADBEEF, 0x01020304)
OPT_LINUX_SYN = struct.pack(">BBH", 2, 4, 1460) + b"\x04\x02" + TS + b"\x01" + b"\x03\x03\x07"
OPT_NOP_NOP_TS = b"\x01\x01" + TS
OPT_TS_FIRST = TS + struct.pack(">BBH", 2, 4, 1400) + b"\x01\x01"
OPT_SACK_THEN_TS = b"\x01\x01" + struct.pack(">BBII", 5, 10, 1, 2) + b"\x01\x01" + TS
OPT_TS_AFTER_EOL = b"\x00" + b"\x01" + TS + b"\x00"  # RFC 793: nothing after EOL counts
OPT_BAD_TS_LEN = struct.pack(">BBII", 8, 9, 7, 7) + b"\x00\x00"  # kind 8 but length 9: not a TS


def ip_packets() -> list[tuple[str, bytes, int]]:
    """(name, L3 bytes, ethertype) of IP-level packets used on every link type."""
    big = bytes(range(256)) * 2
    out = [
        ("tcp-syn-linux-opts", ip4(tcp(opts=OPT_LINUX_SYN), 6), 0x0800),
        ("tcp-ack-nop-nop-ts", ip4(tcp(flags=0x10, opts=OPT_NOP_NOP_TS, data=b"hello"), 6), 0x0800),
        ("tcp-no-opts-payload", ip4(tcp(flags=0x18, data=big[:100]), 6, ttl=1), 0x0800),
        ("tcp-ts-first", ip4(tcp(flags=0x12, opts=OPT_TS_FIRST, seq=0), 6), 0x0800),
        ("tcp-sack-ts", ip4(tcp(flags=0x10, opts=OPT_SACK_THEN_TS, data=big[:7]), 6), 0x0800),
        ("tcp-ts-after-eol", ip4(tcp(flags=0x11, opts=OPT_TS_AFTER_EOL), 6), 0x0800),
        ("tcp-bad-ts-len", ip4(tcp(flags=0x04, opts=OPT_BAD_TS_LEN), 6), 0x0800),
        ("tcp-all-flags", ip4(tcp(flags=0x1FF, data=b"x"), 6), 0x0800),
        ("udp", ip4(udp(), 17, id=0), 0x0800),
        ("udp-empty", ip4(udp(data=b""), 17), 0x0800),
        ("icmp-echo", ip4(dpkt.icmp.ICMP(type=8, code=0, data=b"\0\1\0\1ping"), 1), 0x0800),
        ("icmp-unreach", ip4(dpkt.icmp.ICMP(type=3, code=3, data=b"\0" * 8), 1), 0x0800),
        *icmp_errors(),
        ("ipv4-options", ip4(tcp(opts=OPT_NOP_NOP_TS), 6, opts=b"\x01\x01\x01\x00"), 0x0800),
        ("ipv4-df", ip4(udp(), 17, off=0x4000), 0x0800),
        ("ipv4-frag-first", ip4(udp(data=b"a" * 32), 17, off=0x2000), 0x0800),
        ("ipv4-frag-later", ip4(b"b" * 24, 17, off=0x0004), 0x0800),
        ("ipv4-bad-ihl", b"\x44" + ip4(udp(), 17)[1:], 0x0800),
        ("tcp-bad-doff", ip4(bytes(tcp())[:12] + b"\x40" + bytes(tcp())[13:], 6), 0x0800),
        ("udp-bad-len", ip4(bytes(udp())[:4] + b"\x00\x05" + bytes(udp())[6:], 17), 0x0800),
        ("ipv4-bad-version", b"\x55" + ip4(udp(), 17)[1:], 0x0800),
        ("ipv6-tcp", ip6(bytes(tcp(opts=OPT_LINUX_SYN)), 6), 0x86DD),
        ("ipv6-udp", ip6(bytes(udp(dport=443)), 17, hlim=255), 0x86DD),
        ("icmpv6-echo", ip6(bytes(dpkt.icmp6.ICMP6(type=128, code=0, data=b"\0\1\0\1")), 58), 0x86DD),
        # hop-by-hop (8 bytes) -> routing (24 bytes) -> destination options (16 bytes) -> UDP
        ("ipv6-ext-chain", ip6(bytes([43, 0]) + b"\x01\x04\0\0\0\0"
                               + bytes([60, 2, 0, 1]) + b"\0" * 4 + v6("2001:db8::9")
                               + bytes([17, 1]) + b"\x01\x0c" + b"\0" * 12
                               + bytes(udp(dport=5353)), 0), 0x86DD),
        # atomic fragment (offset 0, M=0): not really a fragment, decoded
        ("ipv6-atomic-frag", ip6(struct.pack(">BBHI", 6, 0, 0, 0x1234) + bytes(tcp(dport=22)), 44),
         0x86DD),
        ("ipv6-frag-first", ip6(struct.pack(">BBHI", 17, 0, 1, 0x99) + bytes(udp()), 44), 0x86DD),
        ("ipv6-frag-later", ip6(struct.pack(">BBHI", 17, 0, 0x10, 0x99) + b"z" * 16, 44), 0x86DD),
        ("ipv6-no-next", ip6(b"", 59), 0x86DD),
        ("ipv6-ext-overrun", ip6(bytes([17, 3]) + b"\0" * 6, 0), 0x86DD),  # says 32 bytes, has 8
        ("arp", bytes(dpkt.arp.ARP()), 0x0806),
        ("lldp", b"\x02\x07\x04" + MAC_A + b"\0" * 20, 0x88CC),
    ]
    # Tunnels: outer IPv4/UDP, inner Ethernet or IP.
    inner_tcp = ip4(tcp(sport=1111, dport=2222, flags=0x10, opts=OPT_NOP_NOP_TS, data=b"in"), 6,
                    src="10.0.0.1", dst="10.0.0.2", id=7, ttl=9)
    inner_v6 = ip6(bytes(udp(sport=5, dport=6, data=b"inner6")), 17, src="fd00::1", dst="fd00::2")
    out += [
        ("vxlan-4789", ip4(udp(sport=49000, dport=4789, data=vxlan(eth(inner_tcp), 123)), 17,
                           src="198.18.1.1", dst="198.18.1.2"), 0x0800),
        ("vxlan-8472-v6", ip4(udp(sport=49001, dport=8472, data=vxlan(eth(inner_v6, 0x86DD), 0xFFFFFF)),
                              17, src="198.18.1.3", dst="198.18.1.4"), 0x0800),
        ("vxlan-inner-vlan", ip4(udp(sport=49002, dport=4789,
                                     data=vxlan(eth(inner_tcp, tags=[(0x8100, 77)]), 5)), 17), 0x0800),
        ("vxlan-inner-arp", ip4(udp(dport=4789, data=vxlan(eth(bytes(dpkt.arp.ARP()), 0x0806), 5)),
                                17), 0x0800),
        ("vxlan-no-i-flag", ip4(udp(dport=4789, data=vxlan(eth(inner_tcp), 5, flags=0)), 17), 0x0800),
        ("geneve-eth-opts", ip4(udp(sport=6000, dport=6081,
                                    data=geneve(eth(inner_tcp), 0xABCDE, 0x6558,
                                                opts=b"\x01\x02\x03\x01" + b"\xAA" * 4)),
                                17, src="198.18.2.1", dst="198.18.2.2"), 0x0800),
        ("geneve-ipv4", ip4(udp(sport=6001, dport=6081, data=geneve(inner_tcp, 42, 0x0800)), 17),
         0x0800),
        ("geneve-unknown-proto", ip4(udp(dport=6081, data=geneve(b"\0" * 20, 1, 0x8847)), 17), 0x0800),
        ("ipip", ip4(inner_tcp, 4, src="198.18.3.1", dst="198.18.3.2"), 0x0800),
        ("ipv6-in-ipv4", ip4(inner_v6, 41, src="198.18.3.3", dst="198.18.3.4"), 0x0800),
        ("ipv6-in-ipv6", ip6(inner_v6, 41, src="2001:db8::a", dst="2001:db8::b"), 0x86DD),
    ]
    return out


def icmp4(kind: int, code: int, quote: bytes, **ip) -> bytes:
    """An ICMP message whose 4 bytes after the checksum are zero, then `quote`."""
    return ip4(dpkt.icmp.ICMP(type=kind, code=code, data=b"\0" * 4 + quote), 1, **ip)


def icmp_errors() -> list[tuple[str, bytes, int]]:
    """ICMP/ICMPv6 errors quoting TCP and UDP packets, whole or cut short, and messages
    that are not errors (their data is never read as a quote)."""
    client, node = {"src": "198.18.0.1", "dst": "198.19.0.2"}, {"src": "198.19.0.2", "dst": "198.18.0.1"}
    syn = ip4(tcp(opts=OPT_LINUX_SYN, seq=0x01020304), 6, **client)
    dns = ip4(udp(sport=53001), 17, **client)
    v6_syn = ip6(bytes(tcp(sport=40001, dport=443, opts=OPT_LINUX_SYN, seq=7)), 6)
    return [
        # kube-proxy's REJECT: port unreachable quoting the whole SYN (Linux quotes up to 576 bytes)
        ("icmp-port-unreach-syn", icmp4(3, 3, syn, **node), 0x0800),
        # host unreachable quoting the IP header + 8 bytes (RFC 792's minimum) of a UDP datagram
        ("icmp-host-unreach-udp", icmp4(3, 1, dns[:28], src="198.19.0.254", dst="198.18.0.1"), 0x0800),
        # time exceeded quoting an IP header with options and the first 8 bytes of a TCP segment
        ("icmp-time-exceeded", icmp4(11, 0, ip4(tcp(flags=0x10, seq=0xFFFFFFFF, data=b"x" * 40), 6,
                                                 opts=b"\x01\x01\x01\x00", **client)[:32],
                                     src="198.19.0.1", dst="198.18.0.1"), 0x0800),
        # a quote cut after 4 transport bytes: ports, no sequence number
        ("icmp-quote-4-transport", icmp4(3, 3, syn[:24], **node), 0x0800),
        # a quote cut inside the IP header, one of an IPv6 header, one of a later fragment
        ("icmp-quote-ip-cut", icmp4(3, 3, syn[:19], **node), 0x0800),
        ("icmp-quote-not-v4", icmp4(3, 3, v6_syn[:48], **node), 0x0800),
        ("icmp-quote-later-frag", icmp4(3, 3, ip4(b"b" * 24, 17, off=0x0004, **client), **node), 0x0800),
        # redirect, source quench, parameter problem
        ("icmp-redirect", icmp4(5, 1, dns, **node), 0x0800),
        ("icmp-source-quench", icmp4(4, 0, syn[:28], **node), 0x0800),
        ("icmp-param-problem", icmp4(12, 0, dns, **node), 0x0800),
        # an echo request and reply whose data looks like a quote: not errors, not read
        ("icmp-echo-ip-like", icmp4(8, 0, syn, **client), 0x0800),
        ("icmp-echo-reply-ip-like", icmp4(0, 0, syn, **node), 0x0800),
        # ICMPv6: port unreachable quoting UDP, packet too big quoting TCP, time exceeded cut
        # short, an echo request
        ("icmpv6-port-unreach", ip6(bytes(dpkt.icmp6.ICMP6(type=1, code=4, data=b"\0" * 4
                                                           + ip6(bytes(udp(dport=5353)), 17))), 58,
                                    src="2001:db8::2", dst="2001:db8::1"), 0x86DD),
        ("icmpv6-too-big", ip6(bytes(dpkt.icmp6.ICMP6(type=2, code=0, data=b"\0\0\x05\xdc" + v6_syn)), 58,
                               src="2001:db8::fe", dst="2001:db8::1"), 0x86DD),
        ("icmpv6-time-exceeded-cut", ip6(bytes(dpkt.icmp6.ICMP6(type=3, code=0, data=b"\0" * 4 + v6_syn[:39])),
                                         58, src="2001:db8::fe", dst="2001:db8::1"), 0x86DD),
        ("icmpv6-echo-ip-like", ip6(bytes(dpkt.icmp6.ICMP6(type=128, code=0, data=b"\0" * 4 + v6_syn)), 58),
         0x86DD),
    ]


def ethernet_frames() -> list[tuple[str, bytes]]:
    """Ethernet frames: every IP packet, VLAN-tagged variants, padding, runts."""
    frames = [(name, eth(l3, et)) for name, l3, et in ip_packets()]
    l3 = dict((n, (b, e)) for n, b, e in ip_packets())
    b, e = l3["tcp-ack-nop-nop-ts"]
    frames += [
        ("vlan-8021q", eth(b, e, tags=[(0x8100, 100)])),
        ("qinq-88a8", eth(l3["udp"][0], 0x0800, tags=[(0x88A8, 300), (0x8100, 4095)])),
        ("qinq-triple", eth(l3["ipv6-udp"][0], 0x86DD, tags=[(0x9100, 1), (0x8100, 2), (0x8100, 3)])),
        ("vlan-arp", eth(l3["arp"][0], 0x0806, tags=[(0x8100, 5)])),
        # a 20-byte IP packet padded to the 60-byte Ethernet minimum: padding is not payload
        ("eth-padded", eth(ip4(tcp(flags=0x10), 6), 0x0800) + b"\xEE" * 6),
        ("udp-padded", eth(ip4(udp(data=b"ab"), 17), 0x0800) + b"\xEE" * 12),
        ("udp-len-past-ip", eth(ip4(bytes(udp(data=b"ab"))[:4] + b"\x00\x20"
                                    + bytes(udp(data=b"ab"))[6:], 17)) + b"\xEE" * 40),
        # a quote that ends with the IP packet: the trailer after it is not quoted bytes
        ("icmp-quote-then-trailer", eth(icmp4(3, 3, ip4(tcp(), 6)[:24], src="198.19.0.2",
                                              dst="198.18.0.1")) + b"\xEE" * 24),
        ("eth-runt", MAC_B + MAC_A[:4]),
        ("ipv4-cut", eth(ip4(udp(), 17))[:14 + 12]),  # not snaplen: the record itself is short
        ("llc-8023", MAC_B + MAC_A + struct.pack(">H", 38) + b"\x42\x42\x03" + b"\0" * 35),
    ]
    return frames


def timestamps(n: int) -> list[int]:
    return [T0 + i * STEP for i in range(n)]


def build(out: Path) -> dict[str, Path]:
    """Write the corpus files into `out`; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    frames = [f for _, f in ethernet_frames()]
    ts = timestamps(len(frames))
    for ns in (False, True):
        for big in (False, True):
            name = f"eth-{'ns' if ns else 'us'}-{'be' if big else 'le'}"
            files[name] = out / f"{name}.pcap"
            write_pcap(files[name], zip(ts, frames, strict=True), nanosecond=ns, big_endian=big)
    # Snaplen: the writer cuts every frame at 64 bytes and keeps the original length.
    files["eth-snap64"] = out / "eth-snap64.pcap"
    write_pcap(files["eth-snap64"], zip(ts, frames, strict=True), snaplen=64, nanosecond=True)
    files["eth-snap54"] = out / "eth-snap54.pcap"
    write_pcap(files["eth-snap54"], zip(ts, frames, strict=True), snaplen=54, nanosecond=True)

    ipp = ip_packets()
    sll_frames = [sll(b, i % 5, e) for i, (_, b, e) in enumerate(ipp)]
    sll2_frames = [sll2(b, (i + 2) % 5, 1 + i % 3, e) for i, (_, b, e) in enumerate(ipp)]
    raw_frames = [b for _, b, e in ipp if e in (0x0800, 0x86DD)]
    for name, linktype, fr in (("sll", 113, sll_frames), ("sll2", 276, sll2_frames),
                               ("raw", 101, raw_frames)):
        files[name] = out / f"{name}.pcap"
        write_pcap(files[name], zip(timestamps(len(fr)), fr, strict=True), linktype=linktype,
                   nanosecond=True)

    # pcapng: four interfaces, four link types, four clocks, directions in epb_flags.
    ifaces = [Interface(1, 6, "eth0"), Interface(276, 9, "any"), Interface(101, 0x80 | 20, "tun0"),
              Interface(113, 3, "any1")]
    packets = []
    for i, frame in enumerate(frames):
        packets.append((0, ts[i], frame, [None, 1, 2, 0][i % 4]))
    for i, frame in enumerate(sll2_frames):
        packets.append((1, T0 + 17 + i * 333_333_333, frame))
    for i, frame in enumerate(raw_frames):
        packets.append((2, T0 + i * 777_777_777, frame, 1))
    for i, frame in enumerate(sll_frames[:8]):
        packets.append((3, T0 + i * 5_000_000, frame, 2))
    packets.sort(key=lambda p: p[1])
    for big in (False, True):
        name = f"multi-{'be' if big else 'le'}"
        files[name] = out / f"{name}.pcapng"
        write_pcapng(files[name], ifaces, packets, big_endian=big)
    return files
