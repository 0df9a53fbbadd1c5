"""One node's netfilter state: rules, ipsets, IPVS services and local addresses.

``load_node(dir)`` reads a node directory of the incident bundle (DESIGN.md
section 2); ``NodeRules.explain(...)`` answers "what happens to this packet".
The node's addresses matter twice: the routing decision (local or forwarded) and
``-m addrtype``. They come from ip-addr.txt/.json and/or ``local_ips``; without
either, any rule that needs them is reported undecided rather than guessed.
iptables-save holds only IPv4 rules: IPv6 packets are walked through
ip6tables-save.txt when the node directory has it, and are undecided otherwise.
Every address comparison here takes the family too (``fam``: 4 or 6).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path as FsPath

from natlens.errors import NatlensError, require_dir
from natlens.netfilter.ipset import IPSet, parse_ipset
from natlens.netfilter.iptables import Ruleset, merge_rulesets, parse_iptables
from natlens.netfilter.ipvs import VirtualService, parse_ipvsadm
from natlens.netfilter.nft import XTABLES, NftChain, NftRuleset, NftTable
from natlens.netfilter.walk import (
    Packet,
    Verdict,
    Walker,
    WalkState,
    explain,
    ip_addr,
    ip_int,
    ip_str,
)
from natlens.netfilter.walk.hooks import HOOK_TABLES, NAT_CORE, TABLE_PRIORITY, BaseChain
from natlens.netfilter.walk.nftables import NftWalker
from natlens.nodefiles import DUMP_NAMES, NodeFiles, as_node_files, table_of

Addr = tuple[int, int, int]  # (address, prefix length, version)
_NOT_UPLINK = ("lo", "kube-ipvs", "cni", "cbr", "docker", "veth", "cali", "flannel", "cilium",
               "tunl", "vxlan", "weave", "kube-bridge", "virbr", "br-", "lxc", "tun", "tap")

_HDR = re.compile(r"^(\d+):\s+([^\s:@]+)(?:@\S+)?:?\s")
_INET = re.compile(r"\binet6?\s+([0-9a-fA-F.:]+)(?:/(\d+))?(?:.*?\bbrd\s+(\S+))?")


@dataclass(frozen=True)
class Address:
    """One interface address of a node: what ``ip addr`` says."""

    ifname: str
    ifindex: int | None
    ip: str
    prefixlen: int

    @property
    def network(self) -> str:
        """The connected subnet, e.g. a bridge's pod CIDR."""
        return str(ipaddress.ip_interface(f"{self.ip}/{self.prefixlen}").network)


def read_ip_addr(text: str, path: str = "<ip-addr>") -> list[Address]:
    """``ip -j addr`` JSON, ``ip -o addr`` or plain ``ip addr`` text -> the addresses, in order.

    Any other shape is bad input: a one-line NatlensError naming the file and the entry.
    """
    if text.lstrip().startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NatlensError(f"invalid JSON: {exc.msg}", path=path, where=str(exc.lineno)) from None
        return _ip_addr_json(doc, path)
    out: list[Address] = []
    iface: tuple[int, str] | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        h = _HDR.match(line)
        if h:
            iface = (int(h.group(1)), h.group(2))
        m = _INET.search(line)
        if not m:
            continue
        if iface is None:
            raise NatlensError("address before any interface line", path=path, where=str(lineno))
        try:
            ip = ipaddress.ip_address(m.group(1))
        except ValueError:
            raise NatlensError(f"bad address {m.group(1)!r}", path=path, where=str(lineno)) from None
        plen = int(m.group(2)) if m.group(2) else ip.max_prefixlen
        out.append(Address(iface[1], iface[0], str(ip), plen))
    return out


def read_ip_links(text: str, path: str = "<ip-addr>") -> dict[int, str]:
    """Interface index -> name for every link of an ``ip addr`` dump (JSON or text), also
    those without an address (a pod's veth): an ``any`` capture names its packets'
    interfaces by index, and a veth is where a packet entered or left a pod."""
    if text.lstrip().startswith(("[", "{")):
        read_ip_addr(text, path)  # the same checks, the same one-line error
        return {link["ifindex"]: link.get("ifname", "?") for link in json.loads(text)
                if type(link.get("ifindex")) is int}
    return {int(h.group(1)): h.group(2) for h in map(_HDR.match, text.splitlines()) if h}


def _ip_addr_json(doc, path: str) -> list[Address]:
    if not isinstance(doc, list):
        raise NatlensError(f"expected a list of interfaces (ip -j addr), got {type(doc).__name__}",
                           path=path)
    out = []
    for i, link in enumerate(doc):
        if not isinstance(link, dict):
            raise NatlensError(f"[{i}]: not an interface object (ip -j addr) but {link!r:.40}", path=path)
        ifname, ifindex = link.get("ifname", "?"), link.get("ifindex")
        where = f"[{i}] ({ifname})"
        if not isinstance(ifname, str) or not (ifindex is None or type(ifindex) is int):
            raise NatlensError(f"[{i}]: ifname must be a string and ifindex an integer", path=path)
        infos = link.get("addr_info") or []
        if not isinstance(infos, list):
            raise NatlensError(f"{where}: addr_info is not a list", path=path)
        for j, a in enumerate(infos):
            if not isinstance(a, dict):
                raise NatlensError(f"{where}: addr_info[{j}] is not an object", path=path)
            if "local" not in a:
                continue
            try:
                ip = ipaddress.ip_address(a["local"]) if isinstance(a["local"], str) else None
                plen = a.get("prefixlen", ip.max_prefixlen if ip else 32)
                if ip is None or type(plen) is not int or not 0 <= plen <= ip.max_prefixlen:
                    raise ValueError
            except ValueError:
                raise NatlensError(f"{where}: addr_info[{j}]: local {a['local']!r:.40} / prefixlen "
                                   f"{a.get('prefixlen')!r:.20} is not an address and prefix length",
                                   path=path) from None
            out.append(Address(ifname, ifindex, str(ip), plen))
    return out


def parse_ip_addr(text: str, path: str = "<ip-addr>") -> dict[str, list[Addr]]:
    """``ip -o addr``, ``ip addr`` or ``ip -j addr`` output -> {interface: [(addr, plen, ver)]}."""
    out: dict[str, list[Addr]] = {}
    for a in read_ip_addr(text, path):
        ip = ipaddress.ip_address(a.ip)
        out.setdefault(a.ifname, []).append((int(ip), a.prefixlen, ip.version))
    return out


Route = tuple[int, int, str, int]  # (network, prefix length, interface, ip version)


def parse_ip_route(text: str, path: str = "<ip-route>") -> list[Route]:
    """``ip route`` / ``ip -6 route`` or their ``-j`` output -> [(network, plen, interface, version)]."""
    out = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NatlensError(f"bad JSON: {exc.msg}", path=path, where=str(exc.lineno)) from None
        text = "\n".join(f"{r.get('type', '')} {r.get('dst', '')} "
                         f"{'via ' + r['gateway'] + ' ' if r.get('gateway') else ''}dev {r['dev']}".strip()
                         for r in data if r.get("dev"))
    for lineno, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks or toks[0] in ("broadcast", "local", "unreachable", "blackhole", "prohibit",
                                   "throw", "multicast", "anycast"):
            continue
        if "dev" not in toks:
            continue
        dev = toks[toks.index("dev") + 1]
        via = toks[toks.index("via") + 1] if "via" in toks[:-1] else ""
        dest = ("::/0" if ":" in via else "0.0.0.0/0") if toks[0] == "default" else toks[0]
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            raise NatlensError(f"bad route destination {dest!r}", path=path, where=str(lineno)) from None
        out.append((int(net.network_address), net.prefixlen, dev, net.version))
    return out


REJECT_ROUTES = ("blackhole", "unreachable", "prohibit")


def parse_reject_routes(text: str, path: str = "<ip-route>") -> list[tuple[int, int, str, int]]:
    """The routes that drop what they match (``blackhole``, ``unreachable``, ``prohibit``) ->
    [(network, plen, type, ip version)]: a packet whose longest match is one of them never
    leaves the node, whatever the rules say."""
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NatlensError(f"bad JSON: {exc.msg}", path=path, where=str(exc.lineno)) from None
        lines = [f"{r.get('type', '')} {r.get('dst', '')}" for r in data if isinstance(r, dict)]
    else:
        lines = text.splitlines()
    out = []
    for line in lines:
        toks = line.split()
        if len(toks) < 2 or toks[0] not in REJECT_ROUTES:
            continue
        dest = "0.0.0.0/0" if toks[1] == "default" else toks[1]
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue  # parse_ip_route names bad destinations of the same dump
        out.append((int(net.network_address), net.prefixlen, toks[0], net.version))
    return out


class NodeRules:
    """Everything netfilter-related known about one node; ``explain`` walks a packet."""

    def __init__(self, ruleset: Ruleset | None, sets: dict[str, IPSet] | None = None,
                 ipvs: list[VirtualService] | None = None,
                 addresses: dict[str, list[Addr]] | None = None,
                 local_ips: list[str] | None = None, name: str = "",
                 routes: list[Route] | None = None, rules6: Ruleset | None = None,
                 nft: NftRuleset | None = None):
        self.name = name
        self.routes = routes or []
        self.reject_routes: list[tuple[int, int, str, int]] = []  # parse_reject_routes
        self.iptables_known = ruleset is not None  # an iptables-save dump was given
        self.ruleset = ruleset if ruleset is not None else Ruleset(path="(no iptables-save)")
        self.rules6 = rules6  # ip6tables-save; None (and no nft dump): IPv6 packets are undecided
        self.nft = nft        # nft list ruleset; None: no native nft tables are known
        self._nft_walker = NftWalker(self, nft) if nft is not None else None
        self._base_chains: dict[tuple[int, str], list[BaseChain]] = {}
        self.hook_step_cache: dict[tuple[int, str], list] = {}  # walk.hooks.hook_steps, once per hook
        self.sets: dict[str, IPSet] = sets or {}
        self.sets_known = sets is not None
        self.ipvs: list[VirtualService] = ipvs or []
        self._ipvs_by_key = {vs.key: vs for vs in self.ipvs}
        self._ipvs_addrs = {ip_addr(vs.addr) for vs in self.ipvs if vs.addr}
        self.addresses: dict[str, list[Addr]] = {k: list(v) for k, v in (addresses or {}).items()}
        self.ip_addr_given = bool(self.addresses)  # an ip addr dump: it lists every local address
        for ip in local_ips or []:
            a = ipaddress.ip_address(ip)
            self.addresses.setdefault("?", []).append((int(a), a.max_prefixlen, a.version))
        self.addresses_known = bool(self.addresses)
        self.inferred: list[str] = []
        self._local = {(ver, a) for addrs in self.addresses.values() for a, _, ver in addrs}
        # IPVS mode: the virtual addresses kube-proxy binds to kube-ipvs0, when no ip addr shows it
        self.vips_bound, self.vips_unknown = bound_vips(self)
        self._bcast: set[int] = {0xFFFFFFFF}
        for addrs in self.addresses.values():
            for a, plen, ver in addrs:
                if ver == 4 and plen < 31:
                    self._bcast.add(a | ((1 << (32 - plen)) - 1))
        self._walkers: dict[int, Walker | None] = {}

    @property
    def walker(self) -> Walker:
        """The IPv4 walker (iptables-save)."""
        w = self.walker_for(4)
        assert w is not None
        return w

    def walker_for(self, fam: int) -> Walker | None:
        """The walker over this family's iptables rules; None without that dump."""
        if fam not in self._walkers:
            rules = (self.ruleset if self.iptables_known else None) if fam == 4 else self.rules6
            self._walkers[fam] = Walker(self, rules) if rules is not None else None
        return self._walkers[fam]

    # the rules, hook by hook -------------------------------------------------------
    def rules_missing(self, fam: int) -> str | None:
        """Why a packet of this family cannot be walked at all, or None if it can."""
        if self.walker_for(fam) is not None or self._nft_sees(fam):
            return None
        if fam == 4:
            return "no iptables-save or nft dump for this node"
        return ("IPv6 packet: no ip6tables-save dump (ip6tables-save.txt) for this node; "
                "iptables-save holds only the IPv4 rules")

    def _nft_sees(self, fam: int) -> bool:
        """An nft dump shows this family's rules: its own, and iptables-nft's unless the
        iptables dump says the legacy backend (whose tables nft does not list)."""
        if self.nft is None:
            return False
        return fam == 4 or not self.iptables_known or self.ruleset.backend != "legacy"

    def partial(self, fam: int) -> list[str]:
        """Why this family's iptables dump is not the node's whole rule set (empty: it is)."""
        w = self.walker_for(fam)
        return list(w.ruleset.partial) if w is not None else []

    def walk_notes(self, fam: int) -> list[str]:
        """Trace lines on what the walk of this family reads (said once, at the top)."""
        out = []
        if self.nft is not None and self.walker_for(fam) is None:
            out.append("no iptables-save dump: iptables-legacy rules, if any, are not in the nft dump")
        shadowed = [f"{t.family} {t.name}" for t in (self.nft.tables.values() if self.nft else [])
                    if _fam_of(t.family, fam) and self._shadowed(t)]
        if shadowed:
            out.append(f"nft tables {', '.join(shadowed)} are iptables-nft's: walked from the "
                       "iptables dump, not twice")
        return out

    def _shadowed(self, t: NftTable) -> bool:
        """An iptables-nft table that the iptables dump of its family already holds."""
        if t.family not in ("ip", "ip6") or t.name not in XTABLES:
            return False
        w = self.walker_for(4 if t.family == "ip" else 6)
        return w is not None and (t.managed_by == "iptables-nft" or w.ruleset.backend != "legacy")

    def base_chains(self, fam: int, hook: str) -> list[BaseChain]:
        """Every base chain registered at this hook for this family, iptables and nft, in
        the order they were made as far as the dumps show it: iptables tables nft does not
        list (legacy) first, then nft's tables in its listing order, an iptables-nft table
        (walked from the iptables dump) where nft lists it."""
        key = (fam, hook)
        if key not in self._base_chains:
            w = self.walker_for(fam)
            ipt = {t: self._iptables_chain(w, t, hook) for t in HOOK_TABLES[hook]} if w else {}
            ipt = {t: c for t, c in ipt.items() if c is not None}
            out: list[BaseChain] = []
            listed = []
            for t in self.nft.tables.values() if self.nft is not None else ():
                if _fam_of(t.family, fam) and self._shadowed(t):
                    listed.append(t.name)
                    out += [ipt[t.name]] if t.name in ipt else []
                elif _fam_of(t.family, fam):
                    out += [self._nft_base(ch) for ch in t.chains.values()
                            if ch.base and ch.hook == hook.lower() and ch.type in ("filter", "nat", "route")]
            self._base_chains[key] = [c for t, c in ipt.items() if t not in listed] + out
        return self._base_chains[key]

    @staticmethod
    def _iptables_chain(w: Walker, table: str, hook: str) -> BaseChain | None:
        if hook not in w.ruleset.tables.get(table, {}):
            return None
        nat = table == "nat"
        return BaseChain(NAT_CORE[hook] if nat else TABLE_PRIORITY[table], f"iptables {table}/{hook}",
                         nat, lambda st, t=table, h=hook: w.run_table(st, t, h), f"iptables {table}")

    def _nft_base(self, ch: NftChain) -> BaseChain:
        nw = self._nft_walker
        return BaseChain(ch.prio or 0, f"nft {ch.family} {ch.table} {ch.name}", ch.type == "nat",
                         lambda st, c=ch, nw=nw: nw.run_chain(st, c), f"nft {ch.family} {ch.table}")

    def is_local(self, ip: int, fam: int = 4) -> bool:
        return (fam, ip) in self._local or (fam, ip) in self.vips_bound or _loopback(ip, fam)

    def local_unknown(self, ip: int, fam: int = 4) -> str | None:
        """Why the dumps cannot tell whether ip is a local address (an IPVS virtual address
        whose binding to kube-ipvs0 they do not show), or None when they can."""
        return None if self.is_local(ip, fam) else self.vips_unknown.get((fam, ip))

    def local_why(self, ip: int, fam: int = 4) -> str:
        """' (why)' for a routing trace line: the evidence that a kube-proxy VIP is local, or
        that it is not bound; '' for any other address."""
        why = self.vips_bound.get((fam, ip))
        if why:
            return f" ({why})"
        if (fam, ip) not in self._local and (fam, ip) in self._ipvs_addrs:
            src = "the ip addr dump" if self.ip_addr_given else "ipset KUBE-IPVS-IPS"
            return f" (an IPVS virtual address not bound on the node: not in {src})"
        return ""

    def addr_type(self, ip: int, iface: str | None = None, fam: int = 4) -> str:
        """LOCAL, BROADCAST, MULTICAST or UNICAST, as the kernel's inet_addr_type answers
        (ipv6_addr_type for IPv6: no broadcast)."""
        if iface is not None:
            if any(a == ip and ver == fam for a, _, ver in self.addresses.get(iface, [])):
                return "LOCAL"
            if iface == "lo" and _loopback(ip, fam):
                return "LOCAL"
        elif self.is_local(ip, fam):
            return "LOCAL"
        if fam == 4 and ip in self._bcast:
            return "BROADCAST"
        if (fam == 4 and (ip >> 28) == 0xE) or (fam == 6 and (ip >> 120) == 0xFF):
            return "MULTICAST"
        return "UNICAST"

    def pkt_type(self, ip: int, fam: int = 4) -> str:
        t = self.addr_type(ip, None, fam)
        return {"BROADCAST": "broadcast", "MULTICAST": "multicast"}.get(t, "unicast")

    def iface_address(self, iface: str | None, dst: int | None, fam: int = 4) -> int | None:
        """The fam address MASQUERADE/REDIRECT would use on iface: the one on dst's subnet,
        else the first; None if iface has no address of that family."""
        if iface == "lo":
            # lo has only host-scope addresses; inet_select_addr then takes the first
            # global address of the first interface in ifindex order (ip addr's order)
            for name, addrs in self.addresses.items():
                for a, _, ver in addrs:
                    if name != "?" and ver == fam and not _loopback(a, fam):
                        return a
            return None
        addrs = [a for a in self.addresses.get(iface or "", []) if a[2] == fam]
        if not addrs:
            return None
        if dst is not None:
            for a, plen, _ in addrs:
                if (a & _mask(plen, fam)) == (dst & _mask(plen, fam)):
                    return a
        return addrs[0][0]

    def routes_of(self, fam: int) -> list[Route]:
        return [r for r in self.routes if r[3] == fam]

    def route(self, dst: int, fam: int = 4) -> str | None:
        """The egress interface for dst: from the routes if given (longest prefix), else the
        longest connected subnet containing it, else None (unknown)."""
        best, best_len = None, -1
        if self.routes:
            for net, plen, dev, _ in self.routes_of(fam):
                if (dst & _mask(plen, fam)) == net and plen > best_len:
                    best, best_len = dev, plen
            return best
        for iface, addrs in self.addresses.items():
            if iface in ("lo", "?"):
                continue
            for a, plen, ver in addrs:
                if ver != fam or plen >= (32 if ver == 4 else 128):
                    continue
                if (a & _mask(plen, fam)) == (dst & _mask(plen, fam)) and plen > best_len:
                    best, best_len = iface, plen
        return best or self.uplink(fam)

    def route_drop(self, dst: str) -> str | None:
        """The route that drops packets to dst ("blackhole 198.19.0.10/32") when it is the
        longest match of the node's routes, else None (also when no route dump was given)."""
        ip = ipaddress.ip_address(dst)
        fam, addr = ip.version, int(ip)
        best = max((plen for net, plen, _, v in self.routes if v == fam and (addr & _mask(plen, fam)) == net),
                   default=-1)
        drops = [(plen, kind, net) for net, plen, kind, v in self.reject_routes
                 if v == fam and (addr & _mask(plen, fam)) == net and plen > best]
        if not drops:
            return None
        plen, kind, net = max(drops)
        return f"{kind} {ipaddress.ip_address(net) if fam == 4 else ipaddress.IPv6Address(net)}/{plen}"

    def uplink(self, fam: int = 4) -> str | None:
        """Without routes: the one interface that looks like the node's uplink, if exactly one.

        An interface holding a global IPv4 address on a subnet (not /32), named like a NIC
        rather than a CNI bridge, tunnel, veth or kube-ipvs0. Used as the default route; the
        trace says it was assumed.
        """
        if self.routes:
            return None
        bits = 32 if fam == 4 else 128
        cands = [name for name, addrs in self.addresses.items()
                 if not name.startswith(_NOT_UPLINK) and name != "?"
                 and any(v == fam and plen < bits and not _loopback(a, v) and not _link_local(a, v)
                         for a, plen, v in addrs)]
        return cands[0] if len(cands) == 1 else None

    def ipvs_service(self, st: WalkState) -> VirtualService | None:
        if not self._ipvs_by_key:
            return None
        vs = self._ipvs_by_key.get((st.proto, ip_str(st.dst, st.fam), st.dport))
        if vs is None and st.mark:
            vs = self._ipvs_by_key.get(("fwm", st.mark))
        return vs

    # the question ------------------------------------------------------------------
    def explain(self, src: str, dst: str, dport: int, proto: str = "tcp", sport: int | None = None,
                in_iface: str | None = None, local: bool = False,
                out_iface: str | None = None, mark: int = 0) -> Verdict:
        """What happens to the first packet src[:sport] -> dst:dport/proto on this node."""
        ip_int(src)
        ip_int(dst)
        return explain(self, Packet(src, dst, int(dport), proto, sport, in_iface, local, out_iface, mark))

    def check(self) -> int:
        """Compile every iptables rule (a malformed one raises NatlensError naming file:line).

        nft rules are compiled when a walk first reaches them: the parser has already
        checked their syntax (and nft itself wrote a JSON dump), and a 10,000-Service
        rule set would spend seconds compiling rules no query visits.
        """
        return sum(w.compile_all() for w in (self.walker_for(4), self.walker_for(6)) if w)


# kube-proxy's ipsets (after the KUBE- or, for IPv6, KUBE-6- prefix) whose members it always binds
_BOUND_SETS = (("CLUSTER-IP", "cluster IP"), ("EXTERNAL-IP", "external IP"), ("EXTERNAL-IP-LOCAL", "external IP"))
_LB_UNKNOWN = ("a LoadBalancer IP (ipset {set}): whether kube-proxy bound it to kube-ipvs0 the "
               "dumps do not show (upstream kube-proxy binds it, TKE's does not); give ip-addr.txt "
               "(ip addr shows kube-ipvs0)")
_VS_UNKNOWN = ("an IPVS virtual address in no kube-proxy ipset{why}: whether it is bound to "
               "kube-ipvs0 the dumps do not show; give ip-addr.txt (ip addr shows kube-ipvs0)")


def bound_vips(node: NodeRules) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], str]]:
    """IPVS mode's virtual addresses: (bound: local, with the evidence; unknown: with why).

    IPVS takes a packet only once routing found its address local, and kube-proxy makes
    its virtual addresses local by binding them to kube-ipvs0. An ip addr dump (it lists
    every local address, kube-ipvs0's too), or kube-proxy's own list of what it bound
    (ipset KUBE-IPVS-IPS, 1.27+), settles it; without those, cluster and external IPs
    are always bound, LoadBalancer IPs only where the cloud's kube-proxy does so (not on
    TKE): those stay unknown.
    """
    if node.ip_addr_given:
        return {}, {}
    bound: dict[tuple[int, int], str] = {}
    for pre in ("KUBE-", "KUBE-6-"):
        ips = node.sets.get(pre + "IPVS-IPS")
        if ips is not None and ips.dims is not None:
            return {(ips.family, e.key[0]): f"in ipset {pre}IPVS-IPS: kube-proxy bound it to kube-ipvs0"
                    for e in ips.entries}, {}
    unknown: dict[tuple[int, int], str] = {}
    for pre in ("KUBE-", "KUBE-6-"):
        for name, what in _BOUND_SETS:
            for fam, ip in _set_ips(node, pre + name):
                bound[(fam, ip)] = (f"in ipset {pre}{name}: kube-proxy's IPVS mode binds every "
                                    f"{what} to kube-ipvs0")
        for name in ("LOAD-BALANCER", "LOAD-BALANCER-LOCAL"):
            for fam, ip in _set_ips(node, pre + name):
                unknown.setdefault((fam, ip), _LB_UNKNOWN.format(set=pre + name))
    why = "" if node.sets_known else " (no ipset dump: a cluster IP is bound, a LoadBalancer IP maybe not)"
    for key in node._ipvs_addrs - bound.keys() - node._local:
        unknown.setdefault(key, _VS_UNKNOWN.format(why=why))
    return bound, {k: v for k, v in unknown.items() if k not in bound}


def _set_ips(node: NodeRules, name: str) -> list[tuple[int, int]]:
    """(family, address) of each member of an ip-keyed ipset (hash:ip,port and the like)."""
    s = node.sets.get(name)
    if s is None or s.dims is None or s.dims[0] not in ("ip", "net"):
        return []
    return [(s.family, e.key[0]) for e in s.entries]


def _fam_of(table_family: str, fam: int) -> bool:
    """Whether an nft table of this family sees packets of IP version fam."""
    return table_family == "inet" or table_family == ("ip" if fam == 4 else "ip6")


def _mask(plen: int, fam: int) -> int:
    bits = 32 if fam == 4 else 128
    return ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)


def _loopback(ip: int, fam: int) -> bool:
    return (ip >> 24) == 127 if fam == 4 else ip == 1


def _link_local(ip: int, fam: int) -> bool:
    return fam == 6 and (ip >> 118) == 0x3FA  # fe80::/10


def _read(p: FsPath) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError as exc:
        raise NatlensError(f"cannot read: {exc.strerror}", path=str(p)) from None


def load_files(iptables: str | list[str] | None, ipset: str | None = None, ipvs: str | None = None,
               ip_addr: str | None = None, local_ips: list[str] | None = None,
               name: str = "", ip_route: str | None = None,
               ip6tables: str | None = None, nft: str | None = None, table: str | None = None) -> NodeRules:
    """Build a NodeRules from dump files (paths); iptables or nft (nft list ruleset, text or
    JSON) is required. Without ip6tables-save or nft, IPv6 packets are undecided.

    iptables: iptables-save, or what users paste instead (``iptables -S``, a grep), one
    file or several (one ``iptables -S`` per table); ``table`` names the table of a
    single file whose lines do not show it.
    """
    if not iptables and nft is None:
        raise NatlensError("no iptables-save or nft dump given")
    rs = read_iptables([iptables] if isinstance(iptables, str) else iptables or [], table)
    nrs = None
    if nft:
        from natlens.netfilter.nft import parse_nft
        nrs = parse_nft(_read(FsPath(nft)), str(nft))
    rs6 = parse_iptables(_read(FsPath(ip6tables)), str(ip6tables)) if ip6tables else None
    sets = parse_ipset(_read(FsPath(ipset)), str(ipset)) if ipset else None
    vss = parse_ipvsadm(_read(FsPath(ipvs)), str(ipvs)) if ipvs else None
    addrs = parse_ip_addr(_read(FsPath(ip_addr)), str(ip_addr)) if ip_addr else None
    route_text = _read(FsPath(ip_route)) if ip_route else None
    routes = parse_ip_route(route_text, str(ip_route)) if route_text is not None else None
    node = NodeRules(rs, sets, vss, addrs, local_ips, name=name, routes=routes, rules6=rs6, nft=nrs)
    if route_text is not None:
        node.reject_routes = parse_reject_routes(route_text, str(ip_route))
    node.check()
    return node


def read_iptables(paths: list[str], table: str | None = None) -> Ruleset | None:
    """One Ruleset from iptables dump files; each file's table from ``table``, its name
    (iptables-S-<table>.txt) or its lines. None for no files."""
    if table is not None and len(paths) > 1:
        raise NatlensError("a table can be given for one iptables file only; name several "
                           "iptables -S files iptables-S-<table>.txt", path=paths[0])
    parts = [parse_iptables(_read(FsPath(p)), str(p), table or table_of(p)) for p in paths]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else merge_rulesets(parts, ", ".join(map(str, paths)))


def load_node(node_dir: str | FsPath | NodeFiles, local_ips: list[str] | None = None) -> NodeRules:
    """Read a node directory of an incident bundle, or the files natlens.nodefiles found in one
    (iptables-save.txt, ip6tables-save.txt, ipset-save.txt, ipvsadm.txt, ip-addr, ip-route)."""
    if not isinstance(node_dir, NodeFiles):
        require_dir(node_dir, "node")
    f = as_node_files(node_dir)
    if f.iptables is None and f.nft is None:
        raise NatlensError("no iptables or nft dump (looked for "
                           f"{', '.join(DUMP_NAMES['iptables'] + DUMP_NAMES['nft'])})", path=str(f.path))

    def opt(p: FsPath | None) -> str | None:
        return str(p) if p is not None else None

    ipt = [str(p) for p in f.iptables_parts] or opt(f.iptables)
    return load_files(ipt, opt(f.ipset), opt(f.ipvsadm), opt(f.ip_addr), local_ips,
                      name=f.name, ip_route=opt(f.ip_route), ip6tables=opt(f.ip6tables),
                      nft=opt(f.nft))
