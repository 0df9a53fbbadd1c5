"""One branch of the walk while it runs: the packet as rewritten so far, and its record.

``WalkState`` is what matches test and targets change; when the walk ends each one
becomes a ``Branch`` (verdict.py). NAT is recorded as values, not sentinels: the
destination endpoint in ``dnat``, the source rewrite in ``snat`` (a ``SnatTo``, or
None while the source is untouched).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natlens.netfilter.walk.addresses import ip_int
from natlens.netfilter.walk.packet import Packet, packet_family, proto_number

# WalkState.outcome / Branch.outcome, once a branch has ended
FORWARDED, DELIVERED, DROPPED, UNDECIDED = "forwarded", "delivered locally", "dropped", "undecided"
SENT = "sent out"  # generated on the node and sent out of it (not forwarded: it never came in)
DEFAULT_SPORT = 40000  # a source port for a query that gives none


@dataclass(frozen=True)
class SnatTo:
    """The source address (and port) SNAT or MASQUERADE rewrote the packet's source to.

    ``address`` is None when MASQUERADE chose an interface whose address the dumps do
    not give; ``unknown_why`` then says which, for the trace.
    """

    address: str | None
    port: int | None = None
    unknown_why: str = ""

    @property
    def known(self) -> bool:
        """Whether the new source address is known (not a MASQUERADE to an unknown one)."""
        return self.address is not None


@dataclass(slots=True)
class WalkState:
    """The packet of one branch as the rules have left it so far, plus its trace.

    Addresses are ints of family ``fam``; ``orig_*`` keep the original tuple for
    ``-m conntrack --ctorig*``. ``outcome`` stays None while the branch is alive.
    """

    fam: int
    src: int
    dst: int
    sport: int
    dport: int
    proto: str
    pnum: int
    in_iface: str | None
    out_iface: str | None
    local: bool
    mark: int
    orig_src: int
    orig_dst: int
    orig_sport: int
    orig_dport: int
    ctmark: int = 0
    hook: str = ""
    dnat: str | None = None          # "addr:port" the destination was rewritten to
    snat: SnatTo | None = None
    nat_dst_done: bool = False       # the nat table has bound the destination manipulation
    nat_src_done: bool = False
    notrack: bool = False
    ipvs: bool = False               # IPVS took the packet (-m ipvs)
    ipvs_method: str = ""            # MASQ, GATE, TUNNEL (-m ipvs --vmethod)
    prob: float = 1.0
    given: list[str] = field(default_factory=list)  # state no dump shows, assumed (recent lists)
    trace: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    decided_by: list[str] = field(default_factory=list)
    outcome: str | None = None
    confirmed: bool = False
    confirm_ctmark: int = 0          # the connection mark when conntrack confirmed the entry
    ct: bool = False                 # a conntrack entry is attached (not yet in raw)

    @classmethod
    def start(cls, pkt: Packet) -> WalkState:
        """The state before the first hook (a bad address or mixed families raise NatlensError)."""
        fam = packet_family(pkt)
        src, dst = ip_int(pkt.src), ip_int(pkt.dst)
        proto = pkt.proto.lower()
        sport = pkt.sport if pkt.sport is not None else DEFAULT_SPORT
        return cls(fam=fam, src=src, dst=dst, sport=sport, dport=pkt.dport, proto=proto,
                   pnum=proto_number(proto), in_iface=None if pkt.local else pkt.in_iface,
                   out_iface=pkt.out_iface, local=pkt.local, mark=pkt.mark,
                   orig_src=src, orig_dst=dst, orig_sport=sport, orig_dport=pkt.dport)

    def fork(self) -> WalkState:
        """A copy to follow the other way of a branch point (statistic match, IPVS).

        Every list is copied: a decision taken after the split belongs to one branch.
        """
        n = object.__new__(WalkState)
        for k in WalkState.__slots__:
            setattr(n, k, getattr(self, k))
        n.trace = list(self.trace)
        n.conditions = list(self.conditions)
        n.given = list(self.given)
        n.undecided = list(self.undecided)
        n.decided_by = list(self.decided_by)
        return n

    def confirm(self) -> None:
        """Conntrack confirms the entry (end of POSTROUTING or INPUT): later drops keep it."""
        if not self.confirmed and not self.notrack:
            self.confirmed = True
            self.confirm_ctmark = self.ctmark

    def stop_undecided(self, why: str, line: str) -> None:
        """End this branch as undecided: why goes to ``undecided``, line to the trace."""
        self.undecided.append(why)
        self.trace.append(line)
        self.outcome = UNDECIDED
