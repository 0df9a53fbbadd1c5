"""Host network or a pod: whether the node itself opened a connection, and SNAT from that.

Why: a capture on the node's NIC alone shows a pod's SNATed connection and one the node
opened itself alike, as nodeIP:port -> VIP. The TTL (IPv6: hop limit) of the client's
first packet there tells them apart: the node forwards a pod's packet and takes one off,
so it leaves with the initial TTL - 1 (63 where Linux starts at 64); the node's own packet
leaves with the initial TTL. The initial TTL is learned from connections the node is known
to have opened itself in the same capture (its conntrack dump says so), else assumed to be
one of the common initial values (64 Linux, 128 Windows, 255), and the evidence says which.
A TTL that fits neither stays unknown; so does a TTL seen anywhere but the client's node's
NIC (the routers between took off an unknown number).

``host_network``: yes = the node itself opened the connection; no = a pod's connection (its
source is a pod IP, or the node forwarded it); unknown with the reason. The conntrack dump,
where it names the connection, beats the TTL. A pod's packet that left the NIC with the
node's IP was SNATed (``snat_from_ttl``); a host-network client's connection keeps
``snat`` unknown, as with conntrack: its source is the node's own IP without any SNAT.

Takes the placed records and client table of ``decisions`` (``client.place_records``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from natlens._grouped import concat_rows, contains, per_distinct
from natlens.inventory import Inventory
from natlens.journeys.client import first_per_journey
from natlens.journeys.decisions import Decision, pod_source
from natlens.vocab import NO, UNKNOWN, YES

COMMON_INITIAL_TTLS = (64, 128, 255)  # Linux / Windows / network stacks: the initial TTLs in use
# snat_from_conntrack's wording for an entry of a connection the node opened itself
CONNTRACK_OWN = "the node itself opened"
SENT_BY_NODE = "node"
FORWARDED = "forwarded"


@dataclass
class TtlReadings:
    """Per journey (index: journey number; NA / None where the client's node's NIC did not
    show the client's first packet from the node's IP): that record (``uid``, ``hop``: "capture:
    src:sport -> dst:dport", ``source``: "addr:port"), its TTL, the initial TTL it was measured
    against, who sent it (``sent``: "node" / "forwarded" / None: fits neither), ``reading`` (the
    TTL against the initial one) and ``basis`` (initial TTL learned from which record, or assumed)."""

    uid: pd.Series
    hop: pd.Series
    source: pd.Series
    ttl: pd.Series
    initial: pd.Series
    sent: pd.Series
    reading: pd.Series
    basis: pd.Series

    @functools.cached_property
    def text(self) -> pd.Series:
        """The whole sentence: the record, its TTL, the initial TTL, who sent it, learned or assumed."""
        verdict = self.sent.map({SENT_BY_NODE: ": sent by the node itself, a host-network client",
                                 FORWARDED: ": forwarded by the node, a pod's connection"}).fillna(
            ": cannot tell whether the node sent or forwarded it")
        seen = self.hop.notna()
        out = pd.Series(None, index=self.hop.index, dtype=object)
        out.loc[seen] = (self.hop[seen].astype(str) + ": " + self.reading[seen].astype(str) + verdict[seen]
                         + " (" + self.basis[seen].astype(str) + ")")
        return out


def nic_records(r: pd.DataFrame) -> pd.Series:
    """Records of the client's first packet leaving its node's NIC towards the VIP, from the
    client's own address when that is its node's IP: where the TTL tells who sent it."""
    return (r["on_client"] & r["egress"] & r["pre_lb"] & r["from_client"]
            & r["j_client_is_node"].fillna(False).astype(bool)
            & r["orig_dir"].ne("in") & r["orig_ttl"].notna())


_WORDS = np.array(["TTL", "hop limit"], dtype=object)  # shared objects: a numpy text array per row is slow


def _word(v6: pd.Series) -> pd.Series:
    """What the field is called: "TTL" (IPv4) or "hop limit" (IPv6)."""
    return pd.Series(_WORDS[v6.to_numpy(dtype=bool).astype(np.int8)], index=v6.index)


def learned_initial(r: pd.DataFrame, own: pd.Series) -> dict[tuple[str, bool], tuple[int | None, str]]:
    """Per (capture, IPv6) the initial TTL of the node's own connections (``own``: journeys the
    node is known to have opened itself), and the words saying where it was learned; None
    where they left with different TTLs (said so too)."""
    mine = r[nic_records(r) & r["jn"].isin(own.index[own.astype("boolean").fillna(False)])].sort_values("_t")
    out: dict[tuple[str, bool], tuple[int | None, str]] = {}
    for (cap, v6), g in mine.groupby([mine["capture"].astype(str), mine["orig_h"].str.contains(":")]):
        word = "hop limit" if v6 else "TTL"
        ttls = sorted({int(t) for t in g["orig_ttl"]})
        if len(ttls) > 1:
            out[(cap, bool(v6))] = (None, f"the node's own connections in {cap} left with different "
                                          f"{word}s ({', '.join(map(str, ttls))})")
            continue
        out[(cap, bool(v6))] = (ttls[0], f"initial {word} {ttls[0]} learned from {g['uid'].iloc[0]}"
                                + (f" and {len(g) - 1} more" if len(g) > 1 else "")
                                + ", connection(s) the node itself opened (its conntrack dump)")
    return out


def ttl_readings(r: pd.DataFrame, cl: pd.DataFrame, own: pd.Series | None = None) -> TtlReadings:
    """Who sent each journey's first packet on its node's NIC, by its TTL (see the module doc);
    ``own``: journeys known to be the node's own (their TTL is the initial one)."""
    f = first_per_journey(r, nic_records(r)).reindex(cl.index)
    for col in ("uid", "hop", "orig_h", "capture"):  # plain strings: arrow-backed text cannot add NA
        f[col] = f[col].astype(object).where(f[col].notna(), None)
    seen = f["uid"].notna()
    v6 = pd.Series(contains(f["orig_h"], ":"), index=f.index)
    learned = learned_initial(r, own if own is not None else pd.Series(dtype=bool))
    caps = f["capture"].astype(str)
    l_init = pd.Series(per_distinct(lambda c, v: learned.get((c, bool(v)), (None, ""))[0], caps, v6),
                       index=cl.index, dtype="Int64")
    l_why = pd.Series(per_distinct(lambda c, v: learned.get((c, bool(v)), (None, ""))[1], caps, v6),
                      index=cl.index, dtype=object)
    t = f["orig_ttl"].astype("Int64").fillna(-9).astype(int)
    common = list(COMMON_INITIAL_TTLS)
    a_init = pd.Series(np.where(t.isin(common), t, np.where((t + 1).isin(common), t + 1, -1)), index=cl.index)
    is_learned = l_init.notna()
    init = l_init.fillna(-1).astype(int).where(is_learned, a_init)
    sent = pd.Series(np.select([~seen | (init < 0), t == init, t == init - 1], [None, SENT_BY_NODE, FORWARDED],
                               None), index=cl.index, dtype=object)
    word = _word(v6)
    known = "/".join(map(str, COMMON_INITIAL_TTLS))
    assumed = pd.Series(concat_rows([
        "initial ", word, " assumed: one of the common initial values " + known + "; ",
        l_why.where(l_why != "", "no connection of the node's own in this capture to learn it from")]),
        index=cl.index, dtype=object)
    reading = pd.Series(per_distinct(functools.partial(_reading, known=known), sent, is_learned, word, t, init),
                        index=cl.index, dtype=object)
    source = pd.Series(concat_rows([f["orig_h"].fillna("").astype(str), ":", f["orig_p"].astype("Int64").astype(str)]),
                       index=cl.index, dtype=object)
    hide = pd.Series(None, index=cl.index, dtype=object)
    return TtlReadings(uid=f["uid"], hop=f["hop"], source=source.where(seen, hide),
                       ttl=f["orig_ttl"].astype("Int64").where(seen),
                       initial=init.astype("Int64").where(seen & (init >= 0)), sent=sent.where(seen, None),
                       reading=reading.where(seen, hide), basis=l_why.where(is_learned, assumed).where(seen, hide))


def _reading(sent, is_learned, word: str, ttl: int, init: int, known: str) -> str:
    """What the TTL a journey's first packet left its node with says, in words."""
    head = f"{word} {ttl}"
    if sent == FORWARDED:
        return f"{head}, one less than the initial {word} {init}"
    if sent == SENT_BY_NODE:
        return f"{head}, the initial {word} itself"
    if is_learned:
        return f"{head}, neither the initial {word} {init} nor one less"
    return f"{head}, neither a common initial value ({known}) nor one less"


def host_network_from_conntrack(snat: Decision, fixes: pd.DataFrame) -> Decision:
    """host_network as the client node's conntrack dump says it (snat_from_conntrack's result):
    no where its entry names the pod behind the node's IP (``fixes``), yes where it says the
    node itself opened the connection; unknown (evidence None) elsewhere."""
    value = pd.Series(UNKNOWN, index=snat.value.index, dtype=object)
    evidence = pd.Series(None, index=snat.value.index, dtype=object)
    own = contains(snat.evidence, CONNTRACK_OWN)
    value.loc[own], evidence.loc[own] = YES, snat.evidence[own]
    if "client_is_node" in fixes and not fixes.empty:
        named = fixes.index[~fixes["client_is_node"].fillna(True).astype(bool)].intersection(value.index)
        value.loc[named], evidence.loc[named] = NO, snat.evidence.loc[named]
    return Decision(value, evidence)


def classify_host_network(r: pd.DataFrame, cl: pd.DataFrame, *, inventory: Inventory | None = None,
                          conntrack: Decision | None = None, ttl: TtlReadings | None = None) -> Decision:
    """yes / no / unknown: did the node itself open the connection (a host-network client)?

    no: the client's source is a pod's address (``pod_source``; without an inventory, known to
    differ from its node's IP), or its node forwarded its packet (TTL one less than the initial
    TTL on the node's NIC). yes: the packet left the NIC with the initial TTL itself. The node's
    conntrack dump (``conntrack``: host_network_from_conntrack), where it speaks, beats the TTL.
    """
    if ttl is None:
        ttl = ttl_readings(r, cl, None if conntrack is None else conntrack.value == YES)
    value = pd.Series(UNKNOWN, index=cl.index, dtype=object)
    evidence = pd.Series(None, index=cl.index, dtype=object)
    h = cl["client_h"]
    node_src = cl["client_is_node"].fillna(False).astype(bool) & h.notna()
    pod = (pod_source(cl, inventory) if inventory is not None
           else cl["client_node_ip"].notna() & (cl["client_node_ip"] != h)) & h.notna() & ~node_src
    value.loc[pod] = NO
    node_ip = cl.loc[pod, "client_node_ip"]
    not_node = pd.Series(concat_rows(["its node's IP ", node_ip.astype(str)]), index=node_ip.index)
    evidence.loc[pod] = concat_rows(["the client's source ", h[pod].astype(str), " is a pod's address (not ",
                                     not_node.where(node_ip.notna(), "a node's IP"), "): a pod's connection"])
    for sent, val in ((SENT_BY_NODE, YES), (FORWARDED, NO)):
        m = node_src & (ttl.sent == sent)
        value.loc[m], evidence.loc[m] = val, ttl.text[m]
    undecided = node_src & ttl.text.notna() & ttl.sent.isna()
    evidence.loc[undecided] = ttl.text[undecided]
    unseen = node_src & ttl.text.isna()
    evidence.loc[unseen] = concat_rows([
        "the client's source ", h[unseen].astype(str), " is its node's IP, and no capture on the node's "
        "NIC shows the TTL its first packet left with (a pod-side or `any` capture, or conntrack.txt, "
        "would tell whether the node sent or forwarded it)"])
    other = h.notna() & ~node_src & ~pod
    evidence.loc[other] = concat_rows(["the source ", h[other].astype(str), " is neither a known pod IP nor "
                                       "a node IP natlens knows: a pod's or a node's address?"])
    evidence.loc[evidence.isna()] = "no record of the client's connection"
    if conntrack is not None:
        _conntrack_wins(value, evidence, conntrack, ttl)
    return Decision(value, evidence)


def _conntrack_wins(value: pd.Series, evidence: pd.Series, conntrack: Decision, ttl: TtlReadings) -> None:
    """The conntrack dump's word where it has one (in place), the TTL's named where it disagrees."""
    says = conntrack.value.reindex(value.index).fillna(UNKNOWN) != UNKNOWN
    ttl_val = ttl.sent.map({SENT_BY_NODE: YES, FORWARDED: NO})
    against = says & ttl_val.notna() & (ttl_val != conntrack.value.reindex(value.index))
    value.loc[says] = conntrack.value[says]
    evidence.loc[says] = conntrack.evidence[says]
    evidence.loc[against] = evidence[against] + "; but the TTL says otherwise: " + ttl.text[against]


def snat_from_ttl(snat: Decision, host: Decision, ttl: TtlReadings,
                  captured: Decision | None = None) -> Decision:
    """SNAT yes where the captures could not decide, the client's first packet left its node's
    NIC with the node's IP, and the node forwarded it (a pod's packet, so SNATed to the node's
    IP: ``snat_to`` is the address:port it left with). A host-network client keeps SNAT
    unknown, its evidence saying so; an undecided TTL is added to the reason. ``captured``: the
    decision before the conntrack dump; where the dump spoke but could not decide (entries
    naming different clients), what it said stays in the evidence."""
    value, evidence = snat.value.copy(), snat.evidence.copy()
    ct_said = (evidence != captured.evidence.reindex(evidence.index)) if captured is not None \
        else pd.Series(False, index=evidence.index)
    snat_to = snat.detail.get("snat_to", pd.Series(None, index=value.index, dtype=object)).copy()
    open_ = value == UNKNOWN
    fwd = open_ & (ttl.sent == FORWARDED) & (host.value == NO)
    value.loc[fwd] = YES
    snat_to.loc[fwd] = ttl.source[fwd]
    evidence.loc[fwd] = (ttl.hop[fwd] + " (left with the node IP, forwarded by the node: " + ttl.reading[fwd]
                         + "; " + ttl.basis[fwd] + "): a pod's connection, SNATed")
    both = fwd & ct_said & evidence.notna()
    evidence.loc[both] = evidence[both] + " (" + snat.evidence[both].astype(str) + ")"
    mine = open_ & (host.value == YES) & ~contains(evidence, CONNTRACK_OWN)
    evidence.loc[mine] = (host.evidence[mine] + "; its source is the node's own IP, not SNATed to it: "
                          "SNAT does not apply")
    odd = open_ & (host.value == UNKNOWN) & ttl.text.notna() & ttl.sent.isna()
    evidence.loc[odd] = evidence[odd].fillna("").astype(str) + "; " + ttl.text[odd]
    return Decision(value, evidence, {**snat.detail, "snat_to": snat_to})


def host_network_and_snat(r: pd.DataFrame, cl: pd.DataFrame, inventory: Inventory | None, snat: Decision,
                          fixes: pd.DataFrame, captured: Decision | None = None
                          ) -> tuple[Decision, Decision]:
    """(host_network, snat with the TTL's evidence) from the placed records, the client table and
    the SNAT decision after the conntrack dump (``fixes``: the clients it named; ``captured``:
    the decision before it)."""
    ct = host_network_from_conntrack(snat, fixes)
    ttl = ttl_readings(r, cl, ct.value == YES)
    host = classify_host_network(r, cl, inventory=inventory, conntrack=ct, ttl=ttl)
    return host, snat_from_ttl(snat, host, ttl, captured)
