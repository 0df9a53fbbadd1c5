"""The one place that finds a node's files: captures and dumps in a node directory.

Why: the bundle, the netfilter loader, the inventory and the report all need "this
node's iptables dump"; when each looked for itself they disagreed (a dump in a
subfolder, a tarballed node). A node directory is searched recursively, in the
incident bundle's shape (DESIGN.md section 2) or a capture tool's (Retina:
``<name>.pcap``, ``iptables-rules.txt``, ``ip-resources.txt``). Files it does not
recognise are listed in ``not_read``, never dropped silently. No other natlens
module is imported here: every layer may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")

# The file names each dump goes by, in order of preference (capture-tool names after ours).
DUMP_NAMES: dict[str, tuple[str, ...]] = {
    "iptables": ("iptables-save.txt", "iptables-rules.txt", "iptables.txt"),
    "ip6tables": ("ip6tables-save.txt",),  # the IPv6 rules (iptables-save holds only IPv4)
    "nft": ("nft-ruleset.json", "nft-ruleset.txt"),  # nft -j list ruleset / nft list ruleset
    "ipset": ("ipset-save.txt", "ipset.txt", "ipset-list.txt"),
    "ipvsadm": ("ipvsadm.txt", "ipvsadm-save.txt"),
    "ip_addr": ("ip-addr.json", "ip-addr.txt", "ip-resources.txt"),
    "conntrack": ("conntrack.txt",),
    "ip_route": ("ip-route.json", "ip-route.txt"),  # routing: which interface MASQUERADE uses
    "collect_log": ("collect-node.log",),  # scripts/collect-node.sh: tcpdump's own counters
}
RETINA_NAMES = ("iptables-rules.txt", "ip-resources.txt")
# `iptables [-t TABLE] -S` listings, one file per table: read together when no iptables-save is there
IPTABLES_S = re.compile(r"^iptables-S(?:-(raw|mangle|nat|filter|security))?\.txt$")


def table_of(path: str | Path) -> str | None:
    """The table an ``iptables-S-<table>.txt`` file name gives, else None."""
    m = IPTABLES_S.match(Path(path).name)
    return m.group(1) if m else None


@dataclass
class NodeFiles:
    """One node directory's captures and dumps (paths; None when absent)."""

    name: str
    path: Path
    captures: list[Path] = field(default_factory=list)
    iptables: Path | None = None
    iptables_parts: list[Path] = field(default_factory=list)  # iptables -S files, when read instead
    ip6tables: Path | None = None
    nft: Path | None = None
    ipset: Path | None = None
    ipvsadm: Path | None = None
    ip_addr: Path | None = None
    conntrack: Path | None = None
    ip_route: Path | None = None
    collect_log: Path | None = None
    not_read: list[Path] = field(default_factory=list)  # files of this node natlens does not read
    # of those, the ones that are another copy of a dump natlens did read (another of its names,
    # formats or folders: nft-ruleset.txt beside nft-ruleset.json) -> (kind, the file read)
    alternates: dict[Path, tuple[str, Path]] = field(default_factory=dict)
    shape: str = "bundle"  # "bundle" | "retina"

    def dumps(self) -> dict[str, Path]:
        """The dumps present, by kind (a key of DUMP_NAMES)."""
        return {k: getattr(self, k) for k in DUMP_NAMES if getattr(self, k) is not None}


def find_node_files(path: str | Path, name: str | None = None) -> NodeFiles:
    """What one node directory holds: every file found below it, by kind.

    A dump found under several of its names, or in several folders, is taken from the
    first name in DUMP_NAMES, then the shallowest folder; the others are listed in
    ``not_read`` and, with the kind and the file read instead, in ``alternates``.
    """
    root = Path(path)
    files = sorted((p for p in root.rglob("*") if p.is_file()),
                   key=lambda p: (len(p.relative_to(root).parts), p.as_posix()))
    node = NodeFiles(name=name or root.name, path=root)
    node.captures = sorted(f for f in files if f.name.endswith(CAPTURE_SUFFIXES))
    for kind, names in DUMP_NAMES.items():
        chosen = _find(files, names)
        setattr(node, kind, chosen)
        node.alternates.update({f: (kind, chosen) for f in files
                                if chosen is not None and f != chosen and f.name in names})
    _iptables_s(node, files)
    if _find(files, RETINA_NAMES) is not None:
        node.shape = "retina"
    used = set(node.captures) | set(node.dumps().values()) | set(node.iptables_parts)
    node.not_read = sorted(f for f in files if f not in used and not hidden(f, root))
    return node


def _iptables_s(node: NodeFiles, files: list[Path]) -> None:
    """Per-table ``iptables -S`` files: the iptables dump when no iptables-save is there
    (read together, in name order), else copies of it that are not read."""
    parts = sorted((f for f in files if IPTABLES_S.match(f.name)), key=lambda f: (f.name, f.as_posix()))
    if node.iptables is not None:
        node.alternates.update({f: ("iptables", node.iptables) for f in parts})
    elif parts:
        node.iptables, node.iptables_parts = parts[0], parts


def as_node_files(node) -> NodeFiles:
    """A NodeFiles (or subclass) as it is, or a node directory's path found with find_node_files."""
    return node if isinstance(node, NodeFiles) else find_node_files(node)


def copy_fields(src: NodeFiles, cls: type[NodeFiles]) -> NodeFiles:
    """src as an instance of a NodeFiles subclass (the bundle's NodeDir)."""
    return cls(**{f.name: getattr(src, f.name) for f in fields(NodeFiles)})


def _find(files: list[Path], names: tuple[str, ...]) -> Path | None:
    for n in names:
        for f in files:
            if f.name == n:
                return f
    return None


def hidden(f: Path, root: Path) -> bool:
    """Dotfiles (.DS_Store, editor swap files) are nobody's input: never listed as not read.
    A capture or dump in a hidden folder (``.rotated/eth0.pcap``) is still read."""
    return any(part.startswith(".") for part in f.relative_to(root).parts)
