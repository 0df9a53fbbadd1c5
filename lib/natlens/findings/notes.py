"""What the analysis could not read, see or decide, in plain words (the report's inputs section).

Why: a report that says more than the evidence shows is worse than none; every gap in
the input becomes a sentence naming the files or the connections it affects.
"""

from __future__ import annotations

import pandas as pd

from natlens.bundle import Bundle
from natlens.findings.verdict import plural
from natlens.nodefiles import DUMP_NAMES
from natlens.vocab import UNKNOWN


def unread_files(bundle: Bundle) -> list[str]:
    """Notes naming the bundle's files natlens did not read: one per reason, so that a copy of a
    dump natlens read in another format is not reported as something it cannot read."""
    by_why: dict[str, list[str]] = {}
    for f, why in bundle.not_read:
        by_why.setdefault(why, []).append(f)
    return [", ".join(files) + f" not read: {why}" for why, files in by_why.items()]


def missing_evidence(bundle: Bundle, logs: dict[str, dict[str, int]]) -> list[str]:
    """Warnings: nodes with captures but no rules, captures tcpdump said it dropped packets from
    (``logs``: per node, per capture point, what its collect-node.log says was dropped)."""
    out = [f"{n.path}: no iptables or nft dump ({', '.join(DUMP_NAMES['iptables'] + DUMP_NAMES['nft'])}): "
           "the rules cannot say whether it SNATs" for n in bundle.nodes
           if n.iptables is None and n.nft is None and n.captures]
    out += [f"{n.collect_log}: tcpdump -i {point} dropped {dropped:,} packets: records there may "
            "miss handshakes or retransmissions" for n in bundle.nodes
            for point, dropped in logs.get(n.name, {}).items() if dropped]
    return out


def no_client_record(journeys: pd.DataFrame, service: pd.DataFrame) -> list[str]:
    """Journeys seen without the client's own record, and how many of them are Service journeys."""
    n = int(journeys["client_uid"].isna().sum()) if not journeys.empty else 0
    if not n:
        return []
    kept = int(service["client_uid"].isna().sum())
    return [f"{plural(n, 'connection')} seen without the client's own record (only a SYN-ACK or "
            "mid-stream packets captured): client, SNAT and outcome unknown; "
            f"{kept} of them to a load-balancer Service (in the journeys), {n - kept} not"]


def undecided_notes(journeys: pd.DataFrame) -> list[str]:
    """For each decision, how many journeys it could not decide and the commonest reason."""
    out = []
    n = len(journeys)
    if not n:
        return out
    for col, what in (("snat", "whether it was SNATed"), ("loopback", "whether it looped back"),
                      ("outcome", "its outcome")):
        k = int((journeys[col] == UNKNOWN).sum())
        if k:
            ev = journeys.loc[journeys[col] == UNKNOWN, f"{col}_evidence"].mode()
            why = f": {ev.iloc[0]}" if len(ev) and ev.iloc[0] else ""
            out.append(f"{k} of {n} connections: cannot decide {what}{why}")
    k = int(journeys["lb_backend"].isna().sum())
    if k:
        out.append(f"{k} of {n} connections: the node the load balancer chose is not in the captures "
                   "(no capture from that node)")
    return out
