"""The walker: one table at one hook, rule by rule, chain by chain.

A ``Walker`` holds one ruleset of a node (iptables-save for IPv4, ip6tables-save for
IPv6) with its rules compiled once and long chains indexed by exact destination
and destination port. ``run_table`` follows a branch through a table; a statistic
match forks it, and the fork continues from the same rule with a copy of the
chain stack (``Frame``: which chain, where in it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from natlens.errors import NatlensError
from natlens.netfilter.iptables import Chain, Rule, Ruleset
from natlens.netfilter.walk.matches import CompiledRule, Compiler, Depends, Undecided, rule_matches
from natlens.netfilter.walk.packet import PROTO_NUM
from natlens.netfilter.walk.state import DROPPED, WalkState
from natlens.netfilter.walk.targets import (
    ACCEPT,
    DROP,
    GOTO,
    JUMP,
    MARK_KINDS,
    NAT_KINDS,
    PASS,
    RETURN,
    Target,
    apply_marks,
    apply_nat,
    compile_target,
    target_undecided,
)

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules

INDEX_MIN = 48  # chains at least this long get a per-destination index
MAX_DEPTH = 64  # deeper chain nesting is a loop (the kernel refuses such rules)
_HOST_MASKS = (0xFFFFFFFF, (1 << 128) - 1)


@dataclass(slots=True)
class Compiled:
    """A rule compiled once: its matches, its target and (once first traced) its text."""

    match: CompiledRule
    target: Target | None
    text: str | None = None  # rule.describe(), kept: trace lines print it for every rule seen


@dataclass(slots=True)
class ChainIndex:
    """Rule positions of one long chain by ("d", fam, addr) or ("p", pnum, port), and the rest."""

    by_key: dict[tuple, list[int]]
    always: list[int]


@dataclass(slots=True)
class Frame:
    """Where the walk is in one chain of the stack: the next candidate and the last rule seen.

    ``cands`` are the rule positions that can match (None: every rule, in order);
    ``at`` names the chain in trace lines ("nat/KUBE-SERVICES").
    """

    chain: Chain
    cands: list[int] | None
    at: str
    pos: int = 0
    last: int = -1

    def copy(self) -> Frame:
        """An independent frame at the same place (for a forked branch's own stack)."""
        return Frame(self.chain, self.cands, self.at, self.pos, self.last)

    def next_rule(self, trace: list[str]) -> int | None:
        """The next rule's position (None at the end), tracing the rules the index skipped."""
        cands, last = self.cands, self.last
        if cands is None:
            if self.pos >= len(self.chain.rules):
                return None
            ri = self.pos
        else:
            total = len(self.chain.rules)
            if self.pos >= len(cands):
                if last + 1 < total:
                    trace.append(f"{self.at} #{last + 2}..#{total}: {total - last - 1} "
                                 f"rules skipped (their -d/--dport cannot match)")
                return None
            ri = cands[self.pos]
            if ri > last + 1:
                trace.append(f"{self.at} #{last + 2}..#{ri}: {ri - last - 1} rules "
                             f"skipped (their -d/--dport cannot match)")
        self.pos += 1
        self.last = ri
        return ri


def _exact_dst(r: Rule) -> tuple | None:
    if r.dst is None:
        return None
    neg, nets = r.dst
    if neg or len(nets) != 1:
        return None
    addr, mask, ver = nets[0]
    return ("d", ver, addr) if mask in _HOST_MASKS else None


def _exact_dport(r: Rule) -> tuple | None:
    if not r.proto or r.proto[0] or r.proto[1] not in PROTO_NUM:
        return None
    key = None
    for m in r.matches:
        if m.module in ("tcp", "udp", "sctp"):
            o = m.get("--dport") or m.get("--destination-port")
            if o and not o.neg and o.args[0].isdigit():
                key = ("p", PROTO_NUM[r.proto[1]], int(o.args[0]))
    return key


def build_index(chain: Chain) -> ChainIndex:
    """Index a chain's rules by an exact -d address, else an exact --dport."""
    idx = ChainIndex({}, [])
    for i, r in enumerate(chain.rules):
        key = _exact_dst(r) or _exact_dport(r)
        if key is None:
            idx.always.append(i)
        else:
            idx.by_key.setdefault(key, []).append(i)
    return idx


def _policy(st: WalkState, table: str, base: Chain) -> None:
    """Falling off (or RETURN from) the base chain, even via goto: its policy decides.

    A pasted fragment may leave out a built-in chain's policy line: in nat it can only be
    ACCEPT (iptables refuses DROP there); elsewhere the branch is undecided.
    """
    if not base.declared and table != "nat":
        why = f"the policy of {table}/{base.name} is not in the dump (it holds only part of the rules)"
        st.stop_undecided(why, f"{table}/{base.name}: undecided: {why}")
        return
    pol = base.policy or "ACCEPT"
    st.trace.append(f"{table}/{base.name}: policy {pol}" + ("" if base.declared else
                    " (not in the dump: the nat table's only policy)"))
    if pol == "DROP":
        st.outcome = DROPPED
        st.decided_by.append(f"{table}/{base.name} policy DROP")


Work = list[tuple[WalkState, list[Frame]]]  # branches still to walk, each with its chain stack


class Walker:
    """Evaluates packets against one ruleset of a NodeRules (iptables-save for IPv4,
    ip6tables-save for IPv6); keeps compiled rules and chain indexes."""

    def __init__(self, node: NodeRules, ruleset: Ruleset | None = None):
        self.node = node
        self.ruleset = node.ruleset if ruleset is None else ruleset
        self.compiler = Compiler(node)
        self._compiled: dict[int, Compiled] = {}
        self._index: dict[tuple[str, str], ChainIndex | None] = {}

    def compile_all(self) -> int:
        """Compile every rule now (raises NatlensError for a malformed one); returns the count."""
        n = 0
        for r in self.ruleset.rules():
            self._get(r)
            n += 1
        return n

    def _get(self, rule: Rule) -> Compiled:
        c = self._compiled.get(id(rule))
        if c is None:
            chains = self.ruleset.tables[rule.table]
            c = Compiled(CompiledRule(rule, self.compiler.compile(rule)),
                         compile_target(rule, chains, bool(self.ruleset.partial)))
            self._compiled[id(rule)] = c
        return c

    def _frame(self, table: str, chain: Chain, st: WalkState) -> Frame:
        """A frame at the start of chain; a long chain walks only the rules st can match."""
        key = (table, chain.name)
        idx = self._index.get(key, False)
        if idx is False:
            idx = build_index(chain) if len(chain.rules) >= INDEX_MIN else None
            self._index[key] = idx
        at = f"{table}/{chain.name}"
        if idx is None:
            return Frame(chain, None, at)
        found = idx.by_key.get(("d", st.fam, st.dst), []) + idx.by_key.get(("p", st.pnum, st.dport), [])
        return Frame(chain, sorted(set(found).union(idx.always)) if found else idx.always, at)

    def run_table(self, st: WalkState, table: str, hook: str) -> list[WalkState]:
        """Returns the branches, each with st.outcome None (accepted), 'dropped' or 'undecided'."""
        chains = self.ruleset.tables.get(table)
        if not chains or hook not in chains:
            return [st]
        st.hook = hook
        if table != "raw" and not st.notrack:
            st.ct = True  # conntrack (priority -200) ran between raw and mangle
        results = []
        work: Work = [(st, [self._frame(table, chains[hook], st)])]
        while work:
            st, stack = work.pop()
            self._walk(st, table, chains, stack, work)
            results.append(st)
        results.sort(key=lambda s: -s.prob)
        return results

    def _walk(self, st: WalkState, table: str, chains: dict[str, Chain], stack: list[Frame],
              work: Work) -> None:
        """Follow st until its table's verdict: ACCEPT, DROP, a NAT, undecided or a policy."""
        tr = st.trace
        while True:
            frame = stack[-1]
            ri = frame.next_rule(tr)
            if ri is None:
                stack.pop()
                if not stack:
                    _policy(st, table, chains[st.hook])
                    return
                continue
            rule = frame.chain.rules[ri]
            c = self._get(rule)
            tgt = c.target
            text = c.text
            if text is None:
                text = c.text = rule.describe()
            if tgt is not None and tgt.kind == PASS:
                tr.append(f"{frame.at} #{ri + 1}: {text} (passes: {tgt.name})")
                continue
            m = rule_matches(c.match, st)
            if m is False or m == 0.0:
                tr.append(f"{frame.at} #{ri + 1}: {text} (no match)")
                continue
            where = f"{frame.at} #{ri + 1}"
            if isinstance(m, Undecided):
                st.stop_undecided(f"{where} ({rule.where}): {text}: {m.reason}",
                                  f"{where}: {text} (undecided: {m.reason})")
                return
            if isinstance(m, Depends):
                _fork_on_state(st, stack, work, where, text, m)
            elif isinstance(m, float) and m < 1.0:
                _fork(st, stack, work, where, text, m)
            else:
                tr.append(f"{where}: {text} (matched)")
            if tgt is not None and not self._apply(st, tgt, table, chains, stack, rule, where):
                return

    def _apply(self, st: WalkState, tgt: Target, table: str, chains: dict[str, Chain],
               stack: list[Frame], rule: Rule, where: str) -> bool:
        """Apply a matched rule's target; False when it ends the table for this branch."""
        k = tgt.kind
        if k in (JUMP, GOTO):
            if k == GOTO:
                stack.pop()
            stack.append(self._frame(table, chains[tgt.name], st))
            if len(stack) > MAX_DEPTH:
                raise NatlensError(f"chain loop through {tgt.name}", path=rule.path, where=str(rule.lineno))
            return True
        if k == RETURN:
            stack.pop()
            if not stack:
                _policy(st, table, chains[st.hook])
                return False
            return True
        if k == ACCEPT:
            return False
        if k == DROP:
            st.outcome = DROPPED
            st.decided_by.append(f"{where}: {rule.describe()}")
            return False
        if k in MARK_KINDS:
            apply_marks(st, tgt)
            return True
        if k in NAT_KINDS and table == "nat":
            apply_nat(self.node, st, tgt, where, rule)
        else:
            target_undecided(st, where, rule, f"{tgt.name} outside the nat table" if k in NAT_KINDS
                             else tgt.reason)
        return False


def _fork(st: WalkState, stack: list[Frame], work: Work, where: str, text: str, p: float) -> None:
    """A statistic match with probability p: st takes the rule (text), a copy (1 - p) does not."""
    alt = st.fork()
    alt.prob *= 1.0 - p
    alt.conditions.append(f"{where} not taken (p={1 - p:.4g})")
    alt.trace.append(f"{where}: {text} (no match: branch p={1 - p:.4g})")
    work.append((alt, [f.copy() for f in stack]))
    st.prob *= p
    st.conditions.append(f"{where} taken (p={p:.4g})")
    st.trace.append(f"{where}: {text} (matched: branch p={p:.4g})")


def _fork_on_state(st: WalkState, stack: list[Frame], work: Work, where: str, text: str,
                   d: Depends) -> None:
    """A match on state no dump shows (recent): st takes the rule, a copy does not; each
    branch's probability is from here on given its assumption."""
    alt = st.fork()
    alt.given.append(d.no_tag)
    st.given.append(d.yes_tag)
    alt.conditions.append(f"{where} not taken: {d.no}")
    alt.trace.append(f"{where}: {text} (no match if {d.no})")
    work.append((alt, [f.copy() for f in stack]))
    st.conditions.append(f"{where} taken: {d.yes}")
    st.trace.append(f"{where}: {text} (matched if {d.yes})")
