"""The question the walk answers: the first packet of a connection, as the node sees it."""

from __future__ import annotations

from dataclasses import dataclass

from natlens.errors import NatlensError
from natlens.netfilter.walk.addresses import ip_addr

PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "dccp": 33, "esp": 50,
             "ah": 51, "gre": 47, "icmpv6": 58, "ipv6-icmp": 58}
UNKNOWN_PROTO = -2  # a protocol name the model does not know: equal to no rule's -p


def proto_number(name: str) -> int:
    """'tcp' -> 6, '17' -> 17; a name the model does not know -> UNKNOWN_PROTO."""
    return PROTO_NUM.get(name, int(name) if name.isdigit() else UNKNOWN_PROTO)


@dataclass
class Packet:
    """The first packet of a connection, as the node sees it."""

    src: str
    dst: str
    dport: int
    proto: str = "tcp"
    sport: int | None = None
    in_iface: str | None = None   # where it came in (None: unknown; ignored if local)
    local: bool = False           # generated on the node itself (OUTPUT path)
    out_iface: str | None = None  # egress interface if the caller knows it (else inferred)
    mark: int = 0


def packet_family(pkt: Packet) -> int:
    """4 or 6; a packet whose source and destination families differ is a bad query."""
    (fs, _), (fd, _) = ip_addr(pkt.src), ip_addr(pkt.dst)
    if fs != fd:
        raise NatlensError(f"--src {pkt.src} and --dst {pkt.dst} are of different address "
                           "families (IPv4 and IPv6)")
    return fs
