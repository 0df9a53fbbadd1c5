"""The nft walker: one base chain of a native nft table, rule by rule, statement by statement.

A rule is a list of statements (libnftables-json). Matches test the packet,
``vmap`` looks a key up in a verdict map, verdicts end or redirect the walk
(accept, drop, reject, jump, goto, return, continue), ``meta mark set`` / ``ct
mark set`` change marks, ``notrack`` untracks, snat/dnat/masquerade/redirect
rewrite the packet and accept (as the kernel's nat expressions do), counter and
log pass. A number generator (``numgen random mod N``) forks the walk like
iptables' statistic: one branch per value, each with its probability. Anything
else stops the branch as undecided, naming the rule and its file:line.

Trace lines read like ``nft monitor trace``: family, table, chain, the rule's
text and what it did (``(verdict goto service-...)``, ``(no match)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from natlens.errors import NatlensError
from natlens.netfilter.nft import NftChain, NftRule, NftRuleset
from natlens.netfilter.walk.matches import Undecided
from natlens.netfilter.walk.nftexpr import (
    BITMASK_TYPES,
    BREAK,
    Elements,
    Unsupported,
    Value,
    compile_value,
    in_range,
    literal,
)
from natlens.netfilter.walk.state import DROPPED, WalkState
from natlens.netfilter.walk.targets import (
    DNAT,
    MASQ,
    REDIRECT,
    SNAT,
    MarkOp,
    NatTo,
    Target,
    apply_nat,
)

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules

MAX_DEPTH = 64
HOOKS = {"prerouting": "PREROUTING", "input": "INPUT", "forward": "FORWARD", "output": "OUTPUT",
         "postrouting": "POSTROUTING"}
_FULL = 0xFFFFFFFF
_PASS = ("counter", "log", "set")  # pass: they change nothing the walk tracks
NEXT, STOP = "next", "stop"  # a rule ended without a verdict / the branch ended


class Step(NamedTuple):
    """One compiled statement: ``kind`` says which of the other fields it uses."""

    kind: str                     # match, vmap, verdict, mark, ctmark, nat, notrack, pass, undecided
    fn: Any = None                # match: st -> Answer; vmap: st -> [(p, verdict or None)] | Undecided
    verdict: dict | None = None
    op: MarkOp | None = None
    target: Target | None = None
    reason: str = ""


@dataclass(frozen=True)
class RuleRef:
    """What targets.apply_nat needs of a rule: where it is and its text."""

    where: str
    text: str

    def describe(self) -> str:
        return self.text


@dataclass(slots=True)
class Frame:
    chain: NftChain
    at: str
    pos: int = 0

    def copy(self) -> Frame:
        return Frame(self.chain, self.at, self.pos)


Work = list[tuple[WalkState, list[Frame], Any]]


class NftWalker:
    """Evaluates packets against the native nft tables of a node; compiles each rule once."""

    def __init__(self, node: NodeRules, ruleset: NftRuleset):
        self.node = node
        self.ruleset = ruleset
        self._steps: dict[int, list[Step]] = {}
        self._sets: dict[tuple, Elements] = {}

    def compile_all(self) -> int:
        """Compile every rule now (a malformed literal raises NatlensError); returns the count."""
        n = 0
        for r in self.ruleset.rules():
            self.steps(r)
            n += 1
        return n

    def steps(self, rule: NftRule) -> list[Step]:
        s = self._steps.get(id(rule))
        if s is None:
            s = self._steps[id(rule)] = [self._compile(rule, stmt) for stmt in rule.expr]
        return s

    # ------------------------------------------------------------ compiling
    def _compile(self, rule: NftRule, stmt: Any) -> Step:
        try:
            return self._statement(rule, stmt)
        except Unsupported as exc:
            return Step("undecided", reason=f"{exc} not modelled")
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise NatlensError(f"bad statement {str(stmt)[:60]} ({exc!r})", path=rule.path,
                               where=rule.place or str(rule.lineno)) from None

    def _statement(self, rule: NftRule, stmt: Any) -> Step:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            raise Unsupported(f"statement {str(stmt)[:60]}")
        (k, v), = stmt.items()
        if k == "match":
            return Step("match", fn=self._match(rule, v))
        if k in ("accept", "drop", "reject", "return", "continue", "jump", "goto"):
            return Step("verdict", verdict={k: v})
        if k == "vmap":
            return Step("vmap", fn=self._vmap(rule, v))
        if k == "mangle":
            return self._mangle(v)
        if k in ("snat", "dnat") and isinstance(v, dict) and isinstance(v.get("addr"), dict) \
                and "map" in v["addr"]:
            return Step("natmap", fn=self._nat_map(rule, k, v), target=Target(
                SNAT if k == "snat" else DNAT, k, to=NatTo("", None)))
        if k in ("snat", "dnat", "masquerade", "redirect"):
            return Step("nat", target=_nat_target(k, v))
        if k == "notrack":
            return Step("notrack")
        if k in _PASS:
            return Step("pass")
        if k == "xt":
            what = f"xt {v.get('type', '')} {v.get('name', '')}".strip() if isinstance(v, dict) else "xt"
            raise Unsupported(f"iptables-nft compat expression '{what}' (give iptables-save.txt):")
        if k == "unparsed":
            raise Unsupported(f"statement '{v}'")
        raise Unsupported(f"statement '{k}'")

    def _set_ref(self, rule: NftRule, name: str, types: tuple[str, ...]) -> Elements:
        key = (rule.family, rule.table, name, types)
        els = self._sets.get(key)
        if els is None:
            t = self.ruleset.tables.get((rule.family, rule.table))
            s = t.sets.get(name) if t else None
            if s is None:
                raise Unsupported(f"set @{name} (not in the dump)")
            unread = (f"set @{name} has {len(s.unparsed)} element(s) the dump's parser could not read "
                      f"({s.unparsed[0][:40]})") if s.unparsed else ""
            els = self._sets[key] = Elements(types, [(e.key, e.value) for e in s.elements], unread)
        return els

    def _elements(self, rule: NftRule, right: Any, types: tuple[str, ...], is_map: bool) -> Elements:
        if isinstance(right, str) and right.startswith("@"):
            return self._set_ref(rule, right[1:], types)
        if isinstance(right, dict) and "set" in right:
            items = []
            for e in right["set"] if isinstance(right["set"], list) else [right["set"]]:
                if is_map:
                    items.append((_elem_val(e[0]), e[1]))
                else:
                    items.append((_elem_val(e), True))
            return Elements(types, items)
        raise Unsupported(f"set {str(right)[:40]}")

    def _match(self, rule: NftRule, v: dict) -> Any:
        op, left = v.get("op", "=="), compile_value(v["left"], self.node)
        right = v["right"]
        is_set = (isinstance(right, str) and right.startswith("@")) or \
            (isinstance(right, dict) and "set" in right)
        if left.numgen:
            return _numgen_match(left, op, right, is_set)
        if is_set:
            els = self._elements(rule, right, left.types, False)
            neg = op == "!="
            miss = Undecided(els.unread) if els.unread else False

            def member(x: Any) -> Any:
                hit = els.get(x)[0]
                return (hit != neg) if hit or not els.unread else miss
            return _lifted(left, member)
        if len(left.types) > 1:
            parts = right["concat"] if isinstance(right, dict) and "concat" in right else None
            if parts is None:
                raise Unsupported(f"concatenation compared with {str(right)[:40]}")
            els = Elements(left.types, [({"concat": parts}, True)])
            neg = op == "!="
            return _lifted(left, lambda x: els.get(x)[0] != neg)
        return _compare(left, op, literal(left.types[0], right))

    def _vmap(self, rule: NftRule, v: dict) -> Any:
        key = compile_value(v["key"], self.node)
        if key.numgen:
            mod, off = key.numgen
            els = self._elements(rule, v["data"], ("int",), True)
            options = _numgen_options(els, mod, off)
            return lambda st: options
        els = self._elements(rule, v["data"], key.types, True)

        def look(st: WalkState) -> Any:
            x = key.fn(st)
            if x is BREAK:
                return [(1.0, None)]
            if isinstance(x, Undecided):
                return x
            found, verdict = els.get(x)
            if not found and els.unread:
                return Undecided(els.unread)
            return [(1.0, verdict if found else None)]
        return look

    def _nat_map(self, rule: NftRule, kind: str, v: dict) -> Any:
        """snat/dnat to <key> map {...}: the address (and port) looked up per packet."""
        m = v["addr"]["map"]
        key = compile_value(m["key"], self.node)
        if key.numgen or v.get("port") is not None:
            raise Unsupported(f"{kind} to a map of {str(m['data'])[:40]}")
        els = self._elements(rule, m["data"], key.types, True)

        def look(st: WalkState) -> Any:
            x = key.fn(st)
            if x is BREAK or isinstance(x, Undecided):
                return x
            found, to = els.get(x)
            if not found:
                return BREAK
            if not isinstance(to, str):
                return Undecided(f"{kind} to {str(to)[:40]} from a map")
            return NatTo(to, None)
        return look

    def _mangle(self, v: dict) -> Step:
        key = v["key"]
        which = key.get("meta", key.get("ct", {})).get("key") if isinstance(key, dict) else None
        if which != "mark":
            raise Unsupported(f"{'ct' if 'ct' in key else 'meta'} {which} set")
        kind = "ctmark" if "ct" in key else "mark"
        if v["value"] == ({"meta": {"key": "mark"}} if kind == "ctmark" else {"ct": {"key": "mark"}}):
            return Step("ctmark-save" if kind == "ctmark" else "mark-restore")
        return Step(kind, op=_mark_op(v["value"], kind))

    # ------------------------------------------------------------ walking
    def run_chain(self, st: WalkState, chain: NftChain) -> list[WalkState]:
        """One base chain; the branches, each with outcome None (accepted), dropped or undecided."""
        st.hook = HOOKS.get(chain.hook or "", st.hook)
        results = []
        work: Work = [(st, [Frame(chain, _at(chain))], None)]
        while work:
            s, stack, resume = work.pop()
            self._walk(s, chain, stack, work, resume)
            results.append(s)
        results.sort(key=lambda s: -s.prob)
        return results

    def _walk(self, st: WalkState, base: NftChain, stack: list[Frame], work: Work, resume: Any) -> None:
        while True:
            if resume is not None:
                res, resume = resume, None
            else:
                fr = stack[-1]
                if fr.pos >= len(fr.chain.rules):
                    stack.pop()
                    if not stack:
                        _policy(st, base)
                        return
                    continue
                rule = fr.chain.rules[fr.pos]
                fr.pos += 1
                res = self._rule(st, stack, work, rule, fr.at)
            if res == NEXT:
                continue
            if res == STOP or not self._verdict(st, base, stack, res):
                return

    def _rule(self, st: WalkState, stack: list[Frame], work: Work, rule: NftRule, at: str) -> Any:
        """Run one rule's statements: NEXT, STOP or the verdict (a statement dict) it reached."""
        where = f"{at} #{rule.index}"
        line = f"{where} rule {rule.text}"
        for step in self.steps(rule):
            k = step.kind
            if k == "match":
                a = step.fn(st)
                if a is True:
                    continue
                if a is False or a == 0.0:
                    st.trace.append(f"{line} (no match)")
                    return NEXT
                if isinstance(a, Undecided):
                    return _undecided(st, rule, where, line, a.reason)
                _fork_match(st, stack, work, line, where, a)
            elif k == "vmap":
                return self._take_vmap(st, stack, work, step, rule, where, line)
            elif k == "verdict":
                st.trace.append(f"{line} (verdict {_vtext(step.verdict)})")
                return step.verdict
            elif k == "mark":
                st.mark = step.op.apply(st.mark)
            elif k == "ctmark":
                if st.ct and not st.notrack:
                    st.ctmark = step.op.apply(st.ctmark)
            elif k in ("mark-restore", "ctmark-save"):
                _copy_mark(st, k)
            elif k == "notrack":
                st.notrack = True
            elif k in ("nat", "natmap"):
                tgt = step.target
                if k == "natmap":
                    to = step.fn(st)
                    if to is BREAK:
                        st.trace.append(f"{line} (no element in the map)")
                        return NEXT
                    if isinstance(to, Undecided):
                        return _undecided(st, rule, where, line, to.reason)
                    tgt = tgt._replace(to=to)
                st.trace.append(f"{line} (verdict accept: {tgt.name})")
                apply_nat(self.node, st, tgt, where, RuleRef(rule.where, rule.text))
                return STOP if st.outcome else {"accept": None}
            elif k == "undecided":
                return _undecided(st, rule, where, line, step.reason)
        st.trace.append(f"{line} (matched, no verdict)")
        return NEXT

    def _take_vmap(self, st: WalkState, stack: list[Frame], work: Work, step: Step, rule: NftRule,
                   where: str, line: str) -> Any:
        opts = step.fn(st)
        if isinstance(opts, Undecided):
            return _undecided(st, rule, where, line, opts.reason)
        first, rest = opts[0], opts[1:]
        for p, verdict in rest:
            alt = st.fork()
            alt.prob *= p
            alt.conditions.append(f"{where}: {_vtext(verdict) if verdict else 'no element'} (p={p:.4g})")
            alt.trace.append(f"{line} ({'verdict ' + _vtext(verdict) if verdict else 'no element'}: "
                             f"branch p={p:.4g})")
            work.append((alt, [f.copy() for f in stack], verdict or NEXT))
        p, verdict = first
        tail = f": branch p={p:.4g}" if rest else ""
        if rest:
            st.prob *= p
            st.conditions.append(f"{where}: {_vtext(verdict) if verdict else 'no element'} (p={p:.4g})")
        if verdict is None:
            st.trace.append(f"{line} (no element{tail})")
            return NEXT
        st.trace.append(f"{line} (verdict {_vtext(verdict)}{tail})")
        return verdict

    def _verdict(self, st: WalkState, base: NftChain, stack: list[Frame], v: dict) -> bool:
        """Apply a verdict; False when it ends the base chain for this branch."""
        (k, arg), = v.items()
        if k == "accept":
            return False
        if k in ("drop", "reject"):
            st.outcome = DROPPED
            st.decided_by.append(f"{stack[-1].at}: {k}")
            return False
        if k == "continue":
            return True
        if k == "return":
            stack.pop()
            if not stack:
                _policy(st, base)
                return False
            return True
        target = arg["target"] if isinstance(arg, dict) else arg
        t = self.ruleset.tables.get((base.family, base.table))
        ch = t.chains.get(target) if t else None
        if ch is None:
            st.stop_undecided(f"{stack[-1].at}: {k} {target}: no such chain in the dump",
                              f"undecided: {k} {target}: no such chain")
            return False
        if k == "goto":
            stack.pop()
        stack.append(Frame(ch, _at(ch)))
        if len(stack) > MAX_DEPTH:
            raise NatlensError(f"chain loop through {target}", path=ch.path, where=ch.place or str(ch.lineno))
        return True


# ----------------------------------------------------------------- helpers


def _at(ch: NftChain) -> str:
    return f"{ch.family} {ch.table} {ch.name}"


def _policy(st: WalkState, base: NftChain) -> None:
    st.trace.append(f"{_at(base)} policy {base.policy}")
    if base.policy == "drop":
        st.outcome = DROPPED
        st.decided_by.append(f"{_at(base)} policy drop")


def _undecided(st: WalkState, rule: NftRule, where: str, line: str, reason: str) -> str:
    st.stop_undecided(f"{where} ({rule.where}): {rule.text}: {reason}", f"{line} (undecided: {reason})")
    return STOP


def _vtext(v: dict) -> str:
    (k, arg), = v.items()
    if k in ("jump", "goto"):
        return f"{k} {arg['target'] if isinstance(arg, dict) else arg}"
    return k


def _elem_val(e: Any) -> Any:
    """A set element without its wrapper ({"elem": {"val": ..., "comment": ...}})."""
    return e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e


def _lifted(left: Value, test) -> Any:
    """A match over left's value: BREAK -> no match, Undecided passes through."""
    f = left.fn

    def chk(st: WalkState) -> Any:
        x = f(st)
        if x is BREAK:
            return False
        if isinstance(x, Undecided):
            return x
        return test(x)
    return chk


def _compare(left: Value, op: str, ranges: list) -> Any:
    """A relational match against a literal (its ranges)."""
    t = left.types[0]
    (lo, hi), = ranges
    if t in BITMASK_TYPES and op == "in":
        return _lifted(left, lambda x: (x & lo) != 0)   # 'ct status dnat': a bit test
    if t in BITMASK_TYPES and op == "!":
        return _lifted(left, lambda x: (x & lo) == 0)   # 'ct status ! dnat'

    tests = {"==": lambda x: in_range(x, (lo, hi)), "!=": lambda x: not in_range(x, (lo, hi)),
             "in": lambda x: in_range(x, (lo, hi)), "<": lambda x: x < lo, ">": lambda x: x > hi,
             "<=": lambda x: x <= hi, ">=": lambda x: x >= lo}
    if op not in tests or (op in ("<", ">", "<=", ">=") and isinstance(lo, str)):
        raise Unsupported(f"operator {op} on {t}")
    return _lifted(left, tests[op])


def _numgen_match(left: Value, op: str, right: Any, is_set: bool) -> Any:
    """numgen ... == k (or a set): the probability that the generated number matches."""
    mod, off = left.numgen
    if is_set:
        raise Unsupported("numgen against a set")
    r = literal("int", right)[0]
    hits = sum(1 for x in range(off, off + mod) if in_range(x, r))
    if op == "!=":
        hits = mod - hits
    elif op not in ("==", "in"):
        raise Unsupported(f"numgen {op}")
    p = hits / mod
    return lambda st: True if p == 1.0 else (False if p == 0.0 else p)


def _numgen_options(els: Elements, mod: int, off: int) -> list[tuple[float, dict | None]]:
    """The verdicts of numgen vmap, each with the share of the generated numbers giving it."""
    counts: dict[str, tuple[int, dict | None]] = {}
    for x in range(off, off + mod):
        found, verdict = els.get(x)
        key = repr(verdict) if found else "none"
        n, _ = counts.get(key, (0, None))
        counts[key] = (n + 1, verdict if found else None)
    return sorted(((n / mod, v) for n, v in counts.values()), key=lambda o: -o[0])


def _fork_match(st: WalkState, stack: list[Frame], work: Work, line: str, where: str, p: float) -> None:
    """A match with probability p (numgen == k): st goes on, a copy (1 - p) takes the next rule."""
    alt = st.fork()
    alt.prob *= 1.0 - p
    alt.conditions.append(f"{where} not matched (p={1 - p:.4g})")
    alt.trace.append(f"{line} (no match: branch p={1 - p:.4g})")
    work.append((alt, [f.copy() for f in stack], NEXT))
    st.prob *= p
    st.conditions.append(f"{where} matched (p={p:.4g})")


def _copy_mark(st: WalkState, kind: str) -> None:
    """meta mark set ct mark / ct mark set meta mark (nothing without a conntrack entry)."""
    if not st.ct or st.notrack:
        return
    if kind == "mark-restore":
        st.mark = st.ctmark
    else:
        st.ctmark = st.mark


def _mark_op(value: Any, kind: str) -> MarkOp:
    """meta/ct mark set <value>: an immediate, or the same mark with & | ^ constants."""
    if isinstance(value, int):
        return MarkOp(value & _FULL, _FULL)
    if isinstance(value, str):
        n = int(value, 0)
        return MarkOp(n & _FULL, _FULL)
    if isinstance(value, dict) and len(value) == 1:
        (op, args), = value.items()
        if op in ("&", "|", "^") and len(args) == 2 and isinstance(args[1], (int, str)):
            inner, c = args
            c = int(c, 0) if isinstance(c, str) else c
            same = inner == {("ct" if kind == "ctmark" else "meta"): {"key": "mark"}}
            base = MarkOp(0, 0) if same else (_mark_op(inner, kind) if isinstance(inner, dict) else None)
            if base is None:
                raise Unsupported(f"mark set {str(value)[:40]}")
            step = {"&": MarkOp(0, ~c & _FULL), "|": MarkOp(c, c), "^": MarkOp(c, 0)}[op]
            return _then(base, step)
    raise Unsupported(f"mark set {str(value)[:40]}")


def _then(a: MarkOp, b: MarkOp) -> MarkOp:
    """The one MarkOp doing a, then b: new = (((x & ~ca) ^ xa) & ~cb) ^ xb."""
    return MarkOp(((a.xor & ~b.clear) ^ b.xor) & _FULL, (a.clear | b.clear) & _FULL)


def _nat_target(kind: str, v: Any) -> Target:
    """A nat statement as the Target targets.apply_nat applies (first address and port)."""
    v = v or {}
    if kind == "masquerade":
        return Target(MASQ, "masquerade")
    port = v.get("port")
    if isinstance(port, dict) and "range" in port:
        port = port["range"][0]
    if port is not None and not isinstance(port, int):
        raise Unsupported(f"{kind} port {str(port)[:30]}")
    if kind == "redirect":
        return Target(REDIRECT, "redirect", port=port)
    addr = v.get("addr", "")
    if isinstance(addr, dict) and "range" in addr:
        addr = addr["range"][0]
    if isinstance(addr, dict) and "prefix" in addr:
        addr = addr["prefix"]["addr"]
    if not isinstance(addr, str):
        raise Unsupported(f"{kind} to {str(addr)[:40]}")
    return Target(SNAT if kind == "snat" else DNAT, kind, to=NatTo(addr, port))


