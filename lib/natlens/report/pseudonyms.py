"""Keyed pseudonyms for names, paths, MAC addresses and kube-proxy's name-derived hashes.

Why: Crypto-PAn hides addresses, but a report also names the customer's nodes,
pods, namespaces, Services and incident, holds local paths and can show MAC
addresses. Each is replaced by a readable pseudonym made with HMAC-SHA256 under
the same 32-byte key as the addresses (``node-7f3a09c1``, ``pod-...``, ``ns-...``,
``svc-...``, ``incident-...``, ``path-...``), so one ``--key-file`` gives the same
pseudonym in every report, every run and every incident, and a different key a
different one. The pseudonym's hex part depends on the name alone, so a name
counted as a pod in one bundle and a node in another keeps its hex part. Two known names
(or paths) that would get one pseudonym (32 bits: about one chance in 10,000 for a
thousand pods) are an error naming both: the report would show two things as one.

Names are rewritten only where they identify: a name that is one of natlens' own
words (a namespace ``default``, a pod ``client``) only in the forms that name it
(``default/web``, ``web.default.svc``, ``-n default``, ``namespace default``,
``pod client``, ``veth-client``, ``nodes/worker/``), any other name wherever it stands as a whole
token (``node-1`` in ``node-1/any``, ``web-1`` in ``veth-web-1``, not ``node-10``).

kube-proxy's chain names ``KUBE-SVC-<16>``, ``KUBE-SEP-<16>`` ... and nftables
``service-<8>-...`` are hashes of the Service's namespace, name and port (and of
the endpoint): not the name, but anyone guessing a name could confirm it. They
are replaced by keyed hashes of the same length and alphabet, so a rule trace
still reads as kube-proxy's (and two chains stay two chains).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable

from natlens.errors import NatlensError
from natlens.report.identifiers import Identifiers, natlens_words

PREFIX = {"node": "node", "svc": "svc", "pod": "pod", "ns": "ns", "incident": "incident",
          "host": "host", "id": "id", "path": "path"}
_HEX = 8  # hex digits of a pseudonym: 32 bits, readable; a collision among known names is an error

_CHAIN_RE = re.compile(r"\b(KUBE-(?:SVC|SVL|SEP|EXT|FW|XLB)-)([A-Z0-9]{16})\b")
_NFT_CHAIN_RE = re.compile(r"\b((?:service|endpoint|external|local|firewall)-)([A-Z0-9]{8})(?=-)")
_MAC_RE = re.compile(r"(?<![0-9A-Fa-f:.-])([0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\2[0-9A-Fa-f]{2}){4})"
                     r"(?![0-9A-Fa-f]|[:-][0-9A-Fa-f])")
# An absolute local path (a parameter, the command line, a log line): two or more parts.
_ABS_PATH_RE = re.compile(r"(?<![\w.:/~-])(~?/[\w.@+,%-]+(?:/[\w.@+,%-]*)+|~/[\w.@+,%-]+)")
# A whole token: not glued to letters, digits, '_' or a '.' (a dash before is allowed:
# veth-web-1); after it no letter, digit or '_', nor '-' + one (web-1-x) or '.' + a digit (node-1.2).
_BEFORE = r"(?<![A-Za-z0-9_.])"
_AFTER = r"(?![A-Za-z0-9_]|-[A-Za-z0-9]|\.\d)"


class Pseudonyms:
    """The name, path, MAC and chain-hash mapping of one key over one set of identifiers."""

    def __init__(self, key: bytes, ids: Identifiers | None = None):
        self._key = key
        self.ids = Identifiers()
        self._rewrites: list[_Rewrite] = []
        self.learn(ids or Identifiers())

    def learn(self, ids: Identifiers) -> None:
        """Add identifiers (a bundle's, the report's paths) and rebuild the rewrites.
        NatlensError when two of the names, or two of the paths, get one pseudonym."""
        self.ids.merge(ids)
        distinct(self.name, self.ids.names)
        distinct(self._hashed_path, self.ids.paths)  # (an incident's directories: the incident's, by design)
        by_kind: dict[str, list[str]] = {}
        for name, kind in self.ids.names.items():
            by_kind.setdefault(kind, []).append(name)
        self._rewrites = _build_rewrites(by_kind, self.name)

    def digest(self, purpose: str, value: str) -> bytes:
        """HMAC-SHA256 of `value` under the key, separated by `purpose`."""
        return hmac.new(self._key, f"natlens/{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def name(self, value: str, kind: str | None = None) -> str:
        """The pseudonym of one name: ``<kind>-<8 hex>``; kind defaults to the name's own."""
        kind = kind or self.ids.names.get(value, "id")
        return f"{PREFIX.get(kind, kind)}-{self.digest('name', value).hex()[:_HEX]}"

    def exact(self, value: str) -> str | None:
        """The pseudonym of `value` when it is, as a whole, a known name; else None."""
        return self.name(value) if value in self.ids.names else None

    def path(self, value: str) -> str:
        """A local path's pseudonym: the incident's for the incident directory, else path-<hex>."""
        value = value.rstrip("/") or value
        base = value.rsplit("/", 1)[-1]
        if value in self.ids.paths and self.ids.names.get(base) == "incident":
            return self.name(base, "incident")
        return self._hashed_path(value)

    def _hashed_path(self, value: str) -> str:
        return f"path-{self.digest('path', value).hex()[:_HEX]}"

    def names(self, s: str) -> str:
        """`s` with the known local paths and every identifying use of a known name replaced.

        Idempotent: a pseudonym is never a known name, so text already mapped is kept.
        """
        for p in sorted(self.ids.paths, key=len, reverse=True):
            if p in s:
                s = re.sub(re.escape(p) + r"(?![\w.-])", lambda _m, p=p: self.path(p), s)
        return _scan(s, self._rewrites)

    def absolute_paths(self, s: str) -> str:
        """Every absolute path in `s` (a parameter, a command line, a log line) replaced."""
        s = self.names(s)
        return _ABS_PATH_RE.sub(lambda m: self.path(m.group(1)), s) if "/" in s else s

    def hashes(self, s: str) -> str:
        """kube-proxy's name-derived chain hashes replaced by keyed ones (module docstring)."""
        if "KUBE-" in s:
            s = _CHAIN_RE.sub(lambda m: m.group(1) + self._b32("chain", m.group(2), 16), s)
        if "-" in s:
            s = _NFT_CHAIN_RE.sub(lambda m: m.group(1) + self._b32("nft-chain", m.group(2), 8), s)
        return s

    def _b32(self, purpose: str, value: str, n: int) -> str:
        """`n` characters of the keyed digest in kube-proxy's alphabet (base32)."""
        return base64.b32encode(self.digest(purpose, value)).decode("ascii")[:n]

    def macs(self, s: str) -> str:
        """Every unicast MAC address in `s` replaced by a keyed, locally administered one.

        Broadcast, all-zero and multicast addresses name no machine and are kept.
        """
        return _MAC_RE.sub(self._mac, s) if (":" in s or "-" in s) else s

    def _mac(self, m: re.Match[str]) -> str:
        """One matched MAC address, mapped (see `macs`), in its own separator."""
        text, sep = m.group(1), m.group(2)
        octets = bytes(int(x, 16) for x in text.split(sep))
        if octets[0] & 1 or octets in (b"\0" * 6, b"\xff" * 6):
            return text
        d = bytearray(self.digest("mac", octets.hex())[:6])
        d[0] = (d[0] & 0xFC) | 0x02  # unicast, locally administered: never a real vendor's
        return sep.join(f"{b:02x}" for b in d)


def distinct(pseudonym: Callable[[str], str], values: Iterable[str]) -> None:
    """NatlensError naming two of `values` that `pseudonym` maps to one: an anonymized report
    would show them as one node, pod or path, which it must never do."""
    seen: dict[str, str] = {}
    for value in values:
        mapped = pseudonym(value)
        first = seen.setdefault(mapped, value)
        if first != value:
            raise NatlensError(f"{first!r} and {value!r} would both be shown as {mapped} under this key; "
                               "anonymize with another key (--key-file; without one, run again for a new random key)")


# A run of the characters a Kubernetes name is made of: where a name may stand.
_RUN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_QUOTE = "[\"'`]?"
_Rewrite = tuple[re.Pattern[str], Callable[[re.Match[str]], "tuple[str, int] | None"]]


def _valid_end(run: str, e: int) -> bool:
    """Whether a name may end at `run[e]` (see _AFTER): the run's end, a '-' not followed by
    a letter or digit, or a '.' not followed by a digit."""
    if e == len(run):
        return True
    nxt = run[e + 1] if e + 1 < len(run) else ""
    return (run[e] == "-" and not nxt.isalnum()) or (run[e] == "." and not nxt.isdigit())


def _prefix(run: str, names: Iterable[str] | dict[str, str] | set[str]) -> int:
    """The length of the longest known name `run` starts with (ending where a name may), or 0."""
    ends = [len(run)] + [i for i in range(len(run) - 1, 0, -1) if run[i] in "-."]
    for e in ends:
        if run[:e] in names and _valid_end(run, e):
            return e
    return 0


def _scan(s: str, rewrites: list[_Rewrite]) -> str:
    """Apply each rewrite: at every match its function returns (replacement, end in `s`) or
    None, in which case the search goes on one character later (a name may start after a
    '-' inside a match that named nothing: foo-default/web)."""
    for rx, fn in rewrites:
        out, pos, i = [], 0, 0
        while (m := rx.search(s, i)) is not None:
            hit = fn(m)
            if hit is None:
                i = m.start() + 1
                continue
            out += [s[pos:m.start()], hit[0]]
            pos = i = max(hit[1], m.start() + 1)
        s = "".join(out) + s[pos:] if out else s
    return s


def _build_rewrites(by_kind: dict[str, list[str]], name: Callable[[str, str | None], str]) -> list[_Rewrite]:
    """The rewrites for these names, most specific first (module docstring). Candidates are
    found by their shape and looked up in sets, so the cost does not grow with the names."""
    words = natlens_words()
    ns = set(by_kind.get("ns", []))
    objects = set(by_kind.get("svc", [])) | set(by_kind.get("pod", []))
    everything = {n for names in by_kind.values() for n in names}

    def named(kind: str | None, known: set[str], group: int) -> Callable[[re.Match[str]], tuple[str, int] | None]:
        """A rewrite function: the run in `group` starts with a name of `known`."""
        def fn(m: re.Match[str]) -> tuple[str, int] | None:
            run = m.group(group)
            e = _prefix(run, known)
            if not e:
                return None
            return m.group(0)[:m.start(group) - m.start()] + name(run[:e], kind), m.start(group) + e
        return fn

    def pair(m: re.Match[str]) -> tuple[str, int] | None:
        e = _prefix(m.group(2), objects) if m.group(1) in ns else 0
        return (f"{name(m.group(1), 'ns')}/{name(m.group(2)[:e], None)}", m.start(2) + e) if e else None

    def dns(m: re.Match[str]) -> tuple[str, int] | None:
        if m.group(1) in objects and m.group(2) in ns:
            return f"{name(m.group(1), None)}.{name(m.group(2), 'ns')}.svc", m.end()
        return None

    out: list[_Rewrite] = []
    odd = [n for n in everything if not re.fullmatch(_RUN, n)]  # provider IDs: aws:///zone/i-...
    if odd:
        rx = re.compile("(" + "|".join(re.escape(n) for n in sorted(odd, key=len, reverse=True)) + ")")
        out.append((rx, lambda m: (name(m.group(1), None), m.end())))
    out.append((re.compile(rf"{_BEFORE}([a-z0-9][-a-z0-9.]*)/({_RUN})"), pair))  # default/web-local
    out.append((re.compile(rf"{_BEFORE}([a-z0-9][-a-z0-9]*)\.([a-z0-9][-a-z0-9]*)\.svc\b"), dns))
    out.append((re.compile(rf"((?:^|(?<=\s))(?:-n|--namespace)[ =]|\b[Nn]amespaces?:?\s+{_QUOTE})({_RUN})"),
                named("ns", ns, 2)))
    for kind, nouns in (("pod", "[Pp]ods?"), ("node", "[Nn]odes?"), ("svc", "[Ss]ervices?")):
        out.append((re.compile(rf"(\b{nouns}\s+{_QUOTE})({_RUN})"), named(kind, set(by_kind.get(kind, [])), 2)))
    out.append((re.compile(rf"\b(veth-)({_RUN})"), named("pod", set(by_kind.get("pod", [])), 2)))
    nodes = set(by_kind.get("node", []))
    out.append((re.compile(rf"{_BEFORE}(nodes/)?({_RUN})(?=/[A-Za-z0-9])"),
                lambda m: (m.group(0)[:m.start(2) - m.start()] + name(m.group(2), "node"), m.end())
                if m.group(2) in nodes else None))
    # A token of its own: not natlens' word, and with a letter and two characters at least (a
    # node named "7" is mapped where it is a node, never every 7 of the report).
    distinct = {n for n in everything
                if not (n.isalpha() and n.lower() in words) and len(n) > 1 and any(c.isalpha() for c in n)}
    out.append((re.compile(f"{_BEFORE}({_RUN})"), named(None, distinct, 1)))
    return out
