"""nft expressions against a first packet: values, literals, sets and maps.

Rules arrive as libnftables-json statements (netfilter/nft.py). Here an
expression (``{"payload": {"protocol": "ip", "field": "daddr"}}``, ``{"meta":
{"key": "mark"}}``, a concatenation, ``&``/``|``/``^``) is compiled once into a
``Value``: its datatype and a function giving its value for a WalkState. That
function answers a value, ``BREAK`` (the kernel's NFT_BREAK: the expression has
no value here, as ``tcp dport`` on a UDP packet or ``iifname`` in output, so the
rule does not match) or an ``Undecided``. Literals are read by the datatype of
the expression they are compared with, into inclusive integer ranges (or
interface-name patterns), so that a prefix, a range and a set element are one
kind of thing. ``Elements`` holds a set or map the same way, hashed when its
elements are exact (kube-proxy's maps of 10,000 Services are looked up in O(1)).
Anything outside this vocabulary raises ``Unsupported``: the walk turns it into
an undecided path naming the rule, never a guess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from natlens.netfilter.walk.matches import Undecided
from natlens.netfilter.walk.packet import PROTO_NUM
from natlens.netfilter.walk.state import WalkState

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules


class Unsupported(Exception):
    """An expression or literal the model does not know; the message says which."""


class _Break:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BREAK"


BREAK = _Break()
_PORT_PROTOS = (6, 17, 132, 136, 33)

# datatypes: what a payload/meta/ct/fib expression yields
_PAYLOAD = {("ip", "saddr"): "ipv4_addr", ("ip", "daddr"): "ipv4_addr", ("ip", "protocol"): "inet_proto",
            ("ip6", "saddr"): "ipv6_addr", ("ip6", "daddr"): "ipv6_addr",
            ("ip6", "nexthdr"): "inet_proto", ("tcp", "flags"): "tcp_flag"}
_META = {"l4proto": "inet_proto", "iifname": "ifname", "oifname": "ifname", "iif": "ifname",
         "oif": "ifname", "mark": "mark", "nfproto": "nf_proto", "protocol": "ether_type",
         "pkttype": "pkt_type"}
_CT = {"state": "ct_state", "status": "ct_status", "direction": "ct_dir", "mark": "mark",
       "l3proto": "nf_proto", "protocol": "inet_proto"}
_SYMBOLS = {
    "ct_state": {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64},
    "ct_status": {"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16,
                  "dnat": 32, "dying": 512},
    "tcp_flag": {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128},
    "ct_dir": {"original": 0, "reply": 1},
    "nf_proto": {"ipv4": 2, "ipv6": 10},
    "ether_type": {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806},
    "pkt_type": {"host": 0, "unicast": 0, "broadcast": 1, "multicast": 2, "other": 3},
    "fib_addrtype": {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4,
                     "multicast": 5, "blackhole": 6, "unreachable": 7, "prohibit": 8},
    "inet_proto": {**PROTO_NUM, "ipv6-icmp": 58},
    "inet_service": {"ssh": 22, "domain": 53, "http": 80, "https": 443, "dns": 53},
}
BITMASK_TYPES = ("ct_state", "ct_status", "tcp_flag")
_FIB_TYPE = {"LOCAL": 2, "BROADCAST": 3, "MULTICAST": 5, "UNICAST": 1}

Fn = Callable[[WalkState], Any]


@dataclass(frozen=True)
class Value:
    """A compiled expression: its datatype(s) (a tuple for a concatenation) and its value.

    ``numgen`` is (modulus, offset) for a random/incremental number generator: it has
    no one value, the walk forks over all of them.
    """

    types: tuple[str, ...]
    fn: Fn
    numgen: tuple[int, int] | None = None
    text: str = ""


# ----------------------------------------------------------------- expressions


def compile_value(e: Any, node: NodeRules) -> Value:
    """An expression (libnftables-json) -> Value; raises Unsupported for what is not modelled."""
    if isinstance(e, dict) and len(e) == 1:
        (k, v), = e.items()
        if k == "payload":
            return _payload(v)
        if k == "meta":
            return _meta(v["key"])
        if k == "ct":
            return _ct(v)
        if k == "fib":
            return _fib(v, node)
        if k in ("numgen", "jhash", "symhash"):
            return _numgen(k, v)
        if k == "concat":
            parts = [compile_value(x, node) for x in v]
            if any(p.numgen for p in parts):
                raise Unsupported("a number generator inside a concatenation")
            fns = [p.fn for p in parts]
            return Value(tuple(t for p in parts for t in p.types), lambda st: _concat(fns, st))
        if k in ("&", "|", "^"):
            return _binop(k, v, node)
        if k == "map":
            raise Unsupported("a map lookup as a value")
    raise Unsupported(f"expression {_short(e)}")


def _short(e: Any) -> str:
    s = str(e)
    return s if len(s) <= 60 else s[:57] + "..."


def _concat(fns: list[Fn], st: WalkState) -> Any:
    out = []
    for f in fns:
        v = f(st)
        if v is BREAK or isinstance(v, Undecided):
            return v
        out.append(v)
    return tuple(out)


def _payload(v: dict) -> Value:
    proto, fld = v.get("protocol"), v.get("field")
    if proto is None:
        raise Unsupported(f"raw payload expression {v}")
    if fld in ("sport", "dport") and proto in ("th", "tcp", "udp", "sctp", "udplite", "dccp"):
        src = fld == "sport"
        if proto == "th":
            def th(st: WalkState) -> Any:
                if st.pnum not in _PORT_PROTOS:
                    return Undecided(f"th {fld} of protocol {st.pnum} (no ports) not modelled")
                return st.sport if src else st.dport
            return Value(("inet_service",), th)
        pnum = PROTO_NUM[proto]
        return Value(("inet_service",), lambda st: (st.sport if src else st.dport) if st.pnum == pnum else BREAK)
    t = _PAYLOAD.get((proto, fld))
    if t is None:
        raise Unsupported(f"payload {proto} {fld}")
    fam = 4 if proto == "ip" else 6 if proto == "ip6" else None
    if fld in ("saddr", "daddr"):
        src = fld == "saddr"
        return Value((t,), lambda st: (st.src if src else st.dst) if st.fam == fam else BREAK)
    if fld in ("protocol", "nexthdr"):
        return Value((t,), lambda st: st.pnum if st.fam == fam else BREAK)
    # tcp flags: a first packet is a SYN
    return Value((t,), lambda st: 2 if st.pnum == 6 else BREAK)


def _meta(key: str) -> Value:
    t = _META.get(key)
    if t is None:
        raise Unsupported(f"meta {key}")
    if key == "l4proto":
        return Value((t,), lambda st: st.pnum)
    if key in ("iifname", "iif"):
        return Value((t,), _iif)
    if key in ("oifname", "oif"):
        return Value((t,), _oif)
    if key == "mark":
        return Value((t,), lambda st: st.mark)
    if key == "nfproto":
        return Value((t,), lambda st: 2 if st.fam == 4 else 10)
    if key == "protocol":
        return Value((t,), lambda st: 0x0800 if st.fam == 4 else 0x86DD)
    return Value((t,), lambda st: 0)  # pkttype: the model's packets are unicast to this host


def _iif(st: WalkState) -> Any:
    if st.local and st.hook in ("OUTPUT", "POSTROUTING"):
        return BREAK  # no input device for a packet the node generated
    if st.in_iface is None:
        return Undecided("incoming interface unknown (give --in-iface) for iifname")
    return st.in_iface


def _oif(st: WalkState) -> Any:
    if st.hook in ("PREROUTING", "INPUT"):
        return BREAK  # not routed out yet
    if st.out_iface is None:
        return Undecided("outgoing interface unknown (give --out-iface or ip-addr) for oifname")
    return st.out_iface


def _ct(v: dict) -> Value:
    key = v["key"]
    t = _CT.get(key)
    if t is None or v.get("dir") not in (None, "original"):
        raise Unsupported(f"ct {v.get('dir', '') + ' ' if v.get('dir') else ''}{key}")
    if key == "state":
        return Value((t,), _ct_state)
    if key == "status":
        return Value((t,), _ct_status)
    if key == "direction":
        return Value((t,), lambda st: 0 if st.ct and not st.notrack else BREAK)
    if key == "mark":
        return Value((t,), lambda st: st.ctmark if st.ct and not st.notrack else BREAK)
    if key == "l3proto":
        return Value((t,), lambda st: (2 if st.fam == 4 else 10) if st.ct and not st.notrack else BREAK)
    return Value((t,), lambda st: st.pnum if st.ct and not st.notrack else BREAK)


def _ct_status(st: WalkState) -> Any:
    """The whole status word of the new connection, as nft compares it.

    IPS_DST_NAT (32) / IPS_SRC_NAT (16) once a NAT changed the tuple; the nat core sets
    IPS_DST_NAT_DONE (128) / IPS_SRC_NAT_DONE (64) for every connection it saw, a null
    binding too; IPS_CONFIRMED (8) once conntrack confirmed it (a packet looping back in).
    ``ct status == dnat`` compares all of it, ``ct status dnat`` tests one bit.
    """
    if not st.ct or st.notrack:
        return BREAK
    return ((32 if st.dnat else 0) | (16 if st.snat is not None and st.snat.known else 0)
            | (128 if st.nat_dst_done else 0) | (64 if st.nat_src_done else 0)
            | (8 if st.confirmed else 0))


def _ct_state(st: WalkState) -> int:
    """untracked after notrack, invalid before conntrack ran (priority -200), else new."""
    if st.notrack:
        return 64
    return 8 if st.ct else 1


def _fib(v: dict, node: NodeRules) -> Value:
    flags = v.get("flags") or []
    flags = [flags] if isinstance(flags, str) else list(flags)
    if v.get("result") != "type" or not ({"saddr", "daddr"} & set(flags)) or \
            set(flags) - {"saddr", "daddr", "iif"}:
        raise Unsupported(f"fib {' . '.join(flags)} {v.get('result')}")
    src, iif = "saddr" in flags, "iif" in flags
    no_addrs = Undecided("node addresses unknown (give ip-addr.txt or --local-ip) for fib ... type")

    def fib(st: WalkState) -> Any:
        if not node.addresses_known:
            return no_addrs
        iface = None
        if iif:
            iface = _iif(st)
            if iface is BREAK or isinstance(iface, Undecided):
                return iface
        return _FIB_TYPE[node.addr_type(st.src if src else st.dst, iface, st.fam)]
    return Value(("fib_addrtype",), fib)


def _numgen(kind: str, v: dict) -> Value:
    mod, off = int(v["mod"]), int(v.get("offset", 0))
    if mod < 1:
        raise Unsupported(f"{kind} mod {mod}")
    return Value(("int",), lambda st: Undecided(f"{kind} outside a match or map"), numgen=(mod, off))


def _binop(op: str, v: list, node: NodeRules) -> Value:
    left = compile_value(v[0], node)
    if len(left.types) != 1 or left.numgen:
        raise Unsupported(f"'{op}' on {left.types}")
    rights = []
    for r in v[1:]:
        lo, hi = literal(left.types[0], r)[0]
        if lo != hi:
            raise Unsupported(f"'{op}' with a range")
        rights.append(lo)
    f = left.fn

    def calc(st: WalkState) -> Any:
        x = f(st)
        if x is BREAK or isinstance(x, Undecided):
            return x
        for r in rights:
            x = x & r if op == "&" else x | r if op == "|" else x ^ r
        return x
    return Value(left.types, calc)


# ----------------------------------------------------------------- literals

Range = tuple[Any, Any]  # inclusive (lo, hi) ints, or ("*", prefix) / (name, name) for ifname


def literal(t: str, v: Any) -> list[Range]:
    """A literal of datatype t -> the ranges it stands for (one, or one per flag-list item)."""
    if isinstance(v, dict) and len(v) == 1:
        (k, x), = v.items()
        if k == "prefix":
            lo, _ = _scalar(t, x["addr"])
            bits = 32 if t == "ipv4_addr" else 128
            host = (1 << (bits - int(x["len"]))) - 1
            return [(lo & ~host, (lo & ~host) | host)]
        if k == "range":
            return [(_scalar(t, x[0])[0], _scalar(t, x[1])[1])]
    if isinstance(v, list):
        if t in BITMASK_TYPES:
            m = 0
            for x in v:
                m |= _scalar(t, x)[0]
            return [(m, m)]
        raise Unsupported(f"list {v} for {t}")
    return [_scalar(t, v)]


def _scalar(t: str, v: Any) -> Range:
    if t == "ifname":
        if not isinstance(v, str):
            raise Unsupported(f"interface name {v!r}")
        return ("*", v[:-1]) if v.endswith("*") and not v.endswith("\\*") else (v, v)
    if isinstance(v, bool):
        raise Unsupported(f"{v!r} for {t}")
    if isinstance(v, int):
        return (v, v)
    if not isinstance(v, str):
        raise Unsupported(f"{_short(v)} for {t}")
    if t in ("ipv4_addr", "ipv6_addr"):
        try:
            a = ipaddress.ip_address(v)
        except ValueError:
            raise Unsupported(f"{v!r} is not an address") from None
        if (a.version == 4) != (t == "ipv4_addr"):
            raise Unsupported(f"{v} for {t}")
        return (int(a), int(a))
    sym = _SYMBOLS.get(t, {})
    if v in sym:
        return (sym[v], sym[v])
    if t in BITMASK_TYPES and "," in v:
        m = 0
        for x in v.split(","):
            m |= _scalar(t, x.strip())[0]
        return (m, m)
    try:
        n = int(v, 0)
    except ValueError:
        raise Unsupported(f"{v!r} for {t}") from None
    return (n, n)


def in_range(x: Any, r: Range) -> bool:
    """Whether value x lies in range r (an interface name against a pattern too)."""
    lo, hi = r
    if lo == "*":
        return isinstance(x, str) and x.startswith(hi)
    if isinstance(lo, str):
        return x == lo
    return lo <= x <= hi


# ----------------------------------------------------------------- sets and maps


class Elements:
    """A set or map's elements, read by the key's datatypes, for lookups.

    Exact keys go into a dict; ranges, prefixes and interface patterns are tried in
    order. ``get`` answers (found, data).
    """

    def __init__(self, types: tuple[str, ...], items: list[tuple[Any, Any]], unread: str = ""):
        self.types = types
        self.unread = unread  # why a miss is not a no: elements the parser could not read
        self.exact: dict[Any, Any] = {}
        self.ranged: list[tuple[list[list[Range]], Any]] = []
        for key, data in items:
            parts = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
            if len(parts) != len(types):
                raise Unsupported(f"element {_short(key)} has {len(parts)} fields, the key {len(types)}")
            ranges = [literal(t, p) for t, p in zip(types, parts, strict=True)]
            if all(len(r) == 1 and r[0][0] == r[0][1] and r[0][0] != "*" for r in ranges):
                k = tuple(r[0][0] for r in ranges)
                self.exact.setdefault(k[0] if len(k) == 1 else k, data)
            else:
                self.ranged.append((ranges, data))

    def get(self, x: Any) -> tuple[bool, Any]:
        """(True, data) for a hit, (False, None) for a miss."""
        if x in self.exact:
            return True, self.exact[x]
        xs = x if isinstance(x, tuple) else (x,)
        for ranges, data in self.ranged:
            if all(any(in_range(v, r) for r in rs) for v, rs in zip(xs, ranges, strict=False)):
                return True, data
        return False, None
