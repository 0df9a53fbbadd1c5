"""iptables-save output -> tables, chains and rules.

Reads what ``iptables-save`` prints with either backend (nf_tables or legacy),
with or without ``[packets:bytes]`` counters (``-c``), and hand-written
iptables-restore input in the same syntax. ``parse_iptables`` also reads what users
paste instead: ``iptables [-t T] -S [-v]`` listings (one or several tables
concatenated) and grep fragments of either format, working out each part's table
from what its lines show and saying in ``notes`` how, and in ``partial`` what the
text leaves out. Every rule keeps its source line and
its text; a match module or target the model does not know is kept verbatim (its
options are still split into ``--option args`` pairs), never dropped. What the
rules *do* to a packet is the business of walk/.

Addresses are kept as (network int, mask int, version) triples so that the
evaluator compares integers, which matters for 100,000-rule kube-proxy dumps.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache

from natlens.errors import NatlensError

BUILTIN_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}

# Options of the tcp/udp/sctp matches, accepted without "-m tcp" after "-p tcp".
_IMPLICIT_PROTO_OPTS = {
    "--dport", "--sport", "--destination-port", "--source-port", "--tcp-flags", "--syn",
    "--tcp-option", "--chunk-types", "--icmp-type",
}

_PROTO_MODULES = {"tcp", "udp", "sctp", "udplite", "dccp", "icmp", "icmp6", "ipv6-icmp"}

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_UNESCAPE = re.compile(r"\\(.)")

Net = tuple[int, int, int]  # (address, mask, ip version)


@lru_cache(maxsize=65536)
def parse_net(text: str) -> Net:
    """'10.0.0.0/8', '10.1.2.3', '10.0.0.0/255.0.0.0' or IPv6 -> (addr, mask, version).

    Raises ValueError on anything else.
    """
    addr, _, plen = text.partition("/")
    ip = ipaddress.ip_address(addr)
    bits = ip.max_prefixlen
    full = (1 << bits) - 1
    if not plen:
        mask = full
    elif plen.isdigit():
        n = int(plen)
        if n > bits:
            raise ValueError(f"prefix length {n} > {bits}")
        mask = full ^ ((1 << (bits - n)) - 1)
    else:
        mask = int(ipaddress.ip_address(plen))
    return int(ip) & mask, mask, ip.version


def format_net(net: Net) -> str:
    addr, mask, version = net
    ip = ipaddress.ip_address(addr) if version == 4 else ipaddress.IPv6Address(addr)
    plen = bin(mask).count("1")
    return f"{ip}/{plen}"


def tokenize(line: str) -> tuple[list[str], set[int]]:
    """Split a rule line like iptables-restore does: double quotes group, backslash escapes.

    Returns the tokens and the positions of tokens that were quoted (a quoted
    "--foo" is a value, never an option).
    """
    if '"' not in line:
        return line.split(), set()
    if "\\" not in line:
        parts = line.split('"')
        if len(parts) % 2:  # balanced quotes, no escapes: the fast path for kube-proxy comments
            toks = []
            quoted = set()
            for i, part in enumerate(parts):
                if i % 2:
                    quoted.add(len(toks))
                    toks.append(part)
                else:
                    toks.extend(part.split())
            return toks, quoted
    toks: list[str] = []
    quoted: set[int] = set()
    for m in _TOKEN.finditer(line):
        if m.group(1) is not None:
            quoted.add(len(toks))
            toks.append(_UNESCAPE.sub(r"\1", m.group(1)))
        else:
            toks.append(m.group(2))
    return toks, quoted


@dataclass(slots=True)
class Option:
    """One ``[!] --name args...`` of a match module."""

    name: str
    args: tuple[str, ...]
    neg: bool = False

    def text(self) -> str:
        vals = " ".join(_quote(a) for a in self.args)
        return ("! " if self.neg else "") + self.name + (" " + vals if vals else "")


@dataclass(slots=True)
class Match:
    """A ``-m module`` and its options, in the order they were written."""

    module: str
    options: list[Option] = field(default_factory=list)
    implicit: bool = False  # "-p tcp --dport 80" without "-m tcp"

    def get(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None


@dataclass(slots=True)
class Rule:
    """One ``-A CHAIN ...`` line."""

    table: str
    chain: str
    lineno: int
    text: str                      # the rule as written, without counters
    proto: tuple[bool, str] | None = None          # (negated, name)
    src: tuple[bool, list[Net]] | None = None
    dst: tuple[bool, list[Net]] | None = None
    in_iface: tuple[bool, str] | None = None
    out_iface: tuple[bool, str] | None = None
    fragment: bool | None = None   # True: -f, False: ! -f
    matches: list[Match] = field(default_factory=list)
    target: str | None = None
    target_args: list[str] = field(default_factory=list)
    goto: bool = False
    counters: tuple[int, int] | None = None
    index: int = 0                 # 1-based position in its chain
    path: str = ""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"

    def comment(self) -> str | None:
        for m in self.matches:
            if m.module == "comment":
                o = m.get("--comment")
                if o and o.args:
                    return o.args[0]
        return None

    def describe(self) -> str:
        """The rule without '-A CHAIN', comments and counters, with the target as '-> T args'.

        This is the text of trace lines: "-m set --match-set X dst,dst -> RETURN".
        """
        parts: list[str] = []
        if self.src:
            parts.append(_neg(self.src[0]) + "-s " + ",".join(format_net(n) for n in self.src[1]))
        if self.dst:
            parts.append(_neg(self.dst[0]) + "-d " + ",".join(format_net(n) for n in self.dst[1]))
        if self.in_iface:
            parts.append(_neg(self.in_iface[0]) + "-i " + self.in_iface[1])
        if self.out_iface:
            parts.append(_neg(self.out_iface[0]) + "-o " + self.out_iface[1])
        if self.proto:
            parts.append(_neg(self.proto[0]) + "-p " + self.proto[1])
        if self.fragment is not None:
            parts.append(_neg(not self.fragment) + "-f")
        for m in self.matches:
            if m.module == "comment":
                continue
            if not m.implicit and not (self.proto and m.module == self.proto[1]):
                parts.append("-m " + m.module)
            parts.extend(o.text() for o in m.options)
        if self.target:
            verb = "-> goto " if self.goto else "-> "
            parts.append(verb + " ".join([self.target, *(_quote(a) for a in self.target_args)]))
        return " ".join(parts) if parts else "(no match, no target)"


def _neg(flag: bool) -> str:
    return "! " if flag else ""


def _quote(s: str) -> str:
    if s and all(c.isalnum() or c in "_-./:,+=" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class Chain:
    """One chain of a table and its rules in order.

    ``declared`` is False for a chain a pasted fragment has rules for but never
    declares (no ``:NAME`` / ``-N`` / ``-P`` line): for a built-in chain its policy is
    then unknown and ``policy`` stays None.
    """

    name: str
    policy: str | None  # ACCEPT/DROP for built-in chains, None for user chains
    rules: list[Rule] = field(default_factory=list)
    counters: tuple[int, int] | None = None
    declared: bool = True


@dataclass
class Ruleset:
    """All tables of one iptables dump: ``tables[name][chain] -> Chain``.

    ``format`` says what the text was: "iptables-save", "iptables -S" (listings with
    their -P lines) or "fragment" (a grep of either). ``partial`` has one line per
    reason the dump does not show the node's whole rule set, each naming the file
    (empty for a complete iptables-save). ``tables_given`` is None for a complete
    iptables-save (every loaded table is in it), else the tables the text shows.
    """

    tables: dict[str, dict[str, Chain]] = field(default_factory=dict)
    backend: str = "unknown"  # "nf_tables", "legacy" or "unknown" (from the header)
    path: str = ""
    notes: list[str] = field(default_factory=list)  # warnings found in comments, inferences
    format: str = "iptables-save"
    partial: list[str] = field(default_factory=list)
    tables_given: frozenset[str] | None = None

    def chain(self, table: str, name: str) -> Chain | None:
        return self.tables.get(table, {}).get(name)

    def rules(self):
        for chains in self.tables.values():
            for ch in chains.values():
                yield from ch.rules

    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.values())


def parse_iptables_save(text: str, path: str = "<iptables-save>") -> Ruleset:
    """Parse iptables-save output; a malformed line raises NatlensError naming path:line."""
    rs = Ruleset(path=path)
    table: dict[str, Chain] | None = None
    tname = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        c0 = line[0]
        if c0 == "#":
            if "Generated by" in line:
                if "nf_tables" in line:
                    rs.backend = "nf_tables"
                elif rs.backend == "unknown":
                    rs.backend = "legacy"
            elif "Completed on" not in line:
                rs.notes.append(f"{path}:{lineno}: {line}")
            continue
        if c0 == "*":
            tname = line[1:].strip()
            if not tname or " " in tname:
                raise NatlensError(f"bad table line {line!r}", path=path, where=str(lineno))
            table = rs.tables.setdefault(tname, {})
            continue
        if line == "COMMIT":
            table = None
            continue
        if table is None:
            raise NatlensError(f"{line[:40]!r} outside a *table ... COMMIT block", path=path, where=str(lineno))
        if c0 == ":":
            ch = _chain_decl(line, path, lineno)
            table[ch.name] = ch
            continue
        counters = None
        if c0 == "[":
            end = line.find("]")
            if end < 0:
                raise NatlensError("unterminated [packets:bytes] counter", path=path, where=str(lineno))
            counters = _counters(line[: end + 1], path, lineno)
            line = line[end + 1 :].lstrip()
        if line.startswith(("-A ", "--append ", "-I ", "--insert ")):
            rule = _parse_rule(line, tname, lineno, path)
            rule.counters = counters
            ch = table.get(rule.chain)
            if ch is None:
                raise NatlensError(f"rule for undeclared chain {rule.chain!r} in table {tname}",
                                   path=path, where=str(lineno))
            if line.startswith(("-I", "--insert")):
                ch.rules.insert(rule.index - 1 if rule.index else 0, rule)
            else:
                ch.rules.append(rule)
            continue
        if line.startswith(("-N ", "--new-chain ")):
            name = line.split()[1]
            table.setdefault(name, Chain(name, None))
            continue
        raise NatlensError(f"unrecognised line {line[:60]!r}", path=path, where=str(lineno))
    if table is not None:
        rs.notes.append(f"{path}: table {tname} has no COMMIT (dump truncated?)")
        rs.partial.append(f"{path}: table {tname} has no COMMIT: the dump may be cut short")
    for chains in rs.tables.values():
        for ch in chains.values():
            for i, r in enumerate(ch.rules, 1):
                r.index = i
    return rs


def _chain_decl(line: str, path: str, lineno: int) -> Chain:
    """':NAME POLICY [p:b]' -> the declared Chain (policy None for '-', a user chain)."""
    parts = line[1:].split()
    if len(parts) < 2:
        raise NatlensError(f"bad chain line {line!r}", path=path, where=str(lineno))
    name, policy = parts[0], parts[1]
    counters = _counters(parts[2], path, lineno) if len(parts) > 2 else None
    if policy not in ("-", "ACCEPT", "DROP", "RETURN", "QUEUE"):
        raise NatlensError(f"bad policy {policy!r} for chain {name}", path=path, where=str(lineno))
    return Chain(name, None if policy == "-" else policy, counters=counters)


def _counters(tok: str, path: str, lineno: int) -> tuple[int, int]:
    try:
        p, b = tok.strip("[]").split(":")
        return int(p), int(b)
    except ValueError:
        raise NatlensError(f"bad counters {tok!r}", path=path, where=str(lineno)) from None


def _parse_rule(line: str, table: str, lineno: int, path: str) -> Rule:
    toks, quoted = tokenize(line)
    n = len(toks)
    if n < 2:
        raise NatlensError("rule without a chain", path=path, where=str(lineno))
    rule = Rule(table, toks[1], lineno, line, path=path)
    i = 2
    if toks[0] in ("-I", "--insert") and i < n and toks[i].isdigit():
        rule.index = int(toks[i])
        i += 1
    neg = False
    cur: Match | None = None
    try:
        while i < n:
            t = toks[i]
            if t == "!" and i not in quoted:
                neg = True
                i += 1
                continue
            if i in quoted or not t.startswith("-"):
                raise NatlensError(f"unexpected {t!r} (token {i + 1})", path=path, where=str(lineno))
            if t in ("-j", "--jump", "-g", "--goto"):
                rule.target = toks[i + 1]
                rule.goto = t in ("-g", "--goto")
                rule.target_args = toks[i + 2 :]
                break
            if t in ("-m", "--match"):
                cur = Match(toks[i + 1])
                rule.matches.append(cur)
                i += 2
                neg = False
                continue
            if t in ("-p", "--protocol"):
                rule.proto = (neg, toks[i + 1].lower())
            elif t in ("-s", "--source", "--src"):
                rule.src = (neg, [parse_net(a) for a in toks[i + 1].split(",")])
            elif t in ("-d", "--destination", "--dst"):
                rule.dst = (neg, [parse_net(a) for a in toks[i + 1].split(",")])
            elif t in ("-i", "--in-interface"):
                rule.in_iface = (neg, toks[i + 1])
            elif t in ("-o", "--out-interface"):
                rule.out_iface = (neg, toks[i + 1])
            elif t in ("-f", "--fragment"):
                rule.fragment = not neg
                i += 1
                neg = False
                continue
            elif t in ("-c", "--set-counters"):
                rule.counters = (int(toks[i + 1]), int(toks[i + 2]))
                i += 3
                continue
            else:
                # a --option of the current match module
                j = i + 1
                if j + 1 < n and toks[j] == "!" and j not in quoted and not toks[j + 1].startswith("-"):
                    neg = True  # old intrapositioned negation: --dport ! 80
                    j += 1
                k = j
                while k < n and (k in quoted or (toks[k] != "!" and not _is_opt(toks[k]))):
                    k += 1
                if t in _IMPLICIT_PROTO_OPTS and rule.proto is not None and (
                        cur is None or cur.module not in _PROTO_MODULES):
                    cur = Match(rule.proto[1], implicit=True)
                    rule.matches.append(cur)
                elif cur is None:
                    raise NatlensError(f"option {t} outside a -m match", path=path, where=str(lineno))
                cur.options.append(Option(t, tuple(toks[j:k]), neg))
                neg = False
                i = k
                continue
            i += 2
            neg = False
    except IndexError:
        raise NatlensError(f"option {toks[-1]!r} lacks its value", path=path, where=str(lineno)) from None
    except ValueError as exc:
        raise NatlensError(f"bad address: {exc}", path=path, where=str(lineno)) from None
    return rule


def _is_opt(tok: str) -> bool:
    # "--foo" or "-x"; a negative number or a lone "-" is a value
    return len(tok) > 1 and tok[0] == "-" and not tok[1].isdigit()
