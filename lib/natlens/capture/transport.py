"""TCP (with the timestamp option), UDP, ICMP/ICMPv6, and the payload hash that lets
the pre- and post-NAT copies of one packet be paired."""

from __future__ import annotations

import numpy as np

from natlens.capture.buffer import be16, be32
from natlens.capture.frame import Frame
from natlens.capture.schema import MALFORMED

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
HASH_BYTES = 32
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
    rows = f.need(rows, 4)
    p = f.pos[rows]
    f.set("icmp_type", rows, f.buf.u8[p])
    f.set("icmp_code", rows, f.buf.u8[p + 1])


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
