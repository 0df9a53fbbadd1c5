"""The report's tables, each one call on a `ReportData` returning a pandas DataFrame.

DataFrames display escaped in notebooks and HTML, so strings from captures and
dumps are safe to show as they are.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import pandas as pd

from natlens.connections import SYN_RTO_S
from natlens.errors import NatlensError
from natlens.findings import failure_words
from natlens.journeys.evidence import point_label
from natlens.report.data import ReportData
from natlens.vocab import ANSWERED, ESTABLISHED, NO, RESET, TIMED_OUT, UNANSWERED, UNKNOWN, YES

OUTCOME_ORDER = [ESTABLISHED, ANSWERED, TIMED_OUT, UNANSWERED, RESET, UNKNOWN]

SNAT_COLUMNS = ["service", "source_node", "policy", "connections", "snat", "ratio", "predicted_by_rules"]
LATENCY_METRICS = ("handshake_ms", "connect_ms", "first_byte_ms")
VERSION_PACKAGES = ("natlens", "numpy", "pandas", "pyarrow", "dpkt", "matplotlib", "papermill",
                    "nbconvert", "nbclient", "ipykernel", "cryptography")


def snat(d: ReportData) -> pd.DataFrame:
    """SNAT per Service and source node: connections, SNATed, ratio, and whether the rules agree.

    The host_network column is shown when a row is (or may be) the node's own connections
    ("yes" / "unknown"; True in tables written before it was yes/no/unknown): those rows are
    kept apart from the node's pods', and the table must say which is which."""
    df = d.snat
    if df.empty:
        return pd.DataFrame(columns=SNAT_COLUMNS)
    cols = list(SNAT_COLUMNS)
    if "host_network" in df and host_network_text(df["host_network"]).isin([YES, UNKNOWN]).any():
        cols.insert(2, "host_network")  # host-network clients get their own row: say which
    out = df[cols].reset_index(drop=True)
    out["ratio"] = pd.to_numeric(out["ratio"], errors="coerce").round(3)
    return out


def host_network_text(col: pd.Series) -> pd.Series:
    """A SNAT table's host_network as "yes" / "no" / "unknown" (older tables hold bools)."""
    return col.map(lambda v: v if isinstance(v, str) else
                   UNKNOWN if v is None or pd.isna(v) else YES if bool(v) else NO)


LOOPBACK_COLUMNS = ["time_utc", "journey", "client_node", "client_h", "client_p", "service",
                    "lb_backend", "outcome", "syn_retransmits", "loopback_evidence"]
LOOPBACK_GROUP_COLUMNS = ["service", "outcome", "connections", "when_utc",
                          "journeys", "loopback_evidence"]


def loopback(d: ReportData, grouped: bool = False) -> pd.DataFrame:
    """The loopback journeys (connections the LB sent back to their own node), key columns.

    ``grouped``: one row per piece of evidence, as a reader wants it: journeys whose evidence is
    the same but for the client's port (written as PORT) are one row, with how many, when, and
    which. `d.loopback` holds every column of these journeys.
    """
    df = d.loopback
    if df.empty:
        return pd.DataFrame(columns=LOOPBACK_GROUP_COLUMNS if grouped else LOOPBACK_COLUMNS)
    df = df.reset_index(drop=True)
    df.insert(0, "time_utc", _utc_col(df["ts"]))
    if grouped:
        return _grouped_loopbacks(df)
    return df[LOOPBACK_COLUMNS]


def _grouped_loopbacks(df: pd.DataFrame) -> pd.DataFrame:
    """Loopback rows with the same evidence (the client's port aside) as one row."""
    evidence = [str(e).replace(f":{int(p)} ", ":PORT ") if pd.notna(p) else str(e)
                for e, p in zip(df["loopback_evidence"], df["client_p"], strict=True)]
    # the LB sent each back to its client's node, which the evidence names: no column for either
    df = df.assign(loopback_evidence=evidence)
    keys = ["service", "outcome", "loopback_evidence"]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        ids = g["journey"].astype(str).tolist()
        first, last = g["time_utc"].iloc[0][11:], g["time_utc"].iloc[-1][11:]  # the date is in the banner
        rows.append({**dict(zip(keys, key, strict=True)), "connections": len(g),
                     "when_utc": first if first == last else f"{first} – {last}",
                     "journeys": ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")})
    return pd.DataFrame(rows, columns=LOOPBACK_GROUP_COLUMNS)


CHOICE_KEYS = ["client_node", "lb_backend"]


def lb_choice(d: ReportData, service: str) -> pd.DataFrame:
    """For one Service: per client node and the node the load balancer chose, how the connections
    ended. It shows at a glance whether failures follow the load balancer's choice (the client's
    own node) or not. ``lb_backend`` "not seen" where no capture shows the choice."""
    j = d.journeys
    j = j[j["service"] == service] if not j.empty else j
    if j.empty:
        return pd.DataFrame(columns=["client_node", "lb_backend", "connections"])
    j = j.assign(lb_backend=j["lb_backend"].where(j["lb_backend"].notna() & (j["lb_backend"] != UNKNOWN),
                                                  "not seen"),
                 client_node=j["client_node"].fillna(UNKNOWN))
    own = j["lb_backend"] == j["client_node"]
    j = j.assign(lb_backend=j["lb_backend"].where(~own, j["lb_backend"] + " (its own)"))
    counts = pd.crosstab([j["client_node"], j["lb_backend"]], j["outcome"])
    order = [o for o in OUTCOME_ORDER if o in counts.columns] + [o for o in counts.columns if o not in OUTCOME_ORDER]
    out = counts[order].astype("Int64")
    out.insert(0, "connections", out.sum(axis=1).astype("Int64"))
    out.columns.name = None
    return out.reset_index()


LB_COLUMNS = ["service", "behaviour", "SNATed: sent back to own node", "pod source: sent to own node",
              "source rewritten"]


def lb(d: ReportData) -> pd.DataFrame:
    """How each Service's load balancer picked backends (findings.lb), one row per Service: the
    counts its behaviour rests on (how its loopbacks ended is in the words above it)."""
    rows = []
    for f in d.summary.get("lb_behaviour") or []:
        ns, ps, rw = f["node_source"], f["pod_source"], f["rewritten"]
        rows.append([f["service"], f["behaviour"], f"{ns['to_source_node']} of {ns['of']}",
                     f"{ps['to_client_node']} of {ps['of']}", f"{rw['rewritten']} of {rw['of']}"])
    return pd.DataFrame(rows, columns=LB_COLUMNS)


def hops(d: ReportData, journey_id: Any = None) -> pd.DataFrame:
    """The worked journey hop by hop (default: the first loopback journey), times in UTC;
    ``since_first_us`` whole microseconds after its first packet (the capture's own resolution)."""
    df = d.journey_hops(journey_id)
    if df.empty:
        return df
    df = df.reset_index(drop=True)
    # hops are microseconds apart: show them, not the raw epoch ns
    t = df["ts_ns"].astype("int64")
    df.insert(df.columns.get_loc("ts_ns"), "since_first_us", ((t - t.min()) // 1000).astype("Int64"))
    df = df.drop(columns="ts_ns")
    df["ts"] = _utc_col(df["ts"], digits=6)
    return df


def failures(d: ReportData) -> pd.DataFrame:
    """Failed connections per mechanism (findings.failures), most first: what it means, how
    many, which journeys."""
    f = d.summary.get("failures") or {}
    rows = [{"failure": m, "connections": k, "meaning": failure_words.MEANING.get(m, ""),
             "journeys": ", ".join(f["journeys"][m][:6]) + (", ..." if len(f["journeys"][m]) > 6 else "")}
            for m, k in (f.get("by_mechanism") or {}).items()]
    return pd.DataFrame(rows, columns=["failure", "connections", "meaning", "journeys"])


RETRY_GAP_US = SYN_RTO_S * 1e6 / 2  # a client SYN this long after its first is a retransmission


def compact_hops(d: ReportData, journey_id: Any, first_attempt: bool = False) -> pd.DataFrame:
    """One journey's hops in five columns that fit a narrow page: where, when (µs after the
    first), the packet as addresses there, its TCP flags, and what it is. ``first_attempt``:
    only the hops before the client's first retransmitted SYN (each retry is one more round)."""
    df = hops(d, journey_id)
    if df.empty:
        return df
    if first_attempt:
        retry = df[(df["flags"] == "S") & (df["since_first_us"] > RETRY_GAP_US)]
        df = df[df["since_first_us"] < retry["since_first_us"].min()] if len(retry) else df
    port = lambda s: s.map(lambda p: "" if pd.isna(p) else f":{int(p)}")  # noqa: E731 (ICMP: no port)
    packet = df["src"].astype(str) + port(df["sport"]) + " -> " + df["dst"].astype(str) + port(df["dport"])
    where = point_label(df)
    return pd.DataFrame({"capture": where, "since_first_us": df["since_first_us"], "packet": packet,
                         "flags": df["flags"], "note": df["note"]})


def worked_hops(d: ReportData, journey_id: Any = None) -> pd.DataFrame:
    """The worked journey (default: the first loopback journey), every hop, in the compact form."""
    journey_id = d.worked_journey_id() if journey_id is None else journey_id
    return pd.DataFrame() if journey_id is None else compact_hops(d, journey_id)


def latency(d: ReportData) -> pd.DataFrame:
    """Latency percentiles per path: count, p50, p90, p99, max for each metric (ms)."""
    df = d.latency
    if df.empty:
        return pd.DataFrame()
    rows = []
    for path, g in df.groupby("path", dropna=False):
        for m in LATENCY_METRICS:
            v = pd.to_numeric(g[m], errors="coerce").dropna()
            if v.empty:
                continue
            rows.append({"path": path, "metric": m.removesuffix("_ms"), "count": len(v),
                         "p50": v.quantile(0.5), "p90": v.quantile(0.9), "p99": v.quantile(0.99),
                         "max": v.max()})
    out = pd.DataFrame(rows)
    return out.round(3) if not out.empty else out


def outcomes(d: ReportData) -> pd.DataFrame:
    """Service journeys per outcome (natlens.vocab: established, timed out, reset, ...), with
    counts and shares."""
    t = connection_outcomes(d)
    if t.empty:
        return pd.DataFrame(columns=["outcome", "connections", "share"])
    out = t["outcome"].value_counts().rename_axis("outcome").reset_index(name="connections")
    out["share"] = (out["connections"] / out["connections"].sum()).round(4)
    return out


def connection_outcomes(d: ReportData) -> pd.DataFrame:
    """One row per Service journey: ts (epoch s) and outcome, for the timeline."""
    j = d.journeys
    return pd.DataFrame({"ts": pd.to_numeric(j["ts"], errors="coerce"),
                         "outcome": j["outcome"].astype(str)}).dropna(subset=["ts"])


def inputs(d: ReportData) -> pd.DataFrame:
    """Every input file: name, size, SHA-256, and for captures records decoded and skipped."""
    return d.files.reset_index(drop=True)


def parameters(d: ReportData, **extra: Any) -> pd.DataFrame:
    """The report's parameters (the Crypto-PAn key is never among them), with how it was made:
    generated_utc, natlens_version and the command line (natlens.report.data.run_info). In an
    anonymized report `extra` values are mapped like the rest: paths and names."""
    if d.anonymizer is not None and extra:
        extra = d.anonymizer.params(extra)
    p = {**d.parameters, **extra}
    return pd.DataFrame({"parameter": list(p), "value": [_show(v) for v in p.values()]})


def versions() -> pd.DataFrame:
    """Versions of Python and the packages that produced the report; natlens's is the one the
    kernel imported (natlens.__version__), which an installed copy elsewhere may not be."""
    import natlens

    rows = [{"component": "python", "version": platform.python_version()}]
    for pkg in VERSION_PACKAGES:
        if pkg == "natlens":
            rows.append({"component": pkg, "version": natlens.__version__})
            continue
        try:
            rows.append({"component": pkg, "version": metadata.version(pkg)})
        except metadata.PackageNotFoundError:
            rows.append({"component": pkg, "version": "not installed"})
    return pd.DataFrame(rows)


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) if v else "(all)"
    return "" if v is None else str(v)


def _utc_col(s: pd.Series, digits: int = 3) -> pd.Series:
    """Epoch seconds as UTC text with `digits` decimals of the second (3: ms, 6: us)."""
    ts = pd.to_datetime(pd.to_numeric(s, errors="coerce"), unit="s", utc=True)
    return ts.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[: -(6 - digits) or None]


def kube_services(d: ReportData) -> pd.DataFrame:
    """Per node, the Services as kube-proxy programmed them (natlens.netfilter.kube_services),
    from the rules the analysis read. A node whose rules cannot be read has one row saying
    why in ``evidence``; a node without an iptables dump has none (the inputs say so)."""
    import dataclasses

    from natlens.netfilter import kube_services as services_of

    rows = []
    svcs = d.analysis.inventory.services
    lb_ips = [(r.lb_ip, int(r.port), str(r.proto)) for r in svcs.itertuples()
              if isinstance(r.lb_ip, str) and r.lb_ip and pd.notna(r.port)]
    for node in d.analysis.bundle.nodes:
        if node.iptables is None and node.nft is None:
            continue
        try:
            rules = node.rules()
        except NatlensError as exc:
            rows.append({"node": node.name, "evidence": f"rules not read: {exc}"})
            continue
        for svc in services_of(rules, lb_ips=lb_ips):
            rows.append({"node": node.name, **{k: _show(v) if isinstance(v, (list, tuple)) else v
                                               for k, v in dataclasses.asdict(svc).items()}})
    df = pd.DataFrame(rows)
    return d.anonymizer.frame(df) if d.anonymizer is not None and not df.empty else df


PROBLEM_TABLE_COLUMNS = ["kind", "connections", "between", "delay_ms", "journeys", "finding", "note"]


def problems(d: ReportData) -> pd.DataFrame:
    """Slow and lossy paths (natlens.findings.paths; ``d.analysis.problems``): one row per
    problem, the most connections first: its kind, how many connections, the two capture
    points between which the time went (or the packet vanished), the time lost (ms, "min-max"),
    the journeys and the finding in words. Empty when the analysis found none (or has none)."""
    p = getattr(d.analysis, "problems", None)
    if not isinstance(p, pd.DataFrame) or p.empty:
        return pd.DataFrame(columns=PROBLEM_TABLE_COLUMNS)

    def ms(lo: Any, hi: Any) -> str:
        if pd.isna(lo):
            return ""
        return f"{lo:.1f}" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}-{hi:.1f}"

    out = pd.DataFrame({
        "kind": p["kind"], "connections": [f"{c} of {o}" for c, o in zip(p["count"], p["of"], strict=True)],
        "between": p["between"].fillna(""),
        "delay_ms": [ms(lo, hi) for lo, hi in zip(p["delay_ms_min"], p["delay_ms_max"], strict=True)],
        "journeys": [", ".join(map(str, j)) for j in p["journeys"]], "finding": p["text"],
        "note": p["note"].fillna("")}).reset_index(drop=True)
    return d.anonymizer.frame(out) if d.anonymizer is not None else out


def capture_quality(d: ReportData) -> pd.DataFrame:
    """Each capture as evidence (natlens.findings.quality; ``d.analysis.quality``): the time it
    covers (UTC, to the ms; the date is the timeline's), whether it is cut short, the bytes
    skipped as unreadable (impossible record lengths: the packets in them are lost), the packets
    the host said it dropped, the connections whose packets it lost (TCP gaps, lost handshake
    ACKs) and how many connections its flaws affect. The flaws in words are
    report.text.capture_limits."""
    q = getattr(d.analysis, "quality", None) or []
    span = _utc_col(pd.Series([x["first_ts"] for x in q] + [x["last_ts"] for x in q], dtype=float)).str[11:]
    rows = [{"capture": x["file"],
             "covers_utc": f"{span.iloc[i]} .. {span.iloc[len(q) + i]}" if x["first_ts"] else "no packet",
             "cut_short": x["cut_short"], "unreadable_bytes": x.get("damaged_bytes", 0),
             "dropped": ", ".join(f"{n:,} ({k})" for k, n in x["dropped"].items() if n is not None) or "not said",
             "tcp_gaps": x["tcp_gaps"], "lost_acks": x["lost_acks"],
             "connections_affected": len(x["journeys_affected"])}
            for i, x in enumerate(q)]
    out = pd.DataFrame(rows, columns=["capture", "covers_utc", "cut_short", "unreadable_bytes", "dropped",
                                      "tcp_gaps", "lost_acks", "connections_affected"])
    return d.anonymizer.frame(out) if d.anonymizer is not None else out
