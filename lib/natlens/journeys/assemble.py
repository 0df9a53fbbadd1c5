"""The journeys table: decisions, latencies and the hop list of each journey, in time order.

Why: the table is a contract (JOURNEY_COLUMNS); building it is kept apart from the
decisions so that a new decision adds columns here and nowhere else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import concat_rows, join_groups, per_distinct
from natlens._memory import collector_paused
from natlens.journeys.client import Clients, ServiceMap
from natlens.journeys.decisions import Decision
from natlens.journeys.evidence import latency_records, nearness, point_label
from natlens.vocab import ESTABLISHED, NO, UNKNOWN, YES


def journey_table(r: pd.DataFrame, clients: Clients, decisions: dict[str, Decision],
                  fixes: pd.DataFrame, services: ServiceMap) -> pd.DataFrame:
    """One row per journey (index: journey number) with every JOURNEY_COLUMNS column but the id."""
    cl = clients.table.copy()
    for col in fixes.columns:  # what conntrack said of the client beats what the capture showed
        cl.loc[fixes.index, col] = fixes[col].astype(cl[col].dtype)
    for name, d in decisions.items():
        for col, s in d.columns(name).items():
            cl[col] = s.reindex(cl.index)
    _timings(cl, r)
    cl["ts"] = r.groupby("jn")["_t"].min()
    cl["policy"] = per_distinct(services.policy_of, cl["vip"], cl["vport"], cl["proto"])
    cl["service"] = concat_rows([cl["vip"].astype(str), ":", cl["vport"].astype("Int64").astype(str), "/",
                                 cl["proto"].astype(str)])
    loop = cl["loopback"].map({YES: "loopback", NO: "remote"}).fillna(UNKNOWN)
    cl["path"] = loop + "/" + cl["snat"].map({YES: "snat", NO: "no-snat"}).fillna("snat-unknown")
    _hops(cl, r)
    cl["client_is_node"] = cl["client_is_node"].fillna(False).astype(bool)
    return cl


_NO_LATENCY = np.array(["none: UDP has no handshake",
                        "none: no capture point holds the whole handshake and every SYN",
                        "none: the handshake did not complete"], dtype=object)


def _timings(cl: pd.DataFrame, r: pd.DataFrame) -> None:
    """Latencies in ms from the record nearest the client that holds the packets they need
    (``latency_from`` names it, and the nearer records passed over); the client's SYN
    retransmissions as the records that saw the most of them counted."""
    cl["established"] = cl["outcome"] == ESTABLISHED
    pick = latency_records(r, nearness(r, cl["client_uid"])).reindex(cl.index)
    shown = ["uid", "handshake_rtt", "connect", "capture"] + (["point"] if "point" in r else [])
    chosen = r[shown].drop_duplicates("uid").set_index("uid").reindex(pick["uid"])
    for col, src in (("handshake_ms", "handshake_rtt"), ("connect_ms", "connect")):
        cl[col] = chosen[src].to_numpy(dtype=float) * 1e3
    cl["first_byte_ms"] = pick["first_byte"].to_numpy(dtype=float) * 1e3
    cl["syn_retransmits"] = r.groupby("jn")["syn_retransmits"].max().reindex(cl.index)
    label = pd.Series(point_label(chosen.reset_index()).to_numpy(), index=cl.index).where(pick["uid"].notna())
    why = pick["why"].fillna("")
    named = label.where(why == "", label + " (" + why + ")")
    # one pass, each text a shared object: rows of text set by a mask, or a numpy text array, are slow
    none = _NO_LATENCY[np.where(cl["proto"] == "udp", 0, np.where(cl["established"], 1, 2))]
    cl["latency_from"] = named.where(named.notna(), pd.Series(none, index=cl.index))


def _hops(cl: pd.DataFrame, r: pd.DataFrame) -> None:
    """hops, captures, uids and hop_list: every record of the journey in time order."""
    srt = r.sort_values(["jn", "_t"], kind="stable")
    jn_sorted = srt["jn"].to_numpy()
    cl["hops"] = r.groupby("jn").size()
    caps = srt[["jn", "capture"]].drop_duplicates()
    cl["captures"] = join_groups(caps["jn"].to_numpy(), caps["capture"].to_numpy(dtype=object),
                                 int(jn_sorted.max()) + 1, ", ")[cl.index.to_numpy()]
    bounds = np.flatnonzero(np.diff(jn_sorted)) + 1
    journeys = pd.unique(jn_sorted)
    cl["uids"] = pd.Series(_lists(srt["uid"], bounds), index=journeys).reindex(cl.index)
    hop_at = pd.Series(concat_rows([point_label(r), ": ", r["four"]]), index=r.index)
    cl["hop_list"] = pd.Series(_lists(hop_at.loc[srt.index], bounds), index=journeys).reindex(cl.index)


def _lists(values: pd.Series, bounds: np.ndarray) -> list[list]:
    """The values cut into Python lists at ``bounds`` (the start of every group but the first)."""
    every = values.tolist()
    cuts = [0, *bounds.tolist(), len(every)]
    with collector_paused():
        return [every[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def number_journeys(cl: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Journeys in time order named J0, J1, ...; and the names by journey number."""
    cl = cl.sort_values("ts").reset_index()
    cl["journey"] = [f"J{i}" for i in range(len(cl))]
    return cl, pd.Series(cl["journey"].to_numpy(), index=cl["jn"].to_numpy())
