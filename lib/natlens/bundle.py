"""Reading an incident directory (DESIGN.md section 2): nodes, captures, dumps, cluster JSON.

    b = load_bundle("incidents/2024-05-01-checkout")
    b.nodes[0].captures        # [Path(.../eth0.pcap), Path(.../any.pcapng)]
    b.cluster["services"]      # parsed kubectl JSON, or absent

A node directory may also have the shape of a capture tool's tarball (Retina:
``<name>.pcap``, ``iptables-rules.txt``, ``ip-resources.txt``), unpacked or as
``nodes/<node>.tar.gz``: both are accepted. Bad input raises NatlensError naming
the file and the place. A file natlens does not read (not a capture, a known dump or
kubectl JSON) is listed in ``Bundle.not_read`` with the reason, never silently dropped.
Which file of a node is which dump is natlens.nodefiles' decision (the only one);
``NodeDir.rules()`` reads the node's netfilter model once for every user.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from natlens import netfilter
from natlens.errors import NatlensError, require_dir
from natlens.netfilter.nft import parse_nft
from natlens.netfilter.node import Address, NodeRules, read_ip_addr, read_ip_links
from natlens.nodefiles import CAPTURE_SUFFIXES, NodeFiles, copy_fields, find_node_files, hidden

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CLUSTER_KINDS = ("nodes", "pods", "services")


@dataclass
class NodeDir(NodeFiles):
    """One node of the incident: its files (natlens.nodefiles) and what is read from them once."""

    _rules: object = field(default=None, repr=False, compare=False)

    def addresses(self) -> list[Address]:
        """Interface addresses from ip-addr.json / ip-addr.txt / ip-resources.txt ([] if none)."""
        if self.ip_addr is None:
            return []
        return parse_ip_addr(self.ip_addr)

    def ifnames(self) -> dict[int, str]:
        """Interface index -> name, to name the interfaces of an SLL2 `any` capture (every link
        of the ip addr dump, with or without an address)."""
        if self.ip_addr is None:
            return {}
        return read_ip_links(self.ip_addr.read_text(encoding="utf-8", errors="replace"),
                             str(self.ip_addr))

    def rules(self) -> NodeRules:
        """The node's netfilter model, read once and shared by the inventory, the SNAT table
        and the report. NatlensError when there is no iptables dump or it cannot be read
        (raised again on every call, never a half-read model)."""
        if self._rules is None:
            try:
                self._rules = netfilter.load_node(self)
            except NatlensError as exc:
                self._rules = exc
        if isinstance(self._rules, NatlensError):
            raise self._rules
        return self._rules


@dataclass
class Bundle:
    path: Path
    name: str
    incident: dict
    cluster: dict[str, dict]
    nodes: list[NodeDir]
    ground_truth: Path | None = None
    not_read: list[tuple[str, str]] = field(default_factory=list)  # (bundle-relative path, why)

    def node(self, name: str) -> NodeDir:
        """The node of that name (KeyError if the bundle has none)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def display_path(self, node: NodeDir, f: Path) -> str:
        """A node's file as messages and summary.json name it: bundle-relative, or
        ``nodes/<node> (tarball)/<file>`` for a file unpacked from a node tarball."""
        return node_file_path(self.path, node, f)


def node_file_path(root: Path, node: NodeDir, f: Path) -> str:
    """f of node, relative to the bundle root (see Bundle.display_path)."""
    where = relpath(root, node.path) if node.path.is_relative_to(root) else f"nodes/{node.name} (tarball)"
    return f"{where}/{f.relative_to(node.path).as_posix()}"


def require_captures(bundle: Bundle) -> None:
    """Raise NatlensError when no node of the bundle has a capture: there is nothing to analyse."""
    if not any(n.captures for n in bundle.nodes):
        where = bundle.path / "nodes" if (bundle.path / "nodes").is_dir() else bundle.path
        raise NatlensError(f"no captures ({', '.join('*' + s for s in CAPTURE_SUFFIXES)}) in any "
                           "nodes/<node>/ directory: nothing to analyse", path=str(where))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NatlensError(f"invalid JSON: {exc.msg}", path=str(path), where=str(exc.lineno)) from None
    except UnicodeDecodeError:
        raise NatlensError("not a text file", path=str(path)) from None


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise NatlensError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                           where=None if line is None else str(line + 1)) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise NatlensError("incident.yaml must be a mapping (title, window, notes, services)",
                           path=str(path), where="1")
    return doc


_unpacked: list[str] = []


def _cleanup() -> None:
    for d in _unpacked:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def _unpack(tarball: Path) -> Path:
    """Unpack a capture tool's node tarball into a private temporary directory."""
    dest = tempfile.mkdtemp(prefix="natlens-node-")
    _unpacked.append(dest)
    try:
        with tarfile.open(tarball) as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise NatlensError(f"cannot unpack node tarball: {exc}", path=str(tarball)) from None
    root = Path(dest)
    # a tarball holding one directory: use that directory
    entries = list(root.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        root = entries[0]
    return root


_TCPDUMP_STATS = re.compile(r"tcpdump -i (\S+): .*?(\d+) packets? dropped by kernel")


def capture_drops(node: NodeDir) -> dict[str, int]:
    """Packets tcpdump said it dropped, per capture point, from the node's collect-node.log
    (scripts/collect-node.sh and the lab write tcpdump's closing counters there)."""
    if node.collect_log is None:
        return {}
    drops: dict[str, int] = {}
    for line in node.collect_log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TCPDUMP_STATS.search(line)
        if m:
            drops[m.group(1)] = drops.get(m.group(1), 0) + int(m.group(2))
    return drops


def load_node(path: Path, name: str | None = None) -> NodeDir:
    """One node directory (bundle shape or a capture tool's shape)."""
    return copy_fields(find_node_files(path, name), NodeDir)


def relpath(root: Path, f: Path) -> str:
    """f relative to root (posix) for messages and notes; f itself when outside root (a tarball's)."""
    try:
        return f.relative_to(root).as_posix()
    except ValueError:
        return str(f)


def load_bundle(path: str | Path) -> Bundle:
    """Read the layout of an incident directory; captures are read later, one by one."""
    root = require_dir(path, "incident")
    incident = _read_yaml(root / "incident.yaml") if (root / "incident.yaml").is_file() else {}
    cluster: dict[str, dict] = {}
    cdir = root / "cluster"
    for kind in CLUSTER_KINDS:
        f = cdir / f"{kind}.json"
        if f.is_file():
            doc = _read_json(f)
            if not isinstance(doc, dict) or not isinstance(doc.get("items", []), list):
                raise NatlensError("expected kubectl JSON with an \"items\" list", path=str(f), where="1")
            cluster[kind] = doc
    nodes: list[NodeDir] = []
    not_read: list[tuple[str, str]] = []
    ndir = root / "nodes"
    if ndir.is_dir():
        for p in sorted(ndir.iterdir()):
            if p.is_dir():
                nodes.append(load_node(p))
            elif p.name.endswith(TARBALL_SUFFIXES):
                stem = p.name
                for suf in TARBALL_SUFFIXES:
                    if stem.endswith(suf):
                        stem = stem[: -len(suf)]
                        break
                nodes.append(load_node(_unpack(p), name=stem))
            elif not hidden(p, ndir):
                not_read.append((relpath(root, p), "in nodes/ but neither a node directory nor a node tarball"))
    if not nodes and not cluster:
        raise NatlensError("not an incident bundle: no nodes/<node>/ directories and no cluster/*.json",
                           path=str(root))
    for n in nodes:
        not_read += [(node_file_path(root, n, f), _why_not_read(root, n, f)) for f in n.not_read]
    if cdir.is_dir():
        not_read += [(relpath(root, f), f"cluster/ holds only {', '.join(k + '.json' for k in CLUSTER_KINDS)}")
                     for f in sorted(cdir.rglob("*"))
                     if f.is_file() and not hidden(f, cdir) and f.name not in {k + ".json" for k in CLUSTER_KINDS}]
    known_top = {"incident.yaml", "cluster", "nodes", "ground-truth"}
    not_read += [(p.name, "not part of an incident bundle (incident.yaml, cluster/, nodes/)")
                 for p in sorted(root.iterdir()) if p.name not in known_top and not p.name.startswith(".")]
    gt = root / "ground-truth"
    return Bundle(path=root, name=str(incident.get("title") and root.name or root.name),
                  incident=incident, cluster=cluster, nodes=nodes,
                  ground_truth=gt if gt.is_dir() else None, not_read=not_read)


def _why_not_read(root: Path, node: NodeDir, f: Path) -> str:
    """Why a node's file was not read: not a capture or a known dump, or another copy of a dump
    that was read (said so with the file read, so that nothing reads as lost)."""
    if f not in node.alternates:
        return "not a capture (.pcap/.pcapng/.cap) or a dump natlens reads"
    kind, chosen = node.alternates[f]
    read = node_file_path(root, node, chosen)
    if kind == "nft" and f.suffix != chosen.suffix:
        return nft_twin(f, chosen, read)
    return f"another copy of the {kind} dump: natlens read {read} (the preferred name, or the shallowest folder)"


def nft_twin(f: Path, chosen: Path, read: str) -> str:
    """The reason for an nft dump in the other format (``nft list ruleset`` beside ``nft -j list
    ruleset``): the same rule set, read from the JSON, when both hold the same tables, chains,
    rules and set elements (``_nft_shape``); else the first table where they differ."""
    try:
        ra, rb = (parse_nft(x.read_text(errors="replace"), str(x)) for x in (chosen, f))
    except Exception as exc:  # noqa: BLE001 - a file natlens does not read must not stop the analysis
        # (the one read is parsed again by the netfilter model, where an error does surface)
        return f"the nft rule set in the other format; natlens read {read} (the two could not be compared: {exc})"
    managed = {k for r in (ra, rb) for k, t in r.tables.items() if t.managed_by}
    a, b = _nft_shape(ra, managed), _nft_shape(rb, managed)
    if a == b:
        return (f"the same nft rule set as {read}, in the other format (the same tables, chains, rules and "
                "set elements); natlens read the JSON")
    diff = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    return (f"the nft rule set in the other format; natlens read {read}, and the two differ in table "
            f"{diff[0]} {diff[1]} (listed at different times?)")


def _nft_shape(rs, managed: set) -> dict:
    """An nft dump's tables as comparable values: chains with their hook, priority, policy and
    rules, sets with their elements. Counters are left out (they change between two listings);
    of iptables-nft's tables only the chains and their rule counts (the JSON shows their
    matches and targets as opaque xt statements, the text as nft syntax; natlens reads those
    rules from the iptables dump); ``managed``: those tables, as either dump marks them."""

    def rules(t, ch) -> object:
        if (t.family, t.name) in managed:
            return len(ch.rules)
        return [json.dumps([x for x in r.expr if not (isinstance(x, dict) and "counter" in x)], sort_keys=True)
                for r in ch.rules]
    return {k: ({c: (ch.type, ch.hook, ch.prio, ch.policy, rules(t, ch)) for c, ch in t.chains.items()},
                {n: (st.key, st.data, sorted(json.dumps([e.key, e.value], sort_keys=True) for e in st.elements))
                 for n, st in t.sets.items()})
            for k, t in rs.tables.items()}


def parse_ip_addr(path: Path) -> list[Address]:
    """``ip -j addr`` JSON, ``ip -o addr`` or plain ``ip addr`` text -> addresses."""
    return read_ip_addr(path.read_text(errors="replace"), str(path))
