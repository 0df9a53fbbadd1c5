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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Named chain priorities (nft(8), "PRIORITY"), for the ip, ip6 and inet families.
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                  "srcnat": 100}
# The tables iptables-nft keeps in nft (they also appear in iptables-save output).
XTABLES = ("raw", "mangle", "nat", "filter", "security")


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
class NftSet:
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

    @property
    def is_map(self) -> bool:
        return self.data is not None


@dataclass
class NftRule:
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

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


@dataclass
class NftChain:
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

    @property
    def base(self) -> bool:
        return self.hook is not None


@dataclass
class NftTable:
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
