"""The hook pipeline: a packet hook by hook, table by table, with routing and IPVS between.

The order is the kernel's (hook, then table priority within the hook)::

    from outside:  PREROUTING raw, mangle, nat -> routing decision
                   local:   INPUT mangle, filter, nat  [-> IPVS]
                   forward: FORWARD mangle, filter -> POSTROUTING mangle, nat
    from the node: OUTPUT raw, mangle, nat [-> IPVS], filter -> routing ->
                   POSTROUTING mangle, nat

The nat table is consulted once per connection and direction of NAT (DNAT in
PREROUTING/OUTPUT, SNAT in POSTROUTING/INPUT) and not at all for an untracked
packet, as in the kernel. ``explain`` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from natlens.netfilter.walk.addresses import hostport, ip_str
from natlens.netfilter.walk.ipvs import ipvs_branches
from natlens.netfilter.walk.packet import Packet
from natlens.netfilter.walk.state import DELIVERED, FORWARDED, SENT, UNDECIDED, WalkState
from natlens.netfilter.walk.verdict import Verdict, branch_of

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules

# where iptables' tables hook in (the nat table's chains run inside the nat core)
TABLE_PRIORITY = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
HOOK_TABLES = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
NAT_CORE = {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100}
CONNTRACK = -200       # nf_conntrack attaches its entry here (PREROUTING, OUTPUT)
IPVS_LOCAL_IN = 99     # ip_vs_remote_request: after filter (0), before nat (100)
IPVS_LOCAL_OUT = -98   # ip_vs_local_request: after nat (-100), before filter (0)
_SRC_NAT_HOOKS = ("POSTROUTING", "INPUT")  # where the nat core binds the source manipulation
ALL = (None, None)     # a priority window: every base chain of the hook


@dataclass(frozen=True)
class BaseChain:
    """One base chain at a hook: an iptables table's built-in chain or a native nft chain.

    ``nat``: a nat-type chain; those run inside the nat core (at NAT_CORE's priority, in
    their own priority order, until one binds a NAT), as nf_nat_inet_fn runs them.
    ``table`` names its table: chains of one table are registered in the order listed.
    """

    prio: int
    label: str
    nat: bool
    run: Callable[[WalkState], list[WalkState]]
    table: str = ""


@dataclass(frozen=True)
class HookStep:
    """What runs at one place of a hook: a base chain, the nat core and its chains, or a
    group of steps sharing a priority whose order the dumps do not show (``orders``: the
    likely one first, then the other)."""

    prio: int
    chains: tuple[BaseChain, ...] = ()
    nat: bool = False
    orders: tuple[tuple[HookStep, ...], ...] = ()
    tie: str = ""


def hook_steps(node: NodeRules, fam: int, hook: str) -> list[HookStep]:
    """The hook's base chains in the kernel's order, nat chains grouped in the core.

    The kernel orders a hook's entries by priority; among equal priorities the one
    registered later runs first (nf_hook_entries_grow inserts before its equals). Chains
    of one table are registered in the order the dump lists them, so a tie inside a table
    is walked in the reverse of that order. Across tables the order also depends on when
    each chain was last registered (kube-proxy re-adds its base chains on every start),
    which no dump shows: such a tie becomes a group walked both ways (see _either_order).
    Once any nat chain exists for the family, the nat core runs at all four nat hooks.
    """
    cached = node.hook_step_cache.get((fam, hook))
    if cached is None:
        cached = node.hook_step_cache[(fam, hook)] = _hook_steps(node, fam, hook)
    return cached


def _hook_steps(node: NodeRules, fam: int, hook: str) -> list[HookStep]:
    every = {h: node.base_chains(fam, h) for h in NAT_CORE}
    chains = list(enumerate(every.get(hook) or node.base_chains(fam, hook)))
    units = [(c.prio, -i, HookStep(c.prio, (c,))) for i, c in chains if not c.nat]
    nat = [(i, c) for i, c in chains if c.nat]
    if hook in NAT_CORE and any(c.nat for cs in every.values() for c in cs):
        first = -min((i for i, _ in nat), default=len(chains))
        units.append((NAT_CORE[hook], first, _nat_step(hook, nat)))
    units.sort(key=lambda u: (u[0], u[1]))
    out: list[HookStep] = []
    for prio in sorted({u[0] for u in units}):
        same = [u[2] for u in units if u[0] == prio]
        out.append(same[0] if len(same) == 1 else _tie_group(prio, same))
    return out


def _tables(step: HookStep) -> set[str]:
    return {c.table for c in step.chains} | {t for o in step.orders for s in o for t in _tables(s)}


def _tie_group(prio: int, same: list[HookStep]) -> HookStep:
    """Steps sharing a priority: reverse listing order within a table; across tables a group."""
    labels = ", ".join(c.label for st in same for c in st.chains)
    if len(set().union(*(_tables(st) for st in same))) <= 1:
        return HookStep(prio, orders=(tuple(same),), tie=f"same priority {prio}: {labels}, "
                        "walked in the reverse of the dump's order, as the kernel runs them")
    return HookStep(prio, orders=(tuple(same), tuple(reversed(same))), tie=_TIE.format(
        prio=prio, labels=labels))


def _nat_step(hook: str, nat: list[tuple[int, BaseChain]]) -> HookStep:
    """The nat core: its chains by priority (ties: reverse listing order), and the other
    order too where chains of different tables share a priority."""
    likely = tuple(c for _, c in sorted(nat, key=lambda ic: (ic[1].prio, -ic[0])))
    other = tuple(c for _, c in sorted(nat, key=lambda ic: (ic[1].prio, ic[0])))
    tied = {c.prio for _, c in nat if sum(d.prio == c.prio for _, d in nat) > 1
            and len({d.table for _, d in nat if d.prio == c.prio}) > 1}
    core = HookStep(NAT_CORE[hook], likely, True)
    if not tied:
        return core
    labels = ", ".join(c.label for c in likely if c.prio in tied)
    return HookStep(NAT_CORE[hook], orders=((core,), (HookStep(NAT_CORE[hook], other, True),)),
                    tie=_TIE.format(prio=", ".join(map(str, sorted(tied))), labels=labels))


_TIE = ("same priority {prio}: {labels}, in different tables: the kernel runs the one registered "
        "last first, which the dumps do not show; walked both ways")


def explain(node: NodeRules, pkt: Packet) -> Verdict:
    """Walk pkt through node's rules (see the module docstring for the order).

    An IPv6 packet walks the ip6tables-save rules and the ip6/inet nft tables; without
    either it is undecided, since iptables-save holds only the IPv4 rules.
    """
    st = WalkState.start(pkt)
    st.trace.append(f"packet {pkt.proto} {hostport(st.src, st.sport, st.fam)} -> "
                    f"{hostport(st.dst, st.dport, st.fam)} "
                    + ("generated on the node" if pkt.local else f"in via {pkt.in_iface or '?'}"))
    why = node.rules_missing(st.fam)
    if why:
        st.stop_undecided(why, f"undecided: {why}")
        return Verdict(pkt, [branch_of(st)])
    st.trace += node.walk_notes(st.fam)
    done = _from_node(node, st) if pkt.local else _from_outside(node, st)
    for s in done:
        if s.outcome is None:
            s.outcome = UNDECIDED
    return Verdict(pkt, [branch_of(s) for s in sorted(done, key=lambda s: -s.prob)],
                   partial=node.partial(st.fam))


def _through(node: NodeRules, states: list[WalkState], hooks: list[str],
             window: tuple[int | None, int | None] = ALL, nat: bool = True) -> list[WalkState]:
    """Run states through each hook's base chains with priority in [lo, hi); finished
    branches pass through. nat=False: the connection's NAT is already bound (a packet
    looping back in via lo, IPVS re-sending): the nat core is skipped."""
    for hook in hooks:
        nxt: list[WalkState] = []
        for s in states:
            nxt += [s] if s.outcome else _hook(node, s, hook, window, nat)
        states = nxt
    return states


def _hook(node: NodeRules, s: WalkState, hook: str, window: tuple[int | None, int | None],
          nat: bool) -> list[WalkState]:
    """One live branch through one hook; the branches it forked into come back with it."""
    lo, hi = window
    cur = [s]
    for step in hook_steps(node, s.fam, hook):
        if (lo is not None and step.prio < lo) or (hi is not None and step.prio >= hi):
            continue
        out: list[WalkState] = []
        for c in cur:
            if c.outcome:
                out.append(c)
                continue
            if step.prio > CONNTRACK and not c.notrack:
                c.ct = True
            c.hook = hook
            out += _run(c, step, hook, nat)
        cur = out
    return cur


def _run(c: WalkState, step: HookStep, hook: str, nat: bool) -> list[WalkState]:
    """One step for one live branch: a base chain, the nat core, or a tie group."""
    if step.orders:
        if step.tie and step.tie not in c.trace:
            c.trace.append(step.tie)
        if len(step.orders) == 1:
            return _in_order(c, step.orders[0], hook, nat)
        return _either_order(c, step, hook, nat)
    if step.nat:
        return _nat_core(c, step, hook) if nat else [c]
    return step.chains[0].run(c)


def _in_order(c: WalkState, steps: tuple[HookStep, ...], hook: str, nat: bool) -> list[WalkState]:
    cur = [c]
    for st in steps:
        cur = [r for x in cur for r in ([x] if x.outcome else _run(x, st, hook, nat))]
    return cur


def _either_order(c: WalkState, step: HookStep, hook: str, nat: bool) -> list[WalkState]:
    """A tie across tables: walk both orders; when they end differently the answer depends
    on registration order, which no dump shows, so those branches are undecided."""
    alt = c.fork()
    first = _in_order(c, step.orders[0], hook, nat)
    second = _in_order(alt, step.orders[1], hook, nat)
    if sorted(map(_result, first)) == sorted(map(_result, second)):
        return first
    why = (f"{hook}: {step.tie.split(': the kernel')[0]}: the two orders give different answers "
           "and the dumps do not show which the kernel uses")
    for r in first:
        if r.outcome != UNDECIDED:
            r.outcome = None
            r.stop_undecided(why, f"undecided: {why}")
    return first


def _result(s: WalkState) -> tuple:
    """What a branch's walk so far decided: enough to tell two orders apart."""
    return (round(s.prob, 6), s.outcome or "", s.dnat or "", s.snat.address if s.snat else "",
            s.mark, s.ctmark, s.notrack, s.src, s.dst, s.sport, s.dport)


def _nat_core(s: WalkState, step: HookStep, hook: str) -> list[WalkState]:
    """The nat chains of a hook, for a new connection: each in turn until one binds a NAT
    (or drops); a connection whose NAT is bound for this direction skips them."""
    src = hook in _SRC_NAT_HOOKS
    if s.notrack or (s.nat_src_done if src else s.nat_dst_done):
        return [s]
    pending, out = [s], []
    for chain in step.chains:
        nxt: list[WalkState] = []
        for p in pending:
            p.hook = hook
            for r in chain.run(p):
                bound = r.snat is not None if src else r.dnat is not None
                (out if r.outcome or bound else nxt).append(r)
        pending = nxt
        if not pending:
            break
    res = out + pending
    for r in res:
        if src:
            r.nat_src_done = True
        else:
            r.nat_dst_done = True
    return res


def _finished(states: list[WalkState], done: list[WalkState]) -> list[WalkState]:
    """Move finished branches (dropped/undecided) to done; return the live ones."""
    live = []
    for s in states:
        (done if s.outcome else live).append(s)
    return live


def _end(s: WalkState, outcome: str, done: list[WalkState]) -> None:
    s.outcome = outcome
    s.confirm()
    done.append(s)


def _from_outside(node: NodeRules, st: WalkState) -> list[WalkState]:
    """A packet arriving on an interface: PREROUTING, then forwarded or delivered locally."""
    done: list[WalkState] = []
    for s in _finished(_through(node, [st], ["PREROUTING"]), done):
        local = _is_local(node, s, done)
        if local is None:
            continue
        if not local:
            _route_out(node, s)
            for r in _finished(_through(node, [s], ["FORWARD", "POSTROUTING"]), done):
                _end(r, FORWARDED, done)
            continue
        s.trace.append(f"routing: {ip_str(s.dst, s.fam)} is a local address{node.local_why(s.dst, s.fam)}"
                       " -> INPUT")
        _local_in(node, s, done)
    return done


def _is_local(node: NodeRules, s: WalkState, done: list[WalkState]) -> bool | None:
    """Whether s's destination is a local address; None when the dumps cannot tell (an IPVS
    virtual address whose binding they do not show): s then ends undecided, in done."""
    why = node.local_unknown(s.dst, s.fam)
    if why is None:
        return node.is_local(s.dst, s.fam)
    s.stop_undecided(f"routing: is {ip_str(s.dst, s.fam)} a local address? {why}",
                     f"routing: {ip_str(s.dst, s.fam)}: undecided: {why}")
    done.append(s)
    return None


def _local_in(node: NodeRules, s: WalkState, done: list[WalkState]) -> None:
    """INPUT; IPVS takes the packet at LOCAL_IN priority 99, between filter (0) and nat (100)."""
    for i in _finished(_through(node, [s], ["INPUT"], (None, IPVS_LOCAL_IN)), done):
        vs = node.ipvs_service(i)
        if vs is None:
            for r in _finished(_through(node, [i], ["INPUT"], (IPVS_LOCAL_IN, None)), done):
                _end(r, DELIVERED, done)
            continue
        for b in _finished(ipvs_branches(i, vs), done):
            if node.is_local(b.dst, b.fam):
                _end(b, DELIVERED, done)
                continue
            _route_out(node, b)
            # ip_vs_nat_xmit re-sends through LOCAL_OUT (nat already bound) and POSTROUTING
            for r in _finished(_through(node, [b], ["OUTPUT", "POSTROUTING"]), done):
                _end(r, FORWARDED, done)


def _from_node(node: NodeRules, st: WalkState) -> list[WalkState]:
    """A packet generated on the node: OUTPUT (IPVS at LOCAL_OUT), routing, POSTROUTING."""
    done: list[WalkState] = []
    local = _is_local(node, st, done)
    if local is None:
        return done
    st.out_iface = st.out_iface or ("lo" if local else node.route(st.dst, st.fam))
    for s in _finished(_through(node, [st], ["OUTPUT"], (None, IPVS_LOCAL_OUT)), done):
        # IPVS takes locally generated packets at LOCAL_OUT priority -98, before filter,
        # and re-sends them through the whole of LOCAL_OUT (NAT already bound)
        vs = node.ipvs_service(s)
        if vs is not None:
            branches = _through(node, _finished(ipvs_branches(s, vs), done), ["OUTPUT"], nat=False)
        else:
            branches = _through(node, [s], ["OUTPUT"], (IPVS_LOCAL_OUT, None))
        for b in _finished(branches, done):
            local = _is_local(node, b, done)
            if local:
                _loop_back(node, b, done)
            elif local is False:
                _out_of_node(node, b, st, done)
    return done


def _loop_back(node: NodeRules, b: WalkState, done: list[WalkState]) -> None:
    """To a local address: out via lo (POSTROUTING), back in on lo (PREROUTING, INPUT)."""
    b.out_iface = "lo"
    b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is local{node.local_why(b.dst, b.fam)}: out via lo, "
                   "back in on lo")
    for r in _finished(_through(node, [b], ["POSTROUTING"]), done):
        r.confirm()  # leaving via lo confirms; a drop on the way back in keeps it
        r.in_iface = "lo"
        r.local = False
        for q in _finished(_through(node, [r], ["PREROUTING", "INPUT"], nat=False), done):
            q.outcome = DELIVERED
            done.append(q)


def _out_of_node(node: NodeRules, b: WalkState, st: WalkState, done: list[WalkState]) -> None:
    """To a remote address: routed again if DNAT moved it (st is the walk's first state)."""
    if b.dst != b.orig_dst or not b.out_iface:
        b.out_iface = st.out_iface if st.out_iface and b.dst == b.orig_dst else None
        _route_out(node, b)
    else:
        b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is not local -> out via {b.out_iface}")
    for r in _finished(_through(node, [b], ["POSTROUTING"]), done):
        _end(r, SENT, done)


def _route_out(node: NodeRules, st: WalkState) -> None:
    """The egress interface: the given one, else the route (or the assumed uplink, said so)."""
    iface = st.out_iface or node.route(st.dst, st.fam)
    note = ""
    if iface and not st.out_iface and not node.routes_of(st.fam) and iface == node.uplink(st.fam):
        note = " (assumed default route: the only uplink-like interface; give ip-route.txt)"
    st.out_iface = iface
    st.trace.append(f"routing: {ip_str(st.dst, st.fam)} is not local{node.local_why(st.dst, st.fam)} -> out "
                    f"via {iface or '? (unknown)'}{note}")
