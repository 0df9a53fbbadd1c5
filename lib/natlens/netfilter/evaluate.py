"""Walk the first packet of a connection through a node's netfilter rules.

The order is the kernel's (hook, then table priority within the hook)::

    from outside:  PREROUTING raw, mangle, nat -> routing decision
                   local:   INPUT mangle, filter, nat  [-> IPVS]
                   forward: FORWARD mangle, filter -> POSTROUTING mangle, nat
    from the node: OUTPUT raw, mangle, nat [-> IPVS], filter -> routing ->
                   POSTROUTING mangle, nat

The nat table is consulted once per connection and direction of NAT (DNAT in
PREROUTING/OUTPUT, SNAT in POSTROUTING/INPUT) and not at all for an untracked
packet, as in the kernel. IPVS, absent from the test kernel, is modelled from the
ipvsadm dump: a packet reaching LOCAL_IN (or LOCAL_OUT) addressed to a virtual
service goes to each real server in turn (one branch per server), then through
OUTPUT mangle/filter and POSTROUTING, like ip_vs_nat_xmit does.

A probabilistic match (statistic) forks the walk: both ways are followed and
reported with their probability. A match or target the model does not know stops
that branch as "undecided", naming the rule: the answer is never a guess.

Addresses are ints with their family beside them (``_State.fam``, the Net's
version, the set's family, the node address's version): an IPv6 packet walks the
ip6tables-save rules only, and ::c612:1064 is never 198.18.16.100.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from natlens.errors import NatlensError
from natlens.netfilter.iptables import Rule, format_net, parse_net

HOOK_TABLES = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "dccp": 33, "esp": 50,
             "ah": 51, "gre": 47, "icmpv6": 58, "ipv6-icmp": 58}
# Targets that neither decide nor change anything the model tracks: logged and passed.
PASS_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "CHECKSUM", "TCPMSS", "CLASSIFY", "DSCP", "TOS",
                "TTL", "AUDIT", "NFACCT", "IDLETIMER", "LED", "SECMARK", "CONNSECMARK"}
INDEX_MIN = 48  # chains at least this long get a per-destination index


def ip_addr(text: str) -> tuple[int, int]:
    """'198.18.0.1' -> (4, int), 'fd00::1' -> (6, int): the int alone loses the family."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise NatlensError(f"bad address {text!r}") from None
    return a.version, int(a)


def ip_int(text: str) -> int:
    """The address as an int, without its family: use ip_addr wherever families can mix."""
    return ip_addr(text)[1]


def ip_str(v: int, fam: int | None = None) -> str:
    """An address int back to text; without fam, values below 2**32 are taken as IPv4."""
    if fam is None:
        fam = 4 if v < (1 << 32) else 6
    return str(ipaddress.IPv4Address(v)) if fam == 4 else str(ipaddress.IPv6Address(v))


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


class _State:
    """One branch of the walk: the packet as modified so far plus its trace."""

    __slots__ = ("fam", "src", "dst", "sport", "dport", "proto", "pnum", "in_iface", "out_iface", "local",
                 "mark", "ctmark", "hook", "orig_src", "orig_dst", "orig_sport", "orig_dport",
                 "dnat", "snat", "snat_how", "nat_dst_done", "nat_src_done", "notrack", "ipvs",
                 "ipvs_method", "prob", "trace", "conditions", "undecided", "outcome", "decided_by",
                 "confirmed", "confirm_ctmark", "ct")

    def confirm(self) -> None:
        """Conntrack confirms the entry (end of POSTROUTING or INPUT): later drops keep it."""
        if not self.confirmed and not self.notrack:
            self.confirmed = True
            self.confirm_ctmark = self.ctmark

    def fork(self) -> _State:
        n = _State.__new__(_State)
        for k in _State.__slots__:
            setattr(n, k, getattr(self, k))
        n.trace = list(self.trace)
        n.conditions = list(self.conditions)
        n.undecided = list(self.undecided)
        return n


@dataclass
class Path:
    """One way the packet can go (more than one only with statistic matches or IPVS)."""

    probability: float
    outcome: str                  # forwarded, delivered locally, dropped, undecided
    snat: bool | None
    snat_to: str | None
    dnat_to: str | None
    out_iface: str | None
    mark: int
    ctmark: int                   # connection mark when conntrack confirmed the entry
    conntrack: bool               # the kernel keeps a conntrack entry for it (confirmed)
    conditions: list[str]
    trace: list[str]
    undecided: list[str]
    decided_by: list[str]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Verdict:
    """What happens to the packet: every path, and the answer when all paths agree."""

    packet: Packet
    paths: list[Path] = field(default_factory=list)

    @property
    def snat(self) -> bool | None:
        vals = {p.snat for p in self.paths}
        return vals.pop() if len(vals) == 1 else None

    @property
    def snat_to(self) -> str | None:
        vals = {p.snat_to for p in self.paths if p.snat}
        return vals.pop() if len(vals) == 1 else (", ".join(sorted(v or "?" for v in vals)) or None)

    @property
    def dnat_to(self) -> list[str]:
        return sorted({p.dnat_to for p in self.paths if p.dnat_to})

    @property
    def undecided(self) -> list[str]:
        out: list[str] = []
        for p in self.paths:
            out += [u for u in p.undecided if u not in out]
        return out

    @property
    def verdict(self) -> str:
        def one(p: Path) -> str:
            s = p.outcome
            if p.out_iface and p.outcome == "forwarded":
                s += f" via {p.out_iface}"
            if p.dnat_to:
                s += f", DNAT to {p.dnat_to}"
            if p.snat:
                s += f", SNAT to {p.snat_to or '?'}"
            elif p.snat is False and p.outcome in ("forwarded", "delivered locally"):
                s += ", not SNATed"
            return s
        if len(self.paths) == 1:
            return one(self.paths[0])
        return "; ".join(f"p={p.probability:.3g}: {one(p)}" for p in self.paths)

    @property
    def trace(self) -> list[str]:
        """The first path's trace, then each other path's lines from where it diverged."""
        if not self.paths:
            return []
        first = self.paths[0].trace
        out = list(first)
        for n, p in enumerate(self.paths[1:], 2):
            k = 0
            while k < min(len(first), len(p.trace)) and first[k] == p.trace[k]:
                k += 1
            out.append(f"== path {n} (p={p.probability:.3g}) from line {k + 1}:")
            out += p.trace[k:]
        return out

    def to_json(self) -> dict:
        return {"snat": self.snat, "snat_to": self.snat_to, "dnat_to": self.dnat_to,
                "verdict": self.verdict, "trace": self.trace, "undecided": self.undecided,
                "paths": [p.to_dict() for p in self.paths]}

    def __str__(self) -> str:
        return json.dumps(self.to_json(), indent=2)


# ---------------------------------------------------------------- rule compilation

_UNKNOWN = "unknown"


def _ports(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    a = int(lo) if lo else 0
    b = (int(hi) if hi else 65535) if sep else a
    return a, b


def _net_any(nets, v: int, fam: int) -> bool:
    return any(ver == fam and (v & m) == a for a, m, ver in nets)


_TCP_FLAGS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128,
              "ALL": 255, "NONE": 0}


def _flags(text: str) -> int:
    v = 0
    for f in text.split(","):
        v |= _TCP_FLAGS[f.upper()]
    return v


class Compiler:
    """Turns a Rule's matches into small check functions against a _State.

    A check returns True, False, a float (the probability that a probabilistic match
    matches) or a str (why the model cannot tell: the rule becomes undecided).
    """

    def __init__(self, node):
        self.node = node

    def compile(self, rule: Rule) -> list:
        checks = []
        for m in rule.matches:
            if m.module == "comment":
                continue
            fn = getattr(self, "m_" + m.module.replace("-", "_"), None)
            if fn is None:
                reason = f"match -m {m.module} not modelled"
                checks.append(lambda st, r=reason: r)
                continue
            try:
                checks.extend(fn(m, rule))
            except NatlensError:
                raise
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise NatlensError(f"bad -m {m.module} options ({exc})", path=rule.path,
                                   where=str(rule.lineno)) from None
        return checks

    def _unknown_opts(self, m, known: set[str]):
        bad = [o.name for o in m.options if o.name not in known]
        if bad:
            reason = f"-m {m.module} option {' '.join(bad)} not modelled"
            return [lambda st, r=reason: r]
        return []

    # protocol matches --------------------------------------------------------
    def m_tcp(self, m, rule):
        pnum = PROTO_NUM[m.module]
        out = [lambda st: st.pnum == pnum]
        for o in m.options:
            if o.name in ("--dport", "--destination-port", "--sport", "--source-port"):
                a, b = _ports(o.args[0])
                dst = o.name in ("--dport", "--destination-port")
                neg = o.neg
                out.append(lambda st, a=a, b=b, d=dst, n=neg:
                           (a <= (st.dport if d else st.sport) <= b) != n)
            elif o.name == "--syn":
                out.append(lambda st, n=o.neg: not n)
            elif o.name == "--tcp-flags":
                mask, comp = _flags(o.args[0]), _flags(o.args[1])
                out.append(lambda st, v=((2 & mask) == comp), n=o.neg: v != n)  # first packet: SYN
            else:
                out += self._unknown_opts(m, {"--dport", "--destination-port", "--sport",
                                              "--source-port", "--syn", "--tcp-flags"})
                break
        return out

    m_udp = m_sctp = m_udplite = m_dccp = m_tcp

    def m_icmp(self, m, rule):
        pnum = PROTO_NUM["icmp"]
        return [lambda st: st.pnum == pnum] + [lambda st: "icmp type not modelled"] * bool(m.options)

    def m_multiport(self, m, rule):
        out = [lambda st: st.pnum in (6, 17, 132, 136, 33)]
        for o in m.options:
            ranges = [_ports(p) for p in o.args[0].split(",")]
            if o.name in ("--dports", "--destination-ports"):
                which = "d"
            elif o.name in ("--sports", "--source-ports"):
                which = "s"
            elif o.name == "--ports":
                which = "b"
            else:
                return out + self._unknown_opts(m, set())

            def chk(st, rs=ranges, w=which, n=o.neg):
                hit = False
                if w in "db":
                    hit = any(a <= st.dport <= b for a, b in rs)
                if not hit and w in "sb":
                    hit = any(a <= st.sport <= b for a, b in rs)
                return hit != n
            out.append(chk)
        return out

    # marks ---------------------------------------------------------------------
    def m_mark(self, m, rule):
        out = self._unknown_opts(m, {"--mark"})
        for o in m.options:
            if o.name == "--mark":
                v, _, mk = o.args[0].partition("/")
                val, mask = int(v, 0), int(mk, 0) if mk else 0xFFFFFFFF
                if m.module == "connmark":  # no conntrack entry (raw table): never matches
                    out.append(lambda st, val=val, mask=mask, n=o.neg:
                               st.ct and ((st.ctmark & mask) == val) != n)
                else:
                    out.append(lambda st, val=val, mask=mask, n=o.neg: ((st.mark & mask) == val) != n)
        return out

    m_connmark = m_mark

    def m_comment(self, m, rule):
        return []

    # addresses -------------------------------------------------------------------
    def m_iprange(self, m, rule):
        out = self._unknown_opts(m, {"--src-range", "--dst-range"})
        for o in m.options:
            if o.name in ("--src-range", "--dst-range"):
                a, _, b = o.args[0].partition("-")
                (fam, lo), (_, hi) = ip_addr(a), ip_addr(b or a)
                s = o.name == "--src-range"
                out.append(lambda st, lo=lo, hi=hi, s=s, n=o.neg, f=fam:
                           (st.fam == f and lo <= (st.src if s else st.dst) <= hi) != n)
        return out

    def m_addrtype(self, m, rule):
        node = self.node
        out = self._unknown_opts(m, {"--src-type", "--dst-type", "--limit-iface-in",
                                     "--limit-iface-out"})
        limit = None
        for o in m.options:
            if o.name == "--limit-iface-in":
                limit = "in"
            elif o.name == "--limit-iface-out":
                limit = "out"
        for o in m.options:
            if o.name not in ("--src-type", "--dst-type"):
                continue
            types = set(o.args[0].upper().split(","))
            s = o.name == "--src-type"

            def chk(st, types=types, s=s, n=o.neg, limit=limit):
                if not node.addresses_known:
                    return "node addresses unknown (give ip-addr.txt or --local-ip) for -m addrtype"
                addr = st.src if s else st.dst
                iface = None
                if limit:
                    iface = st.in_iface if limit == "in" else st.out_iface
                    if iface is None:
                        return f"-m addrtype --limit-iface-{limit}: interface unknown"
                return (node.addr_type(addr, iface, st.fam) in types) != n
            out.append(chk)
        return out

    def m_set(self, m, rule):
        node = self.node
        out = []
        ret_nomatch = False
        for o in m.options:
            if o.name == "--return-nomatch":
                ret_nomatch = True
            elif o.name in ("--update-counters", "--update-subcounters") and o.neg:
                pass
            elif o.name not in ("--match-set", "--set"):
                out += self._unknown_opts(m, {"--match-set", "--set", "--return-nomatch",
                                              "--update-counters", "--update-subcounters"})
        for o in m.options:
            if o.name not in ("--match-set", "--set"):
                continue
            name, flags = o.args[0], o.args[1].split(",")
            if any(f not in ("src", "dst") for f in flags):
                raise ValueError(f"bad set flags {o.args[1]!r}")

            def chk(st, name=name, flags=flags, n=o.neg):
                s = node.sets.get(name)
                if s is None:
                    return (f"ipset {name} not in the ipset dump" if node.sets_known
                            else f"ipset {name}: no ipset dump given")
                dims = s.dims
                if dims is None:
                    return f"ipset {name} of type {s.type} not modelled"
                if s.family != st.fam and ("ip" in dims or "net" in dims):
                    return n  # ip_set_test: a set of the other family never matches
                if len(flags) < len(dims):
                    return n  # the kernel never matches with fewer flags than dimensions
                vals = []
                for d, f in zip(dims, flags, strict=False):
                    if d in ("ip", "net"):
                        vals.append(st.src if f == "src" else st.dst)
                    elif s.type == "bitmap:port":
                        if st.pnum not in (6, 17, 132, 136):
                            return n
                        vals.append(st.sport if f == "src" else st.dport)
                    else:
                        vals.append((st.pnum, st.sport if f == "src" else st.dport))
                hit = s.test(vals)
                return hit != n
            out.append(chk)
        if ret_nomatch:  # would need "matched a nomatch entry" from the lookup: not modelled
            out.append(lambda st: "-m set --return-nomatch not modelled")
        return out

    def m_physdev(self, m, rule):
        out = self._unknown_opts(m, {"--physdev-in", "--physdev-out", "--physdev-is-in",
                                     "--physdev-is-out", "--physdev-is-bridged"})
        # routed packets (the model's case) never came through a bridge port
        for o in m.options:
            out.append(lambda st, n=o.neg: n)
        return out

    # conntrack -------------------------------------------------------------------
    def m_conntrack(self, m, rule):
        has_state = any(o.name in ("--ctstate", "--state") for o in m.options)
        # Without a conntrack entry (raw table) the kernel checks only the state, as INVALID,
        # and then answers "matched" if there was a state option, ignoring the rest.
        out = []
        for o in m.options:
            n_before = len(out)
            if o.name in ("--ctstate", "--state"):
                states = set(o.args[0].upper().split(","))
                out.append(lambda st, s=states, n=o.neg: bool(_ctstates(st) & s) != n)
            elif o.name == "--ctdir":
                orig = o.args[0].upper() == "ORIGINAL"
                out.append(lambda st, v=orig, n=o.neg: v != n)
            elif o.name == "--ctproto":
                p = PROTO_NUM.get(o.args[0].lower())
                p = int(o.args[0]) if p is None else p
                out.append(lambda st, p=p, n=o.neg: (st.pnum == p) != n)
            elif o.name in ("--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst"):
                net = parse_net(o.args[0])
                out.append(lambda st, net=net, w=o.name, n=o.neg:
                           (st.fam == net[2] and (_ct_addr(st, w) & net[1]) == net[0]) != n)
            elif o.name in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport",
                            "--ctrepldstport"):
                a, b = _ports(o.args[0])
                out.append(lambda st, a=a, b=b, w=o.name, n=o.neg:
                           (a <= _ct_port(st, w) <= b) != n)
            elif o.name == "--ctstatus":
                bits = set(o.args[0].upper().split(","))
                # a first packet's conntrack entry: not expected, no reply, not confirmed
                out.append(lambda st, b=bits, n=o.neg: ("NONE" in b) != n)
            else:
                out += self._unknown_opts(m, set())
            if o.name not in ("--ctstate", "--state"):
                out[n_before:] = [lambda st, c=c: c(st) if st.ct else has_state
                                  for c in out[n_before:]]
        return out

    m_state = m_conntrack

    def m_policy(self, m, rule):
        out = self._unknown_opts(m, {"--dir", "--pol"})
        for o in m.options:
            if o.name == "--pol":  # the model's packets are never IPsec
                out.append(lambda st, p=o.args[0], n=o.neg: (p == "none") != n)
        return out

    def m_pkttype(self, m, rule):
        out = self._unknown_opts(m, {"--pkt-type"})
        for o in m.options:
            if o.name == "--pkt-type":
                want = o.args[0].lower()
                out.append(lambda st, t=want, n=o.neg:
                           (self.node.pkt_type(st.dst, st.fam) == t) != n)
        return out

    def m_statistic(self, m, rule):
        mode = m.get("--mode")
        out = self._unknown_opts(m, {"--mode", "--probability", "--every", "--packet"})
        if mode is None:
            raise ValueError("no --mode")
        if mode.args[0] == "random":
            o = m.get("--probability")
            p = float(o.args[0])
            p = 1.0 - p if (o.neg or mode.neg) else p
        else:
            o = m.get("--every")
            p = 1.0 / int(o.args[0])
            p = 1.0 - p if (o.neg or mode.neg) else p
        return out + [lambda st, p=p: p]

    def m_ipvs(self, m, rule):
        out = self._unknown_opts(m, {"--ipvs", "--vdir", "--vmethod", "--vproto"})
        for o in m.options:
            if o.name == "--ipvs":
                out.append(lambda st, n=o.neg: st.ipvs != n)
            elif o.name == "--vdir":
                orig = o.args[0].upper() == "ORIGINAL"
                out.append(lambda st, v=orig, n=o.neg: (st.ipvs and v) != n)
            elif o.name == "--vmethod":
                meth = o.args[0].upper()
                out.append(lambda st, v=meth, n=o.neg: (st.ipvs and st.ipvs_method == v) != n)
            elif o.name == "--vproto":
                out.append(lambda st, v=o.args[0], n=o.neg:
                           (st.ipvs and st.pnum == PROTO_NUM.get(v, -1)) != n)
        return out


def _ctstates(st: _State) -> set[str]:
    if st.notrack:
        return {"UNTRACKED"}
    if not st.ct:
        return {"INVALID"}
    s = {"NEW"}
    if st.dnat:
        s.add("DNAT")
    if st.snat:
        s.add("SNAT")
    return s


def _ct_addr(st: _State, which: str) -> int:
    if which == "--ctorigsrc":
        return st.orig_src
    if which == "--ctorigdst":
        return st.orig_dst
    if which == "--ctreplsrc":
        return st.dst if st.nat_dst_done else st.orig_dst
    return st.src if st.nat_src_done else st.orig_src


def _ct_port(st: _State, which: str) -> int:
    if which == "--ctorigsrcport":
        return st.orig_sport
    if which == "--ctorigdstport":
        return st.orig_dport
    if which == "--ctreplsrcport":
        return st.dport if st.nat_dst_done else st.orig_dport
    return st.sport if st.nat_src_done else st.orig_sport


def _iface_match(pattern: str, name: str | None) -> bool | None:
    if name is None:
        return None
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


class CompiledRule:
    __slots__ = ("rule", "checks", "pnum", "pneg")

    def __init__(self, rule: Rule, checks: list):
        self.rule = rule
        self.checks = checks
        self.pnum = None
        self.pneg = False
        if rule.proto:
            neg, p = rule.proto
            self.pneg = neg
            if p in ("all", "0"):
                self.pnum = -1
            else:
                self.pnum = PROTO_NUM.get(p, int(p) if p.isdigit() else -2)


def rule_matches(cr: CompiledRule, st: _State):
    """True / False / probability (float) / reason the model cannot tell (str)."""
    r = cr.rule
    if cr.pnum is not None and ((cr.pnum == -1 or cr.pnum == st.pnum) == cr.pneg):
        return False
    if r.src is not None and _net_any(r.src[1], st.src, st.fam) == r.src[0]:
        return False
    if r.dst is not None and _net_any(r.dst[1], st.dst, st.fam) == r.dst[0]:
        return False
    if r.fragment is True:
        return False
    unknown = None
    if r.in_iface is not None:
        hit = _iface_match(r.in_iface[1], "" if st.local else st.in_iface)
        if hit is None:
            unknown = "incoming interface unknown (give --in-iface) for -i"
        elif hit == r.in_iface[0]:
            return False
    if r.out_iface is not None:
        hit = _iface_match(r.out_iface[1], "" if st.hook == "PREROUTING" else st.out_iface)
        if hit is None:
            unknown = "outgoing interface unknown (give --out-iface or ip-addr) for -o"
        elif hit == r.out_iface[0]:
            return False
    prob = None
    for chk in cr.checks:
        v = chk(st)
        if v is True:
            continue
        if v is False:
            return False
        if isinstance(v, float):
            prob = v if prob is None else prob * v
        else:
            unknown = unknown or v
    if unknown:
        return unknown
    return True if prob is None else prob


# ---------------------------------------------------------------- targets


def _target_opts(args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                opts[a] = args[i + 1]
                i += 2
                continue
            opts[a] = ""
        i += 1
    return opts


def _mark_op(opts: dict[str, str], nfmask_default=0xFFFFFFFF) -> tuple[int, int] | None:
    """MARK/CONNMARK value options -> (xor value, clear mask): new = (old & ~mask) ^ value."""
    def vm(text: str, default_mask: int) -> tuple[int, int]:
        v, _, m = text.partition("/")
        return int(v, 0), (int(m, 0) if m else default_mask)
    if "--set-xmark" in opts:
        return vm(opts["--set-xmark"], 0xFFFFFFFF)
    if "--set-mark" in opts:
        v, m = vm(opts["--set-mark"], 0xFFFFFFFF)
        return v, m | v
    if "--and-mark" in opts:
        return 0, ~int(opts["--and-mark"], 0) & 0xFFFFFFFF
    if "--or-mark" in opts:
        v = int(opts["--or-mark"], 0)
        return v, v
    if "--xor-mark" in opts:
        return int(opts["--xor-mark"], 0), 0
    return None


def _nat_range(text: str) -> tuple[str, int | None, str]:
    """'10.0.0.1', '10.0.0.1:80', '10.0.0.1-10.0.0.3:80-90', ':80' -> (first ip, first port, text)."""
    if text.startswith("["):
        addr, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    else:
        addr, _, port = text.partition(":")
    first = addr.split("-")[0] if addr else ""
    p = int(port.split("-")[0]) if port else None
    return first, p, text


@dataclass
class Target:
    kind: str                 # jump, goto, accept, drop, return, pass, mark, connmark, masq,
    #                           snat, dnat, redirect, notrack, unknown
    name: str = ""
    opts: dict = field(default_factory=dict)
    reason: str = ""


def compile_target(rule: Rule, chains: dict) -> Target | None:
    t = rule.target
    if t is None:
        return None
    try:
        if t in chains:
            return Target("goto" if rule.goto else "jump", t)
        if rule.goto:
            return Target("unknown", t, reason=f"goto {t}: no such chain")
        if t in ("ACCEPT", "DROP", "RETURN", "REJECT"):
            return Target({"REJECT": "drop"}.get(t, t.lower()), t)
        if t in PASS_TARGETS:
            return Target("pass", t)
        opts = _target_opts(rule.target_args)
        if t in ("MARK", "CONNMARK"):
            op = _mark_op(opts)
            if t == "CONNMARK" and op is None:
                nf = int(opts.get("--nfmask", opts.get("--mask", "0xffffffff")), 0)
                ct = int(opts.get("--ctmask", opts.get("--mask", "0xffffffff")), 0)
                if "--save-mark" in opts:
                    return Target("connmark", t, {"save": (nf, ct)})
                if "--restore-mark" in opts:
                    return Target("connmark", t, {"restore": (nf, ct)})
            if op is None:
                return Target("unknown", t, reason=f"{t} options {' '.join(rule.target_args)} not modelled")
            return Target(t.lower(), t, {"op": op})
        if t == "MASQUERADE":
            return Target("masq", t, {"ports": opts.get("--to-ports")})
        if t == "SNAT":
            return Target("snat", t, {"to": _nat_range(opts["--to-source"])})
        if t == "DNAT":
            return Target("dnat", t, {"to": _nat_range(opts["--to-destination"])})
        if t == "REDIRECT":
            ports = opts.get("--to-ports")
            return Target("redirect", t, {"port": int(ports.split("-")[0]) if ports else None})
        if t == "NOTRACK" or (t == "CT" and set(opts) == {"--notrack"}):
            return Target("notrack", t)
    except (KeyError, ValueError) as exc:
        raise NatlensError(f"bad -j {t} options ({exc})", path=rule.path, where=str(rule.lineno)) from None
    return Target("unknown", t, reason=f"target {t} {' '.join(rule.target_args)} not modelled".replace("  ", " "))


# ---------------------------------------------------------------- the walk


class Walker:
    """Evaluates packets against one ruleset of a NodeRules (iptables-save for IPv4,
    ip6tables-save for IPv6); keeps compiled rules and chain indexes."""

    def __init__(self, node, ruleset=None):
        self.node = node
        self.ruleset = node.ruleset if ruleset is None else ruleset
        self.compiler = Compiler(node)
        self._compiled: dict[int, tuple[CompiledRule, Target | None]] = {}
        self._index: dict[tuple[str, str], tuple[dict, list[int]] | None] = {}

    def compile_all(self) -> int:
        """Compile every rule now (raises NatlensError for a malformed one); returns the count."""
        n = 0
        for r in self.ruleset.rules():
            self._get(r)
            n += 1
        return n

    def _get(self, rule: Rule):
        c = self._compiled.get(id(rule))
        if c is None:
            chains = self.ruleset.tables[rule.table]
            c = (CompiledRule(rule, self.compiler.compile(rule)), compile_target(rule, chains))
            self._compiled[id(rule)] = c
        return c

    # chain index: rules keyed by an exact -d address or an exact --dport ----------
    def _candidates(self, table: str, chain, st: _State) -> list[int] | None:
        key = (table, chain.name)
        idx = self._index.get(key, False)
        if idx is False:
            idx = self._build_index(chain) if len(chain.rules) >= INDEX_MIN else None
            self._index[key] = idx
        if idx is None:
            return None
        by_key, always = idx
        found = by_key.get(("d", st.fam, st.dst), []) + by_key.get(("p", st.pnum, st.dport), [])
        if not found:
            return always
        return sorted(set(found).union(always))

    @staticmethod
    def _build_index(chain):
        by_key: dict[tuple, list[int]] = {}
        always: list[int] = []
        for i, r in enumerate(chain.rules):
            key = None
            if r.dst and not r.dst[0] and len(r.dst[1]) == 1 and r.dst[1][0][1] in (
                    0xFFFFFFFF, (1 << 128) - 1):
                key = ("d", r.dst[1][0][2], r.dst[1][0][0])
            elif r.proto and not r.proto[0] and r.proto[1] in PROTO_NUM:
                for m in r.matches:
                    if m.module in ("tcp", "udp", "sctp"):
                        o = m.get("--dport") or m.get("--destination-port")
                        if o and not o.neg and o.args[0].isdigit():
                            key = ("p", PROTO_NUM[r.proto[1]], int(o.args[0]))
            if key is None:
                always.append(i)
            else:
                by_key.setdefault(key, []).append(i)
        return by_key, always

    # one table at one hook ---------------------------------------------------------
    def run_table(self, st: _State, table: str, hook: str) -> list[_State]:
        """Returns the branches, each with st.outcome None (accepted), 'dropped' or 'undecided'."""
        chains = self.ruleset.tables.get(table)
        if not chains or hook not in chains:
            return [st]
        st.hook = hook
        if table != "raw" and not st.notrack:
            st.ct = True  # conntrack (priority -200) ran between raw and mangle
        results = []
        work = [(st, [self._frame(table, chains[hook], st)])]
        while work:
            st, stack = work.pop()
            self._walk(st, table, chains, stack, work)
            results.append(st)
        results.sort(key=lambda s: -s.prob)
        return results

    def _frame(self, table, chain, st):
        return [chain, self._candidates(table, chain, st), 0, -1]

    def _walk(self, st: _State, table: str, chains, stack, work) -> None:
        tr = st.trace
        while True:
            frame = stack[-1]
            chain, cands, pos, last = frame
            n = len(cands) if cands is not None else len(chain.rules)
            if pos >= n:
                total = len(chain.rules)
                if cands is not None and last + 1 < total:
                    tr.append(f"{table}/{chain.name} #{last + 2}..#{total}: {total - last - 1} "
                              f"rules skipped (their -d/--dport cannot match)")
                stack.pop()
                if not stack:
                    self._policy(st, table, chains[st.hook])
                    return
                continue
            ri = cands[pos] if cands is not None else pos
            frame[2] = pos + 1
            if cands is not None and ri > last + 1:
                tr.append(f"{table}/{chain.name} #{last + 2}..#{ri}: {ri - last - 1} rules "
                          f"skipped (their -d/--dport cannot match)")
            frame[3] = ri
            rule = chain.rules[ri]
            cr, tgt = self._get(rule)
            if tgt is not None and tgt.kind == "pass":
                tr.append(f"{table}/{chain.name} #{ri + 1}: {rule.describe()} (passes: {tgt.name})")
                continue
            m = rule_matches(cr, st)
            if m is False or m == 0.0:
                tr.append(f"{table}/{chain.name} #{ri + 1}: {rule.describe()} (no match)")
                continue
            if isinstance(m, str):
                msg = f"{table}/{chain.name} #{ri + 1} ({rule.where}): {rule.describe()}: {m}"
                tr.append(f"{table}/{chain.name} #{ri + 1}: {rule.describe()} (undecided: {m})")
                st.undecided.append(msg)
                st.outcome = "undecided"
                return
            where = f"{table}/{chain.name} #{ri + 1}"
            if isinstance(m, float) and m < 1.0:
                alt = st.fork()
                alt.prob *= 1.0 - m
                alt.conditions.append(f"{where} not taken (p={1 - m:.4g})")
                alt.trace.append(f"{where}: {rule.describe()} (no match: branch p={1 - m:.4g})")
                work.append((alt, [list(f) for f in stack]))
                st.prob *= m
                st.conditions.append(f"{where} taken (p={m:.4g})")
                tr.append(f"{where}: {rule.describe()} (matched: branch p={m:.4g})")
            else:
                tr.append(f"{where}: {rule.describe()} (matched)")
            if tgt is None:
                continue
            k = tgt.kind
            if k in ("jump", "goto"):
                if k == "goto":
                    stack.pop()
                stack.append(self._frame(table, chains[tgt.name], st))
                if len(stack) > 64:
                    raise NatlensError(f"chain loop through {tgt.name}", path=rule.path, where=str(rule.lineno))
                continue
            if k == "return":
                stack.pop()
                if not stack:
                    self._policy(st, table, chains[st.hook])
                    return
                continue
            if k == "accept":
                return
            if k == "drop":
                st.outcome = "dropped"
                st.decided_by.append(f"{where}: {rule.describe()}")
                return
            if k == "mark":
                v, mk = tgt.opts["op"]
                st.mark = (st.mark & ~mk & 0xFFFFFFFF) ^ v
                continue
            if k == "connmark":
                if not st.ct:
                    continue  # no conntrack entry to mark (raw table)
                if "op" in tgt.opts:
                    v, mk = tgt.opts["op"]
                    st.ctmark = (st.ctmark & ~mk & 0xFFFFFFFF) ^ v
                elif "save" in tgt.opts:
                    nf, ct = tgt.opts["save"]
                    st.ctmark = (st.ctmark & ~ct & 0xFFFFFFFF) ^ (st.mark & nf)
                else:
                    nf, ct = tgt.opts["restore"]
                    st.mark = (st.mark & ~nf & 0xFFFFFFFF) ^ (st.ctmark & ct)
                continue
            if k == "notrack":
                st.notrack = True
                continue
            if k in ("masq", "snat", "dnat", "redirect"):
                if table != "nat":
                    self._undecided(st, where, rule, f"{tgt.name} outside the nat table")
                    return
                self._nat(st, tgt, where, rule)
                return
            self._undecided(st, where, rule, tgt.reason)
            return

    @staticmethod
    def _policy(st, table, base) -> None:
        """Falling off (or RETURN from) the base chain, even via goto: its policy decides."""
        pol = base.policy or "ACCEPT"
        st.trace.append(f"{table}/{base.name}: policy {pol}")
        if pol == "DROP":
            st.outcome = "dropped"
            st.decided_by.append(f"{table}/{base.name} policy DROP")

    @staticmethod
    def _undecided(st, where, rule, reason):
        st.undecided.append(f"{where} ({rule.where}): {rule.describe()}: {reason}")
        st.trace.append(f"{where}: undecided: {reason}")
        st.outcome = "undecided"

    def _nat(self, st: _State, tgt: Target, where: str, rule: Rule) -> None:
        node = self.node
        if tgt.kind in ("dnat", "redirect"):
            if tgt.kind == "dnat":
                addr, port, text = tgt.opts["to"]
                if addr:
                    fam, st.dst = ip_addr(addr)
                    if fam != st.fam:
                        self._undecided(st, where, rule, f"DNAT to IPv{fam} for an IPv{st.fam} packet")
                        return
                if port is not None:
                    st.dport = port
            else:
                if st.local:
                    st.dst = ip_int("127.0.0.1" if st.fam == 4 else "::1")
                else:
                    a = node.iface_address(st.in_iface, None, st.fam)
                    if a is None:
                        self._undecided(st, where, rule,
                                        f"REDIRECT to the address of {st.in_iface or '?'}: unknown")
                        return
                    st.dst = a
                if tgt.opts["port"] is not None:
                    st.dport = tgt.opts["port"]
            st.dnat = _hostport(st.dst, st.dport, st.fam)
            st.decided_by.append(f"DNAT by {where}: {rule.describe()}")
            return
        if tgt.kind == "snat":
            addr, port, text = tgt.opts["to"]
            if addr and ip_addr(addr)[0] != st.fam:
                self._undecided(st, where, rule, f"SNAT to {addr} for an IPv{st.fam} packet")
                return
            st.snat = addr or ip_str(st.src, st.fam)
            if port is not None:
                st.sport = port
        else:
            a = node.iface_address(st.out_iface, st.dst, st.fam)
            st.snat = ip_str(a, st.fam) if a is not None else None
            if a is None:
                st.snat_how = f"MASQUERADE to the address of {st.out_iface or 'the outgoing interface'} (unknown)"
        if st.snat:
            st.src = ip_int(st.snat)
        st.snat_how = st.snat_how or tgt.name
        st.decided_by.append(f"SNAT by {where}: {rule.describe()}")
        if st.snat is None:
            st.snat = ""


def _hostport(addr: int, port: int, fam: int) -> str:
    return f"{ip_str(addr, fam)}:{port}" if fam == 4 else f"[{ip_str(addr, fam)}]:{port}"


def packet_family(pkt: Packet) -> int:
    """4 or 6; a packet whose source and destination families differ is a bad query."""
    (fs, _), (fd, _) = ip_addr(pkt.src), ip_addr(pkt.dst)
    if fs != fd:
        raise NatlensError(f"--src {pkt.src} and --dst {pkt.dst} are of different address "
                           "families (IPv4 and IPv6)")
    return fs


def new_state(pkt: Packet) -> _State:
    st = _State.__new__(_State)
    st.fam = packet_family(pkt)
    st.src, st.dst = ip_int(pkt.src), ip_int(pkt.dst)
    st.proto = pkt.proto.lower()
    st.pnum = PROTO_NUM.get(st.proto, int(st.proto) if st.proto.isdigit() else -2)
    st.sport = pkt.sport if pkt.sport is not None else 40000
    st.dport = pkt.dport
    st.in_iface = None if pkt.local else pkt.in_iface
    st.out_iface = pkt.out_iface
    st.local = pkt.local
    st.mark = pkt.mark
    st.ctmark = 0
    st.hook = ""
    st.orig_src, st.orig_dst, st.orig_sport, st.orig_dport = st.src, st.dst, st.sport, st.dport
    st.dnat = st.snat = st.snat_how = None
    st.nat_dst_done = st.nat_src_done = st.notrack = st.ipvs = False
    st.ipvs_method = ""
    st.prob = 1.0
    st.trace, st.conditions, st.undecided, st.decided_by = [], [], [], []
    st.outcome = None
    st.confirmed = False
    st.confirm_ctmark = 0
    st.ct = False  # no conntrack entry attached yet: raw runs before conntrack
    return st


def explain(node, pkt: Packet) -> Verdict:
    """Walk pkt through node's rules (see the module docstring for the order).

    An IPv6 packet walks the ip6tables-save rules; without them it is undecided, since
    iptables-save holds only the IPv4 rules.
    """
    st = new_state(pkt)
    st.trace.append(f"packet {pkt.proto} {_hostport(st.src, st.sport, st.fam)} -> "
                    f"{_hostport(st.dst, st.dport, st.fam)} "
                    + ("generated on the node" if pkt.local else f"in via {pkt.in_iface or '?'}"))
    w = node.walker_for(st.fam)
    if w is None:
        why = (f"IPv{st.fam} packet: no ip6tables-save dump (ip6tables-save.txt) for this node; "
               "iptables-save holds only the IPv4 rules")
        st.undecided.append(why)
        st.trace.append(f"undecided: {why}")
        st.outcome = "undecided"
        return Verdict(pkt, [_path(st)])
    done = _from_node(w, st) if pkt.local else _from_outside(w, st)
    for s in done:
        if s.outcome is None:
            s.outcome = "undecided"
    paths = [_path(s) for s in sorted(done, key=lambda s: -s.prob)]
    return Verdict(pkt, paths)


def _hooks(w: Walker, states: list[_State], hooks: list[str], tables_only: tuple = ()) -> list[_State]:
    """Run states through each hook's tables in priority order; finished branches pass through."""
    for hook in hooks:
        nxt: list[_State] = []
        for s in states:
            if s.outcome:
                nxt.append(s)
                continue
            cur = [s]
            for table in HOOK_TABLES[hook]:
                if tables_only and table not in tables_only:
                    continue
                if table == "nat":
                    if s.notrack:
                        continue
                    src_manip = hook in ("POSTROUTING", "INPUT")
                    if (s.nat_src_done if src_manip else s.nat_dst_done):
                        continue
                out: list[_State] = []
                for c in cur:
                    if c.outcome:
                        out.append(c)
                        continue
                    res = w.run_table(c, table, hook)
                    if table == "nat":
                        for r in res:
                            if hook in ("POSTROUTING", "INPUT"):
                                r.nat_src_done = True
                            else:
                                r.nat_dst_done = True
                    out += res
                cur = out
            nxt += cur
        states = nxt
    return states


def _finished(states: list[_State], done: list[_State]) -> list[_State]:
    """Move finished branches (dropped/undecided) to done; return the live ones."""
    live = []
    for s in states:
        (done if s.outcome else live).append(s)
    return live


def _from_outside(w: Walker, st: _State) -> list[_State]:
    node = w.node
    done: list[_State] = []
    for s in _finished(_hooks(w, [st], ["PREROUTING"]), done):
        if not node.is_local(s.dst, s.fam):
            _route_out(node, s)
            for r in _finished(_hooks(w, [s], ["FORWARD", "POSTROUTING"]), done):
                r.outcome = "forwarded"
                r.confirm()
                done.append(r)
            continue
        s.trace.append(f"routing: {ip_str(s.dst, s.fam)} is a local address -> INPUT")
        # IPVS takes the packet at LOCAL_IN priority 99, between filter (0) and nat (100)
        for i in _finished(_hooks(w, [s], ["INPUT"], ("mangle", "filter", "security")), done):
            vs = node.ipvs_service(i)
            if vs is None:
                for r in _finished(_hooks(w, [i], ["INPUT"], ("nat",)), done):
                    r.outcome = "delivered locally"
                    r.confirm()
                    done.append(r)
                continue
            for b in _finished(_ipvs(i, vs), done):
                if node.is_local(b.dst, b.fam):
                    b.outcome = "delivered locally"
                    b.confirm()
                    done.append(b)
                    continue
                _route_out(node, b)
                # ip_vs_nat_xmit re-sends through LOCAL_OUT (nat already bound) and POSTROUTING
                for r in _finished(_hooks(w, [b], ["OUTPUT", "POSTROUTING"],
                                          ("raw", "mangle", "filter", "security", "nat")), done):
                    r.outcome = "forwarded"
                    r.confirm()
                    done.append(r)
    return done


def _from_node(w: Walker, st: _State) -> list[_State]:
    node = w.node
    done: list[_State] = []
    st.out_iface = st.out_iface or ("lo" if node.is_local(st.dst, st.fam)
                                    else node.route(st.dst, st.fam))
    for s in _finished(_hooks(w, [st], ["OUTPUT"], ("raw", "mangle", "nat")), done):
        # IPVS takes locally generated packets at LOCAL_OUT priority -98, before filter
        vs = node.ipvs_service(s)
        if vs is not None:
            branches = _finished(_ipvs(s, vs), done)
            tables = ("raw", "mangle", "filter", "security")
        else:
            branches, tables = [s], ("filter", "security")
        for b in _finished(_hooks(w, branches, ["OUTPUT"], tables), done):
            if node.is_local(b.dst, b.fam):
                b.out_iface = "lo"
                b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is local: out via lo, back in on lo")
                for r in _finished(_hooks(w, [b], ["POSTROUTING"]), done):
                    r.confirm()  # leaving via lo confirms; a drop on the way back in keeps it
                    r.in_iface = "lo"
                    r.local = False
                    for q in _finished(_hooks(w, [r], ["PREROUTING", "INPUT"],
                                              ("raw", "mangle", "filter", "security")), done):
                        q.outcome = "delivered locally"
                        done.append(q)
                continue
            if b.dst != b.orig_dst or not b.out_iface:
                b.out_iface = st.out_iface if st.out_iface and b.dst == b.orig_dst else None
                _route_out(node, b)
            else:
                b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is not local -> out via {b.out_iface}")
            for r in _finished(_hooks(w, [b], ["POSTROUTING"]), done):
                r.outcome = "forwarded"
                r.confirm()
                done.append(r)
    return done


def _route_out(node, st: _State) -> None:
    iface = st.out_iface or node.route(st.dst, st.fam)
    note = ""
    if iface and not st.out_iface and not node.routes_of(st.fam) and iface == node.uplink(st.fam):
        note = " (assumed default route: the only uplink-like interface; give ip-route.txt)"
    st.out_iface = iface
    st.trace.append(f"routing: {ip_str(st.dst, st.fam)} is not local -> out via {iface or '? (unknown)'}{note}")


def _ipvs(st: _State, vs) -> list[_State]:
    """One branch per real server of the virtual service (IPVS scheduling is not modelled)."""
    rss = [r for r in vs.real_servers if r.weight > 0]
    if not rss:
        st.trace.append(f"ipvs: {vs} has no real server with weight > 0: left to the local stack")
        st.outcome = "delivered locally"
        return [st]
    total = sum(r.weight for r in rss)
    out = []
    for rs in rss:
        b = st.fork() if len(rss) > 1 else st
        p = rs.weight / total
        b.prob *= p
        b.ipvs = True
        b.ipvs_method = {"Masq": "MASQ", "Route": "GATE", "Tunnel": "TUNNEL"}.get(rs.forward, rs.forward.upper())
        if len(rss) > 1:
            b.conditions.append(f"ipvs {vs} -> {rs.addr}:{rs.port} (weight {rs.weight}/{total})")
        b.trace.append(f"ipvs: {vs} {vs.scheduler} -> {rs.addr}:{rs.port} {rs.forward}"
                       + (f" (p={p:.3g})" if len(rss) > 1 else ""))
        if rs.forward in ("Masq", "Local"):
            fam, b.dst = ip_addr(rs.addr)
            b.dport = rs.port
            if fam != b.fam:
                b.undecided.append(f"ipvs {vs}: real server {rs.addr} is IPv{fam}, the packet IPv{b.fam}")
                b.outcome = "undecided"
            b.dnat = f"{rs.addr}:{rs.port}"
            b.nat_dst_done = True
            b.decided_by.append(f"DNAT by ipvs {vs} ({rs.forward})")
        out.append(b)
    return out


def _path(s: _State) -> Path:
    snat: bool | None
    # a packet dropped after its SNAT (looping back in via lo) was still SNATed
    snat = None if s.outcome == "undecided" else s.snat is not None
    if s.snat_how and s.snat == "":
        s.trace.append(s.snat_how)
    return Path(probability=round(s.prob, 6), outcome=s.outcome or "undecided", snat=snat,
                snat_to=s.snat or None, dnat_to=s.dnat, out_iface=s.out_iface, mark=s.mark,
                ctmark=s.confirm_ctmark if s.confirmed else s.ctmark, conntrack=s.confirmed,
                conditions=s.conditions, trace=s.trace, undecided=s.undecided,
                decided_by=s.decided_by)


__all__ = ["Packet", "Path", "Verdict", "Walker", "explain", "format_net"]
