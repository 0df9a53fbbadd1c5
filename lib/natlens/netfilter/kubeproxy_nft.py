"""kube-proxy's nftables mode, read from the rule graph: Services, endpoints and policies.

kube-proxy (nftables mode, GA in 1.33) keeps its Services in verdict maps keyed by
``ip daddr . meta l4proto . th dport`` (destination IP, protocol, port) and by
``meta l4proto . th dport`` (node ports). Its chain and map names and its
priorities changed between releases, so nothing here goes by names alone: the
dispatch maps are the vmaps reached from a nat base chain (prerouting/output),
their elements' verdicts lead to a Service's chains, and those are classified by
what their rules do:

* a *service chain* DNATs to endpoints (``numgen ... vmap`` or ``goto`` to chains
  ending in ``dnat to``): the cluster IP's element points at it;
* an *external chain* (LB IP, external IP, node port) goes on to a service chain.
  ``externalTrafficPolicy: Cluster`` is an unconditional rule to the service
  chain; ``Local`` reaches it only for pod traffic (``ip saddr <cluster CIDR>``,
  "short-circuit pod traffic") and node-local traffic (``fib saddr type local``),
  and otherwise the local endpoints, or nothing;
* the vmaps reached from filter base chains (no-endpoint-services /
  no-endpoint-nodeports) drop or reject traffic for Services without endpoints.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from natlens.netfilter.nft import NftChain, NftRuleset, NftTable

if TYPE_CHECKING:
    from natlens.netfilter.kubeproxy import ServicePolicy

EXTERNAL = "LoadBalancer/ExternalIP"  # nftables mode treats both alike: the rules do not tell them apart
_SVC_KEY = ("daddr", "l4proto", "dport")
_NP_KEY = ("l4proto", "dport")
_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}


def is_nftables_mode(nft: NftRuleset | None) -> bool:
    """Whether some nft table holds a kube-proxy-like Service dispatch map."""
    return nft is not None and any(_dispatch(t, "nat") for t in nft.tables.values())


def services(nft: NftRuleset) -> list[ServicePolicy]:
    """Every Service destination kube-proxy's nft tables hold, with its policy and endpoints."""
    out: list[ServicePolicy] = []
    for t in nft.tables.values():
        by_chain: dict[str, ServicePolicy] = {}
        for rule_where, key, elements in _dispatch(t, "nat"):
            for k, verdict in elements:
                target = _goto(verdict)
                ch = t.chains.get(target or "")
                if ch is None:
                    continue
                if key == _SVC_KEY:
                    sp = _destination(t, k, ch, rule_where)
                    by_chain.setdefault(ch.name, sp)
                else:
                    sp = _node_port(t, k, ch, rule_where, by_chain)
                out.append(sp)
        _no_endpoints(t, out)
    return out


def cluster_cidr(nft: NftRuleset) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, str]:
    """The cluster CIDR kube-proxy's "short-circuit pod traffic" or masquerade rules test
    (``ip saddr [!=] CIDR``), and where; None and why when no rule shows one."""
    for t in nft.tables.values():
        for ch in t.chains.values():
            for r in ch.rules:
                for s in r.expr:
                    m = s.get("match") if isinstance(s, dict) else None
                    if m and _field(m["left"]) == "saddr" and isinstance(m["right"], dict) \
                            and "prefix" in m["right"]:
                        p = m["right"]["prefix"]
                        return ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False), r.where
    return None, "no cluster CIDR in kube-proxy's nft rules"


# ----------------------------------------------------------------- the rule graph


def _field(e: Any) -> str | None:
    """'daddr', 'l4proto', 'dport'... for the expressions kube-proxy keys its maps with."""
    if not isinstance(e, dict):
        return None
    if "payload" in e:
        return e["payload"].get("field")
    if "meta" in e:
        return e["meta"].get("key")
    return None


def _key(e: Any) -> tuple | None:
    parts = e["concat"] if isinstance(e, dict) and "concat" in e else [e]
    return tuple(_field(p) for p in parts)


def _reachable(t: NftTable, kind: str) -> set[str]:
    """Chains reachable (jump/goto/vmap) from the table's base chains of type kind."""
    todo = [c.name for c in t.chains.values() if c.base and c.type == kind]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in t.chains:
            continue
        seen.add(name)
        for r in t.chains[name].rules:
            todo += _targets(t, r.expr)
    return seen


def _targets(t: NftTable, expr: list) -> list[str]:
    """The chains a rule's verdicts (direct or in a vmap, named or anonymous) lead to."""
    out = []
    for s in expr:
        if not isinstance(s, dict):
            continue
        g = _goto(s)
        if g:
            out.append(g)
        if "vmap" in s:
            out += [g for _, v in _vmap_items(t, s["vmap"]["data"]) if (g := _goto(v))]
    return out


def _goto(v: Any) -> str | None:
    if isinstance(v, dict):
        for k in ("goto", "jump"):
            if k in v:
                a = v[k]
                return a["target"] if isinstance(a, dict) else a
    return None


def _vmap_items(t: NftTable, data: Any) -> list[tuple[Any, Any]]:
    if isinstance(data, str) and data.startswith("@"):
        s = t.sets.get(data[1:])
        return [(e.key, e.value) for e in s.elements] if s else []
    if isinstance(data, dict) and isinstance(data.get("set"), list):
        return [(e[0], e[1]) for e in data["set"] if isinstance(e, list) and len(e) == 2]
    return []


def _dispatch(t: NftTable, kind: str) -> list[tuple[str, tuple, list]]:
    """(rule place, key, elements) of the Service vmaps reached from base chains of kind."""
    out = []
    for name in sorted(_reachable(t, kind)):
        for r in t.chains[name].rules:
            for s in r.expr:
                if isinstance(s, dict) and "vmap" in s and _key(s["vmap"]["key"]) in (_SVC_KEY, _NP_KEY):
                    out.append((f"{r.where} ({t.family} {t.name} {name})", _key(s["vmap"]["key"]),
                                _vmap_items(t, s["vmap"]["data"])))
    return out


def _concat(k: Any) -> list:
    return k["concat"] if isinstance(k, dict) and "concat" in k else [k]


def _proto(v: Any) -> str:
    return _PROTO.get(v, str(v)) if isinstance(v, int) else str(v)


def _name(ch: NftChain) -> str | None:
    """'ns/svc:port' from kube-proxy's chain name 'service-HASH-ns/svc/tcp/port'."""
    parts = ch.name.split("-", 2)
    tail = parts[2].split("/") if len(parts) == 3 else []
    return f"{tail[0]}/{tail[1]}:{tail[3]}" if len(tail) == 4 else None


def _dnat_here(ch: NftChain) -> list[str]:
    """The endpoints ("ip:port") this chain's own rules DNAT to: an endpoint chain."""
    out = []
    for r in ch.rules:
        for s in r.expr:
            d = s.get("dnat") if isinstance(s, dict) else None
            if isinstance(d, dict) and isinstance(d.get("addr"), str):
                host = f"[{d['addr']}]" if ":" in d["addr"] else d["addr"]
                out.append(host + (f":{d['port']}" if "port" in d else ""))
    return out


def _next(t: NftTable, ch: NftChain) -> list[NftChain]:
    return [t.chains[g] for r in ch.rules for g in _targets(t, r.expr) if g in t.chains]


def _endpoints(t: NftTable, ch: NftChain) -> list[str]:
    """The endpoints a service (or local) chain DNATs to through its endpoint chains."""
    return sorted({ep for c in [ch, *_next(t, ch)] for ep in _dnat_here(c)})


def _is_service_chain(t: NftTable, ch: NftChain) -> bool:
    """A chain choosing among endpoint chains (which DNAT): a cluster or local policy chain."""
    return not _dnat_here(ch) and any(_dnat_here(c) for c in _next(t, ch))


def _is_external(t: NftTable, ch: NftChain) -> bool:
    """An external chain: it goes on to a service chain (LB IP, external IP, node port)."""
    return any(_is_service_chain(t, c) for c in _next(t, ch) if c is not ch)


def _unconditional(r) -> bool:
    return not any(isinstance(s, dict) and "match" in s for s in r.expr)


def _policy(t: NftTable, ext: NftChain) -> tuple[str, NftChain | None, list[str]]:
    """Cluster or Local for an external chain, the chain its other traffic goes to, and why.

    Cluster: every source reaches the Service's chain (one unconditional rule to it, no
    short-circuits). Local: pod traffic and node-local traffic are short-circuited to
    the Service's chain and the rest goes to another chain (this node's endpoints), or
    nowhere when the node has none.
    """
    short, final, final_rule = [], None, None
    for r in ext.rules:
        for g in _targets(t, r.expr):
            c = t.chains.get(g)
            if c is None or not (_is_service_chain(t, c) or (_unconditional(r) and _dnat_here(c))):
                continue
            if _unconditional(r):
                final, final_rule = final or c, final_rule or r
            else:
                short.append((r, c))
    if final is not None and not short:
        return "Cluster", final, [f"{final_rule.where}: {final_rule.text} (every source goes to all "
                                  "of the Service's endpoints)"]
    why = [f"{r.where}: {r.text} (short-circuit to all endpoints)" for r, _ in short]
    why.append(f"{final_rule.where}: {final_rule.text} (other traffic: this node's endpoints only)"
               if final_rule else f"{ext.family} {ext.table} {ext.name}: no rule for other traffic "
               "(no endpoint on this node)")
    return "Local", final, why


def _destination(t: NftTable, k: Any, ch: NftChain, where: str) -> ServicePolicy:
    from natlens.netfilter.kubeproxy import NOT_APPLICABLE, ServicePolicy
    ip, proto, port = _concat(k)
    ev = [f"{where}: {ip} . {_proto(proto)} . {port} -> {t.family} {t.name} {ch.name}"]
    if not _is_external(t, ch):
        return ServicePolicy(str(ip), int(port), _proto(proto), "ClusterIP", NOT_APPLICABLE, None,
                             evidence=ev + ["externalTrafficPolicy does not apply to a cluster IP"],
                             name=_name(ch), endpoints=_endpoints(t, ch))
    policy, final, why = _policy(t, ch)
    return ServicePolicy(str(ip), int(port), _proto(proto), EXTERNAL, policy, None, evidence=ev + why,
                         name=_name(ch), endpoints=_endpoints(t, final) if final else [])


def _node_port(t: NftTable, k: Any, ch: NftChain, where: str,
               by_chain: dict[str, ServicePolicy]) -> ServicePolicy:
    from natlens.netfilter.kubeproxy import ServicePolicy
    proto, port = _concat(k)
    policy, final, why = _policy(t, ch)
    ev = [f"{where}: {_proto(proto)} . {port} -> {t.family} {t.name} {ch.name}", *why]
    tied = by_chain.get(ch.name)
    if tied is not None:
        tied.node_ports.append(int(port))
        tied.evidence.append(f"node port {port}: the same chain {ch.name}")
    return ServicePolicy("*", int(port), _proto(proto), "NodePort", policy, None, [int(port)], ev,
                         name=_name(ch), endpoints=_endpoints(t, final) if final else [])


def _no_endpoints(t: NftTable, out: list[ServicePolicy]) -> None:
    """Say which destinations the filter-side vmaps drop or reject (no endpoints)."""
    from natlens.netfilter.kubeproxy import NOT_APPLICABLE, ServicePolicy
    known = {(s.vip, s.port, s.proto): s for s in out}
    for where, key, elements in _dispatch(t, "filter"):
        for k, verdict in elements:
            action = "reject" if _goto(verdict) else next(iter(verdict), "?") if isinstance(verdict, dict) else "?"
            parts = _concat(k)
            dest = ("*", *parts) if key == _NP_KEY else tuple(parts)
            if len(dest) != 3 or not isinstance(dest[2], int):
                continue  # not an (address, protocol, port) key: not a Service destination
            vip, proto, port = str(dest[0]), _proto(dest[1]), int(dest[2])
            note = f"{where}: {' . '.join(map(str, parts))} -> {action}: no endpoints for it (no-endpoint map)"
            sp = known.get((vip, port, proto))
            if sp is None:
                sp = ServicePolicy(vip, port, proto, "NodePort" if vip == "*" else "ClusterIP",
                                   NOT_APPLICABLE if vip != "*" else "unknown", None, evidence=[])
                out.append(sp)
                known[(vip, port, proto)] = sp
            sp.evidence.append(note)
            sp.no_endpoints = action


__all__ = ["EXTERNAL", "cluster_cidr", "is_nftables_mode", "services"]
