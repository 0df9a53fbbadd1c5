"""What each connection record of a journey definitely shows, and which record to trust for what.

Why: one connection is seen at several capture points, and real captures lose packets,
end early or start late. A record cut by the capture's end, or missing a packet another
point saw, must not decide the journey: a definite observation at any point (the
client's ACK, data or FIN: it connected; a RST refusing the SYN; SYNs that stopped
while the capture went on) wins over a record that shows nothing. Latencies come from
the point nearest the client that holds every packet they need.

Nearness to the client (``nearness``, lower is nearer): 0 the client's own record, 1 on
the client's node before the NIC (the pod's veth, in an ``any`` capture), 2 the client's
node's NIC on the way out, 3 another node, 4 the client's node after the load balancer
(a copy that came back).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import distinct_text, per_distinct
from natlens.vocab import (
    END_RST,
    END_TIMEOUT,
    ESTABLISHED,
    RESET,
    RESET_STATES,
    TIMED_OUT,
    icmp_ends_connect,
    icmp_words,
)

REFUSED_STATE = "REJ"  # Zeek: the SYN was answered by a RST, nothing else


def point_label(r: pd.DataFrame) -> pd.Series:
    """Each record's capture, with the interface when the capture's name does not say it:
    "node-1/any (veth1a2b)", "node-1/eth0"."""
    points = r["point"] if "point" in r else pd.Series(None, index=r.index, dtype=object)
    return pd.Series(per_distinct(_point_label, r["capture"], points), index=r.index, dtype=object)


def _point_label(capture, point) -> str:
    cap = str(capture)
    return f"{cap} ({point})" if isinstance(point, str) and point != cap.rsplit("/", 1)[-1] else cap


def nearness(r: pd.DataFrame, client_uid: pd.Series) -> pd.Series:
    """How near each record is to the client (0 = its own record; see the module doc)."""
    own = r["uid"].to_numpy(dtype=object) == r["jn"].map(client_uid).to_numpy(dtype=object)
    return pd.Series(np.select(
        [own, r["on_client"] & r["pre_lb"] & ~r["egress"], r["on_client"] & r["pre_lb"], ~r["on_client"]],
        [0, 1, 2, 3], 4), index=r.index)


def wrong_answers(r: pd.DataFrame) -> pd.Series:
    """Records of a SYN-ACK from the wrong source that the client reset (a loopback's answer
    from nodeIP:NodePort): they show the client refusing, not the connection's outcome."""
    return (r["from_client"] & ~r["pre_lb"] & r["history"].str.contains("h", regex=False)
            & r["history"].str.contains("R", regex=False))


def client_refusals(r: pd.DataFrame) -> pd.Series:
    """Records whose only RSTs are the client's and where the connection never got going:
    the client's kernel refusing a packet its socket did not expect (a SYN-ACK from the
    wrong address, seen there or at another point).

    Why: Linux sends no RST when a connect gives up or a socket in SYN-SENT is closed, so a
    client RST before the connection was made is its refusal of an answer, not its
    connection being reset: the socket goes on waiting (and retransmitting its SYN). With
    br_netfilter the refusing RST is seen on the pod bridge apart from the SYN-ACK it
    refuses (another tuple after NAT), in a record holding nothing else. Only a RST from
    the responder's side (Zeek's lower-case ``r``) resets the client's connection.
    """
    hist = r["history"].fillna("").astype(str)
    made = r["established"].fillna(False).astype(bool) | hist.str.contains("[DFdf]", regex=True)
    return (hist.str.contains("R", regex=False) & ~hist.str.contains("r", regex=False) & ~made
            & (r["proto"] == "tcp"))


def icmp_refusals(r: pd.DataFrame) -> pd.Series:
    """Records on the client's node, before the load balancer, holding an ICMP error about the
    client's packet that ends a connect (port or host unreachable, time exceeded: Linux aborts
    a SYN-SENT socket on it, ECONNREFUSED / EHOSTUNREACH): a definite refusal.

    Why there: an ICMP error seen on another node may still be lost on its way back; on the
    client's node it is on the client's side of the network."""
    if "icmp_errors" not in r or not len(r):
        return pd.Series(False, index=r.index)
    held = ((r["icmp_errors"].fillna(0) > 0) & (r["icmp_quotes"] == "orig")).fillna(False).astype(bool)
    h = r[held]  # the few records that hold one
    ends = np.zeros(len(r), dtype=bool)
    ends[held.to_numpy()] = np.array([icmp_ends_connect(t, c, ":" in str(src)) for t, c, src in
                                      zip(h["icmp_type"], h["icmp_code"], h["icmp_src"], strict=True)], dtype=bool)
    near = (r["on_client"] & r["pre_lb"]) if "on_client" in r else pd.Series(True, index=r.index)
    return held & ends & near


def icmp_said(r: pd.DataFrame) -> pd.Series:
    """'; ICMP port unreachable from 198.18.16.1 about the client's packet' for the records of
    icmp_refusals, '' for the others."""
    hit = icmp_refusals(r)
    out = pd.Series("", index=r.index, dtype=object)
    for i in r.index[hit]:
        t, c, src = r.at[i, "icmp_type"], r.at[i, "icmp_code"], str(r.at[i, "icmp_src"])
        out.at[i] = f"; ICMP {icmp_words(int(t), int(c), ':' in src)} from {src} about the client's packet"
    return out


def observations(r: pd.DataFrame) -> pd.Series:
    """Per TCP record, the outcome it definitely shows (None: nothing definite).

    established: the handshake completed there, or the client sent data or a FIN (it
    only does once connected); reset: the SYN was refused or reset there (not a RST of the
    client's own refusing an answer: ``client_refusals``; nor a wrong answer the client
    reset: ``wrong_answers``), or an ICMP error refused it (``icmp_refusals``); timed out: the client's SYNs stopped there while the
    capture went on past the next retransmission.
    """
    hist = r["history"].fillna("").astype(str)
    connected = r["established"].fillna(False).astype(bool) | (
        r["syn_ts"].notna() & hist.str.contains("[DFdf]", regex=True))
    reset = r["conn_state"].isin(list(RESET_STATES)) | (r["end"] == END_RST) | icmp_refusals(r)
    tcp = r["proto"] == "tcp"
    obs = np.select([connected, reset & ~wrong_answers(r) & ~client_refusals(r), r["end"] == END_TIMEOUT],
                    [ESTABLISHED, RESET, TIMED_OUT], "")
    return pd.Series(np.where(tcp & (obs != ""), obs, None), index=r.index, dtype=object)


def missed_syns(r: pd.DataFrame, by: str = "jn") -> pd.Series:
    """Records that saw fewer of the client's SYNs than another record of their journey (``by``).

    Why: a point reached only by a retransmitted SYN (the first went to another endpoint,
    or was lost before it) counts that SYN as the first, so its idea of when the next
    retransmission is due, and hence of when the client gave up, is off by the SYNs it
    missed: its "timed out" (silent past the next retransmission) is not evidence.
    """
    syns = r["syn_retransmits"].where(r["syn_ts"].notna())
    most = syns.groupby(r[by]).transform("max")
    return (syns < most).fillna(False).astype(bool)


def refused(r: pd.DataFrame) -> pd.Series:
    """Records where the SYN was answered by a RST and nothing else: a definite refusal that
    contradicts another point's completed handshake."""
    return (r["conn_state"] == REFUSED_STATE) & ~wrong_answers(r)


def lost_ack(r: pd.DataFrame, by: str = "jn") -> pd.Series:
    """Records that saw the client's handshake end only in a packet with data or a FIN, and no
    pure ACK of the SYN-ACK after it, while another record of their journey (``by``) saw the
    client's handshake ACK as a pure one: the capture lost that ACK there and took the
    client's next packet for it. False where the handshake was not seen.

    Why by the packet and not by time: the SYN -> ACK round trip is alike at every point only
    in theory. On a busy node a SYN or a SYN-ACK waits a millisecond or more between two
    points (a new conntrack entry, neighbour resolution, a deferred softirq), as long as a
    lost ACK would add. A pure ACK seen after the data is no loss (packets reorder between
    points); a lost pure ACK followed by another pure one (a window update) goes unseen.
    """
    tcp = r["proto"] == "tcp"
    none_here = ~r["pure_ack_seen"].astype("boolean").fillna(True).astype(bool) & tcp
    pure = r["ack_pure"].astype("boolean").fillna(False).astype(bool) & tcp
    return none_here & pure.groupby(r[by]).transform("any")


def lossy_captures(r: pd.DataFrame, dropped: set[str], by: str = "jn") -> set[str]:
    """The captures known to lose packets: ``dropped`` (their host said so) and those with a
    record that misses data the other side ACKed (Zeek's G/g) or lost the client's handshake
    ACK another point of its journey (``by``) saw."""
    return set(dropped) | distinct_text(r.loc[content_gaps(r) | lost_ack(r, by=by), "capture"])


def content_gaps(r: pd.DataFrame) -> pd.Series:
    """Records that miss data the other side ACKed (Zeek's G/g): the capture lost it."""
    return r["history"].fillna("").astype(str).str.contains("[Gg]", regex=True)


def latency_records(r: pd.DataFrame, rank: pd.Series) -> pd.DataFrame:
    """Per journey (index: jn), the record latencies are taken from, and why.

    It is the nearest record to the client that saw the whole handshake, every SYN the
    journey's records saw, and the client's pure ACK where another record saw it (else it
    lost that ACK: ``lost_ack``). Columns: ``uid`` (None: no such record), ``why`` (the records
    passed over), and the chosen record's ``first_byte`` when its responder side has no gap.
    """
    cand = r[(r["proto"] == "tcp") & r["handshake_rtt"].notna() & r["connect"].notna()].assign(
        _rank=rank)
    if cand.empty:
        return pd.DataFrame(columns=["uid", "why", "first_byte"])
    most_syns = r.groupby("jn")["syn_retransmits"].max().reindex(cand["jn"]).fillna(0).to_numpy()
    ok_rtt = ~lost_ack(cand)
    ok_syns = cand["syn_retransmits"].fillna(0).to_numpy() >= most_syns
    good = cand[ok_rtt & ok_syns].sort_values(["jn", "_rank", "_t"]).drop_duplicates("jn").set_index("jn")
    out = pd.DataFrame(index=pd.Index(sorted(cand["jn"].unique()), name="jn"))
    out["uid"] = good["uid"]
    gap = good["history"].fillna("").str.contains("g", regex=False)
    out["first_byte"] = good["first_byte"].where(~gap)
    used = good.reindex(cand["jn"])
    out["why"] = _passed_over(cand, ok_rtt, ok_syns, used["handshake_rtt"].to_numpy(), used["_rank"].to_numpy())
    return out


def _passed_over(cand: pd.DataFrame, ok_rtt: pd.Series, ok_syns: np.ndarray, used_rtt: np.ndarray,
                 chosen_rank: np.ndarray) -> pd.Series:
    """Per journey, why records nearer the client than the chosen one were not used (one
    reason per capture); ``used_rtt``, ``chosen_rank``: the chosen record's, per row of cand."""
    nearer = (~(ok_rtt & ok_syns) & ~(cand["_rank"].to_numpy() > np.nan_to_num(chosen_rank, nan=9))).to_numpy()
    near = cand[nearer]
    why = pd.Series([_passed_over_why(c, rtt, b, rtt_ok) for c, rtt, b, rtt_ok in zip(
        near["capture"], near["handshake_rtt"], used_rtt[nearer], ok_rtt[nearer], strict=True)],
        index=near.index, dtype=object)
    picked = pd.DataFrame({"jn": near["jn"], "capture": near["capture"], "why": why})
    picked = picked.drop_duplicates(["jn", "capture"])
    return picked.groupby("jn")["why"].agg("; ".join)


def _passed_over_why(capture: str, rtt: float, used: float, rtt_ok: bool) -> str:
    """Why one record was passed over for the latency."""
    if rtt_ok:
        return f"{capture} missed some of the client's SYNs"
    there = f"SYN -> ACK {rtt * 1e3:.3f} ms there" + ("" if np.isnan(used) else f", {used * 1e3:.3f} ms at the point used")
    return f"{capture} lost the client's ACK (no pure ACK of the SYN-ACK there; {there})"
