"""Walk the first packet of a connection through a node's netfilter rules.

One job per module:

    addresses  address ints with their family; hostport, net membership
    packet     Packet (the question), protocol numbers, packet_family
    state      WalkState (one branch while it runs), SnatTo, the outcomes
    verdict    Branch (one finished way the packet goes) and Verdict (all of them)
    matches    the match compiler (every -m module), Undecided, rule_matches
    targets    target compile and MARK/CONNMARK/NAT application
    walker     Walker: one table at one hook, chain stack of Frames, chain indexes
    ipvs       the IPVS step from the ipvsadm dump
    hooks      the hook pipeline: PREROUTING ... POSTROUTING, routing, explain

A check answers ``True``/``False``, a probability (statistic: the walk forks and
follows both ways, each branch with its probability) or ``Undecided(reason)``: a
match or target the model does not know, or a rule needing data that is missing,
ends that branch as undecided, naming the rule. The answer is never a guess.

Addresses are ints with their family beside them (``WalkState.fam``, the Net's
version, the set's family, the node address's version): an IPv6 packet walks the
ip6tables-save rules only, and ::c612:1064 is never 198.18.16.100.
"""

from natlens.netfilter.walk.addresses import ip_addr, ip_int, ip_str
from natlens.netfilter.walk.hooks import explain
from natlens.netfilter.walk.matches import Undecided
from natlens.netfilter.walk.packet import PROTO_NUM, Packet
from natlens.netfilter.walk.state import SnatTo, WalkState
from natlens.netfilter.walk.verdict import Branch, Verdict
from natlens.netfilter.walk.walker import Walker

__all__ = ["PROTO_NUM", "Branch", "Packet", "SnatTo", "Undecided", "Verdict", "WalkState", "Walker",
           "explain", "ip_addr", "ip_int", "ip_str"]
