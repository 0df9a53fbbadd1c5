"""IPv4 and IPv6 (walking extension headers). Fragments are counted, not decoded:
only the first piece carries the ports."""

from __future__ import annotations

import numpy as np

from natlens.capture.buffer import be16, be32, be64
from natlens.capture.frame import Frame
from natlens.capture.link import ETH_IPV4, ETH_IPV6
from natlens.capture.schema import FRAGMENT, MALFORMED, SNAPLEN

# IPv6 extension headers walked to reach the transport header: hop-by-hop, routing,
# destination options, mobility, HIP, shim6, experimental. AH has its own length unit.
IPV6_EXT = (0, 43, 60, 135, 139, 140, 253, 254)
IPV6_FRAGMENT, IPV6_AH = 44, 51
MAX_EXT = 8
HOP_BY_HOP, JUMBO_OPTION, JUMBO_MIN = 0, 0xC2, 65536  # RFC 2675
# Protocols whose IP length 0 means a GSO/TSO packet captured before segmentation (Linux
# BIG TCP, LSO): the length comes from the capture. tcpdump presumes TSO / BIG TCP for
# TCP and UDP only (UDP: VXLAN and Geneve carry the big inner TCP packets).
GSO_PROTOS = (6, 17)


def decode(f: Frame, rows: np.ndarray) -> None:
    """Decode the IP header of each row (pos at the IP header); leaves pos at the
    transport header and ip_end at the end of the IP packet."""
    et = f.ethertype[rows]
    ipv4(f, rows[et == ETH_IPV4])
    ipv6(f, rows[et == ETH_IPV6])


def ipv4(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 20)
    p = f.pos[rows]
    w = f.buf.window(p, 20)
    b0 = w[:, 0]
    ihl = (b0 & 0x0F).astype(np.int64) * 4
    total = be16(w, 2).astype(np.int64)
    # Large GSO/TSO packets captured before segmentation carry total length 0; for another
    # protocol 0 stays 0 and is malformed (shorter than the header).
    gso = (total == 0) & np.isin(w[:, 9], GSO_PROTOS)
    total = np.where(gso, f.end[rows] - p, total)
    bad = ((b0 >> 4) != 4) | (ihl < 20) | (total < ihl) | (p + ihl > f.end[rows])
    if bad.any():
        f.skip(rows[bad], np.where((p + ihl > f.end[rows]) & f.cut[rows], SNAPLEN, MALFORMED)[bad])
        rows, p, ihl, total, w = rows[~bad], p[~bad], ihl[~bad], total[~bad], w[~bad]
    word = be64(w, 4)  # id, flags + fragment offset, TTL, protocol
    frag = (word >> np.uint64(32)) & np.uint64(0x3FFF)  # MF flag and fragment offset
    f.l3[rows] = p
    f.set("ip_version", rows, 4)
    f.set("ip_id", rows, word >> np.uint64(48))
    f.set("ttl", rows, (word >> np.uint64(24)) & np.uint64(0xFF))
    f.set("proto", rows, (word >> np.uint64(16)) & np.uint64(0xFF))
    f.set("ip_len", rows, total)
    f.set("src_hi", rows, 0)
    f.set("dst_hi", rows, 0)
    f.set("src_lo", rows, be32(w, 12))
    f.set("dst_lo", rows, be32(w, 16))
    f.ip_end[rows] = p + total
    f.pos[rows] = p + ihl
    f.skip(rows[frag != 0], FRAGMENT)


def ipv6(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 40)
    buf, p = f.buf, f.pos[rows]
    bad = (buf.u8[p] >> 4) != 6
    f.skip(rows[bad], MALFORMED)
    rows, p = rows[~bad], p[~bad]
    plen = buf.be16[p + 4].astype(np.int64)
    zero = plen == 0
    if zero.any():
        rows, p, plen = zero_payload_length(f, rows, p, plen, zero)
    f.l3[rows] = p
    f.set("ip_version", rows, 6)
    f.set("ttl", rows, buf.u8[p + 7])
    f.set("ip_len", rows, 40 + plen)
    f.set("src_hi", rows, buf.be64[p + 8])
    f.set("src_lo", rows, buf.be64[p + 16])
    f.set("dst_hi", rows, buf.be64[p + 24])
    f.set("dst_lo", rows, buf.be64[p + 32])
    f.ip_end[rows] = p + 40 + plen
    nxt = buf.u8[p + 6].astype(np.int64)
    f.pos[rows] = p + 40
    # Walk extension headers: rows still sitting on one move on, the rest are done.
    walking, nh = rows, nxt
    for _ in range(MAX_EXT):
        ext = np.isin(nh, IPV6_EXT) | (nh == IPV6_AH) | (nh == IPV6_FRAGMENT)
        f.set("proto", walking[~ext], nh[~ext])
        walking, nh = walking[ext], nh[ext]
        if not len(walking):
            return
        has = f.need(walking, 8)
        keep = np.isin(walking, has)
        walking, nh = has, nh[keep]
        q = f.pos[walking]
        is_frag = nh == IPV6_FRAGMENT
        if is_frag.any():
            fr = walking[is_frag]
            frag_field = buf.be16[q[is_frag] + 2]
            real = (frag_field & 0xFFF9) != 0  # offset or M flag: a real fragment, not atomic
            f.set("ip_id", fr, buf.be32[q[is_frag] + 4].astype(np.int64).astype(np.int32))
            f.skip(fr[real], FRAGMENT)
        length = np.where(is_frag, 8, np.where(nh == IPV6_AH, (buf.u8[q + 1].astype(np.int64) + 2) * 4,
                                                (buf.u8[q + 1].astype(np.int64) + 1) * 8))
        nh = buf.u8[q].astype(np.int64)
        f.pos[walking] = q + length
        over = f.pos[walking] > f.ip_end[walking]
        f.skip(walking[over], MALFORMED)
        f.pos[walking[over]] = f.end[walking[over]]
        live = f.reason[walking] == 0
        walking, nh = walking[live], nh[live]
    f.skip(walking, MALFORMED)  # more extension headers than any real packet carries


def zero_payload_length(f: Frame, rows: np.ndarray, p: np.ndarray, plen: np.ndarray,
                        zero: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The payload length of IPv6 packets whose header says 0, as tcpdump reads them.

    With a hop-by-hop header first: its Jumbo Payload option (RFC 2675) gives the length,
    else the packet is malformed. Without one, TCP or UDP straight after the header is a
    GSO packet over 64 KiB from a kernel whose BIG TCP no longer inserts the jumbo header
    (tcpdump PR #1329): the length comes from the capture. Anything else really has no
    payload (No Next Header, 59, is a valid empty packet); the capture's bytes after the
    header are padding, so an ICMPv6 header or an extension header there is malformed.
    Returns the rows kept, their IP header starts and payload lengths."""
    nxt = f.buf.u8[p + 6]
    gso = zero & np.isin(nxt, GSO_PROTOS)
    plen = np.where(gso, f.end[rows] - p - 40, plen)
    hbh = zero & (nxt == HOP_BY_HOP)
    bad = np.zeros(len(rows), bool)
    if hbh.any():
        cand = rows[hbh]
        f.pos[cand] = p[hbh] + 40
        has = f.need(cand, 8)
        length = (f.buf.u8[f.pos[has] + 1].astype(np.int64) + 1) * 8
        has = has[np.isin(has, f.need(has, length))]
        got = np.isin(rows, has)
        bad |= hbh & ~got
        for i in np.flatnonzero(got):
            start = int(p[i]) + 40
            end = start + (int(f.buf.u8[start + 1]) + 1) * 8
            jumbo = jumbo_length(f.buf.u8[start + 2:end].tobytes())
            if jumbo is None:
                bad[i] = True
            else:
                plen[i] = jumbo
        f.pos[cand] = p[hbh]
    f.skip(rows[bad], MALFORMED)
    keep = f.reason[rows] == 0
    return rows[keep], p[keep], plen[keep]


def jumbo_length(options: bytes) -> int | None:
    """The Jumbo Payload Length of a hop-by-hop header's options (RFC 2675): the first
    Jumbo Payload option, which must be 4 bytes long and over 65535; None when there is
    none, it is invalid, or an option runs past the header (tcpdump's ip6_opt_process)."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 2 > len(options) or i + 2 + options[i + 1] > len(options):
            return None
        if kind == JUMBO_OPTION:
            if options[i + 1] != 4:
                return None
            value = int.from_bytes(options[i + 2:i + 6], "big")
            return value if value >= JUMBO_MIN else None
        i += 2 + options[i + 1]
    return None
