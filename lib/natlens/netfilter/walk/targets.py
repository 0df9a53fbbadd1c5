"""Targets: a rule's -j/-g compiled once into a ``Target``, and what applying one does.

MARK and CONNMARK change the marks the walk tracks and the walk goes on; SNAT,
MASQUERADE, DNAT and REDIRECT rewrite the packet (only in the nat table) and end
the table for the branch, as the kernel's NAT targets accept. Targets that neither
decide nor change anything tracked (LOG, TRACE, ...) pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from natlens.errors import NatlensError
from natlens.netfilter.iptables import Chain, Rule
from natlens.netfilter.walk.addresses import hostport, ip_addr, ip_int, ip_str, loopback
from natlens.netfilter.walk.matches import Undecided
from natlens.netfilter.walk.state import SnatTo, WalkState

if TYPE_CHECKING:
    from natlens.netfilter.node import NodeRules

# Target.kind
JUMP, GOTO, RETURN, ACCEPT, DROP, PASS = "jump", "goto", "return", "accept", "drop", "pass"
MARK, CONNMARK, CONNMARK_SAVE, CONNMARK_RESTORE, NOTRACK = (
    "mark", "connmark", "connmark-save", "connmark-restore", "notrack")
MASQ, SNAT, DNAT, REDIRECT, UNKNOWN = "masq", "snat", "dnat", "redirect", "unknown"
MARK_KINDS = (MARK, CONNMARK, CONNMARK_SAVE, CONNMARK_RESTORE, NOTRACK)
NAT_KINDS = (MASQ, SNAT, DNAT, REDIRECT)

# Targets that neither decide nor change anything the model tracks: logged and passed.
PASS_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "CHECKSUM", "TCPMSS", "CLASSIFY", "DSCP", "TOS",
                "TTL", "AUDIT", "NFACCT", "IDLETIMER", "LED", "SECMARK", "CONNSECMARK"}
_FULL = 0xFFFFFFFF
# Targets with options the model applies (or knows it cannot): never a missing chain's name.
_KNOWN_TARGETS = {"ACCEPT", "DROP", "RETURN", "REJECT", "MARK", "CONNMARK", "MASQUERADE", "SNAT",
                  "DNAT", "REDIRECT", "NOTRACK", "CT", "NETMAP", "TPROXY", "NFQUEUE", "QUEUE", "TEE",
                  "HMARK", "SET", "SYNPROXY", "TCPOPTSTRIP", "ECN", "HL", "CLUSTERIP", "JOOL"}


@dataclass(frozen=True)
class MarkOp:
    """A MARK/CONNMARK value option as the kernel applies it: new = (old & ~clear) ^ xor."""

    xor: int
    clear: int

    def apply(self, old: int) -> int:
        """The mark after the operation."""
        return (old & ~self.clear & _FULL) ^ self.xor


@dataclass(frozen=True)
class NatTo:
    """--to-source / --to-destination: the first address ("" for a port only) and port."""

    addr: str
    port: int | None


class Target(NamedTuple):
    """A compiled target; which fields are set depends on ``kind``.

    Immutable; a NamedTuple rather than a frozen dataclass because a 100,000-rule
    dump compiles one per rule and this is several times cheaper to build.
    """

    kind: str
    name: str = ""
    op: MarkOp | None = None               # MARK, CONNMARK
    masks: tuple[int, int] | None = None   # CONNMARK_SAVE/RESTORE: (nfmask, ctmask)
    to: NatTo | None = None                # SNAT, DNAT
    port: int | None = None                # REDIRECT --to-ports (first)
    reason: str = ""                       # UNKNOWN: why it is not modelled


def _target_opts(args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                opts[a] = args[i + 1]
                i += 2
                continue
            opts[a] = ""
        i += 1
    return opts


def _mark_op(opts: dict[str, str]) -> MarkOp | None:
    """MARK/CONNMARK value options (--set-xmark, --set-mark, --and/or/xor-mark) -> MarkOp."""
    def vm(text: str) -> tuple[int, int]:
        v, _, m = text.partition("/")
        return int(v, 0), (int(m, 0) if m else _FULL)
    if "--set-xmark" in opts:
        return MarkOp(*vm(opts["--set-xmark"]))
    if "--set-mark" in opts:
        v, m = vm(opts["--set-mark"])
        return MarkOp(v, m | v)
    if "--and-mark" in opts:
        return MarkOp(0, ~int(opts["--and-mark"], 0) & _FULL)
    if "--or-mark" in opts:
        v = int(opts["--or-mark"], 0)
        return MarkOp(v, v)
    if "--xor-mark" in opts:
        return MarkOp(int(opts["--xor-mark"], 0), 0)
    return None


def _nat_range(text: str) -> NatTo:
    """'10.0.0.1', '10.0.0.1:80', '10.0.0.1-10.0.0.3:80-90', ':80' -> the first address and port."""
    if text.startswith("["):
        addr, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    else:
        addr, _, port = text.partition(":")
    first = addr.split("-")[0] if addr else ""
    return NatTo(first, int(port.split("-")[0]) if port else None)


def _garbled(to: NatTo) -> str:
    """Why a NAT range cannot be what the kernel holds ('' if it can): iptables-nft prints
    some nft NAT statements it cannot translate as an empty or zero --to-destination."""
    if not to.addr and to.port is None:
        return "no address and no port (a garbled line, as iptables-nft prints some nft NAT rules)"
    if to.addr and ip_addr(to.addr)[1] == 0:
        return "address 0.0.0.0 / :: (a garbled line, as iptables-nft prints some nft NAT rules)"
    if to.port == 0:
        return "port 0 (a garbled line, as iptables-nft prints some nft NAT rules)"
    return ""


def _mark_target(rule: Rule, t: str, opts: dict[str, str]) -> Target:
    op = _mark_op(opts)
    if t == "CONNMARK" and op is None:
        nf = int(opts.get("--nfmask", opts.get("--mask", "0xffffffff")), 0)
        ct = int(opts.get("--ctmask", opts.get("--mask", "0xffffffff")), 0)
        if "--save-mark" in opts:
            return Target(CONNMARK_SAVE, t, masks=(nf, ct))
        if "--restore-mark" in opts:
            return Target(CONNMARK_RESTORE, t, masks=(nf, ct))
    if op is None:
        return Target(UNKNOWN, t, reason=f"{t} options {' '.join(rule.target_args)} not modelled")
    return Target(MARK if t == "MARK" else CONNMARK, t, op=op)


def _option_target(rule: Rule, t: str) -> Target:
    """A target with options: marks, NAT, NOTRACK; anything else is UNKNOWN."""
    opts = _target_opts(rule.target_args)
    if t in ("MARK", "CONNMARK"):
        return _mark_target(rule, t, opts)
    if t == "MASQUERADE":
        return Target(MASQ, t)
    if t in ("SNAT", "DNAT"):
        opt = "--to-source" if t == "SNAT" else "--to-destination"
        to = _nat_range(opts[opt])
        garbled = _garbled(to)
        if garbled:
            return Target(UNKNOWN, t, reason=f"{t} {opt} {opts[opt] or '(nothing)'}: {garbled}")
        return Target(SNAT if t == "SNAT" else DNAT, t, to=to)
    if t == "REDIRECT":
        ports = opts.get("--to-ports")
        return Target(REDIRECT, t, port=int(ports.split("-")[0]) if ports else None)
    if t == "NOTRACK" or (t == "CT" and set(opts) == {"--notrack"}):
        return Target(NOTRACK, t)
    return Target(UNKNOWN, t, reason=f"target {t} {' '.join(rule.target_args)} not modelled".replace("  ", " "))


def compile_target(rule: Rule, chains: dict[str, Chain], partial: bool = False) -> Target | None:
    """The rule's target (None without -j/-g); malformed options raise NatlensError.

    partial: the dump does not hold the whole rule set (iptables -S of some tables, a
    grep), so a target that is no chain of it may be a chain left out of the paste.
    """
    t = rule.target
    if t is None:
        return None
    if t in chains:
        return Target(GOTO if rule.goto else JUMP, t)
    missing = f"chain {t} is not in the dump (it holds only part of the rules)"
    if rule.goto:
        return Target(UNKNOWN, t, reason=missing if partial else f"goto {t}: no such chain")
    if partial and t not in _KNOWN_TARGETS and t not in PASS_TARGETS:
        return Target(UNKNOWN, t, reason=missing)
    if t in ("ACCEPT", "DROP", "RETURN", "REJECT"):
        return Target(DROP if t == "REJECT" else t.lower(), t)
    if t in PASS_TARGETS:
        return Target(PASS, t)
    try:
        return _option_target(rule, t)
    except (KeyError, ValueError) as exc:
        raise NatlensError(f"bad -j {t} options ({exc})", path=rule.path, where=str(rule.lineno)) from None


def target_undecided(st: WalkState, where: str, rule: Rule, reason: str) -> None:
    """End the branch at this rule: the model cannot apply its target."""
    st.stop_undecided(f"{where} ({rule.where}): {rule.describe()}: {reason}", f"{where}: undecided: {reason}")


def apply_marks(st: WalkState, tgt: Target) -> None:
    """MARK, CONNMARK (set, save, restore) and NOTRACK; CONNMARK needs a conntrack entry."""
    k = tgt.kind
    if k == NOTRACK:
        st.notrack = True
    elif k == MARK:
        st.mark = tgt.op.apply(st.mark)
    elif not st.ct:
        return  # no conntrack entry to mark (raw table)
    elif k == CONNMARK:
        st.ctmark = tgt.op.apply(st.ctmark)
    elif k == CONNMARK_SAVE:
        nf, ct = tgt.masks
        st.ctmark = (st.ctmark & ~ct & _FULL) ^ (st.mark & nf)
    else:
        nf, ct = tgt.masks
        st.mark = (st.mark & ~nf & _FULL) ^ (st.ctmark & ct)


def apply_nat(node: NodeRules, st: WalkState, tgt: Target, where: str, rule: Rule) -> None:
    """Rewrite the destination (DNAT, REDIRECT) or source (SNAT, MASQUERADE) and record it."""
    if tgt.kind in (DNAT, REDIRECT):
        why = _dnat(st, tgt.to) if tgt.kind == DNAT else _redirect(node, st, tgt.port)
        if why is not None:
            target_undecided(st, where, rule, why.reason)
            return
        st.dnat = hostport(st.dst, st.dport, st.fam)
        st.decided_by.append(f"DNAT by {where}: {rule.describe()}")
        return
    if tgt.kind == SNAT:
        addr, port = tgt.to.addr, tgt.to.port
        if addr and ip_addr(addr)[0] != st.fam:
            target_undecided(st, where, rule, f"SNAT to {addr} for an IPv{st.fam} packet")
            return
        st.snat = SnatTo(addr or ip_str(st.src, st.fam), port)
        if port is not None:
            st.sport = port
    else:
        st.snat = _masquerade(node, st)
    if st.snat.known:
        st.src = ip_int(st.snat.address)
    st.decided_by.append(f"SNAT by {where}: {rule.describe()}")


def _dnat(st: WalkState, to: NatTo) -> Undecided | None:
    if to.addr:
        fam, addr = ip_addr(to.addr)
        if fam != st.fam:
            return Undecided(f"DNAT to IPv{fam} for an IPv{st.fam} packet")
        st.dst = addr
    if to.port is not None:
        st.dport = to.port
    return None


def _redirect(node: NodeRules, st: WalkState, port: int | None) -> Undecided | None:
    """REDIRECT: to loopback when generated locally, else to the incoming interface's address."""
    if st.local:
        st.dst = loopback(st.fam)
    else:
        a = node.iface_address(st.in_iface, None, st.fam)
        if a is None:
            return Undecided(f"REDIRECT to the address of {st.in_iface or '?'}: unknown")
        st.dst = a
    if port is not None:
        st.dport = port
    return None


def _masquerade(node: NodeRules, st: WalkState) -> SnatTo:
    """The egress interface's address (on the destination's subnet if it has several)."""
    a = node.iface_address(st.out_iface, st.dst, st.fam)
    if a is None:
        return SnatTo(None, unknown_why=f"MASQUERADE to the address of "
                      f"{st.out_iface or 'the outgoing interface'} (unknown)")
    return SnatTo(ip_str(a, st.fam))
