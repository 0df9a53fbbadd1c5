"""A hostname-only load-balancer ingress tied to the address the captures show it at.

Why: AWS's NLB and Classic ELB publish a hostname, not an IP (status.loadBalancer.ingress
[].hostname), so cluster/services.json names no VIP and natlens would not know which
connections are the Service's. natlens never resolves the hostname (the bundle is offline
and DNS answers change); it takes the address from the captures instead, by one rule:

  a TCP connection record to an address that is no node's, pod's or Service's (cluster IP,
  known LB IP), on the Service's port, whose SYN (the same client ISN: NAT keeps it) was
  also seen arriving at a node's IP on that Service's NodePort

which is the load balancer forwarding the connection to a node, as only that Service's
load balancer does (a NodePort belongs to one Service port). One such address per Service
(and hostname) is its VIP; two are ambiguous (an NLB's hostname can resolve to one address
per zone) and natlens picks none. Every match, and every ambiguity, is one line of
``Inventory.inferred`` with the records it rests on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pandas as pd

from natlens.inventory import Inventory

SOURCE = "captures"  # the services table's source of an address taken from the captures


@dataclass(frozen=True)
class _Hop:
    """One connection record of the evidence."""

    capture: str
    node: str
    uid: str
    orig: str  # "addr:port"
    resp: str
    isn: int
    to_node: str | None = None  # the node whose address it was sent to (a NodePort's record)


def match_hostname_ingress(conns: pd.DataFrame, inventory: Inventory) -> Inventory:
    """A new Inventory whose hostname-only ingress rows (lb_ip None, lb_hostname set) have lb_ip
    = the address the captures show the Service's load balancer at, and source "captures"; the
    evidence (which connection left which node to that address:port, and arrived at which node's
    NodePort) or the ambiguity is added to ``inferred``. The inventory itself when no row is
    hostname-only or there are no connection records."""
    s = inventory.services
    if s.empty or "lb_hostname" not in s or conns is None or conns.empty:
        return inventory
    hosts = s[s["lb_ip"].isna() & s["lb_hostname"].notna() & (s["lb_hostname"] != "")]
    if hosts.empty:
        return inventory
    tcp = _tcp_records(conns, inventory)
    found: dict[tuple, dict[str, list[tuple[_Hop, _Hop]]]] = {}
    for key, rows in hosts.groupby(["namespace", "name", "lb_hostname"], dropna=False, sort=False):
        found[key] = _candidates(tcp, rows)
    claimed: dict[str, list[tuple]] = {}
    for key, cands in found.items():
        for addr in cands:
            claimed.setdefault(addr, []).append(key)
    services, lines = s.copy(), []
    for key, cands in found.items():
        line, addr = _decide(key, cands, claimed)
        lines.append(line)
        if addr is not None:
            ns, name, host = key
            at = hosts.index[_same(hosts["namespace"], ns) & _same(hosts["name"], name) & (hosts["lb_hostname"] == host)]
            services.loc[at, "lb_ip"] = addr
            services.loc[at, "source"] = SOURCE
    return Inventory(nodes=inventory.nodes, pods=inventory.pods, services=services,
                     inferred=[*inventory.inferred, *lines])


def _same(col: pd.Series, value) -> pd.Series:
    """col == value, with a missing value equal to a missing value (a Service without a namespace)."""
    return col.isna() if value is None or (isinstance(value, float) and value != value) else col == value


def _tcp_records(conns: pd.DataFrame, inventory: Inventory) -> pd.DataFrame:
    """The TCP records that carry a client ISN, in time order, the records sent out of the node
    first, with what their destination is: ``to_node`` the node whose address it is (None: no
    node's), ``outside`` whether it is no node's, pod's or Service's address."""
    need = ["capture", "node", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "client_isn", "proto"]
    if any(c not in conns for c in need):
        return pd.DataFrame(columns=[*need, "to_node", "outside"])
    t = conns[(conns["proto"] == "tcp") & conns["client_isn"].notna()]
    order = [c for c in ("syn_ts", "ts") if c in t]
    t = t.sort_values(order, kind="stable") if order else t
    if "orig_dir" in t:
        t = t.sort_values("orig_dir", key=lambda d: d != "out", kind="stable")
    known = _service_addresses(inventory)
    dst = {ip: (inventory.node_ip(ip), _outside(ip, inventory, known)) for ip in t["resp_h"].unique()}
    return t.assign(to_node=t["resp_h"].map(lambda ip: dst[ip][0]), outside=t["resp_h"].map(lambda ip: dst[ip][1]))


def _candidates(tcp: pd.DataFrame, rows: pd.DataFrame) -> dict[str, list[tuple[_Hop, _Hop]]]:
    """address -> [(the record to address:port, the same SYN's record at a node's NodePort)] over the
    Service's TCP port rows (one pair per client ISN)."""
    out: dict[str, list[tuple[_Hop, _Hop]]] = {}
    seen: set[tuple[str, int]] = set()
    for r in rows.itertuples():
        if str(r.proto) != "tcp" or pd.isna(r.port) or pd.isna(r.node_port):
            continue
        port, node_port = int(r.port), int(r.node_port)
        arrivals: dict[int, _Hop] = {}
        for a in tcp[(tcp["resp_p"] == node_port) & tcp["to_node"].notna()].itertuples():
            arrivals.setdefault(int(a.client_isn), _hop(a))
        if not arrivals:
            continue
        to_port = tcp[(tcp["resp_p"] == port) & tcp["outside"].astype(bool) & tcp["client_isn"].isin(list(arrivals))]
        for d in to_port.itertuples():
            isn = int(d.client_isn)
            if (d.resp_h, isn) in seen:
                continue
            seen.add((d.resp_h, isn))
            out.setdefault(d.resp_h, []).append((_hop(d), arrivals[isn]))
    return out


def _hop(r) -> _Hop:
    return _Hop(str(r.capture), str(r.node), str(r.uid), f"{r.orig_h}:{r.orig_p}", f"{r.resp_h}:{r.resp_p}",
                int(r.client_isn), r.to_node if isinstance(r.to_node, str) else None)


def _service_addresses(inventory: Inventory) -> set[str]:
    """Every cluster IP and known LB IP of the inventory's Services, one spelling each."""
    s, out = inventory.services, set()
    for col in ("cluster_ip", "cluster_ips", "lb_ip"):
        for v in s.get(col, ()):
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                a = _address(x)
                if a is not None:
                    out.add(str(a))
    return out


def _address(x) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(x) if isinstance(x, str) else None
    except ValueError:
        return None


def _outside(ip: str, inventory: Inventory, known: set[str]) -> bool:
    """An address that is no node's, pod's, cluster IP or known LB IP (nor loopback, link-local,
    unspecified or multicast): where only a load balancer can be."""
    a = _address(ip)
    if a is None or a.is_loopback or a.is_link_local or a.is_unspecified or a.is_multicast:
        return False
    return inventory.node_ip(ip) is None and not inventory.is_pod_ip(ip) and str(a) not in known


def _decide(key: tuple, cands: dict[str, list[tuple[_Hop, _Hop]]], claimed: dict[str, list[tuple]]
            ) -> tuple[str, str | None]:
    """(the inferred line, the address to take or None) for one Service's hostname."""
    ns, name, host = key
    who = f"{ns}/{name}: hostname-only ingress {host} (cluster/services.json)"
    if not cands:
        return (f"{who}: no capture shows a connection to the Service's port whose SYN also reached a node's "
                "NodePort of the Service, so natlens does not know the load balancer's address"), None
    if len(cands) > 1:
        each = ", ".join(f"{a} ({len(v)} connection(s), e.g. {v[0][0].uid})" for a, v in sorted(cands.items()))
        return (f"{who}: the captures show {len(cands)} candidate addresses ({each}), each with SYNs that also "
                "reached the Service's NodePort: ambiguous, natlens takes none (a load balancer's hostname can "
                "resolve to one address per zone)"), None
    addr, pairs = next(iter(cands.items()))
    if len(claimed[addr]) > 1:
        others = ", ".join(f"{k[0]}/{k[1]}" for k in claimed[addr] if k != key)
        return f"{who}: the captures tie {addr} to {others} as well: ambiguous, natlens takes none", None
    dep, arr = pairs[0]
    return (f"{who}: load-balancer address {addr} from the captures: {dep.capture} saw {dep.orig} -> {dep.resp} "
            f"leave {dep.node} (connection {dep.uid}), and the same SYN (client ISN {dep.isn}) arrived at "
            f"{arr.to_node}'s NodePort of the Service, {arr.resp} ({arr.capture}, connection {arr.uid}); "
            f"{len(pairs)} connection(s) in all"), addr
