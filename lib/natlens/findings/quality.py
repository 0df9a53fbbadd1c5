"""How good the captures are as evidence, capture by capture, and which journeys that limits.

Why: tcpdump drops packets on busy nodes, captures are cut short, start late or end
early. A verdict must say so first where it limits the answer, naming the capture and
the connections it affects, instead of reading a missing packet as a missing event.

Per capture (summary.json ``inputs.quality[]``; **contract**, documented in
natlens.findings): ``node``, ``file``; ``first_ts``/``last_ts`` (float s since the epoch
UTC, the node's own clock; null for an empty capture) and ``span_s``; ``starts_late_s``
and ``ends_early_s`` (seconds after the incident's first packet / before its last,
over all captures, clock offsets subtracted); ``cut_short`` (the file ends in the
middle of a record); ``dropped`` ({"pcapng": n, "collect_log": n}: what the capturing
host said it dropped, null where that source says nothing); ``tcp_gaps`` (records with
data ACKed but never captured, Zeek's G/g) and ``lost_acks`` (the client's handshake
ACK lost here, another point saw it), both as Service journeys; ``cut_records`` (records
the capture's end cut before they ended); ``journeys_affected`` (Service journeys with a
gap or lost ACK here, cut here with their outcome unknown, or of this node and seen by
other captures before this one's first packet or after its last); ``limits`` (plain
sentences); ``damaged_bytes`` (bytes skipped because a record's length was impossible: the
records in them are lost) and ``damaged`` ([{"after_ts", "until_ts", "bytes"}]: between which
records, node clock, null at the file's start or end), whose Service journeys (this capture's
records overlapping a span, and this node's journeys other captures saw starting in one) are
``journeys_damaged`` and among ``journeys_affected``. A pcap file does not say when the capture stopped, only its last packet:
a capture "ends early" only where other captures saw this node's journeys after it.
"""

from __future__ import annotations

import pandas as pd

from natlens._grouped import is_in, rows_where
from natlens.bundle import Bundle
from natlens.journeys.evidence import content_gaps, lost_ack
from natlens.vocab import END_CAPTURE, UNKNOWN

EDGE_S = 1.0  # a capture ending this much before the others and cutting a journey names it
EDGE_MARGIN_S = 0.001  # a journey this close to a capture's first or last packet is inside it


def capture_quality(inputs: list[dict], logs: dict[str, dict[str, int]], journeys: pd.DataFrame,
                    records: pd.DataFrame, offsets: dict[str, float]) -> list[dict]:
    """One quality entry per capture, in the order of ``inputs`` (see the module doc); ``logs``:
    per node, per capture point, the packets its collect-node.log says tcpdump dropped."""
    window = _incident_window(inputs, offsets)
    service = journeys["journey"] if not journeys.empty else []
    flawed = _flawed_records(rows_where(records, is_in(records["journey"], service))) if len(records) else records
    return [_entry(c, window, offsets.get(c["node"], 0.0), flawed, journeys, logs.get(c["node"], {}))
            for c in inputs]


def _incident_window(inputs: list[dict], offsets: dict[str, float]) -> tuple[float, float] | None:
    """The earliest first packet and the latest last packet of all captures, on one clock."""
    firsts = [c["first_ts"] - offsets.get(c["node"], 0.0) for c in inputs if c.get("first_ts") is not None]
    lasts = [c["last_ts"] - offsets.get(c["node"], 0.0) for c in inputs if c.get("last_ts") is not None]
    return (min(firsts), max(lasts)) if firsts else None


def _flawed_records(r: pd.DataFrame) -> pd.DataFrame:
    """The records with a flaw the capture caused: gap, lost ACK, cut by the capture's end."""
    return r.assign(_gap=content_gaps(r), _lost_ack=lost_ack(r, by="journey"), _cut=r["end"] == END_CAPTURE)


def _entry(c: dict, window: tuple[float, float] | None, offset: float, flawed: pd.DataFrame,
           journeys: pd.DataFrame, log: dict[str, int]) -> dict:
    """The quality entry of one capture."""
    mine = flawed[flawed["capture"] == c["label"]] if len(flawed) else flawed.assign(_gap=[], _lost_ack=[],
                                                                                     _cut=[])
    first, last = c.get("first_ts"), c.get("last_ts")
    late = early = 0.0
    if window is not None and first is not None:
        late = round(max(0.0, first - offset - window[0]), 3)
        early = round(max(0.0, window[1] - (last - offset)), 3)
    before, after = _outside(journeys, c["node"], first, last, offset)
    unknown = set(journeys.loc[journeys["outcome"] == UNKNOWN, "journey"].tolist()) if len(journeys) else set()
    gaps, acks = set(mine.loc[mine["_gap"], "journey"].tolist()), set(mine.loc[mine["_lost_ack"], "journey"].tolist())
    cut = set(mine.loc[mine["_cut"], "journey"].tolist()) & unknown
    spans = _damaged_spans(c)
    damaged = _in_damage(spans, mine, journeys, c["node"], offset)
    e = {"node": c["node"], "file": c["file"], "first_ts": first, "last_ts": last,
         "span_s": None if first is None else round(last - first, 6), "starts_late_s": late,
         "ends_early_s": early, "cut_short": bool(c.get("unread_bytes")),
         "dropped": {"pcapng": c.get("dropped"), "collect_log": log.get(c["label"].split("/")[-1])},
         "tcp_gaps": len(gaps), "lost_acks": len(acks), "cut_records": int(mine["_cut"].sum()),
         "journeys_affected": _in_order(gaps | acks | cut | damaged | set(before) | set(after), journeys),
         "journeys_cut": _in_order(cut, journeys), "journeys_before": before, "journeys_after": after,
         "damaged_bytes": int(c.get("skipped_bytes", {}).get("bad-length", 0)), "damaged": spans,
         "journeys_damaged": _in_order(damaged, journeys)}
    e["limits"] = _limits(e, before, after)
    return e


def _damaged_spans(c: dict) -> list[dict]:
    """Where the capture's unreadable bytes are, in time (s, node clock; None: file edge)."""
    def sec(ns: int | None) -> float | None:
        return None if ns is None else ns / 1e9

    return [{"after_ts": sec(d["after_ns"]), "until_ts": sec(d["until_ns"]), "bytes": d["bytes"]}
            for d in c.get("damaged", [])]


def _in_damage(spans: list[dict], mine: pd.DataFrame, journeys: pd.DataFrame, node: str,
               offset: float) -> set[str]:
    """Service journeys that may have lost packets in the capture's unreadable bytes: its
    records that overlap a span, and this node's journeys that start inside one (a
    connection wholly inside leaves no record in this capture at all)."""
    out: set[str] = set()
    here = ((journeys["client_node"] == node) | (journeys["lb_backend"] == node)) if len(journeys) else None
    for sp in spans:
        lo = -float("inf") if sp["after_ts"] is None else sp["after_ts"]
        hi = float("inf") if sp["until_ts"] is None else sp["until_ts"]
        if len(mine):
            out |= set(mine.loc[(mine["ts"] <= hi) & (mine["last_ts"] >= lo), "journey"])
        if here is not None:
            inside = here & (journeys["ts"] >= lo - offset) & (journeys["ts"] <= hi - offset)
            out |= set(journeys.loc[inside, "journey"])
    return out


def _outside(journeys: pd.DataFrame, node: str, first: float | None, last: float | None,
             offset: float) -> tuple[list[str], list[str]]:
    """The Service journeys of this node (its client's or the LB's pick) that other captures saw
    starting before this capture's first packet, or after its last: it should have seen them."""
    if first is None or journeys.empty:
        return [], []
    here = (journeys["client_node"] == node) | (journeys["lb_backend"] == node)
    before = journeys.loc[here & (journeys["ts"] < first - offset - EDGE_MARGIN_S), "journey"]
    after = journeys.loc[here & (journeys["ts"] > last - offset + EDGE_MARGIN_S), "journey"]
    return list(before), list(after)


def _in_order(ids: set[str], journeys: pd.DataFrame) -> list[str]:
    """The journeys ``ids`` in the table's order (any not in it after them, sorted)."""
    if not ids:
        return []
    known = journeys["journey"] if not journeys.empty else pd.Series([], dtype=object)
    listed = known[is_in(known, list(ids))].tolist()
    return listed + sorted(ids - set(listed))


def _limits(e: dict, before: list[str], after: list[str]) -> list[str]:
    """The entry's flaws in plain words (empty: nothing known to be wrong with it)."""
    out, f = [], e["file"]
    if e["first_ts"] is None:
        return [f"{f} holds no packet"]
    if e["cut_short"]:
        out.append(f"{f} is cut short in the middle of a record (the capture was killed or the file "
                   "truncated)")
    if before:
        out.append(f"{f} starts {e['starts_late_s']:.1f} s after the first capture, after "
                   f"{_some(before)} of {e['node']} that other captures saw had begun")
    if after:
        out.append(f"{f} ends {e['ends_early_s']:.1f} s before the last capture, before {_some(after)} of "
                   f"{e['node']} that other captures saw")
    if e["damaged_bytes"]:
        out.append(_damage_sentence(e))
    for source, n in e["dropped"].items():
        if n:
            out.append(f"{f}: the capturing host dropped {n:,} packets ({_SOURCES[source]})")
    if e["tcp_gaps"]:
        out.append(f"{f}: {e['tcp_gaps']} connection(s) miss data there that the other side ACKed (packets "
                   "lost by the capture)")
    if e["lost_acks"]:
        out.append(f"{f}: {e['lost_acks']} connection(s) lost the client's handshake ACK there that another "
                   "point saw")
    return out


def _clock(ts: float | None, edge: str) -> str:
    """Epoch seconds as "06:40:02.100" (UTC), or `edge` for a span open at the file's edge."""
    return edge if ts is None else pd.Timestamp(ts, unit="s", tz="UTC").strftime("%H:%M:%S.%f")[:-3]


def _damage_sentence(e: dict) -> str:
    """'{file}: 1,234 bytes with impossible record lengths were skipped (2 places, the first
    between 06:40:02.100 and 06:40:02.300 UTC, node clock): the packets in them are lost;
    3 connections (...) were open there'."""
    spans = e["damaged"]
    where = ""
    if spans:
        first = spans[0]
        places = f"{len(spans)} places, the first" if len(spans) > 1 else "one place,"
        where = (f" ({places} between {_clock(first['after_ts'], 'the file start')} and "
                 f"{_clock(first['until_ts'], 'the file end')} UTC, node clock)")
    ids = e["journeys_damaged"]
    whose = (f"; {_some(ids)} {'was' if len(ids) == 1 else 'were'} open there" if ids
             else "; no Service connection is known to have been open there")
    return (f"{e['file']}: {e['damaged_bytes']:,} bytes with impossible record lengths were skipped{where}: "
            f"the packets in them are lost{whose}")


def _some(ids: list[str]) -> str:
    """'3 connections (J1, J4, J9)', at most five named."""
    more = f", {len(ids) - 5} more" if len(ids) > 5 else ""
    return f"{len(ids)} connection{'s' if len(ids) != 1 else ''} ({', '.join(ids[:5])}{more})"


_SOURCES = {"pcapng": "pcapng interface statistics", "collect_log": "tcpdump's count in collect-node.log"}


def unknown_outcomes(journeys: pd.DataFrame, quality: list[dict]) -> str | None:
    """One sentence on the journeys whose outcome is unknown and the captures that made it so
    (None when every outcome is known)."""
    unk = set(journeys.loc[journeys["outcome"] == UNKNOWN, "journey"])
    if not unk:
        return None
    head = f"the outcome of {len(unk)} of {len(journeys)} connections is unknown"
    parts = []
    for q in quality:
        at = pd.Timestamp(q["last_ts"], unit="s", tz="UTC").strftime("%H:%M:%S UTC") if q["last_ts"] else "?"
        early = f", {q['ends_early_s']:.1f} s before the other captures" if q["ends_early_s"] > EDGE_S else ""
        short = ", cut short mid-record" if q["cut_short"] else ""
        cut, after = len(unk & set(q["journeys_cut"])), len(unk & set(q["journeys_after"]))
        lost = q["tcp_gaps"] or q["lost_acks"] or any(q["dropped"].values())
        if cut and lost:
            parts.append(f"{q['file']} lost packets and ends at {at}{early}{short} with {cut} of them "
                         "still open there (their last packets may be among those it lost)")
        elif cut:
            parts.append(f"{q['file']} ends at {at}{early}{short} while {plural_them(cut)} still open")
        if after:
            parts.append(f"{q['file']} ends at {at}{early}{short}, before {plural_them(after, 'began')}")
        damaged = len(unk & set(q.get("journeys_damaged", [])))
        if damaged:
            parts.append(f"{q['file']} holds unreadable bytes (impossible record lengths, skipped) where "
                         f"{plural_them(damaged)} open")
    if not parts:
        return head + ": no capture point shows how they ended"
    return head + " because " + "; ".join(parts)


def plural_them(n: int, verb: str = "were") -> str:
    """'1 of them was', '3 of them were' (verb 'were' or a past tense)."""
    return f"{n} of them " + ("was" if verb == "were" and n == 1 else verb)


def uncaptured_nodes(bundle: Bundle, inventory_nodes: list[str]) -> list[str]:
    """The cluster's nodes (the bundle's and the inventory's) that no capture covers."""
    captured = {n.name for n in bundle.nodes if n.captures}
    return sorted(({n.name for n in bundle.nodes} | set(inventory_nodes)) - captured)


def blind_spots(journeys: pd.DataFrame, uncaptured: list[str]) -> list[str]:
    """Sentences on the nodes no capture covers, the ones the journeys touch first: a client
    node without a capture hides what the load balancer sent back to it and what never left it."""
    out = []
    clients = set(journeys["client_node"].dropna()) if not journeys.empty else set()
    picks = set(journeys["lb_backend"].dropna()) if not journeys.empty else set()
    for n in uncaptured:
        k = int((journeys["client_node"] == n).sum()) if not journeys.empty else 0
        if n in clients:
            out.append(f"{n} has no capture, yet it is the client node of {k} connection{'s' if k != 1 else ''} "
                       "seen elsewhere: what the load balancer sent back to it (loopbacks) and what never left "
                       "it are not in these captures.")
        elif n in picks:
            out.append(f"{n} has no capture: what happened to the connections the load balancer sent it is "
                       "seen only at the other nodes.")
    rest = [n for n in uncaptured if n not in clients | picks]
    if rest:
        out.append(f"No capture from {', '.join(rest)}: what happened on {'it' if len(rest) == 1 else 'them'} "
                   "is seen only where the other nodes' captures show it.")
    return out

