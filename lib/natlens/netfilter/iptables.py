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
    """(addr, mask, version) -> '10.0.0.0/8'."""
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


# ---------------------------------------------------------------------------------------
# What users paste: iptables -S listings and grep fragments (parse_iptables).
#
# iptables [-t T] -S [-v] prints, per table, "-P CHAIN POLICY [-c P B]" for every
# built-in chain of the table in hook order (iptables-nft too, even for a table or
# chain that has no nft object), then "-N CHAIN" per user chain, then the rules, with
# "-c P B" before the target under -v. Neither it nor a grep of iptables-save names
# the table, so the text is cut into blocks (a table's declarations come before its
# rules, so a declaration after a rule starts the next one) and each block's table is
# worked out from what its lines show.

ALL_TABLES = frozenset(BUILTIN_CHAINS)
_HOOK_ORDER = {"PREROUTING": 0, "INPUT": 1, "FORWARD": 2, "OUTPUT": 3, "POSTROUTING": 4}
_NAT = frozenset({"nat"})

# Targets the kernel accepts in one table only ("x_tables: ip_tables: REJECT target:
# only valid in filter table, not mangle"; both backends refuse them elsewhere), and
# DROP, which iptables refuses in nat ("The nat table is not intended for filtering").
_TARGET_TABLES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"), _NAT),
    "REJECT": frozenset({"filter"}),
    "CT": frozenset({"raw"}),
    "NOTRACK": frozenset({"raw"}),
    "TPROXY": frozenset({"mangle"}),
    "DROP": ALL_TABLES - _NAT,
}

# kube-proxy's iptables-mode chains that exist in nat only (KUBE-SERVICES,
# KUBE-NODEPORTS and KUBE-FIREWALL exist in filter too, so they tell nothing).
_KUBE_NAT_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")
_KUBE_NAT_CHAINS = frozenset({"KUBE-MARK-MASQ", "KUBE-POSTROUTING"})
# kube-proxy's chains that exist in the filter table only (pkg/proxy/iptables, pkg/proxy/ipvs)
_KUBE_FILTER_CHAINS = frozenset({"KUBE-FORWARD", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL",
                                 "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER", "KUBE-SOURCE-RANGES-FIREWALL"})

# Target extensions of iptables (a -j naming none of these, nor a chain, is a chain
# the dump does not show).
_IPTABLES_TARGETS = frozenset({
    "ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "LOG", "NFLOG", "ULOG", "TRACE", "CHECKSUM",
    "TCPMSS", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "AUDIT", "NFACCT", "IDLETIMER", "LED",
    "SECMARK", "CONNSECMARK", "MARK", "CONNMARK", "MASQUERADE", "SNAT", "DNAT", "REDIRECT",
    "NETMAP", "NOTRACK", "CT", "NFQUEUE", "TEE", "TPROXY", "SET", "SYNPROXY", "HMARK",
    "CLUSTERIP", "ECN", "RATEEST", "TCPOPTSTRIP", "DNPT", "SNPT", "IPMARK",
})

_FILE_TABLE = re.compile(r"(?:^|/)ip6?tables-S-(raw|mangle|nat|filter|security)(?:\.txt)?$")
_INLINE_COUNTERS = re.compile(r" (?:-c|--set-counters) (\d+) (\d+)(?= |$)")
_RULE_START = ("-A ", "--append ", "-I ", "--insert ")
_GIVE_TABLE = "give the table (--table on the CLI, or name the file iptables-S-<table>.txt)"


def parse_iptables(text: str, path: str = "<iptables>", table: str | None = None) -> Ruleset:
    """Any iptables text a user pastes -> Ruleset: iptables-save (whole or a fragment), or
    iptables -S (whole, per table, several concatenated).

    Text starting with a ``*table`` header goes to ``parse_iptables_save`` (the fast
    path for 100,000-rule dumps: only the first meaningful line is looked at here).
    Anything else is cut into per-table blocks whose tables are inferred from their
    lines; ``notes`` says what each inference rests on, ``partial`` what the text does
    not show. ``table``, when given, is the table of the whole text (a file named
    ``iptables-S-<table>.txt`` gives it too, for text without headers); text that says
    otherwise is an error. A table that cannot be told raises NatlensError.
    """
    if table is not None and table not in ALL_TABLES:
        raise NatlensError(f"unknown table {table!r} (raw, mangle, nat, filter or security)", path=path)
    if _has_headers(text):
        rs = parse_iptables_save(text, path)
        if table is not None:
            _check_headers(rs, text, path, table)
        return rs
    given = None
    if table is not None:
        given = _Ev(frozenset({table}), f"the given table {table}", quiet=True)
    elif m := _FILE_TABLE.search(path):
        given = _Ev(frozenset({m.group(1)}), f"the file name {path.rsplit('/', 1)[-1]}")
    return _parse_paste(text, path, given)


def _has_headers(text: str) -> bool:
    """Whether the first line that is not blank or a comment is a *table header.

    Text with no such line (empty, or comments only) is an empty iptables-save: what
    iptables-nft-save prints on a node without tables.
    """
    for raw in text.splitlines():
        line = raw.lstrip()
        if line and line[0] != "#":
            return line[0] == "*"
    return True


def _check_headers(rs: Ruleset, text: str, path: str, table: str) -> None:
    """An iptables-save text given as one table must hold that table only."""
    for name in rs.tables:
        if name != table:
            lineno = next((i for i, raw in enumerate(text.splitlines(), 1)
                           if raw.strip() == f"*{name}"), None)
            raise NatlensError(f"table {table} was given, but the text has table {name} (*{name})",
                               path=path, where=None if lineno is None else str(lineno))


@dataclass(frozen=True)
class _Ev:
    """One piece of evidence for a block's table: the tables it allows, and what it is."""

    tables: frozenset[str]
    what: str            # "the MASQUERADE target at line 12"
    quiet: bool = False  # the table argument: not an inference, no note


@dataclass
class _Block:
    """The lines of one table in a pasted text, and what they show of it."""

    first: int
    last: int = 0
    chains: dict[str, Chain] = field(default_factory=dict)
    declared_at: dict[str, int] = field(default_factory=dict)
    builtins: list[str] = field(default_factory=list)   # built-in chains declared, in order
    pchains: list[str] = field(default_factory=list)    # of them, those with a -P line
    user_declared: bool = False
    after_rule: bool = False
    exact: bool = False     # its -P lines are exactly a table's built-in chains
    cand: frozenset[str] = ALL_TABLES
    table: str | None = None

    def span(self) -> str:
        """'lines 5-9' (or 'line 5'): how messages name the block."""
        return f"lines {self.first}-{self.last}" if self.last > self.first else f"line {self.first}"

    def starts_new(self, ch: Chain, builtin: bool) -> bool:
        """Whether declaring ch ends this block: after its rules, a name declared twice, or
        a built-in chain after user chains or out of hook order (the next table's)."""
        if self.after_rule or ch.name in self.declared_at:
            return True
        if builtin:
            return self.user_declared or bool(
                self.builtins and _HOOK_ORDER[ch.name] <= _HOOK_ORDER[self.builtins[-1]])
        return False


@dataclass
class _Scan:
    """A pasted text cut into blocks, with its comments as notes."""

    path: str
    blocks: list[_Block] = field(default_factory=list)
    block: _Block | None = None
    notes: list[str] = field(default_factory=list)
    backend: str = "unknown"
    styles: set[str] = field(default_factory=set)  # ":" (iptables-save), "-S" (-P/-N lines)

    def _open(self, lineno: int) -> _Block:
        """Start the next block at lineno."""
        self.block = _Block(lineno)
        self.blocks.append(self.block)
        return self.block

    def comment(self, line: str, lineno: int) -> None:
        """A comment: the backend if it names one, else kept as a note (warnings matter)."""
        if "Generated by" in line:
            self.backend = "nf_tables" if "nf_tables" in line else "legacy"
            return
        if "iptables-legacy tables present" in line:
            self.backend = "nf_tables"  # iptables-nft's warning on stderr, pasted too
        if "Completed on" not in line:
            self.notes.append(f"{self.path}:{lineno}: {line}")

    def declare(self, ch: Chain, lineno: int, style: str) -> None:
        """A ':NAME', '-N NAME' or '-P NAME' line (style ':', '-N', '-P'), in this block or
        the next one."""
        builtin = ch.name in _HOOK_ORDER and (style == "-P" or ch.policy is not None)
        b = self.block
        if b is None or b.starts_new(ch, builtin):
            b = self._open(lineno)
        b.chains[ch.name] = ch
        b.declared_at[ch.name] = b.last = lineno
        if builtin:
            b.builtins.append(ch.name)
            if style == "-P":
                b.pchains.append(ch.name)
        else:
            b.user_declared = True
        self.styles.add(":" if style == ":" else "-S")

    def rule(self, line: str, lineno: int) -> None:
        """An '-A'/'-I' line (with '[p:b]' before it or '-c P B' in it) into its chain,
        which it creates undeclared if the block has not declared it."""
        counters = None
        if line[0] == "[":
            end = line.find("]")
            if end < 0:
                raise NatlensError("unterminated [packets:bytes] counter", path=self.path, where=str(lineno))
            counters = _counters(line[: end + 1], self.path, lineno)
            line = line[end + 1 :].lstrip()
        elif " -c " in line or " --set-counters " in line:
            line, counters = _inline_counters(line)
        if not line.startswith(_RULE_START):
            raise NatlensError(f"unrecognised line {line[:60]!r}", path=self.path, where=str(lineno))
        rule = _parse_rule(line, "", lineno, self.path)
        if counters is not None:
            rule.counters = counters
        b = self.block or self._open(lineno)
        b.after_rule = True
        b.last = lineno
        ch = b.chains.get(rule.chain)
        if ch is None:
            ch = b.chains[rule.chain] = Chain(rule.chain, None, declared=False)
        if line.startswith(("-I", "--insert")):
            ch.rules.insert(rule.index - 1 if rule.index else 0, rule)
        else:
            ch.rules.append(rule)


def _inline_counters(line: str) -> tuple[str, tuple[int, int] | None]:
    """'-A X -s N -c 5 300 -j T' (iptables -S -v) -> the rule without them, and (5, 300).

    Taken out so that rule.text is the rule as iptables-save writes it; '-c' inside a
    quoted comment is left alone.
    """
    m = _INLINE_COUNTERS.search(line)
    if m is None or line.count('"', 0, m.start()) % 2:
        return line, None
    return line[: m.start()] + line[m.end() :], (int(m.group(1)), int(m.group(2)))


def _policy_line(line: str, path: str, lineno: int) -> Chain:
    """'-P CHAIN POLICY [-c P B]' -> the built-in chain with its policy."""
    toks = line.split()
    counters = None
    if len(toks) == 6 and toks[3] in ("-c", "--set-counters"):
        counters = _counters(f"{toks[4]}:{toks[5]}", path, lineno)
    elif len(toks) != 3:
        raise NatlensError(f"bad policy line {line[:60]!r} (-P CHAIN POLICY [-c PACKETS BYTES])",
                           path=path, where=str(lineno))
    name, policy = toks[1], toks[2]
    if name not in _HOOK_ORDER:
        raise NatlensError(f"-P {name}: only built-in chains have a policy", path=path, where=str(lineno))
    if policy not in ("ACCEPT", "DROP"):
        raise NatlensError(f"bad policy {policy!r} for chain {name} (ACCEPT or DROP)",
                           path=path, where=str(lineno))
    return Chain(name, policy, counters=counters)


def _new_chain_line(line: str, path: str, lineno: int) -> Chain:
    """'-N CHAIN' -> the user chain."""
    toks = line.split()
    if len(toks) != 2:
        raise NatlensError(f"bad chain line {line[:60]!r} (-N CHAIN)", path=path, where=str(lineno))
    return Chain(toks[1], None)


def _scan(text: str, path: str) -> _Scan:
    """Cut a text without *table headers into blocks, each line used or skipped (blank,
    comment) or an error naming path:line."""
    sc = _Scan(path)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        c0 = line[0]
        if c0 == "#":
            sc.comment(line, lineno)
        elif c0 == "*":
            parse_iptables_save(text, path)  # raises: the lines before it are outside a table
            raise NatlensError(f"{line!r} after lines outside a *table ... COMMIT block",
                               path=path, where=str(lineno))
        elif line == "COMMIT":
            sc.block = None  # a grep that kept COMMIT: the table ends here
        elif c0 == ":":
            sc.declare(_chain_decl(line, path, lineno), lineno, ":")
        elif line.startswith(("-P ", "--policy ")):
            sc.declare(_policy_line(line, path, lineno), lineno, "-P")
        elif line.startswith(("-N ", "--new-chain ")):
            sc.declare(_new_chain_line(line, path, lineno), lineno, "-N")
        elif c0 in "-[":
            sc.rule(line, lineno)
        else:
            hint = " (iptables -L output? paste iptables-save or iptables -S)" if line.startswith(
                ("Chain ", "target ", "pkts ", "num ")) else ""
            raise NatlensError(f"unrecognised line {line[:60]!r}{hint}", path=path, where=str(lineno))
    return sc


def _kube_table(name: str) -> str | None:
    """The one table a chain of kube-proxy's by this name exists in ("nat", "filter"), or None
    (not kube-proxy's, or in several: KUBE-SERVICES, KUBE-NODEPORTS, KUBE-FIREWALL, ...)."""
    if name in _KUBE_NAT_CHAINS or name.startswith(_KUBE_NAT_PREFIXES):
        return "nat"
    return "filter" if name in _KUBE_FILTER_CHAINS else None


def _rule_evidence(b: _Block) -> tuple[list[tuple[int, _Ev]], list[tuple[int, _Ev]]]:
    """(one-table targets, kube-proxy nat chains) of a block's rules: the first of each
    kind, with its line."""
    targets: dict[str, tuple[int, _Ev]] = {}
    kube: dict[str, tuple[int, str]] = {}
    for ch in b.chains.values():
        for r in ch.rules:
            t = r.target
            if t in _TARGET_TABLES and (t not in targets or r.lineno < targets[t][0]):
                targets[t] = (r.lineno, _Ev(_TARGET_TABLES[t], f"the {t} target at line {r.lineno}"))
            for name in (r.chain, t):
                if name and _kube_table(name) and (name not in kube or r.lineno < kube[name][0]):
                    kube[name] = (r.lineno, name)
    for name, lineno in b.declared_at.items():
        if _kube_table(name) and (name not in kube or lineno < kube[name][0]):
            kube[name] = (lineno, name)
    first_kube = sorted(kube.values())[:3]
    return sorted(targets.values(), key=lambda x: x[0]), [
        (n, _Ev(frozenset({_kube_table(name)}), f"kube-proxy's {_kube_table(name)} chain {name} at line {n}"))
        for n, name in first_kube]


def _evidence(b: _Block) -> list[_Ev]:
    """What a block's lines say of its table, strongest first: its -P lines (a whole
    listing's set of built-in chains names its table), targets valid in one table only,
    the built-in chains it uses, kube-proxy's nat-only chains."""
    evs: list[_Ev] = []
    if b.pchains:
        exact = frozenset(t for t, bs in BUILTIN_CHAINS.items() if set(bs) == set(b.pchains))
        b.exact = bool(exact)
        if exact:
            lines = f"{b.declared_at[b.pchains[0]]}-{b.declared_at[b.pchains[-1]]}"
            evs.append(_Ev(exact, f"the -P lines of {' '.join(b.pchains)} at lines {lines}"))
    targets, kube = _rule_evidence(b)
    builtins = []
    for name, ch in b.chains.items():
        if name in _HOOK_ORDER:
            n = b.declared_at.get(name) or min(r.lineno for r in ch.rules)
            tables = frozenset(t for t, bs in BUILTIN_CHAINS.items() if name in bs)
            builtins.append((n, _Ev(tables, f"the built-in chain {name} at line {n}")))
    evs += [ev for _, ev in targets] + [ev for _, ev in sorted(builtins, key=lambda x: x[0])]
    return evs + [ev for _, ev in kube]


def _and(evs: list[_Ev]) -> str:
    """'A, B and C' of the evidence, for notes and messages."""
    words = [ev.what for ev in evs]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _or(tables: frozenset[str]) -> str:
    """'filter, mangle or nat', sorted."""
    names = sorted(tables)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _narrow(b: _Block, evs: list[_Ev], path: str) -> list[_Ev]:
    """Intersect the tables each piece of evidence allows; sets b.cand and returns the
    evidence that narrowed it. Evidence that leaves no table raises NatlensError."""
    used: list[_Ev] = []
    for ev in evs:
        new = b.cand & ev.tables
        if new == b.cand:
            continue
        if not new:
            raise NatlensError(
                f"{b.span()} cannot be one table: {ev.what} points to {_or(ev.tables)}, but "
                f"{_and(used)} to {_or(b.cand)}; split the text by table and {_GIVE_TABLE}",
                path=path, where=str(b.first))
        b.cand = new
        used.append(ev)
    return used


def _infer_tables(blocks: list[_Block], given: _Ev | None, path: str, notes: list[str]) -> None:
    """Give every block its table: its own evidence, then jumps to and from blocks already
    known, then filter for a filter/security listing; a note for each inference."""
    for b in blocks:
        used = _narrow(b, ([given] if given else []) + _evidence(b), path)
        if len(b.cand) == 1:
            b.table = next(iter(b.cand))
            if not used[0].quiet:
                notes.append(f"{path}:{b.first}: table {b.table} inferred for {b.span()} from {_and(used)}")
    _tie_by_jumps(blocks, path, notes)
    filt = next((b for b in blocks if b.table == "filter"), None)
    for b in blocks:
        if b.table is None and b.cand == {"filter", "security"} and b.exact:
            if filt is None:
                b.table, filt = "filter", b
                why = "iptables -S lists filter unless given -t security"
            else:
                b.table, why = "security", f"filter is the listing at {filt.span()}"
            notes.append(f"{path}:{b.first}: table {b.table} taken for {b.span()}: its -P lines "
                         f"(INPUT FORWARD OUTPUT) are those of filter and of security; {why}")
    for b in blocks:
        if b.table is None:
            names = ", ".join(list(b.chains)[:3]) + (", ..." if len(b.chains) > 3 else "")
            split = "; split the text by table first" if len(blocks) > 1 else ""
            raise NatlensError(f"cannot tell the table of {b.span()} (chains {names}): it could be "
                               f"{_or(b.cand)}; {_GIVE_TABLE}{split}", path=path, where=str(b.first))


def _outside_jumps(b: _Block) -> list[tuple[str, int]]:
    """(chain, line) of a block's jumps to chains it does not hold."""
    return [(r.target, r.lineno) for ch in b.chains.values() for r in ch.rules
            if r.target and r.target not in b.chains and r.target not in _IPTABLES_TARGETS]


def _tie_by_jumps(blocks: list[_Block], path: str, notes: list[str]) -> None:
    """A jump ties two chains to one table: a block of unknown table takes the table of
    the known blocks it jumps into or that jump into it, when they all agree."""
    jumps = {id(b): _outside_jumps(b) for b in blocks}
    changed = True
    while changed:
        changed = False
        for b in blocks:
            if b.table is not None:
                continue
            found: dict[str, str] = {}
            for o in blocks:
                if o is b or o.table is None or o.table not in b.cand:
                    continue
                for name, n in jumps[id(b)]:
                    if name in o.chains:
                        found.setdefault(o.table, f"the jump to {name} at line {n} (a chain of {o.span()})")
                for name, n in jumps[id(o)]:
                    if name in b.chains:
                        found.setdefault(o.table, f"the jump to {name} at line {n} ({o.span()})")
            if len(found) == 1:
                (b.table, why), = found.items()
                notes.append(f"{path}:{b.first}: table {b.table} inferred for {b.span()} from {why}")
                changed = True


def _assemble(blocks: list[_Block], path: str) -> dict[str, dict[str, Chain]]:
    """The blocks' chains by table; blocks of one table merge, a chain declared twice in
    one table (the same table pasted twice?) is an error."""
    tables: dict[str, dict[str, Chain]] = {}
    declared: dict[tuple[str, str], int] = {}
    for b in blocks:
        chains = tables.setdefault(b.table or "", {})
        for name, ch in b.chains.items():
            if name in b.declared_at:
                first = declared.setdefault((b.table or "", name), b.declared_at[name])
                if first != b.declared_at[name]:
                    raise NatlensError(f"chain {name} of table {b.table} declared twice (lines {first} "
                                       f"and {b.declared_at[name]}): the same table pasted twice?",
                                       path=path, where=str(b.declared_at[name]))
            old = chains.get(name)
            if old is None:
                chains[name] = ch
                continue
            old.rules.extend(ch.rules)
            if ch.declared:
                old.policy, old.counters, old.declared = ch.policy, ch.counters, True
    for tname, chains in tables.items():
        for ch in chains.values():
            for i, r in enumerate(ch.rules, 1):
                r.table, r.index = tname, i
    return tables


def _parse_paste(text: str, path: str, given: _Ev | None) -> Ruleset:
    """Text without *table headers -> Ruleset: cut into blocks, tables inferred, merged."""
    sc = _scan(text, path)
    _infer_tables(sc.blocks, given, path, sc.notes)
    listing = sc.styles == {"-S"} and all(b.pchains for b in sc.blocks)
    rs = Ruleset(_assemble(sc.blocks, path), sc.backend, path, sc.notes,
                 "iptables -S" if listing else "fragment")
    rs.tables_given = frozenset(rs.tables)
    if not listing:
        rs.partial.append(_fragment_line(sc, path))
    for b in sc.blocks:
        if b.pchains and not b.exact:
            rs.partial.append(f"{path}:{b.first}: iptables -S listing with the policies of "
                              f"{' '.join(b.pchains)} only (iptables -S CHAIN?): the other chains "
                              f"of table {b.table} are not given")
    line = _tables_line(path, rs.tables_given, rs.format)
    rs.partial += ([line] if line else []) + _undeclared_lines(rs.tables, path)
    rs.partial += _missing_jumps_line(rs.tables, path)
    return rs


def _fragment_line(sc: _Scan, path: str) -> str:
    """Why a text without headers (or without -P lines) is a fragment."""
    if ":" in sc.styles:
        return (f"{path}: no *table headers: a fragment of iptables-save (a grep?); rules it left "
                "out are not walked")
    if sc.styles:
        return (f"{path}: iptables -S lines without a listing's -P lines: a fragment (a grep?); "
                "rules it left out are not walked")
    return (f"{path}: only rule lines, no *table headers, chain declarations or -P lines: a "
            "fragment (a grep?); rules it left out are not walked")


def _tables_line(path: str, given: frozenset[str] | None, fmt: str) -> str | None:
    """'x.txt: iptables -S of table nat only: filter, mangle, raw, security not given'."""
    if given is None or not ALL_TABLES - given:
        return None
    shown = ", ".join(sorted(given))
    what = "iptables -S" if fmt == "iptables -S" else "rules"
    plural = "s" if len(given) > 1 else ""
    return f"{path}: {what} of table{plural} {shown} only: {', '.join(sorted(ALL_TABLES - given))} not given"


def _undeclared_lines(tables: dict[str, dict[str, Chain]], path: str) -> list[str]:
    """One line per chain with rules but no declaration (at most 5, then a count)."""
    out = []
    for tname, chains in tables.items():
        for ch in chains.values():
            if not ch.declared:
                n = min(r.lineno for r in ch.rules)
                builtin = "; a built-in chain: its policy is unknown" if ch.name in _HOOK_ORDER else ""
                out.append(f"{path}:{n}: rules for chain {ch.name} without its declaration "
                           f"(table {tname}{builtin})")
    if len(out) > 5:
        out[5:] = [f"{path}: and {len(out) - 5} more chains with rules but no declaration"]
    return out


def _missing_jumps_line(tables: dict[str, dict[str, Chain]], path: str) -> list[str]:
    """'jumps to chains not in the dump: A, B, ...' (5 names, then 'and N more')."""
    names: dict[str, None] = {}
    for chains in tables.values():
        for ch in chains.values():
            for r in ch.rules:
                t = r.target
                if t and t not in chains and t not in _IPTABLES_TARGETS:
                    names[t] = None
    if not names:
        return []
    shown = ", ".join(list(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return [f"{path}: jumps to chains not in the dump: {shown}"]


def merge_rulesets(parts: list[Ruleset], path: str) -> Ruleset:
    """Per-table dumps of one node (iptables-S-nat.txt, iptables-S-filter.txt, ...) -> one
    Ruleset named path.

    A table in two parts is an error naming both files. Chains and rules are the
    parts' own (each rule keeps its file in rule.path); notes and partial are the
    parts', except that which tables are given is worked out again for the whole: all
    five given -> not partial on that account. ``format`` is the parts' common one,
    else "fragment" if any is, else "iptables -S".
    """
    if not parts:
        raise NatlensError("no iptables dumps to merge", path=path)
    owner: dict[str, Ruleset] = {}
    tables: dict[str, dict[str, Chain]] = {}
    for p in parts:
        for tname, chains in p.tables.items():
            if tname in owner:
                raise NatlensError(f"table {tname} is in both {owner[tname].path} and {p.path}", path=path)
            owner[tname], tables[tname] = p, chains
    formats = {p.format for p in parts}
    fmt = formats.pop() if len(formats) == 1 else "fragment" if "fragment" in formats else "iptables -S"
    given = None if any(p.tables_given is None for p in parts) else frozenset().union(
        *(p.tables_given for p in parts if p.tables_given is not None))
    backends = sorted({p.backend for p in parts} - {"unknown"})
    rs = Ruleset(tables, backends[0] if len(backends) == 1 else "unknown", path,
                 [n for p in parts for n in p.notes], fmt, tables_given=given)
    if len(backends) > 1:
        rs.notes.append(f"{path}: the dumps come from different backends: {', '.join(backends)}")
    for p in parts:
        own = _tables_line(p.path, p.tables_given, p.format)
        rs.partial += [line for line in p.partial if line != own]
    line = _tables_line(path, given, fmt)
    rs.partial += [line] if line else []
    return rs
