"""What the walk answers: one ``Branch`` per way the packet can go, and the ``Verdict``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from natlens.netfilter.walk.packet import Packet
from natlens.netfilter.walk.state import DELIVERED, FORWARDED, SENT, UNDECIDED, WalkState


@dataclass
class Branch:
    """One way the packet can go (more than one with statistic/numgen, recent or IPVS).

    ``probability`` is the branch's probability given ``given``: the state no dump shows
    that it assumed (a recent list: a returning or a new client); empty: unconditional.
    """

    probability: float
    outcome: str                  # forwarded, sent out, delivered locally, dropped, undecided
    snat: bool | None
    snat_to: str | None
    dnat_to: str | None
    out_iface: str | None
    mark: int
    ctmark: int                   # connection mark when conntrack confirmed the entry
    conntrack: bool               # the kernel keeps a conntrack entry for it (confirmed)
    conditions: list[str]
    trace: list[str]
    undecided: list[str]
    decided_by: list[str]
    given: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The branch as JSON-ready fields, in declaration order."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def branch_of(s: WalkState) -> Branch:
    """The finished state as a Branch; an unknown MASQUERADE address is said last in the trace."""
    # a packet dropped after its SNAT (looping back in via lo) was still SNATed
    snat = None if s.outcome == UNDECIDED else s.snat is not None
    if s.snat is not None and not s.snat.known:
        s.trace.append(s.snat.unknown_why)
    return Branch(probability=round(s.prob, 6), given=s.given, outcome=s.outcome or UNDECIDED, snat=snat,
                  snat_to=s.snat.address if s.snat is not None else None, dnat_to=s.dnat,
                  out_iface=s.out_iface, mark=s.mark,
                  ctmark=s.confirm_ctmark if s.confirmed else s.ctmark, conntrack=s.confirmed,
                  conditions=s.conditions, trace=s.trace, undecided=s.undecided,
                  decided_by=s.decided_by)


def _one_line(p: Branch) -> str:
    """One branch in words: 'forwarded via eth0, DNAT to 10.0.0.1:80, SNAT to 10.0.0.5'."""
    s = p.outcome
    if p.out_iface and p.outcome in (FORWARDED, SENT):
        s += f" via {p.out_iface}"
    if p.dnat_to:
        s += f", DNAT to {p.dnat_to}"
    if p.snat:
        s += f", SNAT to {p.snat_to or '?'}"
    elif p.snat is False and p.outcome in (FORWARDED, SENT, DELIVERED):
        s += ", not SNATed"
    return s


def _odds(p: Branch) -> str:
    """'p=0.5', or 'if source in recent list X[, p=0.5]' for a branch that assumed state."""
    if not p.given:
        return f"p={p.probability:.3g}"
    return f"if {', '.join(p.given)}" + (f", p={p.probability:.3g}" if p.probability < 1 else "")


@dataclass
class Verdict:
    """What happens to the packet: every branch, and the answer when all branches agree.

    ``partial``: the dumps hold only part of the node's rules (iptables -S of some tables,
    a grep): the answer is what the rules shown do, and rules left out could change it.
    """

    packet: Packet
    paths: list[Branch] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # why the dumps walked are not the whole rule set

    @property
    def snat(self) -> bool | None:
        """True or False when every branch agrees, else None."""
        vals = {p.snat for p in self.paths}
        return vals.pop() if len(vals) == 1 else None

    @property
    def snat_to(self) -> str | None:
        """The SNAT address, or the sorted addresses of the SNATed branches ('?': unknown)."""
        vals = {p.snat_to for p in self.paths if p.snat}
        return vals.pop() if len(vals) == 1 else (", ".join(sorted(v or "?" for v in vals)) or None)

    @property
    def dnat_to(self) -> list[str]:
        """Every endpoint some branch is DNATed to, sorted."""
        return sorted({p.dnat_to for p in self.paths if p.dnat_to})

    @property
    def undecided(self) -> list[str]:
        """Why the model cannot tell, over all branches, without repeats."""
        out: list[str] = []
        for p in self.paths:
            out += [u for u in p.undecided if u not in out]
        return out

    @property
    def verdict(self) -> str:
        """The answer in words; with several branches, each with its probability."""
        if len(self.paths) == 1:
            return _one_line(self.paths[0])
        return "; ".join(f"{_odds(p)}: {_one_line(p)}" for p in self.paths)

    @property
    def trace(self) -> list[str]:
        """The first branch's trace, then each other branch's lines from where it diverged."""
        if not self.paths:
            return []
        first = self.paths[0].trace
        out = list(first)
        for n, p in enumerate(self.paths[1:], 2):
            k = 0
            while k < min(len(first), len(p.trace)) and first[k] == p.trace[k]:
                k += 1
            out.append(f"== path {n} ({_odds(p)}) from line {k + 1}:")
            out += p.trace[k:]
        return out

    def to_json(self) -> dict:
        """The verdict as `natlens explain --json` prints it."""
        return {"snat": self.snat, "snat_to": self.snat_to, "dnat_to": self.dnat_to,
                "verdict": self.verdict, "trace": self.trace, "undecided": self.undecided,
                "partial": self.partial,
                "paths": [p.to_dict() for p in self.paths]}

    def __str__(self) -> str:
        return json.dumps(self.to_json(), indent=2)
