"""Link layers: Ethernet with 802.1Q/802.1ad tags, Linux cooked SLL and SLL2, raw IP,
BSD loopback. Each leaves the ethertype of the payload and where it starts."""

from __future__ import annotations

import numpy as np

from natlens.capture.frame import Frame
from natlens.capture.schema import ARP, MALFORMED, NON_IP, UNKNOWN_LINKTYPE

ETHERNET, RAW, LINUX_SLL, LINUX_SLL2, NULL, LOOP, IPV4, IPV6 = 1, 101, 113, 276, 0, 108, 228, 229
RAW_ALIASES = (RAW, 12, 14)  # DLT_RAW is 12 or 14 on some systems
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_RARP = 0x0800, 0x86DD, 0x0806, 0x8035
MAX_TAGS = 4
# libpcap's largest record per link type (pcap-common.c max_snaplen_for_dlt): a longer record
# is corruption, not a packet. D-Bus 128 MiB, EBHSCR 8 MiB, USBPcap 1 MiB, the rest 256 KiB.
MAX_CAPLEN = {231: 128 << 20, 279: 8 << 20, 249: 1 << 20}
MAX_CAPLEN_DEFAULT = 256 << 10
LINKTYPE_NAMES = {ETHERNET: "ethernet", RAW: "raw", 12: "raw", 14: "raw", LINUX_SLL: "linux-sll",
                  LINUX_SLL2: "linux-sll2", NULL: "bsd-null", LOOP: "bsd-loop", IPV4: "ipv4",
                  IPV6: "ipv6"}


def max_caplen(linktype: int) -> int:
    """The most bytes one record of this link type can hold (libpcap's limit)."""
    return MAX_CAPLEN.get(linktype, MAX_CAPLEN_DEFAULT)


def decode(f: Frame, linktype: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Fill pos/ethertype for ``rows`` (sorted; default all); rows with no IP payload get a
    skip reason."""
    todo = np.arange(f.n) if rows is None else rows
    types = linktype[todo]
    for lt in np.unique(types):
        rows = todo[types == lt]
        if lt == ETHERNET:
            ethernet(f, rows)
        elif lt == LINUX_SLL:
            sll(f, rows)
        elif lt == LINUX_SLL2:
            sll2(f, rows)
        elif lt in RAW_ALIASES:
            raw(f, rows)
        elif lt == IPV4:
            f.ethertype[rows] = ETH_IPV4
        elif lt == IPV6:
            f.ethertype[rows] = ETH_IPV6
        elif lt in (NULL, LOOP):
            bsd_loopback(f, rows, big_endian=lt == LOOP)
        else:
            f.skip(rows, UNKNOWN_LINKTYPE)
    classify(f, todo[f.reason[todo] == 0])


def ethernet(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 14)
    f.ethertype[rows] = f.buf.be16[f.pos[rows] + 12]
    f.pos[rows] += 14
    vlan_tags(f, rows)


def vlan_tags(f: Frame, rows: np.ndarray) -> None:
    """Strip up to MAX_TAGS 802.1Q/802.1ad tags, keeping the outer and inner VLAN ids."""
    tagged = rows[np.isin(f.ethertype[rows], VLAN_TPIDS)]
    depth = 0
    while len(tagged) and depth < MAX_TAGS:
        tagged = f.need(tagged, 4)
        vid = f.buf.be16[f.pos[tagged]] & 0x0FFF
        if depth == 0:
            f.set("vlan", tagged, vid)
        elif depth == 1:
            f.set("vlan_inner", tagged, vid)
        f.ethertype[tagged] = f.buf.be16[f.pos[tagged] + 2]
        f.pos[tagged] += 4
        tagged = tagged[np.isin(f.ethertype[tagged], VLAN_TPIDS)]
        depth += 1
    if len(tagged):
        f.skip(tagged, MALFORMED)


def sll(f: Frame, rows: np.ndarray) -> None:
    """Linux cooked capture v1 (tcpdump -i any, older libpcap): packet type, protocol."""
    rows = f.need(rows, 16)
    p = f.pos[rows]
    f.set("pkttype", rows, f.buf.be16[p])
    f.ethertype[rows] = f.buf.be16[p + 14]
    f.pos[rows] += 16
    vlan_tags(f, rows)


def sll2(f: Frame, rows: np.ndarray) -> None:
    """Linux cooked capture v2 (tcpdump -i any, libpcap >= 1.10): adds the ifindex."""
    rows = f.need(rows, 20)
    p = f.pos[rows]
    f.ethertype[rows] = f.buf.be16[p]
    f.set("ifindex", rows, f.buf.be32[p + 4])
    f.set("pkttype", rows, f.buf.u8[p + 10])
    f.pos[rows] += 20
    vlan_tags(f, rows)


def raw(f: Frame, rows: np.ndarray) -> None:
    rows = f.need(rows, 1)
    version = f.buf.u8[f.pos[rows]] >> 4
    f.ethertype[rows] = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, 0))
    f.skip(rows[(version != 4) & (version != 6)], MALFORMED)


def bsd_loopback(f: Frame, rows: np.ndarray, big_endian: bool) -> None:
    """BSD loopback: a 4-byte address family, in the writer's byte order for NULL."""
    rows = f.need(rows, 4)
    p = f.pos[rows]
    family = f.buf.be32[p] if big_endian else f.buf.le32[p]
    if not big_endian:
        swapped = family > 0xFFFF
        family = np.where(swapped, f.buf.be32[p], family)
    f.ethertype[rows] = np.where(family == 2, ETH_IPV4,
                                 np.where(np.isin(family, (10, 23, 24, 28, 30)), ETH_IPV6, 0))
    f.pos[rows] += 4
    f.skip(rows[f.ethertype[rows] == 0], NON_IP)


def classify(f: Frame, rows: np.ndarray) -> None:
    """Rows whose payload is not IP are counted: ARP on its own, the rest as non-ip."""
    et = f.ethertype[rows]
    not_ip = (et != ETH_IPV4) & (et != ETH_IPV6)
    if not_ip.any():
        r = rows[not_ip]
        f.skip(r, np.where(np.isin(et[not_ip], (ETH_ARP, ETH_RARP)), ARP, NON_IP))
