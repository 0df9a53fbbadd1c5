"""Who the client of each journey is, what it called, and where each record sits on its path.

Why: every decision about a journey (SNAT, the load balancer's pick, loopback,
outcome) compares a record with the client's own record: the earliest SYN of the
journey, sent from the client's address and port towards the address it called.
The inventory places addresses on nodes; the Services' VIPs, NodePorts and policies
say which records are before the load balancer and which after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from natlens.inventory import UPLINK, Inventory
from natlens.vocab import UNKNOWN


@dataclass
class ServiceMap:
    """The load-balancer Services of the inventory, keyed as records see them."""

    vips: set[tuple[str, int, str]] = field(default_factory=set)  # (VIP, port, proto)
    node_ports: dict[tuple[int, str], tuple[str, int]] = field(default_factory=dict)  # -> (VIP, port)
    policy: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (VIP, port, proto) -> policy

    @classmethod
    def of(cls, inventory: Inventory) -> ServiceMap:
        """The VIPs, NodePorts and policies of every Service with a load-balancer ingress IP."""
        m = cls()
        for s in inventory.services.itertuples():
            if s.lb_ip is None or pd.isna(s.lb_ip):
                continue
            key = (s.lb_ip, int(s.port), s.proto)
            m.vips.add(key)
            m.policy[key] = s.policy
            if s.node_port is not None and not pd.isna(s.node_port):
                m.node_ports[(int(s.node_port), s.proto)] = (s.lb_ip, int(s.port))
        return m

    def policy_of(self, vip, port, proto) -> str:
        """The Service's externalTrafficPolicy, or "unknown"."""
        return self.policy.get((vip, int(port) if not pd.isna(port) else -1, proto), UNKNOWN)


@dataclass
class Clients:
    """Per journey (index: journey number): the client and what it called (``table``), and the
    client's own connection record (``record``, NaN rows where none was captured)."""

    table: pd.DataFrame
    record: pd.DataFrame


def annotate_records(r: pd.DataFrame, inventory: Inventory, services: ServiceMap) -> pd.DataFrame:
    """Address facts for every record: the nodes of its endpoints, whether they are node IPs,
    whether it is addressed to a VIP; and its time ``_t`` (first SYN, else first packet)."""
    addrs = pd.unique(pd.concat([r["orig_h"], r["resp_h"]], ignore_index=True))
    node_of = {a: inventory.node_of(a) for a in addrs}
    node_ip = {a: inventory.node_ip(a) for a in addrs}
    r = r.assign(orig_node=r["orig_h"].map(node_of),  # orig_ip_of_node: the node whose own address it is
                 orig_ip_of_node=r["orig_h"].map(node_ip),
                 resp_node=r["resp_h"].map(node_of), resp_is_node=r["resp_h"].map(node_ip).notna())
    r["orig_is_node"] = r["orig_ip_of_node"].notna()
    r["to_vip"] = pd.MultiIndex.from_arrays(
        [r["resp_h"].astype(object), r["resp_p"].astype("int64"), r["proto"].astype(object)]
    ).isin(list(services.vips)) if services.vips else False
    r["_has_syn"] = r["syn_ts"].notna()
    r["_t"] = r["syn_corr"].fillna(r["ts_corr"])
    return r


def first_per_journey(r: pd.DataFrame, mask: pd.Series | None = None) -> pd.DataFrame:
    """The earliest record (by ``_t``) of each journey where mask holds, indexed by journey."""
    sel = r if mask is None else r[mask]
    return sel.sort_values("_t").drop_duplicates("jn").set_index("jn")


def find_clients(r: pd.DataFrame, inventory: Inventory, services: ServiceMap) -> Clients:
    """The client's own record of each journey, and from it the client and what it called."""
    first = r.sort_values(["jn", "_has_syn", "to_vip", "_t"], ascending=[True, False, False, True])
    first = first.drop_duplicates("jn")
    # a journey seen only as a stray SYN-ACK has no client record
    first = first[first["_has_syn"] | ~first["history"].str.startswith("^")].set_index("jn")
    cl = pd.DataFrame(index=pd.Index(sorted(r["jn"].unique()), name="jn"))
    cl["client_uid"] = first["uid"]
    cl["client_h"] = first["orig_h"]
    cl["client_p"] = first["orig_p"]
    cl["client_node"] = _client_node(r, first, cl.index)
    cl["client_node_ip"] = cl["client_node"].map(
        {row.name: row.internal_ip for row in inventory.nodes.itertuples()})
    cl["client_is_node"] = first["orig_is_node"]
    _called(r, cl, first, services)
    return Clients(cl, first.reindex(cl.index))


def _client_node(r: pd.DataFrame, first: pd.DataFrame, index: pd.Index) -> pd.Series:
    """The node the client lives on: its address's node in the inventory; for an address the
    inventory does not place, the node where a copy of the SYN was seen leaving towards the
    VIP (the LB never delivers a packet to its VIP to a node, so that node sent it)."""
    placed = first["orig_node"].where(first["orig_node"].notna() & ~first["orig_is_node"],
                                      first["orig_ip_of_node"]).reindex(index)
    leaving = r["to_vip"] & ((r["orig_dir"] == "out")
                             | (r["orig_dir"].isna() & r["point"].fillna("").str.match(UPLINK)))
    sent_from = first_per_journey(r, leaving)["node"]
    return placed.fillna(sent_from.reindex(index))


def _called(r: pd.DataFrame, cl: pd.DataFrame, first: pd.DataFrame, services: ServiceMap) -> None:
    """vip, vport, proto: a VIP seen in the journey, else the NodePort's Service, else the
    client's destination (or, without a client record, the responder as recorded)."""
    vip_rec = first_per_journey(r, r["to_vip"])
    cl["vip"] = vip_rec["resp_h"]
    cl["vport"] = vip_rec["resp_p"]
    if services.node_ports:
        npr = r[r["resp_is_node"]].copy()
        npr["_svc"] = [services.node_ports.get((int(p), pr))
                       for p, pr in zip(npr["resp_p"], npr["proto"], strict=True)]
        npr = first_per_journey(npr[npr["_svc"].notna()])
        idx = cl.index[cl["vip"].isna() & cl.index.isin(npr.index)]
        cl.loc[idx, "vip"] = [npr.at[j, "_svc"][0] for j in idx]
        cl.loc[idx, "vport"] = [npr.at[j, "_svc"][1] for j in idx]
    earliest = first_per_journey(r)
    cl["vip"] = cl["vip"].fillna(first["resp_h"]).fillna(earliest["resp_h"])
    cl["vport"] = cl["vport"].fillna(first["resp_p"]).fillna(earliest["resp_p"])
    # a journey without the client's record keeps the protocol of its records
    cl["proto"] = first["proto"].reindex(cl.index).fillna(earliest["proto"])


def place_records(r: pd.DataFrame, clients: Clients) -> pd.DataFrame:
    """Where each record sits relative to its client: before the LB (``pre_lb``: addressed to
    the VIP called), on the client's node (``on_client``), at the node's egress (``egress``),
    from the client's own address and port (``from_client``); ``hop`` names it in evidence."""
    cols = ["client_h", "client_p", "client_node", "client_node_ip", "client_is_node", "vip", "vport"]
    r = r.merge(clients.table[cols].rename(columns=lambda c: "j_" + c), left_on="jn",
                right_index=True, how="left")
    r["pre_lb"] = (r["resp_h"] == r["j_vip"]) & (r["resp_p"] == r["j_vport"])
    r["on_client"] = r["node"] == r["j_client_node"]
    r["egress"] = r["point"].fillna("").str.match(UPLINK) | (r["point"].isna() & (r["orig_dir"] == "out"))
    r["from_client"] = (r["orig_h"] == r["j_client_h"]) & (r["orig_p"] == r["j_client_p"])
    r["four"] = (r["orig_h"] + ":" + r["orig_p"].astype(str) + " -> " + r["resp_h"] + ":"
                 + r["resp_p"].astype(str))
    r["hop"] = r["capture"].astype(str) + ": " + r["four"]
    return r
