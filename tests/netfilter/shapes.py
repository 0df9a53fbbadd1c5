"""The kube-proxy dump corpus in tests/netfilter/shapes/: one directory per release shape.

Each directory holds what a node running that kube-proxy release leaves: iptables-save.txt
(and ipset-save.txt, ipvsadm.txt in IPVS mode), written from the release's kube-proxy
source with the lab's addresses. manifest.json says per shape which release and source
file it was written from, the expected ``natlens explain --services`` rows, and a few
documented first packets with what the release's rules do with them.

    for shape in load_shapes():
        node = shape.node()                 # NodeRules from the shape's files
        shape.rows, shape.packets           # the manifest's expectations
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from natlens.netfilter import NodeRules, load_files

SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
MANIFEST = SHAPES_DIR / "manifest.json"

Row = tuple[str, str, int, str, str]  # (kind, vip, port, proto, policy)


@dataclass(frozen=True)
class Packet:
    """A documented first packet and what the release's rules do with it."""

    name: str
    src: str
    dst: str
    dport: int
    proto: str
    local: bool                 # generated on the node (a hostNetwork process)
    outcome: str                # every path's: forwarded, sent out, delivered locally, dropped
    dnat: tuple[str, ...]       # every endpoint some path is DNATed to (sorted; empty: none)
    snat: bool | None           # every path's SNAT; None: not checked (a dropped packet)
    affinity: bool = False      # the walk must fork on -m recent (a returning and a new client)
    nfacct: bool = False        # the path passes a -m nfacct rule
    why: str = ""


@dataclass(frozen=True)
class Shape:
    name: str
    release: str
    mode: str                   # iptables or ipvs
    sources: tuple[dict, ...]
    covers: str
    files: tuple[str, ...]
    local_ips: tuple[str, ...]
    kernel_needs: tuple[str, ...]
    rows: tuple[Row, ...]
    packets: tuple[Packet, ...] = field(default=())

    @property
    def dir(self) -> Path:
        return SHAPES_DIR / self.name

    def path(self, name: str) -> str | None:
        p = self.dir / name
        return str(p) if p.is_file() else None

    def text(self, name: str) -> str:
        p = self.dir / name
        return p.read_text() if p.is_file() else ""

    def node(self, local_ips: list[str] | None = None) -> NodeRules:
        """The shape's dumps as a node: its iptables-save, ipset and ipvsadm files, and the node
        addresses of the manifest (no ip addr dump: IPVS virtual addresses come from the dumps)."""
        return load_files(self.path("iptables-save.txt"), self.path("ipset-save.txt"),
                          self.path("ipvsadm.txt"),
                          local_ips=list(self.local_ips) if local_ips is None else local_ips,
                          name=self.name)


@cache
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def load_shapes(mode: str | None = None) -> list[Shape]:
    """Every shape of the manifest (of one mode, if given), in manifest order."""
    out = []
    for name, s in manifest()["shapes"].items():
        if mode and s["mode"] != mode:
            continue
        out.append(Shape(
            name=name, release=s["release"], mode=s["mode"], sources=tuple(s["sources"]),
            covers=s["covers"], files=tuple(s["files"]), local_ips=tuple(s["local_ips"]),
            kernel_needs=tuple(s["kernel"]["needs"]),
            rows=tuple((r[0], r[1], int(r[2]), r[3], r[4]) for r in s["rows"]),
            packets=tuple(Packet(p["name"], p["src"], p["dst"], int(p["dport"]), p["proto"], p["local"],
                                 p["outcome"], tuple(p["dnat"]), p["snat"], p.get("affinity", False),
                                 p.get("nfacct", False), p.get("why", ""))
                          for p in s["packets"])))
    return out


def shape(name: str) -> Shape:
    for s in load_shapes():
        if s.name == name:
            return s
    raise KeyError(name)
