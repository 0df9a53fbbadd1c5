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

from typing import TYPE_CHECKING

from natlens.netfilter.walk.addresses import hostport, ip_str
from natlens.netfilter.walk.ipvs import ipvs_branches
from natlens.netfilter.walk.packet import Packet
from natlens.netfilter.walk.state import DELIVERED, FORWARDED, UNDECIDED, WalkState
from natlens.netfilter.walk.verdict import Verdict, branch_of
from natlens.netfilter.walk.walker import Walker

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules

HOOK_TABLES = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
_SRC_NAT_HOOKS = ("POSTROUTING", "INPUT")  # where the nat table binds the source manipulation
_NO_NAT = ("raw", "mangle", "filter", "security")


def explain(node: NodeRules, pkt: Packet) -> Verdict:
    """Walk pkt through node's rules (see the module docstring for the order).

    An IPv6 packet walks the ip6tables-save rules; without them it is undecided, since
    iptables-save holds only the IPv4 rules.
    """
    st = WalkState.start(pkt)
    st.trace.append(f"packet {pkt.proto} {hostport(st.src, st.sport, st.fam)} -> "
                    f"{hostport(st.dst, st.dport, st.fam)} "
                    + ("generated on the node" if pkt.local else f"in via {pkt.in_iface or '?'}"))
    w = node.walker_for(st.fam)
    if w is None:
        why = (f"IPv{st.fam} packet: no ip6tables-save dump (ip6tables-save.txt) for this node; "
               "iptables-save holds only the IPv4 rules")
        st.stop_undecided(why, f"undecided: {why}")
        return Verdict(pkt, [branch_of(st)])
    done = _from_node(w, st) if pkt.local else _from_outside(w, st)
    for s in done:
        if s.outcome is None:
            s.outcome = UNDECIDED
    return Verdict(pkt, [branch_of(s) for s in sorted(done, key=lambda s: -s.prob)])


def _through(w: Walker, states: list[WalkState], hooks: list[str],
             tables_only: tuple[str, ...] = ()) -> list[WalkState]:
    """Run states through each hook's tables in priority order; finished branches pass through."""
    for hook in hooks:
        nxt: list[WalkState] = []
        for s in states:
            nxt += [s] if s.outcome else _hook(w, s, hook, tables_only)
        states = nxt
    return states


def _hook(w: Walker, s: WalkState, hook: str, tables_only: tuple[str, ...]) -> list[WalkState]:
    """One live branch through one hook; the branches it forked into come back with it.

    Whether nat runs is decided on s, the branch entering the hook, for all its forks.
    """
    src_manip = hook in _SRC_NAT_HOOKS
    cur = [s]
    for table in HOOK_TABLES[hook]:
        if tables_only and table not in tables_only:
            continue
        if table == "nat" and (s.notrack or (s.nat_src_done if src_manip else s.nat_dst_done)):
            continue
        out: list[WalkState] = []
        for c in cur:
            if c.outcome:
                out.append(c)
                continue
            res = w.run_table(c, table, hook)
            if table == "nat":
                for r in res:
                    if src_manip:
                        r.nat_src_done = True
                    else:
                        r.nat_dst_done = True
            out += res
        cur = out
    return cur


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


def _from_outside(w: Walker, st: WalkState) -> list[WalkState]:
    """A packet arriving on an interface: PREROUTING, then forwarded or delivered locally."""
    done: list[WalkState] = []
    for s in _finished(_through(w, [st], ["PREROUTING"]), done):
        if not w.node.is_local(s.dst, s.fam):
            _route_out(w.node, s)
            for r in _finished(_through(w, [s], ["FORWARD", "POSTROUTING"]), done):
                _end(r, FORWARDED, done)
            continue
        s.trace.append(f"routing: {ip_str(s.dst, s.fam)} is a local address -> INPUT")
        _local_in(w, s, done)
    return done


def _local_in(w: Walker, s: WalkState, done: list[WalkState]) -> None:
    """INPUT; IPVS takes the packet at LOCAL_IN priority 99, between filter (0) and nat (100)."""
    node = w.node
    for i in _finished(_through(w, [s], ["INPUT"], ("mangle", "filter", "security")), done):
        vs = node.ipvs_service(i)
        if vs is None:
            for r in _finished(_through(w, [i], ["INPUT"], ("nat",)), done):
                _end(r, DELIVERED, done)
            continue
        for b in _finished(ipvs_branches(i, vs), done):
            if node.is_local(b.dst, b.fam):
                _end(b, DELIVERED, done)
                continue
            _route_out(node, b)
            # ip_vs_nat_xmit re-sends through LOCAL_OUT (nat already bound) and POSTROUTING
            for r in _finished(_through(w, [b], ["OUTPUT", "POSTROUTING"], (*_NO_NAT, "nat")), done):
                _end(r, FORWARDED, done)


def _from_node(w: Walker, st: WalkState) -> list[WalkState]:
    """A packet generated on the node: OUTPUT (IPVS at LOCAL_OUT), routing, POSTROUTING."""
    node = w.node
    done: list[WalkState] = []
    st.out_iface = st.out_iface or ("lo" if node.is_local(st.dst, st.fam)
                                    else node.route(st.dst, st.fam))
    for s in _finished(_through(w, [st], ["OUTPUT"], ("raw", "mangle", "nat")), done):
        # IPVS takes locally generated packets at LOCAL_OUT priority -98, before filter
        vs = node.ipvs_service(s)
        if vs is not None:
            branches, tables = _finished(ipvs_branches(s, vs), done), _NO_NAT
        else:
            branches, tables = [s], ("filter", "security")
        for b in _finished(_through(w, branches, ["OUTPUT"], tables), done):
            if node.is_local(b.dst, b.fam):
                _loop_back(w, b, done)
            else:
                _out_of_node(w, b, st, done)
    return done


def _loop_back(w: Walker, b: WalkState, done: list[WalkState]) -> None:
    """To a local address: out via lo (POSTROUTING), back in on lo (PREROUTING, INPUT)."""
    b.out_iface = "lo"
    b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is local: out via lo, back in on lo")
    for r in _finished(_through(w, [b], ["POSTROUTING"]), done):
        r.confirm()  # leaving via lo confirms; a drop on the way back in keeps it
        r.in_iface = "lo"
        r.local = False
        for q in _finished(_through(w, [r], ["PREROUTING", "INPUT"], _NO_NAT), done):
            q.outcome = DELIVERED
            done.append(q)


def _out_of_node(w: Walker, b: WalkState, st: WalkState, done: list[WalkState]) -> None:
    """To a remote address: routed again if DNAT moved it (st is the walk's first state)."""
    if b.dst != b.orig_dst or not b.out_iface:
        b.out_iface = st.out_iface if st.out_iface and b.dst == b.orig_dst else None
        _route_out(w.node, b)
    else:
        b.trace.append(f"routing: {ip_str(b.dst, b.fam)} is not local -> out via {b.out_iface}")
    for r in _finished(_through(w, [b], ["POSTROUTING"]), done):
        _end(r, FORWARDED, done)


def _route_out(node: NodeRules, st: WalkState) -> None:
    """The egress interface: the given one, else the route (or the assumed uplink, said so)."""
    iface = st.out_iface or node.route(st.dst, st.fam)
    note = ""
    if iface and not st.out_iface and not node.routes_of(st.fam) and iface == node.uplink(st.fam):
        note = " (assumed default route: the only uplink-like interface; give ip-route.txt)"
    st.out_iface = iface
    st.trace.append(f"routing: {ip_str(st.dst, st.fam)} is not local -> out via {iface or '? (unknown)'}{note}")
