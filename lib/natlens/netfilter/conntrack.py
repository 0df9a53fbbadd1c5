"""`conntrack -L` dumps: the kernel's NAT decisions for the connections it still tracks.

A node's conntrack table says exactly how a connection was translated: the original
tuple is what the pod sent, the reply tuple what the node expects back, so a reply
destination other than the original source means the node SNATed it. A dump only
holds connections still tracked when it was taken (TIME_WAIT lasts 120 s by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KV = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Entry:
    """One tracked connection: its original and reply (src, dst, sport, dport) tuples."""

    proto: str
    state: str | None
    orig: tuple[str, str, int, int]
    reply: tuple[str, str, int, int]
    line: int  # 1-based line in the dump

    @property
    def snat(self) -> bool:
        """The node rewrote the source: replies go to another address or port."""
        return (self.reply[1], self.reply[3]) != (self.orig[0], self.orig[2])


def parse_conntrack(text: str) -> list[Entry]:
    """TCP/UDP entries of `conntrack -L` output (other lines, e.g. ICMP, are not NAT evidence
    for ports and are left out)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if len(words) < 4 or words[0] not in ("tcp", "udp"):
            continue
        pairs = _KV.findall(line)
        src = [v for k, v in pairs if k == "src"]
        dst = [v for k, v in pairs if k == "dst"]
        sport = [int(v) for k, v in pairs if k == "sport" and v.isdigit()]
        dport = [int(v) for k, v in pairs if k == "dport" and v.isdigit()]
        if len(src) < 2 or len(dst) < 2 or len(sport) < 2 or len(dport) < 2:
            continue
        state = words[3] if words[0] == "tcp" and "=" not in words[3] else None
        out.append(Entry(words[0], state, (src[0], dst[0], sport[0], dport[0]),
                         (src[1], dst[1], sport[1], dport[1]), lineno))
    return out
