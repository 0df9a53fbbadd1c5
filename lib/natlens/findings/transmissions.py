"""Which of the client's SYN transmissions a packet seen at a capture point belongs to.

Why: a client whose SYN goes unanswered sends it again (1 s, then 2, 4 ... s later). The
retransmission may take another way than the first SYN (kube-proxy's nftables and
iptables modes pick an endpoint per new conntrack entry, and the client's RST deleted the
first one), or reach a point the first never reached. A point whose first SYN is the
retransmission, compared with one whose first SYN is the original, shows a "delay" of one
retransmission interval that no packet took. So a step between two points is one packet's
only when both saw the same transmission.

How: the SYN's TCP timestamp value (TSval) names its transmission: NAT keeps it and each
retransmission carries a new one. A journey's transmissions, per clock domain, are its
distinct first-SYN TSvals in the order they were first seen. A SYN belongs to the
transmission its TSval names; a SYN-ACK, ACK or first data byte to the latest
transmission seen (in its clock domain) before it: it answers, or follows, that SYN. A
journey without TCP timestamps has no known transmissions (-1): one transmission as far
as natlens can tell, as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UNKNOWN_TX = -1


def syn_transmissions(sights: pd.DataFrame) -> pd.DataFrame:
    """Each journey's SYN transmissions per clock domain: columns journey, domain, syn_id
    (the TSval) and t (when first seen there), numbered ``tx`` 0, 1, ... in time order."""
    s = sights.loc[sights["syn"].notna() & sights["syn_id"].notna(), ["journey", "domain", "syn_id", "syn"]]
    if s.empty:
        return pd.DataFrame({"journey": [], "domain": [], "syn_id": [], "t": [], "tx": []})
    t = s.groupby(["journey", "domain", "syn_id"], sort=False)["syn"].min().rename("t").reset_index()
    t = t.sort_values(["journey", "domain", "t"], kind="stable").reset_index(drop=True)
    t["tx"] = t.groupby(["journey", "domain"]).cumcount()
    return t


def tx_groups(sights: pd.DataFrame, tx: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(per sighting, per transmission) one integer per (journey, clock domain): equal, the same
    pair; -1 where either is missing. Why: matching on the two text columns made each a Python
    string per row (1.5 million sightings: ~90 MiB a column, each call)."""
    journeys, journey_ids = pd.factorize(sights["journey"])
    domains, domain_ids = pd.factorize(sights["domain"])
    n = max(len(domain_ids), 1)

    def pair(j: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.where((j >= 0) & (d >= 0), j.astype(np.int64) * n + d, -1)

    return (pair(journeys, domains),
            pair(pd.Index(journey_ids).get_indexer(tx["journey"]), pd.Index(domain_ids).get_indexer(tx["domain"])))


def syn_tx(sights: pd.DataFrame, tx: pd.DataFrame,
           groups: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per sighting, the transmission of its first SYN (by its TSval); UNKNOWN_TX without one.
    ``groups``: tx_groups(sights, tx), when the caller has it."""
    out = np.full(len(sights), UNKNOWN_TX, dtype=np.int64)
    if tx.empty or sights.empty:
        return out
    gs, gt = groups or tx_groups(sights, tx)
    gt, pairs = pd.factorize(gt)  # numbered among the transmissions' pairs: fewer than 2^31
    gs = pd.Index(pairs).get_indexer(gs)
    ids = sights["syn_id"].to_numpy(dtype=float)
    has = np.flatnonzero((gs >= 0) & np.isfinite(ids))
    # a TSval is an unsigned 32-bit number: one int64 names the pair and it
    at = pd.Index(gt.astype(np.int64) << 32 | tx["syn_id"].to_numpy(dtype=np.int64)).get_indexer(
        gs[has].astype(np.int64) << 32 | ids[has].astype(np.int64))
    out[has] = np.where(at >= 0, tx["tx"].to_numpy(dtype=np.int64)[at], UNKNOWN_TX)
    return out


def answered_tx(sights: pd.DataFrame, col: str, tx: pd.DataFrame,
                groups: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per sighting, the transmission its event ``col`` (synack, ack, data) follows: the
    latest one of its journey first seen, in its clock domain, before it; UNKNOWN_TX where
    the journey has no known transmission or the event was not seen. ``groups``: as syn_tx."""
    out = np.full(len(sights), UNKNOWN_TX, dtype=np.int64)
    if tx.empty or sights.empty:
        return out
    gs, gt = groups or tx_groups(sights, tx)
    e = sights[col].to_numpy(dtype=float)
    i = np.flatnonzero(~np.isnan(e) & (gs >= 0))
    m = pd.DataFrame({"g": gs[i], "e": e[i], "i": i}).merge(
        pd.DataFrame({"g": gt, "t": tx["t"].to_numpy(dtype=float)}), on="g")
    before = (m["t"] <= m["e"]).groupby(m["i"]).sum()  # transmissions seen by then
    out[before.index.to_numpy()] = np.maximum(before.to_numpy() - 1, 0)
    return out
