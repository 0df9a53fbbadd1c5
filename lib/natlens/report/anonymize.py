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

`Anonymizer` also rewrites every IP address found inside free text (rule traces,
node names such as ``ip-10-0-1-5``, "VIP:port/proto" labels) and drops the
columns whose content comes from packet payloads.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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


class Anonymizer:
    """Applies one Crypto-PAn mapping to text, records and tables, consistently."""

    def __init__(self, key: bytes):
        self.pan = CryptoPAn(key)

    def ip(self, address: str) -> str:
        return self.pan.anonymize(address)

    def text(self, s: str) -> str:
        """Rewrite every IP address (and CIDR, and dashed host name) inside `s`."""
        if not s or not any(c.isdigit() for c in s):
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

    def value(self, v: Any) -> Any:
        """Rewrite a JSON-like value (str, list, dict, nested) recursively."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(x)
                    for k, x in v.items() if not (isinstance(k, str) and k in PAYLOAD_COLUMNS)}
        if isinstance(v, (list, tuple)):
            return type(v)(self.value(x) for x in v)
        return v

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
                out[col] = s.map(self.value)
                continue
            mapping = {u: self.value(u) for u in uniq}
            if any(mapping[u] != u for u in uniq):
                mapped = s.map(mapping)
                out[col] = mapped.astype(s.dtype) if s.dtype != object else mapped
        out.index = out.index.map(lambda x: self.text(x) if isinstance(x, str) else x)
        return out

    def frames(self, dfs: Iterable[pd.DataFrame]) -> list[pd.DataFrame]:
        return [self.frame(df) for df in dfs]

