"""nft rule sets -> tables, chains, sets and rules, in one model for both dump formats.

Reads ``nft list ruleset`` text (the block syntax nft prints), ``nft -f`` command
files (``add table ...`` / ``add rule ...``, the shape kube-proxy's knftables
writes) and ``nft -j list ruleset`` JSON (libnftables-json(5)). All three become
one ``NftRuleset``. A rule's statements are kept in the libnftables-json form
(``NftRule.expr``: a list of statement dicts, exactly as ``nft -j`` prints them),
whichever format they came from: the JSON schema is documented and stable, so
the walk (walk/nftables.py) evaluates one form only. A statement the text parser
cannot put into that form is kept as ``{"unparsed": "<text>"}``: the walk stops
such a path as undecided, naming the rule; it is never dropped.

What the rules *do* to a packet is the business of walk/.

The text-to-JSON translation follows what nft 1.0.6 prints with ``-j`` for the
same rule (checked by loading rule sets into a namespace and listing them both
ways): ports, marks and other numbers are ints, addresses and symbolic values
strings; an implicit relation on a bitmask type (``ct state new``, ``ct status
dnat``, ``tcp flags syn``) is op ``in``, any other implicit one ``==``; a flag list
(``established,related``) is a JSON list, an anonymous set ``{"set": [...]}``.
Command files are what nft is *given*, not what it lists, so three
normalisations nft applies on loading are applied to them too: a one-element
anonymous set of single values becomes that value (``ip daddr { 10.0.0.0/8 }``
lists as ``ip daddr 10.0.0.0/8``), a ``meta l4proto tcp`` (or ``ip protocol``,
``ip6 nexthdr``) dependency before a ``th`` or ``tcp`` match is folded into it
(``meta l4proto tcp th dport 80`` lists as ``tcp dport 80``), and a bare
``counter`` is ``{"packets": 0, "bytes": 0}``. Known differences of nft 1.0.6
itself between its text and JSON listings: JSON omits a set's ``dynamic`` flag, a
netdev chain's device and a table's comment, and shows iptables-nft's compat
statements as bare ``{"xt": {"type", "name"}}`` where the text shows their
translation (``xt match physdev`` only when there is none).

Speed (a 10,000-Service kube-proxy rule set is 95,000 rules): the text parser reads
the lines a big dump is made of (a rule of one line, ``add rule``/``add chain``/``add
element``, a chain's header and its closing brace, element lists) without the token
stream, and translates each rule or element *shape* (its text with the addresses,
numbers, quoted strings and capitalised names taken out; see _Shapes) once, then only
fills in the constants; anything else goes through the token parser. A one-line JSON
dump is decoded whole and a JSON rule's text is formatted when first read. The
collector is off during a parse (see parse_nft and _settled).

Places: ``where`` of a rule, chain, set or table is "path:line" for nft syntax and
pretty-printed JSON; nft -j prints one line, so there it is "path: rule handle 57 (ip
kube-proxy services)" (``place``), and errors name the item as ``nftables[i]``.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from natlens.errors import NatlensError

# Named chain priorities (nft(8), "PRIORITY"), for the ip, ip6 and inet families.
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                  "srcnat": 100}
# The bridge family names the same priorities differently (nft(8)).
BRIDGE_PRIORITY_NAMES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
# The tables iptables-nft keeps in nft (they also appear in iptables-save output).
XTABLES = ("raw", "mangle", "nat", "filter", "security")
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
IPTABLES_NFT = "iptables-nft"


class _Placed:
    """``where`` for error messages and undecided reasons: "path:line" for nft syntax (and
    a pretty-printed JSON dump), "path: place" where a line says nothing (nft -j prints
    the whole dump on one line: place names the object, a rule by handle and chain)."""

    path: str
    lineno: int
    place: str | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}" if self.place is None else f"{self.path}: {self.place}"


@dataclass
class NftElement:
    """One element of a set or map: its key, its data (maps only) and its comment.

    ``key`` and ``value`` are in libnftables-json form: a string or int, or
    {"prefix": {"addr", "len"}}, {"range": [lo, hi]}, {"concat": [...]}; a verdict
    map's value is a verdict statement ({"goto": {"target": "x"}}, {"drop": None}).
    """

    key: Any
    value: Any = None
    comment: str | None = None


@dataclass
class NftSet(_Placed):
    """A named set or map of one table.

    ``key`` is the key's type, one name per concatenated field
    (("ipv4_addr", "inet_proto", "inet_service")); a ``typeof`` declaration is
    resolved to the same type names. ``data`` is a map's value type ("verdict",
    "ipv4_addr", ...; several names joined by " . " for a concatenation), None for
    a set.
    """

    family: str
    table: str
    name: str
    key: tuple[str, ...]
    data: str | None = None
    flags: frozenset[str] = frozenset()
    elements: list[NftElement] = field(default_factory=list)
    comment: str | None = None
    path: str = ""
    lineno: int = 0
    # Elements the text parser could not read, verbatim: a lookup that misses the
    # known elements of a set with such entries is undecided, not a miss.
    unparsed: list[str] = field(default_factory=list)
    place: str | None = None        # see _Placed

    @property
    def is_map(self) -> bool:
        return self.data is not None


@dataclass
class NftRule(_Placed):
    """One rule: its statements (libnftables-json form) and its text for trace lines."""

    family: str
    table: str
    chain: str
    expr: list[dict]
    text: str                       # nft syntax: as written, or formatted from the JSON
    path: str = ""
    lineno: int = 0                 # the line in the file (JSON: the line the rule object starts on)
    handle: int | None = None
    comment: str | None = None
    index: int = 0                  # 1-based position in its chain
    place: str | None = None        # see _Placed


class _JsonRule(NftRule):
    """A rule read from JSON: its text is formatted from its statements when first read.
    Most rules of a big dump never show in a trace, and formatting all of them was a third
    of reading one."""

    _text: str | None

    @property  # type: ignore[override]
    def text(self) -> str:
        t = self._text
        if t is None:
            t = format_rule(self.expr, self.family)
            if self.comment is not None:
                t += f' comment "{self.comment}"'
            self._text = t
        return t

    @text.setter
    def text(self, value: str | None) -> None:
        self._text = value


@dataclass
class NftChain(_Placed):
    """A chain; a base chain has type, hook and priority (``prio``, a number)."""

    family: str
    table: str
    name: str
    type: str | None = None         # filter, nat, route
    hook: str | None = None         # prerouting, input, forward, output, postrouting, ingress
    prio: int | None = None
    policy: str = "accept"
    device: str | None = None       # netdev/ingress chains
    rules: list[NftRule] = field(default_factory=list)
    comment: str | None = None
    path: str = ""
    lineno: int = 0
    place: str | None = None        # see _Placed

    @property
    def base(self) -> bool:
        return self.hook is not None


@dataclass
class NftTable(_Placed):
    """One table: its chains and its named sets and maps."""

    family: str                     # ip, ip6, inet, arp, bridge, netdev
    name: str
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    comment: str | None = None
    managed_by: str | None = None   # "iptables-nft" when nft says so, or its rules hold xt statements
    path: str = ""
    lineno: int = 0
    place: str | None = None        # see _Placed


@dataclass
class NftRuleset:
    """All tables of one nft dump, by (family, name)."""

    tables: dict[tuple[str, str], NftTable] = field(default_factory=dict)
    path: str = ""
    format: str = ""                # "text", "commands" or "json"
    notes: list[str] = field(default_factory=list)

    def base_chains(self) -> Iterator[NftChain]:
        for t in self.tables.values():
            for ch in t.chains.values():
                if ch.base:
                    yield ch

    def rules(self) -> Iterator[NftRule]:
        for t in self.tables.values():
            for ch in t.chains.values():
                yield from ch.rules

    def rule_count(self) -> int:
        return sum(1 for _ in self.rules())


# ----------------------------------------------------------------------------- public


def parse_nft(text: str, path: str = "<nft>") -> NftRuleset:
    """An nft dump of any of the three formats -> NftRuleset (``format`` says which).

    JSON when the text starts with ``{``; otherwise nft syntax, "commands" when it
    holds ``add``/``create``/``insert`` commands and "text" (the block syntax of
    ``nft list ruleset``) when not. Raises NatlensError naming ``path:line`` for a
    file that is none of these or is structurally broken; a statement inside a
    rule that cannot be translated is kept as {"unparsed": text} instead.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    body = text.lstrip(" \t\r\n")
    # The cyclic garbage collector, which is process-wide (see _settled): off while the
    # parse runs, and on again, as it was, however the parse ends.
    collecting = gc.isenabled()
    gc.disable()
    try:
        rs = _parse_json(text, path) if body.startswith("{") else _TextParser(text, path).parse()
        if collecting:
            _settled()
        return rs
    finally:
        if collecting:
            gc.enable()


def _settled() -> None:
    """Move every object the collector tracks to its oldest generation, uncollected.

    A big dump becomes a million small containers (dicts and lists of the statements)
    that live as long as the model, in no cycle. The collector would walk all of them in
    each generation they pass through: during the parse (why it is off then) and, after
    it, three times within the next hundred thousand allocations (young, middle and old
    generation), only to find them alive; for 10,000 kube-proxy Services each walk takes
    0.3-0.5 s, which the first queries paid. gc.freeze() then gc.unfreeze() is the
    documented way to move them straight to the oldest generation, walked at the next
    full collection only; both splice lists (no walk), and nothing is left frozen. The
    caller's own young objects move too, which only makes a cycle among them wait for
    that full collection. Skipped when the caller keeps objects frozen (a server that
    forks), which unfreezing would undo.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def chain_priority(text: str, family: str = "ip") -> int:
    """A chain priority as nft writes it ('dstnat - 10', 'filter + 5', '-110', 'srcnat') -> int.

    The names are the family's (PRIORITY_NAMES, or BRIDGE_PRIORITY_NAMES for
    bridge). Raises ValueError for anything else.
    """
    m = _PRIO.match(text)
    if m is None:
        raise ValueError(f"bad chain priority {text.strip()!r}")
    base, sign, offset = m.groups()
    if base.lstrip("+-").isdigit():
        value = int(base)
    else:
        names = BRIDGE_PRIORITY_NAMES if family == "bridge" else PRIORITY_NAMES
        if base not in names:
            raise ValueError(f"unknown chain priority name {base!r} for family {family}")
        value = names[base]
    if sign:
        value += int(offset) if sign == "+" else -int(offset)
    return value


_PRIO = re.compile(r"^\s*([a-z]+|[+-]?\d+)\s*(?:([+-])\s*(\d+))?\s*$")


# ----------------------------------------------------------------------------- lexer


class _Tok:
    """One token: kind w(ord), s(tring, val unquoted), p(unctuation) or n(ewline)."""

    __slots__ = ("kind", "val", "raw", "line", "col", "end", "sp")

    def __init__(self, kind: str, val: str, raw: str, line: int, col: int, end: int, sp: bool):
        self.kind, self.val, self.raw = kind, val, raw
        self.line, self.col, self.end, self.sp = line, col, end, sp

    def __repr__(self) -> str:
        return f"<{self.kind} {self.raw!r} @{self.line}>"


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|#.*|[{};,()|&^]|[^\s{};,()|&^"#]+|"')
_PUNCT = frozenset("{};,()|&^")
_PLAIN_LINE = re.compile(r'^[^{};,()|&^"#]*$')
_HANDLE = re.compile(r"#\s*handle\s+(\d+)")
_MANAGED = re.compile(r"#\s*Warning:\s*table\s+(\S+)\s+(\S+)\s+is managed by iptables-nft")
_UNESCAPE = re.compile(r"\\(.)")


def _lex_line(src: str, line: int, append: Any, handles: dict[int, int],
              managed: set[tuple[str, str]], path: str) -> None:
    """One line -> its tokens and a closing newline token; remembers what comments tell."""
    if _PLAIN_LINE.match(src):
        _lex_plain(src, line, append)
        return
    prev = -1
    for m in _TOKEN.finditer(src):
        raw = m.group()
        col, end = m.span()
        sp = col != prev
        prev = end
        c = raw[0]
        if c == "#":
            _lex_comment(raw, line, handles, managed)
        elif c == '"':
            if len(raw) == 1:
                raise NatlensError("unterminated quoted string", path=path, where=str(line))
            val = _UNESCAPE.sub(r"\1", raw[1:-1]) if "\\" in raw else raw[1:-1]
            append(_Tok("s", val, raw, line, col, end, sp))
        elif c in _PUNCT and len(raw) == 1:
            append(_Tok("p", raw, raw, line, col, end, sp))
        elif raw[-1] == ":" and len(raw) > 1 and ":" not in raw[:-1]:
            append(_Tok("w", raw[:-1], raw[:-1], line, col, end - 1, sp))
            append(_Tok("w", ":", ":", line, end - 1, end, False))
        else:
            append(_Tok("w", raw, raw, line, col, end, sp))
    append(_Tok("n", "\n", "\n", line, len(src), len(src) + 1, True))


def _lex_plain(src: str, line: int, append: Any) -> None:
    """A line of plain words (most of a big dump): split on whitespace, no regex per token."""
    pos = 0
    for w in src.split():
        col = src.index(w, pos)
        end = col + len(w)
        if w[-1] == ":" and len(w) > 1 and ":" not in w[:-1]:
            append(_Tok("w", w[:-1], w[:-1], line, col, end - 1, True))
            append(_Tok("w", ":", ":", line, end - 1, end, False))
        else:
            append(_Tok("w", w, w, line, col, end, True))
        pos = end
    append(_Tok("n", "\n", "\n", line, len(src), len(src) + 1, True))


def _lex_comment(raw: str, line: int, handles: dict[int, int], managed: set[tuple[str, str]]):
    """Keep what a comment tells: a rule's handle, or iptables-nft's ownership of a table."""
    h = _HANDLE.search(raw)
    if h:
        handles[line] = int(h.group(1))
        return
    w = _MANAGED.match(raw)
    if w:
        managed.add((w.group(1), w.group(2)))


def _join(toks: list[_Tok]) -> str:
    """Tokens back to text, one space where the source had any."""
    out: list[str] = []
    for i, t in enumerate(toks):
        if i and t.sp:
            out.append(" ")
        out.append(t.raw)
    return "".join(out)


class _Cur:
    """A cursor over tokens, with the lookahead the parsers need."""

    __slots__ = ("toks", "i", "n")

    def __init__(self, toks: list[_Tok]):
        self.toks, self.i, self.n = toks, 0, len(toks)

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < self.n else None

    def next(self) -> _Tok | None:
        t = self.peek()
        if t is not None:
            self.i += 1
        return t

    def word(self, k: int = 0) -> str | None:
        """The unquoted word k tokens ahead, or None (a string, punctuation, the end)."""
        j = self.i + k
        if j < self.n:
            t = self.toks[j]
            if t.kind == "w":
                return t.val
        return None

    def is_p(self, ch: str, k: int = 0) -> bool:
        j = self.i + k
        if j < self.n:
            t = self.toks[j]
            return t.kind == "p" and t.val == ch
        return False

    def skip_sep(self) -> _Tok | None:
        """Skip newlines and ';', return the next token (None at the end)."""
        while self.i < self.n:
            t = self.toks[self.i]
            if t.kind == "n" or (t.kind == "p" and t.val == ";"):
                self.i += 1
                continue
            return t
        return None


class _Stream(_Cur):
    """The structure parser's cursor: it lexes a line at a time as the parser reads on and
    forgets what was read, so a big dump never exists as millions of tokens at once."""

    __slots__ = ("lines", "next_line", "path", "handles", "managed")

    def __init__(self, lines: list[str], path: str):
        super().__init__([])
        self.lines, self.next_line, self.path = lines, 0, path
        self.handles: dict[int, int] = {}
        self.managed: set[tuple[str, str]] = set()

    def _fill(self, k: int) -> None:
        """Lex lines until k tokens past the cursor exist; drop what was read long ago."""
        toks = self.toks
        if self.i >= 4096:
            del toks[:self.i]
            self.i = 0
        append = toks.append
        while len(toks) <= self.i + k and self.next_line < len(self.lines):
            _lex_line(self.lines[self.next_line], self.next_line + 1, append, self.handles,
                      self.managed, self.path)
            self.next_line += 1
        self.n = len(toks)

    def peek(self, k: int = 0) -> _Tok | None:
        if self.i + k >= self.n:
            self._fill(k)
        j = self.i + k
        return self.toks[j] if j < self.n else None

    def word(self, k: int = 0) -> str | None:
        t = self.peek(k)
        return t.val if t is not None and t.kind == "w" else None

    def is_p(self, ch: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t.kind == "p" and t.val == ch

    def skip_sep(self) -> _Tok | None:
        while (t := self.peek()) is not None:
            if t.kind == "n" or (t.kind == "p" and t.val == ";"):
                self.i += 1
                continue
            return t
        return None

    def at_line(self) -> int | None:
        """The index of the next line not yet lexed, when all that was lexed has been read
        but newlines and ';' (skipped now, as skip_sep would); else None (also at the end).
        The parser's fast paths read such a line themselves."""
        toks, i = self.toks, self.i
        while i < self.n:
            t = toks[i]
            if t.kind != "n" and (t.kind != "p" or t.val != ";"):
                self.i = i
                return None
            i += 1
        toks.clear()
        self.i = self.n = 0
        return self.next_line if self.next_line < len(self.lines) else None


# ----------------------------------------------------------------------------- structure

_FAMILY_SET = frozenset(FAMILIES)
_VERBS = frozenset(("add", "create", "insert", "replace", "flush", "delete", "destroy"))
_IGNORED_TOP = frozenset(("define", "redefine", "undefine", "include", "list", "reset",
                          "monitor", "export", "import", "describe", "rename"))
_TABLE_OBJECTS = frozenset(("counter", "quota", "limit", "ct", "flowtable", "secmark",
                            "synproxy", "tunnel"))
_SET_SKIP = frozenset(("size", "timeout", "gc-interval", "policy", "counter", "auto-merge"))
_OBJ_NAMES = {"table": 1, "chain": 2, "set": 2, "map": 2, "element": 2, "rule": 2}


# What the fast paths read (see _TextParser._fast_top and the methods after it).
_CLOSED = 2
_NAME_WORD = r'[^\s{};,()|&^"#]+'
_FAST_ADD = re.compile(rf"\s*add\s+(rule|chain|element)\s+({_NAME_WORD})\s+({_NAME_WORD})"
                       rf"\s+({_NAME_WORD})(.*)$")
_FAST_CHAIN = re.compile(rf"\s*chain\s+({_NAME_WORD})\s*\{{\s*$")
_FAST_ELEMENTS = re.compile(r"\s*elements(?:\s+=)?\s*\{")
_CHAIN_DECL = frozenset(("type", "policy", "comment", "device", "devices"))
_FIRST_WORD = re.compile(_NAME_WORD)
# The word xt, where an xt statement may be (see _finish); the literal first is fast.
_XT_WORD = re.compile(rf"xt(?<!{_NAME_WORD[:-1]}xt)(?!{_NAME_WORD[:-1]})")
_QUOTED = re.compile(r'("(?:[^"\\]|\\.)*")')
_HANDLE_TAIL = re.compile(r"#\s*handle\s+(\d+)\s*$")
_BRACES = re.compile(r"[{}]")


def _bare(s: str) -> str | None:
    """s with its quoted strings blanked out (same length), or None if a fast path must
    leave it to the lexer: an unterminated quote, a comment, a ';'."""
    if '"' in s:
        s = _QUOTED.sub(lambda m: "_" * len(m.group()), s)
        if '"' in s:
            return None
    if "#" in s or ";" in s:
        return None
    return s


def _simple_line(text: str) -> tuple[str, int | None] | None:
    """(the statements, the handle of a trailing '# handle N') of a rule that is all of
    one line: balanced braces, no ';', no other comment; None for anything else."""
    handle = None
    if "#" in text:
        m = _HANDLE_TAIL.search(text)
        if m is None:
            return None
        text, handle = text[:m.start()], int(m[1])
    bare = _bare(text)
    if bare is None:
        return None
    if "{" in bare or "}" in bare:
        depth = 0
        for b in _BRACES.findall(bare):
            depth += 1 if b == "{" else -1
            if depth < 0:
                return None
        if depth:
            return None
    text = text.strip()
    return (text, handle) if text else None


def _split_commas(s: str) -> list[str]:
    """s split at the commas outside quoted strings."""
    if '"' not in s:
        return s.split(",")
    out: list[str] = []
    cur: list[str] = []
    for i, piece in enumerate(_QUOTED.split(s)):
        if i % 2:
            cur.append(piece)
            continue
        first, *rest = piece.split(",")
        cur.append(first)
        for r in rest:
            out.append("".join(cur))
            cur = [r]
    out.append("".join(cur))
    return out


def _rule_parser(family: str, commands: bool) -> Any:
    """tokens -> (statements, comment) of a rule of the family."""
    return lambda toks: _RuleParser(toks, family, commands).rule()


def _element_parser(family: str, kind: str | None, positions: frozenset[int]) -> Any:
    """tokens -> (key, value, comment, extras) of one whole set element; _Unparsed if the
    tokens are not exactly one element."""
    def parse(toks: list[_Tok]) -> tuple:
        p = _RuleParser(toks, family, False)
        item = p._element(kind, positions)
        if p.cur.peek() is not None:
            raise _Unparsed
        return item
    return parse


class _TextParser:
    """nft syntax -> NftRuleset: the block syntax nft lists, and ``nft -f`` command files."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.text = text
        self.lines = text.split("\n")
        self.cur = _Stream(self.lines, path)
        self.rs = NftRuleset(path=path, format="text")
        self.commands = False
        self.applied: dict[str, int] = {}
        self.shapes = _Shapes(path)
        self.rule_parsers: dict[tuple, Any] = {}
        self.element_parsers: dict[tuple, Any] = {}

    def err(self, msg: str, line: int) -> NatlensError:
        return NatlensError(msg, path=self.path, where=str(line))

    def note(self, line: int, msg: str) -> None:
        self.rs.notes.append(f"{self.path}:{line}: {msg}")

    def parse(self) -> NftRuleset:
        """Top-level statements until the end: tables and commands; anything else is an error."""
        cur = self.cur
        while True:
            if self._fast_top():
                continue
            t = cur.skip_sep()
            if t is None:
                break
            w = t.val if t.kind == "w" else None
            if w == "table":
                cur.next()
                self._table_cmd(t, block=True)
            elif w in _VERBS:
                self.commands = self.commands or w in ("add", "create", "insert")
                self._command()
            elif w in _IGNORED_TOP:
                self.note(t.line, f"'{_join(self._item())}' ignored")
            elif t.kind == "p" and t.val == "}":
                raise self.err("unbalanced braces: '}' without a '{'", t.line)
            else:
                raise self.err(f"not an nft rule set: expected a table or an nft command, "
                               f"got {t.raw!r}", t.line)
        self.rs.format = "commands" if self.commands else "text"
        for what, n in self.applied.items():
            self.rs.notes.append(f"{self.path}: {what} applied {n} time(s)")
        _finish(self.rs, self.cur.managed, _XT_WORD.search(self.text) is not None)
        return self.rs

    # -- token groups

    def _item(self) -> list[_Tok]:
        """Tokens up to a newline or ';' outside braces (consumed) or a '}' closing the block."""
        cur = self.cur
        out: list[_Tok] = []
        depth, open_line = 0, 0
        while True:
            t = cur.peek()
            if t is None:
                if depth:
                    raise self.err("unbalanced braces: this '{' is never closed", open_line)
                return out
            if t.kind == "n" or (t.kind == "p" and t.val == ";"):
                cur.i += 1
                if depth == 0:
                    return out
                continue
            if t.kind == "p" and t.val == "}":
                if depth == 0:
                    return out
                depth -= 1
            elif t.kind == "p" and t.val == "{":
                if depth == 0:
                    open_line = t.line
                depth += 1
            out.append(t)
            cur.i += 1

    def _braced(self) -> list[_Tok]:
        """The tokens of the '{ ... }' at the cursor, braces included, newlines dropped."""
        cur = self.cur
        start = cur.peek()
        if start is None or not cur.is_p("{"):
            raise self.err("expected '{'", start.line if start else len(self.lines))
        out: list[_Tok] = []
        depth = 0
        while True:
            t = cur.next()
            if t is None:
                raise self.err("unbalanced braces: this '{' is never closed", start.line)
            if t.kind == "n":
                continue
            out.append(t)
            if t.kind == "p" and t.val == "{":
                depth += 1
            elif t.kind == "p" and t.val == "}":
                depth -= 1
                if depth == 0:
                    return out

    def _fam_names(self, count: int, line: int) -> tuple[str, list[str]]:
        """'[family] name...' -> (family, names); the family defaults to ip, as in nft."""
        cur = self.cur
        fam = "ip"
        names_follow = all((t := cur.peek(k)) is not None and t.kind in ("w", "s")
                           for k in range(1, count + 1))
        if cur.word() in _FAMILY_SET and names_follow:
            fam = cur.next().val
        names = []
        for _ in range(count):
            t = cur.next()
            if t is None or t.kind not in ("w", "s"):
                raise self.err("expected a name", t.line if t else line)
            names.append(t.val)
        return fam, names

    def _end_command(self) -> None:
        """A command ends at a newline or ';'. All lexed tokens read means a line's end (the
        last token of each lexed line is its newline; a fast path reads whole lines)."""
        if self.cur.i >= self.cur.n:
            return
        t = self.cur.peek()
        if t is None or t.kind == "n" or (t.kind == "p" and t.val == ";"):
            self.cur.next()
            return
        raise self.err(f"unexpected {t.raw!r} after the command", t.line)

    # -- tables, chains, sets

    def _table_cmd(self, t: _Tok, block: bool) -> None:
        """'table [family] NAME [{ ... }]' (block syntax, or after 'add')."""
        fam, (name,) = self._fam_names(1, t.line)
        table = self.rs.tables.get((fam, name))
        if table is None:
            table = NftTable(fam, name, path=self.path, lineno=t.line)
            self.rs.tables[(fam, name)] = table
        if self.cur.is_p("{"):
            self._table_body(table, self.cur.next().line)
        elif block:
            raise self.err(f"expected '{{' after table {fam} {name}", t.line)
        if not block:
            self._end_command()

    def _block_item(self, fast, what: str, open_line: int) -> _Tok | None:
        """The next item of a { } block, after the lines fast() read itself; None at its '}'."""
        cur = self.cur
        while True:
            done = fast()
            if done == _CLOSED:
                return None
            if done:
                continue
            t = cur.skip_sep()
            if t is None:
                raise self.err(f"unbalanced braces: {what} is never closed", open_line)
            if t.kind == "p" and t.val == "}":
                cur.next()
                return None
            return t

    def _table_of(self, fam: str, name: str, line: int, what: str) -> NftTable:
        table = self.rs.tables.get((fam, name))
        if table is None:
            raise self.err(f"{what} in unknown table {fam} {name}", line)
        return table

    def _table_body(self, table: NftTable, open_line: int) -> None:
        """The chains, sets, maps, comment and flags of a table, up to its '}'."""
        cur = self.cur
        while True:
            t = self._block_item(lambda: self._fast_table_line(table),
                                 f"table {table.family} {table.name}", open_line)
            if t is None:
                return
            w = t.val if t.kind == "w" else None
            if w == "chain":
                cur.next()
                self._chain_block(table, t)
            elif w in ("set", "map"):
                cur.next()
                self._set_block(table, t)
            elif w == "comment":
                table.comment = _str_arg(self._item())
            elif w == "flags":
                table.flags = frozenset(x.val for x in self._item()[1:] if x.kind == "w")
            elif w in _TABLE_OBJECTS:
                self.note(t.line, f"{_join(self._item()[:3])} object skipped")
            else:
                raise self.err(f"unexpected {t.raw!r} in table {table.family} {table.name} "
                               "(a rule outside a chain?)", t.line)

    def _chain(self, table: NftTable, name: str, line: int) -> NftChain:
        ch = table.chains.get(name)
        if ch is None:
            ch = NftChain(table.family, table.name, name, path=self.path, lineno=line)
            table.chains[name] = ch
        return ch

    def _chain_block(self, table: NftTable, t: _Tok) -> None:
        name = self.cur.next()
        if name is None or name.kind not in ("w", "s") or not self.cur.is_p("{"):
            raise self.err("expected 'chain NAME {'", t.line)
        ch = self._chain(table, name.val, t.line)
        self._chain_body(ch, self.cur.next().line)

    def _chain_body(self, ch: NftChain, open_line: int) -> None:
        """A chain's declaration lines and its rules, up to its '}'."""
        while True:
            if self._block_item(lambda: self._fast_chain_line(ch), f"chain {ch.name}", open_line) is None:
                return
            item = self._item()
            w = item[0].val if item[0].kind == "w" else None
            if w == "type" and any(x.val == "hook" for x in item):
                self._chain_spec(ch, item)
            elif w == "policy" and len(item) == 2:
                ch.policy = item[1].val
            elif w == "comment" and len(item) == 2 and item[1].kind == "s":
                ch.comment = item[1].val
            elif w in ("device", "devices"):
                self._chain_spec(ch, item)
            else:
                ch.rules.append(self._make_rule(ch, item, commands=False))

    def _chain_spec(self, ch: NftChain, item: list[_Tok]) -> None:
        """'type T hook H [device D] priority P [policy X]' -> the base chain's fields."""
        vals = [t.val for t in item]
        i = 0
        while i < len(vals):
            k = vals[i]
            if k in ("type", "hook", "device", "policy") and i + 1 < len(vals):
                setattr(ch, k, vals[i + 1])
                i += 2
            elif k == "devices":
                j = next((j for j in range(i, len(item)) if item[j].raw == "}"), len(item) - 1)
                ch.device = ",".join(t.val for t in item[i + 1:j]
                                     if t.kind in ("w", "s") and t.val != "=")
                i = j + 1
            elif k == "priority":
                j = i + 1
                while j < len(vals) and vals[j] != "policy":
                    j += 1
                try:
                    ch.prio = chain_priority(" ".join(vals[i + 1:j]), ch.family)
                except ValueError as e:
                    raise self.err(str(e), item[i].line) from None
                i = j
            else:
                raise self.err(f"unexpected {k!r} in the declaration of chain {ch.name}",
                               item[i].line)

    def _set(self, table: NftTable, name: str, line: int) -> NftSet:
        s = table.sets.get(name)
        if s is None:
            s = NftSet(table.family, table.name, name, (), path=self.path, lineno=line)
            table.sets[name] = s
        return s

    def _set_block(self, table: NftTable, t: _Tok) -> None:
        name = self.cur.next()
        if name is None or name.kind not in ("w", "s") or not self.cur.is_p("{"):
            raise self.err(f"expected '{t.val} NAME {{'", t.line)
        s = self._set(table, name.val, t.line)
        self._set_body(s, self.cur.next().line)

    def _set_body(self, s: NftSet, open_line: int) -> None:
        """A set's type/typeof, flags, comment and elements, up to its '}'."""
        cur = self.cur
        while True:
            if self._fast_set_line(s):
                continue
            t = cur.skip_sep()
            if t is None:
                raise self.err(f"unbalanced braces: set {s.name} is never closed", open_line)
            if t.kind == "p" and t.val == "}":
                cur.next()
                return
            w = t.val if t.kind == "w" else None
            if w == "elements":
                cur.next()
                if cur.word() == "=":
                    cur.next()
                self._set_elements(s, t.line)
                continue
            item = self._item()
            if w == "type":
                _set_type(s, [x.val for x in item[1:]])
            elif w == "typeof":
                self._set_typeof(s, item)
            elif w == "flags":
                s.flags = frozenset(x.val for x in item[1:] if x.kind == "w")
            elif w == "comment":
                s.comment = _str_arg(item)
            elif w not in _SET_SKIP:
                self.note(t.line, f"set {s.name}: '{_join(item)}' ignored")

    def _set_typeof(self, s: NftSet, item: list[_Tok]) -> None:
        """'typeof ip daddr . tcp dport [: verdict|EXPR]' -> the type names nft resolves it to."""
        toks = item[1:]
        k = next((i for i, x in enumerate(toks) if x.kind == "w" and x.val == ":"), None)
        key_toks, data_toks = (toks, None) if k is None else (toks[:k], toks[k + 1:])
        s.key = self._typeof(key_toks, s)
        if data_toks is not None:
            vals = [x.val for x in data_toks]
            s.data = "verdict" if vals == ["verdict"] else " . ".join(self._typeof(data_toks, s))

    def _typeof(self, toks: list[_Tok], s: NftSet) -> tuple[str, ...]:
        """The tokens of a typeof expression -> type names (kept as written if unknown)."""
        try:
            e = _RuleParser(toks, s.family, False).expr_only()
        except _Unparsed:
            self.note(toks[0].line if toks else s.lineno,
                      f"set {s.name}: typeof '{_join(toks)}' kept as written")
            return tuple(x.strip() for x in _join(toks).split(" . "))
        parts = e["concat"] if isinstance(e, dict) and "concat" in e else [e]
        return tuple(_typeof_name(x) for x in parts)

    def _set_elements(self, s: NftSet, line: int) -> None:
        """'{ ... }' at the cursor -> elements appended to the set."""
        toks = self._braced()
        kind = "verdict" if s.data == "verdict" else ("data" if s.data else None)
        positions = frozenset(i for i, k in enumerate(s.key) if k == "inet_proto")
        items, bad = _RuleParser(toks, s.family, False).elements(kind, positions, lenient=True)
        s.elements.extend(NftElement(k, v, c) for k, v, c, _ in items)
        if bad:
            s.unparsed.extend(bad)
            self.note(line, f"set {s.name}: {len(bad)} element(s) not understood, kept as text")

    # -- commands

    def _command(self) -> None:
        """One add/create/insert/replace/flush/delete/destroy command."""
        cur = self.cur
        verb = cur.next()
        line = verb.line
        obj = cur.word()
        if verb.val in ("flush", "delete", "destroy"):
            self._remove(verb.val, obj, line)
        elif obj == "table":
            cur.next()
            self._table_cmd(verb, block=False)
        elif obj == "chain":
            cur.next()
            fam, (tname, cname) = self._fam_names(2, line)
            ch = self._chain(self._table_of(fam, tname, line, f"chain {cname}"), cname, line)
            if cur.is_p("{"):
                self._chain_body(ch, cur.next().line)
            self._end_command()
        elif obj in ("set", "map"):
            cur.next()
            fam, (tname, sname) = self._fam_names(2, line)
            s = self._set(self._table_of(fam, tname, line, f"set {sname}"), sname, line)
            if cur.is_p("{"):
                self._set_body(s, cur.next().line)
            self._end_command()
        elif obj == "rule":
            cur.next()
            self._rule_cmd(verb.val, line)
        elif obj == "element":
            cur.next()
            self._set_elements(self._named_set(line), line)
            self._end_command()
        else:
            self.note(line, f"'{_join([verb, *self._item()])}' ignored")

    def _named_set(self, line: int) -> NftSet:
        fam, (tname, sname) = self._fam_names(2, line)
        return self._set_of(fam, tname, sname, line)

    def _set_of(self, fam: str, tname: str, sname: str, line: int) -> NftSet:
        s = self._table_of(fam, tname, line, f"set {sname}").sets.get(sname)
        if s is None:
            raise self.err(f"elements for unknown set {fam} {tname} {sname}", line)
        return s

    def _chain_of(self, fam: str, tname: str, cname: str, line: int) -> NftChain:
        ch = self._table_of(fam, tname, line, f"rule of chain {cname}").chains.get(cname)
        if ch is None:
            raise self.err(f"rule for unknown chain {fam} {tname} {cname} (a rule outside a "
                           "chain)", line)
        return ch

    def _rule_cmd(self, verb: str, line: int) -> None:
        """'add|insert rule [family] TABLE CHAIN [index N] STATEMENTS'."""
        cur = self.cur
        fam, (tname, cname) = self._fam_names(2, line)
        ch = self._chain_of(fam, tname, cname, line)
        where = None
        if cur.word() in ("index", "position", "handle") and (cur.word(1) or "").isdigit():
            where = (cur.next().val, int(cur.next().val))
        item = self._item()
        if not item:
            raise self.err(f"empty rule for chain {cname}", line)
        if verb == "replace":
            self.note(line, f"replace rule in chain {cname} ignored (no handles in a command file)")
            return
        rule = self._make_rule(ch, item, commands=True)
        if where is not None and where[0] == "index":
            ch.rules.insert(where[1] + (verb != "insert"), rule)
            return
        if where is not None:
            self.note(line, f"{where[0]} {where[1]} of a rule in chain {cname} ignored")
        if verb == "insert":
            ch.rules.insert(0, rule)
        else:
            ch.rules.append(rule)

    def _remove(self, verb: str, obj: str | None, line: int) -> None:
        """flush/delete/destroy, applied to what the file built so far."""
        cur = self.cur
        if obj == "ruleset":
            cur.next()
            self._item()
            self.rs.tables.clear()
            self.applied[f"{verb} ruleset"] = self.applied.get(f"{verb} ruleset", 0) + 1
            return
        if obj not in _OBJ_NAMES:
            self.note(line, f"'{verb} {_join(self._item())}' ignored")
            return
        cur.next()
        fam, names = self._fam_names(_OBJ_NAMES[obj], line)
        table = self.rs.tables.get((fam, names[0]))
        if obj == "element":
            toks = self._braced()
            self._end_command()
            s = table.sets.get(names[1]) if table else None
            if s is not None:
                items, _ = _RuleParser(toks, fam, False).elements(None, frozenset(), lenient=True)
                gone = [k for k, _, _, _ in items]
                s.elements = [e for e in s.elements if e.key not in gone]
        elif obj == "table" and verb != "flush":
            self._item()
            self.rs.tables.pop((fam, names[0]), None)
        else:
            self._item()
            _apply_removal(verb, obj, table, names)
        what = f"{verb} {obj}"
        self.applied[what] = self.applied.get(what, 0) + 1

    def _make_rule(self, ch: NftChain, item: list[_Tok], commands: bool) -> NftRule:
        """An item's tokens -> NftRule: its text, statements, comment, line, handle."""
        first, last = item[0], item[-1]
        if first.line == last.line:
            text = self.lines[first.line - 1][first.col:last.end]
        else:
            text = _join(item)
        expr, comment = _RuleParser(item, ch.family, commands).rule()
        return NftRule(ch.family, ch.table, ch.name, expr, text, path=self.path,
                       lineno=first.line, handle=self.cur.handles.get(last.line), comment=comment)

    # -- fast paths: whole lines of the few shapes a big dump is made of, read without the
    # token stream (each declines, leaving the line to it, when the line is anything else)

    def _fast_top(self) -> bool:
        """A blank or comment top-level line, or one of the three commands of a big command
        file: 'add rule', 'add chain' without a body, 'add element'."""
        n = self.cur.at_line()
        if n is None:
            return False
        line = self.lines[n]
        m = _FAST_ADD.match(line)
        if m is None:
            s = line.lstrip()
            if s and s[0] != "#":
                return False
            if s:
                _lex_comment(s, n + 1, self.cur.handles, self.cur.managed)
            self.cur.next_line += 1
            return True
        obj, fam, tname, name, rest = m.groups()
        if fam not in _FAMILY_SET or tname[-1] == ":" or name[-1] == ":":
            return False
        if obj == "rule":
            done = self._fast_rule_cmd(n, fam, tname, name, rest)
        elif obj == "chain":
            done = not rest or rest.isspace()
            if done:
                self._chain(self._table_of(fam, tname, n + 1, f"chain {name}"), name, n + 1)
                self.cur.next_line += 1
        else:
            rest = rest.lstrip()
            done = rest[:1] == "{" and self._fast_elements(
                self._set_of(fam, tname, name, n + 1), n, rest[1:])
        if done:
            self.commands = True
        return bool(done)

    def _fast_rule_cmd(self, n: int, fam: str, tname: str, cname: str, rest: str) -> bool:
        simple = _simple_line(rest)
        if simple is None or simple[0].startswith(("index", "position", "handle")):
            return False
        ch = self._chain_of(fam, tname, cname, n + 1)
        ch.rules.append(self._fast_rule(ch, simple, n + 1, commands=True))
        self.cur.next_line += 1
        return True

    def _fast_start(self) -> tuple[int, str, str, int | None]:
        """The next line for a fast path: (index, text, stripped, None), or a result when
        there is none (0), it is blank (1, read) or the block's closing '}' (_CLOSED, read)."""
        n = self.cur.at_line()
        if n is None:
            return 0, "", "", 0
        line = self.lines[n]
        s = line.strip()
        if not s or s == "}":
            self.cur.next_line += 1
            return n, line, s, _CLOSED if s else 1
        return n, line, s, None

    def _fast_table_line(self, table: NftTable) -> int:
        """A blank line, the table's closing '}' (_CLOSED) or a 'chain NAME {' line and the
        chain it opens."""
        n, line, s, done = self._fast_start()
        if done is not None:
            return done
        m = _FAST_CHAIN.match(line)
        if m is None or m[1][-1] == ":":
            return 0
        self.cur.next_line += 1
        self._chain_body(self._chain(table, m[1], n + 1), n + 1)
        return 1

    def _fast_chain_line(self, ch: NftChain) -> int:
        """A blank line, the chain's closing '}' (_CLOSED) or a rule of one line."""
        n, line, s, done = self._fast_start()
        if done is not None:
            return done
        if s[0] in _PUNCT or s[0] in '"#' or _FIRST_WORD.match(s)[0].rstrip(":") in _CHAIN_DECL:
            return 0
        simple = _simple_line(line)
        if simple is None:
            return 0
        ch.rules.append(self._fast_rule(ch, simple, n + 1, commands=False))
        self.cur.next_line += 1
        return 1

    def _fast_set_line(self, s: NftSet) -> bool:
        """An 'elements = { ... }' declaration, however many lines it takes."""
        n = self.cur.at_line()
        if n is None:
            return False
        m = _FAST_ELEMENTS.match(self.lines[n])
        return m is not None and self._fast_elements(s, n, self.lines[n][m.end():])

    def _fast_rule(self, ch: NftChain, simple: tuple[str, int | None], line: int,
                   commands: bool) -> NftRule:
        """The rule of a line _simple_line accepted: its statements by way of the shapes."""
        text, handle = simple
        mode = ("rule", ch.family, commands)
        parse = self.rule_parsers.get(mode)
        if parse is None:
            parse = self.rule_parsers[mode] = _rule_parser(ch.family, commands)
        expr, comment = self.shapes.translate(mode, text, parse, line)
        return NftRule(ch.family, ch.table, ch.name, expr, text, self.path, line, handle, comment)

    def _fast_elements(self, s: NftSet, n: int, first: str) -> bool:
        """The elements of a '{' on line n (first: the text after it), up to its '}' and
        the end of that line, appended to the set; False (nothing read) unless every
        element is one the element parser reads."""
        block = self._block(n, first)
        if block is None:
            return False
        inner, last = block
        pieces = _split_commas(inner)
        mode = ("element", s.family, s.key, s.data)
        parse = self.element_parsers.get(mode)
        if parse is None:
            kind = "verdict" if s.data == "verdict" else ("data" if s.data else None)
            positions = frozenset(i for i, k in enumerate(s.key) if k == "inet_proto")
            parse = self.element_parsers[mode] = _element_parser(s.family, kind, positions)
        out = []
        for i, p in enumerate(pieces):
            if not p or p.isspace():
                if i == len(pieces) - 1:
                    continue
                return False
            try:
                key, value, comment, _ = self.shapes.translate(mode, p.strip(), parse, n + 1)
            except _Unparsed:
                return False
            out.append(NftElement(key, value, comment))
        s.elements.extend(out)
        self.cur.next_line = last + 1
        return True

    def _block(self, n: int, first: str) -> tuple[str, int] | None:
        """The text up to the '}' closing a '{' on line n (first: the text after it) and the
        line of that '}', which must end it; None for nested braces, comments, ';' or an
        unterminated quote on the way."""
        parts = []
        s = first
        while True:
            bare = _bare(s)
            if bare is None or "{" in bare:
                return None
            j = bare.find("}")
            if j >= 0:
                if bare[j + 1:].strip():
                    return None
                parts.append(s[:j])
                return " ".join(parts), n
            parts.append(s)
            n += 1
            if n >= len(self.lines):
                return None
            s = self.lines[n]


def _apply_removal(verb: str, obj: str, table: NftTable | None, names: list[str]) -> None:
    """flush/delete of a table, chain, set or map (a rule by handle is not in command files)."""
    if table is None or obj == "rule":
        return
    if obj == "table":              # flush table: the rules go, the sets stay (as in nft)
        for ch in table.chains.values():
            ch.rules.clear()
        return
    if obj == "chain" and names[1] in table.chains:
        if verb == "flush":
            table.chains[names[1]].rules.clear()
        else:
            del table.chains[names[1]]
    elif obj in ("set", "map") and names[1] in table.sets:
        if verb == "flush":
            table.sets[names[1]].elements.clear()
        else:
            del table.sets[names[1]]


def _finish(rs: NftRuleset, managed: set[tuple[str, str]], xt_possible: bool = True) -> None:
    """Number the rules of each chain; mark the tables iptables-nft manages (their rules
    hold xt statements: looked for unless the dump's text rules them out)."""
    for t in rs.tables.values():
        xt = False
        for ch in t.chains.values():
            for i, r in enumerate(ch.rules, 1):
                r.index = i
                if xt_possible and not xt:
                    xt = any(isinstance(s, dict) and "xt" in s for s in r.expr)
        if xt or (t.family, t.name) in managed:
            t.managed_by = IPTABLES_NFT


def _str_arg(item: list[_Tok]) -> str | None:
    """The argument of 'comment "x"'."""
    return item[1].val if len(item) > 1 else None


def _set_type(s: NftSet, vals: list[str]) -> None:
    """'type a . b [: [interval] c . d]' -> key names and data."""
    key, data = vals, None
    if ":" in vals:
        k = vals.index(":")
        key, data = vals[:k], vals[k + 1:]
    s.key = tuple(v for v in key if v != ".")
    if data is not None:
        s.data = " . ".join(v for v in data if v not in (".", "interval"))


# ----------------------------------------------------------------------------- statements


class _Unparsed(Exception):
    """A statement the translation does not know: the rest of the rule is kept as text."""


_VERDICT_WORDS = frozenset(("accept", "drop", "continue", "return"))
# Words that end a relation's right-hand side instead of being its value.
_STMT_WORDS = frozenset(("accept", "drop", "continue", "return", "jump", "goto", "vmap",
                         "comment"))
_OPS = {"!": "!", "==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">",
        "gt": ">", "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}
_BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^", "<<": "<<",
           "lshift": "<<", ">>": ">>", "rshift": ">>"}
# meta keys nft prints without "meta"; the others may be written without it too.
_META_UNQUALIFIED = frozenset(("iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"))
_META_SHORT = _META_UNQUALIFIED | frozenset((
    "mark", "iiftype", "oiftype", "skuid", "skgid", "nftrace", "rtclassid", "ibrname", "obrname",
    "ibriport", "obriport", "pkttype", "cpu", "cgroup", "priority", "l4proto", "nfproto",
    "secmark"))
_CT_KEYS = frozenset(("state", "direction", "status", "mark", "expiration", "helper", "l3proto",
                      "protocol", "proto-src", "proto-dst", "saddr", "daddr", "label", "bytes",
                      "packets", "avgpkt", "zone", "id", "event", "secmark"))
_BITMASK_CT = frozenset(("state", "status", "event"))
_FIB_FLAGS = ("saddr", "daddr", "mark", "iif", "oif")
_SOCKET_KEYS = frozenset(("transparent", "mark", "wildcard"))
_NAT_FLAGS = frozenset(("random", "fully-random", "persistent", "netmap"))
_L4 = frozenset(("tcp", "udp", "udplite", "sctp", "dccp"))
_PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp",
                51: "ah", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
_PAYLOAD_FIELDS = {p: frozenset(f.split()) for p, f in {
    "ip": "version hdrlength dscp ecn length id frag-off ttl protocol checksum saddr daddr",
    "ip6": "version dscp ecn flowlabel length nexthdr hoplimit saddr daddr",
    "tcp": "sport dport sequence ackseq doff reserved flags window checksum urgptr",
    "udp": "sport dport length checksum",
    "udplite": "sport dport csumcov checksum",
    "sctp": "sport dport vtag checksum",
    "dccp": "sport dport type",
    "th": "sport dport",
    "icmp": "type code checksum id sequence gateway mtu",
    "icmpv6": "type code checksum parameter-problem packet-too-big id sequence max-delay",
    "ether": "saddr daddr type",
    "vlan": "id cfi dei pcp type",
    "arp": "htype ptype hlen plen operation",
}.items()}
_LIMIT_PACKETS = re.compile(r"^(\d+)/([a-z]+)$")
_LIMIT_UNIT = re.compile(r"^([a-z]+)/([a-z]+)$")
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::(.+))?$")


class _RuleParser:
    """The tokens of one rule -> its statements in libnftables-json form."""

    def __init__(self, toks: list[_Tok], family: str, commands: bool):
        self.cur = _Cur([t for t in toks if t.kind != "n"])
        self.family = family
        self.commands = commands
        self.out: list[dict] = []       # the statements so far (a bare reject looks back)

    # -- entry points

    def rule(self) -> tuple[list[dict], str | None]:
        """(statements, the rule's comment); an unknown statement keeps the rest as text."""
        comment = self._take_comment()
        out = self.out = []
        cur = self.cur
        while cur.peek() is not None:
            start = cur.i
            try:
                out.append(self._stmt())
            except _Unparsed:
                out.append({"unparsed": _join(cur.toks[start:])})
                break
        if self.commands:
            out = _as_loaded(out, self.family)
        return out, comment

    def expr_only(self) -> Any:
        """The tokens are one expression (a typeof declaration)."""
        e = self._expr()
        if self.cur.peek() is not None:
            raise _Unparsed
        return e

    def elements(self, kind: str | None, positions: frozenset[int], lenient: bool
                 ) -> tuple[list[tuple[Any, Any, str | None, dict]], list[str]]:
        """'{ e, e : v, ... }' -> [(key, value, comment, {timeout...})], [texts not understood].

        kind: "verdict" for a verdict map, "data" for another map, None for a set;
        positions: the concatenation fields that are protocols (numbers -> names).
        """
        cur = self.cur
        if not cur.is_p("{"):
            raise _Unparsed
        cur.next()
        items: list[tuple[Any, Any, str | None, dict]] = []
        bad: list[str] = []
        while cur.peek() is not None and not cur.is_p("}"):
            start = cur.i
            try:
                item = self._element(kind, positions)
                if not (cur.is_p(",") or cur.is_p("}")):
                    raise _Unparsed
                items.append(item)
            except _Unparsed:
                if not lenient:
                    raise
                self._skip_element()
                bad.append(_join(cur.toks[start:cur.i]))
            if cur.is_p(","):
                cur.next()
        cur.next()
        return items, bad

    # -- pieces

    def _take_comment(self) -> str | None:
        """Remove the rule's 'comment "..."' (outside braces) and return it."""
        toks = self.cur.toks
        depth = 0
        for i, t in enumerate(toks):
            if t.kind == "p":
                depth += (t.val == "{") - (t.val == "}")
            elif (depth == 0 and t.kind == "w" and t.val == "comment" and i + 1 < len(toks)
                  and toks[i + 1].kind == "s"):
                self.cur = _Cur(toks[:i] + toks[i + 2:])
                return toks[i + 1].val
        return None

    def _skip_element(self) -> None:
        """After an element it cannot read: move to the next ',' or the closing '}'."""
        cur = self.cur
        depth = 0
        while (t := cur.peek()) is not None:
            if t.kind == "p":
                if depth == 0 and t.val in (",", "}"):
                    return
                depth += (t.val == "{") - (t.val == "}")
            cur.next()

    def _element(self, kind: str | None, positions: frozenset[int]
                 ) -> tuple[Any, Any, str | None, dict]:
        """KEY [comment "x"] [timeout T] [expires T] [counter ...] [: VALUE]."""
        cur = self.cur
        key = _protoize(self._value_concat(), positions)
        comment: str | None = None
        extras: dict[str, int] = {}
        while True:
            w = cur.word()
            if w == "comment" and (t := cur.peek(1)) is not None and t.kind == "s":
                cur.i += 2
                comment = t.val
            elif w in ("timeout", "expires"):
                cur.next()
                extras[w] = _seconds(self._word())
            elif w == "counter":
                cur.next()
                if cur.word() == "packets" and cur.word(2) == "bytes":
                    cur.i += 4
            else:
                break
        value = None
        if cur.word() == ":":
            cur.next()
            value = self._verdict() if kind == "verdict" else self._value_concat()
        return key, value, comment, extras

    def _value_concat(self) -> Any:
        parts = [self._atom()]
        while self.cur.word() == ".":
            self.cur.next()
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else {"concat": parts}

    def _atom(self, guard: bool = False) -> Any:
        """One value token -> its JSON value; guard: a statement keyword is no value."""
        t = self.cur.next()
        if t is None:
            raise _Unparsed
        if t.kind == "s":
            return t.val
        if t.kind != "w" or (guard and t.val in _STMT_WORDS):
            raise _Unparsed
        return _atom_value(t.val)

    def _word(self) -> str:
        t = self.cur.next()
        if t is None or t.kind != "w":
            raise _Unparsed
        return t.val

    def _int(self) -> int:
        v = _atom_value(self._word())
        if type(v) is not int:
            raise _Unparsed
        return v

    def _flags(self) -> Any:
        """A value, a flag list 'a,b' (JSON list) or '(a|b)' (JSON list)."""
        cur = self.cur
        if cur.is_p("("):
            cur.next()
            vals = [self._atom()]
            while cur.is_p("|"):
                cur.next()
                vals.append(self._atom())
            if not cur.is_p(")"):
                raise _Unparsed
            cur.next()
            return vals if len(vals) > 1 else vals[0]
        v = self._atom()
        if not cur.is_p(","):
            return v
        vals = [v]
        while cur.is_p(","):
            cur.next()
            vals.append(self._atom())
        return vals

    # -- statements

    def _stmt(self) -> dict:
        """One statement at the cursor -> its JSON dict (raises _Unparsed if unknown)."""
        cur = self.cur
        w = cur.word()
        if w is None:
            raise _Unparsed
        if w in _VERDICT_WORDS or w in ("jump", "goto"):
            return self._verdict()
        handler = _STMT_HANDLERS.get(w)
        if handler is not None:
            return handler(self)
        if w in ("update", "add", "delete") and (cur.word(1) or "").startswith("@"):
            return self._set_stmt()
        lhs = self._expr()
        nxt = cur.word()
        if nxt == "set":
            cur.next()
            return {"mangle": {"key": lhs, "value": self._mangle_value()}}
        if nxt == "vmap":
            cur.next()
            return {"vmap": {"key": lhs, "data": self._map_data("verdict", lhs)}}
        return self._match(lhs)

    def _verdict(self) -> dict:
        """accept, drop, continue, return, jump X, goto X."""
        w = self._word()
        if w in _VERDICT_WORDS:
            return {w: None}
        if w in ("jump", "goto"):
            t = self.cur.next()
            if t is None or t.kind not in ("w", "s"):
                raise _Unparsed
            return {w: {"target": t.val}}
        raise _Unparsed

    def _match(self, lhs: Any) -> dict:
        """'LHS [op] RHS [/ MASK]' -> {"match": ...}, with nft's implicit op."""
        cur = self.cur
        op = _OPS.get(cur.word() or "")
        if op is not None:
            cur.next()
        right = self._rhs(lhs)
        if cur.word() == "/":
            cur.next()
            return {"match": {"op": op or "==", "left": {"&": [lhs, self._flags()]},
                              "right": right}}
        if self.commands and isinstance(right, dict) and "set" in right:
            right = _collapse(right)
        if op is None:
            op = "in" if _is_bitmask(lhs) and not _setish(right) else "=="
        return {"match": {"op": op, "left": lhs, "right": right}}

    def _rhs(self, lhs: Any) -> Any:
        """The right side of a relation: value, flag list, concatenation or { set }."""
        cur = self.cur
        positions = _proto_positions(lhs)
        if cur.is_p("{"):
            items, _ = self.elements(None, positions, lenient=False)
            return {"set": [_elem_json(*it) for it in items]}
        v = self._atom(guard=True)
        if cur.is_p(","):
            vals = [v]
            while cur.is_p(","):
                cur.next()
                vals.append(self._atom())
            return vals
        if cur.word() == ".":
            parts = [v]
            while cur.word() == ".":
                cur.next()
                parts.append(self._atom())
            v = {"concat": parts}
        return _protoize(v, positions)

    def _mangle_value(self) -> Any:
        if self._starts_selector():
            e = self._expr()
            if self.cur.word() == "map":
                self.cur.next()
                return {"map": {"key": e, "data": self._map_data("data", e)}}
            return e
        return self._flags()

    def _map_data(self, kind: str, key: Any) -> Any:
        """The data of a map lookup or vmap: '{ k : v, ... }' or '@name'."""
        cur = self.cur
        if cur.is_p("{"):
            items, _ = self.elements(kind, _proto_positions(key), lenient=False)
            return {"set": [_elem_json(*it) for it in items]}
        t = cur.next()
        if t is not None and t.kind == "w" and t.val.startswith("@"):
            return t.val
        raise _Unparsed

    def _counter(self) -> dict:
        """counter [packets N bytes M] | counter name X."""
        cur = self.cur
        cur.next()
        if cur.word() == "packets" and cur.word(2) == "bytes":
            cur.next()
            packets = self._int()
            cur.next()
            return {"counter": {"packets": packets, "bytes": self._int()}}
        if cur.word() == "name":
            cur.next()
            t = cur.next()
            if t is None or t.kind not in ("w", "s"):
                raise _Unparsed
            return {"counter": t.val}
        return {"counter": None}

    def _log(self) -> dict:
        """log and its options; level warn is nft's default and not printed."""
        cur = self.cur
        cur.next()
        opts: dict[str, Any] = {}
        while True:
            w = cur.word()
            if w == "prefix":
                cur.next()
                t = cur.next()
                if t is None or t.kind not in ("w", "s"):
                    raise _Unparsed
                opts["prefix"] = t.val
            elif w == "level":
                cur.next()
                level = self._word()
                if level != "warn":
                    opts["level"] = level
            elif w in ("group", "snaplen", "queue-threshold"):
                cur.next()
                opts[w] = self._int()
            elif w == "flags":
                cur.next()
                kind = cur.word()
                if kind in ("tcp", "ip"):
                    cur.next()
                    names = [f"{kind} {x}" for x in _as_list(self._flags())]
                else:
                    names = _as_list(self._flags())
                opts["flags"] = names[0] if len(names) == 1 else names
            else:
                return {"log": opts or None}

    def _limit(self) -> dict:
        """limit rate [over] N/unit | N bytes-unit/unit [burst N packets|bytes-unit]."""
        cur = self.cur
        cur.next()
        if cur.word() != "rate":
            raise _Unparsed
        cur.next()
        inv = cur.word() == "over"
        if inv:
            cur.next()
        w = self._word()
        m = _LIMIT_PACKETS.match(w)
        if m:
            body: dict[str, Any] = {"rate": int(m[1]), "burst": 5, "per": m[2]}
        else:
            u = _LIMIT_UNIT.match(self._word()) if w.isdigit() else None
            if u is None:
                raise _Unparsed
            body = {"rate": int(w), "burst": 0, "per": u[2], "rate_unit": u[1],
                    "burst_unit": "bytes"}
        if cur.word() == "burst":
            cur.next()
            body["burst"] = self._int()
            unit = cur.word()
            if unit == "packets":
                cur.next()
            elif unit in ("bytes", "kbytes", "mbytes"):
                cur.next()
                body["burst_unit"] = unit
        if inv:
            body["inv"] = True
        return {"limit": body}

    def _reject(self) -> dict:
        """reject [with tcp reset | with icmp|icmpv6|icmpx [type] CODE]."""
        cur = self.cur
        cur.next()
        if cur.word() != "with":
            return {"reject": {"type": _reject_default(self.family, self.out),
                               "expr": "port-unreachable"}}
        cur.next()
        kind = self._word()
        if kind == "tcp":
            if self._word() != "reset":
                raise _Unparsed
            return {"reject": {"type": "tcp reset"}}
        kind = "icmpv6" if kind == "icmp6" else kind
        if kind not in ("icmp", "icmpv6", "icmpx"):
            raise _Unparsed
        if cur.word() == "type":
            cur.next()
        return {"reject": {"type": kind, "expr": self._word()}}

    def _notrack(self) -> dict:
        self.cur.next()
        return {"notrack": None}

    def _nat(self) -> dict:
        """snat/dnat [ip|ip6] to ADDR[:PORT] | EXPR map {...} [flags]."""
        cur = self.cur
        kind = self._word()
        body: dict[str, Any] = {}
        if cur.word() in ("ip", "ip6") and cur.word(1) == "to":
            body["family"] = self._word()
        if cur.word() != "to":
            raise _Unparsed
        cur.next()
        if self._starts_selector():
            key = self._expr()
            if cur.word() != "map":
                raise _Unparsed
            cur.next()
            body["addr"] = {"map": {"key": key, "data": self._map_data("data", key)}}
        else:
            addr, port = _addr_port(self._word())
            if addr is not None:
                body["addr"] = addr
            if port is not None:
                body["port"] = port
        if cur.word() in _NAT_FLAGS:
            body["flags"] = self._flags()
        return {kind: body}

    def _masquerade(self) -> dict:
        """masquerade/redirect [to :PORT] [flags]."""
        cur = self.cur
        kind = self._word()
        body: dict[str, Any] = {}
        if cur.word() == "to":
            cur.next()
            w = self._word()
            if not w.startswith(":"):
                raise _Unparsed
            body["port"] = _atom_value(w[1:])
        if cur.word() in _NAT_FLAGS:
            body["flags"] = self._flags()
        return {kind: body or None}

    def _queue(self) -> dict:
        """queue [num N|N-M] [flags bypass,fanout]."""
        cur = self.cur
        cur.next()
        body: dict[str, Any] = {}
        while True:
            w = cur.word()
            if w in ("num", "to"):
                cur.next()
                body["num"] = _atom_value(self._word())
            elif w == "flags":
                cur.next()
                body["flags"] = self._flags()
            elif w in ("bypass", "fanout"):
                body["flags"] = self._flags()
            else:
                return {"queue": body or None}

    def _set_stmt(self) -> dict:
        """update/add/delete @set { EXPR [timeout T] }."""
        cur = self.cur
        op = self._word()
        ref = self._word()
        if not cur.is_p("{"):
            raise _Unparsed
        cur.next()
        e = self._expr()
        extras: dict[str, int] = {}
        while cur.word() in ("timeout", "expires"):
            k = self._word()
            extras[k] = _seconds(self._word())
        if not cur.is_p("}"):
            raise _Unparsed
        cur.next()
        elem = {"elem": {"val": e, **extras}} if extras else e
        return {"set": {"op": op, "elem": elem, "set": ref}}

    def _xt(self) -> dict:
        """iptables-nft's compat statements: xt match|target|watcher NAME."""
        self.cur.next()
        kind = self._word()
        t = self.cur.next()
        if kind not in ("match", "target", "watcher") or t is None or t.kind not in ("w", "s"):
            raise _Unparsed
        return {"xt": {"type": kind, "name": t.val}}

    # -- expressions

    def _starts_selector(self) -> bool:
        w = self.cur.word()
        if w in ("meta", "ct", "fib", "numgen", "socket") or w in _META_SHORT:
            return True
        fields = _PAYLOAD_FIELDS.get(w or "")
        return fields is not None and self.cur.word(1) in fields

    def _expr(self) -> Any:
        parts = [self._binop_expr()]
        while self.cur.word() == ".":
            self.cur.next()
            parts.append(self._binop_expr())
        return parts[0] if len(parts) == 1 else {"concat": parts}

    def _binop_expr(self) -> Any:
        """A selector with & | ^ << >> (or and/or/xor) applied."""
        e = self._selector()
        cur = self.cur
        while True:
            t = cur.peek()
            op = _BINOPS.get(t.val) if t is not None and t.kind in ("w", "p") else None
            if op is None:
                return e
            cur.next()
            e = {op: [e, self._flags()]}

    def _selector(self) -> dict:
        """A payload, meta (also short forms), ct, fib, numgen or socket expression."""
        cur = self.cur
        w = cur.word()
        if w == "meta":
            key = cur.word(1)
            if key is None:
                raise _Unparsed
            cur.i += 2
            return {"meta": {"key": key}}
        if w in _META_SHORT:
            cur.next()
            return {"meta": {"key": w}}
        if w == "ct":
            return self._ct()
        if w == "fib":
            return self._fib()
        if w == "numgen":
            return self._numgen()
        if w == "socket" and cur.word(1) in _SOCKET_KEYS:
            cur.i += 2
            return {"socket": {"key": cur.toks[cur.i - 1].val}}
        fields = _PAYLOAD_FIELDS.get(w or "")
        if fields is not None and cur.word(1) in fields:
            cur.i += 2
            return {"payload": {"protocol": w, "field": cur.toks[cur.i - 1].val}}
        raise _Unparsed

    def _ct(self) -> dict:
        """ct [original|reply] KEY (ip saddr and friends as one key, as in nft -j)."""
        cur = self.cur
        cur.next()
        direction = None
        if cur.word() in ("original", "reply"):
            direction = self._word()
        k = cur.word()
        if k in ("ip", "ip6") and cur.word(1) in ("saddr", "daddr"):
            key = f"{k} {cur.word(1)}"
            cur.i += 2
        elif k in _CT_KEYS:
            key = self._word()
        else:
            raise _Unparsed
        if key in ("helper", "timeout", "expectation") and cur.word() == "set":
            raise _Unparsed
        body = {"key": key}
        if direction:
            body["dir"] = direction
        return {"ct": body}

    def _fib(self) -> dict:
        """fib FLAG[ . FLAG] RESULT, the flags in nft's order."""
        cur = self.cur
        cur.next()
        flags = []
        while True:
            f = self._word()
            if f not in _FIB_FLAGS:
                raise _Unparsed
            flags.append(f)
            if cur.word() != ".":
                break
            cur.next()
        result = self._word()
        if result not in ("oif", "oifname", "type"):
            raise _Unparsed
        return {"fib": {"result": result, "flags": sorted(flags, key=_FIB_FLAGS.index)}}

    def _numgen(self) -> dict:
        """numgen random|inc mod N [offset K]."""
        cur = self.cur
        cur.next()
        mode = self._word()
        if mode not in ("random", "inc") or self._word() != "mod":
            raise _Unparsed
        mod = self._int()
        offset = 0
        if cur.word() == "offset":
            cur.next()
            offset = self._int()
        return {"numgen": {"mode": mode, "mod": mod, "offset": offset}}


_STMT_HANDLERS = {
    "counter": _RuleParser._counter, "log": _RuleParser._log, "limit": _RuleParser._limit,
    "reject": _RuleParser._reject, "notrack": _RuleParser._notrack, "snat": _RuleParser._nat,
    "dnat": _RuleParser._nat, "masquerade": _RuleParser._masquerade,
    "redirect": _RuleParser._masquerade, "queue": _RuleParser._queue, "xt": _RuleParser._xt,
}


# ----------------------------------------------------------------------------- values

_INT_RE = re.compile(r"^(?:0[xX][0-9a-fA-F]+|[0-9]+)$")
_TIME_PART = re.compile(r"(\d+)(ms|d|h|m|s)")


def _atom_value(s: str) -> Any:
    """An unquoted nft value -> its JSON form: int, True/False (exists/missing),
    {"prefix"}, {"range"}, or the string itself (addresses, names, '@set')."""
    if _INT_RE.match(s):
        return int(s, 16) if s[:2] in ("0x", "0X") else int(s)
    if not s:
        raise _Unparsed
    c = s[0]
    if c == "@":
        return s
    if c == "$":
        raise _Unparsed      # a variable: its definition is not part of the dump
    if s == "exists":
        return True
    if s == "missing":
        return False
    if "/" in s:
        addr, _, plen = s.rpartition("/")
        bits = _ip_bits(addr)
        if bits and plen.isdigit():
            n = int(plen)
            return addr if n == bits else {"prefix": {"addr": addr, "len": n}}
        return s
    if "-" in s:
        parts = s.split("-")
        if len(parts) == 2 and all(_INT_RE.match(p) or _ip_bits(p) for p in parts):
            return {"range": [_atom_value(parts[0]), _atom_value(parts[1])]}
    return s


@lru_cache(maxsize=65536)
def _ip_bits(s: str) -> int:
    """32 or 128 for an IPv4 or IPv6 address, 0 for anything else."""
    try:
        return ipaddress.ip_address(s).max_prefixlen
    except ValueError:
        return 0


def _seconds(s: str) -> int:
    """'1h30m', '10s', '29m59s992ms' or '600' -> whole seconds."""
    if s.isdigit():
        return int(s)
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = _TIME_PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise _Unparsed
    return int(sum(int(n) * scale[u] for n, u in parts))


def _addr_port(s: str) -> tuple[Any, Any]:
    """'10.0.0.1:80', '[fd00::1]:80', 'fd00::1', '10.0.0.1-10.0.0.9:80-90' -> (addr, port)."""
    m = _BRACKETED.match(s)
    if m:
        addr, port = m[1], m[2]
    elif s.startswith(":"):
        addr, port = None, s[1:]
    elif s.count(":") == 1:
        addr, port = s.split(":")
    else:
        addr, port = s, None
    return (_atom_value(addr) if addr else None), (_atom_value(port) if port else None)


def _reject_default(family: str, before: list[dict]) -> str:
    """The ICMP kind of a bare reject: the family's, or in inet/bridge/netdev the one an
    earlier ip/ip6 match (or meta nfproto) implies, as nft picks it; else icmpx."""
    if family in ("ip", "ip6"):
        return "icmp" if family == "ip" else "icmpv6"
    for s in before:
        m = s.get("match") if isinstance(s, dict) else None
        left = m.get("left") if m else None
        parts = left["concat"] if isinstance(left, dict) and "concat" in left else [left]
        for p in parts:
            proto = p.get("payload", {}).get("protocol") if isinstance(p, dict) else None
            if p == {"meta": {"key": "nfproto"}}:
                right = m.get("right")
                proto = {"ipv4": "ip", "ipv6": "ip6"}.get(right if isinstance(right, str) else "")
            if proto in ("ip", "ip6"):
                return "icmp" if proto == "ip" else "icmpv6"
    return "icmpx"


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _elem_json(key: Any, value: Any, comment: str | None, extras: dict) -> Any:
    """A set literal's element as nft -j prints it: the key, {"elem": ...}, or [key, value]."""
    k = key
    if comment is not None or extras:
        inner: dict[str, Any] = {"val": key}
        inner.update(extras)
        if comment is not None:
            inner["comment"] = comment
        k = {"elem": inner}
    return k if value is None else [k, value]


def _is_bitmask(e: Any) -> bool:
    """ct state/status/event and tcp flags: an implicit relation on them is 'in' in nft -j."""
    if not isinstance(e, dict):
        return False
    if "ct" in e:
        return e["ct"].get("key") in _BITMASK_CT
    p = e.get("payload")
    return isinstance(p, dict) and p.get("protocol") == "tcp" and p.get("field") == "flags"


def _setish(v: Any) -> bool:
    return (isinstance(v, dict) and "set" in v) or (isinstance(v, str) and v.startswith("@"))


def _is_proto_key(e: Any) -> bool:
    """meta l4proto, ip protocol, ip6 nexthdr, ct protocol: their numbers print as names."""
    if not isinstance(e, dict):
        return False
    if "meta" in e:
        return e["meta"].get("key") == "l4proto"
    if "ct" in e:
        return e["ct"].get("key") == "protocol"
    p = e.get("payload")
    return isinstance(p, dict) and (p.get("protocol"), p.get("field")) in (
        ("ip", "protocol"), ("ip6", "nexthdr"))


def _proto_positions(e: Any) -> frozenset[int]:
    parts = e["concat"] if isinstance(e, dict) and "concat" in e else [e]
    return frozenset(i for i, p in enumerate(parts) if _is_proto_key(p))


def _protoize(v: Any, positions: frozenset[int]) -> Any:
    """Protocol numbers -> the names nft prints (6 -> "tcp"), in the protocol fields only."""
    if not positions:
        return v
    if type(v) is int:
        return _PROTO_NAMES.get(v, v) if 0 in positions else v
    if isinstance(v, dict) and "concat" in v:
        return {"concat": [_PROTO_NAMES.get(x, x) if i in positions and type(x) is int else x
                           for i, x in enumerate(v["concat"])]}
    return v


def _collapse(right: dict) -> Any:
    """{ x } of a single value -> x, as nft stores a one-element anonymous set."""
    items = right["set"]
    if len(items) == 1 and not isinstance(items[0], list) and not (
            isinstance(items[0], dict) and ("concat" in items[0] or "elem" in items[0])):
        return items[0]
    return right


def _as_loaded(stmts: list[dict], family: str) -> list[dict]:
    """What nft lists for a rule it was given: zeroed counters, l4 dependencies folded."""
    out = [{"counter": {"packets": 0, "bytes": 0}} if s == {"counter": None} else s
           for s in stmts]
    i = 0
    while i < len(out):
        proto = _l4_dependency(out[i], family)
        later = [s for s in out[i + 1:] if _payload_proto(s) in ("th", proto)] if proto else []
        if not later:
            i += 1
            continue
        for s in later:
            left = s["match"]["left"]["payload"]
            s["match"]["left"] = {"payload": {"protocol": proto, "field": left["field"]}}
        del out[i]
    return out


def _l4_dependency(s: dict, family: str) -> str | None:
    """'meta l4proto tcp' (or 'ip protocol tcp' in ip, 'ip6 nexthdr tcp' in ip6) -> 'tcp'."""
    m = s.get("match")
    if not m or m.get("op") != "==" or not isinstance(m.get("right"), str) or m["right"] not in _L4:
        return None
    left = m["left"]
    if left == {"meta": {"key": "l4proto"}}:
        return m["right"]
    p = left.get("payload") if isinstance(left, dict) else None
    if p and ((family == "ip" and (p["protocol"], p["field"]) == ("ip", "protocol"))
              or (family == "ip6" and (p["protocol"], p["field"]) == ("ip6", "nexthdr"))):
        return m["right"]
    return None


def _payload_proto(s: dict) -> str | None:
    m = s.get("match")
    left = m.get("left") if m else None
    p = left.get("payload") if isinstance(left, dict) else None
    return p.get("protocol") if isinstance(p, dict) else None


_TYPEOF_PAYLOAD = {("ip", "saddr"): "ipv4_addr", ("ip", "daddr"): "ipv4_addr",
                   ("ip6", "saddr"): "ipv6_addr", ("ip6", "daddr"): "ipv6_addr",
                   ("ip", "protocol"): "inet_proto", ("ip6", "nexthdr"): "inet_proto",
                   ("ip", "dscp"): "dscp", ("ip6", "dscp"): "dscp", ("ip", "ecn"): "ecn",
                   ("ip6", "ecn"): "ecn", ("ether", "saddr"): "ether_addr",
                   ("ether", "daddr"): "ether_addr", ("ether", "type"): "ether_type",
                   ("vlan", "type"): "ether_type", ("icmp", "type"): "icmp_type",
                   ("icmpv6", "type"): "icmpv6_type", ("tcp", "flags"): "tcp_flag",
                   ("icmp", "code"): "icmp_code", ("icmpv6", "code"): "icmpv6_code"}
_TYPEOF_META = {"mark": "mark", "iifname": "ifname", "oifname": "ifname", "ibrname": "ifname",
                "obrname": "ifname", "iif": "iface_index", "oif": "iface_index",
                "l4proto": "inet_proto", "nfproto": "nf_proto", "protocol": "ether_type",
                "pkttype": "pkt_type", "skuid": "uid", "skgid": "gid", "iiftype": "iface_type",
                "oiftype": "iface_type", "priority": "classid", "iifgroup": "devgroup",
                "oifgroup": "devgroup", "secpath": "boolean"}
_TYPEOF_CT = {"state": "ct_state", "status": "ct_status", "direction": "ct_dir", "mark": "mark",
              "protocol": "inet_proto", "l3proto": "nf_proto", "proto-src": "inet_service",
              "proto-dst": "inet_service", "label": "ct_label", "event": "ct_event",
              "ip saddr": "ipv4_addr", "ip daddr": "ipv4_addr", "ip6 saddr": "ipv6_addr",
              "ip6 daddr": "ipv6_addr", "expiration": "time"}
_TYPEOF_FIB = {"type": "fib_addrtype", "oif": "iface_index", "oifname": "ifname"}


def _typeof_name(e: Any) -> str:
    """A typeof expression -> the type name nft gives the set key (ip daddr -> ipv4_addr)."""
    if not isinstance(e, dict):
        return "integer"
    if "payload" in e:
        p = e["payload"]
        if p.get("field") in ("sport", "dport"):
            return "inet_service"
        return _TYPEOF_PAYLOAD.get((p.get("protocol"), p.get("field")), "integer")
    if "meta" in e:
        return _TYPEOF_META.get(e["meta"].get("key"), "integer")
    if "ct" in e:
        return _TYPEOF_CT.get(e["ct"].get("key"), "integer")
    if "fib" in e:
        return _TYPEOF_FIB.get(e["fib"].get("result"), "integer")
    return "integer"


# ----------------------------------------------------------------------------- shapes

# A big dump repeats a few rule and element shapes with other addresses, ports and
# names (kube-proxy: "ip daddr A tcp dport P ip saddr != C jump mark-for-masquerade"
# once per Service). _Shapes translates each shape once and then only fills in the
# constants. A constant is a whole word of one of the classes below, chosen so that
# the translation treats every member of a class alike: no keyword is of any of them,
# and what the statement parser makes of one (an int, a string, an address and a port,
# a prefix) does not depend on which member it is. Protocol numbers (6 prints as
# "tcp") and /32 prefixes (an address) are left out for that reason; a word of no class
# stays part of the shape, which is then only less often shared.
_WORD_EDGE = r'[^\s{};,()|&^"#]'       # a character that continues a word (see _TOKEN)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_NOT_PROTO = "(?!(?:" + "|".join(str(n) for n in sorted(_PROTO_NAMES)) + f")(?!{_WORD_EDGE}))"
_CONST = re.compile(
    r'("(?:[^"\\]|\\.)*"'                                   # S: a quoted string
    rf"|(?<!{_WORD_EDGE})(?:"
    rf"{_OCTET}(?:\.{_OCTET}){{3}}"                         # I: IPv4 address,
    r"(?:/(?:3[01]|[12]?[0-9])|:(?:[1-9][0-9]{0,4}|0))?"   # P: with /len, A: with :port
    r"|0[xX][0-9a-fA-F]+"                                   # H: hex number
    rf"|{_NOT_PROTO}(?:[1-9][0-9]*|0)"                      # D: decimal number
    r"|(?=[a-z0-9_./-]*[A-Z])[A-Za-z][A-Za-z0-9_./-]*"      # N: a name with a capital
    rf")(?!{_WORD_EDGE}))")
_MAX_SLOTS = 200
_NEVER = "never"                       # a shape that cannot have a builder


def _const(c: str) -> tuple[str, tuple]:
    """A constant's class letter and its forms: the word itself and what it converts to."""
    c0 = c[0]
    if c0 == '"':
        return "S", (_UNESCAPE.sub(r"\1", c[1:-1]) if "\\" in c else c[1:-1],)
    if "0" <= c0 <= "9":
        if "." in c:
            if "/" in c:
                a, n = c.split("/")
                return "P", (c, a, int(n))
            if ":" in c:
                a, p = c.split(":")
                return "A", (c, a, int(p))
            return "I", (c,)
        if c[1:2] in ("x", "X"):
            return "H", (c, int(c, 16))
        return "D", (c, int(c))
    return "N", (c,)


def _shape(text: str) -> tuple[str, list[str], list, list[str]]:
    """text -> (its shape, the text split at its constants with each one replaced by the
    mark of its slot, the constants' forms in slot order, the distinct constants). Equal
    constants share one slot: the shape says which are equal."""
    parts = _CONST.split(text)
    if len(parts) == 1:
        return text, parts, [], []
    slots: dict[str, str] = {}
    flat: list = []
    for i in range(1, len(parts), 2):
        c = parts[i]
        m = slots.get(c)
        if m is None:
            cls, forms = _const(c)
            m = slots[c] = f"\x00{cls}{len(slots)}"
            flat.extend(forms)
        parts[i] = m
    return "".join(parts), parts, flat, list(slots)


class _NoTemplate(Exception):
    """A translation with a value the builder source cannot spell (it is parsed each time)."""


def _leaves(consts: list[str]) -> dict[tuple, str] | None:
    """Each form of each constant -> the builder source reading it from the flat values
    (see _leaf); None when two constants have a form in common (10.0.0.1 and 10.0.0.1:80):
    which one a value came from would be unknown."""
    out: dict[tuple, str] = {}
    o = 0
    for c in consts:
        cls, forms = _const(c)
        if cls == "S":
            keys = [(("s", forms[0]), f"v[{o}]")]
        elif cls == "P":
            keys = [(("s", c), f"v[{o}]"), (("p", forms[1], forms[2]),
                                            f"{{'prefix': {{'addr': v[{o + 1}], 'len': v[{o + 2}]}}}}")]
        else:
            keys = [(("i" if type(f) is int else "s", f), f"v[{o + i}]") for i, f in enumerate(forms)]
        for k, src in keys:
            if k in out:
                return None
            out[k] = src
        o += len(forms)
    return out


def _leaf(x: Any) -> tuple | None:
    """The key _leaves gives a value that may be a constant's form (None: it cannot be)."""
    t = type(x)
    if t is str:
        return ("s", x)
    if t is int:
        return ("i", x)
    if t is dict and len(x) == 1:
        p = x.get("prefix")
        if type(p) is dict and len(p) == 2 and type(p.get("addr")) is str \
                and type(p.get("len")) is int:
            return ("p", p["addr"], p["len"])
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types and key order throughout (1 is not True)."""
    t = type(a)
    if t is not type(b):
        return False
    if t is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if t is list or t is tuple:
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _literal(x: Any) -> str:
    """Python source that builds x afresh."""
    t = type(x)
    if t is str or t is int or t is bool or x is None:
        return repr(x)
    if t is dict:
        if any(type(k) is not str for k in x):
            raise _NoTemplate
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in x.items()) + "}"
    if t is list:
        return "[" + ", ".join(_literal(v) for v in x) + "]"
    if t is tuple:
        return "(" + "".join(_literal(v) + ", " for v in x) + ")"
    raise _NoTemplate


def _src(outs: list, probe_leaves: list[dict[tuple, str]]) -> str:
    """Python source that builds outs[0] from the constants in v, given the translations
    of the same shape with probes for constants (outs[1:]) and the probes' forms: what
    all of them have alike is a literal; where they differ, each probe translation must
    hold the same form of the same constant, else raise _NoTemplate. (That outs[0] holds
    its own constant's form there is for the caller to check.)"""
    x = outs[0]
    if all(_same(x, y) for y in outs[1:]):
        return _literal(x)
    srcs = {lv.get(_leaf(o)) for o, lv in zip(outs[1:], probe_leaves, strict=True)}
    if len(srcs) == 1 and None not in srcs:
        return srcs.pop()
    t = type(x)
    if any(type(o) is not t for o in outs):
        raise _NoTemplate
    if t is dict:
        if any(list(o) != list(x) for o in outs) or any(type(k) is not str for k in x):
            raise _NoTemplate
        return "{" + ", ".join(f"{k!r}: {_src([o[k] for o in outs], probe_leaves)}"
                               for k in x) + "}"
    if (t is list or t is tuple) and all(len(o) == len(x) for o in outs):
        items = [_src([o[i] for o in outs], probe_leaves) for i in range(len(x))]
        return f"[{', '.join(items)}]" if t is list else "(" + "".join(f"{i}, " for i in items) + ")"
    raise _NoTemplate


# Two sets of probes per class: constants no rule set is likely to hold, all different.
_PROBES = {"S": lambda k, j: f'"natlens-{j}-{k}"', "I": lambda k, j: f"203.0.{113 + j}.{k + 1}",
           "P": lambda k, j: f"100.{64 + j}.{k}.0/24",
           "A": lambda k, j: f"192.0.{2 + j}.{k + 1}:{30000 + 1000 * j + k}",
           "H": lambda k, j: f"0x5eed{j}{k:03x}", "D": lambda k, j: str(40000 + 1000 * j + k),
           "N": lambda k, j: f"NatlensProbe{j}x{k}"}


# Builders (or _NEVER) by translation mode and shape, shared by all parses: a builder
# depends on nothing but the two (see _Shapes). Bounded, as a process may parse many
# dumps of shapes seen once; past the bound new shapes are parsed each time.
_BUILDERS: dict[tuple, dict[str, Any]] = {}
_MAX_BUILDERS = 4096
_TRIAL = 2000


class _Shapes:
    """Translations by shape: a shape is parsed in full the first two times it is seen in
    a dump; the second time it also gets a builder, a function of the constants that
    returns what parsing returns. A builder is kept only if it also gives what parsing the
    same shape with other constants (two sets of probes of each class, all different)
    gives; a shape whose builder fails that check, or that has none, is parsed each time.
    Nothing else changes: the result is the parser's, only made faster."""

    def __init__(self, path: str):
        self.path = path
        self.once: set[tuple[tuple, str]] = set()
        self.tries = self.built = 0     # texts of this trial, and of them built
        self.skip = 0                   # texts to parse without shapes before the next trial

    def translate(self, mode: tuple, text: str, parse: Any, line: int) -> Any:
        """parse(tokens of text), by way of the shape's builder when it has one. mode
        names the translation (all it depends on besides the text). Where shapes hardly
        repeat (a trial of _TRIAL texts, one in eight or fewer built) the next four
        trials' worth are parsed without them: working out shapes would only cost time."""
        if self.skip:
            self.skip -= 1
            return parse(self._lex(text, line))
        self.tries += 1
        if self.tries >= _TRIAL:
            if self.built * 8 < self.tries:
                self.skip = 4 * _TRIAL
            self.tries = self.built = 0
        shapes = _BUILDERS.get(mode)
        if shapes is None:
            shapes = _BUILDERS[mode] = {}
        shape, parts, flat, consts = _shape(text)
        b = shapes.get(shape)
        if b is not None and b is not _NEVER:
            self.built += 1
            return b(flat)
        out = parse(self._lex(text, line))
        if b is None:
            if (mode, shape) not in self.once:
                self.once.add((mode, shape))
            elif sum(len(v) for v in _BUILDERS.values()) < _MAX_BUILDERS:
                made = self._builder(shape, parts, flat, consts, out, parse, line)
                if made is not None:
                    shapes[shape] = made
        return out

    def _lex(self, text: str, line: int) -> list[_Tok]:
        toks: list[_Tok] = []
        _lex_line(text, line, toks.append, {}, set(), self.path)
        return toks

    def _builder(self, shape: str, parts: list[str], flat: list, consts: list[str], out: Any,
                 parse: Any, line: int) -> Any:
        """The builder of a shape, _NEVER if it cannot have one, None to try again with
        the next text of this shape (this one holds a value of the probes). parts, flat
        and consts: what _shape returned for the text, out: what parsing it returned."""
        if len(consts) > _MAX_SLOTS:
            return _NEVER
        seen = {k for c in consts for k in (_leaves([c]) or {})}
        outs, all_leaves, flats = [out], [], [flat]
        classes = [_const(c)[0] for c in consts]
        for j in (0, 1):
            probes = {f"\x00{cls}{k}": _PROBES[cls](k, j) for k, cls in enumerate(classes)}
            probe_leaves = _leaves(list(probes.values()))
            if probe_leaves is None or probe_leaves.keys() & seen:
                return None
            seen |= probe_leaves.keys()
            probe_parts = parts.copy()
            probe_parts[1::2] = [probes[m] for m in parts[1::2]]
            probe_text = "".join(probe_parts)
            probe_shape, _, probe_flat, _ = _shape(probe_text)
            try:
                probe_out = parse(self._lex(probe_text, line))
            except _Unparsed:
                return _NEVER
            if probe_shape != shape:
                return _NEVER
            outs.append(probe_out)
            all_leaves.append(probe_leaves)
            flats.append(probe_flat)
        try:
            # source made of literals (repr of str, int, bool, None) and v[i] only
            b = eval(f"lambda v: {_src(outs, all_leaves)}", {"__builtins__": {}})
        except _NoTemplate:
            return _NEVER
        ok = all(_same(b(f), o) for f, o in zip(flats, outs, strict=True))
        return b if ok else _NEVER


# ----------------------------------------------------------------------------- JSON

_JSON_WS = re.compile(r"[ \t\n\r]*")


class _At:
    """Where the JSON item being read is: its line and its index in the "nftables" list.
    nft -j prints the whole dump on one line, and there the line says nothing: such a
    dump names an item by its index in errors, and each object by what it is (a rule by
    its handle and chain) in its ``place``."""

    __slots__ = ("path", "one_line", "line", "index")

    def __init__(self, path: str, one_line: bool):
        self.path, self.one_line, self.line, self.index = path, one_line, 1, 0

    def where(self) -> str:
        return f"nftables[{self.index}]" if self.one_line else str(self.line)

    def err(self, msg: str) -> NatlensError:
        return NatlensError(msg, path=self.path, where=self.where())

    def place(self, what: str) -> str | None:
        return what if self.one_line else None


def _parse_json(text: str, path: str) -> NftRuleset:
    """libnftables-json (nft -j list ruleset, or a JSON command file) -> NftRuleset.

    A dump of one line (what nft prints) is decoded whole, which is fastest; one of
    several lines (pretty-printed) item by item, so that each knows the line it starts on.
    """
    rs = NftRuleset(path=path, format="json")
    nl = text.find("\n")
    at = _At(path, nl < 0 or text[nl:].isspace())
    try:
        items = _json_items(text, path) if at.one_line else _JsonScan(text, path).items()
        for i, (line, item) in enumerate(items):
            at.index, at.line = i, line
            _json_item(rs, item, at)
    except json.JSONDecodeError as e:
        where = f"{e.lineno}:{e.colno}" if at.one_line else str(e.lineno)
        raise NatlensError(f"invalid JSON: {e.msg}", path=path, where=where) from None
    _finish(rs, set(), '"xt"' in text or "\\u" in text)
    return rs


def _json_items(text: str, path: str) -> Iterator[tuple[int, Any]]:
    """(1, item) for each item of the "nftables" list of a one-line document."""
    doc = json.loads(text)
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise NatlensError('not an nft JSON dump: no top-level "nftables" list',
                           path=path, where="1")
    del doc
    for i, item in enumerate(items):
        items[i] = None         # what the model keeps of it lives on; the rest can go
        yield 1, item


def _json_item(rs: NftRuleset, item: Any, at: _At) -> None:
    """One item of the list: a table, chain, set, map, element or rule (or {"add": ...})."""
    if type(item) is dict and len(item) == 1 and type(body := item.get("rule")) is dict:
        _json_rule(rs, body, at, False)     # most of a big dump
        return
    if not isinstance(item, dict) or len(item) != 1:
        rs.notes.append(f"{at.path}:{at.where()}: JSON item {json.dumps(item)[:60]} skipped")
        return
    ((kind, body),) = item.items()
    insert = False
    if kind in ("add", "create", "insert") and isinstance(body, dict) and len(body) == 1:
        insert = kind == "insert"
        ((kind, body),) = body.items()
    handler = _JSON_HANDLERS.get(kind)
    if not isinstance(body, dict) or handler is None:
        if kind != "metainfo":
            rs.notes.append(f"{at.path}:{at.where()}: JSON {kind} skipped")
        return
    handler(rs, body, at, insert)


class _JsonScan:
    """Walks the top-level object by hand, so that each item knows the line it starts on."""

    def __init__(self, text: str, path: str):
        self.text, self.path, self.i = text, path, 0
        self.dec = json.JSONDecoder()
        self.line, self.line_at = 1, 0

    def ws(self) -> None:
        self.i = _JSON_WS.match(self.text, self.i).end()

    def peek(self) -> str:
        return self.text[self.i:self.i + 1]

    def lineno(self, pos: int) -> int:
        self.line += self.text.count("\n", self.line_at, pos)
        self.line_at = pos
        return self.line

    def fail(self, msg: str) -> NatlensError:
        return NatlensError(f"invalid JSON: {msg}", path=self.path, where=str(self.lineno(self.i)))

    def value(self) -> Any:
        v, self.i = self.dec.raw_decode(self.text, self.i)
        return v

    def items(self) -> Iterator[tuple[int, Any]]:
        """(line, item) for each item of the top-level "nftables" list."""
        text = self.text
        self.i = len(text) - len(text.lstrip("\ufeff \t\r\n"))
        if self.peek() != "{":
            raise self.fail("expected '{'")
        self.i += 1
        self.ws()
        found = False
        while self.peek() not in ("}", ""):
            key = self.value()
            self.ws()
            if not isinstance(key, str) or self.peek() != ":":
                raise self.fail("expected a key and ':'")
            self.i += 1
            self.ws()
            if key == "nftables" and self.peek() == "[":
                found = True
                yield from self._list()
            else:
                self.value()
            self.ws()
            if self.peek() == ",":
                self.i += 1
                self.ws()
            elif self.peek() != "}":
                raise self.fail("expected ',' or '}'")
        if self.peek() != "}":
            raise self.fail("the top-level object is never closed")
        self.i += 1
        self.ws()
        if self.i != len(text):
            raise self.fail("extra data after the top-level object")
        if not found:
            raise NatlensError('not an nft JSON dump: no top-level "nftables" list',
                               path=self.path, where="1")

    def _list(self) -> Iterator[tuple[int, Any]]:
        """The items of the "nftables" list, each with the line it starts on."""
        self.i += 1
        self.ws()
        if self.peek() == "]":
            self.i += 1
            return
        while True:
            start = self.i
            item = self.value()
            yield self.lineno(start), item
            self.ws()
            c = self.peek()
            self.i += 1
            if c == "]":
                return
            if c != ",":
                raise self.fail("expected ',' or ']'")
            self.ws()


def _json_table_of(rs: NftRuleset, b: dict, at: _At, what: str) -> NftTable:
    key = (b.get("family"), b.get("table"))
    table = rs.tables.get(key)  # type: ignore[arg-type]
    if table is None:
        raise at.err(f"{what} {b.get('name', b.get('chain', ''))} in unknown table "
                     f"{key[0]} {key[1]}")
    return table


def _json_table(rs: NftRuleset, b: dict, at: _At, insert: bool) -> None:
    """{"table": ...} -> the table (a later duplicate only updates it)."""
    fam, name = b.get("family"), b.get("name")
    if not isinstance(fam, str) or not isinstance(name, str):
        raise at.err("a table without family and name")
    table = rs.tables.get((fam, name))
    if table is None:
        table = rs.tables[(fam, name)] = NftTable(fam, name, path=at.path, lineno=at.line,
                                                  place=at.place(f"table {fam} {name}"))
    table.comment = b.get("comment", table.comment)
    if b.get("flags"):
        table.flags = frozenset(_as_list(b["flags"]))


def _json_chain(rs: NftRuleset, b: dict, at: _At, insert: bool) -> None:
    """{"chain": ...} -> the chain, with type/hook/prio/policy/dev for a base chain."""
    table = _json_table_of(rs, b, at, "chain")
    name = str(b.get("name"))
    ch = table.chains.get(name)
    if ch is None:
        ch = table.chains[name] = NftChain(
            table.family, table.name, name, path=at.path, lineno=at.line,
            place=at.place(f"chain {table.family} {table.name} {name}"))
    if b.keys() <= _NAMED_ONLY:
        return                              # a regular chain: nothing more to read
    ch.type, ch.hook = b.get("type", ch.type), b.get("hook", ch.hook)
    prio = b.get("prio", ch.prio)
    if isinstance(prio, str):
        try:
            prio = chain_priority(prio, table.family)
        except ValueError as e:
            raise at.err(str(e)) from None
    ch.prio = prio
    ch.policy = b.get("policy", ch.policy)
    dev = b.get("dev", b.get("devices", ch.device))
    ch.device = ",".join(dev) if isinstance(dev, list) else dev
    ch.comment = b.get("comment", ch.comment)


def _json_set(rs: NftRuleset, b: dict, at: _At, insert: bool) -> None:
    """{"set"|"map": ...} -> the NftSet with its "elem" list."""
    table = _json_table_of(rs, b, at, "set")
    name = str(b.get("name"))
    data = b.get("map")
    what = "set" if data is None else "map"
    s = NftSet(table.family, table.name, name, _json_type(b.get("type")),
               data=" . ".join(_json_type(data)) if data is not None else None,
               flags=frozenset(_as_list(b.get("flags", []))), comment=b.get("comment"),
               path=at.path, lineno=at.line,
               place=at.place(f"{what} {table.family} {table.name} {name}"))
    s.elements = [_json_elem(e) for e in b.get("elem", [])]
    table.sets[name] = s


def _json_element(rs: NftRuleset, b: dict, at: _At, insert: bool) -> None:
    table = _json_table_of(rs, b, at, "element of")
    s = table.sets.get(str(b.get("name")))
    if s is None:
        raise at.err(f"elements for unknown set {b.get('name')}")
    s.elements.extend(_json_elem(e) for e in b.get("elem", []))


def _json_rule(rs: NftRuleset, b: dict, at: _At, insert: bool) -> None:
    """{"rule": ...} -> NftRule; the statements stay as nft printed them, the text is
    formatted from them when first asked for."""
    table = _json_table_of(rs, b, at, "rule of chain")
    ch = table.chains.get(str(b.get("chain")))
    if ch is None:
        raise at.err(f"rule for unknown chain {table.family} {table.name} {b.get('chain')}")
    expr = b.get("expr", [])
    if not isinstance(expr, list):
        raise at.err("a rule whose expr is not a list")
    handle = b.get("handle")
    place = None
    if at.one_line:
        which = f"handle {handle}" if handle is not None else f"nftables[{at.index}]"
        place = f"rule {which} ({table.family} {table.name} {ch.name})"
    rule = _JsonRule(table.family, table.name, ch.name, expr, None, at.path, at.line,
                     handle, b.get("comment"), place=place)
    if insert:
        ch.rules.insert(0, rule)
    else:
        ch.rules.append(rule)


_NAMED_ONLY = frozenset(("family", "table", "name", "handle"))
_JSON_HANDLERS = {"table": _json_table, "chain": _json_chain, "set": _json_set,
                  "map": _json_set, "element": _json_element, "rule": _json_rule}


def _json_type(t: Any) -> tuple[str, ...]:
    """A set's "type" (a name, a list for a concatenation, or {"typeof": EXPR}) -> names."""
    if isinstance(t, str):
        return (t,)
    if isinstance(t, list):
        return tuple(str(x) for x in t)
    if isinstance(t, dict) and "typeof" in t:
        e = t["typeof"]
        parts = e["concat"] if isinstance(e, dict) and "concat" in e else [e]
        return tuple(_typeof_name(x) for x in parts)
    return ()


def _json_elem(e: Any) -> NftElement:
    """One "elem" entry: a value, {"elem": {"val", "comment"...}}, or [key, value] of a map."""
    value = None
    if isinstance(e, list) and len(e) == 2:
        e, value = e
    comment = None
    if isinstance(e, dict) and "elem" in e:
        inner = e["elem"]
        comment = inner.get("comment")
        e = inner.get("val")
    return NftElement(e, value, comment)


# ----------------------------------------------------------------------------- formatting


def format_rule(expr: list[dict], family: str | None = None) -> str:
    """libnftables-json statements -> nft syntax, as ``nft list ruleset`` prints the rule.

    The text of a rule read from JSON (NftRule.text), for trace lines. With
    ``family`` a ``reject`` of the family's default kind prints bare, as nft does.
    A statement it does not know prints as its JSON; nothing is left out.
    """
    return " ".join(_fmt_stmt(s, family) for s in expr)


_PLAIN_NAME = re.compile(r"^[\w./:@%+-]+$")
_QUOTED_META = frozenset(("iifname", "oifname", "iif", "oif", "ibrname", "obrname", "ibriport",
                          "obriport", "iifkind", "oifkind", "sdifname"))
_BINOP_KEYS = ("&", "|", "^", "<<", ">>")
_FMT_ERRORS = (KeyError, TypeError, IndexError, AttributeError, ValueError)


def _fmt_stmt(s: Any, family: str | None) -> str:
    """One statement -> nft syntax; one it does not know -> its name and JSON."""
    if not isinstance(s, dict) or len(s) != 1:
        return json.dumps(s)
    ((k, v),) = s.items()
    if k in _VERDICT_WORDS and v is None:
        return k
    f = _FMT_STMT.get(k)
    if f is not None:
        try:
            return f(v, family)
        except _FMT_ERRORS:
            pass
    return f"{k} {json.dumps(v)}"


def _fmt_match(v: dict, family: str | None) -> str:
    """A relation, printed the way nft lists it (implicit ==/in, 'flags x / mask')."""
    left, op, right = v["left"], v.get("op", "=="), v["right"]
    hint = _hint(left)
    if (op == "==" and isinstance(left, dict) and "&" in left and isinstance(left["&"][1], list)
            and _is_bitmask(left["&"][0])):
        base, mask = left["&"]
        return f"{_fmt(base)} {_fmt(right, hint)} / {_fmt(mask, hint)}"
    lt, rt = _fmt(left), _fmt(right, hint)
    if op == "in":
        return f"{lt} {rt}"
    if op == "==":
        explicit = not _setish(right) and (_is_binop(left) or _is_bitmask(left))
        return f"{lt} == {rt}" if explicit else f"{lt} {rt}"
    return f"{lt} {op} {rt}"


def _fmt_jump(kind: str) -> Any:
    return lambda v, family: f"{kind} {_name(v['target'])}"


def _fmt_counter(v: Any, family: str | None) -> str:
    if v is None:
        return "counter"
    if isinstance(v, str):
        return f'counter name "{v}"'
    return f"counter packets {v['packets']} bytes {v['bytes']}"


def _fmt_mangle(v: dict, family: str | None) -> str:
    return f"{_fmt(v['key'])} set {_fmt(v['value'], _hint(v['key']))}"


def _fmt_vmap(v: dict, family: str | None) -> str:
    return f"{_fmt(v['key'])} vmap {_fmt_data(v['data'], _hint(v['key']), None)}"


def _fmt_nat(kind: str) -> Any:
    """snat/dnat/masquerade/redirect, with family, address, :port and flags."""
    def fmt(v: Any, family: str | None) -> str:
        if not v:
            return kind
        out = kind
        addr, port = v.get("addr"), v.get("port")
        if addr is not None or port is not None:
            if kind in ("snat", "dnat"):
                fam = v.get("family")
                out += f" {fam} to " if fam else " to "
                a = "" if addr is None else _fmt(addr)
                if port is not None and isinstance(addr, str) and ":" in addr:
                    a = f"[{a}]"
                out += a
            else:
                out += " to "
            if port is not None:
                out += ":" + _fmt(port)
        if v.get("flags"):
            out += " " + _fmt(v["flags"])
        return out
    return fmt


def _fmt_reject(v: Any, family: str | None) -> str:
    """reject [with KIND CODE]; bare when it is the family's default."""
    if not v:
        return "reject"
    kind, code = v.get("type"), v.get("expr")
    if kind == "tcp reset":
        return "reject with tcp reset"
    default = {"ip": "icmp", "ip6": "icmpv6"}.get(family or "", "icmpx")
    if code == "port-unreachable" and (family is None or kind == default):
        return "reject"
    return f"reject with {kind} {code}" if code else f"reject with {kind}"


def _fmt_log(v: Any, family: str | None) -> str:
    """log [prefix "x"] [group N ...] [level L] [flags ...]."""
    if not v:
        return "log"
    out = ["log"]
    if "prefix" in v:
        out.append(f'prefix "{v["prefix"]}"')
    out.extend(f"{k} {v[k]}" for k in ("group", "snaplen", "queue-threshold") if k in v)
    if "level" in v:
        out.append(f"level {v['level']}")
    if "flags" in v:
        groups: dict[str, list[str]] = {}
        for f in _as_list(v["flags"]):
            head, _, tail = str(f).partition(" ")
            groups.setdefault(head if tail else "", []).append(tail or head)
        out.append("flags " + " ".join((f"{h} " if h else "") + ",".join(n)
                                       for h, n in groups.items()))
    return " ".join(out)


def _fmt_limit(v: dict, family: str | None) -> str:
    """limit rate [over] N/unit [burst ...], leaving out nft's default burst."""
    over = " over" if v.get("inv") else ""
    if "rate_unit" in v:
        out = f"limit rate{over} {v['rate']} {v['rate_unit']}/{v['per']}"
        if v.get("burst"):
            out += f" burst {v['burst']} {v.get('burst_unit', 'bytes')}"
        return out
    out = f"limit rate{over} {v['rate']}/{v['per']}"
    if v.get("burst", 5) != 5:
        out += f" burst {v['burst']} packets"
    return out


def _fmt_queue(v: Any, family: str | None) -> str:
    """queue [num N] [flags]."""
    if not v:
        return "queue"
    out = "queue"
    if "num" in v:
        out += f" num {_fmt(v['num'])}"
    if "flags" in v:
        out += f" {_fmt(v['flags'])}"
    return out


def _fmt_set_stmt(v: dict, family: str | None) -> str:
    return f"{v['op']} {v['set']} {{ {_fmt(v['elem'])} }}"


_FMT_STMT = {
    "match": _fmt_match, "jump": _fmt_jump("jump"), "goto": _fmt_jump("goto"),
    "counter": _fmt_counter, "mangle": _fmt_mangle, "vmap": _fmt_vmap,
    "snat": _fmt_nat("snat"), "dnat": _fmt_nat("dnat"), "masquerade": _fmt_nat("masquerade"),
    "redirect": _fmt_nat("redirect"), "reject": _fmt_reject, "log": _fmt_log,
    "limit": _fmt_limit, "queue": _fmt_queue, "set": _fmt_set_stmt,
    "notrack": lambda v, family: "notrack",
    "xt": lambda v, family: f"xt {v['type']} {v['name']}",
    "unparsed": lambda v, family: str(v),
}


def _name(n: str) -> str:
    return n if _PLAIN_NAME.match(n) else f'"{n}"'


def _is_binop(e: Any) -> bool:
    return isinstance(e, dict) and len(e) == 1 and next(iter(e)) in _BINOP_KEYS


def _hint(e: Any) -> Any:
    """How the values compared with e print: "mark" (0x%08x), "quote", or per concat field."""
    if not isinstance(e, dict):
        return None
    if "meta" in e:
        k = e["meta"].get("key")
        return "mark" if k == "mark" else ("quote" if k in _QUOTED_META else None)
    if "ct" in e:
        k = e["ct"].get("key")
        return "mark" if k == "mark" else ("quote" if k == "helper" else None)
    if "fib" in e:
        return "quote" if e["fib"].get("result") == "oifname" else None
    if "concat" in e:
        return tuple(_hint(p) for p in e["concat"])
    for op in _BINOP_KEYS:
        if op in e:
            return _hint(e[op][0])
    return None


def _fmt_time(s: Any) -> str:
    """Seconds -> nft's '1h30m' spelling."""
    if not isinstance(s, int) or s <= 0:
        return f"{s}s"
    out = ""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n:
            out += f"{s // n}{unit}"
            s %= n
    return out


def _fmt(e: Any, hint: Any = None) -> str:
    """An expression or value -> nft syntax."""
    h = hint if isinstance(hint, str) else None
    if isinstance(e, bool):
        return "exists" if e else "missing"
    if isinstance(e, int):
        return f"0x{e:08x}" if h == "mark" else str(e)
    if isinstance(e, str):
        if e.startswith("@"):
            return e
        return f'"{e}"' if h == "quote" or not e or " " in e else e
    if isinstance(e, list):
        return ",".join(_fmt(x, hint) for x in e)
    if isinstance(e, dict) and len(e) == 1:
        ((k, v),) = e.items()
        f = _FMT_EXPR.get(k)
        if f is not None:
            try:
                return f(v, hint)
            except _FMT_ERRORS:
                pass
        if k in _BINOP_KEYS and isinstance(v, list) and len(v) == 2:
            return f"{_fmt(v[0])} {k} {_fmt(v[1], _hint(v[0]))}"
    return json.dumps(e)


def _fmt_data(d: Any, khint: Any, dhint: Any) -> str:
    """A map's data: '@name' or '{ k : v, ... }' (verdicts as statements)."""
    if isinstance(d, dict) and "set" in d:
        return _fmt_set(d["set"], khint, dhint)
    return _fmt(d, dhint)


def _fmt_set(items: Any, khint: Any, dhint: Any) -> str:
    """Set or map literal items -> '{ a, b : verdict, ... }'."""
    out = []
    for it in _as_list(items):
        if isinstance(it, list) and len(it) == 2:
            k, v = it
            vt = _fmt_stmt(v, None) if isinstance(v, dict) and _is_verdict(v) else _fmt(v, dhint)
            out.append(f"{_fmt(k, khint)} : {vt}")
        else:
            out.append(_fmt(it, khint))
    return "{ " + ", ".join(out) + " }"


def _is_verdict(v: dict) -> bool:
    return len(v) == 1 and next(iter(v)) in ("accept", "drop", "continue", "return", "jump",
                                              "goto", "queue")


def _fmt_concat(v: list, hint: Any) -> str:
    hints = hint if isinstance(hint, tuple) else (hint,) * len(v)
    return " . ".join(_fmt(p, hints[i] if i < len(hints) else None) for i, p in enumerate(v))


def _fmt_elem(v: dict, hint: Any) -> str:
    out = _fmt(v["val"], hint)
    for k in ("timeout", "expires"):
        if k in v:
            out += f" {k} {_fmt_time(v[k])}"
    if "comment" in v:
        out += f' comment "{v["comment"]}"'
    return out


def _fmt_payload(v: dict, hint: Any) -> str:
    if "protocol" in v:
        return f"{v['protocol']} {v['field']}"
    return f"@{v['base']},{v['offset']},{v['len']}"


def _fmt_ct(v: dict, hint: Any) -> str:
    return "ct " + (f"{v['dir']} " if v.get("dir") else "") + v["key"]


def _fmt_numgen(v: dict, hint: Any) -> str:
    out = f"numgen {v['mode']} mod {v['mod']}"
    return out + (f" offset {v['offset']}" if v.get("offset") else "")


def _fmt_map(v: dict, hint: Any) -> str:
    return f"{_fmt(v['key'])} map {_fmt_data(v['data'], _hint(v['key']), hint)}"


_FMT_EXPR = {
    "payload": _fmt_payload,
    "meta": lambda v, h: v["key"] if v["key"] in _META_UNQUALIFIED else f"meta {v['key']}",
    "ct": _fmt_ct,
    "fib": lambda v, h: f"fib {' . '.join(_as_list(v['flags']))} {v['result']}",
    "numgen": _fmt_numgen,
    "socket": lambda v, h: f"socket {v['key']}",
    "concat": _fmt_concat,
    "prefix": lambda v, h: f"{v['addr']}/{v['len']}",
    "range": lambda v, h: f"{_fmt(v[0], h)}-{_fmt(v[1], h)}",
    "set": lambda v, h: _fmt_set(v, h, None),
    "map": _fmt_map,
    "elem": _fmt_elem,
    "tcp option": lambda v, h: f"tcp option {v['name']} {v['field']}",
}
