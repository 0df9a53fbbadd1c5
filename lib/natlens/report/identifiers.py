"""Every name of the customer's in an incident bundle, by kind, for the anonymizer to map.

Addresses are found by their shape wherever they are (natlens.report.anonymize);
names are not: ``web-1`` or ``payments`` look like any other word. So the names
are collected from where the bundle states them: the node directories, the
``cluster/*.json`` objects (names, namespaces, node names, host names, provider
IDs), the inventory the analysis built, and the kube-proxy comments and nftables
chain names of the rule dumps (``/* default/web-local:http */``,
``service-MW3VTDQO-default/web-local/tcp/http``), which name Services even when
the bundle has no cluster JSON. The incident's name and directory are the
remaining identifiers; `Identifiers.paths` holds the local paths to hide.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Kinds, in the order a name known under several of them is shown as (a node name
# that is also a pod's name reads as the node).
KINDS = ("node", "svc", "pod", "ns", "incident", "host", "id")

# A kube-proxy Service port name in a rule comment or a set/chain name: namespace/name[:port].
_NS_NAME = r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)/([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)"
_COMMENT_RE = re.compile(r'(?:--comment\s+"?|/\*\s*|comment\s+")' + _NS_NAME + r"(?::[\w-]+)?")
_NFT_CHAIN_RE = re.compile(r"\b(?:service|endpoint|external|local|firewall)-[A-Z0-9]{8}-" + _NS_NAME + "/")


# Names every cluster has, which identify no one's: kept as they are (natlens' own advice
# names them: "kubectl -n kube-system get daemonset").
WELL_KNOWN = frozenset({"kube-system", "kube-public", "kube-node-lease", "kubernetes"})


def is_address(value: str) -> bool:
    """Whether `value` is an IP address or network: Crypto-PAn maps those, never as a name."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@dataclass
class Identifiers:
    """The names to map (name -> kind, a key of KINDS) and the local paths to hide."""

    names: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    def add(self, kind: str, *values: Any) -> None:
        """Record each non-empty string of `values` as a name of `kind` (the first kind wins);
        an address (a node named by its IP) and a WELL_KNOWN name are not names to map."""
        for v in values:
            if (isinstance(v, str) and v.strip() and v not in self.names and v not in WELL_KNOWN
                    and not is_address(v)):
                self.names[v] = kind

    def add_path(self, *paths: str | os.PathLike[str] | None) -> None:
        """Record local paths (as given when it has a '/', and resolved) whose text must not
        be shown."""
        for p in paths:
            if p is None or str(p) in ("", ".", "/"):
                continue
            for form in (str(p), str(Path(p).resolve())):
                # A bare relative name ("mixed") is a word, not a path to look for: the
                # resolved form stands for it (the incident's name is a name, mapped as one).
                if form not in self.paths and "/" in form.strip("/"):
                    self.paths.append(form)

    def merge(self, other: Identifiers) -> Identifiers:
        """Add `other`'s names and paths to these; returns self."""
        for name, kind in other.names.items():
            self.add(kind, name)
        self.add_path(*other.paths)
        return self


def bundle_identifiers(bundle: Any, inventory: Any = None,
                       incident_dir: str | os.PathLike[str] | None = None) -> Identifiers:
    """The names of `bundle` (natlens.bundle.Bundle) and of its `inventory` when given.

    `incident_dir` is the path the user gave (it may be relative); the bundle's own
    path is added too.
    """
    ids = Identifiers()
    ids.add("node", *(n.name for n in bundle.nodes))
    _cluster_names(ids, bundle.cluster)
    if inventory is not None:
        _inventory_names(ids, inventory)
    for n in bundle.nodes:
        for f in (n.iptables, n.ip6tables, n.nft, n.ipset, n.ipvsadm, *n.iptables_parts):
            if f is not None:
                _rule_names(ids, _read_text(f))
    ids.add("incident", bundle.name, Path(bundle.path).name)
    ids.add_path(incident_dir, bundle.path)
    root = Path(bundle.path).resolve()
    # A node unpacked from a tarball lives in a temporary directory outside the bundle.
    ids.add_path(*(n.path for n in bundle.nodes if root not in Path(n.path).resolve().parents))
    return ids


def _cluster_names(ids: Identifiers, cluster: dict[str, dict]) -> None:
    """Names, namespaces, node and host names, provider IDs of the kubectl JSON objects."""
    for kind, doc in cluster.items():
        what = {"nodes": "node", "pods": "pod", "services": "svc"}.get(kind, "id")
        for item in doc.get("items") or []:
            if not isinstance(item, dict):
                continue
            meta = item.get("metadata") or {}
            spec = item.get("spec") or {}
            ids.add(what, meta.get("name"))
            ids.add("ns", meta.get("namespace"))
            labels = meta.get("labels") or {}
            ids.add("node", spec.get("nodeName"), labels.get("kubernetes.io/hostname"))
            ids.add("id", spec.get("providerID"))
            for a in (item.get("status") or {}).get("addresses") or []:
                if isinstance(a, dict) and a.get("type") in ("Hostname", "InternalDNS", "ExternalDNS"):
                    ids.add("host", a.get("address"))
            for ing in ((item.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if isinstance(ing, dict):
                    ids.add("host", ing.get("hostname"))


def _inventory_names(ids: Identifiers, inv: Any) -> None:
    """The names in the inventory's tables (natlens.inventory), inferred ones included."""
    for table, cols in ((inv.nodes, {"name": "node", "provider_id": "id"}),
                        (inv.pods, {"name": "pod", "namespace": "ns", "node": "node"}),
                        (inv.services, {"name": "svc", "namespace": "ns", "lb_hostname": "host"})):
        for col, kind in cols.items():
            if col in table.columns:
                ids.add(kind, *(v for v in table[col].dropna().unique() if isinstance(v, str)))


def _rule_names(ids: Identifiers, text: str) -> None:
    """Namespaces and Service names that kube-proxy wrote into comments and chain names."""
    for m in _COMMENT_RE.finditer(text):
        ids.add("ns", m.group(1))
        ids.add("svc", m.group(2))
    for m in _NFT_CHAIN_RE.finditer(text):
        ids.add("ns", m.group(1))
        ids.add("svc", m.group(2))


def _read_text(path: Path) -> str:
    """A dump's text; a dump natlens cannot read names nothing (the analysis reports it)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# Names so generic that they identify no one, and that natlens' own sentences use as words
# ("the default route", "the client resets it", "the server's port"): such a name is mapped
# only where it names something (default/web, -n default, a namespace or node column). Any
# other name, a plain word or not (a node "worker", a namespace "payments"), is mapped
# wherever it stands as a token, even where natlens meant the word: a garbled word is
# better than a customer's name left in the report.
PROSE_WORDS = frozenset({
    "default", "client", "clients", "server", "servers", "web", "app", "apps", "test", "demo",
    "node", "nodes", "pod", "pods", "service", "services", "local", "cluster", "proxy",
    "backend", "backends", "endpoint", "endpoints", "source", "host", "any", "none", "unknown",
    "all", "main", "echo", "nginx",
})


def natlens_words() -> frozenset[str]:
    """The words a name may also be in natlens' prose (PROSE_WORDS), lower-cased."""
    return PROSE_WORDS
