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


class Entries(list):
    """The TCP/UDP entries of a dump (a plain list of Entry), plus what was not used:

    ``skipped`` lines that look like an entry (a protocol or ``ipv4 2``/``ipv6 10`` first,
    or ``src=``) but lack an original or reply tuple, with ``skipped_lines`` [(line, why)];
    ``other`` entries of other protocols (ICMP, ...), read but no NAT evidence for ports.
    """

    def __init__(self, entries=()):
        super().__init__(entries)
        self.skipped = 0
        self.skipped_lines: list[tuple[int, str]] = []
        self.other = 0


_FAMILIES = ("ipv4", "ipv6")
_PROTOS = ("tcp", "udp", "icmp", "icmpv6", "sctp", "udplite", "dccp", "gre", "unknown")


def parse_conntrack(text: str) -> Entries:
    """TCP/UDP entries of `conntrack -L` output, with or without `-o extended`, or of
    /proc/net/nf_conntrack (whose lines start with `ipv4 2` / `ipv6 10`, stripped here).
    Entries of other protocols, e.g. ICMP, are not NAT evidence for ports and are only
    counted (``other``); an entry line without both tuples is counted in ``skipped``."""
    out = Entries()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if len(words) >= 2 and words[0] in _FAMILIES and words[1].isdigit():
            words = words[2:]
        if not words or (words[0] not in _PROTOS and "src=" not in line):
            continue  # blank, or conntrack's "N flow entries have been shown." summary
        if words[0] not in ("tcp", "udp"):
            if words[0] in _PROTOS:
                out.other += 1
            else:
                out.skipped += 1
                out.skipped_lines.append((lineno, f"unknown protocol {words[0]!r}"))
            continue
        pairs = _KV.findall(line)
        src = [v for k, v in pairs if k == "src"]
        dst = [v for k, v in pairs if k == "dst"]
        sport = [int(v) for k, v in pairs if k == "sport" and v.isdigit()]
        dport = [int(v) for k, v in pairs if k == "dport" and v.isdigit()]
        if len(words) < 4 or len(src) < 2 or len(dst) < 2 or len(sport) < 2 or len(dport) < 2:
            out.skipped += 1
            out.skipped_lines.append((lineno, "no complete original and reply tuple"))
            continue
        state = words[3] if words[0] == "tcp" and "=" not in words[3] else None
        out.append(Entry(words[0], state, (src[0], dst[0], sport[0], dport[0]),
                         (src[1], dst[1], sport[1], dport[1]), lineno))
    return out
