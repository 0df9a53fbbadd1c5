"""The match compiler: a rule's matches -> small check functions against a WalkState.

A check answers with a ``bool``, a ``float`` (the probability that a probabilistic
match, statistic, matches), a ``Depends`` (the answer depends on state no dump shows:
recent's address lists; the walk follows both ways) or an ``Undecided`` (why the
model cannot tell: the rule, and with it the branch, becomes undecided). ``rule_matches`` combines a rule's
built-in matches (-p, -s, -d, -i, -o, -f) with its checks into one such answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from natlens.errors import NatlensError
from natlens.netfilter.iptables import Match, Option, Rule, parse_net
from natlens.netfilter.walk.addresses import in_any_net, ip_addr
from natlens.netfilter.walk.packet import PROTO_NUM, proto_number
from natlens.netfilter.walk.state import WalkState
from natlens.vocab import TCP_FLAGS

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules


@dataclass(frozen=True, slots=True)
class Undecided:
    """A check's answer when the model cannot tell: the reason names what is missing."""

    reason: str


@dataclass(frozen=True, slots=True)
class Depends:
    """A check whose answer depends on state no dump shows (xt_recent's address lists).

    The walk follows both ways; each branch's conditions say which it assumed
    (``yes``: the rule matched, ``no``: it did not), and its probability is given that
    assumption (``yes_tag`` / ``no_tag``, short, for the verdict line).
    """

    yes: str
    no: str
    yes_tag: str
    no_tag: str


Answer = bool | float | Undecided | Depends   # what a check and rule_matches return
Check = Callable[[WalkState], Answer]

_PORT_PROTOS = (6, 17, 132, 136, 33)  # protocols with ports: tcp, udp, sctp, udplite, dccp
_TCP_FLAGS = {**TCP_FLAGS, "ALL": 255, "NONE": 0}  # iptables' --tcp-flags words
_IN_UNKNOWN = Undecided("incoming interface unknown (give --in-iface) for -i")
_OUT_UNKNOWN = Undecided("outgoing interface unknown (give --out-iface or ip-addr) for -o")
_NO_ROUTES = Undecided("-m rpfilter needs the node's routes (ip-route.txt, --ip-route)")
ANY_PROTO = -1  # CompiledRule.pnum of "-p all"


def _ports(text: str) -> tuple[int, int]:
    """'80' -> (80, 80), '80:90' -> (80, 90), ':90' / '80:' -> open ends."""
    lo, sep, hi = text.partition(":")
    a = int(lo) if lo else 0
    b = (int(hi) if hi else 65535) if sep else a
    return a, b


def _flags(text: str) -> int:
    v = 0
    for f in text.split(","):
        v |= _TCP_FLAGS[f.upper()]
    return v


def _always(answer: Answer) -> Check:
    """A check with a fixed answer (an Undecided reason, or a truth the model knows)."""
    return lambda st: answer


class Compiler:
    """Turns a Rule's matches into check functions; one ``m_<module>`` per known module."""

    def __init__(self, node: NodeRules):
        self.node = node

    def compile(self, rule: Rule) -> list[Check]:
        """The rule's checks; an unknown module is an Undecided check, bad options raise."""
        checks: list[Check] = []
        for m in rule.matches:
            if m.module == "comment":
                continue
            fn = getattr(self, "m_" + m.module.replace("-", "_"), None)
            if fn is None:
                checks.append(_always(Undecided(f"match -m {m.module} not modelled")))
                continue
            try:
                checks.extend(fn(m, rule))
            except NatlensError:
                raise
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise NatlensError(f"bad -m {m.module} options ({exc})", path=rule.path,
                                   where=str(rule.lineno)) from None
        return checks

    @staticmethod
    def _unknown_opts(m: Match, known: set[str]) -> list[Check]:
        bad = [o.name for o in m.options if o.name not in known]
        if bad:
            return [_always(Undecided(f"-m {m.module} option {' '.join(bad)} not modelled"))]
        return []

    # protocol matches --------------------------------------------------------
    def m_tcp(self, m: Match, rule: Rule) -> list[Check]:
        pnum = PROTO_NUM[m.module]
        out: list[Check] = [lambda st: st.pnum == pnum]
        for o in m.options:
            if o.name in ("--dport", "--destination-port", "--sport", "--source-port"):
                a, b = _ports(o.args[0])
                dst = o.name in ("--dport", "--destination-port")
                out.append(lambda st, a=a, b=b, d=dst, n=o.neg:
                           (a <= (st.dport if d else st.sport) <= b) != n)
            elif o.name == "--syn":
                out.append(_always(not o.neg))
            elif o.name == "--tcp-flags":
                mask, comp = _flags(o.args[0]), _flags(o.args[1])
                out.append(_always(((2 & mask) == comp) != o.neg))  # a first packet: SYN
            else:
                out += self._unknown_opts(m, {"--dport", "--destination-port", "--sport",
                                              "--source-port", "--syn", "--tcp-flags"})
                break
        return out

    m_udp = m_sctp = m_udplite = m_dccp = m_tcp

    def m_icmp(self, m: Match, rule: Rule) -> list[Check]:
        pnum = PROTO_NUM["icmp"]
        return [lambda st: st.pnum == pnum] + [_always(Undecided("icmp type not modelled"))] * bool(m.options)

    def m_multiport(self, m: Match, rule: Rule) -> list[Check]:
        out: list[Check] = [lambda st: st.pnum in _PORT_PROTOS]
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

            def chk(st: WalkState, rs=ranges, w=which, n=o.neg) -> bool:
                hit = False
                if w in "db":
                    hit = any(a <= st.dport <= b for a, b in rs)
                if not hit and w in "sb":
                    hit = any(a <= st.sport <= b for a, b in rs)
                return hit != n
            out.append(chk)
        return out

    # marks ---------------------------------------------------------------------
    def m_mark(self, m: Match, rule: Rule) -> list[Check]:
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

    # addresses -------------------------------------------------------------------
    def m_iprange(self, m: Match, rule: Rule) -> list[Check]:
        out = self._unknown_opts(m, {"--src-range", "--dst-range"})
        for o in m.options:
            if o.name in ("--src-range", "--dst-range"):
                a, _, b = o.args[0].partition("-")
                (fam, lo), (_, hi) = ip_addr(a), ip_addr(b or a)
                s = o.name == "--src-range"
                out.append(lambda st, lo=lo, hi=hi, s=s, n=o.neg, f=fam:
                           (st.fam == f and lo <= (st.src if s else st.dst) <= hi) != n)
        return out

    def m_addrtype(self, m: Match, rule: Rule) -> list[Check]:
        node = self.node
        out = self._unknown_opts(m, {"--src-type", "--dst-type", "--limit-iface-in",
                                     "--limit-iface-out"})
        limit = None
        for o in m.options:
            if o.name == "--limit-iface-in":
                limit = "in"
            elif o.name == "--limit-iface-out":
                limit = "out"
        no_addrs = Undecided("node addresses unknown (give ip-addr.txt or --local-ip) for -m addrtype")
        no_iface = Undecided(f"-m addrtype --limit-iface-{limit}: interface unknown")
        for o in m.options:
            if o.name not in ("--src-type", "--dst-type"):
                continue
            types = set(o.args[0].upper().split(","))
            s = o.name == "--src-type"

            def chk(st: WalkState, types=types, s=s, n=o.neg, limit=limit) -> Answer:
                if not node.addresses_known:
                    return no_addrs
                addr = st.src if s else st.dst
                iface = None
                if limit:
                    iface = st.in_iface if limit == "in" else st.out_iface
                    if iface is None:
                        return no_iface
                return (node.addr_type(addr, iface, st.fam) in types) != n
            out.append(chk)
        return out

    def m_set(self, m: Match, rule: Rule) -> list[Check]:
        known = {"--match-set", "--set", "--return-nomatch", "--update-counters",
                 "--update-subcounters"}
        out: list[Check] = []
        for o in m.options:
            if o.name in ("--return-nomatch", "--match-set", "--set") or (
                    o.name in ("--update-counters", "--update-subcounters") and o.neg):
                continue
            out += self._unknown_opts(m, known)
        for o in m.options:
            if o.name not in ("--match-set", "--set"):
                continue
            flags = o.args[1].split(",")
            if any(f not in ("src", "dst") for f in flags):
                raise ValueError(f"bad set flags {o.args[1]!r}")
            out.append(self._set_check(o.args[0], flags, o.neg))
        if m.get("--return-nomatch") is not None:  # would need "matched a nomatch entry" from the lookup
            out.append(_always(Undecided("-m set --return-nomatch not modelled")))
        return out

    def _set_check(self, name: str, flags: list[str], neg: bool) -> Check:
        """One --match-set NAME FLAGS: the packet's values, dimension by dimension, in the set."""
        node = self.node

        def chk(st: WalkState) -> Answer:
            s = node.sets.get(name)
            if s is None:
                return Undecided(f"ipset {name} not in the ipset dump" if node.sets_known
                                 else f"ipset {name}: no ipset dump given")
            dims = s.dims
            if dims is None:
                return Undecided(f"ipset {name} of type {s.type} not modelled")
            if s.family != st.fam and ("ip" in dims or "net" in dims):
                return neg  # ip_set_test: a set of the other family never matches
            if len(flags) < len(dims):
                return neg  # the kernel never matches with fewer flags than dimensions
            vals: list = []
            for d, f in zip(dims, flags, strict=False):
                if d in ("ip", "net"):
                    vals.append(st.src if f == "src" else st.dst)
                elif s.type == "bitmap:port":
                    if st.pnum not in (6, 17, 132, 136):
                        return neg
                    vals.append(st.sport if f == "src" else st.dport)
                else:
                    vals.append((st.pnum, st.sport if f == "src" else st.dport))
            return s.test(vals) != neg
        return chk

    def m_physdev(self, m: Match, rule: Rule) -> list[Check]:
        out = self._unknown_opts(m, {"--physdev-in", "--physdev-out", "--physdev-is-in",
                                     "--physdev-is-out", "--physdev-is-bridged"})
        # routed packets (the model's case) never came through a bridge port
        for o in m.options:
            out.append(_always(o.neg))
        return out

    # conntrack -------------------------------------------------------------------
    def m_conntrack(self, m: Match, rule: Rule) -> list[Check]:
        has_state = any(o.name in ("--ctstate", "--state") for o in m.options)
        # Without a conntrack entry (raw table) the kernel checks only the state, as INVALID,
        # and then answers "matched" if there was a state option, ignoring the rest.
        out: list[Check] = []
        for o in m.options:
            if o.name in ("--ctstate", "--state"):
                states = set(o.args[0].upper().split(","))
                out.append(lambda st, s=states, n=o.neg: bool(_ctstates(st) & s) != n)
                continue
            out += [lambda st, c=c: c(st) if st.ct else has_state for c in self._ct_option(m, o)]
        return out

    m_state = m_conntrack

    def _ct_option(self, m: Match, o: Option) -> list[Check]:
        """A conntrack option other than the state, as checks against the entry."""
        if o.name == "--ctdir":
            return [_always((o.args[0].upper() == "ORIGINAL") != o.neg)]
        if o.name == "--ctproto":
            p = PROTO_NUM.get(o.args[0].lower())
            p = int(o.args[0]) if p is None else p
            return [lambda st, p=p, n=o.neg: (st.pnum == p) != n]
        if o.name in ("--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst"):
            net, mask, ver = parse_net(o.args[0])
            return [lambda st, w=o.name, n=o.neg:
                    (st.fam == ver and (_ct_tuple(st, w) & mask) == net) != n]
        if o.name in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport"):
            a, b = _ports(o.args[0])
            return [lambda st, a=a, b=b, w=o.name, n=o.neg: (a <= _ct_tuple(st, w) <= b) != n]
        if o.name == "--ctstatus":
            # a first packet's conntrack entry: not expected, no reply, not confirmed
            return [_always(("NONE" in set(o.args[0].upper().split(","))) != o.neg)]
        return self._unknown_opts(m, set())

    def m_policy(self, m: Match, rule: Rule) -> list[Check]:
        out = self._unknown_opts(m, {"--dir", "--pol"})
        for o in m.options:
            if o.name == "--pol":  # the model's packets are never IPsec
                out.append(_always((o.args[0] == "none") != o.neg))
        return out

    def m_pkttype(self, m: Match, rule: Rule) -> list[Check]:
        out = self._unknown_opts(m, {"--pkt-type"})
        for o in m.options:
            if o.name == "--pkt-type":
                want = o.args[0].lower()
                out.append(lambda st, t=want, n=o.neg:
                           (self.node.pkt_type(st.dst, st.fam) == t) != n)
        return out

    def m_statistic(self, m: Match, rule: Rule) -> list[Check]:
        mode = m.get("--mode")
        out = self._unknown_opts(m, {"--mode", "--probability", "--every", "--packet"})
        if mode is None:
            raise ValueError("no --mode")
        if mode.args[0] == "random":
            o = m.get("--probability")
            p = float(o.args[0])
        else:
            o = m.get("--every")
            p = 1.0 / int(o.args[0])
        p = 1.0 - p if (o.neg or mode.neg) else p
        return out + [_always(p)]

    def m_recent(self, m: Match, rule: Rule) -> list[Check]:
        """xt_recent: --set records the address and matches; --rcheck/--update/--remove ask
        whether it was seen, which depends on earlier connections: both ways are followed."""
        out = self._unknown_opts(m, _RECENT_OPTS)
        named = m.get("--name")
        name = named.args[0] if named and named.args else "DEFAULT"  # xt_recent's default list
        side = "destination" if m.get("--rdest") else "source"
        for o in m.options:
            if o.name == "--set":
                out.append(_always(not o.neg))
            elif o.name in ("--rcheck", "--update", "--remove"):
                window = _recent_window(m)
                seen = (f"the {side} address is in recent list {name}{window} (a returning client)",
                        f"{side} in recent list {name}")
                new = (f"the {side} address is not in recent list {name}{window} (a new client)",
                       f"{side} not in recent list {name}")
                if o.neg:
                    seen, new = new, seen
                out.append(_always(Depends(seen[0], new[0], seen[1], new[1])))
        return out

    def m_rpfilter(self, m: Match, rule: Rule) -> list[Check]:
        """xt_rpfilter: the route back to the source leaves by the interface the packet came
        in on (--loose: any route), as the node's routes (ip route, the main table) say."""
        node, opts = self.node, {o.name for o in m.options}
        out = self._unknown_opts(m, {"--loose", "--validmark", "--accept-local", "--invert"})
        loose, accept_local, invert = "--loose" in opts, "--accept-local" in opts, "--invert" in opts

        def chk(st: WalkState) -> Answer:
            if st.in_iface is None and not st.local:
                return _IN_UNKNOWN
            if st.local or st.in_iface == "lo":
                return not invert  # rpfilter_is_loopback
            if not node.routes_of(st.fam):
                return _NO_ROUTES
            if node.is_local(st.src, st.fam):  # a local route: only --accept-local goes on
                if not accept_local:
                    return invert
                dev = next((i for i, addrs in node.addresses.items()
                            if any(a == st.src and v == st.fam for a, _, v in addrs)), None)
                if not loose and dev in (None, "?"):
                    return Undecided("rpfilter --accept-local: which interface holds the source "
                                     "address is unknown (give ip-addr.txt)")
            else:
                dev = node.route(st.src, st.fam)
            return (dev is not None and (loose or dev == st.in_iface)) != invert
        return out + [chk]

    def m_nfacct(self, m: Match, rule: Rule) -> list[Check]:
        """An accounting object: it counts the packet and always matches."""
        return self._unknown_opts(m, {"--nfacct-name"})

    def m_ipvs(self, m: Match, rule: Rule) -> list[Check]:
        out = self._unknown_opts(m, {"--ipvs", "--vdir", "--vmethod", "--vproto", "--vaddr", "--vport"})
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
            elif o.name == "--vaddr":  # the virtual service's address: the packet's before IPVS
                net, mask, ver = parse_net(o.args[0])
                out.append(lambda st, net=net, mask=mask, ver=ver, n=o.neg:
                           (st.ipvs and st.fam == ver and (st.orig_dst & mask) == net) != n)
            elif o.name == "--vport":
                vport = int(o.args[0])
                out.append(lambda st, v=vport, n=o.neg: (st.ipvs and st.orig_dport == v) != n)
        return out


_RECENT_OPTS = {"--name", "--set", "--rcheck", "--update", "--remove", "--seconds", "--hitcount",
                "--rttl", "--rsource", "--rdest", "--mask", "--reap"}


def _recent_window(m: Match) -> str:
    """' within 10800 s' / ', hit 3 times': the --seconds and --hitcount of a recent check."""
    secs, hits = m.get("--seconds"), m.get("--hitcount")
    return (f" within {secs.args[0]} s" if secs and secs.args else "") + \
        (f", hit {hits.args[0]} times" if hits and hits.args else "")


def _ctstates(st: WalkState) -> set[str]:
    """The conntrack states of a first packet: NEW plus DNAT/SNAT once bound."""
    if st.notrack:
        return {"UNTRACKED"}
    if not st.ct:
        return {"INVALID"}
    s = {"NEW"}
    if st.dnat:
        s.add("DNAT")
    if st.snat is not None and st.snat.known:  # as always: not after MASQUERADE to an unknown address
        s.add("SNAT")
    return s


def _ct_tuple(st: WalkState, which: str) -> int:
    """What a --ctorig*/--ctrepl* address or port option tests.

    The reply tuple mirrors the packet: its source is the packet's destination once
    DNAT is bound, its destination the packet's source once SNAT is.
    """
    port = which.endswith("port")
    if which.startswith(("--ctorigdst", "--ctreplsrc")):  # the packet's destination side
        orig, now = (st.orig_dport, st.dport) if port else (st.orig_dst, st.dst)
        bound = st.nat_dst_done
    else:  # --ctorigsrc*, --ctrepldst*: the packet's source side
        orig, now = (st.orig_sport, st.sport) if port else (st.orig_src, st.src)
        bound = st.nat_src_done
    return now if bound and which.startswith("--ctrepl") else orig


def _iface_match(pattern: str, name: str | None) -> bool | None:
    """-i/-o: 'eth+' is a prefix; None when the interface is unknown."""
    if name is None:
        return None
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


class CompiledRule:
    """A rule with its checks and its -p as a protocol number (ANY_PROTO for 'all')."""

    __slots__ = ("rule", "checks", "pnum", "pneg")

    def __init__(self, rule: Rule, checks: list[Check]):
        self.rule = rule
        self.checks = checks
        self.pnum: int | None = None
        self.pneg = False
        if rule.proto:
            neg, p = rule.proto
            self.pneg = neg
            self.pnum = ANY_PROTO if p in ("all", "0") else proto_number(p)


def rule_matches(cr: CompiledRule, st: WalkState) -> Answer:
    """Whether the rule matches the packet: a bool, a probability or an Undecided.

    A definite no anywhere wins; otherwise an unknown interface, then the first
    undecided check, make it Undecided; probabilities multiply.
    """
    r = cr.rule
    if cr.pnum is not None and ((cr.pnum == ANY_PROTO or cr.pnum == st.pnum) == cr.pneg):
        return False
    if r.src is not None and in_any_net(r.src[1], st.src, st.fam) == r.src[0]:
        return False
    if r.dst is not None and in_any_net(r.dst[1], st.dst, st.fam) == r.dst[0]:
        return False
    if r.fragment is True:
        return False
    unknown = None
    if r.in_iface is not None:
        hit = _iface_match(r.in_iface[1], "" if st.local else st.in_iface)
        if hit is None:
            unknown = _IN_UNKNOWN
        elif hit == r.in_iface[0]:
            return False
    if r.out_iface is not None:
        hit = _iface_match(r.out_iface[1], "" if st.hook == "PREROUTING" else st.out_iface)
        if hit is None:
            unknown = _OUT_UNKNOWN
        elif hit == r.out_iface[0]:
            return False
    prob = depends = None
    for chk in cr.checks:
        v = chk(st)
        if v is True:
            continue
        if v is False:
            return False
        if isinstance(v, float):
            prob = v if prob is None else prob * v
        elif isinstance(v, Depends):
            depends = _TWO_FORKS if depends is not None else v
        else:
            unknown = unknown or v
    if unknown:
        return unknown
    if depends is not None:
        return depends if prob is None else _TWO_FORKS
    return True if prob is None else prob


_TWO_FORKS = Undecided("two state-dependent or probabilistic matches in one rule: not modelled")
