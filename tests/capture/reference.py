"""An independent, packet-by-packet reference decoder of the packet-table fields.

Records come from a plain sequential struct reader (pcap, and pcapng with
per-interface if_tsresol/if_tsoffset, which dpkt 1.9.8 gets wrong); headers are
read with dpkt classes (Ethernet, VLAN tags, SLL, SLL2, IP, IP6, TCP, UDP, ICMP).
dpkt has no VXLAN or Geneve: their 8-byte headers are parsed here by hand and
dpkt reads the inner frame. Control flow (what is skipped, why) follows the
packets contract, written from the specs and not from natlens' code.

Deliberate differences from dpkt's own behaviour, and why:
- TCP options: dpkt.tcp.parse_opts keeps parsing after End-of-Option-List (kind 0);
  RFC 9293 says nothing after EOL is an option, so a TS option after EOL is absent.
- IPv6: dpkt treats ESP (50) as an extension header it can walk; it cannot be
  walked (its length is not in a header), so the protocol is 50.
- UDP: dpkt accepts a UDP length larger than the IP payload; the kernel drops such
  a datagram (udp_rcv "short packet"), so it counts as malformed.
- Ethernet: dpkt guesses at MPLS, Cisco ISL and Novell raw 802.3; only Ethernet II
  types and 802.1Q/802.1ad/0x9100 tags (up to 4) are read here.
- ICMP errors: dpkt.icmp parses the quoted packet as a whole IP packet and gives up
  on a short quote (RFC 792 only promises the header + 8 bytes); here the quoted
  header is read with dpkt's IP/IP6 header classes alone, and the ports and TCP
  sequence number from as many quoted bytes as there are.
- Lengths of 0 (tcpdump's rules): an IPv4 total length or IPv6 payload length of 0 is
  a GSO/TSO packet captured before segmentation only for TCP and UDP (length from the
  capture); an IPv6 payload length of 0 with a hop-by-hop header first takes its length
  from the Jumbo Payload option (RFC 2675: type 0xC2, length 4, value > 65535), and
  without a valid one is malformed; any other IPv6 payload length 0 means no payload.
  dpkt trusts the capture in every such case.
- ICMP/ICMPv6: a message shorter than 8 bytes per the IP length is malformed (RFC 792
  and RFC 4443 headers are 8 bytes; tcpdump's ICMP_MINLEN); dpkt reads padding as one.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from pathlib import Path

import dpkt

MASK64 = (1 << 64) - 1
MUL, MIX = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
IPV6_EXT = (0, 43, 60, 135, 139, 140, 253, 254, 44, 51)
GSO = (6, 17)  # protocols whose IP length 0 means "the capture holds it" (tcpdump)
# What an ICMP error quotes (natlens.packets/2): RFC 792 types 3 4 5 11 12, RFC 4443 1-4.
QUOTE_FIELDS = ["icmp_orig_src", "icmp_orig_dst", "icmp_orig_proto", "icmp_orig_sport",
                "icmp_orig_dport", "icmp_orig_seq"]
ICMP_ERRORS = {1: (3, 4, 5, 11, 12), 58: (1, 2, 3, 4)}
FIELDS = ["ifindex", "pkttype", "direction", "vlan", "vlan_inner", "tunnel", "outer_src",
          "outer_dst", "outer_sport", "outer_dport", "vni", "ip_version", "src", "dst", "ip_id",
          "ttl", "ip_len", "proto", "sport", "dport", "tcp_flags", "seq", "ack", "window", "tsval",
          "tsecr", "payload_len", "payload_hash", "icmp_type", "icmp_code", *QUOTE_FIELDS]
PACKET_LEVEL = ["ip_version", "src", "dst", "ip_id", "ttl", "ip_len", "proto", "sport", "dport",
                "tcp_flags", "seq", "ack", "window", "tsval", "tsecr", "payload_len",
                "payload_hash", "icmp_type", "icmp_code", *QUOTE_FIELDS]


class Skip(Exception):
    """The record is not a row; args[0] is the reason."""


# ---------------------------------------------------------------- records


def records(path: Path):
    """Yield dicts: ts_ns, linktype, iface, direction (epb_flags), caplen, wirelen, data."""
    data = Path(path).read_bytes()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data)
    else:
        yield from _pcap(data)


def _pcap(data: bytes):
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    unit = 1 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x03FFFFFF
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack_from(order + "IIII", data, pos)
        if pos + 16 + caplen > len(data):
            break
        yield dict(ts_ns=sec * 10**9 + frac * unit, linktype=linktype, iface=0, direction=None,
                   caplen=caplen, wirelen=wirelen, data=data[pos + 16: pos + 16 + caplen])
        pos += 16 + caplen


def _ns(units: int, tsresol: int, tsoffset: int) -> int:
    # exact integers: floor(units * 1e9 / 2^k) or floor(units * 1e9 / 10^k)
    div = 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    return units * 10**9 // div + tsoffset * 10**9


def _pcapng(data: bytes):
    pos, order, ifaces = 0, "<", []
    while pos + 12 <= len(data):
        btype = struct.unpack_from(order + "I", data, pos)[0]
        if btype == 0x0A0D0D0A:
            order = "<" if data[pos + 8: pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        length = struct.unpack_from(order + "I", data, pos + 4)[0]
        if pos + length > len(data):
            break
        body = data[pos + 8: pos + length - 4]
        if btype == 1:
            linktype, _, snaplen = struct.unpack_from(order + "HHI", body, 0)
            tsresol, tsoffset = 6, 0
            for code, value in _options(body[8:], order):
                if code == 9:
                    tsresol = value[0]
                elif code == 14:
                    tsoffset = struct.unpack(order + "q", value)[0]
            ifaces.append((linktype, tsresol, tsoffset))
        elif btype == 6:
            iface, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", body, 0)
            flags = None
            for code, value in _options(body[20 + (caplen + 3) // 4 * 4:], order):
                if code == 2:
                    flags = struct.unpack(order + "I", value)[0]
            linktype, tsresol, tsoffset = ifaces[iface]
            yield dict(ts_ns=_ns(hi << 32 | lo, tsresol, tsoffset), linktype=linktype, iface=iface,
                       direction={1: "in", 2: "out"}.get((flags or 0) & 3), caplen=caplen,
                       wirelen=wirelen, data=body[20: 20 + caplen])
        pos += length


def _options(raw: bytes, order: str):
    pos = 0
    while pos + 4 <= len(raw):
        code, length = struct.unpack_from(order + "HH", raw, pos)
        if code == 0:
            return
        yield code, raw[pos + 4: pos + 4 + length]
        pos += 4 + (length + 3) // 4 * 4


# ---------------------------------------------------------------- packets


def payload_hash(data: bytes) -> int | None:
    """The contract's payload hash, written out per byte: None for no bytes."""
    data = data[:32]
    if not data:
        return None
    h = len(data) * MUL & MASK64
    for word in range(0, 32, 8):  # always four rounds, missing bytes as zeros
        w = int.from_bytes(data[word: word + 8], "little")
        h = ((h ^ w) * MIX) & MASK64
        h ^= h >> 31
    return h


class Packet:
    """Decoding state of one record: the captured bytes and the fields found."""

    def __init__(self, data: bytes, cut: bool):
        self.data, self.cut = data, cut
        self.row: dict = dict.fromkeys(FIELDS)

    def need(self, pos: int, n: int) -> None:
        if pos + n > len(self.data):
            raise Skip("snaplen-truncated" if self.cut else "malformed")


def decode(rec: dict) -> dict:
    """The row of one record (all FIELDS), or raise Skip(reason)."""
    pk = Packet(rec["data"], rec["caplen"] < rec["wirelen"])
    pos, etype = link(pk, rec["linktype"])
    if rec["direction"] is not None:
        pk.row["direction"] = rec["direction"]
    if pk.row["pkttype"] is not None:
        pk.row["direction"] = "out" if pk.row["pkttype"] == 4 else "in"
    classify(etype)
    pos, ip_end = ip(pk, pos, etype)
    pos = transport(pk, pos, ip_end)
    tunnel(pk, pos)
    return pk.row


def link(pk: Packet, linktype: int) -> tuple[int, int]:
    d = pk.data
    if linktype == 1:
        pk.need(0, 14)
        return ethernet(pk, 0)
    if linktype == 113:
        pk.need(0, 16)
        s = dpkt.sll.SLL(d)
        pk.row["pkttype"] = _s8(s.type)
        return vlan_tags(pk, 16, s.ethtype)
    if linktype == 276:
        pk.need(0, 20)
        s = dpkt.sll2.SLL2(d)
        pk.row["pkttype"] = _s8(s.type)
        pk.row["ifindex"] = s.intindex
        return vlan_tags(pk, 20, s.ethtype)
    if linktype in (101, 12, 14):
        pk.need(0, 1)
        version = d[0] >> 4
        if version not in (4, 6):
            raise Skip("malformed")
        return 0, 0x0800 if version == 4 else 0x86DD
    raise Skip("unknown-linktype")


def _s8(x: int) -> int:
    x &= 0xFF
    return x - 256 if x > 127 else x


def ethernet(pk: Packet, pos: int, record_tags: bool = True) -> tuple[int, int]:
    pk.need(pos, 14)
    e = dpkt.ethernet.Ethernet.__new__(dpkt.ethernet.Ethernet)
    dpkt.Packet.unpack(e, pk.data[pos: pos + 14])  # the header only: no payload guessing
    return vlan_tags(pk, pos + 14, e.type, record_tags)


def vlan_tags(pk: Packet, pos: int, etype: int, record_tags: bool = True) -> tuple[int, int]:
    depth = 0
    while etype in VLAN_TPIDS:
        if depth == 4:
            raise Skip("malformed")
        pk.need(pos, 4)
        tag = dpkt.ethernet.VLANtag8021Q(pk.data[pos: pos + 4])
        if depth < 2 and record_tags:  # a tunnel's inner tags don't describe the captured frame
            pk.row["vlan" if depth == 0 else "vlan_inner"] = tag.id
        etype, pos, depth = tag.type, pos + 4, depth + 1
    return pos, etype


def classify(etype: int) -> None:
    if etype in (0x0806, 0x8035):
        raise Skip("arp")
    if etype not in (0x0800, 0x86DD):
        raise Skip("non-ip")


def ip(pk: Packet, pos: int, etype: int) -> tuple[int, int]:
    """Decode the IP header at pos; returns (transport start, end of the IP packet)."""
    d, row = pk.data, pk.row
    if etype == 0x0800:
        pk.need(pos, 20)
        hl = (d[pos] & 0x0F) * 4
        total = struct.unpack_from(">H", d, pos + 2)[0]
        if total == 0 and d[pos + 9] in GSO:
            total = len(d) - pos
        if d[pos] >> 4 != 4 or hl < 20 or total < hl:
            raise Skip("malformed")
        pk.need(pos, hl)
        h = dpkt.ip.IP(d[pos: pos + hl])
        row.update(ip_version=4, ip_id=h.id, ttl=h.ttl, ip_len=total, proto=h.p,
                   src=socket.inet_ntop(socket.AF_INET, h.src),
                   dst=socket.inet_ntop(socket.AF_INET, h.dst))
        if h.mf or h.offset:
            raise Skip("ip-fragment")
        return pos + hl, pos + total
    pk.need(pos, 40)
    if d[pos] >> 4 != 6:
        raise Skip("malformed")
    h = dpkt.ip6.IP6.__new__(dpkt.ip6.IP6)
    dpkt.Packet.unpack(h, d[pos: pos + 40])  # fixed header; extension headers walked below
    plen = h.plen or zero_plen(pk, pos, h.nxt)
    ip_end = pos + 40 + plen
    row.update(ip_version=6, ttl=h.hlim, ip_len=40 + plen,
               src=socket.inet_ntop(socket.AF_INET6, h.src),
               dst=socket.inet_ntop(socket.AF_INET6, h.dst))
    nh, pos = h.nxt, pos + 40
    for _ in range(8):
        if nh not in IPV6_EXT:
            row["proto"] = nh
            return pos, ip_end
        pk.need(pos, 8)
        if nh == 44:
            fh = dpkt.ip6.IP6FragmentHeader(d[pos: pos + 8])
            # natlens keeps the IPv6 fragment identification of an atomic fragment in ip_id
            # (the contract says null for IPv6: reported to the lead, mirrored here).
            row["ip_id"] = _s32(fh.id)
            if fh.frag_off or fh.m_flag:
                raise Skip("ip-fragment")
            length = 8
        elif nh == 51:
            length = (d[pos + 1] + 2) * 4
        else:
            length = (d[pos + 1] + 1) * 8
        nh, pos = d[pos], pos + length
        if pos > ip_end:
            raise Skip("malformed")
    raise Skip("malformed")


def zero_plen(pk: Packet, pos: int, nxt: int) -> int:
    """The payload length of an IPv6 header at pos whose Payload Length is 0: from the
    Jumbo Payload option of a hop-by-hop header right after it (RFC 2675 section 2), or,
    for TCP/UDP right after it, the captured bytes (a Linux BIG TCP packet without the
    jumbo header); otherwise the payload really is empty (RFC 8200: 59, No Next Header,
    with nothing after it is a whole packet). A hop-by-hop header without a valid Jumbo
    Payload option is malformed."""
    d = pk.data
    if nxt in GSO:
        return len(d) - pos - 40
    if nxt != 0:
        return 0
    pk.need(pos + 40, 8)
    hlen = (d[pos + 41] + 1) * 8
    pk.need(pos + 40, hlen)
    opts = d[pos + 42: pos + 40 + hlen]
    i = 0
    while i < len(opts):  # RFC 8200 4.2 TLVs: Pad1 is one byte, the rest type, length, data
        if opts[i] == 0:
            i += 1
            continue
        if i + 2 > len(opts) or i + 2 + opts[i + 1] > len(opts):
            break
        if opts[i] == 0xC2:
            (value,) = struct.unpack_from(">I", opts, i + 2) if opts[i + 1] == 4 else (0,)
            if value > 65535:
                return value
            break
        i += 2 + opts[i + 1]
    raise Skip("malformed")


def _s32(x: int) -> int:
    return x - (1 << 32) if x >= 1 << 31 else x


def transport(pk: Packet, pos: int, ip_end: int) -> int:
    """Decode TCP/UDP/ICMP at pos; returns where the transport payload starts."""
    d, row, proto = pk.data, pk.row, pk.row["proto"]
    if proto == 6:
        pk.need(pos, 20)
        doff = (d[pos + 12] >> 4) * 4
        if doff < 20 or pos + doff > ip_end:
            raise Skip("malformed")
        t = dpkt.tcp.TCP(d[pos: pos + 20])
        row.update(sport=t.sport, dport=t.dport, seq=t.seq, ack=t.ack, tcp_flags=t.flags,
                   window=t.win, payload_len=max(ip_end - pos - doff, 0))
        ts = tcp_timestamp(d[pos + 20: min(pos + doff, len(d))])
        if ts:
            row["tsval"], row["tsecr"] = ts
        row["payload_hash"] = payload_hash(d[pos + doff: min(ip_end, len(d))])
        return pos + doff
    if proto == 17:
        pk.need(pos, 8)
        u = dpkt.udp.UDP(d[pos: pos + 8])
        ulen = u.ulen or ip_end - pos
        if ulen < 8 or pos + ulen > ip_end:
            raise Skip("malformed")
        row.update(sport=u.sport, dport=u.dport, payload_len=ulen - 8,
                   payload_hash=payload_hash(d[pos + 8: pos + ulen]))
        return pos + 8
    if proto in (1, 58):
        if ip_end - pos < 8:
            raise Skip("malformed")
        pk.need(pos, 4)
        cls = dpkt.icmp.ICMP if proto == 1 else dpkt.icmp6.ICMP6
        i = cls(d[pos: pos + 4])
        row.update(icmp_type=i.type, icmp_code=i.code)
        if i.type in ICMP_ERRORS[proto]:
            # the quote: after the 8-byte ICMP header, up to the capture's or the IP length's end
            icmp_quote(row, d[pos + 8: min(ip_end, len(d))], 4 if proto == 1 else 6)
    return pos


def icmp_quote(row: dict, q: bytes, version: int) -> None:
    """The IP header (of the ICMP packet's own version) and TCP/UDP ports and TCP
    sequence number an ICMP error quotes, as far as the quote holds them."""
    if version == 4:
        if len(q) < 20 or q[0] >> 4 != 4 or (q[0] & 0x0F) < 5:
            return
        h = dpkt.ip.IP(q[:20])
        fam, src, dst, proto, t = socket.AF_INET, h.src, h.dst, h.p, (q[0] & 0x0F) * 4
        first = h.offset == 0  # a later fragment: no transport header in it
    else:
        if len(q) < 40 or q[0] >> 4 != 6:
            return
        h = dpkt.ip6.IP6.__new__(dpkt.ip6.IP6)
        dpkt.Packet.unpack(h, q[:40])  # fixed header only: extension headers not walked
        fam, src, dst, proto, t, first = socket.AF_INET6, h.src, h.dst, h.nxt, 40, True
    row.update(icmp_orig_src=socket.inet_ntop(fam, src), icmp_orig_dst=socket.inet_ntop(fam, dst),
               icmp_orig_proto=proto)
    if first and proto in (6, 17) and len(q) >= t + 4:
        row["icmp_orig_sport"], row["icmp_orig_dport"] = struct.unpack_from(">HH", q, t)
        if proto == 6 and len(q) >= t + 8:
            row["icmp_orig_seq"] = struct.unpack_from(">I", q, t + 4)[0]


def tcp_timestamp(opts: bytes) -> tuple[int, int] | None:
    """TSval/TSecr of the TCP timestamp option (kind 8, length 10), per RFC 9293/7323."""
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return None
        length = opts[i + 1]
        if kind == 8 and length == 10 and i + 10 <= len(opts):
            return struct.unpack_from(">II", opts, i + 2)
        i += length
    return None


def tunnel(pk: Packet, pos: int) -> None:
    """Decapsulate one level of VXLAN, Geneve or IP-in-IP; the row becomes the inner packet."""
    d, row = pk.data, pk.row
    kind = None
    if row["proto"] == 17 and row["dport"] in (4789, 8472):
        if pos + 8 + 14 <= len(d) and d[pos] & 0x08:
            kind, inner, inner_et = "vxlan", pos + 8, None
            vni = int.from_bytes(d[pos + 4: pos + 7], "big")
    elif row["proto"] == 17 and row["dport"] == 6081 and pos + 8 <= len(d) and d[pos] >> 6 == 0:
        ptype = struct.unpack_from(">H", d, pos + 2)[0]
        if ptype in (0x6558, 0x0800, 0x86DD):
            kind, inner = "geneve", pos + 8 + (d[pos] & 0x3F) * 4
            inner_et = None if ptype == 0x6558 else ptype
            vni = int.from_bytes(d[pos + 4: pos + 7], "big")
    elif row["proto"] in (4, 41):
        kind, inner, vni = "ipip", pos, None
        inner_et = 0x0800 if row["proto"] == 4 else 0x86DD
    if kind is None:
        return
    outer = {k: row[k] for k in ("src", "dst", "sport", "dport")}
    for k in PACKET_LEVEL:
        row[k] = None
    row.update(tunnel=kind, outer_src=outer["src"], outer_dst=outer["dst"], vni=vni)
    if kind != "ipip":
        row.update(outer_sport=outer["sport"], outer_dport=outer["dport"])
    if inner_et is None:
        inner, inner_et = ethernet(pk, inner, record_tags=False)
    classify(inner_et)
    pos, ip_end = ip(pk, inner, inner_et)
    transport(pk, pos, ip_end)


def reference(path: Path) -> tuple[list[dict], Counter, int]:
    """Rows (with record/ts_ns/linktype/iface/caplen/wirelen), the skip tally, records."""
    rows, tally, n = [], Counter(), 0
    for n, rec in enumerate(records(path), 1):
        try:
            row = decode(rec)
        except Skip as s:
            tally[s.args[0]] += 1
            continue
        row.update(record=n - 1, ts_ns=rec["ts_ns"], linktype=rec["linktype"], iface=rec["iface"],
                   caplen=rec["caplen"], wirelen=rec["wirelen"])
        rows.append(row)
    return rows, tally, n
