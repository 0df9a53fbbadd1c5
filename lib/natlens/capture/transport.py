"""TCP (with the timestamp option), UDP, ICMP/ICMPv6 (with the packet an ICMP error
quotes), and the payload hash that lets the pre- and post-NAT copies of one packet be
paired."""

from __future__ import annotations

import numpy as np

from natlens.capture.buffer import be16, be32, be64
from natlens.capture.frame import Frame
from natlens.capture.schema import MALFORMED

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
HASH_BYTES = 32
# ICMP error types, which quote the packet they are about after their 8-byte header:
# destination unreachable, source quench, redirect, time exceeded, parameter problem;
# ICMPv6 destination unreachable, packet too big, time exceeded, parameter problem.
ICMP_ERRORS = (3, 4, 5, 11, 12)
ICMPV6_ERRORS = (1, 2, 3, 4)
ICMP_HEADER = 8  # ICMP_MINLEN in tcpdump and BSD; every ICMPv6 message has 4 + 4 bytes too
Quoted = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # rows, transport start, end, proto
_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def decode(f: Frame, rows: np.ndarray) -> None:
    """Decode the transport header of each row (pos at the transport header)."""
    proto = f.values["proto"][rows]
    tcp(f, rows[proto == TCP])
    udp(f, rows[proto == UDP])
    icmp(f, rows[(proto == ICMP) | (proto == ICMPV6)])


def tcp(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 20)
    p = f.pos[rows]
    w = f.buf.window(p, 32)  # the header and the options that carry timestamps most often
    doff = (w[:, 12] >> 4).astype(np.int64) * 4
    bad = (doff < 20) | (p + doff > f.ip_end[rows])
    if bad.any():
        f.skip(rows[bad], MALFORMED)
        rows, p, doff, w = rows[~bad], p[~bad], doff[~bad], w[~bad]
    ports = be32(w, 0)
    f.set("sport", rows, ports >> np.uint32(16))
    f.set("dport", rows, ports & np.uint32(0xFFFF))
    f.set("seq", rows, be32(w, 4))
    f.set("ack", rows, be32(w, 8))
    f.set("tcp_flags", rows, ((w[:, 12].astype(np.int16) & 1) << 8) | w[:, 13])
    f.set("window", rows, be16(w, 14))
    opt_end = np.minimum(p + doff, f.end[rows])
    payload(f, rows, p + doff, f.ip_end[rows] - p - doff)
    # Most segments carry NOP, NOP, timestamps first (Linux): read those from the window.
    common = (be32(w, 20) == 0x0101080A) & (p + 32 <= opt_end)
    if common.any():
        f.set("tsval", rows[common], be32(w[common], 24))
        f.set("tsecr", rows[common], be32(w[common], 28))
        rest = ~common
        rows, p, opt_end = rows[rest], p[rest], opt_end[rest]
    timestamps(f, rows, p + 20, opt_end)


def timestamps(f: Frame, rows: np.ndarray, cur: np.ndarray, end: np.ndarray) -> None:
    """Find the TCP timestamp option (kind 8, length 10) among the captured options."""
    buf = f.buf
    live = np.flatnonzero(cur < end)
    cur = cur.copy()
    for _ in range(40):  # at most 40 option bytes
        if not len(live):
            return
        c, e = cur[live], end[live]
        kind = buf.u8[c]
        length = np.where(kind == 1, 1, buf.u8[c + 1].astype(np.int64))
        hit = (kind == 8) & (length == 10) & (c + 10 <= e)
        if hit.any():
            r = rows[live[hit]]
            f.set("tsval", r, buf.be32[c[hit] + 2])
            f.set("tsecr", r, buf.be32[c[hit] + 6])
        cur[live] = c + length
        go_on = (kind != 0) & ~hit & (length >= 1) & ((kind == 1) | (length >= 2)) & (c + length < e)
        live = live[go_on]


def udp(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 8)
    buf, p = f.buf, f.pos[rows]
    ulen = buf.be16[p + 4].astype(np.int64)
    # Zeek and the kernel accept a UDP length of 0 for jumbograms; the IP length decides then.
    ulen = np.where(ulen == 0, f.ip_end[rows] - p, ulen)
    # A UDP length past the end of the IP packet contradicts the IP header (the kernel
    # drops it as a short packet); trusting it would hash link-layer trailer bytes.
    bad = (ulen < 8) | (p + ulen > f.ip_end[rows])
    f.skip(rows[bad], MALFORMED)
    rows, p, ulen = rows[~bad], p[~bad], ulen[~bad]
    f.set("sport", rows, buf.be16[p])
    f.set("dport", rows, buf.be16[p + 2])
    payload(f, rows, p + 8, ulen - 8)


def icmp(f: Frame, rows: np.ndarray) -> None:
    """Type and code; for an error, the quoted packet (schema.py, natlens.packets/2).

    A message shorter than the 8-byte header per its IP length is malformed (tcpdump
    prints it as [|icmp]): the bytes after it are the link layer's padding, not a type.
    Only type and code must be captured (4 bytes); fewer is a snaplen cut."""
    short = f.ip_end[rows] - f.pos[rows] < ICMP_HEADER
    if short.any():
        f.skip(rows[short], MALFORMED)
        rows = rows[~short]
    rows = f.need(rows, 4)
    p = f.pos[rows]
    kind = f.buf.u8[p]
    f.set("icmp_type", rows, kind)
    f.set("icmp_code", rows, f.buf.u8[p + 1])
    v4 = f.values["proto"][rows] == ICMP
    error = np.where(v4, np.isin(kind, ICMP_ERRORS), np.isin(kind, ICMPV6_ERRORS))
    rows, q, v4 = rows[error], p[error] + ICMP_HEADER, v4[error]
    # The quote ends where the capture or the ICMP packet's own IP length does (not padding).
    qend = np.minimum(f.end[rows], f.ip_end[rows])
    r4, t4, e4, p4 = quoted_ipv4(f, rows[v4], q[v4], qend[v4])
    r6, t6, e6, p6 = quoted_ipv6(f, rows[~v4], q[~v4], qend[~v4])
    order = np.argsort(np.concatenate([r4, r6]), kind="stable")  # Frame.set wants rows sorted
    quoted_ports(f, *(np.concatenate(pair)[order] for pair in ((r4, r6), (t4, t6), (e4, e6), (p4, p6))))


def quoted_ipv4(f: Frame, rows: np.ndarray, q: np.ndarray, qend: np.ndarray) -> Quoted:
    """The IPv4 header quoted at q: addresses and protocol when its 20 bytes are there
    and it is one. Returns (rows, transport start, quote end, protocol) of those whose
    transport header may follow (not a later fragment)."""
    has = q + 20 <= qend
    rows, q, qend = rows[has], q[has], qend[has]
    w = f.buf.window(q, 20)
    ihl = (w[:, 0] & 0x0F).astype(np.int64) * 4
    good = ((w[:, 0] >> 4) == 4) & (ihl >= 20)
    rows, q, qend, ihl, w = rows[good], q[good], qend[good], ihl[good], w[good]
    proto = w[:, 9].astype(np.int64)
    f.set("icmp_orig_version", rows, 4)
    f.set("icmp_orig_src_hi", rows, 0)
    f.set("icmp_orig_dst_hi", rows, 0)
    f.set("icmp_orig_src_lo", rows, be32(w, 12))
    f.set("icmp_orig_dst_lo", rows, be32(w, 16))
    f.set("icmp_orig_proto", rows, proto)
    first = (be16(w, 6) & 0x1FFF) == 0  # fragment offset 0: the transport header follows
    return rows[first], (q + ihl)[first], qend[first], proto[first]


def quoted_ipv6(f: Frame, rows: np.ndarray, q: np.ndarray, qend: np.ndarray) -> Quoted:
    """The IPv6 header quoted at q: addresses and next header when its 40 bytes are there
    and it is one (extension headers are not walked). Returns like quoted_ipv4."""
    has = q + 40 <= qend
    rows, q, qend = rows[has], q[has], qend[has]
    w = f.buf.window(q, 40)
    good = (w[:, 0] >> 4) == 6
    rows, q, qend, w = rows[good], q[good], qend[good], w[good]
    proto = w[:, 6].astype(np.int64)
    f.set("icmp_orig_version", rows, 6)
    f.set("icmp_orig_src_hi", rows, be64(w, 8))
    f.set("icmp_orig_src_lo", rows, be64(w, 16))
    f.set("icmp_orig_dst_hi", rows, be64(w, 24))
    f.set("icmp_orig_dst_lo", rows, be64(w, 32))
    f.set("icmp_orig_proto", rows, proto)
    return rows, q + 40, qend, proto


def quoted_ports(f: Frame, rows: np.ndarray, t: np.ndarray, qend: np.ndarray,
                 proto: np.ndarray) -> None:
    """The quoted TCP/UDP ports (4 bytes at t) and TCP sequence number (4 more), as far
    as the quote holds them."""
    has = ((proto == TCP) | (proto == UDP)) & (t + 4 <= qend)
    rows, t, qend, proto = rows[has], t[has], qend[has], proto[has]
    ports = f.buf.be32[t]
    f.set("icmp_orig_sport", rows, ports >> np.uint32(16))
    f.set("icmp_orig_dport", rows, ports & np.uint32(0xFFFF))
    seq = (proto == TCP) & (t + 8 <= qend)
    f.set("icmp_orig_seq", rows[seq], f.buf.be32[t[seq] + 4])


def payload(f: Frame, rows: np.ndarray, start: np.ndarray, length: np.ndarray) -> None:
    """Payload length from the headers, and a hash of its first captured bytes."""
    f.set("payload_len", rows, np.maximum(length, 0))
    f.pos[rows] = start
    avail = np.minimum(np.minimum(f.end[rows], start + np.maximum(length, 0)) - start, HASH_BYTES)
    has = avail > 0
    if has.any():
        f.set("payload_hash", rows[has], payload_hash(f.buf, start[has], avail[has]))


def payload_hash(buf, start: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """A 64-bit hash of `avail` (1..32) bytes at each start, mixed with the count."""
    words = np.ascontiguousarray(buf.window(start, HASH_BYTES)).view("<u8")
    h = avail.astype(np.uint64) * _MUL
    for word in range(HASH_BYTES // 8):
        nbytes = np.clip(avail - word * 8, 0, 8).astype(np.uint64)
        mask = np.where(nbytes >= 8, np.uint64(0xFFFFFFFFFFFFFFFF),
                        (np.uint64(1) << (nbytes * np.uint64(8))) - np.uint64(1))
        h = (h ^ (words[:, word] & mask)) * _MIX
        h ^= h >> np.uint64(31)
    return h
