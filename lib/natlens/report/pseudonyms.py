"""Keyed pseudonyms for names, paths, MAC addresses and kube-proxy's name-derived hashes.

Why: Crypto-PAn hides addresses, but a report also names the customer's nodes,
pods, namespaces, Services and incident, holds local paths and can show MAC
addresses. Each is replaced by a readable pseudonym made with HMAC-SHA256 under
the same 32-byte key as the addresses (``node-7f3a09c1``, ``pod-...``, ``ns-...``,
``svc-...``, ``incident-...``, ``path-...``), so one ``--key-file`` gives the same
pseudonym in every report, every run and every incident, and a different key a
different one. The pseudonym's hex part depends on the name alone, so a name
counted as a pod in one bundle and a node in another keeps its hex part.

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

from natlens.report.identifiers import Identifiers, natlens_words

PREFIX = {"node": "node", "svc": "svc", "pod": "pod", "ns": "ns", "incident": "incident",
          "host": "host", "id": "id", "path": "path"}
_HEX = 8  # hex digits of a pseudonym: 32 bits, collisions unlikely below tens of thousands of names

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


def _alt(names: Iterable[str]) -> str:
    """A regex alternation of `names`, longest first (so ``web-10`` wins over ``web-1``)."""
    return "|".join(re.escape(n) for n in sorted(set(names), key=lambda n: (-len(n), n)))


class Pseudonyms:
    """The name, path, MAC and chain-hash mapping of one key over one set of identifiers."""

    def __init__(self, key: bytes, ids: Identifiers | None = None):
        self._key = key
        self.ids = Identifiers()
        self._rewrites: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
        self.learn(ids or Identifiers())

    def learn(self, ids: Identifiers) -> None:
        """Add identifiers (a bundle's, the report's paths) and rebuild the rewrites."""
        self.ids.merge(ids)
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
        return f"path-{self.digest('path', value).hex()[:_HEX]}"

    def names(self, s: str) -> str:
        """`s` with the known local paths and every identifying use of a known name replaced.

        Idempotent: a pseudonym is never a known name, so text already mapped is kept.
        """
        for p in sorted(self.ids.paths, key=len, reverse=True):
            if p in s:
                s = re.sub(re.escape(p) + r"(?![\w.-])", lambda _m, p=p: self.path(p), s)
        for rx, fn in self._rewrites:
            s = rx.sub(fn, s)
        return s

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


def _build_rewrites(by_kind: dict[str, list[str]], name: Callable[[str, str | None], str],
                    ) -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
    """The regex rewrites for these names, most specific first (module docstring)."""
    words = natlens_words()
    ns, nodes = by_kind.get("ns", []), by_kind.get("node", [])
    objects = by_kind.get("svc", []) + by_kind.get("pod", [])
    out: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
    if ns and objects:  # default/web-local, endpoint-X-default/web-local/tcp/http
        out.append((re.compile(f"{_BEFORE}({_alt(ns)})/({_alt(objects)}){_AFTER}"),
                    lambda m: f"{name(m.group(1), 'ns')}/{name(m.group(2), None)}"))
        out.append((re.compile(rf"\b({_alt(objects)})\.({_alt(ns)})\.svc\b"),
                    lambda m: f"{name(m.group(1), None)}.{name(m.group(2), 'ns')}.svc"))
    if ns:  # kubectl -n default, --namespace=default, namespace "default"
        out.append((re.compile(rf"((?:^|\s)(?:-n|--namespace)[ =]|\b[Nn]amespaces?:?\s+[\"'`]?)({_alt(ns)}){_AFTER}"),
                    lambda m: m.group(1) + name(m.group(2), "ns")))
    for kind, nouns in (("pod", "[Pp]ods?"), ("node", "[Nn]odes?"), ("svc", "[Ss]ervices?")):
        if by_kind.get(kind):
            out.append((re.compile(rf"(\b{nouns}\s+[\"'`]?)({_alt(by_kind[kind])}){_AFTER}"),
                        lambda m, k=kind: m.group(1) + name(m.group(2), k)))
    if by_kind.get("pod"):  # an interface named after its pod (veth-client)
        out.append((re.compile(rf"\b(veth-)({_alt(by_kind['pod'])}){_AFTER}"),
                    lambda m: m.group(1) + name(m.group(2), "pod")))
    if nodes:  # nodes/worker/any.pcap, worker/any (a capture's label)
        out.append((re.compile(rf"{_BEFORE}(nodes/)?({_alt(nodes)})(?=/[A-Za-z0-9])"),
                    lambda m: (m.group(1) or "") + name(m.group(2), "node")))
    distinct = [n for n in (n for names in by_kind.values() for n in names)
                if not (n.isalpha() and n.lower() in words)]
    if distinct:
        out.append((re.compile(f"{_BEFORE}({_alt(distinct)}){_AFTER}"), lambda m: name(m.group(1), None)))
    return out
