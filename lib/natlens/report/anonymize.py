"""Prefix-preserving IP address anonymization (Crypto-PAn) for reports shared outside.

Crypto-PAn (Xu, Fan, Ammar, Moon, "Prefix-preserving IP address anonymization",
ICNP 2002): bit i of the anonymized address is bit i of the original XOR the
first bit of AES_K(first i bits of the address, padded with a secret pad).
Two addresses that share a k-bit prefix therefore share a k-bit prefix after
mapping, so subnets, nodes of one VPC and the pods of one node still look
related in the report, while the real addresses are hidden.

The 32-byte key is the AES-128 key (first 16 bytes) plus the pad seed (last 16
bytes), as in the reference implementation. The same key gives the same mapping,
across reports too. IPv6 uses the same construction over 128 bits.

`Anonymizer` rewrites every IP address found inside free text (rule traces,
node names such as ``ip-10-0-1-5``, "VIP:port/proto" labels), and, given the
bundle's identifiers (natlens.report.identifiers), its node, pod, namespace,
Service and incident names, local paths, MAC addresses and kube-proxy's chain
hashes with keyed pseudonyms under the same key (natlens.report.pseudonyms). It
drops the columns whose content comes from packet payloads.

Beyond the report's data: `anonymized_analysis` maps an Analysis for
``natlens analyze --out --anonymize``; `scrub_notebook`, `scrub_log` and
`scrub_summary` map what papermill and the kernel left in the report directory.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from natlens.report.identifiers import Identifiers, bundle_identifiers
from natlens.report.pseudonyms import Pseudonyms

# Columns whose values are derived from packet payloads: dropped when anonymizing,
# since no address mapping can make them safe (Host headers, SNI, URLs, DNS names...).
PAYLOAD_COLUMNS = frozenset({
    "payload", "payload_text", "payload_hash", "http_host", "http_uri", "http_method",
    "user_agent", "sni", "server_name", "dns_query", "query", "host_header", "uri",
    "orig_hash", "resp_hash",
})

_V4 = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
# An IPv4 address (optionally /prefix) not glued to other letters, digits or dots-with-digits;
# an underscore may touch it (kube-proxy's nftables chain names: endpoint-X-ns/svc/tcp/p__10.0.1.5/8080).
_V4_RE = re.compile(rf"(?<![0-9A-Za-z.])({_V4})(?:/(\d{{1,2}}))?(?![0-9A-Za-z]|\.\d)")
# Candidate IPv6 text; validated with ipaddress before it is mapped.
_V6_RE = re.compile(r"(?<![0-9A-Za-z:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|" + _V4
                    + r")?)(?:/(\d{1,3}))?(?![0-9A-Za-z:])")
# Cloud host names that spell the address with dashes: ip-10-0-1-5, 10-0-1-5.
_DASHED_RE = re.compile(r"(?<![\w-])(ip-)?(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(?![\d-]\d)")


class CryptoPAn:
    """The Crypto-PAn mapping for one 32-byte key; `anonymize` maps one address."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("Crypto-PAn key must be 32 bytes (AES-128 key + pad seed)")
        self._cipher = Cipher(algorithms.AES(key[:16]), modes.ECB())
        self._pad = int.from_bytes(self._aes(key[16:]), "big")
        self._cache: dict[str, str] = {}

    def _aes(self, blocks: bytes) -> bytes:
        enc = self._cipher.encryptor()
        return enc.update(blocks) + enc.finalize()

    def anonymize_int(self, addr: int, bits: int) -> int:
        """Map an address given as an integer of `bits` (32 or 128) bits."""
        # One AES block per address bit, built for all bits at once and encrypted
        # in one call: block i = first i address bits, then the pad's bits.
        blocks = bytearray()
        shift = 128 - bits
        full = (1 << 128) - 1
        for i in range(bits):
            keep = (full << (128 - i)) & full  # top i bits
            block = ((addr << shift) & keep) | (self._pad & ~keep & full)
            blocks += block.to_bytes(16, "big")
        out = self._aes(bytes(blocks))
        flips = 0
        for i in range(bits):
            flips |= (out[16 * i] >> 7) << (bits - 1 - i)
        return addr ^ flips

    def anonymize(self, address: str) -> str:
        """Map one IPv4/IPv6 address given as text; raises ValueError on non-addresses."""
        hit = self._cache.get(address)
        if hit is not None:
            return hit
        ip = ipaddress.ip_address(address)
        bits = 32 if ip.version == 4 else 128
        mapped = str(ipaddress.ip_address(self.anonymize_int(int(ip), bits)) if bits == 32
                     else ipaddress.IPv6Address(self.anonymize_int(int(ip), bits)))
        self._cache[address] = mapped
        return mapped


def new_key() -> bytes:
    """A fresh random 32-byte Crypto-PAn key."""
    return os.urandom(32)


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file: 32 raw bytes or 64 hex characters."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == 32:
        return data
    raise ValueError(f"{path}: a Crypto-PAn key is 32 raw bytes or 64 hex characters")


# Columns and keys whose whole value is a name: mapped as a name even when it is a common
# word (a pod "client" in a ``pod`` column); any other string is rewritten as text.
_NAME_FIELD = re.compile(r"(?:^|_)(?:nodes?|pods?|namespaces?|ns|names?|incident|hostname|provider_id|backend)"
                         r"(?:$|_)")  # lb_backend: the node the load balancer chose


# The options of natlens' commands whose value is a path, and those whose value is data (a
# Service, a time, a number): in a command line, any other value is the incident's path.
_PATH_OPTIONS = frozenset({"--out", "--notebook", "--key-file"})
# (--scheduler is neither: its host is mapped as a path is, to a pseudonym)
_VALUE_OPTIONS = frozenset({"--service", "--start", "--end", "--jobs", "--workers", "--cell-timeout"})


class Anonymizer:
    """Maps one incident's identifiers under one key, consistently, in text, records and tables.

    Addresses with Crypto-PAn; node, pod, namespace, Service and incident names, local
    paths, MAC addresses and kube-proxy's name-derived chain hashes with keyed pseudonyms
    (natlens.report.pseudonyms), given the identifiers of the bundle (`ids`, from
    natlens.report.identifiers.bundle_identifiers). Without `ids` only addresses, MACs and
    chain hashes are mapped: names are only known from the bundle.
    """

    def __init__(self, key: bytes, ids: Identifiers | None = None):
        self.pan = CryptoPAn(key)
        self.names = Pseudonyms(key, ids)

    def learn(self, ids: Identifiers) -> None:
        """Add identifiers (names, paths) to map from now on."""
        self.names.learn(ids)

    def ip(self, address: str) -> str:
        """One address, mapped."""
        return self.pan.anonymize(address)

    def text(self, s: str) -> str:
        """Rewrite every identifier inside `s`: names and paths, chain hashes, MACs, then every
        IP address (and CIDR, and dashed host name)."""
        if not s:
            return s
        s = self.names.macs(self.names.hashes(self.names.names(s)))
        if not any(c.isdigit() for c in s):
            return s
        s = _V4_RE.sub(self._sub_cidr, s)
        if ":" in s:
            s = _V6_RE.sub(self._sub_v6, s)
        if "-" in s:
            s = _DASHED_RE.sub(self._sub_dashed, s)
        return s

    def _sub_cidr(self, m: re.Match[str]) -> str:
        addr, plen = m.group(1), m.group(2)
        mapped = self.pan.anonymize(addr)
        if plen is None:
            return mapped
        bits = 32 if "." in addr and ":" not in addr else 128
        if int(plen) > bits:
            return f"{mapped}/{plen}"
        # Prefix-preserving: the mapped network is the mapped address masked again.
        return str(ipaddress.ip_network(f"{mapped}/{plen}", strict=False))

    def _sub_v6(self, m: re.Match[str]) -> str:
        cand = m.group(1)
        try:
            ip = ipaddress.IPv6Address(cand)
        except ValueError:
            return m.group(0)
        mapped = self.pan.anonymize(str(ip))
        plen = m.group(2)
        if plen is None:
            return mapped
        if int(plen) > 128:
            return f"{mapped}/{plen}"
        return str(ipaddress.ip_network(f"{mapped}/{plen}", strict=False))

    def _sub_dashed(self, m: re.Match[str]) -> str:
        octets = m.group(2, 3, 4, 5)
        if any(int(o) > 255 for o in octets):
            return m.group(0)
        mapped = self.pan.anonymize(".".join(octets)).replace(".", "-")
        return (m.group(1) or "") + mapped

    def value(self, v: Any, key: Any = None) -> Any:
        """Rewrite a JSON-like value (str, list, dict, nested) recursively; `key` is the
        dict key or column it sits under (a name field maps a whole known name)."""
        if isinstance(v, str):
            hit = self.names.exact(v) if isinstance(key, str) and _NAME_FIELD.search(key) else None
            return hit or self.text(v)
        if isinstance(v, dict):
            by_name = isinstance(key, str) and _NAME_FIELD.search(key) is not None  # by_node: {node: n}
            return {self._key(k, by_name): self.value(x, k if isinstance(k, str) else key)
                    for k, x in v.items() if not (isinstance(k, str) and k in PAYLOAD_COLUMNS)}
        if isinstance(v, (list, tuple)):
            return type(v)(self.value(x, key) for x in v)
        return v

    def _key(self, k: Any, by_name: bool) -> Any:
        """A dict key mapped: as a whole name under a name field (by_node), else as text."""
        if not isinstance(k, str):
            return k
        return (self.names.exact(k) if by_name else None) or self.text(k)

    def params(self, p: dict[str, Any]) -> dict[str, Any]:
        """Report parameters (and the like: a command line) with every identifier mapped,
        absolute paths included, whatever the key."""
        def one(v: Any) -> Any:
            """One parameter value, recursively."""
            if isinstance(v, str) and v.startswith("natlens "):
                return self.command(v)
            if isinstance(v, str) and v.startswith("natlens.report."):  # build_report('dir', ...)
                return self._python_call(v)
            if isinstance(v, str):
                return self.text(self.names.absolute_paths(v))
            if isinstance(v, (list, tuple)):
                return type(v)(one(x) for x in v)
            if isinstance(v, dict):
                return {k: one(x) for k, x in v.items()}
            return v
        return {k: one(v) for k, v in p.items()}

    def command(self, line: str) -> str:
        """A command line with nothing of the user's in it: every path (relative ones too, which
        name the customer as often as absolute ones: `--out acme-out`) becomes its pseudonym, a
        key file FILE; options and Services and times (mapped as text) stay readable."""
        import shlex

        try:
            words = shlex.split(line)
        except ValueError:  # an unbalanced quote: map it as text, paths and all
            return self.text(self.names.absolute_paths(line))
        out, before = [], ""
        for w in words:
            if before == "--key-file":
                out.append("FILE")
            elif w.startswith("-") or not out or (out == ["natlens"] and w.isalpha()):
                out.append(w)  # the program, the subcommand, an option
            elif before in _PATH_OPTIONS or before not in _VALUE_OPTIONS:
                out.append(self._argument(w, path=True))
            else:
                out.append(self.text(self.names.absolute_paths(w)))
            before = w if w.startswith("-") else ""
        return shlex.join(out)

    def _python_call(self, call: str) -> str:
        """`natlens.report.build_report('dir', 'out', services=[...])` with its paths (the
        positional arguments, out_dir, notebook) as pseudonyms, the key file FILE and the
        Services and times mapped as text."""
        import ast

        try:
            tree = ast.parse(call, mode="eval")
        except SyntaxError:
            return self.text(self.names.absolute_paths(call))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for a in node.args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                    a.value = self._argument(a.value, path=True)
            for kw in node.keywords:
                for c in ast.walk(kw.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        c.value = ("FILE" if kw.arg == "key_file" else
                                   self._argument(c.value, path=kw.arg in ("out_dir", "notebook", "incident_dir")))
        return ast.unparse(tree)

    def _argument(self, w: str, path: bool = False) -> str:
        """One argument of a command: a path (`path`, or with a '/') as its pseudonym, a known
        name as its name's, else mapped as text (a Service, a time)."""
        base = w.rstrip("/").rsplit("/", 1)[-1]
        if self.names.ids.names.get(base) == "incident":  # the bundle, however the user named its path
            return self.names.name(base, "incident")
        if w in self.names.ids.names:
            return self.names.name(w, self.names.ids.names[w])
        mapped = self.text(w)  # a Service's ns/name, an address
        if path or ("/" in w and mapped == w):
            return self.names.path(w)
        return mapped

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """A copy of `df` with payload-derived columns dropped and every string mapped."""
        out = df.drop(columns=[c for c in df.columns if str(c) in PAYLOAD_COLUMNS])
        out = out.copy()
        for col in out.columns:
            s = out[col]
            if not (pd.api.types.is_string_dtype(s.dtype) or s.dtype == object):
                continue
            try:
                uniq = pd.unique(s.dropna())
            except TypeError:  # unhashable cells (lists of hops...): map one by one
                out[col] = s.map(lambda x, c=str(col): self.value(x, c))
                continue
            mapping = {u: self.value(u, str(col)) for u in uniq}
            if any(mapping[u] != u for u in uniq):
                mapped = s.map(mapping)
                out[col] = mapped.astype(s.dtype) if s.dtype != object else mapped
        out.index = out.index.map(lambda x: self.text(x) if isinstance(x, str) else x)
        return out

    def frames(self, dfs: Iterable[pd.DataFrame]) -> list[pd.DataFrame]:
        """Each of `dfs` mapped (see `frame`)."""
        return [self.frame(df) for df in dfs]


def bundle_anonymizer(key: bytes, incident_dir: str | os.PathLike[str], *, bundle: Any = None,
                      inventory: Any = None, paths: Iterable[str | os.PathLike[str]] = ()) -> Anonymizer:
    """An Anonymizer that knows every identifier of the bundle at `incident_dir` (read here
    unless `bundle` is given) and hides `paths` (an output directory...) too."""
    if bundle is None:
        from natlens.bundle import load_bundle  # noqa: PLC0415

        bundle = load_bundle(incident_dir)
    ids = bundle_identifiers(bundle, inventory, incident_dir)
    ids.add_path(*paths)
    return Anonymizer(key, ids)


def anonymized_analysis(a: Any, anonymizer: Anonymizer) -> Any:
    """A copy of the Analysis `a` for writing and printing: every table mapped, the summary
    mapped once (its `summary()` returns it), the lists of text mapped.

    Why a copy and not a mapping inside Analysis.write: whatever write() (or anything else
    given the copy) writes is then anonymized, whichever files it learns to write. The copy
    holds no per-packet detail (`journey_hops` is not available on it).
    """
    summary = anonymizer.value(a.summary())
    b = copy.copy(a)
    for f in dataclasses.fields(a):
        v = getattr(a, f.name)
        if isinstance(v, pd.DataFrame):
            setattr(b, f.name, anonymizer.frame(v))
    b.incident = summary.get("incident", anonymizer.value(a.incident, "incident"))
    b.inputs = anonymizer.value(a.inputs)
    b.inferred = [anonymizer.text(x) for x in a.inferred]
    b.warnings = [anonymizer.text(x) for x in a.warnings]
    b.verdict = anonymizer.value(a.verdict)
    b._hops = {}
    b.summary = lambda: summary  # the mapped summary.json, whatever the copy's fields say
    return b


# Notebook output types that hold encoded bytes, never text to map.
_BINARY = ("image/png", "image/jpeg", "image/gif", "application/pdf")


def scrub_notebook(path: str | os.PathLike[str], anonymizer: Anonymizer) -> None:
    """Map what papermill wrote into an executed notebook from the raw parameters.

    Papermill records the parameters (the incident's path, the output directory, the
    Services' addresses) in ``metadata.papermill`` and in the injected-parameters cell,
    and the notebooks' own paths as input_path/output_path. Those are mapped in full
    (they are raw values); every other string (cell outputs come from the anonymized
    ReportData already) only gets the idempotent name and path mapping, so no address is
    mapped twice. input_path/output_path keep the notebook's file name only.
    """
    p = Path(path)
    nb = json.loads(p.read_text(encoding="utf-8"))
    raw = lambda s: anonymizer.text(anonymizer.names.absolute_paths(s))  # noqa: E731
    pm = (nb.get("metadata") or {}).get("papermill")
    if isinstance(pm, dict):
        if isinstance(pm.get("parameters"), dict):
            pm["parameters"] = anonymizer.params(pm["parameters"])
        for k in ("input_path", "output_path"):
            if isinstance(pm.get(k), str):
                pm[k] = Path(pm[k]).name
    params = pm.get("parameters") if isinstance(pm, dict) else None
    for cell in nb.get("cells") or []:
        if "injected-parameters" not in ((cell.get("metadata") or {}).get("tags") or []):
            continue
        if isinstance(params, dict):  # written again from the mapped parameters: a command line's
            cell["source"] = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
        else:  # relative paths are then mapped as the parameters are, not as free text
            cell["source"] = _map_strings(cell.get("source", ""), raw)
    nb = _map_strings(nb, anonymizer.names.names)
    tmp = p.with_suffix(".ipynb.tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)


def scrub_log(path: str | os.PathLike[str], anonymizer: Anonymizer) -> None:
    """Map the names and every absolute path in a report's log (papermill names the
    notebooks and the working directory; cell outputs are anonymized already)."""
    p = Path(path)
    if not p.is_file():
        return
    text = p.read_text(encoding="utf-8", errors="replace")
    p.write_text("".join(anonymizer.names.absolute_paths(line) for line in text.splitlines(True)),
                 encoding="utf-8")


def scrub_summary(path: str | os.PathLike[str], anonymizer: Anonymizer) -> None:
    """Map the names and known paths left in a summary.json (the report's own is mapped
    already and stays as it is: this mapping is idempotent; a notebook of the user's own
    may have written the incident's name)."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return  # not JSON: the run's check reports what the notebook wrote
    mapped = _map_strings(doc, anonymizer.names.names)
    if mapped != doc:
        p.write_text(json.dumps(mapped, indent=2) + "\n", encoding="utf-8")


def _map_strings(v: Any, fn: Any) -> Any:
    """Every string inside a JSON value through `fn`, encoded outputs (images) left alone."""
    if isinstance(v, str):
        return fn(v)
    if isinstance(v, list):
        return [_map_strings(x, fn) for x in v]
    if isinstance(v, dict):
        return {k: x if k in _BINARY else _map_strings(x, fn) for k, x in v.items()}
    return v
