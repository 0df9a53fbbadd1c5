"""Overlay tunnels: VXLAN (UDP 4789, and 8472 as Linux/flannel use), Geneve (UDP 6081)
and IP-in-IP (IPv4/IPv6 in IPv4/IPv6). The row then describes the inner packet; the
outer addresses and the VNI are kept in their own columns. One level is decapsulated."""

from __future__ import annotations

import numpy as np

from natlens.capture import ip, link, transport
from natlens.capture.frame import PACKET_LEVEL, Frame
from natlens.capture.link import ETH_IPV4, ETH_IPV6

VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
GENEVE_ETHERNET = 0x6558
IPIP, IPV6_IN_IP = 4, 41
NAMES = {1: "vxlan", 2: "geneve", 3: "ipip"}
VXLAN, GENEVE, IP_IN_IP = 1, 2, 3


def decode(f: Frame, rows: np.ndarray) -> None:
    """Find tunnelled packets among `rows` and decode their inner packet in place."""
    buf = f.buf
    proto = f.values["proto"][rows]
    dport = f.values["dport"][rows]
    is_udp = (proto == transport.UDP) & f.valid["dport"][rows]
    # VXLAN: 8-byte header with the I flag set, then an Ethernet frame.
    vx = rows[is_udp & np.isin(dport, VXLAN_PORTS)]
    vx = vx[f.pos[vx] + 8 + 14 <= f.end[vx]]
    vx = vx[(buf.u8[f.pos[vx]] & 0x08) != 0]
    # Geneve: version 0, options, then the protocol type says what follows.
    gn = rows[is_udp & (dport == GENEVE_PORT)]
    gn = gn[f.pos[gn] + 8 <= f.end[gn]]
    gn = gn[(buf.u8[f.pos[gn]] >> 6) == 0]
    g_opt = (buf.u8[f.pos[gn]] & 0x3F).astype(np.int64) * 4
    g_type = buf.be16[f.pos[gn] + 2]
    known = np.isin(g_type, (GENEVE_ETHERNET, ETH_IPV4, ETH_IPV6))
    gn, g_opt, g_type = gn[known], g_opt[known], g_type[known]
    # IP-in-IP: the transport header is the inner IP header.
    ii = rows[np.isin(proto, (IPIP, IPV6_IN_IP))]
    ii_family = np.where(f.values["proto"][ii] == IPIP, ETH_IPV4, ETH_IPV6)
    if not (len(vx) or len(gn) or len(ii)):
        return

    inner = np.concatenate([vx, gn, ii])
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo"):
        f.set("outer_" + name, inner, f.values[name][inner])
    f.set("outer_version", inner, f.values["ip_version"][inner])
    udp = np.concatenate([vx, gn])
    f.set("outer_sport", udp, f.values["sport"][udp])
    f.set("outer_dport", udp, f.values["dport"][udp])
    f.set("tunnel", inner, np.concatenate([np.full(len(vx), VXLAN), np.full(len(gn), GENEVE),
                                           np.full(len(ii), IP_IN_IP)]))
    f.set("vni", vx, buf.be32[f.pos[vx] + 4] >> 8)
    f.set("vni", gn, buf.be32[f.pos[gn] + 4] >> 8)
    f.clear(PACKET_LEVEL, inner)

    # The VLAN columns describe the frame as captured: an inner frame's tags don't replace them.
    outer_vlan = {k: (f.values[k].copy(), f.valid[k].copy()) for k in ("vlan", "vlan_inner")}
    f.pos[vx] += 8
    link.ethernet(f, vx)
    gn_eth = g_type == GENEVE_ETHERNET
    f.pos[gn] += 8 + g_opt
    f.ethertype[gn[~gn_eth]] = g_type[~gn_eth]
    link.ethernet(f, gn[gn_eth])
    for k, (values, valid) in outer_vlan.items():
        f.values[k], f.valid[k] = values, valid
    f.ethertype[ii] = ii_family
    inner = f.live(inner)
    link.classify(f, inner)
    inner = f.live(inner)
    ip.decode(f, inner)
    transport.decode(f, f.live(inner))
