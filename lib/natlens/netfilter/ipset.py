"""ipset save / ipset list output -> sets that answer "is this packet in the set?".

Set types kube-proxy and the common CNIs use: hash:ip, hash:ip,port,
hash:ip,port,ip, hash:ip,port,net, hash:net, hash:net,port and bitmap:port.
Entry options (timeout, comment, counters, skbinfo) are kept; ``nomatch`` on
hash:net-style entries is honoured the way the kernel does it (the most specific
prefix decides). A set of another type is kept with its members as text and any
lookup in it is "unknown", so the evaluator reports the rule as undecided.

Lookups follow ``-m set --match-set NAME flags``: each src/dst flag picks the
packet's source or destination address (or port) for one dimension of the set,
in order. Fewer flags than the set has dimensions never matches (the kernel's
ip_set_test does the same).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from natlens.errors import NatlensError

KNOWN_TYPES = {
    "hash:ip": ("ip",),
    "hash:ip,port": ("ip", "port"),
    "hash:ip,port,ip": ("ip", "port", "ip"),
    "hash:ip,port,net": ("ip", "port", "net"),
    "hash:net": ("net",),
    "hash:net,port": ("net", "port"),
    "bitmap:port": ("port",),
}

_PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "icmpv6": 58}
_ENTRY_FLAGS = {"nomatch"}
_ENTRY_OPTS = {"timeout", "comment", "packets", "bytes", "skbmark", "skbprio", "skbqueue"}


@dataclass
class Entry:
    """One member; ``key`` is the normalised tuple used for lookups."""

    text: str
    key: tuple
    timeout: int | None = None
    comment: str | None = None
    nomatch: bool = False
    lineno: int = 0


@dataclass
class IPSet:
    name: str
    type: str
    header: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    lineno: int = 0
    _exact: dict | None = None
    _nets: dict | None = None  # prefix length -> {masked key: nomatch}

    @property
    def dims(self) -> tuple[str, ...] | None:
        return KNOWN_TYPES.get(self.type)

    @property
    def family(self) -> int:
        """4 or 6, from the header's family (inet, the default, or inet6)."""
        return 6 if self.header.get("family", "inet") == "inet6" else 4

    def _index(self) -> None:
        self._exact, self._nets = {}, {}
        nets = "net" in (self.dims or ())
        for e in self.entries:
            k = e.key
            if not nets:
                self._exact[k] = e
                continue
            if self.type == "hash:net,port":
                (net, plen), head = k[0], k[1:]
            else:
                (net, plen), head = k[-1], k[:-1]
            self._nets.setdefault(plen, {})[(*head, net)] = e.nomatch

    def test(self, values: list) -> bool:
        """values: one per dimension, already picked by the flags (ip ints, (proto, port))."""
        if self._exact is None:
            self._index()
        t = self.type
        if t == "hash:ip" or t == "bitmap:port":
            return (values[0],) in self._exact
        if t == "hash:ip,port":
            return (values[0], *values[1]) in self._exact
        if t == "hash:ip,port,ip":
            return (values[0], *values[1], values[2]) in self._exact
        if t == "hash:net":
            return self._net_lookup((), values[0])
        if t == "hash:ip,port,net":
            return self._net_lookup((values[0], *values[1]), values[2])
        if t == "hash:net,port":
            return self._net_lookup(tuple(values[1]), values[0])
        raise KeyError(t)

    def _net_lookup(self, head: tuple, ip: int) -> bool:
        bits = 32 if self.header.get("family", "inet") == "inet" else 128
        for plen in sorted(self._nets, reverse=True):
            mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
            hit = self._nets[plen].get((*head, ip & mask))
            if hit is not None:
                return not hit  # a nomatch entry answers "not in the set"
        return False


def _ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def _net(text: str) -> tuple[int, int]:
    n = ipaddress.ip_network(text, strict=False)
    return int(n.network_address), n.prefixlen


def _port(text: str, default_proto: str = "tcp") -> list[tuple[int, int]]:
    """'tcp:80', 'udp:53', '80', 'tcp:80-82' -> [(proto number, port), ...]."""
    proto, sep, port = text.rpartition(":")
    if not sep:
        proto = default_proto
    pnum = _PROTO_NUM.get(proto.lower())
    if pnum is None:
        pnum = int(proto) if proto.isdigit() else -1
    if pnum in (1, 58):  # icmp:type/code: kept, never equal to a tcp/udp port
        return [(pnum, hash(port))]
    lo, _, hi = port.partition("-")
    a = int(lo)
    b = int(hi) if hi else a
    if not (0 <= a <= b <= 65535):
        raise ValueError(f"bad port {port!r}")
    return [(pnum, p) for p in range(a, b + 1)]


def _entry_keys(settype: str, member: str) -> list[tuple]:
    parts = member.split(",")
    dims = KNOWN_TYPES[settype]
    if len(parts) != len(dims):
        raise ValueError(f"{len(parts)} parts for a {settype} member")
    keys: list[tuple] = [()]
    for d, p in zip(dims, parts, strict=True):
        if d == "ip":
            if "/" in p or "-" in p:  # a range or cidr added to hash:ip: expanded by ipset
                if "-" in p:
                    a, b = (_ip(x) for x in p.split("-"))
                    vals = list(range(a, b + 1))
                else:
                    net = ipaddress.ip_network(p, strict=False)
                    vals = [int(x) for x in net]
                if len(vals) > 65536:
                    raise ValueError(f"range {p} too large")
            else:
                vals = [_ip(p)]
            keys = [(*k, v) for k in keys for v in vals]
        elif d == "net":
            nv = _net(p)
            keys = [(*k, nv) for k in keys]
        else:
            if settype == "bitmap:port":
                lo, _, hi = p.rpartition(":")[2].partition("-")
                vals = [int(x) for x in range(int(lo), int(hi or lo) + 1)]
                keys = [(*k, v) for k in keys for v in vals]
            else:
                keys = [(*k, pp[0], pp[1]) for k in keys for pp in _port(p)]
    return keys


def _make_entries(s: IPSet, member: str, opts: list[str], lineno: int, path: str) -> None:
    timeout = comment = None
    nomatch = False
    i = 0
    while i < len(opts):
        o = opts[i]
        if o in _ENTRY_FLAGS:
            nomatch = True
            i += 1
        elif o in _ENTRY_OPTS and i + 1 < len(opts):
            if o == "timeout":
                timeout = int(opts[i + 1])
            elif o == "comment":
                comment = opts[i + 1]
            i += 2
        else:
            raise NatlensError(f"unknown entry option {o!r}", path=path, where=str(lineno))
    if s.dims is None:
        s.entries.append(Entry(member, (member,), timeout, comment, nomatch, lineno))
        return
    try:
        keys = _entry_keys(s.type, member)
    except ValueError as exc:
        raise NatlensError(f"bad {s.type} member {member!r} of set {s.name}: {exc}",
                           path=path, where=str(lineno)) from None
    for k in keys:
        s.entries.append(Entry(member, k, timeout, comment, nomatch, lineno))


def parse_ipset(text: str, path: str = "<ipset>") -> dict[str, IPSet]:
    """Parse ``ipset save`` or ``ipset list`` output (detected from the first line)."""
    for line in text.splitlines():
        if line.strip():
            if line.startswith("Name:"):
                return _parse_list(text, path)
            break
    return _parse_save(text, path)


def _split(line: str, path: str, lineno: int) -> list[str]:
    if '"' not in line:
        return line.split()
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise NatlensError(f"bad quoting: {exc}", path=path, where=str(lineno)) from None


def _parse_save(text: str, path: str) -> dict[str, IPSet]:
    sets: dict[str, IPSet] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        toks = _split(line, path, lineno)
        cmd = toks[0]
        if cmd in ("create", "-N", "-exist") and len(toks) >= 3:
            hdr = dict(_pairs(toks[3:]))
            sets[toks[1]] = IPSet(toks[1], toks[2], hdr, lineno=lineno)
        elif cmd in ("add", "-A") and len(toks) >= 3:
            s = sets.get(toks[1])
            if s is None:
                raise NatlensError(f"add to undeclared set {toks[1]!r}", path=path, where=str(lineno))
            _make_entries(s, toks[2], toks[3:], lineno, path)
        elif cmd in ("COMMIT", "flush", "destroy", "-F", "-X"):
            continue
        else:
            raise NatlensError(f"unrecognised ipset line {line[:60]!r}", path=path, where=str(lineno))
    return sets


_VALUED = {"family", "hashsize", "maxelem", "timeout", "range", "netmask", "bucketsize",
           "initval", "markmask", "size", "revision"}


def _pairs(toks: list[str]):
    """Create-line / Header: options -> (name, value); flags like 'comment' get ''."""
    i = 0
    while i < len(toks):
        if toks[i] in _VALUED and i + 1 < len(toks):
            yield toks[i], toks[i + 1]
            i += 2
        else:
            yield toks[i], ""
            i += 1


_LIST_HDR = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*(.*)$")


def _parse_list(text: str, path: str) -> dict[str, IPSet]:
    sets: dict[str, IPSet] = {}
    cur: IPSet | None = None
    in_members = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            in_members = False
            continue
        if not in_members or line.startswith("Name:"):
            m = _LIST_HDR.match(line)
            if not m:
                raise NatlensError(f"unrecognised ipset list line {line[:60]!r}", path=path, where=str(lineno))
            key, val = m.group(1), m.group(2)
            if key == "Name":
                cur = IPSet(val, "", lineno=lineno)
                sets[val] = cur
                in_members = False
            elif cur is None:
                raise NatlensError(f"{key}: before any Name:", path=path, where=str(lineno))
            elif key == "Type":
                cur.type = val
            elif key == "Header":
                cur.header = dict(_pairs(val.split()))
            elif key == "Members":
                in_members = True
            else:
                cur.header[key.lower()] = val
            continue
        toks = _split(line, path, lineno)
        _make_entries(cur, toks[0], toks[1:], lineno, path)
    return sets
